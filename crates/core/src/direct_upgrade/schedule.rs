//! When to try a direct connection to a peer we only reach through the relay, and what to do
//! when it fails: the timing rules of the upgrade.
//!
//! Two tabs connected through a relay circuit should move to a direct WebRTC connection (the
//! relay only introduces them). Both sides run these rules; to avoid both dialing at once
//! (two peer connections for one pair), one side *leads* and dials first, and the other dials
//! only if nothing direct has appeared after a grace period (which also covers peers, such as
//! js-libp2p nodes dialing a plain circuit address, that never start an upgrade themselves).
//! Who leads is decided by the caller ([`DirectUpgrades`](super::DirectUpgrades): the side that
//! dialed the relayed connection). A failed attempt is retried with exponential backoff; the
//! relayed connection stays in use meanwhile. At most a few attempts run at once, because every
//! attempt holds a browser peer connection.
//!
//! While peers are still arriving through the relay (tabs opened together), no attempt starts:
//! they wait until none has arrived for `settle`, at most `max_settle` from the first. Meeting
//! is what a learner waits for; an attempt is a browser peer connection (ICE, DTLS, SCTP) that
//! takes the same two cores the handshakes through the relay need.

use std::collections::HashMap;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};
use web_time::{Duration, Instant};

use crate::peers::millis;

/// Pace and limits of direct-connection attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeConfig {
    /// How long the leading side waits before dialing, once the peer's identify named its
    /// `/webrtc` address (the listener has been ready since its reservation, so no wait is
    /// needed by default).
    pub first_delay: Duration,
    /// How long the other side waits for the leading one before dialing itself.
    pub takeover_delay: Duration,
    /// The same when the leading side runs these rules too (a tabmesh tab): its offer is sure
    /// to come, but it may wait in its queue of attempts (`max_concurrent`) for a while when
    /// it meets many peers at once; dialing sooner would cross it.
    pub patient_takeover_delay: Duration,
    /// First retry delay after a failure; doubles per failure.
    pub initial_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Attempts running at once at most.
    pub max_concurrent: usize,
    /// How long a relayed connection stays after a direct one to the same peer is up (requests
    /// already on it finish) before it is closed: the relay is only for meeting.
    pub relayed_grace: Duration,
    /// `/webrtc` addresses kept per peer at most.
    pub max_addrs_per_peer: usize,
    /// Attempts wait until no peer has arrived through the relay for this long (zero: they
    /// do not wait).
    pub settle: Duration,
    /// ... but no longer than this after the first peer of the burst arrived.
    pub max_settle: Duration,
}

impl Default for UpgradeConfig {
    fn default() -> Self {
        Self {
            first_delay: Duration::ZERO,
            takeover_delay: Duration::from_secs(8),
            patient_takeover_delay: Duration::from_secs(30),
            initial_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
            max_concurrent: 8,
            relayed_grace: Duration::from_secs(3),
            max_addrs_per_peer: 4,
            settle: Duration::from_millis(150),
            max_settle: Duration::from_secs(1),
        }
    }
}

/// Who dials first toward a direct connection to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// We do, after `first_delay`.
    Ours,
    /// The peer should; we take over after `takeover_delay` if nothing direct appeared (a peer
    /// that may never offer, such as a js-libp2p node that dialed a plain circuit).
    Theirs,
    /// The peer will: it runs these rules too. We take over only after
    /// `patient_takeover_delay`, in case its attempts never reach us.
    TheirsSurely,
}

/// Where a peer stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Relayed only; try at `at`.
    Waiting { at: Instant },
    /// An attempt (ours) is running.
    Attempting,
    /// A direct connection is up.
    Direct,
}

#[derive(Debug, Clone)]
struct Entry {
    state: State,
    failures: u32,
    last_error: Option<String>,
    /// When the peer was first seen relayed only.
    relayed_since: Option<Instant>,
    /// From `relayed_since` to the first direct connection.
    took: Option<Duration>,
    /// The peer's offer arrived while we waited: ours must not cross it.
    peer_offered: bool,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleAction {
    /// Dial the peer directly now; report the outcome with
    /// [`UpgradeSchedule::on_direct_established`] or [`UpgradeSchedule::on_attempt_failed`].
    Dial(PeerId),
}

/// Where the move of one peer to a direct connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpgradeState {
    /// Reached through the relay only; an attempt is planned.
    Waiting,
    /// An attempt of ours is running.
    Attempting,
    /// A direct connection is up.
    Direct,
}

/// A peer's upgrade state, for the UI and `state()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeView {
    /// The peer.
    pub peer_id: String,
    /// `waiting`, `attempting` or `direct`.
    pub state: UpgradeState,
    /// Milliseconds to the next attempt, while waiting.
    pub next_attempt_in_ms: Option<u64>,
    /// Failed attempts in a row.
    pub failures: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Milliseconds from the relayed connection to the first direct one.
    pub upgrade_ms: Option<u64>,
}

/// Peers arriving through the relay one after another: attempts wait until they stop.
#[derive(Debug, Clone, Copy)]
struct Burst {
    first: Instant,
    last: Instant,
}

/// The direct-upgrade timing rules for every peer of one node.
#[derive(Debug, Clone)]
pub struct UpgradeSchedule {
    local: PeerId,
    config: UpgradeConfig,
    peers: HashMap<PeerId, Entry>,
    arriving: Option<Burst>,
}

impl UpgradeSchedule {
    /// Rules for the node `local`.
    pub fn new(local: PeerId, config: UpgradeConfig) -> Self {
        Self {
            local,
            config,
            peers: HashMap::new(),
            arriving: None,
        }
    }

    /// A peer arrived through the relay (a new relayed connection): attempts wait for the
    /// arrivals to stop.
    pub fn on_arrival(&mut self, now: Instant) {
        if self.config.settle.is_zero() {
            return;
        }
        let ongoing = self.held_until(now).is_some();
        match &mut self.arriving {
            Some(burst) if ongoing => burst.last = now,
            _ => {
                self.arriving = Some(Burst {
                    first: now,
                    last: now,
                })
            }
        }
    }

    /// When the arrivals of `burst` count as stopped.
    fn settled_at(&self, burst: &Burst) -> Instant {
        (burst.last + self.config.settle).min(burst.first + self.config.max_settle)
    }

    /// Until when attempts wait for arrivals to stop, if they do at `now`.
    fn held_until(&self, now: Instant) -> Option<Instant> {
        let until = self.settled_at(self.arriving.as_ref()?);
        (now < until).then_some(until)
    }

    /// `peer` is connected through the relay (and not directly); `turn` tells who dials first.
    /// Called again when that may have changed (another relayed connection): a side that finds
    /// it leads after all dials at once, unless the peer's offer already came.
    pub fn on_relayed(&mut self, now: Instant, peer: PeerId, turn: Turn) {
        let at = now + self.delay(turn);
        let entry = self.peers.entry(peer).or_insert(Entry {
            state: State::Waiting { at },
            failures: 0,
            last_error: None,
            relayed_since: Some(now),
            took: None,
            peer_offered: false,
        });
        if let State::Waiting { at: planned } = &mut entry.state
            && entry.failures == 0
            && !entry.peer_offered
        {
            *planned = (*planned).min(at);
        }
    }

    /// A direct connection to `peer` is up (ours or theirs).
    pub fn on_direct_established(&mut self, now: Instant, peer: PeerId) {
        let entry = self.peers.entry(peer).or_insert(Entry {
            state: State::Direct,
            failures: 0,
            last_error: None,
            relayed_since: None,
            took: None,
            peer_offered: false,
        });
        if entry.took.is_none() {
            entry.took = entry
                .relayed_since
                .map(|since| now.saturating_duration_since(since));
        }
        entry.state = State::Direct;
        entry.failures = 0;
        entry.last_error = None;
        entry.peer_offered = false;
    }

    /// `peer` is setting up a direct connection to us (its offer arrived): do not cross it with
    /// an offer of ours; if it fails, ours comes after the takeover delay.
    pub fn on_remote_attempt(&mut self, now: Instant, peer: PeerId) {
        let takeover = now + self.config.takeover_delay;
        if let Some(entry) = self.peers.get_mut(&peer)
            && let State::Waiting { at } = &mut entry.state
        {
            *at = (*at).max(takeover);
            entry.peer_offered = true;
        }
    }

    /// Our attempt to reach `peer` directly failed.
    pub fn on_attempt_failed(&mut self, now: Instant, peer: PeerId, error: String) {
        let config = &self.config;
        if let Some(entry) = self.peers.get_mut(&peer)
            && entry.state == State::Attempting
        {
            entry.failures += 1;
            let backoff = config
                .initial_backoff
                .saturating_mul(1 << (entry.failures - 1).min(16))
                .min(config.max_backoff);
            entry.state = State::Waiting { at: now + backoff };
            entry.last_error = Some(error);
        }
    }

    /// The direct connection to `peer` closed while the relayed one is still there: try again,
    /// with the same delays as for a new peer (so the two sides do not offer at once).
    pub fn on_direct_closed(&mut self, now: Instant, peer: PeerId, turn: Turn) {
        let delay = self.delay(turn);
        if let Some(entry) = self.peers.get_mut(&peer)
            && entry.state == State::Direct
        {
            entry.state = State::Waiting { at: now + delay };
        }
    }

    /// Whether our peer id is the smaller of the two: the tie-break when both sides could lead,
    /// and the side whose connection both keep when both offered at once.
    pub fn is_smaller(&self, peer: &PeerId) -> bool {
        self.local.to_bytes() < peer.to_bytes()
    }

    /// The leading side dials at once; the other only takes over later.
    fn delay(&self, turn: Turn) -> Duration {
        match turn {
            Turn::Ours => self.config.first_delay,
            Turn::Theirs => self.config.takeover_delay,
            Turn::TheirsSurely => self.config.patient_takeover_delay,
        }
    }

    /// `peer` is gone altogether.
    pub fn on_disconnected(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// The configuration.
    pub fn config(&self) -> &UpgradeConfig {
        &self.config
    }

    /// The attempts due at `now`, within the concurrency limit, once arrivals have stopped.
    pub fn poll(&mut self, now: Instant) -> Vec<ScheduleAction> {
        if self.held_until(now).is_some() {
            return Vec::new();
        }
        let running = self
            .peers
            .values()
            .filter(|e| e.state == State::Attempting)
            .count();
        let mut due: Vec<(Instant, PeerId)> = self
            .peers
            .iter()
            .filter_map(|(p, e)| match e.state {
                State::Waiting { at } if at <= now => Some((at, *p)),
                _ => None,
            })
            .collect();
        // Oldest first, then by id: deterministic.
        due.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| a.1.to_bytes().cmp(&b.1.to_bytes()))
        });
        let room = self.config.max_concurrent.saturating_sub(running);
        due.into_iter()
            .take(room)
            .map(|(_, peer)| {
                if let Some(entry) = self.peers.get_mut(&peer) {
                    entry.state = State::Attempting;
                }
                ScheduleAction::Dial(peer)
            })
            .collect()
    }

    /// When [`poll`](Self::poll) has something to do next.
    ///
    /// While as many attempts run as allowed, nothing can start before one of them ends (an
    /// event, not a time): then there is no timeout, even if a peer's turn has come.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let running = self
            .peers
            .values()
            .filter(|e| e.state == State::Attempting)
            .count();
        if running >= self.config.max_concurrent {
            return None;
        }
        let next = self
            .peers
            .values()
            .filter_map(|e| match e.state {
                State::Waiting { at } => Some(at),
                _ => None,
            })
            .min()?;
        let held = self.arriving.as_ref().map(|b| self.settled_at(b));
        Some(held.map_or(next, |until| next.max(until)))
    }

    /// `peer`'s state.
    pub fn peer_view(&self, now: Instant, peer: &PeerId) -> Option<UpgradeView> {
        let held = self.held_until(now);
        self.peers
            .get(peer)
            .map(|e| Self::entry_view(now, held, peer, e))
    }

    /// `held`: until when arrivals hold the attempts.
    fn entry_view(now: Instant, held: Option<Instant>, peer: &PeerId, e: &Entry) -> UpgradeView {
        UpgradeView {
            peer_id: peer.to_base58(),
            state: match e.state {
                State::Waiting { .. } => UpgradeState::Waiting,
                State::Attempting => UpgradeState::Attempting,
                State::Direct => UpgradeState::Direct,
            },
            next_attempt_in_ms: match e.state {
                State::Waiting { at } => {
                    let at = held.map_or(at, |until| at.max(until));
                    Some(millis(at.saturating_duration_since(now)))
                }
                _ => None,
            },
            failures: e.failures,
            last_error: e.last_error.clone(),
            upgrade_ms: e.took.map(millis),
        }
    }

    /// Every known peer's state, by peer id.
    pub fn view(&self, now: Instant) -> Vec<UpgradeView> {
        let held = self.held_until(now);
        let mut out: Vec<UpgradeView> = self
            .peers
            .iter()
            .map(|(peer, e)| Self::entry_view(now, held, peer, e))
            .collect();
        out.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::ordered_pair;
    use super::*;
    use libp2p_identity::Keypair;

    #[test]
    fn the_leading_side_dials_first_and_the_other_takes_over_later() {
        let (small, large) = ordered_pair();
        let config = UpgradeConfig::default();
        let t0 = Instant::now();
        let mut at_small = UpgradeSchedule::new(small, config.clone());
        let mut at_large = UpgradeSchedule::new(large, config.clone());
        at_small.on_relayed(t0, large, Turn::Ours);
        at_large.on_relayed(t0, small, Turn::Theirs);
        let soon = t0 + config.first_delay;
        assert_eq!(soon, t0, "by default the leading side dials at once");
        assert_eq!(at_small.poll(soon), vec![ScheduleAction::Dial(large)]);
        assert_eq!(at_large.poll(soon), vec![]);
        assert_eq!(at_large.poll_timeout(), Some(t0 + config.takeover_delay));
        // The large side's offer arrives first: the small side does not cross it.
        let mut crossing = UpgradeSchedule::new(small, config.clone());
        crossing.on_relayed(t0, large, Turn::Ours);
        crossing.on_remote_attempt(t0, large);
        assert_eq!(crossing.poll(soon), vec![]);
        assert_eq!(crossing.poll_timeout(), Some(t0 + config.takeover_delay));
        // The small side's dial succeeds: the large side sees the direct connection, never dials.
        at_small.on_direct_established(soon, large);
        at_large.on_direct_established(soon, small);
        assert_eq!(at_large.poll(t0 + config.takeover_delay), vec![]);
        assert_eq!(at_large.view(t0)[0].state, UpgradeState::Direct);
        assert_eq!(
            at_small.peer_view(soon, &large).unwrap().upgrade_ms,
            Some(millis(config.first_delay))
        );
    }

    #[test]
    fn failures_back_off_exponentially_and_the_relay_path_stays() {
        let (small, large) = ordered_pair();
        let config = UpgradeConfig::default();
        let t0 = Instant::now();
        let mut u = UpgradeSchedule::new(small, config.clone());
        u.on_relayed(t0, large, Turn::Ours);
        let mut now = t0 + config.first_delay;
        for failures in 1..=8u32 {
            assert_eq!(
                u.poll(now),
                vec![ScheduleAction::Dial(large)],
                "attempt {failures}"
            );
            // No second attempt while one runs.
            assert_eq!(u.poll(now), vec![]);
            u.on_attempt_failed(now, large, "ICE failed".into());
            let expected = config
                .initial_backoff
                .saturating_mul(1 << (failures - 1))
                .min(config.max_backoff);
            assert_eq!(u.poll_timeout(), Some(now + expected));
            assert_eq!(u.poll(now + expected - Duration::from_millis(1)), vec![]);
            now += expected;
        }
        let view = &u.view(now)[0];
        assert_eq!(view.failures, 8);
        assert_eq!(view.last_error.as_deref(), Some("ICE failed"));
    }

    #[test]
    fn attempts_are_bounded_and_a_lost_direct_link_is_retried() {
        let local = Keypair::generate_ed25519().public().to_peer_id();
        let config = UpgradeConfig {
            max_concurrent: 2,
            ..UpgradeConfig::default()
        };
        let t0 = Instant::now();
        let mut u = UpgradeSchedule::new(local, config.clone());
        let peers: Vec<PeerId> = (0..5)
            .map(|_| Keypair::generate_ed25519().public().to_peer_id())
            .collect();
        for p in &peers {
            u.on_relayed(t0, *p, Turn::Theirs);
        }
        let later = t0 + config.takeover_delay;
        let first = u.poll(later);
        assert_eq!(first.len(), 2);
        // Three peers' turn has come, but no attempt can start before one ends: no timeout
        // (a due time the driver cannot act on would make it wake up for nothing, forever).
        assert_eq!(u.poll(later), vec![]);
        assert_eq!(u.poll_timeout(), None);
        let ScheduleAction::Dial(done) = first[0].clone();
        u.on_direct_established(later, done);
        assert!(
            u.poll_timeout().is_some_and(|at| at <= later),
            "a slot is free again"
        );
        assert_eq!(u.poll(later).len(), 1);
        // The direct connection drops: back to waiting, dialed again later (same delays).
        u.on_direct_closed(later, done, Turn::Theirs);
        let view = u.peer_view(later, &done).expect("still tracked");
        assert_eq!(view.state, UpgradeState::Waiting);
        assert!(view.next_attempt_in_ms.is_some());
        u.on_disconnected(&done);
        assert!(u.view(later).iter().all(|v| v.peer_id != done.to_base58()));
    }
}
