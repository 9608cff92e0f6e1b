//! FIFO channels between two peers, kept in order across stream changes.
//!
//! Chandy-Lamport needs each channel to deliver in the order sent. One libp2p stream is ordered,
//! but a peer's connection changes under the channel (a relayed connection is replaced by a
//! direct one, and its streams with it), and frames still travelling on the old stream can then
//! arrive after the first ones on the new. So the sender numbers every frame of a channel
//! ([`Outbox`]) and the receiver hands frames on strictly in that order ([`Inbox`]), holding
//! those that arrive early (a bounded number). A frame seen twice is dropped (the sender writes
//! again, on the next stream, what was not acknowledged on the last). Each numbering belongs to
//! an epoch the sender chose when it opened the channel, larger than any it chose before: a
//! frame of a newer epoch means the sender started over (it lost its side of the channel), one
//! of an older epoch is left over from before and dropped. Each stream starts by naming its
//! epoch and its first frame, the oldest the sender still holds (all before it were
//! acknowledged), so a receiver that forgot the channel (it saw every connection close while the
//! sender did not) starts there instead of waiting for frames that will never come again. A frame that would have to wait
//! beyond the bound, or a new epoch after frames were handed on, is a break: the driver tells
//! the snapshot recorder that the channel closed, so running snapshots end incomplete instead
//! of recording a wrong channel state.

use std::collections::BTreeMap;

/// The numbering of one outgoing channel.
#[derive(Debug, Clone)]
pub struct Outbox {
    epoch: u64,
    next: u64,
}

impl Outbox {
    /// A channel numbered in `epoch`, which must be larger than the epoch of any channel this
    /// sender opened before to the same peer (and at least 1).
    pub fn new(epoch: u64) -> Self {
        Self {
            epoch: epoch.max(1),
            next: 0,
        }
    }

    /// The epoch of this channel's numbering.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

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
    /// The sender started a new numbering (it restarted, or lost its side of the channel)
    /// after this many frames of the old one were handed on.
    #[error("the channel started over after frame {0}")]
    Restarted(u64),
}

/// The order-keeping side of one incoming channel.
#[derive(Debug, Clone)]
pub struct Inbox<T> {
    epoch: u64,
    delivered: u64,
    early: BTreeMap<u64, T>,
    max_early: usize,
    duplicates: u64,
}

impl<T> Inbox<T> {
    /// An inbox that holds at most `max_early` frames ahead of a missing one.
    pub fn new(max_early: usize) -> Self {
        Self {
            epoch: 0,
            delivered: 0,
            early: BTreeMap::new(),
            max_early,
            duplicates: 0,
        }
    }

    /// A stream of `epoch` begins; its first frame is `first`, the oldest the sender still
    /// holds. A newer epoch (or the first one seen) starts the channel over at `first`: what
    /// was held of the old one is given up, and if anything of it was handed on, that is a
    /// break.
    pub fn begin(&mut self, epoch: u64, first: u64) -> Option<Break> {
        if epoch <= self.epoch {
            return None;
        }
        let broke = (self.delivered > 0 || !self.early.is_empty())
            .then_some(Break::Restarted(self.delivered));
        self.epoch = epoch;
        self.reset();
        self.delivered = first.saturating_sub(1);
        broke
    }

    /// Frame `seq` of `epoch` arrived: the frames that can now be handed on, in order, and
    /// whether the channel broke. On a gap beyond the bound, the missing frames are given up:
    /// what was held is handed on in order and the channel goes on after it. On a new epoch,
    /// the channel starts over with it. Either way the order the snapshot relies on was lost.
    pub fn accept(&mut self, epoch: u64, seq: u64, frame: T) -> (Vec<T>, Option<Break>) {
        let broke = self.begin(epoch, 1);
        if epoch < self.epoch || seq <= self.delivered || self.early.contains_key(&seq) {
            self.duplicates += 1;
            return (Vec::new(), broke);
        }
        let (frames, gap) = self.take(seq, frame);
        (frames, broke.or(gap))
    }

    fn take(&mut self, seq: u64, frame: T) -> (Vec<T>, Option<Break>) {
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

    /// Frames dropped as seen before (or left over from an older epoch).
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
        let mut outbox = Outbox::new(7);
        let seqs: Vec<u64> = (0..4).map(|_| outbox.stamp()).collect();
        assert_eq!((outbox.epoch(), seqs), (7, vec![1, 2, 3, 4]));
        let mut inbox = Inbox::new(8);
        assert_eq!(inbox.accept(7, 2, "b"), (vec![], None));
        assert_eq!(inbox.accept(7, 3, "c"), (vec![], None));
        assert_eq!(inbox.waiting(), 2);
        assert_eq!(inbox.accept(7, 1, "a"), (vec!["a", "b", "c"], None));
        assert_eq!(inbox.accept(7, 2, "b again"), (vec![], None));
        assert_eq!(inbox.accept(7, 1, "a again"), (vec![], None));
        assert_eq!(inbox.accept(7, 4, "d"), (vec!["d"], None));
        assert_eq!((inbox.delivered(), inbox.duplicates()), (4, 2));
    }

    #[test]
    fn a_gap_beyond_the_bound_or_a_restart_breaks_the_channel_and_loses_nothing_that_came() {
        let mut inbox = Inbox::new(2);
        inbox.accept(1, 1, 1);
        inbox.accept(1, 3, 3);
        inbox.accept(1, 4, 4);
        assert_eq!(
            inbox.accept(1, 5, 5),
            (
                vec![3, 4, 5],
                Some(Break::Gap {
                    missing: 2,
                    held: 2
                })
            )
        );
        assert_eq!((inbox.waiting(), inbox.delivered()), (0, 5));
        assert_eq!(inbox.accept(1, 6, 6), (vec![6], None));
        let mut inbox = Inbox::new(2);
        inbox.accept(1, 1, 1);
        inbox.accept(1, 2, 2);
        assert_eq!(
            inbox.accept(2, 1, 10),
            (vec![10], Some(Break::Restarted(2)))
        );
        // It goes on in the new epoch; what is left of the old one is dropped.
        assert_eq!(inbox.accept(1, 3, 3), (vec![], None));
        assert_eq!(inbox.accept(2, 2, 20), (vec![20], None));
        // A new epoch whose first frames are still on their way: held, and a break.
        assert_eq!(inbox.accept(3, 2, 30), (vec![], Some(Break::Restarted(2))));
        assert_eq!(inbox.accept(3, 1, 31), (vec![31, 30], None));
        // The first epoch seen is no break.
        let mut inbox = Inbox::new(2);
        assert_eq!(inbox.accept(9, 1, 1), (vec![1], None));
    }

    #[test]
    fn a_receiver_that_forgot_the_channel_starts_at_the_first_frame_of_the_next_stream() {
        // Frames up to 40 were acknowledged; the receiver then forgot the channel (a new inbox)
        // while the sender kept it: its next stream starts at 41.
        let mut inbox = Inbox::new(8);
        assert_eq!(inbox.begin(3, 41), None);
        assert_eq!(inbox.accept(3, 41, 41), (vec![41], None));
        // A stream of the same epoch changes nothing; its old frames are dropped.
        assert_eq!(inbox.begin(3, 30), None);
        assert_eq!(inbox.accept(3, 39, 39), (vec![], None));
        assert_eq!(inbox.accept(3, 42, 42), (vec![42], None));
        // A stream of an older epoch changes nothing either.
        assert_eq!(inbox.begin(2, 1), None);
        assert_eq!(inbox.accept(2, 43, 43), (vec![], None));
        // A newer epoch after frames were handed on is a break.
        assert_eq!(inbox.begin(4, 1), Some(Break::Restarted(42)));
        assert_eq!(inbox.accept(4, 1, 1), (vec![1], None));
    }

    /// The frames of two streams as they might arrive: each stream in its order, the two
    /// interleaved at random.
    fn interleave(rng: &mut impl Rng, old: Vec<u64>, new: Vec<u64>) -> Vec<u64> {
        let (mut old, mut new) = (old.into_iter().peekable(), new.into_iter().peekable());
        let mut order = Vec::new();
        while old.peek().is_some() || new.peek().is_some() {
            let from_old = old.peek().is_some() && (new.peek().is_none() || rng.gen_bool(0.5));
            order.extend(if from_old { old.next() } else { new.next() });
        }
        order
    }

    #[test]
    fn frames_split_over_two_streams_in_any_interleaving_come_out_in_order() {
        // Frames 1..=n sent, the first k on an old stream and the rest on a new one; each
        // stream keeps its order, the two interleave at random.
        let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
        for _ in 0..500 {
            let n = rng.gen_range(1..40u64);
            let k = rng.gen_range(0..=n);
            let order = interleave(&mut rng, (1..=k).collect(), (k + 1..=n).collect());
            let mut inbox = Inbox::new(64);
            let mut out = Vec::new();
            for seq in order {
                let (frames, broke) = inbox.accept(1, seq, seq);
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
            .flat_map(|s| inbox.accept(1, s, s).0)
            .collect();
        assert_eq!(out, (1..=20).collect::<Vec<_>>());
    }

    #[test]
    fn frames_written_again_on_a_new_stream_come_out_once_in_order() {
        // The sender writes 1..=n; the receiver acknowledged up to `acked` when the stream was
        // renewed, and the new stream carries every frame after it again (from the first when
        // nothing was acknowledged: frame 1 written twice is no restart).
        let mut rng = rand::rngs::SmallRng::seed_from_u64(12);
        for _ in 0..500 {
            let n = rng.gen_range(1..40u64);
            let reached = rng.gen_range(0..=n);
            let acked = rng.gen_range(0..=reached);
            let order = interleave(&mut rng, (1..=reached).collect(), (acked + 1..=n).collect());
            let mut inbox = Inbox::new(64);
            let mut out = Vec::new();
            for seq in order {
                let (frames, broke) = inbox.accept(5, seq, seq);
                assert_eq!(broke, None);
                out.extend(frames);
            }
            assert_eq!(out, (1..=n).collect::<Vec<_>>());
        }
    }
}
