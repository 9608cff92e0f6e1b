//! `tabmesh-rogue`: a peer that breaks the rules on purpose, to watch the misbehaviour ledger at
//! work (and for the tests that check it).
//!
//! It joins like a native node (the relay's bootstrap document, a reservation, discovery through
//! the DHT, identify, ping: the same behaviours as `tabmesh-node`), then on every connection to
//! another peer commits one offence three times, enough for a ban:
//! - `--offence gossip`: malformed messages on the GIMPS gossip protocol;
//! - `--offence dht`: forged records stored at the peer (and at the relay).
//!
//! It keeps coming back: every `--retry-secs` it dials the peers it met again, and prints what
//! happens (accepted, closed at once because it is banned, dial refused).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures::StreamExt;
use tabmesh_core::bootstrap::is_dialable;
use tabmesh_core::names::peer_name;
use tabmesh_core::peers::PeerTableConfig;
use tabmesh_core::relay_link::RelayLinkConfig;
use tabmesh_node::libp2p::kad::{Quorum, Record, RecordKey};
use tabmesh_node::libp2p::request_response::{self, ProtocolSupport};
use tabmesh_node::libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use tabmesh_node::libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use tabmesh_node::libp2p::{self, Multiaddr, PeerId, noise, tcp, yamux};
use tabmesh_node::report::{Report, WireSink};
use tabmesh_node::{BootstrapSource, dht, gimps, peers, relay_link};

/// A peer that misbehaves on purpose, to watch it being banned.
#[derive(Debug, Parser)]
#[command(name = "tabmesh-rogue", version, about, long_about)]
struct Args {
    /// The relay's HTTP URL (e.g. http://127.0.0.1:8080).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    bootstrap: String,
    /// Which rule to break.
    #[arg(long, value_enum, default_value_t = Offence::Gossip)]
    offence: Offence,
    /// Seconds between attempts to reconnect to the peers it met.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    retry_secs: u64,
}

/// The rule broken on every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Offence {
    /// Malformed messages on the GIMPS gossip protocol.
    Gossip,
    /// Forged records stored in the DHT.
    Dht,
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "tabmesh_node::libp2p::swarm::derive_prelude")]
struct Rogue {
    relay: relay_link::Behaviour,
    peers: peers::Behaviour,
    dht: dht::Behaviour,
    gossip: request_response::Behaviour<gimps::codec::GossipCodec>,
}

/// Times an offence is committed per connection: one more than a ban needs is never reached.
const OFFENCES_PER_CONNECTION: usize = 3;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tabmesh-rogue: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match runtime.block_on(local.run_until(run(args))) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tabmesh-rogue: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let origin = Instant::now();
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_dns()?
        .with_relay_client(noise::Config::new, yamux::Config::default)?
        .with_behaviour(|key, relay| Rogue {
            relay: relay_link::Behaviour::new(
                relay,
                BootstrapSource::Url(args.bootstrap.clone()),
                RelayLinkConfig::default(),
                1,
                origin,
                WireSink::discard(),
            ),
            peers: peers::Behaviour::new(
                key,
                format!("tabmesh-rogue/{}", env!("CARGO_PKG_VERSION")),
                Duration::from_secs(5),
                PeerTableConfig::default(),
                origin,
                WireSink::discard(),
            ),
            dht: dht::Behaviour::new(
                key.clone(),
                tabmesh_core::dht::DhtConfig::default(),
                Box::new(dht::MemoryBackend),
                dht::Role::Peer {
                    discovery: Some(tabmesh_core::discovery::DiscoveryConfig::default()),
                },
                WireSink::discard(),
            ),
            gossip: request_response::Behaviour::with_codec(
                gimps::codec::GossipCodec,
                [(gimps::codec::PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default(),
            ),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    println!(
        "tabmesh-rogue {} ({}) joining {}; offence: {:?}",
        swarm.local_peer_id(),
        peer_name(swarm.local_peer_id()),
        args.bootstrap,
        args.offence
    );
    let mut relay: Option<PeerId> = None;
    // Where to find the peers met so far (their relayed addresses, from identify).
    let mut met: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
    let mut opened: HashMap<PeerId, Instant> = HashMap::new();
    let mut retry = tokio::time::interval(Duration::from_secs(args.retry_secs));
    let mut forged = 0u64;
    loop {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(RogueEvent::Relay(Report::RelayKnown { peer, addr, .. })) => {
                    relay = Some(peer);
                    swarm.behaviour_mut().peers.set_relay(peer);
                    swarm.behaviour_mut().dht.set_relay(peer, addr);
                }
                SwarmEvent::Behaviour(RogueEvent::Peers(Report::Identified { peer, listen_addrs, protocols })) => {
                    swarm.behaviour_mut().dht.on_identified(peer, &listen_addrs, &protocols);
                    if Some(peer) != relay {
                        let addrs: Vec<Multiaddr> = listen_addrs.into_iter().filter(is_dialable)
                            .filter(|a| !tabmesh_webrtc_addr(a)).take(4).collect();
                        if !addrs.is_empty() && met.len() < 256 {
                            met.insert(peer, addrs);
                        }
                    }
                }
                SwarmEvent::ConnectionEstablished { peer_id, num_established, .. }
                    if num_established.get() == 1 =>
                {
                    opened.insert(peer_id, Instant::now());
                    if Some(peer_id) == relay {
                        if args.offence == Offence::Dht {
                            forge(&mut swarm, peer_id, &mut forged);
                        }
                        continue;
                    }
                    println!("connected to {}", peer_name(&peer_id));
                    match args.offence {
                        Offence::Gossip => {
                            for i in 0..OFFENCES_PER_CONNECTION {
                                let garbage = format!("\u{0}not a gossip message #{i}").into_bytes();
                                swarm.behaviour_mut().gossip.send_request(&peer_id, garbage);
                            }
                            println!("sent {OFFENCES_PER_CONNECTION} malformed gossip messages to {}", peer_name(&peer_id));
                        }
                        Offence::Dht => forge(&mut swarm, peer_id, &mut forged),
                    }
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, cause, .. } => {
                    let lasted = opened.remove(&peer_id).map(|t| t.elapsed().as_millis()).unwrap_or(0);
                    let who = if Some(peer_id) == relay { "the relay".to_owned() } else { peer_name(&peer_id) };
                    let cause = cause.map_or_else(|| "closed".to_owned(), |c| c.to_string());
                    println!("{who} closed the connection after {lasted} ms ({cause})");
                }
                SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. } => {
                    println!("dial to {} failed: {error}", peer_name(&peer));
                }
                _ => {}
            },
            _ = retry.tick() => {
                let connected: Vec<PeerId> = swarm.connected_peers().copied().collect();
                for (peer, addrs) in &met {
                    if !connected.contains(peer) {
                        let opts = DialOpts::peer_id(*peer)
                            .addresses(addrs.clone())
                            .condition(PeerCondition::DisconnectedAndNotDialing)
                            .build();
                        let _ = swarm.dial(opts);
                    }
                }
            }
        }
    }
}

fn tabmesh_webrtc_addr(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| p == tabmesh_node::libp2p::multiaddr::Protocol::WebRTC)
}

/// Stores records that are not signed envelopes at `peer`, straight through Kademlia.
fn forge(swarm: &mut libp2p::Swarm<Rogue>, peer: PeerId, forged: &mut u64) {
    for _ in 0..OFFENCES_PER_CONNECTION {
        *forged += 1;
        let record = Record::new(
            RecordKey::new(&format!("forged-{forged}")),
            b"not a signed tabmesh record".to_vec(),
        );
        swarm.behaviour_mut().dht.kad_mut().put_record_to(
            record,
            std::iter::once(peer),
            Quorum::One,
        );
    }
    println!(
        "stored {OFFENCES_PER_CONNECTION} forged records at {}",
        peer_name(&peer)
    );
}
