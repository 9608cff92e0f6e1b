//! Services figures: call latency across 8 tabs (direct against through the relay), one
//! provider's throughput with 1 and 7 calling tabs, the HTTP gateway's calls per second, and
//! failover when the provider being called closes.

use std::time::Duration;

use serde_json::{Value, json};
use tabmesh_client::{Message, NodeConnection};
use tabmesh_e2e::{
    Browser, BrowserOptions, Relay, RelayOptions, Tab, run_dir, unix_now_ms, wait_until,
};

use super::summary;

const PATIENCE: Duration = Duration::from_secs(120);

/// Runs every services figure.
pub(super) async fn run() -> anyhow::Result<()> {
    for (label, query) in [("relayed", "&direct=off"), ("direct", "")] {
        latency_and_throughput(label, query).await?;
    }
    failover().await
}

pub(super) async fn js(browser: &Browser, tab: &Tab, expression: &str) -> anyhow::Result<Value> {
    browser
        .call(tab, expression)
        .await?
        .map_err(|e| anyhow::anyhow!("{expression}: {e}"))
}

/// Waits until `tab`'s node has started (`window.tabmesh` is there from then on).
async fn started(browser: &Browser, tab: &Tab) -> anyhow::Result<String> {
    wait_until("the tab's node has started", PATIENCE, || async move {
        Ok(browser
            .state(tab)
            .await?
            .map(|v| v.peer_id)
            .ok_or_else(|| "no view yet".to_owned()))
    })
    .await
}

/// Waits until every tab is connected to the 7 others the way `direct` asks.
async fn mesh(browser: &Browser, direct: bool) -> anyhow::Result<()> {
    wait_until("8 tabs connected to each other", PATIENCE, || async move {
        for tab in browser.tabs() {
            let peers = browser.state(tab).await?.map_or(Vec::new(), |v| v.peers);
            let wanted = peers
                .iter()
                .filter(|p| !direct || p.connection == tabmesh_core::peers::ConnectionKind::Direct)
                .count();
            if wanted < 7 {
                return Ok(Err(format!("a tab has {wanted} of 7 peers as wanted")));
            }
        }
        Ok(Ok(()))
    })
    .await
}

/// Starts `loops` concurrent call loops of `echo` in `tab` for `ms`, counting answers.
const LOOP: &str = "(() => { const until = performance.now() + MS; \
    window.bench = {done: 0, failed: 0, errors: {}}; \
    const one = async () => { while (performance.now() < until) { \
      try { await window.tabmesh.call('echo', 'echo', {n: 1}); window.bench.done += 1; } \
      catch (e) { window.bench.failed += 1; const k = e.code || e.message; \
        window.bench.errors[k] = (window.bench.errors[k] || 0) + 1; } } }; \
    window.bench.running = Promise.all(Array.from({length: LOOPS}, one)); return null; })()";

async fn throughput(
    browser: &Browser,
    callers: &[Tab],
    loops: usize,
    ms: u64,
) -> anyhow::Result<String> {
    let script = LOOP
        .replace("MS", &ms.to_string())
        .replace("LOOPS", &loops.to_string());
    for tab in callers {
        js(browser, tab, &script).await?;
    }
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let (mut done, mut failed, mut errors) = (0, 0, Vec::new());
    for tab in callers {
        let bench = js(
            browser,
            tab,
            "window.bench.running.then(() => ({done: window.bench.done, failed: window.bench.failed, errors: window.bench.errors}))",
        )
        .await?;
        done += bench["done"].as_u64().unwrap_or(0);
        failed += bench["failed"].as_u64().unwrap_or(0);
        if let Some(map) = bench["errors"].as_object() {
            errors.extend(map.iter().map(|(k, v)| format!("{k} x{v}")));
        }
    }
    let seconds = ms as f64 / 1000.0;
    Ok(format!(
        "{:>7.0} calls/s   ({done} answered, {failed} failed{}{})",
        done as f64 / seconds,
        if errors.is_empty() { "" } else { ": " },
        errors.join(", ")
    ))
}

async fn latency_and_throughput(label: &str, query: &str) -> anyhow::Result<()> {
    let dir = run_dir(&format!("bench-services-{label}"))?;
    let mut options = RelayOptions::new(&dir)?;
    // The gateway's per-IP limit would measure itself, not the path: lifted for the bench.
    options.extra_args.extend(
        [
            "--gateway-rate-per-ip",
            "100000",
            "--gateway-burst-per-ip",
            "100000",
        ]
        .map(str::to_owned),
    );
    let relay = Relay::start(options, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    let url = format!("{}/?search=off{query}", relay.url());
    for _ in 0..8 {
        browser.open_tab(&url).await?;
    }
    let tabs = browser.tabs().to_vec();
    mesh(&browser, label == "direct").await?;
    let provider = &tabs[0];
    js(&browser, provider, "window.tabmesh.builtin('echo', true)").await?;
    let callers = &tabs[1..];
    // The first call of each tab finds the provider and reads its descriptor.
    let mut first = Vec::new();
    for tab in callers {
        let browser = &browser;
        let answer = wait_until("the echo provider is found", PATIENCE, || async move {
            browser
                .call(tab, "window.tabmesh.call('echo', 'echo', {n: 0})")
                .await
        })
        .await?;
        first.push(answer["duration_ms"].as_f64().unwrap_or(f64::NAN));
    }
    let (mut durations, mut links) = (Vec::new(), std::collections::BTreeMap::new());
    for tab in callers {
        for n in 1..=10 {
            let answer = js(
                &browser,
                tab,
                &format!("window.tabmesh.call('echo', 'echo', {{n: {n}}})"),
            )
            .await?;
            durations.push(answer["duration_ms"].as_f64().unwrap_or(f64::NAN));
            *links
                .entry(answer["link"].as_str().unwrap_or("?").to_owned())
                .or_insert(0) += 1;
        }
    }
    println!("== services: echo across 8 tabs, {label} (one provider, 7 callers) ==");
    println!("first call (DHT lookup + descriptor)  {}", summary(first));
    println!(
        "later calls                          {}",
        summary(durations)
    );
    println!("links used                           {links:?}");
    println!(
        "throughput, 1 caller x 8 loops       {}",
        throughput(&browser, &callers[..1], 8, 5_000).await?
    );
    println!(
        "throughput, 7 callers x 8 loops      {}",
        throughput(&browser, callers, 8, 5_000).await?
    );
    if label == "direct" {
        // HTTP: the relay's gateway, 16 concurrent clients for 5 s.
        let connection = NodeConnection::connect(&relay.url()).await?;
        let until = std::time::Instant::now() + Duration::from_secs(5);
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let connection = connection.clone();
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut failed, mut ms) = (0u64, 0u64, Vec::new());
                while std::time::Instant::now() < until {
                    let started = std::time::Instant::now();
                    match connection
                        .send(&Message::new("echo", "echo", json!({"n": 1})))
                        .await
                    {
                        Ok(_) => {
                            ok += 1;
                            ms.push(started.elapsed().as_secs_f64() * 1000.0);
                        }
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed, ms)
            }));
        }
        let (mut ok, mut failed, mut ms) = (0, 0, Vec::new());
        for task in tasks {
            let (o, f, m) = task.await?;
            ok += o;
            failed += f;
            ms.extend(m);
        }
        println!("== services: HTTP gateway on the relay, 16 clients for 5 s, to one tab ==");
        println!(
            "throughput {:>7.0} calls/s   ({ok} answered, {failed} failed)",
            ok as f64 / 5.0
        );
        println!("latency    {}", summary(ms));
    }
    browser.quit().await?;
    relay.stop()?;
    Ok(())
}

/// The JavaScript service of the failover figure: answers after 300 ms, so that calls are in
/// flight when its tab closes.
const OFFER_SLOW: &str = "window.tabmesh.offer('slow', {types: {wait: {}}}, \
    () => new Promise(done => setTimeout(() => done({}), 300)))";

/// Four loops calling `slow`, recording every call (wall-clock ms).
const CALL_SLOW: &str = "(() => { window.records = []; window.looping = true; \
    const one = async () => { while (window.looping) { const start = Date.now(); \
      try { const r = await window.tabmesh.call('slow', 'wait', {}); \
        window.records.push({start, end: Date.now(), ok: true, provider: r.provider, attempts: r.attempts}); } \
      catch (e) { window.records.push({start, end: Date.now(), ok: false, error: e.message}); \
        await new Promise(r => setTimeout(r, 50)); } } }; \
    for (let i = 0; i < 4; i++) one(); return null; })()";

async fn failover() -> anyhow::Result<()> {
    const ROUNDS: usize = 5;
    let dir = run_dir("bench-services-failover")?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    let url = format!("{}/?search=off", relay.url());
    let stays = browser.open_tab(&url).await?;
    let caller = browser.open_tab(&url).await?;
    started(&browser, &stays).await?;
    started(&browser, &caller).await?;
    js(&browser, &stays, OFFER_SLOW).await?;
    wait_until("the caller finds slow", PATIENCE, || async {
        browser
            .call(&caller, "window.tabmesh.call('slow', 'wait', {})")
            .await
    })
    .await?;
    js(&browser, &caller, CALL_SLOW).await?;
    let (mut failed_over, mut departures, mut failed) = (Vec::new(), Vec::new(), 0);
    for _ in 0..ROUNDS {
        let leaving = browser.open_tab(&url).await?;
        let id = started(&browser, &leaving).await?;
        js(&browser, &leaving, OFFER_SLOW).await?;
        let known = js(&browser, &caller, "window.records.length").await?;
        let known = known.as_u64().unwrap_or(0) as usize;
        wait_until(
            "the caller's calls reach the new provider",
            PATIENCE,
            || {
                let id = id.clone();
                let (browser, caller) = (&browser, &caller);
                async move {
                    let records = js(browser, caller, "window.records").await?;
                    let reached = records
                        .as_array()
                        .is_some_and(|r| r.iter().skip(known).any(|c| c["provider"] == json!(id)));
                    Ok(if reached {
                        Ok(())
                    } else {
                        Err("not yet".to_owned())
                    })
                }
            },
        )
        .await?;
        // Close it while calls are in flight to it (every 300 ms, two of four loops are).
        tokio::time::sleep(Duration::from_millis(150)).await;
        let before = js(&browser, &caller, "window.records.length").await?;
        let before = before.as_u64().unwrap_or(0) as usize;
        let closed_at = unix_now_ms();
        browser.close_tab(&leaving).await?;
        let gone = wait_until("the caller sees the provider leave", PATIENCE, || {
            let id = id.clone();
            let (browser, caller) = (&browser, &caller);
            async move {
                let view = browser.state(caller).await?;
                Ok(
                    match view.filter(|v| v.peers.iter().all(|p| p.peer_id != id)) {
                        Some(_) => Ok(unix_now_ms()),
                        None => Err("still connected".to_owned()),
                    },
                )
            }
        })
        .await?;
        departures.push(gone - closed_at);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let records = js(&browser, &caller, "window.records").await?;
        for record in records.as_array().into_iter().flatten().skip(before) {
            let start = record["start"].as_f64().unwrap_or(0.0);
            let end = record["end"].as_f64().unwrap_or(0.0);
            if record["ok"] != json!(true) {
                failed += 1;
            } else if start < closed_at && record["attempts"].as_u64() > Some(1) {
                failed_over.push(end - closed_at);
            }
        }
    }
    js(&browser, &caller, "window.looping = false").await?;
    println!(
        "== services: failover, {ROUNDS} rounds (4 call loops; the provider being called closes) =="
    );
    println!(
        "departure seen by the caller           {}",
        summary(departures)
    );
    println!(
        "in-flight call answered by the other   {}   (from the close; the service takes 300 ms)",
        summary(failed_over)
    );
    println!("calls that failed                      {failed}");
    browser.quit().await?;
    relay.stop()?;
    Ok(())
}
