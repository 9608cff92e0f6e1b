//! The `/webrtc` transport between two libp2p swarms in one page (headless Chromium): the
//! in-memory transport stands in for the relay (it carries the signaling stream), then the
//! swarms hold a direct WebRTC connection on which libp2p's ping runs, also after the
//! "relayed" connection is gone. A peer that does not listen on `/webrtc` and a peer that cannot
//! be reached each fail the dial with a clear error.
#![cfg(target_arch = "wasm32")]
// clippy's allow-unwrap-in-tests does not see #[wasm_bindgen_test] functions as tests.
#![allow(clippy::unwrap_used)]

use futures::{FutureExt, StreamExt};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, Transport, ping, plaintext, yamux};
use tabmesh_webrtc::addr::is_webrtc;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};
use web_time::Duration;

wasm_bindgen_test_configure!(run_in_browser);

const TIMEOUT: Duration = Duration::from_secs(20);

#[derive(NetworkBehaviour)]
struct Peer {
    webrtc: tabmesh_webrtc::Behaviour,
    ping: ping::Behaviour,
}

fn peer() -> Swarm<Peer> {
    let key = Keypair::generate_ed25519();
    let (webrtc, signaling) = tabmesh_webrtc::new(tabmesh_webrtc::Config::default());
    libp2p::SwarmBuilder::with_existing_identity(key)
        .with_wasm_bindgen()
        .with_other_transport(move |key| {
            let memory = MemoryTransport::default()
                .upgrade(Version::V1)
                .authenticate(plaintext::Config::new(key))
                .multiplex(yamux::Config::default())
                .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
            webrtc
                .map(|(peer, connection), _| (peer, StreamMuxerBox::new(connection)))
                .or_transport(memory)
                .map(|either, _| either.into_inner())
        })
        .unwrap()
        .with_behaviour(|_| Peer {
            webrtc: signaling,
            ping: ping::Behaviour::new(
                ping::Config::new().with_interval(Duration::from_millis(200)),
            ),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build()
}

fn next_port() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(50_000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// `b` listening on memory (the stand-in relay) and, when `webrtc`, on `/webrtc` behind it;
/// returns b's memory address and its `/webrtc` dial address.
fn listen(b: &mut Swarm<Peer>, webrtc: bool) -> (Multiaddr, Multiaddr) {
    let b_id = *b.local_peer_id();
    let memory: Multiaddr = format!("/memory/{}", next_port()).parse().unwrap();
    b.listen_on(memory.clone()).unwrap();
    let circuit = memory
        .clone()
        .with(Protocol::P2p(b_id))
        .with(Protocol::P2pCircuit);
    if webrtc {
        b.listen_on(circuit.clone().with(Protocol::WebRTC)).unwrap();
    }
    (
        memory,
        circuit.with(Protocol::WebRTC).with(Protocol::P2p(b_id)),
    )
}

/// Everything both swarms report, until `done` says stop (or the time is up).
async fn drive(
    a: &mut Swarm<Peer>,
    b: &mut Swarm<Peer>,
    mut done: impl FnMut(&mut Swarm<Peer>, &mut Swarm<Peer>, Side, SwarmEvent<PeerEvent>) -> bool,
) {
    let mut timer = futures_timer::Delay::new(TIMEOUT).fuse();
    loop {
        let (side, event) = futures::select! {
            event = a.select_next_some() => (Side::A, event),
            event = b.select_next_some() => (Side::B, event),
            () = timer => panic!("timed out"),
        };
        if done(a, b, side, event) {
            return;
        }
    }
}

/// An error with its sources, as the node logs it.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}

#[wasm_bindgen_test]
async fn two_swarms_go_direct_over_webrtc_and_ping_after_the_relay_path_is_gone() {
    let mut a = peer();
    let mut b = peer();
    let b_id = *b.local_peer_id();
    let a_id = *a.local_peer_id();
    let (memory, webrtc_addr) = listen(&mut b, true);
    a.dial(memory).unwrap();

    // The stand-in relayed connection first; then A dials B's /webrtc address.
    let mut relayed: Option<ConnectionId> = None;
    let mut direct: [Option<ConnectionId>; 2] = [None, None];
    let mut pings = [0u32; 2];
    drive(&mut a, &mut b, |a, _, side, event| {
        match (side, event) {
            (
                Side::A,
                SwarmEvent::ConnectionEstablished {
                    connection_id,
                    endpoint,
                    ..
                },
            ) if !is_webrtc(endpoint.get_remote_address()) => {
                relayed = Some(connection_id);
                let opts = DialOpts::peer_id(b_id)
                    .addresses(vec![webrtc_addr.clone()])
                    .condition(PeerCondition::Always)
                    .build();
                a.dial(opts).unwrap();
            }
            (
                side,
                SwarmEvent::ConnectionEstablished {
                    peer_id,
                    connection_id,
                    endpoint,
                    ..
                },
            ) if is_webrtc(endpoint.get_remote_address()) => {
                let (i, other) = if side == Side::A {
                    (0, b_id)
                } else {
                    (1, a_id)
                };
                assert_eq!(peer_id, other, "the connection carries the right identity");
                if side == Side::B {
                    assert_eq!(
                        endpoint.get_remote_address(),
                        &Multiaddr::empty()
                            .with(Protocol::WebRTC)
                            .with(Protocol::P2p(a_id))
                    );
                }
                direct[i] = Some(connection_id);
            }
            (
                side,
                SwarmEvent::Behaviour(PeerEvent::Ping(ping::Event {
                    connection,
                    result: Ok(_),
                    ..
                })),
            ) => {
                let i = if side == Side::A { 0 } else { 1 };
                if direct[i] == Some(connection) {
                    pings[i] += 1;
                }
            }
            (_, SwarmEvent::OutgoingConnectionError { error, .. }) => {
                panic!("dial failed: {error}")
            }
            (_, SwarmEvent::IncomingConnectionError { error, .. }) => {
                panic!("incoming failed: {error}")
            }
            _ => {}
        }
        pings.iter().all(|&n| n >= 2)
    })
    .await;

    // The relayed path goes away; the direct connection keeps carrying pings both ways.
    assert!(a.close_connection(relayed.unwrap()));
    let mut after = [0u32; 2];
    drive(&mut a, &mut b, |_, _, side, event| {
        if let SwarmEvent::Behaviour(PeerEvent::Ping(ping::Event {
            connection, result, ..
        })) = event
        {
            let i = if side == Side::A { 0 } else { 1 };
            if direct[i] == Some(connection) {
                result.expect("ping over the direct connection");
                after[i] += 1;
            }
        }
        after.iter().all(|&n| n >= 3)
    })
    .await;
    assert!(a.is_connected(&b_id) && b.is_connected(&a_id));

    // Closing the direct connection on one side closes it on the other too.
    assert!(a.close_connection(direct[0].unwrap()));
    drive(&mut a, &mut b, |_, _, side, event| {
        matches!((side, event), (Side::B, SwarmEvent::ConnectionClosed { connection_id, .. }) if Some(connection_id) == direct[1])
    })
    .await;
}

#[wasm_bindgen_test]
async fn a_peer_not_listening_on_webrtc_fails_the_dial_quickly() {
    let mut a = peer();
    let mut b = peer();
    let b_id = *b.local_peer_id();
    let (memory, webrtc_addr) = listen(&mut b, false);
    a.dial(memory).unwrap();
    let started = web_time::Instant::now();
    let mut error = None;
    drive(&mut a, &mut b, |a, _, side, event| {
        match (side, event) {
            (Side::A, SwarmEvent::ConnectionEstablished { endpoint, .. })
                if !is_webrtc(endpoint.get_remote_address()) =>
            {
                let opts = DialOpts::peer_id(b_id)
                    .addresses(vec![webrtc_addr.clone()])
                    .condition(PeerCondition::Always)
                    .build();
                a.dial(opts).unwrap();
            }
            (Side::A, SwarmEvent::OutgoingConnectionError { error: e, .. }) => {
                error = Some(chain(&e));
                return true;
            }
            (_, SwarmEvent::ConnectionEstablished { endpoint, .. })
                if is_webrtc(endpoint.get_remote_address()) =>
            {
                panic!("no WebRTC connection without a listener")
            }
            _ => {}
        }
        false
    })
    .await;
    let error = error.unwrap();
    assert!(error.contains("signaling"), "{error}");
    // Refused at once, not after the signaling timeout.
    assert!(
        started.elapsed() < tabmesh_webrtc::signaling::DEFAULT_TIMEOUT,
        "{error}"
    );
}

#[wasm_bindgen_test]
async fn a_peer_that_cannot_be_reached_fails_the_dial_with_a_clear_error() {
    let mut a = peer();
    let mut b = peer();
    let gone = PeerId::random();
    let addr: Multiaddr = format!(
        "/memory/{}/p2p/{gone}/p2p-circuit/webrtc/p2p/{gone}",
        next_port()
    )
    .parse()
    .unwrap();
    let opts = DialOpts::from(addr);
    let ours = opts.connection_id();
    a.dial(opts).unwrap();
    let mut error = None;
    drive(&mut a, &mut b, |_, _, side, event| {
        // (The circuit dial made to carry the signaling fails first, on its own.)
        if let (
            Side::A,
            SwarmEvent::OutgoingConnectionError {
                error: e,
                connection_id,
                ..
            },
        ) = (side, event)
            && connection_id == ours
        {
            error = Some(chain(&e));
            return true;
        }
        false
    })
    .await;
    let error = error.unwrap();
    assert!(error.contains("cannot reach the peer"), "{error}");
}

/// A swarm that only carries signaling streams (no WebRTC transport), to send raw bytes.
fn raw_signaler() -> (
    Swarm<tabmesh_webrtc::Behaviour>,
    tabmesh_webrtc::behaviour::SignalingStreams,
) {
    let (behaviour, streams) = tabmesh_webrtc::behaviour::new();
    let swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_wasm_bindgen()
        .with_other_transport(|key| {
            MemoryTransport::default()
                .upgrade(Version::V1)
                .authenticate(plaintext::Config::new(key))
                .multiplex(yamux::Config::default())
        })
        .unwrap()
        .with_behaviour(|_| behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    (swarm, streams)
}

#[wasm_bindgen_test]
async fn a_peer_that_sends_a_malformed_signaling_message_is_reported() {
    use futures::AsyncWriteExt;
    let mut b = peer();
    let b_id = *b.local_peer_id();
    let (memory, _) = listen(&mut b, true);
    let (mut rogue, streams) = raw_signaler();
    let rogue_id = *rogue.local_peer_id();
    // The rogue opens a signaling stream to B (dialing B first) and sends a message of an
    // unknown type, length-prefixed as the protocol wants.
    let send = async {
        let mut stream = streams.open(b_id, memory.clone()).await.unwrap();
        stream.write_all(&[2, 0x08, 0x09]).await.unwrap();
        stream.flush().await.unwrap();
        // Keep the stream open: the violation, not an early close, must end B's attempt.
        futures_timer::Delay::new(TIMEOUT).await;
    }
    .fuse();
    let mut send = std::pin::pin!(send);
    let mut timer = futures_timer::Delay::new(TIMEOUT).fuse();
    let reason = loop {
        futures::select! {
            event = b.select_next_some() => {
                if let SwarmEvent::Behaviour(PeerEvent::Webrtc(tabmesh_webrtc::Event::Violation {
                    peer,
                    reason,
                })) = event
                {
                    assert_eq!(peer, rogue_id);
                    break reason;
                }
            }
            _ = rogue.select_next_some() => {}
            () = send => panic!("the rogue's stream ended first"),
            () = timer => panic!("no violation reported"),
        }
    };
    assert!(reason.contains("unknown message type 9"), "{reason}");
}
