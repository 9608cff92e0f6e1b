//! A whole trace from the spans each peer sent back.
//!
//! 1. **Everything on one clock.** Each peer records on its own clock. Where a span on one peer
//!    is the client side of a request whose server side is a child span on another peer, that
//!    pair bounds the server's clock offset (its span lies within the client's). Where the
//!    bounds of all pairs between two peers agree, the smallest shift they allow is taken, as
//!    trace viewers' clock-skew adjusters do; where they do not, the median of the midpoint
//!    differences, as NTP does (the delay assumed the same both ways). Offsets spread from the
//!    reference peer (the one assembling) along the tree, then are adjusted, as little as it
//!    takes, until every pair holds, not only those on the tree (when the pairs allow it at
//!    all; a clock that drifted during the trace can make them contradict each other, and then
//!    the tree's estimates stand). A peer reached only by one-way messages is shifted just
//!    enough that none of its spans starts before its parent (causality), and not at all if
//!    none does.
//! 2. **Gaps, not errors.** A peer that did not answer (left, unreachable, refused) is listed in
//!    `missing` with the reason; spans whose parent is not among the spans gathered are kept
//!    and marked `orphan`, so a viewer draws them under a gap. A request that was lost with
//!    the connection it rode while the peer stays connected is not a gap: it is sent again
//!    ([`ask_again`]).
//! 3. **Bounded and checked.** Only spans of the trace asked for count; at most
//!    [`MAX_SPANS`] are kept (the earliest); a peer's spans that name another peer as their
//!    recorder are dropped and counted (`refused`): a peer speaks for itself only.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::{Span, SpanId, TraceId};

/// Spans of one assembled trace, at most.
pub const MAX_SPANS: usize = 2048;

/// Times one gathering asks a peer for its spans, at most.
pub const ASKS_PER_PEER: u32 = 2;

/// Whether a request for a peer's spans that failed after `asked` requests is sent again: when
/// the connection it rode closed (`connection_closed`) while the peer stays connected (a
/// relayed connection giving way to a direct one), up to [`ASKS_PER_PEER`]. Otherwise the peer
/// is missing, with the failure as the reason (rule 2).
pub fn ask_again(asked: u32, connection_closed: bool, still_connected: bool) -> bool {
    connection_closed && still_connected && asked < ASKS_PER_PEER
}
/// The attribute that marks a span as the client side of a request (value `client`) or the
/// server side (value `server`), as OpenTelemetry's span kinds do.
pub const KIND: &str = "span.kind";

/// The attribute that names the peer a message was sent to.
pub const REMOTE: &str = "peer.remote";

/// A peer whose spans are missing from the trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missing {
    /// The peer.
    pub peer: String,
    /// Why: it left, could not be reached, refused.
    pub reason: String,
}

/// A span as drawn: on the reference clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedSpan {
    /// The span, its times moved onto the reference clock.
    #[serde(flatten)]
    pub span: Span,
    /// Its parent is not among the spans gathered (drawn under a gap).
    #[serde(default)]
    pub orphan: bool,
}

/// A trace put together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// The trace.
    pub trace_id: TraceId,
    /// Its spans, on the reference clock, by start time.
    pub spans: Vec<PlacedSpan>,
    /// The peers whose spans are in it.
    pub peers: Vec<String>,
    /// The peers that should have spans in it but did not send them.
    pub missing: Vec<Missing>,
    /// Each peer's clock minus the reference clock, ms, as estimated (rule 1).
    pub offsets_ms: BTreeMap<String, i64>,
    /// Spans dropped: not of this trace, recorded by someone else, or over the bound.
    pub refused: usize,
}

/// What one peer answered when asked for its spans of the trace.
pub type Answer = (String, Result<Vec<Span>, String>);

/// Assembles trace `trace_id` from the answers, on `reference`'s clock.
pub fn assemble(trace_id: TraceId, reference: &str, answers: Vec<Answer>) -> Trace {
    let mut refused = 0;
    let mut missing = Vec::new();
    let mut heard: BTreeSet<String> = BTreeSet::new();
    let mut spans: Vec<Span> = Vec::new();
    let mut seen = BTreeSet::new();
    for (peer, answer) in answers {
        match answer {
            Ok(list) => {
                heard.insert(peer.clone());
                for span in list {
                    if span.trace_id != trace_id || span.peer != peer || !seen.insert(span.span_id)
                    {
                        refused += 1;
                    } else {
                        spans.push(span);
                    }
                }
            }
            Err(reason) => missing.push(Missing { peer, reason }),
        }
    }
    spans.sort_by_key(Span::start_order);
    if spans.len() > MAX_SPANS {
        refused += spans.len() - MAX_SPANS;
        spans.truncate(MAX_SPANS);
    }
    let offsets = offsets(&spans, reference);
    let ids: HashMap<SpanId, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id, i))
        .collect();
    let mut placed: Vec<PlacedSpan> = spans
        .iter()
        .map(|span| {
            let offset = offsets.get(&span.peer).copied().unwrap_or(0);
            let mut span = span.clone();
            span.start_ms = shift(span.start_ms, offset);
            span.end_ms = span.end_ms.map(|e| shift(e, offset));
            for event in &mut span.events {
                event.at_ms = shift(event.at_ms, offset);
            }
            let orphan = span.parent_span_id.is_some_and(|p| !ids.contains_key(&p));
            PlacedSpan { span, orphan }
        })
        .collect();
    placed.sort_by_key(|p| (p.span.start_ms, p.span.span_id));
    let peers: BTreeSet<String> = placed.iter().map(|p| p.span.peer.clone()).collect();
    // A peer that answered with nothing of this trace is not missing; one a span names as the
    // target of a message (attribute `peer.remote`) and that was not heard from at all is.
    let failed: BTreeSet<String> = missing.iter().map(|m| m.peer.clone()).collect();
    let named: BTreeSet<String> = placed
        .iter()
        .filter_map(|p| p.span.attributes.get(REMOTE).cloned())
        .filter(|p| !heard.contains(p) && !failed.contains(p))
        .collect();
    missing.extend(named.into_iter().map(|peer| Missing {
        peer,
        reason: "not heard from".to_owned(),
    }));
    Trace {
        trace_id,
        spans: placed,
        peers: peers.into_iter().collect(),
        missing,
        offsets_ms: offsets,
        refused,
    }
}

/// The trace as an indented tree, one line per span (children under their parent, by start),
/// then the missing peers: what the native node prints. `name_of` names a peer id.
pub fn tree(trace: &Trace, name_of: &dyn Fn(&str) -> String) -> Vec<String> {
    let t0 = trace
        .spans
        .iter()
        .map(|s| s.span.start_ms)
        .min()
        .unwrap_or(0);
    let mut children: HashMap<Option<SpanId>, Vec<&PlacedSpan>> = HashMap::new();
    for placed in &trace.spans {
        let parent = if placed.orphan {
            None
        } else {
            placed.span.parent_span_id
        };
        children.entry(parent).or_default().push(placed);
    }
    let mut lines = vec![format!(
        "trace {}: {} span(s) from {} peer(s)",
        trace.trace_id,
        trace.spans.len(),
        trace.peers.len()
    )];
    let mut stack: Vec<(&PlacedSpan, usize)> = children
        .get(&None)
        .into_iter()
        .flatten()
        .rev()
        .map(|s| (*s, 0))
        .collect();
    while let Some((placed, depth)) = stack.pop() {
        let span = &placed.span;
        let took = span
            .duration_ms()
            .map_or_else(|| "running".to_owned(), |d| format!("{d} ms"));
        let status = match &span.status {
            super::SpanStatus::Error(why) => format!("  ✗ {why}"),
            _ => String::new(),
        };
        let gap = if placed.orphan { "… " } else { "" };
        lines.push(format!(
            "{}{gap}{}  [{}]  +{} ms, {took}{status}",
            "  ".repeat(depth + 1),
            span.name,
            name_of(&span.peer),
            span.start_ms.saturating_sub(t0),
        ));
        if let Some(kids) = children.get(&Some(span.span_id)) {
            stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
        }
    }
    for missing in &trace.missing {
        lines.push(format!(
            "  (missing: {} — {})",
            name_of(&missing.peer),
            missing.reason
        ));
    }
    lines
}

fn shift(ms: u64, offset: i64) -> u64 {
    // The offset is the peer's clock minus the reference clock: subtract it.
    if offset >= 0 {
        ms.saturating_sub(offset.unsigned_abs())
    } else {
        ms.saturating_add(offset.unsigned_abs())
    }
}

fn mid(span: &Span) -> Option<i128> {
    let end = span.end_ms?;
    Some((i128::from(span.start_ms) + i128::from(end)) / 2)
}

/// One request/reply between two peers, as evidence of the child's clock minus the parent's.
struct Pair {
    midpoints: i128,
    at_least: i128,
    at_most: i128,
}

/// The offset the pairs between two peers give. Every pair bounds it (the server's span lies
/// within the client's); when the bounds of all pairs agree, the smallest shift they allow is
/// taken, as trace viewers' clock-skew adjusters do: clocks that already agree (tabs on one
/// machine) are left alone, and a skewed clock is moved just enough. When they disagree (a clock
/// that drifted during the trace), the median of the midpoint differences is taken, which
/// assumes the delay is the same both ways. (Midpoints alone mislead on a loaded peer: a tab busy
/// with its search reads its acknowledgements late, which looks like a clock ahead.)
fn estimate(pairs: &[Pair]) -> i128 {
    let low = pairs.iter().map(|p| p.at_least).max();
    let high = pairs.iter().map(|p| p.at_most).min();
    match (low, high) {
        (Some(low), Some(high)) if low <= high => 0.clamp(low, high),
        _ => median(&pairs.iter().map(|p| p.midpoints).collect::<Vec<_>>()),
    }
}

/// Rule 1: each peer's clock minus `reference`'s.
fn offsets(spans: &[Span], reference: &str) -> BTreeMap<String, i64> {
    let by_id: HashMap<SpanId, &Span> = spans.iter().map(|s| (s.span_id, s)).collect();
    // Estimates between pairs of peers from client/server pairs: (parent peer, child peer) →
    // child clock minus parent clock.
    let mut pairs: BTreeMap<(String, String), Vec<Pair>> = BTreeMap::new();
    for child in spans {
        let Some(parent) = child.parent_span_id.and_then(|p| by_id.get(&p)) else {
            continue;
        };
        if parent.peer == child.peer
            || parent.attributes.get(KIND).map(String::as_str) != Some("client")
            || child.attributes.get(KIND).map(String::as_str) != Some("server")
        {
            continue;
        }
        if let (Some(c), Some(p), Some(child_end), Some(parent_end)) =
            (mid(child), mid(parent), child.end_ms, parent.end_ms)
        {
            pairs
                .entry((parent.peer.clone(), child.peer.clone()))
                .or_default()
                .push(Pair {
                    midpoints: c - p,
                    // The server's work lies within the client's wait: its end no later than
                    // the client's end, its start no earlier than the client's start.
                    at_least: i128::from(child_end) - i128::from(parent_end),
                    at_most: i128::from(child.start_ms) - i128::from(parent.start_ms),
                });
        }
    }
    let mut known: BTreeMap<String, i128> = BTreeMap::new();
    known.insert(reference.to_owned(), 0);
    // Spread along the pairs (both directions) until nothing changes.
    loop {
        let mut changed = false;
        for ((a, b), estimates) in &pairs {
            let median = estimate(estimates);
            match (known.get(a).copied(), known.get(b).copied()) {
                (Some(oa), None) => {
                    known.insert(b.clone(), oa + median);
                    changed = true;
                }
                (None, Some(ob)) => {
                    known.insert(a.clone(), ob - median);
                    changed = true;
                }
                _ => {}
            }
        }
        if !changed {
            break;
        }
    }
    // The spread above follows one path to each peer; a pair off that path may still be
    // broken (B's copy to C received, on the common clock, after B read C's acknowledgement).
    if let Some(all) = within_every_pair(&pairs, &known, reference) {
        known = all;
    }
    // Peers reached by one-way messages only: shifted so that none of their spans starts
    // before its parent, in tree order (parents first, as spans are sorted by start).
    let peers: BTreeSet<String> = spans.iter().map(|s| s.peer.clone()).collect();
    for _ in 0..peers.len() {
        let mut changed = false;
        for peer in &peers {
            if known.contains_key(peer) {
                continue;
            }
            let mut need: Option<i128> = None;
            let mut placeable = true;
            for child in spans.iter().filter(|s| s.peer == *peer) {
                let Some(parent) = child.parent_span_id.and_then(|p| by_id.get(&p)) else {
                    continue;
                };
                if parent.peer == child.peer {
                    continue;
                }
                let Some(parent_offset) = known.get(&parent.peer) else {
                    placeable = false;
                    continue;
                };
                // Child start on the reference clock must not precede the parent's start.
                let parent_start = i128::from(parent.start_ms) - parent_offset;
                let largest_offset = i128::from(child.start_ms) - parent_start;
                need = Some(need.map_or(largest_offset, |n: i128| n.min(largest_offset)));
            }
            if placeable || need.is_some() {
                known.insert(peer.clone(), need.map_or(0, |n| n.min(0)));
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    crate::map_from(
        known
            .into_iter()
            .map(|(peer, offset)| (peer, i64::try_from(offset).unwrap_or(0))),
    )
}

/// The offsets `estimates` lowered, each as little as it takes, until every pair between peers
/// in it holds (the server's span within the client's); `None` when the pairs contradict each
/// other (a clock that drifted), then the estimates stand. Each pair's bounds are difference
/// constraints between two offsets, so this is Bellman-Ford started from the estimates: it
/// settles within one round per peer or the constraints have no solution.
fn within_every_pair(
    pairs: &BTreeMap<(String, String), Vec<Pair>>,
    estimates: &BTreeMap<String, i128>,
    reference: &str,
) -> Option<BTreeMap<String, i128>> {
    let mut bounds = Vec::new();
    for ((a, b), evidence) in pairs {
        if !(estimates.contains_key(a) && estimates.contains_key(b)) {
            continue;
        }
        let at_least = evidence.iter().map(|p| p.at_least).max()?;
        let at_most = evidence.iter().map(|p| p.at_most).min()?;
        if at_least > at_most {
            return None;
        }
        bounds.push((a, b, at_least, at_most));
    }
    let mut offsets = estimates.clone();
    for _ in 0..=offsets.len() + 1 {
        let mut changed = false;
        for (a, b, at_least, at_most) in &bounds {
            let (oa, ob) = (offsets[*a], offsets[*b]);
            // b - a <= at_most, and a - b <= -at_least.
            if ob > oa + at_most {
                offsets.insert((*b).clone(), oa + at_most);
                changed = true;
            } else if oa > ob - at_least {
                offsets.insert((*a).clone(), ob - at_least);
                changed = true;
            }
        }
        if !changed {
            let shift = offsets.get(reference).copied().unwrap_or(0);
            return Some(crate::map_from(
                offsets.into_iter().map(|(p, o)| (p, o - shift)),
            ));
        }
    }
    None
}

fn median(values: &[i128]) -> i128 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{SpanStatus, TraceContext};
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn span(
        rng: &mut SmallRng,
        trace: TraceContext,
        parent: Option<&Span>,
        name: &str,
        peer: &str,
        (start, end): (u64, u64),
        kind: Option<&str>,
    ) -> Span {
        let context = if parent.is_some() {
            trace.child(rng)
        } else {
            trace
        };
        let mut s = Span::start(context, parent.map(|p| p.span_id), name, peer, start);
        if let Some(kind) = kind {
            s.attribute(KIND, kind);
        }
        s.end(end, SpanStatus::Ok);
        s
    }

    #[test]
    fn rule_1_clocks_that_agree_are_left_alone_when_acknowledgements_are_read_late() {
        let mut rng = SmallRng::seed_from_u64(6);
        let trace = TraceContext::root(&mut rng);
        // A and B share a clock. B receives each copy 2 ms after A sends it, but A, busy, reads
        // B's acknowledgement 80 to 120 ms later: the midpoints say B is ~40-60 ms behind.
        let mut a = Vec::new();
        let mut b = Vec::new();
        for (i, late) in [80u64, 100, 120].into_iter().enumerate() {
            let at = 1000 + 10 * i as u64;
            let send = span(
                &mut rng,
                trace,
                None,
                "send",
                "A",
                (at, at + late),
                Some("client"),
            );
            let receive = span(
                &mut rng,
                trace,
                Some(&send),
                "receive",
                "B",
                (at + 2, at + 2),
                Some("server"),
            );
            a.push(send);
            b.push(receive);
        }
        let t = assemble(
            trace.trace_id,
            "A",
            vec![("A".into(), Ok(a)), ("B".into(), Ok(b))],
        );
        assert_eq!(t.offsets_ms["B"], 0);
    }

    #[test]
    fn rule_1_a_request_reply_pair_puts_the_server_on_the_client_clock() {
        let mut rng = SmallRng::seed_from_u64(5);
        let trace = TraceContext::root(&mut rng);
        // A calls B: sent at 1000, answered at 1010 (A's clock). B's clock is 5000 ms ahead:
        // it handled the call from 6004 to 6006 on its clock, 1004 to 1006 on A's.
        let call = span(
            &mut rng,
            trace,
            None,
            "call",
            "A",
            (1000, 1010),
            Some("client"),
        );
        let serve = span(
            &mut rng,
            trace,
            Some(&call),
            "serve",
            "B",
            (6004, 6006),
            Some("server"),
        );
        let t = assemble(
            trace.trace_id,
            "A",
            vec![("A".into(), Ok(vec![call])), ("B".into(), Ok(vec![serve]))],
        );
        // The pair allows 4996..=5004 (B's 2 ms within A's 10): the smallest shift is taken,
        // within half the round trip of the truth.
        assert_eq!(t.offsets_ms["B"], 4996);
        let lines = tree(&t, &|p| format!("peer-{p}"));
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[1].starts_with("  call  [peer-A]  +0 ms, 10 ms"),
            "{lines:?}"
        );
        assert!(
            lines[2].starts_with("    serve  [peer-B]  +8 ms, 2 ms"),
            "{lines:?}"
        );
        let served = t.spans.iter().find(|s| s.span.name == "serve").unwrap();
        assert_eq!(
            (served.span.start_ms, served.span.end_ms),
            (1008, Some(1010))
        );
        assert_eq!(t.peers, vec!["A".to_owned(), "B".to_owned()]);
        assert!(t.missing.is_empty() && t.refused == 0);
    }

    #[test]
    fn rule_1_every_pair_holds_not_only_those_on_the_path_from_the_reference() {
        let mut rng = SmallRng::seed_from_u64(8);
        let trace = TraceContext::root(&mut rng);
        // A sends to B and to C; B forwards to C. A and B share a clock, C's is 4 ms ahead.
        // The pairs with A allow 0 for both, but B's copy reached C (1007 on A's clock,
        // 1011 on C's) after B read C's acknowledgement at 1008.
        let a_to_b = span(
            &mut rng,
            trace,
            None,
            "send",
            "A",
            (1000, 1020),
            Some("client"),
        );
        let b_gets = span(
            &mut rng,
            trace,
            Some(&a_to_b),
            "receive",
            "B",
            (1005, 1005),
            Some("server"),
        );
        let a_to_c = span(
            &mut rng,
            trace,
            None,
            "send",
            "A",
            (1000, 1020),
            Some("client"),
        );
        let c_gets_a = span(
            &mut rng,
            trace,
            Some(&a_to_c),
            "receive",
            "C",
            (1014, 1014),
            Some("server"),
        );
        let b_to_c = span(
            &mut rng,
            trace,
            Some(&b_gets),
            "send",
            "B",
            (1006, 1008),
            Some("client"),
        );
        let c_gets_b = span(
            &mut rng,
            trace,
            Some(&b_to_c),
            "receive",
            "C",
            (1011, 1011),
            Some("server"),
        );
        let t = assemble(
            trace.trace_id,
            "A",
            vec![
                ("A".into(), Ok(vec![a_to_b, a_to_c])),
                ("B".into(), Ok(vec![b_gets, b_to_c])),
                ("C".into(), Ok(vec![c_gets_a, c_gets_b])),
            ],
        );
        assert_eq!(t.offsets_ms["A"], 0);
        let by_id: HashMap<SpanId, &Span> =
            t.spans.iter().map(|p| (p.span.span_id, &p.span)).collect();
        let mut checked = 0;
        for server in t.spans.iter().filter(|p| p.span.name == "receive") {
            let client = by_id[&server.span.parent_span_id.unwrap()];
            assert!(
                server.span.start_ms >= client.start_ms && server.span.end_ms <= client.end_ms,
                "{:?} outside {:?}; offsets {:?}",
                server.span,
                client,
                t.offsets_ms
            );
            checked += 1;
        }
        assert_eq!(checked, 3);
        // Moved as little as it takes: 3 ms between B and C, A left alone.
        assert_eq!(
            t.offsets_ms["C"] - t.offsets_ms["B"],
            3,
            "{:?}",
            t.offsets_ms
        );
    }

    #[test]
    fn rule_1_one_way_messages_only_shift_a_peer_to_keep_causality() {
        let mut rng = SmallRng::seed_from_u64(6);
        let trace = TraceContext::root(&mut rng);
        // A gossips to C, whose clock is 300 ms behind: C's forward seems to start before A's
        // send. Shifted just enough; D's clock is fine and is not moved.
        let send = span(&mut rng, trace, None, "send", "A", (1000, 1001), None);
        let forward = span(
            &mut rng,
            trace,
            Some(&send),
            "forward",
            "C",
            (702, 703),
            None,
        );
        let other = span(
            &mut rng,
            trace,
            Some(&send),
            "forward",
            "D",
            (1003, 1004),
            None,
        );
        let t = assemble(
            trace.trace_id,
            "A",
            vec![
                ("A".into(), Ok(vec![send])),
                ("C".into(), Ok(vec![forward])),
                ("D".into(), Ok(vec![other])),
            ],
        );
        assert_eq!(t.offsets_ms["C"], -298);
        assert_eq!(t.offsets_ms["D"], 0);
        assert!(
            t.spans.iter().all(|s| s.span.start_ms >= 1000),
            "{:?}",
            t.spans
        );
    }

    #[test]
    fn rule_2_a_request_lost_with_its_connection_is_sent_again_while_the_peer_is_connected() {
        assert!(ask_again(1, true, true), "the relayed connection gave way");
        assert!(!ask_again(ASKS_PER_PEER, true, true), "asked enough");
        assert!(!ask_again(1, true, false), "the peer is gone");
        assert!(
            !ask_again(1, false, true),
            "it failed otherwise (timed out, refused)"
        );
    }

    #[test]
    fn rule_2_missing_peers_are_gaps_and_their_children_orphans() {
        let mut rng = SmallRng::seed_from_u64(7);
        let trace = TraceContext::root(&mut rng);
        let mut send = span(&mut rng, trace, None, "send", "A", (0, 1), None);
        send.attribute(REMOTE, "E");
        let lost = span(&mut rng, trace, Some(&send), "forward", "B", (2, 3), None);
        let after = span(&mut rng, trace, Some(&lost), "forward", "C", (4, 5), None);
        let t = assemble(
            trace.trace_id,
            "A",
            vec![
                ("A".into(), Ok(vec![send])),
                ("B".into(), Err("left".into())),
                ("C".into(), Ok(vec![after])),
            ],
        );
        assert_eq!(
            t.missing,
            vec![
                Missing {
                    peer: "B".into(),
                    reason: "left".into()
                },
                Missing {
                    peer: "E".into(),
                    reason: "not heard from".into()
                },
            ]
        );
        let c = t.spans.iter().find(|s| s.span.peer == "C").unwrap();
        assert!(c.orphan);
        let lines = tree(&t, &|p| p.to_owned());
        assert!(
            lines.iter().any(|l| l.contains("… forward  [C]")),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("(missing: B — left)")),
            "{lines:?}"
        );
        assert!(!t.spans.iter().find(|s| s.span.peer == "A").unwrap().orphan);
    }

    #[test]
    fn rule_3_a_peer_speaks_only_for_itself_and_for_this_trace() {
        let mut rng = SmallRng::seed_from_u64(8);
        let trace = TraceContext::root(&mut rng);
        let other = TraceContext::root(&mut rng);
        let mine = span(&mut rng, trace, None, "x", "A", (0, 1), None);
        let forged = span(&mut rng, trace, Some(&mine), "y", "B", (1, 2), None);
        let elsewhere = span(&mut rng, other, None, "z", "A", (0, 1), None);
        let t = assemble(
            trace.trace_id,
            "A",
            vec![("A".into(), Ok(vec![mine.clone(), forged, elsewhere, mine]))],
        );
        assert_eq!(t.spans.len(), 1);
        assert_eq!(
            t.refused, 3,
            "B's span sent by A, another trace's, a duplicate"
        );
        let many: Vec<Span> = (0..MAX_SPANS as u64 + 10)
            .map(|i| {
                let mut s = Span::start(trace.child(&mut rng), Some(trace.span_id), "n", "A", i);
                s.end(i, SpanStatus::Ok);
                s
            })
            .collect();
        let t = assemble(trace.trace_id, "A", vec![("A".into(), Ok(many))]);
        assert_eq!((t.spans.len(), t.refused), (MAX_SPANS, 10));
    }
}
