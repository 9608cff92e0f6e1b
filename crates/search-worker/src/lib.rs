//! A tab's Lucas-Lehmer search, off its UI thread.
//!
//! The tab (`tabmesh-node`'s wasm platform) starts this module in a dedicated Web Worker
//! (`search/worker.js`, a module worker) and drives it one slice at a time; between slices the
//! tab rests as its [`SearchPace`](tabmesh_core::gimps::pace::SearchPace) says, so the pace and
//! every rule stay on the tab's side and this worker only computes.
//!
//! Messages are arrays of numbers (structured clone):
//! - tab → worker `[task, p, budget_ms]`: work on test `task`, which tests `2^p - 1`, for about
//!   `budget_ms` milliseconds or until it is complete (a task not seen before, or seen with
//!   another `p`, starts from the beginning);
//! - worker → tab `[task, state, done, worked_ms]`: `state` is [`RUNNING`], [`PRIME`],
//!   [`COMPOSITE`] or [`REFUSED`] (a malformed request), `done` the iterations so far, and
//!   `worked_ms` how long this slice computed.
//!
//! The worker's first message is the string `"ready"` (sent by `worker.js` once this module is
//! loaded); a tab sends nothing before it.

use std::collections::VecDeque;

use std::time::Duration;

use tabmesh_core::gimps::lucas_lehmer::LucasLehmer;

/// The test is not finished.
pub const RUNNING: u32 = 0;
/// `2^p - 1` is prime.
pub const PRIME: u32 = 1;
/// `2^p - 1` is composite.
pub const COMPOSITE: u32 = 2;
/// The request was malformed (not three numbers, `task` or `p` not whole, `p` or the budget out
/// of range); nothing was run.
pub const REFUSED: u32 = 3;

/// Tests kept at once: a tab runs one search and perhaps a few service calls; a task the tab
/// abandoned is dropped when newer ones need the room.
const MAX_TASKS: usize = 8;

/// Largest exponent accepted: the tab never searches near it, and one squaring of a number this
/// size already takes long enough to stall a slice.
pub const MAX_EXPONENT: u32 = 1 << 24;
/// Longest slice accepted, in milliseconds.
pub const MAX_BUDGET_MS: f64 = 1000.0;

/// One slice's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// [`RUNNING`], [`PRIME`], [`COMPOSITE`] or [`REFUSED`].
    pub state: u32,
    /// Iterations done so far.
    pub done: u32,
}

/// The tests a worker holds, oldest first.
#[derive(Debug, Default)]
pub struct Tasks {
    tests: VecDeque<(u32, LucasLehmer)>,
}

impl Tasks {
    /// Works on `task` (testing `2^p - 1`) for `budget` on `clock` (see
    /// `LucasLehmer::advance_for`).
    pub fn advance(
        &mut self,
        task: u32,
        p: u32,
        budget: Duration,
        clock: impl FnMut() -> Duration,
    ) -> Slice {
        if !(2..=MAX_EXPONENT).contains(&p) {
            return Slice {
                state: REFUSED,
                done: 0,
            };
        }
        let index = match self.tests.iter().position(|(t, _)| *t == task) {
            Some(i) if self.tests[i].1.exponent() == p => i,
            found => {
                if let Some(i) = found {
                    self.tests.remove(i);
                }
                if self.tests.len() >= MAX_TASKS {
                    self.tests.pop_front();
                }
                self.tests.push_back((task, LucasLehmer::new(p)));
                self.tests.len() - 1
            }
        };
        let test = &mut self.tests[index].1;
        let verdict = test.advance_for(budget, clock);
        let done = test.progress().0;
        let state = match verdict {
            None => RUNNING,
            Some(prime) => {
                self.tests.remove(index);
                if prime { PRIME } else { COMPOSITE }
            }
        };
        Slice { state, done }
    }

    /// Tests held.
    pub fn len(&self) -> usize {
        self.tests.len()
    }

    /// Whether no test is held.
    pub fn is_empty(&self) -> bool {
        self.tests.is_empty()
    }
}

/// The request `[task, p, budget_ms]`, if well formed.
pub fn parse_request(values: &[f64]) -> Option<(u32, u32, Duration)> {
    let whole =
        |v: f64| (v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v)).then_some(v as u32);
    match values {
        [task, p, budget] if (0.0..=MAX_BUDGET_MS).contains(budget) => Some((
            whole(*task)?,
            whole(*p)?,
            Duration::from_secs_f64(budget / 1e3),
        )),
        _ => None,
    }
}

#[cfg(target_arch = "wasm32")]
mod worker {
    use std::cell::RefCell;

    use wasm_bindgen::JsCast;
    use wasm_bindgen::prelude::*;
    use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

    use super::{Duration, REFUSED, Tasks, parse_request};

    thread_local! {
        static TASKS: RefCell<Tasks> = RefCell::new(Tasks::default());
    }

    /// Takes the worker's messages from now on (runs when `worker.js` loads the module).
    #[wasm_bindgen(start)]
    pub fn start() {
        let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
        let reply_scope = scope.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let data = event.data();
            let values: Vec<f64> = if js_sys::Array::is_array(&data) {
                js_sys::Array::from(&data)
                    .iter()
                    .map(|v| v.as_f64().unwrap_or(f64::NAN))
                    .collect()
            } else {
                Vec::new()
            };
            let performance = reply_scope.performance();
            let now = || performance.as_ref().map_or(0.0, |p| p.now());
            let clock = || Duration::from_secs_f64(now().max(0.0) / 1e3);
            let reply = match parse_request(&values) {
                Some((task, p, budget)) => {
                    let start = now();
                    let slice = TASKS.with(|t| t.borrow_mut().advance(task, p, budget, clock));
                    let worked = (now() - start).max(0.0);
                    [
                        f64::from(task),
                        f64::from(slice.state),
                        f64::from(slice.done),
                        worked,
                    ]
                }
                None => [
                    values.first().copied().unwrap_or(0.0),
                    f64::from(REFUSED),
                    0.0,
                    0.0,
                ],
            };
            let array: js_sys::Array = reply.iter().map(|v| JsValue::from_f64(*v)).collect();
            // A tab that went away cannot be told; nothing else can fail here.
            let _ = reply_scope.post_message(&array);
        });
        scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        on_message.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slice of `n` clock reads: a clock moving 1 ms per read, budget `n - 1` ms.
    fn slice(tasks: &mut Tasks, task: u32, p: u32, reads: u32) -> Slice {
        let mut t = Duration::ZERO;
        let clock = move || {
            t += Duration::from_millis(1);
            t
        };
        tasks.advance(task, p, Duration::from_millis(u64::from(reads - 1)), clock)
    }

    fn run_to_end(tasks: &mut Tasks, task: u32, p: u32) -> Slice {
        loop {
            let s = slice(tasks, task, p, 10);
            if s.state != RUNNING {
                return s;
            }
        }
    }

    #[test]
    fn slices_add_up_to_the_whole_test() {
        let mut tasks = Tasks::default();
        assert_eq!(run_to_end(&mut tasks, 1, 521).state, PRIME);
        assert_eq!(run_to_end(&mut tasks, 2, 523).state, COMPOSITE);
        assert_eq!(run_to_end(&mut tasks, 3, 4423).state, PRIME);
        // A finished test is dropped.
        assert!(tasks.is_empty());
        let first = slice(&mut tasks, 4, 607, 3);
        assert_eq!(first.state, RUNNING);
        assert_eq!(slice(&mut tasks, 4, 607, 3).done, 2 * first.done);
    }

    #[test]
    fn tasks_interleave_and_a_new_exponent_starts_over() {
        let mut tasks = Tasks::default();
        let one = slice(&mut tasks, 1, 607, 3).done;
        slice(&mut tasks, 2, 521, 2);
        assert_eq!(slice(&mut tasks, 1, 607, 3).done, 2 * one);
        // Task 1 now asks about another exponent: a fresh test.
        assert_eq!(slice(&mut tasks, 1, 1279, 3).done, one);
        assert_eq!(tasks.len(), 2);
    }

    #[test]
    fn abandoned_tasks_make_room_and_bad_requests_are_refused() {
        let mut tasks = Tasks::default();
        for task in 0..(MAX_TASKS as u32 + 3) {
            slice(&mut tasks, task, 4423, 2);
        }
        assert_eq!(tasks.len(), MAX_TASKS);
        // The oldest went: task 0 starts over.
        let again = slice(&mut tasks, 0, 4423, 2);
        assert_eq!(again.done, slice(&mut tasks, 99, 4423, 2).done);
        for p in [0, 1, MAX_EXPONENT + 1] {
            assert_eq!(slice(&mut tasks, 98, p, 2).state, REFUSED, "p = {p}");
        }
        assert_eq!(
            parse_request(&[1.0, 521.0, 10.0]),
            Some((1, 521, Duration::from_millis(10)))
        );
        for bad in [
            &[1.0, 521.0][..],
            &[1.0, 521.5, 10.0],
            &[-1.0, 521.0, 10.0],
            &[1.0, f64::NAN, 10.0],
            &[1.0, 1e12, 10.0],
            &[1.0, 521.0, -1.0],
            &[1.0, 521.0, f64::INFINITY],
            &[1.0, 521.0, MAX_BUDGET_MS + 1.0],
            &[1.0, 2.0, 3.0, 4.0],
        ] {
            assert_eq!(parse_request(bad), None, "{bad:?}");
        }
    }
}
