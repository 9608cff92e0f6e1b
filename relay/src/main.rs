//! `tabmesh-relay`: the native relay and bootstrap server of a tabmesh network.
//!
//! One process: a libp2p node (circuit relay v2 server, Kademlia bootstrap node, identify, ping,
//! and an entry to services) listening on TCP and WebSocket, and an HTTP server for the web app,
//! `/api/bootstrap`, `/metrics` and the services gateway (`/api/services`). It stops gracefully on SIGINT or SIGTERM. See `tabmesh-relay --help`.

mod config;
mod http;
mod network;
mod store;

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, RelayArgs};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = RelayArgs::parse();
    if let Err(message) = args.ice_servers() {
        // A usage error, reported like clap's own (exit status 2).
        <RelayArgs as clap::CommandFactory>::command()
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit();
    }
    init_logging(args.log_format);
    // The swarm's behaviours keep local (not `Send`) futures, as they do in a tab: the network
    // task runs on this thread, the HTTP server on the runtime's workers.
    let local = tokio::task::LocalSet::new();
    match local.run_until(run(args)).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("tabmesh-relay: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    // Kademlia warns when its automatic jobs find no peers ("Failed to trigger bootstrap: No
    // known peers" at start-up): expected on the bootstrap node, so only its errors show unless
    // RUST_LOG asks for more.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,libp2p_kad::behaviour=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(args: RelayArgs) -> anyhow::Result<()> {
    raise_file_limit(&args);
    let key = tabmesh_node::platform::load_or_create_identity(&args.data_dir.join("identity.key"))?;
    let node = network::RelayNode::new(key, &args).await?;
    let peer_id = node.peer_id();
    let shared = node.shared();

    let http_addr = SocketAddr::new(args.host, args.http_port);
    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {http_addr}"))?;
    let http_addr = listener.local_addr()?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let gateway = tabmesh_gateway::router(node.service_commands(), &args.gateway.config());
    let app = http::router(
        shared,
        args.web_dir.clone(),
        args.gzip,
        gateway,
        node.trace_commands(),
    );
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = http_stop.wait_for(|stop| *stop).await;
        })
        .await
    });
    let network = tokio::task::spawn_local(node.run(stop_rx));

    tracing::info!(%peer_id, "relay identity");
    tracing::info!(url = %format!("http://{http_addr}/"), "relay ready; open the URL in several tabs");

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let (http, network) = tokio::join!(http, network);
    network.context("network task")?;
    http.context("http task")?.context("http server")?;
    tracing::info!("relay stopped");
    Ok(())
}

/// Raises the open-file limit to the hard limit (every connection holds a socket), and warns
/// when even that cannot hold `--max-connections`: connections beyond it would fail with "too
/// many open files", in the listener rather than as a counted refusal.
fn raise_file_limit(args: &RelayArgs) {
    // Established and pending connections, the HTTP server's sockets, the store and the logs.
    let wanted = u64::from(args.max_connections) + u64::from(args.max_pending_incoming) + 256;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < wanted => tracing::warn!(
            limit,
            wanted,
            "the open-file limit is below what --max-connections and --max-pending-incoming \
             need: raise the hard limit (LimitNOFILE= in a systemd unit, `ulimit -Hn`) or lower \
             --max-connections"
        ),
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%e, "cannot watch SIGTERM; stopping on SIGINT only");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
