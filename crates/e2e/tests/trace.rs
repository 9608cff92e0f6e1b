//! Request tracing in real browsers and a real native node: a traced ping from one tab to
//! another is one trace with a span on each tab, gathered whole, and its OTLP/JSON export holds
//! the same spans; the native node pings a tab from its stdin and prints the gathered trace. A
//! PRIME found by one of four tabs is one trace with spans from every peer it reached (the
//! duplicates marked), drawn in the Tracing panel as lanes and as a waterfall; a DHT put
//! carries its trace id; slow motion holds each traced copy.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use tabmesh_e2e::{
    Browser, BrowserOptions, NativeNode, Relay, RelayOptions, bin_path, gossip_peers,
    reset_and_await_prime_trace, run_dir, wait_until,
};

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

/// The spans of trace `trace_id` gathered by `tab`.
async fn gathered(
    browser: &Browser,
    tab: &tabmesh_e2e::Tab,
    trace_id: &str,
) -> anyhow::Result<Value> {
    browser
        .call(tab, &format!("window.tabmesh.trace('{trace_id}')"))
        .await?
        .map_err(anyhow::Error::msg)
}

fn spans_named<'a>(trace: &'a Value, prefix: &str) -> Vec<&'a Value> {
    trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prime_spread_is_one_trace_across_four_tabs_and_a_node_drawn_in_the_panel()
-> anyhow::Result<()> {
    let dir = run_dir("trace-gossip")?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    let url = format!("{}/?search_interval=2&ping_interval=1", relay.url());
    // The first tab (A, the finder below) floods as the exercise does and names no recipients,
    // so every receiver copies its PRIME on, duplicates and all; the others prune (the default).
    browser.open_tab(&format!("{url}&prune=0")).await?;
    for _ in 1..4 {
        browser.open_tab(&url).await?;
    }
    let node = NativeNode::start_with(
        &bin_path("tabmesh-node"),
        &relay.url(),
        &["--search-interval", "2", "--ping-interval", "1"],
        dir.join("node.log"),
    )?;
    // Everyone gossips with everyone.
    let ids = wait_until(
        "a full gossip mesh of four tabs and a node",
        PATIENCE,
        || async {
            let mut views = Vec::new();
            for tab in browser.tabs() {
                match browser.state(tab).await? {
                    Some(v) => views.push(v),
                    None => return Ok(Err("a tab has not started".to_owned())),
                }
            }
            views.extend(node.state());
            let ids: BTreeSet<String> = views.iter().map(|v| v.peer_id.clone()).collect();
            let full = views.len() == 5
                && views.iter().all(|v| {
                    let mut want = ids.clone();
                    want.remove(&v.peer_id);
                    want.is_subset(&gossip_peers(v))
                });
            Ok(if full {
                Ok(ids)
            } else {
                Err(format!("{} views, mesh not full", views.len()))
            })
        },
    )
    .await?;

    // Tab A forgets what it knew: its search starts again from 2^2-1 and announces it.
    let a = browser.tabs()[0].clone();
    let a_id = browser.state(&a).await?.expect("A runs").peer_id;
    let trace_id = reset_and_await_prime_trace(&browser, &a, PATIENCE).await?;
    // A's page keeps its list of recent traces still while it shows this one, as it does for a
    // pointer resting on it: new traces arrive every few seconds while the tabs search again,
    // and the gathering below may take long enough for this one to leave the 20 shown.
    let hold = format!(
        "(() => {{ const list = document.querySelector('[data-testid=trace-recent]'); \
         if (!list) return 'no list yet'; \
         if (list.classList.contains('held') && list.querySelector(\"button[data-trace='{trace_id}']\")) \
           return 'held'; \
         list.dispatchEvent(new PointerEvent('pointerleave')); \
         list.dispatchEvent(new PointerEvent('pointerenter')); \
         return 'not held with the trace yet'; }})()"
    );
    wait_until(
        "A's page holds its list with the trace",
        PATIENCE,
        || async {
            let held = browser.call(&a, &hold).await?.map_err(anyhow::Error::msg)?;
            Ok(if held == "held" {
                Ok(())
            } else {
                Err(held.to_string())
            })
        },
    )
    .await?;
    // The copies are acknowledged (their send spans end) within moments; gather until every
    // peer's receive is in, and the send of every receive gathered (a send span is gathered
    // once it ends: a copy received before its sender heard the acknowledgement has none yet).
    let trace = wait_until(
        "the PRIME's trace holds a receive on every peer, each under its send",
        PATIENCE,
        || async {
            let trace = gathered(&browser, &a, &trace_id).await?;
            let received: BTreeSet<String> = spans_named(&trace, "gimps.receive PRIME")
                .iter()
                .filter_map(|s| s["peer"].as_str().map(str::to_owned))
                .collect();
            let span_ids: BTreeSet<&str> = spans_named(&trace, "")
                .iter()
                .filter_map(|s| s["span_id"].as_str())
                .collect();
            let unsent = spans_named(&trace, "gimps.receive")
                .iter()
                .filter(|r| {
                    r["parent_span_id"]
                        .as_str()
                        .is_none_or(|parent| !span_ids.contains(parent))
                })
                .count();
            let mut others = ids.clone();
            others.remove(&a_id);
            Ok(if received == others && unsent == 0 {
                Ok(trace)
            } else {
                Err(format!(
                    "receives on {received:?}; {unsent} receive(s) without their send yet"
                ))
            })
        },
    )
    .await?;
    let root = spans_named(&trace, "gimps.prime");
    assert_eq!(root.len(), 1, "{trace}");
    assert_eq!(root[0]["peer"], Value::String(a_id.clone()));
    let spans = trace["spans"].as_array().cloned().unwrap_or_default();
    assert!(
        spans
            .iter()
            .all(|s| s["trace_id"] == Value::String(trace_id.clone()))
    );
    let by_id: std::collections::HashMap<&str, &Value> = spans
        .iter()
        .filter_map(|s| Some((s["span_id"].as_str()?, s)))
        .collect();
    // Every receive hangs under the send of the peer that sent the copy; duplicates are marked.
    let mut duplicates = 0;
    for receive in spans_named(&trace, "gimps.receive") {
        let send = by_id[receive["parent_span_id"].as_str().expect("a parent")];
        assert_eq!(
            send["attributes"]["peer.remote"], receive["peer"],
            "{trace}"
        );
        // On the assembled clock, a copy arrives after it was sent and before its
        // acknowledgement came back.
        assert!(
            receive["start_ms"].as_u64() >= send["start_ms"].as_u64()
                && receive["end_ms"].as_u64() <= send["end_ms"].as_u64(),
            "{receive} outside {send}; offsets {}",
            trace["offsets_ms"]
        );
        if receive["attributes"]["gimps.duplicate"] == "true" {
            duplicates += 1;
        }
    }
    // In a full mesh of five, each of the four first receivers forwards to the three others.
    assert!(duplicates >= 1, "duplicates are marked: {trace}");
    assert_eq!(trace["peers"].as_array().map(Vec::len), Some(5), "{trace}");

    // The panel: the trace is listed, drawn as lanes (an arrow per copy) and as a waterfall.
    browser.switch(&a).await?;
    let copies = spans_named(&trace, "gimps.receive").len();
    // (Clicked from the page's script, on the button that names the trace.)
    browser
        .call(
            &a,
            &format!(
                "document.querySelector(\"[data-testid=trace-recent] button[data-trace='{trace_id}']\").click()"
            ),
        )
        .await?
        .map_err(anyhow::Error::msg)?;
    wait_until("the lanes are drawn", PATIENCE, || async {
        let arrows = browser
            .call(
                &a,
                "document.querySelectorAll('[data-testid=lane-arrow]').length",
            )
            .await?
            .map_err(anyhow::Error::msg)?
            .as_u64()
            .unwrap_or(0);
        Ok(if arrows as usize >= copies {
            Ok(())
        } else {
            Err(format!("{arrows} arrows"))
        })
    })
    .await?;
    let lanes = browser
        .call(
            &a,
            "document.querySelectorAll('[data-testid=lanes] g.lane').length",
        )
        .await?
        .map_err(anyhow::Error::msg)?;
    assert_eq!(lanes, 5, "a lane per peer");
    browser
        .call(
            &a,
            "document.querySelector('[data-testid=tracing-panel]').scrollIntoView()",
        )
        .await?
        .map_err(anyhow::Error::msg)?;
    browser.screenshot(&a, &dir.join("tab-a-lanes.png")).await?;
    browser
        .click(&a, "[data-testid=trace-tab-waterfall]")
        .await?;
    let rows = wait_until("the waterfall is drawn", PATIENCE, || async {
        let rows = browser
            .call(
                &a,
                "document.querySelectorAll('[data-testid=wf-row]').length",
            )
            .await?
            .map_err(anyhow::Error::msg)?
            .as_u64()
            .unwrap_or(0);
        Ok(if rows > 0 {
            Ok(rows)
        } else {
            Err("no rows".to_owned())
        })
    })
    .await?;
    assert!(
        rows as usize >= spans.len(),
        "a row per span: {rows} < {}",
        spans.len()
    );
    browser
        .screenshot(&a, &dir.join("tab-a-waterfall.png"))
        .await?;

    // A DHT put is traced on the tab that makes it: a span per phase and per request.
    let put = wait_until("A's put is stored", PATIENCE, || async {
        browser
            .call(&a, "window.tabmesh.put('traced-key', 'v')")
            .await
    })
    .await?;
    let put_trace_id = put["trace_id"]
        .as_str()
        .expect("a put carries its trace_id")
        .to_owned();
    let put_trace = gathered(&browser, &a, &put_trace_id).await?;
    assert_eq!(
        spans_named(&put_trace, "dht.put traced-key").len(),
        1,
        "{put_trace}"
    );
    assert!(
        !spans_named(&put_trace, "dht.request").is_empty(),
        "{put_trace}"
    );

    // Slow motion holds each traced copy a second: a spread from tab B takes at least that.
    for tab in browser.tabs() {
        browser
            .call(tab, "window.tabmesh.slowMotion(1000)")
            .await?
            .map_err(anyhow::Error::msg)?;
    }
    let b = browser.tabs()[1].clone();
    let slow_id = reset_and_await_prime_trace(&browser, &b, PATIENCE).await?;
    let slow = wait_until(
        "B's slowed spread has reached the others",
        PATIENCE,
        || async {
            let trace = gathered(&browser, &b, &slow_id).await?;
            let n = spans_named(&trace, "gimps.receive PRIME").len();
            Ok(if n >= 4 {
                Ok(trace)
            } else {
                Err(format!("{n} receives"))
            })
        },
    )
    .await?;
    let b_id = browser.state(&b).await?.expect("B runs").peer_id;
    let held: Vec<u64> = spans_named(&slow, "gimps.send")
        .iter()
        .filter(|s| s["peer"] == Value::String(b_id.clone()))
        .filter_map(|s| s["attributes"]["held_ms"].as_str()?.parse().ok())
        .collect();
    assert!(
        !held.is_empty() && held.iter().all(|ms| *ms >= 900),
        "B's copies were held about a second: {held:?}"
    );
    // B prunes: its PRIME names the four peers it sent it to, so the pruning peers (C, D and
    // the node) copy it on to nobody; only A, which floods as the exercise does, copies it on.
    // Once B's held copies are long delivered: one first-hand receive per peer, from B, and no
    // send but B's and A's.
    // (A gathering asks every peer; one busy on a loaded machine may answer the next one.)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let first_hand_of = |trace: &Value| -> Vec<Value> {
        spans_named(trace, "gimps.receive PRIME")
            .into_iter()
            .filter(|r| r["attributes"]["gimps.duplicate"] == "false")
            .cloned()
            .collect()
    };
    let settled = wait_until(
        "every peer's first-hand receive of B's PRIME is gathered",
        PATIENCE,
        || async {
            let trace = gathered(&browser, &b, &slow_id).await?;
            let first_hand = first_hand_of(&trace);
            let receivers: BTreeSet<&str> = first_hand
                .iter()
                .filter_map(|r| r["peer"].as_str())
                .collect();
            Ok(if receivers.len() >= 4 {
                Ok(trace)
            } else {
                Err(format!("first-hand receives on {receivers:?}"))
            })
        },
    )
    .await?;
    let first_hand = first_hand_of(&settled);
    let receivers: BTreeSet<&str> = first_hand
        .iter()
        .filter_map(|r| r["peer"].as_str())
        .collect();
    assert_eq!((first_hand.len(), receivers.len()), (4, 4), "{settled}");
    assert!(
        first_hand
            .iter()
            .all(|r| r["attributes"]["peer.caller"] == Value::String(b_id.clone())),
        "{settled}"
    );
    let senders: BTreeSet<&str> = spans_named(&settled, "gimps.send")
        .iter()
        .filter_map(|s| s["peer"].as_str())
        .collect();
    let flooding: BTreeSet<&str> = [a_id.as_str(), b_id.as_str()].into();
    assert!(senders.is_subset(&flooding), "{settled}");
    let c = browser.tabs()[2].clone();
    let spared = browser
        .state(&c)
        .await?
        .and_then(|v| v.gimps)
        .map(|g| g.state.counters.pruned)
        .unwrap_or_default();
    assert!(
        spared >= 3,
        "C skipped B's three other recipients: {spared}"
    );
    let traffic = browser.text(&c, "[data-testid=gimps-traffic]").await?;
    assert!(
        traffic.contains("not forwarded (had it first-hand)"),
        "{traffic}"
    );

    node.stop()?;
    browser.quit().await?;
    relay.stop()?;
    Ok(())
}
