//! Chandy-Lamport global snapshots, as published (Chandy and Lamport, 1985), as one peer's
//! clock-free state machine ([`Recorder`]) and the assembly of the global state from every
//! peer's part ([`assemble`]).
//!
//! The algorithm needs FIFO channels: the driver sends markers on the same ordered channel
//! (one per direction per pair of peers) as the application messages they cut, and tells the
//! recorder of every application message it sends ([`Recorder::on_sent`]) and receives
//! ([`Recorder::on_received`]) on those channels, in channel order.
//!
//! 1. **Initiate**: the initiator records its state and sends a marker on every outgoing
//!    channel ([`Recorder::initiate`]); any peer can initiate, and snapshots are told apart by
//!    their id (initiator and sequence number), so several run at once.
//! 2. **First marker**: a peer that receives its first marker of a snapshot records its state,
//!    records the marker's channel as empty, starts recording every other incoming channel and
//!    sends a marker on every outgoing channel.
//! 3. **Later markers**: a marker on an incoming channel ends that channel's recording: its
//!    state is the messages received on it between the peer's record and the marker.
//! 4. **Done**: when every incoming channel has brought its marker the peer's part is complete
//!    ([`SnapshotAction::Recorded`]); a channel that closes first, or the deadline, ends it
//!    incomplete, saying what is missing.
//!
//! Besides its state and the in-flight messages of its incoming channels, each part holds how
//! many messages the peer had sent on each outgoing channel and received on each incoming one
//! when it recorded: [`assemble`] checks, channel by channel, that what the sender had sent
//! equals what the receiver had received plus what was recorded in flight. That holds for a
//! consistent cut whatever the messages mean; the token demo's conservation of tokens is the
//! second check, computed by the caller from the assembled states.

pub mod channel;
pub mod frame;
mod message;
pub mod sim;
pub mod state;
#[cfg(test)]
mod tests;
pub mod tokens;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};
use web_time::{Duration, Instant};

pub use message::{MAX_MARKER_BYTES, Marker, MarkerError};

use crate::names::peer_name;

/// A snapshot: who started it and its number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotId {
    /// The peer that initiated it.
    pub initiator: PeerId,
    /// The initiator's count of snapshots it started.
    pub seq: u64,
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", peer_name(&self.initiator), self.seq)
    }
}

/// Limits of a peer's snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotConfig {
    /// Snapshots a peer takes part in at once; markers of more are refused.
    pub max_running: usize,
    /// In-flight messages recorded per channel; beyond, the channel's state is cut short and the
    /// part marked incomplete.
    pub max_recorded: usize,
    /// How long a peer waits for all its markers.
    pub deadline: Duration,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            max_running: 8,
            max_recorded: 1024,
            deadline: Duration::from_secs(10),
        }
    }
}

/// Times a peer sends its part to the initiator before giving up.
pub const PART_ATTEMPTS: u32 = 3;

/// Whether a part whose delivery failed after `attempts` sends is sent once more: while the
/// initiator is still connected (the request rode a connection that closed, typically a relayed
/// one replaced by a direct one) and fewer than [`PART_ATTEMPTS`] were made. A part lost
/// otherwise would leave the initiator waiting until its deadline and the snapshot incomplete
/// although every peer recorded.
pub fn send_part_again(attempts: u32, initiator_connected: bool) -> bool {
    initiator_connected && attempts < PART_ATTEMPTS
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotAction<S, M> {
    /// Send a marker of snapshot `id` to `to`, on the ordered channel to it.
    SendMarker {
        /// The peer.
        to: PeerId,
        /// The snapshot.
        id: SnapshotId,
    },
    /// This peer's part of a snapshot is finished (complete or not).
    Recorded(LocalSnapshot<S, M>),
}

/// One incoming channel's part: what the receiver had received when it recorded, and what
/// arrived after that and before the marker (in flight at the cut).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingChannel<M> {
    /// The sending peer.
    pub from: PeerId,
    /// Messages received on the channel before the record.
    pub received: u64,
    /// Messages in flight at the cut, in channel order.
    pub in_flight: Vec<M>,
    /// The marker arrived (otherwise the recording was cut short: closed channel, deadline).
    pub closed_by_marker: bool,
}

/// One peer's part of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSnapshot<S, M> {
    /// The snapshot.
    pub id: SnapshotId,
    /// The peer.
    pub peer: PeerId,
    /// Its state when it recorded.
    pub state: S,
    /// Messages it had sent on each outgoing channel when it recorded.
    pub sent: BTreeMap<PeerId, u64>,
    /// Its incoming channels.
    pub incoming: Vec<IncomingChannel<M>>,
    /// Every incoming channel brought its marker.
    pub complete: bool,
    /// Why not, when not.
    pub missing: Vec<String>,
}

struct Running<S, M> {
    started: Instant,
    state: S,
    sent: BTreeMap<PeerId, u64>,
    /// Incoming channels still recording, with the count received at the record.
    recording: BTreeMap<PeerId, (u64, Vec<M>)>,
    done: Vec<IncomingChannel<M>>,
    missing: Vec<String>,
}

/// Why a marker was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Too many snapshots at once.
    #[error("already in {0} snapshots; at most that many run at once")]
    Busy(usize),
    /// A marker from a peer that is not one of our incoming channels of that snapshot.
    #[error("a marker of {0} from a peer not recorded as a channel")]
    UnknownChannel(SnapshotId),
}

/// One peer's side of every snapshot it takes part in.
pub struct Recorder<S, M> {
    me: PeerId,
    config: SnapshotConfig,
    sent: BTreeMap<PeerId, u64>,
    received: BTreeMap<PeerId, u64>,
    running: BTreeMap<SnapshotId, Running<S, M>>,
    /// Snapshots this peer finished (recently): a late marker of one is not a first marker.
    finished: BTreeSet<SnapshotId>,
    /// The same, oldest first (the one forgotten first).
    finished_order: VecDeque<SnapshotId>,
    next_seq: u64,
}

/// Finished snapshots remembered (so that their late markers are not taken as new ones).
const FINISHED_KEPT: usize = 256;

impl<S: Clone, M: Clone> Recorder<S, M> {
    /// The recorder of peer `me`.
    pub fn new(me: PeerId, config: SnapshotConfig) -> Self {
        Self {
            me,
            config,
            sent: BTreeMap::new(),
            received: BTreeMap::new(),
            running: BTreeMap::new(),
            finished: BTreeSet::new(),
            finished_order: VecDeque::new(),
            next_seq: 0,
        }
    }

    /// Numbers this peer's next snapshot after `seq`: a driver that restarts (a reloaded tab
    /// keeps its identity) seeds it from the clock, so that its new snapshots are not taken by
    /// its peers for late markers of old ones.
    pub fn number_after(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq);
    }

    /// Application messages sent on each outgoing channel and received on each incoming one
    /// so far (what a naive snapshot reads, with no cut).
    pub fn counts(&self) -> (&BTreeMap<PeerId, u64>, &BTreeMap<PeerId, u64>) {
        (&self.sent, &self.received)
    }

    /// Snapshots in progress here.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Whether some snapshot is recording the channel from `from` (what arrives on it now is
    /// in flight at a cut): a driver builds the recorded form of a message only then.
    pub fn is_recording(&self, from: &PeerId) -> bool {
        self.running
            .values()
            .any(|r| r.recording.contains_key(from))
    }

    /// An application message went to `to` on the ordered channel.
    pub fn on_sent(&mut self, to: PeerId) {
        *self.sent.entry(to).or_default() += 1;
    }

    /// An application message `message` arrived from `from` on the ordered channel: counted, and
    /// recorded in every snapshot that is recording that channel.
    pub fn on_received(&mut self, from: PeerId, message: &M) -> Vec<SnapshotAction<S, M>> {
        *self.received.entry(from).or_default() += 1;
        let limit = self.config.max_recorded;
        let mut overflowed = Vec::new();
        for (id, run) in &mut self.running {
            if let Some((_, recorded)) = run.recording.get_mut(&from) {
                if recorded.len() < limit {
                    recorded.push(message.clone());
                } else {
                    overflowed.push(*id);
                }
            }
        }
        let mut out = Vec::new();
        for id in overflowed {
            let why = format!(
                "channel from {} carried over {limit} messages during the snapshot",
                peer_name(&from)
            );
            self.end_channel(id, from, false, Some(why), &mut out);
        }
        out
    }

    /// Starts a snapshot here: records `state`, sends a marker to every peer in `outgoing` and
    /// records every channel from `incoming`.
    pub fn initiate(
        &mut self,
        now: Instant,
        state: S,
        outgoing: &[PeerId],
        incoming: &[PeerId],
    ) -> Result<(SnapshotId, Vec<SnapshotAction<S, M>>), Refused> {
        if self.running.len() >= self.config.max_running {
            return Err(Refused::Busy(self.config.max_running));
        }
        self.next_seq += 1;
        let id = SnapshotId {
            initiator: self.me,
            seq: self.next_seq,
        };
        let mut out = Vec::new();
        self.record(now, id, state, None, outgoing, incoming, &mut out);
        Ok((id, out))
    }

    /// A marker of snapshot `id` arrived from `from`. On the first one, `state` is called to
    /// record ours and markers go to `outgoing`; channels from `incoming` are recorded.
    #[allow(clippy::too_many_arguments)]
    pub fn on_marker(
        &mut self,
        now: Instant,
        from: PeerId,
        id: SnapshotId,
        state: impl FnOnce() -> S,
        outgoing: &[PeerId],
        incoming: &[PeerId],
    ) -> Result<Vec<SnapshotAction<S, M>>, Refused> {
        let mut out = Vec::new();
        if let Some(run) = self.running.get(&id) {
            if run.recording.contains_key(&from) {
                self.end_channel(id, from, true, None, &mut out);
                return Ok(out);
            }
            if run.done.iter().any(|c| c.from == from) {
                // Its recording was already cut short (the channel broke): nothing to do.
                return Ok(out);
            }
            return Err(Refused::UnknownChannel(id));
        }
        if self.finished.contains(&id) {
            // A marker on a channel whose recording was already cut short: nothing to do.
            return Ok(out);
        }
        if self.running.len() >= self.config.max_running {
            return Err(Refused::Busy(self.config.max_running));
        }
        self.record(now, id, state(), Some(from), outgoing, incoming, &mut out);
        Ok(out)
    }

    /// The channel to and from `peer` closed (it left): every snapshot still recording it ends
    /// that recording, incomplete, and its counts start again (a new channel numbers from 1 on
    /// both sides).
    pub fn on_channel_closed(&mut self, peer: PeerId) -> Vec<SnapshotAction<S, M>> {
        self.sent.remove(&peer);
        self.received.remove(&peer);
        self.on_channel_broken(peer, "left before its marker arrived")
    }

    /// The channel from `peer` lost its order (`why`): every snapshot recording it ends that
    /// recording, incomplete.
    pub fn on_channel_broken(&mut self, peer: PeerId, why: &str) -> Vec<SnapshotAction<S, M>> {
        let ids: Vec<SnapshotId> = self
            .running
            .iter()
            .filter(|(_, run)| run.recording.contains_key(&peer))
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for id in ids {
            let why = format!("{} {why}", peer_name(&peer));
            self.end_channel(id, peer, false, Some(why), &mut out);
        }
        out
    }

    /// Ends the snapshots whose deadline passed, incomplete.
    pub fn on_tick(&mut self, now: Instant) -> Vec<SnapshotAction<S, M>> {
        let late: Vec<SnapshotId> = self
            .running
            .iter()
            .filter(|(_, run)| now.saturating_duration_since(run.started) >= self.config.deadline)
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for id in late {
            if let Some(run) = self.running.get_mut(&id) {
                let waiting: Vec<String> = run.recording.keys().map(peer_name).collect();
                run.missing.push(format!(
                    "no marker within {} ms from {}",
                    self.config.deadline.as_millis(),
                    waiting.join(", ")
                ));
                let channels: Vec<PeerId> = run.recording.keys().copied().collect();
                for from in channels {
                    self.end_channel(id, from, false, None, &mut out);
                }
            }
        }
        out
    }

    /// When the earliest deadline falls.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.running
            .values()
            .map(|run| run.started + self.config.deadline)
            .min()
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        now: Instant,
        id: SnapshotId,
        state: S,
        marker_from: Option<PeerId>,
        outgoing: &[PeerId],
        incoming: &[PeerId],
        out: &mut Vec<SnapshotAction<S, M>>,
    ) {
        let sent = crate::map_from(
            outgoing
                .iter()
                .map(|p| (*p, self.sent.get(p).copied().unwrap_or(0))),
        );
        let mut recording = BTreeMap::new();
        let mut done = Vec::new();
        for from in incoming.iter().filter(|p| **p != self.me) {
            let received = self.received.get(from).copied().unwrap_or(0);
            if Some(*from) == marker_from {
                done.push(IncomingChannel {
                    from: *from,
                    received,
                    in_flight: Vec::new(),
                    closed_by_marker: true,
                });
            } else {
                recording.insert(*from, (received, Vec::new()));
            }
        }
        let mut missing = Vec::new();
        if let Some(from) = marker_from
            && !incoming.contains(&from)
        {
            // The marker came on a channel the caller does not count as incoming (it is
            // closing); the part says so rather than silently dropping it.
            missing.push(format!(
                "the marker came from {}, not a channel",
                peer_name(&from)
            ));
        }
        self.running.insert(
            id,
            Running {
                started: now,
                state,
                sent,
                recording,
                done,
                missing,
            },
        );
        for to in outgoing.iter().filter(|p| **p != self.me) {
            out.push(SnapshotAction::SendMarker { to: *to, id });
        }
        self.finish_if_done(id, out);
    }

    /// Ends the recording of the channel from `from` in snapshot `id`.
    fn end_channel(
        &mut self,
        id: SnapshotId,
        from: PeerId,
        by_marker: bool,
        why: Option<String>,
        out: &mut Vec<SnapshotAction<S, M>>,
    ) {
        let Some(run) = self.running.get_mut(&id) else {
            return;
        };
        if let Some((received, in_flight)) = run.recording.remove(&from) {
            run.done.push(IncomingChannel {
                from,
                received,
                in_flight,
                closed_by_marker: by_marker,
            });
        }
        run.missing.extend(why);
        self.finish_if_done(id, out);
    }

    fn finish_if_done(&mut self, id: SnapshotId, out: &mut Vec<SnapshotAction<S, M>>) {
        if !self
            .running
            .get(&id)
            .is_some_and(|r| r.recording.is_empty())
        {
            return;
        }
        let Some(run) = self.running.remove(&id) else {
            return;
        };
        if self.finished_order.len() >= FINISHED_KEPT
            && let Some(oldest) = self.finished_order.pop_front()
        {
            self.finished.remove(&oldest);
        }
        if self.finished.insert(id) {
            self.finished_order.push_back(id);
        }
        let complete = run.missing.is_empty() && run.done.iter().all(|c| c.closed_by_marker);
        out.push(SnapshotAction::Recorded(LocalSnapshot {
            id,
            peer: self.me,
            state: run.state,
            sent: run.sent,
            incoming: run.done,
            complete,
            missing: run.missing,
        }));
    }
}

/// One directed channel of an assembled snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelView<M> {
    /// Sender (peer id).
    pub from: String,
    /// Receiver (peer id).
    pub to: String,
    /// Messages the sender had sent on it when it recorded (`None`: its part is missing).
    pub sent: Option<u64>,
    /// Messages the receiver had received on it when it recorded.
    pub received: u64,
    /// Messages in flight at the cut.
    pub in_flight: Vec<M>,
    /// `sent == received + in_flight`.
    pub consistent: bool,
}

/// A global snapshot put together from the peers' parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalSnapshot<S, M> {
    /// Every expected peer sent a complete part.
    pub complete: bool,
    /// Each peer's recorded state (peer id → state).
    pub states: BTreeMap<String, S>,
    /// Every channel with its state.
    pub channels: Vec<ChannelView<M>>,
    /// For every channel, what its sender had sent equals what its receiver had received plus
    /// what was in flight.
    pub channels_consistent: bool,
    /// What is missing, when incomplete.
    pub missing: Vec<String>,
}

/// Puts the parts of one snapshot together: `expected` are the peers that should have sent one,
/// `by_peer` the parts that came, by their sender.
pub fn assemble<S: Clone, M: Clone>(
    expected: &[PeerId],
    by_peer: &BTreeMap<PeerId, LocalSnapshot<S, M>>,
) -> GlobalSnapshot<S, M> {
    let mut missing = Vec::new();
    for peer in expected {
        match by_peer.get(peer) {
            None => missing.push(format!("{} sent no part", peer_name(peer))),
            Some(part) if !part.complete => missing.extend(
                part.missing
                    .iter()
                    .map(|m| format!("{}: {m}", peer_name(peer))),
            ),
            Some(_) => {}
        }
    }
    let mut channels = Vec::new();
    for (to, part) in by_peer {
        for channel in &part.incoming {
            let sent = by_peer
                .get(&channel.from)
                .and_then(|p| p.sent.get(to).copied());
            let consistent = sent == Some(channel.received + channel.in_flight.len() as u64);
            channels.push(ChannelView {
                from: channel.from.to_base58(),
                to: to.to_base58(),
                sent,
                received: channel.received,
                in_flight: channel.in_flight.clone(),
                consistent,
            });
        }
    }
    let channels_consistent = channels.iter().all(|c| c.consistent);
    GlobalSnapshot {
        complete: missing.is_empty() && by_peer.values().all(|p| p.complete),
        states: crate::map_from(
            by_peer
                .iter()
                .map(|(peer, part)| (peer.to_base58(), part.state.clone())),
        ),
        channels,
        channels_consistent,
        missing,
    }
}
