//! What recording spans costs the GIMPS gossip protocol, in-process: an 8-node full mesh
//! spreads every verified Mersenne prime (TTL 2, from rotating finders), with tracing on and
//! off, and the messages handled per second are printed (signature checks included, network
//! excluded). Run by `cargo xtask bench --only trace` in release:
//! `cargo run --release -p tabmesh-core --example gossip_trace_overhead`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p_identity::Keypair;
use tabmesh_core::gimps::lucas_lehmer::{KNOWN_MERSENNE_EXPONENTS, VERIFIED_BELOW};
use tabmesh_core::gimps::node::{GossipAction, GossipConfig, GossipNode};

const RUNS: usize = 7;

fn main() {
    let mut rates: HashMap<bool, Vec<f64>> = HashMap::new();
    let mut shape = None;
    for _ in 0..RUNS {
        for traced in [false, true] {
            let (messages, spans, took) = spread_all(traced);
            rates
                .entry(traced)
                .or_default()
                .push(messages as f64 / took.as_secs_f64());
            if traced {
                shape = Some((messages, spans));
            }
        }
    }
    if let Some((messages, spans)) = shape {
        println!(
            "(each run: {messages} messages; {spans} spans recorded when traced; {RUNS} runs)"
        );
    }
    let median = |traced: bool| {
        let mut v = rates[&traced].clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (off, on) = (median(false), median(true));
    println!("tracing off  median {off:>9.0} messages/s");
    println!("tracing on   median {on:>9.0} messages/s");
    println!("overhead     {:.1}%", (off - on) / off * 100.0);
}

/// Spreads every verified Mersenne prime from rotating finders through a fresh 8-node mesh;
/// returns the messages delivered, the spans recorded and the time the deliveries took.
fn spread_all(traced: bool) -> (u64, u64, Duration) {
    let t0 = web_time::Instant::now();
    let keys: Vec<Keypair> = (1..=8u8)
        .map(|s| Keypair::ed25519_from_bytes([s; 32]).expect("32 bytes"))
        .collect();
    let ids: Vec<_> = keys.iter().map(|k| k.public().to_peer_id()).collect();
    let index: HashMap<_, _> = ids.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let mut nodes: Vec<GossipNode> = keys
        .into_iter()
        .map(|k| GossipNode::new(k, GossipConfig::default(), t0, t0))
        .collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        if traced {
            node.trace_with(1_700_000_000_000, i as u64);
        }
        for id in &ids {
            node.on_peer_connected(t0, *id);
        }
    }
    let (mut messages, mut spans) = (0u64, 0u64);
    let started = Instant::now();
    let primes = KNOWN_MERSENNE_EXPONENTS
        .iter()
        .filter(|p| **p < VERIFIED_BELOW);
    for (n, p) in primes.enumerate() {
        let finder = n % nodes.len();
        let mut queue: VecDeque<(usize, GossipAction)> = nodes[finder]
            .on_tested(t0, *p, true)
            .into_iter()
            .map(|a| (finder, a))
            .collect();
        while let Some((from, action)) = queue.pop_front() {
            match action {
                GossipAction::Send { to, message } => {
                    messages += 1;
                    let i = index[&to];
                    let bytes = message.encode();
                    for next in nodes[i].on_message(t0, ids[from], &bytes) {
                        queue.push_back((i, next));
                    }
                }
                GossipAction::Traced(_) => spans += 1,
                _ => {}
            }
        }
    }
    (messages, spans, started.elapsed())
}
