//! The DHT as a libp2p behaviour: Kademlia, the user's operations, peer discovery, the lookup
//! observer and what the DHT panel shows.
//!
//! Every peer runs it (tabs, native nodes, the relay, the simulation's peers):
//! - [`kademlia`]: libp2p Kademlia configured for tabmesh, with every inbound record checked;
//! - [`observe`]: the wrapper that records each request of a lookup, which libp2p does not report;
//! - [`store`]: Kademlia's record store on the core's `LocalStore`, written through to a backend;
//! - this module: the operations a user asks for ([`DhtRequest`]: put, get, remove, provide,
//!   providers), driven by `tabmesh_core::dht::ops` whose rules (quorum, ownership, versions,
//!   tombstones, acknowledgements, hand-over) are tested there; records handed to peers that
//!   join close to their keys; the expiry of held records; and, for a peer
//!   ([`Role::Peer`]), discovery: when our circuit address appears (the relay accepted our
//!   reservation) we look up our own id, first often, then rarely, and dial the peers found
//!   through the relay. The relay plays [`Role::Bootstrap`].
//!
//! Forged or malformed records from other peers are refused, counted and reported for the
//! misbehaviour ledger.

pub mod kademlia;
pub mod observe;
mod operations;
pub mod store;
mod view;

use std::collections::{HashMap, HashSet, VecDeque};
use std::task::{Context, Poll};

use futures::channel::oneshot;
use libp2p::identity::Keypair;
use libp2p::kad;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{
    ConnectionDenied, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tabmesh_core::bootstrap::is_dialable;
use tabmesh_core::dht::lookup::LookupTrace;
use tabmesh_core::dht::ops::{self, Operation};
use tabmesh_core::dht::{DhtConfig, DhtCounters, DhtError, DhtReply};
use tabmesh_core::discovery::{DialPacer, DiscoveryConfig, DiscoverySchedule};
use tabmesh_core::protocol;
use tabmesh_core::wire_log::Topic;
use tabmesh_webrtc::addr::is_webrtc;
use web_time::{Duration, Instant};

pub use kademlia::{InboundNote, accept_inbound};
pub use observe::{ObservedKad, RpcObservation};
pub use store::{KadStore, MemoryBackend, StoreBackend, kad_record};

use crate::forward::forward_to;
use crate::platform::unix_now_ms;
use crate::relay_link::{is_circuit, is_relayed};
use crate::report::{Report, WireSink};
use crate::timer::Timer;

/// How often expired records are dropped.
const EXPIRE_INTERVAL: Duration = Duration::from_secs(10);
/// Operations running at once at most (further requests are refused until one ends).
const MAX_RUNNING_OPS: usize = 32;
/// Most addresses tried per discovered peer.
const MAX_DIAL_ADDRS: usize = 8;
/// Peers dialed at most from one reply of the relay to a discovery lookup.
const MAX_DIALS_PER_REPLY: usize = 16;

/// The reply channel of a user request.
pub type DhtReplySender = oneshot::Sender<Result<DhtReply, DhtError>>;

/// Sees every Kademlia event (the relay feeds libp2p's metrics with them).
pub type KadObserver = Box<dyn FnMut(&kad::Event) + Send>;

/// What part a peer plays in the DHT.
#[derive(Debug, Clone)]
pub enum Role {
    /// A peer: learns the addresses of peers that speak our Kademlia from identify (not their
    /// `/webrtc` ones: meeting goes through the relay), and with `discovery` looks for peers
    /// once the relay accepted our reservation and dials them.
    Peer {
        /// The pace of discovery lookups; `None`: no discovery (the simulation joins by hand).
        discovery: Option<DiscoveryConfig>,
    },
    /// The bootstrap node (the relay): learns every peer's dialable addresses from identify
    /// and forgets a peer reachable only through its circuits when its last connection closes
    /// (its reservation died with it).
    Bootstrap,
}

struct Running {
    op: Operation,
    reply: Option<DhtReplySender>,
}

/// The DHT of a peer.
pub struct Behaviour {
    kad: ObservedKad,
    config: DhtConfig,
    keypair: Keypair,
    local: PeerId,
    role: Role,
    ops: HashMap<kad::QueryId, Running>,
    last_lookup: Option<LookupTrace>,
    counters: DhtCounters,
    next_expire: Instant,
    discovery: Option<DiscoverySchedule>,
    relay: Option<PeerId>,
    /// The relay's address (for circuit addresses through it).
    relay_addr: Option<Multiaddr>,
    /// The discovery lookup running, whose replies are watched.
    discovery_query: Option<kad::QueryId>,
    /// How many peers the relay named in its answer to that lookup.
    discovery_named: Option<usize>,
    connected: HashSet<PeerId>,
    circuit_only: HashSet<PeerId>,
    /// Peers whose identify said they speak our Kademlia.
    speaks_kad: HashSet<PeerId>,
    /// (Bootstrap role) Peers holding a reservation whose identify has not come yet: their
    /// circuit addresses, listed once it says they speak our Kademlia.
    reserved: HashMap<PeerId, Vec<Multiaddr>>,
    joining: Vec<(kad::QueryId, oneshot::Sender<()>)>,
    observer: Option<KadObserver>,
    /// Ids for the spans of operations, when they are traced.
    tracer: Option<SmallRng>,
    events: VecDeque<ToSwarm<Report, THandlerInEvent<ObservedKad>>>,
    wire: WireSink,
    timer: Timer,
    /// Dials through the relay, discovery's and Kademlia's, a few at a time.
    dials: DialPacer<PeerId, PacedDial>,
    /// The connection of each of those dials: its own outcome frees its place (not another
    /// connection to the same peer, say one it dialed us on).
    dialing: HashMap<libp2p::swarm::ConnectionId, PeerId>,
    /// Circuits coming in, from whom: such a peer is not dialed by discovery, its connection is
    /// on its way, and it is reachable whatever a dial of ours to it did (one that crossed its
    /// circuit is refused over there: `tabmesh_core::crossing_dials`, kept in `crate::peers`).
    arriving: HashMap<libp2p::swarm::ConnectionId, PeerId>,
}

/// A dial waiting for its turn in the DHT's dial pacer.
#[derive(Debug)]
enum PacedDial {
    /// A peer discovery found, at these addresses (through the relay).
    Discovered(Vec<Multiaddr>),
    /// A peer one of Kademlia's queries wants to ask: its own dial, whose outcome it awaits
    /// (its requests go out when the connection comes up, whoever made it).
    Kad(DialOpts),
}

/// Re-signs our own records restored under old keys under the `/tabmesh/` namespace
/// (`tabmesh_core::dht::ops::move_own_records`); Kademlia's republication then spreads them.
fn move_own_records(kad: &mut kad::Behaviour<KadStore>, keypair: &Keypair) {
    let now_ms = unix_now_ms();
    let held: Vec<_> = kad
        .store_mut()
        .local()
        .records()
        .map(|r| r.record.clone())
        .collect();
    for record in ops::move_own_records(&held, keypair, now_ms) {
        let key = tabmesh_core::dht::record::key_text(&record.key);
        let retired = tabmesh_core::dht::key::is_old(&record.key);
        match kad.store_mut().put_own(now_ms, record) {
            Ok(_) if retired => tracing::info!(%key, "old key retired (a tombstone)"),
            Ok(_) => tracing::info!(%key, "own record moved under the namespace"),
            Err(refusal) => tracing::warn!(%key, %refusal, "own record not moved"),
        }
    }
}

impl Behaviour {
    /// The DHT of `keypair`'s peer, its records kept on `backend`, its log lines going to
    /// `wire`.
    pub fn new(
        keypair: Keypair,
        config: DhtConfig,
        backend: Box<dyn StoreBackend>,
        role: Role,
        wire: WireSink,
    ) -> Self {
        let local = keypair.public().to_peer_id();
        let mut kad = kademlia::kademlia(local, &config, backend);
        // The relay's table fills from reservations and identify; asking its peers for the
        // peers nearest itself would only bring back those.
        kad.skip_own_bootstraps(matches!(role, Role::Bootstrap));
        let restored = kad.store_mut().restored();
        move_own_records(&mut kad, &keypair);
        let discovery = match &role {
            Role::Peer {
                discovery: Some(pace),
            } => Some(DiscoverySchedule::new(pace.clone())),
            _ => None,
        };
        Self {
            kad,
            config,
            keypair,
            local,
            role,
            ops: HashMap::new(),
            last_lookup: None,
            counters: DhtCounters {
                restored,
                ..DhtCounters::default()
            },
            next_expire: Instant::now() + EXPIRE_INTERVAL,
            discovery,
            relay: None,
            relay_addr: None,
            discovery_query: None,
            discovery_named: None,
            connected: HashSet::new(),
            circuit_only: HashSet::new(),
            speaks_kad: HashSet::new(),
            reserved: HashMap::new(),
            joining: Vec::new(),
            observer: None,
            tracer: None,
            events: VecDeque::new(),
            wire,
            timer: Timer::default(),
            dials: DialPacer::new(),
            dialing: HashMap::new(),
            arriving: HashMap::new(),
        }
    }

    /// Lets `observer` see every Kademlia event.
    pub fn observe_kad(&mut self, observer: KadObserver) {
        self.observer = Some(observer);
    }

    /// Kademlia itself (to add addresses or bootstrap by hand, as the simulation does).
    pub fn kad_mut(&mut self) -> &mut kad::Behaviour<KadStore> {
        &mut self.kad
    }

    /// The record store.
    pub fn store_mut(&mut self) -> &mut KadStore {
        self.kad.store_mut()
    }

    /// The configuration.
    pub fn config(&self) -> &DhtConfig {
        &self.config
    }

    /// Traffic and refusal counters.
    pub fn counters(&self) -> &DhtCounters {
        &self.counters
    }

    /// Records every operation this peer starts as a trace (a span per phase and per request);
    /// replies then carry their `trace_id`. `seed` seeds the ids.
    pub fn trace_operations(&mut self, seed: u64) {
        self.tracer = Some(SmallRng::seed_from_u64(seed));
    }

    /// The relay is `peer`, at `addr`: the first peer our lookups ask.
    pub fn set_relay(&mut self, peer: PeerId, addr: Multiaddr) {
        self.relay = Some(peer);
        self.relay_addr = Some(addr.clone());
        self.kad.add_address(&peer, addr);
    }

    /// `peer` identified itself: if it speaks our Kademlia, its addresses go to the routing
    /// table (see [`Role`] for which).
    pub fn on_identified(
        &mut self,
        peer: PeerId,
        listen_addrs: &[Multiaddr],
        protocols: &[StreamProtocol],
    ) {
        let speaks_kad = protocols.iter().any(|p| p.as_ref() == protocol::KADEMLIA);
        if !speaks_kad || Some(peer) == self.relay {
            return;
        }
        self.speaks_kad.insert(peer);
        if let Some(circuits) = self.reserved.remove(&peer) {
            self.list_reserved(peer, circuits);
        }
        let usable: Vec<Multiaddr> = listen_addrs
            .iter()
            .filter(|a| is_dialable(a))
            .cloned()
            .collect();
        match self.role {
            Role::Peer { .. } => {
                for addr in usable.into_iter().filter(|a| !is_webrtc(a)) {
                    self.kad.add_address(&peer, addr);
                }
            }
            Role::Bootstrap => {
                if !usable.is_empty() && usable.iter().all(is_circuit) {
                    self.circuit_only.insert(peer);
                }
                for addr in usable {
                    self.kad.add_address(&peer, addr);
                }
            }
        }
    }

    /// (Bootstrap role) `peer` holds a reservation on us and is reachable at `circuits`: it
    /// goes to the routing table now (once its identify says it speaks our Kademlia), without
    /// waiting for the identify push that names these addresses. Every lookup answered after
    /// this names it, so two peers that reserve at almost the same moment find each other in
    /// their first lookup: whichever is answered second learns of the other.
    pub fn on_reserved(&mut self, peer: PeerId, circuits: Vec<Multiaddr>) {
        if !matches!(self.role, Role::Bootstrap) || circuits.is_empty() {
            return;
        }
        if self.speaks_kad.contains(&peer) {
            self.list_reserved(peer, circuits);
        } else if self.connected.contains(&peer) {
            self.reserved.insert(peer, circuits);
        }
    }

    fn list_reserved(&mut self, peer: PeerId, circuits: Vec<Multiaddr>) {
        self.circuit_only.insert(peer);
        for addr in circuits {
            self.kad.add_address(&peer, addr);
        }
    }

    /// Joins the DHT through the peers already in the routing table (Kademlia's bootstrap: a
    /// lookup of our own id, then one per bucket farther than our closest neighbour); `done`
    /// fires when it has finished (at once when there is nobody to ask).
    pub fn join(&mut self, done: oneshot::Sender<()>) {
        match self.kad.bootstrap() {
            Ok(query) => {
                // Joins are rare; forget those whose caller stopped waiting.
                self.joining.retain(|(_, waiting)| !waiting.is_canceled());
                self.joining.push((query, done));
            }
            Err(_) => {
                let _ = done.send(());
            }
        }
    }

    fn report(&mut self, report: Report) {
        self.events.push_back(ToSwarm::GenerateEvent(report));
    }

    fn log(&mut self, peer: Option<PeerId>, summary: String) {
        if peer.is_some() {
            self.wire.received(Topic::Dht, peer, summary);
        } else {
            self.wire.local(Topic::Dht, None, summary);
        }
    }

    fn log_sent(&mut self, summary: String) {
        self.wire.sent(Topic::Dht, None, summary);
    }

    fn on_kad_event(&mut self, now: Instant, event: kad::Event) {
        if let Some(observer) = &mut self.observer {
            observer(&event);
        }
        match event {
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } if self.ops.contains_key(&id) => self.on_progress(now, id, result, step.last),
            kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::Bootstrap(_),
                step,
                ..
            } => {
                if step.last
                    && let Some(i) = self.joining.iter().position(|(q, _)| *q == id)
                {
                    let (_, done) = self.joining.swap_remove(i);
                    let _ = done.send(());
                }
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetClosestPeers(result),
                step,
                stats,
            } => {
                let mut named = None;
                if step.last && self.discovery_query == Some(id) {
                    self.kad.unwatch(&id);
                    self.discovery_query = None;
                    named = self.discovery_named.take();
                }
                let peers = match result {
                    Ok(ok) => ok.peers,
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                };
                if step.last {
                    let answered = peers
                        .iter()
                        .filter(|p| Some(p.peer_id) != self.relay)
                        .count();
                    let asked = stats.num_requests();
                    let line = match named {
                        // Ended with the relay's answer: what it named is what was found.
                        Some(named) if asked <= 1 => {
                            format!("lookup done: the relay named {named} peer(s), 1 asked")
                        }
                        _ => format!("lookup done: {answered} peer(s) near us, {asked} asked"),
                    };
                    self.wire.received(Topic::Kad, None, line);
                }
                for info in peers {
                    self.dial_discovered(info.peer_id, info.addrs);
                }
            }
            kad::Event::InboundRequest { request } => self.on_inbound(unix_now_ms(), request),
            kad::Event::RoutingUpdated {
                peer,
                is_new_peer,
                addresses,
                ..
            } => {
                if is_new_peer {
                    self.hand_over(peer);
                }
                self.dial_discovered(peer, addresses.into_vec());
            }
            other => tracing::trace!(event = ?other, "kad"),
        }
    }

    fn on_inbound(&mut self, now_ms: u64, request: kad::InboundRequest) {
        let note = accept_inbound(&mut self.kad, now_ms, request);
        match (&note.refused, note.record) {
            (Some(reason), true) => {
                self.counters.records_refused += 1;
                self.counters.last_refusal = Some(reason.clone());
                tracing::info!(peer = ?note.peer, %reason, "record refused");
            }
            (Some(reason), false) => {
                self.counters.providers_refused += 1;
                self.counters.last_refusal = Some(reason.clone());
            }
            (None, true) => self.counters.records_accepted += 1,
            (None, false) => {}
        }
        if let (true, Some(peer), Some(reason)) = (note.violation, note.peer, &note.refused) {
            self.report(Report::Misbehaved {
                peer,
                topic: Topic::Dht,
                reason: reason.clone(),
            });
        }
        self.log(note.peer, note.summary);
    }

    /// The relay answered our discovery lookup (`query`) naming `closer`: each is dialed
    /// through the relay now (a few at a time, [`DialPacer`]) rather than three at a time as
    /// Kademlia asks them (its α), so a tab opened among many meets them all in one round.
    ///
    /// When the relay named fewer than k peers, its answer is complete: it lists every peer
    /// that holds a reservation, none of its buckets can be full, so those are all the peers
    /// there are, and the lookup ends with it. Asking on would only send each of them a
    /// `FIND_NODE` through the relay, answered with what the relay already said (8 tabs joining
    /// together sent 56 such requests with their first lookups). With k or more, the lookup
    /// goes on as Kademlia's does, through the closest of them.
    ///
    /// A complete answer also makes Kademlia's own bootstraps pointless (each a lookup of our
    /// id, then one per farther bucket, 500 ms after a peer enters our routing table while it
    /// holds fewer than k): they end before they ask anyone until an answer names k or more.
    /// Then the group has outgrown what the relay can name, and the bootstraps skipped meanwhile
    /// are made up for with one: its lookups of far buckets find the peers that neither our
    /// lookups nor theirs name (the relay names the k closest to whoever asks).
    fn on_discovery_reply(&mut self, query: kad::QueryId, closer: &[PeerId]) {
        self.discovery_named = Some(closer.len());
        let complete = closer.len() < self.config.replication_factor;
        let skipped = self.kad.skips_own_bootstraps();
        self.kad.skip_own_bootstraps(complete);
        if complete && let Some(mut lookup) = self.kad.query_mut(&query) {
            lookup.finish();
        }
        if skipped && !complete {
            let _ = self.kad.bootstrap();
        }
        let (Some(relay), Some(relay_addr)) = (self.relay, self.relay_addr.clone()) else {
            return;
        };
        let through_relay = tabmesh_core::bootstrap::with_peer_id(relay_addr, relay)
            .with(libp2p::multiaddr::Protocol::P2pCircuit);
        for peer in closer.iter().take(MAX_DIALS_PER_REPLY) {
            self.dial_discovered(*peer, vec![through_relay.clone()]);
        }
    }

    /// Dials a peer a lookup named, through the relay (whether and who goes direct is the
    /// upgrade's call).
    fn dial_discovered(&mut self, peer: PeerId, mut addrs: Vec<Multiaddr>) {
        if self.discovery.is_none()
            || peer == self.local
            || Some(peer) == self.relay
            || self.connected.contains(&peer)
            || self.is_arriving(&peer)
        {
            return;
        }
        addrs.retain(|a| !is_webrtc(a));
        if addrs.is_empty() {
            return;
        }
        addrs.truncate(MAX_DIAL_ADDRS);
        if let Some((peer, dial)) =
            self.dials
                .want(peer, PacedDial::Discovered(addrs), Instant::now())
        {
            self.dial(peer, dial);
        }
    }

    /// Kademlia wants to dial: a peer (not the relay) is reached through the relay, so the dial
    /// waits its turn with discovery's. Each takes one of the few connect requests libp2p's
    /// relay client keeps open on our connection to the relay (10): beyond, it drops the dial
    /// at once, and a query that fans out to twenty peers, as replication does, would lose
    /// most of them. A dial to a peer already being dialed is left out: Kademlia's requests go
    /// when that connection comes up (or it learns of the failure, which names the peer).
    /// Returns the dial to make now when it is not paced.
    fn on_kad_dial(&mut self, opts: DialOpts) -> Option<DialOpts> {
        let peer = match opts.get_peer_id() {
            Some(peer) if matches!(self.role, Role::Peer { .. }) && Some(peer) != self.relay => {
                peer
            }
            _ => return Some(opts),
        };
        if let Some((peer, dial)) = self.dials.want(peer, PacedDial::Kad(opts), Instant::now()) {
            self.dial(peer, dial);
        }
        None
    }

    /// A dial to `peer` reached none of its addresses. libp2p's Kademlia keeps such a peer in
    /// its routing table with its last address and goes on naming it to others, so a peer that
    /// has left would be dialed by every lookup of every peer that knows it: we forget it
    /// instead. A peer that comes back is listed again when it connects (or when identify
    /// names its addresses); the dial backoff (`crate::peers`) spaces out dials meanwhile.
    /// The relay never dials peers; it forgets them when their reservation ends.
    fn on_unreachable(&mut self, peer: PeerId, error: &libp2p::swarm::DialError) {
        if !crate::peers::reached_no_address(error)
            || !matches!(self.role, Role::Peer { .. })
            || self.connected.contains(&peer)
            || Some(peer) == self.relay
            || self.is_arriving(&peer)
        {
            return;
        }
        if self.kad.remove_peer(&peer).is_some() {
            self.counters.forgotten_unreachable += 1;
            self.wire.local(
                Topic::Kad,
                Some(peer),
                "left the routing table: no address answered",
            );
        }
    }

    /// Starts the queued dials there is room for.
    fn dial_queued(&mut self) {
        let (connected, arriving) = (&self.connected, &self.arriving);
        let skip = |peer: &PeerId, dial: &PacedDial| {
            connected.contains(peer)
                || (matches!(dial, PacedDial::Discovered(_))
                    && arriving.values().any(|p| p == peer))
        };
        for (peer, dial) in self.dials.next(Instant::now(), skip) {
            self.dial(peer, dial);
        }
    }

    /// Whether a circuit from `peer` is coming in.
    fn is_arriving(&self, peer: &PeerId) -> bool {
        self.arriving.values().any(|p| p == peer)
    }

    fn dial(&mut self, peer: PeerId, dial: PacedDial) {
        let opts = match dial {
            PacedDial::Discovered(addrs) => DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build(),
            PacedDial::Kad(opts) => opts,
        };
        // The swarm reports every dial with a peer id: established, or failed (also when
        // refused at once, e.g. already dialing).
        self.dialing.insert(opts.connection_id(), peer);
        self.events.push_back(ToSwarm::Dial { opts });
    }

    /// A connection came up or a dial failed: if it was one of the paced dials, its place goes
    /// to the next queued one.
    fn dial_ended(&mut self, connection: libp2p::swarm::ConnectionId) {
        if let Some(peer) = self.dialing.remove(&connection) {
            self.dials.done(&peer);
            self.dial_queued();
        }
    }

    fn discover(&mut self) {
        let me = self.local;
        let query = self.kad.get_closest_peers(me);
        // The relay's reply is watched: every peer it names is dialed at once (see
        // `on_discovery_reply`).
        if let Some(previous) = self.discovery_query.replace(query) {
            self.kad.unwatch(&previous);
        }
        self.discovery_named = None;
        self.kad.watch(query);
        self.wire
            .sent(Topic::Kad, None, "lookup: FIND_NODE for our own id");
    }

    fn timed_work(&mut self, now: Instant) {
        if now >= self.next_expire {
            self.next_expire = now + EXPIRE_INTERVAL;
            let gone = self.kad.store_mut().expire(unix_now_ms());
            if gone > 0 {
                self.log(None, format!("{gone} expired record(s) dropped"));
            }
        }
        if self.discovery.as_mut().is_some_and(|d| d.poll(now)) {
            self.discover();
        }
        self.answer_overdue(now);
        self.dial_queued();
    }

    fn next_wake(&self) -> Instant {
        let discovery = self
            .discovery
            .as_ref()
            .and_then(DiscoverySchedule::poll_timeout);
        let deadline = self.ops.values().map(|r| r.op.deadline()).min();
        [discovery, deadline]
            .into_iter()
            .flatten()
            .fold(self.next_expire, Instant::min)
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = THandler<ObservedKad>;
    type ToSwarm = Report;

    forward_to!(kad: established_inbound, established_outbound, handler_event);

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: libp2p::swarm::ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        if let Some(peer) = crate::peers::circuit_source(local_addr, remote_addr) {
            self.arriving.insert(connection_id, peer);
        }
        self.kad
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    /// Kademlia's addresses for the peer, less those the dial already has. Kademlia keeps
    /// addresses ending in `/p2p/<peer>`, and libp2p's swarm drops duplicate addresses before
    /// it appends the peer id: the relay client dials the relay at its address without
    /// `/p2p`, so Kademlia's copy of it was dialed a second time at once, and the slower of
    /// the two connections was dropped in its handshake (the relay logged a rejected
    /// connection at every start of a native peer).
    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: libp2p::swarm::ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: libp2p::core::Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let mut ours = self.kad.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )?;
        if let Some(peer) = maybe_peer {
            let full = |a: &Multiaddr| a.clone().with_p2p(peer).ok();
            let dialing: Vec<Multiaddr> = addresses.iter().filter_map(full).collect();
            ours.retain(|a| full(a).is_none_or(|a| !dialing.contains(&a)));
        }
        Ok(ours)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match &event {
            FromSwarm::ConnectionEstablished(e) => {
                self.arriving.remove(&e.connection_id);
                self.connected.insert(e.peer_id);
                self.dial_ended(e.connection_id);
            }
            FromSwarm::ListenFailure(e) => {
                self.arriving.remove(&e.connection_id);
            }
            FromSwarm::DialFailure(e) => {
                self.dial_ended(e.connection_id);
                if let Some(peer) = e.peer_id {
                    self.on_unreachable(peer, e.error);
                }
            }
            FromSwarm::ConnectionClosed(e) if e.remaining_established == 0 => {
                self.connected.remove(&e.peer_id);
                self.speaks_kad.remove(&e.peer_id);
                self.reserved.remove(&e.peer_id);
                if self.circuit_only.remove(&e.peer_id) {
                    // Only reachable through its reservation here, which is gone now.
                    self.kad.remove_peer(&e.peer_id);
                }
            }
            // The relay accepted our reservation: time to meet the others (eagerly at first).
            // The relay client reports one circuit address per relay address, and again on
            // each renewal: only the first starts discovery.
            FromSwarm::NewListenAddr(e) if is_relayed(e.addr) => {
                if let Some(discovery) = &mut self.discovery
                    && !discovery.is_running()
                {
                    discovery.start(Instant::now());
                }
            }
            FromSwarm::ExpiredListenAddr(e) if is_relayed(e.addr) => {
                if let Some(discovery) = &mut self.discovery {
                    discovery.stop();
                }
            }
            // The bootstrap node has no one to bootstrap from: Kademlia starts a bootstrap when
            // a listen address comes up while no peer is connected (the relay starting), and
            // warns that it knows no peers. Its table fills from reservations and identify.
            FromSwarm::NewListenAddr(_) if matches!(self.role, Role::Bootstrap) => return,
            _ => {}
        }
        self.kad.on_swarm_event(event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Report, THandlerInEvent<Self>>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(event);
            }
            // The one place where the requests and replies seen since the last call reach the
            // operations' lookup paths: before Kademlia reports what they led to.
            self.absorb_observations();
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(event);
            }
            let now = Instant::now();
            match self.kad.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => {
                    self.on_kad_event(now, event);
                    continue;
                }
                Poll::Ready(ToSwarm::Dial { opts }) => match self.on_kad_dial(opts) {
                    Some(opts) => return Poll::Ready(ToSwarm::Dial { opts }),
                    None => continue,
                },
                Poll::Ready(other) => {
                    return Poll::Ready(other.map_out(|_| unreachable!("handled above")));
                }
                Poll::Pending => {}
            }
            self.timed_work(now);
            if !self.events.is_empty() {
                continue;
            }
            if self.timer.poll_at(Some(self.next_wake()), cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tabmesh_core::discovery::MAX_DIALS_IN_FLIGHT;

    use super::*;

    fn peer_dht() -> (Behaviour, PeerId) {
        let mut dht = Behaviour::new(
            Keypair::generate_ed25519(),
            DhtConfig::default(),
            Box::new(MemoryBackend),
            Role::Peer { discovery: None },
            WireSink::discard(),
        );
        let relay = PeerId::random();
        dht.set_relay(relay, "/ip4/127.0.0.1/tcp/9090".parse().unwrap());
        (dht, relay)
    }

    #[test]
    fn kademlia_adds_no_second_copy_of_an_address_the_dial_already_has() {
        // The relay client dials the relay at its address without `/p2p`; Kademlia knows the
        // same address with it. Counting both, libp2p would dial the relay twice at once.
        let (mut dht, relay) = peer_dht();
        let mut extra = |addresses: &[Multiaddr]| {
            dht.handle_pending_outbound_connection(
                libp2p::swarm::ConnectionId::new_unchecked(1),
                Some(relay),
                addresses,
                libp2p::core::Endpoint::Dialer,
            )
            .expect("not denied")
        };
        let plain: Multiaddr = "/ip4/127.0.0.1/tcp/9090".parse().unwrap();
        assert_eq!(extra(std::slice::from_ref(&plain)), Vec::<Multiaddr>::new());
        // Kademlia's own dial (no addresses) still finds the relay, and another address of
        // the dial does not hide it.
        let full = plain.clone().with_p2p(relay).unwrap();
        assert_eq!(extra(&[]), vec![full.clone()]);
        let other: Multiaddr = "/ip4/127.0.0.1/tcp/9091/ws".parse().unwrap();
        assert_eq!(extra(&[other]), vec![full]);
    }

    /// The dials queued for the swarm, by peer and connection.
    fn dials_out(dht: &mut Behaviour) -> Vec<(PeerId, libp2p::swarm::ConnectionId)> {
        std::mem::take(&mut dht.events)
            .into_iter()
            .filter_map(|event| match event {
                ToSwarm::Dial { opts } => Some((opts.get_peer_id()?, opts.connection_id())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn kademlia_dials_through_the_relay_wait_their_turn_and_the_relay_is_dialed_at_once() {
        let (mut dht, relay) = peer_dht();
        let to_relay = DialOpts::peer_id(relay).build();
        assert!(
            dht.on_kad_dial(to_relay).is_some(),
            "the relay is not paced"
        );

        let peers: Vec<PeerId> = (0..MAX_DIALS_IN_FLIGHT + 3)
            .map(|_| PeerId::random())
            .collect();
        for peer in &peers {
            assert!(dht.on_kad_dial(DialOpts::peer_id(*peer).build()).is_none());
        }
        let started = dials_out(&mut dht);
        assert_eq!(
            started.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            peers[..MAX_DIALS_IN_FLIGHT],
            "the first ones go at once, in order"
        );
        // A second dial to a peer already being dialed waits for that one.
        assert!(
            dht.on_kad_dial(DialOpts::peer_id(peers[0]).build())
                .is_none()
        );
        assert!(dials_out(&mut dht).is_empty());

        // Each dial that ends, failed or connected, lets the next queued one go: Kademlia's
        // own dial, with the connection id it awaits.
        dht.dial_ended(started[0].1);
        let next = dials_out(&mut dht);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].0, peers[MAX_DIALS_IN_FLIGHT]);
        // A queued peer that connected meanwhile (it dialed us) needs no dial.
        dht.connected.insert(peers[MAX_DIALS_IN_FLIGHT + 1]);
        dht.dial_ended(started[1].1);
        assert_eq!(
            dials_out(&mut dht)
                .iter()
                .map(|(p, _)| *p)
                .collect::<Vec<_>>(),
            [peers[MAX_DIALS_IN_FLIGHT + 2]]
        );
    }
}
