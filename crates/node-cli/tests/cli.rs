//! `tabmesh-node` as a real process: arguments, an unreachable relay, garbage, joining.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tabmesh_core::peers::PeerKind;
use tabmesh_core::relay_link::LinkStatus;
use tabmesh_e2e::{NativeNode, Relay, RelayOptions, Rogue, free_port, run_dir, wait_until};

const NODE: &str = env!("CARGO_BIN_EXE_tabmesh-node");

fn relay_bin() -> PathBuf {
    // The relay is a sibling binary in the same target directory.
    Path::new(NODE).with_file_name("tabmesh-relay")
}

#[test]
fn wrong_arguments_exit_non_zero_with_a_message() {
    for (args, says) in [
        (
            &["--bootstrap", "relay.example"][..],
            "expected the relay's http(s):// URL or a multiaddr",
        ),
        (
            &["--bootstrap", "/ip4/127.0.0.1/tcp/9090"],
            "must end with /p2p/",
        ),
        (&["--listen", "nonsense"], "invalid value"),
        (&["--status-interval", "0"], "invalid value"),
    ] {
        let out = Command::new(NODE).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn an_unreachable_relay_is_reported_and_retried() -> anyhow::Result<()> {
    let dir = run_dir("node-unreachable")?;
    let closed = format!("http://127.0.0.1:{}", free_port()?);
    let node = NativeNode::start_with(Path::new(NODE), &closed, &[], dir.join("node.log"))?;
    let view = wait_until(
        "the node reports the failure",
        Duration::from_secs(30),
        || {
            let state = node.state();
            async move {
                Ok(match state {
                    Some(v) if v.relay.link.attempt >= 2 => Ok(v),
                    Some(v) => Err(format!("relay state {:?}", v.relay.link)),
                    None => Err("no state yet".into()),
                })
            }
        },
    )
    .await?;
    assert!(!view.relay.link.connected);
    let error = view.relay.link.last_error.unwrap_or_default();
    assert!(error.contains(&closed), "names the URL: {error}");
    node.stop()?;
    Ok(())
}

#[tokio::test]
async fn native_nodes_meet_and_survive_garbage() -> anyhow::Result<()> {
    let dir = run_dir("node-garbage")?;
    let mut options = RelayOptions::new(&dir)?;
    options.bin = relay_bin();
    let relay = Relay::start(options, dir.join("relay.log")).await?;
    let port = free_port()?;
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let a = NativeNode::start_with(
        Path::new(NODE),
        &relay.url(),
        &["--listen", &listen],
        dir.join("a.log"),
    )?;
    let b = NativeNode::start_with(Path::new(NODE), &relay.url(), &[], dir.join("b.log"))?;
    let (a_view, b_view) = wait_until(
        "the two nodes list each other",
        Duration::from_secs(60),
        || {
            let (a, b) = (a.state(), b.state());
            async move {
                Ok(match (a, b) {
                    (Some(a), Some(b))
                        if a.peers.iter().any(|p| p.peer_id == b.peer_id)
                            && b.peers.iter().any(|p| p.peer_id == a.peer_id) =>
                    {
                        Ok((a, b))
                    }
                    (a, b) => Err(format!(
                        "a: {:?} peers, b: {:?} peers",
                        a.map(|v| v.peers.len()),
                        b.map(|v| v.peers.len())
                    )),
                })
            }
        },
    )
    .await?;
    assert_eq!(a_view.relay.link.state, LinkStatus::Reserved);
    // Each reached the relay with one connection: neither dialed it twice at once and dropped
    // the slower connection in its handshake (the relay logs that as a rejected connection).
    let relay_log = std::fs::read_to_string(&relay.log)?;
    let rejected: Vec<&str> = relay_log
        .lines()
        .filter(|l| l.contains("rejected incoming connection"))
        .collect();
    assert!(rejected.is_empty(), "{rejected:#?}");
    assert!(b_view.peers.iter().all(|p| p.kind == PeerKind::Native));

    let mut garbage = std::net::TcpStream::connect(("127.0.0.1", port))?;
    garbage.write_all(b"\x00\x01\x02 definitely not multistream-select\n")?;
    drop(garbage);
    wait_until(
        "the garbage is counted and the node keeps its peer",
        Duration::from_secs(30),
        || {
            let a = a.state();
            let b_id = b_view.peer_id.clone();
            async move {
                Ok(match a {
                    Some(v)
                        if v.counters.incoming_errors >= 1
                            && v.peers.iter().any(|p| p.peer_id == b_id) =>
                    {
                        Ok(())
                    }
                    other => Err(format!("{:?}", other.map(|v| v.counters))),
                })
            }
        },
    )
    .await?;

    // A node that is stopped says goodbye cleanly: its peers' connections close first, the
    // relay's (which carries their circuits) after, and nothing fails on the way out.
    let b_log = b.log.clone();
    assert!(b.stop()?.success());
    let log = std::fs::read_to_string(&b_log)?;
    let (_, after) = log
        .split_once("shutting down")
        .ok_or_else(|| anyhow::anyhow!("b did not say it was shutting down:\n{log}"))?;
    let complaints: Vec<&str> = after
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(complaints.is_empty(), "{complaints:#?}");
    a.stop()?;
    relay.stop()?;
    Ok(())
}

#[tokio::test]
async fn the_relay_bans_a_peer_storing_forged_records_and_refuses_it_when_it_returns()
-> anyhow::Result<()> {
    let dir = run_dir("relay-ban")?;
    let mut options = RelayOptions::new(&dir)?;
    options.bin = relay_bin();
    options.extra_args = vec!["--ban-secs".into(), "30".into()];
    let relay = Relay::start(options, dir.join("relay.log")).await?;
    // `tabmesh-rogue --offence dht` stores records that are no signed envelopes at the relay,
    // three per connection, and keeps reconnecting.
    let _rogue = Rogue::start(&relay.url(), "dht", dir.join("rogue.log"))?;
    let relay = &relay;
    wait_until(
        "the relay bans the rogue and refuses it when it comes back",
        Duration::from_secs(60),
        || async move {
            let strikes = relay.metric("tabmesh_relay_protocol_violations_total").await?;
            let bans = relay.metric("tabmesh_relay_peers_banned_total").await?;
            let refused = relay
                .metric("tabmesh_relay_connections_refused_banned_total")
                .await?;
            let refused_records = relay.metric("tabmesh_relay_dht_records_refused_total").await?;
            Ok(if bans >= 1.0 && refused >= 1.0 {
                Ok((strikes, refused_records))
            } else {
                Err(format!(
                    "{strikes} strikes, {bans} bans, {refused} refused, {refused_records} records refused"
                ))
            })
        },
    )
    .await
    .map(|(strikes, refused_records)| {
        assert!(strikes >= 3.0, "{strikes}");
        assert!(refused_records >= 3.0, "{refused_records}");
    })?;
    assert_eq!(
        relay
            .metric("tabmesh_relay_dht_records_stored_total")
            .await?,
        0.0
    );
    let log = std::fs::read_to_string(&relay.log)?;
    assert!(log.contains("peer banned"), "the ban is logged");
    Ok(())
}
