//! Fuzz targets: every decoder that reads bytes from a peer or text from a user.
//!
//! Each [`Target`] takes arbitrary bytes, decodes them the way the node does, and when the
//! decoder accepts them checks what must then hold (re-encoding gives the same message, a
//! state machine keeps its invariants). A target panics only on a broken rule; refusing the
//! input is the normal outcome.
//!
//! The same targets run three ways:
//! - under libFuzzer, coverage-guided: `cargo xtask fuzz` (the binary built with the
//!   `libfuzzer` feature and the instrumentation flags; a bounded run is part of `cargo xtask
//!   test`);
//! - as replay: `tests/replay.rs` runs every file of the corpora and of the regressions kept in
//!   this crate (`corpus/<target>/`, `regressions/<target>/`) on every `cargo test`;
//! - by hand: `cargo run -p tabmesh-fuzz -- <target> <file>...` replays files without
//!   instrumentation, for a debugger.

mod script;
mod targets;

pub use script::Script;

/// What a target made of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The decoder accepted the input (and the checks on it held).
    Accepted,
    /// The decoder refused the input with an error.
    Refused,
}

/// One fuzz target.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Its name: the directory of its corpus, and what `cargo xtask fuzz` is given.
    pub name: &'static str,
    /// What it reads, in a few words.
    pub about: &'static str,
    /// Runs one input. Panics when a rule is broken.
    pub run: fn(&[u8]) -> Outcome,
    /// Valid inputs the corpus starts from (each must be [`Outcome::Accepted`]).
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every target.
pub const TARGETS: &[Target] = targets::ALL;

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
