//! `tabmesh-node`: a native tabmesh peer in the terminal.
//!
//! It runs the same node as a browser tab, over TCP instead of WebSocket, joins the relay named
//! by `--bootstrap`, and prints what goes over the wire as it happens plus a state summary at a
//! fixed interval (or JSON snapshots with `--json`, for scripts). It offers the built-in
//! services named by `--offer`, calls services from standard input (`call SERVICE TYPE JSON`)
//! and, with `--http`, is an entry to services for HTTP clients like the relay.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use tabmesh_core::Multiaddr;
use tabmesh_core::dht::{DhtError, DhtReply, DhtRequest};
use tabmesh_core::protocol::AGENT_NATIVE;
use tabmesh_core::services::{CallRequest, builtin as builtins};
use tabmesh_core::view::NodeView;
use tabmesh_core::wire_log::{Direction, WireEvent};
use tabmesh_node::libp2p::identity::Keypair;
use tabmesh_node::services::ServiceCommand;
use tabmesh_node::snapshot::SnapshotCommand;
use tabmesh_node::trace::TraceCommand;
use tabmesh_node::{BootstrapSource, Command, Node, NodeConfig, NodeEvent};
use tokio::io::AsyncBufReadExt;
use tracing_subscriber::EnvFilter;

/// A native tabmesh peer: joins the relay and shows up in every tab's peer list.
#[derive(Debug, Parser)]
#[command(name = "tabmesh-node", version, about, long_about)]
struct NodeArgs {
    /// The relay: its HTTP URL (e.g. http://127.0.0.1:8080) or a multiaddr ending in
    /// /p2p/<relay peer id> (e.g. /ip4/127.0.0.1/tcp/9090/p2p/12D3KooW...).
    #[arg(long, default_value = "http://127.0.0.1:8080", value_parser = parse_bootstrap)]
    bootstrap: BootstrapSource,

    /// Address to listen on for direct connections from other native peers (repeatable).
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
    listen: Vec<Multiaddr>,

    /// Keep the identity in this file (created if missing) so the peer id survives restarts.
    /// Without it, every run gets a new peer id.
    #[arg(long)]
    key_file: Option<PathBuf>,

    /// Seconds between state summaries (the state behind them is rebuilt twice per interval,
    /// between every 0.5 s and every 5 s).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    status_interval: u64,

    /// Print one JSON state snapshot per status interval instead of human-readable output.
    #[arg(long)]
    json: bool,

    /// GIMPS: seconds between search rounds.
    #[arg(long, default_value_t = 10.0, value_parser = positive_secs)]
    search_interval: f64,

    /// GIMPS: seconds without a peer connecting before the first search round (at most one
    /// search interval); 0 starts it at once.
    #[arg(long, default_value_t = 2.0, value_parser = settle_secs)]
    search_settle: f64,

    /// GIMPS: never search; still ping, receive and forward PRIMEs (in cooperative mode every
    /// peer searches its share regardless).
    #[arg(long)]
    no_search: bool,

    /// GIMPS: seconds between eviction checks.
    #[arg(long, default_value_t = 1.0, value_parser = positive_secs)]
    evict_interval: f64,

    /// GIMPS: seconds of silence after which a peer is evicted.
    #[arg(long, default_value_t = 10.0, value_parser = positive_secs)]
    stale_timeout: f64,

    /// GIMPS: seconds between pings of every peer.
    #[arg(long, default_value_t = 5.0, value_parser = positive_secs)]
    ping_interval: f64,

    /// GIMPS: divide the candidate exponents with the other peers instead of racing them
    /// (switch at run time with `coop on` / `coop off` on standard input).
    #[arg(long)]
    cooperative: bool,

    /// GIMPS: the share of a core the Lucas-Lehmer search may take, in percent (tabs take 10 by
    /// default; a native node all of one).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=100))]
    search_pace: u16,

    /// GIMPS: flood as the exercise does: forward to every peer, even those a message's
    /// originator sent it to itself (and name no recipients in our own messages).
    #[arg(long)]
    no_prune: bool,

    /// GIMPS: TTL of our PRIME announcements.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=16))]
    ttl: u8,

    /// Protocol violations that ban a peer (disconnected, its connections refused for a while).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    ban_after_strikes: u32,

    /// Length of a first ban in seconds; each repeat offence (within a day) multiplies it by 4,
    /// up to an hour.
    #[arg(long, default_value_t = 60.0, value_parser = positive_secs)]
    ban_secs: f64,

    /// Offer a built-in service (repeatable): lucas-lehmer, echo or node-info.
    #[arg(long = "offer", value_name = "SERVICE", value_parser = builtin_service)]
    offer: Vec<String>,

    /// Serve the services gateway on this address (`POST /api/services/{service}/{type}`,
    /// `GET /api/services`), e.g. 127.0.0.1:8081, as the relay does.
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,

    /// Limits of the HTTP gateway (with `--http`).
    #[command(flatten)]
    gateway: tabmesh_gateway::GatewayArgs,

    /// Also send every span this node records to an OpenTelemetry collector over OTLP/HTTP
    /// (JSON), e.g. http://127.0.0.1:4318 (Jaeger's OTLP port; `/v1/traces` is added).
    #[arg(long, value_name = "URL", value_parser = tabmesh_node::trace::export::endpoint_arg)]
    otlp_endpoint: Option<String>,

    /// Record no spans and put no trace context on the wire (traced pings and trace gathering
    /// are still answered).
    #[arg(long)]
    no_tracing: bool,
}

fn builtin_service(s: &str) -> Result<String, String> {
    if builtins::ALL.contains(&s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "no built-in service {s:?}; there are {}",
            builtins::ALL.join(", ")
        ))
    }
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

fn settle_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=3_600.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0 and 3600"
        )),
    }
}

fn parse_bootstrap(s: &str) -> Result<BootstrapSource, String> {
    if s.starts_with('/') {
        let addr: Multiaddr = s.parse().map_err(|e| format!("not a multiaddr: {e}"))?;
        tabmesh_node::platform::bootstrap_from_addr(&addr)?;
        Ok(BootstrapSource::Addr(addr))
    } else if s.starts_with("http://") || s.starts_with("https://") {
        Ok(BootstrapSource::Url(s.to_owned()))
    } else {
        Err("expected the relay's http(s):// URL or a multiaddr starting with /".to_owned())
    }
}

fn main() -> std::process::ExitCode {
    let args = NodeArgs::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    // One thread: the node's event loop is single-threaded by design (the same loop runs in a
    // browser tab), and libp2p's connection tasks on other threads would only add wake-ups
    // across threads (50 natives on one machine spent a fifth of their time switching).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tabmesh-node: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    let result = runtime.block_on(local.run_until(run(args)));
    // A blocking read of stdin may still be pending: do not wait for a line that never comes.
    runtime.shutdown_background();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tabmesh-node: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let keypair = match &args.key_file {
        Some(path) => tabmesh_node::platform::load_or_create_identity(path)?,
        None => Keypair::generate_ed25519(),
    };
    let mut config = NodeConfig::new(
        keypair,
        args.bootstrap.clone(),
        format!("{AGENT_NATIVE}/{}", env!("CARGO_PKG_VERSION")),
    );
    config.listen = args.listen.clone();
    // The state is printed once per status interval: building it twice an interval is enough
    // (a view lists every peer, record and bucket; 50 nodes on one machine building one every
    // 500 ms spent much of their idle time on it).
    config.view_interval = (Duration::from_secs(args.status_interval) / 2)
        .clamp(Duration::from_millis(500), Duration::from_secs(5));
    // Wire events are printed as they happen (the JSON output has them in each snapshot).
    config.stream_wire_events = !args.json;
    config.seed = std::process::id().into();
    config.gossip.search_interval = Duration::from_secs_f64(args.search_interval);
    config.gossip.evict_interval = Duration::from_secs_f64(args.evict_interval);
    config.gossip.stale_timeout = Duration::from_secs_f64(args.stale_timeout);
    config.gossip.ping_interval = Duration::from_secs_f64(args.ping_interval);
    config.gossip.initial_ttl = args.ttl;
    config.gossip.cooperative = args.cooperative;
    config.gossip.search = !args.no_search;
    config.gossip.settle = Duration::from_secs_f64(args.search_settle);
    config.gossip.prune = !args.no_prune;
    config.search_pace = tabmesh_core::gimps::pace::SearchPace::per_mille(args.search_pace * 10);
    config.gossip.max_ttl = config.gossip.max_ttl.max(args.ttl);
    config.ledger.max_strikes = args.ban_after_strikes;
    config.ledger.first_ban = Duration::from_secs_f64(args.ban_secs);
    config.ledger.max_ban = config.ledger.max_ban.max(config.ledger.first_ban);
    config.tracing = !args.no_tracing;
    if let Some(endpoint) = &args.otlp_endpoint {
        let me = config.keypair.public().to_peer_id();
        let sink = tabmesh_node::trace::export::start(endpoint, me).map_err(anyhow::Error::msg)?;
        config.span_export = Some(tabmesh_node::trace::SpanExport::new(move |span| {
            sink.send(span.clone());
        }));
    }
    let (node, mut handle) = Node::new(config).context("starting the node")?;
    println!("tabmesh-node {} joining {}", node.peer_id(), args.bootstrap);
    if !args.json {
        println!("commands (type and Enter): {COMMANDS_HELP}");
    }
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;

    let node = tokio::task::spawn_local(node.run());
    for name in &args.offer {
        let (reply, done) = futures::channel::oneshot::channel();
        let command = ServiceCommand::Builtin {
            name: name.clone(),
            on: true,
            reply,
        };
        let _ = handle.commands.try_send(Command::Services(command));
        if let Ok(Err(error)) = done.await {
            anyhow::bail!("cannot offer {name}: {error}");
        }
    }
    if let Some(addr) = args.http {
        serve_gateway(addr, &args.gateway, handle.commands.clone()).await?;
    }
    let shutdown_signal = terminate_or_interrupt()?;
    tokio::pin!(shutdown_signal);
    let mut status = tokio::time::interval(Duration::from_secs(args.status_interval));
    let mut latest: Option<Box<NodeView>> = None;
    loop {
        tokio::select! {
            event = handle.events.next() => match event {
                Some(NodeEvent::View(view)) => latest = Some(view),
                Some(NodeEvent::Wire(event)) if !args.json => println!("{}", wire_line(&event)),
                Some(NodeEvent::Wire(_)) => {}
                None => break,
            },
            _ = status.tick() => if let Some(view) = &latest {
                if args.json {
                    println!("{}", serde_json::to_string(view)?);
                } else {
                    print!("{}", summary(view));
                }
            },
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(line)) => match parse_input(&line) {
                    Ok(Some(Input::Node(command))) => { let _ = handle.commands.try_send(command); }
                    Ok(Some(Input::Request(make))) => {
                        let json = args.json;
                        let mut commands = handle.commands.clone();
                        tokio::task::spawn_local(async move {
                            let (command, outcome) = make();
                            if commands.try_send(command).is_err() {
                                eprintln!("the node is busy; try again");
                                return;
                            }
                            outcome.print(json).await;
                        });
                    }
                    Ok(Some(Input::Dht(request))) => {
                        let (tx, rx) = futures::channel::oneshot::channel();
                        let what = format!("{} {}", request.name(), request.key());
                        if handle.commands.try_send(Command::Dht(request, tx)).is_err() {
                            eprintln!("{what}: the node is busy; try again");
                        } else {
                            let json = args.json;
                            tokio::task::spawn_local(async move {
                                let result = rx.await.unwrap_or(Err(DhtError::Stopped));
                                print_dht_result(&what, &result, json);
                            });
                        }
                    }
                    Ok(None) => {}
                    Err(message) => eprintln!("{message}"),
                },
                _ => stdin_open = false,
            },
            () = &mut shutdown_signal => {
                println!("shutting down");
                let _ = handle.commands.try_send(Command::Shutdown);
                break;
            }
        }
    }
    node.await.context("node task")?;
    Ok(())
}

const COMMANDS_HELP: &str = "sleep | wake | reset | coop on | coop off (GIMPS); \
put [--ttl SECS] KEY VALUE | get KEY | remove KEY | provide KEY | providers KEY (DHT); \
call SERVICE TYPE [JSON] | services | offer SERVICE | withdraw SERVICE (services); \
traceping [PEER] | trace TRACE_ID (tracing); \
snapshot | snapshot naive | tokens on | tokens off (snapshots)";

/// A command and the answer to print, built when it is sent.
type RequestInput = Box<dyn FnOnce() -> (Command, Outcome)>;

/// A line typed on stdin.
enum Input {
    Node(Command),
    Dht(DhtRequest),
    Request(RequestInput),
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Node(command) => write!(f, "Node({command:?})"),
            Self::Dht(request) => write!(f, "Dht({request:?})"),
            Self::Request(_) => f.write_str("Request(..)"),
        }
    }
}

/// The answer to a services command, to print when it comes.
enum Outcome {
    Call(
        String,
        futures::channel::oneshot::Receiver<
            Result<tabmesh_node::services::CallAnswer, tabmesh_core::services::CallError>,
        >,
    ),
    Catalog(futures::channel::oneshot::Receiver<Result<tabmesh_core::services::Catalog, String>>),
    Done(
        String,
        futures::channel::oneshot::Receiver<Result<(), String>>,
    ),
    TracePing(futures::channel::oneshot::Receiver<Result<tabmesh_node::trace::PingAnswer, String>>),
    Trace(
        futures::channel::oneshot::Receiver<Result<tabmesh_core::trace::assemble::Trace, String>>,
    ),
    Snapshot(
        futures::channel::oneshot::Receiver<
            Result<tabmesh_core::snapshot::state::SnapshotResult, String>,
        >,
    ),
}

impl Outcome {
    async fn print(self, json: bool) {
        let stopped = || "the node has stopped".to_owned();
        match self {
            Self::Call(what, rx) => match rx.await {
                Ok(Ok(answer)) if json => println!("{}", serde_json::json!({ "call": answer })),
                Ok(Ok(answer)) => {
                    println!(
                        "{what}: answered by {} in {} ms ({} attempt(s), route {})",
                        answer.provider_name,
                        answer.duration_ms,
                        answer.attempts,
                        answer.route.join(" -> ")
                    );
                    println!("  reply: {}", answer.reply);
                }
                Ok(Err(error)) if json => println!(
                    "{}",
                    serde_json::json!({ "call_error": error.to_string(), "code": error.code(), "call": what })
                ),
                Ok(Err(error)) => println!("{what}: {error}"),
                Err(_) => println!("{what}: {}", stopped()),
            },
            Self::Catalog(rx) => match rx.await {
                Ok(Ok(catalog)) if json => {
                    println!("{}", serde_json::json!({ "services": catalog }))
                }
                Ok(Ok(catalog)) if catalog.services.is_empty() => {
                    println!("services: none offered")
                }
                Ok(Ok(catalog)) => {
                    for service in catalog.services {
                        let providers: Vec<String> = service
                            .providers
                            .iter()
                            .map(|p| format!("{} ({})", p.peer_name, p.version))
                            .collect();
                        println!(
                            "{}: types {} — offered by {}",
                            service.name,
                            service.types().join(", "),
                            providers.join(", ")
                        );
                    }
                }
                Ok(Err(error)) if json => {
                    println!("{}", serde_json::json!({ "services_error": error }))
                }
                Ok(Err(error)) => println!("services: {error}"),
                Err(_) => println!("services: {}", stopped()),
            },
            Self::TracePing(rx) => match rx.await {
                Ok(Ok(answer)) if json => {
                    println!("{}", serde_json::json!({ "trace_ping": answer }))
                }
                Ok(Ok(answer)) => println!(
                    "traced ping to {} answered in {} ms; trace {} (type: trace {})",
                    answer.peer_name, answer.rtt_ms, answer.trace_id, answer.trace_id
                ),
                Ok(Err(error)) if json => {
                    println!(
                        "{}",
                        serde_json::json!({ "error": error, "command": "traceping" })
                    )
                }
                Ok(Err(error)) => println!("traceping: {error}"),
                Err(_) => println!("traceping: {}", stopped()),
            },
            Self::Trace(rx) => match rx.await {
                Ok(Ok(trace)) if json => println!("{}", serde_json::json!({ "trace": trace })),
                Ok(Ok(trace)) => {
                    let name_of = |peer: &str| {
                        peer.parse::<tabmesh_node::libp2p::PeerId>().map_or_else(
                            |_| peer.to_owned(),
                            |p| tabmesh_core::names::peer_name(&p),
                        )
                    };
                    for line in tabmesh_core::trace::assemble::tree(&trace, &name_of) {
                        println!("{line}");
                    }
                }
                Ok(Err(error)) if json => {
                    println!(
                        "{}",
                        serde_json::json!({ "error": error, "command": "trace" })
                    )
                }
                Ok(Err(error)) => println!("trace: {error}"),
                Err(_) => println!("trace: {}", stopped()),
            },
            Self::Snapshot(rx) => match rx.await {
                Ok(Ok(snapshot)) if json => {
                    println!("{}", serde_json::json!({ "snapshot": snapshot }))
                }
                Ok(Ok(snapshot)) => {
                    for line in snapshot.describe() {
                        println!("{line}");
                    }
                }
                Ok(Err(error)) if json => {
                    println!(
                        "{}",
                        serde_json::json!({ "error": error, "command": "snapshot" })
                    )
                }
                Ok(Err(error)) => println!("snapshot: {error}"),
                Err(_) => println!("snapshot: {}", stopped()),
            },
            Self::Done(what, rx) => match rx.await {
                Ok(Ok(())) if json => println!("{}", serde_json::json!({ "done": what })),
                Ok(Ok(())) => println!("{what}: done"),
                Ok(Err(error)) if json => {
                    println!("{}", serde_json::json!({ "error": error, "command": what }))
                }
                Ok(Err(error)) => println!("{what}: {error}"),
                Err(_) => println!("{what}: {}", stopped()),
            },
        }
    }
}

/// Serves the services gateway on `addr`, passing calls to the node.
async fn serve_gateway(
    addr: std::net::SocketAddr,
    args: &tabmesh_gateway::GatewayArgs,
    commands: futures::channel::mpsc::Sender<Command>,
) -> anyhow::Result<()> {
    let (tx, mut rx) = futures::channel::mpsc::channel::<ServiceCommand>(256);
    tokio::task::spawn_local(async move {
        let mut commands = commands;
        while let Some(command) = rx.next().await {
            if futures::SinkExt::send(&mut commands, Command::Services(command))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let app = tabmesh_gateway::router(tx, &args.config())
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {addr}"))?;
    println!(
        "services gateway on http://{}/api/services",
        listener.local_addr()?
    );
    tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
        if let Err(error) = served {
            tracing::error!(%error, "the services gateway stopped");
        }
    });
    Ok(())
}

fn parse_input(line: &str) -> Result<Option<Input>, String> {
    let line = line.trim();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let key = |rest: &str| -> Result<String, String> {
        match rest.split_whitespace().collect::<Vec<_>>().as_slice() {
            [key] => Ok((*key).to_owned()),
            [] => Err(format!("{word}: which key? usage: {word} KEY")),
            _ => Err(format!("{word}: keys have no spaces; usage: {word} KEY")),
        }
    };
    let input = match (word, rest) {
        ("", _) => return Ok(None),
        ("sleep", "") => Input::Node(Command::Sleep),
        ("wake", "") => Input::Node(Command::Wake),
        ("reset", "") => Input::Node(Command::Reset),
        ("coop", "on") => Input::Node(Command::Cooperative(true)),
        ("coop", "off") => Input::Node(Command::Cooperative(false)),
        ("put", rest) => {
            let usage = "usage: put [--ttl SECS] KEY VALUE";
            let (ttl_ms, rest) = match rest.strip_prefix("--ttl") {
                Some(after) => {
                    let after = after.trim_start();
                    let (secs, rest) = after
                        .split_once(char::is_whitespace)
                        .ok_or_else(|| format!("put: {usage}"))?;
                    let secs: u64 = secs
                        .parse()
                        .map_err(|_| format!("put: --ttl takes whole seconds, not {secs:?}"))?;
                    (Some(secs.saturating_mul(1000)), rest.trim_start())
                }
                None => (None, rest),
            };
            let (key, value) = rest
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("put: a key and a value are needed; {usage}"))?;
            Input::Dht(DhtRequest::Put {
                key: key.to_owned(),
                value: value.trim_start().to_owned(),
                ttl_ms,
            })
        }
        ("get", rest) => Input::Dht(DhtRequest::Get { key: key(rest)? }),
        ("remove", rest) => Input::Dht(DhtRequest::Remove { key: key(rest)? }),
        ("provide", rest) => Input::Dht(DhtRequest::Provide { key: key(rest)? }),
        ("providers", rest) => Input::Dht(DhtRequest::Providers { key: key(rest)? }),
        ("call", rest) => {
            let usage = "usage: call SERVICE TYPE [JSON]";
            let mut parts = rest.splitn(3, char::is_whitespace);
            let (Some(service), Some(message_type)) = (
                parts.next().filter(|s| !s.is_empty()),
                parts.next().filter(|s| !s.is_empty()),
            ) else {
                return Err(format!(
                    "call: a service and a message type are needed; {usage}"
                ));
            };
            let data = match parts.next().map(str::trim).filter(|s| !s.is_empty()) {
                None => serde_json::json!({}),
                Some(text) => serde_json::from_str(text)
                    .map_err(|e| format!("call: the data is not JSON ({e}); {usage}"))?,
            };
            let request = CallRequest {
                service: service.to_owned(),
                message_type: message_type.to_owned(),
                data,
                deadline_ms: None,
                origin: None,
            };
            Input::Request(Box::new(move || {
                let (tx, rx) = futures::channel::oneshot::channel();
                let what = format!("call {}/{}", request.service, request.message_type);
                (
                    Command::Services(ServiceCommand::Call(request, tx)),
                    Outcome::Call(what, rx),
                )
            }))
        }
        ("services", "") => Input::Request(Box::new(|| {
            let (tx, rx) = futures::channel::oneshot::channel();
            (
                Command::Services(ServiceCommand::Catalog(tx)),
                Outcome::Catalog(rx),
            )
        })),
        (verb @ ("offer" | "withdraw"), rest) => {
            let name = key(rest)?;
            let on = verb == "offer";
            let verb = verb.to_owned();
            if on {
                builtin_service(&name).map_err(|e| format!("offer: {e}"))?;
            }
            Input::Request(Box::new(move || {
                let (reply, rx) = futures::channel::oneshot::channel();
                let what = format!("{verb} {name}");
                let command = if on {
                    ServiceCommand::Builtin { name, on, reply }
                } else {
                    ServiceCommand::Withdraw { name, reply }
                };
                (Command::Services(command), Outcome::Done(what, rx))
            }))
        }
        ("traceping", rest) => {
            let peer = match rest {
                "" => None,
                text => Some(
                    text.parse::<tabmesh_node::libp2p::PeerId>()
                        .map_err(|e| format!("traceping: {text:?} is not a peer id ({e})"))?,
                ),
            };
            Input::Request(Box::new(move || {
                let (reply, rx) = futures::channel::oneshot::channel();
                (
                    Command::Trace(TraceCommand::Ping { peer, reply }),
                    Outcome::TracePing(rx),
                )
            }))
        }
        ("trace", rest) => {
            let trace_id = tabmesh_core::trace::TraceId::parse(&key(rest)?)
                .map_err(|e| format!("trace: {e}"))?;
            Input::Request(Box::new(move || {
                let (reply, rx) = futures::channel::oneshot::channel();
                (
                    Command::Trace(TraceCommand::Gather { trace_id, reply }),
                    Outcome::Trace(rx),
                )
            }))
        }
        ("snapshot", rest @ ("" | "naive")) => {
            let naive = rest == "naive";
            Input::Request(Box::new(move || {
                let (reply, rx) = futures::channel::oneshot::channel();
                (
                    Command::Snapshot(SnapshotCommand::Take { naive, reply }),
                    Outcome::Snapshot(rx),
                )
            }))
        }
        ("snapshot", rest) => {
            return Err(format!(
                "snapshot: {rest:?}? `snapshot` takes one with markers, `snapshot naive` asks every peer without"
            ));
        }
        ("tokens", "on") => Input::Node(Command::Snapshot(SnapshotCommand::TokenDemo(true))),
        ("tokens", "off") => Input::Node(Command::Snapshot(SnapshotCommand::TokenDemo(false))),
        ("tokens", rest) => {
            return Err(format!("tokens: {rest:?}? use `tokens on` or `tokens off`"));
        }
        _ => {
            return Err(format!(
                "unknown command {line:?}; commands: {COMMANDS_HELP}"
            ));
        }
    };
    Ok(Some(input))
}

/// Prints a DHT answer: a line for people, or `{"dht": …}` / `{"dht_error": …}` for scripts.
fn print_dht_result(what: &str, result: &Result<DhtReply, DhtError>, json: bool) {
    if json {
        let line = match result {
            Ok(reply) => serde_json::json!({ "dht": reply }),
            Err(error) => serde_json::json!({ "dht_error": error.to_string(), "request": what }),
        };
        println!("{line}");
        return;
    }
    match result {
        Ok(
            reply @ DhtReply::Get {
                record: Some(record),
                ..
            },
        ) => {
            println!("{what}: {}", reply.summary());
            println!(
                "  value: {}",
                record.value.as_deref().unwrap_or(&record.preview)
            );
        }
        Ok(DhtReply::Providers { providers, .. }) if !providers.is_empty() => {
            println!("{what}: {} provider(s)", providers.len());
            for p in providers {
                println!("  {} ({})", p.name, p.peer_id);
            }
        }
        Ok(reply) => println!("{what}: {}", reply.summary()),
        Err(error) => println!("{what}: {error}"),
    }
}

/// Resolves on SIGINT or SIGTERM.
fn terminate_or_interrupt() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("watching SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
}

fn wire_line(event: &WireEvent) -> String {
    let arrow = match event.direction {
        Direction::Sent => "->",
        Direction::Received => "<-",
        Direction::Local => "--",
    };
    let peer = event.peer.as_deref().unwrap_or("");
    format!(
        "{:>9.1}s {arrow} {:<8} {:<20} {}",
        event.at_ms as f64 / 1e3,
        event.protocol,
        peer,
        event.summary
    )
}

fn summary(view: &NodeView) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let relay = &view.relay;
    let _ = writeln!(out, "== {} ({}) ==", view.name, view.peer_id);
    let _ = write!(out, "relay: {}", relay.link.state);
    if let Some(rtt) = relay.rtt_ms {
        let _ = write!(out, ", rtt {rtt:.1} ms");
    }
    if let Some(ms) = relay.link.retry_in_ms {
        let _ = write!(out, ", retry in {:.1} s", ms as f64 / 1e3);
    }
    if let Some(err) = &relay.link.last_error {
        let _ = write!(out, " (last error: {err})");
    }
    let _ = writeln!(out);
    if let Some(g) = &view.gimps {
        let state = if g.state.awake { "awake" } else { "ASLEEP" };
        let mode = if g.state.cooperative {
            "cooperative"
        } else {
            "racing"
        };
        let _ = write!(out, "gimps: {state}, {mode}, msg_id {}", g.state.msg_id);
        if let Some(p) = g.state.testing {
            let _ = write!(out, ", testing p = {p} ({:.1} tests/s)", g.tests_per_sec);
        }
        match &g.state.biggest {
            Some(b) => {
                let _ = write!(
                    out,
                    ", biggest 2^{}-1 ({} digits) found by {} ({})",
                    b.exponent, b.digits, b.originator_name, b.originator
                );
            }
            None => {
                let _ = write!(out, ", no prime known yet");
            }
        }
        let _ = writeln!(
            out,
            ", my primes {:?}, known {:?}",
            g.state.my_primes, g.state.known_primes
        );
        if g.state.peers.is_empty() {
            let _ = writeln!(out, "  gossip peers: peerless");
        } else {
            let list: Vec<String> = g
                .state
                .peers
                .iter()
                .map(|p| {
                    format!(
                        "{} (heard {:.1} s ago)",
                        p.name,
                        p.heard_ms_ago as f64 / 1e3
                    )
                })
                .collect();
            let _ = writeln!(out, "  gossip peers: {}", list.join(", "));
        }
    }
    if let Some(d) = &view.dht {
        let _ = write!(
            out,
            "dht: {} record(s) held, {} provider record(s), routing table {} peer(s) in {} bucket(s)",
            d.records.len(),
            d.providers.len(),
            d.routing_table_size,
            d.routing_table.len()
        );
        if let Some(l) = &d.last_lookup {
            let _ = write!(
                out,
                "; last lookup {} {}: {} round(s), {} peer(s) asked, {} ms",
                format!("{:?}", l.kind).to_lowercase(),
                l.target,
                l.rounds,
                l.contacted,
                l.duration_ms
            );
        }
        let _ = writeln!(out);
    }
    if view.peers.is_empty() {
        let _ = writeln!(out, "peers: none yet");
    }
    for p in &view.peers {
        let rtt = p
            .rtt_ms
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.1} ms"));
        let _ = writeln!(
            out,
            "  {:<20} {:<7} {:<8} rtt {:<9} heard {:.1} s ago  {}",
            p.name,
            p.kind,
            p.connection,
            rtt,
            p.last_heard_ms_ago as f64 / 1e3,
            p.short_id
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dht(line: &str) -> DhtRequest {
        match parse_input(line) {
            Ok(Some(Input::Dht(request))) => request,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    #[test]
    fn parses_dht_commands() {
        assert_eq!(
            dht("put color light blue"),
            DhtRequest::Put {
                key: "color".into(),
                value: "light blue".into(),
                ttl_ms: None
            }
        );
        assert_eq!(
            dht("put --ttl 60 k v"),
            DhtRequest::Put {
                key: "k".into(),
                value: "v".into(),
                ttl_ms: Some(60_000)
            }
        );
        assert_eq!(dht(" get k "), DhtRequest::Get { key: "k".into() });
        assert_eq!(
            dht("providers k"),
            DhtRequest::Providers { key: "k".into() }
        );
    }

    #[test]
    fn explains_bad_commands() {
        let error = |line: &str| parse_input(line).err().unwrap_or_default();
        assert!(error("put k").contains("usage: put"));
        assert!(error("put --ttl soon k v").contains("whole seconds"));
        assert!(error("get").contains("which key"));
        assert!(error("get a b").contains("no spaces"));
        assert!(error("fly").contains("unknown command"));
        assert!(matches!(parse_input("   "), Ok(None)));
        assert!(matches!(
            parse_input("coop on"),
            Ok(Some(Input::Node(Command::Cooperative(true))))
        ));
    }

    fn service(line: &str) -> ServiceCommand {
        match parse_input(line) {
            Ok(Some(Input::Request(make))) => match make().0 {
                Command::Services(command) => command,
                other => panic!("{line:?} gave {other:?}"),
            },
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    #[test]
    fn parses_snapshot_commands_and_explains_bad_ones() {
        for (line, naive) in [("snapshot", false), ("snapshot naive", true)] {
            let Ok(Some(Input::Request(make))) = parse_input(line) else {
                panic!("{line}: a request");
            };
            assert!(matches!(
                make().0,
                Command::Snapshot(SnapshotCommand::Take { naive: n, .. }) if n == naive
            ));
        }
        assert!(matches!(
            parse_input("tokens on"),
            Ok(Some(Input::Node(Command::Snapshot(
                SnapshotCommand::TokenDemo(true)
            ))))
        ));
        let error = |line: &str| parse_input(line).err().unwrap_or_default();
        assert!(error("snapshot now").contains("snapshot naive"));
        assert!(error("tokens maybe").contains("tokens on"));
    }

    #[test]
    fn parses_trace_commands_and_refuses_bad_ids() {
        let command = |line: &str| match parse_input(line) {
            Ok(Some(Input::Request(make))) => make().0,
            other => panic!("{line:?} gave {other:?}"),
        };
        assert!(matches!(
            command("traceping"),
            Command::Trace(TraceCommand::Ping { peer: None, .. })
        ));
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        match command(&format!("trace {id}")) {
            Command::Trace(TraceCommand::Gather { trace_id, .. }) => {
                assert_eq!(trace_id.to_string(), id)
            }
            other => panic!("{other:?}"),
        }
        let bad = parse_input("trace 1234").unwrap_err();
        assert!(bad.starts_with("trace: malformed trace context"), "{bad}");
        let bad = parse_input("traceping nobody").unwrap_err();
        assert!(
            bad.starts_with("traceping: \"nobody\" is not a peer id"),
            "{bad}"
        );
    }

    #[test]
    fn parses_service_commands() {
        match service("call lucas-lehmer test {\"exponent\": 127}") {
            ServiceCommand::Call(request, _) => {
                assert_eq!(request.service, "lucas-lehmer");
                assert_eq!(request.message_type, "test");
                assert_eq!(request.data, serde_json::json!({"exponent": 127}));
            }
            other => panic!("{other:?}"),
        }
        match service("call node-info status") {
            ServiceCommand::Call(request, _) => assert_eq!(request.data, serde_json::json!({})),
            other => panic!("{other:?}"),
        }
        assert!(matches!(service("services"), ServiceCommand::Catalog(_)));
        assert!(matches!(
            service("offer echo"),
            ServiceCommand::Builtin { on: true, .. }
        ));
        assert!(matches!(
            service("withdraw echo"),
            ServiceCommand::Withdraw { .. }
        ));
        let error = |line: &str| parse_input(line).err().unwrap_or_default();
        assert!(error("call echo").contains("usage: call"));
        assert!(error("call echo echo {oops").contains("not JSON"));
        assert!(error("offer teapot").contains("no built-in service"));
    }
}
