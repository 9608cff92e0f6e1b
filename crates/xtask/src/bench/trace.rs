//! Tracing figures: what recording costs, and how long a learner waits for a drawn trace.
//!
//! - Gossip, in-process (release build, `crates/core/examples/gossip_trace_overhead.rs`, run by
//!   [`gossip_cpu`]): messages per second an 8-node full mesh handles spreading every known
//!   Mersenne prime, with tracing on and off (signature checks included, network excluded).
//! - Service calls between two native nodes over TCP (one offers `echo`, the other takes the
//!   calls of 16 HTTP clients on its gateway): calls per second with tracing on and off
//!   (`--no-tracing`), five rounds of one run each, compared round by round. Native, because 8
//!   tabs sharing two cores vary by a third from one run to the next, far more than what is
//!   measured.
//! - A `PRIME` spread across 8 tabs: the time `tabmesh.trace(id)` takes to gather it, and from
//!   the click in the Tracing panel to the space-time diagram drawn.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tabmesh_client::{Message, NodeConnection};
use tabmesh_e2e::{
    Browser, BrowserOptions, NativeNode, Relay, RelayOptions, bin_path, free_port, gossip_peers,
    reset_and_await_prime_trace, run_dir, wait_until,
};

use super::services::js;
use super::{summary, summary_digits};

const PATIENCE: Duration = Duration::from_secs(120);

/// Runs the tracing figures that need the loopback namespace (the gossip one runs before).
pub(super) async fn run() -> anyhow::Result<()> {
    println!(
        "== tracing: echo calls between two native nodes (16 HTTP clients, 5 s), on against off =="
    );
    // Rounds alternate on and off; each round's pair is compared, as the level drifts from
    // round to round more than between the two runs of one round.
    let mut differences = Vec::new();
    for round in 1..=5 {
        let on = native_calls(round, true).await?;
        let off = native_calls(round, false).await?;
        let difference = (off - on) / off * 100.0;
        println!(
            "round {round}: tracing on {on:>6.0}, off {off:>6.0} calls/s: on is {difference:+.1}% slower"
        );
        differences.push(difference);
    }
    differences.sort_by(f64::total_cmp);
    println!(
        "overhead, median of the rounds: {:.1}% (from {:.1}% to {:.1}%)",
        differences[differences.len() / 2],
        differences[0],
        differences[differences.len() - 1]
    );
    gather_and_draw().await
}

/// Gossip messages per second in-process, traced or not (printed by the release example).
pub(super) fn gossip_cpu() -> anyhow::Result<()> {
    println!("== tracing: GIMPS gossip in-process, 8-node full mesh, every known prime spread ==");
    crate::shell::run(crate::shell::cargo().args([
        "run",
        "--quiet",
        "--release",
        "-p",
        "tabmesh-core",
        "--example",
        "gossip_trace_overhead",
    ]))
}

/// Calls per second from 16 HTTP clients through a native node's gateway to a native provider.
async fn native_calls(round: u32, traced: bool) -> anyhow::Result<f64> {
    let label = if traced { "on" } else { "off" };
    let dir = run_dir(&format!("bench-trace-calls-{round}-{label}"))?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let mut provider_args = vec!["--offer", "echo"];
    let http = format!("127.0.0.1:{}", free_port()?);
    // The gateway's per-IP limit would measure itself, not the calls: lifted for the bench.
    let mut caller_args = vec![
        "--http",
        http.as_str(),
        "--gateway-rate-per-ip",
        "100000",
        "--gateway-burst-per-ip",
        "100000",
    ];
    if !traced {
        provider_args.push("--no-tracing");
        caller_args.push("--no-tracing");
    }
    let node = bin_path("tabmesh-node");
    let provider = NativeNode::start_with(
        &node,
        &relay.url(),
        &provider_args,
        dir.join("provider.log"),
    )?;
    let caller = NativeNode::start_with(&node, &relay.url(), &caller_args, dir.join("caller.log"))?;
    let connection = wait_until("the caller's gateway reaches echo", PATIENCE, || async {
        let Ok(connection) = NodeConnection::connect(&format!("http://{http}")).await else {
            return Ok(Err("no gateway yet".to_owned()));
        };
        Ok(
            match connection
                .send(&Message::new("echo", "echo", json!({"n": 0})))
                .await
            {
                Ok(_) => Ok(connection),
                Err(e) => Err(e.to_string()),
            },
        )
    })
    .await?;
    let seconds = 5.0;
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let connection = connection.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            while Instant::now() < until {
                if connection
                    .send(&Message::new("echo", "echo", json!({"n": 1})))
                    .await
                    .is_ok()
                {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for task in tasks {
        ok += task.await?;
    }
    caller.stop()?;
    provider.stop()?;
    relay.stop()?;
    Ok(ok as f64 / seconds)
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
        let id = reset_and_await_prime_trace(&browser, tab, PATIENCE).await?;
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
