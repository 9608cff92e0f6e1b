//! `tabmesh-loadgen`: many lightweight libp2p clients of a relay in one process, for measuring
//! the relay at scale. Each client connects over TCP (noise, yamux), runs identify and ping, and
//! takes a relay reservation, as a real peer would.
//!
//! Clients start at a steady pace (at most `--rate` per second, and at most `--in-flight` of them
//! between dialing and holding a reservation: a relay admits only so many handshakes at once,
//! and opening thousands in the same instant only makes them time out), and a client whose
//! connection or reservation fails tries again after a pause, up to `--attempts` times.
//! Progress goes to stderr every two seconds. Once every client holds a reservation or has given
//! up (or `--settle-secs` passed), it prints one line to stdout:
//!
//! ```text
//! ready 10000 connected, 10000 reserved, 0 failed, 12 retries, in 48.2 s
//! ```
//!
//! followed by the reasons of failures and retries, and holds the connections until killed,
//! printing a `held ...` line every 10 seconds so that a reader sees reservations being lost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use tabmesh_core::protocol::IDENTIFY_VERSION;
use tabmesh_node::libp2p::multiaddr::Protocol;
use tabmesh_node::libp2p::swarm::{DialError, NetworkBehaviour, SwarmEvent};
use tabmesh_node::libp2p::{self, Multiaddr, identify, noise, ping, relay, tcp, yamux};
use tokio::sync::{Semaphore, mpsc};

/// Load generator: many relay clients in one process.
#[derive(Debug, Parser)]
#[command(name = "tabmesh-loadgen", version, about)]
struct Args {
    /// The relay's TCP multiaddr, ending in /p2p/<relay peer id>.
    #[arg(long)]
    relay: Multiaddr,
    /// Number of clients.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    clients: u32,
    /// Clients started per second.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..))]
    rate: u32,
    /// Clients between dialing and holding a reservation at any moment.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    in_flight: u32,
    /// Attempts per client (connection and reservation) before it counts as failed.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100))]
    attempts: u32,
    /// Seconds to wait for every client to settle before reporting anyway.
    #[arg(long, default_value_t = 300)]
    settle_secs: u64,
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "tabmesh_node::libp2p::swarm::derive_prelude")]
struct ClientBehaviour {
    relay: relay::client::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

/// A client's change of state, sent to the counting loop.
#[derive(Debug)]
enum Progress {
    Connected,
    Disconnected,
    Reserved,
    Unreserved,
    /// An attempt failed; the client tries again.
    Retry(String),
    /// The last attempt failed.
    Failed(String),
}

/// One attempt: connect, reserve, and hold the reservation. Returns why it ended. Holds
/// `permit` (a place among the clients in flight) until the reservation is accepted.
async fn attempt(
    relay_addr: &Multiaddr,
    progress: &mpsc::UnboundedSender<Progress>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> String {
    let mut permit = Some(permit);
    let built = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .and_then(|b| b.with_relay_client(noise::Config::new, yamux::Config::default))
        .map_err(|e| e.to_string());
    let mut swarm = match built {
        Ok(b) => match b.with_behaviour(|key, relay| ClientBehaviour {
            relay,
            identify: identify::Behaviour::new(identify::Config::new(
                IDENTIFY_VERSION.into(),
                key.public(),
            )),
            ping: ping::Behaviour::new(ping::Config::new()),
        }) {
            Ok(b) => b
                .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
                .build(),
            Err(e) => return format!("building the client: {e}"),
        },
        Err(e) => return format!("building the client: {e}"),
    };
    if let Err(e) = swarm.listen_on(relay_addr.clone().with(Protocol::P2pCircuit)) {
        return format!("listening through the relay: {e}");
    }
    let (mut connected, mut reserved) = (false, false);
    let reason = loop {
        let Some(event) = swarm.next().await else {
            break "the swarm ended".to_owned();
        };
        match event {
            SwarmEvent::ConnectionEstablished { .. } if !connected => {
                connected = true;
                let _ = progress.send(Progress::Connected);
            }
            SwarmEvent::Behaviour(ClientBehaviourEvent::Relay(
                relay::client::Event::ReservationReqAccepted { .. },
            )) if !reserved => {
                reserved = true;
                permit = None;
                let _ = progress.send(Progress::Reserved);
            }
            SwarmEvent::OutgoingConnectionError { error, .. } => {
                // A transport error is a list, one per address tried: its first says it.
                break match &error {
                    DialError::Transport(errors) if !errors.is_empty() => {
                        format!("dial: {}", first_cause(&errors[0].1))
                    }
                    other => format!("dial: {}", first_cause(other)),
                };
            }
            SwarmEvent::ConnectionClosed {
                num_established: 0,
                cause,
                ..
            } => {
                break match cause {
                    Some(e) => format!("connection closed: {}", first_cause(&e)),
                    None => "connection closed by the relay".to_owned(),
                };
            }
            SwarmEvent::ListenerClosed { reason, .. } => {
                break match reason {
                    Err(e) => format!("reservation: {}", first_cause(&e)),
                    Ok(()) => "reservation ended".to_owned(),
                };
            }
            _ => {}
        }
    };
    drop(permit);
    if reserved {
        let _ = progress.send(Progress::Unreserved);
    }
    if connected {
        let _ = progress.send(Progress::Disconnected);
    }
    reason
}

/// The innermost cause of an error, shortened: what groups failures by kind.
fn first_cause(error: &dyn std::error::Error) -> String {
    let mut inner = error;
    while let Some(source) = inner.source() {
        inner = source;
    }
    let text = inner.to_string();
    // Peer ids and addresses make every message unique; keep the words.
    let words: Vec<&str> = text
        .split_whitespace()
        .filter(|w| !w.starts_with("12D3") && !w.starts_with('/') && !w.contains("127.0.0.1"))
        .collect();
    let mut short = words.join(" ");
    if short.len() > 90 {
        let cut = (0..=90)
            .rev()
            .find(|&i| short.is_char_boundary(i))
            .unwrap_or(0);
        short.truncate(cut);
    }
    short
}

async fn client(
    relay_addr: Multiaddr,
    attempts: u32,
    in_flight: Arc<Semaphore>,
    progress: mpsc::UnboundedSender<Progress>,
) {
    for n in 1..=attempts {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let reason = attempt(&relay_addr, &progress, permit).await;
        if n == attempts {
            let _ = progress.send(Progress::Failed(reason));
            return;
        }
        let _ = progress.send(Progress::Retry(reason));
        // Back off (1, 2, 4 ... s, capped) so that a relay at its limit is not hammered.
        tokio::time::sleep(Duration::from_secs(1 << (n - 1).min(4))).await;
    }
}

/// Counts of what the clients report.
#[derive(Default)]
struct Counts {
    started: u32,
    connected: u32,
    reserved: u32,
    failed: u32,
    retries: u32,
    reasons: BTreeMap<String, u32>,
}

impl Counts {
    fn apply(&mut self, p: Progress) {
        match p {
            Progress::Connected => self.connected += 1,
            Progress::Disconnected => self.connected -= 1,
            Progress::Reserved => self.reserved += 1,
            Progress::Unreserved => self.reserved -= 1,
            Progress::Retry(reason) => {
                self.retries += 1;
                *self.reasons.entry(reason).or_default() += 1;
            }
            Progress::Failed(reason) => {
                self.failed += 1;
                *self.reasons.entry(reason).or_default() += 1;
            }
        }
    }

    fn line(&self) -> String {
        format!(
            "{} connected, {} reserved, {} failed, {} retries",
            self.connected, self.reserved, self.failed, self.retries
        )
    }
}

/// Raises this process's open-file limit to its hard limit: every client holds a socket.
fn raise_file_limit(clients: u32) -> anyhow::Result<()> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("raising the open-file limit")?;
    // A socket per client, plus the runtime's own descriptors.
    let needed = u64::from(clients) + 64;
    anyhow::ensure!(
        limit >= needed,
        "{clients} clients need about {needed} open files, but this process may open only \
         {limit}: raise the hard limit (`ulimit -Hn`, or LimitNOFILE= in a systemd unit)"
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        matches!(args.relay.iter().last(), Some(Protocol::P2p(_))),
        "--relay must end with /p2p/<relay peer id>"
    );
    raise_file_limit(args.clients)?;
    // Unbounded on purpose: a handful of messages per attempt, and attempts are bounded.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let mut counts = Counts::default();
    let in_flight = Arc::new(Semaphore::new(args.in_flight as usize));
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut report = tokio::time::interval(Duration::from_secs(2));
    let deadline = tokio::time::sleep(Duration::from_secs(args.settle_secs));
    tokio::pin!(deadline);
    while counts.reserved + counts.failed < args.clients {
        tokio::select! {
            _ = pace.tick(), if counts.started < args.clients => {
                counts.started += 1;
                tokio::spawn(client(
                    args.relay.clone(),
                    args.attempts,
                    in_flight.clone(),
                    tx.clone(),
                ));
            }
            Some(p) = rx.recv() => counts.apply(p),
            _ = report.tick() => eprintln!(
                "loadgen: {:>5.1} s: {} started, {}",
                start.elapsed().as_secs_f64(),
                counts.started,
                counts.line()
            ),
            () = &mut deadline => break,
        }
    }
    println!(
        "ready {}, in {:.1} s",
        counts.line(),
        start.elapsed().as_secs_f64()
    );
    for (reason, n) in &counts.reasons {
        println!("reason {n} x {reason}");
    }
    drop(tx);
    let mut report = tokio::time::interval(Duration::from_secs(10));
    report.tick().await;
    loop {
        tokio::select! {
            Some(p) = rx.recv() => counts.apply(p),
            _ = report.tick() => println!("held {}", counts.line()),
        }
    }
}
