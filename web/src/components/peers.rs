//! The Peers panel: every connected peer with how it is reached (direct WebRTC or through the
//! relay, and where the move to direct stands), its RTT, when last heard and the strikes the
//! misbehaviour ledger holds against it; what the moves to direct connections have cost (offers,
//! duplicates closed, failed dials); below, the peers that are banned, why and for how long.

use tabmesh_core::direct_upgrade::UpgradeState;
use tabmesh_core::ledger::BanView;
use tabmesh_core::peers::{ConnectionKind, PeerView};
use tabmesh_core::view::Counters;
use yew::prelude::*;

use super::ago;
use crate::state::Part;

/// Properties of [`PeersPanel`].
#[derive(Properties, PartialEq)]
pub(crate) struct PeersPanelProps {
    /// Connected peers.
    pub(crate) peers: Part<[PeerView]>,
    /// Banned peers.
    pub(crate) banned: Part<[BanView]>,
    /// The counters of the moves to direct connections.
    pub(crate) upgrades: Part<Counters>,
}

/// The Peers panel.
#[function_component(PeersPanel)]
pub(crate) fn peers_panel(props: &PeersPanelProps) -> Html {
    crate::renders::count("peers");
    let body = if props.peers.is_empty() {
        html! {
            <p class="empty">
                { "No peers yet. Open this page in another tab (or start " }
                <code>{ "tabmesh-node" }</code>{ ") and it will appear here within seconds." }
            </p>
        }
    } else {
        html! {
            <table class="peers">
                <thead>
                    <tr>
                        <th>{ "Peer" }</th><th>{ "Id" }</th><th>{ "Connection" }</th>
                        <th class="num">{ "RTT" }</th><th>{ "Last heard" }</th>
                    </tr>
                </thead>
                <tbody>{ for props.peers.iter().map(peer_row) }</tbody>
            </table>
        }
    };
    html! {
        <section class="panel" data-testid="peers-panel">
            <h2>{ "Peers " }<span class="count">{ props.peers.len() }</span></h2>
            { body }
            { upgrade_costs(&props.upgrades) }
            if !props.banned.is_empty() {
                { banned_table(&props.banned) }
            }
        </section>
    }
}

/// One line on what meeting peers and going direct has cost this tab so far, once it has
/// had a dial cross or an offer out.
fn upgrade_costs(c: &Counters) -> Html {
    if c.webrtc_offers == 0 && c.crossed_dials == 0 {
        return Html::default();
    }
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    html! {
        <p class="upgrade-costs muted" data-testid="upgrade-costs">
            if c.crossed_dials > 0 {
                <span title="Peers this tab dialed through the relay while they dialed it: of the \
                             two dials, the smaller peer id's was kept and the other refused">
                    { plural(c.crossed_dials, "dial crossed", "dials crossed") }
                </span>
                { " · " }
            }
            { "Going direct: " }
            <span title="Direct connections this tab dialed: each a WebRTC offer sent through the relay">
                { plural(c.webrtc_offers, "offer", "offers") }
            </span>
            { " · " }
            <span title="Direct connections this tab closed because another one to the same peer stays: \
                         two offers crossed">
                { plural(c.direct_duplicates_closed, "duplicate closed", "duplicates closed") }
            </span>
            { " · " }
            <span title="This tab's direct dials that failed; each is retried after a backoff (the \
                         reason is in the Event log)">
                { format!("{} failed", c.direct_dials_failed) }
            </span>
        </p>
    }
}

/// The banned peers: who, why, how long still, and how often they knocked meanwhile.
fn banned_table(banned: &[BanView]) -> Html {
    html! {
        <div class="banned" data-testid="banned-peers">
            <h3>{ "Banned " }<span class="count">{ banned.len() }</span></h3>
            <table class="peers">
                <thead>
                    <tr>
                        <th>{ "Peer" }</th><th>{ "Why" }</th><th class="num">{ "Time left" }</th>
                        <th class="num">{ "Refused" }</th>
                    </tr>
                </thead>
                <tbody>
                    { for banned.iter().map(|b| html! {
                        <tr key={b.peer_id.clone()} data-peer-id={b.peer_id.clone()}>
                            <td>
                                <span class="peer-name">{ &b.name }</span>
                                <span class="badge banned" title={format!(
                                    "ban #{} of this peer ({} s in all)", b.offence, b.ban_ms / 1000)}>
                                    { format!("ban #{}", b.offence) }
                                </span>
                            </td>
                            <td class="reason" title={b.reason.clone()}>
                                <span class="proto">{ b.protocol.as_str() }</span>{ " " }{ &b.reason }
                            </td>
                            <td class="num">{ format!("{} s", b.time_left_ms.div_ceil(1000)) }</td>
                            <td class="num" title="connections refused during this ban">
                                { b.refused_connections }
                            </td>
                        </tr>
                    }) }
                </tbody>
            </table>
        </div>
    }
}

fn peer_row(peer: &PeerView) -> Html {
    let (conn_class, conn) = match peer.connection {
        ConnectionKind::Direct => ("badge direct", "direct"),
        ConnectionKind::Relayed => ("badge relayed", "relayed"),
    };
    let rtt = peer
        .rtt_ms
        .map_or_else(|| "…".to_owned(), |r| format!("{r:.1} ms"));
    let (note, title) = upgrade_note(peer);
    html! {
        <tr key={peer.peer_id.clone()} data-peer-id={peer.peer_id.clone()}
            data-connection={conn}>
            <td>
                <span class="peer-name">{ &peer.name }</span>
                <span class={classes!("kind", peer.kind.as_str())}>{ peer.kind.as_str() }</span>
                if peer.strikes > 0 {
                    <span class="badge strikes" data-testid="peer-strikes"
                        title="Protocol violations counted by the misbehaviour ledger; enough of them ban the peer">
                        { format!("⚠ {} strike{}", peer.strikes, if peer.strikes == 1 { "" } else { "s" }) }
                    </span>
                }
            </td>
            <td><code title={peer.peer_id.clone()}>{ &peer.short_id }</code></td>
            <td title={title}>
                <span class={conn_class}>{ conn }</span>
                if !note.is_empty() { <span class="upgrade-note">{ note }</span> }
            </td>
            <td class="num">{ rtt }</td>
            <td class="muted">{ ago(peer.last_heard_ms_ago) }</td>
        </tr>
    }
}

/// A few words on the move to a direct connection, and the details for a tooltip.
fn upgrade_note(peer: &PeerView) -> (String, String) {
    let Some(upgrade) = &peer.upgrade else {
        return match peer.connection {
            ConnectionKind::Relayed => (
                "no WebRTC: stays on the relay".to_owned(),
                "This peer announces no /webrtc address (a native node, or a tab with \
                 ?direct=off), so the connection stays on the relay"
                    .to_owned(),
            ),
            ConnectionKind::Direct => (String::new(), String::new()),
        };
    };
    let secs = |ms: Option<u64>| ms.map_or(0.0, |ms| ms as f64 / 1e3);
    match (peer.connection, upgrade.state) {
        (ConnectionKind::Direct, _) => (
            String::new(),
            upgrade.upgrade_ms.map_or_else(
                || "Direct WebRTC connection".to_owned(),
                |ms| format!("Went direct (WebRTC) {ms} ms after the relayed connection"),
            ),
        ),
        (_, UpgradeState::Attempting) => (
            "going direct…".to_owned(),
            "WebRTC offer sent through the relay".to_owned(),
        ),
        (_, _) if upgrade.failures > 0 => (
            format!(
                "direct failed ×{}, retry in {:.0} s",
                upgrade.failures,
                secs(upgrade.next_attempt_in_ms)
            ),
            upgrade.last_error.clone().unwrap_or_default(),
        ),
        (_, _) => (
            format!("direct in {:.1} s", secs(upgrade.next_attempt_in_ms)),
            "The side that dialed through the relay dials first; the other takes over if \
             nothing comes"
                .to_owned(),
        ),
    }
}
