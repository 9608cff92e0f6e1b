//! The misbehaviour ledger end to end: a rogue peer (`tabmesh-rogue`) that sends malformed
//! gossip to every peer it meets is banned by every tab at its third strike; the tabs show the
//! ban (Peers panel, `state().banned`), refuse the rogue while the ban lasts although it keeps
//! coming back, accept it again when the ban is over and ban it longer when it offends again.
//! The relay runs the same ledger: a rogue storing forged DHT records there is banned too (see
//! `relay/tests/process.rs`).
//!
//! Tabs run with a 4 s first ban (`?ban_secs=4`, the default is 60 s) so that the test sees the
//! ban end; the rules are the same.
//!
//! A rogue can also hurt without breaking a protocol rule: one that takes the circuits opened to
//! it through the relay and never answers (`--offence stall`) makes a native node's circuit to
//! it time out after 60 s, and libp2p's relay client then forgets the node's reservation. The
//! node must ask for it again on the same connection, keeping that connection (and every circuit
//! on it), instead of losing its relay connection to the idle timeout or tearing it down.

use std::time::Duration;

use tabmesh_core::ledger::BanView;
use tabmesh_core::wire_log::Topic;
use tabmesh_e2e::{
    Browser, BrowserOptions, NativeNode, NodeView, Relay, RelayOptions, Rogue, bin_path, run_dir,
    wait_until,
};

const PATIENCE: Duration = Duration::from_secs(120);
const QUERY: &str = "?ban_secs=4&search=off";

/// The ban of `rogue` in `view`, if any.
fn ban_of<'a>(view: &'a NodeView, rogue: &str) -> Option<&'a BanView> {
    view.banned.iter().find(|b| b.peer_id == rogue)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tabs_ban_a_rogue_refuse_it_while_banned_and_ban_it_longer_next_time() -> anyhow::Result<()>
{
    let dir = run_dir("misbehaviour")?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let mut browser = Browser::start(BrowserOptions::new(&dir.join("browser"))).await?;
    let url = format!("{}/{QUERY}", relay.url());
    for _ in 0..2 {
        browser.open_tab(&url).await?;
    }
    let rogue = Rogue::start(&relay.url(), "gossip", dir.join("rogue.log"))?;
    let rogue_id = wait_until("the rogue prints its peer id", PATIENCE, || {
        let id = rogue.peer_id();
        async move { Ok(id.ok_or_else(|| "not yet".to_owned())) }
    })
    .await?;

    // Both tabs ban it: three malformed gossip messages, three strikes. Each tab's view is kept
    // from the moment it first shows the ban: a ban lasts 4 s, and the other tab may ban the
    // rogue later than that, by when the first one's has ended.
    let first_bans = std::sync::Mutex::new(vec![None; browser.tabs().len()]);
    let views = wait_until("both tabs ban the rogue", PATIENCE, || {
        let (browser, rogue_id, first_bans) = (&browser, &rogue_id, &first_bans);
        async move {
            for (i, tab) in browser.tabs().iter().enumerate() {
                if first_bans.lock().expect("not poisoned")[i].is_some() {
                    continue;
                }
                match browser.state(tab).await? {
                    Some(v) if ban_of(&v, rogue_id).is_some() => {
                        first_bans.lock().expect("not poisoned")[i] = Some(v);
                    }
                    Some(v) => {
                        return Ok(Err(format!("{} has not banned it: {:?}", v.name, v.banned)));
                    }
                    None => return Ok(Err("a tab has no state yet".to_owned())),
                }
            }
            Ok(Ok(first_bans
                .lock()
                .expect("not poisoned")
                .iter()
                .flatten()
                .cloned()
                .collect::<Vec<NodeView>>()))
        }
    })
    .await?;
    for view in &views {
        let ban = ban_of(view, &rogue_id).expect("banned");
        assert_eq!(ban.protocol, Topic::Gimps, "{ban:?}");
        assert!(
            ban.reason.contains("3 violations") && ban.reason.contains("malformed"),
            "{ban:?}"
        );
        assert_eq!((ban.offence, ban.ban_ms), (1, 4000), "{ban:?}");
        let gimps = view.gimps.as_ref().expect("gimps state");
        assert_eq!(gimps.state.counters.rejected_malformed, 3, "{}", view.name);
        // The rogue is no peer of theirs any more.
        assert!(
            view.peers.iter().all(|p| p.peer_id != rogue_id),
            "{:?}",
            view.peers
        );
    }

    // The page shows it: the Peers panel's Banned table names the rogue, with why, and which
    // ban it is (read against the tab's state after the page: the first ban may have ended
    // and a second begun meanwhile).
    let tab = &browser.tabs()[0];
    wait_until("the page shows the ban", PATIENCE, || async {
        let panel = browser.text(tab, "[data-testid=banned-peers]").await;
        let state = browser.state(tab).await?;
        let Some(ban) = state.as_ref().and_then(|v| ban_of(v, &rogue_id)) else {
            return Ok(Err("the rogue is not banned now".to_owned()));
        };
        let panel = panel?;
        let shown = panel.contains("Banned")
            && panel.contains(&ban.name)
            && panel.contains("gimps")
            && panel.contains(&format!("ban #{}", ban.offence));
        Ok(if shown {
            Ok(())
        } else {
            Err(format!("{panel} (banned: {ban:?})"))
        })
    })
    .await?;
    browser
        .call(
            tab,
            "(document.querySelector('[data-testid=peers-panel]').scrollIntoView(), true)",
        )
        .await?
        .map_err(|e| anyhow::anyhow!("scroll: {e}"))?;
    browser.screenshot(tab, &dir.join("banned.png")).await?;

    // It comes back every second: refused while the ban lasts, nothing it sends is read.
    wait_until(
        "a tab refuses the rogue while it is banned",
        PATIENCE,
        || {
            let browser = &browser;
            let rogue_id = &rogue_id;
            async move {
                for tab in browser.tabs() {
                    if let Some(v) = browser.state(tab).await?
                        && let Some(ban) = ban_of(&v, rogue_id)
                        && ban.refused_connections > 0
                    {
                        return Ok(Ok(v.counters.refused_banned));
                    }
                }
                Ok(Err("no refusal yet".to_owned()))
            }
        },
    )
    .await?;

    // The ban ends, the rogue is accepted, offends again and is banned four times longer.
    let second = wait_until(
        "a tab bans the rogue a second time, for 16 s",
        PATIENCE,
        || {
            let browser = &browser;
            let rogue_id = &rogue_id;
            async move {
                for tab in browser.tabs() {
                    if let Some(v) = browser.state(tab).await?
                        && ban_of(&v, rogue_id).is_some_and(|b| b.offence == 2)
                    {
                        return Ok(Ok(v));
                    }
                }
                Ok(Err("no second ban yet".to_owned()))
            }
        },
    )
    .await?;
    let ban = ban_of(&second, &rogue_id).expect("banned");
    assert_eq!(ban.ban_ms, 16_000, "{ban:?}");
    let gimps = second.gimps.as_ref().expect("gimps state");
    assert_eq!(
        gimps.state.counters.rejected_malformed, 6,
        "{}",
        second.name
    );
    assert!(
        second.counters.bans >= 2 && second.counters.violations >= 6,
        "{:?}",
        second.counters
    );
    browser.quit().await?;
    Ok(())
}

/// The relay's log lines about `peer` that contain `what`.
fn relay_lines(relay: &Relay, peer: &str, what: &str) -> Vec<String> {
    std::fs::read_to_string(&relay.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(peer) && l.contains(what))
        .map(str::to_owned)
        .collect()
}

/// Whether the rogue has printed a line containing `what`.
fn rogue_said(rogue: &Rogue, what: &str) -> Result<(), String> {
    let log = std::fs::read_to_string(&rogue.log).unwrap_or_default();
    if log.contains(what) {
        Ok(())
    } else {
        Err(format!("not yet; rogue log:\n{log}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_keeps_its_relay_connection_when_a_rogue_stalls_its_circuit() -> anyhow::Result<()>
{
    let dir = run_dir("stalled-circuit")?;
    let relay = Relay::start(RelayOptions::new(&dir)?, dir.join("relay.log")).await?;
    let rogue = Rogue::start(&relay.url(), "stall", dir.join("rogue.log"))?;
    wait_until("the rogue holds a reservation", PATIENCE, || {
        let said = rogue_said(&rogue, "reservation accepted by the relay");
        async move { Ok(said) }
    })
    .await?;
    let node = NativeNode::start_with(
        &bin_path("tabmesh-node"),
        &relay.url(),
        &["--no-search"],
        dir.join("node.log"),
    )?;
    let id = wait_until("the node holds a reservation", PATIENCE, || {
        let state = node.state();
        async move {
            Ok(match state {
                Some(view) if view.relay.link.reservation => Ok(view.peer_id),
                other => Err(format!("{:?}", other.map(|v| v.relay.link))),
            })
        }
    })
    .await?;
    // Discovery names the rogue; the node dials it through the relay, and the rogue takes the
    // circuit and says nothing.
    wait_until("the rogue holds the node's circuit", PATIENCE, || {
        let said = rogue_said(&rogue, "holding circuit #1");
        async move { Ok(said) }
    })
    .await?;
    // 60 s later the node's circuit request times out, and its relay client drops the
    // reservation: the node asks for it again, on the same connection.
    let view = wait_until(
        "the node asks again for the reservation its client dropped",
        Duration::from_secs(150),
        || {
            let state = node.state();
            async move {
                Ok(match state {
                    Some(view) if view.relay.link.dropped >= 1 && view.relay.link.reservation => {
                        Ok(view)
                    }
                    other => Err(format!("{:?}", other.map(|v| v.relay.link))),
                })
            }
        },
    )
    .await?;
    let link = &view.relay.link;
    assert_eq!(link.attempt, 0, "no reconnection attempt: {link:?}");
    let closed = relay_lines(&relay, &id, "last connection closed");
    assert!(
        closed.is_empty(),
        "the node's connection to the relay closed: {closed:?}"
    );
    let accepted = relay_lines(&relay, &id, "reservation accepted");
    assert!(
        accepted.len() >= 2,
        "the relay accepted the node's reservation again: {accepted:?}"
    );
    let note = view
        .wire
        .iter()
        .any(|w| w.protocol == Topic::Relay && w.summary.contains("asking for it again"));
    assert!(
        note,
        "the node's wire log says what happened: {:?}",
        view.wire
    );
    Ok(())
}
