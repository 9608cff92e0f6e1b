//! How often each part of the page has rendered since it loaded (`window.tabmesh.renders()`):
//! what the page costs, for the benchmark and for anyone wondering why a tab is busy.
//!
//! Each panel counts itself when Yew runs it, which it does only when its properties changed
//! (see [`Part`](crate::state::Part)).

use std::cell::RefCell;
use std::collections::BTreeMap;

thread_local! {
    static RENDERS: RefCell<BTreeMap<String, u64>> = const { RefCell::new(BTreeMap::new()) };
}

/// Counts one render of `part`.
pub(crate) fn count(part: &'static str) {
    RENDERS.with(|r| {
        let mut renders = r.borrow_mut();
        match renders.get_mut(part) {
            Some(n) => *n += 1,
            None => {
                renders.insert(part.to_owned(), 1);
            }
        }
    });
}

/// Renders so far, by part.
pub(crate) fn counts() -> BTreeMap<String, u64> {
    RENDERS.with(|r| r.borrow().clone())
}
