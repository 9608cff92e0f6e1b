//! `tabmesh-loadgen`: many lightweight libp2p clients of a relay in one process, for measuring
//! the relay's footprint. Each client connects over TCP (noise, yamux), runs identify and ping,
//! and takes a relay reservation, as a real peer would. Prints `ready <connected>/<reserved>`
//! once every client has settled, then holds the connections until killed.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use tabmesh_core::protocol::IDENTIFY_VERSION;
use tabmesh_node::libp2p::multiaddr::Protocol;
use tabmesh_node::libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use tabmesh_node::libp2p::{self, Multiaddr, identify, noise, ping, relay, tcp, yamux};
use tokio::sync::mpsc;

/// Load generator: many relay clients in one process.
#[derive(Debug, Parser)]
#[command(name = "tabmesh-loadgen", version, about)]
struct Args {
    /// The relay's TCP multiaddr, ending in /p2p/<relay peer id>.
    #[arg(long)]
    relay: Multiaddr,
    /// Number of clients.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    clients: u32,
    /// Seconds to wait for every client to settle before reporting anyway.
    #[arg(long, default_value_t = 120)]
    settle_secs: u64,
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "tabmesh_node::libp2p::swarm::derive_prelude")]
struct ClientBehaviour {
    relay: relay::client::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

#[derive(Debug, Clone, Copy)]
enum Progress {
    Connected,
    Reserved,
    Failed,
}

async fn client(
    relay_addr: Multiaddr,
    progress: mpsc::UnboundedSender<Progress>,
) -> anyhow::Result<()> {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_relay_client(noise::Config::new, yamux::Config::default)?
        .with_behaviour(|key, relay| ClientBehaviour {
            relay,
            identify: identify::Behaviour::new(identify::Config::new(
                IDENTIFY_VERSION.into(),
                key.public(),
            )),
            ping: ping::Behaviour::new(ping::Config::new()),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    swarm.listen_on(relay_addr.with(Protocol::P2pCircuit))?;
    while let Some(event) = swarm.next().await {
        let report = match event {
            SwarmEvent::ConnectionEstablished { .. } => Some(Progress::Connected),
            SwarmEvent::Behaviour(ClientBehaviourEvent::Relay(
                relay::client::Event::ReservationReqAccepted { renewal: false, .. },
            )) => Some(Progress::Reserved),
            SwarmEvent::ListenerClosed { .. } | SwarmEvent::OutgoingConnectionError { .. } => {
                Some(Progress::Failed)
            }
            _ => None,
        };
        if let Some(p) = report {
            let _ = progress.send(p);
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        matches!(args.relay.iter().last(), Some(Protocol::P2p(_))),
        "--relay must end with /p2p/<relay peer id>"
    );
    // Unbounded on purpose: exactly `clients` x 3 messages at most, one per state change.
    let (tx, mut rx) = mpsc::unbounded_channel();
    for _ in 0..args.clients {
        let addr = args.relay.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = client(addr, tx.clone()).await {
                eprintln!("client failed: {e:#}");
                let _ = tx.send(Progress::Failed);
            }
        });
    }
    drop(tx);
    let (mut connected, mut reserved, mut failed) = (0u32, 0u32, 0u32);
    let deadline = tokio::time::sleep(Duration::from_secs(args.settle_secs));
    tokio::pin!(deadline);
    while reserved + failed < args.clients {
        tokio::select! {
            p = rx.recv() => match p.context("all clients ended")? {
                Progress::Connected => connected += 1,
                Progress::Reserved => reserved += 1,
                Progress::Failed => failed += 1,
            },
            () = &mut deadline => break,
        }
    }
    println!("ready {connected} connected, {reserved} reserved, {failed} failed");
    std::future::pending::<()>().await;
    Ok(())
}
