//! Snapshot figures.
//!
//! - In simulation ([`tabmesh_core::snapshot::sim`], run by [`simulated`]): 10, 100 and 1000
//!   peers, each with about 8 neighbours (and full meshes of 10 and 100), every peer sending a
//!   token transfer about every 10 ms on channels of 2 to 20 ms: the time until the initiator
//!   has every part, the markers and bytes one snapshot costs against the number of channels,
//!   and whether the assembled state is consistent.
//! - Across 8 tabs trading tokens (run by [`in_tabs`]): the time a snapshot takes, markers and
//!   bytes, and how often a naive snapshot taken in the same run is inconsistent.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use tabmesh_core::snapshot::sim::simulate;
use tabmesh_e2e::wait_until;

use super::summary;

/// The simulated figures (no network needed).
pub(super) fn simulated() {
    println!(
        "== snapshots in simulation (transfers every ~10 ms per peer, channels of 2-20 ms, seed 1) =="
    );
    println!(
        "{:>6} {:>9} {:>9} {:>8} {:>12} {:>12} {:>10} {:>10}  consistent",
        "peers",
        "degree",
        "channels",
        "markers",
        "marker bytes",
        "part bytes",
        "time (ms)",
        "in flight"
    );
    for (peers, degree) in [(10, 9), (10, 8), (100, 99), (100, 8), (1000, 8)] {
        let start = std::time::Instant::now();
        let r = simulate(peers, degree, 10, 1);
        let degree = if degree + 1 >= peers {
            "full".to_owned()
        } else {
            format!("~{degree}")
        };
        println!(
            "{:>6} {:>9} {:>9} {:>8} {:>12} {:>12} {:>10} {:>10}  {} ({:.1} s to simulate)",
            r.peers,
            degree,
            r.channels,
            r.markers,
            r.marker_bytes,
            r.part_bytes,
            r.duration_ms,
            r.in_flight,
            if r.complete && r.channels_consistent && r.tokens_conserved {
                "yes"
            } else {
                "NO"
            },
            start.elapsed().as_secs_f64()
        );
    }
    println!("(one marker per channel; a part grows with its peer's channels)");
}

/// Snapshots across 8 tabs trading tokens.
pub(super) async fn in_tabs() -> anyhow::Result<()> {
    println!("== snapshots across 8 tabs trading tokens ==");
    let (_, relay, browser) = super::eight_quiet_tabs("bench-snapshot").await?;
    wait_until(
        "8 tabs with a channel to every other",
        Duration::from_secs(180),
        || {
            let browser = &browser;
            async move {
                let mut ids = BTreeSet::new();
                let mut fewest = usize::MAX;
                for tab in browser.tabs() {
                    let Some(view) = browser.state(tab).await? else {
                        return Ok(Err("a tab has not started".to_owned()));
                    };
                    ids.insert(view.peer_id.clone());
                    fewest = fewest.min(view.snapshot.map_or(0, |s| s.channel_peers.len()));
                }
                Ok(if ids.len() == 8 && fewest == 7 {
                    Ok(())
                } else {
                    Err(format!("a tab has {fewest} channel peers"))
                })
            }
        },
    )
    .await?;
    let tabs = browser.tabs().to_vec();
    for tab in &tabs {
        browser
            .call(tab, "(window.tabmesh.tokenDemo(true), true)")
            .await?
            .map_err(anyhow::Error::msg)?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut durations, mut markers, mut bytes, mut consistent) = (vec![], vec![], vec![], 0);
    for i in 0..16 {
        let snapshot: Value = browser
            .call(&tabs[i % 8], "window.tabmesh.snapshot()")
            .await?
            .map_err(anyhow::Error::msg)?;
        durations.push(snapshot["duration_ms"].as_f64().unwrap_or(0.0));
        markers.push(snapshot["markers_sent"].as_f64().unwrap_or(0.0));
        bytes.push(snapshot["bytes_sent"].as_f64().unwrap_or(0.0));
        if snapshot["complete"] == true
            && snapshot["checks"]["tokens_conserved"] == true
            && snapshot["checks"]["channels_consistent"] == true
        {
            consistent += 1;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("snapshot time      {}", summary(durations));
    println!(
        "markers            {}   (56 channels)",
        super::summary_in(markers, "")
    );
    println!(
        "bytes (markers and parts) {}",
        super::summary_in(bytes, "B")
    );
    println!("complete and both checks hold: {consistent} of 16");
    let mut naive_bad = 0;
    for i in 0..16 {
        let naive: Value = browser
            .call(&tabs[i % 8], "window.tabmesh.naiveSnapshot()")
            .await?
            .map_err(anyhow::Error::msg)?;
        if naive["checks"]["tokens_conserved"] != true
            || naive["checks"]["channels_consistent"] != true
        {
            naive_bad += 1;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("naive snapshots inconsistent: {naive_bad} of 16");
    browser.quit().await?;
    relay.stop()?;
    Ok(())
}
