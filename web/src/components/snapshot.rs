//! The Snapshot panel: Chandy-Lamport global snapshots taken from this tab, and the token demo
//! that makes their consistency visible.
//!
//! - **Controls**: take a snapshot (markers on every channel), take a naive one (every peer
//!   asked for its state, no markers), switch the token demo in this tab.
//! - **Checks**: tokens (balances plus tokens in flight against the total) and channels (for
//!   each, sent = received + in flight), with their figures, green or red.
//! - **Topology**: the peers as a graph, each with its balance, the channels that carried
//!   tokens in flight at the cut drawn thick and labelled.
//! - **The cut**: a lane per peer, time flowing down, every channel message around the
//!   snapshot as an arrow; each peer's record is a dot on its lane and the dots joined are the
//!   cut. A message sent before its sender's record and received after its receiver's crosses
//!   the cut: it is in flight, and drawn orange. Markers are dashed.
//! - **Tables**: each peer's recorded state, each channel's numbers and messages in flight.

use std::collections::{BTreeMap, HashMap};
use std::f64::consts::PI;

use tabmesh_core::snapshot::state::{InFlight, SnapshotResult, SnapshotSection, TimelineEvent};
use tabmesh_node::Command;
use tabmesh_node::snapshot::SnapshotCommand;
use web_sys::HtmlInputElement;
use yew::prelude::*;

use crate::app::Ui;
use crate::components::tracing::{name_of, peer_colour};
use crate::state::Part;

/// Height of the cut diagram's time axis, px.
const CUT_HEIGHT: f64 = 300.0;
/// Lanes drawn at most.
const MAX_LANES: usize = 12;

/// Properties of [`SnapshotPanel`].
#[derive(Properties, PartialEq)]
pub(crate) struct SnapshotPanelProps {
    /// The `snapshot` section of the node's view; `None` until it reports.
    pub(crate) section: Part<Option<SnapshotSection>>,
    /// This tab's peer id.
    pub(crate) me: AttrValue,
}

/// The Snapshot panel.
#[function_component(SnapshotPanel)]
pub(crate) fn snapshot_panel(props: &SnapshotPanelProps) -> Html {
    crate::renders::count("snapshot");
    let ui = use_context::<Ui>();
    // A snapshot being taken (naive or not), and the last failure.
    let pending = use_state(|| None::<bool>);
    let error = use_state(|| None::<String>);
    let chosen = use_state(|| None::<String>);
    let Some(section) = props.section.as_ref() else {
        return html! {
            <section class="panel snapshot" data-testid="snapshot-panel">
                <h2>{ "Snapshots" }</h2>
                <p class="empty" aria-busy="true">{ "Snapshots are starting…" }</p>
            </section>
        };
    };
    let take = |naive: bool| {
        let (ui, pending, error, chosen) =
            (ui.clone(), pending.clone(), error.clone(), chosen.clone());
        Callback::from(move |_: MouseEvent| {
            let Some(ui) = ui.clone() else {
                return;
            };
            pending.set(Some(naive));
            error.set(None);
            let (pending, error, chosen) = (pending.clone(), error.clone(), chosen.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match ui.client.snapshot(naive).await {
                    Ok(result) => chosen.set(Some(result.id)),
                    Err(why) => error.set(Some(why)),
                }
                pending.set(None);
            });
        })
    };
    let on_tokens = ui.clone().map(|ui| {
        Callback::from(move |e: Event| {
            let on = e.target_unchecked_into::<HtmlInputElement>().checked();
            ui.client
                .send(Command::Snapshot(SnapshotCommand::TokenDemo(on)));
        })
    });
    let running = section.tokens.as_ref().is_some_and(|t| t.running);
    let shown = chosen
        .as_ref()
        .and_then(|id| section.recent.iter().find(|s| &s.id == id))
        .or_else(|| section.recent.first());
    let busy = pending.is_some();
    html! {
        <section class="panel snapshot" data-testid="snapshot-panel">
            <h2>
                { "Snapshots " }
                <span class="count">
                    { format!("{} channel peer(s) · {} frames sent · {} received{}",
                        section.channel_peers.len(), section.frames_sent, section.frames_received,
                        if section.refused + section.breaks + section.frames_dropped > 0 {
                            format!(" · {} refused · {} breaks · {} dropped",
                                section.refused, section.breaks, section.frames_dropped)
                        } else { String::new() }) }
                </span>
            </h2>
            <p class="muted">
                { "A Chandy-Lamport snapshot records every peer's state and the messages in flight \
                   on every channel, without stopping anyone: markers travel on the same ordered \
                   channels as the messages they cut. Switch the token demo on in a few tabs, then \
                   compare a snapshot with a naive one." }
            </p>
            <div class="actions">
                <button type="button" data-testid="take-snapshot" disabled={busy || ui.is_none()}
                    onclick={take(false)}>
                    { if *pending == Some(false) { "Taking snapshot…" } else { "Take snapshot" } }
                </button>
                <button type="button" data-testid="take-naive" disabled={busy || ui.is_none()}
                    onclick={take(true)}>
                    { if *pending == Some(true) { "Asking every peer…" } else { "Naive snapshot (no markers)" } }
                </button>
                <label class="switch">
                    <input type="checkbox" data-testid="token-demo" checked={running} onchange={on_tokens} />
                    { " Token demo" }
                </label>
                if let Some(tokens) = &section.tokens {
                    <span class="muted" data-testid="my-balance">
                        { format!("my balance: {} tokens (minted {})", tokens.balance, tokens.minted) }
                    </span>
                }
            </div>
            if let Some(why) = &*error {
                <p class="banner error" role="alert">{ format!("Snapshot failed: {why}") }</p>
            }
            if section.recent.is_empty() {
                <p class="empty">{ "No snapshot taken from this tab yet." }</p>
            } else {
                <ul class="chips" data-testid="recent-snapshots">
                    { for section.recent.iter().map(|s| {
                        let id = s.id.clone();
                        let chosen = chosen.clone();
                        let selected = shown.is_some_and(|x| x.id == s.id);
                        let ok = s.complete && s.checks.tokens_conserved && s.checks.channels_consistent;
                        html! {
                            <li class={classes!("chip", selected.then_some("selected"), if ok { "ok" } else { "bad" })}
                                onclick={Callback::from(move |_: MouseEvent| chosen.set(Some(id.clone())))}>
                                { format!("{}{} {}", if s.naive { "naive " } else { "" }, s.id,
                                    if ok { "✓" } else { "✗" }) }
                            </li>
                        }
                    }) }
                </ul>
            }
            if let Some(snapshot) = shown {
                { view_snapshot(snapshot, &props.me) }
            }
        </section>
    }
}

fn view_snapshot(s: &SnapshotResult, me: &str) -> Html {
    let t = &s.tokens;
    let balances = t.counted - t.in_flight as i64;
    let bad_channels = s.channels.iter().filter(|c| !c.consistent).count();
    let check = |ok: bool| if ok { "check ok" } else { "check bad" };
    html! {
        <div class="snapshot-result" data-testid="snapshot-result" data-complete={s.complete.to_string()}
            data-tokens-conserved={s.checks.tokens_conserved.to_string()}
            data-channels-consistent={s.checks.channels_consistent.to_string()}>
            <h3>
                { format!("{} {} · ", if s.naive { "Naive snapshot" } else { "Snapshot" }, s.id) }
                if s.complete {
                    <span class="ok">{ "complete" }</span>
                } else {
                    <span class="bad">{ "incomplete" }</span>
                }
                { format!(" · {} ms · {} peers · {} channels · {} markers · {} bytes",
                    s.duration_ms, s.peers.len(), s.channels.len(), s.markers_sent, s.bytes_sent) }
            </h3>
            if !s.missing.is_empty() {
                <div class="banner error" role="alert" data-testid="snapshot-missing">
                    <strong>{ "Missing: " }</strong>
                    <ul>{ for s.missing.iter().map(|m| html! { <li>{ m }</li> }) }</ul>
                </div>
            }
            <div class="checks">
                <div class={check(s.checks.tokens_conserved)} data-testid="check-tokens">
                    <strong>{ if s.checks.tokens_conserved { "✓ Tokens conserved" } else { "✗ Tokens not conserved" } }</strong>
                    <span>{ format!("{balances} in balances + {} in flight = {} of {} total", t.in_flight, t.counted, t.total) }</span>
                    if s.naive && !s.checks.tokens_conserved {
                        <span class="muted">{ "No markers: each peer was read at a different moment, and tokens travelling between them were counted twice or not at all." }</span>
                    }
                </div>
                <div class={check(s.checks.channels_consistent)} data-testid="check-channels">
                    <strong>{ if s.checks.channels_consistent { "✓ Channels consistent" } else { "✗ Channels inconsistent" } }</strong>
                    <span>{ format!("{} of {} channels: sent = received + in flight",
                        s.channels.len() - bad_channels, s.channels.len()) }</span>
                </div>
            </div>
            <div class="snapshot-pictures">
                { topology(s, me) }
                { cut_diagram(s, me) }
            </div>
            { peer_table(s, me) }
            { channel_table(s) }
        </div>
    }
}

/// The peers on a circle, their connections as edges; channels with tokens in flight thick.
fn topology(s: &SnapshotResult, me: &str) -> Html {
    let n = s.peers.len().max(1);
    let (w, h, r) = (380.0, 300.0, 110.0);
    let pos: HashMap<&str, (f64, f64)> = s
        .peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let a = -PI / 2.0 + 2.0 * PI * i as f64 / n as f64;
            (
                p.peer_id.as_str(),
                (w / 2.0 + r * a.cos(), h / 2.0 + r * a.sin()),
            )
        })
        .collect();
    let mut edges: BTreeMap<(&str, &str), ()> = BTreeMap::new();
    for p in &s.peers {
        for other in &p.state.connections {
            let key = if p.peer_id.as_str() < other.as_str() {
                (p.peer_id.as_str(), other.as_str())
            } else {
                (other.as_str(), p.peer_id.as_str())
            };
            edges.insert(key, ());
        }
    }
    let in_flight: HashMap<(&str, &str), u64> = s
        .channels
        .iter()
        .map(|c| {
            let tokens = c
                .in_flight
                .iter()
                .map(|m| match m {
                    InFlight::Tokens { amount } => *amount,
                    InFlight::Gimps { .. } => 0,
                })
                .sum();
            ((c.from.as_str(), c.to.as_str()), tokens)
        })
        .collect();
    html! {
        <figure class="topology">
            <svg data-testid="topology" width={w.to_string()} height={h.to_string()}
                viewBox={format!("0 0 {w} {h}")} role="img"
                aria-label="the network's topology at the snapshot: a node per peer, an edge per connection">
                { for edges.keys().filter_map(|(a, b)| {
                    let ((x1, y1), (x2, y2)) = (*pos.get(a)?, *pos.get(b)?);
                    let flowing = in_flight.get(&(*a, *b)).copied().unwrap_or(0)
                        + in_flight.get(&(*b, *a)).copied().unwrap_or(0);
                    Some(html! {
                        <g class={classes!("edge", (flowing > 0).then_some("flowing"))}>
                            <line x1={x1.to_string()} y1={y1.to_string()} x2={x2.to_string()} y2={y2.to_string()} />
                            if flowing > 0 {
                                // A third of the way along, so that crossing edges' labels part.
                                <text x={(x1 + (x2 - x1) / 3.0).to_string()} y={(y1 + (y2 - y1) / 3.0 - 3.0).to_string()}
                                    text-anchor="middle">{ format!("{flowing} in flight") }</text>
                            }
                        </g>
                    })
                }) }
                { for s.peers.iter().map(|p| {
                    let (x, y) = pos[p.peer_id.as_str()];
                    let label = if p.peer_id == me { format!("{} (me)", p.state.name) } else { p.state.name.clone() };
                    html! {
                        <g class="node" data-peer={p.peer_id.clone()}>
                            <circle cx={x.to_string()} cy={y.to_string()} r="9" fill={peer_colour(&p.peer_id)} />
                            <text x={x.to_string()} y={(y - 14.0).to_string()} text-anchor="middle">{ label }</text>
                            if let Some(tokens) = &p.state.tokens {
                                <text class="balance" x={x.to_string()} y={(y + 22.0).to_string()} text-anchor="middle">
                                    { format!("{} tokens", tokens.balance) }
                                </text>
                            }
                        </g>
                    }
                }) }
            </svg>
            <figcaption class="muted">{ "Topology: an edge per connection; thick edges carried tokens in flight at the cut." }</figcaption>
        </figure>
    }
}

/// One arrow of the cut diagram.
struct Arrow {
    from: String,
    to: String,
    sent_ms: u64,
    received_ms: u64,
    marker: bool,
    crossing: bool,
    title: String,
}

/// Sends matched with their receipts: by channel and number, markers in order.
fn arrows(s: &SnapshotResult) -> Vec<Arrow> {
    let recorded: HashMap<&str, u64> = s
        .peers
        .iter()
        .map(|p| (p.peer_id.as_str(), p.state.recorded_unix_ms))
        .collect();
    // Receipts by (sender, receiver, kind, n); markers queue up in order.
    let mut receipts: HashMap<(&str, &str, &str, u64), Vec<&TimelineEvent>> = HashMap::new();
    for p in &s.peers {
        for e in p.state.timeline.iter().filter(|e| !e.sent) {
            receipts
                .entry((e.peer.as_str(), p.peer_id.as_str(), e.kind.as_str(), e.n))
                .or_default()
                .push(e);
        }
    }
    let mut out = Vec::new();
    for p in &s.peers {
        for e in p.state.timeline.iter().filter(|e| e.sent) {
            let key = (p.peer_id.as_str(), e.peer.as_str(), e.kind.as_str(), e.n);
            let Some(queue) = receipts.get_mut(&key) else {
                continue;
            };
            if queue.is_empty() {
                continue;
            }
            let got = queue.remove(0);
            let marker = e.kind == "marker";
            let sent_before = recorded
                .get(p.peer_id.as_str())
                .is_some_and(|r| e.at_unix_ms <= *r);
            let received_after = recorded
                .get(e.peer.as_str())
                .is_some_and(|r| got.at_unix_ms > *r);
            out.push(Arrow {
                from: p.peer_id.clone(),
                to: e.peer.clone(),
                sent_ms: e.at_unix_ms,
                received_ms: got.at_unix_ms.max(e.at_unix_ms),
                marker,
                crossing: !marker && sent_before && received_after,
                title: if marker {
                    format!("marker {} → {}", name_of(&p.peer_id), name_of(&e.peer))
                } else if e.kind == "gimps" {
                    format!(
                        "gossip {} → {} (#{} on the channel)",
                        name_of(&p.peer_id),
                        name_of(&e.peer),
                        e.n
                    )
                } else {
                    format!(
                        "{} tokens {} → {} (#{} on the channel)",
                        e.amount,
                        name_of(&p.peer_id),
                        name_of(&e.peer),
                        e.n
                    )
                },
            });
        }
    }
    out
}

/// Lanes with the channel traffic around the snapshot, and the cut through the records.
fn cut_diagram(s: &SnapshotResult, me: &str) -> Html {
    let lanes: Vec<&str> = s
        .peers
        .iter()
        .take(MAX_LANES)
        .map(|p| p.peer_id.as_str())
        .collect();
    let records: Vec<u64> = s.peers.iter().map(|p| p.state.recorded_unix_ms).collect();
    let (Some(first), Some(last)) = (records.iter().min(), records.iter().max()) else {
        return html! {};
    };
    let arrows = arrows(s);
    // The window: a little before the first record to just after the last thing recorded
    // (a peer's part leaves as soon as its last marker is in, so little follows the cut).
    let latest = arrows
        .iter()
        .map(|a| a.received_ms)
        .filter(|ms| *ms <= last + 1_000)
        .max()
        .unwrap_or(*last);
    let t0 = first.saturating_sub(250);
    let t1 = (latest.max(*last) + 40).max(t0 + 1);
    let in_window = |ms: u64| ms >= t0 && ms <= t1;
    let lane_w = (560.0 / lanes.len().max(1) as f64).clamp(70.0, 140.0);
    let (left, top) = (48.0, 30.0);
    let width = left + lane_w * lanes.len() as f64 + 10.0;
    let height = top + CUT_HEIGHT + 12.0;
    let x_of: HashMap<&str, f64> = lanes
        .iter()
        .enumerate()
        .map(|(i, p)| (*p, left + lane_w * (i as f64 + 0.5)))
        .collect();
    let y = |ms: u64| top + (ms.clamp(t0, t1) - t0) as f64 * CUT_HEIGHT / (t1 - t0) as f64;
    let cut: Vec<String> = s
        .peers
        .iter()
        .filter_map(|p| {
            let x = x_of.get(p.peer_id.as_str())?;
            Some(format!("{x:.1},{:.1}", y(p.state.recorded_unix_ms)))
        })
        .collect();
    let shown: Vec<&Arrow> = arrows
        .iter()
        .filter(|a| in_window(a.sent_ms) || in_window(a.received_ms))
        .collect();
    let crossing = shown.iter().filter(|a| a.crossing).count();
    html! {
        <figure class="cut">
            <div class="lanes-wrap">
                <svg class="lanes" data-testid="cut-diagram" width={width.to_string()} height={height.to_string()}
                    viewBox={format!("0 0 {width:.0} {height:.0}")} role="img"
                    aria-label="the cut: a lane per peer, time flowing down, an arrow per channel message, the records joined">
                    <defs>
                        { for [("cut-arrow", "#3b5bdb"), ("cut-arrow-flight", "#e8590c"), ("cut-arrow-marker", "#c92a2a")]
                            .into_iter().map(|(id, colour)| html! {
                            <marker id={id} viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
                                <path d="M0,0 L8,4 L0,8 z" fill={colour} />
                            </marker>
                        }) }
                    </defs>
                    { for (0..=2).map(|i| {
                        let ms = (t1 - t0) * i / 2;
                        html! {
                            <g class="tick">
                                <line x1={(left - 6.0).to_string()} x2={(width - 10.0).to_string()}
                                    y1={y(t0 + ms).to_string()} y2={y(t0 + ms).to_string()} />
                                <text x={(left - 8.0).to_string()} y={(y(t0 + ms) + 4.0).to_string()} text-anchor="end">
                                    { format!("{ms} ms") }
                                </text>
                            </g>
                        }
                    }) }
                    { for lanes.iter().map(|peer| {
                        let x = x_of[peer];
                        let label = if *peer == me { format!("{} (me)", name_of(peer)) } else { name_of(peer) };
                        html! {
                            <g class="lane">
                                <text x={x.to_string()} y="14" text-anchor="middle" fill={peer_colour(peer)}>{ label }</text>
                                <line x1={x.to_string()} x2={x.to_string()} y1={top.to_string()}
                                    y2={(top + CUT_HEIGHT).to_string()} stroke={peer_colour(peer)} />
                            </g>
                        }
                    }) }
                    { for shown.iter().filter_map(|a| {
                        let (x1, x2) = (*x_of.get(a.from.as_str())?, *x_of.get(a.to.as_str())?);
                        let (class, marker) = match (a.marker, a.crossing) {
                            (true, _) => ("msg marker", "url(#cut-arrow-marker)"),
                            (false, true) => ("msg in-flight", "url(#cut-arrow-flight)"),
                            (false, false) => ("msg", "url(#cut-arrow)"),
                        };
                        let dx = if x2 > x1 { -4.0 } else { 4.0 };
                        Some(html! {
                            <line class={class} data-testid="cut-arrow" x1={x1.to_string()} y1={y(a.sent_ms).to_string()}
                                x2={(x2 + dx).to_string()} y2={y(a.received_ms).to_string()} marker-end={marker}>
                                <title>{ a.title.clone() }</title>
                            </line>
                        })
                    }) }
                    <polyline class="cut-line" data-testid="cut-line" points={cut.join(" ")} />
                    { for s.peers.iter().filter_map(|p| {
                        let x = x_of.get(p.peer_id.as_str())?;
                        Some(html! {
                            <circle class="record" cx={x.to_string()} cy={y(p.state.recorded_unix_ms).to_string()} r="5">
                                <title>{ format!("{} recorded its state", p.state.name) }</title>
                            </circle>
                        })
                    }) }
                </svg>
            </div>
            <figcaption class="muted">
                if s.naive {
                    { "No markers: each dot is the moment that peer answered. The transfers between \
                       those moments were recorded by nobody, so a naive snapshot cannot say which \
                       tokens were in flight. " }
                }
                <span class="key msg"></span>{ " transfer or gossip " }
                <span class="key in-flight"></span>{ format!(" in flight at the cut ({crossing}) ") }
                <span class="key marker"></span>{ " marker " }
                <span class="key cut"></span>{ " the cut (each peer's record)" }
            </figcaption>
        </figure>
    }
}

fn peer_table(s: &SnapshotResult, me: &str) -> Html {
    html! {
        <table class="snapshot-peers" data-testid="snapshot-peers">
            <thead><tr>
                <th>{ "Peer" }</th><th>{ "Balance" }</th><th>{ "Largest prime" }</th><th>{ "Found by" }</th>
                <th>{ "Gossip peers" }</th><th>{ "Gossip sent / received" }</th><th>{ "DHT records" }</th><th>{ "Connections" }</th>
            </tr></thead>
            <tbody>
                { for s.peers.iter().map(|p| {
                    let st = &p.state;
                    html! {
                        <tr class={classes!((p.peer_id == me).then_some("me"))}>
                            <td>{ &st.name }</td>
                            <td>{ st.tokens.as_ref().map_or("—".to_owned(), |t| t.balance.to_string()) }</td>
                            <td>{ st.gimps.largest_exponent.map_or("—".to_owned(), |e| format!("2^{e}-1")) }</td>
                            <td>{ st.gimps.finder.as_deref().map_or("—".to_owned(), name_of) }</td>
                            <td>{ st.gimps.peers }</td>
                            <td>{ format!("{} / {}", st.gimps.sent, st.gimps.received) }</td>
                            <td>{ st.dht_records }</td>
                            <td>{ st.connections.len() }</td>
                        </tr>
                    }
                }) }
            </tbody>
        </table>
    }
}

fn channel_table(s: &SnapshotResult) -> Html {
    html! {
        <details class="snapshot-channels">
            <summary>{ format!("Channels ({})", s.channels.len()) }</summary>
            <table data-testid="snapshot-channels">
                <thead><tr>
                    <th>{ "From" }</th><th>{ "To" }</th><th>{ "Sent" }</th><th>{ "Received" }</th>
                    <th>{ "In flight" }</th><th>{ "Consistent" }</th>
                </tr></thead>
                <tbody>
                    { for s.channels.iter().map(|c| html! {
                        <tr class={classes!((!c.consistent).then_some("bad"))}>
                            <td>{ name_of(&c.from) }</td>
                            <td>{ name_of(&c.to) }</td>
                            <td>{ c.sent.map_or("?".to_owned(), |n| n.to_string()) }</td>
                            <td>{ c.received }</td>
                            <td>{ c.in_flight.iter().map(|m| match m {
                                InFlight::Tokens { amount } => format!("{amount} tokens"),
                                InFlight::Gimps { summary } => summary.clone(),
                            }).collect::<Vec<_>>().join(", ") }</td>
                            <td>{ if c.consistent { "✓" } else { "✗" } }</td>
                        </tr>
                    }) }
                </tbody>
            </table>
        </details>
    }
}
