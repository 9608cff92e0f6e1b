//! Where a tab's Lucas-Lehmer search runs, in headless Chromium: in the tab's Web Worker at a
//! gentle pace by default, at full speed when the GIMPS panel's switch says so; not before the
//! tab has settled into the group; with the search off, no worker until a test asks for one; and, when the worker cannot be loaded, on the page,
//! with the reason shown.

use std::time::Duration;

use tabmesh_core::gimps::lucas_lehmer::is_mersenne_prime;
use tabmesh_core::gimps::pace::{SearchPace, SearchPlace};
use tabmesh_e2e::{
    Browser, BrowserOptions, NodeView, Relay, RelayOptions, Tab, copy_dir, run_dir, wait_until,
    web_dir,
};

const PATIENCE: Duration = Duration::from_secs(60);
/// Search rounds every second, so that tests complete while we watch.
const QUERY: &str = "?search_interval=1";

/// The tab's view once it has completed at least `tests` Lucas-Lehmer tests.
async fn after_tests(browser: &Browser, tab: &Tab, tests: u64) -> anyhow::Result<NodeView> {
    wait_until(
        "the tab's search completes tests",
        PATIENCE,
        || async move {
            Ok(match browser.state(tab).await? {
                Some(v) if v.gimps.as_ref().is_some_and(|g| g.tested_total >= tests) => Ok(v),
                Some(v) => Err(format!(
                    "search: {:?}",
                    v.gimps.map(|g| (g.tested_total, g.search))
                )),
                None => Err("no view yet".to_owned()),
            })
        },
    )
    .await
}

/// The tab's first view that has its GIMPS section.
async fn with_gimps(browser: &Browser, tab: &Tab) -> anyhow::Result<NodeView> {
    wait_until("the tab shows its view", PATIENCE, || async move {
        Ok(match browser.state(tab).await? {
            Some(v) if v.gimps.is_some() => Ok(v),
            _ => Err("no GIMPS view yet".to_owned()),
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_searches_in_its_worker_gently_and_at_full_speed_when_switched() -> anyhow::Result<()>
{
    let dir = run_dir("search-worker")?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    let tab = browser
        .open_tab(&format!("{}/{QUERY}", relay.url()))
        .await?;

    let view = after_tests(&browser, &tab, 20).await?;
    let search = view.gimps.expect("gimps").search;
    assert_eq!(search.place, SearchPlace::Worker, "{search:?}");
    assert_eq!(search.pace_per_mille, SearchPace::GENTLE.as_per_mille());
    let shown = browser.text(&tab, "[data-testid=search-place]").await?;
    assert!(
        shown.contains("Web Worker") && shown.contains("10% of a core"),
        "{shown}"
    );

    browser.click(&tab, "[data-testid=full-speed]").await?;
    wait_until("the search goes full speed", PATIENCE, || {
        let (browser, tab) = (&browser, &tab);
        async move {
            let view = browser.state(tab).await?;
            Ok(match view.and_then(|v| v.gimps) {
                Some(g) if g.search.pace_per_mille == SearchPace::FULL.as_per_mille() => Ok(()),
                other => Err(format!("{:?}", other.map(|g| g.search))),
            })
        }
    })
    .await?;
    let shown = browser.text(&tab, "[data-testid=search-place]").await?;
    assert!(shown.contains("full speed"), "{shown}");
    // Still searching, still in the worker.
    let before = view_tests(&browser, &tab).await?;
    let view = after_tests(&browser, &tab, before + 10).await?;
    assert_eq!(view.gimps.expect("gimps").search.place, SearchPlace::Worker);

    // From p = 2000 the worker squares by FFT: its verdicts are the known ones, primes and not.
    for (p, prime) in [
        (2203u32, true),
        (2207, false),
        (3217, true),
        (4253, true),
        (4261, false),
    ] {
        assert_eq!(is_mersenne_prime(p), prime, "native, p = {p}");
        let reply = browser
            .call(&tab, &format!("window.tabmesh.benchSearch({p})"))
            .await?
            .map_err(anyhow::Error::msg)?;
        assert_eq!(
            reply["prime"].as_bool(),
            Some(prime),
            "worker, p = {p}: {reply}"
        );
    }

    browser.screenshot(&tab, &dir.join("search.png")).await?;
    browser.quit().await?;
    Ok(())
}

async fn view_tests(browser: &Browser, tab: &Tab) -> anyhow::Result<u64> {
    Ok(browser
        .state(tab)
        .await?
        .and_then(|v| v.gimps)
        .map_or(0, |g| g.tested_total))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tab_settles_into_the_group_before_its_first_test_and_loads_no_worker_meanwhile()
-> anyhow::Result<()> {
    let dir = run_dir("search-settle")?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    // Alone, the tab's first round starts 8 s after it starts: long enough to watch it settle
    // (its view comes well within a second).
    let tab = browser
        .open_tab(&format!("{}/?search_settle=8", relay.url()))
        .await?;
    let gimps = with_gimps(&browser, &tab).await?.gimps.expect("gimps");
    assert!(gimps.state.settling, "{gimps:?}");
    assert_eq!(gimps.config.settle_ms, 8_000);
    assert_eq!((gimps.tested_total, gimps.state.testing), (0, None));
    assert_eq!(
        gimps.search.place,
        SearchPlace::Idle,
        "no worker while settling"
    );
    let search = browser.text(&tab, "[data-testid=search]").await?;
    assert!(
        search.contains("settling in") && search.contains("8.0 s"),
        "{search}"
    );

    let view = after_tests(&browser, &tab, 1).await?;
    let gimps = view.gimps.expect("gimps");
    assert!(!gimps.state.settling, "{gimps:?}");
    assert_eq!(
        gimps.search.place,
        SearchPlace::Worker,
        "{:?}",
        gimps.search
    );
    let search = browser.text(&tab, "[data-testid=search]").await?;
    assert!(!search.contains("settling"), "{search}");
    browser.quit().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_search_off_a_tab_loads_no_worker_until_a_test_needs_one() -> anyhow::Result<()> {
    let dir = run_dir("search-off")?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    let tab = browser
        .open_tab(&format!("{}/?search=off&search_interval=1", relay.url()))
        .await?;

    // Rounds come every second; with the search off none of them tests, so no worker loads.
    let view = with_gimps(&browser, &tab).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let gimps = browser.state(&tab).await?.and_then(|v| v.gimps);
    let gimps = gimps.expect("gimps");
    assert_eq!(gimps.tested_total, 0, "{view:?}");
    assert!(!gimps.state.search_on);
    assert_eq!(gimps.search.place, SearchPlace::Idle, "{:?}", gimps.search);
    let shown = browser.text(&tab, "[data-testid=search-place]").await?;
    assert!(
        shown.contains("the search is off") && !shown.contains("starting"),
        "{shown}"
    );
    let search = browser.text(&tab, "[data-testid=search]").await?;
    assert!(search.starts_with("off"), "{search}");
    // Said once, in words: not also as a raw field among the panel's extra ones.
    let panel = browser.text(&tab, "[data-testid=gimps-state]").await?;
    assert!(!panel.contains("search_on"), "{panel}");

    // A test, here the benchmark's, loads it.
    let reply = browser
        .call(&tab, "window.tabmesh.benchSearch(127)")
        .await?
        .map_err(anyhow::Error::msg)?;
    assert_eq!(reply["prime"].as_bool(), Some(true), "{reply}");
    wait_until("the panel says the worker runs", PATIENCE, || {
        let (browser, tab) = (&browser, &tab);
        async move {
            let shown = browser.text(tab, "[data-testid=search-place]").await?;
            Ok(if shown.contains("Web Worker") {
                Ok(())
            } else {
                Err(shown)
            })
        }
    })
    .await?;
    browser.quit().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_worker_a_tab_searches_on_the_page_and_says_why() -> anyhow::Result<()> {
    let dir = run_dir("search-no-worker")?;
    // The web app without the worker, as a server that does not serve `search/` would have it.
    let web = dir.join("web");
    copy_dir(&web_dir(), &web)?;
    std::fs::remove_dir_all(web.join("search"))?;
    let mut options = RelayOptions::new(&dir)?;
    options.web_dir = web;
    let relay = Relay::start(options, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    let tab = browser
        .open_tab(&format!("{}/{QUERY}", relay.url()))
        .await?;

    let view = after_tests(&browser, &tab, 20).await?;
    let search = view.gimps.expect("gimps").search;
    match &search.place {
        SearchPlace::Page(reason) => assert!(reason.contains("search worker"), "{reason}"),
        other => panic!("expected the search on the page, got {other:?}"),
    }
    let shown = browser.text(&tab, "[data-testid=search-place]").await?;
    assert!(shown.contains("on the page"), "{shown}");
    browser.quit().await?;
    Ok(())
}
