//! FIFO channels between two peers, kept in order across stream changes.
//!
//! Chandy-Lamport needs each channel to deliver in the order sent. One libp2p stream is ordered,
//! but a peer's connection changes under the channel (a relayed connection is replaced by a
//! direct one, and its streams with it), and frames still travelling on the old stream can then
//! arrive after the first ones on the new. So the sender numbers every frame of a channel
//! ([`Outbox`]) and the receiver hands frames on strictly in that order ([`Inbox`]), holding
//! those that arrive early (a bounded number). A frame seen twice is dropped; one that would
//! have to wait beyond the bound, or a channel that restarts its numbering, is a break: the
//! driver tells the snapshot recorder that the channel closed, so running snapshots end
//! incomplete instead of recording a wrong channel state.

use std::collections::BTreeMap;

/// The numbering of one outgoing channel.
#[derive(Debug, Default, Clone)]
pub struct Outbox {
    next: u64,
}

impl Outbox {
    /// The number of the next frame sent (from 1).
    pub fn stamp(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

/// Why a frame broke its channel's order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    /// Too many frames arrived ahead of a missing one.
    #[error("frame {missing} missing while {held} later frames wait")]
    Gap {
        /// The frame waited for.
        missing: u64,
        /// Frames held.
        held: usize,
    },
    /// The sender started numbering again (it restarted, or lost its side of the channel).
    #[error("the channel restarted at frame 1 after frame {0}")]
    Restarted(u64),
}

/// The order-keeping side of one incoming channel.
#[derive(Debug, Clone)]
pub struct Inbox<T> {
    delivered: u64,
    early: BTreeMap<u64, T>,
    max_early: usize,
    duplicates: u64,
}

impl<T> Inbox<T> {
    /// An inbox that holds at most `max_early` frames ahead of a missing one.
    pub fn new(max_early: usize) -> Self {
        Self {
            delivered: 0,
            early: BTreeMap::new(),
            max_early,
            duplicates: 0,
        }
    }

    /// Frame `seq` arrived: the frames that can now be handed on, in order, and whether the
    /// channel broke. On a gap beyond the bound, the missing frames are given up: what was
    /// held is handed on in order and the channel goes on after it. On a restart, the channel
    /// starts over with this frame. Either way the order the snapshot relies on was lost.
    pub fn accept(&mut self, seq: u64, frame: T) -> (Vec<T>, Option<Break>) {
        if seq == 1 && self.delivered > 0 {
            let after = self.delivered;
            self.early.clear();
            self.delivered = 1;
            return (vec![frame], Some(Break::Restarted(after)));
        }
        if seq <= self.delivered || self.early.contains_key(&seq) {
            self.duplicates += 1;
            return (Vec::new(), None);
        }
        if seq > self.delivered + 1 {
            if self.early.len() < self.max_early {
                self.early.insert(seq, frame);
                return (Vec::new(), None);
            }
            let broke = Break::Gap {
                missing: self.delivered + 1,
                held: self.early.len(),
            };
            self.early.insert(seq, frame);
            let held = std::mem::take(&mut self.early);
            self.delivered = seq.max(held.keys().next_back().copied().unwrap_or(seq));
            return (held.into_values().collect(), Some(broke));
        }
        let mut out = vec![frame];
        self.delivered = seq;
        while let Some(next) = self.early.remove(&(self.delivered + 1)) {
            out.push(next);
            self.delivered += 1;
        }
        (out, None)
    }

    /// Frames handed on so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Frames dropped as seen before.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Frames waiting for an earlier one.
    pub fn waiting(&self) -> usize {
        self.early.len()
    }

    /// Forgets everything (the channel closed).
    pub fn reset(&mut self) {
        self.delivered = 0;
        self.early.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    #[test]
    fn frames_are_handed_on_in_order_early_ones_held_and_repeats_dropped() {
        let mut outbox = Outbox::default();
        let seqs: Vec<u64> = (0..4).map(|_| outbox.stamp()).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        let mut inbox = Inbox::new(8);
        assert_eq!(inbox.accept(2, "b"), (vec![], None));
        assert_eq!(inbox.accept(3, "c"), (vec![], None));
        assert_eq!(inbox.waiting(), 2);
        assert_eq!(inbox.accept(1, "a"), (vec!["a", "b", "c"], None));
        assert_eq!(inbox.accept(2, "b again"), (vec![], None));
        assert_eq!(inbox.accept(4, "d"), (vec!["d"], None));
        assert_eq!((inbox.delivered(), inbox.duplicates()), (4, 1));
    }

    #[test]
    fn a_gap_beyond_the_bound_or_a_restart_breaks_the_channel_and_loses_nothing_that_came() {
        let mut inbox = Inbox::new(2);
        inbox.accept(1, 1);
        inbox.accept(3, 3);
        inbox.accept(4, 4);
        assert_eq!(
            inbox.accept(5, 5),
            (
                vec![3, 4, 5],
                Some(Break::Gap {
                    missing: 2,
                    held: 2
                })
            )
        );
        assert_eq!((inbox.waiting(), inbox.delivered()), (0, 5));
        assert_eq!(inbox.accept(6, 6), (vec![6], None));
        let mut inbox = Inbox::new(2);
        inbox.accept(1, 1);
        inbox.accept(2, 2);
        assert_eq!(inbox.accept(1, 10), (vec![10], Some(Break::Restarted(2))));
        // It goes on from the restart.
        assert_eq!(inbox.accept(2, 20), (vec![20], None));
    }

    #[test]
    fn frames_split_over_two_streams_in_any_interleaving_come_out_in_order() {
        // Frames 1..=n sent, the first k on an old stream and the rest on a new one; each
        // stream keeps its order, the two interleave at random.
        let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
        for _ in 0..500 {
            let n = rng.gen_range(1..40u64);
            let k = rng.gen_range(0..=n);
            let mut old: Vec<u64> = (1..=k).collect();
            let mut new: Vec<u64> = (k + 1..=n).collect();
            old.reverse();
            new.reverse();
            let mut order = Vec::new();
            while !old.is_empty() || !new.is_empty() {
                let from_old = !old.is_empty() && (new.is_empty() || rng.gen_bool(0.5));
                order.push(if from_old { old.pop() } else { new.pop() }.unwrap_or(0));
            }
            let mut inbox = Inbox::new(64);
            let mut out = Vec::new();
            for seq in order {
                let (frames, broke) = inbox.accept(seq, seq);
                assert_eq!(broke, None);
                out.extend(frames);
            }
            assert_eq!(out, (1..=n).collect::<Vec<_>>());
        }
        let mut shuffled: Vec<u64> = (1..=20).collect();
        shuffled.shuffle(&mut rng);
        let mut inbox = Inbox::new(64);
        let out: Vec<u64> = shuffled
            .into_iter()
            .flat_map(|s| inbox.accept(s, s).0)
            .collect();
        assert_eq!(out, (1..=20).collect::<Vec<_>>());
    }
}
