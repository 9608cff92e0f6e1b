//! Calls a tabmesh service through a node's HTTP gateway and prints the reply.
//!
//! ```text
//! cargo run -p tabmesh-client --example call -- http://127.0.0.1:8080 lucas-lehmer test '{"exponent": 127}'
//! cargo run -p tabmesh-client --example call -- http://127.0.0.1:8080 --list
//! ```

use std::process::ExitCode;

use tabmesh_client::{Message, NodeConnection};

const USAGE: &str = "usage: call URL SERVICE TYPE [JSON]   (or: call URL --list)";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(url) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let node = match NodeConnection::connect(url).await {
        Ok(node) => node,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.get(1).map(String::as_str) == Some("--list") {
        return match node.services().await {
            Ok(services) => {
                for service in services {
                    for p in service.providers {
                        let types: Vec<&String> = p.types.keys().collect();
                        println!(
                            "{} {} by {} — types: {types:?}",
                            service.name, p.version, p.peer_name
                        );
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let (Some(service), Some(message_type)) = (args.get(1), args.get(2)) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let data = match args.get(3).map(|text| serde_json::from_str(text)) {
        None => serde_json::Value::Object(Default::default()),
        Some(Ok(data)) => data,
        Some(Err(e)) => {
            eprintln!("error: the data is not JSON: {e}");
            return ExitCode::from(2);
        }
    };
    match node.send(&Message::new(service, message_type, data)).await {
        Ok(reply) => {
            println!("{}", reply.reply);
            eprintln!(
                "answered by {} in {} ms ({} attempt(s)), route: {}",
                reply.provider_name,
                reply.duration_ms,
                reply.attempts,
                reply.route.join(" → ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
