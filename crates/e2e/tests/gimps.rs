//! GIMPS gossip end to end: four tabs and a native node search, gossip and agree on the largest
//! Mersenne prime and its finder; a tab put to sleep (with its button) is evicted by the others
//! and comes back when woken.
//!
//! The tabs and the node run with shorter intervals than the defaults (given in the URL and on
//! the command line) so that the test takes seconds, not minutes; the rules are the same.

use std::collections::BTreeSet;
use std::time::Duration;

use tabmesh_e2e::{
    Browser, BrowserOptions, NativeNode, NodeView, Relay, RelayOptions, bin_path, gossip_peers,
    run_dir, wait_until,
};

const PATIENCE: Duration = Duration::from_secs(120);
const QUERY: &str = "?search_interval=2&stale_timeout=5&evict_interval=0.5&ping_interval=1";
const NODE_ARGS: &[&str] = &[
    "--search-interval",
    "2",
    "--stale-timeout",
    "5",
    "--evict-interval",
    "0.5",
    "--ping-interval",
    "1",
];

async fn all_views(
    browser: &Browser,
    node: &NativeNode,
) -> anyhow::Result<Result<Vec<NodeView>, String>> {
    let mut views = Vec::new();
    for tab in browser.tabs() {
        match browser.state(tab).await? {
            Some(v) if v.gimps.is_some() => views.push(v),
            _ => return Ok(Err("a tab has no gimps state yet".into())),
        }
    }
    match node.state() {
        Some(v) if v.gimps.is_some() => views.push(v),
        _ => return Ok(Err("the native node has no gimps state yet".into())),
    }
    Ok(Ok(views))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tabs_and_a_node_agree_on_the_largest_prime_and_evict_a_sleeping_tab() -> anyhow::Result<()>
{
    let dir = run_dir("gimps")?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    let url = format!("{}/{QUERY}", relay.url());
    for _ in 0..4 {
        browser.open_tab(&url).await?;
    }
    let node = NativeNode::start_with(
        &bin_path("tabmesh-node"),
        &relay.url(),
        NODE_ARGS,
        dir.join("node.log"),
    )?;

    // Everyone gossips with everyone and agrees on one largest prime and one finder.
    let agreed = wait_until(
        "all five agree on the largest prime (at least 2^107 - 1) and its finder",
        PATIENCE,
        || {
            let browser = &browser;
            let node = &node;
            async move {
                let views = match all_views(browser, node).await? {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(e)),
                };
                let all: BTreeSet<String> = views.iter().map(|v| v.peer_id.clone()).collect();
                for v in &views {
                    let mut want = all.clone();
                    want.remove(&v.peer_id);
                    if !want.is_subset(&gossip_peers(v)) {
                        return Ok(Err(format!(
                            "{} gossips with {} of 4",
                            v.name,
                            gossip_peers(v).intersection(&want).count()
                        )));
                    }
                }
                let claims: BTreeSet<(u32, String)> = views
                    .iter()
                    .map(|v| {
                        v.gimps
                            .as_ref()
                            .and_then(|g| g.state.biggest.clone())
                            .map_or((0, String::new()), |b| (b.exponent, b.originator))
                    })
                    .collect();
                match claims.iter().next() {
                    Some((p, finder)) if claims.len() == 1 && *p >= 107 => {
                        Ok(Ok((*p, finder.clone(), views)))
                    }
                    _ => Ok(Err(format!("claims: {claims:?}"))),
                }
            }
        },
    )
    .await?;
    let (exponent, finder, views) = agreed;
    assert!(
        views.iter().any(|v| v.peer_id == finder),
        "the finder is one of us"
    );
    let finder_view = views.iter().find(|v| v.peer_id == finder).expect("finder");
    assert!(
        finder_view
            .gimps
            .as_ref()
            .expect("gimps")
            .state
            .my_primes
            .contains(&exponent),
        "the finder lists it as its own"
    );
    // The page shows it as 2^p − 1.
    let shown = browser
        .text(&browser.tabs()[0], "[data-testid=biggest-prime]")
        .await?;
    assert!(shown.starts_with("2^") && shown.contains('−'), "{shown}");
    // Its known primes, largest first: when the tab first knew each and whose announcement
    // told it (its own find, or one of the others by name).
    let known = browser
        .text(&browser.tabs()[0], "[data-testid=known-primes]")
        .await?;
    let first = known.split("s ·").nth(1).unwrap_or_default();
    // The search goes on meanwhile, so the row may start with a prime found since the tabs
    // agreed: one at least as large, that the tab's state (read after the page) knows.
    let largest: u32 = known
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_default();
    let known_now = browser
        .state(&browser.tabs()[0])
        .await?
        .and_then(|v| v.gimps)
        .map(|g| g.state.known_primes)
        .unwrap_or_default();
    assert!(
        largest >= exponent && known_now.contains(&largest) && known.contains(" s · "),
        "agreed on {exponent}, the tab knows {known_now:?}, its row: {known}"
    );
    assert!(
        first.contains("found here") || views.iter().any(|v| first.contains(&v.name)),
        "the largest prime's source is this tab or a peer by name: {known}"
    );
    let search = browser
        .text(&browser.tabs()[0], "[data-testid=search]")
        .await?;
    assert!(search.contains("tested"), "{search}");
    browser
        .screenshot(&browser.tabs()[0], &dir.join("agreed.png"))
        .await?;

    // Sleep on tab 0 (its button): everyone else evicts it; Wake brings it back.
    let sleeper_tab = browser.tabs()[0].clone();
    let sleeper = browser.state(&sleeper_tab).await?.expect("state").peer_id;
    browser
        .click(&sleeper_tab, "[data-testid=sleep-wake]")
        .await?;
    wait_until("the tab says it is asleep", PATIENCE, || {
        let browser = &browser;
        let tab = sleeper_tab.clone();
        async move {
            let awake = browser
                .state(&tab)
                .await?
                .and_then(|v| v.gimps)
                .map(|g| g.state.awake);
            let shown = browser.text(&tab, "[data-testid=awake]").await?;
            Ok(if awake == Some(false) && shown == "asleep" {
                Ok(())
            } else {
                Err(format!("{awake:?} / {shown}"))
            })
        }
    })
    .await?;
    wait_until("the others evict the sleeping tab", PATIENCE, || {
        let browser = &browser;
        let node = &node;
        let sleeper = sleeper.clone();
        async move {
            let views = match all_views(browser, node).await? {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            };
            let still: Vec<&str> = views
                .iter()
                .filter(|v| v.peer_id != sleeper && gossip_peers(v).contains(&sleeper))
                .map(|v| v.name.as_str())
                .collect();
            Ok(if still.is_empty() {
                Ok(())
            } else {
                Err(format!("still listed by {still:?}"))
            })
        }
    })
    .await?;
    assert_eq!(
        browser.text(&sleeper_tab, "[data-testid=awake]").await?,
        "asleep"
    );
    browser
        .screenshot(&sleeper_tab, &dir.join("asleep.png"))
        .await?;

    browser
        .click(&sleeper_tab, "[data-testid=sleep-wake]")
        .await?;
    wait_until("the woken tab is back in every peer list", PATIENCE, || {
        let browser = &browser;
        let node = &node;
        let sleeper = sleeper.clone();
        async move {
            let views = match all_views(browser, node).await? {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            };
            let missing: Vec<&str> = views
                .iter()
                .filter(|v| v.peer_id != sleeper && !gossip_peers(v).contains(&sleeper))
                .map(|v| v.name.as_str())
                .collect();
            Ok(if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("not yet back for {missing:?}"))
            })
        }
    })
    .await?;

    // The cooperative switch takes effect and shows in the state.
    let coop_tab = browser.tabs()[1].clone();
    browser
        .click(&coop_tab, "[data-testid=cooperative]")
        .await?;
    wait_until("the tab switches to cooperative search", PATIENCE, || {
        let browser = &browser;
        let tab = coop_tab.clone();
        async move {
            let coop = browser
                .state(&tab)
                .await?
                .and_then(|v| v.gimps)
                .map(|g| g.state.cooperative);
            let search = browser.text(&tab, "[data-testid=search]").await?;
            Ok(if coop == Some(true) && search.starts_with("cooperative") {
                Ok(())
            } else {
                Err(format!("{coop:?} / {search}"))
            })
        }
    })
    .await?;

    node.stop()?;
    browser.quit().await?;
    relay.stop()?;
    Ok(())
}
