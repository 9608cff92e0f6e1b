//! How hard a node searches: the share of one CPU core its Lucas-Lehmer test may take.
//!
//! A tab runs its test in slices (in a Web Worker, or on the page if no worker could start).
//! After each slice it rests long enough that work over work-plus-rest equals its share: a tab
//! at 10% that worked 10 ms rests 90 ms. Eight tabs at full speed keep both cores of a small
//! machine busy; at the default gentle pace they take under a core together. A slice lasts
//! [`SearchPace::SLICE`] (see `LucasLehmer::advance_for`).
//!
//! No clock here: the caller measures each slice and asks for the rest.

use serde::{Deserialize, Serialize};
use web_time::Duration;

/// The share of one core a search may use, in per mille (1..=1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchPace {
    per_mille: u16,
}

impl SearchPace {
    /// The default: about a tenth of a core, so that a learner's 8 tabs leave the machine usable.
    pub const GENTLE: Self = Self { per_mille: 100 };
    /// A whole core: as fast as the test goes.
    pub const FULL: Self = Self { per_mille: 1000 };
    /// How long one slice of work aims to take.
    pub const SLICE: Duration = Duration::from_millis(10);

    /// A pace of `per_mille` thousandths of a core, clamped to 1..=1000.
    pub fn per_mille(per_mille: u16) -> Self {
        Self {
            per_mille: per_mille.clamp(1, 1000),
        }
    }

    /// The share in thousandths of a core.
    pub fn as_per_mille(self) -> u16 {
        self.per_mille
    }

    /// Whether this is full speed (no rest at all).
    pub fn is_full(self) -> bool {
        self.per_mille >= 1000
    }

    /// How long to rest after a slice that took `worked`, so that work takes this share.
    pub fn rest_after(self, worked: Duration) -> Duration {
        let share = f64::from(self.per_mille) / 1000.0;
        worked.mul_f64((1.0 - share) / share)
    }
}

impl Default for SearchPace {
    fn default() -> Self {
        Self::GENTLE
    }
}

/// Where a node's Lucas-Lehmer test runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "place", content = "reason")]
pub enum SearchPlace {
    /// On a thread of its own (native nodes).
    Thread,
    /// In the tab's Web Worker, off the UI thread.
    Worker,
    /// No test has asked for the tab's worker yet: it is loaded by the first test, so a tab
    /// whose search is off, or waiting for its first round, has none.
    Idle,
    /// The tab's worker is loading.
    Starting,
    /// On the tab's UI thread, in slices, because the worker could not run (the reason).
    Page(String),
}

/// The search's pace and place, for the GIMPS panel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchView {
    /// The share of a core the search may take, in thousandths.
    pub pace_per_mille: u16,
    /// Where it runs.
    pub place: SearchPlace,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rest_makes_work_take_the_share() {
        let worked = Duration::from_millis(10);
        assert_eq!(
            SearchPace::GENTLE.rest_after(worked),
            Duration::from_millis(90)
        );
        assert_eq!(SearchPace::FULL.rest_after(worked), Duration::ZERO);
        let half = SearchPace::per_mille(500);
        assert_eq!(half.rest_after(worked), worked);
        // Over many slices of any length, work / (work + rest) is the share.
        let (mut work, mut rest) = (Duration::ZERO, Duration::ZERO);
        for ms in [3u64, 17, 9, 40, 1] {
            let w = Duration::from_millis(ms);
            work += w;
            rest += SearchPace::GENTLE.rest_after(w);
        }
        let share = work.as_secs_f64() / (work + rest).as_secs_f64();
        assert!((share - 0.1).abs() < 1e-9, "{share}");
    }

    #[test]
    fn a_pace_is_clamped_to_a_whole_core_and_never_zero() {
        assert_eq!(SearchPace::per_mille(0).as_per_mille(), 1);
        assert_eq!(SearchPace::per_mille(5000), SearchPace::FULL);
        assert!(SearchPace::FULL.is_full() && !SearchPace::GENTLE.is_full());
        assert_eq!(SearchPace::default(), SearchPace::GENTLE);
        // The slowest pace still ends a rest: 999 times the work.
        assert_eq!(
            SearchPace::per_mille(1).rest_after(Duration::from_millis(1)),
            Duration::from_millis(999)
        );
    }
}
