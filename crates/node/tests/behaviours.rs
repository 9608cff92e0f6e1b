//! The protocol behaviours between real swarms, over an in-memory transport.
//!
//! - direct upgrade: two direct connections from offers crossing are resolved the same way on
//!   both sides (both keep the one the smaller id dialed); the relayed connection is closed
//!   after its grace once the peer has answered on the direct one, also one that arrives later,
//!   and stays while it has not;
//! - misbehaviour ledger with GIMPS gossip: a peer sending garbage is banned at its third
//!   strike, refused while banned when it comes back, accepted again when the ban has expired,
//!   and banned longer when it offends again;
//! - misbehaviour ledger with the DHT and with services: a peer storing forged records, or
//!   sending unreadable, oversized or wrongly shaped service requests, is banned at its third
//!   strike and nothing it sent is kept or reaches a handler;
//! - service calls: a call whose connection closes under it while another connection to the
//!   provider is up is sent again over that one (the only provider is not set aside);
//! - DHT deadline: a put to peers that never answer is answered by its deadline, with why;
//! - dial backoff: a peer none of whose addresses answer leaves the routing table and is not
//!   dialed again (by any behaviour) until its wait is over or it connects;
//! - request tracing: a traced ping is one trace with a span on each peer, gathered whole; a
//!   peer sending malformed trace requests is banned at its third strike; a gathering that a
//!   peer never answers is assembled by its deadline, naming that peer as missing; a request
//!   for spans lost with its connection while another is up is sent again over that one.
//! - snapshots: three peers sending each other tokens take a Chandy-Lamport snapshot that
//!   is complete, conserves every token and has every channel consistent; a peer that leaves
//!   during one makes it incomplete, saying who; malformed frames and markers are refused,
//!   counted and reported for the ledger.
//!
//! The direct-upgrade behaviour tells relayed from direct connections by their addresses
//! (`/p2p-circuit`, `/webrtc`), so the transport here is libp2p's memory transport with
//! labelled listeners: connections accepted on `/memory/N/p2p-circuit` look relayed, those on
//! `/memory/N/p2p-circuit/webrtc` look like direct WebRTC connections. Everything above the
//! transport is the real thing.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::transport::{
    DialOpts, ListenerId, MemoryTransport, TransportError, TransportEvent,
};
use libp2p::core::upgrade::Version;
use libp2p::core::{ConnectedPoint, Transport};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::dial_opts::{DialOpts as SwarmDialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, plaintext, yamux};
use tabmesh_core::direct_upgrade::UpgradeConfig;
use tabmesh_core::gimps::node::GossipConfig;
use tabmesh_core::ledger::LedgerConfig;
use tabmesh_node::gimps::codec::{self, GossipCodec};
use tabmesh_node::report::{Report, WireNote, WireSink};
use tabmesh_node::{direct, gimps, ledger};

/// libp2p's memory transport, with a label on each listener that is added to the addresses of
/// the connections it accepts.
#[derive(Default)]
struct Labelled {
    inner: MemoryTransport,
    labels: HashMap<ListenerId, Multiaddr>,
}

/// `/memory/N` and what follows it.
fn split(addr: &Multiaddr) -> Option<(Multiaddr, Multiaddr)> {
    let mut parts = addr.iter();
    let Some(Protocol::Memory(port)) = parts.next() else {
        return None;
    };
    let label = parts.filter(|p| !matches!(p, Protocol::P2p(_))).collect();
    Some((Multiaddr::empty().with(Protocol::Memory(port)), label))
}

fn join(addr: Multiaddr, label: &Multiaddr) -> Multiaddr {
    label.iter().fold(addr, |a, p| a.with(p))
}

impl Transport for Labelled {
    type Output = <MemoryTransport as Transport>::Output;
    type Error = <MemoryTransport as Transport>::Error;
    type ListenerUpgrade = <MemoryTransport as Transport>::ListenerUpgrade;
    type Dial = <MemoryTransport as Transport>::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        let (memory, label) = split(&addr).ok_or(TransportError::MultiaddrNotSupported(addr))?;
        self.inner.listen_on(id, memory)?;
        self.labels.insert(id, label);
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let (memory, _) = split(&addr).ok_or(TransportError::MultiaddrNotSupported(addr))?;
        self.inner.dial(memory, opts)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let event = match Pin::new(&mut self.inner).poll(cx) {
            Poll::Ready(event) => event,
            Poll::Pending => return Poll::Pending,
        };
        let label = |id: &ListenerId| {
            self.labels
                .get(id)
                .cloned()
                .unwrap_or_else(Multiaddr::empty)
        };
        Poll::Ready(match event {
            TransportEvent::NewAddress {
                listener_id,
                listen_addr,
            } => TransportEvent::NewAddress {
                listen_addr: join(listen_addr, &label(&listener_id)),
                listener_id,
            },
            TransportEvent::AddressExpired {
                listener_id,
                listen_addr,
            } => TransportEvent::AddressExpired {
                listen_addr: join(listen_addr, &label(&listener_id)),
                listener_id,
            },
            TransportEvent::Incoming {
                listener_id,
                upgrade,
                local_addr,
                send_back_addr,
            } => TransportEvent::Incoming {
                local_addr: join(local_addr, &label(&listener_id)),
                send_back_addr: join(send_back_addr, &label(&listener_id)),
                upgrade,
                listener_id,
            },
            other => other,
        })
    }
}

fn swarm<B: NetworkBehaviour>(behaviour: impl FnOnce(&libp2p::identity::Keypair) -> B) -> Swarm<B> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            Labelled::default()
                .upgrade(Version::V1)
                .authenticate(plaintext::Config::new(key))
                .multiplex(yamux::Config::default())
        })
        .unwrap()
        .with_behaviour(behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

fn next_port() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(50_000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Listens on a fresh memory port with `label` (e.g. `/p2p-circuit/webrtc`); the address.
async fn listen<B: NetworkBehaviour>(swarm: &mut Swarm<B>, label: &str) -> Multiaddr {
    let addr: Multiaddr = format!("/memory/{}{label}", next_port()).parse().unwrap();
    swarm.listen_on(addr.clone()).unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            assert_eq!(address, addr);
            return address;
        }
    }
}

fn dial_twice_allowed(peer: PeerId, addr: Multiaddr) -> SwarmDialOpts {
    SwarmDialOpts::peer_id(peer)
        .addresses(vec![addr])
        .condition(PeerCondition::Always)
        .build()
}

/// What one side saw of its connections to the other.
#[derive(Debug, Default)]
struct Connections {
    open: HashMap<ConnectionId, ConnectedPoint>,
    established: usize,
    closed: Vec<ConnectedPoint>,
}

impl Connections {
    fn on<T>(&mut self, event: &SwarmEvent<T>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                connection_id,
                endpoint,
                ..
            } => {
                self.established += 1;
                self.open.insert(*connection_id, endpoint.clone());
            }
            SwarmEvent::ConnectionClosed {
                connection_id,
                endpoint,
                ..
            } => {
                self.open.remove(connection_id);
                self.closed.push(endpoint.clone());
            }
            _ => {}
        }
    }
}

/// Drives both swarms, recording their connections, until `done` holds (at most 20 s).
async fn drive_until<A: NetworkBehaviour, B: NetworkBehaviour>(
    a: &mut Swarm<A>,
    b: &mut Swarm<B>,
    seen: &mut (Connections, Connections),
    done: impl FnMut(&Connections, &Connections) -> bool,
) {
    drive_hooked(a, b, seen, done, |_, _| {}, |_, _| {}).await;
}

/// [`drive_until`] for two direct-upgrade behaviours whose peers answer on every connection
/// as it comes up, as the peers behaviour reports when identify arrives on it.
async fn drive_answering_until(
    a: &mut Swarm<direct::Behaviour>,
    b: &mut Swarm<direct::Behaviour>,
    seen: &mut (Connections, Connections),
    done: impl FnMut(&Connections, &Connections) -> bool,
) {
    fn answer(swarm: &mut Swarm<direct::Behaviour>, event: &SwarmEvent<Report>) {
        if let SwarmEvent::ConnectionEstablished {
            peer_id,
            connection_id,
            ..
        } = event
        {
            swarm.behaviour_mut().on_answered(*peer_id, *connection_id);
        }
    }
    drive_hooked(a, b, seen, done, answer, answer).await;
}

/// The loop of [`drive_until`]: each swarm's events go to its hook, then into `seen`.
async fn drive_hooked<A: NetworkBehaviour, B: NetworkBehaviour>(
    a: &mut Swarm<A>,
    b: &mut Swarm<B>,
    seen: &mut (Connections, Connections),
    mut done: impl FnMut(&Connections, &Connections) -> bool,
    mut on_a: impl FnMut(&mut Swarm<A>, &SwarmEvent<A::ToSwarm>),
    mut on_b: impl FnMut(&mut Swarm<B>, &SwarmEvent<B::ToSwarm>),
) {
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    while !done(&seen.0, &seen.1) {
        tokio::select! {
            event = a.select_next_some() => {
                on_a(a, &event);
                seen.0.on(&event);
            }
            event = b.select_next_some() => {
                on_b(b, &event);
                seen.1.on(&event);
            }
            () = &mut deadline => panic!("not reached in 20 s: {seen:?}"),
        }
    }
}

fn upgrade_config() -> UpgradeConfig {
    UpgradeConfig {
        relayed_grace: Duration::from_millis(300),
        ..UpgradeConfig::default()
    }
}

/// The direct-upgrade behaviour of a node without WebRTC of its own: it dials nothing, but it
/// resolves duplicates and closes relayed connections, which is what is tested here.
fn direct_peer() -> Swarm<direct::Behaviour> {
    swarm(|key| {
        direct::Behaviour::new(
            key.public().to_peer_id(),
            upgrade_config(),
            None,
            false,
            WireSink::discard(),
        )
    })
}

#[tokio::test]
async fn both_sides_keep_the_direct_connection_the_smaller_id_dialed() {
    let (mut a, mut b) = (direct_peer(), direct_peer());
    let a_direct = listen(&mut a, "/p2p-circuit/webrtc").await;
    let b_direct = listen(&mut b, "/p2p-circuit/webrtc").await;
    let (a_id, b_id) = (*a.local_peer_id(), *b.local_peer_id());
    // Both offer at once: each dials the other's direct address.
    a.dial(dial_twice_allowed(b_id, b_direct)).unwrap();
    b.dial(dial_twice_allowed(a_id, a_direct)).unwrap();
    let mut seen = Default::default();
    drive_answering_until(&mut a, &mut b, &mut seen, |x, y| {
        x.established == 2 && y.established == 2 && x.open.len() == 1 && y.open.len() == 1
    })
    .await;
    let a_smaller = a_id.to_bytes() < b_id.to_bytes();
    let (a_kept, b_kept) = (
        seen.0.open.values().next().unwrap(),
        seen.1.open.values().next().unwrap(),
    );
    // The connection both kept is the one the smaller id dialed: a dialer on that side, a
    // listener on the other.
    assert_eq!(a_kept.is_dialer(), a_smaller, "{seen:?}");
    assert_eq!(b_kept.is_dialer(), !a_smaller, "{seen:?}");
}

#[tokio::test]
async fn the_relayed_connection_closes_after_its_grace_and_a_late_one_too() {
    let (mut a, mut b) = (direct_peer(), direct_peer());
    let b_relayed = listen(&mut b, "/p2p-circuit").await;
    let b_direct = listen(&mut b, "/p2p-circuit/webrtc").await;
    let a_relayed = listen(&mut a, "/p2p-circuit").await;
    let (a_id, b_id) = (*a.local_peer_id(), *b.local_peer_id());
    // Met through the relay.
    a.dial(dial_twice_allowed(b_id, b_relayed)).unwrap();
    let mut seen = Default::default();
    drive_answering_until(&mut a, &mut b, &mut seen, |x, y| {
        x.established == 1 && y.established == 1
    })
    .await;
    // Going direct: the relayed connection goes once its grace is over.
    a.dial(dial_twice_allowed(b_id, b_direct)).unwrap();
    drive_answering_until(&mut a, &mut b, &mut seen, |x, y| {
        x.established == 2 && x.open.len() == 1 && y.open.len() == 1
    })
    .await;
    let is_webrtc = |e: &ConnectedPoint| tabmesh_webrtc::addr::is_webrtc(e.get_remote_address());
    assert!(seen.0.open.values().all(is_webrtc), "{seen:?}");
    assert!(seen.1.open.values().all(is_webrtc), "{seen:?}");
    assert!(
        seen.0.closed.iter().all(ConnectedPoint::is_relayed),
        "{seen:?}"
    );
    // The peer's own discovery dial arrives later through the relay: it goes too.
    b.dial(dial_twice_allowed(a_id, a_relayed)).unwrap();
    drive_answering_until(&mut a, &mut b, &mut seen, |x, y| {
        x.established == 3 && x.open.len() == 1 && y.open.len() == 1 && x.closed.len() == 2
    })
    .await;
    assert!(seen.0.open.values().all(is_webrtc), "{seen:?}");
    assert!(
        seen.0.closed.iter().all(ConnectedPoint::is_relayed),
        "{seen:?}"
    );
}

#[tokio::test]
async fn the_relayed_connection_stays_while_the_peer_has_not_answered_on_the_direct_one() {
    let (mut a, mut b) = (direct_peer(), direct_peer());
    let b_relayed = listen(&mut b, "/p2p-circuit").await;
    let b_direct = listen(&mut b, "/p2p-circuit/webrtc").await;
    let b_id = *b.local_peer_id();
    a.dial(dial_twice_allowed(b_id, b_relayed)).unwrap();
    a.dial(dial_twice_allowed(b_id, b_direct)).unwrap();
    let mut seen = Default::default();
    drive_until(&mut a, &mut b, &mut seen, |x, y| {
        x.established == 2 && y.established == 2
    })
    .await;
    // Nobody answers (no identify, no ping here): ten graces later both connections are open.
    let quiet = tokio::time::sleep(upgrade_config().relayed_grace * 10);
    tokio::pin!(quiet);
    loop {
        tokio::select! {
            event = a.select_next_some() => seen.0.on(&event),
            event = b.select_next_some() => seen.1.on(&event),
            () = &mut quiet => break,
        }
    }
    assert_eq!(seen.0.open.len(), 2, "{seen:?}");
    assert_eq!(seen.1.open.len(), 2, "{seen:?}");
}

/// A peer running GIMPS gossip and the misbehaviour ledger, with the node's routing of
/// violations to the ledger.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "Report")]
struct Gossiper {
    ledger: ledger::Behaviour,
    gimps: gimps::Behaviour,
}

/// The gossiping peer and its Event log's input.
fn gossiper(ban: Duration) -> (Swarm<Gossiper>, WireSink) {
    let wire = WireSink::default();
    let log = wire.clone();
    let swarm = swarm(|key| Gossiper {
        ledger: ledger::Behaviour::new(
            LedgerConfig {
                first_ban: ban,
                ..LedgerConfig::default()
            },
            log.clone(),
        ),
        gimps: gimps::Behaviour::new(
            key.clone(),
            GossipConfig {
                // No searching in the background of this test.
                search_interval: Duration::from_secs(3600),
                ..GossipConfig::default()
            },
            tabmesh_core::gimps::pace::SearchPace::FULL,
            web_time::Instant::now(),
            false,
            log,
        ),
    });
    (swarm, wire)
}

type Sender = request_response::Behaviour<GossipCodec>;

/// A peer that sends raw bytes on the gossip protocol.
fn garbage_sender() -> Swarm<Sender> {
    swarm(|_| {
        request_response::Behaviour::with_codec(
            GossipCodec,
            [(codec::PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default(),
        )
    })
}

/// Drives the honest peer (routing violations to its ledger, as the node does) and the offender
/// until `done` holds for an offender's event or a line the honest peer logged (checked after
/// every event and every 50 ms).
async fn run_pair(
    honest: &mut Swarm<Gossiper>,
    log: &WireSink,
    offender: &mut Swarm<Sender>,
    mut done: impl FnMut(Option<&SwarmEvent<request_response::Event<Vec<u8>, ()>>>, &[WireNote]) -> bool,
) {
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            event = honest.select_next_some() => {
                if let SwarmEvent::Behaviour(Report::Misbehaved { peer, topic, reason }) = &event {
                    honest.behaviour_mut().ledger.strike(*peer, *topic, reason);
                }
                if done(None, &log.take()) {
                    return;
                }
            }
            event = offender.select_next_some() => if done(Some(&event), &log.take()) {
                return;
            },
            _ = tick.tick() => if done(None, &log.take()) {
                return;
            },
            () = &mut deadline => panic!("not reached in 20 s"),
        }
    }
}

/// The first line of `lines` about `peer` that starts with `start`.
fn line_about(lines: &[WireNote], peer: PeerId, start: &str) -> Option<String> {
    lines
        .iter()
        .find(|n| n.peer == Some(peer) && n.summary.starts_with(start))
        .map(|n| n.summary.clone())
}

#[tokio::test(flavor = "current_thread")]
async fn a_repeat_offender_is_refused_while_banned_and_banned_longer_next_time() {
    let ban = Duration::from_millis(800);
    let (mut honest, log) = gossiper(ban);
    let mut offender = garbage_sender();
    let addr = listen(&mut honest, "").await;
    let (honest_id, offender_id) = (*honest.local_peer_id(), *offender.local_peer_id());

    for round in 1..=2u32 {
        offender.dial(addr.clone()).unwrap();
        run_pair(&mut honest, &log, &mut offender, |event, _| {
            matches!(event, Some(SwarmEvent::ConnectionEstablished { .. }))
        })
        .await;
        // Three garbage messages: three strikes, a ban, the connection closed.
        for _ in 0..3 {
            offender
                .behaviour_mut()
                .send_request(&honest_id, b"\x00 not a gossip message".to_vec());
        }
        let mut summary = None;
        run_pair(&mut honest, &log, &mut offender, |_, lines| {
            summary = summary
                .take()
                .or_else(|| line_about(lines, offender_id, "banned for"));
            summary.is_some()
        })
        .await;
        let summary = summary.unwrap();
        let expected = if round == 1 {
            "banned for 0.8 s (ban #1)"
        } else {
            "banned for 3.2 s (ban #2)"
        };
        assert!(summary.starts_with(expected), "{summary}");
        run_pair(&mut honest, &log, &mut offender, |event, _| {
            matches!(
                event,
                Some(SwarmEvent::ConnectionClosed {
                    num_established: 0,
                    ..
                })
            )
        })
        .await;
        let bans = honest.behaviour().ledger.view();
        assert_eq!(bans.len(), 1);
        assert_eq!(bans[0].peer_id, offender_id.to_base58());
        assert_eq!(bans[0].offence, round);
        let malformed = honest
            .behaviour()
            .gimps
            .view()
            .state
            .counters
            .rejected_malformed;
        assert_eq!(malformed, 3 * u64::from(round));

        // Back at once: refused, nothing it sends is read.
        offender.dial(addr.clone()).unwrap();
        run_pair(&mut honest, &log, &mut offender, |event, _| {
            matches!(event, Some(SwarmEvent::OutgoingConnectionError { .. }))
                || matches!(event, Some(SwarmEvent::ConnectionClosed { .. }))
        })
        .await;
        assert!(honest.behaviour().ledger.counters().refused >= u64::from(round));
        assert_eq!(
            honest
                .behaviour()
                .gimps
                .view()
                .state
                .counters
                .rejected_malformed,
            malformed
        );

        // The ban expires: the ledger lifts it and the peer is accepted again.
        run_pair(&mut honest, &log, &mut offender, |_, lines| {
            line_about(lines, offender_id, "ban ended").is_some()
        })
        .await;
        assert!(honest.behaviour().ledger.view().is_empty());
    }
    // The second ban was four times the first (0.8 s, then 3.2 s).
    assert_eq!(honest.behaviour().ledger.counters().bans, 2);
}

/// A peer running the DHT and the misbehaviour ledger.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "Report")]
struct DhtPeer {
    ledger: ledger::Behaviour,
    dht: tabmesh_node::dht::Behaviour,
}

/// A [`DhtPeer`] in `role`, with default settings and a memory store.
fn dht_peer(role: tabmesh_node::dht::Role) -> impl FnOnce(&libp2p::identity::Keypair) -> DhtPeer {
    dht_peer_with(role, tabmesh_core::dht::DhtConfig::default())
}

/// A [`DhtPeer`] in `role` with `config` and a memory store.
fn dht_peer_with(
    role: tabmesh_node::dht::Role,
    config: tabmesh_core::dht::DhtConfig,
) -> impl FnOnce(&libp2p::identity::Keypair) -> DhtPeer {
    move |key| DhtPeer {
        ledger: ledger::Behaviour::new(LedgerConfig::default(), WireSink::discard()),
        dht: tabmesh_node::dht::Behaviour::new(
            key.clone(),
            config,
            Box::new(tabmesh_node::dht::MemoryBackend),
            role,
            WireSink::discard(),
        ),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_peer_storing_forged_records_is_banned_and_nothing_it_sent_is_kept() {
    use libp2p::kad::{Quorum, Record, RecordKey};

    let mut honest = swarm(dht_peer(tabmesh_node::dht::Role::Peer { discovery: None }));
    let addr = listen(&mut honest, "").await;
    let honest_id = *honest.local_peer_id();
    // A plain Kademlia peer on our protocol name, storing what it likes.
    let mut rogue = swarm(plain_kad);
    let rogue_id = *rogue.local_peer_id();
    rogue.behaviour_mut().add_address(&honest_id, addr);
    for i in 0..3 {
        let junk = Record::new(
            RecordKey::new(&format!("junk{i}")),
            b"not a record".to_vec(),
        );
        rogue
            .behaviour_mut()
            .put_record_to(junk, std::iter::once(honest_id), Quorum::One);
    }
    let mut strikes = 0;
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            event = honest.select_next_some() => {
                if let SwarmEvent::Behaviour(Report::Misbehaved { peer, topic, reason }) = &event {
                    assert_eq!((*peer, *topic), (rogue_id, tabmesh_core::wire_log::Topic::Dht));
                    assert!(reason.contains("malformed record"), "{reason}");
                    strikes += 1;
                    honest.behaviour_mut().ledger.strike(*peer, *topic, reason);
                }
                if let SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } = event
                    && peer_id == rogue_id
                    && strikes == 3
                {
                    break;
                }
            }
            _ = rogue.select_next_some() => {}
            () = &mut deadline => panic!("the rogue was not banned (strikes: {strikes})"),
        }
    }
    let bans = honest.behaviour().ledger.view();
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].peer_id, rogue_id.to_base58());
    assert_eq!(bans[0].protocol, tabmesh_core::wire_log::Topic::Dht);
    let counters = honest.behaviour().dht.counters().clone();
    assert_eq!(
        (counters.records_refused, counters.records_accepted),
        (3, 0)
    );
    assert!(honest.behaviour_mut().dht.view().records.is_empty());
}

/// A peer that takes every Kademlia request and never answers (as an overloaded peer might):
/// a put is still answered by its deadline, saying what it was doing and who answered.
#[tokio::test(flavor = "current_thread")]
async fn a_put_to_peers_that_never_answer_is_answered_by_its_deadline_with_the_reason() {
    use tabmesh_core::dht::{DhtConfig, DhtError, DhtRequest};

    let config = DhtConfig {
        op_timeout: Duration::from_secs(2),
        ..DhtConfig::default()
    };
    let role = tabmesh_node::dht::Role::Peer { discovery: None };
    let mut honest = swarm(dht_peer_with(role, config));
    let mut silent = swarm(|_| libp2p_stream::Behaviour::new());
    let addr = listen(&mut silent, "").await;
    let silent_id = *silent.local_peer_id();
    let kad = libp2p::StreamProtocol::new(tabmesh_core::protocol::KADEMLIA);
    let mut incoming = silent.behaviour().new_control().accept(kad).unwrap();
    honest
        .behaviour_mut()
        .dht
        .kad_mut()
        .add_address(&silent_id, addr);
    let (reply, answer) = futures::channel::oneshot::channel();
    let put = DhtRequest::Put {
        key: "k".into(),
        value: "v".into(),
        ttl_ms: None,
    };
    honest.behaviour_mut().dht.start(put, reply);
    tokio::pin!(answer);
    let mut held = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    let outcome = loop {
        tokio::select! {
            outcome = &mut answer => break outcome.unwrap(),
            Some((_, stream)) = incoming.next() => held.push(stream),
            _ = honest.select_next_some() => {}
            _ = silent.select_next_some() => {}
            () = &mut deadline => panic!("the put was not answered"),
        }
    };
    assert!(!held.is_empty(), "the silent peer was asked");
    match outcome {
        Err(e @ DhtError::TimedOut { .. }) => assert_eq!(
            e.to_string(),
            "no answer in 2 s while looking the key up before storing: no peer answered"
        ),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

/// A plain Kademlia server on our protocol name.
fn plain_kad(
    key: &libp2p::identity::Keypair,
) -> libp2p::kad::Behaviour<libp2p::kad::store::MemoryStore> {
    use libp2p::kad;
    let id = key.public().to_peer_id();
    let config = kad::Config::new(libp2p::StreamProtocol::new(
        tabmesh_core::protocol::KADEMLIA,
    ));
    let mut kad = kad::Behaviour::with_config(id, kad::store::MemoryStore::new(id), config);
    kad.set_mode(Some(kad::Mode::Server));
    kad
}

#[tokio::test(flavor = "current_thread")]
async fn the_bootstrap_node_lists_a_peer_as_soon_as_its_reservation_is_accepted() {
    use libp2p::StreamProtocol;
    use libp2p::kad;

    let kad_protocol = [StreamProtocol::new(tabmesh_core::protocol::KADEMLIA)];
    let mut relay = swarm(dht_peer(tabmesh_node::dht::Role::Bootstrap));
    let relay_addr = listen(&mut relay, "").await;
    let relay_id = *relay.local_peer_id();
    // Two peers that hold reservations (their "circuit" addresses are plain ones here): A was
    // identified before its reservation, B (connected) after it; C was never identified.
    let mut a = swarm(plain_kad);
    let mut b = swarm(plain_kad);
    let mut c = swarm(plain_kad);
    let a_addr = listen(&mut a, "").await;
    let b_addr = listen(&mut b, "").await;
    let c_addr = listen(&mut c, "").await;
    let (a_id, b_id, c_id) = (*a.local_peer_id(), *b.local_peer_id(), *c.local_peer_id());
    relay
        .behaviour_mut()
        .dht
        .on_identified(a_id, &[], &kad_protocol);
    relay.behaviour_mut().dht.on_reserved(a_id, vec![a_addr]);
    b.dial(relay_addr.clone()).unwrap();
    loop {
        tokio::select! {
            event = relay.select_next_some() => if matches!(event, SwarmEvent::ConnectionEstablished { .. }) {
                break;
            },
            _ = b.select_next_some() => {}
        }
    }
    relay.behaviour_mut().dht.on_reserved(b_id, vec![b_addr]);
    relay.behaviour_mut().dht.on_reserved(c_id, vec![c_addr]);
    relay
        .behaviour_mut()
        .dht
        .on_identified(b_id, &[], &kad_protocol);

    // A newcomer asks the relay: its one lookup finds A and B (and not C).
    let mut asker = swarm(plain_kad);
    asker.behaviour_mut().add_address(&relay_id, relay_addr);
    asker.behaviour_mut().get_closest_peers(PeerId::random());
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    let found = loop {
        tokio::select! {
            event = asker.select_next_some() => {
                if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
                    result: kad::QueryResult::GetClosestPeers(result),
                    step,
                    ..
                }) = event
                    && step.last
                {
                    let ok = result.expect("the lookup succeeds");
                    break ok.peers.into_iter().map(|p| p.peer_id).collect::<Vec<_>>();
                }
            }
            _ = relay.select_next_some() => {}
            _ = a.select_next_some() => {}
            _ = b.select_next_some() => {}
            _ = c.select_next_some() => {}
            () = &mut deadline => panic!("the lookup did not end in 20 s"),
        }
    };
    assert!(found.contains(&a_id), "{found:?}");
    assert!(found.contains(&b_id), "{found:?}");
    assert!(!found.contains(&c_id), "{found:?}");
}

/// What a tab's discovery did among `n` other peers ([`discovery_among`]).
struct DiscoveryAmong {
    /// The peers it dialed through the relay.
    dialed: usize,
    /// The Event log's line when its first lookup ended.
    lookup: String,
    /// Its discovery lookups, each ended (under load the 2 s schedule starts a second one
    /// before the watch is over).
    lookups: usize,
    /// In the tab, then in the relay: Kademlia's own bootstrap steps ended, and the `FIND_NODE`
    /// requests received.
    tab_kad: (usize, usize),
    relay_kad: (usize, usize),
}

/// Counts in `dht` Kademlia's bootstrap steps and the `FIND_NODE` requests it receives.
fn count_kad(
    dht: &mut tabmesh_node::dht::Behaviour,
) -> std::sync::Arc<std::sync::Mutex<(usize, usize)>> {
    use libp2p::kad::{Event, InboundRequest, QueryResult};
    let counts = std::sync::Arc::new(std::sync::Mutex::new((0, 0)));
    let seen = counts.clone();
    dht.observe_kad(Box::new(move |event| {
        let mut seen = seen.lock().unwrap();
        match event {
            Event::OutboundQueryProgressed {
                result: QueryResult::Bootstrap(_),
                ..
            } => seen.0 += 1,
            Event::InboundRequest {
                request: InboundRequest::FindNode { .. },
            } => seen.1 += 1,
            _ => {}
        }
    }));
    counts
}

/// A tab's discovery when the relay holds the reservations of `n` other peers (unreachable
/// here), watched until it has dialed them all, its lookup has ended and Kademlia's own
/// bootstraps (500 ms after a peer entered a table) have ended a step.
async fn discovery_among(n: usize) -> DiscoveryAmong {
    use libp2p::StreamProtocol;
    use libp2p::core::transport::ListenerId;
    use libp2p::swarm::{FromSwarm, NewListenAddr};
    use tabmesh_core::discovery::DiscoveryConfig;

    let kad_protocol = [StreamProtocol::new(tabmesh_core::protocol::KADEMLIA)];
    let mut relay = swarm(dht_peer(tabmesh_node::dht::Role::Bootstrap));
    let relay_addr = listen(&mut relay, "").await;
    let relay_id = *relay.local_peer_id();
    // The peers hold reservations; the relay lists them at addresses of its own making.
    let others: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
    let elsewhere: Multiaddr = format!("/memory/{}", next_port()).parse().unwrap();
    let listed = elsewhere
        .with(Protocol::P2p(relay_id))
        .with(Protocol::P2pCircuit);
    for peer in &others {
        relay
            .behaviour_mut()
            .dht
            .on_identified(*peer, &[], &kad_protocol);
        relay
            .behaviour_mut()
            .dht
            .on_reserved(*peer, vec![listed.clone()]);
    }
    // A tab: its relay is known, and its reservation was just accepted (discovery starts).
    let wire = WireSink::default();
    let mut tab = swarm(|key: &libp2p::identity::Keypair| DhtPeer {
        ledger: ledger::Behaviour::new(LedgerConfig::default(), WireSink::discard()),
        dht: tabmesh_node::dht::Behaviour::new(
            key.clone(),
            tabmesh_core::dht::DhtConfig::default(),
            Box::new(tabmesh_node::dht::MemoryBackend),
            tabmesh_node::dht::Role::Peer {
                discovery: Some(DiscoveryConfig::default()),
            },
            wire.clone(),
        ),
    });
    tab.behaviour_mut()
        .dht
        .set_relay(relay_id, relay_addr.clone());
    let tab_kad = count_kad(&mut tab.behaviour_mut().dht);
    let relay_kad = count_kad(&mut relay.behaviour_mut().dht);
    let circuit = relay_addr
        .clone()
        .with(Protocol::P2p(relay_id))
        .with(Protocol::P2pCircuit);
    tab.behaviour_mut()
        .dht
        .on_swarm_event(FromSwarm::NewListenAddr(NewListenAddr {
            listener_id: ListenerId::next(),
            addr: &circuit,
        }));
    // Each of them is dialed through the tab's own relay address (Kademlia's dials, when its
    // lookup goes on, use the addresses in the reply, three at a time).
    let mut dialed_through_relay = std::collections::HashSet::new();
    let mut done = None;
    let mut lines = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    // (Discovery dials at most 16 of one reply; Kademlia's lookup reaches the rest.)
    while dialed_through_relay.len() < others.len().min(16) || done.is_none() {
        tokio::select! {
            event = tab.select_next_some() => {
                // (Over the memory transport, a circuit address reaches the relay itself.)
                use libp2p::swarm::DialError;
                if let SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. } = &event {
                    let tried: Vec<&Multiaddr> = match error {
                        DialError::Transport(tried) => tried.iter().map(|(a, _)| a).collect(),
                        DialError::WrongPeerId { address, .. } => vec![address],
                        _ => Vec::new(),
                    };
                    if tried.iter().any(|a| a.to_string().starts_with(&circuit.to_string())) {
                        dialed_through_relay.insert(*peer);
                    }
                }
                lines.extend(wire.take().into_iter().map(|note| note.summary));
                done = done.or_else(|| {
                    lines.iter().find(|line| line.starts_with("lookup done")).cloned()
                });
            }
            _ = relay.select_next_some() => {}
            () = &mut deadline => panic!(
                "dialed through the relay in 20 s: {} of {}; lookup: {done:?}",
                dialed_through_relay.len(),
                others.len()
            ),
        }
    }
    // Until Kademlia's own bootstraps have ended a step (reported once any request it sent was
    // answered): the tab's, and the relay's while its table (the others and the tab) is under k.
    let k = tabmesh_core::dht::DhtConfig::default().replication_factor;
    let bootstrapped =
        || tab_kad.lock().unwrap().0 > 0 && (n + 1 >= k || relay_kad.lock().unwrap().0 > 0);
    while !bootstrapped() {
        tokio::select! {
            _ = tab.select_next_some() => {}
            _ = relay.select_next_some() => {}
            () = &mut deadline => panic!(
                "no bootstrap step in 20 s: tab {:?}, relay {:?}",
                *tab_kad.lock().unwrap(),
                *relay_kad.lock().unwrap()
            ),
        }
    }
    // With every peer named (fewer than k), until every discovery lookup started has ended:
    // each asked the relay alone. (With more, lookups go on asking unreachable peers.)
    let count =
        |lines: &[String], start: &str| lines.iter().filter(|l| l.starts_with(start)).count();
    let (started, ended) = ("lookup: FIND_NODE for our own id", "lookup done");
    lines.extend(wire.take().into_iter().map(|note| note.summary));
    while n < k && count(&lines, started) > count(&lines, ended) {
        tokio::select! {
            _ = tab.select_next_some() => {}
            _ = relay.select_next_some() => {}
            () = &mut deadline => panic!("a discovery lookup did not end in 20 s: {lines:?}"),
        }
        lines.extend(wire.take().into_iter().map(|note| note.summary));
    }
    DiscoveryAmong {
        dialed: dialed_through_relay.len(),
        lookup: done.expect("the lookup ended"),
        lookups: count(&lines, ended),
        tab_kad: *tab_kad.lock().unwrap(),
        relay_kad: *relay_kad.lock().unwrap(),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_discovery_lookup_dials_every_peer_the_relay_names_at_once_and_ends_with_its_answer() {
    // Seven others: fewer than k, so the relay named every peer there is, and asking them
    // would only hear the same.
    let found = discovery_among(7).await;
    assert_eq!(found.dialed, 7);
    assert_eq!(
        found.lookup,
        "lookup done: the relay named 7 peer(s), 1 asked"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn kademlias_own_bootstraps_ask_no_one_once_the_relay_has_named_every_peer() {
    // The tab's bootstrap (the relay entered its table) and the relay's (the tab entered its)
    // start, and each step ends before it sends a request: the relay hears only the tab's
    // discovery lookups (one, or two when the watch outlasts the 2 s schedule), the tab
    // nothing.
    let found = discovery_among(7).await;
    let (tab_steps, tab_asked) = found.tab_kad;
    let (relay_steps, relay_asked) = found.relay_kad;
    assert!(tab_steps >= 1, "the tab's bootstrap did not start");
    assert!(relay_steps >= 1, "the relay's bootstrap did not start");
    assert!(found.lookups >= 1);
    assert_eq!(
        relay_asked, found.lookups,
        "FIND_NODEs the relay received, against the tab's discovery lookups"
    );
    assert_eq!(tab_asked, 0, "FIND_NODEs the tab received");
}

#[tokio::test(flavor = "current_thread")]
async fn a_discovery_lookup_goes_on_when_the_relay_names_k_peers() {
    // Twenty others, k of them named: there may be more than the relay said, closer to us.
    let found = discovery_among(20).await;
    let (dialed, lookup) = (found.dialed, found.lookup);
    assert!(dialed >= 16, "{dialed}");
    // There may be more peers than the relay named: Kademlia's bootstrap runs and asks.
    let (steps, _) = found.tab_kad;
    let (_, relay_asked) = found.relay_kad;
    assert!(
        steps >= 1 && relay_asked > 1,
        "{steps} step(s), the relay asked {relay_asked} time(s)"
    );
    let asked: usize = lookup
        .rsplit(", ")
        .next()
        .and_then(|a| a.strip_suffix(" asked"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{lookup}"));
    assert!(asked > 1, "{lookup}");
}

/// A peer offering services, with the misbehaviour ledger.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "Report")]
struct Provider {
    ledger: ledger::Behaviour,
    services: tabmesh_node::services::Behaviour,
}

/// Length-prefixed bytes as the service protocol frames them, without the size check: what a
/// misbehaving peer can put on the wire.
#[derive(Debug, Clone, Default)]
struct RawServiceCodec;

impl request_response::Codec for RawServiceCodec {
    type Protocol = libp2p::StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &Self::Protocol, _: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    async fn read_response<T>(&mut self, _: &Self::Protocol, io: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        use futures::AsyncReadExt;
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await?;
        let mut bytes = vec![0; u32::from_be_bytes(len).min(1 << 20) as usize];
        io.read_exact(&mut bytes).await?;
        Ok(bytes)
    }

    async fn write_request<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        bytes: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        use futures::AsyncWriteExt;
        io.write_all(&u32::try_from(bytes.len()).unwrap().to_be_bytes())
            .await?;
        io.write_all(&bytes).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &Self::Protocol,
        _: &mut T,
        _: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_peer_sending_malformed_or_oversized_service_requests_is_refused_and_banned() {
    use tabmesh_core::services::message::{MAX_MESSAGE_BYTES, ServiceReply, ServiceRequest};
    use tabmesh_node::services::ServiceCommand;

    let wire = WireSink::default();
    let mut honest = swarm(|key| Provider {
        ledger: ledger::Behaviour::new(LedgerConfig::default(), wire.clone()),
        services: tabmesh_node::services::Behaviour::new(
            key.public().to_peer_id(),
            "honest".to_owned(),
            web_time::Instant::now(),
            wire.clone(),
        ),
    });
    let (reply, _done) = futures::channel::oneshot::channel();
    honest
        .behaviour_mut()
        .services
        .command(ServiceCommand::Builtin {
            name: "echo".to_owned(),
            on: true,
            reply,
        });
    let addr = listen(&mut honest, "").await;
    let honest_id = *honest.local_peer_id();
    let mut caller = swarm(|_| {
        request_response::Behaviour::with_codec(
            RawServiceCodec,
            [(
                tabmesh_node::services::codec::PROTOCOL,
                ProtocolSupport::Outbound,
            )],
            request_response::Config::default(),
        )
    });
    let caller_id = *caller.local_peer_id();
    caller.dial(addr).unwrap();

    // Once connected, a well-formed call is answered: the path works, so what follows is
    // refused for its content.
    let echo = ServiceRequest {
        service: "echo".to_owned(),
        message_type: "echo".to_owned(),
        data: serde_json::json!({"n": 7}),
        deadline_ms: 5_000,
        origin: None,
        trace: None,
    };
    // Then three offences: garbage, a frame over the limit, and JSON of the wrong shape.
    let offences = [
        b"\x00 not json".to_vec(),
        vec![b' '; MAX_MESSAGE_BYTES + 100],
        br#"{"service": 7, "type": []}"#.to_vec(),
    ];
    let mut answers = Vec::new();
    let mut strikes = Vec::new();
    let mut sent_offences = false;
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            event = honest.select_next_some() => {
                if let SwarmEvent::Behaviour(Report::Misbehaved { peer, topic, reason }) = &event {
                    assert_eq!(
                        (*peer, *topic),
                        (caller_id, tabmesh_core::wire_log::Topic::Service)
                    );
                    strikes.push(reason.clone());
                    honest.behaviour_mut().ledger.strike(*peer, *topic, reason);
                }
                if let SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } = event
                    && peer_id == caller_id
                {
                    break;
                }
            }
            event = caller.select_next_some() => {
                if let SwarmEvent::ConnectionEstablished { .. } = event {
                    caller.behaviour_mut().send_request(&honest_id, echo.encode());
                }
                if let SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                }) = event
                {
                    answers.push(ServiceReply::decode(&response).unwrap());
                    if !sent_offences {
                        sent_offences = true;
                        for bytes in offences.clone() {
                            caller.behaviour_mut().send_request(&honest_id, bytes);
                        }
                    }
                }
            }
            () = &mut deadline => panic!("not banned in 20 s: strikes {strikes:?}, answers {answers:?}"),
        }
    }
    match &answers[0] {
        ServiceReply::Ok { data, .. } => assert_eq!(data, &serde_json::json!({"n": 7})),
        other => panic!("the good call was not answered: {other:?}"),
    }
    assert_eq!(strikes.len(), 3, "{strikes:?}");
    assert!(
        strikes
            .iter()
            .any(|s| s.contains(&format!("(at most {MAX_MESSAGE_BYTES})"))),
        "the oversized frame is named as such: {strikes:?}"
    );
    let bans = honest.behaviour().ledger.view();
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].peer_id, caller_id.to_base58());
    let view = honest.behaviour().services.view();
    assert_eq!(view.counters.malformed, 3);
    assert_eq!(view.counters.served, 1, "no offence reached a handler");
    let log = wire.take();
    assert!(
        line_about(&log, caller_id, "banned for").is_some(),
        "{:?}",
        log.iter().map(|n| &n.summary).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_call_whose_connection_closes_under_it_goes_again_over_the_other_one() {
    use tabmesh_core::dht::{DhtError, DhtReply, DhtRequest, LookupStats, ProviderView};
    use tabmesh_core::services::calls::CallRequest;
    use tabmesh_core::services::message::{ServiceReply, ServiceRequest};
    use tabmesh_node::services::ServiceCommand;
    use tabmesh_node::services::codec::{PROTOCOL, ServiceCodec};

    // The provider holds every request it gets, so that the test decides when one is answered.
    let mut provider = swarm(|_| {
        request_response::Behaviour::with_codec(
            ServiceCodec,
            [(PROTOCOL, ProtocolSupport::Inbound)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(60)),
        )
    });
    let addr = listen(&mut provider, "").await;
    let provider_id = *provider.local_peer_id();
    let wire = WireSink::default();
    let mut caller = swarm(|key| {
        tabmesh_node::services::Behaviour::new(
            key.public().to_peer_id(),
            "caller".to_owned(),
            web_time::Instant::now(),
            wire.clone(),
        )
    });
    caller.dial(addr.clone()).unwrap();
    let (reply, mut answer) = futures::channel::oneshot::channel();
    let mut call = Some(ServiceCommand::Call(
        CallRequest {
            service: "echo".to_owned(),
            message_type: "echo".to_owned(),
            data: serde_json::json!({"n": 7}),
            deadline_ms: Some(15_000),
            origin: None,
        },
        reply,
    ));
    // The first connection carries the call; once the provider holds it, a second connection
    // comes up and the caller closes the first (as the direct upgrade closes a relayed one).
    let mut first = None;
    let mut held = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    let answer = loop {
        tokio::select! {
            event = caller.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { connection_id, .. } => match first {
                    None => {
                        first = Some(connection_id);
                        caller.behaviour_mut().command(call.take().unwrap());
                    }
                    Some(first) => {
                        assert!(caller.close_connection(first));
                    }
                },
                SwarmEvent::Behaviour(Report::Dht { request, reply }) => {
                    let _ = reply.send(match request {
                        DhtRequest::Providers { key } => Ok(DhtReply::Providers {
                            providers: vec![ProviderView {
                                key: key.clone(),
                                peer_id: provider_id.to_base58(),
                                name: "provider".to_owned(),
                                mine: false,
                                expires_in_ms: None,
                            }],
                            key,
                            duration_ms: 0,
                            trace_id: None,
                            lookup: LookupStats::default(),
                        }),
                        // No descriptor: the call goes unchecked.
                        _ => Err(DhtError::Failed("not in this test".to_owned())),
                    });
                }
                _ => {}
            },
            event = provider.select_next_some() => {
                if let SwarmEvent::Behaviour(request_response::Event::Message {
                    connection_id,
                    message: request_response::Message::Request { request, channel, .. },
                    ..
                }) = event
                {
                    let request = ServiceRequest::decode(&request).unwrap();
                    held.push((connection_id, channel));
                    if held.len() == 1 {
                        caller.dial(dial_twice_allowed(provider_id, addr.clone())).unwrap();
                    } else {
                        let (_, channel) = held.pop().unwrap();
                        let ok = ServiceReply::Ok { data: request.data, ms: 0 };
                        provider.behaviour_mut().send_response(channel, ok.encode()).unwrap();
                    }
                }
            }
            result = &mut answer => break result.unwrap(),
            () = &mut deadline => panic!("no answer in 20 s; held {}", held.len()),
        }
    };
    let answer = answer.unwrap_or_else(|e| panic!("the call failed: {e}"));
    assert_eq!(answer.reply, serde_json::json!({"n": 7}));
    // Sent twice: the first request, over the closed connection, is still unanswered.
    assert_eq!(held.len(), 1);
    let log = wire.take();
    assert!(
        line_about(&log, provider_id, "its connection closed mid-call").is_some(),
        "{:?}",
        log.iter().map(|n| &n.summary).collect::<Vec<_>>()
    );
}

/// A peer with request tracing and the misbehaviour ledger.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "Report")]
struct Tracer {
    ledger: ledger::Behaviour,
    trace: tabmesh_node::trace::Behaviour,
}

fn tracer() -> Swarm<Tracer> {
    swarm(|key| Tracer {
        ledger: ledger::Behaviour::new(LedgerConfig::default(), WireSink::discard()),
        trace: tabmesh_node::trace::Behaviour::new(key.public().to_peer_id(), WireSink::discard()),
    })
}

/// Drives both until `rx` has an answer (at most 20 s).
async fn answer_of<T>(
    a: &mut Swarm<Tracer>,
    b: &mut Swarm<Tracer>,
    mut rx: futures::channel::oneshot::Receiver<T>,
) -> T {
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = a.select_next_some() => {}
            _ = b.select_next_some() => {}
            answer = &mut rx => return answer.unwrap(),
            () = &mut deadline => panic!("no answer in 20 s"),
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_traced_ping_is_one_trace_with_a_span_on_each_peer() {
    use tabmesh_node::trace::TraceCommand;

    let mut a = tracer();
    let mut b = tracer();
    let addr = listen(&mut b, "").await;
    let (a_id, b_id) = (*a.local_peer_id(), *b.local_peer_id());
    a.dial(addr).unwrap();
    let mut seen = (Connections::default(), Connections::default());
    drive_until(&mut a, &mut b, &mut seen, |a, _| !a.open.is_empty()).await;

    let (reply, rx) = futures::channel::oneshot::channel();
    a.behaviour_mut()
        .trace
        .command(TraceCommand::Ping { peer: None, reply });
    let ping = answer_of(&mut a, &mut b, rx).await.unwrap();
    assert_eq!(ping.peer, b_id.to_base58(), "the only peer is picked");

    let (reply, rx) = futures::channel::oneshot::channel();
    a.behaviour_mut().trace.command(TraceCommand::Gather {
        trace_id: ping.trace_id,
        reply,
    });
    let trace = answer_of(&mut a, &mut b, rx).await.unwrap();
    assert_eq!(trace.peers, {
        let mut p = vec![a_id.to_base58(), b_id.to_base58()];
        p.sort();
        p
    });
    assert!(trace.missing.is_empty(), "{:?}", trace.missing);
    let root = trace
        .spans
        .iter()
        .find(|s| s.span.name == "trace.ping")
        .unwrap();
    let pong = trace
        .spans
        .iter()
        .find(|s| s.span.name == "trace.pong")
        .unwrap();
    assert_eq!(root.span.peer, a_id.to_base58());
    assert_eq!(pong.span.peer, b_id.to_base58());
    assert_eq!(pong.span.parent_span_id, Some(root.span.span_id));
    assert!(!pong.orphan);
    // On A's clock, B's handling lies within A's ping (same machine: offset about 0).
    assert!(pong.span.start_ms >= root.span.start_ms);
    assert!(pong.span.end_ms <= root.span.end_ms);
    assert_eq!(a.behaviour().trace.view().spans_held, 1);
    assert_eq!(b.behaviour().trace.view().recent[0].trace_id, ping.trace_id);
}

#[tokio::test(flavor = "current_thread")]
async fn malformed_trace_requests_are_strikes() {
    let mut honest = tracer();
    let addr = listen(&mut honest, "").await;
    let honest_id = *honest.local_peer_id();
    let mut offender = swarm(|_| {
        request_response::Behaviour::with_codec(
            RawServiceCodec,
            [(tabmesh_node::trace::PROTOCOL, ProtocolSupport::Outbound)],
            request_response::Config::default(),
        )
    });
    let offender_id = *offender.local_peer_id();
    offender.dial(addr).unwrap();
    let mut strikes = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            event = honest.select_next_some() => {
                if let SwarmEvent::Behaviour(Report::Misbehaved { peer, topic, reason }) = &event {
                    assert_eq!((*peer, *topic), (offender_id, tabmesh_core::wire_log::Topic::Trace));
                    strikes.push(reason.clone());
                    honest.behaviour_mut().ledger.strike(*peer, *topic, reason);
                }
                if let SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } = event
                    && peer_id == offender_id
                    && strikes.len() == 3
                {
                    break;
                }
            }
            event = offender.select_next_some() => {
                if let SwarmEvent::ConnectionEstablished { .. } = event {
                    for bytes in [
                        b"not json".to_vec(),
                        br#"{"op":"ping","context":"00-zz"}"#.to_vec(),
                        vec![b' '; 70_000],
                    ] {
                        offender.behaviour_mut().send_request(&honest_id, bytes);
                    }
                }
            }
            () = &mut deadline => panic!("not banned: {strikes:?}"),
        }
    }
    assert_eq!(honest.behaviour().trace.view().malformed, 3);
    assert_eq!(honest.behaviour().ledger.view().len(), 1);
}

/// A peer that takes requests for spans and answers none by itself (it keeps the streams
/// open, and a request's own timeout is a minute): the test holds them, or answers.
fn spans_holder() -> Swarm<request_response::Behaviour<tabmesh_node::services::codec::ServiceCodec>>
{
    swarm(|_| {
        request_response::Behaviour::with_codec(
            tabmesh_node::services::codec::ServiceCodec,
            [(tabmesh_node::trace::PROTOCOL, ProtocolSupport::Inbound)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(60)),
        )
    })
}

/// `a` sent a message to `to` in a new trace and gathers it: `to` is named, so it is asked.
fn gather_a_trace_naming(
    a: &mut Swarm<Tracer>,
    to: PeerId,
) -> futures::channel::oneshot::Receiver<Result<tabmesh_core::trace::assemble::Trace, String>> {
    use tabmesh_core::trace::assemble::{KIND, REMOTE};
    use tabmesh_core::trace::{Span, SpanStatus, TraceContext};
    use tabmesh_node::trace::TraceCommand;

    let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(1);
    let context = TraceContext::root(&mut rng);
    let mut span = Span::start(context, None, "send", &a.local_peer_id().to_base58(), 1000);
    span.attribute(KIND, "client");
    span.attribute(REMOTE, to.to_base58());
    span.end(1001, SpanStatus::Ok);
    a.behaviour_mut().trace.record(span);
    let (reply, rx) = futures::channel::oneshot::channel();
    a.behaviour_mut().trace.command(TraceCommand::Gather {
        trace_id: context.trace_id,
        reply,
    });
    rx
}

#[tokio::test(flavor = "current_thread")]
async fn a_gathering_that_a_peer_never_answers_is_assembled_by_its_deadline_saying_who() {
    let mut a = swarm(|key| Tracer {
        ledger: ledger::Behaviour::new(LedgerConfig::default(), WireSink::discard()),
        trace: tabmesh_node::trace::Behaviour::new(key.public().to_peer_id(), WireSink::discard())
            .with_gather_deadline(Duration::from_secs(2)),
    });
    // B never answers: only a deadline ends the wait.
    let mut b = spans_holder();
    let addr = listen(&mut b, "").await;
    let b_id = *b.local_peer_id();
    a.dial(addr).unwrap();
    let mut held = Vec::new();
    loop {
        tokio::select! {
            event = a.select_next_some() => {
                if matches!(event, SwarmEvent::ConnectionEstablished { .. }) {
                    break;
                }
            }
            _ = b.select_next_some() => {}
        }
    }
    let mut rx = gather_a_trace_naming(&mut a, b_id);
    let guard = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(guard);
    let trace = loop {
        tokio::select! {
            _ = a.select_next_some() => {}
            event = b.select_next_some() => {
                if let SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Request { channel, .. },
                    ..
                }) = event
                {
                    held.push(channel);
                }
            }
            answer = &mut rx => break answer.unwrap().unwrap(),
            () = &mut guard => panic!("the gathering never answered"),
        }
    };
    assert_eq!(held.len(), 1, "B was asked once");
    assert_eq!(trace.spans.len(), 1, "A's own span is kept");
    assert_eq!(trace.missing.len(), 1, "{:?}", trace.missing);
    assert_eq!(trace.missing[0].peer, b_id.to_base58());
    assert!(
        trace.missing[0].reason.contains("gathering's 2 s"),
        "ended by the gathering's deadline, not the request's timeout: {:?}",
        trace.missing
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_request_for_spans_lost_with_its_connection_is_sent_again_over_the_other_one() {
    use tabmesh_core::trace::message::TraceReply;

    let wire = WireSink::default();
    let mut a = swarm(|key| Tracer {
        ledger: ledger::Behaviour::new(LedgerConfig::default(), WireSink::discard()),
        trace: tabmesh_node::trace::Behaviour::new(key.public().to_peer_id(), wire.clone()),
    });
    let mut b = spans_holder();
    let addr = listen(&mut b, "").await;
    let b_id = *b.local_peer_id();
    a.dial(addr.clone()).unwrap();
    let first = loop {
        tokio::select! {
            event = a.select_next_some() => {
                if let SwarmEvent::ConnectionEstablished { connection_id, .. } = event {
                    break connection_id;
                }
            }
            _ = b.select_next_some() => {}
        }
    };
    let mut rx = gather_a_trace_naming(&mut a, b_id);
    // Once B holds the request, a second connection comes up and A closes the first (as the
    // direct upgrade closes a relayed one); B answers what comes over the second.
    let mut held = Vec::new();
    let guard = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(guard);
    let trace = loop {
        tokio::select! {
            event = a.select_next_some() => {
                if let SwarmEvent::ConnectionEstablished { connection_id, .. } = event
                    && connection_id != first
                {
                    assert!(a.close_connection(first));
                }
            }
            event = b.select_next_some() => {
                if let SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Request { channel, .. },
                    ..
                }) = event
                {
                    if held.is_empty() {
                        held.push(channel);
                        a.dial(dial_twice_allowed(b_id, addr.clone())).unwrap();
                    } else {
                        let spans = TraceReply::Spans { spans: Vec::new(), truncated: false };
                        b.behaviour_mut().send_response(channel, spans.encode()).unwrap();
                    }
                }
            }
            answer = &mut rx => break answer.unwrap().unwrap(),
            () = &mut guard => panic!("the gathering never answered; B held {}", held.len()),
        }
    };
    assert_eq!(trace.missing, vec![], "B answered the second request");
    assert_eq!(
        held.len(),
        1,
        "the first request is the one left unanswered"
    );
    let log = wire.take();
    assert!(
        line_about(&log, b_id, "asking again for its spans").is_some(),
        "{:?}",
        log.iter().map(|n| &n.summary).collect::<Vec<_>>()
    );
}

/// Drives both channel peers until `done` holds for what `b` received (at most 20 s); `b`'s
/// events are collected into `got`.
async fn drive_channels(
    a: &mut Swarm<tabmesh_node::channels::Behaviour>,
    b: &mut Swarm<tabmesh_node::channels::Behaviour>,
    got: &mut Vec<tabmesh_node::channels::Output>,
    mut done: impl FnMut(&[tabmesh_node::channels::Output]) -> bool,
) {
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    while !done(got) {
        tokio::select! {
            _ = a.select_next_some() => {}
            event = b.select_next_some() => if let SwarmEvent::Behaviour(out) = event {
                got.push(out);
            },
            () = &mut deadline => panic!(
                "not reached in 20 s: {} events, the last {:?}",
                got.len(),
                got.iter().rev().take(3).collect::<Vec<_>>()
            ),
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_channel_delivers_every_frame_in_order_and_closes_with_the_connection() {
    use tabmesh_node::channels::{self, ChannelEvent, Output};

    let mut a = swarm(|_| channels::Behaviour::new().unwrap());
    let mut b = swarm(|_| channels::Behaviour::new().unwrap());
    let addr = listen(&mut b, "").await;
    let (a_id, b_id) = (*a.local_peer_id(), *b.local_peer_id());
    a.dial(addr).unwrap();
    let mut seen = (Connections::default(), Connections::default());
    drive_until(&mut a, &mut b, &mut seen, |a, b| {
        !a.open.is_empty() && !b.open.is_empty()
    })
    .await;

    for n in 0..500u32 {
        a.behaviour_mut()
            .send(b_id, n.to_be_bytes().to_vec())
            .unwrap();
    }
    let mut got = Vec::new();
    drive_channels(&mut a, &mut b, &mut got, |got| got.len() >= 500).await;
    let frames: Vec<u32> = got
        .iter()
        .map(|out| match out {
            Output::Channel(ChannelEvent::Frame { from, frame }) => {
                assert_eq!(*from, a_id);
                u32::from_be_bytes(frame[..].try_into().unwrap())
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(frames, (0..500).collect::<Vec<_>>(), "in the order sent");
    assert_eq!(b.behaviour().counters().received, 500);
    // Too large a frame is refused at the sender.
    let big = vec![0; channels::MAX_FRAME + 1];
    assert!(
        a.behaviour_mut()
            .send(b_id, big)
            .unwrap_err()
            .contains("at most")
    );

    // The connection closes: B's channel from A is gone, and says so.
    a.disconnect_peer_id(b_id).unwrap();
    got.clear();
    drive_channels(&mut a, &mut b, &mut got, |got| !got.is_empty()).await;
    assert!(
        matches!(&got[0], Output::Channel(ChannelEvent::Closed(p)) if *p == a_id),
        "{got:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_channel_loses_nothing_when_the_connection_under_it_is_replaced() {
    use tabmesh_node::channels::{self, ChannelEvent, Output};

    let mut a = swarm(|_| channels::Behaviour::new().unwrap());
    let mut b = swarm(|_| channels::Behaviour::new().unwrap());
    let addr = listen(&mut b, "").await;
    let (a_id, b_id) = (*a.local_peer_id(), *b.local_peer_id());
    // Two connections, as while a relayed connection is being replaced by a direct one.
    a.dial(dial_twice_allowed(b_id, addr.clone())).unwrap();
    a.dial(dial_twice_allowed(b_id, addr.clone())).unwrap();
    let mut seen = (Connections::default(), Connections::default());
    drive_until(&mut a, &mut b, &mut seen, |a, b| {
        a.open.len() == 2 && b.open.len() == 2
    })
    .await;
    let mut got = Vec::new();
    for n in 0..300u32 {
        a.behaviour_mut()
            .send(b_id, n.to_be_bytes().to_vec())
            .unwrap();
    }
    drive_channels(&mut a, &mut b, &mut got, |got| got.len() >= 100).await;
    // Both connections go in turn while frames are on their way; a third one replaces them.
    let first: Vec<ConnectionId> = seen.0.open.keys().copied().collect();
    a.close_connection(first[0]);
    for n in 0..100u32 {
        a.behaviour_mut()
            .send(b_id, (1000 + n).to_be_bytes().to_vec())
            .unwrap();
    }
    a.dial(dial_twice_allowed(b_id, addr)).unwrap();
    // Until the third connection is up (B's frames are kept meanwhile).
    loop {
        tokio::select! {
            event = a.select_next_some() => if matches!(event, SwarmEvent::ConnectionEstablished { .. }) {
                break;
            },
            event = b.select_next_some() => if let SwarmEvent::Behaviour(out) = event {
                got.push(out);
            },
        }
    }
    a.close_connection(first[1]);
    for n in 0..100u32 {
        a.behaviour_mut()
            .send(b_id, (2000 + n).to_be_bytes().to_vec())
            .unwrap();
    }
    drive_channels(&mut a, &mut b, &mut got, |got| {
        got.iter()
            .filter(|o| matches!(o, Output::Channel(ChannelEvent::Frame { .. })))
            .count()
            >= 500
    })
    .await;
    let frames: Vec<u32> = got
        .iter()
        .filter_map(|out| match out {
            Output::Channel(ChannelEvent::Frame { from, frame }) => {
                assert_eq!(*from, a_id);
                Some(u32::from_be_bytes(frame[..].try_into().unwrap()))
            }
            Output::Channel(ChannelEvent::Broke { why, .. }) => panic!("broke: {why}"),
            _ => None,
        })
        .collect();
    let want: Vec<u32> = (0..300).chain(1000..1100).chain(2000..2100).collect();
    assert_eq!(frames, want, "every frame, once, in the order sent");
}

#[tokio::test(flavor = "current_thread")]
async fn an_oversized_channel_frame_is_a_violation() {
    use futures::AsyncWriteExt;
    use tabmesh_node::channels::{self, Output};

    let mut honest = swarm(|_| channels::Behaviour::new().unwrap());
    let addr = listen(&mut honest, "").await;
    let honest_id = *honest.local_peer_id();
    let mut rogue = swarm(|_| libp2p_stream::Behaviour::new());
    let mut control = rogue.behaviour().new_control();
    rogue.dial(addr).unwrap();
    loop {
        tokio::select! {
            event = rogue.select_next_some() => if matches!(event, SwarmEvent::ConnectionEstablished { .. }) {
                break;
            },
            _ = honest.select_next_some() => {}
        }
    }
    let writer = async move {
        let mut stream = control
            .open_stream(honest_id, channels::PROTOCOL)
            .await
            .unwrap();
        // The epoch and first frame, then a frame numbered 1 that is too long.
        let mut head = [1u64, 1, 1].map(u64::to_be_bytes).concat();
        head.extend_from_slice(&(channels::MAX_FRAME as u32 + 1).to_be_bytes());
        stream.write_all(&head).await.unwrap();
        stream.flush().await.unwrap();
        futures::future::pending::<()>().await;
    };
    tokio::pin!(writer);
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut writer => {}
            _ = rogue.select_next_some() => {}
            event = honest.select_next_some() => {
                if let SwarmEvent::Behaviour(Output::Report(Report::Misbehaved { reason, .. })) = event {
                    assert!(reason.contains("at most"), "{reason}");
                    return;
                }
            }
            () = &mut deadline => panic!("no violation reported in 20 s"),
        }
    }
}

type SnapshotSwarm = Swarm<tabmesh_node::snapshot::Behaviour>;

/// Polls every swarm until `until` resolves (at most 20 s).
async fn drive_all<T>(
    swarms: &mut [SnapshotSwarm],
    until: impl std::future::Future<Output = T>,
) -> T {
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    tokio::pin!(until);
    let poll_all = |cx: &mut Context<'_>, swarms: &mut [SnapshotSwarm]| {
        for swarm in swarms.iter_mut() {
            while let Poll::Ready(Some(_)) = swarm.poll_next_unpin(cx) {}
        }
    };
    loop {
        tokio::select! {
            out = &mut until => return out,
            () = std::future::poll_fn(|cx| { poll_all(cx, swarms); Poll::<()>::Pending }) => {}
            () = &mut deadline => panic!("not done in 20 s"),
        }
    }
}

/// `n` snapshot peers in a full mesh, each knowing the others speak the channel protocol.
async fn snapshot_mesh(n: usize) -> Vec<SnapshotSwarm> {
    use tabmesh_node::snapshot;
    let mut swarms: Vec<SnapshotSwarm> = (0..n)
        .map(|_| {
            swarm(|key| {
                snapshot::Behaviour::new(key.public().to_peer_id(), 7, WireSink::discard()).unwrap()
            })
        })
        .collect();
    let mut addrs = Vec::new();
    for s in &mut swarms {
        addrs.push(listen(s, "").await);
    }
    let ids: Vec<PeerId> = swarms.iter().map(|s| *s.local_peer_id()).collect();
    for (i, swarm) in swarms.iter_mut().enumerate() {
        for addr in &addrs[i + 1..] {
            swarm.dial(addr.clone()).unwrap();
        }
        let me = *swarm.local_peer_id();
        for id in ids.iter().filter(|id| **id != me) {
            swarm
                .behaviour_mut()
                .on_identified(*id, &[tabmesh_node::channels::PROTOCOL]);
        }
    }
    // Until everyone is connected to everyone.
    let wait = async {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), drive_all(&mut swarms, wait)).await;
    for s in &swarms {
        assert_eq!(s.connected_peers().count(), n - 1, "a full mesh");
    }
    swarms
}

async fn take(
    swarms: &mut [SnapshotSwarm],
    from: usize,
    naive: bool,
) -> tabmesh_core::snapshot::state::SnapshotResult {
    let (reply, answer) = futures::channel::oneshot::channel();
    swarms[from]
        .behaviour_mut()
        .command(tabmesh_node::snapshot::SnapshotCommand::Take { naive, reply });
    drive_all(swarms, answer).await.unwrap().unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn snapshots_of_peers_sending_tokens_are_complete_and_account_for_every_token() {
    use tabmesh_node::snapshot::SnapshotCommand;
    let mut swarms = snapshot_mesh(3).await;
    for s in &mut swarms {
        s.behaviour_mut().command(SnapshotCommand::TokenDemo(true));
    }
    let mut in_flight_seen = 0;
    for round in 0..5 {
        let _ = tokio::time::timeout(
            Duration::from_millis(150),
            drive_all(&mut swarms, std::future::pending::<()>()),
        )
        .await;
        let result = take(&mut swarms, round % 3, false).await;
        assert!(result.complete, "{result:?}");
        assert_eq!(result.peers.len(), 3);
        assert_eq!(result.channels.len(), 6, "one per direction per pair");
        assert!(result.checks.channels_consistent, "{:?}", result.channels);
        assert!(result.checks.tokens_conserved, "{:?}", result.tokens);
        assert_eq!(result.tokens.total, 3_000);
        assert_eq!(result.markers_sent, 6);
        in_flight_seen += result.tokens.in_flight;
        // Every channel's numbers add up.
        for c in &result.channels {
            assert_eq!(c.sent, Some(c.received + c.in_flight.len() as u64));
        }
    }
    println!("tokens recorded in flight over 5 snapshots: {in_flight_seen}");
    // A naive snapshot reads balances with no cut: it may or may not add up, but it reports
    // what it found with the same checks.
    let naive = take(&mut swarms, 0, true).await;
    assert!(naive.naive && naive.peers.len() == 3, "{naive:?}");
    assert_eq!(
        naive.tokens.in_flight, 0,
        "a naive snapshot sees nothing in flight"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_peer_leaving_during_a_snapshot_makes_it_incomplete_saying_who() {
    use tabmesh_node::snapshot::SnapshotCommand;
    let mut swarms = snapshot_mesh(3).await;
    let gone = *swarms[2].local_peer_id();
    let (reply, answer) = futures::channel::oneshot::channel();
    swarms[0].behaviour_mut().command(SnapshotCommand::Take {
        naive: false,
        reply,
    });
    // The third peer leaves before it can take part.
    drop(swarms.pop());
    let result = drive_all(&mut swarms, answer).await.unwrap().unwrap();
    assert!(!result.complete, "{result:?}");
    let missing = result.missing.join("; ");
    println!("{missing}");
    assert!(
        missing.contains(&tabmesh_core::names::peer_name(&gone)),
        "{missing}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn malformed_frames_and_markers_on_a_channel_are_refused_counted_and_reported() {
    use futures::{AsyncReadExt, AsyncWriteExt};
    use tabmesh_node::channels;

    let mut honest = swarm(|key| {
        tabmesh_node::snapshot::Behaviour::new(key.public().to_peer_id(), 1, WireSink::discard())
            .unwrap()
    });
    let addr = listen(&mut honest, "").await;
    let honest_id = *honest.local_peer_id();
    let mut rogue = swarm(|_| libp2p_stream::Behaviour::new());
    let mut control = rogue.behaviour().new_control();
    rogue.dial(addr).unwrap();
    loop {
        tokio::select! {
            event = rogue.select_next_some() => if matches!(event, SwarmEvent::ConnectionEstablished { .. }) {
                break;
            },
            _ = honest.select_next_some() => {}
        }
    }
    let writer = async move {
        let mut stream = control
            .open_stream(honest_id, channels::PROTOCOL)
            .await
            .unwrap();
        let mut ready = [0u8; 1];
        stream.read_exact(&mut ready).await.unwrap();
        // The epoch and first frame.
        stream
            .write_all(&[1u64, 1].map(u64::to_be_bytes).concat())
            .await
            .unwrap();
        // An unknown frame, a marker that is not one, a transfer of nothing.
        let frames: [&[u8]; 3] = [b"X1", b"M{}", &[b'T', 0, 0, 0, 0, 0, 0, 0, 0]];
        for (seq, frame) in frames.iter().enumerate() {
            let mut head = (seq as u64 + 1).to_be_bytes().to_vec();
            head.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            stream.write_all(&head).await.unwrap();
            stream.write_all(frame).await.unwrap();
        }
        stream.flush().await.unwrap();
        futures::future::pending::<()>().await;
    };
    tokio::pin!(writer);
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    let mut reasons = Vec::new();
    while reasons.len() < 3 {
        tokio::select! {
            _ = &mut writer => {}
            _ = rogue.select_next_some() => {}
            event = honest.select_next_some() => {
                if let SwarmEvent::Behaviour(Report::Misbehaved { reason, topic, .. }) = event {
                    assert_eq!(topic, tabmesh_core::wire_log::Topic::Snapshot);
                    reasons.push(reason);
                }
            }
            () = &mut deadline => panic!("reported only {reasons:?} in 20 s"),
        }
    }
    let text = reasons.join("; ");
    for says in ["unknown channel frame tag", "malformed marker", "amount 0"] {
        assert!(text.contains(says), "{text}");
    }
    assert_eq!(honest.behaviour().view().refused, 3);
}

/// A peer with the peer table (and its dial backoff) beside the DHT.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "Report")]
struct KadDialer {
    peers: tabmesh_node::peers::Behaviour,
    dht: tabmesh_node::dht::Behaviour,
}

fn kad_dialer(key: &libp2p::identity::Keypair) -> KadDialer {
    KadDialer {
        peers: tabmesh_node::peers::Behaviour::new(
            key,
            "tabmesh-node/test".to_owned(),
            Duration::from_secs(15),
            Duration::ZERO,
            tabmesh_core::peers::PeerTableConfig::default(),
            web_time::Instant::now(),
            WireSink::discard(),
        ),
        dht: tabmesh_node::dht::Behaviour::new(
            key.clone(),
            tabmesh_core::dht::DhtConfig::default(),
            Box::new(tabmesh_node::dht::MemoryBackend),
            tabmesh_node::dht::Role::Peer { discovery: None },
            WireSink::discard(),
        ),
    }
}

/// The dial error of the next dial from `swarm` that fails.
async fn next_dial_error<B: NetworkBehaviour>(swarm: &mut Swarm<B>) -> String {
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            event = swarm.select_next_some() => {
                if let SwarmEvent::OutgoingConnectionError { error, .. } = event {
                    return error.to_string();
                }
            }
            () = &mut deadline => panic!("no dial failed in 20 s"),
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_peer_that_left_is_forgotten_and_not_dialed_again_until_it_comes_back() {
    use libp2p::StreamProtocol;

    let kad_protocol = [StreamProtocol::new(tabmesh_core::protocol::KADEMLIA)];
    let mut a = swarm(kad_dialer);
    let a_addr = listen(&mut a, "").await;
    // B has left: its address no longer answers. A still has it in its routing table, as a
    // peer that heard of B before it left would.
    let mut b = swarm(dht_peer(tabmesh_node::dht::Role::Peer { discovery: None }));
    let b_id = *b.local_peer_id();
    let b_addr: Multiaddr = format!("/memory/{}", next_port()).parse().unwrap();
    a.behaviour_mut()
        .dht
        .on_identified(b_id, std::slice::from_ref(&b_addr), &kad_protocol);
    let table_size = |a: &mut Swarm<KadDialer>| a.behaviour_mut().dht.view().routing_table_size;
    assert_eq!(table_size(&mut a), 1);

    // The first dial goes out and fails: B leaves the routing table.
    a.dial(b_id).unwrap();
    let first = next_dial_error(&mut a).await;
    assert!(!first.contains("unreachable at its last"), "{first}");
    assert_eq!(table_size(&mut a), 0, "an unreachable peer is forgotten");
    let dht = a.behaviour_mut().dht.view();
    assert_eq!(dht.counters.forgotten_unreachable, 1);

    // The next dial, from any behaviour, is refused before it goes out.
    let second = a
        .dial(
            SwarmDialOpts::peer_id(b_id)
                .addresses(vec![b_addr.clone()])
                .build(),
        )
        .expect_err("refused before it goes out");
    let second = tabmesh_node::report::error_chain(&second);
    assert!(
        second.contains("unreachable at its last 1 dial(s); next try in 5 s"),
        "{second}"
    );
    assert_eq!(a.behaviour().peers.counters().backed_off, 1);

    // B comes back and connects to A: its backoff is gone, A dials it again at once.
    b.listen_on(b_addr.clone()).unwrap();
    b.dial(a_addr).unwrap();
    let mut seen = (Connections::default(), Connections::default());
    drive_until(&mut a, &mut b, &mut seen, |a, _| a.established == 1).await;
    a.disconnect_peer_id(b_id).unwrap();
    drive_until(&mut a, &mut b, &mut seen, |a, _| a.open.is_empty()).await;
    a.dial(SwarmDialOpts::peer_id(b_id).addresses(vec![b_addr]).build())
        .unwrap();
    drive_until(&mut a, &mut b, &mut seen, |a, _| a.established == 2).await;
}
