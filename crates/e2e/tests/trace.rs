//! Request tracing in real browsers and a real native node: a traced ping from one tab to
//! another is one trace with a span on each tab, gathered whole, and its OTLP/JSON export holds
//! the same spans; the native node pings a tab from its stdin and prints the gathered trace.

use std::time::Duration;

use serde_json::Value;
use tabmesh_e2e::{Browser, BrowserOptions, NativeNode, Relay, RelayOptions, run_dir, wait_until};

const PATIENCE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_ping_is_gathered_from_both_tabs_and_exported_as_otlp() -> anyhow::Result<()> {
    let dir = run_dir("trace")?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir)).await?;
    let a = browser.open_tab(&relay.url()).await?;
    let b = browser.open_tab(&relay.url()).await?;
    let b_id = wait_until("B has started", PATIENCE, || async {
        Ok(browser
            .state(&b)
            .await?
            .map(|v| v.peer_id)
            .ok_or_else(|| "no view".to_owned()))
    })
    .await?;
    let ping = wait_until("A's traced ping is answered", PATIENCE, || async {
        browser
            .call(&a, &format!("window.tabmesh.tracePing('{b_id}')"))
            .await
    })
    .await?;
    assert_eq!(ping["peer"], Value::String(b_id.clone()), "{ping}");
    let trace_id = ping["trace_id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(trace_id.len(), 32, "{ping}");

    let trace = browser
        .call(&a, &format!("window.tabmesh.trace('{trace_id}')"))
        .await?
        .map_err(anyhow::Error::msg)?;
    let spans = trace["spans"].as_array().cloned().unwrap_or_default();
    let name_of = |s: &Value| s["name"].as_str().unwrap_or_default().to_owned();
    let root = spans
        .iter()
        .find(|s| name_of(s) == "trace.ping")
        .expect("A's span");
    let pong = spans
        .iter()
        .find(|s| name_of(s) == "trace.pong")
        .expect("B's span");
    assert_eq!(pong["peer"], Value::String(b_id.clone()), "{trace}");
    assert_eq!(pong["parent_span_id"], root["span_id"], "{trace}");
    assert_eq!(trace["peers"].as_array().map(Vec::len), Some(2), "{trace}");
    assert_eq!(
        trace["missing"].as_array().map(Vec::len),
        Some(0),
        "{trace}"
    );

    let otlp = browser
        .call(&a, &format!("window.tabmesh.traceOtlp('{trace_id}')"))
        .await?
        .map_err(anyhow::Error::msg)?;
    let exported: Vec<&Value> = otlp["resourceSpans"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["scopeSpans"][0]["spans"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(exported.len(), spans.len(), "{otlp}");
    assert!(
        exported
            .iter()
            .all(|s| s["traceId"] == Value::String(trace_id.clone())),
        "{otlp}"
    );
    // A malformed id is refused with the reason.
    let bad = browser.call(&a, "window.tabmesh.trace('nope')").await?;
    assert!(bad.expect_err("refused").starts_with("traceId: "));

    // The native node pings a tab from its stdin, then gathers the trace.
    let node = NativeNode::start(&relay.url(), dir.join("node.log"))?;
    wait_until("the node is connected to a tab", PATIENCE, || async {
        Ok(match node.state() {
            Some(v) if !v.peers.is_empty() => Ok(()),
            _ => Err("no peers yet".to_owned()),
        })
    })
    .await?;
    let node_ping = wait_until("the node's traced ping is answered", PATIENCE, || async {
        node.send("traceping")?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(node
            .answers(&["trace_ping"])
            .last()
            .cloned()
            .ok_or_else(|| format!("{:?}", node.answers(&["error"]))))
    })
    .await?;
    let node_trace_id = node_ping["trace_ping"]["trace_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    node.send(&format!("trace {node_trace_id}"))?;
    let gathered = wait_until("the node prints the trace", PATIENCE, || async {
        Ok(node
            .answers(&["trace"])
            .last()
            .cloned()
            .ok_or_else(|| "not yet".to_owned()))
    })
    .await?;
    let spans = gathered["trace"]["spans"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(spans.len(), 2, "{gathered}");
    assert_eq!(
        gathered["trace"]["peers"].as_array().map(Vec::len),
        Some(2),
        "{gathered}"
    );
    node.stop()?;

    browser.quit().await?;
    relay.stop()?;
    Ok(())
}
