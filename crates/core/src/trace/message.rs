//! The messages of `/tabmesh/trace/1.0.0`: a traced ping, and asking a peer for its spans of a
//! trace. JSON, at most [`MAX_MESSAGE_BYTES`]; anything else is refused as malformed (a
//! violation of its sender).

use serde::{Deserialize, Serialize};

use super::{Span, TraceContext, TraceId};

/// The protocol name.
pub const PROTOCOL: &str = "/tabmesh/trace/1.0.0";
/// Largest message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Spans a peer sends back at most for one trace (the earliest; the reply says it cut).
pub const MAX_SPANS_PER_REPLY: usize = 128;

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TraceRequest {
    /// The testbed's traced ping: the receiver records a child span of `context` and answers.
    Ping {
        /// The sender's span.
        context: TraceContext,
    },
    /// Which spans of `trace_id` do you hold?
    Spans {
        /// The trace.
        trace_id: TraceId,
    },
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TraceReply {
    /// The ping was recorded.
    Pong,
    /// The spans of the trace held here.
    Spans {
        /// The spans (at most [`MAX_SPANS_PER_REPLY`]).
        spans: Vec<Span>,
        /// Whether more were held than sent.
        #[serde(default)]
        truncated: bool,
    },
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Over [`MAX_MESSAGE_BYTES`].
    #[error("a message of {0} bytes (at most {MAX_MESSAGE_BYTES})")]
    Oversized(usize),
    /// Not the expected JSON (including a malformed trace context).
    #[error("unreadable: {0}")]
    Unreadable(String),
    /// More spans than a reply may hold.
    #[error("{0} spans in a reply (at most {MAX_SPANS_PER_REPLY})")]
    TooManySpans(usize),
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Malformed> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(Malformed::Oversized(bytes.len()));
    }
    serde_json::from_slice(bytes).map_err(|e| Malformed::Unreadable(e.to_string()))
}

impl TraceRequest {
    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a request.
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        decode(bytes)
    }
}

impl TraceReply {
    /// The reply carrying `spans`: the earliest that fit both bounds.
    pub fn spans(mut spans: Vec<Span>) -> Self {
        spans.sort_by_key(Span::start_order);
        let mut truncated = spans.len() > MAX_SPANS_PER_REPLY;
        spans.truncate(MAX_SPANS_PER_REPLY);
        while !spans.is_empty()
            && serde_json::to_vec(&Self::Spans {
                spans: spans.clone(),
                truncated,
            })
            .map_or(usize::MAX, |b| b.len())
                > MAX_MESSAGE_BYTES
        {
            spans.truncate(spans.len() / 2);
            truncated = true;
        }
        Self::Spans { spans, truncated }
    }

    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a reply.
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        let reply: Self = decode(bytes)?;
        if let Self::Spans { spans, .. } = &reply
            && spans.len() > MAX_SPANS_PER_REPLY
        {
            return Err(Malformed::TooManySpans(spans.len()));
        }
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::SpanStatus;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn messages_round_trip_and_bad_ones_are_refused_with_the_reason() {
        let mut rng = SmallRng::seed_from_u64(10);
        let context = TraceContext::root(&mut rng);
        let ping = TraceRequest::Ping { context };
        assert_eq!(TraceRequest::decode(&ping.encode()), Ok(ping));
        let text = String::from_utf8(
            TraceRequest::Spans {
                trace_id: context.trace_id,
            }
            .encode(),
        )
        .unwrap();
        assert!(text.contains(&context.trace_id.to_string()), "{text}");
        let bad_context =
            br#"{"op":"ping","context":"00-00000000000000000000000000000000-00f067aa0ba902b7-01"}"#;
        assert!(
            matches!(TraceRequest::decode(bad_context), Err(Malformed::Unreadable(e)) if e.contains("all zero"))
        );
        assert!(matches!(
            TraceRequest::decode(&vec![b' '; MAX_MESSAGE_BYTES + 1]),
            Err(Malformed::Oversized(_))
        ));
        assert!(TraceReply::decode(b"\x00garbage").is_err());
        let too_many = TraceReply::Spans {
            spans: (0..MAX_SPANS_PER_REPLY + 1)
                .map(|i| Span::start(context, None, "x", "p", i as u64))
                .collect(),
            truncated: false,
        };
        assert!(matches!(
            TraceReply::decode(&too_many.encode()),
            Err(Malformed::TooManySpans(_))
        ));
    }

    #[test]
    fn a_spans_reply_keeps_the_earliest_that_fit() {
        let mut rng = SmallRng::seed_from_u64(11);
        let context = TraceContext::root(&mut rng);
        let spans: Vec<Span> = (0..500u64)
            .rev()
            .map(|i| {
                let mut s =
                    Span::start(context.child(&mut rng), Some(context.span_id), "s", "p", i);
                s.attribute("pad", "x".repeat(200));
                s.end(i + 1, SpanStatus::Ok);
                s
            })
            .collect();
        let TraceReply::Spans {
            spans: sent,
            truncated,
        } = TraceReply::spans(spans)
        else {
            panic!("a spans reply");
        };
        assert!(truncated);
        assert!(!sent.is_empty() && sent.len() <= MAX_SPANS_PER_REPLY);
        assert_eq!(sent[0].start_ms, 0, "the earliest are kept");
        let reply = TraceReply::Spans {
            spans: sent,
            truncated,
        };
        assert!(reply.encode().len() <= MAX_MESSAGE_BYTES);
        assert_eq!(TraceReply::decode(&reply.encode()), Ok(reply));
    }
}
