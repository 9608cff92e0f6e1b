//! A behaviour's wake-up call at the instant its state machine asks for.
//!
//! The core state machines say when they want to run next (`poll_timeout`); a behaviour keeps
//! one [`Timer`] armed at that instant so that the swarm polls it again then.

use std::task::{Context, Poll};

use futures::FutureExt;
use futures_timer::Delay;
use web_time::Instant;

/// One pending wake-up.
#[derive(Default)]
pub(crate) struct Timer {
    armed: Option<(Instant, Delay)>,
}

impl Timer {
    /// Arms the timer for `at` (none: disarmed) and registers the task to be woken then.
    /// `Ready` means the timer fired: run the state machine again.
    ///
    /// A deadline already past still goes through a (zero-length) timer: the caller ran its
    /// state machine just before, so whatever was due and possible is done; waking at once
    /// would spin the poll loop without ever giving the runtime (in a tab, the page) a turn.
    pub(crate) fn poll_at(&mut self, at: Option<Instant>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(at) = at else {
            self.armed = None;
            return Poll::Pending;
        };
        let stale = self
            .armed
            .as_ref()
            .is_none_or(|(armed_at, _)| *armed_at != at);
        if stale {
            let wait = at.saturating_duration_since(Instant::now());
            self.armed = Some((at, Delay::new(wait)));
        }
        match self.armed.as_mut().map(|(_, delay)| delay.poll_unpin(cx)) {
            Some(Poll::Ready(())) => {
                self.armed = None;
                Poll::Ready(())
            }
            _ => Poll::Pending,
        }
    }
}
