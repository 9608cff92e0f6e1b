//! Tracing figures: what recording costs, and how long a learner waits for a drawn trace.
//!
//! - Gossip, in-process: messages per second an 8-node full mesh handles spreading every known
//!   Mersenne prime, with tracing on and off (the same `GossipNode` the tabs run; signature
//!   checks included, network excluded): the cost of the spans themselves.
//! - Service calls in 8 tabs (direct WebRTC, one echo provider): calls per second with 1 and 7
//!   calling tabs, `?tracing=on` against `?tracing=off`, alternated twice to show the noise.
//! - A `PRIME` spread across 8 tabs: the time `tabmesh.trace(id)` takes to gather it, and from
//!   the click in the Tracing panel to the space-time diagram drawn.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p_identity::Keypair;
use serde_json::Value;
use tabmesh_core::gimps::lucas_lehmer::{KNOWN_MERSENNE_EXPONENTS, VERIFIED_BELOW};
use tabmesh_core::gimps::node::{GossipAction, GossipConfig, GossipNode};
use tabmesh_e2e::{
    Browser, BrowserOptions, Relay, RelayOptions, gossip_peers, run_dir, wait_until,
};

use super::services::{js, mesh, started, throughput};
use super::{summary, summary_digits};

const PATIENCE: Duration = Duration::from_secs(120);

/// Runs every tracing figure.
pub(super) async fn run() -> anyhow::Result<()> {
    gossip_cpu();
    println!("== tracing: echo calls across 8 tabs (direct), tracing on against off ==");
    for round in 1..=2 {
        for (label, query) in [("on ", ""), ("off", "&tracing=off")] {
            service_throughput(round, label, query).await?;
        }
    }
    gather_and_draw().await
}

/// Messages per second an 8-node mesh handles, traced or not.
fn gossip_cpu() {
    println!("== tracing: GIMPS gossip in-process, 8-node full mesh, every known prime spread ==");
    let mut rates: HashMap<bool, Vec<f64>> = HashMap::new();
    for _ in 0..3 {
        for traced in [false, true] {
            let (messages, spans, took) = spread_all(traced);
            rates
                .entry(traced)
                .or_default()
                .push(messages as f64 / took.as_secs_f64());
            if traced && rates[&true].len() == 1 {
                println!("(each run: {messages} messages, {spans} spans recorded when traced)");
            }
        }
    }
    for traced in [false, true] {
        println!(
            "tracing {}  {}",
            if traced { "on " } else { "off" },
            summary_digits(rates[&traced].clone(), "messages/s", 0)
        );
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (off, on) = (median(&rates[&false]), median(&rates[&true]));
    println!("overhead (median)  {:.1}%", (off - on) / off * 100.0);
}

/// Spreads every verified Mersenne prime from rotating finders through a fresh 8-node mesh;
/// returns the messages delivered, the spans recorded and the time the deliveries took.
fn spread_all(traced: bool) -> (u64, u64, Duration) {
    let t0 = web_time::Instant::now();
    let keys: Vec<Keypair> = (1..=8u8)
        .map(|s| Keypair::ed25519_from_bytes([s; 32]).expect("32 bytes"))
        .collect();
    let ids: Vec<_> = keys.iter().map(|k| k.public().to_peer_id()).collect();
    let index: HashMap<_, _> = ids.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let mut nodes: Vec<GossipNode> = keys
        .into_iter()
        .map(|k| GossipNode::new(k, GossipConfig::default(), t0, t0))
        .collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        if traced {
            node.trace_with(1_700_000_000_000, i as u64);
        }
        for id in &ids {
            node.on_peer_connected(t0, *id);
        }
    }
    let (mut messages, mut spans) = (0u64, 0u64);
    let started = Instant::now();
    let primes = KNOWN_MERSENNE_EXPONENTS
        .iter()
        .filter(|p| **p < VERIFIED_BELOW && **p > 2);
    for (n, p) in primes.enumerate() {
        let finder = n % nodes.len();
        let mut queue: VecDeque<(usize, GossipAction)> = nodes[finder]
            .on_tested(t0, *p, true)
            .into_iter()
            .map(|a| (finder, a))
            .collect();
        while let Some((from, action)) = queue.pop_front() {
            match action {
                GossipAction::Send { to, message } => {
                    messages += 1;
                    let i = index[&to];
                    let bytes = message.encode();
                    for next in nodes[i].on_message(t0, ids[from], &bytes) {
                        queue.push_back((i, next));
                    }
                }
                GossipAction::Traced(_) => spans += 1,
                _ => {}
            }
        }
    }
    (messages, spans, started.elapsed())
}

async fn service_throughput(round: u32, label: &str, query: &str) -> anyhow::Result<()> {
    let dir = run_dir(&format!("bench-trace-calls-{round}-{}", label.trim()))?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    let url = format!("{}/?search_interval=3600{query}", relay.url());
    for _ in 0..8 {
        browser.open_tab(&url).await?;
    }
    let tabs = browser.tabs().to_vec();
    for tab in &tabs {
        started(&browser, tab).await?;
    }
    mesh(&browser, true).await?;
    js(&browser, &tabs[0], "window.tabmesh.builtin('echo', true)").await?;
    let callers = &tabs[1..];
    for tab in callers {
        let browser = &browser;
        wait_until("the echo provider is found", PATIENCE, || async move {
            browser
                .call(tab, "window.tabmesh.call('echo', 'echo', {n: 0})")
                .await
        })
        .await?;
    }
    let one = throughput(&browser, &callers[..1], 8, 5_000).await?;
    let seven = throughput(&browser, callers, 8, 5_000).await?;
    println!("round {round}, tracing {label}: 1 caller x 8 loops {one}");
    println!("round {round}, tracing {label}: 7 callers x 8 loops {seven}");
    browser.quit().await?;
    relay.stop()?;
    Ok(())
}

/// The newest trace of a `PRIME` found by `tab` since `since` (Unix ms).
async fn prime_trace(
    browser: &Browser,
    tab: &tabmesh_e2e::Tab,
    since: u64,
) -> anyhow::Result<String> {
    wait_until("a PRIME found since the reset", PATIENCE, || async move {
        let view = browser
            .state(tab)
            .await?
            .ok_or_else(|| anyhow::anyhow!("stopped"))?;
        Ok(view
            .trace
            .and_then(|t| {
                t.recent.into_iter().find(|r| {
                    r.root_here && r.name.starts_with("gimps.prime") && r.start_ms >= since
                })
            })
            .map(|r| r.trace_id.to_string())
            .ok_or_else(|| "not yet".to_owned()))
    })
    .await
}

async fn gather_and_draw() -> anyhow::Result<()> {
    let dir = run_dir("bench-trace-draw")?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    let url = format!("{}/?search_interval=2", relay.url());
    for _ in 0..8 {
        browser.open_tab(&url).await?;
    }
    let tabs = browser.tabs().to_vec();
    wait_until("8 tabs gossip with each other", PATIENCE, || async {
        for tab in &tabs {
            let view = browser.state(tab).await?;
            if view.as_ref().is_none_or(|v| gossip_peers(v).len() < 7) {
                return Ok(Err("a tab gossips with fewer than 7".to_owned()));
            }
        }
        Ok(Ok(()))
    })
    .await?;
    let (mut gather, mut draw, mut sizes) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..5 {
        let tab = &tabs[run % tabs.len()];
        browser.switch(tab).await?;
        let since = js(&browser, tab, "Date.now()")
            .await?
            .as_f64()
            .unwrap_or(0.0) as u64;
        js(&browser, tab, "window.tabmesh.reset()").await?;
        let id = prime_trace(&browser, tab, since).await?;
        // Let the spread finish (every copy acknowledged) before timing.
        let spans = wait_until("the spread reached the 7 others", PATIENCE, || async {
            let trace = js(&browser, tab, &format!("window.tabmesh.trace('{id}')")).await?;
            let receivers: std::collections::BTreeSet<&str> = trace["spans"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| {
                    s["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("gimps.receive"))
                })
                .filter_map(|s| s["peer"].as_str())
                .collect();
            let n = trace["spans"].as_array().map_or(0, Vec::len);
            Ok(if receivers.len() == 7 {
                Ok(n)
            } else {
                Err(format!("{} receivers", receivers.len()))
            })
        })
        .await?;
        let timed = js(
            &browser,
            tab,
            &format!(
                "(async () => {{ const t = performance.now(); const tr = await window.tabmesh.trace('{id}'); \
                 return {{ms: performance.now() - t, spans: tr.spans.length}}; }})()"
            ),
        )
        .await?;
        gather.push(timed["ms"].as_f64().unwrap_or(f64::NAN));
        sizes.push(spans as f64);
        let drawn: Value = js(
            &browser,
            tab,
            &format!(
                "(async () => {{ document.querySelector('[data-testid=tracing-panel]').scrollIntoView(); \
                 const t = performance.now(); \
                 document.querySelector(\"[data-testid=trace-recent] button[data-trace='{id}']\").click(); \
                 while (document.querySelectorAll(\"[data-trace='{id}'] [data-testid=lane-arrow]\").length < 7) \
                   await new Promise(r => setTimeout(r, 2)); \
                 return performance.now() - t; }})()"
            ),
        )
        .await?;
        draw.push(drawn.as_f64().unwrap_or(f64::NAN));
    }
    println!("== tracing: a PRIME spread across 8 tabs (TTL 2, full mesh), 5 runs ==");
    println!(
        "spans per trace          {}",
        summary_digits(sizes, "spans", 0)
    );
    println!("gather (tabmesh.trace)   {}", summary(gather));
    println!("click to diagram drawn   {}", summary(draw));
    browser.quit().await?;
    relay.stop()?;
    Ok(())
}
