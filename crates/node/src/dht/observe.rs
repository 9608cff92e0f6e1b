//! Kademlia with its requests made visible: which peer a lookup asked, when, and what it said.
//!
//! libp2p's Kademlia reports a query's outcome and totals ([`kad::QueryStats`]) but not its
//! individual requests, which are exactly what a learner wants to see and what the simulation
//! counts (peers contacted, rounds). [`ObservedKad`] wraps [`kad::Behaviour`] unchanged (same
//! connection handler, same events) and watches the messages passing between the behaviour and
//! its per-connection handlers: each request sent for a watched query, and each reply or error
//! coming back.
//!
//! A request to a peer we are not connected to waits for the dial and is handed to the new
//! connection's handler directly, out of sight; it is recorded when its answer arrives, as sent
//! when Kademlia asked for the dial. (Requests whose dial fails are not recorded.)
//!
//! It also sends a query's requests to a peer over a direct connection when the peer has one
//! beside its relayed one. Kademlia hands a request to any of the peer's connections (in
//! whichever the swarm lists first, often the relayed one), and the direct upgrade closes the relayed connection
//! a moment after the direct one takes over: a request still on it was lost without a word
//! (Kademlia hears of a failure only when the peer's last connection closes), and the query
//! waited out its peer timeout; a put's look for the key's holders could then find none and
//! publish over them.
//!
//! Those messages (`HandlerIn`/`HandlerEvent`) are public types in a private module of
//! libp2p-kad: they can be passed on but not named, so they are read through their `Debug`
//! form: the variant name, the `query_id` and the peer ids in `closer_peers`. libp2p is pinned
//! (`Cargo.lock`); the simulation tests (`crates/dht-sim/tests/sim.rs`) fail if a libp2p
//! upgrade changes that form, rather than silently showing empty paths.

use std::collections::{HashMap, HashSet, VecDeque};
use std::task::{Context, Poll};

use libp2p::kad;
use libp2p::swarm::{
    ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use web_time::Instant;

use super::store::KadStore;
use crate::forward::forward_to;

/// Observations kept at most before the owner drains them.
const MAX_OBSERVATIONS: usize = 4096;
/// Dials remembered at most (to date requests that waited for them).
const MAX_DIALS: usize = 1024;

/// One request of a watched query, or its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcObservation {
    /// A request went to `peer`.
    Request {
        /// The query.
        query: kad::QueryId,
        /// The peer asked.
        peer: PeerId,
        /// What was asked (`FindNodeReq`, `GetRecord`, `PutRecord`, ...).
        kind: String,
    },
    /// `peer` answered.
    Reply {
        /// The query.
        query: kad::QueryId,
        /// Who answered.
        peer: PeerId,
        /// The closer peers it named.
        closer: Vec<PeerId>,
        /// Whether it returned the record or providers sought.
        found: bool,
        /// What the answer was (`FindNodeRes`, `GetRecordRes`, `PutRecordRes`, ...).
        kind: String,
    },
    /// The request to `peer` failed.
    Failure {
        /// The query.
        query: kad::QueryId,
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
}

/// [`kad::Behaviour`] plus a record of the requests of the queries its owner watches.
pub struct ObservedKad {
    inner: kad::Behaviour<KadStore>,
    watched: HashSet<kad::QueryId>,
    /// Requests seen leaving, per watched query.
    requested: HashSet<(kad::QueryId, PeerId)>,
    /// When Kademlia last asked to dial each peer.
    dials: HashMap<PeerId, Instant>,
    observations: VecDeque<(Instant, RpcObservation)>,
    /// Whether the bootstraps Kademlia starts on its own are finished at once
    /// ([`ObservedKad::skip_own_bootstraps`]).
    skip_own_bootstraps: bool,
    /// Bootstraps the owner started ([`ObservedKad::bootstrap`]): always run.
    requested_bootstraps: HashSet<kad::QueryId>,
    /// Bootstrap steps finished at once.
    skipped_bootstraps: u64,
    /// The last of them (query and step): Kademlia removes a finished step at its next poll.
    last_skipped: Option<(kad::QueryId, usize)>,
    /// Each peer's connections that do not go through the relay.
    direct: DirectConnections,
}

/// Each peer's connections that do not go through the relay, oldest first: a query's requests
/// to the peer go over the first (see the module).
#[derive(Debug, Default)]
struct DirectConnections(HashMap<PeerId, Vec<ConnectionId>>);

impl DirectConnections {
    fn on_established(&mut self, peer: PeerId, connection: ConnectionId, remote: &Multiaddr) {
        if !crate::relay_link::is_relayed(remote) {
            self.0.entry(peer).or_default().push(connection);
        }
    }

    fn on_closed(&mut self, peer: PeerId, connection: ConnectionId) {
        if let Some(conns) = self.0.get_mut(&peer) {
            conns.retain(|c| *c != connection);
            if conns.is_empty() {
                self.0.remove(&peer);
            }
        }
    }

    /// `event` with a request for any of a peer's connections sent over its direct one.
    fn steer<E>(&self, event: ToSwarm<kad::Event, E>) -> ToSwarm<kad::Event, E> {
        match event {
            ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::Any,
                event,
            } => {
                let handler = self
                    .0
                    .get(&peer_id)
                    .and_then(|conns| conns.first())
                    .map_or(NotifyHandler::Any, |c| NotifyHandler::One(*c));
                ToSwarm::NotifyHandler {
                    peer_id,
                    handler,
                    event,
                }
            }
            other => other,
        }
    }
}

impl ObservedKad {
    /// Wraps `inner`.
    pub fn new(inner: kad::Behaviour<KadStore>) -> Self {
        Self {
            inner,
            watched: HashSet::new(),
            requested: HashSet::new(),
            dials: HashMap::new(),
            observations: VecDeque::new(),
            skip_own_bootstraps: false,
            requested_bootstraps: HashSet::new(),
            skipped_bootstraps: 0,
            last_skipped: None,
            direct: DirectConnections::default(),
        }
    }

    /// Kademlia's bootstrap ([`kad::Behaviour::bootstrap`]), as the owner's: it runs whatever
    /// [`ObservedKad::skip_own_bootstraps`] says.
    pub fn bootstrap(&mut self) -> Result<kad::QueryId, kad::NoKnownPeers> {
        let query = self.inner.bootstrap()?;
        self.requested_bootstraps
            .retain(|q| self.inner.query(q).is_some());
        self.requested_bootstraps.insert(query);
        Ok(query)
    }

    /// Whether the bootstraps Kademlia starts on its own (500 ms after a peer enters a routing
    /// table of fewer than k peers, and periodically if configured) end at once, before their
    /// first request goes out: a lookup of our own id, then one per bucket farther away, each
    /// step finished as it starts. For a node that has just heard every peer there is from
    /// the relay, or for the relay itself, whose table fills from reservations, they would
    /// only ask each peer again for what the relay said: 8 tabs opened together received 452
    /// `FIND_NODE`s in their first 8 s with them, 140 without.
    pub fn skip_own_bootstraps(&mut self, skip: bool) {
        self.skip_own_bootstraps = skip;
    }

    /// Whether Kademlia's own bootstraps end at once ([`ObservedKad::skip_own_bootstraps`]).
    pub fn skips_own_bootstraps(&self) -> bool {
        self.skip_own_bootstraps
    }

    /// Steps of Kademlia's own bootstraps ended before they asked anyone.
    pub fn skipped_bootstraps(&self) -> u64 {
        self.skipped_bootstraps
    }

    /// A bootstrap Kademlia started on its own, running now, and its step.
    fn own_bootstrap(&self) -> Option<(kad::QueryId, usize)> {
        self.inner.iter_queries().find_map(|q| match q.info() {
            kad::QueryInfo::Bootstrap { step, .. }
                if !self.requested_bootstraps.contains(&q.id()) =>
            {
                Some((q.id(), step.count.get()))
            }
            _ => None,
        })
    }

    /// Starts recording the requests of `query`.
    pub fn watch(&mut self, query: kad::QueryId) {
        self.watched.insert(query);
    }

    /// Stops recording the requests of `query`.
    pub fn unwatch(&mut self, query: &kad::QueryId) {
        self.watched.remove(query);
        self.requested.retain(|(q, _)| q != query);
    }

    /// The observations since the last call, oldest first.
    pub fn drain_observations(&mut self) -> impl Iterator<Item = (Instant, RpcObservation)> + '_ {
        self.observations.drain(..)
    }

    fn observe(&mut self, at: Instant, observation: RpcObservation) {
        if self.observations.len() >= MAX_OBSERVATIONS {
            self.observations.pop_front();
        }
        self.observations.push_back((at, observation));
    }
}

impl std::ops::Deref for ObservedKad {
    type Target = kad::Behaviour<KadStore>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl std::ops::DerefMut for ObservedKad {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

/// The variant name at the start of a derived `Debug` form.
fn variant(debug: &str) -> &str {
    let end = debug
        .find(|c: char| !c.is_alphanumeric() && c != '_')
        .unwrap_or(debug.len());
    &debug[..end]
}

/// The number in `query_id: QueryId(n)`.
fn query_number(debug: &str) -> Option<&str> {
    let start = debug.rfind("query_id: QueryId(")? + "query_id: QueryId(".len();
    let len = debug[start..].find(')')?;
    Some(&debug[start..start + len])
}

/// The number of `query` as [`query_number`] reads it.
fn number_of(query: &kad::QueryId) -> String {
    format!("{query:?}")
        .trim_start_matches("QueryId(")
        .trim_end_matches(')')
        .to_owned()
}

/// The bracketed list after `field: [`, brackets balanced.
fn list_field<'a>(debug: &'a str, field: &str) -> Option<&'a str> {
    let start = debug.find(&format!("{field}: ["))? + field.len() + 3;
    let mut depth = 1;
    for (i, c) in debug[start..].char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&debug[start..start + i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// Every `PeerId("…")` in `text`.
fn peer_ids(text: &str) -> Vec<PeerId> {
    text.split("PeerId(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next()?.parse().ok())
        .collect()
}

impl ObservedKad {
    fn watched_query(&self, debug: &str) -> Option<kad::QueryId> {
        let n = query_number(debug)?;
        let wanted = format!("QueryId({n})");
        self.watched
            .iter()
            .find(|q| format!("{q:?}") == wanted)
            .copied()
    }
}

impl NetworkBehaviour for ObservedKad {
    type ConnectionHandler = THandler<kad::Behaviour<KadStore>>;
    type ToSwarm = kad::Event;

    forward_to!(inner: pending_inbound, established_inbound, pending_outbound, established_outbound);

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match &event {
            FromSwarm::ConnectionEstablished(e) => {
                let remote = e.endpoint.get_remote_address();
                self.direct
                    .on_established(e.peer_id, e.connection_id, remote);
            }
            FromSwarm::ConnectionClosed(e) => self.direct.on_closed(e.peer_id, e.connection_id),
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        if !self.watched.is_empty() {
            let debug = format!("{event:?}");
            if let Some(query) = self.watched_query(&debug) {
                let kind = variant(&debug).to_owned();
                let observation = if kind == "QueryError" {
                    let reason = debug
                        .split("error: ")
                        .nth(1)
                        .and_then(|e| e.split(", query_id").next())
                        .unwrap_or("error")
                        .to_owned();
                    RpcObservation::Failure {
                        query,
                        peer: peer_id,
                        reason,
                    }
                } else {
                    if self.requested.insert((query, peer_id)) {
                        // The request waited for a dial and went straight to the new handler.
                        let at = self
                            .dials
                            .get(&peer_id)
                            .copied()
                            .unwrap_or_else(Instant::now);
                        self.observe(
                            at,
                            RpcObservation::Request {
                                query,
                                peer: peer_id,
                                kind: "(after dialing)".to_owned(),
                            },
                        );
                    }
                    let closer = list_field(&debug, "closer_peers")
                        .map(peer_ids)
                        .unwrap_or_default();
                    let found = debug.starts_with("GetRecordRes { record: Some(")
                        || list_field(&debug, "provider_peers").is_some_and(|l| !l.is_empty());
                    RpcObservation::Reply {
                        query,
                        peer: peer_id,
                        closer,
                        found,
                        kind,
                    }
                };
                self.observe(Instant::now(), observation);
            }
        }
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        let mut polled = self.inner.poll(cx).map(|event| self.direct.steer(event));
        while self.skip_own_bootstraps
            && let Some((query, step)) = self.own_bootstrap()
        {
            // Kademlia sends a query's first request in the poll that starts it: that request
            // is dropped with the step, and the next step, which Kademlia starts under the same
            // id when one ends, goes the same way. (A step whose peer needs a dial first still
            // has the dial go out; nothing is sent on it for the finished step.)
            let request = matches!(&polled, Poll::Ready(ToSwarm::NotifyHandler { event, .. })
                if query_number(&format!("{event:?}")) == Some(&number_of(&query)));
            if let Some(mut running) = self.inner.query_mut(&query) {
                running.finish();
            }
            if self.last_skipped.replace((query, step)) != Some((query, step)) {
                self.skipped_bootstraps += 1;
            }
            if !request {
                break;
            }
            polled = self.inner.poll(cx).map(|event| self.direct.steer(event));
        }
        if self.watched.is_empty() {
            return polled;
        }
        match &polled {
            Poll::Ready(ToSwarm::NotifyHandler { peer_id, event, .. }) => {
                let debug = format!("{event:?}");
                if let Some(query) = self.watched_query(&debug) {
                    self.requested.insert((query, *peer_id));
                    let kind = variant(&debug).to_owned();
                    self.observe(
                        Instant::now(),
                        RpcObservation::Request {
                            query,
                            peer: *peer_id,
                            kind,
                        },
                    );
                }
            }
            Poll::Ready(ToSwarm::Dial { opts }) => {
                if let Some(peer) = opts.get_peer_id() {
                    if self.dials.len() >= MAX_DIALS {
                        self.dials.clear();
                    }
                    self.dials.insert(peer, Instant::now());
                }
            }
            _ => {}
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_debug_forms() {
        let a: PeerId = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
            .parse()
            .unwrap();
        let debug = format!(
            "FindNodeRes {{ closer_peers: [KadPeer {{ node_id: {a:?}, multiaddrs: [/ip4/1.2.3.4/tcp/1], connection_ty: Connected }}], query_id: QueryId(17) }}"
        );
        assert_eq!(variant(&debug), "FindNodeRes");
        assert_eq!(query_number(&debug), Some("17"));
        assert_eq!(
            list_field(&debug, "closer_peers").map(peer_ids),
            Some(vec![a])
        );
        assert_eq!(list_field("x: []", "x"), Some(""));
        assert_eq!(list_field("x: [", "x"), None);
    }

    #[test]
    fn a_querys_request_goes_over_the_peers_direct_connection_while_it_has_one() {
        let peer = PeerId::random();
        let relay = PeerId::random();
        let circuit: Multiaddr =
            format!("/ip4/127.0.0.1/tcp/1/ws/p2p/{relay}/p2p-circuit/p2p/{peer}")
                .parse()
                .unwrap();
        let webrtc: Multiaddr =
            format!("/ip4/127.0.0.1/tcp/1/ws/p2p/{relay}/p2p-circuit/webrtc/p2p/{peer}")
                .parse()
                .unwrap();
        let [relayed, direct, second] = [1, 2, 3].map(ConnectionId::new_unchecked);
        let request = || ToSwarm::<kad::Event, u8>::NotifyHandler {
            peer_id: peer,
            handler: NotifyHandler::Any,
            event: 7,
        };
        let sent_over = |d: &DirectConnections| match d.steer(request()) {
            ToSwarm::NotifyHandler {
                handler, event: 7, ..
            } => handler,
            other => panic!("{other:?}"),
        };
        let mut d = DirectConnections::default();
        d.on_established(peer, relayed, &circuit);
        assert!(
            matches!(sent_over(&d), NotifyHandler::Any),
            "relayed only: any"
        );
        d.on_established(peer, direct, &webrtc);
        d.on_established(peer, second, &webrtc);
        assert!(matches!(sent_over(&d), NotifyHandler::One(c) if c == direct));
        d.on_closed(peer, direct);
        assert!(matches!(sent_over(&d), NotifyHandler::One(c) if c == second));
        d.on_closed(peer, second);
        assert!(matches!(sent_over(&d), NotifyHandler::Any), "back to any");
        assert!(
            d.0.is_empty(),
            "nothing kept for a peer without direct connections"
        );
        // A reply on a chosen connection is left alone.
        let reply = ToSwarm::<kad::Event, u8>::NotifyHandler {
            peer_id: peer,
            handler: NotifyHandler::One(relayed),
            event: 8,
        };
        d.on_established(peer, direct, &webrtc);
        assert!(matches!(
            d.steer(reply),
            ToSwarm::NotifyHandler { handler: NotifyHandler::One(c), .. } if c == relayed
        ));
    }
}
