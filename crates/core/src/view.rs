//! The snapshot of a peer's state that the UI renders and tests read.
//!
//! `window.tabmesh.state()` returns exactly this structure as JSON, so its field names are a
//! stable interface: later protocols add sections, existing fields keep their names and meaning.

use serde::{Deserialize, Serialize};

use crate::dht::DhtSection;
use crate::gimps::node::{GimpsView, GossipConfig};
use crate::ledger::BanView;
use crate::peers::{PeerView, millis};
use crate::relay_link::RelayLinkView;
use crate::wire_log::WireEvent;

/// Everything a tab shows about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// Our peer id (base58).
    pub peer_id: String,
    /// Our human-friendly name.
    pub name: String,
    /// Short form of our peer id.
    pub short_id: String,
    /// Our identify agent version.
    pub agent: String,
    /// Milliseconds since the clock origin (page load for tabs, process start for native nodes).
    pub now_ms: u64,
    /// Milliseconds from the clock origin to the node's start. In a tab: the page's load, the
    /// module's download and compilation and the first render, all before any networking.
    #[serde(default)]
    pub started_at_ms: u64,
    /// The relay link.
    pub relay: RelayView,
    /// Connected peers, excluding the relay.
    pub peers: Vec<PeerView>,
    /// Our listen addresses (relay circuit addresses for tabs).
    pub listen_addrs: Vec<String>,
    /// The most recent wire events (the node keeps more: its whole log is a command away),
    /// oldest first.
    pub wire: Vec<WireEvent>,
    /// How many wire events the node keeps now (at most its log's capacity).
    #[serde(default)]
    pub wire_kept: usize,
    /// Counters of rejected input and failures.
    pub counters: Counters,
    /// Peers banned by the misbehaviour ledger, with the reason and the time left.
    #[serde(default)]
    pub banned: Vec<BanView>,
    /// The GIMPS gossip protocol's state (absent in peers that do not run it).
    #[serde(default)]
    pub gimps: Option<GimpsSection>,
    /// The DHT: local records, routing table, last lookup.
    #[serde(default)]
    pub dht: Option<DhtSection>,
    /// The services section: offered, built-ins, the latest calls.
    #[serde(default)]
    pub services: Option<crate::services::ServicesSection>,
    /// The tracing section: recent traces, spans held.
    #[serde(default)]
    pub trace: Option<crate::trace::TraceSection>,
    /// Chandy-Lamport snapshots and the token demo.
    #[serde(default)]
    pub snapshot: Option<crate::snapshot::state::SnapshotSection>,
}

impl NodeView {
    /// Peers reached without the relay (they stay while it is gone).
    pub fn direct_peers(&self) -> usize {
        self.peers
            .iter()
            .filter(|p| p.connection == crate::peers::ConnectionKind::Direct)
            .count()
    }
}

/// The `gimps` section: the protocol state plus what the driver measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GimpsSection {
    /// Protocol state: awake, msg_id, peers, biggest prime, own primes, log, counters.
    #[serde(flatten)]
    pub state: GimpsView,
    /// Lucas-Lehmer tests completed per second, over the last 10 s.
    pub tests_per_sec: f64,
    /// Lucas-Lehmer tests completed since start.
    pub tested_total: u64,
    /// Wall-clock time (Unix ms) at which the current largest prime was learnt or found, to
    /// compare across peers.
    pub learned_at_unix_ms: Option<u64>,
    /// The protocol's intervals and limits.
    pub config: GimpsConfigView,
    /// Where the Lucas-Lehmer test runs and how much of a core it may take.
    pub search: crate::gimps::pace::SearchView,
}

/// The configurable part of the protocol, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GimpsConfigView {
    /// Search round interval.
    pub search_interval_ms: u64,
    /// Eviction check interval.
    pub evict_interval_ms: u64,
    /// Silence before eviction.
    pub stale_timeout_ms: u64,
    /// Ping interval.
    pub ping_interval_ms: u64,
    /// TTL of own announcements.
    pub initial_ttl: u8,
    /// Largest TTL accepted.
    pub max_ttl: u8,
    /// Whether this peer searches at all (`?search=off`, `--no-search`).
    pub search: bool,
    /// Quiet (no peer connecting) before the first search round (`?search_settle`,
    /// `--search-settle`).
    #[serde(default)]
    pub settle_ms: u64,
}

impl From<&GossipConfig> for GimpsConfigView {
    fn from(c: &GossipConfig) -> Self {
        Self {
            search_interval_ms: millis(c.search_interval),
            evict_interval_ms: millis(c.evict_interval),
            stale_timeout_ms: millis(c.stale_timeout),
            ping_interval_ms: millis(c.ping_interval),
            initial_ttl: c.initial_ttl,
            max_ttl: c.max_ttl,
            search: c.search,
            settle_ms: millis(c.settle),
        }
    }
}

/// The relay as seen by a peer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RelayView {
    /// The relay's peer id, once the bootstrap document has been read.
    pub peer_id: Option<String>,
    /// Where the bootstrap document comes from (URL or multiaddr).
    pub bootstrap: String,
    /// The relay address in use.
    pub addr: Option<String>,
    /// Link state, connection and reservation flags, retry schedule and last error.
    #[serde(flatten)]
    pub link: RelayLinkView,
    /// Milliseconds from the clock origin to the first accepted reservation.
    pub reservation_at_ms: Option<u64>,
    /// Round trip of the last ping to the relay, in milliseconds.
    pub rtt_ms: Option<f64>,
}

/// Counters of what the node refused or lost, and of what its moves to direct connections cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Protocol violations by connected peers (garbled pings, failed identify exchanges,
    /// rejected gossip, forged records, ...): strikes in the misbehaviour ledger.
    pub violations: u64,
    /// Peers banned by the ledger (each ban counts).
    #[serde(default)]
    pub bans: u64,
    /// Connections refused because the peer was banned.
    #[serde(default)]
    pub refused_banned: u64,
    /// Incoming connections that failed before being established (garbage instead of a
    /// handshake, say).
    pub incoming_errors: u64,
    /// Connections closed for failed pings (bans are counted in `bans`).
    pub disconnects: u64,
    /// Connections refused because the peer table was full.
    pub refused_connections: u64,
    /// Outgoing dials that failed.
    pub dial_failures: u64,
    /// Dials refused before going out: the peer was unreachable a moment ago (dial backoff).
    #[serde(default)]
    pub dials_backed_off: u64,
    /// Dials that crossed the peer's dial to us through the relay: of the two, the smaller peer
    /// id's was kept (`crate::crossing_dials`).
    #[serde(default)]
    pub crossed_dials: u64,
    /// Wire events logged since start.
    pub wire_events: u64,
    /// Direct connections dialed: WebRTC offers sent through the relay.
    #[serde(default)]
    pub webrtc_offers: u64,
    /// Direct connections closed because another one to the same peer stays (crossing offers).
    #[serde(default)]
    pub direct_duplicates_closed: u64,
    /// Direct dials that failed (retried after a backoff).
    #[serde(default)]
    pub direct_dials_failed: u64,
}
