//! `cargo xtask soak`: the network under churn for a long time, checked for leaks, lost records,
//! panics and harm to honest peers.
//!
//! A relay, `--tabs` headless tabs and `--natives` native peers (real processes), and a rogue
//! peer that breaks the gossip rules on every connection and keeps reconnecting. While it runs:
//! - **churn**: half the native peers come and go: every `--churn-secs` one of them leaves
//!   (SIGTERM, or SIGKILL every other time, as a crash would) and a new peer joins in its place;
//!   every two minutes a tab reloads (it leaves and joins again with the same identity);
//! - **operations** from random peers, tabs and natives alike, every 1.5 s: DHT puts of new keys,
//!   gets of keys already acknowledged, calls of the `echo` service the natives offer; and a
//!   Chandy-Lamport snapshot from a tab every minute;
//! - **gossip**: three natives search for primes (at 10% of a core) so that `PRIME`
//!   announcements flow; tabs move to direct WebRTC connections as they meet.
//!
//! It samples every 10 s and prints, every minute and at the end: the relay's resident memory
//! and connections, each tab's memory (from the page: the Rust heap in use, WebAssembly memory
//! and the JavaScript heap),
//! peers holding a reservation, records acknowledged and lost, operations by outcome and errors
//! by kind. It fails when:
//! - anything panicked (relay, native peer or tab), or the relay or a steady native peer exited
//!   unasked;
//! - a record that the network acknowledged (stored at one other peer at least) cannot be read
//!   back at the end, from two peers in turn;
//! - the relay's or a tab's memory grew without bound: after a warm-up (the first quarter of
//!   the run, at least a minute), the median of the last three samples exceeds the median of the
//!   first three by half and by more than a fixed slack (32 MB for the relay's resident memory,
//!   16 MB for a tab's Rust heap in use; a tab's WebAssembly memory only grows, it is the most
//!   the tab ever held, so it is shown, not judged); a short run can only catch a steep leak, a
//!   long one a slow leak. A reloaded tab starts with a fresh heap, so each stretch of a tab's
//!   life between reloads is judged on its own, after a warm-up of its own;
//! - an honest peer was banned by another: every ban any tab or native reports must name the
//!   rogue.
//!
//! The processes' logs stay in `target/e2e/soak/` (a leaving native's log is deleted unless it
//! panicked).

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tabmesh_core::view::NodeView;
use tabmesh_e2e::{
    Browser, BrowserOptions, NativeNode, Relay, RelayOptions, Rogue, Tab, bin_path, run_dir,
    target_dir, wait_until,
};

use crate::shell::{self, cargo};
use crate::web;

/// How often the soak samples memory, connections and views.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// How often an operation starts.
const OP_EVERY: Duration = Duration::from_millis(1500);
/// How often a tab reloads.
const RELOAD_EVERY: Duration = Duration::from_secs(120);
/// How often a tab takes a snapshot.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(60);
/// An operation not settled by then counts as never settled (every operation has a deadline
/// of its own, 30 s for the DHT, and the page gives up on its node after 150 s at most).
const SETTLE: Duration = Duration::from_secs(180);
/// Native peers that search for primes, so that gossip flows.
const SEARCHERS: usize = 3;
/// Memory growth below these is never called a leak (allocator and cache noise).
const RELAY_SLACK_MB: f64 = 32.0;
const TAB_SLACK_MB: f64 = 16.0;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SoakArgs {
    /// How long the churn and the operations go on, in minutes.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=1440))]
    minutes: u32,
    /// Browser tabs (headless Chromium).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=24))]
    tabs: u16,
    /// Native peers, one process each; half of them come and go.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(4..=200))]
    natives: u16,
    /// Seconds between two native peers leaving (and two new ones joining in their place).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..=3600))]
    churn_secs: u64,
    /// Seed of the random choices (peers, operations), printed at the start of every run.
    #[arg(long)]
    seed: Option<u64>,
    /// Run the debug binaries (as `cargo xtask test` builds them) instead of release builds.
    #[arg(long)]
    debug: bool,
}

impl SoakArgs {
    /// The short soak of the test command.
    pub(crate) fn for_tests() -> Self {
        let minutes = std::env::var("TABMESH_SOAK_MINUTES")
            .ok()
            .and_then(|m| m.parse().ok())
            .unwrap_or(3);
        Self {
            minutes,
            tabs: 8,
            // 50 debug-built natives alone keep both cores of the CI machine busy; the full
            // figure is for `cargo xtask soak` (release builds).
            natives: 16,
            churn_secs: 6,
            seed: None,
            debug: true,
        }
    }

    fn inner_args(&self) -> Vec<String> {
        let mut args = vec![
            "--minutes".to_owned(),
            self.minutes.to_string(),
            "--tabs".to_owned(),
            self.tabs.to_string(),
            "--natives".to_owned(),
            self.natives.to_string(),
            "--churn-secs".to_owned(),
            self.churn_secs.to_string(),
        ];
        if let Some(seed) = self.seed {
            args.extend(["--seed".to_owned(), seed.to_string()]);
        }
        args
    }
}

/// `cargo xtask soak`: builds what it needs, then runs the soak in a loopback-only namespace.
pub(crate) fn run(args: SoakArgs) -> anyhow::Result<()> {
    crate::setup::system_tools(crate::setup::BROWSER_TESTS, "the soak")?;
    crate::setup::wasm_opt()?;
    web::build(web::Profile::Release, true)?;
    if args.debug {
        shell::run(cargo().args(["build", "-p", "tabmesh-relay", "-p", "tabmesh-node-cli"]))?;
    } else {
        web::build_release_binaries()?;
    }
    run_built(&args)
}

/// The soak with the web app and the binaries already built (the test command's case).
pub(crate) fn run_built(args: &SoakArgs) -> anyhow::Result<()> {
    let profile = if args.debug { "debug" } else { "release" };
    let mut inner = Command::new(std::env::current_exe()?);
    inner
        .arg("soak-inner")
        .args(args.inner_args())
        .env("TABMESH_BIN_DIR", target_dir().join(profile))
        .current_dir(shell::root());
    shell::run(&mut shell::in_loopback_namespace(&inner)?)
}

/// The part that runs inside the namespace.
pub(crate) fn run_inner(args: SoakArgs) -> anyhow::Result<()> {
    let failures = tokio::runtime::Runtime::new()?.block_on(soak(args))?;
    if failures.is_empty() {
        println!("soak: passed");
        return Ok(());
    }
    for failure in &failures {
        println!("soak FAILED: {failure}");
    }
    anyhow::bail!("the soak failed ({} problem(s) above)", failures.len())
}

/// What an operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Put,
    Get,
    Call,
    Snapshot,
    FinalGet,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::Put => "put",
            Self::Get => "get",
            Self::Call => "call",
            Self::Snapshot => "snapshot",
            Self::FinalGet => "final get",
        }
    }
}

/// Where an operation ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    Tab,
    Native,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Self::Tab => "tab",
            Self::Native => "native",
        }
    }
}

/// An operation under way.
#[derive(Debug, Clone)]
struct Pending {
    op: Op,
    /// A tab's or a native's.
    from: Peer,
    key: String,
    value: String,
    started: Instant,
}

/// One tab and what it has under way (by label).
struct TabSlot {
    tab: Tab,
    pending: HashMap<String, Pending>,
    /// When it last reloaded: operations wait until its page is back.
    reloaded_at: Option<Instant>,
    /// When it reloaded, seconds into the run: its heap starts afresh at each.
    reload_secs: Vec<f64>,
}

impl TabSlot {
    /// Whether its page has had time to load again since its last reload.
    fn ready(&self) -> bool {
        self.reloaded_at
            .is_none_or(|at| at.elapsed() > Duration::from_secs(15))
    }
}

/// One native peer.
struct NativeSlot {
    node: NativeNode,
    /// Answers already read.
    seen: usize,
    pending: Option<Pending>,
}

/// A record the network acknowledged.
#[derive(Debug, Clone)]
struct Acked {
    value: String,
    stored_at: u64,
}

/// Running totals.
#[derive(Debug, Default)]
struct Tally {
    /// (operation, outcome) → durations in ms.
    outcomes: BTreeMap<(Op, Peer, String), Vec<f64>>,
    acked: BTreeMap<String, Acked>,
    /// Acknowledged keys a mid-run get did not find.
    missed: u64,
    leaves_term: u64,
    leaves_kill: u64,
    joins: u64,
    reloads: u64,
    interrupted: u64,
    panics: Vec<String>,
    deaths: Vec<String>,
    honest_bans: Vec<String>,
    rogue_bans_seen: u64,
    /// Keys the final read-back found.
    final_found: std::collections::BTreeSet<String>,
}

impl Tally {
    fn record(&mut self, p: &Pending, outcome: String, ms: f64) {
        self.outcomes
            .entry((p.op, p.from, outcome))
            .or_default()
            .push(ms);
    }

    fn counts(&self) -> (usize, usize) {
        let ok = self
            .outcomes
            .iter()
            .filter(|((_, _, o), _)| o.starts_with("ok"))
            .map(|(_, v)| v.len())
            .sum();
        let all: usize = self.outcomes.values().map(Vec::len).sum();
        (ok, all - ok)
    }
}

/// One sample.
#[derive(Debug, Clone, Default)]
struct Sample {
    secs: f64,
    relay_mb: f64,
    relay_connections: f64,
    reserved: usize,
    /// Per tab: Rust heap in use, WebAssembly memory and JavaScript heap, MB (None while
    /// reloading).
    tab_live_mb: Vec<Option<f64>>,
    tab_wasm_mb: Vec<Option<f64>>,
    tab_heap_mb: Vec<Option<f64>>,
    tab_peers: Vec<(usize, usize)>,
    /// Per tab: what its node holds (spans, records, provider records, Kademlia queries), to
    /// see what a growing heap is made of.
    tab_holds: Vec<String>,
    natives_up: usize,
}

/// The soak; returns what failed.
async fn soak(args: SoakArgs) -> anyhow::Result<Vec<String>> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = SmallRng::seed_from_u64(seed);
    let run_for = Duration::from_secs(u64::from(args.minutes) * 60);
    let dir = run_dir("soak")?;
    println!(
        "soak: {} min, relay + {} tabs + {} native peers (half of them churning, one leaving \
         every {} s) + 1 rogue; seed {seed}; logs in {}",
        args.minutes,
        args.tabs,
        args.natives,
        args.churn_secs,
        dir.display()
    );
    // Every peer here shares one address (127.0.0.1), so the relay's per-address rates, meant
    // for one household or office behind a NAT, would throttle the whole network: raised, as an
    // operator would for a single-host test bed. The per-peer rates stay at their defaults.
    let mut relay_options = RelayOptions::new(&dir)?;
    relay_options.extra_args = [
        "--circuit-rate-per-ip",
        "100000",
        "--reservation-rate-per-ip",
        "100000",
    ]
    .map(str::to_owned)
    .to_vec();
    let relay = Relay::start(relay_options, dir.join("relay.log")).await?;
    let url = relay.url();
    let natives_dir = dir.join("natives");
    std::fs::create_dir_all(&natives_dir)?;
    let mut generation = 0u32;
    let mut start_native = |slot: usize| -> anyhow::Result<NativeSlot> {
        generation += 1;
        let log = natives_dir.join(format!("native-{slot}-{generation}.log"));
        let mut extra = vec!["--status-interval", "15", "--offer", "echo"];
        if slot < SEARCHERS {
            extra.extend(["--search-interval", "5", "--search-pace", "10"]);
        } else {
            extra.push("--no-search");
        }
        Ok(NativeSlot {
            node: NativeNode::start_with(&bin_path("tabmesh-node"), &url, &extra, log)?,
            seen: 0,
            pending: None,
        })
    };
    let steady = usize::from(args.natives) / 2;
    let mut natives: Vec<Option<NativeSlot>> = Vec::new();
    for slot in 0..usize::from(args.natives) {
        natives.push(Some(start_native(slot)?));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    let tab_url = format!("{url}/?search=off");
    let tabs: Vec<TabSlot> = browser
        .open_tabs_together(usize::from(args.tabs), &tab_url)
        .await?
        .into_iter()
        .map(|tab| TabSlot {
            tab,
            pending: HashMap::new(),
            reloaded_at: None,
            reload_secs: Vec::new(),
        })
        .collect();
    let joined = Instant::now();
    let want = usize::from(args.tabs) - 1 + steady;
    // Progress every 20 s: a mesh that forms slowly says where it stands.
    let last_progress = std::cell::Cell::new(Instant::now());
    wait_until(
        "every tab reserved at the relay and connected to the other tabs and the steady natives",
        Duration::from_secs(300),
        || {
            let (browser, tabs, last_progress) = (&browser, &tabs, &last_progress);
            async move {
                let mut missing = None;
                let mut counts = Vec::new();
                for (i, slot) in tabs.iter().enumerate() {
                    let Some(view) = browser.state(&slot.tab).await? else {
                        return Ok(Err(format!("tab {i} has no state yet")));
                    };
                    counts.push(view.peers.len());
                    if missing.is_none()
                        && (!view.relay.link.reservation || view.peers.len() < want)
                    {
                        missing = Some(format!(
                            "tab {i}: reservation {}, {} of {want} peers",
                            view.relay.link.reservation,
                            view.peers.len()
                        ));
                    }
                }
                if last_progress.get().elapsed() >= Duration::from_secs(20) {
                    last_progress.set(Instant::now());
                    println!(
                        "soak: meshing for {:.0} s: the tabs have {counts:?} of {want} peers",
                        joined.elapsed().as_secs_f64()
                    );
                }
                Ok(missing.map_or(Ok(()), Err))
            }
        },
    )
    .await?;
    println!(
        "soak: the mesh formed in {:.1} s; the rogue joins and the churn starts",
        joined.elapsed().as_secs_f64()
    );
    let rogue = Rogue::start(&url, "gossip", dir.join("rogue.log"))?;
    // Its bans are told apart by its peer id: wait for it, before it can offend anyone.
    wait_until("the rogue names itself", Duration::from_secs(60), || {
        let id = rogue.peer_id();
        async move { Ok(id.map(|_| ()).ok_or_else(|| "no peer id yet".to_owned())) }
    })
    .await?;

    let mut state = Soak {
        args: args.clone(),
        relay,
        browser,
        tabs,
        natives,
        steady,
        tally: Tally::default(),
        samples: Vec::new(),
        next_key: 0,
        rogue,
        leaving: Vec::new(),
    };
    let start = Instant::now();
    let end = start + run_for;
    let churn_every = Duration::from_secs(args.churn_secs);
    let (mut next_churn, mut next_op, mut next_sample) = (start + churn_every, start, start);
    let (mut next_reload, mut next_snapshot) = (start + RELOAD_EVERY, start + SNAPSHOT_EVERY);
    let mut kill_next = false;
    let mut minute = 0u64;
    let mut next_poll = start;
    while Instant::now() < end {
        let now = Instant::now();
        // Churn that fell due while the loop lagged happens now, two at a time at most.
        for _ in 0..2 {
            if Instant::now() < next_churn {
                break;
            }
            next_churn += churn_every;
            let slot = rng.gen_range(state.steady..state.natives.len());
            state.churn(slot, kill_next, &mut start_native)?;
            kill_next = !kill_next;
        }
        // When the loop falls behind (WebDriver calls are slow on a busy machine), the
        // operations due meanwhile start now, a few at a time.
        for _ in 0..4 {
            if Instant::now() < next_op {
                break;
            }
            next_op += OP_EVERY;
            let op = match rng.gen_range(0..20) {
                0..8 => Op::Put,
                8..15 if !state.tally.acked.is_empty() => Op::Get,
                8..15 => Op::Put,
                _ => Op::Call,
            };
            state.start_op(op, &mut rng).await?;
        }
        if now >= next_snapshot {
            next_snapshot += SNAPSHOT_EVERY;
            let ready: Vec<usize> = (0..state.tabs.len())
                .filter(|&i| state.tabs[i].ready())
                .collect();
            if !ready.is_empty() {
                let i = ready[rng.gen_range(0..ready.len())];
                state
                    .start_tab_op(i, Op::Snapshot, String::new(), String::new())
                    .await?;
            }
        }
        if now >= next_reload {
            next_reload += RELOAD_EVERY;
            let i = rng.gen_range(0..state.tabs.len());
            state.reload(i, start.elapsed().as_secs_f64()).await?;
        }
        if now >= next_poll {
            next_poll = now + Duration::from_secs(1);
            state.poll().await?;
        }
        if now >= next_sample {
            next_sample += SAMPLE_EVERY;
            state.sample(start).await?;
            let minutes = now.duration_since(start).as_secs() / 60;
            if minutes > minute {
                minute = minutes;
                state.print_line();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("soak: churn and operations stopped; waiting for what is under way");
    let drain = Instant::now();
    while state.under_way() > 0 && drain.elapsed() < SETTLE {
        state.poll().await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    state.expire_pending();
    state.sample(start).await?;
    state.print_line();
    let lost = state.read_back_every_record().await?;
    state.finish_leaving().await;
    let failures = state.report(&lost);
    let Soak { relay, browser, .. } = state;
    browser.quit().await?;
    relay.stop()?;
    Ok(failures)
}

/// The soak's running state.
struct Soak {
    args: SoakArgs,
    relay: Relay,
    browser: Browser,
    tabs: Vec<TabSlot>,
    natives: Vec<Option<NativeSlot>>,
    /// Natives below this slot stay; the rest come and go.
    steady: usize,
    tally: Tally,
    samples: Vec<Sample>,
    next_key: u64,
    rogue: Rogue,
    /// Natives being stopped: (what, task returning whether its log shows a panic).
    leaving: Vec<(String, tokio::task::JoinHandle<anyhow::Result<bool>>)>,
}

impl Soak {
    /// One native leaves (SIGKILL or SIGTERM) and a new one joins in its slot.
    fn churn(
        &mut self,
        slot: usize,
        kill: bool,
        start_native: &mut impl FnMut(usize) -> anyhow::Result<NativeSlot>,
    ) -> anyhow::Result<()> {
        if let Some(old) = self.natives[slot].take() {
            if old.pending.is_some() {
                self.tally.interrupted += 1;
            }
            let what = format!("native {slot} ({})", old.node.log.display());
            let log = old.node.log.clone();
            let node = old.node;
            self.leaving.push((
                what,
                tokio::task::spawn_blocking(move || {
                    if kill {
                        node.kill()?;
                    } else {
                        node.stop()?;
                    }
                    let panicked = std::fs::read_to_string(&log)
                        .is_ok_and(|text| text.contains("panicked at"));
                    if !panicked {
                        let _ = std::fs::remove_file(&log);
                    }
                    Ok(panicked)
                }),
            ));
            if kill {
                self.tally.leaves_kill += 1;
            } else {
                self.tally.leaves_term += 1;
            }
        }
        self.natives[slot] = Some(start_native(slot)?);
        self.tally.joins += 1;
        Ok(())
    }

    /// Starts `op` from a random peer (a tab or a native, half and half).
    async fn start_op(&mut self, op: Op, rng: &mut SmallRng) -> anyhow::Result<()> {
        let (key, value) = match op {
            Op::Put => {
                self.next_key += 1;
                let n = self.next_key;
                (
                    format!("soak-{n}"),
                    format!("v{n}-{:08x}", rng.r#gen::<u32>()),
                )
            }
            Op::Get => {
                let keys: Vec<&String> = self.tally.acked.keys().collect();
                let key = keys[rng.gen_range(0..keys.len())].clone();
                let value = self.tally.acked[&key].value.clone();
                (key, value)
            }
            _ => (String::new(), format!("{}", rng.r#gen::<u32>())),
        };
        let ready: Vec<usize> = (0..self.tabs.len())
            .filter(|&i| self.tabs[i].ready())
            .collect();
        let idle: Vec<usize> = (0..self.natives.len())
            .filter(|&i| {
                self.natives[i]
                    .as_ref()
                    .is_some_and(|n| n.pending.is_none())
            })
            .collect();
        if !ready.is_empty() && (idle.is_empty() || rng.gen_bool(0.5)) {
            let i = ready[rng.gen_range(0..ready.len())];
            return self.start_tab_op(i, op, key, value).await;
        }
        if idle.is_empty() {
            return Ok(());
        }
        let slot = idle[rng.gen_range(0..idle.len())];
        let line = match op {
            Op::Put => format!("put {key} {value}"),
            Op::Get | Op::FinalGet => format!("get {key}"),
            Op::Call => format!("call echo echo {{\"n\":{value}}}"),
            Op::Snapshot => "snapshot".to_owned(),
        };
        let native = self.natives[slot].as_mut().context("idle native")?;
        native.node.send(&line)?;
        native.pending = Some(Pending {
            op,
            from: Peer::Native,
            key,
            value,
            started: Instant::now(),
        });
        Ok(())
    }

    async fn start_tab_op(
        &mut self,
        i: usize,
        op: Op,
        key: String,
        value: String,
    ) -> anyhow::Result<()> {
        let expression = match op {
            Op::Put => format!("tabmesh.put('{key}', '{value}')"),
            Op::Get | Op::FinalGet => format!("tabmesh.get('{key}')"),
            Op::Call => format!("tabmesh.call('echo', 'echo', {{n: {value}}})"),
            Op::Snapshot => "tabmesh.snapshot()".to_owned(),
        };
        self.next_key += 1;
        let label = format!("op{}", self.next_key);
        let slot = &mut self.tabs[i];
        self.browser.begin(&slot.tab, &label, &expression).await?;
        slot.pending.insert(
            label,
            Pending {
                op,
                from: Peer::Tab,
                key,
                value,
                started: Instant::now(),
            },
        );
        Ok(())
    }

    /// Reloads tab `i`, `secs` into the run: it leaves and joins again (same identity, from
    /// sessionStorage).
    async fn reload(&mut self, i: usize, secs: f64) -> anyhow::Result<()> {
        let slot = &mut self.tabs[i];
        self.tally.interrupted += slot.pending.len() as u64;
        slot.pending.clear();
        self.browser.reload(&slot.tab).await?;
        slot.reloaded_at = Some(Instant::now());
        slot.reload_secs.push(secs);
        self.tally.reloads += 1;
        Ok(())
    }

    fn under_way(&self) -> usize {
        self.tabs.iter().map(|t| t.pending.len()).sum::<usize>()
            + self
                .natives
                .iter()
                .flatten()
                .filter(|n| n.pending.is_some())
                .count()
    }

    /// Collects the outcomes of what has settled.
    async fn poll(&mut self) -> anyhow::Result<()> {
        let mut outcomes = Vec::new();
        for slot in &mut self.tabs {
            if slot.pending.is_empty() {
                continue;
            }
            self.browser.switch(&slot.tab).await?;
            let taken = self
                .browser
                .client()
                .execute(
                    // Deletes what it takes from the object itself: an operation under way
                    // holds that object and writes its outcome there when it settles.
                    "const kept = window.__tabmeshSettled || {};\
                     const taken = {};\
                     for (const label of Object.keys(kept)) {\
                         taken[label] = kept[label];\
                         delete kept[label];\
                     }\
                     return taken;",
                    vec![],
                )
                .await?;
            let Value::Object(taken) = taken else {
                continue;
            };
            for (label, outcome) in taken {
                if let Some(pending) = slot.pending.remove(&label) {
                    let result = match (outcome.get("ok"), outcome.get("err")) {
                        (Some(v), _) => Ok(v.clone()),
                        (_, Some(e)) => Err(e.as_str().unwrap_or_default().to_owned()),
                        _ => Err(format!("unexpected outcome {outcome}")),
                    };
                    // The page's own measure: this poll comes up to a second or so later.
                    let ms = outcome.get("ms").and_then(Value::as_f64);
                    outcomes.push((pending, result, ms));
                }
            }
        }
        for native in self.natives.iter_mut().flatten() {
            let Some(pending) = &native.pending else {
                continue;
            };
            let answers = native.node.answers_timed(&[
                "dht",
                "dht_error",
                "call",
                "call_error",
                "snapshot",
                "error",
            ]);
            let Some((at, answer)) = answers.get(native.seen) else {
                continue;
            };
            native.seen = answers.len();
            // Timed when the node printed its answer, not when this loop came round to it
            // (which on a busy machine is a minute or more later).
            let ms = at.saturating_duration_since(pending.started).as_secs_f64() * 1e3;
            // Errors first: a `call_error` line also names the call under `call`.
            let error = ["dht_error", "call_error", "error"]
                .iter()
                .find_map(|k| answer.get(*k))
                .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned));
            let result = match error {
                Some(e) => Err(e),
                None => ["dht", "call", "snapshot"]
                    .iter()
                    .find_map(|k| answer.get(*k).cloned())
                    .ok_or_else(|| answer.to_string()),
            };
            outcomes.push((pending.clone(), result, Some(ms)));
            native.pending = None;
        }
        for (pending, result, ms) in outcomes {
            self.settle(pending, result, ms);
        }
        self.expire_stuck();
        Ok(())
    }

    /// Operations past [`SETTLE`] count as never settled.
    fn expire_stuck(&mut self) {
        let mut stuck = Vec::new();
        for slot in &mut self.tabs {
            slot.pending.retain(|_, p| {
                let keep = p.started.elapsed() < SETTLE;
                if !keep {
                    stuck.push(p.clone());
                }
                keep
            });
        }
        for native in self.natives.iter_mut().flatten() {
            if native
                .pending
                .as_ref()
                .is_some_and(|p| p.started.elapsed() >= SETTLE)
                && let Some(p) = native.pending.take()
            {
                stuck.push(p);
            }
        }
        for p in stuck {
            self.tally
                .record(&p, "never settled".to_owned(), SETTLE.as_secs_f64() * 1e3);
        }
    }

    /// At the end: whatever is still under way never settled.
    fn expire_pending(&mut self) {
        for slot in &mut self.tabs {
            for (_, p) in slot.pending.drain() {
                self.tally.record(
                    &p,
                    "never settled".to_owned(),
                    p.started.elapsed().as_secs_f64() * 1e3,
                );
            }
        }
        for native in self.natives.iter_mut().flatten() {
            if let Some(p) = native.pending.take() {
                self.tally.record(
                    &p,
                    "never settled".to_owned(),
                    p.started.elapsed().as_secs_f64() * 1e3,
                );
            }
        }
    }

    /// Counts one outcome.
    fn settle(&mut self, pending: Pending, result: Result<Value, String>, ms: Option<f64>) {
        let ms = ms.unwrap_or_else(|| pending.started.elapsed().as_secs_f64() * 1e3);
        let outcome = match result {
            Err(message) => error_kind(&message),
            Ok(reply) => match pending.op {
                Op::Put => {
                    let stored_at = reply["stored_at"].as_u64().unwrap_or(0);
                    if stored_at > 0 {
                        self.tally.acked.insert(
                            pending.key.clone(),
                            Acked {
                                value: pending.value.clone(),
                                stored_at,
                            },
                        );
                        "ok".to_owned()
                    } else {
                        "ok but stored at no other peer".to_owned()
                    }
                }
                Op::Get | Op::FinalGet => match reply["record"]["value"].as_str() {
                    Some(v) if v == pending.value => {
                        if pending.op == Op::FinalGet {
                            self.tally.final_found.insert(pending.key.clone());
                        }
                        "ok".to_owned()
                    }
                    Some(v) => format!("WRONG value {v:?}"),
                    None => {
                        if pending.op == Op::Get {
                            self.tally.missed += 1;
                        }
                        "acknowledged record not found".to_owned()
                    }
                },
                Op::Call => {
                    if reply["reply"]["n"]
                        .as_u64()
                        .map(|n| n.to_string())
                        .as_deref()
                        == Some(pending.value.as_str())
                    {
                        "ok".to_owned()
                    } else {
                        format!("WRONG reply {}", reply["reply"])
                    }
                }
                Op::Snapshot => {
                    if reply["complete"].as_bool() == Some(true) {
                        "ok (complete)".to_owned()
                    } else {
                        "ok (incomplete: a peer left during it)".to_owned()
                    }
                }
            },
        };
        self.tally.record(&pending, outcome, ms);
    }

    /// Memory, connections and views; panics, deaths and bans.
    async fn sample(&mut self, start: Instant) -> anyhow::Result<()> {
        let mut sample = Sample {
            secs: start.elapsed().as_secs_f64(),
            relay_mb: crate::bench::rss_kb(self.relay.pid()).unwrap_or(0) as f64 / 1024.0,
            relay_connections: self
                .relay
                .metric("tabmesh_relay_connections_open")
                .await
                .unwrap_or(f64::NAN),
            ..Sample::default()
        };
        let rogue = self.rogue.peer_id();
        let mut views: Vec<(String, NodeView)> = Vec::new();
        for (i, slot) in self.tabs.iter().enumerate() {
            let memory = self
                .browser
                .call(&slot.tab, "tabmesh.memory()")
                .await
                .ok()
                .and_then(Result::ok);
            let mb = |field: &str| {
                memory
                    .as_ref()
                    .and_then(|m| m[field].as_f64())
                    .map(|b| b / 1048576.0)
            };
            sample.tab_live_mb.push(mb("heap_bytes"));
            sample.tab_wasm_mb.push(mb("wasm_bytes"));
            sample.tab_heap_mb.push(mb("js_heap_bytes"));
            let crash = self
                .browser
                .call(&slot.tab, "window.tabmeshCrash || null")
                .await
                .ok()
                .and_then(Result::ok);
            if let Some(Value::String(message)) = crash {
                let what = format!("tab {i}: {message}");
                if !self.tally.panics.contains(&what) {
                    self.tally.panics.push(what);
                }
            }
            match self.browser.state(&slot.tab).await.ok().flatten() {
                Some(view) => {
                    let direct = view
                        .peers
                        .iter()
                        .filter(|p| p.connection.as_str() == "direct")
                        .count();
                    sample.tab_peers.push((view.peers.len(), direct));
                    sample.tab_holds.push(holds(&view));
                    views.push((format!("tab {i}"), view));
                }
                None => {
                    sample.tab_peers.push((0, 0));
                    sample.tab_holds.push("-".to_owned());
                }
            }
        }
        for (slot, native) in self.natives.iter_mut().enumerate() {
            let Some(n) = native else { continue };
            if let Some(status) = n.node.exited() {
                let panicked =
                    std::fs::read_to_string(&n.node.log).is_ok_and(|t| t.contains("panicked at"));
                let what = format!("native {slot} exited unasked ({status})");
                if panicked {
                    self.tally
                        .panics
                        .push(format!("{what}: see {}", n.node.log.display()));
                } else {
                    self.tally.deaths.push(what);
                }
                *native = None;
                continue;
            }
            sample.natives_up += 1;
            if let Some(view) = n.node.state() {
                views.push((format!("native {slot}"), view));
            }
        }
        for (who, view) in &views {
            if view.relay.link.reservation {
                sample.reserved += 1;
            }
            for ban in &view.banned {
                if Some(&ban.peer_id) == rogue.as_ref() {
                    continue;
                }
                let what = format!(
                    "{who} banned {} ({}): {}",
                    ban.name, ban.peer_id, ban.reason
                );
                if !self.tally.honest_bans.contains(&what) {
                    self.tally.honest_bans.push(what);
                }
            }
        }
        self.tally.rogue_bans_seen = self.tally.rogue_bans_seen.max(
            views
                .iter()
                .filter(|(_, v)| v.banned.iter().any(|b| Some(&b.peer_id) == rogue.as_ref()))
                .count() as u64,
        );
        self.samples.push(sample);
        Ok(())
    }

    fn print_line(&self) {
        let Some(s) = self.samples.last() else {
            return;
        };
        let range = |values: &[Option<f64>]| {
            let known: Vec<f64> = values.iter().flatten().copied().collect();
            if known.is_empty() {
                return "-".to_owned();
            }
            let lo = known.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = known.iter().copied().fold(0.0, f64::max);
            format!("{lo:.1}–{hi:.1}")
        };
        let peers: Vec<String> = s
            .tab_peers
            .iter()
            .map(|(all, direct)| format!("{all}/{direct}"))
            .collect();
        let (ok, failed) = self.tally.counts();
        println!(
            "[{:>5.1} min] relay {:.1} MB, {:.0} conns | {} reserved | tab rust heap {} MB, \
             wasm {} MB, js heap {} MB | \
             tab peers/direct {} | natives up {} | records acked {}, missed {} | ops ok {ok}, \
             not ok {failed} | panics {}",
            s.secs / 60.0,
            s.relay_mb,
            s.relay_connections,
            s.reserved,
            range(&s.tab_live_mb),
            range(&s.tab_wasm_mb),
            range(&s.tab_heap_mb),
            peers.join(" "),
            s.natives_up,
            self.tally.acked.len(),
            self.tally.missed,
            self.tally.panics.len(),
        );
        let holds: Vec<String> = (s.tab_live_mb.iter().zip(&s.tab_holds))
            .enumerate()
            .map(|(i, (mb, holds))| match mb {
                Some(mb) => format!("tab {i} {mb:.1} MB: {holds}"),
                None => format!("tab {i}: {holds}"),
            })
            .collect();
        println!("          holds | {}", holds.join(" | "));
    }

    /// Reads every acknowledged record back, from a tab and then, if it missed, from a steady
    /// native; returns the keys neither found.
    async fn read_back_every_record(&mut self) -> anyhow::Result<Vec<String>> {
        let keys: Vec<(String, String)> = self
            .tally
            .acked
            .iter()
            .map(|(k, a)| (k.clone(), a.value.clone()))
            .collect();
        println!(
            "soak: reading back the {} acknowledged record(s)",
            keys.len()
        );
        let mut lost = Vec::new();
        for chunk in keys.chunks(self.tabs.len() * 2) {
            for (n, (key, value)) in chunk.iter().enumerate() {
                let i = n % self.tabs.len();
                self.start_tab_op(i, Op::FinalGet, key.clone(), value.clone())
                    .await?;
            }
            let began = Instant::now();
            while self.tabs.iter().any(|t| !t.pending.is_empty()) && began.elapsed() < SETTLE {
                tokio::time::sleep(Duration::from_millis(300)).await;
                self.poll().await?;
            }
            self.expire_pending();
        }
        // A key the tabs missed gets a second chance from a steady native.
        for (key, value) in keys {
            if self.tally.final_found.contains(&key) {
                continue;
            }
            if !self.get_from_native(&key, &value).await? {
                lost.push(key);
            }
        }
        Ok(lost)
    }

    /// A get of `key` from a steady native; whether it found `value`.
    async fn get_from_native(&mut self, key: &str, value: &str) -> anyhow::Result<bool> {
        let Some(slot) = (0..self.steady).find(|&i| self.natives[i].is_some()) else {
            return Ok(false);
        };
        self.natives[slot]
            .as_mut()
            .context("steady native")?
            .node
            .send(&format!("get {key}"))?;
        if let Some(native) = self.natives[slot].as_mut() {
            native.pending = Some(Pending {
                op: Op::FinalGet,
                from: Peer::Native,
                key: key.to_owned(),
                value: value.to_owned(),
                started: Instant::now(),
            });
        }
        let began = Instant::now();
        while self.natives[slot]
            .as_ref()
            .is_some_and(|n| n.pending.is_some())
            && began.elapsed() < SETTLE
        {
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.poll().await?;
        }
        self.expire_pending();
        Ok(self.tally.final_found.contains(key))
    }

    /// Waits for the natives that were leaving; a panic in one's log counts.
    async fn finish_leaving(&mut self) {
        for (what, task) in self.leaving.drain(..) {
            match task.await {
                Ok(Ok(false)) => {}
                Ok(Ok(true)) => self.tally.panics.push(format!("{what} panicked")),
                Ok(Err(e)) => self
                    .tally
                    .deaths
                    .push(format!("{what}: stopping it: {e:#}")),
                Err(e) => self.tally.deaths.push(format!("{what}: {e}")),
            }
        }
    }

    /// Prints the figures and returns what failed.
    fn report(&self, lost: &[String]) -> Vec<String> {
        let mut failures = Vec::new();
        let t = &self.tally;
        println!("== soak: {} min ==", self.args.minutes);
        println!(
            "churn: {} native leaves ({} SIGTERM, {} SIGKILL; asked: one every {} s), {} joins, \
             {} tab reloads; {} operation(s) cut short by them",
            t.leaves_term + t.leaves_kill,
            t.leaves_term,
            t.leaves_kill,
            self.args.churn_secs,
            t.joins,
            t.reloads,
            t.interrupted
        );
        println!("operations (outcome: count, median and worst time):");
        for ((op, from, outcome), times) in &t.outcomes {
            let mut sorted = times.clone();
            sorted.sort_by(f64::total_cmp);
            println!(
                "  {:<10} {:<7} {:<52} {:>5}  median {:>8.0} ms  worst {:>8.0} ms",
                op.name(),
                from.name(),
                outcome,
                times.len(),
                sorted[sorted.len() / 2],
                sorted[sorted.len() - 1]
            );
            if outcome.starts_with("WRONG") {
                failures.push(format!("{} answered wrongly: {outcome}", op.name()));
            }
            if outcome == "never settled" {
                failures.push(format!(
                    "{} {} from a {} never settled (within {} s)",
                    times.len(),
                    op.name(),
                    from.name(),
                    SETTLE.as_secs()
                ));
            }
        }
        let most_copies = t.acked.values().map(|a| a.stored_at).max().unwrap_or(0);
        println!(
            "records: {} acknowledged (stored at up to {most_copies} other peers), {} missed by \
             a get during the run, {} lost (not found at the end from a tab nor a native)",
            t.acked.len(),
            t.missed,
            lost.len()
        );
        if !lost.is_empty() {
            failures.push(format!(
                "{} acknowledged record(s) lost: {}",
                lost.len(),
                lost.join(", ")
            ));
        }
        println!("memory (MB) by minute (tabs: Rust heap in use / WebAssembly memory):");
        let by_minute: Vec<&Sample> = self
            .samples
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                *i + 1 == self.samples.len()
                    || self
                        .samples
                        .get(i + 1)
                        .is_some_and(|n| (n.secs / 60.0).floor() > (s.secs / 60.0).floor())
            })
            .map(|(_, s)| s)
            .collect();
        println!(
            "  {:>6} {:>8} {}",
            "min",
            "relay",
            (0..self.tabs.len())
                .map(|i| format!("{:>12}", format!("tab {i}")))
                .collect::<String>()
        );
        for s in &by_minute {
            println!(
                "  {:>6.1} {:>8.1} {}",
                s.secs / 60.0,
                s.relay_mb,
                s.tab_live_mb
                    .iter()
                    .zip(&s.tab_wasm_mb)
                    .map(|(live, wasm)| {
                        let mb = |m: &Option<f64>| m.map_or("-".to_owned(), |m| format!("{m:.1}"));
                        format!("{:>12}", format!("{}/{}", mb(live), mb(wasm)))
                    })
                    .collect::<String>()
            );
        }
        let warmup = (self.args.minutes as f64 * 60.0 / 4.0).max(60.0);
        let relay: Vec<(f64, f64)> = self.samples.iter().map(|s| (s.secs, s.relay_mb)).collect();
        match growth(&relay, warmup, RELAY_SLACK_MB) {
            Growth::Leak(what) => failures.push(format!("the relay's memory grew: {what}")),
            Growth::Bounded(what) => println!("relay memory after the warm-up: {what}"),
            Growth::TooShort => println!("relay memory: too few samples after the warm-up"),
        }
        for i in 0..self.tabs.len() {
            let series: Vec<(f64, f64)> = self
                .samples
                .iter()
                .filter_map(|s| Some((s.secs, s.tab_live_mb.get(i).copied().flatten()?)))
                .collect();
            for (from, judged) in
                growth_between_reloads(&series, &self.tabs[i].reload_secs, warmup, TAB_SLACK_MB)
            {
                let since = if from > 0.0 {
                    format!("its reload at {:.1} min and a warm-up", from / 60.0)
                } else {
                    "the warm-up".to_owned()
                };
                match judged {
                    Growth::Leak(what) => failures.push(format!(
                        "tab {i}'s Rust heap in use grew after {since}: {what}"
                    )),
                    Growth::Bounded(what) => {
                        println!("tab {i} Rust heap in use after {since}: {what}")
                    }
                    Growth::TooShort => {}
                }
            }
        }
        println!(
            "rogue: banned by {} honest peer(s) at once at most; honest peers banned: {}",
            t.rogue_bans_seen,
            t.honest_bans.len()
        );
        for ban in &t.honest_bans {
            failures.push(format!("an honest peer was banned: {ban}"));
        }
        let relay_log = std::fs::read_to_string(&self.relay.log).unwrap_or_default();
        if relay_log.contains("panicked at") {
            failures.push(format!(
                "the relay panicked: see {}",
                self.relay.log.display()
            ));
        }
        for panic in &t.panics {
            failures.push(format!("panic: {panic}"));
        }
        for death in &t.deaths {
            failures.push(format!("died: {death}"));
        }
        println!(
            "panics: {}; processes that died unasked: {}",
            t.panics.len() + usize::from(relay_log.contains("panicked at")),
            t.deaths.len()
        );
        failures
    }
}

/// The kind of an error message: its first clause, with numbers replaced by `N`, so that
/// errors group (`no answer in N s while looking the key up before storing`).
fn error_kind(message: &str) -> String {
    let head = message.split([':', '(']).next().unwrap_or(message).trim();
    let mut kind = String::new();
    let mut in_number = false;
    for c in head.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                kind.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            kind.push(c);
        }
    }
    if kind.chars().count() > 60 {
        // Cut, and said to be.
        kind = kind.chars().take(59).chain(['…']).collect();
    }
    kind
}

/// Whether a memory series grew without bound.
#[derive(Debug, PartialEq)]
enum Growth {
    /// Not enough samples after the warm-up to judge.
    TooShort,
    /// Within bounds (what was seen).
    Bounded(String),
    /// Grew (what was seen).
    Leak(String),
}

/// The leak rule: after `warmup_secs`, the median of the last three samples against the median
/// of the first three; a leak when it grew by half and by more than `slack_mb`.
fn growth(series: &[(f64, f64)], warmup_secs: f64, slack_mb: f64) -> Growth {
    let after: Vec<f64> = series
        .iter()
        .filter(|(t, _)| *t >= warmup_secs)
        .map(|(_, mb)| *mb)
        .collect();
    if after.len() < 6 {
        return Growth::TooShort;
    }
    let median3 = |values: &[f64]| {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        v[1]
    };
    let first = median3(&after[..3]);
    let last = median3(&after[after.len() - 3..]);
    let what = format!("{first:.1} MB, then {last:.1} MB");
    if last > first * 1.5 && last - first > slack_mb {
        Growth::Leak(what)
    } else {
        Growth::Bounded(what)
    }
}

/// [`growth`] for each stretch of a series between `reloads` (seconds, in order; the process
/// starts afresh at each), each with a warm-up of its own: (where the stretch starts, verdict).
fn growth_between_reloads(
    series: &[(f64, f64)],
    reloads: &[f64],
    warmup_secs: f64,
    slack_mb: f64,
) -> Vec<(f64, Growth)> {
    let starts = std::iter::once(0.0).chain(reloads.iter().copied());
    let ends = reloads
        .iter()
        .copied()
        .chain(std::iter::once(f64::INFINITY));
    starts
        .zip(ends)
        .map(|(from, to)| {
            let stretch: Vec<(f64, f64)> = series
                .iter()
                .filter(|(t, _)| *t >= from && *t < to)
                .copied()
                .collect();
            (from, growth(&stretch, from + warmup_secs, slack_mb))
        })
        .collect()
}

/// "2300 spans (3900 KB), 110 records, 60 providers, 3 queries": what a node holds, in short.
fn holds(view: &NodeView) -> String {
    let (spans, span_kb) = view
        .trace
        .as_ref()
        .map_or((0, 0), |t| (t.spans_held, t.bytes_held / 1024));
    let (records, providers, queries) = view.dht.as_ref().map_or((0, 0, 0), |d| {
        (
            d.records.len(),
            d.providers.len(),
            d.queries.values().sum::<u64>(),
        )
    });
    format!(
        "{spans} spans ({span_kb} KB), {records} records, {providers} providers, {queries} queries"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[f64]) -> Vec<(f64, f64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64 * 10.0, *v))
            .collect()
    }

    #[test]
    fn steady_or_noisy_memory_is_bounded() {
        let flat = series(&[50.0, 80.0, 100.0, 101.0, 99.0, 100.0, 104.0, 98.0, 102.0]);
        assert!(matches!(growth(&flat, 20.0, 32.0), Growth::Bounded(_)));
    }

    #[test]
    fn the_warm_up_is_not_a_leak_but_later_growth_is() {
        // Growing fast during the warm-up only: bounded.
        let warm = series(&[10.0, 40.0, 100.0, 100.0, 101.0, 100.0, 100.0, 102.0, 101.0]);
        assert!(matches!(growth(&warm, 20.0, 32.0), Growth::Bounded(_)));
        // Growing after it: a leak.
        let leak = series(&[10.0, 40.0, 100.0, 110.0, 120.0, 140.0, 160.0, 180.0, 200.0]);
        assert!(matches!(growth(&leak, 20.0, 32.0), Growth::Leak(_)));
    }

    #[test]
    fn small_absolute_growth_is_under_the_slack() {
        // +60% but only 12 MB: allocator noise for a small process.
        let small = series(&[20.0, 20.0, 20.0, 20.0, 21.0, 24.0, 30.0, 32.0, 32.0]);
        assert!(matches!(growth(&small, 0.0, 16.0), Growth::Bounded(_)));
    }

    #[test]
    fn a_reload_starts_a_stretch_with_a_warm_up_of_its_own() {
        // Steady, reloaded at 30 s (a fresh heap), warming up again, then steady: bounded.
        let reloaded = series(&[
            10.0, 40.0, 100.0, 4.0, 40.0, 100.0, 100.0, 101.0, 100.0, 100.0, 102.0, 101.0,
        ]);
        let judged = growth_between_reloads(&reloaded, &[30.0], 20.0, 32.0);
        assert_eq!(judged.len(), 2);
        assert_eq!(
            judged[0].1,
            Growth::TooShort,
            "one sample after the first warm-up"
        );
        assert!(matches!(judged[1].1, Growth::Bounded(_)), "{judged:?}");
        // Judged as one stretch, the same series would read as a leak.
        assert!(matches!(growth(&reloaded, 20.0, 32.0), Growth::Leak(_)));
        // Growth after a stretch's warm-up is still a leak.
        let leak = series(&[
            10.0, 10.0, 4.0, 40.0, 100.0, 110.0, 120.0, 140.0, 160.0, 180.0, 200.0,
        ]);
        let judged = growth_between_reloads(&leak, &[20.0], 20.0, 32.0);
        assert!(matches!(judged[1].1, Growth::Leak(_)), "{judged:?}");
    }

    #[test]
    fn too_few_samples_after_the_warm_up_are_not_judged() {
        let short = series(&[10.0, 20.0, 30.0, 40.0, 50.0, 60.0]);
        assert_eq!(growth(&short, 20.0, 1.0), Growth::TooShort);
    }

    #[test]
    fn errors_group_by_their_first_clause() {
        assert_eq!(
            error_kind(
                "no answer in 30 s while looking the key up before storing: 3 of 20 peer(s) asked"
            ),
            "no answer in N s while looking the key up before storing"
        );
        assert_eq!(
            error_kind("timed out after 15000 ms"),
            "timed out after N ms"
        );
        let long = error_kind(&"a provider was not found in time ".repeat(4));
        assert_eq!(long.chars().count(), 60);
        assert!(long.ends_with('…'), "{long}");
    }
}
