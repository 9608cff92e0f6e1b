//! The bounded log of what went over the wire, behind the UI's Event log panel.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use web_time::Instant;

use crate::peers::millis;

/// Which way an event went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// We sent it.
    Sent,
    /// We received it.
    Received,
    /// A local event about the wire (a connection opened or closed, a dial failed).
    Local,
}

/// What an event is about: the protocol or subsystem that logged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Topic {
    /// Connections opened, closed, refused; dials that failed.
    Conn,
    /// Our listen addresses.
    Listen,
    /// The relay link: bootstrap, reservation, circuits.
    Relay,
    /// Kademlia peer discovery.
    Kad,
    /// DHT records and provider records.
    Dht,
    /// The identify protocol.
    Identify,
    /// libp2p ping.
    Ping,
    /// GIMPS gossip.
    Gimps,
    /// Direct WebRTC connections.
    Webrtc,
    /// The perf protocol.
    Perf,
    /// Service calls.
    Service,
    /// Request tracing: traced pings, span gathering.
    Trace,
    /// Chandy-Lamport snapshots and their ordered channels.
    Snapshot,
    /// The misbehaviour ledger: strikes and bans.
    Ban,
    /// The node itself (start, shutdown).
    Node,
}

impl Topic {
    /// The name shown in the Event log (the serialised form).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Conn => "conn",
            Self::Listen => "listen",
            Self::Relay => "relay",
            Self::Kad => "kad",
            Self::Dht => "dht",
            Self::Identify => "identify",
            Self::Ping => "ping",
            Self::Gimps => "gimps",
            Self::Webrtc => "webrtc",
            Self::Perf => "perf",
            Self::Service => "service",
            Self::Trace => "trace",
            Self::Snapshot => "snapshot",
            Self::Ban => "ban",
            Self::Node => "node",
        }
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One logged event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEvent {
    /// Sequence number, counting from 1 since the node started.
    pub seq: u64,
    /// Milliseconds since the clock origin (page load).
    pub at_ms: u64,
    /// Which way it went.
    pub direction: Direction,
    /// What it is about (`"ping"`, `"identify"`, `"kad"`, `"relay"`, `"conn"`, ...).
    pub protocol: Topic,
    /// The remote peer's name, if the event concerns one peer.
    pub peer: Option<String>,
    /// What happened, in a few words.
    pub summary: String,
}

/// The most events a [`WireLog`] keeps, whatever it is asked for (~2.5 MB at the size of a
/// typical event): enough for minutes of a busy tab's traffic.
pub const MAX_CAPACITY: usize = 10_000;

/// The last `capacity` wire events, oldest first.
#[derive(Debug, Clone)]
pub struct WireLog {
    origin: Instant,
    capacity: usize,
    next_seq: u64,
    events: VecDeque<WireEvent>,
}

impl WireLog {
    /// An empty log keeping `capacity` events (at least one, at most [`MAX_CAPACITY`]),
    /// stamping them relative to `origin`.
    pub fn new(origin: Instant, capacity: usize) -> Self {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        Self {
            origin,
            capacity,
            next_seq: 1,
            // It fills only as events come: a large log costs nothing until then.
            events: VecDeque::with_capacity(capacity.min(64)),
        }
    }

    /// How many events it keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends an event, dropping the oldest when full.
    pub fn push(
        &mut self,
        now: Instant,
        direction: Direction,
        protocol: Topic,
        peer: Option<String>,
        summary: impl Into<String>,
    ) -> &WireEvent {
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(WireEvent {
            seq: self.next_seq,
            at_ms: millis(now.saturating_duration_since(self.origin)),
            direction,
            protocol,
            peer,
            summary: summary.into(),
        });
        self.next_seq += 1;
        self.events.back().expect("just pushed")
    }

    /// The kept events, oldest first.
    pub fn events(&self) -> impl ExactSizeIterator<Item = &WireEvent> {
        self.events.iter()
    }

    /// The newest `n` kept events (all of them if fewer), oldest first.
    pub fn recent(&self, n: usize) -> impl ExactSizeIterator<Item = &WireEvent> {
        self.events.range(self.events.len().saturating_sub(n)..)
    }

    /// Events logged since start, including dropped ones.
    pub fn total(&self) -> u64 {
        self.next_seq - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use web_time::Duration;

    #[test]
    fn keeps_the_newest_events_in_order() {
        let origin = Instant::now();
        let mut log = WireLog::new(origin, 3);
        for i in 0..5u64 {
            log.push(
                origin + Duration::from_millis(i * 10),
                Direction::Sent,
                Topic::Ping,
                None,
                format!("#{i}"),
            );
        }
        let kept: Vec<_> = log
            .events()
            .map(|e| (e.seq, e.at_ms, e.summary.as_str()))
            .collect();
        assert_eq!(kept, vec![(3, 20, "#2"), (4, 30, "#3"), (5, 40, "#4")]);
        assert_eq!(log.total(), 5);
    }

    fn log_of(capacity: usize, pushes: u64) -> WireLog {
        let origin = Instant::now();
        let mut log = WireLog::new(origin, capacity);
        for i in 0..pushes {
            log.push(origin, Direction::Local, Topic::Conn, None, format!("#{i}"));
        }
        log
    }

    #[test]
    fn recent_gives_the_newest_events_oldest_first() {
        let log = log_of(10, 7);
        let seqs = |n| log.recent(n).map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(3), vec![5, 6, 7]);
        assert_eq!(seqs(7), (1..=7).collect::<Vec<_>>());
        assert_eq!(seqs(50), (1..=7).collect::<Vec<_>>());
        assert!(seqs(0).is_empty());
    }

    #[test]
    fn a_capacity_of_zero_keeps_one_event_and_a_huge_one_is_capped() {
        // Zero would otherwise never drop anything (the log would grow without bound).
        let log = log_of(0, 5);
        assert_eq!(log.capacity(), 1);
        assert_eq!(log.events().map(|e| e.seq).collect::<Vec<_>>(), vec![5]);
        assert_eq!(log.total(), 5);
        let log = log_of(usize::MAX, 3);
        assert_eq!(log.capacity(), MAX_CAPACITY);
        assert_eq!(log.events().len(), 3);
    }

    #[test]
    fn topics_serialise_to_their_display_names() {
        for topic in [
            Topic::Conn,
            Topic::Kad,
            Topic::Webrtc,
            Topic::Ban,
            Topic::Node,
        ] {
            let json = serde_json::to_string(&topic).expect("serialises");
            assert_eq!(json, format!("\"{topic}\""));
        }
    }
}
