//! Request tracing: the W3C trace context carried in messages, and the trace protocol.

use tabmesh_core::trace::TraceContext;
use tabmesh_core::trace::message::{TraceReply, TraceRequest};

use super::outcome;
use crate::{Outcome, Target};

pub(super) const CONTEXT: Target = Target {
    name: "trace_context",
    about: "a traceparent value (W3C trace context, version 00)",
    run: context,
    seeds: contexts,
};

pub(super) const MESSAGES: Target = Target {
    name: "trace_messages",
    about: "a trace protocol request (first byte even) or reply (odd)",
    run: messages,
    seeds: message_seeds,
};

fn context(data: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(data) else {
        return Outcome::Refused;
    };
    let parsed = TraceContext::parse(text);
    if let Ok(context) = &parsed {
        let written = context.traceparent();
        assert_eq!(
            TraceContext::parse(&written).as_ref(),
            Ok(context),
            "a context survives its traceparent"
        );
        if text.ends_with("-00") || text.ends_with("-01") {
            assert_eq!(
                written, text,
                "a plain traceparent is written back as it came"
            );
        }
    }
    outcome(&parsed)
}

fn contexts() -> Vec<Vec<u8>> {
    [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    ]
    .map(|s| s.as_bytes().to_vec())
    .to_vec()
}

fn messages(data: &[u8]) -> Outcome {
    let Some((&which, bytes)) = data.split_first() else {
        return Outcome::Refused;
    };
    if which.is_multiple_of(2) {
        let decoded = TraceRequest::decode(bytes);
        if let Ok(request) = &decoded {
            let again = TraceRequest::decode(&request.encode()).expect("a request re-encodes");
            assert_eq!(&again, request, "a request survives encode and decode");
        }
        outcome(&decoded)
    } else {
        let decoded = TraceReply::decode(bytes);
        if let Ok(reply) = &decoded {
            let again = TraceReply::decode(&reply.encode()).expect("a reply re-encodes");
            assert_eq!(&again, reply, "a reply survives encode and decode");
        }
        outcome(&decoded)
    }
}

fn message_seeds() -> Vec<Vec<u8>> {
    let tagged = |tag: u8, s: &str| [&[tag], s.as_bytes()].concat();
    vec![
        tagged(
            0,
            r#"{"op":"ping","context":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#,
        ),
        tagged(
            0,
            r#"{"op":"spans","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#,
        ),
        tagged(1, r#"{"op":"pong"}"#),
        tagged(
            1,
            r#"{"op":"spans","spans":[{"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","parent_span_id":"00f067aa0ba902b8","name":"service.call echo/echo","peer":"12D3KooWExample","start_ms":1,"end_ms":3,"attributes":{"k":"v"},"events":[{"at_ms":2,"name":"sent"}],"status":{"code":"ok"}}],"truncated":true}"#,
        ),
    ]
}
