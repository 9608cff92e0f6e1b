//! The Event log panel: the last wire events, newest first, with a copy button.

use tabmesh_core::wire_log::{Direction, WireEvent};
use yew::prelude::*;

use super::{CopyButton, TextSource};
use crate::app::Ui;
use crate::state::Part;

/// Properties of [`EventLog`].
#[derive(Properties, PartialEq)]
pub(crate) struct EventLogProps {
    /// The newest events, oldest first (as the node keeps them).
    pub(crate) events: Part<[WireEvent]>,
    /// How many events the node keeps in all (the copy button copies them all).
    pub(crate) kept: usize,
}

/// The Event log panel.
#[function_component(EventLog)]
pub(crate) fn event_log(props: &EventLogProps) -> Html {
    crate::renders::count("event_log");
    let ui = use_context::<Ui>();
    // Asks the node for its whole log at the click; the view has only the newest events.
    let source = use_memo((), move |()| {
        ui.map(|ui| {
            TextSource::new(move || {
                let client = ui.client.clone();
                async move { Ok(as_text(client.wire_log().await?.iter())) }
            })
        })
    });
    let shown = props.events.len();
    let count = if props.kept > shown {
        format!("newest {shown} of {} kept", props.kept)
    } else {
        format!("last {shown}")
    };
    let title = format!(
        "Copy all {} events this tab keeps as text (?wire_log=N keeps up to N)",
        props.kept.max(shown)
    );
    html! {
        <section class="panel" data-testid="event-log">
            <h2>
                { "Event log " }<span class="count">{ count }</span>
                <CopyButton text={as_text(props.events.iter())} source={(*source).clone()}
                    label="Copy log" {title} />
            </h2>
            if props.events.is_empty() {
                <p class="empty">{ "Nothing on the wire yet." }</p>
            } else {
                <ol class="events" reversed=true>
                    { for props.events.iter().rev().map(event_row) }
                </ol>
            }
        </section>
    }
}

/// Events as lines of text, one per event: time, direction, topic, peer, what happened.
fn as_text<'a>(events: impl Iterator<Item = &'a WireEvent>) -> String {
    events
        .map(|e| {
            format!(
                "{:.3}s {} {} {} {}\n",
                e.at_ms as f64 / 1e3,
                direction_word(e.direction),
                e.protocol,
                e.peer.as_deref().unwrap_or("-"),
                e.summary
            )
        })
        .collect()
}

fn direction_word(d: Direction) -> &'static str {
    match d {
        Direction::Sent => "SENT",
        Direction::Received => "RECEIVED",
        Direction::Local => "LOCAL",
    }
}

fn event_row(e: &WireEvent) -> Html {
    let (class, arrow) = match e.direction {
        Direction::Sent => ("sent", "↑"),
        Direction::Received => ("received", "↓"),
        Direction::Local => ("local", "•"),
    };
    html! {
        <li key={e.seq} class={class}>
            <span class="time">{ format!("{:.1}s", e.at_ms as f64 / 1e3) }</span>
            <span class="dir" title={direction_word(e.direction)}>{ arrow }</span>
            <span class={classes!("proto", e.protocol.as_str())}>{ e.protocol.as_str() }</span>
            <span class="peer">{ e.peer.clone().unwrap_or_default() }</span>
            <span class="summary">{ &e.summary }</span>
        </li>
    }
}
