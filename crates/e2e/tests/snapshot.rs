//! Chandy-Lamport snapshots in real browsers and a real native node: four tabs and a node in a
//! full mesh run the token demo; every snapshot, from a tab or the node, is complete, conserves
//! every token and has every channel consistent; naive snapshots taken in the same run are
//! shown inconsistent at least once (the test says how often); the Snapshot panel draws the
//! result; a tab closed during a snapshot makes it incomplete, saying which.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use tabmesh_core::wire_log::Topic;
use tabmesh_e2e::{Browser, BrowserOptions, NativeNode, Relay, RelayOptions, run_dir, wait_until};

const PATIENCE: Duration = Duration::from_secs(90);
/// Peers: four tabs and the node, each minting this many tokens.
const PEERS: usize = 5;
const MINTED: i64 = 1_000;

fn check(snapshot: &Value, which: &str) -> bool {
    snapshot["checks"][which].as_bool() == Some(true)
}

/// Asserts that `snapshot` is the consistent global state of the whole network.
fn assert_consistent(snapshot: &Value) {
    assert_eq!(
        snapshot["complete"],
        Value::Bool(true),
        "incomplete, missing: {}; the snapshot: {snapshot}",
        snapshot["missing"]
    );
    assert!(check(snapshot, "tokens_conserved"), "{snapshot}");
    assert!(check(snapshot, "channels_consistent"), "{snapshot}");
    assert_eq!(
        snapshot["peers"].as_array().map(Vec::len),
        Some(PEERS),
        "{snapshot}"
    );
    assert_eq!(
        snapshot["channels"].as_array().map(Vec::len),
        Some(PEERS * (PEERS - 1)),
        "one channel per direction per pair: {snapshot}"
    );
    assert_eq!(
        snapshot["tokens"]["total"].as_i64(),
        Some(PEERS as i64 * MINTED)
    );
    // Every channel's numbers add up.
    for c in snapshot["channels"].as_array().into_iter().flatten() {
        let in_flight = c["in_flight"].as_array().map_or(0, Vec::len) as u64;
        assert_eq!(
            c["sent"].as_u64(),
            c["received"].as_u64().map(|r| r + in_flight),
            "{c}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_of_four_tabs_and_a_node_trading_tokens_account_for_every_token()
-> anyhow::Result<()> {
    let dir = run_dir("snapshot")?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    for _ in 0..4 {
        // Liveness pings every second: gossip on the channels around every cut.
        browser
            .open_tab(&format!("{}/?ping_interval=1", relay.url()))
            .await?;
    }
    let node = NativeNode::start_with(
        &tabmesh_e2e::bin_path("tabmesh-node"),
        &relay.url(),
        &["--ping-interval", "1"],
        dir.join("node.log"),
    )?;
    // Everyone has a channel with everyone.
    let ids = wait_until(
        "every peer has a channel with every other",
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
            let full = views.len() == PEERS
                && views.iter().all(|v| {
                    let mut want = ids.clone();
                    want.remove(&v.peer_id);
                    let have: BTreeSet<String> = v
                        .snapshot
                        .as_ref()
                        .map(|s| s.channel_peers.iter().cloned().collect())
                        .unwrap_or_default();
                    want.is_subset(&have)
                });
            Ok(if full {
                Ok(ids)
            } else {
                Err(format!("{} views, channels not full", views.len()))
            })
        },
    )
    .await?;
    assert_eq!(ids.len(), PEERS);

    // The token demo everywhere.
    for tab in browser.tabs() {
        browser
            .call(tab, "(window.tabmesh.tokenDemo(true), true)")
            .await?
            .map_err(anyhow::Error::msg)?;
    }
    node.send("tokens on")?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Snapshots from every tab and from the node, while tokens fly.
    let mut in_flight_seen = 0;
    let mut gossip_seen = 0;
    let mut durations = Vec::new();
    for round in 0..8 {
        let tab = &browser.tabs()[round % 4];
        let snapshot = browser
            .call(tab, "window.tabmesh.snapshot()")
            .await?
            .map_err(anyhow::Error::msg)?;
        if snapshot["complete"] != Value::Bool(true) {
            // What every peer's wire log says about snapshots, to tell why.
            let mut views = Vec::new();
            for tab in browser.tabs() {
                views.extend(browser.state(tab).await?);
            }
            views.extend(node.state());
            for view in views {
                let said: Vec<String> = view
                    .wire
                    .iter()
                    .filter(|e| e.protocol == Topic::Snapshot)
                    .map(|e| format!("{} ms: {}", e.at_ms, e.summary))
                    .collect();
                eprintln!(
                    "{}'s snapshot wire log:\n  {}",
                    view.name,
                    said.join("\n  ")
                );
            }
        }
        assert_consistent(&snapshot);
        in_flight_seen += snapshot["tokens"]["in_flight"].as_u64().unwrap_or(0);
        gossip_seen += snapshot["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| p["timeline"].as_array().into_iter().flatten())
            .filter(|e| e["kind"] == "gimps")
            .count();
        durations.push(snapshot["duration_ms"].as_u64().unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    node.send("snapshot")?;
    let from_node = wait_until("the node prints its snapshot", PATIENCE, || async {
        Ok(node
            .answers(&["snapshot"])
            .last()
            .cloned()
            .ok_or_else(|| format!("{:?}", node.answers(&["error"]))))
    })
    .await?;
    assert_consistent(&from_node["snapshot"]);
    println!(
        "8 snapshots from tabs: durations {durations:?} ms, {in_flight_seen} tokens recorded in flight in all, {gossip_seen} gossip frames around the cuts"
    );
    assert!(gossip_seen > 0, "GIMPS gossip travels on the channels");

    // Naive snapshots in the same run: without markers, tokens in flight are missed.
    let a = browser.tabs()[0].clone();
    let mut inconsistent = 0;
    let mut tries = 0;
    while tries < 40 && inconsistent < 3 {
        tries += 1;
        let naive = browser
            .call(&a, "window.tabmesh.naiveSnapshot()")
            .await?
            .map_err(anyhow::Error::msg)?;
        assert_eq!(naive["naive"], Value::Bool(true));
        assert_eq!(naive["tokens"]["in_flight"].as_u64(), Some(0), "{naive}");
        if !check(&naive, "tokens_conserved") || !check(&naive, "channels_consistent") {
            inconsistent += 1;
        }
    }
    println!("naive snapshots: {inconsistent} inconsistent of {tries}");
    assert!(
        inconsistent >= 1,
        "no naive snapshot of {tries} caught tokens in flight"
    );

    // The panel: take a snapshot with its button and look at it.
    let b = browser.tabs()[1].clone();
    browser.click(&b, "[data-testid=take-snapshot]").await?;
    wait_until("the panel shows a complete snapshot", PATIENCE, || async {
        Ok(
            if browser
                .exists(
                    &b,
                    "[data-testid=snapshot-result][data-complete=true][data-tokens-conserved=true][data-channels-consistent=true]",
                )
                .await?
            {
                Ok(())
            } else {
                Err("not yet".to_owned())
            },
        )
    })
    .await?;
    let drawn = browser
        .call(
            &b,
            "[document.querySelectorAll('[data-testid=topology] .node').length, \
              document.querySelectorAll('[data-testid=cut-diagram] .record').length, \
              document.querySelectorAll('[data-testid=cut-arrow]').length]",
        )
        .await?
        .map_err(anyhow::Error::msg)?;
    assert_eq!(drawn[0].as_u64(), Some(PEERS as u64), "nodes: {drawn}");
    assert_eq!(drawn[1].as_u64(), Some(PEERS as u64), "records: {drawn}");
    assert!(drawn[2].as_u64() > Some(0), "arrows: {drawn}");
    browser
        .call(
            &b,
            "(document.querySelector('[data-testid=snapshot-panel]').scrollIntoView(), true)",
        )
        .await?
        .map_err(anyhow::Error::msg)?;
    browser
        .screenshot(&b, &dir.join("tab-b-snapshot.png"))
        .await?;
    browser.click(&b, "[data-testid=take-naive]").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    browser.screenshot(&b, &dir.join("tab-b-naive.png")).await?;

    // A tab closed during a snapshot: D's page is kept busy so that it cannot answer the
    // markers, A starts a snapshot, D's tab is closed.
    let d = browser.tabs()[3].clone();
    let d_view = browser.state(&d).await?.expect("D runs");
    browser
        .call(
            &d,
            "(setTimeout(() => { const t = Date.now(); while (Date.now() - t < 20000) {} }, 50), true)",
        )
        .await?
        .map_err(anyhow::Error::msg)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    browser
        .call(
            &a,
            "(window.__snapshot = window.tabmesh.snapshot().then(s => s, e => ({error: String(e)})), true)",
        )
        .await?
        .map_err(anyhow::Error::msg)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    browser.close_tab(&d).await?;
    let cut_short = wait_until("A's snapshot ends", PATIENCE, || async {
        let v = browser.call(&a, "window.__snapshot").await?;
        Ok(v.map_err(|e| format!("not yet: {e}")))
    })
    .await?;
    assert_eq!(cut_short["complete"], Value::Bool(false), "{cut_short}");
    let missing = cut_short["missing"].to_string();
    assert!(missing.contains(&d_view.name), "{missing}");
    println!("snapshot with D closed: missing {missing}");

    node.stop()?;
    browser.quit().await?;
    relay.stop()?;
    Ok(())
}
