//! The Tracing panel: the traces this tab took part in, and one of them drawn two ways.
//!
//! - **Recent traces**: those with spans held here, started here or passing through, newest
//!   first; choosing one gathers it from the peers it crossed.
//! - **Waterfall**: the span tree, each span a bar on one time axis, with the peer that
//!   recorded it, its duration, and failures, duplicates and gaps marked.
//! - **Space-time diagram**: a lane per peer, time flowing down, an arrow for every message
//!   (new copies solid, duplicates dashed, replies faint, DHT requests dotted), so a gossip
//!   flood or a service call reads at a glance.
//!
//! A traced ping to a random peer, an OTLP/JSON download and the slow-motion switch (each
//! traced gossip copy held a second before it leaves) complete the panel. What is shown comes
//! from the reducer ([`TraceLine`]); gathering goes through the page's client.

use std::collections::HashMap;

use tabmesh_core::dht::lookup::ASKED;
use tabmesh_core::names::peer_name;
use tabmesh_core::trace::assemble::{KIND, PlacedSpan, REMOTE, Trace};
use tabmesh_core::trace::store::TraceSummary;
use tabmesh_core::trace::{SpanStatus, TraceId, TraceSection};
use tabmesh_node::Command;
use web_sys::HtmlInputElement;
use yew::prelude::*;

use crate::app::Ui;
use crate::components::CopyButton;
use crate::state::{Action, Part, TraceLine};

/// How long slow motion holds each traced copy, ms.
const SLOW_MOTION_MS: u64 = 1_000;
/// Lanes drawn at most (the rest of the peers are listed under the diagram).
const MAX_LANES: usize = 16;
/// Height of the diagram's time axis, px.
const LANES_HEIGHT: f64 = 380.0;

/// Properties of [`TracingPanel`].
#[derive(Properties, PartialEq)]
pub(crate) struct TracingPanelProps {
    /// The `trace` section of the node's view; `None` until it reports.
    pub(crate) section: Part<Option<TraceSection>>,
    /// This tab's peer id.
    pub(crate) me: AttrValue,
    /// The trace shown.
    pub(crate) trace: Option<TraceLine>,
    /// What the last traced ping did.
    pub(crate) ping_note: Option<Result<String, String>>,
}

/// Gathers `trace_id` and shows it.
pub(crate) fn open_trace(ui: &Ui, trace_id: String) {
    let id = ui.client.next_request_id();
    ui.dispatch.dispatch(Action::Traced(TraceLine {
        id,
        trace_id: trace_id.clone(),
        answer: None,
    }));
    let ui = ui.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let answer = match TraceId::parse(&trace_id) {
            Ok(parsed) => ui.client.trace(parsed).await,
            Err(e) => Err(e.to_string()),
        };
        ui.dispatch.dispatch(Action::Traced(TraceLine {
            id,
            trace_id,
            answer: Some(answer),
        }));
    });
}

/// A traced ping to a random peer; its trace opens when it is answered.
fn ping(ui: &Ui) {
    let ui = ui.clone();
    wasm_bindgen_futures::spawn_local(async move {
        match ui.client.trace_ping(None).await {
            Ok(answer) => {
                ui.dispatch.dispatch(Action::PingNote(Ok(format!(
                    "pinged {} in {} ms",
                    answer.peer_name, answer.rtt_ms
                ))));
                open_trace(&ui, answer.trace_id.to_string());
            }
            Err(why) => ui.dispatch.dispatch(Action::PingNote(Err(why))),
        }
    });
}

/// The Tracing panel.
#[function_component(TracingPanel)]
pub(crate) fn tracing_panel(props: &TracingPanelProps) -> Html {
    crate::renders::count("tracing");
    let ui = use_context::<Ui>();
    let Some(section) = props.section.as_ref() else {
        return html! {
            <section class="panel tracing" data-testid="tracing-panel">
                <h2>{ "Tracing" }</h2>
                <p class="empty" aria-busy="true">{ "Tracing is starting…" }</p>
            </section>
        };
    };
    let on_ping = ui
        .clone()
        .map(|ui| Callback::from(move |_: MouseEvent| ping(&ui)));
    let slow = section.slow_motion_ms.is_some();
    let on_slow = ui.clone().map(|ui| {
        Callback::from(move |e: Event| {
            let on = e.target_unchecked_into::<HtmlInputElement>().checked();
            let delay = on.then(|| std::time::Duration::from_millis(SLOW_MOTION_MS));
            ui.client.send(Command::SlowMotion(delay));
        })
    });
    let c = &section.counters;
    html! {
        <section class="panel tracing" data-testid="tracing-panel">
            <h2>
                { "Tracing " }
                <span class="count">
                    { format!("{} span(s) held ({} KB) · {} recorded · {} evicted",
                        section.spans_held, section.bytes_held / 1024, c.recorded, c.evicted) }
                </span>
                if !section.tracing {
                    <span class="badge strikes">{ "recording off" }</span>
                }
                if section.malformed > 0 {
                    <span class="badge strikes" title="malformed or oversized trace messages refused">
                        { format!("{} refused", section.malformed) }
                    </span>
                }
            </h2>
            <div class="trace-actions">
                <button type="button" class="copy" data-testid="trace-ping"
                    disabled={on_ping.is_none()} onclick={on_ping}>
                    { "Traced ping to a random peer" }
                </button>
                <label class="switch" title="hold every traced gossip copy for a second before it leaves, to watch a spread hop by hop">
                    <input type="checkbox" data-testid="slow-motion" checked={slow}
                        onchange={on_slow} />
                    { format!(" Slow motion ({SLOW_MOTION_MS} ms per gossip hop)") }
                </label>
                {
                    match &props.ping_note {
                        Some(Ok(note)) => html! { <span class="muted">{ note }</span> },
                        Some(Err(why)) => html! { <span class="error-text" role="alert">{ why }</span> },
                        None => html! {},
                    }
                }
            </div>
            <div class="trace-columns">
                <div>
                    <h3>{ "Recent traces " }<span class="count">{ section.recent.len() }</span></h3>
                    <RecentTraces recent={section.recent.clone()}
                        shown={props.trace.as_ref().map(|t| AttrValue::from(t.trace_id.clone()))} />
                </div>
                <div>{ trace_view(props.trace.as_ref(), &props.me) }</div>
            </div>
        </section>
    }
}

/// Which traces the list shows.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    All,
    Gossip,
    Services,
    Dht,
    Pings,
}

impl Kind {
    const ALL: [(Kind, &'static str); 5] = [
        (Kind::All, "all"),
        (Kind::Gossip, "gossip"),
        (Kind::Services, "services"),
        (Kind::Dht, "DHT"),
        (Kind::Pings, "pings"),
    ];

    fn matches(self, name: &str) -> bool {
        match self {
            Kind::All => true,
            Kind::Gossip => name.starts_with("gimps."),
            Kind::Services => name.starts_with("service."),
            Kind::Dht => name.starts_with("dht."),
            Kind::Pings => name.starts_with("trace."),
        }
    }
}

#[derive(Properties, PartialEq)]
struct RecentProps {
    recent: Vec<TraceSummary>,
    shown: Option<AttrValue>,
}

/// The recent traces, filtered by kind; the list holds still while the pointer is over it (new
/// traces arrive many a second while GIMPS starts, and would move the entry being aimed at).
#[function_component(RecentTraces)]
fn recent_traces(props: &RecentProps) -> Html {
    let ui = use_context::<Ui>();
    let kind = use_state(|| Kind::All);
    let held = use_state(|| None::<Vec<TraceSummary>>);
    let list = held.as_ref().unwrap_or(&props.recent);
    let shown: Vec<&TraceSummary> = list.iter().filter(|t| kind.matches(&t.name)).collect();
    let now = js_sys::Date::now() as u64;
    let hold = {
        let (held, recent) = (held.clone(), props.recent.clone());
        Callback::from(move |_: PointerEvent| held.set(Some(recent.clone())))
    };
    let release = {
        let held = held.clone();
        Callback::from(move |_: PointerEvent| held.set(None))
    };
    let chips = Kind::ALL.map(|(k, label)| {
        let kind = kind.clone();
        let on = *kind == k;
        html! {
            <button type="button" class={classes!("tab", on.then_some("on"))} aria-pressed={on.to_string()}
                onclick={Callback::from(move |_: MouseEvent| kind.set(k))}>{ label }</button>
        }
    });
    html! {
        <>
            <div class="trace-kinds">{ for chips }</div>
            if props.recent.is_empty() {
                <p class="empty">
                    { "No trace yet: a traced ping, a service call, a DHT request or a PRIME found makes one." }
                </p>
            } else if shown.is_empty() {
                <p class="empty">{ "No recent trace of this kind." }</p>
            } else {
                <ol class={classes!("trace-list", held.is_some().then_some("held"))} data-testid="trace-recent"
                    title={held.is_some().then_some("held still while the pointer is over it")}
                    onpointerenter={hold} onpointerleave={release}>
                    { for shown.into_iter().map(|t| {
                        let id = t.trace_id.to_string();
                        let selected = props.shown.as_deref() == Some(id.as_str());
                        let onclick = ui.clone().map(|ui| {
                            let id = id.clone();
                            Callback::from(move |_: MouseEvent| open_trace(&ui, id.clone()))
                        });
                        html! {
                            <li class={classes!(selected.then_some("selected"))}>
                                <button type="button" data-trace={id.clone()} {onclick}>
                                    <span class="trace-name">{ &t.name }</span>
                                    <span class="muted">
                                        { format!(" · {} span(s) here · {} · {}",
                                            t.spans,
                                            if t.root_here { "started here" } else { "passed through" },
                                            super::ago(now.saturating_sub(t.start_ms))) }
                                    </span>
                                </button>
                            </li>
                        }
                    }) }
                </ol>
            }
        </>
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Drawing {
    Waterfall,
    Lanes,
}

/// The trace shown: loading, failed, or drawn.
fn trace_view(line: Option<&TraceLine>, me: &str) -> Html {
    let Some(line) = line else {
        return html! { <p class="empty">{ "Choose a trace to draw it." }</p> };
    };
    match &line.answer {
        None => html! {
            <p class="empty" aria-busy="true">
                { format!("Gathering trace {} from the peers it crossed…", short(&line.trace_id)) }
            </p>
        },
        Some(Err(why)) => html! {
            <p class="error-text" role="alert">
                { format!("Trace {} could not be gathered: {why}", short(&line.trace_id)) }
            </p>
        },
        Some(Ok(trace)) => html! { <TraceDrawing trace={trace.clone()} me={me.to_owned()} /> },
    }
}

#[derive(Properties, PartialEq)]
struct TraceDrawingProps {
    trace: Trace,
    me: AttrValue,
}

#[function_component(TraceDrawing)]
fn trace_drawing(props: &TraceDrawingProps) -> Html {
    let drawing = use_state(|| Drawing::Lanes);
    let trace = &props.trace;
    let id = trace.trace_id.to_string();
    let otlp = tabmesh_core::trace::otlp::export(trace.spans.iter().map(|p| &p.span));
    let href = format!(
        "data:application/json;charset=utf-8,{}",
        js_sys::encode_uri_component(&otlp.to_string())
    );
    let tab = |which: Drawing, label: &'static str| {
        let drawing = drawing.clone();
        let pressed = *drawing == which;
        html! {
            <button type="button" class={classes!("tab", pressed.then_some("on"))}
                aria-pressed={pressed.to_string()} data-testid={format!("trace-tab-{}", label.to_lowercase().replace(' ', "-"))}
                onclick={Callback::from(move |_: MouseEvent| drawing.set(which))}>
                { label }
            </button>
        }
    };
    html! {
        <div class="trace-drawing" data-testid="trace-drawing" data-trace={id.clone()}>
            <div class="trace-head">
                <strong>{ format!("trace {}", short(&id)) }</strong>
                <span class="muted">
                    { format!(" · {} span(s) · {} peer(s)", trace.spans.len(), trace.peers.len()) }
                </span>
                { tab(Drawing::Lanes, "Space-time") }
                { tab(Drawing::Waterfall, "Waterfall") }
                <a class="copy" href={href} download={format!("trace-{id}.otlp.json")}
                    data-testid="trace-otlp">{ "OTLP/JSON" }</a>
                <CopyButton text={id.clone()} label="Copy id" title="copy the trace id" />
            </div>
            if !trace.missing.is_empty() {
                <p class="banner info" data-testid="trace-missing">
                    { "Gaps: " }
                    { trace.missing.iter().map(|m| format!("{} ({})", name_of(&m.peer), m.reason))
                        .collect::<Vec<_>>().join(", ") }
                </p>
            }
            {
                match *drawing {
                    Drawing::Waterfall => waterfall(trace),
                    Drawing::Lanes => lanes(trace, &props.me),
                }
            }
        </div>
    }
}

/// Spans in tree order (each after its parent, siblings by start), with their depth.
fn tree_order(trace: &Trace) -> Vec<(usize, &PlacedSpan)> {
    let ids: HashMap<_, _> = trace.spans.iter().map(|p| (p.span.span_id, p)).collect();
    let mut children: HashMap<_, Vec<&PlacedSpan>> = HashMap::new();
    let mut roots = Vec::new();
    for p in &trace.spans {
        match p.span.parent_span_id.filter(|id| ids.contains_key(id)) {
            Some(parent) => children.entry(parent).or_default().push(p),
            None => roots.push(p),
        }
    }
    let mut out = Vec::new();
    let mut stack: Vec<(usize, &PlacedSpan)> = roots.into_iter().rev().map(|p| (0, p)).collect();
    while let Some((depth, p)) = stack.pop() {
        out.push((depth, p));
        if let Some(kids) = children.get(&p.span.span_id) {
            for kid in kids.iter().rev() {
                stack.push((depth + 1, kid));
            }
        }
    }
    out
}

/// The trace's time range, ms on the reference clock: start and length (at least 1).
fn range(trace: &Trace) -> (u64, u64) {
    let start = trace
        .spans
        .iter()
        .map(|p| p.span.start_ms)
        .min()
        .unwrap_or(0);
    let end = trace
        .spans
        .iter()
        .map(|p| p.span.end_ms.unwrap_or(p.span.start_ms))
        .max()
        .unwrap_or(start);
    (start, (end - start).max(1))
}

fn waterfall(trace: &Trace) -> Html {
    let (t0, total) = range(trace);
    let pct = |ms: u64| (ms as f64) * 100.0 / total as f64;
    html! {
        <div class="waterfall" data-testid="waterfall">
            <div class="wf-axis"><span>{ "0 ms" }</span><span>{ format!("{total} ms") }</span></div>
            { for tree_order(trace).into_iter().map(|(depth, p)| {
                let s = &p.span;
                let start = s.start_ms - t0;
                let took = s.duration_ms();
                let duplicate = s.attributes.get("gimps.duplicate").is_some_and(|d| d == "true");
                let failed = matches!(s.status, SpanStatus::Error(_));
                let class = classes!(
                    "wf-row",
                    duplicate.then_some("dup"),
                    failed.then_some("failed"),
                    p.orphan.then_some("orphan"),
                );
                let title = span_title(p);
                html! {
                    <div class={class} data-testid="wf-row" title={title}>
                        <div class="wf-name" style={format!("padding-left:{}px", depth * 14)}>
                            if duplicate { <span class="tag">{ "dup" }</span> }
                            if p.orphan { <span class="tag" title="its parent's peer did not answer">{ "gap" }</span> }
                            { &s.name }
                        </div>
                        <div class="wf-peer" style={format!("color:{}", peer_colour(&s.peer))}>
                            { name_of(&s.peer) }
                        </div>
                        <div class="wf-track">
                            <div class="wf-bar" style={format!("left:{:.2}%;width:max({:.2}%, 2px);background:{}",
                                pct(start), pct(took.unwrap_or(0)), peer_colour(&s.peer))}></div>
                        </div>
                        <div class="wf-took num">
                            { took.map_or_else(|| "running".to_owned(), |ms| format!("{ms} ms")) }
                        </div>
                    </div>
                }
            }) }
        </div>
    }
}

/// The peers that get a lane: those with spans, then those only asked (DHT), by first time.
fn lane_peers(trace: &Trace) -> Vec<(String, bool)> {
    // A lane per peer of a trace: a few dozen at most, found in a list.
    let mut peers: Vec<(String, (u64, bool))> = Vec::new();
    let mut saw =
        |peer: &String, at: u64, traced: bool| match peers.iter_mut().find(|(p, _)| p == peer) {
            Some((_, first)) if traced => *first = (first.0.min(at), true),
            Some(_) => {}
            None => peers.push((peer.clone(), (at, traced))),
        };
    for p in &trace.spans {
        let at = p.span.start_ms;
        saw(&p.span.peer, at, true);
        for remote in [REMOTE, ASKED] {
            if let Some(other) = p.span.attributes.get(remote) {
                saw(other, at, false);
            }
        }
    }
    peers.sort_by_key(|(_, (at, traced))| (!traced, *at));
    peers
        .into_iter()
        .map(|(peer, (_, traced))| (peer, traced))
        .collect()
}

/// One arrow of the diagram.
struct Arrow {
    from: (String, u64),
    to: (String, u64),
    class: &'static str,
    title: String,
}

fn arrows(trace: &Trace) -> Vec<Arrow> {
    let by_id: HashMap<_, _> = trace
        .spans
        .iter()
        .map(|p| (p.span.span_id, &p.span))
        .collect();
    let mut out = Vec::new();
    for p in &trace.spans {
        let s = &p.span;
        let end = s.end_ms.unwrap_or(s.start_ms);
        if let Some(parent) = s.parent_span_id.and_then(|id| by_id.get(&id))
            && parent.peer != s.peer
        {
            let duplicate = s
                .attributes
                .get("gimps.duplicate")
                .is_some_and(|d| d == "true");
            out.push(Arrow {
                from: (parent.peer.clone(), parent.start_ms),
                to: (s.peer.clone(), s.start_ms),
                class: if duplicate { "msg dup" } else { "msg" },
                title: format!(
                    "{} → {}: {}{}",
                    name_of(&parent.peer),
                    name_of(&s.peer),
                    s.name,
                    if duplicate { " (duplicate)" } else { "" }
                ),
            });
            // A request answered: the reply goes back (gossip copies are acknowledged by
            // closing the stream, not drawn).
            if !s.name.starts_with("gimps.")
                && s.attributes.get(KIND).is_some_and(|k| k == "server")
            {
                out.push(Arrow {
                    from: (s.peer.clone(), end),
                    to: (parent.peer.clone(), parent.end_ms.unwrap_or(end).max(end)),
                    class: "msg reply",
                    title: format!("{} → {}: reply", name_of(&s.peer), name_of(&parent.peer)),
                });
            }
        }
        if let Some(asked) = s.attributes.get(ASKED) {
            let mid = s.start_ms + (end - s.start_ms) / 2;
            out.push(Arrow {
                from: (s.peer.clone(), s.start_ms),
                to: (asked.clone(), mid),
                class: "msg dht",
                title: format!("{} asks {}", name_of(&s.peer), name_of(asked)),
            });
            if s.status == SpanStatus::Ok {
                out.push(Arrow {
                    from: (asked.clone(), mid),
                    to: (s.peer.clone(), end),
                    class: "msg dht reply",
                    title: format!("{} answers", name_of(asked)),
                });
            }
        }
    }
    out
}

fn lanes(trace: &Trace, me: &str) -> Html {
    let (t0, total) = range(trace);
    let all = lane_peers(trace);
    let (drawn, rest) = all.split_at(all.len().min(MAX_LANES));
    let lane_w = (760.0 / drawn.len().max(1) as f64).clamp(70.0, 150.0);
    let left = 56.0;
    let top = 44.0;
    let width = left + lane_w * drawn.len() as f64 + 10.0;
    let height = top + LANES_HEIGHT + 16.0;
    let x_of: HashMap<&str, f64> = drawn
        .iter()
        .enumerate()
        .map(|(i, (peer, _))| (peer.as_str(), left + lane_w * (i as f64 + 0.5)))
        .collect();
    let y = |ms: u64| top + (ms.saturating_sub(t0) as f64) * LANES_HEIGHT / total as f64;
    let ticks = (0..=4).map(|i| total * i / 4);
    html! {
        <div class="lanes-wrap">
            <svg class="lanes" data-testid="lanes" width={width.to_string()} height={height.to_string()}
                viewBox={format!("0 0 {width:.0} {height:.0}")} role="img"
                aria-label="space-time diagram: a lane per peer, time flowing down, an arrow per message">
                <defs>
                    { for [("arrow", "#3b5bdb"), ("arrow-dup", "#adb5bd"), ("arrow-reply", "#91a7ff"), ("arrow-dht", "#0b7285")]
                        .into_iter().map(|(id, colour)| html! {
                        <marker id={id} viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
                            <path d="M0,0 L8,4 L0,8 z" fill={colour} />
                        </marker>
                    }) }
                </defs>
                { for ticks.map(|ms| html! {
                    <g class="tick">
                        <line x1={(left - 6.0).to_string()} x2={(width - 10.0).to_string()}
                            y1={y(t0 + ms).to_string()} y2={y(t0 + ms).to_string()} />
                        <text x={(left - 8.0).to_string()} y={(y(t0 + ms) + 4.0).to_string()} text-anchor="end">
                            { format!("{ms} ms") }
                        </text>
                    </g>
                }) }
                { for drawn.iter().map(|(peer, traced)| {
                    let x = x_of[peer.as_str()];
                    let label = if peer == me { format!("{} (me)", name_of(peer)) } else { name_of(peer) };
                    html! {
                        <g class={classes!("lane", (!traced).then_some("untraced"))} data-peer={peer.clone()}>
                            <text x={x.to_string()} y="16" text-anchor="middle" fill={peer_colour(peer)}>{ label }</text>
                            if !traced {
                                <text x={x.to_string()} y="30" text-anchor="middle" class="note">{ "no spans (Kademlia)" }</text>
                            }
                            <line x1={x.to_string()} x2={x.to_string()} y1={top.to_string()}
                                y2={(top + LANES_HEIGHT).to_string()} stroke={peer_colour(peer)} />
                        </g>
                    }
                }) }
                { for trace.spans.iter().filter_map(|p| {
                    let s = &p.span;
                    let x = *x_of.get(s.peer.as_str())?;
                    let (y0, y1) = (y(s.start_ms), y(s.end_ms.unwrap_or(s.start_ms)));
                    Some(html! {
                        <rect class="activity" x={(x - 3.0).to_string()} y={y0.to_string()} width="6"
                            height={(y1 - y0).max(2.0).to_string()} fill={peer_colour(&s.peer)}>
                            <title>{ span_title(p) }</title>
                        </rect>
                    })
                }) }
                { for arrows(trace).into_iter().filter_map(|a| {
                    let (x1, x2) = (*x_of.get(a.from.0.as_str())?, *x_of.get(a.to.0.as_str())?);
                    let marker = match a.class {
                        "msg dup" => "url(#arrow-dup)",
                        "msg reply" => "url(#arrow-reply)",
                        c if c.starts_with("msg dht") => "url(#arrow-dht)",
                        _ => "url(#arrow)",
                    };
                    // Stop short of the lane so the head is visible.
                    let dx = if x2 > x1 { -4.0 } else { 4.0 };
                    Some(html! {
                        <line class={a.class} data-testid="lane-arrow" x1={x1.to_string()} y1={y(a.from.1).to_string()}
                            x2={(x2 + dx).to_string()} y2={y(a.to.1).to_string()} marker-end={marker}>
                            <title>{ a.title }</title>
                        </line>
                    })
                }) }
            </svg>
            <p class="legend muted">
                <span class="key msg"></span>{ " message " }
                <span class="key dup"></span>{ " duplicate (dropped) " }
                <span class="key reply"></span>{ " reply " }
                <span class="key dht"></span>{ " DHT request (only its sender traces it)" }
                if !rest.is_empty() {
                    { format!(" · {} more peer(s) not drawn", rest.len()) }
                }
            </p>
        </div>
    }
}

fn span_title(p: &PlacedSpan) -> String {
    let s = &p.span;
    let mut lines = vec![format!(
        "{} on {} · {}",
        s.name,
        name_of(&s.peer),
        s.duration_ms()
            .map_or_else(|| "running".to_owned(), |ms| format!("{ms} ms"))
    )];
    if let SpanStatus::Error(why) = &s.status {
        lines.push(format!("error: {why}"));
    }
    for (k, v) in &s.attributes {
        let v = if v.len() > 20 && (k.starts_with("peer.") || k.ends_with("originator")) {
            name_of(v)
        } else {
            v.clone()
        };
        lines.push(format!("{k} = {v}"));
    }
    lines.join("\n")
}

/// A peer's name from its base58 id (the id itself when it does not parse).
pub(crate) fn name_of(peer: &str) -> String {
    peer.parse()
        .map(|id| peer_name(&id))
        .unwrap_or_else(|_| short(peer))
}

/// A stable colour per peer.
pub(crate) fn peer_colour(peer: &str) -> String {
    let hash = peer.bytes().fold(2166136261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16777619)
    });
    format!("hsl({}, 62%, 42%)", hash % 360)
}

fn short(id: &str) -> String {
    id.chars().take(8).collect()
}
