//! The header (who am I, is the relay there) and the relay banner (why not, and what next).

use std::rc::Rc;

use tabmesh_core::relay_link::LinkStatus;
use tabmesh_core::view::RelayView;
use tabmesh_node::NodeView;
use yew::prelude::*;

use super::CopyButton;
use crate::state::Part;

/// Properties of [`Header`].
#[derive(Properties, PartialEq)]
pub(crate) struct HeaderProps {
    /// The node's view, once it exists.
    pub(crate) view: Option<Rc<NodeView>>,
}

/// Brand, our name and id with a copy button, and the relay state.
#[function_component(Header)]
pub(crate) fn header(props: &HeaderProps) -> Html {
    crate::renders::count("header");
    let identity = match &props.view {
        None => html! { <span class="muted">{ "starting…" }</span> },
        Some(view) => html! {
            <div class="identity">
                <span class="name" data-testid="my-name">{ &view.name }</span>
                <code class="peer-id" title={view.peer_id.clone()} data-testid="my-peer-id">
                    { &view.short_id }
                </code>
                <CopyButton text={view.peer_id.clone()} label="Copy id" title="Copy the full peer id" />
            </div>
        },
    };
    let relay = props
        .view
        .as_ref()
        .map(|v| relay_pill(&v.relay, v.direct_peers(), &startup(v)));
    html! {
        <header>
            <div class="brand">{ "tabmesh" }</div>
            { identity }
            { relay.unwrap_or_default() }
        </header>
    }
}

/// How this tab started, from its page load: when its node started (the module downloaded,
/// compiled and the page rendered once) and when the relay accepted its reservation.
fn startup(view: &NodeView) -> String {
    let secs = |ms: u64| ms as f64 / 1e3;
    let mut text = format!(
        "node started {:.2} s after the page load",
        secs(view.started_at_ms)
    );
    if let Some(ms) = view.relay.reservation_at_ms {
        text.push_str(&format!(", relay reservation at {:.2} s", secs(ms)));
    }
    text
}

fn relay_pill(relay: &RelayView, direct: usize, startup: &str) -> Html {
    let (class, text) = match relay.link.state {
        LinkStatus::Reserved => (
            "pill ok",
            match relay.rtt_ms {
                Some(rtt) => format!("relay connected · {rtt:.1} ms"),
                None => "relay connected".to_owned(),
            },
        ),
        LinkStatus::Connected => ("pill warn", "relay: reserving…".to_owned()),
        LinkStatus::Waiting => (
            "pill bad",
            format!(
                "relay offline · {direct} direct · retry in {} s",
                relay.link.retry_in_ms.unwrap_or(0).div_ceil(1000)
            ),
        ),
        LinkStatus::Connecting => ("pill warn", "relay: connecting…".to_owned()),
    };
    html! {
        <div class={class} data-testid="relay-state" data-state={relay.link.state.as_str()}
            title={startup.to_owned()}>{ text }</div>
    }
}

/// Properties of [`RelayBanner`].
#[derive(Properties, PartialEq)]
pub(crate) struct RelayBannerProps {
    /// The relay as the node sees it.
    pub(crate) relay: Part<RelayView>,
    /// Peers reached without the relay (they stay while it is gone).
    pub(crate) direct: usize,
}

/// Says what is wrong with the relay link and what happens next; hidden while all is well.
#[function_component(RelayBanner)]
pub(crate) fn relay_banner(props: &RelayBannerProps) -> Html {
    crate::renders::count("relay_banner");
    let link = &props.relay.link;
    let message = match link.state {
        LinkStatus::Reserved => return Html::default(),
        LinkStatus::Connected => {
            match link.last_error.as_deref().filter(|_| link.reserving_again) {
                // The reservation was dropped on our side; the connection stays.
                Some(why) => html! {
                    <>{ format!("{}. Asking the relay for it again on the same connection…", why.trim_end_matches('.')) }</>
                },
                None => html! {
                    <>{ "Connected to the relay; asking for a reservation so other peers can reach this tab…" }</>
                },
            }
        }
        LinkStatus::Waiting => html! {
            <>
                <strong>{ "The relay is unreachable. " }</strong>
                { link.last_error.as_deref().map(|e| format!("{}. ", e.trim_end_matches('.'))).unwrap_or_default() }
                { format!(
                    "Retrying in {:.1} s (attempt {}). ",
                    link.retry_in_ms.unwrap_or(0) as f64 / 1e3,
                    link.attempt
                ) }
                { match props.direct {
                    0 => "No peer is connected directly: this tab is on its own until the relay is back.".to_owned(),
                    1 => "The peer connected directly stays connected; new peers cannot find this tab meanwhile.".to_owned(),
                    n => format!("The {n} peers connected directly stay connected; new peers cannot find this tab meanwhile."),
                } }
            </>
        },
        LinkStatus::Connecting => {
            html! { <>{ format!("Connecting to the relay via {}…", props.relay.bootstrap) }</> }
        }
    };
    let class = if link.state == LinkStatus::Waiting {
        "banner error"
    } else {
        "banner info"
    };
    html! { <div class={class} role="status" data-testid="relay-banner">{ message }</div> }
}
