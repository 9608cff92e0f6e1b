//! Services end to end, in real browsers and real processes.
//!
//! Four tabs (A, B, C, D), a native node offering `lucas-lehmer`, and the relay's HTTP gateway:
//!
//! - tab A offers a service written in JavaScript and tab D calls it; tab C calls
//!   `lucas-lehmer` on the native node; an HTTP client (the `tabmesh-client` crate, as any
//!   program would) reaches tab A's service through the relay and through the native node's
//!   gateway (`--http`), the native node calls it from its stdin, and the gateway answers bad
//!   input with the status codes it documents;
//! - bad data and unknown message types are refused with the reason at the caller and never
//!   reach the handler;
//! - tab B offers the same service; tab D calls it in a loop while tab A, the provider being
//!   called, is closed: every call is answered, the later ones by B;
//! - with B gone too, a call fails with "no provider" (not a timeout);
//! - the Services panel shows the offer, the catalog and a call made with its form.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tabmesh_client::{ClientError, Message, NodeConnection};
use tabmesh_e2e::{
    Browser, BrowserOptions, NativeNode, Relay, RelayOptions, Tab, run_dir, wait_until,
};

const PATIENCE: Duration = Duration::from_secs(90);

/// The JavaScript service tab A and B offer: `sum`/`add`, counting the calls it handles.
const OFFER_SUM: &str = "(window.handled = 0, window.tabmesh.offer('sum', {types: {add: {request: \
    {type: 'object', properties: {a: {type: 'integer'}, b: {type: 'integer'}}, required: ['a', 'b'], \
    additionalProperties: false}}}}, (type, data) => { window.handled += 1; \
    return new Promise(done => setTimeout(() => done({sum: data.a + data.b}), 20)); }))";

/// `window.tabmesh.call(...)` in `tab`: the answer, or the rejection's message.
async fn call(browser: &Browser, tab: &Tab, args: &str) -> anyhow::Result<Result<Value, String>> {
    browser
        .call(tab, &format!("window.tabmesh.call({args})"))
        .await
}

/// Waits until `tab`'s call with `args` is answered (announcements take a moment to spread).
async fn answered(browser: &Browser, tab: &Tab, args: &str, what: &str) -> anyhow::Result<Value> {
    wait_until(
        what,
        PATIENCE,
        || async move { call(browser, tab, args).await },
    )
    .await
}

async fn handled(browser: &Browser, tab: &Tab) -> anyhow::Result<u64> {
    let n = browser
        .call(tab, "window.handled")
        .await?
        .map_err(anyhow::Error::msg)?;
    Ok(n.as_u64().unwrap_or(0))
}

async fn peer_id(browser: &Browser, tab: &Tab) -> anyhow::Result<String> {
    let view = browser
        .state(tab)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no view"))?;
    Ok(view.peer_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_offered_found_called_through_any_node_and_fail_over() -> anyhow::Result<()> {
    let dir = run_dir("services")?;
    let options = RelayOptions::new(&dir)?;
    let relay = Relay::start(options, dir.join("relay.log")).await?;
    let node_http = format!("127.0.0.1:{}", tabmesh_e2e::free_port()?);
    let node = NativeNode::start_with(
        &tabmesh_e2e::bin_path("tabmesh-node"),
        &relay.url(),
        &["--offer", "lucas-lehmer", "--http", &node_http],
        dir.join("node.log"),
    )?;
    let mut browser = Browser::start(BrowserOptions::new(&dir)).await?;
    let mut tabs = Vec::new();
    for _ in 0..4 {
        tabs.push(browser.open_tab(&relay.url()).await?);
    }
    let (a, b, c, d) = (
        tabs[0].clone(),
        tabs[1].clone(),
        tabs[2].clone(),
        tabs[3].clone(),
    );
    for tab in &tabs {
        wait_until("each tab's node is up", PATIENCE, || async {
            Ok(browser
                .state(tab)
                .await?
                .filter(|v| v.relay.reservation_at_ms.is_some())
                .map(|_| ())
                .ok_or_else(|| "no reservation yet".to_owned()))
        })
        .await?;
    }
    let a_id = peer_id(&browser, &a).await?;
    // The node announces its service at once, so the DHT dials the relay while the relay link
    // does: it must still end up listening behind the relay (it once lost its listener in that
    // race and refused every circuit).
    wait_until(
        "the native node listens behind the relay",
        PATIENCE,
        || async {
            Ok(match node.state() {
                Some(v) if v.listen_addrs.iter().any(|a| a.contains("/p2p-circuit")) => Ok(()),
                Some(v) => Err(format!("listening on {:?}", v.listen_addrs)),
                None => Err("no state yet".to_owned()),
            })
        },
    )
    .await?;

    // Tab A offers a service written in JavaScript; tab D calls it.
    browser
        .call(&a, OFFER_SUM)
        .await?
        .map_err(|e| anyhow::anyhow!("offer: {e}"))?;
    let answer = answered(
        &browser,
        &d,
        "'sum', 'add', {a: 2, b: 3}",
        "D's call to A's sum",
    )
    .await?;
    assert_eq!(answer["reply"], json!({"sum": 5}), "{answer}");
    assert_eq!(answer["provider"], json!(a_id));
    let route = answer["route"].as_array().cloned().unwrap_or_default();
    assert!(route.len() >= 2, "{answer}");
    assert_eq!(handled(&browser, &a).await?, 1);
    // The call is a trace: D's call and request spans, A's serving span under the request.
    let trace_id = answer["trace_id"].as_str().unwrap_or_default().to_owned();
    let trace = browser
        .call(&d, &format!("window.tabmesh.trace('{trace_id}')"))
        .await?
        .map_err(anyhow::Error::msg)?;
    let spans = trace["spans"].as_array().cloned().unwrap_or_default();
    let named = |prefix: &str| {
        spans
            .iter()
            .find(|s| s["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
            .cloned()
            .unwrap_or_default()
    };
    let (call_span, request, serve) = (
        named("service.call sum/add"),
        named("service.request sum/add"),
        named("service.serve sum/add"),
    );
    assert_eq!(serve["peer"], json!(a_id), "{trace}");
    assert_eq!(serve["parent_span_id"], request["span_id"], "{trace}");
    assert_eq!(request["parent_span_id"], call_span["span_id"], "{trace}");
    assert_eq!(trace["missing"], json!([]), "{trace}");

    // Tab C calls lucas-lehmer on the native node.
    let answer = answered(
        &browser,
        &c,
        "'lucas-lehmer', 'test', {exponent: 127}",
        "C's call to the node's lucas-lehmer",
    )
    .await?;
    assert_eq!(answer["reply"]["is_prime"], json!(true), "{answer}");
    assert_eq!(answer["reply"]["exponent"], json!(127));
    let node_id = node.state().map(|v| v.peer_id).unwrap_or_default();
    assert_eq!(answer["provider"], json!(node_id), "{answer}");
    let composite = call(&browser, &c, "'lucas-lehmer', 'test', {exponent: 11}")
        .await?
        .map_err(anyhow::Error::msg)?;
    assert_eq!(composite["reply"]["is_prime"], json!(false), "{composite}");

    // Bad data and unknown types are refused at the caller, with the reason; the handler never
    // sees them.
    let bad = call(&browser, &d, "'sum', 'add', {a: 'two', b: 3}").await?;
    let bad = bad.expect_err("bad data is refused");
    assert!(bad.starts_with("bad data: /a"), "{bad}");
    let unknown = call(&browser, &d, "'sum', 'multiply', {a: 2, b: 3}").await?;
    let unknown = unknown.expect_err("an unknown type is refused");
    assert!(
        unknown.starts_with("unknown message type \"multiply\""),
        "{unknown}"
    );
    let nobody = call(&browser, &d, "'no-such-service', 'x', {}").await?;
    assert!(
        nobody
            .expect_err("nobody offers it")
            .starts_with("no provider")
    );
    assert_eq!(
        handled(&browser, &a).await?,
        1,
        "refused calls reached the handler"
    );

    // An HTTP client reaches tab A's service through the relay.
    let client = NodeConnection::connect(&relay.url()).await?;
    let reply = client
        .send(&Message::new("sum", "add", json!({"a": 1, "b": 2})))
        .await?;
    assert_eq!(reply.reply, json!({"sum": 3}));
    assert_eq!(reply.provider, a_id);
    assert_eq!(
        reply.route.first().map(String::as_str),
        Some("http 127.0.0.1")
    );
    match client
        .send(&Message::new("sum", "add", json!({"a": "x"})))
        .await
    {
        Err(ClientError::BadData(why)) => assert!(why.starts_with("bad data"), "{why}"),
        other => panic!("bad data over HTTP: {other:?}"),
    }
    match client
        .send(&Message::new("nothing-here", "x", json!({})))
        .await
    {
        Err(ClientError::UnknownService(why)) => assert!(why.starts_with("no provider"), "{why}"),
        other => panic!("unknown service over HTTP: {other:?}"),
    }
    let http = reqwest::Client::new();
    let raw = http
        .post(format!("{}/api/services/sum/add", relay.url()))
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await?;
    assert_eq!(raw.status(), 400);
    let big = http
        .post(format!("{}/api/services/echo/echo", relay.url()))
        .json(&json!({"x": "y".repeat(100_000)}))
        .send()
        .await?;
    assert_eq!(big.status(), 413);
    // The native node is an entry too: over its HTTP gateway, and from its stdin.
    let through_node = NodeConnection::connect(&format!("http://{node_http}")).await?;
    let reply = through_node
        .send(&Message::new("sum", "add", json!({"a": 20, "b": 22})))
        .await?;
    assert_eq!(
        (reply.reply, reply.provider),
        (json!({"sum": 42}), a_id.clone())
    );
    node.send(r#"call sum add {"a": 4, "b": 5}"#)?;
    node.send(r#"call sum add {"a": "four"}"#)?;
    let answers = wait_until("the node prints both answers", PATIENCE, || async {
        let answers = node.answers(&["call", "call_error"]);
        Ok(if answers.len() >= 2 {
            Ok(answers)
        } else {
            Err(format!("{answers:?}"))
        })
    })
    .await?;
    // (The bad call is refused at once, before the good one is answered.)
    let answered = answers
        .iter()
        .find(|a| a.get("call_error").is_none())
        .unwrap();
    let refused = answers
        .iter()
        .find(|a| a.get("call_error").is_some())
        .unwrap();
    assert_eq!(answered["call"]["reply"], json!({"sum": 9}), "{answers:?}");
    // A native node has no WebRTC: it reaches a tab through the relay.
    assert_eq!(answered["call"]["link"], json!("relayed"), "{answers:?}");
    assert_eq!(refused["code"], json!("bad_data"), "{answers:?}");
    // (The catalog is read from the DHT's provider records, which the offer publishes while
    // the first calls already reach the provider: read until both services are listed.)
    wait_until(
        "the catalog lists sum and lucas-lehmer",
        PATIENCE,
        || async {
            let catalog = client.services().await?;
            let listed = |name: &str| catalog.iter().any(|s| s.name == name);
            Ok(if listed("sum") && listed("lucas-lehmer") {
                Ok(())
            } else {
                Err(format!("{catalog:?}"))
            })
        },
    )
    .await?;
    assert_eq!(handled(&browser, &a).await?, 4);

    // Tab B offers the same service; D calls in a loop while A, being called, is closed.
    browser
        .call(&b, OFFER_SUM)
        .await?
        .map_err(|e| anyhow::anyhow!("offer in B: {e}"))?;
    let b_id = peer_id(&browser, &b).await?;
    wait_until("B's offer is in the catalog", PATIENCE, || async {
        let catalog = client.services().await?;
        Ok(catalog
            .iter()
            .find(|s| s.name == "sum")
            .filter(|s| s.providers.iter().any(|p| p.peer_id == b_id))
            .map(|_| ())
            .ok_or_else(|| "not yet".to_owned()))
    })
    .await?;
    browser
        .call(
            &d,
            "(() => { window.calls = []; window.looping = true; (async () => { let i = 0; \
             while (window.looping) { i += 1; try { const r = await window.tabmesh.call('sum', 'add', {a: i, b: 1}); \
             window.calls.push({ok: r.reply.sum === i + 1, provider: r.provider, attempts: r.attempts}); } \
             catch (e) { window.calls.push({ok: false, error: e.message}); } \
             await new Promise(r => setTimeout(r, 50)); } })(); return null; })()",
        )
        .await?
        .map_err(anyhow::Error::msg)?;
    wait_until("D's loop reaches A", PATIENCE, || async {
        let calls = browser
            .call(&d, "window.calls")
            .await?
            .map_err(anyhow::Error::msg)?;
        let to_a = calls.as_array().map_or(0, |c| {
            c.iter().filter(|x| x["provider"] == json!(a_id)).count()
        });
        Ok(if to_a >= 3 {
            Ok(())
        } else {
            Err(format!("{to_a} call(s) answered by A"))
        })
    })
    .await?;
    browser.close_tab(&a).await?;
    let closed = Instant::now();
    let closed_at = browser
        .call(&d, "window.calls.length")
        .await?
        .map_err(anyhow::Error::msg)?;
    let closed_at = closed_at.as_u64().unwrap_or(0) as usize;
    wait_until("D sees A leave", PATIENCE, || async {
        let view = browser.state(&d).await?;
        Ok(
            match view.filter(|v| v.peers.iter().all(|p| p.peer_id != a_id)) {
                Some(_) => Ok(()),
                None => Err("A is still among D's peers".to_owned()),
            },
        )
    })
    .await?;
    println!(
        "D saw A leave {} ms after it closed",
        closed.elapsed().as_millis()
    );
    wait_until("calls go on through B", PATIENCE, || async {
        let calls = browser
            .call(&d, "window.calls")
            .await?
            .map_err(anyhow::Error::msg)?;
        let after: Vec<&Value> = calls
            .as_array()
            .map(|c| c.iter().skip(closed_at).collect())
            .unwrap_or_default();
        let by_b = after
            .iter()
            .filter(|x| x["provider"] == json!(b_id))
            .count();
        Ok(if by_b >= 5 {
            Ok(())
        } else {
            Err(format!("{by_b} call(s) by B since A closed"))
        })
    })
    .await?;
    browser
        .call(&d, "window.looping = false")
        .await?
        .map_err(anyhow::Error::msg)?;
    let calls = browser
        .call(&d, "window.calls")
        .await?
        .map_err(anyhow::Error::msg)?;
    let calls = calls.as_array().cloned().unwrap_or_default();
    let failed: Vec<&Value> = calls.iter().filter(|x| x["ok"] != json!(true)).collect();
    assert!(failed.is_empty(), "calls failed while A closed: {failed:?}");
    let failed_over = calls
        .iter()
        .filter(|x| x["attempts"].as_u64() > Some(1))
        .count();
    println!(
        "{} calls during the failover, {failed_over} answered after trying more than one provider",
        calls.len()
    );

    // With B gone too, the caller is told there is no provider.
    browser.close_tab(&b).await?;
    let started = Instant::now();
    let last = wait_until("the call fails with no provider", PATIENCE, || async {
        Ok(
            match call(&browser, &d, "'sum', 'add', {a: 1, b: 1}").await? {
                Err(e) => Ok(e),
                Ok(answer) => Err(format!("still answered: {answer}")),
            },
        )
    })
    .await?;
    assert!(last.starts_with("no provider"), "{last}");
    println!(
        "no provider error {} ms after B closed",
        started.elapsed().as_millis()
    );

    // The Services panel: the catalog, and a call made with its form.
    browser
        .call(&c, "window.tabmesh.builtin('echo', true)")
        .await?
        .map_err(anyhow::Error::msg)?;
    browser
        .call(
            &c,
            "document.querySelector('[data-testid=services-panel]').scrollIntoView()",
        )
        .await?
        .map_err(anyhow::Error::msg)?;
    wait_until("the panel lists lucas-lehmer", PATIENCE, || async {
        browser.click(&c, "[data-testid=svc-refresh]").await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(
            if browser
                .exists(&c, "[data-testid=svc-listing-lucas-lehmer]")
                .await?
            {
                Ok(())
            } else {
                Err("not listed".to_owned())
            },
        )
    })
    .await?;
    browser.click(&c, "[data-testid=svc-call]").await?;
    let shown = wait_until("the form's call is answered", PATIENCE, || async {
        let text = browser
            .text(&c, "[data-testid=svc-call-result]")
            .await
            .unwrap_or_default();
        Ok(
            if text.contains("answered by")
                || text.contains("error")
                || text.contains("no provider")
            {
                Ok(text)
            } else {
                Err(text)
            },
        )
    })
    .await?;
    assert!(shown.contains("answered by"), "{shown}");
    assert!(browser.exists(&c, "[data-testid=svc-route]").await?);
    browser
        .screenshot(&c, &dir.join("services-panel.png"))
        .await?;

    browser.quit().await?;
    node.stop()?;
    relay.stop()?;
    Ok(())
}
