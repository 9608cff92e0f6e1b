//! Direct browser-to-browser WebRTC end to end: four tabs meet through the relay and end up with
//! all six pairs connected `direct` (each pair's relayed connection closed after the move);
//! then the relay is stopped and the tabs keep pinging and gossiping over their direct
//! connections: no tab evicts another, gossip keeps arriving, pings keep answering.

use std::collections::BTreeSet;
use std::time::Duration;

use tabmesh_core::peers::ConnectionKind;
use tabmesh_core::relay_link::LinkStatus;
use tabmesh_e2e::{
    Browser, BrowserOptions, NodeView, Relay, RelayOptions, gossip_peers, run_dir, wait_until,
};

const PATIENCE: Duration = Duration::from_secs(90);

/// How long the page may take to draw what the node's view already holds.
const PAGE: Duration = Duration::from_secs(10);
/// Short gossip intervals (the rules are the defaults'): a silent peer is evicted after 5 s.
const QUERY: &str = "?search_interval=2&stale_timeout=5&evict_interval=0.5&ping_interval=1";

async fn views(browser: &Browser) -> anyhow::Result<Vec<NodeView>> {
    let mut out = Vec::new();
    for tab in browser.tabs() {
        if let Some(view) = browser.state(tab).await? {
            out.push(view);
        }
    }
    Ok(out)
}

/// For every tab, the other tabs it reaches directly; `Err` says who is still missing.
fn direct_mesh(views: &[NodeView], tabs: usize) -> Result<(), String> {
    if views.len() < tabs {
        return Err(format!("{} of {tabs} tabs have a view", views.len()));
    }
    let all: BTreeSet<&str> = views.iter().map(|v| v.peer_id.as_str()).collect();
    for v in views {
        let direct: BTreeSet<&str> = v
            .peers
            .iter()
            .filter(|p| p.connection == ConnectionKind::Direct)
            .map(|p| p.peer_id.as_str())
            .collect();
        let missing: Vec<&&str> = all
            .iter()
            .filter(|p| **p != v.peer_id && !direct.contains(**p))
            .collect();
        if !missing.is_empty() {
            let states: Vec<String> = v
                .peers
                .iter()
                .map(|p| {
                    format!(
                        "{}: {:?} {:?}",
                        p.name,
                        p.connection,
                        p.upgrade.as_ref().map(|u| (&u.state, &u.last_error))
                    )
                })
                .collect();
            return Err(format!(
                "{} is not direct with {} peer(s): {states:?}",
                v.name,
                missing.len()
            ));
        }
    }
    Ok(())
}

fn gossip_received(view: &NodeView) -> u64 {
    view.gimps.as_ref().map_or(0, |g| g.state.counters.received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_tabs_go_direct_and_keep_talking_when_the_relay_stops() -> anyhow::Result<()> {
    let dir = run_dir("webrtc")?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    let url = format!("{}/{QUERY}", relay.url());
    for _ in 0..4 {
        browser.open_tab(&url).await?;
    }

    // All six pairs direct, and the relayed connections closed after the move.
    wait_until("all 6 pairs of 4 tabs connected direct", PATIENCE, || {
        let browser = &browser;
        async move { Ok(direct_mesh(&views(browser).await?, 4)) }
    })
    .await?;
    wait_until(
        "each pair on its direct connection only",
        Duration::from_secs(30),
        || {
            let browser = &browser;
            async move {
                let views = views(browser).await?;
                let extra: Vec<String> = views
                    .iter()
                    .flat_map(|v| v.peers.iter())
                    .filter(|p| p.connections != 1)
                    .map(|p| format!("{}: {} connections", p.name, p.connections))
                    .collect();
                Ok(if extra.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{extra:?}"))
                })
            }
        },
    )
    .await?;
    // The page shows it too (read until it does: the page draws a view a moment after the node
    // has made it).
    let first = &browser.tabs()[0];
    wait_until("the Peers panel shows every peer direct", PAGE, || async {
        let shown = browser.text(first, "[data-testid=peers-panel]").await?;
        let badge = browser
            .exists(first, "[data-connection=direct] .badge.direct")
            .await?;
        Ok(if !shown.contains("relayed") && badge {
            Ok(())
        } else {
            Err(shown)
        })
    })
    .await?;
    // The upgrade time is recorded on one side of each pair at least.
    let views_now = views(&browser).await?;
    let timed = views_now
        .iter()
        .flat_map(|v| v.peers.iter())
        .filter(|p| p.upgrade.as_ref().and_then(|u| u.upgrade_ms).is_some())
        .count();
    assert!(timed >= 6, "{timed} peer entries carry an upgrade time");
    // Each direct pair took one offer at least, counted by the tab that made it.
    let offers: u64 = views_now.iter().map(|v| v.counters.webrtc_offers).sum();
    assert!(offers >= 6, "{offers} offers for 6 direct pairs");
    // A tab that made offers says so on its Peers panel.
    let offering = views_now
        .iter()
        .position(|v| v.counters.webrtc_offers > 0)
        .expect("a tab made offers");
    // (Tabs that dialed each other at once say so on the same line.)
    let crossed = views_now[offering].counters.crossed_dials;
    let offering = &browser.tabs()[offering];
    wait_until("the Peers panel counts the offers", PAGE, || async {
        let line = "[data-testid=upgrade-costs]";
        if !browser.exists(offering, line).await? {
            return Ok(Err("no line yet".to_owned()));
        }
        let shown = browser.text(offering, line).await?;
        let crossings_said = match crossed {
            0 => !shown.contains("crossed"),
            1 => shown.starts_with("1 dial crossed · "),
            n => shown.starts_with(&format!("{n} dials crossed · ")),
        };
        Ok(
            if shown.contains("Going direct: ") && shown.contains("offer") && crossings_said {
                Ok(())
            } else {
                Err(shown)
            },
        )
    })
    .await?;
    browser.screenshot(first, &dir.join("direct.png")).await?;

    // The relay goes away. The tabs keep their direct connections and keep gossiping.
    relay.stop()?;
    let before = views(&browser).await?;
    let received_before: Vec<u64> = before.iter().map(gossip_received).collect();
    // Three stale timeouts: a peer that went silent would be evicted by now.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let after = views(&browser).await?;
    direct_mesh(&after, 4).map_err(|e| anyhow::anyhow!("after the relay stopped: {e}"))?;
    let all: BTreeSet<String> = after.iter().map(|v| v.peer_id.clone()).collect();
    for (v, before) in after.iter().zip(&received_before) {
        assert!(
            v.relay.link.state != LinkStatus::Reserved,
            "{} still thinks it holds a reservation",
            v.name
        );
        let mut others = all.clone();
        others.remove(&v.peer_id);
        assert!(
            others.is_subset(&gossip_peers(v)),
            "{} evicted someone: gossips with {:?}",
            v.name,
            gossip_peers(v)
        );
        assert!(
            gossip_received(v) > *before,
            "{} received no gossip since the relay stopped",
            v.name
        );
        for p in &v.peers {
            assert!(
                p.last_heard_ms_ago < 5_000,
                "{} last heard {} {} ms ago",
                v.name,
                p.name,
                p.last_heard_ms_ago
            );
            assert!(p.rtt_ms.is_some(), "{} has no RTT for {}", v.name, p.name);
        }
    }
    // The header and the banner say the relay is gone and what still works (read between
    // two retries: during one, they say it is connecting).
    wait_until(
        "the header and banner count 3 direct peers",
        Duration::from_secs(20),
        || {
            let browser = &browser;
            async move {
                let pill = browser.text(first, "[data-testid=relay-state]").await?;
                let banner = browser.text(first, "[data-testid=relay-banner]").await?;
                Ok(
                    if pill.contains("relay offline · 3 direct")
                        && banner.contains("The 3 peers connected directly stay connected")
                    {
                        Ok(())
                    } else {
                        Err(format!("header {pill:?}, banner {banner:?}"))
                    },
                )
            }
        },
    )
    .await?;
    browser
        .screenshot(first, &dir.join("relay-stopped.png"))
        .await?;
    browser.quit().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_tab_is_direct_with_the_others_again() -> anyhow::Result<()> {
    let dir = run_dir("webrtc-reload")?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    let url = format!("{}/?search=off", relay.url());
    for _ in 0..3 {
        browser.open_tab(&url).await?;
    }
    wait_until("all 3 pairs of 3 tabs connected direct", PATIENCE, || {
        let browser = &browser;
        async move { Ok(direct_mesh(&views(browser).await?, 3)) }
    })
    .await?;
    // A reload keeps the tab's peer id (its key is in sessionStorage), twice in a row.
    for round in 1..=2 {
        let reloaded = browser.tabs()[0].clone();
        let loaded_at = browser.time_origin(&reloaded).await?;
        browser.reload(&reloaded).await?;
        anyhow::ensure!(
            browser.time_origin(&reloaded).await? > loaded_at,
            "the page was not reloaded"
        );
        wait_until(
            &format!("all 3 tabs direct again after reload {round}"),
            PATIENCE,
            || {
                let browser = &browser;
                async move { Ok(direct_mesh(&views(browser).await?, 3)) }
            },
        )
        .await
        .map_err(|e| {
            e.context(format!(
                "see {} and the tabs' wire logs",
                dir.join("relay.log").display()
            ))
        })?;
    }
    browser.quit().await?;
    Ok(())
}
