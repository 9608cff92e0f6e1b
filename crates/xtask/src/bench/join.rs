//! Join time for 4 and 8 tabs (`cargo xtask bench --only join`).
//!
//! Opened one by one: per tab from its page load, to the app running (before any networking)
//! and to the relay reservation; and for the last tab, opened once the others have met and gone
//! direct, to all peers connected. Opened together (all loads at once): the same per tab plus
//! the first peer, the time from the start of the loads to every tab listing every other one,
//! the CPU Chromium and the relay spent meanwhile (by process type and thread), what each tab
//! sent and received by then (its wire log, by protocol, and its dials that crossed another
//! tab's) and how often each part of a tab's page rendered (read just after).

use std::time::Duration;

use tabmesh_e2e::{Browser, BrowserOptions, Relay, RelayOptions, run_dir, wait_until};

use super::{all_direct, all_listed, cpu, group_span, opened_at, summary, with_query};

/// `query`: URL settings every tab takes (without its `?`; empty: the defaults).
pub(super) async fn join_times(tabs: usize, runs: usize, query: &str) -> anyhow::Result<()> {
    // Opened one after the other (WebDriver waits for each page to load): per tab from its own
    // page load, and the last tab's time to all its peers.
    let mut started = Vec::new();
    let mut reservation = Vec::new();
    let mut all_peers = Vec::new();
    // Opened together (all loads start at the same moment): per tab, and for the whole group
    // from the start of the loads to the last tab listing every other one.
    let mut together_tab = Vec::new();
    let mut together_all = Vec::new();
    // Where a tab's time goes when opened together: its app running (the module downloaded,
    // compiled and rendered once), its reservation, its first peer.
    let mut together_started = Vec::new();
    let mut together_reserved = Vec::new();
    let mut together_first = Vec::new();
    // How often each part of a tab's page rendered until then (`window.tabmesh.renders()`).
    let mut together_renders = std::collections::BTreeMap::<String, Vec<f64>>::new();
    // What the tabs said on the wire until then, by protocol and direction (their wire logs),
    // summed over the tabs of all runs; and whether a log had dropped its oldest events (the
    // first is number 1).
    let mut together_said = std::collections::BTreeMap::<String, f64>::new();
    let mut together_said_tabs = 0;
    // Dials that crossed another tab's dial to it (each crossing counts on both sides).
    let mut together_crossed = 0;
    let mut together_said_partial = false;
    // Where the CPU went between the start of the loads and the last tab listing every other:
    // seconds by process type and thread, and the spans measured, summed over the runs.
    let mut together_cpu = std::collections::BTreeMap::<&str, f64>::new();
    let mut together_span = 0.0;
    let mut together_measured = 0;
    for run in 0..runs {
        for together in [false, true] {
            let mode = if together { "together" } else { "sequential" };
            let dir = run_dir(&format!("bench-join-{tabs}-{mode}-{run}"))?;
            let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
            let url = with_query(relay.url(), query);
            let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
            let mut sampler = None;
            if together {
                sampler = Some(cpu::CpuSampler::start(browser.driver_pid(), relay.pid()));
                browser.open_tabs_together(tabs, &url).await?;
            } else {
                // The last tab joins a mesh that is there and settled: the others list each
                // other and have gone direct before it opens.
                for _ in 0..tabs - 1 {
                    browser.open_tab(&url).await?;
                }
                if stays_relayed(query) {
                    all_listed(&browser, tabs - 1).await?;
                } else {
                    let settle = Duration::from_secs(120);
                    wait_until("the first tabs are direct", settle, || all_direct(&browser))
                        .await?;
                }
                browser.open_tab(&url).await?;
            }
            let views = all_listed(&browser, tabs).await?;
            if together {
                let mut loads = Vec::new();
                let mut listed = Vec::new();
                for (tab, view) in browser.tabs().iter().zip(&views) {
                    let origin = browser.time_origin(tab).await?;
                    let last = view.peers.iter().map(|p| p.connected_at_ms).max();
                    let last = last.unwrap_or_default() as f64;
                    together_tab.push(last);
                    together_crossed += view.counters.crossed_dials;
                    together_started.push(view.started_at_ms as f64);
                    together_reserved.extend(view.relay.reservation_at_ms.map(|ms| ms as f64));
                    together_first.extend(
                        view.peers
                            .iter()
                            .map(|p| p.connected_at_ms)
                            .min()
                            .map(|ms| ms as f64),
                    );
                    loads.push(origin);
                    listed.push(origin + last);
                }
                for tab in browser.tabs() {
                    let renders = browser.call(tab, "window.tabmesh.renders()").await?;
                    let renders = renders.map_err(|e| anyhow::anyhow!("renders(): {e}"))?;
                    for (part, n) in renders.as_object().into_iter().flatten() {
                        let n = n.as_f64().unwrap_or_default();
                        together_renders.entry(part.clone()).or_default().push(n);
                    }
                }
                let (first_load, last_listed) = group_span(&loads, &listed);
                // The logs are read after the listing: what came later is left out.
                for (tab, origin) in browser.tabs().iter().zip(&loads) {
                    let log = browser.call(tab, "window.tabmesh.wireLog()").await?;
                    let log = log.map_err(|e| anyhow::anyhow!("wireLog(): {e}"))?;
                    let events = log.as_array().cloned().unwrap_or_default();
                    together_said_partial |= events
                        .first()
                        .is_some_and(|e| e["seq"].as_u64().unwrap_or_default() > 1);
                    let by_then = events.iter().filter(|e| {
                        origin + e["at_ms"].as_f64().unwrap_or(f64::INFINITY) <= last_listed
                    });
                    for event in by_then {
                        let said = format!(
                            "{} {}",
                            event["protocol"].as_str().unwrap_or("?"),
                            event["direction"].as_str().unwrap_or("?")
                        );
                        *together_said.entry(said).or_default() += 1.0;
                    }
                    together_said_tabs += 1;
                }
                together_all.push(last_listed - first_load);
                let spent = sampler
                    .as_ref()
                    .and_then(|s| s.between(first_load, last_listed));
                if let Some((by_part, span)) = spent {
                    for (part, secs) in by_part {
                        *together_cpu.entry(part).or_default() += secs;
                    }
                    together_span += span;
                    together_measured += 1;
                }
            } else {
                for v in &views {
                    started.push(v.started_at_ms as f64);
                    reservation.extend(v.relay.reservation_at_ms.map(|ms| ms as f64));
                }
                // Only the last tab opened joins a mesh that is already there; an earlier
                // tab's last peer is one opened after it, so its time would count the openings.
                if let Some(newcomer) = views.last() {
                    all_peers.extend(
                        newcomer
                            .peers
                            .iter()
                            .map(|p| p.connected_at_ms)
                            .max()
                            .map(|ms| ms as f64),
                    );
                }
            }
            browser.quit().await?;
            relay.stop()?;
        }
    }
    println!(
        "== join time, {tabs} tabs, {runs} runs{} ==",
        opened_at(query)
    );
    println!("opened one by one, per tab from its page load:");
    println!("  to app running         {}", summary(started));
    println!("  to relay reservation   {}", summary(reservation));
    println!(
        "  last one, to all peers connected (joining the other {}) {}",
        tabs - 1,
        summary(all_peers)
    );
    println!("opened together (all pages loading at once):");
    println!("  per tab, app running   {}", summary(together_started));
    println!("  per tab, reservation   {}", summary(together_reserved));
    println!("  per tab, first peer    {}", summary(together_first));
    println!("  per tab, to all peers  {}", summary(together_tab));
    println!(
        "  from the loads to every tab listing every other {}",
        summary(together_all)
    );
    if together_measured > 0 {
        print_join_cpu(&together_cpu, together_span, together_measured);
    }
    if together_said_tabs > 0 {
        let mut said: Vec<(String, f64)> = together_said
            .into_iter()
            .filter(|(kind, _)| !kind.ends_with(" local"))
            .map(|(kind, n)| (kind, n / together_said_tabs as f64))
            .collect();
        said.sort_by(|a, b| b.1.total_cmp(&a.1));
        let said: Vec<String> = said
            .iter()
            .map(|(kind, n)| format!("{kind} {n:.0}"))
            .collect();
        println!(
            "  what a tab sent and received until every tab listed every other (wire log events, \
             mean per tab{}): {}; \
             dials that crossed another tab's {:.1}",
            if together_said_partial {
                "; some logs had dropped their oldest, so these are at least"
            } else {
                ""
            },
            said.join(", "),
            together_crossed as f64 / together_said_tabs as f64
        );
    }
    if !together_renders.is_empty() {
        let medians: Vec<String> = together_renders
            .into_iter()
            .map(|(part, mut n)| {
                n.sort_by(f64::total_cmp);
                format!("{part} {}", n[n.len() / 2])
            })
            .collect();
        println!(
            "  page renders per tab by the time they were read, median by part: {}",
            medians.join(", ")
        );
    }
    Ok(())
}

/// Whether `query` keeps the tabs on the relay (`direct=off`, as the web app reads it).
fn stays_relayed(query: &str) -> bool {
    query.split('&').any(|setting| {
        matches!(
            setting,
            "direct=0" | "direct=false" | "direct=off" | "direct=no"
        )
    })
}

/// What the machine's cores did while tabs opened together joined (mean per run): the CPU
/// seconds Chromium and the relay spent from the start of the loads until the last tab listed
/// every other one (to the sampler's 100 ms), against the seconds the cores had, by part
/// (`cpu::CpuSampler`).
fn print_join_cpu(by_part: &std::collections::BTreeMap<&str, f64>, span: f64, runs: usize) {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let runs_f = runs as f64;
    let total: f64 = by_part.values().sum::<f64>() / runs_f;
    let span = span / runs_f;
    let mut top: Vec<(&str, f64)> = by_part.iter().map(|(n, s)| (*n, s / runs_f)).collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    let top: Vec<String> = top
        .iter()
        .take(8)
        .map(|(name, secs)| format!("{name} {secs:.2}"))
        .collect();
    println!(
        "  CPU while they joined (mean of {runs}): {total:.1} s of the {:.1} s {cores} cores had \
         ({:.0}%); by part, s: {}",
        span * cores as f64,
        100.0 * total / (span * cores as f64).max(f64::EPSILON),
        top.join(", ")
    );
}

#[cfg(test)]
mod tests {
    use super::{stays_relayed, with_query};

    #[test]
    fn only_a_direct_setting_that_is_off_keeps_the_tabs_on_the_relay() {
        assert!(stays_relayed("direct=off"));
        assert!(stays_relayed("first_ping=0&direct=0"));
        assert!(!stays_relayed(""));
        assert!(!stays_relayed("direct=on&direct_settle=0"));
        assert!(!stays_relayed("indirect=off"));
    }

    #[test]
    fn the_query_joins_the_settings_a_url_already_has() {
        let relay = "http://127.0.0.1:9090";
        assert_eq!(with_query(relay.into(), ""), relay);
        assert_eq!(
            with_query(relay.into(), "direct=off"),
            format!("{relay}/?direct=off")
        );
        assert_eq!(
            with_query(format!("{relay}/?search=off"), "direct=off"),
            format!("{relay}/?search=off&direct=off")
        );
    }
}
