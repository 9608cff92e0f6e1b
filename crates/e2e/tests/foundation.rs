//! Foundation end to end: real relay process, real native node, four headless Chromium tabs.
//!
//! Every tab must list the other three (and the native node) with a measured RTT, both in
//! `window.tabmesh.state()` and on the visible page; a hidden tab must render nothing and catch
//! up once visible, and a panel with nothing new to show must not render again; after the relay
//! restarts, every tab must show that it lost the relay and then reconnect by itself. Also: the
//! Event log a tab keeps and copies, and the app sent gzipped or as it is.

use std::collections::BTreeSet;
use std::time::Duration;

use tabmesh_core::peers::PeerKind;
use tabmesh_e2e::{
    Browser, BrowserOptions, NativeNode, NodeView, Relay, RelayOptions, run_dir, wait_until,
};

const PATIENCE: Duration = Duration::from_secs(90);

/// How long the page may take to draw what the node's view already holds.
const PAGE: Duration = Duration::from_secs(10);

/// Checks that every tab's view lists exactly `expected` minus itself, each with an RTT.
fn check_mesh(views: &[NodeView], expected: &BTreeSet<String>) -> Result<(), String> {
    for view in views {
        let want: BTreeSet<_> = expected
            .iter()
            .filter(|id| **id != view.peer_id)
            .cloned()
            .collect();
        let have: BTreeSet<_> = view.peers.iter().map(|p| p.peer_id.clone()).collect();
        if !want.is_subset(&have) {
            return Err(format!(
                "{} lists {} of {} peers",
                view.name,
                have.intersection(&want).count(),
                want.len()
            ));
        }
        if let Some(p) = view
            .peers
            .iter()
            .find(|p| want.contains(&p.peer_id) && p.rtt_ms.is_none())
        {
            return Err(format!("{} has no RTT for {} yet", view.name, p.name));
        }
        if !view.relay.link.connected || !view.relay.link.reservation {
            return Err(format!(
                "{} relay state is {}",
                view.name, view.relay.link.state
            ));
        }
    }
    Ok(())
}

async fn all_views(browser: &Browser) -> anyhow::Result<Result<Vec<NodeView>, String>> {
    let mut views = Vec::new();
    for tab in browser.tabs() {
        match browser.state(tab).await? {
            Some(view) => views.push(view),
            None => return Ok(Err("a tab has not published its state yet".into())),
        }
    }
    Ok(Ok(views))
}

/// A script that makes the page hidden or visible, as the browser does for a background tab.
fn set_hidden(hidden: bool) -> String {
    format!(
        "(Object.defineProperty(document, 'hidden', {{ configurable: true, get: () => {hidden} }}), \
         document.dispatchEvent(new Event('visibilitychange')), null)"
    )
}

/// The `now_ms` of the view the page shows (the app's `data-view-ms`).
async fn shown_view_ms(browser: &Browser, tab: &tabmesh_e2e::Tab) -> anyhow::Result<u64> {
    let value = browser
        .call(tab, "document.querySelector('.app').dataset.viewMs")
        .await?
        .map_err(anyhow::Error::msg)?;
    value
        .as_str()
        .and_then(|ms| ms.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("the page shows no view ({value})"))
}

/// How often each part of the page has rendered (`window.tabmesh.renders()`).
async fn renders(browser: &Browser, tab: &tabmesh_e2e::Tab) -> anyhow::Result<serde_json::Value> {
    browser
        .call(tab, "window.tabmesh.renders()")
        .await?
        .map_err(anyhow::Error::msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tabs_and_a_native_node_form_a_mesh_and_survive_a_relay_restart() -> anyhow::Result<()> {
    let dir = run_dir("foundation")?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let relay_id = relay.bootstrap().await?.peer_id;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    for _ in 0..4 {
        browser.open_tab(&relay.url()).await?;
    }

    // Four tabs, each with its own identity, all meeting through the relay.
    let views = wait_until("4 tabs have ids", PATIENCE, || all_views(&browser)).await?;
    let mut ids: BTreeSet<String> = views.iter().map(|v| v.peer_id.clone()).collect();
    assert_eq!(ids.len(), 4, "every tab has its own peer id");
    assert!(!ids.contains(&relay_id), "the relay is not listed as a tab");
    let views = wait_until("every tab lists the other 3 with an RTT", PATIENCE, || {
        let ids = ids.clone();
        let browser = &browser;
        async move {
            Ok(match all_views(browser).await? {
                Ok(views) => check_mesh(&views, &ids).map(|()| views),
                Err(e) => Err(e),
            })
        }
    })
    .await?;
    for view in &views {
        assert!(
            view.peers.iter().all(|p| p.peer_id != relay_id),
            "the relay is not a peer"
        );
        assert!(
            view.peers.iter().all(|p| p.kind == PeerKind::Tab),
            "{:?}",
            view.peers
        );
    }

    // The visible page says the same: each tab's Peers panel names the other three (read until
    // it does: the page draws a view a moment after the node has made it).
    for (tab, view) in browser.tabs().iter().zip(&views) {
        let others: Vec<&str> = views
            .iter()
            .filter(|v| v.peer_id != view.peer_id)
            .map(|v| v.name.as_str())
            .collect();
        let panel = wait_until("the Peers panel names the other 3", PAGE, || {
            let others = others.clone();
            let browser = &browser;
            async move {
                let panel = browser.text(tab, "[data-testid=peers-panel]").await?;
                Ok(match others.iter().find(|name| !panel.contains(**name)) {
                    Some(name) => Err(format!("{} panel lacks {name}:\n{panel}", view.name)),
                    None => Ok(panel),
                })
            }
        })
        .await?;
        // Relayed at first, direct once the tabs have moved to WebRTC (see tests/webrtc.rs).
        let kind = "[data-testid=peers-panel] td .badge.relayed, [data-testid=peers-panel] td \
                    .badge.direct";
        assert!(
            browser.exists(tab, kind).await?,
            "connection kind is shown:\n{panel}"
        );
        let header = wait_until("the header shows the relay connected", PAGE, || async {
            let header = browser.text(tab, "header").await?;
            Ok(if header.contains("relay connected") {
                Ok(header)
            } else {
                Err(header)
            })
        })
        .await?;
        assert!(header.contains(&view.name), "{header}");
        // The node starts once the page has loaded, before it can reserve anything; the relay
        // pill's tooltip says when, for a tab that is slow to join.
        let reserved = view.relay.reservation_at_ms.unwrap_or_default();
        assert!(
            view.started_at_ms > 0 && view.started_at_ms < reserved,
            "started at {} ms, reservation at {reserved} ms",
            view.started_at_ms
        );
        let title = browser
            .call(
                tab,
                "document.querySelector('[data-testid=relay-state]').title",
            )
            .await?
            .map_err(anyhow::Error::msg)?;
        let title = title.as_str().unwrap_or_default();
        assert!(
            title.starts_with("node started") && title.contains("relay reservation at"),
            "{title}"
        );
    }
    browser
        .screenshot(&browser.tabs()[0], &dir.join("mesh.png"))
        .await?;

    // A hidden page (a background tab, a minimised window) renders no views while its node
    // goes on, and shows the latest one as soon as it is visible again. The page is told the
    // way the browser tells a tab sent to the background: `document.hidden` and a
    // `visibilitychange` event.
    let tab = &browser.tabs()[0];
    browser
        .call(tab, &set_hidden(true))
        .await?
        .map_err(anyhow::Error::msg)?;
    // A view handed to the page just before it was hidden may still be rendering.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let shown = shown_view_ms(&browser, tab).await?;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let latest = browser.state(tab).await?.map(|v| v.now_ms).unwrap_or(0);
    assert_eq!(
        shown_view_ms(&browser, tab).await?,
        shown,
        "a hidden page renders no views"
    );
    assert!(
        latest >= shown + 1000,
        "the node went on meanwhile (views at {shown} and {latest} ms)"
    );
    browser
        .call(tab, &set_hidden(false))
        .await?
        .map_err(anyhow::Error::msg)?;
    wait_until(
        "the page shows the latest view once visible",
        PATIENCE,
        || async {
            let now = shown_view_ms(&browser, tab).await?;
            Ok(if now >= latest {
                Ok(())
            } else {
                Err(format!("the page shows the view at {now} ms"))
            })
        },
    )
    .await?;

    // A panel renders only when what it shows changed. Over a quiet 2 s (no peer coming,
    // going or changing how it is reached, no service offered or called), the header renders
    // with every view (its clock moves) while the Services panel does not, although every
    // view carries new "last heard" times for the peers it lists providers against. It also
    // renders when it re-reads the catalog (every 30 s), so a window that catches one is
    // tried again; rendering with every view never passes.
    let count = |r: &serde_json::Value, part: &str| r[part].as_u64().unwrap_or_default();
    wait_until("a quiet 2 s in which the Services panel does not render", PATIENCE, || async {
        let first = browser.state(tab).await?;
        let before = renders(&browser, tab).await?;
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let after = renders(&browser, tab).await?;
        let last = browser.state(tab).await?;
        let links = |v: &NodeView| {
            let links: Vec<_> = v.peers.iter().map(|p| (p.peer_id.clone(), p.connection)).collect();
            links
        };
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(Err("no state".to_owned()));
        };
        if links(&first) != links(&last) {
            return Ok(Err(format!("the peers changed meanwhile: {:?}", links(&last))));
        }
        if first.services != last.services {
            return Ok(Err(format!(
                "the services section changed meanwhile: {:?} then {:?}",
                first.services, last.services
            )));
        }
        let again = count(&after, "services") - count(&before, "services");
        Ok(if count(&after, "header") < count(&before, "header") + 2 {
            Err(format!("the header did not follow the views: {before} then {after}"))
        } else if again != 0 || count(&before, "services") == 0 {
            Err(format!("the Services panel rendered {again} times with nothing new: {before} then {after}"))
        } else {
            Ok(())
        })
    })
    .await?;

    // A native node joins and shows up everywhere.
    let node = NativeNode::start(&relay.url(), dir.join("node.log"))?;
    let node_view = wait_until("the native node reports its state", PATIENCE, || {
        let state = node.state();
        async move { Ok(state.ok_or_else(|| "no state yet".to_owned())) }
    })
    .await?;
    ids.insert(node_view.peer_id.clone());
    wait_until(
        "every tab lists the native node, and it lists every tab",
        PATIENCE,
        || {
            let ids = ids.clone();
            let browser = &browser;
            let node_state = node.state();
            async move {
                let mut views = match all_views(browser).await? {
                    Ok(views) => views,
                    Err(e) => return Ok(Err(e)),
                };
                views.extend(node_state);
                Ok(check_mesh(&views, &ids))
            }
        },
    )
    .await?;
    let tab_view = browser.state(&browser.tabs()[0]).await?.expect("state");
    let native = tab_view
        .peers
        .iter()
        .find(|p| p.peer_id == node_view.peer_id)
        .expect("listed");
    assert_eq!(native.kind, PeerKind::Native);

    // The relay restarts: tabs notice, say so, and come back by themselves.
    let options = relay.options().clone();
    let status = relay.stop()?;
    assert!(
        status.success(),
        "relay shut down gracefully on SIGTERM: {status}"
    );
    wait_until("every tab shows the relay as lost", PATIENCE, || {
        let browser = &browser;
        async move {
            for tab in browser.tabs() {
                let view = browser.state(tab).await?.expect("state");
                if view.relay.link.connected {
                    return Ok(Err(format!("{} still connected", view.name)));
                }
                if !browser.exists(tab, "[data-testid=relay-banner]").await? {
                    return Ok(Err(format!("{} shows no relay banner", view.name)));
                }
            }
            Ok(Ok(()))
        }
    })
    .await?;
    let lost = browser
        .text(&browser.tabs()[1], "[data-testid=relay-banner]")
        .await?;
    assert!(
        lost.contains("unreachable") || lost.contains("Connecting"),
        "{lost}"
    );
    browser
        .screenshot(&browser.tabs()[1], &dir.join("relay-lost.png"))
        .await?;

    let relay = Relay::start(options, dir.join("relay-restarted.log")).await?;
    assert_eq!(
        relay.bootstrap().await?.peer_id,
        relay_id,
        "the relay keeps its identity"
    );
    wait_until(
        "after the restart every tab and the node list all peers again",
        PATIENCE,
        || {
            let ids = ids.clone();
            let browser = &browser;
            let node_state = node.state();
            async move {
                let mut views = match all_views(browser).await? {
                    Ok(views) => views,
                    Err(e) => return Ok(Err(e)),
                };
                views.extend(node_state);
                Ok(check_mesh(&views, &ids))
            }
        },
    )
    .await?;
    browser
        .screenshot(&browser.tabs()[0], &dir.join("reconnected.png"))
        .await?;

    node.stop()?;
    browser.quit().await?;
    relay.stop()?;
    Ok(())
}

/// The wire events `wireLog()` returns, as `(seq, summary)`.
async fn wire_log(browser: &Browser, tab: &tabmesh_e2e::Tab) -> anyhow::Result<Vec<(u64, String)>> {
    let events = browser
        .call(tab, "window.tabmesh.wireLog()")
        .await?
        .map_err(anyhow::Error::msg)?;
    let events = events.as_array().cloned().unwrap_or_default();
    Ok(events
        .iter()
        .map(|e| {
            let seq = e["seq"].as_u64().unwrap_or_default();
            (seq, e["summary"].as_str().unwrap_or_default().to_owned())
        })
        .collect())
}

/// Waits until the tab has logged more than `n` wire events.
async fn logged_more_than(browser: &Browser, tab: &tabmesh_e2e::Tab, n: u64) -> anyhow::Result<()> {
    wait_until("the tab logs enough wire events", PATIENCE, || async move {
        Ok(match browser.state(tab).await? {
            Some(v) if v.counters.wire_events > n => Ok(()),
            Some(v) => Err(format!("{} wire events", v.counters.wire_events)),
            None => Err("no view yet".to_owned()),
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_keeps_as_many_wire_events_as_its_url_asks_and_copies_them_all() -> anyhow::Result<()>
{
    let dir = run_dir("wire-log")?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    // Pings to the relay every 0.1 s: a line each in the Event log.
    let url = |wire_log: &str| {
        format!(
            "{}/?search=off&libp2p_ping=0.1&wire_log={wire_log}",
            relay.url()
        )
    };
    // Big enough that nothing rolls over while the test runs (~30 events a second).
    let big = browser.open_tab(&url("4000")).await?;
    let small = browser.open_tab(&url("5")).await?;
    let bad = browser.open_tab(&url("lots")).await?;

    // A big log: the view carries the newest 50, wireLog() all of them from the first.
    logged_more_than(&browser, &big, 120).await?;
    let view = browser.state(&big).await?.expect("a view");
    assert_eq!(view.wire.len(), 50, "{:?}", view.wire.len());
    assert!(view.wire_kept > 120, "kept {}", view.wire_kept);
    let log = wire_log(&browser, &big).await?;
    assert!(log.len() > 120, "{} events", log.len());
    let seqs: Vec<u64> = log.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs[0], 1, "nothing dropped yet");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let newest_in_view = view.wire.last().expect("events").seq;
    assert!(*seqs.last().expect("events") >= newest_in_view);
    wait_until("the panel says how many it keeps", PAGE, || {
        let (browser, tab) = (&browser, &big);
        async move {
            let shown = browser.text(tab, "[data-testid=event-log] h2").await?;
            Ok(
                if shown.contains("newest 50 of") && shown.contains("kept") {
                    Ok(())
                } else {
                    Err(shown)
                },
            )
        }
    })
    .await?;
    // The copy button copies the whole log, not the 50 rows shown (the clipboard is caught).
    browser
        .call(
            &big,
            "Object.defineProperty(navigator.clipboard, 'writeText', { configurable: true, \
             value: t => { window.copied = t; return Promise.resolve(); } })",
        )
        .await?
        .map_err(anyhow::Error::msg)?;
    browser
        .click(&big, "[data-testid=event-log] button.copy")
        .await?;
    let copied = wait_until("the copy button copies", PAGE, || {
        let (browser, tab) = (&browser, &big);
        async move {
            Ok(match browser.call(tab, "window.copied").await? {
                Ok(serde_json::Value::String(text)) => Ok(text),
                other => Err(format!("{other:?}")),
            })
        }
    })
    .await?;
    let lines: Vec<&str> = copied.lines().collect();
    assert!(lines.len() >= log.len(), "{} lines copied", lines.len());
    assert!(lines[0].ends_with(&log[0].1), "{} / {}", lines[0], log[0].1);

    // A log of 5 keeps the newest 5.
    logged_more_than(&browser, &small, 20).await?;
    let log = wire_log(&browser, &small).await?;
    let seqs: Vec<u64> = log.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs.len(), 5, "{seqs:?}");
    assert!(
        seqs[0] > 15 && seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "{seqs:?}"
    );
    let view = browser.state(&small).await?.expect("a view");
    assert!(view.wire.len() <= 5 && view.wire_kept == 5, "{view:?}");

    // A value that is not a count is ignored: the default (500) applies.
    logged_more_than(&browser, &bad, 60).await?;
    let log = wire_log(&browser, &bad).await?;
    assert!(log.len() > 60 && log[0].0 == 1, "{} events", log.len());

    browser.quit().await?;
    Ok(())
}

/// A test that fails drops its browser without quitting it: the browser then keeps every tab
/// it had open (a screenshot, its view and its whole wire log) beside the test's other logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_tests_browser_keeps_what_each_tab_showed_and_logged() -> anyhow::Result<()> {
    let dir = run_dir("kept-tabs")?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    let url = format!("{}/?search=off", relay.url());
    for _ in 0..2 {
        browser.open_tab(&url).await?;
    }
    let mut names = Vec::new();
    for tab in browser.tabs() {
        logged_more_than(&browser, tab, 5).await?;
        names.push(browser.state(tab).await?.expect("a view").name);
    }
    // As when a wait fails and the test returns its error.
    drop(browser);

    let kept = dir.join("browser").join("tabs");
    for (i, name) in names.iter().enumerate() {
        let png = std::fs::read(kept.join(format!("tab-{i}.png")))?;
        assert!(png.starts_with(b"\x89PNG"), "tab {i}: not a PNG");
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(kept.join(format!("tab-{i}-state.json")))?)?;
        assert_eq!(state["name"], name.as_str(), "tab {i}");
        let log = std::fs::read_to_string(kept.join(format!("tab-{i}-wire.log")))?;
        let lines: Vec<&str> = log.lines().collect();
        assert!(lines.len() > 5, "tab {i}: {log}");
        assert!(
            lines[0].trim_start().starts_with("1 "),
            "tab {i} starts with its first event: {}",
            lines[0]
        );
        assert!(
            lines.iter().any(|l| l.contains("relay")),
            "tab {i} logged its relay: {log}"
        );
    }
    Ok(())
}

/// The app's module as the tab fetched it: bytes on the wire and bytes decoded (Resource Timing).
async fn module_transfer(browser: &Browser, tab: &tabmesh_e2e::Tab) -> anyhow::Result<(u64, u64)> {
    let entry = browser
        .call(
            tab,
            "performance.getEntriesByType('resource')\
               .filter(e => /\\/tabmesh_web[^/]*_bg\\.wasm$/.test(new URL(e.name).pathname))\
               .map(e => [e.encodedBodySize, e.decodedBodySize])",
        )
        .await?
        .map_err(anyhow::Error::msg)?;
    let sizes: Vec<(u64, u64)> = serde_json::from_value(entry)?;
    match sizes.as_slice() {
        [sizes] => Ok(*sizes),
        other => anyhow::bail!("the module fetched {} times: {other:?}", other.len()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_runs_the_app_sent_gzipped_and_gets_it_as_it_is_on_loopback() -> anyhow::Result<()> {
    let dir = run_dir("gzip")?;
    // As the relay serves a browser on another machine (here every client is on loopback).
    let mut options = RelayOptions::new(&dir.join("always"))?;
    options.extra_args = vec!["--gzip".into(), "always".into()];
    let gzipped = Relay::start(options, dir.join("relay-always.log")).await?;
    // The default: loopback clients get the files as they are.
    let plain = Relay::start(
        RelayOptions::new(&dir.join("auto"))?,
        dir.join("relay-auto.log"),
    )
    .await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    for (relay, compressed) in [(&gzipped, true), (&plain, false)] {
        let tab = browser
            .open_tab(&format!("{}/?search=off", relay.url()))
            .await?;
        wait_until("the app runs", PATIENCE, || {
            let (browser, tab) = (&browser, &tab);
            async move {
                // A view: the module was fetched, compiled and runs.
                Ok(match browser.state(tab).await? {
                    Some(_) => Ok(()),
                    None => Err("no view yet".to_owned()),
                })
            }
        })
        .await?;
        let (on_wire, decoded) = module_transfer(&browser, &tab).await?;
        if compressed {
            assert!(on_wire < decoded / 2, "{on_wire} bytes sent for {decoded}");
        } else {
            assert_eq!(on_wire, decoded, "sent as it is");
        }
    }
    browser.quit().await?;
    Ok(())
}
