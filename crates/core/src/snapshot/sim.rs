//! A snapshot in simulation, for the benchmark: `n` peers on a random graph (or a full mesh)
//! keep sending each other tokens over FIFO channels with random delays, one of them takes a
//! Chandy-Lamport snapshot, and the figures come out: how long until the initiator has every
//! part, the markers and bytes it cost, and whether the assembled state is consistent.
//!
//! Virtual time, in milliseconds: each channel delivers in order, each frame after a delay of
//! 2 to 20 ms (but never before the frame ahead of it); a part goes to the initiator directly
//! with the same delays. Bytes are those of the real encodings (a marker frame with the
//! channel's 12-byte header; a part as `/tabmesh/snapshot/1.0.0` carries it).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use libp2p_identity::{Keypair, PeerId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use web_time::{Duration, Instant};

use super::frame::ChannelFrame;
use super::state::{InFlight, PeerState, TokenRecord};
use super::wire::{PartWire, SnapshotRequest};
use super::{LocalSnapshot, Marker, Recorder, SnapshotAction, SnapshotConfig, assemble};

/// What one simulated snapshot measured.
#[derive(Debug, Clone, PartialEq)]
pub struct SimResult {
    /// Peers.
    pub peers: usize,
    /// Directed channels (one per direction per connected pair).
    pub channels: usize,
    /// Markers sent.
    pub markers: u64,
    /// Bytes of the markers (frames with their headers).
    pub marker_bytes: u64,
    /// Bytes of the parts sent to the initiator.
    pub part_bytes: u64,
    /// From the initiator's record to its last part, virtual ms.
    pub duration_ms: u64,
    /// Token transfers recorded in flight.
    pub in_flight: usize,
    /// Every part came, complete.
    pub complete: bool,
    /// For every channel, sent = received + in flight.
    pub channels_consistent: bool,
    /// Balances plus tokens in flight equal the total.
    pub tokens_conserved: bool,
}

enum Event {
    /// Peer `i` sends a transfer (and schedules its next).
    Transfer(usize),
    /// The snapshot starts at peer 0.
    Initiate,
    /// A frame arrives at `to` from `from`.
    Deliver {
        from: usize,
        to: usize,
        frame: Frame,
    },
    /// A part reaches the initiator.
    Part,
}

enum Frame {
    Tokens(u64),
    Marker(super::SnapshotId),
}

/// Virtual time: events in order, channels FIFO.
#[derive(Default)]
struct Scheduler {
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Event>,
    next: u64,
    /// The last delivery time on each channel.
    channels: HashMap<(usize, usize), u64>,
}

impl Scheduler {
    fn at(&mut self, time: u64, event: Event) {
        self.next += 1;
        self.events.insert(self.next, event);
        self.queue.push(Reverse((time, self.next)));
    }

    /// A frame on the channel `from` → `to`, 2 to 20 ms later but after the one ahead of it.
    fn send(&mut self, rng: &mut SmallRng, now: u64, from: usize, to: usize, frame: Frame) {
        let last = self.channels.entry((from, to)).or_default();
        let when = (now + rng.gen_range(2..=20)).max(*last);
        *last = when;
        self.at(when, Event::Deliver { from, to, frame });
    }

    fn next(&mut self) -> Option<(u64, Event)> {
        let Reverse((time, key)) = self.queue.pop()?;
        Some((time, self.events.remove(&key)?))
    }
}

/// A connected random graph: a ring, plus random edges until every peer has about `degree`
/// neighbours (all the others when `degree` is at least `n - 1`).
fn graph(n: usize, degree: usize, rng: &mut SmallRng) -> Vec<BTreeSet<usize>> {
    let mut adjacent = vec![BTreeSet::new(); n];
    if degree + 1 >= n {
        for (i, a) in adjacent.iter_mut().enumerate() {
            a.extend((0..n).filter(|j| *j != i));
        }
        return adjacent;
    }
    for i in 0..n {
        let j = (i + 1) % n;
        adjacent[i].insert(j);
        adjacent[j].insert(i);
    }
    for i in 0..n {
        while adjacent[i].len() < degree {
            let j = rng.gen_range(0..n);
            if j != i {
                adjacent[i].insert(j);
                adjacent[j].insert(i);
            }
        }
    }
    adjacent
}

/// Runs one snapshot among `n` peers of about `degree` neighbours each, every peer sending a
/// transfer about every `transfer_ms`.
pub fn simulate(n: usize, degree: usize, transfer_ms: u64, seed: u64) -> SimResult {
    let mut rng = SmallRng::seed_from_u64(seed);
    // Any 32 bytes are an Ed25519 secret key.
    let ids: Vec<PeerId> = (0..n)
        .filter_map(|i| {
            let mut bytes = [7u8; 32];
            bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Keypair::ed25519_from_bytes(bytes)
                .ok()
                .map(|k| k.public().to_peer_id())
        })
        .collect();
    let n = ids.len();
    let index: HashMap<PeerId, usize> = ids.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let adjacent = graph(n, degree, &mut rng);
    let neighbours: Vec<Vec<PeerId>> = adjacent
        .iter()
        .map(|a| a.iter().map(|j| ids[*j]).collect())
        .collect();
    let config = SnapshotConfig {
        // Virtual time runs from a fixed instant; nothing is late.
        deadline: Duration::from_secs(3600),
        ..SnapshotConfig::default()
    };
    let mut recorders: Vec<Recorder<i64, InFlight>> = ids
        .iter()
        .map(|me| Recorder::new(*me, config.clone()))
        .collect();
    let minted = 1_000u64;
    let mut balances = vec![minted; n];
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);

    let mut clock = Scheduler::default();
    for i in 0..n {
        let first = rng.gen_range(0..transfer_ms.max(1));
        clock.at(first, Event::Transfer(i));
    }
    let start_ms = 5 * transfer_ms.max(1);
    clock.at(start_ms, Event::Initiate);

    let marker_frame_bytes = |id| 12 + ChannelFrame::Marker(Marker { id }).encode().len() as u64;
    let mut result = SimResult {
        peers: n,
        channels: adjacent.iter().map(BTreeSet::len).sum(),
        markers: 0,
        marker_bytes: 0,
        part_bytes: 0,
        duration_ms: 0,
        in_flight: 0,
        complete: false,
        channels_consistent: false,
        tokens_conserved: false,
    };
    let mut parts: Vec<LocalSnapshot<i64, InFlight>> = Vec::new();
    let mut parts_arrived = 0usize;
    let mut last_part_ms = 0u64;

    // What a peer's recorded state is as it travels: its balance and its connections.
    let state_of = |i: usize, balance: i64| PeerState {
        name: crate::names::peer_name(&ids[i]),
        connections: neighbours[i].iter().map(|p| p.to_base58()).collect(),
        tokens: Some(TokenRecord {
            minted,
            balance: balance.max(0) as u64,
            running: true,
            ..TokenRecord::default()
        }),
        ..PeerState::default()
    };

    while let Some((now, event)) = clock.next() {
        let mut actions = Vec::new();
        let mut actor = 0;
        match event {
            Event::Transfer(i) => {
                if parts_arrived == n {
                    continue;
                }
                let next = now + rng.gen_range(transfer_ms / 2..=transfer_ms * 3 / 2).max(1);
                clock.at(next, Event::Transfer(i));
                if balances[i] == 0 || adjacent[i].is_empty() {
                    continue;
                }
                let to = *adjacent[i]
                    .iter()
                    .nth(rng.gen_range(0..adjacent[i].len()))
                    .unwrap_or(&i);
                let amount = rng.gen_range(1..=balances[i].min(50));
                balances[i] -= amount;
                recorders[i].on_sent(ids[to]);
                clock.send(&mut rng, now, i, to, Frame::Tokens(amount));
            }
            Event::Initiate => {
                actor = 0;
                let state = balances[0] as i64;
                if let Ok((_, out)) =
                    recorders[0].initiate(at(now), state, &neighbours[0], &neighbours[0])
                {
                    actions = out;
                }
            }
            Event::Deliver { from, to, frame } => {
                actor = to;
                match frame {
                    Frame::Tokens(amount) => {
                        balances[to] += amount;
                        actions =
                            recorders[to].on_received(ids[from], &InFlight::Tokens { amount });
                    }
                    Frame::Marker(id) => {
                        let balance = balances[to] as i64;
                        actions = recorders[to]
                            .on_marker(
                                at(now),
                                ids[from],
                                id,
                                || balance,
                                &neighbours[to],
                                &neighbours[to],
                            )
                            .unwrap_or_default();
                    }
                }
            }
            Event::Part => {
                parts_arrived += 1;
                last_part_ms = now;
                continue;
            }
        }
        for action in actions {
            match action {
                SnapshotAction::SendMarker { to, id } => {
                    result.markers += 1;
                    result.marker_bytes += marker_frame_bytes(id);
                    let j = index[&to];
                    clock.send(&mut rng, now, actor, j, Frame::Marker(id));
                }
                SnapshotAction::Recorded(part) => {
                    let wire = LocalSnapshot {
                        id: part.id,
                        peer: part.peer,
                        state: state_of(actor, part.state),
                        sent: part.sent.clone(),
                        incoming: part.incoming.clone(),
                        complete: part.complete,
                        missing: part.missing.clone(),
                    };
                    let request = SnapshotRequest::Part {
                        part: Box::new(PartWire::from_part(&wire)),
                    };
                    result.part_bytes += request.encode().map_or(0, |b| b.len() as u64);
                    let delay = if actor == 0 { 0 } else { rng.gen_range(2..=20) };
                    clock.at(now + delay, Event::Part);
                    parts.push(part);
                }
            }
        }
    }
    result.duration_ms = last_part_ms.saturating_sub(start_ms);
    let by_peer = parts.into_iter().map(|p| (p.peer, p)).collect();
    let global = assemble(&ids, &by_peer);
    result.complete = global.complete && parts_arrived == n;
    result.channels_consistent = global.channels_consistent;
    result.in_flight = global.channels.iter().map(|c| c.in_flight.len()).sum();
    let in_flight = super::state::tokens_in_flight(&global.channels);
    let recorded: i64 = global.states.values().sum();
    result.tokens_conserved = recorded + in_flight as i64 == (minted * n as u64) as i64;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_snapshot_is_consistent_on_random_graphs_and_full_meshes() {
        for (n, degree, seed) in [(10, 9, 1), (30, 4, 2), (60, 8, 3)] {
            let r = simulate(n, degree, 10, seed);
            assert!(r.complete, "{r:?}");
            assert!(r.channels_consistent && r.tokens_conserved, "{r:?}");
            assert_eq!(
                r.markers as usize, r.channels,
                "one marker per channel: {r:?}"
            );
            assert!(r.duration_ms > 0 && r.part_bytes > 0, "{r:?}");
        }
    }
}
