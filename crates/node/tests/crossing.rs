//! Dials that cross, between real swarms through a real libp2p relay (over the in-memory
//! transport): two peers that dial each other through the relay at the same moment end up with
//! one connection, the one the smaller peer id dialed, on both sides; the other dial is refused
//! by the smaller peer and its failure is expected by the larger one (no dial failure counted,
//! no backoff). Without the rule, the pair holds two relayed connections.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::core::transport::{MemoryTransport, Transport};
use libp2p::core::upgrade::Version;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, noise, relay, yamux};
use tabmesh_node::peers;
use tabmesh_node::report::WireSink;

#[derive(NetworkBehaviour)]
struct Relay {
    relay: relay::Behaviour,
}

#[derive(NetworkBehaviour)]
struct Peer {
    relay: relay::client::Behaviour,
    peers: peers::Behaviour,
}

fn next_port() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(60_000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn memory(
    key: &libp2p::identity::Keypair,
) -> libp2p::core::transport::Boxed<(PeerId, libp2p::core::muxing::StreamMuxerBox)> {
    MemoryTransport::default()
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(key).unwrap())
        .multiplex(yamux::Config::default())
        .boxed()
}

fn relay_swarm() -> Swarm<Relay> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(memory)
        .unwrap()
        .with_behaviour(|key| Relay {
            relay: relay::Behaviour::new(key.public().to_peer_id(), relay::Config::default()),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

fn peer_swarm(wire: WireSink) -> Swarm<Peer> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(memory)
        .unwrap()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|key, relay| Peer {
            relay,
            peers: peers::Behaviour::new(
                key,
                "tabmesh-node/test".to_owned(),
                Duration::from_secs(15),
                Duration::ZERO,
                tabmesh_core::peers::PeerTableConfig::default(),
                web_time::Instant::now(),
                wire,
            ),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// What one peer saw of its connections to the other.
#[derive(Debug, Default)]
struct Seen {
    established: Vec<ConnectedPoint>,
    failed_dials: usize,
}

#[tokio::test(flavor = "current_thread")]
async fn two_peers_dialing_each_other_through_the_relay_keep_the_smaller_ids_dial() {
    let mut relay = relay_swarm();
    let relay_id = *relay.local_peer_id();
    let relay_addr: Multiaddr = format!("/memory/{}", next_port()).parse().unwrap();
    relay.listen_on(relay_addr.clone()).unwrap();
    relay.add_external_address(relay_addr.clone());
    let circuit = relay_addr
        .with(Protocol::P2p(relay_id))
        .with(Protocol::P2pCircuit);

    let (wire_a, wire_b) = (WireSink::default(), WireSink::default());
    let mut a = peer_swarm(wire_a.clone());
    let mut b = peer_swarm(wire_b.clone());
    // Both hold a reservation.
    a.listen_on(circuit.clone()).unwrap();
    b.listen_on(circuit.clone()).unwrap();
    let mut reserved = 0;
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    while reserved < 2 {
        tokio::select! {
            event = a.select_next_some() => if matches!(event, SwarmEvent::NewListenAddr { .. }) { reserved += 1 },
            event = b.select_next_some() => if matches!(event, SwarmEvent::NewListenAddr { .. }) { reserved += 1 },
            _ = relay.select_next_some() => {}
            () = &mut deadline => panic!("no reservations in 20 s"),
        }
    }

    // Each dials the other through the relay at the same moment, as two tabs named to each
    // other by the relay do.
    let (a_id, b_id) = (*a.local_peer_id(), *b.local_peer_id());
    let through = |peer: PeerId| {
        DialOpts::peer_id(peer)
            .addresses(vec![circuit.clone().with(Protocol::P2p(peer))])
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build()
    };
    a.dial(through(b_id)).unwrap();
    b.dial(through(a_id)).unwrap();

    // Until both have a connection, then a second longer for a second one.
    let (mut seen_a, mut seen_b) = (Seen::default(), Seen::default());
    while seen_a.established.is_empty() || seen_b.established.is_empty() {
        tokio::select! {
            event = a.select_next_some() => record(&mut seen_a, event, b_id),
            event = b.select_next_some() => record(&mut seen_b, event, a_id),
            _ = relay.select_next_some() => {}
            () = &mut deadline => panic!("not settled in 20 s: {seen_a:?} {seen_b:?}"),
        }
    }
    let window = tokio::time::sleep(Duration::from_secs(1));
    tokio::pin!(window);
    loop {
        tokio::select! {
            event = a.select_next_some() => record(&mut seen_a, event, b_id),
            event = b.select_next_some() => record(&mut seen_b, event, a_id),
            _ = relay.select_next_some() => {}
            () = &mut window => break,
        }
    }

    let (small, large) = if a_id < b_id {
        ((&seen_a, &a, &wire_a), (&seen_b, &b, &wire_b))
    } else {
        ((&seen_b, &b, &wire_b), (&seen_a, &a, &wire_a))
    };
    assert_eq!(small.0.established.len(), 1, "{seen_a:?} {seen_b:?}");
    assert_eq!(large.0.established.len(), 1, "{seen_a:?} {seen_b:?}");
    assert!(small.0.established[0].is_dialer(), "the smaller id's dial");
    assert!(!large.0.established[0].is_dialer());
    // Both saw the crossing; the larger one's refused dial is no failure of the peer.
    let (small_counters, large_counters) = (
        small.1.behaviour().peers.counters(),
        large.1.behaviour().peers.counters(),
    );
    assert_eq!(small_counters.crossed_dials, 1);
    assert_eq!(large_counters.crossed_dials, 1);
    assert_eq!(large_counters.dial_failures, 0);
    assert_eq!(small_counters.incoming_errors, 0);
    let said = |wire: &WireSink| -> Vec<String> {
        wire.take().into_iter().map(|note| note.summary).collect()
    };
    let (small_said, large_said) = (said(small.2), said(large.2));
    assert!(
        small_said
            .iter()
            .any(|l| l.starts_with("refused its circuit: it crossed our dial")),
        "{small_said:?}"
    );
    assert!(
        large_said
            .iter()
            .any(|l| l.starts_with("its circuit crossed our dial to it")),
        "{large_said:?}"
    );
    assert!(
        !large_said.iter().any(|l| l.starts_with("dial failed")),
        "{large_said:?}"
    );
}

fn record<T>(seen: &mut Seen, event: SwarmEvent<T>, other: PeerId) {
    match event {
        SwarmEvent::ConnectionEstablished {
            peer_id, endpoint, ..
        } if peer_id == other => seen.established.push(endpoint),
        SwarmEvent::OutgoingConnectionError {
            peer_id: Some(peer),
            ..
        } if peer == other => seen.failed_dials += 1,
        _ => {}
    }
}
