//! The table of connected peers: how each is reached, how fast, when last heard, how it behaves.
//!
//! One entry per remote peer (the relay is tracked by the relay link, not here), holding every
//! open connection to it. A peer counts as `direct` as soon as one of its connections does not go
//! through a relay circuit. The table is bounded: past `max_peers` new peers are refused, and a
//! connection that fails too many pings in a row is to be closed; the table says so and the
//! driver carries it out. Protocol violations are the misbehaviour ledger's business
//! ([`crate::ledger`]); the table only shows the strikes it reports.

use std::collections::BTreeMap;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};
use web_time::{Duration, Instant};

use crate::names::{peer_name, short_id};
use crate::protocol::{AGENT_NATIVE, AGENT_RELAY, AGENT_WEB};

/// How a connection reaches the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionKind {
    /// Through a circuit on the relay (`/p2p-circuit`).
    Relayed,
    /// Straight to the peer.
    Direct,
}

impl ConnectionKind {
    /// `"relayed"` or `"direct"` (the serialised form).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Relayed => "relayed",
            Self::Direct => "direct",
        }
    }
}

impl std::fmt::Display for ConnectionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Limits of a [`PeerTable`].
#[derive(Debug, Clone)]
pub struct PeerTableConfig {
    /// Most peers tracked at once; connections from further peers are refused.
    pub max_peers: usize,
    /// Consecutive ping failures on a connection before it is closed.
    pub max_ping_failures: u32,
}

impl Default for PeerTableConfig {
    fn default() -> Self {
        Self {
            max_peers: 256,
            max_ping_failures: 3,
        }
    }
}

/// Whether a new connection may stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Tracked.
    Accepted,
    /// The table is full: close the connection.
    Refused,
}

/// What to do about a connection after a failed ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the connection.
    Keep,
    /// Close the connection, for this reason.
    Disconnect(String),
}

/// What kind of peer it is, from its identify agent version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PeerKind {
    /// A tabmesh browser tab.
    #[serde(rename = "tab")]
    Tab,
    /// A native tabmesh node.
    #[serde(rename = "native")]
    Native,
    /// A tabmesh relay.
    #[serde(rename = "relay")]
    Relay,
    /// A js-libp2p node speaking the same protocols.
    #[serde(rename = "js-libp2p")]
    JsLibp2p,
    /// Another rust-libp2p program.
    #[serde(rename = "rust-libp2p")]
    RustLibp2p,
    /// A go-libp2p node.
    #[serde(rename = "go-libp2p")]
    GoLibp2p,
    /// Not identified yet, or an agent we do not know.
    #[serde(rename = "unknown")]
    Unknown,
}

impl PeerKind {
    /// The kind of a peer announcing `agent` (`None`: not identified yet).
    pub fn of_agent(agent: Option<&str>) -> Self {
        match agent {
            Some(a) if a.starts_with(AGENT_WEB) => Self::Tab,
            Some(a) if a.starts_with(AGENT_NATIVE) => Self::Native,
            Some(a) if a.starts_with(AGENT_RELAY) => Self::Relay,
            // Another implementation speaking the same protocols (e.g. a js-libp2p browser node).
            Some(a) if a.starts_with("js-libp2p") => Self::JsLibp2p,
            Some(a) if a.starts_with("rust-libp2p") => Self::RustLibp2p,
            Some(a)
                if a.starts_with("go-libp2p") || a.starts_with("github.com/libp2p/go-libp2p") =>
            {
                Self::GoLibp2p
            }
            _ => Self::Unknown,
        }
    }

    /// The name shown in the Peers panel (the serialised form).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tab => "tab",
            Self::Native => "native",
            Self::Relay => "relay",
            Self::JsLibp2p => "js-libp2p",
            Self::RustLibp2p => "rust-libp2p",
            Self::GoLibp2p => "go-libp2p",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for PeerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone)]
struct Link<C> {
    id: C,
    kind: ConnectionKind,
    rtt: Option<Duration>,
    ping_failures: u32,
}

#[derive(Debug, Clone)]
struct PeerEntry<C> {
    links: Vec<Link<C>>,
    first_connected: Instant,
    last_heard: Instant,
    agent: Option<String>,
}

/// One peer, as shown in the Peers panel and in `window.tabmesh.state().peers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    /// Full base58 peer id.
    pub peer_id: String,
    /// Human-friendly name derived from the id.
    pub name: String,
    /// Short form of the id.
    pub short_id: String,
    /// `"direct"` if any connection is direct, else `"relayed"`.
    pub connection: ConnectionKind,
    /// Number of open connections.
    pub connections: usize,
    /// Latest ping round trip on the preferred connection, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Milliseconds since anything was heard from the peer.
    pub last_heard_ms_ago: u64,
    /// Milliseconds from the clock origin (page load) to the first connection.
    pub connected_at_ms: u64,
    /// `"tab"`, `"native"`, `"relay"`, another implementation (`"js-libp2p"`, `"rust-libp2p"`,
    /// `"go-libp2p"`) or `"unknown"`, from the identify agent version.
    pub kind: PeerKind,
    /// The identify agent version, once known.
    pub agent: Option<String>,
    /// Protocol violations counted against the peer by the misbehaviour ledger (filled in by
    /// the node).
    pub strikes: u32,
    /// Where the move to a direct connection stands (tabs only; filled in by the node).
    #[serde(default)]
    pub upgrade: Option<crate::direct_upgrade::UpgradeView>,
}

/// Connected peers, keyed by id; `C` is the transport's connection id type.
#[derive(Debug, Clone)]
pub struct PeerTable<C> {
    config: PeerTableConfig,
    peers: BTreeMap<PeerId, PeerEntry<C>>,
    refused: u64,
}

impl<C: Copy + Eq> PeerTable<C> {
    /// An empty table.
    pub fn new(config: PeerTableConfig) -> Self {
        Self {
            config,
            peers: BTreeMap::new(),
            refused: 0,
        }
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is connected.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Whether `peer` has an open connection.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// Whether a new peer would be admitted.
    pub fn has_room(&self) -> bool {
        self.peers.len() < self.config.max_peers
    }

    /// Connections refused because the table was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// The ids of all connected peers.
    pub fn peer_ids(&self) -> impl Iterator<Item = &PeerId> {
        self.peers.keys()
    }

    /// Whether `peer` is reached by at least one direct connection.
    pub fn is_direct(&self, peer: &PeerId) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|e| e.links.iter().any(|l| l.kind == ConnectionKind::Direct))
    }

    /// The open relayed connections to `peer`.
    pub fn relayed_connections(&self, peer: &PeerId) -> Vec<C> {
        self.peers.get(peer).map_or_else(Vec::new, |e| {
            e.links
                .iter()
                .filter(|l| l.kind == ConnectionKind::Relayed)
                .map(|l| l.id)
                .collect()
        })
    }

    /// A connection to `peer` opened.
    pub fn on_connection_established(
        &mut self,
        now: Instant,
        peer: PeerId,
        id: C,
        kind: ConnectionKind,
    ) -> Admission {
        let link = Link {
            id,
            kind,
            rtt: None,
            ping_failures: 0,
        };
        if let Some(entry) = self.peers.get_mut(&peer) {
            entry.links.push(link);
            entry.last_heard = now;
            return Admission::Accepted;
        }
        if self.peers.len() >= self.config.max_peers {
            self.refused += 1;
            return Admission::Refused;
        }
        self.peers.insert(
            peer,
            PeerEntry {
                links: vec![link],
                first_connected: now,
                last_heard: now,
                agent: None,
            },
        );
        Admission::Accepted
    }

    /// A connection closed. Returns `true` when it was the peer's last one (the peer is gone).
    pub fn on_connection_closed(&mut self, peer: &PeerId, id: C) -> bool {
        let Some(entry) = self.peers.get_mut(peer) else {
            return false;
        };
        entry.links.retain(|l| l.id != id);
        if entry.links.is_empty() {
            self.peers.remove(peer);
            return true;
        }
        false
    }

    /// Something arrived from `peer`.
    pub fn on_heard(&mut self, now: Instant, peer: &PeerId) {
        if let Some(entry) = self.peers.get_mut(peer) {
            entry.last_heard = now;
        }
    }

    /// The peer told us its agent version (identify).
    pub fn on_identified(&mut self, now: Instant, peer: &PeerId, agent: &str) {
        if let Some(entry) = self.peers.get_mut(peer) {
            entry.agent = Some(agent.chars().take(128).collect());
            entry.last_heard = now;
        }
    }

    /// A ping on connection `id` came back after `rtt`.
    pub fn on_ping_success(&mut self, now: Instant, peer: &PeerId, id: C, rtt: Duration) {
        if let Some(entry) = self.peers.get_mut(peer) {
            entry.last_heard = now;
            if let Some(link) = entry.links.iter_mut().find(|l| l.id == id) {
                link.rtt = Some(rtt);
                link.ping_failures = 0;
            }
        }
    }

    /// A ping on connection `id` failed or timed out.
    pub fn on_ping_failure(&mut self, peer: &PeerId, id: C) -> Verdict {
        let Some(link) = self
            .peers
            .get_mut(peer)
            .and_then(|e| e.links.iter_mut().find(|l| l.id == id))
        else {
            return Verdict::Keep;
        };
        link.ping_failures += 1;
        if link.ping_failures >= self.config.max_ping_failures {
            Verdict::Disconnect(format!("{} pings failed in a row", link.ping_failures))
        } else {
            Verdict::Keep
        }
    }

    /// The peers for display; timestamps are relative to `origin` (page load).
    pub fn view(&self, now: Instant, origin: Instant) -> Vec<PeerView> {
        self.view_with(now, origin, |_, _| {})
    }

    /// The peers for display, each completed by `extra` with what other parts of the node know
    /// about it (upgrade state, strikes).
    pub fn view_with(
        &self,
        now: Instant,
        origin: Instant,
        mut extra: impl FnMut(&PeerId, &mut PeerView),
    ) -> Vec<PeerView> {
        self.peers
            .iter()
            .map(|(peer, e)| {
                let direct = e.links.iter().find(|l| l.kind == ConnectionKind::Direct);
                let preferred = direct.or_else(|| e.links.first());
                let mut view = PeerView {
                    peer_id: peer.to_base58(),
                    name: peer_name(peer),
                    short_id: short_id(peer),
                    connection: if direct.is_some() {
                        ConnectionKind::Direct
                    } else {
                        ConnectionKind::Relayed
                    },
                    connections: e.links.len(),
                    rtt_ms: preferred.and_then(|l| l.rtt).map(|d| d.as_secs_f64() * 1e3),
                    last_heard_ms_ago: millis(now.saturating_duration_since(e.last_heard)),
                    connected_at_ms: millis(e.first_connected.saturating_duration_since(origin)),
                    kind: PeerKind::of_agent(e.agent.as_deref()),
                    agent: e.agent.clone(),
                    strikes: 0,
                    upgrade: None,
                };
                extra(peer, &mut view);
                view
            })
            .collect()
    }
}

/// Milliseconds in `d`, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::Keypair;

    fn peer() -> PeerId {
        Keypair::generate_ed25519().public().to_peer_id()
    }

    fn table(max_peers: usize) -> PeerTable<u32> {
        PeerTable::new(PeerTableConfig {
            max_peers,
            max_ping_failures: 2,
        })
    }

    #[test]
    fn direct_wins_over_relayed_and_rtt_follows_it() {
        let t0 = Instant::now();
        let mut t = table(8);
        let p = peer();
        t.on_connection_established(t0, p, 1, ConnectionKind::Relayed);
        t.on_ping_success(t0, &p, 1, Duration::from_millis(40));
        let v = &t.view(t0, t0)[0];
        assert_eq!(v.connection, ConnectionKind::Relayed);
        assert_eq!(v.rtt_ms, Some(40.0));
        t.on_connection_established(t0, p, 2, ConnectionKind::Direct);
        t.on_ping_success(t0, &p, 2, Duration::from_millis(3));
        let v = &t.view(t0, t0)[0];
        assert_eq!(v.connection, ConnectionKind::Direct);
        assert_eq!(v.connections, 2);
        assert_eq!(v.rtt_ms, Some(3.0));
        assert!(t.is_direct(&p));
        // Losing the direct connection falls back to the relayed one.
        assert!(!t.on_connection_closed(&p, 2));
        assert_eq!(t.view(t0, t0)[0].connection, ConnectionKind::Relayed);
        assert!(t.on_connection_closed(&p, 1));
        assert!(t.is_empty());
    }

    #[test]
    fn last_heard_and_connected_at_use_the_injected_clock() {
        let origin = Instant::now();
        let t0 = origin + Duration::from_millis(250);
        let mut t = table(8);
        let p = peer();
        t.on_connection_established(t0, p, 1, ConnectionKind::Relayed);
        t.on_heard(t0 + Duration::from_secs(2), &p);
        let v = &t.view(t0 + Duration::from_secs(5), origin)[0];
        assert_eq!(v.last_heard_ms_ago, 3000);
        assert_eq!(v.connected_at_ms, 250);
    }

    #[test]
    fn refuses_peers_past_the_limit_but_not_more_connections_of_known_peers() {
        let now = Instant::now();
        let mut t = table(1);
        let (a, b) = (peer(), peer());
        assert_eq!(
            t.on_connection_established(now, a, 1, ConnectionKind::Relayed),
            Admission::Accepted
        );
        assert_eq!(
            t.on_connection_established(now, b, 2, ConnectionKind::Relayed),
            Admission::Refused
        );
        assert_eq!(
            t.on_connection_established(now, a, 3, ConnectionKind::Direct),
            Admission::Accepted
        );
        assert_eq!(t.refused(), 1);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn consecutive_ping_failures_disconnect_and_a_success_forgives() {
        let now = Instant::now();
        let mut t = table(8);
        let p = peer();
        t.on_connection_established(now, p, 1, ConnectionKind::Relayed);
        assert_eq!(t.on_ping_failure(&p, 1), Verdict::Keep);
        t.on_ping_success(now, &p, 1, Duration::from_millis(1));
        assert_eq!(t.on_ping_failure(&p, 1), Verdict::Keep);
        assert!(matches!(t.on_ping_failure(&p, 1), Verdict::Disconnect(_)));
    }

    #[test]
    fn agent_decides_the_kind_and_is_truncated() {
        let now = Instant::now();
        let mut t = table(8);
        let p = peer();
        t.on_connection_established(now, p, 1, ConnectionKind::Relayed);
        assert_eq!(t.view(now, now)[0].kind, PeerKind::Unknown);
        t.on_identified(now, &p, &format!("{AGENT_WEB}/0.1.0{}", "x".repeat(500)));
        let v = &t.view(now, now)[0];
        assert_eq!(v.kind, PeerKind::Tab);
        assert_eq!(v.agent.as_ref().map(|a| a.len()), Some(128));
        // As js-libp2p 3.3 announces itself from a browser.
        t.on_identified(now, &p, "js-libp2p/3.3.11 browser/Mozilla/5.0");
        assert_eq!(t.view(now, now)[0].kind, PeerKind::JsLibp2p);
        assert_eq!(
            serde_json::to_value(PeerKind::JsLibp2p).expect("serialises"),
            "js-libp2p"
        );
    }
}
