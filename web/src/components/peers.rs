//! The Peers panel: every connected peer with how it is reached, its RTT and when last heard.

use tabmesh_core::peers::{ConnectionKind, PeerView};
use yew::prelude::*;

use super::ago;

/// Properties of [`PeersPanel`].
#[derive(Properties, PartialEq)]
pub(crate) struct PeersPanelProps {
    /// Connected peers.
    pub(crate) peers: Vec<PeerView>,
}

/// The Peers panel.
#[function_component(PeersPanel)]
pub(crate) fn peers_panel(props: &PeersPanelProps) -> Html {
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
        </section>
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
    html! {
        <tr key={peer.peer_id.clone()} data-peer-id={peer.peer_id.clone()}>
            <td>
                <span class="peer-name">{ &peer.name }</span>
                <span class={classes!("kind", peer.kind.clone())}>{ &peer.kind }</span>
            </td>
            <td><code title={peer.peer_id.clone()}>{ &peer.short_id }</code></td>
            <td><span class={conn_class}>{ conn }</span></td>
            <td class="num">{ rtt }</td>
            <td class="muted">{ ago(peer.last_heard_ms_ago) }</td>
        </tr>
    }
}
