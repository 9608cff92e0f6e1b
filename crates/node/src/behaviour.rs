//! The behaviours of a tabmesh peer, composed: one module per protocol.
//!
//! | field | module | what it owns |
//! | --- | --- | --- |
//! | `ledger` | [`crate::ledger`] | strikes and bans for every protocol; refuses banned peers |
//! | `peers` | [`crate::peers`] | identify, ping, the peer table, admission |
//! | `relay` | [`crate::relay_link`] | bootstrap document, reservation, reconnection |
//! | `dht` | [`crate::dht`] | Kademlia, the user's operations, discovery, hand-over |
//! | `direct` | [`crate::direct`] | WebRTC signaling and the relayed-to-direct upgrade |
//! | `gimps` | [`crate::gimps`] | GIMPS gossip and the Lucas-Lehmer search |
//! | `perf` | [`crate::perf`] | libp2p's perf protocol |
//! | `services` | [`crate::services`] | typed services: offered, announced, served, called |
//! | `trace` | [`crate::trace`] | request tracing: traced ping, span store, gathering |
//! | `snapshot` | [`crate::snapshot`] | ordered channels, Chandy-Lamport snapshots, token demo |
//!
//! Each reports [`Report`]s, which the node routes (`Node::on_report`), and writes its log lines
//! into the node's one [`WireSink`]. The ledger comes first
//! and the peers second: a banned peer, or a new peer when the table is full, is refused
//! before any other protocol sets up a handler for its connection.

use libp2p::identity::Keypair;
use libp2p::relay;
use libp2p::swarm::NetworkBehaviour;
use web_time::Instant;

use crate::direct::WebRtc;
use crate::report::{Report, WireSink};
use crate::{
    NodeConfig, NodeError, dht, direct, gimps, ledger, peers, perf, platform, relay_link, services,
    snapshot, trace,
};

/// The behaviours of a tabmesh peer.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "Report", prelude = "libp2p::swarm::derive_prelude")]
pub struct NodeBehaviour {
    /// The misbehaviour ledger.
    pub ledger: ledger::Behaviour,
    /// Identify, ping and the peer table.
    pub peers: peers::Behaviour,
    /// The relay link.
    pub relay: relay_link::Behaviour,
    /// The DHT and peer discovery.
    pub dht: dht::Behaviour,
    /// Relayed to direct WebRTC connections.
    pub direct: direct::Behaviour,
    /// GIMPS gossip.
    pub gimps: gimps::Behaviour,
    /// The perf protocol.
    pub perf: perf::Behaviour,
    /// Typed services.
    pub services: services::Behaviour,
    /// Request tracing.
    pub trace: trace::Behaviour,
    /// Snapshots on ordered channels.
    pub snapshot: snapshot::Behaviour,
}

impl NodeBehaviour {
    /// The behaviours for `config`, around the swarm's relay client and, in a tab, the WebRTC
    /// signaling; view timestamps count from `origin`; log lines go to `wire`.
    pub fn new(
        key: &Keypair,
        config: &NodeConfig,
        origin: Instant,
        relay_client: relay::client::Behaviour,
        webrtc: Option<WebRtc>,
        wire: &WireSink,
    ) -> Result<Self, NodeError> {
        let local = key.public().to_peer_id();
        Ok(Self {
            ledger: ledger::Behaviour::new(config.ledger.clone(), wire.clone()),
            peers: peers::Behaviour::new(
                key,
                config.agent.clone(),
                config.ping_interval,
                config.first_ping_after,
                config.peer_table.clone(),
                origin,
                wire.clone(),
            ),
            relay: relay_link::Behaviour::new(
                relay_client,
                config.bootstrap.clone(),
                config.relay_link.clone(),
                config.seed,
                origin,
                wire.clone(),
            ),
            dht: {
                let mut dht = dht::Behaviour::new(
                    key.clone(),
                    config.dht.clone(),
                    platform::dht_backend(),
                    dht::Role::Peer {
                        discovery: Some(config.discovery.clone()),
                    },
                    wire.clone(),
                );
                if config.tracing {
                    dht.trace_operations(config.seed ^ platform::unix_now_ms());
                }
                dht
            },
            direct: direct::Behaviour::new(
                local,
                config.upgrade.clone(),
                webrtc,
                config.direct_upgrade,
                wire.clone(),
            ),
            gimps: gimps::Behaviour::new(
                key.clone(),
                config.gossip.clone(),
                config.search_pace,
                origin,
                config.tracing,
                wire.clone(),
            ),
            perf: perf::Behaviour::new()?,
            services: services::Behaviour::with_tracing(
                local,
                tabmesh_core::names::peer_name(&local),
                origin,
                config.tracing,
                wire.clone(),
            ),
            trace: {
                let mut trace = trace::Behaviour::new(local, wire.clone());
                if let Some(export) = &config.span_export {
                    trace.export_to(export.clone());
                }
                trace
            },
            snapshot: snapshot::Behaviour::new(local, config.seed, wire.clone())?,
        })
    }
}
