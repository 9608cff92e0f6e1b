//! The DHT end to end, in real browsers and real processes.
//!
//! - Four tabs and a native node: a record put with tab A's form is found by tab D's form, by
//!   `window.tabmesh.get` and by the node's `get`; it is still found after tab A closes, after
//!   the relay restarts, and a reloaded tab has its records back from sessionStorage. Oversized
//!   input is refused with the reason on the page and in the Promise.
//! - Native nodes only: what the relay stored survives its restart (redb), found by a peer that
//!   joins after every peer that stored it has left; and more peers than a lookup's reply can
//!   name (26: each has 25 others, a reply names 20) still all meet.

use std::time::Duration;

use serde_json::Value;
use tabmesh_e2e::{
    Browser, BrowserOptions, NativeNode, NodeView, Relay, RelayOptions, Tab, run_dir, wait_until,
};

const PATIENCE: Duration = Duration::from_secs(90);

/// Peers (relay excluded) in a view's DHT routing table.
fn routing_peers(view: &NodeView) -> usize {
    let relay = view.relay.peer_id.clone().unwrap_or_default();
    view.dht.as_ref().map_or(0, |d| {
        d.routing_table
            .iter()
            .flat_map(|b| &b.peers)
            .filter(|p| p.peer_id != relay)
            .count()
    })
}

/// `window.tabmesh.get(key)` in `tab`: the value found, if any.
async fn js_get(browser: &Browser, tab: &Tab, key: &str) -> anyhow::Result<Option<String>> {
    let reply = browser
        .call(tab, &format!("window.tabmesh.get({key:?})"))
        .await?
        .map_err(|e| anyhow::anyhow!("get {key}: {e}"))?;
    Ok(reply["record"]["value"].as_str().map(str::to_owned))
}

/// Waits until `get` from `tab` finds `value` under `key`.
async fn found_in(
    browser: &Browser,
    tab: &Tab,
    key: &str,
    value: &str,
    what: &str,
) -> anyhow::Result<()> {
    wait_until(what, PATIENCE, || async move {
        Ok(match js_get(browser, tab, key).await {
            Ok(Some(v)) if v == value => Ok(()),
            Ok(other) => Err(format!("got {other:?}")),
            Err(e) => Err(e.to_string()),
        })
    })
    .await
}

/// Fills tab's DHT form (key, and value when given) and clicks `button` (e.g. `dht-put`).
async fn submit(
    browser: &Browser,
    tab: &Tab,
    key: &str,
    value: Option<&str>,
    button: &str,
) -> anyhow::Result<()> {
    browser.type_into(tab, "[data-testid=dht-key]", key).await?;
    if let Some(value) = value {
        browser
            .type_into(tab, "[data-testid=dht-value]", value)
            .await?;
    }
    browser.click(tab, &format!("[data-testid={button}]")).await
}

/// Waits until `ready` (a CSS selector) is on `tab`'s page, then returns the text of `shown`.
async fn shown(
    browser: &Browser,
    tab: &Tab,
    what: &str,
    ready: &str,
    shown: &str,
) -> anyhow::Result<String> {
    wait_until(what, PATIENCE, || async move {
        if !browser.exists(tab, ready).await? {
            // What the page shows instead, so that a failure says it.
            let instead = if browser.exists(tab, shown).await? {
                browser.text(tab, shown).await?
            } else {
                "nothing".to_owned()
            };
            return Ok(Err(format!(
                "{ready} not on the page yet; {shown} shows: {instead}"
            )));
        }
        Ok(Ok(browser.text(tab, shown).await?))
    })
    .await
}

/// Waits for the native node's latest DHT answer.
async fn answer(node: &NativeNode, what: &str) -> anyhow::Result<Value> {
    wait_until(what, PATIENCE, || async move {
        Ok(node
            .dht_replies()
            .last()
            .cloned()
            .ok_or_else(|| "no answer yet".to_owned()))
    })
    .await
}

/// Scrolls `tab` to its DHT panel (for the screenshots a person looks at).
async fn show_dht_panel(browser: &Browser, tab: &Tab) -> anyhow::Result<()> {
    browser
        .call(
            tab,
            "document.querySelector('[data-testid=dht-panel]').scrollIntoView()",
        )
        .await?
        .map_err(|e| anyhow::anyhow!("no DHT panel: {e}"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_put_in_one_tab_are_found_everywhere_and_survive_closing_restart_and_reload()
-> anyhow::Result<()> {
    let dir = run_dir("dht")?;
    let options = RelayOptions::new(&dir)?;
    let relay = Relay::start(options.clone(), dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    for _ in 0..4 {
        browser.open_tab(&relay.url()).await?;
    }
    let tabs: Vec<Tab> = browser.tabs().to_vec();
    let (a, b, c, d) = (&tabs[0], &tabs[1], &tabs[2], &tabs[3]);
    let node = NativeNode::start(&relay.url(), dir.join("node.log"))?;

    // Everyone has the four others in its routing table.
    wait_until(
        "every peer has the 4 others in its DHT routing table",
        PATIENCE,
        || {
            let browser = &browser;
            let node = &node;
            async move {
                let mut sizes = Vec::new();
                for tab in browser.tabs() {
                    sizes.push(browser.state(tab).await?.map_or(0, |v| routing_peers(&v)));
                }
                sizes.push(node.state().map_or(0, |v| routing_peers(&v)));
                Ok(if sizes.iter().all(|n| *n >= 4) {
                    Ok(())
                } else {
                    Err(format!("routing table sizes {sizes:?}"))
                })
            }
        },
    )
    .await?;

    // Put with tab A's form.
    submit(&browser, a, "color", Some("ultramarine"), "dht-put").await?;
    let put = shown(
        &browser,
        a,
        "tab A's put succeeds",
        "[data-testid=dht-result][data-status=ok]",
        "[data-testid=dht-result]",
    )
    .await?;
    assert!(put.contains("stored"), "put result: {put}");
    browser.screenshot(a, &dir.join("tab-a-put.png")).await?;

    // Get with tab D's form.
    submit(&browser, d, "color", None, "dht-get").await?;
    let found = shown(
        &browser,
        d,
        "tab D's get shows the value",
        "[data-testid=dht-found-value]",
        "[data-testid=dht-found-value]",
    )
    .await?;
    assert_eq!(found.trim(), "ultramarine");
    // The lookup path is drawn (with the next state view, every 500 ms).
    shown(
        &browser,
        d,
        "tab D draws the lookup path",
        "[data-testid=dht-hop]",
        "[data-testid=dht-lookup]",
    )
    .await?;
    show_dht_panel(&browser, d).await?;
    browser.screenshot(d, &dir.join("tab-d-get.png")).await?;

    // The native node finds it too.
    node.send("get color")?;
    let reply = answer(&node, "the native node's get answers").await?;
    assert_eq!(
        reply["dht"]["record"]["value"],
        Value::from("ultramarine"),
        "{reply}"
    );

    // Bad input is refused with the reason, on the page and in the Promise.
    let big = "x".repeat(5000);
    let refused = browser
        .call(b, &format!("window.tabmesh.put('big', {big:?})"))
        .await?;
    assert!(
        matches!(&refused, Err(e) if e.contains("5000 bytes")),
        "{refused:?}"
    );
    submit(&browser, b, "color", Some("crimson"), "dht-put").await?;
    let error = shown(
        &browser,
        b,
        "tab B is told the key is not its own",
        "[data-testid=dht-result][data-status=error]",
        "[data-testid=dht-result]",
    )
    .await?;
    assert!(error.contains("held by"), "{error}");

    // Tab A closes: C still finds its record.
    browser.close_tab(a).await?;
    found_in(
        &browser,
        c,
        "color",
        "ultramarine",
        "tab C finds the record after tab A closed",
    )
    .await?;

    // The relay restarts: once the tabs are back, B finds it.
    relay.stop()?;
    let relay = Relay::start(options, dir.join("relay-restarted.log")).await?;
    wait_until("tabs hold a reservation again", PATIENCE, || {
        let browser = &browser;
        async move {
            for tab in browser.tabs() {
                match browser.state(tab).await? {
                    Some(v) if v.relay.link.reservation => {}
                    _ => return Ok(Err("a tab has no reservation yet".to_owned())),
                }
            }
            Ok(Ok(()))
        }
    })
    .await?;
    found_in(
        &browser,
        b,
        "color",
        "ultramarine",
        "tab B finds the record after the relay restarted",
    )
    .await?;

    // A reloaded tab has its records back from sessionStorage at once.
    browser.reload(c).await?;
    let restored = wait_until(
        "the reloaded tab restored its records",
        PATIENCE,
        || async {
            Ok(match browser.state(c).await? {
                Some(v) => match &v.dht {
                    Some(dht) if dht.counters.restored >= 1 => Ok(dht.records.clone()),
                    Some(dht) => Err(format!("restored {}", dht.counters.restored)),
                    None => Err("no dht state yet".to_owned()),
                },
                None => Err("no state yet".to_owned()),
            })
        },
    )
    .await?;
    assert!(
        restored
            .iter()
            .any(|r| r.key == "color" && r.value.as_deref() == Some("ultramarine")),
        "{restored:?}"
    );
    browser
        .screenshot(c, &dir.join("tab-c-reloaded.png"))
        .await?;

    node.stop()?;
    browser.quit().await?;
    relay.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_keeps_its_records_across_a_restart() -> anyhow::Result<()> {
    let dir = run_dir("dht-relay-persistence")?;
    let options = RelayOptions::new(&dir)?;
    let relay = Relay::start(options.clone(), dir.join("relay.log")).await?;
    let writer = NativeNode::start(&relay.url(), dir.join("writer.log"))?;
    wait_until(
        "the writer has the relay in its routing table",
        PATIENCE,
        || {
            let writer = &writer;
            async move {
                Ok(match writer.state() {
                    Some(v) if v.dht.as_ref().is_some_and(|d| d.routing_table_size >= 1) => Ok(()),
                    _ => Err("empty routing table".to_owned()),
                })
            }
        },
    )
    .await?;
    writer.send("put --ttl 600 motto persistence pays")?;
    let reply = answer(&writer, "the put answers").await?;
    assert!(reply["dht"]["stored_at"].as_u64() >= Some(1), "{reply}");
    writer.stop()?;

    // Nobody but the relay holds the record now; restart it.
    relay.stop()?;
    let relay = Relay::start(options, dir.join("relay-restarted.log")).await?;
    let reader = NativeNode::start(&relay.url(), dir.join("reader.log"))?;
    // Ask until the reader has joined and found it; one question at a time.
    let asked = std::sync::atomic::AtomicUsize::new(0);
    let value = wait_until(
        "a new peer finds the record at the restarted relay",
        PATIENCE,
        || {
            let reader = &reader;
            let asked = &asked;
            async move {
                let replies = reader.dht_replies();
                if let Some(Value::String(v)) =
                    replies.last().map(|r| r["dht"]["record"]["value"].clone())
                {
                    return Ok(Ok(v));
                }
                let routed = reader
                    .state()
                    .and_then(|v| v.dht)
                    .is_some_and(|d| d.routing_table_size >= 1);
                if routed && replies.len() == asked.load(std::sync::atomic::Ordering::Relaxed) {
                    reader.send("get motto")?;
                    asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(Err(format!(
                    "{} answer(s) without the value",
                    replies.len()
                )))
            }
        },
    )
    .await?;
    assert_eq!(value, "persistence pays");
    reader.stop()?;
    relay.stop()?;
    Ok(())
}

/// Peers joining together, more than a lookup's reply names (Kademlia's k, 20): each of 26
/// native peers has 25 others, and every one lists every other within a minute (today in ~4 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_peers_than_a_lookup_reply_names_all_meet() -> anyhow::Result<()> {
    const PEERS: usize = 26;
    let dir = run_dir("dht-many-peers")?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let url = relay.url();
    let nodes = (0..PEERS)
        .map(|i| {
            NativeNode::start_with(
                &tabmesh_e2e::bin_path("tabmesh-node"),
                &url,
                &["--no-search"],
                dir.join(format!("node-{i}.log")),
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    wait_until(
        "every peer lists the 25 others",
        Duration::from_secs(60),
        || {
            let nodes = &nodes;
            async move {
                let counts: Vec<usize> = nodes
                    .iter()
                    .map(|n| n.state().map_or(0, |v| v.peers.len()))
                    .collect();
                Ok(if counts.iter().all(|&c| c >= PEERS - 1) {
                    Ok(())
                } else {
                    Err(format!("peers listed by each: {counts:?}"))
                })
            }
        },
    )
    .await?;
    Ok(())
}
