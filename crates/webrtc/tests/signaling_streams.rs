//! The signaling behaviour between real swarms (in-memory transport): a stream to a peer we are
//! not connected to dials it first; the peer receives the stream with our identity; a peer that
//! does not speak the protocol, and a peer that is gone, each end in a clear error.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent, dummy};
use libp2p::{Multiaddr, PeerId, Swarm, Transport, plaintext, yamux};
use tabmesh_webrtc::behaviour::{self, SignalingStreams, StreamError};

fn swarm<B: NetworkBehaviour + Send>(behaviour: B) -> Swarm<B>
where
    B::ToSwarm: Send,
{
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            MemoryTransport::default()
                .upgrade(Version::V1)
                .authenticate(plaintext::Config::new(key))
                .multiplex(yamux::Config::default())
        })
        .unwrap()
        .with_behaviour(|_| behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(10)))
        .build()
}

/// A listening swarm driven in the background: its id and address.
async fn spawn_listening<B: NetworkBehaviour + Send + 'static>(
    mut swarm: Swarm<B>,
) -> (PeerId, Multiaddr)
where
    B::ToSwarm: Send,
{
    let port = rand_port();
    swarm
        .listen_on(format!("/memory/{port}").parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let id = *swarm.local_peer_id();
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    (id, addr)
}

fn spawn<B: NetworkBehaviour + Send + 'static>(mut swarm: Swarm<B>) -> PeerId
where
    B::ToSwarm: Send,
{
    let id = *swarm.local_peer_id();
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    id
}

fn rand_port() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(40_000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn signaling_peer() -> (Swarm<tabmesh_webrtc::Behaviour>, SignalingStreams) {
    let (behaviour, streams) = behaviour::new();
    (swarm(behaviour), streams)
}

#[tokio::test]
async fn a_stream_to_an_unconnected_peer_dials_it_and_arrives_with_our_identity() {
    let (b, mut b_streams) = signaling_peer();
    let (b_id, b_addr) = spawn_listening(b).await;
    let (a, a_streams) = signaling_peer();
    let a_id = spawn(a);

    let mut outbound = tokio::time::timeout(Duration::from_secs(10), a_streams.open(b_id, b_addr))
        .await
        .expect("no hang")
        .expect("stream opened");
    outbound.write_all(b"offer").await.unwrap();
    outbound.close().await.unwrap();

    let inbound = tokio::time::timeout(Duration::from_secs(10), b_streams.inbound.next())
        .await
        .expect("no hang")
        .expect("a stream arrives");
    assert_eq!(
        inbound.peer, a_id,
        "the stream carries the dialer's identity"
    );
    let mut received = Vec::new();
    let mut stream = inbound.stream;
    stream.read_to_end(&mut received).await.unwrap();
    assert_eq!(received, b"offer");

    // A second stream reuses the connection (no new dial): it opens just the same.
    let again = tokio::time::timeout(
        Duration::from_secs(10),
        a_streams.open(b_id, "/memory/1".parse().unwrap()),
    )
    .await
    .expect("no hang");
    assert!(again.is_ok(), "{again:?}");
}

#[tokio::test]
async fn a_peer_without_the_protocol_refuses_the_stream() {
    let (c_id, c_addr) = spawn_listening(swarm(dummy::Behaviour)).await;
    let (a, a_streams) = signaling_peer();
    spawn(a);
    let result = tokio::time::timeout(Duration::from_secs(10), a_streams.open(c_id, c_addr))
        .await
        .expect("no hang");
    assert!(matches!(result, Err(StreamError::Refused(_))), "{result:?}");
}

#[tokio::test]
async fn a_peer_that_is_gone_is_unreachable() {
    let (a, a_streams) = signaling_peer();
    spawn(a);
    let gone = PeerId::random();
    let nowhere: Multiaddr = format!("/memory/{}", rand_port()).parse().unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), a_streams.open(gone, nowhere))
        .await
        .expect("no hang");
    let Err(StreamError::Unreachable(reason)) = &result else {
        panic!("expected unreachable, got {result:?}");
    };
    assert!(!reason.is_empty());
    assert!(result.unwrap_err().to_string().contains("cannot reach"));
}
