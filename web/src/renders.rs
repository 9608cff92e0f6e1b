//! How often each part of the page has rendered since it loaded (`window.tabmesh.renders()`):
//! what the page costs, for the benchmark and for anyone wondering why a tab is busy.
//!
//! Each panel counts itself when Yew runs it, which it does only when its properties changed
//! (see [`Part`](crate::state::Part)).

use std::cell::RefCell;
use std::collections::BTreeMap;

thread_local! {
    static RENDERS: RefCell<BTreeMap<&'static str, u64>> = const { RefCell::new(BTreeMap::new()) };
}

/// Counts one render of `part`.
pub(crate) fn count(part: &'static str) {
    RENDERS.with(|r| *r.borrow_mut().entry(part).or_default() += 1);
}

/// Renders so far, by part.
pub(crate) fn counts() -> BTreeMap<&'static str, u64> {
    RENDERS.with(|r| r.borrow().clone())
}
