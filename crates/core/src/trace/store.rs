//! The spans a peer recorded, bounded: the oldest go first when it is full.
//!
//! Recording is a map insert and, when full, one eviction: it never waits and never grows past
//! `capacity`, so a busy protocol is not slowed by tracing and a peer flooded with traced
//! messages only loses its oldest spans.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::{Span, SpanId, SpanStatus, TraceId};

/// Spans kept by default.
pub const DEFAULT_CAPACITY: usize = 4096;

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
    next: u64,
    spans: BTreeMap<u64, Span>,
    by_id: HashMap<SpanId, u64>,
    by_trace: HashMap<TraceId, BTreeSet<u64>>,
    counters: StoreCounters,
}

impl SpanStore {
    /// An empty store of at most `capacity` spans (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
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

    /// Its counts.
    pub fn counters(&self) -> StoreCounters {
        self.counters
    }

    /// Records `span`; a span with the same id replaces the one held (in place). Evicts the
    /// oldest span when full.
    pub fn record(&mut self, span: Span) {
        if let Some(seq) = self.by_id.get(&span.span_id)
            && let Some(held) = self.spans.get_mut(seq)
            && held.trace_id == span.trace_id
        {
            *held = span;
            return;
        }
        if self.spans.len() >= self.capacity {
            self.evict_oldest();
        }
        let seq = self.next;
        self.next += 1;
        self.by_id.insert(span.span_id, seq);
        self.by_trace.entry(span.trace_id).or_default().insert(seq);
        self.spans.insert(seq, span);
        self.counters.recorded += 1;
    }

    /// Ends the span `id` at `end_ms` with `status`; `false` when it is not held (evicted).
    pub fn end(&mut self, id: SpanId, end_ms: u64, status: SpanStatus) -> bool {
        match self.by_id.get(&id).and_then(|seq| self.spans.get_mut(seq)) {
            Some(span) => {
                span.end(end_ms, status);
                true
            }
            None => false,
        }
    }

    /// Changes the span `id` with `change`; `false` when it is not held.
    pub fn update(&mut self, id: SpanId, change: impl FnOnce(&mut Span)) -> bool {
        match self.by_id.get(&id).and_then(|seq| self.spans.get_mut(seq)) {
            Some(span) => {
                change(span);
                true
            }
            None => false,
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

    fn evict_oldest(&mut self) {
        if let Some((seq, span)) = self.spans.pop_first() {
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
}
