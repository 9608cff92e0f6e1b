//! `cargo xtask testbed`: the libp2p testbed's scenario with native nodes.
//!
//! A relay and N native nodes (release builds) on loopback; once every node is connected to
//! every other (a full mesh), peer 0 sends a traced ping to a random peer, gathers the trace
//! from the peers it crossed and prints it as a tree: the root span on peer 0, the child span
//! of the remote handling on the peer pinged, each with its start and duration on peer 0's clock.
//! Then, as the testbed does, it ends with a global snapshot: every peer runs the token demo,
//! peer 0 takes a Chandy-Lamport snapshot and a naive one, and both are printed with their
//! checks. With `--otlp-endpoint` every process also sends its spans to an OpenTelemetry
//! collector (a Jaeger started next to it shows the same trace). The processes' logs stay in
//! `target/e2e/testbed/`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;
use tabmesh_core::PeerId;
use tabmesh_core::names::peer_name;
use tabmesh_core::trace::assemble::{Trace, tree};
use tabmesh_e2e::{NativeNode, Relay, RelayOptions, run_dir, target_dir, wait_until};

use crate::web;

/// How long the mesh and each answer may take.
const PATIENCE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TestbedArgs {
    /// Native peers in the mesh.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..=32))]
    peers: u16,
    /// Also export every process's spans to this OpenTelemetry collector (OTLP/HTTP), e.g.
    /// http://127.0.0.1:4318 (Jaeger).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
}

pub(crate) fn run(args: TestbedArgs) -> anyhow::Result<()> {
    web::build_release_binaries()?;
    tokio::runtime::Runtime::new()?.block_on(scenario(args))
}

fn name_of(peer: &str) -> String {
    peer.parse::<PeerId>()
        .map(|p| peer_name(&p))
        .unwrap_or_else(|_| peer.to_owned())
}

async fn scenario(args: TestbedArgs) -> anyhow::Result<()> {
    let dir = run_dir("testbed")?;
    let release = target_dir().join("release");
    let otlp: Vec<String> = args
        .otlp_endpoint
        .iter()
        .flat_map(|url| ["--otlp-endpoint".to_owned(), url.clone()])
        .collect();
    let mut options = RelayOptions::new(&dir)?;
    options.bin = release.join("tabmesh-relay");
    options.extra_args = otlp.clone();
    let relay = Relay::start(options, dir.join("relay.log")).await?;
    println!("relay at {} (logs in {})", relay.url(), dir.display());

    let started = Instant::now();
    let mut nodes = Vec::new();
    let node_args: Vec<&str> = otlp.iter().map(String::as_str).collect();
    for i in 0..args.peers {
        nodes.push(NativeNode::start_with(
            &release.join("tabmesh-node"),
            &relay.url(),
            &node_args,
            dir.join(format!("peer-{i}.log")),
        )?);
    }
    let ids = wait_until(
        &format!("a full mesh of {} peers", args.peers),
        PATIENCE,
        || async {
            let views: Vec<_> = nodes.iter().filter_map(NativeNode::state).collect();
            if views.len() < nodes.len() {
                return Ok(Err("not every peer has started".to_owned()));
            }
            let ids: BTreeSet<String> = views.iter().map(|v| v.peer_id.clone()).collect();
            let missing: usize = views
                .iter()
                .map(|v| {
                    let linked: BTreeSet<&str> =
                        v.peers.iter().map(|p| p.peer_id.as_str()).collect();
                    ids.iter()
                        .filter(|id| **id != v.peer_id && !linked.contains(id.as_str()))
                        .count()
                })
                .sum();
            Ok(if missing == 0 {
                Ok(ids)
            } else {
                Err(format!("{missing} links missing"))
            })
        },
    )
    .await?;
    println!(
        "full mesh of {} peers in {:.1} s: {}",
        ids.len(),
        started.elapsed().as_secs_f64(),
        ids.iter()
            .map(|id| name_of(id))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let peer0 = &nodes[0];
    peer0.send("traceping")?;
    let ping = wait_until("peer 0's traced ping is answered", PATIENCE, || async {
        Ok(answer(peer0, "trace_ping", "traceping"))
    })
    .await??;
    let trace_id = ping["trace_id"]
        .as_str()
        .context("the ping names its trace")?
        .to_owned();
    println!(
        "peer 0 ({}) pinged {} at random: {} ms round trip, trace {trace_id}",
        name_of(peer0.state().map(|v| v.peer_id).as_deref().unwrap_or("?")),
        ping["peer_name"].as_str().unwrap_or("?"),
        ping["rtt_ms"]
    );
    peer0.send(&format!("trace {trace_id}"))?;
    let gathered = wait_until("peer 0 gathers the trace", PATIENCE, || async {
        Ok(answer(peer0, "trace", "trace"))
    })
    .await??;
    let trace: Trace = serde_json::from_value(gathered).context("reading the trace")?;
    println!();
    for line in tree(&trace, &name_of) {
        println!("{line}");
    }
    if let Some(url) = &args.otlp_endpoint {
        println!("\nspans also sent to {url}: look the trace up by its id there");
    }

    // The snapshot at the end: everyone trades tokens, peer 0 takes a snapshot and a naive one.
    wait_until(
        "an ordered channel between every two peers",
        PATIENCE,
        || async {
            let full = nodes.iter().filter_map(NativeNode::state).all(|v| {
                v.snapshot
                    .as_ref()
                    .is_some_and(|s| s.channel_peers.len() + 1 >= ids.len())
            });
            Ok(if full {
                Ok(())
            } else {
                Err("not yet".to_owned())
            })
        },
    )
    .await?;
    for node in &nodes {
        node.send("tokens on")?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "\nevery peer trades tokens (the token demo); peer 0 takes a snapshot, then a naive one"
    );
    for command in ["snapshot", "snapshot naive"] {
        let before = peer0.answers(&["snapshot"]).len();
        peer0.send(command)?;
        let taken = wait_until(&format!("peer 0's {command}"), PATIENCE, || async {
            let answers = peer0.answers(&["snapshot", "error"]);
            Ok(match answers.last() {
                Some(a) if a["command"] == "snapshot" => Ok(Err(anyhow::anyhow!(
                    "snapshot: {}",
                    a["error"].as_str().unwrap_or("failed")
                ))),
                _ if peer0.answers(&["snapshot"]).len() > before => Ok(Ok(peer0
                    .answers(&["snapshot"])
                    .last()
                    .cloned()
                    .unwrap_or_default())),
                _ => Err("not yet".to_owned()),
            })
        })
        .await??;
        let snapshot: tabmesh_core::snapshot::state::SnapshotResult =
            serde_json::from_value(taken["snapshot"].clone()).context("reading the snapshot")?;
        println!();
        for line in snapshot.describe() {
            println!("{line}");
        }
    }

    for node in nodes {
        node.stop()?;
    }
    relay.stop()?;
    Ok(())
}

/// The node's latest answer under `key`, or the error it printed for `command`, or not yet.
fn answer(node: &NativeNode, key: &str, command: &str) -> Result<anyhow::Result<Value>, String> {
    let answers = node.answers(&[key, "error"]);
    match answers.last() {
        Some(a) if a.get(key).is_some() => Ok(Ok(a[key].clone())),
        Some(a) if a["command"] == command => Ok(Err(anyhow::anyhow!(
            "{command}: {}",
            a["error"].as_str().unwrap_or("failed")
        ))),
        _ => Err("not yet".to_owned()),
    }
}
