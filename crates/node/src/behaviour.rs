//! The behaviours every tabmesh peer runs, and their configuration.
//!
//! - relay client: reservations on the relay and circuits to other peers;
//! - Kademlia (server mode, tabmesh protocol name): peer discovery and the DHT (see [`crate::dht`]);
//! - identify (pushing listen address changes, so the relay learns our circuit address as soon
//!   as the reservation is accepted);
//! - ping: round-trip times and liveness;
//! - GIMPS gossip (`/tabmesh/gimps/1.0.0`): one request per message, see `gossip_codec`;
//! - perf (`/perf/1.0.0`): throughput between two peers, for benchmarks;
//! - WebRTC signaling (`/webrtc-signaling/0.0.1`, tabs only): how two tabs connected through the
//!   relay set up a direct connection (see `tabmesh-webrtc`).

// The derive generates `NodeBehaviourEvent` with one undocumented variant per field.
#![allow(missing_docs)]

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{identify, ping, relay};
use tabmesh_core::dht::DhtConfig;
use tabmesh_core::protocol;

use crate::dht::{ObservedKad, StoreBackend};
use crate::gossip_codec::{self, GossipCodec};

/// The behaviours of a tabmesh peer.
#[derive(NetworkBehaviour)]
pub struct NodeBehaviour {
    /// Circuit relay v2 client.
    pub relay: relay::client::Behaviour,
    /// The tabmesh Kademlia DHT.
    pub kad: ObservedKad,
    /// Identify.
    pub identify: identify::Behaviour,
    /// Ping.
    pub ping: ping::Behaviour,
    /// GIMPS gossip.
    pub gimps: request_response::Behaviour<GossipCodec>,
    /// Plain streams for libp2p's perf protocol (`/perf/1.0.0`, see `perf`).
    pub stream: libp2p_stream::Behaviour,
    /// WebRTC signaling streams for the `/webrtc` transport (absent on native nodes).
    pub webrtc: Toggle<tabmesh_webrtc::Behaviour>,
}

impl NodeBehaviour {
    /// The behaviours for `key`, around the relay client that the swarm builder made and, in a
    /// tab, the WebRTC transport's signaling behaviour.
    pub fn new(
        key: &Keypair,
        relay: relay::client::Behaviour,
        webrtc: Option<tabmesh_webrtc::Behaviour>,
        agent: String,
        ping_interval: Duration,
        dht: &DhtConfig,
        store: Box<dyn StoreBackend>,
    ) -> Self {
        let peer_id = key.public().to_peer_id();
        Self {
            relay,
            kad: crate::dht::kademlia(peer_id, dht, store),
            identify: identify::Behaviour::new(
                identify::Config::new(protocol::IDENTIFY_VERSION.to_owned(), key.public())
                    .with_agent_version(agent)
                    .with_push_listen_addr_updates(true),
            ),
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(ping_interval)
                    .with_timeout(Duration::from_secs(10)),
            ),
            gimps: request_response::Behaviour::with_codec(
                GossipCodec,
                [(gossip_codec::PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(10))
                    .with_max_concurrent_streams(64),
            ),
            stream: libp2p_stream::Behaviour::new(),
            webrtc: webrtc.into(),
        }
    }
}
