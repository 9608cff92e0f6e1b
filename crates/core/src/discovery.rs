//! When to look for more peers.
//!
//! Peers find each other by asking the DHT (starting at the relay, the bootstrap node) for the
//! peers closest to a key. Right after a reservation, lookups run often so that tabs opened
//! together meet within seconds even if they asked before the relay knew about each other;
//! then they settle to a slow steady pace that still catches late joiners.

use web_time::{Duration, Instant};

/// Pace of discovery lookups.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Interval of the first lookups after joining.
    pub eager_interval: Duration,
    /// How many lookups run at the eager interval.
    pub eager_rounds: u32,
    /// Interval afterwards.
    pub steady_interval: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            eager_interval: Duration::from_secs(2),
            eager_rounds: 5,
            steady_interval: Duration::from_secs(20),
        }
    }
}

/// The discovery timer: started on joining, stopped on losing the relay.
#[derive(Debug, Clone)]
pub struct DiscoverySchedule {
    config: DiscoveryConfig,
    next: Option<Instant>,
    rounds: u32,
}

impl DiscoverySchedule {
    /// A stopped schedule.
    pub fn new(config: DiscoveryConfig) -> Self {
        Self {
            config,
            next: None,
            rounds: 0,
        }
    }

    /// (Re)start from the eager phase, with the first lookup due at once.
    pub fn start(&mut self, now: Instant) {
        self.rounds = 0;
        self.next = Some(now);
    }

    /// Whether lookups are scheduled (started and not stopped since).
    pub fn is_running(&self) -> bool {
        self.next.is_some()
    }

    /// Stop until the next [`start`](Self::start).
    pub fn stop(&mut self) {
        self.next = None;
    }

    /// Whether a lookup is due now; if so, schedules the next one.
    pub fn poll(&mut self, now: Instant) -> bool {
        match self.next {
            Some(due) if now >= due => {
                self.rounds += 1;
                let interval = if self.rounds < self.config.eager_rounds {
                    self.config.eager_interval
                } else {
                    self.config.steady_interval
                };
                self.next = Some(now + interval);
                true
            }
            _ => false,
        }
    }

    /// When the next lookup is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }
}

/// `HOP` streams that libp2p's relay client and server each handle at once on one connection
/// (libp2p-relay's `MAX_CONCURRENT_STREAMS_PER_CONNECTION`); more are dropped, and the dial
/// that opened one fails after its timeout.
pub const RELAY_HOP_STREAMS_PER_CONNECTION: usize = 10;

/// Dials through the relay in flight at most (discovery's and Kademlia's). Each is one `HOP`
/// stream on our connection to the relay. Two of the relay's streams are left over: one for the
/// reservation's renewal, which can fall in the middle of a join, and one spare. A tab that
/// joins 8 peers or fewer dials them all at once.
pub const MAX_DIALS_IN_FLIGHT: usize = 8;

const _: () = assert!(MAX_DIALS_IN_FLIGHT + 2 <= RELAY_HOP_STREAMS_PER_CONNECTION);

/// Peers waiting for a dial at most; beyond, the oldest is forgotten (a later lookup names it
/// again if it is still around).
pub const MAX_QUEUED_DIALS: usize = 64;

/// A dial that has reported nothing for this long no longer counts as in flight.
pub const DIAL_STALE: Duration = Duration::from_secs(30);

/// Paces the dials through the relay: at most [`MAX_DIALS_IN_FLIGHT`] at once, the rest
/// queued in the order asked for. A tab opened among 20 others would otherwise open 20
/// circuits through the relay at the same moment, more than the relay serves at once per
/// connection: the surplus is dropped there and retried seconds later, and every lookup
/// waiting on those peers waits too.
#[derive(Debug, Default)]
pub struct DialPacer<P, A> {
    in_flight: Vec<(P, Instant)>,
    queue: std::collections::VecDeque<(P, A)>,
}

impl<P: PartialEq + Clone, A> DialPacer<P, A> {
    /// An empty pacer.
    pub fn new() -> Self {
        Self {
            in_flight: Vec::new(),
            queue: std::collections::VecDeque::new(),
        }
    }

    /// Discovery wants `peer` dialed at `addrs`: `Some` to dial now (it counts as in flight),
    /// `None` when it is queued or already dialed or waiting.
    pub fn want(&mut self, peer: P, addrs: A, now: Instant) -> Option<(P, A)> {
        if self.in_flight.iter().any(|(p, _)| *p == peer)
            || self.queue.iter().any(|(p, _)| *p == peer)
        {
            return None;
        }
        self.expire(now);
        if self.in_flight.len() < MAX_DIALS_IN_FLIGHT {
            self.in_flight.push((peer.clone(), now));
            return Some((peer, addrs));
        }
        if self.queue.len() >= MAX_QUEUED_DIALS {
            self.queue.pop_front();
        }
        self.queue.push_back((peer, addrs));
        None
    }

    /// A dial to `peer` ended (connected, or failed), or a connection to it came up some other
    /// way: it no longer waits.
    pub fn done(&mut self, peer: &P) {
        self.in_flight.retain(|(p, _)| p != peer);
        self.queue.retain(|(p, _)| p != peer);
    }

    /// The queued dials to start now, skipping those `skip` says are needed no more (the peer
    /// is connected, say); they count as in flight.
    pub fn next(&mut self, now: Instant, mut skip: impl FnMut(&P, &A) -> bool) -> Vec<(P, A)> {
        self.expire(now);
        let mut start = Vec::new();
        while self.in_flight.len() < MAX_DIALS_IN_FLIGHT {
            let Some((peer, addrs)) = self.queue.pop_front() else {
                break;
            };
            if skip(&peer, &addrs) {
                continue;
            }
            self.in_flight.push((peer.clone(), now));
            start.push((peer, addrs));
        }
        start
    }

    /// Dials in flight and queued.
    pub fn counts(&self) -> (usize, usize) {
        (self.in_flight.len(), self.queue.len())
    }

    fn expire(&mut self, now: Instant) {
        self.in_flight
            .retain(|(_, at)| now.saturating_duration_since(*at) < DIAL_STALE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eager_then_steady_and_silent_when_stopped() {
        let cfg = DiscoveryConfig {
            eager_interval: Duration::from_secs(1),
            eager_rounds: 3,
            steady_interval: Duration::from_secs(10),
        };
        let t0 = Instant::now();
        let mut d = DiscoverySchedule::new(cfg);
        assert!(!d.poll(t0));
        assert!(!d.is_running());
        d.start(t0);
        assert!(d.is_running());
        let mut due = vec![];
        let mut now = t0;
        for _ in 0..5 {
            now = d.poll_timeout().unwrap();
            assert!(d.poll(now));
            assert!(!d.poll(now), "one lookup per due time");
            due.push((now - t0).as_secs());
        }
        assert_eq!(due, vec![0, 1, 2, 12, 22]);
        d.stop();
        assert!(!d.is_running());
        assert!(!d.poll(now + Duration::from_secs(100)));
        assert_eq!(d.poll_timeout(), None);
    }

    #[test]
    fn dials_are_paced_queued_in_order_and_freed_when_they_end() {
        const M: u32 = MAX_DIALS_IN_FLIGHT as u32;
        let t0 = Instant::now();
        let mut pacer = DialPacer::new();
        let started: Vec<_> = (0..M + 4).filter_map(|p| pacer.want(p, (), t0)).collect();
        assert_eq!(started.len(), MAX_DIALS_IN_FLIGHT);
        assert_eq!(pacer.counts(), (MAX_DIALS_IN_FLIGHT, 4));
        assert_eq!(pacer.want(0, (), t0), None, "in flight already");
        assert_eq!(pacer.want(M + 3, (), t0), None, "queued already");
        assert!(pacer.next(t0, |_, _| false).is_empty(), "no room yet");
        // Two end; the next two in the order found start, skipping one connected meanwhile.
        pacer.done(&0);
        pacer.done(&1);
        let next: Vec<u32> = pacer
            .next(t0, |p, _| *p == M)
            .into_iter()
            .map(|(p, ())| p)
            .collect();
        assert_eq!(next, [M + 1, M + 2]);
        assert_eq!(pacer.counts(), (MAX_DIALS_IN_FLIGHT, 1));
    }

    #[test]
    fn a_dial_that_never_reports_stops_counting_and_the_queue_is_bounded() {
        let t0 = Instant::now();
        let mut pacer = DialPacer::new();
        for p in 0..(MAX_DIALS_IN_FLIGHT + MAX_QUEUED_DIALS + 5) {
            pacer.want(p, (), t0);
        }
        assert_eq!(pacer.counts(), (MAX_DIALS_IN_FLIGHT, MAX_QUEUED_DIALS));
        let later = t0 + DIAL_STALE;
        let next: Vec<usize> = pacer
            .next(later, |_, _| false)
            .into_iter()
            .map(|(p, ())| p)
            .collect();
        assert_eq!(next.len(), MAX_DIALS_IN_FLIGHT);
        assert_eq!(
            next[0],
            MAX_DIALS_IN_FLIGHT + 5,
            "the oldest queued were forgotten"
        );
    }
}
