//! A tabmesh peer: the libp2p node that runs in every browser tab and in `tabmesh-node`.
//!
//! The protocol rules live in `tabmesh-core` as clock-free state machines. This crate gives each
//! protocol one module, a libp2p `NetworkBehaviour` that owns its bookkeeping and wraps its core
//! state machine, reading the clock once per event and passing it in:
//!
//! - [`ledger`]: the misbehaviour ledger every protocol reports violations to (bans, refusals);
//! - [`peers`]: identify, ping (its first ping held a while on each new connection:
//!   [`held_start`]) and the peer table;
//! - [`relay_link`]: the relay's bootstrap document, reservation and reconnection;
//! - [`dht`]: Kademlia, the user's DHT operations and peer discovery;
//! - [`direct`]: WebRTC signaling and the move from relayed to direct connections;
//! - [`gimps`]: GIMPS gossip and its search;
//! - [`perf`]: libp2p's perf protocol;
//! - [`services`]: typed services offered, announced in the DHT, served and called;
//! - [`trace`]: request tracing;
//! - [`snapshot`]: Chandy-Lamport snapshots on the ordered channels ([`channels`]), with the
//!   token demo.
//!
//! [`behaviour::NodeBehaviour`] composes them. [`Node`] is the fan-in: it runs the swarm,
//! routes the few facts that cross protocols ([`report::Report`]), passes user commands to the
//! protocol they are for, keeps the Event log and assembles the [`NodeView`] from each
//! protocol's section. The browser/native split is confined to [`platform`].
//!
//! A node reports through a [`NodeHandle`]: periodic [`NodeView`] snapshots (what the UI renders
//! and `window.tabmesh.state()` returns) and, if asked for, each wire event as it happens.

pub mod behaviour;
pub mod channels;
pub mod dht;
pub mod direct;
mod forward;
pub mod gimps;
pub mod held_start;
pub mod ledger;
mod node;
pub mod peers;
pub mod perf;
pub mod platform;
pub mod relay_link;
pub mod report;
pub mod services;
pub mod snapshot;
mod timer;
pub mod trace;

use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use tabmesh_core::dht::{DhtConfig, DhtRequest};
use tabmesh_core::direct_upgrade::UpgradeConfig;
use tabmesh_core::discovery::DiscoveryConfig;
use tabmesh_core::gimps::node::GossipConfig;
use tabmesh_core::ledger::LedgerConfig;
use tabmesh_core::peers::PeerTableConfig;
use tabmesh_core::relay_link::RelayLinkConfig;
pub use tabmesh_core::view::NodeView;
use tabmesh_core::wire_log::WireEvent;
use web_time::Duration;

pub use libp2p;
pub use node::Node;

/// Where the relay's bootstrap document comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapSource {
    /// An HTTP(S) URL: the relay's base URL or its `/api/bootstrap` URL. In a browser a relative
    /// URL (`/api/bootstrap`) is resolved against the page.
    Url(String),
    /// A relay multiaddr ending in `/p2p/<relay peer id>`, used as is.
    Addr(Multiaddr),
}

impl std::fmt::Display for BootstrapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Url(url) => f.write_str(url),
            Self::Addr(addr) => write!(f, "{addr}"),
        }
    }
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's identity.
    pub keypair: Keypair,
    /// Where to find the relay.
    pub bootstrap: BootstrapSource,
    /// Identify agent version, e.g. `tabmesh-web/0.1.0`.
    pub agent: String,
    /// Extra listen addresses (native nodes listen on TCP so that native peers connect directly).
    pub listen: Vec<Multiaddr>,
    /// Relay reconnect backoff.
    pub relay_link: RelayLinkConfig,
    /// Pace of peer discovery.
    pub discovery: DiscoveryConfig,
    /// Peer table limits.
    pub peer_table: PeerTableConfig,
    /// Interval between pings on each connection.
    pub ping_interval: Duration,
    /// How long a new connection waits before its first ping. Tabs that join together need
    /// their first second or two for the handshakes that make the mesh, and a ping at once
    /// competes with them; a relayed connection replaced by a direct one within that time is
    /// never pinged through the relay.
    pub first_ping_after: Duration,
    /// How often a [`NodeView`] is published (the first one within this time of start, sooner
    /// when the first connection comes).
    pub view_interval: Duration,
    /// Wire events the node keeps ([`Command::WireLog`] gives them all; the view carries the
    /// newest [`VIEW_WIRE_EVENTS`]). At most [`tabmesh_core::wire_log::MAX_CAPACITY`].
    pub wire_log_capacity: usize,
    /// Also send each wire event as it happens ([`NodeEvent::Wire`]); otherwise they are only
    /// in the views (a UI that renders views needs nothing more).
    pub stream_wire_events: bool,
    /// Time between the clock origin (page load) and the moment the node is created: view
    /// timestamps count from the origin.
    pub clock_origin_offset: Duration,
    /// Seed of the node's randomness (backoff jitter).
    pub seed: u64,
    /// GIMPS gossip intervals and limits.
    pub gossip: GossipConfig,
    /// The share of a core the Lucas-Lehmer search may take (tabs: a tenth; native: all).
    pub search_pace: tabmesh_core::gimps::pace::SearchPace,
    /// DHT replication, limits and quotas.
    pub dht: DhtConfig,
    /// Move peers reached through the relay to direct WebRTC connections (tabs only).
    pub direct_upgrade: bool,
    /// Pace and limits of those moves.
    pub upgrade: UpgradeConfig,
    /// The misbehaviour policy: strikes before a ban, ban lengths.
    pub ledger: LedgerConfig,
    /// Record spans and put trace context on the wire (gossip spreads, service calls); off, the
    /// node still answers traced pings and gatherings and passes contexts on.
    pub tracing: bool,
    /// Where finished spans also go (natively, an OpenTelemetry collector:
    /// [`trace::export::start`]).
    pub span_export: Option<trace::SpanExport>,
}

impl NodeConfig {
    /// Defaults for a node with `keypair`, finding the relay at `bootstrap`.
    pub fn new(keypair: Keypair, bootstrap: BootstrapSource, agent: String) -> Self {
        Self {
            keypair,
            bootstrap,
            agent,
            listen: Vec::new(),
            relay_link: RelayLinkConfig::default(),
            discovery: DiscoveryConfig::default(),
            peer_table: PeerTableConfig::default(),
            ping_interval: Duration::from_secs(5),
            first_ping_after: Duration::from_secs(2),
            view_interval: Duration::from_millis(500),
            wire_log_capacity: 500,
            stream_wire_events: false,
            clock_origin_offset: Duration::ZERO,
            seed: 0,
            gossip: GossipConfig::default(),
            search_pace: platform::DEFAULT_PACE,
            dht: DhtConfig::default(),
            direct_upgrade: true,
            upgrade: UpgradeConfig::default(),
            ledger: LedgerConfig::default(),
            tracing: true,
            span_export: None,
        }
    }
}

/// What a node reports.
#[derive(Debug, Clone)]
pub enum NodeEvent {
    /// A fresh snapshot of the node's state.
    View(Box<NodeView>),
    /// Something went over the wire (also kept in the next views' `wire` list); only with
    /// [`NodeConfig::stream_wire_events`].
    Wire(WireEvent),
}

/// Requests to a running node.
#[derive(Debug)]
pub enum Command {
    /// Close all connections and stop the event loop.
    Shutdown,
    /// GIMPS: stop answering and sending (peers will evict us).
    Sleep,
    /// GIMPS: answer and send again.
    Wake,
    /// GIMPS: forget the largest prime, own primes, peer list and logs.
    Reset,
    /// GIMPS: turn the cooperative search mode on or off.
    Cooperative(bool),
    /// GIMPS: the share of a core the search may take from now on.
    SearchPace(tabmesh_core::gimps::pace::SearchPace),
    /// DHT: put, get, remove, provide or find providers; the answer goes to the sender.
    Dht(DhtRequest, dht::DhtReplySender),
    /// Perf: send `upload` bytes to `peer` and have it send `download` back, timed.
    Perf {
        /// The peer.
        peer: libp2p::PeerId,
        /// Bytes to send.
        upload: u64,
        /// Bytes to ask for.
        download: u64,
        /// Where the measurement (or why there is none) goes.
        reply: perf::PerfReplySender,
    },
    /// Offer, withdraw or call services, or read the catalog.
    Services(services::ServiceCommand),
    /// Request tracing: a traced ping, gathering a trace.
    Trace(trace::TraceCommand),
    /// Hold every traced gossip copy this long before sending it (`None` or zero: off).
    SlowMotion(Option<Duration>),
    /// Take a snapshot, or switch the token demo.
    Snapshot(snapshot::SnapshotCommand),
    /// Every wire event the node keeps, oldest first (the view has only the newest).
    WireLog(futures::channel::oneshot::Sender<Vec<tabmesh_core::wire_log::WireEvent>>),
}

/// The wire events a [`NodeView`] carries: the newest this many.
pub const VIEW_WIRE_EVENTS: usize = 50;

/// The caller's side of a node: its events and a way to send it commands.
#[derive(Debug)]
pub struct NodeHandle {
    /// Views and wire events. Bounded: when the consumer lags, events are dropped (a later view
    /// carries the current state and the recent wire events anyway).
    pub events: futures::channel::mpsc::Receiver<NodeEvent>,
    /// Commands to the node.
    pub commands: futures::channel::mpsc::Sender<Command>,
}

/// Errors that stop a node from starting.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Building the transport stack failed.
    #[error("cannot build the libp2p transport: {0}")]
    Transport(String),
    /// A listen address was refused.
    #[error("cannot listen on {0}: {1}")]
    Listen(Multiaddr, String),
}
