//! A trace as OpenTelemetry's OTLP/JSON (`ExportTraceServiceRequest`), so that any OTLP tool
//! (an OpenTelemetry collector, Jaeger) reads it.
//!
//! One `resourceSpans` per peer, its `service.name` the peer's id (Jaeger then shows one
//! service per peer); ids as lowercase hex, times as decimal strings of Unix nanoseconds, the
//! span kind from the [`KIND`](super::assemble::KIND) attribute, the status as OTLP's codes.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{Span, SpanStatus};

/// The instrumentation scope named in every export.
pub const SCOPE: &str = "tabmesh";

fn kind(span: &Span) -> u8 {
    // SPAN_KIND_INTERNAL = 1, SERVER = 2, CLIENT = 3, PRODUCER = 4, CONSUMER = 5.
    match span
        .attributes
        .get(super::assemble::KIND)
        .map(String::as_str)
    {
        Some("server") => 2,
        Some("client") => 3,
        Some("producer") => 4,
        Some("consumer") => 5,
        _ => 1,
    }
}

fn nanos(ms: u64) -> String {
    (u128::from(ms) * 1_000_000).to_string()
}

fn attributes(map: &BTreeMap<String, String>) -> Vec<Value> {
    map.iter()
        .map(|(k, v)| json!({"key": k, "value": {"stringValue": v}}))
        .collect()
}

fn span_json(span: &Span) -> Value {
    let status = match &span.status {
        SpanStatus::Unset => json!({"code": 0}),
        SpanStatus::Ok => json!({"code": 1}),
        SpanStatus::Error(message) => json!({"code": 2, "message": message}),
    };
    let mut out = json!({
        "traceId": span.trace_id.to_string(),
        "spanId": span.span_id.to_string(),
        "name": span.name,
        "kind": kind(span),
        "startTimeUnixNano": nanos(span.start_ms),
        "endTimeUnixNano": nanos(span.end_ms.unwrap_or(span.start_ms)),
        "attributes": attributes(&span.attributes),
        "events": span.events.iter().map(|e| json!({
            "timeUnixNano": nanos(e.at_ms),
            "name": e.name,
        })).collect::<Vec<_>>(),
        "status": status,
    });
    if let (Some(parent), Some(map)) = (span.parent_span_id, out.as_object_mut()) {
        map.insert("parentSpanId".into(), Value::String(parent.to_string()));
    }
    out
}

/// `spans` as one OTLP/JSON export request.
pub fn export<'a>(spans: impl IntoIterator<Item = &'a Span>) -> Value {
    // A JSON object is the map here (by peer, in order), so that the module carries no map type
    // of its own for this.
    let mut by_peer = Map::new();
    for span in spans {
        let listed = by_peer
            .entry(span.peer.as_str())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(listed) = listed {
            listed.push(span_json(span));
        }
    }
    json!({
        "resourceSpans": by_peer.into_iter().map(|(peer, spans)| json!({
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": peer}},
                {"key": "tabmesh.peer_id", "value": {"stringValue": peer}},
            ]},
            "scopeSpans": [{"scope": {"name": SCOPE}, "spans": spans}],
        })).collect::<Vec<_>>()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{TraceContext, assemble::KIND};
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn spans_become_otlp_json_grouped_by_peer() {
        let mut rng = SmallRng::seed_from_u64(9);
        let trace = TraceContext::root(&mut rng);
        let mut call = Span::start(trace, None, "service.call sum/add", "A", 1_000);
        call.attribute(KIND, "client");
        call.end(1_010, SpanStatus::Ok);
        let child = trace.child(&mut rng);
        let mut serve = Span::start(child, Some(trace.span_id), "service.serve", "B", 1_004);
        serve.attribute(KIND, "server");
        serve.event(1_005, "handler started");
        serve.end(1_006, SpanStatus::Error("division by zero".into()));
        let out = export([&call, &serve]);
        let resources = out["resourceSpans"].as_array().unwrap();
        assert_eq!(resources.len(), 2);
        assert_eq!(
            resources[0]["resource"]["attributes"][0]["value"]["stringValue"],
            "A"
        );
        let a = &resources[0]["scopeSpans"][0]["spans"][0];
        assert_eq!(a["traceId"], trace.trace_id.to_string());
        assert_eq!(a["traceId"].as_str().unwrap().len(), 32);
        assert_eq!(
            (a["kind"].clone(), a["status"]["code"].clone()),
            (json!(3), json!(1))
        );
        assert_eq!(a["startTimeUnixNano"], "1000000000");
        assert!(a.get("parentSpanId").is_none());
        let b = &resources[1]["scopeSpans"][0]["spans"][0];
        assert_eq!(b["parentSpanId"], trace.span_id.to_string());
        assert_eq!(b["kind"], 2);
        assert_eq!(
            b["status"],
            json!({"code": 2, "message": "division by zero"})
        );
        assert_eq!(b["events"][0]["timeUnixNano"], "1005000000");
        assert_eq!(
            b["attributes"],
            json!([{"key": "span.kind", "value": {"stringValue": "server"}}])
        );
    }
}
