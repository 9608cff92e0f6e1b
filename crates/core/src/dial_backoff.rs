//! Dial backoff: a peer none of whose addresses answered is not dialed again for a while.
//!
//! rust-libp2p's swarm dials whatever a behaviour asks for, as often as it asks. Kademlia keeps a
//! peer in its routing table after every dial to it failed (with its last address, so that a
//! short outage does not empty the table) and names it in its replies, so a peer that has left
//! is asked again by every lookup of every peer that heard of it. Under churn that traffic grows
//! with every departure: the soak measured 0.4 refused relay circuits a second from each native,
//! all to natives that had left, until the machine had no CPU left. go-libp2p's swarm has the
//! rule this module implements: after a dial that reached none of a peer's addresses, further
//! dials to that peer are refused locally for [`DialBackoffConfig::base`], doubling with each
//! further failure up to [`DialBackoffConfig::max`]. A connection to the peer, either way,
//! forgets its failures; so does a long quiet spell (it starts again from `base`).
//!
//! The table is bounded ([`DialBackoffConfig::max_entries`]): past it, the entry whose wait ends
//! first is dropped.

use std::collections::HashMap;
use std::hash::Hash;

use web_time::{Duration, Instant};

/// How long unreachable peers wait.
#[derive(Debug, Clone)]
pub struct DialBackoffConfig {
    /// The wait after a first failure.
    pub base: Duration,
    /// The longest wait; also how long after its wait ends a peer's failures are forgotten.
    pub max: Duration,
    /// Most peers remembered.
    pub max_entries: usize,
}

impl Default for DialBackoffConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(5),
            max: Duration::from_secs(300),
            max_entries: 1024,
        }
    }
}

/// A dial refused because the peer is waiting out its backoff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreachable at its last {failures} dial(s); next try in {} s", retry_in.as_millis().div_ceil(1000).max(1))]
pub struct BackedOff {
    /// Failed dials in a row.
    pub failures: u32,
    /// Until the next dial is allowed.
    pub retry_in: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    until: Instant,
}

/// Which peers are not to be dialed now.
#[derive(Debug)]
pub struct DialBackoff<P> {
    config: DialBackoffConfig,
    entries: HashMap<P, Entry>,
    refused: u64,
}

impl<P: Eq + Hash + Clone> DialBackoff<P> {
    /// An empty table with `config`'s waits.
    pub fn new(config: DialBackoffConfig) -> Self {
        Self {
            config,
            entries: HashMap::new(),
            refused: 0,
        }
    }

    /// A dial to `peer` reached none of its addresses at `now`: returns how long it now waits.
    pub fn failed(&mut self, now: Instant, peer: P) -> Duration {
        let forget_after = self.config.max;
        let failures = match self.entries.get(&peer) {
            Some(e) if now < e.until + forget_after => e.failures + 1,
            _ => 1,
        };
        if !self.entries.contains_key(&peer) && self.entries.len() >= self.config.max_entries {
            self.evict(now);
        }
        let wait = self.wait(failures);
        self.entries.insert(
            peer,
            Entry {
                failures,
                until: now + wait,
            },
        );
        wait
    }

    /// A connection to `peer` came up: its failures are forgotten.
    pub fn connected(&mut self, peer: &P) {
        self.entries.remove(peer);
    }

    /// Whether `peer` may be dialed at `now`; a refusal is counted.
    pub fn check(&mut self, now: Instant, peer: &P) -> Result<(), BackedOff> {
        match self.entries.get(peer) {
            Some(e) if now < e.until => {
                self.refused += 1;
                Err(BackedOff {
                    failures: e.failures,
                    retry_in: e.until - now,
                })
            }
            _ => Ok(()),
        }
    }

    /// Peers waiting at `now`.
    pub fn waiting(&self, now: Instant) -> usize {
        self.entries.values().filter(|e| now < e.until).count()
    }

    /// Dials refused since start.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Peers remembered (waiting, or with failures not yet forgotten).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no peer is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `base` × 2^(failures − 1), at most `max`.
    fn wait(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        (self.config.base * 2u32.pow(doublings)).min(self.config.max)
    }

    /// Makes room: forgets peers whose failures are forgotten anyway, else the one whose wait
    /// ends first.
    fn evict(&mut self, now: Instant) {
        let forget_after = self.config.max;
        self.entries.retain(|_, e| now < e.until + forget_after);
        if self.entries.len() < self.config.max_entries {
            return;
        }
        if let Some(first) = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.until)
            .map(|(p, _)| p.clone())
        {
            self.entries.remove(&first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> DialBackoff<u32> {
        DialBackoff::new(DialBackoffConfig {
            base: Duration::from_secs(5),
            max: Duration::from_secs(60),
            max_entries: 3,
        })
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_peer_never_failed_may_be_dialed() {
        let mut t = table();
        assert_eq!(t.check(Instant::now(), &1), Ok(()));
        assert_eq!(t.refused(), 0);
    }

    #[test]
    fn a_failed_peer_waits_base_then_may_be_dialed_again() {
        let mut t = table();
        let t0 = Instant::now();
        assert_eq!(t.failed(t0, 1), S(5));
        let refused = t.check(t0 + S(2), &1).expect_err("waiting");
        assert_eq!(refused.failures, 1);
        assert_eq!(refused.retry_in, S(3));
        assert_eq!(
            refused.to_string(),
            "unreachable at its last 1 dial(s); next try in 3 s"
        );
        assert_eq!(t.check(t0 + S(5), &1), Ok(()));
        assert_eq!(t.refused(), 1);
        assert_eq!(t.check(t0, &2), Ok(()), "other peers are not affected");
    }

    #[test]
    fn each_further_failure_doubles_the_wait_up_to_max() {
        let mut t = table();
        let mut now = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..6 {
            let wait = t.failed(now, 1);
            waits.push(wait.as_secs());
            now += wait;
        }
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
    }

    #[test]
    fn a_connection_forgets_the_failures() {
        let mut t = table();
        let t0 = Instant::now();
        t.failed(t0, 1);
        t.failed(t0 + S(5), 1);
        t.connected(&1);
        assert_eq!(t.check(t0 + S(6), &1), Ok(()));
        assert_eq!(t.failed(t0 + S(7), 1), S(5), "starts again from base");
    }

    #[test]
    fn failures_long_ago_are_forgotten() {
        let mut t = table();
        let t0 = Instant::now();
        t.failed(t0, 1);
        t.failed(t0 + S(5), 1);
        // The second wait ended at 15 s; max (60 s) later the failures no longer count.
        assert_eq!(t.failed(t0 + S(74), 1), S(20), "still remembered");
        assert_eq!(t.failed(t0 + S(94) + S(60), 1), S(5), "forgotten");
    }

    #[test]
    fn the_table_is_bounded_dropping_the_wait_that_ends_first() {
        let mut t = table();
        let t0 = Instant::now();
        t.failed(t0, 1);
        t.failed(t0 + S(1), 2);
        t.failed(t0 + S(2), 3);
        t.failed(t0 + S(3), 4);
        assert_eq!(t.len(), 3);
        assert_eq!(t.check(t0 + S(4), &1), Ok(()), "peer 1's wait ended first");
        for peer in [2, 3, 4] {
            assert!(t.check(t0 + S(4), &peer).is_err(), "peer {peer}");
        }
        assert_eq!(t.waiting(t0 + S(4)), 3);
    }

    #[test]
    fn making_room_forgets_stale_entries_first() {
        let mut t = table();
        let t0 = Instant::now();
        t.failed(t0, 1);
        t.failed(t0, 2);
        t.failed(t0 + S(100), 3);
        t.failed(t0 + S(101), 4);
        assert_eq!(t.len(), 2, "1 and 2 were forgotten together");
    }
}
