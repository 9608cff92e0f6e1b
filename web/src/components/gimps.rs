//! The GIMPS dashboard: the node's state (with any further fields shown automatically), the
//! Sleep/Wake and Reset buttons, search progress, and the last 20 messages sent and received.

use tabmesh_core::gimps::node::LoggedMessage;
use tabmesh_core::gimps::pace::{SearchPace, SearchPlace};
use tabmesh_core::names::short_text;
use tabmesh_core::view::GimpsSection;
use tabmesh_node::Command;
use yew::prelude::*;

use super::tracing::name_of;
use super::{CopyButton, ago};
use crate::app::Ui;
use crate::state::Part;

/// Properties of [`GimpsPanel`].
#[derive(Properties, PartialEq)]
pub(crate) struct GimpsPanelProps {
    /// The `gimps` section of the node's view.
    pub(crate) gimps: Part<Option<GimpsSection>>,
    /// Our name.
    pub(crate) name: AttrValue,
    /// Our peer id.
    pub(crate) peer_id: AttrValue,
}

/// Fields the State panel lays out itself; anything else in the section is listed generically.
const SHOWN: &[&str] = &[
    "awake",
    "msg_id",
    "peers",
    "biggest",
    "my_primes",
    "searching",
    "settling",
    "search_on",
    "testing",
    "log",
    "counters",
    "tests_per_sec",
    "tested_total",
    "learned_at_unix_ms",
    "config",
    "misbehaving",
    "search",
    "cooperative",
    "known_primes",
    "first_known",
    "covered_below",
];

/// Known primes listed on the panel at most (the largest ones); the rest are counted.
const KNOWN_SHOWN: usize = 12;

/// The GIMPS State panel with its controls and search progress.
#[function_component(GimpsPanel)]
pub(crate) fn gimps_panel(props: &GimpsPanelProps) -> Html {
    crate::renders::count("gimps");
    let ui = use_context::<Ui>();
    let Some(g) = props.gimps.as_ref() else {
        return Html::default();
    };
    let s = &g.state;
    let command = |make: fn(bool) -> Command, arg: bool| {
        let ui = ui.clone();
        Callback::from(move |_: MouseEvent| {
            if let Some(ui) = &ui {
                ui.client.send(make(arg));
            }
        })
    };
    let toggle = command(
        |awake| if awake { Command::Sleep } else { Command::Wake },
        s.awake,
    );
    let reset = command(|_| Command::Reset, false);
    let coop = command(|on| Command::Cooperative(!on), s.cooperative);
    let pace = SearchPace::per_mille(g.search.pace_per_mille);
    let full_speed = command(
        |full| {
            Command::SearchPace(if full {
                SearchPace::GENTLE
            } else {
                SearchPace::FULL
            })
        },
        pace.is_full(),
    );
    let (place, place_title, place_class) = match &g.search.place {
        SearchPlace::Worker => (
            "in a Web Worker".to_owned(),
            "Lucas-Lehmer runs off the page's thread: gossip and the page stay responsive"
                .to_owned(),
            "muted",
        ),
        SearchPlace::Thread => ("on a thread".to_owned(), String::new(), "muted"),
        SearchPlace::Idle if !s.search_on => (
            "no worker: the search is off".to_owned(),
            "This tab runs no Lucas-Lehmer test, so it loads no search worker".to_owned(),
            "muted",
        ),
        SearchPlace::Idle => (
            "worker starts with the first test".to_owned(),
            "No test has run yet: the search worker (search/worker.js) loads when the search \
             first needs it"
                .to_owned(),
            "muted",
        ),
        SearchPlace::Starting => (
            "worker starting…".to_owned(),
            "Loading the search worker (search/worker.js)".to_owned(),
            "muted",
        ),
        SearchPlace::Page(reason) => (
            "on the page (no worker)".to_owned(),
            format!("The search worker could not run: {reason}"),
            "bad",
        ),
    };
    let share = if pace.is_full() {
        "full speed".to_owned()
    } else {
        format!("≤ {:.0}% of a core", f64::from(pace.as_per_mille()) / 10.0)
    };
    let peers = if s.peers.is_empty() {
        html! { <span class="muted">{ "peerless" }</span> }
    } else {
        html! {
            <ul class="plain">
                { for s.peers.iter().map(|p| html! {
                    <li key={p.peer_id.clone()} data-peer-id={p.peer_id.clone()}>
                        <span class="peer-name">{ &p.name }</span>
                        <span class="muted">{ format!("heard {}", ago(p.heard_ms_ago)) }</span>
                    </li>
                }) }
            </ul>
        }
    };
    let biggest = match &s.biggest {
        Some(b) => html! {
            <>
                <span class="prime" data-testid="biggest-prime">{ format!("2^{} − 1", b.exponent) }</span>
                <span class="muted">{ format!(" ({} digits)", b.digits) }</span>
            </>
        },
        None => html! { <span class="muted">{ "none yet" }</span> },
    };
    let finder = match &s.biggest {
        Some(b) => html! {
            <>
                <span class="peer-name" data-testid="prime-finder">{ &b.originator_name }</span>
                <code title={b.originator.clone()}>{ short_text(&b.originator) }</code>
                if b.originator == props.peer_id.as_str() { <span class="badge direct">{ "us" }</span> }
            </>
        },
        None => html! { <span class="muted">{ "–" }</span> },
    };
    let my_primes = if s.my_primes.is_empty() {
        "none yet".to_owned()
    } else {
        s.my_primes
            .iter()
            .map(|p| format!("2^{p}−1"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mode = if s.cooperative {
        "cooperative"
    } else {
        "racing"
    };
    let search = match s.testing {
        Some(p) if s.awake => format!(
            "{mode}: testing 2^{p} − 1 · {:.1} tests/s · {} tested",
            g.tests_per_sec, g.tested_total
        ),
        _ if !s.awake => "paused (asleep)".to_owned(),
        _ if !s.search_on => "off: tests nothing, still forwards PRIMEs (?search=off)".to_owned(),
        _ if s.settling => format!(
            "{mode}: settling in, the first round starts once no peer has joined for {:.1} s",
            g.config.settle_ms as f64 / 1e3
        ),
        _ => format!(
            "{mode}: idle until the next round · {} tested",
            g.tested_total
        ),
    };
    let extra = extra_fields(g);
    html! {
        <section class="panel" data-testid="gimps-state">
            <h2>
                { "GIMPS node " }
                <span class={if s.awake { "badge direct" } else { "badge asleep" }} data-testid="awake">
                    { if s.awake { "awake" } else { "asleep" } }
                </span>
                <span class="actions">
                    <button type="button" class="action" data-testid="sleep-wake" onclick={toggle}>
                        { if s.awake { "Sleep" } else { "Wake" } }
                    </button>
                    <button type="button" class="action" data-testid="reset" onclick={reset}>{ "Reset" }</button>
                    <label class="switch" title="Divide the candidate exponents with the other peers instead of racing them">
                        <input type="checkbox" data-testid="cooperative" checked={s.cooperative} onclick={coop} />
                        { "cooperative" }
                    </label>
                    <label class="switch" title="Let the search take a whole core (by default it takes about a tenth, so that many tabs leave the machine usable)">
                        <input type="checkbox" data-testid="full-speed" checked={pace.is_full()} onclick={full_speed} />
                        { "full speed" }
                    </label>
                </span>
            </h2>
            <dl class="state">
                <dt>{ "name" }</dt><dd>{ props.name.clone() }</dd>
                <dt>{ "peer id" }</dt><dd><code>{ props.peer_id.clone() }</code></dd>
                <dt>{ "msg_id" }</dt><dd>{ s.msg_id }</dd>
                <dt>{ "biggest prime" }</dt><dd>{ biggest }</dd>
                <dt>{ "found by" }</dt><dd>{ finder }</dd>
                <dt>{ "my primes" }</dt><dd>{ my_primes }</dd>
                <dt>{ "search" }</dt><dd data-testid="search">{ search }</dd>
                <dt>{ "runs" }</dt>
                <dd data-testid="search-place" title={place_title}>
                    <span class={place_class}>{ place }</span>{ " · " }{ share }
                </dd>
                if s.cooperative {
                    <dt>{ "tested below" }</dt>
                    <dd title="every prime exponent below this one was tested by some peer (cooperative bookkeeping)">
                        { format!("p = {}", s.covered_below) }
                    </dd>
                }
                <dt>{ "known primes" }</dt>
                <dd data-testid="known-primes">{ known_primes(g, &props.peer_id) }</dd>
                <dt>{ "peers" }</dt><dd>{ peers }</dd>
                if !s.misbehaving.is_empty() {
                    <dt>{ "misbehaving" }</dt>
                    <dd class="bad">{ s.misbehaving.iter().map(|p| short_text(p)).collect::<Vec<_>>().join(", ") }</dd>
                }
                <dt>{ "traffic" }</dt>
                <dd data-testid="gimps-traffic" title="forwarded: copies passed on; not forwarded: peers skipped because the message's originator had sent it to them itself; duplicates: copies dropped as already seen">
                    { traffic_summary(g) }
                </dd>
                <dt>{ "rejected" }</dt><dd>{ rejected_summary(g) }</dd>
                { for extra.into_iter().map(|(k, v)| html! { <><dt>{ k }</dt><dd><code>{ v }</code></dd></> }) }
            </dl>
        </section>
    }
}

/// Each known prime (largest first) with when this node first knew it and whose announcement
/// told it: its own find, or a peer's `PRIME`. Comparing the times across tabs shows a find's
/// spread.
fn known_primes(g: &GimpsSection, me: &str) -> Html {
    let known = &g.state.first_known;
    if known.is_empty() {
        return html! { <span class="muted">{ "none yet" }</span> };
    }
    let hidden = known.len().saturating_sub(KNOWN_SHOWN);
    html! {
        <span class="known-primes">
            { for known.iter().rev().take(KNOWN_SHOWN).map(|k| {
                let own = k.originator == me;
                let from = if own { "found here".to_owned() } else { name_of(&k.originator) };
                let title = format!(
                    "2^{} − 1: first known {:.2} s after this page loaded, {}",
                    k.exponent,
                    k.at_ms as f64 / 1e3,
                    if own { "found by this node".to_owned() } else { format!("from {from}'s PRIME") },
                );
                html! {
                    <span class={classes!("known-prime", own.then_some("own"))} title={title}>
                        <b>{ k.exponent }</b>
                        <span class="muted">{ format!(" {:.1} s · {from}", k.at_ms as f64 / 1e3) }</span>
                    </span>
                }
            }) }
            if hidden > 0 {
                <span class="muted">{ format!("and {hidden} smaller") }</span>
            }
        </span>
    }
}

fn traffic_summary(g: &GimpsSection) -> String {
    let c = &g.state.counters;
    format!(
        "received {} · sent {} · forwarded {} · not forwarded (had it first-hand) {} · duplicates {}",
        c.received, c.sent, c.forwarded, c.pruned, c.duplicates
    )
}

fn rejected_summary(g: &GimpsSection) -> String {
    let c = &g.state.counters;
    let total = c.rejected_malformed
        + c.rejected_forged_forwarder
        + c.rejected_ttl
        + c.rejected_signature
        + c.rejected_fake_prime;
    if total == 0 {
        return "nothing".to_owned();
    }
    format!(
        "{total} (malformed {}, forged forwarder {}, TTL {}, signature {}, fake prime {})",
        c.rejected_malformed,
        c.rejected_forged_forwarder,
        c.rejected_ttl,
        c.rejected_signature,
        c.rejected_fake_prime
    )
}

/// Fields of the section that this panel does not lay out, as (name, JSON) pairs: new state
/// fields show up without UI changes.
fn extra_fields(g: &GimpsSection) -> Vec<(String, String)> {
    let Ok(serde_json::Value::Object(map)) = serde_json::to_value(g) else {
        return Vec::new();
    };
    map.into_iter()
        .filter(|(k, _)| !SHOWN.contains(&k.as_str()))
        .map(|(k, v)| (k, v.to_string()))
        .collect()
}

/// Properties of [`GimpsLog`].
#[derive(Properties, PartialEq)]
pub(crate) struct GimpsLogProps {
    /// The gossip log of the node's `gimps` section.
    pub(crate) log: Part<[LoggedMessage]>,
}

/// The last 20 gossip messages, newest first, with their six fields.
#[function_component(GimpsLog)]
pub(crate) fn gimps_log(props: &GimpsLogProps) -> Html {
    crate::renders::count("gimps_log");
    let log: &[LoggedMessage] = &props.log;
    let text: String = log
        .iter()
        .map(|m| {
            format!(
                "{:.3}s {} {} msg_type={:?} msg_id={} msg_forwarder={} msg_originator={} ttl={} data={}\n",
                m.at_ms as f64 / 1e3,
                m.direction.as_str(),
                m.peer,
                m.msg_type,
                m.msg_id,
                m.msg_forwarder,
                m.msg_originator,
                m.ttl,
                m.data
            )
        })
        .collect();
    html! {
        <section class="panel" data-testid="gimps-log">
            <h2>
                { "Node logs " }<span class="count">{ format!("last {}", log.len()) }</span>
                <CopyButton text={text} label="Copy logs" title="Copy these messages as text" />
            </h2>
            if log.is_empty() {
                <p class="empty">{ "No gossip yet." }</p>
            } else {
                <table class="gossip">
                    <thead>
                        <tr>
                            <th>{ "time" }</th><th></th><th>{ "to / from" }</th><th>{ "type" }</th><th class="num">{ "id" }</th>
                            <th>{ "forwarder" }</th><th>{ "originator" }</th><th class="num">{ "ttl" }</th><th>{ "data" }</th>
                        </tr>
                    </thead>
                    <tbody>
                        { for log.iter().rev().map(|m| html! {
                            <tr class={m.direction.as_str().to_lowercase()}>
                                <td class="muted num">{ format!("{:.1}s", m.at_ms as f64 / 1e3) }</td>
                                <td class="dir">{ m.direction.as_str() }</td>
                                <td class="who">{ &m.peer }</td>
                                <td><code>{ format!("{:?}", m.msg_type).to_uppercase() }</code></td>
                                <td class="num">{ m.msg_id }</td>
                                <td>{ &m.msg_forwarder }</td>
                                <td>{ &m.msg_originator }</td>
                                <td class="num">{ m.ttl }</td>
                                <td>{ &m.data }</td>
                            </tr>
                        }) }
                    </tbody>
                </table>
            }
        </section>
    }
}
