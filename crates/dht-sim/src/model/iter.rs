//! One iterative lookup's choice of whom to ask next, by the rules libp2p-kad 0.49 applies
//! (its closest-peers iterator), so that the model's rounds and peers contacted are the ones
//! tabs see:
//!
//! 1. The lookup starts from at most k peers of our routing table, the closest to the target.
//! 2. At most α requests are in flight while the lookup makes progress.
//! 3. A reply makes progress when it names a peer not seen before that is closer than the k-th
//!    closest known peer (or while fewer than k are known). After α replies in a row without
//!    progress the lookup is *stalled*: it may then have k requests in flight, and the first
//!    reply with progress ends the stall.
//! 4. Peers are asked in order of distance; the lookup ends when the k closest peers not known
//!    to have failed have all answered, or when nobody is left to ask and nothing is in flight.
//!
//! Peers are indices into the model's peer table; distances are [`Key`] distances.

use std::collections::BTreeMap;

use super::table::{Distance, Key};

/// Where a peer of the lookup stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotContacted,
    Waiting,
    Succeeded,
    Failed,
}

/// What the lookup does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Ask this peer.
    Ask(u32),
    /// Wait for replies in flight.
    Wait,
    /// Done.
    Finished,
}

/// The iterator.
#[derive(Debug, Clone)]
pub(crate) struct ClosestIter {
    target: Key,
    k: usize,
    alpha: usize,
    stalled: bool,
    no_progress: usize,
    finished: bool,
    waiting: usize,
    peers: BTreeMap<Distance, (u32, State)>,
}

impl ClosestIter {
    /// A lookup for `target` starting from `known` (peer, key), of which the `k` closest count.
    pub(crate) fn new(
        target: Key,
        known: impl IntoIterator<Item = (u32, Key)>,
        k: usize,
        alpha: usize,
    ) -> Self {
        let mut peers = BTreeMap::new();
        for (peer, key) in known {
            peers.insert(key.distance(&target), (peer, State::NotContacted));
        }
        while peers.len() > k {
            peers.pop_last();
        }
        Self {
            target,
            k,
            alpha,
            stalled: false,
            no_progress: 0,
            finished: false,
            waiting: 0,
            peers,
        }
    }

    /// `peer` (at `key`) answered naming `closer`. Returns false if the answer was not expected.
    pub(crate) fn on_success(
        &mut self,
        peer: u32,
        key: &Key,
        closer: impl IntoIterator<Item = (u32, Key)>,
    ) -> bool {
        if self.finished {
            return false;
        }
        let distance = key.distance(&self.target);
        match self.peers.get_mut(&distance) {
            Some((p, state)) if *p == peer && *state == State::Waiting => {
                *state = State::Succeeded;
                self.waiting -= 1;
            }
            _ => return false,
        }
        // Rule 3: progress is a new peer closer than the k-th closest known (any new peer while
        // fewer than k are known).
        let kth = self
            .peers
            .keys()
            .nth(self.k - 1)
            .or_else(|| self.peers.keys().last())
            .copied()
            .unwrap_or(distance);
        let mut progress = self.peers.len() < self.k;
        for (p, key) in closer {
            let d = key.distance(&self.target);
            if let std::collections::btree_map::Entry::Vacant(e) = self.peers.entry(d) {
                e.insert((p, State::NotContacted));
                progress |= d < kth;
            }
        }
        if progress {
            self.no_progress = 0;
            self.stalled = false;
        } else if !self.stalled {
            self.no_progress += 1;
            self.stalled = self.no_progress >= self.alpha;
        }
        true
    }

    /// The request to `peer` (at `key`) failed.
    pub(crate) fn on_failure(&mut self, peer: u32, key: &Key) -> bool {
        if self.finished {
            return false;
        }
        match self.peers.get_mut(&key.distance(&self.target)) {
            Some((p, state)) if *p == peer && *state == State::Waiting => {
                *state = State::Failed;
                self.waiting -= 1;
                true
            }
            _ => false,
        }
    }

    /// Rule 4: the next peer to ask, or whether to wait or stop.
    pub(crate) fn next(&mut self) -> Next {
        if self.finished {
            return Next::Finished;
        }
        let capacity = if self.stalled {
            self.k.max(self.alpha)
        } else {
            self.alpha
        };
        let at_capacity = self.waiting >= capacity;
        // Succeeded peers closer than any peer still waiting count towards the k results.
        let mut succeeded = Some(0);
        for (peer, state) in self.peers.values_mut() {
            match state {
                State::Waiting => {
                    if at_capacity {
                        return Next::Wait;
                    }
                    succeeded = None;
                }
                State::Succeeded => {
                    if let Some(n) = &mut succeeded {
                        *n += 1;
                        if *n >= self.k {
                            self.finished = true;
                            return Next::Finished;
                        }
                    }
                }
                State::NotContacted => {
                    if at_capacity {
                        return Next::Wait;
                    }
                    *state = State::Waiting;
                    self.waiting += 1;
                    return Next::Ask(*peer);
                }
                State::Failed => {}
            }
        }
        if self.waiting > 0 {
            Next::Wait
        } else {
            self.finished = true;
            Next::Finished
        }
    }

    /// Ends the lookup early (a get that holds its quorum).
    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }

    /// The k closest peers that answered, closest first.
    pub(crate) fn answered(&self) -> Vec<u32> {
        self.peers
            .values()
            .filter(|(_, s)| *s == State::Succeeded)
            .map(|(p, _)| *p)
            .take(self.k)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Peer `i`'s key: distance `i` from the target 0 (so peer 1 is the closest).
    fn key(i: u32) -> Key {
        Key::from_u128(0, u128::from(i))
    }

    fn peers(ids: impl IntoIterator<Item = u32>) -> Vec<(u32, Key)> {
        ids.into_iter().map(|i| (i, key(i))).collect()
    }

    fn target() -> Key {
        Key::from_u128(0, 0)
    }

    #[test]
    fn starts_from_the_k_closest_known_and_asks_alpha_at_a_time_closest_first() {
        let mut it = ClosestIter::new(target(), peers([9, 3, 7, 1, 5]), 4, 2);
        assert_eq!(it.next(), Next::Ask(1));
        assert_eq!(it.next(), Next::Ask(3));
        assert_eq!(it.next(), Next::Wait, "α = 2 in flight");
        assert!(it.on_success(1, &key(1), peers([2])));
        assert_eq!(it.next(), Next::Ask(2), "a closer peer named goes first");
        assert!(
            !it.on_success(9, &key(9), peers([])),
            "peer 9 was dropped: not in the k"
        );
    }

    #[test]
    fn ends_when_the_k_closest_answered_even_with_farther_ones_unasked() {
        let mut it = ClosestIter::new(target(), peers([1, 2, 3, 4]), 2, 1);
        assert_eq!(it.next(), Next::Ask(1));
        it.on_success(1, &key(1), peers([]));
        assert_eq!(it.next(), Next::Ask(2));
        it.on_success(2, &key(2), peers([]));
        assert_eq!(it.next(), Next::Finished);
        assert_eq!(it.answered(), [1, 2]);
    }

    #[test]
    fn a_failed_peer_is_skipped_and_the_next_closest_counts_instead() {
        let mut it = ClosestIter::new(target(), peers([1, 2, 3]), 2, 3);
        let asked: Vec<Next> = (0..3).map(|_| it.next()).collect();
        assert_eq!(
            asked,
            [Next::Ask(1), Next::Ask(2), Next::Wait],
            "only the k = 2 closest"
        );
        assert!(it.on_failure(1, &key(1)));
        assert!(it.on_success(2, &key(2), peers([3])));
        assert_eq!(it.next(), Next::Ask(3), "named by 2, counts instead of 1");
        it.on_success(3, &key(3), peers([]));
        assert_eq!(it.next(), Next::Finished);
        assert_eq!(it.answered(), [2, 3]);
    }

    #[test]
    fn alpha_replies_without_progress_stall_it_and_then_k_may_be_in_flight() {
        // k = 3, α = 1: after one reply naming nothing closer the lookup is stalled.
        let mut it = ClosestIter::new(target(), peers([1, 2, 3, 4, 5, 6]), 3, 1);
        assert_eq!(it.next(), Next::Ask(1));
        assert_eq!(it.next(), Next::Wait);
        it.on_success(1, &key(1), peers([50]));
        assert_eq!(it.next(), Next::Ask(2));
        assert_eq!(it.next(), Next::Ask(3), "stalled: up to k in flight");
        assert_eq!(it.next(), Next::Ask(50));
        assert_eq!(it.next(), Next::Wait, "k = 3 in flight");
        // A reply naming a closer peer ends the stall.
        it.on_success(2, &key(2), peers([0]));
        assert_eq!(
            it.next(),
            Next::Wait,
            "back to α = 1, and two are in flight"
        );
    }

    #[test]
    fn runs_dry_when_nobody_is_left_to_ask() {
        let mut it = ClosestIter::new(target(), peers([1]), 20, 3);
        assert_eq!(it.next(), Next::Ask(1));
        it.on_failure(1, &key(1));
        assert_eq!(it.next(), Next::Finished);
        assert!(it.answered().is_empty());
    }
}
