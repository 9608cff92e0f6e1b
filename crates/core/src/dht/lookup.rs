//! The path of one iterative Kademlia lookup, as a learner would draw it.
//!
//! A lookup starts from the peers in our own routing table closest to the target (round 1), asks
//! up to α of them at a time, and each reply names peers closer still, which are asked next.
//! This type records every request (who, when), every reply (how long it took, how many closer
//! peers it named) and failure, and assigns each peer its *round*: 1 for peers we knew
//! ourselves, otherwise one more than the round of the peer whose reply first named it. The
//! number of rounds and of peers contacted are what Kademlia promises to keep near log2 N.

use std::collections::HashMap;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};
use web_time::Instant;

use crate::names::peer_name;
use crate::peers::millis;
use crate::trace::assemble::KIND;
use crate::trace::{Span, SpanId, SpanStatus, TraceContext};

/// The attribute naming the peer a DHT request went to. Not `peer.remote`: Kademlia's wire
/// format is libp2p's and carries no trace context, so the peers asked record no spans and a
/// gathering does not ask them for any.
pub const ASKED: &str = "peer.asked";

/// Most requests recorded per lookup (a lookup in a 1000-peer network makes a few dozen).
const MAX_HOPS: usize = 256;

/// What a lookup looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LookupKind {
    /// `GET_VALUE`: find a record.
    GetRecord,
    /// `PUT_VALUE`: find the closest peers, then store at them.
    PutRecord,
    /// `GET_PROVIDERS`.
    GetProviders,
    /// `ADD_PROVIDER`: find the closest peers, then announce to them.
    AddProvider,
    /// `FIND_NODE`.
    FindNode,
}

/// How one request went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum HopOutcome {
    /// No answer yet.
    Pending,
    /// Answered.
    Replied {
        /// Closer peers it named.
        closer: usize,
        /// Of those, peers this lookup had not heard of.
        new: usize,
        /// Whether it returned the record or providers sought.
        found: bool,
    },
    /// Failed or timed out.
    Failed {
        /// Why.
        reason: String,
    },
    /// Still unanswered when the lookup ended (it had what it needed).
    Unanswered,
}

#[derive(Debug, Clone)]
struct Hop {
    peer: PeerId,
    round: u32,
    asked_at: Instant,
    answered_at: Option<Instant>,
    outcome: HopOutcome,
}

/// The recorded path of one lookup.
#[derive(Debug, Clone)]
pub struct LookupTrace {
    kind: LookupKind,
    target: String,
    started: Instant,
    finished: Option<(Instant, String)>,
    hops: Vec<Hop>,
    /// Index into `hops` of each peer's latest request.
    by_peer: HashMap<PeerId, usize>,
    /// The round a peer will be asked in, from the reply that first named it.
    named_in_round: HashMap<PeerId, u32>,
}

impl LookupTrace {
    /// A lookup of `kind` for `target` (displayable key), started at `now`.
    pub fn new(kind: LookupKind, target: String, now: Instant) -> Self {
        Self {
            kind,
            target,
            started: now,
            finished: None,
            hops: Vec::new(),
            by_peer: HashMap::new(),
            named_in_round: HashMap::new(),
        }
    }

    /// What it looked for: `kind` after all (a put's first phase reads the current version).
    pub fn relabel(&mut self, kind: LookupKind) {
        self.kind = kind;
    }

    /// A request went to `peer`.
    pub fn on_request(&mut self, now: Instant, peer: PeerId) {
        if self.hops.len() >= MAX_HOPS {
            return;
        }
        let round = self.named_in_round.get(&peer).copied().unwrap_or(1);
        self.by_peer.insert(peer, self.hops.len());
        self.hops.push(Hop {
            peer,
            round,
            asked_at: now,
            answered_at: None,
            outcome: HopOutcome::Pending,
        });
    }

    /// `peer` replied, naming `closer` peers; `found` if it had what was sought.
    pub fn on_reply(&mut self, now: Instant, peer: PeerId, closer: &[PeerId], found: bool) {
        let Some(&i) = self.by_peer.get(&peer) else {
            return;
        };
        let round = self.hops[i].round;
        let mut new = 0;
        for p in closer {
            if !self.named_in_round.contains_key(p) && !self.by_peer.contains_key(p) {
                self.named_in_round.insert(*p, round + 1);
                new += 1;
            }
        }
        let hop = &mut self.hops[i];
        hop.answered_at = Some(now);
        hop.outcome = HopOutcome::Replied {
            closer: closer.len(),
            new,
            found,
        };
    }

    /// The request to `peer` failed.
    pub fn on_failure(&mut self, now: Instant, peer: PeerId, reason: String) {
        if let Some(&i) = self.by_peer.get(&peer) {
            let hop = &mut self.hops[i];
            if hop.outcome == HopOutcome::Pending {
                hop.answered_at = Some(now);
                hop.outcome = HopOutcome::Failed { reason };
            }
        }
    }

    /// The lookup ended with `result` (a one-line summary).
    pub fn finish(&mut self, now: Instant, result: String) {
        if self.finished.is_none() {
            self.finished = Some((now, result));
            for hop in &mut self.hops {
                if hop.outcome == HopOutcome::Pending {
                    hop.outcome = HopOutcome::Unanswered;
                }
            }
        }
    }

    /// Whether [`finish`](Self::finish) was called.
    pub fn is_finished(&self) -> bool {
        self.finished.is_some()
    }

    /// Peers asked.
    pub fn contacted(&self) -> usize {
        self.hops.len()
    }

    /// Peers that answered.
    pub fn replied(&self) -> usize {
        self.hops
            .iter()
            .filter(|h| matches!(h.outcome, HopOutcome::Replied { .. }))
            .count()
    }

    /// The peers that answered, in the order they were asked.
    pub fn answered_peers(&self) -> Vec<PeerId> {
        self.hops
            .iter()
            .filter(|h| matches!(h.outcome, HopOutcome::Replied { .. }))
            .map(|h| h.peer)
            .collect()
    }

    /// The deepest round reached.
    pub fn rounds(&self) -> u32 {
        self.hops.iter().map(|h| h.round).max().unwrap_or(0)
    }

    /// Time from start to finish (or to `now` while running).
    pub fn duration(&self, now: Instant) -> std::time::Duration {
        let end = self.finished.as_ref().map_or(now, |(t, _)| *t);
        end.saturating_duration_since(self.started)
    }

    /// The lookup as the spans of a trace, all recorded here (Kademlia's messages carry no
    /// context): a span `dht.<kind> <target>` of context `root` (child of `parent`) from start to
    /// finish, ending with `status`, and under it a client span `dht.request` per request, with
    /// its round, the peer asked ([`ASKED`]) and how it went. `wall` turns an instant into Unix
    /// ms; `me` is the recording peer.
    pub fn spans(
        &self,
        root: TraceContext,
        parent: Option<SpanId>,
        me: &str,
        status: SpanStatus,
        rng: &mut impl rand::RngCore,
        wall: impl Fn(Instant) -> u64,
    ) -> Vec<Span> {
        let end = self.finished.as_ref().map(|(t, _)| *t);
        let kind = serde_json::to_value(self.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let mut top = Span::start(
            root,
            parent,
            &format!("dht.{kind} {}", self.target),
            me,
            wall(self.started),
        );
        top.attribute(KIND, "internal");
        top.attribute("dht.key", &self.target);
        top.attribute("dht.rounds", self.rounds());
        top.attribute("dht.contacted", self.contacted());
        if let Some((_, result)) = &self.finished {
            top.attribute("dht.result", result);
        }
        top.end(wall(end.unwrap_or(self.started)), status);
        let mut spans = vec![top];
        for hop in &self.hops {
            let mut span = Span::start(
                root.child(rng),
                Some(root.span_id),
                &format!("dht.request round {}", hop.round),
                me,
                wall(hop.asked_at),
            );
            span.attribute(KIND, "client");
            span.attribute(ASKED, hop.peer.to_base58());
            span.attribute("dht.round", hop.round);
            let (at, status) = match &hop.outcome {
                HopOutcome::Replied { closer, new, found } => {
                    span.attribute("dht.closer", closer);
                    span.attribute("dht.new", new);
                    span.attribute("dht.found", found);
                    (hop.answered_at, SpanStatus::Ok)
                }
                HopOutcome::Failed { reason } => {
                    (hop.answered_at, SpanStatus::Error(reason.clone()))
                }
                HopOutcome::Pending | HopOutcome::Unanswered => {
                    span.attribute("dht.unanswered", true);
                    (end, SpanStatus::Unset)
                }
            };
            span.end(wall(at.or(end).unwrap_or(hop.asked_at)), status);
            spans.push(span);
        }
        spans
    }

    /// The serialisable view, with times relative to the lookup's start.
    pub fn view(&self, now: Instant) -> LookupView {
        let hops = self
            .hops
            .iter()
            .map(|h| HopView {
                peer_id: h.peer.to_base58(),
                name: peer_name(&h.peer),
                round: h.round,
                asked_at_ms: millis(h.asked_at.saturating_duration_since(self.started)),
                took_ms: h
                    .answered_at
                    .map(|t| millis(t.saturating_duration_since(h.asked_at))),
                outcome: h.outcome.clone(),
            })
            .collect();
        LookupView {
            kind: self.kind,
            target: self.target.clone(),
            running: self.finished.is_none(),
            duration_ms: millis(self.duration(now)),
            rounds: self.rounds(),
            contacted: self.contacted(),
            result: self.finished.as_ref().map(|(_, r)| r.clone()),
            hops,
        }
    }
}

/// The path of a lookup, for the UI and `state().dht.last_lookup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupView {
    /// What was looked for.
    pub kind: LookupKind,
    /// The key (or peer id) looked up.
    pub target: String,
    /// Still running.
    pub running: bool,
    /// Time taken so far, in ms.
    pub duration_ms: u64,
    /// Deepest round.
    pub rounds: u32,
    /// Peers asked.
    pub contacted: usize,
    /// Summary of the result once finished.
    pub result: Option<String>,
    /// Every request, in the order it was sent.
    pub hops: Vec<HopView>,
}

/// One request of a lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HopView {
    /// The peer asked.
    pub peer_id: String,
    /// Its name.
    pub name: String,
    /// The round it belongs to (1: known to us before the lookup).
    pub round: u32,
    /// When it was asked, ms after the lookup started.
    pub asked_at_ms: u64,
    /// How long it took to answer or fail.
    pub took_ms: Option<u64>,
    /// How it went.
    #[serde(flatten)]
    pub outcome: HopOutcome,
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::Keypair;
    use web_time::Duration;

    fn peer() -> PeerId {
        Keypair::generate_ed25519().public().to_peer_id()
    }

    #[test]
    fn a_lookup_is_a_root_span_and_a_span_per_request_round_by_round() {
        use rand::SeedableRng;
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let (a, b, c) = (peer(), peer(), peer());
        let mut trace = LookupTrace::new(LookupKind::GetRecord, "k".into(), t0);
        trace.on_request(ms(0), a);
        trace.on_request(ms(0), b);
        trace.on_reply(ms(10), a, &[c], false);
        trace.on_failure(ms(12), b, "timeout".into());
        trace.on_request(ms(11), c);
        trace.finish(ms(30), "not found".into());
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let root = TraceContext::root(&mut rng);
        let wall = |t: Instant| 1_000 + millis(t.saturating_duration_since(t0));
        let spans = trace.spans(root, None, "me", SpanStatus::Ok, &mut rng, wall);
        assert_eq!(spans.len(), 4);
        let top = &spans[0];
        assert_eq!(
            (top.name.as_str(), top.start_ms, top.end_ms, top.span_id),
            ("dht.get_record k", 1_000, Some(1_030), root.span_id)
        );
        let hops: Vec<_> = spans[1..]
            .iter()
            .map(|s| {
                assert_eq!(s.parent_span_id, Some(root.span_id));
                assert_eq!(s.trace_id, root.trace_id);
                (
                    s.attributes[ASKED].clone(),
                    s.attributes["dht.round"].clone(),
                    s.start_ms,
                    s.end_ms,
                    s.status.clone(),
                )
            })
            .collect();
        assert_eq!(
            hops,
            vec![
                (
                    a.to_base58(),
                    "1".into(),
                    1_000,
                    Some(1_010),
                    SpanStatus::Ok
                ),
                (
                    b.to_base58(),
                    "1".into(),
                    1_000,
                    Some(1_012),
                    SpanStatus::Error("timeout".into())
                ),
                // Named by a's reply: round 2, still unanswered when the lookup ended.
                (
                    c.to_base58(),
                    "2".into(),
                    1_011,
                    Some(1_030),
                    SpanStatus::Unset
                ),
            ]
        );
    }

    #[test]
    fn assigns_rounds_by_who_named_whom() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let (a, b, c, d) = (peer(), peer(), peer(), peer());
        let mut trace = LookupTrace::new(LookupKind::GetRecord, "k".into(), t0);
        trace.on_request(ms(0), a);
        trace.on_request(ms(0), b);
        trace.on_reply(ms(10), a, &[c, b], false);
        trace.on_request(ms(10), c);
        trace.on_failure(ms(12), b, "timeout".into());
        trace.on_reply(ms(30), c, &[d], false);
        trace.on_request(ms(30), d);
        trace.on_reply(ms(35), d, &[], true);
        trace.on_request(ms(31), b);
        trace.finish(ms(35), "found".into());

        assert_eq!(trace.contacted(), 5);
        assert_eq!(trace.replied(), 3);
        assert_eq!(trace.rounds(), 3);
        let view = trace.view(ms(100));
        assert_eq!(view.duration_ms, 35);
        let rounds: Vec<u32> = view.hops.iter().map(|h| h.round).collect();
        assert_eq!(rounds, [1, 1, 2, 3, 1]);
        assert_eq!(view.hops[0].took_ms, Some(10));
        assert_eq!(
            view.hops[0].outcome,
            HopOutcome::Replied {
                closer: 2,
                new: 1,
                found: false
            }
        );
        assert!(matches!(view.hops[1].outcome, HopOutcome::Failed { .. }));
        assert_eq!(
            view.hops[3].outcome,
            HopOutcome::Replied {
                closer: 0,
                new: 0,
                found: true
            }
        );
        // Asked again late and never answered: shown as unanswered, not waiting.
        assert_eq!(view.hops[4].outcome, HopOutcome::Unanswered);
        assert!(!view.running);
    }

    #[test]
    fn ignores_replies_from_peers_never_asked() {
        let t0 = Instant::now();
        let mut trace = LookupTrace::new(LookupKind::FindNode, "x".into(), t0);
        trace.on_reply(t0, peer(), &[peer()], false);
        assert_eq!(trace.contacted(), 0);
        assert_eq!(trace.rounds(), 0);
    }
}
