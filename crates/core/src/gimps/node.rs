//! The GIMPS gossip node: the exercise's four routines as a clock-free state machine.
//!
//! 1. Search (every `search_interval`): test successive prime exponents above the largest known
//!    Mersenne prime; announce a find as a signed `PRIME` with TTL `initial_ttl`.
//! 2. Evict (every `evict_interval`): drop peers not heard from for `stale_timeout`.
//! 3. Ping (every `ping_interval`): `PING` every peer in the list.
//! 4. Receive: update the forwarder's last-heard time; drop duplicates (originator, msg_id);
//!    answer `PING` with `PONG` (TTL 0); for `PRIME`, record it if larger than the largest seen
//!    (credit the originator), add the originator to the peer list, and forward a copy with
//!    TTL - 1 to every other peer while TTL > 0.
//!
//! Beyond the exercise: a `PRIME` or `TESTED` names, under its signature, the peers its
//! originator sent it to, and forwarders skip them (`prune`, on by default): in a full mesh of n
//! peers a message costs n - 1 copies instead of (n - 1)², with the same reach (each peer's
//! first copy is the originator's, so it forwards with the most hops left). With `prune` off,
//! the exercise's flood: every forwarder copies to every peer.
//!
//! Also beyond the exercise: a new node settles into the group before its first search round
//! (`settle`: the round starts once no peer has connected for that long, at most one
//! `search_interval` after the start), so that it searches from what the group knows and leaves
//! the CPU to joining.
//!
//! Also beyond the exercise: `PRIME`s are signed (forged credit is rejected), claimed exponents are
//! checked against the verified list of Mersenne primes (fakes are rejected and their originator
//! is marked misbehaving, in a bounded list), TTLs above `max_ttl`, forged forwarders and
//! malformed input are rejected and counted. Only a message's first copy is checked: a copy of
//! a message already seen (only checked messages are) is dropped unchecked. Each rejection is reported
//! ([`GossipAction::Rejected`]) for the node's misbehaviour ledger ([`crate::ledger`]), which
//! decides when the sender is banned.
//!
//! Cooperative mode (off by default, switchable at run time): instead of all racing on the same
//! candidate, peers divide the prime exponents among themselves by rendezvous hashing over the
//! peers that take part (each exponent belongs to the peer with the highest hash of (peer id,
//! exponent)), search continuously, and gossip signed `TESTED` reports; a cooperative peer with
//! nothing new to report sends an empty one every half `stale_timeout`. Taking part means a
//! `TESTED` heard within `stale_timeout`: a racing peer, or one that left the mode, owns no
//! share. An exponent counts as done only when somebody reports it, so when a peer leaves or
//! falls silent, its untested exponents pass to the remaining owners: nothing is skipped, at
//! worst something is tested twice (also in the first second, before the first reports).
//!
//! Tracing (when switched on with [`GossipNode::trace_with`]): a `PRIME`'s spread is one
//! trace. The finder records the root span (`gimps.prime`), every copy sent is a client span
//! (`gimps.send`, open until the driver sees the copy acknowledged) whose context the copy
//! carries, and every copy received is a server span (`gimps.receive`) child of the sending
//! span, marked `gimps.duplicate` when the message was seen before; a forward is a child of the
//! receive that caused it, so the trace is the tree of hops. Spans are outputs
//! ([`GossipAction::Traced`]). `PING`, `PONG` and `TESTED` are periodic and not traced (they
//! would evict the spreads a learner looks for from the bounded span store), though a context
//! another implementation puts on them is passed on unchanged.
//!
//! Time enters as `now`; sending is an output ([`GossipAction::Send`]); the Lucas-Lehmer work is
//! pulled by the driver with [`GossipNode::next_candidate`] and reported with
//! [`GossipNode::on_tested`], so the driver decides where it runs (a worker, slices, a thread).

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use libp2p_identity::{Keypair, PeerId};
use serde::{Deserialize, Serialize};
use web_time::{Duration, Instant};

use super::lucas_lehmer::{KNOWN_MERSENNE_EXPONENTS, VERIFIED_BELOW, is_prime, next_prime};
use super::message::{Coverage, GossipMessage, MAX_REPORTED, MessageError, MsgType};
use crate::names::{peer_name, short_id};
use crate::peers::millis;
use crate::trace::Span;

mod traced;

pub use traced::DUPLICATE;
use traced::Tracer;

/// Originators of fake primes listed at most.
pub const MAX_MISBEHAVING: usize = 32;

/// Intervals, limits and mode of a gossip node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GossipConfig {
    /// How often a search round starts (if none is running).
    pub search_interval: Duration,
    /// How often stale peers are evicted.
    pub evict_interval: Duration,
    /// Silence after which a peer is evicted.
    pub stale_timeout: Duration,
    /// How often every peer is pinged.
    pub ping_interval: Duration,
    /// TTL of our own `PRIME` announcements.
    pub initial_ttl: u8,
    /// Messages with a larger TTL are rejected.
    pub max_ttl: u8,
    /// Remembered (originator, msg_id) pairs for deduplication.
    pub seen_capacity: usize,
    /// Most peers in the peer list.
    pub max_peers: usize,
    /// Messages kept for the dashboard's log.
    pub log_capacity: usize,
    /// Divide the candidate exponents among peers instead of racing (see the module docs).
    pub cooperative: bool,
    /// Whether this peer searches at all. One that does not still pings, receives and forwards
    /// `PRIME`s (a relay-only peer, or a crowd of peers in a test that must not load the
    /// machine). In cooperative mode every peer searches its share: the others count on it.
    #[serde(default = "searches")]
    pub search: bool,
    /// Name the recipients of our messages (signed) and skip, when forwarding, the peers a
    /// message's originator sent it to itself. Off: every forwarder copies to every peer.
    #[serde(default = "prunes")]
    pub prune: bool,
    /// A new node settles into the group before it searches: its first round starts once no
    /// peer has connected for this long, and at the latest one `search_interval` after the
    /// start. It then searches from what the group knows (the largest prime, who takes part)
    /// instead of testing what others already did, and leaves the CPU to joining, which is
    /// what many tabs opened together are short of. Zero: the first round starts at once.
    #[serde(default = "settles")]
    pub settle: Duration,
}

fn prunes() -> bool {
    true
}

fn searches() -> bool {
    true
}

fn settles() -> Duration {
    GossipConfig::default().settle
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            search_interval: Duration::from_secs(10),
            evict_interval: Duration::from_secs(1),
            stale_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(5),
            initial_ttl: 2,
            max_ttl: 8,
            seen_capacity: 4096,
            max_peers: 256,
            log_capacity: 20,
            cooperative: false,
            search: true,
            prune: true,
            settle: Duration::from_secs(2),
        }
    }
}

/// What the driver must do.
// Actions live for one event in a short Vec; boxing the common `Send` would cost an allocation
// per message to save a few bytes on the rare variants.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GossipAction {
    /// Send `message` to `to`.
    Send {
        /// Recipient.
        to: PeerId,
        /// The message.
        message: GossipMessage,
    },
    /// `peer` left the peer list (silent for too long).
    Evicted(PeerId),
    /// A larger Mersenne prime became the largest we know.
    NewBiggest {
        /// Its exponent.
        exponent: u32,
        /// Who found it.
        originator: PeerId,
    },
    /// Input from `from` was rejected: a strike against it in the misbehaviour ledger.
    Rejected {
        /// The peer that sent it.
        from: PeerId,
        /// Why.
        reason: String,
    },
    /// A span recorded here: ended, or (a `gimps.send`) open until its copy is acknowledged.
    Traced(Span),
}

/// Counters of the node's traffic and rejections.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipCounters {
    /// Messages accepted.
    pub received: u64,
    /// Messages sent (including forwards).
    pub sent: u64,
    /// `PRIME`s and `TESTED`s forwarded.
    pub forwarded: u64,
    /// Copies not forwarded because the originator had sent the message to that peer itself.
    #[serde(default)]
    pub pruned: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Malformed or oversized messages.
    pub rejected_malformed: u64,
    /// Messages whose `msg_forwarder` is not the sending peer.
    pub rejected_forged_forwarder: u64,
    /// Messages with a TTL above the maximum.
    pub rejected_ttl: u64,
    /// `PRIME`s with a bad signature.
    pub rejected_signature: u64,
    /// `PRIME`s claiming an exponent that is not a Mersenne prime (or cannot be verified).
    pub rejected_fake_prime: u64,
    /// Messages ignored while asleep.
    pub ignored_asleep: u64,
    /// Peers evicted for silence.
    pub evicted: u64,
}

/// Which way a logged message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogDirection {
    /// We sent it.
    Sent,
    /// We received it.
    Received,
}

impl LogDirection {
    /// `"SENT"` or `"RECEIVED"`, as the exercise's logs print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "SENT",
            Self::Received => "RECEIVED",
        }
    }
}

/// One line of the dashboard's message log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedMessage {
    /// `"SENT"` or `"RECEIVED"`.
    pub direction: LogDirection,
    /// Milliseconds since the node's clock origin.
    pub at_ms: u64,
    /// The other peer (recipient or sender), by name.
    pub peer: String,
    /// `PING`, `PONG` or `PRIME`.
    pub msg_type: MsgType,
    /// The message's id.
    pub msg_id: u64,
    /// The forwarder, by name.
    pub msg_forwarder: String,
    /// The originator, by name.
    pub msg_originator: String,
    /// TTL.
    pub ttl: u8,
    /// The exponent for `PRIME`, else empty.
    pub data: String,
}

/// When a Mersenne prime became known to a node, and whose announcement it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstKnown {
    /// The exponent p of `2^p - 1`.
    pub exponent: u32,
    /// Milliseconds since the node's clock origin: when it found the prime or first heard it.
    pub at_ms: u64,
    /// The finder named by that first announcement (the node itself for its own find).
    pub originator: String,
}

/// A peer in the gossip peer list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipPeerView {
    /// Peer id.
    pub peer_id: String,
    /// Name.
    pub name: String,
    /// Milliseconds since last heard.
    pub heard_ms_ago: u64,
}

/// The largest Mersenne prime known and its finder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimeView {
    /// `p` in `2^p - 1`.
    pub exponent: u32,
    /// Number of decimal digits of `2^p - 1`.
    pub digits: u64,
    /// The finder's peer id.
    pub originator: String,
    /// The finder's name.
    pub originator_name: String,
}

/// The `gimps` section of the node's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GimpsView {
    /// Whether the node answers and sends.
    pub awake: bool,
    /// Our message counter (the last `msg_id` used).
    pub msg_id: u64,
    /// The peer list.
    pub peers: Vec<GossipPeerView>,
    /// The largest Mersenne prime known.
    pub biggest: Option<PrimeView>,
    /// Exponents of the Mersenne primes we found and announced.
    pub my_primes: Vec<u32>,
    /// Whether a search round is running.
    pub searching: bool,
    /// Whether the node is still settling into the group before its first search round.
    #[serde(default)]
    pub settling: bool,
    /// Whether rounds test anything: `false` when the search is switched off (a tab's
    /// `?search=off`, a node's `--no-search`) and the cooperative mode, which searches
    /// regardless, is off.
    pub search_on: bool,
    /// The exponent being tested, if any.
    pub testing: Option<u32>,
    /// Peers whose originated `PRIME`s were fake, most recent last (at most
    /// [`MAX_MISBEHAVING`]).
    pub misbehaving: Vec<String>,
    /// Traffic and rejection counters.
    pub counters: GossipCounters,
    /// The last messages sent and received, oldest first.
    pub log: Vec<LoggedMessage>,
    /// Whether the cooperative search mode is on.
    pub cooperative: bool,
    /// Every Mersenne prime exponent this node knows of (found or heard).
    pub known_primes: Vec<u32>,
    /// When and from whom each of `known_primes` was first known, in the same order: what a
    /// `PRIME`'s spread is measured by.
    pub first_known: Vec<FirstKnown>,
    /// Every prime exponent below this is known to be tested (cooperative bookkeeping).
    pub covered_below: u32,
}

/// Number of decimal digits of `2^p - 1`: `floor(p · log10 2) + 1`.
pub fn mersenne_digits(p: u32) -> u64 {
    (f64::from(p) * std::f64::consts::LOG10_2).floor() as u64 + 1
}

/// Whether `2^p - 1` is accepted as a Mersenne prime without running the test: it is in the
/// verified list. Exponents not in the list are fake below [`VERIFIED_BELOW`] and too costly to
/// check above it, so both are refused.
pub fn is_verified_mersenne_exponent(p: u32) -> Result<(), &'static str> {
    if KNOWN_MERSENNE_EXPONENTS.contains(&p) {
        Ok(())
    } else if p < VERIFIED_BELOW {
        Err("not a Mersenne prime")
    } else {
        Err("beyond the verified range; too costly to check")
    }
}

#[derive(Debug, Clone)]
struct SeenCache {
    capacity: usize,
    order: VecDeque<(PeerId, u64)>,
    set: HashSet<(PeerId, u64)>,
}

impl SeenCache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    fn contains(&self, key: &(PeerId, u64)) -> bool {
        self.set.contains(key)
    }

    /// Records `key`; returns `false` if it was already there.
    fn insert(&mut self, key: (PeerId, u64)) -> bool {
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// A GIMPS gossip node.
#[derive(Debug, Clone)]
pub struct GossipNode {
    key: Keypair,
    me: PeerId,
    config: GossipConfig,
    origin: Instant,
    awake: bool,
    msg_counter: u64,
    peers: BTreeMap<PeerId, Instant>,
    seen: SeenCache,
    biggest: Option<(u32, PeerId)>,
    my_primes: Vec<u32>,
    /// Originators of fake primes, oldest first, bounded: anyone can sign fakes with fresh keys.
    misbehaving: VecDeque<PeerId>,
    next_search: Instant,
    /// While the node settles into the group before its first round: the latest that round
    /// may start (see [`GossipConfig::settle`]).
    settle_by: Option<Instant>,
    next_evict: Instant,
    next_ping: Instant,
    searching: bool,
    cursor: u32,
    testing: Option<u32>,
    /// Every Mersenne prime known (found or heard): when it was first known, and its finder.
    known_primes: BTreeMap<u32, (Instant, PeerId)>,
    /// The signed announcement kept for each known prime (at most one per Mersenne prime),
    /// handed to peers that join later so that they learn what was found before them.
    announcements: BTreeMap<u32, GossipMessage>,
    covered_below: u32,
    tested: BTreeSet<u32>,
    unreported: Vec<u32>,
    /// Peers that take part in the cooperative division: when each last sent a `TESTED`
    /// (forgotten after `stale_timeout`). Only they, and we, own shares: a peer that races or
    /// left the mode would otherwise own exponents nobody tests.
    searchers: BTreeMap<PeerId, Instant>,
    /// When we last sent a `TESTED` (a report, or an empty one saying we still search).
    last_report: Option<Instant>,
    counters: GossipCounters,
    log: VecDeque<LoggedMessage>,
    tracer: Option<Tracer>,
}

impl GossipNode {
    /// A node with identity `key`, started at `now`; `origin` is the clock origin of its views.
    /// The first search round starts once the node has settled into the group
    /// ([`GossipConfig::settle`]); the first eviction and ping rounds after their intervals.
    pub fn new(key: Keypair, config: GossipConfig, origin: Instant, now: Instant) -> Self {
        let me = key.public().to_peer_id();
        Self {
            me,
            seen: SeenCache::new(config.seen_capacity),
            next_search: now + config.settle,
            settle_by: (!config.settle.is_zero())
                .then(|| now + config.settle.max(config.search_interval)),
            next_evict: now + config.evict_interval,
            next_ping: now + config.ping_interval,
            key,
            config,
            origin,
            awake: true,
            msg_counter: 0,
            peers: BTreeMap::new(),
            biggest: None,
            my_primes: Vec::new(),
            misbehaving: VecDeque::new(),
            searching: false,
            cursor: 1,
            testing: None,
            known_primes: BTreeMap::new(),
            announcements: BTreeMap::new(),
            covered_below: 2,
            tested: BTreeSet::new(),
            unreported: Vec::new(),
            searchers: BTreeMap::new(),
            last_report: None,
            counters: GossipCounters::default(),
            log: VecDeque::new(),
            tracer: None,
        }
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.me
    }

    /// The configuration.
    pub fn config(&self) -> &GossipConfig {
        &self.config
    }

    /// The largest known Mersenne prime exponent and its finder.
    pub fn biggest(&self) -> Option<(u32, PeerId)> {
        self.biggest
    }

    /// Whether `peer` is in the peer list.
    pub fn knows(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// The peers in the peer list.
    pub fn peer_list(&self) -> impl Iterator<Item = &PeerId> {
        self.peers.keys()
    }

    /// Whether the node is awake.
    pub fn is_awake(&self) -> bool {
        self.awake
    }

    /// The counters.
    pub fn counters(&self) -> &GossipCounters {
        &self.counters
    }

    /// A transport connection to `peer` opened: it joins the peer list (the exercise's
    /// bootstrap list) with a fresh timestamp.
    ///
    /// A peer new to the list also receives the announcement of every prime we know (TTL 0,
    /// signatures intact): gossip only reaches those present, and a peer that joins later would
    /// otherwise never learn what was found before it (anti-entropy on join).
    pub fn on_peer_connected(&mut self, now: Instant, peer: PeerId) -> Vec<GossipAction> {
        let mut out = Vec::new();
        let new = peer != self.me && !self.peers.contains_key(&peer);
        self.heard(now, peer);
        if new && let Some(by) = self.settle_by {
            // Still joining: the first round waits until the arrivals stop.
            self.next_search = self.next_search.max(now + self.config.settle).min(by);
        }
        if new && self.awake && self.peers.contains_key(&peer) {
            let known: Vec<GossipMessage> = self.announcements.values().cloned().collect();
            for m in known {
                // Catching up is not part of the spread the announcement was traced in.
                let copy = GossipMessage {
                    msg_forwarder: self.me,
                    ttl: 0,
                    trace: None,
                    ..m
                };
                self.send(now, peer, copy, &mut out);
            }
        }
        out
    }

    fn heard(&mut self, now: Instant, peer: PeerId) {
        if peer == self.me {
            return;
        }
        if self.peers.len() < self.config.max_peers || self.peers.contains_key(&peer) {
            self.peers.insert(peer, now);
        }
    }

    fn next_msg_id(&mut self) -> u64 {
        self.msg_counter += 1;
        self.msg_counter
    }

    fn send(
        &mut self,
        now: Instant,
        to: PeerId,
        message: GossipMessage,
        out: &mut Vec<GossipAction>,
    ) {
        self.counters.sent += 1;
        self.record(LogDirection::Sent, now, to, &message);
        out.push(GossipAction::Send { to, message });
    }

    fn record(&mut self, direction: LogDirection, now: Instant, peer: PeerId, m: &GossipMessage) {
        if self.log.len() == self.config.log_capacity.max(1) {
            self.log.pop_front();
        }
        self.log.push_back(LoggedMessage {
            direction,
            at_ms: millis(now.saturating_duration_since(self.origin)),
            peer: peer_name(&peer),
            msg_type: m.msg_type,
            msg_id: m.msg_id,
            msg_forwarder: peer_name(&m.msg_forwarder),
            msg_originator: peer_name(&m.msg_originator),
            ttl: m.ttl,
            data: m.data(),
        });
    }

    fn reject(&mut self, from: PeerId, reason: String) -> Vec<GossipAction> {
        vec![GossipAction::Rejected { from, reason }]
    }

    /// Remembers the originator of a fake prime, dropping the oldest beyond the bound.
    fn mark_misbehaving(&mut self, originator: PeerId) {
        self.misbehaving.retain(|p| *p != originator);
        if self.misbehaving.len() >= MAX_MISBEHAVING {
            self.misbehaving.pop_front();
        }
        self.misbehaving.push_back(originator);
    }

    /// Bytes arrived from `from` on the gossip protocol.
    pub fn on_message(&mut self, now: Instant, from: PeerId, bytes: &[u8]) -> Vec<GossipAction> {
        if !self.awake {
            self.counters.ignored_asleep += 1;
            return Vec::new();
        }
        let msg = match GossipMessage::decode(bytes) {
            Ok(msg) => msg,
            Err(e) => {
                self.counters.rejected_malformed += 1;
                return self.reject(from, e.to_string());
            }
        };
        if msg.msg_forwarder != from {
            self.counters.rejected_forged_forwarder += 1;
            return self.reject(
                from,
                format!(
                    "msg_forwarder {} is not the sender",
                    short_id(&msg.msg_forwarder)
                ),
            );
        }
        if msg.ttl > self.config.max_ttl {
            self.counters.rejected_ttl += 1;
            return self.reject(
                from,
                format!("TTL {} above the maximum {}", msg.ttl, self.config.max_ttl),
            );
        }
        // Only checked messages are ever seen: another copy of one is dropped before its
        // signature costs anything (in a mesh, each message arrives once from every peer).
        if self.seen.contains(&(msg.msg_originator, msg.msg_id)) {
            self.heard(now, msg.msg_forwarder);
            self.counters.duplicates += 1;
            return match msg.msg_type {
                MsgType::Prime => {
                    let mut out = Vec::new();
                    self.trace_receive(now, from, &msg, true, &mut out);
                    out
                }
                _ => Vec::new(),
            };
        }
        if let Err(e @ MessageError::BadSignature(_)) = msg.verify() {
            self.counters.rejected_signature += 1;
            return self.reject(from, e.to_string());
        }
        if let (MsgType::Prime, Some(exponent)) = (msg.msg_type, msg.exponent)
            && let Err(why) = is_verified_mersenne_exponent(exponent)
        {
            self.counters.rejected_fake_prime += 1;
            self.mark_misbehaving(msg.msg_originator);
            let reason = format!(
                "fake PRIME 2^{exponent}-1 from {}: {why}",
                peer_name(&msg.msg_originator)
            );
            return self.reject(from, reason);
        }
        self.heard(now, msg.msg_forwarder);
        let mut out = Vec::new();
        let mut msg = msg;
        self.seen.insert((msg.msg_originator, msg.msg_id));
        if msg.msg_type == MsgType::Prime {
            msg.trace = self.trace_receive(now, from, &msg, false, &mut out);
        }
        self.counters.received += 1;
        self.record(LogDirection::Received, now, from, &msg);
        match msg.msg_type {
            MsgType::Ping => {
                let id = self.next_msg_id();
                let pong = GossipMessage::probe(MsgType::Pong, id, self.me, 0);
                self.send(now, msg.msg_forwarder, pong, &mut out);
            }
            MsgType::Pong => {}
            MsgType::Prime => self.on_prime(now, msg, &mut out),
            MsgType::Tested => self.on_coverage(now, msg, &mut out),
        }
        out
    }

    fn on_prime(&mut self, now: Instant, msg: GossipMessage, out: &mut Vec<GossipAction>) {
        let exponent = msg.exponent.unwrap_or(0);
        if self.credits(exponent, msg.msg_originator) {
            self.biggest = Some((exponent, msg.msg_originator));
            out.push(GossipAction::NewBiggest {
                exponent,
                originator: msg.msg_originator,
            });
        }
        self.known_primes
            .entry(exponent)
            .or_insert((now, msg.msg_originator));
        self.keep_announcement(&msg);
        self.mark_tested(exponent);
        self.heard(now, msg.msg_originator);
        self.forward(now, &msg, out);
    }

    /// Keeps the announcement of the credited finder of each prime.
    fn keep_announcement(&mut self, msg: &GossipMessage) {
        let Some(exponent) = msg.exponent else { return };
        let replace = self
            .announcements
            .get(&exponent)
            .is_none_or(|kept| msg.msg_originator.to_bytes() < kept.msg_originator.to_bytes());
        if replace {
            self.announcements.insert(exponent, msg.clone());
        }
    }

    /// A `TESTED` report: merge the coverage, pass the report on.
    fn on_coverage(&mut self, now: Instant, msg: GossipMessage, out: &mut Vec<GossipAction>) {
        self.searchers.insert(msg.msg_originator, now);
        if let Some(coverage) = &msg.coverage {
            if coverage.below > self.covered_below {
                self.covered_below = if is_prime(coverage.below) {
                    coverage.below
                } else {
                    next_prime(coverage.below)
                };
            }
            for p in &coverage.tested {
                self.mark_tested(*p);
            }
        }
        self.heard(now, msg.msg_originator);
        self.forward(now, &msg, out);
    }

    /// Forwards a copy with TTL - 1 to every peer but the forwarder, the originator and (when
    /// pruning) those the originator sent it to itself.
    fn forward(&mut self, now: Instant, msg: &GossipMessage, out: &mut Vec<GossipAction>) {
        if msg.ttl > 0 {
            let copy = msg.forwarded_by(self.me);
            let mut targets: Vec<PeerId> = self
                .peers
                .keys()
                .filter(|p| **p != msg.msg_forwarder && **p != msg.msg_originator)
                .copied()
                .collect();
            if self.config.prune {
                let before = targets.len();
                targets.retain(|p| !msg.was_sent_to(p));
                self.counters.pruned += (before - targets.len()) as u64;
            }
            for to in targets {
                self.counters.forwarded += 1;
                let mut copy = copy.clone();
                if copy.msg_type == MsgType::Prime {
                    copy.trace = self.trace_send(now, to, msg, out);
                }
                self.send(now, to, copy, out);
            }
        }
    }

    /// Whether a claim of `2^exponent - 1` by `originator` replaces what we know: a larger
    /// prime always does; the same prime does when the claimant's peer id is smaller. Two peers
    /// often find the same prime independently; the tie-break makes every node credit the same
    /// one, whatever order the announcements arrive in.
    fn credits(&self, exponent: u32, originator: PeerId) -> bool {
        match self.biggest {
            None => true,
            Some((p, holder)) => {
                exponent > p || (exponent == p && originator.to_bytes() < holder.to_bytes())
            }
        }
    }

    /// Runs the timed routines that are due: eviction, pings, the start of a search round.
    pub fn on_tick(&mut self, now: Instant) -> Vec<GossipAction> {
        let mut out = Vec::new();
        if !self.awake {
            return out;
        }
        if now >= self.next_evict {
            self.next_evict = now + self.config.evict_interval;
            let stale: Vec<PeerId> = self
                .peers
                .iter()
                .filter(|(_, heard)| {
                    now.saturating_duration_since(**heard) > self.config.stale_timeout
                })
                .map(|(p, _)| *p)
                .collect();
            for peer in stale {
                self.peers.remove(&peer);
                self.counters.evicted += 1;
                out.push(GossipAction::Evicted(peer));
            }
            let stale_timeout = self.config.stale_timeout;
            self.searchers
                .retain(|_, at| now.saturating_duration_since(*at) <= stale_timeout);
        }
        if now >= self.next_ping {
            self.next_ping = now + self.config.ping_interval;
            let peers: Vec<PeerId> = self.peers.keys().copied().collect();
            for to in peers {
                let id = self.next_msg_id();
                let ping = GossipMessage::probe(MsgType::Ping, id, self.me, 0);
                self.send(now, to, ping, &mut out);
            }
        }
        if now >= self.next_search {
            self.next_search = now + self.config.search_interval;
            self.settle_by = None;
            self.searching = self.config.search;
        }
        if self.config.cooperative {
            // Cooperative search is continuous (once settled); what was tested is reported every
            // eviction tick.
            self.searching |= self.settle_by.is_none();
            self.report_coverage(now, &mut out);
        }
        out
    }

    /// Sends what we tested since the last report; with nothing new, an empty report every half
    /// `stale_timeout`, which keeps our share of the division ours (see `searchers`).
    fn report_coverage(&mut self, now: Instant, out: &mut Vec<GossipAction>) {
        if self.peers.is_empty() {
            return;
        }
        let heartbeat_due = self
            .last_report
            .is_none_or(|at| now.saturating_duration_since(at) >= self.config.stale_timeout / 2);
        if self.unreported.is_empty() && !heartbeat_due {
            return;
        }
        let mut batches: Vec<Vec<u32>> = self
            .unreported
            .chunks(MAX_REPORTED)
            .map(<[u32]>::to_vec)
            .collect();
        if batches.is_empty() {
            batches.push(Vec::new());
        }
        self.unreported.clear();
        self.last_report = Some(now);
        for tested in batches {
            let id = self.next_msg_id();
            let coverage = Coverage {
                below: self.covered_below,
                tested,
            };
            let peers: Vec<PeerId> = self.peers.keys().copied().collect();
            let report = GossipMessage::tested(
                &self.key,
                id,
                coverage,
                self.config.initial_ttl,
                self.recipients_named(&peers),
            );
            self.seen.insert((self.me, id));
            for to in peers {
                self.send(now, to, report.clone(), out);
            }
        }
    }

    /// The recipients a message of ours names: all of them when pruning, none otherwise.
    fn recipients_named<'a>(&self, peers: &'a [PeerId]) -> &'a [PeerId] {
        if self.config.prune { peers } else { &[] }
    }

    /// Records `p` as tested and advances the contiguous coverage bound.
    fn mark_tested(&mut self, p: u32) {
        /// Bound on remembered exponents above the contiguous bound.
        const MAX_TESTED: usize = 100_000;
        if p < self.covered_below {
            return;
        }
        self.tested.insert(p);
        while self.tested.remove(&self.covered_below) {
            self.covered_below = next_prime(self.covered_below);
        }
        let below = self.covered_below;
        self.tested = self.tested.split_off(&below);
        while self.tested.len() > MAX_TESTED {
            // Forgetting the highest only means it may be tested again, never skipped.
            self.tested.pop_last();
        }
    }

    /// Turns the cooperative search mode on or off.
    pub fn set_cooperative(&mut self, on: bool) {
        self.config.cooperative = on;
        if on && self.settle_by.is_none() {
            self.searching = true;
        }
    }

    /// The peer (us included) that owns exponent `p` under rendezvous hashing over the peers
    /// taking part in the division.
    fn owner(&self, p: u32) -> PeerId {
        let score = |peer: &PeerId| {
            // FNV-1a of the peer id, combined with the exponent and run through a 64-bit
            // finalizer (murmur3's fmix64), so that every bit depends on both. The same on every
            // node and platform.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in peer.to_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            let mut x = h ^ u64::from(p).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x ^= x >> 33;
            x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
            x ^= x >> 33;
            x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
            x ^ (x >> 33)
        };
        self.peers
            .keys()
            .filter(|peer| self.searchers.contains_key(peer))
            .chain(std::iter::once(&self.me))
            .max_by_key(|peer| score(peer))
            .copied()
            .unwrap_or(self.me)
    }

    /// The lowest untested exponent that we own, scanning a bounded window above the bound.
    fn cooperative_candidate(&self) -> Option<u32> {
        let mut c = self.covered_below;
        for _ in 0..4096 {
            if !self.tested.contains(&c) && self.owner(c) == self.me {
                return Some(c);
            }
            c = next_prime(c);
        }
        None
    }

    /// When [`on_tick`](Self::on_tick) has work next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.awake
            .then(|| self.next_evict.min(self.next_ping).min(self.next_search))
    }

    /// The next exponent to test, while a search round runs: the next prime above both the
    /// largest known Mersenne exponent and the last exponent we tested.
    pub fn next_candidate(&mut self) -> Option<u32> {
        if !self.awake || !self.searching {
            self.testing = None;
            return None;
        }
        let candidate = if self.config.cooperative {
            self.cooperative_candidate()?
        } else {
            next_prime(self.biggest.map_or(1, |(p, _)| p).max(self.cursor))
        };
        self.cursor = candidate;
        self.testing = Some(candidate);
        Some(candidate)
    }

    /// The driver finished testing `exponent`. A prime larger than any known ends the round and
    /// is announced to every peer as a signed `PRIME`.
    pub fn on_tested(&mut self, now: Instant, exponent: u32, is_prime: bool) -> Vec<GossipAction> {
        let mut out = Vec::new();
        self.testing = None;
        if !self.awake {
            return out;
        }
        if self.config.cooperative {
            self.mark_tested(exponent);
            self.unreported.push(exponent);
            // Every find is news in cooperative mode: the group is after all of them.
            if !is_prime || self.known_primes.contains_key(&exponent) {
                return out;
            }
            self.known_primes.insert(exponent, (now, self.me));
        } else {
            if !is_prime || self.biggest.is_some_and(|(p, _)| exponent <= p) {
                return out;
            }
            self.known_primes.entry(exponent).or_insert((now, self.me));
            self.searching = false;
        }
        self.my_primes.push(exponent);
        if self.credits(exponent, self.me) {
            self.biggest = Some((exponent, self.me));
            out.push(GossipAction::NewBiggest {
                exponent,
                originator: self.me,
            });
        } else if !self.config.cooperative {
            return out;
        }
        let id = self.next_msg_id();
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        let mut announcement = GossipMessage::prime(
            &self.key,
            id,
            exponent,
            self.config.initial_ttl,
            self.recipients_named(&peers),
        );
        self.seen.insert((self.me, id));
        self.keep_announcement(&announcement);
        announcement.trace = self.trace_announcement(now, &announcement, &mut out);
        for to in peers {
            let mut copy = announcement.clone();
            copy.trace = self.trace_send(now, to, &announcement, &mut out);
            self.send(now, to, copy, &mut out);
        }
        out
    }

    /// Stop answering and sending (others will evict us).
    pub fn sleep(&mut self) {
        self.awake = false;
        self.testing = None;
    }

    /// Answer and send again; the routines restart from `now`.
    pub fn wake(&mut self, now: Instant) {
        if self.awake {
            return;
        }
        self.awake = true;
        // Peers went silent for us too while we slept: give them a fresh timestamp rather
        // than evicting everyone at once.
        for heard in self.peers.values_mut() {
            *heard = now;
        }
        self.next_evict = now + self.config.evict_interval;
        self.next_ping = now;
        self.next_search = now;
        self.settle_by = None;
    }

    /// Forget everything learnt (peer list aside from connected peers is rebuilt by the driver):
    /// largest prime, own primes, dedupe cache, misbehaving list, counters, log; keep identity and
    /// message counter (ids must never repeat, or peers would drop our messages as duplicates).
    pub fn reset(&mut self, now: Instant) {
        let msg_counter = self.msg_counter;
        let tracer = self.tracer.take();
        *self = Self::new(self.key.clone(), self.config.clone(), self.origin, now);
        self.msg_counter = msg_counter;
        // Tracing is a setting of the peer, not something it learnt.
        self.tracer = tracer;
    }

    /// The dashboard's view; timestamps relative to the clock origin.
    pub fn view(&self, now: Instant) -> GimpsView {
        GimpsView {
            awake: self.awake,
            msg_id: self.msg_counter,
            peers: self
                .peers
                .iter()
                .map(|(p, heard)| GossipPeerView {
                    peer_id: p.to_base58(),
                    name: peer_name(p),
                    heard_ms_ago: millis(now.saturating_duration_since(*heard)),
                })
                .collect(),
            biggest: self.biggest.map(|(exponent, originator)| PrimeView {
                exponent,
                digits: mersenne_digits(exponent),
                originator: originator.to_base58(),
                originator_name: peer_name(&originator),
            }),
            my_primes: self.my_primes.clone(),
            searching: self.searching,
            settling: self.settle_by.is_some(),
            search_on: self.config.search || self.config.cooperative,
            testing: self.testing,
            misbehaving: self.misbehaving.iter().map(|p| p.to_base58()).collect(),
            counters: self.counters.clone(),
            log: self.log.iter().cloned().collect(),
            cooperative: self.config.cooperative,
            known_primes: self.known_primes.keys().copied().collect(),
            first_known: self
                .known_primes
                .iter()
                .map(|(exponent, (at, originator))| FirstKnown {
                    exponent: *exponent,
                    at_ms: millis(at.saturating_duration_since(self.origin)),
                    originator: originator.to_base58(),
                })
                .collect(),
            covered_below: self.covered_below,
        }
    }
}
