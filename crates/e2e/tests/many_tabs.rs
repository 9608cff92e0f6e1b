//! Many tabs on one machine (12 by default, `TABMESH_MANY_TABS=24` for more), opened together
//! and not searching: once they have met, every tab starts its operations at the same moment
//! (a DHT put of its own key, a traced ping, a provide; one tab also puts `scale-key` and takes
//! a snapshot), then every tab gets its neighbour's key and looks for providers. Every operation
//! must settle: with an answer, or with the reason it has none (a deadline passed, a peer did
//! not answer), however loaded the machine. No answer may be wrong: a get that finds a key finds
//! its value, and a put reported as stored was acknowledged by at least one peer.
//!
//! What the run measured is printed: connections per tab, each operation's outcomes (answers,
//! errors by reason) and times.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tabmesh_core::dht::DhtConfig;
use tabmesh_e2e::{Browser, BrowserOptions, Relay, RelayOptions, Tab, run_dir, wait_until};

/// Tabs opened when `TABMESH_MANY_TABS` does not say.
const DEFAULT_TABS: usize = 12;

/// How long every operation has to settle: the DHT answers within 30 s, snapshots and pings
/// sooner, and the page stops waiting for its node 10 s after a DHT deadline. Far above all of
/// them, so that only an operation that never settles fails the test.
const SETTLE: Duration = Duration::from_secs(120);

/// What settled, by label: each tab's outcome (`{ok: value, ms}` or `{err: reason, ms}`).
type Outcomes = BTreeMap<String, Vec<(usize, Map<String, Value>)>>;

fn tab_count() -> usize {
    std::env::var("TABMESH_MANY_TABS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n >= 2)
        .unwrap_or(DEFAULT_TABS)
}

/// Waits until every `(tab, label)` in `started` has settled; their outcomes, by label then tab.
/// (Not `wait_until`: its 250 ms polling would read every tab four times a second, load that
/// competes with what is measured.)
async fn settle(
    browser: &Browser,
    tabs: &[Tab],
    started: &[(usize, String)],
) -> anyhow::Result<Outcomes> {
    let begun = Instant::now();
    loop {
        let mut outcomes = Outcomes::new();
        let mut pending = Vec::new();
        let mut kept = BTreeMap::new();
        for (i, label) in started {
            if !kept.contains_key(i) {
                kept.insert(*i, browser.settled(&tabs[*i]).await?);
            }
            match kept[i].get(label) {
                Some(Value::Object(outcome)) => outcomes
                    .entry(label.clone())
                    .or_default()
                    .push((*i, outcome.clone())),
                _ => pending.push(format!("tab {i}: {label}")),
            }
        }
        if pending.is_empty() {
            return Ok(outcomes);
        }
        if begun.elapsed() > SETTLE {
            anyhow::bail!(
                "not settled after {} s: {}",
                SETTLE.as_secs(),
                pending.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One line per operation: answers, errors grouped by reason, times.
fn report(outcomes: &Outcomes) {
    for (label, runs) in outcomes {
        let mut ms: Vec<f64> = runs.iter().filter_map(|(_, o)| o["ms"].as_f64()).collect();
        ms.sort_by(f64::total_cmp);
        let answered = runs.iter().filter(|(_, o)| o.contains_key("ok")).count();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for (_, outcome) in runs {
            if let Some(err) = outcome.get("err").and_then(Value::as_str) {
                // The reason without its numbers, to group alike errors.
                let shape: String = err.chars().filter(|c| !c.is_ascii_digit()).collect();
                *reasons.entry(shape).or_default() += 1;
            }
        }
        println!(
            "{label:<10} {answered}/{} answered, median {:.0} ms, worst {:.0} ms{}",
            runs.len(),
            ms.get(ms.len() / 2).copied().unwrap_or_default(),
            ms.last().copied().unwrap_or_default(),
            reasons
                .iter()
                .map(|(why, n)| format!("\n           {n} × {why}"))
                .collect::<String>()
        );
    }
}

/// DHT operations (the others have deadlines of their own, all shorter).
const DHT_OPS: [&str; 5] = ["put", "scale-put", "provide", "get", "providers"];

/// Every outcome is an answer or an error with a reason, from the node itself (not the page
/// giving up on it), and a DHT operation's within its deadline (plus the time to reach the page).
fn check_settled_well(outcomes: &Outcomes) {
    let deadline_ms = DhtConfig::default().op_timeout.as_millis() as f64 + 5_000.0;
    for (label, runs) in outcomes {
        for (i, outcome) in runs {
            match (outcome.get("ok"), outcome.get("err")) {
                (Some(_), None) => {}
                (None, Some(Value::String(why)))
                    if why.contains("no answer from this tab's node") =>
                {
                    panic!("tab {i}: {label}: the node never answered: {why}")
                }
                (None, Some(Value::String(why))) if !why.trim().is_empty() => {}
                _ => panic!("tab {i}: {label} settled without an answer or a reason: {outcome:?}"),
            }
            let ms = outcome
                .get("ms")
                .and_then(Value::as_f64)
                .unwrap_or(f64::INFINITY);
            assert!(
                !DHT_OPS.contains(&label.as_str()) || ms <= deadline_ms,
                "tab {i}: {label} answered after {ms:.0} ms, past its deadline: {outcome:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_in_many_tabs_settles_with_an_answer_or_its_reason() -> anyhow::Result<()> {
    let n = tab_count();
    let dir = run_dir("many-tabs")?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    let url = format!("{}/?search=off", relay.url());
    let tabs = browser.open_tabs_together(n, &url).await?;

    // They meet: a reservation each and most of the others in the DHT.
    let views = wait_until("every tab has joined", Duration::from_secs(240), || {
        let (browser, tabs) = (&browser, &tabs);
        async move {
            let mut views = Vec::new();
            for (i, tab) in tabs.iter().enumerate() {
                match browser.state(tab).await? {
                    Some(v)
                        if v.relay.reservation_at_ms.is_some()
                            && v.dht.as_ref().is_some_and(|d| d.routing_table_size > n / 2) =>
                    {
                        views.push(v)
                    }
                    Some(v) => return Ok(Err(format!("tab {i}: {} peers", v.peers.len()))),
                    None => return Ok(Err(format!("tab {i} has no view yet"))),
                }
            }
            Ok(Ok(views))
        }
    })
    .await?;
    let mut connections: Vec<usize> = views.iter().map(|v| v.peers.len()).collect();
    connections.sort_unstable();
    let direct: usize = views.iter().map(|v| v.direct_peers()).sum();
    println!(
        "{n} tabs: connections per tab {connections:?}, {:.0}% of them direct",
        100.0 * direct as f64 / connections.iter().sum::<usize>().max(1) as f64
    );

    // Round 1, at the same moment in every tab.
    let mut started = Vec::new();
    for (i, tab) in tabs.iter().enumerate() {
        for (label, expression) in [
            ("put", format!("window.tabmesh.put('key-{i}', 'value-{i}')")),
            ("tracePing", "window.tabmesh.tracePing()".to_owned()),
            ("provide", "window.tabmesh.provide('many-tabs')".to_owned()),
        ] {
            browser.begin(tab, label, &expression).await?;
            started.push((i, label.to_owned()));
        }
    }
    let first = &tabs[0];
    browser
        .begin(first, "scale-put", "window.tabmesh.put('scale-key', 'v1')")
        .await?;
    browser
        .begin(first, "snapshot", "window.tabmesh.snapshot()")
        .await?;
    started.extend([(0, "scale-put".to_owned()), (0, "snapshot".to_owned())]);
    let round1 = settle(&browser, &tabs, &started).await?;
    check_settled_well(&round1);
    report(&round1);
    for (i, outcome) in &round1["put"] {
        if let Some(reply) = outcome.get("ok") {
            assert!(
                reply["stored_at"].as_u64() >= Some(1),
                "tab {i}: a put reported as stored must name the peers that took it: {reply}"
            );
        }
    }

    // Round 2: every tab reads its neighbour's key and looks for the providers.
    let mut started = Vec::new();
    for (i, tab) in tabs.iter().enumerate() {
        let next = (i + 1) % n;
        for (label, expression) in [
            ("get", format!("window.tabmesh.get('key-{next}')")),
            (
                "providers",
                "window.tabmesh.providers('many-tabs')".to_owned(),
            ),
        ] {
            browser.begin(tab, label, &expression).await?;
            started.push((i, label.to_owned()));
        }
    }
    let round2 = settle(&browser, &tabs, &started).await?;
    check_settled_well(&round2);
    report(&round2);
    for (i, outcome) in &round2["get"] {
        let next = (i + 1) % n;
        if let Some(value) = outcome
            .get("ok")
            .and_then(|r| r["record"]["value"].as_str())
        {
            assert_eq!(value, format!("value-{next}"), "tab {i} read key-{next}");
        }
    }
    let stored: Vec<usize> = round1["put"]
        .iter()
        .filter(|(_, o)| o.contains_key("ok"))
        .map(|(i, _)| *i)
        .collect();
    let found = round2["get"]
        .iter()
        .filter(|(i, o)| stored.contains(&((i + 1) % n)) && o["ok"]["record"].is_object())
        .count();
    println!(
        "gets of a key whose put succeeded: {found} of {} found it",
        round2["get"]
            .iter()
            .filter(|(i, _)| stored.contains(&((i + 1) % n)))
            .count()
    );

    browser.screenshot(first, &dir.join("tab-0.png")).await?;
    browser.quit().await?;
    relay.stop()?;
    Ok(())
}
