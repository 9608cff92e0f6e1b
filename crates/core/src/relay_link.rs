//! The link to the relay: connect, hold a reservation, and come back after losing it.
//!
//! A tab is only reachable through its circuit relay v2 reservation, so the relay link is the
//! lifeline of a peer. [`RelayLink`] decides when to (re)connect: at once on start, then after
//! each failure with exponential backoff and jitter (so a relay that restarts is not hit by every
//! tab in the same millisecond), resetting the backoff once a reservation is held again.
//!
//! A reservation can also be dropped on our side while the connection stays up: libp2p's relay
//! client forgets it when one of our outbound circuits through the relay times out (after 60 s),
//! although the relay still holds it. Tearing the connection down then would cut every circuit
//! it carries; [`RelayLink::on_reservation_dropped`] asks for the reservation again on the same
//! connection instead, within a budget, so a client that keeps dropping it cannot make us spin.

use std::collections::VecDeque;

use rand::{Rng, SeedableRng, rngs::SmallRng};
use serde::{Deserialize, Serialize};
use web_time::{Duration, Instant};

/// Backoff settings of a [`RelayLink`].
#[derive(Debug, Clone)]
pub struct RelayLinkConfig {
    /// Delay before the first retry.
    pub initial_backoff: Duration,
    /// The delay doubles per failed attempt up to this.
    pub max_backoff: Duration,
    /// Each delay is scaled by a random factor in `1 ± jitter`.
    pub jitter: f64,
    /// How many times a dropped reservation may be asked for again on the same connection
    /// within [`in_place_window`](Self::in_place_window); past it, a drop counts as a failure.
    pub in_place_budget: usize,
    /// The window of [`in_place_budget`](Self::in_place_budget).
    pub in_place_window: Duration,
}

impl Default for RelayLinkConfig {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(15),
            jitter: 0.2,
            // Up to 10 outbound circuits are in flight per relay connection, each of which can
            // time out: let a burst of them through, not a loop.
            in_place_budget: 10,
            in_place_window: Duration::from_secs(60),
        }
    }
}

/// Where the link stands.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayLinkState {
    /// Fetching the bootstrap document and dialing the relay.
    Connecting {
        /// 1 for the first attempt after a success or start.
        attempt: u32,
    },
    /// Connected; the reservation has been requested but not yet accepted.
    Connected,
    /// Connected and holding a reservation: other peers can reach us through the relay.
    Reserved {
        /// When the reservation was first accepted on this connection.
        since: Instant,
    },
    /// The last attempt failed; the next one starts at `retry_at`.
    Waiting {
        /// The attempt that will be made at `retry_at`.
        attempt: u32,
        /// When to try again.
        retry_at: Instant,
    },
}

/// What the driver must do for the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayCommand {
    /// Fetch the bootstrap document (if needed), dial the relay and request a reservation.
    Connect,
}

/// The reconnecting relay link state machine.
#[derive(Debug)]
pub struct RelayLink {
    config: RelayLinkConfig,
    state: RelayLinkState,
    started: bool,
    last_error: Option<String>,
    rng: SmallRng,
    /// When the reservation was last asked for again in place, within the window.
    in_place: VecDeque<Instant>,
    dropped: u32,
    /// Connected because the reservation was dropped and is being asked for again.
    again: bool,
}

/// The link's state, for display.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkStatus {
    /// Fetching the bootstrap document or dialing the relay.
    #[default]
    Connecting,
    /// Connected, no reservation yet.
    Connected,
    /// Holding a reservation: other peers can reach us.
    Reserved,
    /// Waiting to retry after a failure.
    Waiting,
}

impl LinkStatus {
    /// The name shown (the serialised form).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Reserved => "reserved",
            Self::Waiting => "waiting",
        }
    }
}

impl std::fmt::Display for LinkStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Serialisable summary of the link, as shown in the UI and in `window.tabmesh.state().relay`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RelayLinkView {
    /// `"connecting"`, `"connected"`, `"reserved"` or `"waiting"`.
    pub state: LinkStatus,
    /// Whether a connection to the relay is up.
    pub connected: bool,
    /// Whether we hold a reservation (other peers can reach us).
    pub reservation: bool,
    /// The current or next attempt number since the last success.
    pub attempt: u32,
    /// Milliseconds until the next attempt, while waiting.
    pub retry_in_ms: Option<u64>,
    /// Why the last attempt or connection failed.
    pub last_error: Option<String>,
    /// Times the reservation was dropped on our side while the connection stayed up (see
    /// [`RelayLink::on_reservation_dropped`]).
    #[serde(default)]
    pub dropped: u32,
    /// Connected because the reservation was dropped on our side and is being asked for again
    /// on the same connection (`last_error` says why).
    #[serde(default)]
    pub reserving_again: bool,
}

impl RelayLink {
    /// A link that will connect on its first [`poll`](Self::poll). `seed` drives the jitter.
    pub fn new(config: RelayLinkConfig, seed: u64) -> Self {
        Self {
            config,
            state: RelayLinkState::Connecting { attempt: 1 },
            started: false,
            last_error: None,
            rng: SmallRng::seed_from_u64(seed),
            in_place: VecDeque::new(),
            dropped: 0,
            again: false,
        }
    }

    /// The current state.
    pub fn state(&self) -> &RelayLinkState {
        &self.state
    }

    /// Whether a reservation is held.
    pub fn is_reserved(&self) -> bool {
        matches!(self.state, RelayLinkState::Reserved { .. })
    }

    /// The next command to carry out, if its time has come.
    pub fn poll(&mut self, now: Instant) -> Option<RelayCommand> {
        match self.state {
            RelayLinkState::Connecting { .. } if !self.started => {
                self.started = true;
                Some(RelayCommand::Connect)
            }
            RelayLinkState::Waiting { attempt, retry_at } if now >= retry_at => {
                self.state = RelayLinkState::Connecting { attempt };
                Some(RelayCommand::Connect)
            }
            _ => None,
        }
    }

    /// When [`poll`](Self::poll) should be called next, if a timer is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            RelayLinkState::Waiting { retry_at, .. } => Some(retry_at),
            _ => None,
        }
    }

    /// A connection to the relay is established: ours, or one another protocol dialed (the
    /// DHT asks the relay too). While waiting to retry, it shows the relay is back: the retry
    /// starts at once instead of at the end of the backoff, which after a long outage is up to
    /// the maximum (15 s by default).
    pub fn on_connected(&mut self, now: Instant) {
        match self.state {
            RelayLinkState::Connecting { .. } => self.state = RelayLinkState::Connected,
            RelayLinkState::Waiting { attempt, retry_at } if retry_at > now => {
                self.state = RelayLinkState::Waiting {
                    attempt,
                    retry_at: now,
                };
            }
            _ => {}
        }
    }

    /// The relay accepted (or renewed) our reservation.
    pub fn on_reservation_accepted(&mut self, now: Instant) {
        if !self.is_reserved() {
            self.state = RelayLinkState::Reserved { since: now };
            self.last_error = None;
            self.again = false;
        }
    }

    /// Our side dropped the reservation (its listener closed without an error) while the
    /// connection to the relay is still up. Returns `true` when the driver should ask for the
    /// reservation again on that connection (the link is then [`Connected`] until it is
    /// accepted), `false` when it must treat the drop as a failure ([`on_failure`] has been
    /// called): the link held no reservation, or the in-place budget of the window is spent.
    ///
    /// [`Connected`]: RelayLinkState::Connected
    /// [`on_failure`]: Self::on_failure
    pub fn on_reservation_dropped(&mut self, now: Instant, reason: impl Into<String>) -> bool {
        let reason = reason.into();
        let window = self.config.in_place_window;
        while self
            .in_place
            .front()
            .is_some_and(|&at| now.saturating_duration_since(at) >= window)
        {
            self.in_place.pop_front();
        }
        if !self.is_reserved() || self.in_place.len() >= self.config.in_place_budget {
            self.on_failure(now, reason);
            return false;
        }
        self.dropped = self.dropped.saturating_add(1);
        self.in_place.push_back(now);
        self.last_error = Some(reason);
        self.state = RelayLinkState::Connected;
        self.again = true;
        true
    }

    /// The attempt failed or the connection or reservation was lost: schedule the next attempt.
    ///
    /// Failures reported while already waiting (for example the close events of a connection
    /// that already failed) do not push the retry further out.
    pub fn on_failure(&mut self, now: Instant, reason: impl Into<String>) {
        self.last_error = Some(reason.into());
        self.again = false;
        // `failed` counts the consecutive failures; a link that worked retries promptly.
        let (failed, next_attempt) = match self.state {
            RelayLinkState::Waiting { .. } => return,
            RelayLinkState::Connecting { attempt } => (attempt, attempt + 1),
            RelayLinkState::Connected | RelayLinkState::Reserved { .. } => (1, 1),
        };
        self.started = true;
        let retry_at = now + self.backoff(failed);
        self.state = RelayLinkState::Waiting {
            attempt: next_attempt,
            retry_at,
        };
    }

    /// The delay after `failed` consecutive failures: `initial * 2^(failed - 1)`, capped, jittered.
    fn backoff(&mut self, failed: u32) -> Duration {
        let exponent = failed.saturating_sub(1).min(16);
        let base = self
            .config
            .initial_backoff
            .saturating_mul(1 << exponent)
            .min(self.config.max_backoff);
        let jitter = self.config.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 {
            self.rng.gen_range(1.0 - jitter..=1.0 + jitter)
        } else {
            1.0
        };
        base.mul_f64(factor)
    }

    /// A summary for display.
    pub fn view(&self, now: Instant) -> RelayLinkView {
        let (state, connected, reservation, attempt, retry_in_ms) = match self.state {
            RelayLinkState::Connecting { attempt } => {
                (LinkStatus::Connecting, false, false, attempt, None)
            }
            RelayLinkState::Connected => (LinkStatus::Connected, true, false, 0, None),
            RelayLinkState::Reserved { .. } => (LinkStatus::Reserved, true, true, 0, None),
            RelayLinkState::Waiting { attempt, retry_at } => (
                LinkStatus::Waiting,
                false,
                false,
                attempt,
                Some(retry_at.saturating_duration_since(now).as_millis() as u64),
            ),
        };
        RelayLinkView {
            state,
            connected,
            reservation,
            attempt,
            retry_in_ms,
            last_error: self.last_error.clone(),
            dropped: self.dropped,
            reserving_again: self.again && self.state == RelayLinkState::Connected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> RelayLink {
        RelayLink::new(
            RelayLinkConfig {
                initial_backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(8),
                jitter: 0.0,
                in_place_budget: 3,
                in_place_window: Duration::from_secs(60),
            },
            1,
        )
    }

    #[test]
    fn connects_once_at_start() {
        let now = Instant::now();
        let mut l = link();
        assert_eq!(l.poll(now), Some(RelayCommand::Connect));
        assert_eq!(l.poll(now), None);
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn backs_off_exponentially_up_to_the_cap() {
        let t0 = Instant::now();
        let mut l = link();
        l.poll(t0);
        let mut now = t0;
        let mut delays = vec![];
        for _ in 0..6 {
            l.on_failure(now, "refused");
            let at = l.poll_timeout().expect("a retry is scheduled");
            delays.push((at - now).as_secs());
            assert_eq!(
                l.poll(at - Duration::from_millis(1)),
                None,
                "not before its time"
            );
            now = at;
            assert_eq!(l.poll(now), Some(RelayCommand::Connect));
        }
        assert_eq!(delays, vec![1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn reservation_resets_backoff_and_clears_the_error() {
        let t0 = Instant::now();
        let mut l = link();
        l.poll(t0);
        l.on_failure(t0, "refused");
        let at = l.poll_timeout().unwrap();
        l.poll(at);
        l.on_connected(at);
        l.on_reservation_accepted(at);
        assert!(l.is_reserved());
        let v = l.view(at);
        assert!(v.connected && v.reservation && v.last_error.is_none());
        // Losing the relay after a success retries after the initial delay.
        l.on_failure(at, "connection closed");
        assert_eq!(l.poll_timeout(), Some(at + Duration::from_secs(1)));
        let v = l.view(at);
        assert_eq!(v.state, LinkStatus::Waiting);
        assert_eq!(v.retry_in_ms, Some(1000));
        assert_eq!(v.last_error.as_deref(), Some("connection closed"));
    }

    #[test]
    fn a_connection_made_while_waiting_retries_at_once() {
        // The relay restarted during a long backoff; the DHT reached it first.
        let t0 = Instant::now();
        let mut l = link();
        l.poll(t0);
        for _ in 0..5 {
            l.on_failure(t0, "refused");
            let at = l.poll_timeout().unwrap();
            l.poll(at);
        }
        l.on_failure(t0, "refused");
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(8)));
        let back = t0 + Duration::from_secs(2);
        assert_eq!(l.poll(back), None);
        l.on_connected(back);
        assert_eq!(l.poll_timeout(), Some(back));
        assert_eq!(l.poll(back), Some(RelayCommand::Connect));
        // Our own dial then finds the connection up; a reservation follows.
        l.on_reservation_accepted(back);
        assert!(l.is_reserved());
        // Once connecting or reserved, another connection changes nothing.
        l.on_connected(back);
        assert!(l.is_reserved());
    }

    #[test]
    fn repeated_failure_reports_do_not_delay_the_retry() {
        let t0 = Instant::now();
        let mut l = link();
        l.poll(t0);
        l.on_connected(t0);
        l.on_failure(t0, "closed");
        let at = l.poll_timeout();
        l.on_failure(t0 + Duration::from_millis(500), "listener closed");
        assert_eq!(l.poll_timeout(), at);
    }

    fn reserved(now: Instant) -> RelayLink {
        let mut l = link();
        l.poll(now);
        l.on_connected(now);
        l.on_reservation_accepted(now);
        l
    }

    #[test]
    fn a_reservation_dropped_on_our_side_is_asked_for_again_on_the_same_connection() {
        let t0 = Instant::now();
        let mut l = reserved(t0);
        assert!(l.on_reservation_dropped(t0, "dropped"));
        assert_eq!(l.state(), &RelayLinkState::Connected);
        assert_eq!(l.poll_timeout(), None, "no backoff: nothing to reconnect");
        assert_eq!(l.poll(t0 + Duration::from_secs(30)), None);
        let view = l.view(t0);
        assert!(view.connected && !view.reservation);
        assert_eq!(
            view.last_error.as_deref(),
            Some("dropped"),
            "the banner says why"
        );
        assert_eq!(view.dropped, 1);
        assert!(view.reserving_again);
        l.on_reservation_accepted(t0 + Duration::from_millis(5));
        let view = l.view(t0);
        assert!(view.reservation && !view.reserving_again);
        assert_eq!(view.last_error, None);
        assert_eq!(view.dropped, 1, "the count stays, for the record");
    }

    #[test]
    fn drops_past_the_budget_of_the_window_count_as_failures_until_the_window_moves_on() {
        let t0 = Instant::now();
        let mut l = reserved(t0);
        // The budget in `link()` is 3 per 60 s.
        for k in 0..3 {
            let at = t0 + Duration::from_secs(k);
            assert!(l.on_reservation_dropped(at, "dropped"), "drop {k}");
            l.on_reservation_accepted(at);
        }
        let fourth = t0 + Duration::from_secs(10);
        assert!(!l.on_reservation_dropped(fourth, "dropped again"));
        assert!(matches!(l.state(), RelayLinkState::Waiting { .. }));
        assert!(!l.view(fourth).reserving_again);
        assert_eq!(l.poll_timeout(), Some(fourth + Duration::from_secs(1)));
        assert_eq!(l.view(fourth).dropped, 3, "the failure is no in-place drop");
        // Reconnected and reserved again, a minute after the first drops: room again.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(l.poll(later), Some(RelayCommand::Connect));
        l.on_connected(later);
        l.on_reservation_accepted(later);
        assert!(l.on_reservation_dropped(later, "dropped"));
    }

    #[test]
    fn a_drop_without_a_reservation_held_is_a_failure() {
        let t0 = Instant::now();
        let mut l = link();
        l.poll(t0);
        l.on_connected(t0);
        assert!(!l.on_reservation_dropped(t0, "listener closed"));
        assert!(matches!(l.state(), RelayLinkState::Waiting { .. }));
        assert_eq!(l.view(t0).dropped, 0);
    }

    #[test]
    fn jitter_stays_within_bounds_and_is_seeded() {
        let cfg = RelayLinkConfig {
            initial_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(10),
            jitter: 0.2,
            ..RelayLinkConfig::default()
        };
        let t0 = Instant::now();
        let retry = |seed| {
            let mut l = RelayLink::new(cfg.clone(), seed);
            l.poll(t0);
            l.on_failure(t0, "x");
            l.poll_timeout().unwrap() - t0
        };
        for seed in 0..50 {
            let d = retry(seed);
            assert!(
                d >= Duration::from_secs(8) && d <= Duration::from_secs(12),
                "{d:?}"
            );
            assert_eq!(d, retry(seed));
        }
    }
}
