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
}
