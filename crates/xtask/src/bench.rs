//! `cargo xtask bench`: figures, not assertions.
//!
//! - wasm size of the web app: raw, after wasm-bindgen, after `wasm-opt -Oz`, gzipped, what
//!   a tab on another machine downloads from the relay, and what the module is made of, by crate
//!   and by kind of code (`bench/size.rs`);
//! - join time for 4 and 8 tabs: page load to the app running (before any networking) and to
//!   relay reservation (median and worst over every tab of every run), and the last tab opened
//!   to all peers connected (it joins a mesh already there);
//!   opened together, also the CPU Chromium and the relay spent while they joined, by process
//!   type and thread, and how often each part of a tab's page rendered meanwhile;
//! - the relay at scale: memory per reserved peer, CPU, and 8 tabs joining, before and under the
//!   load of many native clients (`tabmesh-loadgen`, `--clients`);
//! - GIMPS gossip: native Lucas-Lehmer times, and from the deterministic simulation the share of
//!   nodes a `PRIME` reaches and the messages it costs, for 8/64/256 nodes and TTL 1 to 4, the
//!   cooperative mode's speed-up (simulated and with real native nodes), Lucas-Lehmer in a tab
//!   against native, and how fast a `PRIME` reaches all of 8 tabs.
//!
//! - DHT: put and get latency across 8 tabs (median, worst; rounds and peers asked), and the
//!   simulation's rounds and peers contacted per lookup for N = 10, 100, 1000 against log2 N,
//!   with the success rate under churn (`cargo xtask sim`), and the same from the model engine
//!   for N = 10 to 10,000 (`--engine model`).
//!
//! - WebRTC: time from a relayed connection to the direct one among 8 tabs (median, worst), and
//!   libp2p ping RTT and perf-protocol throughput between two tabs, direct against relayed.
//!
//! - Services: call latency across 8 tabs, direct against through the relay; one provider's
//!   calls per second with 1 and 7 calling tabs; the HTTP gateway's calls per second; failover
//!   when the provider being called closes.
//!
//! - Tracing: gossip messages per second with tracing on and off (in-process), echo calls per
//!   second across 8 tabs on and off, and the time to gather and draw a `PRIME`'s trace.
//!
//! - Snapshots: snapshot time, markers and bytes across 8 tabs trading tokens, naive snapshots'
//!   inconsistency rate, and in simulation for 10, 100 and 1000 peers.
//!
//! - Many tabs: what a tab costs at idle (CPU, memory) against its number of connections, for
//!   8, 16 and 24 tabs.
//!
//! `--only` picks sections (the whole run takes over half an hour, the 1000-peer simulation
//! most of it). The browser and network parts run inside a loopback-only network namespace,
//! like the tests.

use std::time::Duration;

use anyhow::Context;
use tabmesh_core::gimps::pace::SearchPace;
use tabmesh_e2e::{
    Browser, BrowserOptions, Relay, RelayOptions, bin_path, run_dir, unix_now_ms, wait_until,
};

use crate::shell;
use crate::web::{self, mb};

mod cpu;
mod join;
mod services;
mod size;
mod snapshot;
mod tabs;
mod trace;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BenchArgs {
    /// Runs per tab count for the join times.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Native clients for the relay at scale.
    #[arg(long, default_value_t = 500)]
    clients: usize,
    /// Tab counts for the join times.
    #[arg(
        long,
        value_delimiter = ',',
        default_values_t = [4, 8],
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=64)
    )]
    tabs: Vec<usize>,
    /// Settings the tabs of the join and of the WebRTC upgrade time take from their URL, to
    /// compare with the defaults, e.g.
    /// `--query direct=off` or `--query first_ping=0&search_settle=0` (see the README's query
    /// settings).
    #[arg(long, default_value = "")]
    query: String,
    /// Sections to run (default: all).
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Section>,
}

/// The parts of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Section {
    /// wasm size.
    Size,
    /// Join times of 4 and 8 tabs.
    Join,
    /// GIMPS: Lucas-Lehmer, flooding, propagation, cooperative speed-up.
    Gimps,
    /// The relay at scale: memory, CPU and tabs joining under the load of many clients.
    Relay,
    /// DHT put/get latency across 8 tabs.
    Dht,
    /// DHT simulation for 10, 100 and 1000 peers, and the model engine's up to 10,000.
    Sim,
    /// WebRTC: upgrade time among 8 tabs; RTT and throughput, direct against relayed.
    Webrtc,
    /// Services: call latency and throughput across 8 tabs, the HTTP gateway, failover.
    Services,
    /// Tracing: its cost to gossip and service calls, gathering and drawing a PRIME's trace.
    Trace,
    /// Snapshots: across 8 tabs, and in simulation for 10, 100 and 1000 peers.
    Snapshot,
    /// Relay restart: outage shown, direct connections kept, time to a reservation again.
    Restart,
    /// What a tab costs at idle (CPU, memory) against its connections: 8, 16 and 24 tabs.
    Tabs,
}

impl BenchArgs {
    fn wants(&self, section: Section) -> bool {
        self.only.is_empty() || self.only.contains(&section)
    }

    fn inner_args(&self) -> Vec<String> {
        let mut args = vec![
            "--runs".to_owned(),
            self.runs.to_string(),
            "--clients".to_owned(),
            self.clients.to_string(),
            "--query".to_owned(),
            self.query.clone(),
        ];
        for tabs in &self.tabs {
            args.push("--tabs".to_owned());
            args.push(tabs.to_string());
        }
        for section in &self.only {
            args.push("--only".to_owned());
            args.push(
                clap::ValueEnum::to_possible_value(section)
                    .map(|v| v.get_name().to_owned())
                    .unwrap_or_default(),
            );
        }
        args
    }
}

pub(crate) fn run(args: BenchArgs) -> anyhow::Result<()> {
    crate::setup::wasm_opt()?;
    let build = web::build(web::Profile::Release, true)?;
    if args.wants(Section::Size) {
        println!("== wasm size (web app, profile wasm-release: opt-level z, LTO) ==");
        println!("raw (cargo)        {:>10}", mb(build.raw));
        println!("after wasm-bindgen {:>10}", mb(build.bindgen));
        match build.optimized {
            Some(bytes) => println!("after wasm-opt -Oz {:>10}", mb(bytes)),
            None => println!("after wasm-opt -Oz {:>10}", "(wasm-opt not installed)"),
        }
        println!("gzipped (served)   {:>10}", mb(build.gzipped));
        println!(
            "search worker      {:>10} gzipped (loaded after the app, off its thread)",
            mb(build.worker_gzipped)
        );
        println!(
            "a tab downloads    {:>10} (every file as the relay serves it to another machine; \
             {} uncompressed, on this one)",
            mb(build.files_served),
            mb(build.files)
        );
        if let Some(floor) = web::build_size_floor()? {
            println!(
                "libp2p stack alone {:>10} gzipped (crates/size-floor: the transports and libp2p \
                 behaviours a tab runs, without tabmesh's own code); the rest, {}, is tabmesh's",
                mb(floor),
                mb(build.gzipped.saturating_sub(floor))
            );
        }
        size::report()?;
    }
    if args.wants(Section::Gimps) {
        gimps_figures();
    }
    if args.wants(Section::Trace) {
        trace::gossip_cpu()?;
    }
    if args.wants(Section::Snapshot) {
        snapshot::simulated();
    }
    web::build_release_binaries()?;
    let exe = std::env::current_exe()?;
    let mut inner = std::process::Command::new(exe);
    inner
        .arg("bench-inner")
        .args(args.inner_args())
        .env("TABMESH_BIN_DIR", tabmesh_e2e::target_dir().join("release"))
        .current_dir(shell::root());
    shell::run(&mut shell::in_loopback_namespace(&inner)?)?;
    if args.wants(Section::Sim) {
        println!("== DHT simulation (cargo xtask sim --nodes 10,100,1000) ==");
        crate::sim::run(&["--nodes".to_owned(), "10,100,1000".to_owned()])?;
        println!(
            "== DHT simulation, model engine (cargo xtask sim --engine model --nodes 10,100,1000,10000) =="
        );
        crate::sim::run(&[
            "--engine".to_owned(),
            "model".to_owned(),
            "--nodes".to_owned(),
            "10,100,1000,10000".to_owned(),
        ])?;
    }
    Ok(())
}

pub(crate) fn run_inner(args: BenchArgs) -> anyhow::Result<()> {
    let query = args.query.trim_start_matches('?');
    tokio::runtime::Runtime::new()?.block_on(async {
        if args.wants(Section::Join) {
            for &tabs in &args.tabs {
                join::join_times(tabs, args.runs, query).await?;
            }
        }
        if args.wants(Section::Gimps) {
            gimps_in_browsers().await?;
            cooperative_native().await?;
        }
        if args.wants(Section::Dht) {
            dht_latency().await?;
        }
        if args.wants(Section::Webrtc) {
            upgrade_times(query).await?;
            direct_against_relayed().await?;
        }
        if args.wants(Section::Services) {
            services::run().await?;
        }
        if args.wants(Section::Trace) {
            trace::run().await?;
        }
        if args.wants(Section::Snapshot) {
            snapshot::in_tabs().await?;
        }
        if args.wants(Section::Relay) {
            relay_at_scale(args.clients).await?;
        }
        if args.wants(Section::Restart) {
            relay_restart().await?;
        }
        if args.wants(Section::Tabs) {
            tabs::idle_cost().await?;
        }
        Ok(())
    })
}

/// A relay and a browser with 8 tabs that do not search (the search would compete for the two
/// cores with what is measured), under `target/e2e/<name>/`.
pub(super) async fn eight_quiet_tabs(
    name: &str,
) -> anyhow::Result<(std::path::PathBuf, Relay, Browser)> {
    eight_quiet_tabs_at(name, "").await
}

/// [`eight_quiet_tabs`], each tab also taking the settings in `query` from its URL.
async fn eight_quiet_tabs_at(
    name: &str,
    query: &str,
) -> anyhow::Result<(std::path::PathBuf, Relay, Browser)> {
    let dir = run_dir(name)?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    let url = with_query(format!("{}/?search=off", relay.url()), query);
    for _ in 0..8 {
        browser.open_tab(&url).await?;
    }
    Ok((dir, relay, browser))
}

/// Put and get latency across 8 tabs: each put from one tab, each get from another (the
/// node's own measure, from the request to the answer), with the lookup's rounds and peers.
async fn dht_latency() -> anyhow::Result<()> {
    let (_, relay, browser) = eight_quiet_tabs("bench-dht").await?;
    let tabs = browser.tabs().to_vec();
    wait_until(
        "8 tabs know each other in the DHT",
        Duration::from_secs(120),
        || {
            let browser = &browser;
            async move {
                for tab in browser.tabs() {
                    let known = browser
                        .state(tab)
                        .await?
                        .and_then(|v| v.dht)
                        .map_or(0, |d| d.routing_table_size);
                    if known < 8 {
                        return Ok(Err(format!("a tab knows {known} peers")));
                    }
                }
                Ok(Ok(()))
            }
        },
    )
    .await?;
    let (mut puts, mut gets, mut get_rounds, mut get_asked) = (vec![], vec![], vec![], vec![]);
    for i in 0..24 {
        let writer = &tabs[i % 8];
        let reader = &tabs[(i + 3) % 8];
        let put = browser
            .call(
                writer,
                &format!("window.tabmesh.put('bench-{i}', 'value {i}')"),
            )
            .await?
            .map_err(|e| anyhow::anyhow!("put: {e}"))?;
        puts.push(put["duration_ms"].as_f64().unwrap_or(f64::NAN));
        let got = browser
            .call(reader, &format!("window.tabmesh.get('bench-{i}')"))
            .await?
            .map_err(|e| anyhow::anyhow!("get: {e}"))?;
        anyhow::ensure!(
            got["record"]["value"].as_str() == Some(&format!("value {i}")),
            "get bench-{i} returned {got}"
        );
        gets.push(got["duration_ms"].as_f64().unwrap_or(f64::NAN));
        get_rounds.push(got["lookup"]["rounds"].as_f64().unwrap_or(f64::NAN));
        get_asked.push(got["lookup"]["contacted"].as_f64().unwrap_or(f64::NAN));
    }
    println!("== DHT across 8 tabs (24 puts, each then read from another tab) ==");
    println!("put (get + store at the k closest)  {}", summary(puts));
    println!("get                                 {}", summary(gets));
    println!("get: rounds       {}", summary_in(get_rounds, ""));
    println!("get: peers asked  {}", summary_in(get_asked, ""));
    browser.quit().await?;
    relay.stop()?;
    Ok(())
}

/// Time from each tab's relayed connection to a peer to the direct WebRTC connection, among 8
/// tabs (every tab, every peer: 56 figures), with the failed attempts on the way.
async fn upgrade_times(query: &str) -> anyhow::Result<()> {
    let (_, relay, browser) = eight_quiet_tabs_at("bench-webrtc-upgrade", query).await?;
    let views = wait_until(
        "all 28 pairs of 8 tabs direct",
        Duration::from_secs(180),
        || all_direct(&browser),
    )
    .await?;
    let upgrades: Vec<_> = views
        .iter()
        .flat_map(|v| v.peers.iter())
        .filter_map(|p| p.upgrade.clone())
        .collect();
    let times: Vec<f64> = upgrades
        .iter()
        .filter_map(|u| u.upgrade_ms)
        .map(|ms| ms as f64)
        .collect();
    let failures: u32 = upgrades.iter().map(|u| u.failures).sum();
    println!(
        "== WebRTC: relayed connection to direct connection, 8 tabs{} ==",
        opened_at(query)
    );
    println!(
        "upgrade time       {}   (from the peer's identify on the relayed connection)",
        summary(times)
    );
    println!("failed attempts    {failures}");
    browser.quit().await?;
    relay.stop()?;
    Ok(())
}

/// `url` with the settings of `--query` (without its `?`) added to those it may carry.
pub(super) fn with_query(url: String, query: &str) -> String {
    match (query.is_empty(), url.contains('?')) {
        (true, _) => url,
        (false, true) => format!("{url}&{query}"),
        (false, false) => format!("{url}/?{query}"),
    }
}

/// For a section's heading: the settings of `--query` its tabs were opened with, if any.
pub(super) fn opened_at(query: &str) -> String {
    if query.is_empty() {
        String::new()
    } else {
        format!(", tabs opened at /?{query}")
    }
}

/// Every tab's view once each has a direct connection to every other tab.
pub(super) async fn all_direct(
    browser: &Browser,
) -> anyhow::Result<Result<Vec<tabmesh_core::view::NodeView>, String>> {
    let others = browser.tabs().len() - 1;
    let mut views = Vec::new();
    for tab in browser.tabs() {
        let Some(view) = browser.state(tab).await? else {
            return Ok(Err("a tab has no view yet".into()));
        };
        let direct = view.direct_peers();
        if direct < others {
            return Ok(Err(format!(
                "{} is direct with {direct} of {others}",
                view.name
            )));
        }
        views.push(view);
    }
    Ok(Ok(views))
}

/// How long the relay stays down in the restart benchmark.
const OUTAGE: Duration = Duration::from_secs(10);

/// 8 tabs, all direct, and the relay restarts: how soon each tab shows the outage, whether the
/// direct connections hold meanwhile, and how soon after the relay is back each tab holds a
/// reservation again (by polling the tabs' views: about 0.2 s resolution).
async fn relay_restart() -> anyhow::Result<()> {
    let (dir, relay, browser) = eight_quiet_tabs("bench-relay-restart").await?;
    wait_until(
        "all 28 pairs of 8 tabs direct",
        Duration::from_secs(180),
        || all_direct(&browser),
    )
    .await?;
    let options = relay.options().clone();
    let stopped = std::time::Instant::now();
    relay.stop()?;
    let tabs = browser.tabs().to_vec();
    let mut noticed: Vec<Option<f64>> = vec![None; tabs.len()];
    let mut direct_kept = usize::MAX;
    while stopped.elapsed() < OUTAGE {
        for (i, tab) in tabs.iter().enumerate() {
            let Some(view) = browser.state(tab).await? else {
                continue;
            };
            if !view.relay.link.connected && noticed[i].is_none() {
                noticed[i] = Some(stopped.elapsed().as_secs_f64() * 1e3);
            }
            direct_kept = direct_kept.min(view.direct_peers());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let relay = Relay::start(options, dir.join("relay-restarted.log")).await?;
    let restarted = std::time::Instant::now();
    let mut reserved: Vec<Option<f64>> = vec![None; tabs.len()];
    // What each tab went through meanwhile, printed when the relay is slow to come back.
    let mut seen: Vec<Vec<(u128, String)>> = vec![Vec::new(); tabs.len()];
    while reserved.iter().any(Option::is_none) && restarted.elapsed() < Duration::from_secs(120) {
        for (i, tab) in tabs.iter().enumerate() {
            if reserved[i].is_some() {
                continue;
            }
            let Some(view) = browser.state(tab).await? else {
                continue;
            };
            let link = &view.relay.link;
            let step = format!(
                "{:?} attempt {} connected {} error {:?}",
                link.state, link.attempt, link.connected, link.last_error
            );
            if seen[i].last().map(|(_, last)| last) != Some(&step) {
                seen[i].push((restarted.elapsed().as_millis(), step));
            }
            if link.reservation {
                reserved[i] = Some(restarted.elapsed().as_secs_f64() * 1e3);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, steps) in seen.iter().enumerate() {
        if reserved[i].is_none_or(|ms| ms > 5_000.0) {
            println!("tab {i} after the restart:");
            for (ms, step) in steps {
                println!("    {ms:>6} ms: {step}");
            }
        }
    }
    let missing = reserved.iter().filter(|r| r.is_none()).count();
    println!(
        "== Relay restart, 8 direct tabs, relay down {} s ==",
        OUTAGE.as_secs()
    );
    println!(
        "outage shown in tab     {}   (from SIGTERM; {} of 8 tabs)",
        summary(noticed.iter().flatten().copied().collect()),
        noticed.iter().flatten().count()
    );
    println!("direct peers kept       {direct_kept} of 7 per tab, at worst, during the outage");
    println!(
        "reserved again          {}   (from the relay's restart; {missing} of 8 tabs not within 120 s)",
        summary(reserved.iter().flatten().copied().collect())
    );
    browser.quit().await?;
    relay.stop()?;
    Ok(())
}

/// libp2p ping RTT and perf throughput between two tabs, over a relayed connection (both tabs
/// with `?direct=off`) and over a direct one.
async fn direct_against_relayed() -> anyhow::Result<()> {
    const BYTES: u64 = 4_000_000;
    const RUNS: usize = 5;
    println!(
        "== WebRTC: two tabs, direct against relayed (ping every 0.5 s; perf {RUNS} x {} each way) ==",
        mb(BYTES)
    );
    for (label, query) in [("relayed", "&direct=off"), ("direct", "")] {
        let dir = run_dir(&format!("bench-webrtc-{label}"))?;
        let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
        let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
        let url = format!("{}/?search=off&libp2p_ping=0.5{query}", relay.url());
        let a = browser.open_tab(&url).await?;
        browser.open_tab(&url).await?;
        use tabmesh_core::peers::ConnectionKind;
        let want = if label == "direct" {
            ConnectionKind::Direct
        } else {
            ConnectionKind::Relayed
        };
        let peer = wait_until(
            "the two tabs connected as wanted",
            Duration::from_secs(60),
            || {
                let browser = &browser;
                let a = &a;
                async move {
                    let view = browser.state(a).await?;
                    Ok(match view.and_then(|v| v.peers.into_iter().next()) {
                        // Relayed: both tabs may have dialed the other through the relay (two
                        // circuits); direct: the relayed connection must be gone.
                        Some(p)
                            if p.connection == want
                                && (p.connections == 1 || want != ConnectionKind::Direct)
                                && p.rtt_ms.is_some() =>
                        {
                            Ok(p.peer_id)
                        }
                        Some(p) => Err(format!("{:?} x{}", p.connection, p.connections)),
                        None => Err("no peer yet".into()),
                    })
                }
            },
        )
        .await?;
        let mut rtts = Vec::new();
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Some(rtt) = browser
                .state(&a)
                .await?
                .and_then(|v| v.peers.into_iter().next())
                .and_then(|p| p.rtt_ms)
            {
                rtts.push(rtt);
            }
        }
        let (mut up, mut down) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            for (upload, download) in [(BYTES, 0), (0, BYTES)] {
                let report = browser
                    .call(
                        &a,
                        &format!("window.tabmesh.perf('{peer}', {upload}, {download})"),
                    )
                    .await?
                    .map_err(|e| anyhow::anyhow!("perf: {e}"))?;
                let report: tabmesh_core::perf::PerfReport = serde_json::from_value(report)?;
                anyhow::ensure!(
                    report.connection == want,
                    "perf ran on {}",
                    report.connection
                );
                if upload > 0 {
                    up.push(report.upload_mb_per_s());
                } else {
                    down.push(report.download_mb_per_s());
                }
            }
        }
        let rate = |v: Vec<f64>| {
            let runs: Vec<String> = v.iter().map(|r| format!("{r:.1}")).collect();
            let mut sorted = v;
            sorted.sort_by(f64::total_cmp);
            format!(
                "median {:>6.1} MB/s   worst {:>6.1} MB/s   (runs in order: {})",
                sorted[sorted.len() / 2],
                sorted[0],
                runs.join(", ")
            )
        };
        println!("{label:<8} ping RTT  {}", summary_digits(rtts, "ms", 2));
        println!("{label:<8} send      {}", rate(up));
        println!("{label:<8} receive   {}", rate(down));
        browser.quit().await?;
        relay.stop()?;
    }
    Ok(())
}

/// Lucas-Lehmer and flooding figures, native, in this process (tabmesh-core is built at
/// opt-level 2 even in dev builds; see the workspace profiles).
fn gimps_figures() {
    use tabmesh_core::gimps::lucas_lehmer::{FFT_FROM, LucasLehmer};
    use tabmesh_core::gimps::sim::{flood, flood_without_pruning};
    println!(
        "== Lucas-Lehmer, native (num-bigint and rustfft at opt-level 3): exact squaring, by FFT, \
         and which the search uses (FFT from p = {FFT_FROM}) =="
    );
    for p in [2203u32, 4423, 9941, 21701] {
        let time = |fft: bool| {
            let start = std::time::Instant::now();
            let prime = LucasLehmer::with_fft(p, fft).advance(u32::MAX);
            (start.elapsed().as_secs_f64() * 1e3, prime)
        };
        let ((exact, prime), (fft, by_fft)) = (time(false), time(true));
        assert_eq!(prime, by_fft, "p = {p}: exact and FFT squaring disagree");
        println!(
            "p = {p:<6} exact {exact:>8.1} ms   FFT {fft:>8.1} ms   search uses {}   (prime: {})",
            if p >= FFT_FROM { "FFT" } else { "exact" },
            prime == Some(true)
        );
    }
    println!(
        "== PRIME flooding in simulation (seed 1): reach / messages per PRIME, forwarders \
         skipping the finder's recipients (default) | the exercise's flood =="
    );
    println!(
        "{:>12} {:>27} {:>27} {:>27} {:>27}",
        "nodes/degree", "TTL 1", "TTL 2", "TTL 3", "TTL 4"
    );
    for (nodes, degree) in [(8usize, 7usize), (8, 4), (64, 4), (64, 16), (256, 4)] {
        let cells: Vec<String> = (1..=4u8)
            .map(|ttl| {
                let (r, plain) = (
                    flood(nodes, degree, ttl, 1),
                    flood_without_pruning(nodes, degree, ttl, 1),
                );
                format!(
                    "{:>5.1}% / {:>4} | {:>5.1}% / {:>4}",
                    r.reach * 100.0,
                    r.messages,
                    plain.reach * 100.0,
                    plain.messages
                )
            })
            .collect();
        println!(
            "{:>12} {:>27} {:>27} {:>27} {:>27}",
            format!("{nodes}/{degree}"),
            cells[0],
            cells[1],
            cells[2],
            cells[3]
        );
    }
    println!(
        "== cooperative search in simulation: virtual time to find every prime up to 2^4423-1 =="
    );
    let limit = Duration::from_secs(24 * 3600);
    let alone = tabmesh_core::gimps::sim::cooperative_search(1, 4423, 1, limit);
    for nodes in [1usize, 2, 4, 8] {
        let t = tabmesh_core::gimps::sim::cooperative_search(nodes, 4423, 1, limit);
        match (t, alone) {
            (Some(t), Some(a)) => println!(
                "{nodes} node(s) {:>9.1} s   speed-up {:>4.2}x",
                t.as_secs_f64(),
                a.as_secs_f64() / t.as_secs_f64()
            ),
            _ => println!("{nodes} node(s)   did not finish within {limit:?}"),
        }
    }
}

/// From the first of `loads` to the last of `done` (page times on one clock, in ms): how long a
/// group of tabs opened together took to get somewhere, as (start, end).
pub(super) fn group_span(loads: &[f64], done: &[f64]) -> (f64, f64) {
    let first = loads.iter().copied().fold(f64::INFINITY, f64::min);
    let last = done.iter().copied().fold(0.0, f64::max);
    (first, last)
}

pub(super) fn summary(values: Vec<f64>) -> String {
    summary_in(values, "ms")
}

fn summary_in(values: Vec<f64>, unit: &str) -> String {
    summary_digits(values, unit, 0)
}

fn summary_digits(mut values: Vec<f64>, unit: &str, decimals: usize) -> String {
    if values.is_empty() {
        return "no samples".into();
    }
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    let worst = values[values.len() - 1];
    format!(
        "median {median:>7.decimals$} {unit}   worst {worst:>7.decimals$} {unit}   ({} samples)",
        values.len()
    )
}

/// Waits until every tab lists every other one (and holds a reservation); their views.
pub(super) async fn all_listed(
    browser: &Browser,
    tabs: usize,
) -> anyhow::Result<Vec<tabmesh_core::view::NodeView>> {
    let handles = browser.tabs().to_vec();
    wait_until("all tabs see each other", Duration::from_secs(120), || {
        let handles = handles.clone();
        async move {
            let mut views = Vec::new();
            for tab in &handles {
                match browser.state(tab).await? {
                    Some(v) if v.peers.len() >= tabs - 1 && v.relay.reservation_at_ms.is_some() => {
                        views.push(v)
                    }
                    Some(v) => {
                        return Ok(Err(format!("{} has {} peers", v.name, v.peers.len())));
                    }
                    None => return Ok(Err("a tab has no state yet".into())),
                }
            }
            Ok(Ok(views))
        }
    })
    .await
}

/// Lucas-Lehmer in a tab against native, and how fast a `PRIME` reaches all of 8 tabs.
async fn gimps_in_browsers() -> anyhow::Result<()> {
    use tabmesh_core::gimps::lucas_lehmer::is_mersenne_prime;

    let dir = run_dir("bench-gimps")?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    // The tab does not search, so its own search does not compete with the timed ones.
    let quiet = format!("{}/?search=off", relay.url());
    let tab = browser.open_tab(&quiet).await?;
    wait_until("the tab is up", Duration::from_secs(60), || {
        let browser = &browser;
        let tab = tab.clone();
        async move {
            Ok(browser
                .state(&tab)
                .await?
                .map(|_| ())
                .ok_or_else(|| "no state".to_owned()))
        }
    })
    .await?;
    println!("== Lucas-Lehmer: wasm in headless Chromium vs native ==");
    println!(
        "(native: as the search runs it, exact below p = {} and by FFT from there; worker: the tab's \
         search worker at full speed, by FFT from p = 2000; page: the app's module, blocking, \
         exact squaring only)",
        tabmesh_core::gimps::lucas_lehmer::FFT_FROM
    );
    for p in [2203u32, 4423, 9941] {
        let start = std::time::Instant::now();
        let _ = is_mersenne_prime(p);
        let native = start.elapsed().as_secs_f64() * 1e3;
        let timed = |expression: String| {
            let (browser, tab) = (&browser, &tab);
            async move {
                browser
                    .call(tab, &expression)
                    .await?
                    .map_err(anyhow::Error::msg)
            }
        };
        let searched = timed(format!("window.tabmesh.benchSearch({p})")).await?;
        if searched["prime"].as_bool() != Some(is_mersenne_prime(p)) {
            anyhow::bail!("the tab's search got 2^{p} - 1 wrong: {searched}");
        }
        let worker = searched["ms"]
            .as_f64()
            .context("benchSearch returned no time")?;
        let page = timed(format!("window.tabmesh.benchLucasLehmer({p})"))
            .await?
            .as_f64()
            .context("benchLucasLehmer returned no number")?;
        println!(
            "p = {p:<6} native {native:>8.1} ms   worker {worker:>8.1} ms ({:>4.2}x)   \
             page {page:>8.1} ms ({:>4.2}x)",
            worker / native,
            page / native
        );
    }
    browser.quit().await?;
    relay.stop()?;
    // A network of their own: a tab that does not search would hold its share of the
    // cooperative search's exponents, untested.
    for (run, label, query, pace) in [
        (
            "gentle",
            "cooperative, default pace (gentle)",
            "cooperative=on",
            Pace::AsOpened,
        ),
        (
            "flood",
            "cooperative, default pace, the exercise's flood (prune=off: every receiver copies on)",
            "cooperative=on&prune=off",
            Pace::AsOpened,
        ),
        (
            "ttl0",
            "cooperative, default pace, TTL 0 (no peer forwards a PRIME)",
            "cooperative=on&ttl=0",
            Pace::AsOpened,
        ),
        (
            "full",
            "cooperative, full speed (switched on once the tabs list each other)",
            "cooperative=on",
            Pace::FullOnceMeshed,
        ),
    ] {
        spread_and_cpu(&run_dir(&format!("bench-gimps-{run}"))?, label, query, pace).await?;
    }
    Ok(())
}

/// The search pace of the tabs in [`spread_and_cpu`].
#[derive(Clone, Copy, PartialEq)]
enum Pace {
    /// The pace the tabs open with.
    AsOpened,
    /// Full speed, switched on in every tab (the GIMPS panel's switch) once they all list each
    /// other: opened at full speed, tabs race past the primes a minute holds before they meet.
    FullOnceMeshed,
}

/// CPU time (user + system) of `pids` so far, in seconds.
pub(super) fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| stat_cpu_seconds(&stat))
        .sum()
}

/// CPU time (user + system) in a `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat` line.
pub(super) fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    // Linux reports it in clock ticks of 1/100 s on every platform this project runs on.
    const TICKS_PER_SEC: f64 = 100.0;
    // Fields after the parenthesised command name: state is field 3; utime and stime are
    // fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// How long the browser's CPU use is measured with 8 searching tabs.
const CPU_WINDOW: Duration = Duration::from_secs(20);

/// How long the spread of `PRIME`s among 8 searching tabs is watched, from their opening.
const SPREAD_WINDOW: Duration = Duration::from_secs(60);

/// 8 tabs searching cooperatively at one pace: every exponent has one tester, so the others
/// learn of a find only from its `PRIME`. For every prime found once every tab listed every
/// other one (and, with [`Pace::FullOnceMeshed`], ran at full speed) within [`SPREAD_WINDOW`] of
/// their opening, the time from the find to the last of the 8 tabs knowing it (each tab's
/// `first_known`, on the wall clock of the one browser); then the browser's CPU use over
/// [`CPU_WINDOW`]. The tabs are asked nothing while the primes spread, nor during the CPU
/// window. Relay and browser are its own.
async fn spread_and_cpu(
    dir: &std::path::Path,
    label: &str,
    query: &str,
    pace: Pace,
) -> anyhow::Result<()> {
    use std::collections::BTreeMap;

    let relay = Relay::start(RelayOptions::new(dir)?, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    let url = format!("{}/?{query}", relay.url());
    let opened = std::time::Instant::now();
    let mut tabs = Vec::new();
    for _ in 0..8 {
        tabs.push(browser.open_tab(&url).await?);
    }
    // Primes found before the mesh is whole measure the join (and, while peer lists differ,
    // two tabs may test the same exponent): finds count from when every tab listed the others.
    all_listed(&browser, tabs.len()).await?;
    if pace == Pace::FullOnceMeshed {
        for tab in &tabs {
            browser.click(tab, "[data-testid=full-speed]").await?;
        }
        wait_until("every tab at full speed", Duration::from_secs(10), || {
            let (browser, tabs) = (&browser, &tabs);
            async move {
                for tab in tabs {
                    let view = browser.state(tab).await?.context("a tab has no view")?;
                    let per_mille = view.gimps.map_or(0, |g| g.search.pace_per_mille);
                    if per_mille != SearchPace::FULL.as_per_mille() {
                        return Ok(Err(format!("{} at {per_mille}‰ of a core", view.name)));
                    }
                }
                Ok(Ok(()))
            }
        })
        .await?;
    }
    let counted_from = unix_now_ms();
    tokio::time::sleep(SPREAD_WINDOW.saturating_sub(opened.elapsed())).await;
    // exponent -> (earliest own find, the latest moment a tab first knew it, tabs knowing it)
    let mut known: BTreeMap<u32, (f64, f64, usize)> = BTreeMap::new();
    for tab in &tabs {
        let origin = browser.time_origin(tab).await?;
        let view = browser.state(tab).await?.context("a tab has no view")?;
        let gimps = view.gimps.context("a tab has no GIMPS section")?;
        for k in gimps.state.first_known {
            let at = origin + k.at_ms as f64;
            let entry = known
                .entry(k.exponent)
                .or_insert((f64::INFINITY, f64::NEG_INFINITY, 0));
            if k.originator == view.peer_id {
                entry.0 = entry.0.min(at);
            }
            entry.1 = entry.1.max(at);
            entry.2 += 1;
        }
    }
    let mut spreads = Vec::new();
    let mut short = 0;
    for (found, last, knowing) in known.into_values() {
        if found < counted_from {
            continue;
        }
        if knowing < tabs.len() {
            short += 1;
        } else {
            spreads.push(last - found);
        }
    }
    let pids = tabmesh_e2e::with_descendants(browser.driver_pid());
    let cpu_start = cpu_seconds(&pids);
    let wall_start = std::time::Instant::now();
    tokio::time::sleep(CPU_WINDOW).await;
    let cores = (cpu_seconds(&pids) - cpu_start) / wall_start.elapsed().as_secs_f64();
    println!("== 8 searching tabs, {label} ==");
    println!(
        "browser CPU over {} s    {cores:>6.2} cores (this machine has 2)",
        CPU_WINDOW.as_secs()
    );
    println!(
        "PRIME to all of 8 tabs   {}  (finds once meshed, within {} s of opening; {short} \
         not known to every tab by then)",
        summary(spreads),
        SPREAD_WINDOW.as_secs()
    );
    browser.quit().await?;
    relay.stop()?;
    Ok(())
}

/// Wall-clock time for 1, 2, 4 and 8 native nodes in cooperative mode to find every Mersenne
/// prime up to 2^4423 - 1 (on this machine's cores: the speed-up is bounded by their number).
async fn cooperative_native() -> anyhow::Result<()> {
    use tabmesh_core::gimps::lucas_lehmer::KNOWN_MERSENNE_EXPONENTS;
    use tabmesh_e2e::NativeNode;
    let targets: Vec<u32> = KNOWN_MERSENNE_EXPONENTS
        .iter()
        .copied()
        .filter(|p| *p <= 4423)
        .collect();
    println!(
        "== cooperative search, native nodes: wall time to find all {} primes up to 2^4423-1 ({} cores) ==",
        targets.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut alone = None;
    for nodes in [1usize, 2, 4, 8] {
        let dir = run_dir(&format!("bench-coop-{nodes}"))?;
        let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
        let args = [
            "--cooperative",
            "--search-interval",
            "1",
            "--evict-interval",
            "0.5",
        ];
        let start = std::time::Instant::now();
        let peers: Vec<NativeNode> = (0..nodes)
            .map(|i| {
                NativeNode::start_with(
                    &bin_path("tabmesh-node"),
                    &relay.url(),
                    &args,
                    dir.join(format!("node-{i}.log")),
                )
            })
            .collect::<anyhow::Result<_>>()?;
        let done = wait_until(
            "every node knows every prime up to 4423",
            Duration::from_secs(600),
            || {
                let views: Vec<_> = peers.iter().map(NativeNode::state).collect();
                let targets = targets.clone();
                async move {
                    let all = views.iter().all(|v| {
                        v.as_ref().and_then(|v| v.gimps.as_ref()).is_some_and(|g| {
                            targets.iter().all(|p| g.state.known_primes.contains(p))
                        })
                    });
                    Ok(if all {
                        Ok(())
                    } else {
                        Err("still searching".to_owned())
                    })
                }
            },
        )
        .await;
        let took = start.elapsed().as_secs_f64();
        for peer in peers {
            let _ = peer.stop();
        }
        relay.stop()?;
        done?;
        let base = *alone.get_or_insert(took);
        println!(
            "{nodes} node(s) {took:>7.1} s   speed-up {:>4.2}x",
            base / took
        );
    }
    Ok(())
}

pub(super) fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

/// What 8 tabs opened together took to join: per tab to its reservation, from the loads to every
/// tab listing every other, and each pair's relayed-to-direct upgrade.
struct TabJoin {
    reservation_ms: Vec<f64>,
    all_listed_ms: f64,
    upgrade_ms: Vec<f64>,
}

/// Opens 8 quiet tabs together on `relay` and waits for all 28 pairs to be direct.
async fn eight_tabs_join(dir: &std::path::Path, relay: &Relay) -> anyhow::Result<TabJoin> {
    let mut browser = Browser::start(BrowserOptions::new(dir)).await?;
    let url = format!("{}/?search=off", relay.url());
    browser.open_tabs_together(8, &url).await?;
    let listed = all_listed(&browser, 8).await?;
    let direct = wait_until(
        "all 28 pairs of 8 tabs direct",
        Duration::from_secs(180),
        || all_direct(&browser),
    )
    .await?;
    let (mut first_load, mut last_listed) = (f64::INFINITY, 0.0f64);
    let mut reservation_ms = Vec::new();
    for (tab, view) in browser.tabs().iter().zip(&listed) {
        let origin = browser.time_origin(tab).await?;
        let last = view.peers.iter().map(|p| p.connected_at_ms).max();
        first_load = first_load.min(origin);
        last_listed = last_listed.max(origin + last.unwrap_or_default() as f64);
        reservation_ms.extend(view.relay.reservation_at_ms.map(|ms| ms as f64));
    }
    let upgrade_ms = direct
        .iter()
        .flat_map(|v| v.peers.iter())
        .filter_map(|p| p.upgrade.as_ref()?.upgrade_ms)
        .map(|ms| ms as f64)
        .collect();
    browser.quit().await?;
    Ok(TabJoin {
        reservation_ms,
        all_listed_ms: last_listed - first_load,
        upgrade_ms,
    })
}

/// The relay at scale: `clients` native peers from `tabmesh-loadgen` (one process, each with its
/// own connection and reservation) on a relay started with the limits an operator would set for
/// them, and 8 real tabs joining, meeting and going direct before and under that load. Figures:
/// resident memory (idle, with the clients, per reserved client), CPU while the clients arrive
/// and while they are held, the ramp time, and the tabs' join figures with and without the load.
async fn relay_at_scale(clients: usize) -> anyhow::Result<()> {
    let dir = run_dir("bench-relay-scale")?;
    let mut options = RelayOptions::new(&dir)?;
    // Room for the clients and the tabs, and their reservations arriving at the loadgen's pace.
    let room = (clients + 1024).to_string();
    let rate = (clients * 4).max(1200).to_string();
    options.extra_args = [
        "--max-connections",
        &room,
        "--max-reservations",
        &room,
        "--max-pending-incoming",
        "1024",
        "--reservation-rate-per-ip",
        &rate,
    ]
    .map(str::to_owned)
    .to_vec();
    let relay = Relay::start(options, dir.join("relay.log")).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kb(relay.pid())?;
    let quiet = eight_tabs_join(&dir.join("browser-quiet"), &relay).await?;

    let tcp = relay.tcp_addr().await?;
    let ramp_cpu = cpu_seconds(&[relay.pid()]);
    let mut loadgen = std::process::Command::new(bin_path("tabmesh-loadgen"))
        .args(["--relay", &tcp, "--clients", &clients.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.join("loadgen.log"))?)
        .spawn()
        .context("starting tabmesh-loadgen")?;
    // Every line it prints, as it prints it (read on a thread, so that its pipe never fills).
    let stdout = loadgen.stdout.take().context("loadgen stdout")?;
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let mut ready = None;
    let mut reasons = Vec::new();
    let ramp = std::time::Instant::now();
    // The loadgen gives up on its own after its settle time (300 s); this is its backstop.
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(420), lines.recv()).await {
        if let Some(rest) = line.strip_prefix("ready ") {
            ready = Some(rest.to_owned());
        } else if let Some(rest) = line.strip_prefix("reason ") {
            reasons.push(rest.to_owned());
        } else if ready.is_some() {
            break;
        }
    }
    let ramp_secs = ramp.elapsed().as_secs_f64();
    let ramp_cpu = cpu_seconds(&[relay.pid()]) - ramp_cpu;
    let with_clients = rss_kb(relay.pid())?;
    let reserved: f64 = ready
        .as_deref()
        .and_then(|r| r.split(" connected, ").nth(1))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    // Holding them: pings and reservation bookkeeping, nothing else.
    let held_cpu = cpu_seconds(&[relay.pid()]);
    let loadgen_cpu = cpu_seconds(&[loadgen.id()]);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let held_cpu = (cpu_seconds(&[relay.pid()]) - held_cpu) / 30.0;
    let loadgen_cpu = (cpu_seconds(&[loadgen.id()]) - loadgen_cpu) / 30.0;
    let loaded = eight_tabs_join(&dir.join("browser-loaded"), &relay).await;
    let mut held = None;
    while let Ok(line) = lines.try_recv() {
        held = line.strip_prefix("held ").map(str::to_owned).or(held);
    }
    let _ = loadgen.kill();
    let _ = loadgen.wait();
    relay.stop()?;
    let loaded = loaded?;

    println!("== relay at scale: {clients} native clients (tabmesh-loadgen), release build ==");
    println!(
        "relay flags: --max-connections {room} --max-reservations {room} \
         --max-pending-incoming 1024 --reservation-rate-per-ip {rate}"
    );
    println!(
        "loadgen: {}",
        ready.as_deref().unwrap_or("did not report ready")
    );
    for reason in &reasons {
        println!("  failed or retried: {reason}");
    }
    if let Some(held) = held {
        println!("  still held after the tabs joined: {held}");
    }
    let mb = |kb: u64| kb as f64 / 1024.0;
    println!("resident memory idle            {:>8.1} MB", mb(idle));
    println!(
        "resident memory with clients    {:>8.1} MB",
        mb(with_clients)
    );
    if reserved > 0.0 {
        println!(
            "per reserved client             {:>8.1} KB",
            with_clients.saturating_sub(idle) as f64 / reserved
        );
    }
    println!(
        "CPU while they arrived          {ramp_cpu:>8.1} s over {ramp_secs:.1} s ({:.2} cores)",
        ramp_cpu / ramp_secs.max(0.001)
    );
    println!(
        "CPU while holding them          {held_cpu:>8.2} cores   (the loadgen: {loadgen_cpu:.2} cores)"
    );
    for (label, join) in [("no load", &quiet), ("under load", &loaded)] {
        println!("8 tabs opened together, {label}:");
        println!(
            "  to relay reservation          {}",
            summary(join.reservation_ms.clone())
        );
        println!(
            "  from the loads to every tab listing every other {:.0} ms",
            join.all_listed_ms
        );
        println!(
            "  relayed to direct             {}",
            summary(join.upgrade_ms.clone())
        );
    }
    Ok(())
}
