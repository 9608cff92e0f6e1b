//! The Event log panel: the last wire events, newest first, with a copy button.

use tabmesh_core::wire_log::{Direction, WireEvent};
use yew::prelude::*;

use super::CopyButton;
use crate::state::Part;

/// Properties of [`EventLog`].
#[derive(Properties, PartialEq)]
pub(crate) struct EventLogProps {
    /// Events, oldest first (as the node keeps them).
    pub(crate) events: Part<[WireEvent]>,
}

/// The Event log panel.
#[function_component(EventLog)]
pub(crate) fn event_log(props: &EventLogProps) -> Html {
    crate::renders::count("event_log");
    let as_text: String = props
        .events
        .iter()
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
        .collect();
    html! {
        <section class="panel" data-testid="event-log">
            <h2>
                { "Event log " }<span class="count">{ format!("last {}", props.events.len()) }</span>
                <CopyButton text={as_text} label="Copy log" title="Copy these events as text" />
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
