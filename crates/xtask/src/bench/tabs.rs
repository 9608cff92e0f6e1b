//! What a tab costs at idle, against its number of connections: 8, 16 and 24 tabs opened
//! together on this machine, not searching (`?search=off`). Once every tab holds a
//! reservation, and two minutes after the loads (joining and upgrades have mostly settled),
//! the figures: connections per tab and the share of them direct, when the mesh was full (from
//! the first page load to the last tab listing every other), the browser's CPU over 20 s
//! (all its processes) and the relay's, resident memory (the browser's processes together,
//! and each tab's renderer), and what the moves to direct connections cost all the tabs
//! together: WebRTC offers, duplicate direct connections closed (crossing offers), failed dials.

use std::time::{Duration, Instant};

use tabmesh_e2e::{Browser, BrowserOptions, Relay, RelayOptions, run_dir, wait_until};

use super::{cpu_seconds, group_span, rss_kb, stat_cpu_seconds};

/// How long CPU use is measured.
const WINDOW: Duration = Duration::from_secs(20);

/// How long after the loads the measurement starts.
const SETTLED_AFTER: Duration = Duration::from_secs(120);

pub(super) async fn idle_cost() -> anyhow::Result<()> {
    println!("== tabs at idle (no search), opened together; measured 2 min after the loads ==");
    println!(
        "{:>5} {:>16} {:>8} {:>11} {:>11} {:>11} {:>11} {:>13} {:>13}",
        "tabs",
        "connections/tab",
        "direct",
        "full mesh",
        "CPU total",
        "CPU/tab",
        "relay CPU",
        "browser RSS",
        "renderer RSS"
    );
    for n in [8, 16, 24] {
        idle_tabs(n).await?;
    }
    println!("(CPU in cores of this 2-core machine; connections/tab: median [min-max]; full mesh:");
    println!(" from the first page load to the last tab listing every other, or how many tabs did");
    println!(" not; renderer RSS: median per tab's renderer process; browser RSS counts shared");
    println!(" memory once per process)");
    Ok(())
}

async fn idle_tabs(n: usize) -> anyhow::Result<()> {
    let dir = run_dir(&format!("bench-tabs-{n}"))?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    let opened = Instant::now();
    let tabs = browser
        .open_tabs_together(n, &format!("{}/?search=off", relay.url()))
        .await?;
    wait_until(
        "every tab holds a reservation",
        Duration::from_secs(240),
        || {
            let (browser, tabs) = (&browser, &tabs);
            async move {
                for (i, tab) in tabs.iter().enumerate() {
                    match browser.state(tab).await? {
                        Some(v) if v.relay.reservation_at_ms.is_some() => {}
                        _ => return Ok(Err(format!("tab {i} has no reservation yet"))),
                    }
                }
                Ok(Ok(()))
            }
        },
    )
    .await?;
    tokio::time::sleep(SETTLED_AFTER.saturating_sub(opened.elapsed())).await;
    // Nothing reads the tabs while the CPU is measured.
    let pids = tabmesh_e2e::with_descendants(browser.driver_pid());
    let (browser_start, relay_start) = (cpu_seconds(&pids), cpu_seconds(&[relay.pid()]));
    let threads_start = thread_cpu(&pids);
    let started = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let wall = started.elapsed().as_secs_f64();
    let mut by_thread: Vec<(String, f64)> = thread_cpu(&pids)
        .into_iter()
        .map(|(name, secs)| {
            let before = threads_start.get(&name).copied().unwrap_or_default();
            (name, (secs - before) / wall)
        })
        .collect();
    by_thread.sort_by(|a, b| b.1.total_cmp(&a.1));
    let browser_cores = (cpu_seconds(&pids) - browser_start) / wall;
    let relay_cores = (cpu_seconds(&[relay.pid()]) - relay_start) / wall;
    let rss: Vec<(u32, u64)> = pids
        .iter()
        .filter_map(|pid| Some((*pid, rss_kb(*pid).ok()?)))
        .collect();
    let total_mb = rss.iter().map(|(_, kb)| *kb).sum::<u64>() as f64 / 1024.0;
    let mut renderers: Vec<u64> = rss
        .iter()
        .filter(|(pid, _)| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("--type=renderer"))
        })
        .map(|(_, kb)| *kb)
        .collect();
    renderers.sort_unstable();
    let mut connections = Vec::new();
    let mut direct = 0;
    let (mut offers, mut duplicates, mut failed) = (0, 0, 0);
    // When the mesh was whole: the tabs' page loads (time origins) and when each tab's last
    // peer connected, on one clock.
    let mut loads = Vec::new();
    let mut whole_at = Vec::new();
    for tab in &tabs {
        if let Some(view) = browser.state(tab).await? {
            connections.push(view.peers.len());
            direct += view.direct_peers();
            offers += view.counters.webrtc_offers;
            duplicates += view.counters.direct_duplicates_closed;
            failed += view.counters.direct_dials_failed;
            let origin = browser.time_origin(tab).await?;
            loads.push(origin);
            if view.peers.len() + 1 >= n {
                let last = view.peers.iter().map(|p| p.connected_at_ms).max();
                whole_at.push(origin + last.unwrap_or_default() as f64);
            }
        }
    }
    let mesh = full_mesh(&loads, &whole_at, n);
    connections.sort_unstable();
    let total: usize = connections.iter().sum();
    println!(
        "{n:>5} {:>16} {:>7.0}% {mesh:>11} {:>11.2} {:>11.3} {:>11.3} {:>10.0} MB {:>10.0} MB",
        format!(
            "{} [{}-{}]",
            connections.get(connections.len() / 2).copied().unwrap_or(0),
            connections.first().copied().unwrap_or(0),
            connections.last().copied().unwrap_or(0)
        ),
        100.0 * direct as f64 / total.max(1) as f64,
        browser_cores,
        browser_cores / n as f64,
        relay_cores,
        total_mb,
        renderers.get(renderers.len() / 2).copied().unwrap_or(0) as f64 / 1024.0,
    );
    let top: Vec<String> = by_thread
        .iter()
        .take(6)
        .map(|(name, cores)| format!("{name} {cores:.2}"))
        .collect();
    println!("      where: {}", top.join(", "));
    println!(
        "      going direct: WebRTC offers {offers}, duplicates closed {duplicates}, dials failed \
         {failed} ({} pairs)",
        n * (n - 1) / 2
    );
    browser.quit().await?;
    relay.stop()?;
    Ok(())
}

/// When `n` tabs whose pages loaded at `loads` were a full mesh, from `whole_at` (each tab that
/// lists all the others: when its last peer connected; same clock): seconds from the first load
/// to the last tab whole, or how many tabs were not whole.
fn full_mesh(loads: &[f64], whole_at: &[f64], n: usize) -> String {
    if whole_at.len() < n {
        return format!("{} short", n - whole_at.len());
    }
    let (first_load, last_whole) = group_span(loads, whole_at);
    format!("{:.1} s", (last_whole - first_load) / 1000.0)
}

/// CPU seconds so far of every thread of `pids`, summed by thread name (Chromium names its
/// threads: `CrRendererMain` is a page's main thread, where the app's wasm runs;
/// `DedicatedWorker` its search worker; `WebRTC_*`, `Chrome_ChildIOThread`, ...).
fn thread_cpu(pids: &[u32]) -> std::collections::BTreeMap<String, f64> {
    let mut by_name = std::collections::BTreeMap::new();
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            // Numbered pool threads (`ThreadPoolForeg` and the like) group by their prefix.
            let name: String = stat[open + 1..close]
                .trim_end_matches(|c: char| c.is_ascii_digit())
                .to_owned();
            *by_name.entry(name).or_insert(0.0) += stat_cpu_seconds(&stat).unwrap_or_default();
        }
    }
    by_name
}

#[cfg(test)]
mod tests {
    use super::full_mesh;

    #[test]
    fn the_full_mesh_runs_from_the_first_load_to_the_last_tab_whole() {
        let loads = [1_000.0, 1_200.0, 1_100.0];
        assert_eq!(full_mesh(&loads, &[3_000.0, 4_600.0, 2_500.0], 3), "3.6 s");
        assert_eq!(full_mesh(&loads, &[3_000.0], 3), "2 short");
    }
}
