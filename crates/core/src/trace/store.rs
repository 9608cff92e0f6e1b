//! The spans a peer recorded, bounded: the oldest go first when it is full.
//!
//! Full means either bound: a number of spans, or the bytes they take (an estimate, see
//! [`Span::heap_bytes`]). Spans differ in size by an order of magnitude (a DHT request with its
//! attributes against a bare gossip forward), and a tab in a busy network records thousands a
//! minute: the byte budget is what keeps a tab's memory flat. Recording is a map insert and a
//! few evictions: it never waits and never grows past its bounds, so a busy protocol is not
//! slowed by tracing and a peer flooded with traced messages only loses its oldest spans.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::{Span, SpanId, SpanStatus, TraceId};

/// Spans kept by default.
pub const DEFAULT_CAPACITY: usize = 4096;
/// Bytes of spans kept by default (estimated): a few minutes of a busy network.
pub const DEFAULT_BUDGET_BYTES: usize = 4 * 1024 * 1024;

/// One trace, as the recent-traces list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceSummary {
    /// The trace.
    pub trace_id: TraceId,
    /// The name of its earliest span held here.
    pub name: String,
    /// When that span started (ms, this peer's clock).
    pub start_ms: u64,
    /// Spans of it held here.
    pub spans: usize,
    /// Whether it started here (its root span is ours).
    pub root_here: bool,
}

/// Counts of the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreCounters {
    /// Spans recorded.
    pub recorded: u64,
    /// Spans evicted to make room.
    pub evicted: u64,
}

/// A bounded span store.
#[derive(Debug)]
pub struct SpanStore {
    capacity: usize,
    budget_bytes: usize,
    /// What the spans held take, by [`Span::heap_bytes`].
    bytes: usize,
    next: u64,
    spans: BTreeMap<u64, Span>,
    by_id: HashMap<SpanId, u64>,
    by_trace: HashMap<TraceId, BTreeSet<u64>>,
    counters: StoreCounters,
}

impl SpanStore {
    /// An empty store of at most `capacity` spans (at least 1), within the default byte budget.
    pub fn new(capacity: usize) -> Self {
        Self::with_budget(capacity, DEFAULT_BUDGET_BYTES)
    }

    /// An empty store of at most `capacity` spans (at least 1) taking at most `budget_bytes`
    /// (it always keeps the newest span, however large).
    pub fn with_budget(capacity: usize, budget_bytes: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            budget_bytes,
            bytes: 0,
            next: 0,
            spans: BTreeMap::new(),
            by_id: HashMap::new(),
            by_trace: HashMap::new(),
            counters: StoreCounters::default(),
        }
    }

    /// Spans held.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// What the spans held take, estimated (see [`Span::heap_bytes`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Its counts.
    pub fn counters(&self) -> StoreCounters {
        self.counters
    }

    /// Records `span`; a span with the same id replaces the one held (in place). Evicts the
    /// oldest spans while either bound is passed.
    pub fn record(&mut self, span: Span) {
        if let Some(&seq) = self.by_id.get(&span.span_id)
            && self
                .spans
                .get(&seq)
                .is_some_and(|held| held.trace_id == span.trace_id)
        {
            self.update_held(seq, |held| *held = span);
            self.evict_past_bounds();
            return;
        }
        let seq = self.next;
        self.next += 1;
        self.bytes += span.heap_bytes();
        self.by_id.insert(span.span_id, seq);
        self.by_trace.entry(span.trace_id).or_default().insert(seq);
        self.spans.insert(seq, span);
        self.counters.recorded += 1;
        self.evict_past_bounds();
    }

    /// Ends the span `id` at `end_ms` with `status`; `false` when it is not held (evicted).
    pub fn end(&mut self, id: SpanId, end_ms: u64, status: SpanStatus) -> bool {
        self.update(id, |span| span.end(end_ms, status))
    }

    /// Changes the span `id` with `change`; `false` when it is not held.
    pub fn update(&mut self, id: SpanId, change: impl FnOnce(&mut Span)) -> bool {
        match self.by_id.get(&id).copied() {
            Some(seq) if self.spans.contains_key(&seq) => {
                self.update_held(seq, change);
                self.evict_past_bounds();
                true
            }
            _ => false,
        }
    }

    /// Changes the held span `seq`, keeping the byte count right.
    fn update_held(&mut self, seq: u64, change: impl FnOnce(&mut Span)) {
        if let Some(span) = self.spans.get_mut(&seq) {
            let before = span.heap_bytes();
            change(span);
            self.bytes = (self.bytes + span.heap_bytes()).saturating_sub(before);
        }
    }

    /// The span `id`, if held.
    pub fn get(&self, id: SpanId) -> Option<&Span> {
        self.by_id.get(&id).and_then(|seq| self.spans.get(seq))
    }

    /// The spans of `trace` held here, in the order they were recorded.
    pub fn spans_of(&self, trace: TraceId) -> Vec<Span> {
        self.held_of(trace).cloned().collect()
    }

    /// The `limit` traces with the most recently recorded spans here, newest first.
    ///
    /// Built for every view of the node, so it reads the spans in place: no span is copied.
    pub fn recent(&self, limit: usize) -> Vec<TraceSummary> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for span in self.spans.values().rev() {
            if out.len() >= limit {
                break;
            }
            if !seen.insert(span.trace_id) {
                continue;
            }
            // The earliest start, the first recorded of equals.
            let (mut first, mut spans, mut root_here) = (span, 0, false);
            for held in self.held_of(span.trace_id) {
                if spans == 0 || held.start_ms < first.start_ms {
                    first = held;
                }
                spans += 1;
                root_here |= held.parent_span_id.is_none();
            }
            out.push(TraceSummary {
                trace_id: span.trace_id,
                name: first.name.clone(),
                start_ms: first.start_ms,
                spans,
                root_here,
            });
        }
        out
    }

    fn held_of(&self, trace: TraceId) -> impl Iterator<Item = &Span> {
        self.by_trace
            .get(&trace)
            .into_iter()
            .flatten()
            .filter_map(|seq| self.spans.get(seq))
    }

    /// Evicts the oldest spans until both bounds hold again (the newest always stays).
    fn evict_past_bounds(&mut self) {
        while self.spans.len() > 1
            && (self.spans.len() > self.capacity || self.bytes > self.budget_bytes)
        {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((seq, span)) = self.spans.pop_first() {
            self.bytes = self.bytes.saturating_sub(span.heap_bytes());
            // (An id reused by another trace may map to a newer span: keep that one.)
            if self.by_id.get(&span.span_id) == Some(&seq) {
                self.by_id.remove(&span.span_id);
            }
            if let Some(set) = self.by_trace.get_mut(&span.trace_id) {
                set.remove(&seq);
                if set.is_empty() {
                    self.by_trace.remove(&span.trace_id);
                }
            }
            self.counters.evicted += 1;
        }
    }
}

impl Default for SpanStore {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::TraceContext;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn a_full_store_evicts_the_oldest_first_and_keeps_its_indexes_right() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut store = SpanStore::new(3);
        let a = TraceContext::root(&mut rng);
        let b = TraceContext::root(&mut rng);
        let a1 = Span::start(a, None, "a1", "p", 1);
        let a2 = Span::start(a.child(&mut rng), Some(a.span_id), "a2", "p", 2);
        let b1 = Span::start(b, None, "b1", "p", 3);
        for span in [a1.clone(), a2.clone(), b1.clone()] {
            store.record(span);
        }
        assert_eq!(store.spans_of(a.trace_id).len(), 2);
        let b2 = Span::start(b.child(&mut rng), Some(b.span_id), "b2", "p", 4);
        store.record(b2.clone());
        assert_eq!(store.len(), 3);
        assert_eq!(
            store.spans_of(a.trace_id),
            vec![a2.clone()],
            "a1 went first"
        );
        assert!(store.get(a1.span_id).is_none());
        assert!(
            !store.end(a1.span_id, 9, SpanStatus::Ok),
            "an evicted span cannot be ended"
        );
        assert_eq!(
            store.counters(),
            StoreCounters {
                recorded: 4,
                evicted: 1
            }
        );
        // Ending and replacing a held span does not take room.
        assert!(store.end(b2.span_id, 10, SpanStatus::Ok));
        let mut again = b1.clone();
        again.attribute("k", "v");
        store.record(again);
        assert_eq!(store.len(), 3);
        assert_eq!(store.get(b1.span_id).unwrap().attributes["k"], "v");
        assert_eq!(store.get(b2.span_id).unwrap().end_ms, Some(10));
        let recent = store.recent(10);
        assert_eq!(
            recent
                .iter()
                .map(|t| (t.name.as_str(), t.spans, t.root_here))
                .collect::<Vec<_>>(),
            vec![("b1", 2, true), ("a2", 1, false)]
        );
        assert_eq!(store.recent(1).len(), 1);
    }

    #[test]
    fn a_summary_names_the_earliest_span_whatever_the_order_of_recording() {
        let mut rng = SmallRng::seed_from_u64(5);
        let root = TraceContext::root(&mut rng);
        let mut store = SpanStore::new(10);
        let late = Span::start(root.child(&mut rng), Some(root.span_id), "late", "p", 30);
        let early = Span::start(root.child(&mut rng), Some(root.span_id), "early", "p", 10);
        let tie = Span::start(root.child(&mut rng), Some(root.span_id), "tie", "p", 10);
        store.record(late);
        store.record(early);
        store.record(tie);
        let recent = store.recent(5);
        assert_eq!(recent.len(), 1);
        assert_eq!((recent[0].name.as_str(), recent[0].start_ms), ("early", 10));
        assert_eq!(recent[0].spans, 3);
        assert!(!recent[0].root_here, "its root span was recorded elsewhere");
    }

    #[test]
    fn a_flood_of_spans_never_grows_it() {
        let mut rng = SmallRng::seed_from_u64(4);
        let mut store = SpanStore::new(100);
        for i in 0..10_000 {
            store.record(Span::start(TraceContext::root(&mut rng), None, "x", "p", i));
        }
        assert_eq!(store.len(), 100);
        assert_eq!(store.counters().evicted, 9_900);
        assert_eq!(store.recent(1000).len(), 100);
    }

    /// The sum the store keeps, checked against its spans.
    fn counted_right(store: &SpanStore) -> bool {
        store.bytes() == store.spans.values().map(Span::heap_bytes).sum::<usize>()
    }

    #[test]
    fn large_spans_are_bounded_by_bytes_before_the_count_is_reached() {
        let mut rng = SmallRng::seed_from_u64(6);
        let budget = 64 * 1024;
        let mut store = SpanStore::with_budget(4096, budget);
        let big = |rng: &mut SmallRng, i: u64| {
            let mut span = Span::start(TraceContext::root(rng), None, "dht.request", "p", i);
            for k in 0..8 {
                span.attribute(&format!("key{k}"), "v".repeat(200));
            }
            span
        };
        let one = big(&mut rng, 0).heap_bytes();
        assert!(one > 1600, "eight 200-byte attributes: {one}");
        for i in 0..1000 {
            store.record(big(&mut rng, i));
            assert!(store.bytes() <= budget);
        }
        assert_eq!(
            store.len(),
            budget / one,
            "as many as fit, far fewer than 4096"
        );
        assert!(counted_right(&store));
        let oldest_held = store.spans.values().next().map(|s| s.start_ms);
        assert_eq!(
            oldest_held,
            Some(1000 - (budget / one) as u64),
            "the newest ones"
        );
        assert_eq!(
            store.counters().evicted,
            1000 - store.len() as u64,
            "every span dropped is counted"
        );
    }

    #[test]
    fn a_span_that_grows_after_recording_is_counted_and_can_push_older_ones_out() {
        let mut rng = SmallRng::seed_from_u64(7);
        let first = Span::start(TraceContext::root(&mut rng), None, "first", "p", 1);
        let second = Span::start(TraceContext::root(&mut rng), None, "second", "p", 2);
        let budget = first.heap_bytes() + second.heap_bytes() + 100;
        let mut store = SpanStore::with_budget(10, budget);
        store.record(first.clone());
        store.record(second.clone());
        assert_eq!(store.len(), 2);
        // Ending with a long error, or replacing with more attributes, changes the count.
        assert!(store.end(second.span_id, 5, SpanStatus::Error("e".repeat(50))));
        assert!(counted_right(&store));
        assert_eq!(store.len(), 2, "still within the budget");
        assert!(store.update(second.span_id, |s| s.attribute("why", "w".repeat(200))));
        assert!(counted_right(&store));
        assert_eq!(store.len(), 1, "the older span made room");
        assert!(store.get(first.span_id).is_none());
        // The newest span stays even when it alone is over the budget.
        let mut huge = second.clone();
        for k in 0..32 {
            huge.attribute(&format!("k{k}"), "h".repeat(256));
        }
        store.record(huge);
        assert_eq!(store.len(), 1);
        assert!(store.bytes() > budget);
        assert!(counted_right(&store));
    }

    #[test]
    fn replacing_a_span_with_a_larger_one_keeps_the_store_within_its_budget() {
        let mut rng = SmallRng::seed_from_u64(8);
        let first = Span::start(TraceContext::root(&mut rng), None, "first", "p", 1);
        let mut second = Span::start(TraceContext::root(&mut rng), None, "second", "p", 2);
        second.attribute("why", "w");
        let budget = first.heap_bytes() + second.heap_bytes() + 100;
        let mut store = SpanStore::with_budget(10, budget);
        store.record(first.clone());
        store.record(second.clone());
        // Grown past what both may take, though it fits alone.
        let mut grown = second.clone();
        grown.attribute("why", "w".repeat(150));
        assert!(grown.heap_bytes() + first.heap_bytes() > budget && grown.heap_bytes() <= budget);
        store.record(grown);
        assert!(counted_right(&store));
        assert!(store.bytes() <= budget, "{} > {budget}", store.bytes());
        assert_eq!(store.len(), 1, "the older span made room");
        assert!(store.get(first.span_id).is_none());
        assert_eq!(store.counters().recorded, 2, "a replacement is no new span");
    }
}
