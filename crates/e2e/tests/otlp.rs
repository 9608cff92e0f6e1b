//! Traces leave tabmesh for the tools people already use: a call entered at the relay's HTTP
//! gateway is one trace across the relay and the native node that serves it, gathered at
//! `GET /api/traces/{id}` (also as OTLP/JSON), and both processes send their spans to an
//! OpenTelemetry collector (`--otlp-endpoint`), here a local OTLP/HTTP endpoint stood up by the
//! test, which receives the same trace with both peers in it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};
use tabmesh_e2e::{NativeNode, Relay, RelayOptions, bin_path, run_dir, wait_until};

const PATIENCE: Duration = Duration::from_secs(60);

/// A stand-in collector: keeps every OTLP/JSON export request posted to `/v1/traces`.
async fn collector() -> anyhow::Result<(String, Arc<Mutex<Vec<Value>>>)> {
    let received = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route(
            "/v1/traces",
            post(
                |State(kept): State<Arc<Mutex<Vec<Value>>>>, body: Bytes| async move {
                    match serde_json::from_slice::<Value>(&body) {
                        Ok(export) => {
                            kept.lock().expect("not poisoned").push(export);
                            (axum::http::StatusCode::OK, "{}")
                        }
                        Err(_) => (axum::http::StatusCode::BAD_REQUEST, "not OTLP/JSON"),
                    }
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, received))
}

/// The spans of trace `trace_id` the collector holds, with the `service.name` that sent each.
fn collected(received: &Mutex<Vec<Value>>, trace_id: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for export in received.lock().expect("not poisoned").iter() {
        for resource in export["resourceSpans"].as_array().into_iter().flatten() {
            let service = resource["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_owned();
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    if span["traceId"] == trace_id {
                        out.push((service.clone(), span.clone()));
                    }
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_call_is_one_trace_at_the_relay_and_at_an_otlp_collector() -> anyhow::Result<()> {
    let dir = run_dir("otlp")?;
    let (endpoint, received) = collector().await?;
    let mut options = RelayOptions::new(&dir)?;
    options.extra_args = vec!["--otlp-endpoint".into(), endpoint.clone()];
    let relay = Relay::start(options, dir.join("relay.log")).await?;
    let relay_id = relay.bootstrap().await?.peer_id;
    let node = NativeNode::start_with(
        &bin_path("tabmesh-node"),
        &relay.url(),
        &["--offer", "echo", "--otlp-endpoint", &endpoint],
        dir.join("node.log"),
    )?;
    let node_id = wait_until("the node has started", PATIENCE, || async {
        Ok(node
            .state()
            .map(|v| v.peer_id)
            .ok_or_else(|| "no view".to_owned()))
    })
    .await?;

    let http = reqwest::Client::new();
    let answer: Value = wait_until(
        "the relay's gateway reaches the node's echo",
        PATIENCE,
        || async {
            let response = http
                .post(format!("{}/api/services/echo/echo", relay.url()))
                .json(&json!({"text": "traced"}))
                .send()
                .await?;
            let ok = response.status().is_success();
            let body: Value = response.json().await?;
            Ok(if ok { Ok(body) } else { Err(body.to_string()) })
        },
    )
    .await?;
    assert_eq!(
        answer["provider"],
        Value::String(node_id.clone()),
        "{answer}"
    );
    let trace_id = answer["trace_id"]
        .as_str()
        .expect("the answer names its trace")
        .to_owned();

    // Gathered at the relay: its call spans and the node's serve span, in one tree.
    let trace: Value = http
        .get(format!("{}/api/traces/{trace_id}", relay.url()))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let peers: BTreeSet<&str> = trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["peer"].as_str())
        .collect();
    assert_eq!(
        peers,
        BTreeSet::from([relay_id.as_str(), node_id.as_str()]),
        "{trace}"
    );
    let serve = trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| {
            s["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("service.serve"))
        })
        .expect("the provider's span");
    assert_eq!(serve["peer"], Value::String(node_id.clone()));
    let otlp: Value = http
        .get(format!("{}/api/traces/{trace_id}?format=otlp", relay.url()))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(
        otlp["resourceSpans"].as_array().map(Vec::len),
        Some(2),
        "{otlp}"
    );
    // Bad input is a clear 400.
    let bad = http
        .get(format!("{}/api/traces/xyz", relay.url()))
        .send()
        .await?;
    assert_eq!(bad.status(), 400);
    let bad = http
        .get(format!(
            "{}/api/traces/{trace_id}?format=zipkin",
            relay.url()
        ))
        .send()
        .await?;
    assert_eq!(bad.status(), 400);

    // Both processes exported their spans of it to the collector, with the same ids.
    let spans = wait_until(
        "the collector has spans from the relay and the node",
        PATIENCE,
        || async {
            let spans = collected(&received, &trace_id);
            let services: BTreeSet<String> = spans.iter().map(|(s, _)| s.clone()).collect();
            Ok(
                if services == BTreeSet::from([relay_id.clone(), node_id.clone()]) {
                    Ok(spans)
                } else {
                    Err(format!("from {services:?}"))
                },
            )
        },
    )
    .await?;
    let exported_serve = spans
        .iter()
        .find(|(_, s)| {
            s["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("service.serve"))
        })
        .expect("the serve span was exported");
    assert_eq!(exported_serve.1["spanId"], serve["span_id"]);
    assert_eq!(exported_serve.1["parentSpanId"], serve["parent_span_id"]);

    node.stop()?;
    relay.stop()?;
    Ok(())
}
