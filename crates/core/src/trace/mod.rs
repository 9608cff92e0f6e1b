//! Request tracing: trace context carried in protocol messages, spans recorded by every peer,
//! and the assembly of a whole trace from the spans of the peers it crossed.
//!
//! - [`TraceContext`]: W3C Trace Context ids (16-byte trace id, 8-byte span id, sampled flag),
//!   written as a `traceparent` header value (`00-<trace id>-<span id>-<flags>`) so that any
//!   OpenTelemetry tool reads them;
//! - [`Span`]: one piece of work on one peer (name, ids, parent, start and end, attributes,
//!   events, status);
//! - [`store`]: the bounded store a peer records its spans into;
//! - [`assemble`]: a trace from the spans every peer sent back, with clock offsets corrected and
//!   the peers that did not answer named;
//! - [`otlp`]: spans as OpenTelemetry's OTLP/JSON, for Jaeger and collectors;
//! - [`message`]: the request and reply of `/tabmesh/trace/1.0.0` (traced ping, span gathering).
//!
//! Like the rest of this crate it does no I/O and reads no clock: times are milliseconds on the
//! recording peer's clock, ids come from a random source passed in.

pub mod assemble;
pub mod message;
pub mod otlp;
pub mod store;

use std::collections::BTreeMap;
use std::fmt;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::hex;

/// A trace id: 16 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TraceId(pub [u8; 16]);

/// A span id: 8 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpanId(pub [u8; 8]);

macro_rules! hex_id {
    ($t:ident, $n:literal, $what:literal) => {
        impl $t {
            /// A fresh random id (never all zero).
            pub fn random(rng: &mut impl RngCore) -> Self {
                loop {
                    let mut bytes = [0u8; $n];
                    rng.fill_bytes(&mut bytes);
                    if bytes != [0u8; $n] {
                        return Self(bytes);
                    }
                }
            }

            /// The id from its lowercase hex form.
            pub fn parse(text: &str) -> Result<Self, ContextError> {
                if text.len() != 2 * $n || text.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(ContextError::Malformed(concat!(
                        "a ",
                        $what,
                        " is ",
                        stringify!($n),
                        " bytes of lowercase hex"
                    )));
                }
                let bytes: [u8; $n] = hex::decode(text)
                    .and_then(|b| b.try_into().ok())
                    .ok_or(ContextError::Malformed(concat!($what, " is not hex")))?;
                if bytes == [0u8; $n] {
                    return Err(ContextError::Malformed(concat!($what, " is all zero")));
                }
                Ok(Self(bytes))
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(&self.0))
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($t))
            }
        }

        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_id!(TraceId, 16, "trace id");
hex_id!(SpanId, 8, "span id");

/// Why a trace context was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// Not a `traceparent` value this version understands.
    #[error("malformed trace context: {0}")]
    Malformed(&'static str),
}

/// The context a message carries so that the work it starts elsewhere joins its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace.
    pub trace_id: TraceId,
    /// The span that sent the message (the parent of the work it starts).
    pub span_id: SpanId,
    /// Whether the trace is recorded.
    pub sampled: bool,
}

/// The length of a version-00 `traceparent` value.
pub const TRACEPARENT_LEN: usize = 55;

impl TraceContext {
    /// A new trace, its root span's context.
    pub fn root(rng: &mut impl RngCore) -> Self {
        Self {
            trace_id: TraceId::random(rng),
            span_id: SpanId::random(rng),
            sampled: true,
        }
    }

    /// The context of a new span in the same trace, child of this one.
    pub fn child(&self, rng: &mut impl RngCore) -> Self {
        Self {
            span_id: SpanId::random(rng),
            ..*self
        }
    }

    /// The W3C `traceparent` value: `00-<trace id>-<span id>-<flags>`.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }

    /// Reads a `traceparent` value (version 00; longer values of later versions are refused, as
    /// their extra fields would be ignored silently).
    pub fn parse(value: &str) -> Result<Self, ContextError> {
        if value.len() != TRACEPARENT_LEN {
            return Err(ContextError::Malformed("a traceparent is 55 characters"));
        }
        let mut parts = value.split('-');
        let (Some(version), Some(trace), Some(span), Some(flags), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(ContextError::Malformed("a traceparent has four fields"));
        };
        if version != "00" {
            return Err(ContextError::Malformed(
                "only traceparent version 00 is read",
            ));
        }
        let flags = hex::decode(flags)
            .and_then(|f| f.first().copied())
            .filter(|_| flags.bytes().all(|b| !b.is_ascii_uppercase()))
            .ok_or(ContextError::Malformed("the flags are not hex"))?;
        Ok(Self {
            trace_id: TraceId::parse(trace)?,
            span_id: SpanId::parse(span)?,
            sampled: flags & 1 == 1,
        })
    }
}

impl Serialize for TraceContext {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.traceparent())
    }
}

impl<'de> Deserialize<'de> for TraceContext {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// How a span ended.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "code", content = "message")]
pub enum SpanStatus {
    /// Not said (still running, or nothing to report).
    #[default]
    Unset,
    /// It did what it set out to do.
    Ok,
    /// It failed, and why.
    Error(String),
}

/// Something that happened during a span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanEvent {
    /// When, ms on the recording peer's clock.
    pub at_ms: u64,
    /// What.
    pub name: String,
}

/// One piece of work on one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// The trace it belongs to.
    pub trace_id: TraceId,
    /// Its id.
    pub span_id: SpanId,
    /// The span that caused it (`None` for a trace's root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<SpanId>,
    /// What it is (e.g. `service.call sum/add`, `gimps.forward PRIME`).
    pub name: String,
    /// The peer that recorded it (base58 peer id).
    pub peer: String,
    /// Start, ms on the recording peer's clock (Unix time).
    pub start_ms: u64,
    /// End, ms on that clock; `None` while it runs.
    #[serde(default)]
    pub end_ms: Option<u64>,
    /// Key/value details.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// What happened meanwhile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<SpanEvent>,
    /// How it ended.
    #[serde(default)]
    pub status: SpanStatus,
}

/// The tracing section of a node's view.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TraceSection {
    /// The traces with the most recent spans here, newest first.
    pub recent: Vec<store::TraceSummary>,
    /// Spans held here.
    pub spans_held: usize,
    /// What they take, bytes (estimated; the store's budget bounds it).
    #[serde(default)]
    pub bytes_held: usize,
    /// The store's counts.
    pub counters: store::StoreCounters,
    /// Malformed or oversized messages received.
    pub malformed: u64,
    /// Whether this peer records spans.
    #[serde(default)]
    pub tracing: bool,
    /// Slow motion: traced gossip copies are held this long before they are sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_motion_ms: Option<u64>,
}

/// Longest span name and attribute key or value kept; longer ones are cut.
pub const MAX_TEXT: usize = 256;
/// Attributes and events kept per span; more are dropped.
pub const MAX_ITEMS: usize = 32;

impl Span {
    /// Where the span goes among others: by start, then by id. One function for every sort of
    /// spans, so that the web app carries one sort for them.
    pub fn start_order(&self) -> (u64, SpanId) {
        (self.start_ms, self.span_id)
    }

    /// The heap bytes this span takes, estimated: its own size, its strings and a share of the
    /// maps holding its attributes and of the store's indexes. What bounds a span store's
    /// memory; the web app's `memory()` reports the real total.
    pub fn heap_bytes(&self) -> usize {
        // A B-tree node holds up to 11 entries (key and value `String`s) whatever its fill;
        // per span, its entries in the store's three indexes.
        const NODE: usize = 11 * 2 * std::mem::size_of::<String>() + 16;
        const INDEXES: usize = 96;
        let attributes = self.attributes.len().div_ceil(11) * NODE
            + self
                .attributes
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        let events: usize = self
            .events
            .iter()
            .map(|e| std::mem::size_of::<SpanEvent>() + e.name.len())
            .sum();
        let status = match &self.status {
            SpanStatus::Error(why) => why.len(),
            _ => 0,
        };
        std::mem::size_of::<Self>()
            + INDEXES
            + self.name.len()
            + self.peer.len()
            + attributes
            + events
            + status
    }

    /// A span of `context` started at `start_ms` by `peer`, child of `parent`.
    pub fn start(
        context: TraceContext,
        parent: Option<SpanId>,
        name: &str,
        peer: &str,
        start_ms: u64,
    ) -> Self {
        Self {
            trace_id: context.trace_id,
            span_id: context.span_id,
            parent_span_id: parent,
            name: cut(name),
            peer: peer.to_owned(),
            start_ms,
            end_ms: None,
            attributes: BTreeMap::new(),
            events: Vec::new(),
            status: SpanStatus::Unset,
        }
    }

    /// Adds an attribute (within the bounds).
    pub fn attribute(&mut self, key: &str, value: impl fmt::Display) {
        if self.attributes.len() < MAX_ITEMS || self.attributes.contains_key(key) {
            self.attributes
                .insert(cut(key), cut_owned(value.to_string()));
        }
    }

    /// Adds an event (within the bounds).
    pub fn event(&mut self, at_ms: u64, name: &str) {
        if self.events.len() < MAX_ITEMS {
            self.events.push(SpanEvent {
                at_ms,
                name: cut(name),
            });
        }
    }

    /// Ends it at `end_ms` (never before its start) with `status`.
    pub fn end(&mut self, end_ms: u64, status: SpanStatus) {
        self.end_ms = Some(end_ms.max(self.start_ms));
        self.status = status;
    }

    /// Its duration, once ended.
    pub fn duration_ms(&self) -> Option<u64> {
        self.end_ms.map(|end| end - self.start_ms)
    }
}

fn cut(text: &str) -> String {
    cut_owned(text.to_owned())
}

/// `text` within [`MAX_TEXT`] bytes (cut at a character boundary), without copying it.
fn cut_owned(mut text: String) -> String {
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn traceparent_round_trips_in_the_w3c_form() {
        let mut rng = SmallRng::seed_from_u64(1);
        let root = TraceContext::root(&mut rng);
        let text = root.traceparent();
        assert_eq!(text.len(), TRACEPARENT_LEN);
        assert!(text.starts_with("00-") && text.ends_with("-01"), "{text}");
        assert_eq!(TraceContext::parse(&text), Ok(root));
        // The example of the W3C recommendation.
        let example =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            example.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(example.span_id.to_string(), "00f067aa0ba902b7");
        assert!(example.sampled);
        let child = root.child(&mut rng);
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        // As JSON, a context is its traceparent string.
        let json = serde_json::to_string(&root).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<TraceContext>(&json).unwrap(), root);
    }

    #[test]
    fn malformed_contexts_are_refused_with_the_reason() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for (bad, why) in [
            ("", "55 characters"),
            (&good[..54], "55 characters"),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version 00",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "all zero",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "all zero",
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "lowercase",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
                "not hex",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
                "flags",
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
                "four fields",
            ),
        ] {
            let error = TraceContext::parse(bad).unwrap_err().to_string();
            assert!(error.contains(why), "{bad:?}: {error}");
        }
        assert!(serde_json::from_str::<TraceContext>("\"00-zz\"").is_err());
    }

    #[test]
    fn spans_are_bounded_and_never_end_before_they_start() {
        let mut rng = SmallRng::seed_from_u64(2);
        let context = TraceContext::root(&mut rng);
        let mut span = Span::start(context, None, &"n".repeat(1000), "peer", 100);
        assert_eq!(span.name.len(), MAX_TEXT);
        for i in 0..100 {
            span.attribute(&format!("k{i}"), i);
            span.event(100 + i, "e");
        }
        assert_eq!(
            (span.attributes.len(), span.events.len()),
            (MAX_ITEMS, MAX_ITEMS)
        );
        span.attribute("k0", "replaced");
        assert_eq!(span.attributes["k0"], "replaced");
        span.end(50, SpanStatus::Ok);
        assert_eq!(span.duration_ms(), Some(0));
        let json = serde_json::to_value(&span).unwrap();
        assert_eq!(json["status"], serde_json::json!({"code": "ok"}));
        assert_eq!(serde_json::from_value::<Span>(json).unwrap(), span);
        let mut failed = Span::start(context, Some(context.span_id), "x", "p", 1);
        failed.end(3, SpanStatus::Error("no provider".into()));
        assert_eq!(
            serde_json::to_value(&failed).unwrap()["status"],
            serde_json::json!({"code": "error", "message": "no provider"})
        );
    }
}
