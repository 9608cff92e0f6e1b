//! The model engine: Kademlia's rules as libp2p-kad applies them, for networks too large to run
//! as real swarms (`--engine model`).
//!
//! The libp2p engine ([`crate::run`]) runs every peer as a libp2p swarm, the code tabs run; at
//! ~2.4 MB and a few hundred connections per join a peer, 1,000 peers are its practical limit on
//! two cores. This engine keeps only what decides a lookup's path and outcome, in virtual time:
//!
//! - **Peers**: libp2p-kad keys (SHA-256 of the peer id), routing tables of 256 buckets of k = 20
//!   ([`table`]). A peer enters another's table when they exchange a request (both ways, as
//!   libp2p-kad does on a confirmed connection and identify does for the one asked); a peer whose
//!   request failed is dropped (as tabmesh's DHT behaviour does with unreachable peers).
//! - **Lookups**: libp2p-kad's closest-peers iterator, k = 20, α = 3 ([`iter`]); replies name the
//!   asker's k closest peers, leaving out the asker. Rounds and peers contacted come from
//!   tabmesh's own [`LookupTrace`], as in the tabs' DHT panel.
//! - **Joins**: a few earlier peers added, then libp2p-kad's bootstrap: a lookup of our own key,
//!   then one of a random key in every bucket farther than the closest non-empty one; and the
//!   automatic bootstrap libp2p-kad starts 500 ms after a routing-table insertion while the table
//!   holds fewer than k peers (once the running one ends).
//! - **Operations** (tabmesh's rules, `tabmesh_core::dht::ops`): a get stops at `get_quorum`
//!   copies (ours counts); a put looks the key up (new key, then the pre-namespace key, both
//!   finding nothing) and stores at the k closest peers that answered; a full lookup
//!   (`GET_PROVIDERS` for a key nobody provides) runs until the k closest have answered.
//! - **Time**: each message takes 1 to 5 ms one way (uniform, seeded); a request to a peer that
//!   left fails after 1 ms (the dial is refused). Latencies are virtual, not this machine's.
//!
//! Left out, with why it does not change the figures: signatures and record checks (every copy is
//! valid here), replication and republication (the run lasts less than their intervals),
//! hand-over (no peer joins after the puts), connection limits and idle timeouts.
//!
//! The workload is drawn from the seed in the same order as the libp2p engine's, so both engines
//! put the same keys from the same peers and look up the same keys from the same peers.

mod iter;
mod table;

use std::collections::{BinaryHeap, HashSet};
use std::time::Duration;

use libp2p::PeerId;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tabmesh_core::dht::lookup::{LookupKind, LookupTrace};
use web_time::Instant;

use crate::{LookupSample, SimConfig, SimReport, keypair};
use iter::{ClosestIter, Next};
use table::{Key, Table};

/// α: requests in flight per lookup (libp2p-kad's default).
const ALPHA: usize = 3;
/// How long after a routing-table insertion libp2p-kad's automatic bootstrap starts.
const AUTO_BOOTSTRAP_US: u64 = 500_000;
/// How long a dial to a peer that left takes to fail.
const DIAL_FAILURE_US: u64 = 1_000;

/// Virtual time, µs.
type Time = u64;

struct Peer {
    id: PeerId,
    key: Key,
    alive: bool,
    table: Table,
    /// Indices of the records it holds.
    records: HashSet<usize>,
    bootstrapping: bool,
    /// When libp2p-kad's automatic bootstrap is due (its throttle timer).
    auto_due: Option<Time>,
}

/// Why a lookup runs, and what happens when it ends.
#[derive(Debug, Clone)]
enum Purpose {
    /// Part of a bootstrap of `peer`: the lookup of its own key (`remaining` is `None`), or of
    /// a bucket's, with the buckets still to refresh after it (the next one last).
    Bootstrap {
        peer: u32,
        remaining: Option<Vec<usize>>,
        op: Option<usize>,
    },
    /// A get of a record for operation `op`.
    Get { record: usize, op: usize },
    /// A full lookup for operation `op`.
    Full { op: usize },
    /// A put's lookup: `then_old` if the pre-namespace key is looked up next.
    PutLookup {
        record: usize,
        op: usize,
        then_old: bool,
    },
}

struct Lookup {
    origin: u32,
    target: Key,
    iter: ClosestIter,
    trace: Option<LookupTrace>,
    purpose: Purpose,
    copies: usize,
}

enum Event {
    /// A request of `lookup` (by `origin`, for `target`, looking for `record`) reaches `to`.
    Arrive {
        lookup: usize,
        origin: u32,
        target: Key,
        record: Option<usize>,
        to: u32,
    },
    /// `from`'s reply to `lookup` reaches its `origin`.
    Reply {
        lookup: usize,
        origin: u32,
        from: u32,
        closer: Vec<(u32, Key)>,
        found: bool,
    },
    /// The request of `lookup` (by `origin`) to `to` failed.
    Fail { lookup: usize, origin: u32, to: u32 },
    /// `PUT_VALUE` of operation `op` reaches `to`.
    Store { op: usize, record: usize, to: u32 },
    /// `to` acknowledged operation `op`'s `PUT_VALUE`.
    Stored { op: usize },
    /// `peer`'s automatic bootstrap may be due.
    AutoBootstrap { peer: u32 },
}

struct Scheduled {
    at: Time,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Earliest first (the heap is a max-heap).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// What an operation is, and how it went.
#[derive(Debug, Clone)]
enum Op {
    Join { peer: u32 },
    Put { record: usize, from: u32 },
    Get { record: usize, from: u32 },
    Full { key: Key, from: u32 },
}

#[derive(Debug, Clone, Default)]
struct Outcome {
    done: bool,
    started: Time,
    ended: Time,
    found: bool,
    rounds: u32,
    contacted: usize,
    answered: usize,
    /// A put: `PUT_VALUE`s sent, and acknowledged.
    stores_sent: usize,
    stored_at: usize,
    stores_settled: usize,
    /// A put: the k closest peers that answered its lookup under the new key.
    store_at: Vec<u32>,
}

struct World {
    now: Time,
    seq: u64,
    k: usize,
    get_quorum: usize,
    base: Instant,
    peers: Vec<Peer>,
    record_keys: Vec<Key>,
    old_record_keys: Vec<Key>,
    /// Lookups by id; `None` once ended (requests still in flight find it gone).
    lookups: Vec<Option<Lookup>>,
    events: BinaryHeap<Scheduled>,
    ops: Vec<Op>,
    outcomes: Vec<Outcome>,
    latency: StdRng,
    targets: StdRng,
}

impl World {
    fn at(&self, t: Time) -> Instant {
        self.base + Duration::from_micros(t)
    }

    fn schedule(&mut self, delay: Time, event: Event) {
        self.seq += 1;
        self.events.push(Scheduled {
            at: self.now + delay,
            seq: self.seq,
            event,
        });
    }

    fn one_way(&mut self) -> Time {
        self.latency.gen_range(1_000..=5_000)
    }

    /// `peer` learns of `other`; libp2p-kad's automatic bootstrap is armed while its table is
    /// small.
    fn learn(&mut self, peer: u32, other: u32) {
        let key = self.peers[other as usize].key;
        let p = &mut self.peers[peer as usize];
        if p.table.insert(other, key) && p.table.len() < self.k {
            let due = self.now + AUTO_BOOTSTRAP_US;
            p.auto_due = Some(due);
            self.schedule(AUTO_BOOTSTRAP_US, Event::AutoBootstrap { peer });
        }
    }

    /// Starts a lookup; `kind` is recorded in its path (`None`: a bootstrap's, not measured).
    fn start_lookup(
        &mut self,
        origin: u32,
        target: Key,
        purpose: Purpose,
        kind: Option<LookupKind>,
    ) {
        let known = self.peers[origin as usize]
            .table
            .closest(&target, self.k, None);
        let trace = kind.map(|kind| LookupTrace::new(kind, String::new(), self.at(self.now)));
        let copies = match &purpose {
            Purpose::Get { record, .. } if self.peers[origin as usize].records.contains(record) => {
                1
            }
            _ => 0,
        };
        let id = self.lookups.len();
        let mut iter = ClosestIter::new(target, known, self.k, ALPHA);
        if copies >= self.get_quorum {
            iter.finish();
        }
        self.lookups.push(Some(Lookup {
            origin,
            target,
            iter,
            trace,
            purpose,
            copies,
        }));
        self.pump(id);
    }

    /// Sends the requests the lookup wants now; ends it when its iterator is done.
    fn pump(&mut self, id: usize) {
        let at = self.at(self.now);
        loop {
            let Some(lookup) = &mut self.lookups[id] else {
                return;
            };
            match lookup.iter.next() {
                Next::Ask(to) => {
                    let peer_id = self.peers[to as usize].id;
                    if let Some(trace) = &mut lookup.trace {
                        trace.on_request(at, peer_id);
                    }
                    let (origin, target) = (lookup.origin, lookup.target);
                    let record = match lookup.purpose {
                        Purpose::Get { record, .. } => Some(record),
                        _ => None,
                    };
                    if self.peers[to as usize].alive {
                        let delay = self.one_way();
                        let arrive = Event::Arrive {
                            lookup: id,
                            origin,
                            target,
                            record,
                            to,
                        };
                        self.schedule(delay, arrive);
                    } else {
                        let fail = Event::Fail {
                            lookup: id,
                            origin,
                            to,
                        };
                        self.schedule(DIAL_FAILURE_US, fail);
                    }
                }
                Next::Wait => return,
                Next::Finished => {
                    self.lookup_ended(id);
                    return;
                }
            }
        }
    }

    fn lookup_ended(&mut self, id: usize) {
        let at = self.at(self.now);
        let Some(mut lookup) = self.lookups[id].take() else {
            return;
        };
        if let Some(trace) = &mut lookup.trace {
            trace.finish(at, String::new());
        }
        let stats = lookup
            .trace
            .as_ref()
            .map_or((0, 0, 0), |t| (t.rounds(), t.contacted(), t.replied()));
        let origin = lookup.origin;
        match lookup.purpose {
            Purpose::Bootstrap {
                peer,
                remaining,
                op,
            } => {
                // The lookup of our own key ended: every bucket farther than the closest
                // non-empty one is refreshed in turn, the closest first.
                let mut remaining = remaining.unwrap_or_else(|| {
                    self.peers[peer as usize]
                        .table
                        .buckets_to_refresh()
                        .rev()
                        .collect()
                });
                if let Some(bucket) = remaining.pop() {
                    let target = self.peers[peer as usize]
                        .table
                        .refresh_target(bucket, &mut self.targets);
                    self.start_lookup(
                        peer,
                        target,
                        Purpose::Bootstrap {
                            peer,
                            remaining: Some(remaining),
                            op,
                        },
                        None,
                    );
                } else {
                    self.bootstrap_ended(peer, op);
                }
            }
            Purpose::Get { op, .. } => {
                self.finish_op(op, lookup.copies > 0, stats);
            }
            Purpose::Full { op } => self.finish_op(op, true, stats),
            Purpose::PutLookup {
                record,
                op,
                then_old,
            } => {
                if then_old {
                    // The op's first lookup found nothing under the new key: it looks under the
                    // old one, then stores at the peers that answered the first.
                    let target = self.old_record_keys[record];
                    self.outcomes[op].store_at = lookup.iter.answered();
                    self.start_lookup(
                        origin,
                        target,
                        Purpose::PutLookup {
                            record,
                            op,
                            then_old: false,
                        },
                        Some(LookupKind::PutRecord),
                    );
                } else {
                    let store_at = std::mem::take(&mut self.outcomes[op].store_at);
                    self.peers[origin as usize].records.insert(record);
                    self.outcomes[op].stores_sent = store_at.len();
                    if store_at.is_empty() {
                        self.finish_op(op, false, (0, 0, 0));
                    }
                    for to in store_at {
                        if self.peers[to as usize].alive {
                            let delay = self.one_way();
                            self.schedule(delay, Event::Store { op, record, to });
                        } else {
                            self.outcomes[op].stores_settled += 1;
                        }
                    }
                    self.put_settled(op);
                }
            }
        }
    }

    fn put_settled(&mut self, op: usize) {
        let o = &self.outcomes[op];
        if !o.done && o.stores_sent > 0 && o.stores_settled == o.stores_sent {
            let ok = o.stored_at > 0;
            self.finish_op(op, ok, (0, 0, 0));
        }
    }

    fn start_bootstrap(&mut self, peer: u32, op: Option<usize>) {
        let p = &mut self.peers[peer as usize];
        p.bootstrapping = true;
        p.auto_due = None;
        let own = p.key;
        self.start_lookup(
            peer,
            own,
            Purpose::Bootstrap {
                peer,
                remaining: None,
                op,
            },
            None,
        );
    }

    fn bootstrap_ended(&mut self, peer: u32, op: Option<usize>) {
        let p = &mut self.peers[peer as usize];
        p.bootstrapping = false;
        if let Some(due) = p.auto_due {
            let delay = due.saturating_sub(self.now);
            p.auto_due = Some(self.now + delay);
            self.schedule(delay, Event::AutoBootstrap { peer });
        }
        if let Some(op) = op {
            self.finish_op(op, true, (0, 0, 0));
        }
    }

    /// Operation `op` ended; `found` the value (or succeeded), with its lookup's rounds, peers
    /// asked and peers that answered.
    fn finish_op(
        &mut self,
        op: usize,
        found: bool,
        (rounds, contacted, answered): (u32, usize, usize),
    ) {
        let now = self.now;
        let o = &mut self.outcomes[op];
        if o.done {
            return;
        }
        o.done = true;
        o.ended = now;
        o.found = found;
        if !matches!(self.ops[op], Op::Put { .. }) {
            o.rounds = rounds;
            o.contacted = contacted;
            o.answered = answered;
        }
    }

    fn start_op(&mut self, op: usize) {
        self.outcomes[op].started = self.now;
        match self.ops[op].clone() {
            Op::Join { peer } => self.start_bootstrap(peer, Some(op)),
            Op::Put { record, from } => {
                let target = self.record_keys[record];
                self.start_lookup(
                    from,
                    target,
                    Purpose::PutLookup {
                        record,
                        op,
                        then_old: true,
                    },
                    Some(LookupKind::PutRecord),
                );
            }
            Op::Get { record, from } => {
                let target = self.record_keys[record];
                self.start_lookup(
                    from,
                    target,
                    Purpose::Get { record, op },
                    Some(LookupKind::GetRecord),
                );
            }
            Op::Full { key, from } => {
                self.start_lookup(
                    from,
                    key,
                    Purpose::Full { op },
                    Some(LookupKind::GetProviders),
                );
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Arrive {
                lookup,
                origin,
                target,
                record,
                to,
            } => {
                if !self.peers[to as usize].alive {
                    let fail = Event::Fail { lookup, origin, to };
                    self.schedule(DIAL_FAILURE_US, fail);
                    return;
                }
                self.learn(to, origin);
                let responder = &self.peers[to as usize];
                let closer = responder.table.closest(&target, self.k, Some(origin));
                let found = record.is_some_and(|r| responder.records.contains(&r));
                let delay = self.one_way();
                self.schedule(
                    delay,
                    Event::Reply {
                        lookup,
                        origin,
                        from: to,
                        closer,
                        found,
                    },
                );
            }
            Event::Reply {
                lookup,
                origin,
                from,
                closer,
                found,
            } => {
                if !self.peers[origin as usize].alive {
                    return;
                }
                self.learn(origin, from);
                let at = self.at(self.now);
                let key = self.peers[from as usize].key;
                let peer_id = self.peers[from as usize].id;
                let quorum = self.get_quorum;
                let Some(l) = &mut self.lookups[lookup] else {
                    return;
                };
                let names: Vec<PeerId> = if l.trace.is_some() {
                    closer
                        .iter()
                        .map(|(p, _)| self.peers[*p as usize].id)
                        .collect()
                } else {
                    Vec::new()
                };
                if !l.iter.on_success(from, &key, closer) {
                    return;
                }
                if let Some(trace) = &mut l.trace {
                    trace.on_reply(at, peer_id, &names, found);
                }
                if found {
                    l.copies += 1;
                    if l.copies >= quorum {
                        l.iter.finish();
                    }
                }
                self.pump(lookup);
            }
            Event::Fail { lookup, origin, to } => {
                self.peers[origin as usize].table.remove(to);
                let at = self.at(self.now);
                let key = self.peers[to as usize].key;
                let peer_id = self.peers[to as usize].id;
                let Some(l) = &mut self.lookups[lookup] else {
                    return;
                };
                if l.iter.on_failure(to, &key) {
                    if let Some(trace) = &mut l.trace {
                        trace.on_failure(at, peer_id, "dial refused".to_owned());
                    }
                    self.pump(lookup);
                }
            }
            Event::Store { op, record, to } => {
                if self.peers[to as usize].alive {
                    let Op::Put { from, .. } = self.ops[op] else {
                        return;
                    };
                    self.learn(to, from);
                    self.peers[to as usize].records.insert(record);
                    let delay = self.one_way();
                    self.schedule(delay, Event::Stored { op });
                } else {
                    self.outcomes[op].stores_settled += 1;
                    self.put_settled(op);
                }
            }
            Event::Stored { op } => {
                self.outcomes[op].stored_at += 1;
                self.outcomes[op].stores_settled += 1;
                self.put_settled(op);
            }
            Event::AutoBootstrap { peer } => {
                let p = &self.peers[peer as usize];
                if p.alive && !p.bootstrapping && p.auto_due == Some(self.now) {
                    self.start_bootstrap(peer, None);
                }
            }
        }
    }

    /// Processes events until `until` says stop (or nothing is left to do).
    fn run_until(&mut self, mut until: impl FnMut(&Self) -> bool) {
        while !until(self) {
            let Some(next) = self.events.pop() else {
                return;
            };
            self.now = next.at;
            self.handle(next.event);
        }
    }

    /// Runs `ops` with at most `concurrency` in flight; `waves`: a batch starts only once the
    /// previous one ended.
    fn run_ops(&mut self, ops: Vec<Op>, concurrency: usize, waves: bool) -> Vec<Outcome> {
        let first = self.ops.len();
        let count = ops.len();
        for op in ops {
            self.ops.push(op);
            self.outcomes.push(Outcome::default());
        }
        let concurrency = concurrency.max(1);
        let mut next = first;
        let end = first + count;
        while next < end || (first..end).any(|i| !self.outcomes[i].done) {
            let in_flight = (first..next).filter(|i| !self.outcomes[*i].done).count();
            let room = if waves && in_flight > 0 {
                0
            } else {
                concurrency - in_flight.min(concurrency)
            };
            let start = room.min(end - next);
            for op in next..next + start {
                self.start_op(op);
            }
            next += start;
            let watched: Vec<usize> = (first..next).filter(|i| !self.outcomes[*i].done).collect();
            if watched.is_empty() {
                continue;
            }
            self.run_until(|w| watched.iter().any(|i| w.outcomes[*i].done));
            if self.events.is_empty() && watched.iter().all(|i| !self.outcomes[*i].done) {
                // Nothing left to happen: whatever is still open cannot end.
                for i in watched {
                    let now = self.now;
                    let o = &mut self.outcomes[i];
                    o.done = true;
                    o.ended = now;
                }
            }
        }
        self.outcomes[first..end].to_vec()
    }
}

fn sample(o: &Outcome) -> LookupSample {
    LookupSample {
        found: o.found,
        rounds: o.rounds,
        contacted: o.contacted,
        answered: o.answered,
        latency_ms: (o.ended - o.started) as f64 / 1e3,
    }
}

/// Runs the simulation with the model engine.
pub fn run(config: &SimConfig) -> anyhow::Result<SimReport> {
    anyhow::ensure!(config.nodes >= 2, "a DHT needs at least 2 peers");
    let started = std::time::Instant::now();
    let k = config.dht.replication_factor.max(1);
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut peers = Vec::with_capacity(config.nodes);
    for _ in 0..config.nodes {
        let id = keypair(&mut rng).public().to_peer_id();
        let key = Key::of_peer(&id);
        peers.push(Peer {
            id,
            key,
            alive: true,
            table: Table::new(key, k),
            records: HashSet::new(),
            bootstrapping: false,
            auto_due: None,
        });
    }
    let mut world = World {
        now: 0,
        seq: 0,
        k,
        get_quorum: config.dht.get_quorum.max(1),
        base: Instant::now(),
        peers,
        record_keys: Vec::new(),
        old_record_keys: Vec::new(),
        lookups: Vec::new(),
        events: BinaryHeap::new(),
        ops: Vec::new(),
        outcomes: Vec::new(),
        latency: StdRng::seed_from_u64(config.seed ^ 0x6c61_7465_6e63_7921),
        targets: StdRng::seed_from_u64(config.seed ^ 0x7265_6672_6573_6821),
    };

    // Join: the same contacts as the libp2p engine draws.
    let mut joins = Vec::new();
    for i in 1..config.nodes {
        let mut known = Vec::new();
        while known.len() < config.bootstrap_contacts.min(i) {
            let j = rng.gen_range(0..i);
            if !known.contains(&j) {
                known.push(j);
            }
        }
        for j in known {
            let key = world.peers[j].key;
            world.peers[i].table.insert(j as u32, key);
        }
        joins.push(Op::Join { peer: i as u32 });
    }
    world.run_ops(joins, config.concurrency, true);
    // Background bootstraps still running finish before the puts, as the libp2p engine's
    // peers' do while it checks that every peer knows another.
    world.run_until(|w| w.peers.iter().all(|p| !p.bootstrapping));
    let join_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        world.peers.iter().all(|p| p.table.len() > 0),
        "a peer knows no other peer after joining"
    );

    // Put.
    let records: Vec<String> = (0..config.records)
        .map(|i| format!("sim-{}-{i}", config.seed))
        .collect();
    anyhow::ensure!(!records.is_empty(), "no records to look up");
    for key in &records {
        world
            .record_keys
            .push(Key::of_record(&tabmesh_core::dht::key::kad_key(key)));
        world.old_record_keys.push(Key::of_record(key.as_bytes()));
    }
    let n = world.peers.len();
    let puts: Vec<Op> = (0..records.len())
        .map(|record| Op::Put {
            record,
            from: rng.gen_range(0..n) as u32,
        })
        .collect();
    let put_outcomes = world.run_ops(puts, config.concurrency, false);
    let put_ms: Vec<f64> = put_outcomes.iter().map(|o| sample(o).latency_ms).collect();
    let stored_at: Vec<f64> = put_outcomes
        .iter()
        .filter(|o| o.found)
        .map(|o| o.stored_at as f64)
        .collect();

    // Stable network: gets, then full lookups.
    let plan = |rng: &mut StdRng, live: &[u32], count: usize| -> Vec<Op> {
        (0..count)
            .map(|_| {
                let from = live[rng.gen_range(0..live.len())];
                let record = rng.gen_range(0..records.len());
                Op::Get { record, from }
            })
            .collect()
    };
    let everyone: Vec<u32> = (0..n as u32).collect();
    let gets = plan(&mut rng, &everyone, config.lookups);
    let stable: Vec<LookupSample> = world
        .run_ops(gets, config.concurrency, false)
        .iter()
        .map(sample)
        .collect();
    let fulls: Vec<Op> = (0..config.lookups)
        .map(|i| Op::Full {
            from: rng.gen_range(0..n) as u32,
            key: Key::of_record(format!("nobody-provides-{}-{i}", config.seed).as_bytes()),
        })
        .collect();
    let full: Vec<LookupSample> = world
        .run_ops(fulls, config.concurrency, false)
        .iter()
        .map(sample)
        .collect();

    // Churn: a tenth of the leavers go before each tenth of the lookups.
    let leaving = ((config.nodes as f64) * config.churn).round() as usize;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let mut leavers: Vec<usize> = order.into_iter().take(leaving).collect();
    let mut churn = Vec::new();
    let batches = 10;
    for batch in 0..batches {
        let go = leavers.len() / (batches - batch);
        for i in leavers.drain(..go) {
            world.peers[i].alive = false;
        }
        let live: Vec<u32> = (0..n as u32)
            .filter(|i| world.peers[*i as usize].alive)
            .collect();
        let count = config.lookups / batches + usize::from(batch < config.lookups % batches);
        let gets = plan(&mut rng, &live, count);
        churn.extend(
            world
                .run_ops(gets, config.concurrency, false)
                .iter()
                .map(sample),
        );
    }

    Ok(SimReport::new(
        crate::Engine::Model,
        config,
        join_secs,
        (&stored_at, &put_ms),
        [&stable, &full, &churn],
        leaving,
    ))
}
