//! `tabmesh-rogue`: a peer that breaks the rules on purpose, to watch the misbehaviour ledger at
//! work (and for the tests that check it).
//!
//! It joins like a native node (the relay's bootstrap document, a reservation, discovery through
//! the DHT, identify, ping: the same behaviours as `tabmesh-node`), then on every connection to
//! another peer commits one offence three times, enough for a ban:
//! - `--offence gossip`: malformed messages on the GIMPS gossip protocol;
//! - `--offence dht`: forged records stored at the peer (and at the relay).
//!
//! Or it holds a reservation at the relay and stalls what comes through it:
//! - `--offence stall`: every circuit another peer opens to it through the relay is taken and
//!   never answered, so the relay and the dialer wait for their timeouts (60 s in libp2p's
//!   relay). It speaks circuit relay v2 by hand (a `RESERVE` on the hop protocol, the stop
//!   protocol accepted and left silent), since libp2p's relay client always answers.
//!
//! It keeps coming back: every `--retry-secs` it dials the peers it met again, and prints what
//! happens (accepted, closed at once because it is banned, dial refused).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use futures::future::{BoxFuture, Fuse};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use tabmesh_core::bootstrap::RelayTransport;
use tabmesh_core::bootstrap::is_dialable;
use tabmesh_core::names::peer_name;
use tabmesh_core::peers::PeerTableConfig;
use tabmesh_core::relay_link::RelayLinkConfig;
use tabmesh_node::libp2p::identify;
use tabmesh_node::libp2p::kad::{Quorum, Record, RecordKey};
use tabmesh_node::libp2p::request_response::{self, ProtocolSupport};
use tabmesh_node::libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use tabmesh_node::libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use tabmesh_node::libp2p::{self, Multiaddr, PeerId, StreamProtocol, noise, tcp, yamux};
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
    /// Circuits through the relay taken and never answered.
    Stall,
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
    if args.offence == Offence::Stall {
        return stall(&args).await;
    }
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
                Duration::ZERO,
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
    announce(swarm.local_peer_id(), &args);
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
                SwarmEvent::Behaviour(RogueEvent::Peers(Report::Identified { peer, listen_addrs, protocols, .. })) => {
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
                        Offence::Stall => {}
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

/// The first line printed, which the test harness reads the peer id from
/// (`tabmesh-rogue <peer id> (<name>) joining …`).
fn announce(peer: &PeerId, args: &Args) {
    println!(
        "tabmesh-rogue {peer} ({}) joining {}; offence: {:?}",
        peer_name(peer),
        args.bootstrap,
        args.offence
    );
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

/// Circuit relay v2: where a reservation is asked for, and where the relay opens circuits.
const HOP: StreamProtocol = StreamProtocol::new("/libp2p/circuit/relay/0.2.0/hop");
const STOP: StreamProtocol = StreamProtocol::new("/libp2p/circuit/relay/0.2.0/stop");

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "tabmesh_node::libp2p::swarm::derive_prelude")]
struct Staller {
    stream: libp2p_stream::Behaviour,
    identify: identify::Behaviour,
}

/// Holds a reservation at the relay and takes every circuit opened to it, never answering.
async fn stall(args: &Args) -> anyhow::Result<()> {
    let doc =
        tabmesh_node::platform::fetch_bootstrap(&BootstrapSource::Url(args.bootstrap.clone()))
            .await
            .map_err(anyhow::Error::msg)?;
    let relay = doc.relay_peer_id()?;
    let addr = doc
        .dial_addrs(RelayTransport::Tcp)?
        .into_iter()
        .next()
        .context("the relay announces no TCP address")?;
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| Staller {
            stream: libp2p_stream::Behaviour::new(),
            identify: identify::Behaviour::new(identify::Config::new(
                tabmesh_core::protocol::IDENTIFY_VERSION.to_owned(),
                key.public(),
            )),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    announce(swarm.local_peer_id(), args);
    let control = swarm.behaviour().stream.new_control();
    let mut circuits = control.clone().accept(STOP)?;
    // Announced (through identify) so that the relay lists it in the DHT as a peer like any
    // other; what is asked there is refused (the stream dropped).
    let mut lookups = control
        .clone()
        .accept(StreamProtocol::new(tabmesh_core::protocol::KADEMLIA))?;
    swarm.dial(addr)?;
    let mut reserve: Fuse<BoxFuture<'static, anyhow::Result<()>>> = Fuse::terminated();
    let mut held = Vec::new();
    loop {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == relay => {
                    reserve = reserve_at(control.clone(), relay).boxed().fuse();
                }
                SwarmEvent::ConnectionClosed { peer_id, cause, .. } if peer_id == relay => {
                    let cause = cause.map_or_else(|| "closed".to_owned(), |c| c.to_string());
                    anyhow::bail!("the relay closed the connection ({cause})");
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    anyhow::bail!("cannot reach the relay: {error}");
                }
                _ => {}
            },
            result = &mut reserve => match result {
                Ok(()) => println!("reservation accepted by the relay"),
                Err(error) => anyhow::bail!("no reservation: {error:#}"),
            },
            Some(_lookup) = lookups.next() => {}
            Some((_relay, stream)) = circuits.next() => {
                held.push(stream);
                println!("holding circuit #{} unanswered", held.len());
            }
        }
    }
}

/// Asks `relay` for a reservation: a `HopMessage { type: RESERVE }`, length-prefixed, and an
/// answer carrying `status: OK`.
async fn reserve_at(mut control: libp2p_stream::Control, relay: PeerId) -> anyhow::Result<()> {
    let mut stream = control.open_stream(relay, HOP).await?;
    // Length 2; field 1 (type) as a varint: RESERVE = 0.
    stream.write_all(&[2, 0x08, 0x00]).await?;
    stream.flush().await?;
    let mut len = 0usize;
    for shift in (0..21).step_by(7) {
        let mut byte = [0u8];
        stream.read_exact(&mut byte).await?;
        len |= usize::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    anyhow::ensure!(len <= 4096, "an answer of {len} bytes");
    let mut answer = vec![0u8; len];
    stream.read_exact(&mut answer).await?;
    // Field 5 (status) as a varint: OK = 100.
    anyhow::ensure!(
        answer.windows(2).any(|w| w == [0x28, 100]),
        "the relay's answer has no status OK"
    );
    Ok(())
}
