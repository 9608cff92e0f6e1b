//! The snapshot of a peer's state that the UI renders and tests read.
//!
//! `window.tabmesh.state()` returns exactly this structure as JSON, so its field names are a
//! stable interface: later protocols add sections, existing fields keep their names and meaning.

use serde::{Deserialize, Serialize};

use crate::peers::PeerView;
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
    /// The relay link.
    pub relay: RelayView,
    /// Connected peers, excluding the relay.
    pub peers: Vec<PeerView>,
    /// Our listen addresses (relay circuit addresses for tabs).
    pub listen_addrs: Vec<String>,
    /// The most recent wire events, oldest first.
    pub wire: Vec<WireEvent>,
    /// Counters of rejected input and failures.
    pub counters: Counters,
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

/// Counters of what the node refused or lost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Protocol violations by connected peers (garbled pings, failed identify exchanges, ...).
    pub violations: u64,
    /// Incoming connections that failed before being established (garbage instead of a
    /// handshake, or the losing side of two peers dialing each other at once).
    pub incoming_errors: u64,
    /// Peers disconnected for failed pings or violations.
    pub disconnects: u64,
    /// Connections refused because the peer table was full.
    pub refused_connections: u64,
    /// Outgoing dials that failed.
    pub dial_failures: u64,
    /// Wire events logged since start.
    pub wire_events: u64,
}
