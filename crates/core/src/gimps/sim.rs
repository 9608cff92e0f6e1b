//! A deterministic simulation of many gossip nodes in one process.
//!
//! Nodes are real [`GossipNode`]s; the network is a priority queue of messages with seeded
//! latencies; time is virtual. Each node starts with a seeded random set of neighbours as its
//! peer list (the transport can reach any node, as through the relay). The Lucas-Lehmer work is
//! modelled: a test of `p` takes `p² / test_speed` virtual milliseconds and its verdict comes from
//! the verified list, so a simulated hour of searching runs in milliseconds.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use libp2p_identity::{Keypair, PeerId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use web_time::{Duration, Instant};

use super::lucas_lehmer::KNOWN_MERSENNE_EXPONENTS;
use super::message::MsgType;
use super::node::{GossipAction, GossipConfig, GossipNode};

/// Shape of a simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Initial neighbours per node.
    pub degree: usize,
    /// Seed of the topology, latencies and keys.
    pub seed: u64,
    /// One-way latency range in milliseconds (each link keeps one latency drawn from it).
    pub latency_ms: (u64, u64),
    /// Exponent² per virtual millisecond of Lucas-Lehmer work.
    pub test_speed: f64,
    /// Whether nodes search at all.
    pub search: bool,
    /// Protocol configuration of every node.
    pub gossip: GossipConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 8,
            degree: 3,
            seed: 1,
            latency_ms: (5, 50),
            test_speed: 2_000.0,
            search: true,
            gossip: GossipConfig::default(),
        }
    }
}

struct Pending {
    due_ms: u64,
    seq: u64,
    from: usize,
    to: usize,
    bytes: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.due_ms, self.seq) == (other.due_ms, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due_ms, self.seq).cmp(&(other.due_ms, other.seq))
    }
}

/// The simulated network.
pub struct Simulation {
    config: SimConfig,
    start: Instant,
    now_ms: u64,
    nodes: Vec<GossipNode>,
    index: HashMap<PeerId, usize>,
    busy_until: Vec<Option<(u64, u32)>>,
    speed: Vec<f64>,
    searching: bool,
    queue: BinaryHeap<Reverse<Pending>>,
    seq: u64,
    rng: SmallRng,
    /// `PRIME` messages sent (originals and forwards).
    pub prime_messages: u64,
    /// All messages sent.
    pub messages: u64,
}

impl Simulation {
    /// Builds the nodes and their initial peer lists.
    pub fn new(config: SimConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let start = Instant::now();
        let nodes: Vec<GossipNode> = (0..config.nodes)
            .map(|_| {
                let key = Keypair::ed25519_from_bytes(rng.r#gen::<[u8; 32]>()).expect("32 bytes");
                GossipNode::new(key, config.gossip.clone(), start, start)
            })
            .collect();
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.peer_id(), i))
            .collect();
        // Machines differ: each node's Lucas-Lehmer speed is the base speed ± 30 %.
        let speed = (0..config.nodes)
            .map(|_| config.test_speed * rng.gen_range(0.7..1.3))
            .collect();
        let mut sim = Self {
            busy_until: vec![None; config.nodes],
            speed,
            searching: config.search,
            config,
            start,
            now_ms: 0,
            nodes,
            index,
            queue: BinaryHeap::new(),
            seq: 0,
            rng,
            prime_messages: 0,
            messages: 0,
        };
        let n = sim.nodes.len();
        for i in 0..n {
            let mut neighbours = BTreeSet::new();
            // A ring keeps the graph connected; random chords add the rest of the degree.
            if n > 1 {
                neighbours.insert((i + 1) % n);
            }
            while neighbours.len() < sim.config.degree.min(n.saturating_sub(1)) {
                let j = sim.rng.gen_range(0..n);
                if j != i {
                    neighbours.insert(j);
                }
            }
            for j in neighbours {
                let (a, b) = (sim.nodes[i].peer_id(), sim.nodes[j].peer_id());
                // Nothing is known yet at start, so joining sends nothing.
                let _ = sim.nodes[i].on_peer_connected(start, b);
                let _ = sim.nodes[j].on_peer_connected(start, a);
            }
        }
        sim
    }

    /// The nodes.
    pub fn nodes(&self) -> &[GossipNode] {
        &self.nodes
    }

    /// Mutable access to node `i` (to put it to sleep, for example).
    pub fn node_mut(&mut self, i: usize) -> &mut GossipNode {
        &mut self.nodes[i]
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.start + Duration::from_millis(self.now_ms)
    }

    fn apply(&mut self, from: usize, actions: Vec<GossipAction>) {
        for action in actions {
            if let GossipAction::Send { to, message } = action {
                let Some(&to) = self.index.get(&to) else {
                    continue;
                };
                let latency = self.link_latency(from, to);
                self.seq += 1;
                self.messages += 1;
                if message.msg_type == MsgType::Prime {
                    self.prime_messages += 1;
                }
                self.queue.push(Reverse(Pending {
                    due_ms: self.now_ms + latency,
                    seq: self.seq,
                    from,
                    to,
                    bytes: message.encode(),
                }));
            }
        }
    }

    /// The latency of the link from node `from` to node `to`: drawn from `latency_ms` once per
    /// link and seed (a hash, not the shared generator), so that two runs that send different
    /// messages still see the same network.
    fn link_latency(&self, from: usize, to: usize) -> u64 {
        let (lo, hi) = self.config.latency_ms;
        // splitmix64's finalizer over (seed, from, to).
        let mut x = self.config.seed ^ ((from as u64) << 32) ^ (to as u64);
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        lo + x % (hi.max(lo) - lo + 1)
    }

    /// Node `i` announces that it found `2^exponent - 1` (as if its search had just ended).
    pub fn announce(&mut self, i: usize, exponent: u32) {
        let now = self.now();
        let actions = self.nodes[i].on_tested(now, exponent, true);
        self.apply(i, actions);
    }

    /// Stops all searching (tests in progress are dropped), so announcements can settle.
    pub fn stop_search(&mut self) {
        self.searching = false;
        self.busy_until.iter_mut().for_each(|b| *b = None);
    }

    /// Advances virtual time by `duration` in 10 ms steps.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now_ms + u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        while self.now_ms < end {
            self.step();
            self.now_ms += 10;
        }
    }

    /// Delivers every queued message (no timers run): for flood experiments.
    pub fn drain(&mut self) {
        while let Some(Reverse(p)) = self.queue.pop() {
            self.now_ms = self.now_ms.max(p.due_ms);
            self.deliver(p);
        }
    }

    fn deliver(&mut self, p: Pending) {
        let now = self.now();
        let from = self.nodes[p.from].peer_id();
        let actions = self.nodes[p.to].on_message(now, from, &p.bytes);
        self.apply(p.to, actions);
    }

    fn step(&mut self) {
        while self
            .queue
            .peek()
            .is_some_and(|Reverse(p)| p.due_ms <= self.now_ms)
        {
            if let Some(Reverse(p)) = self.queue.pop() {
                self.deliver(p);
            }
        }
        let now = self.now();
        for i in 0..self.nodes.len() {
            let actions = self.nodes[i].on_tick(now);
            self.apply(i, actions);
            if !self.searching {
                continue;
            }
            match self.busy_until[i] {
                Some((done_ms, p)) if done_ms <= self.now_ms => {
                    self.busy_until[i] = None;
                    let actions =
                        self.nodes[i].on_tested(now, p, KNOWN_MERSENNE_EXPONENTS.contains(&p));
                    self.apply(i, actions);
                }
                Some(_) => {}
                None => {
                    if let Some(p) = self.nodes[i].next_candidate() {
                        let cost = (f64::from(p) * f64::from(p) / self.speed[i]).ceil() as u64;
                        self.busy_until[i] = Some((self.now_ms + cost.max(1), p));
                    }
                }
            }
        }
    }
}

impl Simulation {
    /// Whether every awake node knows every exponent in `primes`.
    pub fn all_know(&self, primes: &[u32]) -> bool {
        self.nodes.iter().filter(|n| n.is_awake()).all(|n| {
            let known = n.view(self.now()).known_primes;
            primes.iter().all(|p| known.contains(p))
        })
    }

    /// Runs until every awake node knows every exponent in `primes`, for at most `limit`;
    /// returns the virtual time it took.
    pub fn time_to_find(&mut self, primes: &[u32], limit: Duration) -> Option<Duration> {
        let start = self.now_ms;
        while self.now_ms - start < u64::try_from(limit.as_millis()).unwrap_or(u64::MAX) {
            if self.all_know(primes) {
                return Some(Duration::from_millis(self.now_ms - start));
            }
            self.run_for(Duration::from_millis(100));
        }
        None
    }
}

/// Virtual time for `nodes` cooperative nodes (full mesh) to find every Mersenne prime exponent
/// up to `up_to`, or `None` past `limit`.
pub fn cooperative_search(
    nodes: usize,
    up_to: u32,
    seed: u64,
    limit: Duration,
) -> Option<Duration> {
    let mut sim = Simulation::new(SimConfig {
        nodes,
        degree: nodes.saturating_sub(1),
        seed,
        gossip: GossipConfig {
            cooperative: true,
            ..GossipConfig::default()
        },
        ..SimConfig::default()
    });
    let targets: Vec<u32> = KNOWN_MERSENNE_EXPONENTS
        .iter()
        .copied()
        .filter(|p| *p <= up_to)
        .collect();
    sim.time_to_find(&targets, limit)
}

/// Result of flooding one `PRIME` through a network.
#[derive(Debug, Clone, Copy)]
pub struct FloodResult {
    /// Share of the other nodes that learnt the prime.
    pub reach: f64,
    /// `PRIME` messages sent for it, in total.
    pub messages: u64,
}

/// Floods one announcement through `nodes` nodes of the given degree with initial TTL `ttl`,
/// forwarders skipping the peers the finder sent it to (the default).
pub fn flood(nodes: usize, degree: usize, ttl: u8, seed: u64) -> FloodResult {
    flood_with(nodes, degree, ttl, seed, true)
}

/// [`flood`] as the exercise floods: every forwarder copies to every peer.
pub fn flood_without_pruning(nodes: usize, degree: usize, ttl: u8, seed: u64) -> FloodResult {
    flood_with(nodes, degree, ttl, seed, false)
}

fn flood_with(nodes: usize, degree: usize, ttl: u8, seed: u64, prune: bool) -> FloodResult {
    let mut sim = Simulation::new(SimConfig {
        nodes,
        degree,
        seed,
        search: false,
        gossip: GossipConfig {
            initial_ttl: ttl,
            prune,
            ..GossipConfig::default()
        },
        ..SimConfig::default()
    });
    let exponent = 4423;
    sim.announce(0, exponent);
    sim.drain();
    let reached = sim.nodes()[1..]
        .iter()
        .filter(|n| n.biggest().is_some_and(|(p, _)| p == exponent))
        .count();
    FloodResult {
        reach: reached as f64 / (nodes.saturating_sub(1)).max(1) as f64,
        messages: sim.prime_messages,
    }
}
