//! A tabmesh DHT of N peers in one process, to measure what Kademlia promises.
//!
//! Every simulated peer runs the behaviours a tab runs for the DHT, the same code: tabmesh's DHT
//! behaviour ([`tabmesh_node::dht::Behaviour`]: Kademlia with its protocol name, replication,
//! filtered and validated inserts, quotas and observed lookups, and the operations: signed put,
//! get with the precedence rule, hand-over to joining peers) and identify (how peers learn each
//! other's listen addresses). Only the transport differs: libp2p's in-memory transport
//! with plaintext instead of WebSocket/relay circuits with Noise, so that a thousand peers fit on
//! two cores. Beyond that, [`model`] runs Kademlia's rules alone in virtual time (10,000 peers in
//! minutes), checked against this engine at the sizes both reach.
//!
//! A run ([`run`]) is seeded: identities, bootstrap contacts, publishers, keys, which peer looks
//! up what and which peers leave all come from the seed. Message timing comes from the tokio
//! scheduler, so figures repeat closely but not to the last request.
//!
//! Phases: every peer joins (adds a few earlier peers and looks up its own id); `records`
//! signed records are put from random peers; `lookups` gets from random peers for random keys
//! and as many full lookups (stable network); then the same number of gets while `churn` of the peers leave, a tenth of
//! them after each tenth of the lookups. A lookup succeeds when it returns the value that was
//! put. Rounds and peers contacted come from each lookup's recorded path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::oneshot;
use libp2p::core::Transport;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, MemoryTransport};
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, plaintext, yamux};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tabmesh_core::dht::{DhtConfig, DhtError, DhtReply, DhtRequest};
use tabmesh_node::dht::{self, MemoryBackend};
use tokio::sync::mpsc;
use web_time::Instant;

pub mod model;

/// How the peers are simulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// Every peer is a libp2p swarm running the tabs' DHT behaviour ([`run`]): the real code,
    /// up to about a thousand peers on two cores.
    Libp2p,
    /// Kademlia's rules as libp2p-kad applies them, in virtual time ([`model::run`]): tens of
    /// thousands of peers; latencies are the model's, not this machine's.
    Model,
}

/// Memory-transport ports are process-wide: each peer of each run takes the next one.
static NEXT_PORT: AtomicU64 = AtomicU64::new(1);

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Peers.
    pub nodes: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Records put before the lookups.
    pub records: usize,
    /// Lookups per phase.
    pub lookups: usize,
    /// Fraction of peers that leave during the churn phase.
    pub churn: f64,
    /// Earlier peers each joining peer is told about.
    pub bootstrap_contacts: usize,
    /// Operations in flight at once.
    pub concurrency: usize,
    /// The DHT settings every peer runs (the tabs' defaults unless changed).
    pub dht: DhtConfig,
}

impl SimConfig {
    /// The tabs' DHT settings for `nodes` peers, with workload defaults.
    pub fn new(nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            seed,
            records: 50,
            lookups: 200,
            churn: 0.1,
            bootstrap_contacts: 3,
            concurrency: 16,
            dht: DhtConfig {
                // The simulation drives joins itself.
                periodic_bootstrap: None,
                ..DhtConfig::default()
            },
        }
    }
}

/// Mean, median, 95th percentile and maximum of a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub median: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Largest.
    pub max: f64,
}

impl Summary {
    /// Summarises `values` (all zero when empty).
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Self {
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            median: at(0.5),
            p95: at(0.95),
            max: sorted[sorted.len() - 1],
        }
    }
}

/// The lookups of one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseReport {
    /// Lookups made.
    pub lookups: usize,
    /// Lookups that returned the value that was put.
    pub found: usize,
    /// `found / lookups`.
    pub success_rate: f64,
    /// Rounds per lookup.
    pub rounds: Summary,
    /// Peers contacted (asked) per lookup.
    pub contacted: Summary,
    /// Peers that answered per lookup. The libp2p engine sees a request that waits for a dial
    /// only once it is answered ([`tabmesh_node::dht::observe`]), so its `contacted` leaves out
    /// dials still pending when the lookup ended; `answered` means the same in both engines.
    pub answered: Summary,
    /// Wall-clock latency per lookup, ms.
    pub latency_ms: Summary,
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    /// The engine that ran it.
    pub engine: Engine,
    /// Peers.
    pub nodes: usize,
    /// Seed.
    pub seed: u64,
    /// log2 of the number of peers, the yardstick for rounds and contacts.
    pub log2_n: f64,
    /// Time for every peer to join, s.
    pub join_secs: f64,
    /// Records put successfully.
    pub puts_ok: usize,
    /// Peers that acknowledged each put.
    pub stored_at: Summary,
    /// Wall-clock time per put (ok or not), ms.
    pub put_ms: Summary,
    /// Gets in the stable network (a get stops once it holds `get_quorum` copies).
    pub stable: PhaseReport,
    /// Full iterative lookups in the stable network (`GET_PROVIDERS` for keys nobody provides:
    /// the lookup runs until the k closest peers have answered), as Kademlia's analysis counts.
    pub full: PhaseReport,
    /// Lookups while peers leave.
    pub churn: PhaseReport,
    /// Peers that left.
    pub left: usize,
}

impl SimReport {
    /// The report of a run of `engine` on `config`: `puts` are the peers that stored each
    /// successful put and every put's time (ms); `phases` the stable gets, full lookups and
    /// gets under churn; `left` the peers that left.
    fn new(
        engine: Engine,
        config: &SimConfig,
        join_secs: f64,
        (stored_at, put_ms): (&[f64], &[f64]),
        [stable, full, churn]: [&[LookupSample]; 3],
        left: usize,
    ) -> Self {
        Self {
            engine,
            nodes: config.nodes,
            seed: config.seed,
            log2_n: (config.nodes as f64).log2(),
            join_secs,
            puts_ok: stored_at.len(),
            stored_at: Summary::of(stored_at),
            put_ms: Summary::of(put_ms),
            stable: phase_report(stable),
            full: phase_report(full),
            churn: phase_report(churn),
            left,
        }
    }
}

#[derive(NetworkBehaviour)]
struct SimBehaviour {
    dht: dht::Behaviour,
    identify: identify::Behaviour,
}

/// Orders to one simulated peer.
enum Order {
    AddPeer(PeerId, Multiaddr),
    Join(oneshot::Sender<()>),
    Dht(DhtRequest, dht::DhtReplySender),
    Held(oneshot::Sender<Vec<(String, String)>>),
    RoutingTableSize(oneshot::Sender<usize>),
    Leave,
}

/// The simulation's transport: libp2p's in-memory transport with plaintext and yamux (for
/// this process only; any libp2p swarm built with it can join a simulated network).
pub fn memory_transport(key: &Keypair) -> Boxed<(PeerId, StreamMuxerBox)> {
    MemoryTransport::default()
        .upgrade(Version::V1)
        .authenticate(plaintext::Config::new(key))
        .multiplex(yamux::Config::default())
        .boxed()
}

/// One simulated peer, as the orchestrator sees it.
#[derive(Clone)]
pub struct SimPeer {
    /// Its id.
    pub peer_id: PeerId,
    /// Its in-memory address.
    pub addr: Multiaddr,
    orders: mpsc::Sender<Order>,
}

impl SimPeer {
    /// Starts a peer with `key` on the current tokio runtime.
    pub fn spawn(key: Keypair, config: &DhtConfig) -> anyhow::Result<Self> {
        let peer_id = key.public().to_peer_id();
        let dht_config = config.clone();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(memory_transport)?
            .with_behaviour(|key| SimBehaviour {
                dht: dht::Behaviour::new(
                    key.clone(),
                    dht_config,
                    Box::new(MemoryBackend),
                    dht::Role::Peer { discovery: None },
                    tabmesh_node::report::WireSink::discard(),
                ),
                identify: identify::Behaviour::new(identify::Config::new(
                    tabmesh_core::protocol::IDENTIFY_VERSION.to_owned(),
                    key.public(),
                )),
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(2)))
            .build();
        let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let addr = Multiaddr::empty().with(Protocol::Memory(port));
        swarm.listen_on(addr.clone())?;
        let (orders, rx) = mpsc::channel(64);
        tokio::spawn(drive(swarm, rx));
        Ok(Self {
            peer_id,
            addr,
            orders,
        })
    }

    /// Tells the peer about `other`.
    pub async fn add_peer(&self, other: &SimPeer) {
        let _ = self
            .orders
            .send(Order::AddPeer(other.peer_id, other.addr.clone()))
            .await;
    }

    /// Joins through the peers it knows (Kademlia bootstrap); resolves when done.
    pub async fn join(&self) {
        let (tx, rx) = oneshot::channel();
        if self.orders.send(Order::Join(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Runs a DHT request.
    pub async fn request(&self, request: DhtRequest) -> Result<DhtReply, DhtError> {
        let (tx, rx) = oneshot::channel();
        self.orders
            .send(Order::Dht(request, tx))
            .await
            .map_err(|_| DhtError::Stopped)?;
        rx.await.unwrap_or(Err(DhtError::Stopped))
    }

    /// The keys of the records this peer holds (expired ones included until they are dropped).
    pub async fn held_keys(&self) -> Vec<String> {
        self.held().await.into_iter().map(|(k, _)| k).collect()
    }

    /// The records this peer holds, as (key, value preview).
    pub async fn held(&self) -> Vec<(String, String)> {
        let (tx, rx) = oneshot::channel();
        if self.orders.send(Order::Held(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Peers in its routing table.
    pub async fn routing_table_size(&self) -> usize {
        let (tx, rx) = oneshot::channel();
        if self.orders.send(Order::RoutingTableSize(tx)).await.is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// Leaves the network: the peer stops and its connections close.
    pub async fn leave(&self) {
        let _ = self.orders.send(Order::Leave).await;
    }
}

async fn drive(mut swarm: Swarm<SimBehaviour>, mut orders: mpsc::Receiver<Order>) {
    loop {
        tokio::select! {
            event = swarm.select_next_some() => {
                if let SwarmEvent::Behaviour(SimBehaviourEvent::Identify(identify::Event::Received {
                    peer_id,
                    info,
                    ..
                })) = event
                {
                    swarm
                        .behaviour_mut()
                        .dht
                        .on_identified(peer_id, &info.listen_addrs, &info.protocols);
                }
            }
            order = orders.recv() => match order {
                Some(Order::AddPeer(peer, addr)) => {
                    swarm.behaviour_mut().dht.kad_mut().add_address(&peer, addr);
                }
                Some(Order::Join(done)) => swarm.behaviour_mut().dht.join(done),
                Some(Order::Dht(request, reply)) => swarm.behaviour_mut().dht.start(request, reply),
                Some(Order::Held(reply)) => {
                    let keys = swarm
                        .behaviour_mut()
                        .dht
                        .store_mut()
                        .local()
                        .records()
                        .map(|r| {
                            (
                                tabmesh_core::dht::key::user_text(&r.record.key),
                                tabmesh_core::dht::record::preview(&r.record.value, 64),
                            )
                        })
                        .collect();
                    let _ = reply.send(keys);
                }
                Some(Order::RoutingTableSize(reply)) => {
                    let dht = swarm.behaviour_mut().dht.kad_mut();
                    let _ = reply.send(dht.kbuckets().map(|b| b.num_entries()).sum());
                }
                Some(Order::Leave) | None => break,
            },
        }
    }
}

/// A seeded Ed25519 identity.
fn keypair(rng: &mut StdRng) -> Keypair {
    let mut secret = [0u8; 32];
    rng.fill(&mut secret);
    // 32 bytes are always a valid Ed25519 secret key.
    Keypair::ed25519_from_bytes(secret).unwrap_or_else(|_| Keypair::generate_ed25519())
}

/// Starts `n` peers and has each join through up to `contacts` random earlier peers,
/// `concurrency` joins at a time.
pub async fn build_network(
    n: usize,
    contacts: usize,
    concurrency: usize,
    dht: &DhtConfig,
    rng: &mut StdRng,
) -> anyhow::Result<Vec<SimPeer>> {
    let mut peers = Vec::with_capacity(n);
    for _ in 0..n {
        peers.push(SimPeer::spawn(keypair(rng), dht)?);
    }
    let mut plans = Vec::new();
    for i in 1..n {
        let mut known = Vec::new();
        while known.len() < contacts.min(i) {
            let j = rng.gen_range(0..i);
            if !known.contains(&j) {
                known.push(j);
            }
        }
        plans.push((i, known));
    }
    // Join in waves so that each wave finds the earlier ones in the table.
    let started = Instant::now();
    for (w, wave) in plans.chunks(concurrency.max(1)).enumerate() {
        if w % 8 == 7 {
            tracing::info!(
                joined = (w + 1) * concurrency,
                of = n,
                secs = started.elapsed().as_secs_f64(),
                "joining"
            );
        }
        let joins = wave.iter().map(|(i, known)| {
            let peer = peers[*i].clone();
            let contacts: Vec<SimPeer> = known.iter().map(|j| peers[*j].clone()).collect();
            async move {
                for c in &contacts {
                    peer.add_peer(c).await;
                }
                peer.join().await;
            }
        });
        futures::future::join_all(joins).await;
    }
    // The joins are done when each joining peer's lookups are; the peers they reached learn of
    // them from identify a moment later. Every peer must know another before the first request
    // (one that could ask nobody fails).
    let deadline = Instant::now() + Duration::from_secs(30);
    for peer in peers.iter().filter(|_| n > 1) {
        while peer.routing_table_size().await == 0 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "peer {} knows no other peer after joining",
                peer.peer_id
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(peers)
}

/// One lookup's figures.
struct LookupSample {
    found: bool,
    rounds: u32,
    contacted: usize,
    answered: usize,
    latency_ms: f64,
}

/// A get that must return `expected`.
async fn lookup(peer: SimPeer, key: String, expected: String) -> LookupSample {
    measure(peer, DhtRequest::Get { key }, Some(expected)).await
}

/// A `GET_PROVIDERS` lookup for a key nobody provides: it runs to the k closest peers.
async fn full_lookup(peer: SimPeer, key: String) -> LookupSample {
    measure(peer, DhtRequest::Providers { key }, None).await
}

/// Runs `request` on `peer`; a get is found when it returns `expected`.
async fn measure(peer: SimPeer, request: DhtRequest, expected: Option<String>) -> LookupSample {
    let started = Instant::now();
    let reply = peer.request(request).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1e3;
    let (found, lookup) = match reply {
        Ok(DhtReply::Get { record, lookup, .. }) => (
            record.and_then(|r| r.value).as_deref() == expected.as_deref(),
            lookup,
        ),
        Ok(DhtReply::Providers { lookup, .. }) => (true, lookup),
        _ => (false, Default::default()),
    };
    LookupSample {
        found,
        rounds: lookup.rounds,
        contacted: lookup.contacted,
        answered: lookup.answered,
        latency_ms,
    }
}

fn phase_report(samples: &[LookupSample]) -> PhaseReport {
    let found = samples.iter().filter(|s| s.found).count();
    let f =
        |get: fn(&LookupSample) -> f64| Summary::of(&samples.iter().map(get).collect::<Vec<_>>());
    PhaseReport {
        lookups: samples.len(),
        found,
        success_rate: if samples.is_empty() {
            0.0
        } else {
            found as f64 / samples.len() as f64
        },
        rounds: f(|s| f64::from(s.rounds)),
        contacted: f(|s| s.contacted as f64),
        answered: f(|s| s.answered as f64),
        latency_ms: f(|s| s.latency_ms),
    }
}

/// Runs the whole simulation on the current tokio runtime.
pub async fn run(config: &SimConfig) -> anyhow::Result<SimReport> {
    anyhow::ensure!(config.nodes >= 2, "a DHT needs at least 2 peers");
    let mut rng = StdRng::seed_from_u64(config.seed);
    let started = Instant::now();
    let peers = build_network(
        config.nodes,
        config.bootstrap_contacts,
        config.concurrency,
        &config.dht,
        &mut rng,
    )
    .await?;
    let join_secs = started.elapsed().as_secs_f64();

    // Put.
    let records: Vec<(String, String)> = (0..config.records)
        .map(|i| (format!("sim-{}-{i}", config.seed), format!("value {i}")))
        .collect();
    let puts: Vec<_> = records
        .iter()
        .map(|(key, value)| {
            let peer = peers[rng.gen_range(0..peers.len())].clone();
            let request = DhtRequest::Put {
                key: key.clone(),
                value: value.clone(),
                ttl_ms: None,
            };
            async move {
                let started = Instant::now();
                let result = peer.request(request).await;
                (result, started.elapsed().as_secs_f64() * 1e3)
            }
        })
        .collect();
    let put_results: Vec<_> = futures::stream::iter(puts)
        .buffer_unordered(config.concurrency)
        .collect()
        .await;
    let put_ms: Vec<f64> = put_results.iter().map(|(_, ms)| *ms).collect();
    let stored_at: Vec<f64> = put_results
        .iter()
        .filter_map(|(r, _)| match r {
            Ok(DhtReply::Put { stored_at, .. }) => Some(*stored_at as f64),
            _ => None,
        })
        .collect();
    if records.is_empty() {
        anyhow::bail!("no records to look up");
    }

    // Stable network.
    let plan = |rng: &mut StdRng, peers: &[SimPeer], count: usize| -> Vec<_> {
        (0..count)
            .map(|_| {
                let peer = peers[rng.gen_range(0..peers.len())].clone();
                let (key, value) = records[rng.gen_range(0..records.len())].clone();
                lookup(peer, key, value)
            })
            .collect()
    };
    let stable_lookups = plan(&mut rng, &peers, config.lookups);
    let stable: Vec<LookupSample> = futures::stream::iter(stable_lookups)
        .buffer_unordered(config.concurrency)
        .collect()
        .await;

    // Full lookups: nobody provides these keys, so each runs to the k closest peers.
    let full_lookups: Vec<_> = (0..config.lookups)
        .map(|i| {
            let peer = peers[rng.gen_range(0..peers.len())].clone();
            full_lookup(peer, format!("nobody-provides-{}-{i}", config.seed))
        })
        .collect();
    let full: Vec<LookupSample> = futures::stream::iter(full_lookups)
        .buffer_unordered(config.concurrency)
        .collect()
        .await;

    // Churn: a tenth of the leavers go before each tenth of the lookups.
    let leaving = ((config.nodes as f64) * config.churn).round() as usize;
    let mut order: Vec<usize> = (0..peers.len()).collect();
    order.shuffle(&mut rng);
    let mut leavers: Vec<usize> = order.into_iter().take(leaving).collect();
    let mut alive: Vec<bool> = vec![true; peers.len()];
    let mut churn = Vec::new();
    let batches = 10;
    for batch in 0..batches {
        let go = leavers.len() / (batches - batch);
        for i in leavers.drain(..go) {
            peers[i].leave().await;
            alive[i] = false;
        }
        let live: Vec<SimPeer> = peers
            .iter()
            .zip(&alive)
            .filter(|(_, a)| **a)
            .map(|(p, _)| p.clone())
            .collect();
        let count = config.lookups / batches + usize::from(batch < config.lookups % batches);
        let batch_lookups = plan(&mut rng, &live, count);
        let samples: Vec<LookupSample> = futures::stream::iter(batch_lookups)
            .buffer_unordered(config.concurrency)
            .collect()
            .await;
        churn.extend(samples);
    }
    for peer in &peers {
        peer.leave().await;
    }

    Ok(SimReport::new(
        Engine::Libp2p,
        config,
        join_secs,
        (&stored_at, &put_ms),
        [&stable, &full, &churn],
        leaving,
    ))
}
