//! Tracing of `PRIME` spreads (see the module above): the spans a node records and the
//! contexts its copies carry.

use std::collections::HashMap;

use libp2p_identity::PeerId;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use web_time::Instant;

use super::{GossipAction, GossipNode};
use crate::gimps::message::GossipMessage;
use crate::peers::millis;
use crate::trace::assemble::{KIND, REMOTE};
use crate::trace::{Span, SpanStatus, TraceContext};

/// What tracing needs: the wall clock of `origin`, a source of ids, and our id as spans name
/// it (encoded once: base58 costs more than the rest of a span).
#[derive(Debug, Clone)]
pub(super) struct Tracer {
    origin_unix_ms: u64,
    rng: SmallRng,
    me: String,
    /// Peers' ids as spans name them, encoded once each (bounded: cleared when full).
    ids: HashMap<PeerId, String>,
}

/// Encoded peer ids a tracer keeps at most.
const MAX_ENCODED_IDS: usize = 1024;

impl Tracer {
    fn id(&mut self, peer: PeerId) -> String {
        if self.ids.len() >= MAX_ENCODED_IDS && !self.ids.contains_key(&peer) {
            self.ids.clear();
        }
        self.ids
            .entry(peer)
            .or_insert_with(|| peer.to_base58())
            .clone()
    }
}

/// The attribute that marks a copy received before (`true`) or new (`false`).
pub const DUPLICATE: &str = "gimps.duplicate";

impl GossipNode {
    /// Traces `PRIME` spreads from now on: `origin_unix_ms` is the Unix time (ms) of the
    /// `origin` instant, `seed` seeds the span ids.
    pub fn trace_with(&mut self, origin_unix_ms: u64, seed: u64) {
        self.tracer = Some(Tracer {
            origin_unix_ms,
            rng: SmallRng::seed_from_u64(seed),
            me: self.me.to_base58(),
            ids: HashMap::new(),
        });
    }

    /// Stops tracing (contexts on incoming messages are still passed on).
    pub fn stop_tracing(&mut self) {
        self.tracer = None;
    }

    /// Whether spreads are traced.
    pub fn is_tracing(&self) -> bool {
        self.tracer.is_some()
    }

    /// `now` on the clock of this node's spans (Unix milliseconds, running on the monotonic
    /// clock from the anchor given to [`GossipNode::trace_with`]); `None` when not tracing. A
    /// driver that ends spans reads its clock here, so both ends of a span agree.
    pub fn span_clock_ms(&self, now: Instant) -> Option<u64> {
        let tracer = self.tracer.as_ref()?;
        Some(tracer.origin_unix_ms + millis(now.saturating_duration_since(self.origin)))
    }

    /// A new span of `context`, child of `parent`, started at `now` on the span clock.
    fn span(
        &mut self,
        now: Instant,
        parent: Option<TraceContext>,
        name: &str,
        kind: &str,
    ) -> Option<Span> {
        let at = self.span_clock_ms(now)?;
        let tracer = self.tracer.as_mut()?;
        let context = match parent {
            Some(parent) => parent.child(&mut tracer.rng),
            None => TraceContext::root(&mut tracer.rng),
        };
        let mut span = Span::start(context, parent.map(|p| p.span_id), name, &tracer.me, at);
        span.attribute(KIND, kind);
        Some(span)
    }

    /// The root span of our announcement `msg`, recorded; its context.
    pub(super) fn trace_announcement(
        &mut self,
        now: Instant,
        msg: &GossipMessage,
        out: &mut Vec<GossipAction>,
    ) -> Option<TraceContext> {
        let exponent = msg.exponent.unwrap_or(0);
        let mut span = self.span(
            now,
            None,
            &format!("gimps.prime 2^{exponent}-1"),
            "internal",
        )?;
        span.attribute("gimps.exponent", exponent);
        span.attribute("gimps.msg_id", msg.msg_id);
        let end = span.start_ms;
        span.end(end, SpanStatus::Ok);
        let context = span_context(&span);
        out.push(GossipAction::Traced(span));
        Some(context)
    }

    /// A hop's span of traced `msg` (`gimps.<verb> PRIME 2^p-1`, child of the context `msg`
    /// carries), or `None` when we do not trace, the message is not traced or not sampled.
    fn hop_span(
        &mut self,
        now: Instant,
        msg: &GossipMessage,
        verb: &str,
        kind: &str,
    ) -> Option<Span> {
        let parent = msg.trace.filter(|p| p.sampled)?;
        let mut span = self.span(
            now,
            Some(parent),
            &format!("gimps.{verb} {}", what(msg)),
            kind,
        )?;
        span.attribute("gimps.ttl", msg.ttl);
        Some(span)
    }

    /// The context a copy of `msg` to `to` carries: a new open `gimps.send` span under the
    /// context `msg` has here, or that context unchanged when we do not trace (or it is not
    /// sampled).
    pub(super) fn trace_send(
        &mut self,
        now: Instant,
        to: PeerId,
        msg: &GossipMessage,
        out: &mut Vec<GossipAction>,
    ) -> Option<TraceContext> {
        let Some(mut span) = self.hop_span(now, msg, "send", "client") else {
            return msg.trace;
        };
        let to = self.tracer.as_mut().map(|t| t.id(to)).unwrap_or_default();
        span.attribute(REMOTE, to);
        let context = span_context(&span);
        out.push(GossipAction::Traced(span));
        Some(context)
    }

    /// Records the receipt of traced `msg` from `from` (a duplicate or not); the context its
    /// forwards descend from.
    pub(super) fn trace_receive(
        &mut self,
        now: Instant,
        from: PeerId,
        msg: &GossipMessage,
        duplicate: bool,
        out: &mut Vec<GossipAction>,
    ) -> Option<TraceContext> {
        let Some(mut span) = self.hop_span(now, msg, "receive", "server") else {
            return msg.trace;
        };
        let from = self.tracer.as_mut().map(|t| t.id(from)).unwrap_or_default();
        span.attribute("peer.caller", from);
        span.attribute(DUPLICATE, duplicate);
        let end = span.start_ms;
        span.end(end, SpanStatus::Ok);
        let context = span_context(&span);
        out.push(GossipAction::Traced(span));
        Some(context)
    }
}

/// What a traced message is, in a span's name: `PRIME 2^13-1`.
fn what(msg: &GossipMessage) -> String {
    match msg.exponent {
        Some(p) => format!("{} 2^{p}-1", msg.msg_type.as_str()),
        None => msg.msg_type.as_str().to_owned(),
    }
}

/// The context a span's messages carry.
fn span_context(span: &Span) -> TraceContext {
    TraceContext {
        trace_id: span.trace_id,
        span_id: span.span_id,
        sampled: true,
    }
}
