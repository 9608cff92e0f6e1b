//! The DHT panel: a form to put, get, remove and provide keys, the records and provider records
//! this peer holds, its routing table as k-buckets, and the path of the last lookup drawn round
//! by round, as Kademlia's iterative lookup proceeds (round 1: the peers we knew; round n + 1:
//! the peers that round-n replies named), with the store's counters and limits.
//!
//! Requests go to the node through the page's client; the request and its answer are
//! [`Action`]s on the page's reducer, which keeps the latest one ([`DhtRequestLine`]). The node
//! checks requests and its refusals are shown as they come (the form only insists on a key).

use tabmesh_core::dht::lookup::{HopOutcome, HopView, LookupKind, LookupView};
use tabmesh_core::dht::{
    BucketView, DhtConfigView, DhtCounters, DhtReply, DhtRequest, DhtSection, ProviderView,
    RecordView,
};
use web_sys::HtmlInputElement;
use yew::prelude::*;

use crate::app::Ui;
use crate::state::{Action, DhtRequestLine, Part};

/// Properties of [`DhtPanel`].
#[derive(Properties, PartialEq)]
pub(crate) struct DhtPanelProps {
    /// The `dht` section of the node's view; `None` until the DHT reports.
    pub(crate) dht: Part<Option<DhtSection>>,
    /// The relay's peer id, to mark it in the routing table and lookup paths.
    pub(crate) relay: Option<String>,
    /// The form's latest request and its answer.
    pub(crate) request: Option<DhtRequestLine>,
}

/// The DHT panel.
#[function_component(DhtPanel)]
pub(crate) fn dht_panel(props: &DhtPanelProps) -> Html {
    crate::renders::count("dht");
    let Some(dht) = props.dht.as_ref() else {
        return html! {
            <section class="panel dht" data-testid="dht-panel">
                <h2>{ "DHT" }</h2>
                <DhtRequestForm request={props.request.clone()} />
                <p class="empty" aria-busy="true">{ "The DHT is starting…" }</p>
            </section>
        };
    };
    html! {
        <section class="panel dht" data-testid="dht-panel">
            <h2>
                { "DHT " }
                <span class="count">
                    { format!("{} record(s) held · {} peer(s) in the routing table",
                        dht.records.len(), dht.routing_table_size) }
                </span>
                if dht.running_lookups > 0 {
                    <span class="badge relayed">{ format!("{} lookup(s) running", dht.running_lookups) }</span>
                }
                if !dht.queries.is_empty() {
                    <span class="count" title="Kademlia queries in flight here, by kind">
                        { format!(" · queries in flight: {}", queries_text(&dht.queries)) }
                    </span>
                }
            </h2>
            <DhtRequestForm request={props.request.clone()} />
            <div class="dht-columns">
                <div>
                    <h3>{ "Records held here " }<span class="count">{ dht.records.len() }</span></h3>
                    { records_table(&dht.records) }
                    <h3>{ "Provider records held here " }<span class="count">{ dht.providers.len() }</span></h3>
                    { providers_table(&dht.providers) }
                </div>
                <div>
                    <h3>
                        { "Routing table " }
                        <span class="count" data-testid="dht-routing-size">
                            { format!("{} peer(s) in {} bucket(s)", dht.routing_table_size, dht.routing_table.len()) }
                        </span>
                    </h3>
                    { routing_table(&dht.routing_table, props.relay.as_deref()) }
                </div>
            </div>
            <h3>{ "Last lookup" }</h3>
            { lookup_path(dht.last_lookup.as_ref(), props.relay.as_deref()) }
            <p class="dht-meta muted" data-testid="dht-counters">{ counters_text(&dht.counters) }</p>
            <p class="dht-meta muted" data-testid="dht-config">{ config_text(&dht.config) }</p>
        </section>
    }
}

/// Whether two DHT sections show the same: equal but for the records' and provider records'
/// times to expiry, compared as shown (to the second or minute, not the millisecond that
/// changes with every view). Each record is cloned to compare the rest of it: far less work
/// than drawing the panel again.
pub(crate) fn same_dht(a: &Option<DhtSection>, b: &Option<DhtSection>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return a.is_none() && b.is_none();
    };
    let DhtSection {
        records,
        providers,
        routing_table,
        routing_table_size,
        last_lookup,
        running_lookups,
        queries,
        counters,
        config,
    } = a;
    same_each(records, &b.records, |x, y| {
        span_text(x.expires_in_ms) == span_text(y.expires_in_ms)
            && *x
                == RecordView {
                    expires_in_ms: x.expires_in_ms,
                    ..y.clone()
                }
    }) && same_each(providers, &b.providers, |x, y| {
        x.expires_in_ms.map(span_text) == y.expires_in_ms.map(span_text)
            && *x
                == ProviderView {
                    expires_in_ms: x.expires_in_ms,
                    ..y.clone()
                }
    }) && (
        routing_table,
        routing_table_size,
        last_lookup,
        running_lookups,
        queries,
        counters,
        config,
    ) == (
        &b.routing_table,
        &b.routing_table_size,
        &b.last_lookup,
        &b.running_lookups,
        &b.queries,
        &b.counters,
        &b.config,
    )
}

/// Whether two lists are the same by `same`, item by item.
fn same_each<T>(a: &[T], b: &[T], same: impl Fn(&T, &T) -> bool) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
}

/// The operations of the form's buttons.
#[derive(Clone, Copy, PartialEq)]
enum Op {
    Put,
    Get,
    Remove,
    Provide,
    Providers,
}

/// Properties of [`DhtRequestForm`].
#[derive(Properties, PartialEq)]
struct DhtRequestFormProps {
    /// The latest request and its answer.
    request: Option<DhtRequestLine>,
}

/// Key, value and TTL inputs, the five buttons, and the latest request's answer.
#[function_component(DhtRequestForm)]
fn dht_request_form(props: &DhtRequestFormProps) -> Html {
    let key = use_node_ref();
    let value = use_node_ref();
    let ttl = use_node_ref();
    let ui = use_context::<Ui>();

    let run = {
        let (key, value, ttl) = (key.clone(), value.clone(), ttl.clone());
        Callback::from(move |op: Op| {
            let Some(ui) = ui.clone() else {
                return;
            };
            let text = |r: &NodeRef| {
                r.cast::<HtmlInputElement>()
                    .map(|i| i.value())
                    .unwrap_or_default()
            };
            let id = ui.client.next_request_id();
            match request_for(op, text(&key), text(&value), &text(&ttl)) {
                Ok(request) => send(&ui, id, request),
                Err(error) => ui.dispatch.dispatch(Action::DhtAnswered {
                    id,
                    asked: op_word(op).to_owned(),
                    answer: Err(error),
                }),
            }
        })
    };
    let button = |op: Op, test_id: &'static str, label: &'static str, title: &'static str| {
        let run = run.clone();
        html! {
            <button type="button" class="action" data-testid={test_id} title={title}
                onclick={Callback::from(move |_: MouseEvent| run.emit(op))}>{ label }</button>
        }
    };
    html! {
        <div class="dht-form">
            <div class="dht-inputs">
                <label>{ "key" }
                    <input ref={key} type="text" data-testid="dht-key" placeholder="greeting" autocomplete="off" />
                </label>
                <label class="dht-value-input">{ "value" }
                    <input ref={value} type="text" data-testid="dht-value" placeholder="hello, mesh" autocomplete="off" />
                </label>
                <label class="dht-ttl-input">{ "TTL (s)" }
                    <input ref={ttl} type="text" inputmode="decimal" data-testid="dht-ttl" placeholder="default" autocomplete="off" />
                </label>
            </div>
            <div class="dht-buttons">
                { button(Op::Put, "dht-put", "Put", "Store the value under the key at the closest peers") }
                { button(Op::Get, "dht-get", "Get", "Find the value under the key") }
                { button(Op::Remove, "dht-remove", "Remove", "Replace your record under the key with a signed tombstone") }
                { button(Op::Provide, "dht-provide", "Provide", "Announce that this tab provides the key") }
                { button(Op::Providers, "dht-providers", "Find providers", "Find who provides the key") }
            </div>
            { request_line(props.request.as_ref()) }
        </div>
    }
}

/// The request for `op`, or why none can be made (no key, or a TTL that is not a number).
fn request_for(op: Op, key: String, value: String, ttl: &str) -> Result<DhtRequest, String> {
    if key.is_empty() {
        return Err("the key is empty".to_owned());
    }
    Ok(match op {
        Op::Put => DhtRequest::Put {
            key,
            value,
            ttl_ms: ttl_ms(ttl)?,
        },
        Op::Get => DhtRequest::Get { key },
        Op::Remove => DhtRequest::Remove { key },
        Op::Provide => DhtRequest::Provide { key },
        Op::Providers => DhtRequest::Providers { key },
    })
}

/// The TTL field in ms: empty for the node's default. Its bounds are the node's to check.
fn ttl_ms(field: &str) -> Result<Option<u64>, String> {
    let field = field.trim();
    if field.is_empty() {
        return Ok(None);
    }
    match field.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(Some((secs * 1e3).round() as u64)),
        _ => Err(format!(
            "the TTL \"{field}\" is not a number of seconds (leave it empty for the default)"
        )),
    }
}

/// Sends `request` as request `id`; its answer goes to the reducer, which shows it unless a
/// later request was sent meanwhile.
fn send(ui: &Ui, id: u64, request: DhtRequest) {
    let asked = asked_text(&request);
    ui.dispatch.dispatch(Action::DhtAsked {
        id,
        asked: asked.clone(),
    });
    let ui = ui.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let answer = ui.client.dht(request).await.map_err(|e| e.to_string());
        ui.dispatch
            .dispatch(Action::DhtAnswered { id, asked, answer });
    });
}

fn op_word(op: Op) -> &'static str {
    match op {
        Op::Put => "put",
        Op::Get => "get",
        Op::Remove => "remove",
        Op::Provide => "provide",
        Op::Providers => "find providers",
    }
}

fn asked_text(request: &DhtRequest) -> String {
    let op = match request {
        DhtRequest::Put { .. } => Op::Put,
        DhtRequest::Get { .. } => Op::Get,
        DhtRequest::Remove { .. } => Op::Remove,
        DhtRequest::Provide { .. } => Op::Provide,
        DhtRequest::Providers { .. } => Op::Providers,
    };
    format!("{} \"{}\"", op_word(op), request.key())
}

fn request_line(line: Option<&DhtRequestLine>) -> Html {
    let Some(line) = line else {
        return html! {
            <p class="dht-result idle muted">
                { "Put a value under a key, then get it from another tab." }
            </p>
        };
    };
    let (status, body) = match &line.answer {
        None => (
            "pending",
            html! { <span class="muted">{ "working…" }</span> },
        ),
        Some(Ok(reply)) => ("ok", reply_details(reply)),
        Some(Err(error)) => ("error", html! { <span class="dht-error">{ error }</span> }),
    };
    html! {
        <div class={classes!("dht-result", status)} data-testid="dht-result" data-status={status} role="status">
            <span class="dht-asked">{ format!("{}: ", line.asked) }</span>
            { body }
        </div>
    }
}

fn reply_details(reply: &DhtReply) -> Html {
    let summary = html! { <span class="dht-summary">{ reply.summary() }</span> };
    match reply {
        DhtReply::Get {
            record: Some(r), ..
        } => html! {
            <>
                { summary }
                <dl class="dht-found">
                    <dt>{ "value" }</dt>
                    <dd>
                        if let Some(v) = &r.value {
                            <pre class="dht-value" data-testid="dht-found-value">{ v }</pre>
                        } else {
                            <code>{ &r.preview }</code>
                            <span class="muted">{ format!(" (binary, {} bytes)", r.value_bytes) }</span>
                        }
                    </dd>
                    <dt>{ "published by" }</dt>
                    <dd data-testid="dht-found-publisher">
                        <span class="peer-name">{ &r.publisher_name }</span>
                        if r.mine { <span class="badge direct">{ "you" }</span> }
                        <span class="muted">
                            { format!(" v{} · expires in {}", r.seq, span_text(r.expires_in_ms)) }
                        </span>
                    </dd>
                </dl>
            </>
        },
        DhtReply::Providers { providers, .. } => html! {
            <>
                { summary }
                if providers.is_empty() {
                    <span class="muted">{ " · nobody provides it" }</span>
                } else {
                    <ul class="dht-provider-names">
                        { for providers.iter().map(|p| html! {
                            <li key={p.peer_id.clone()} data-peer-id={p.peer_id.clone()}>
                                <span class="peer-name">{ &p.name }</span>
                                if p.mine { <span class="badge direct">{ "you" }</span> }
                            </li>
                        }) }
                    </ul>
                }
            </>
        },
        _ => summary,
    }
}

fn records_table(records: &[RecordView]) -> Html {
    let body = if records.is_empty() {
        html! { <p class="empty">{ "No records held here yet." }</p> }
    } else {
        html! {
            <table class="dht-table">
                <thead>
                    <tr>
                        <th>{ "key" }</th><th>{ "value" }</th><th>{ "publisher" }</th>
                        <th class="num">{ "seq" }</th><th>{ "expires in" }</th><th>{ "from" }</th>
                    </tr>
                </thead>
                <tbody>{ for records.iter().map(record_row) }</tbody>
            </table>
        }
    };
    html! { <div class="dht-records" data-testid="dht-records">{ body }</div> }
}

fn record_row(r: &RecordView) -> Html {
    html! {
        // The same key can be held under its old key too (stored before the namespace).
        <tr key={format!("{}{}", if r.old_key { "old:" } else { "" }, r.key)}
            data-testid="dht-record" data-key={r.key.clone()} data-old-key={r.old_key.to_string()}
            class={classes!(r.tombstone.then_some("tombstone"))}>
            <td class="dht-key">
                <code title={if r.old_key { r.key.clone() } else { format!("/tabmesh/{}", r.key) }}>{ &r.key }</code>
                if r.old_key {
                    <span class="badge old-key" title="stored before records moved under /tabmesh/; read until it expires">{ "old key" }</span>
                }
            </td>
            if r.tombstone {
                <td><span class="badge removed">{ "removed" }</span></td>
            } else {
                <td class="dht-preview" title={r.value.clone().unwrap_or_else(|| format!("{} bytes", r.value_bytes))}>
                    { &r.preview }
                </td>
            }
            <td>
                <span class="peer-name" title={r.publisher.clone()}>{ &r.publisher_name }</span>
                if r.mine { <span class="badge direct">{ "you" }</span> }
            </td>
            <td class="num">{ format!("v{}", r.seq) }</td>
            <td class="muted">{ span_text(r.expires_in_ms) }</td>
            <td class="muted">{ r.from.clone().unwrap_or_else(|| "–".to_owned()) }</td>
        </tr>
    }
}

fn providers_table(providers: &[ProviderView]) -> Html {
    let body = if providers.is_empty() {
        html! { <p class="empty">{ "No provider records held here yet." }</p> }
    } else {
        html! {
            <table class="dht-table">
                <thead>
                    <tr><th>{ "key" }</th><th>{ "provider" }</th><th>{ "expires in" }</th></tr>
                </thead>
                <tbody>
                    { for providers.iter().map(|p| html! {
                        <tr key={format!("{}/{}", p.key, p.peer_id)} data-testid="dht-provider"
                            data-key={p.key.clone()} data-peer-id={p.peer_id.clone()}>
                            <td class="dht-key"><code>{ &p.key }</code></td>
                            <td>
                                <span class="peer-name" title={p.peer_id.clone()}>{ &p.name }</span>
                                if p.mine { <span class="badge direct">{ "you" }</span> }
                            </td>
                            <td class="muted">{ p.expires_in_ms.map_or_else(|| "while provided".to_owned(), span_text) }</td>
                        </tr>
                    }) }
                </tbody>
            </table>
        }
    };
    html! { <div class="dht-providers-table" data-testid="dht-providers-table">{ body }</div> }
}

/// A "relay" tag after the relay's name.
fn relay_tag(peer_id: &str, relay: Option<&str>) -> Html {
    if relay == Some(peer_id) {
        html! { <span class="kind">{ "relay" }</span> }
    } else {
        html! {}
    }
}

fn routing_table(buckets: &[BucketView], relay: Option<&str>) -> Html {
    let body = if buckets.is_empty() {
        html! { <p class="empty">{ "No peers in the routing table yet." }</p> }
    } else {
        html! {
            <ol class="dht-buckets">
                { for buckets.iter().map(|b| bucket_row(b, relay)) }
            </ol>
        }
    };
    html! { <div class="dht-routing" data-testid="dht-routing">{ body }</div> }
}

fn bucket_row(b: &BucketView, relay: Option<&str>) -> Html {
    html! {
        <li key={b.index} class="dht-bucket" data-bucket={b.index.to_string()}>
            <div class="dht-bucket-label">
                { format!("bucket {}", b.index) }
                <span class="muted">{ format!(" distance 2^{} … 2^{}", b.index, b.index + 1) }</span>
                <span class="count">{ format!(" · {}", b.peers.len()) }</span>
            </div>
            <div class="dht-chips">
                { for b.peers.iter().map(|p| {
                    let state = if p.connected { "connected" } else { "disconnected" };
                    html! {
                        <span key={p.peer_id.clone()} class={classes!("dht-chip", state)}
                            data-peer-id={p.peer_id.clone()} title={format!("{} ({state})", p.peer_id)}>
                            <span class="dht-chip-name">{ &p.name }</span>
                            { relay_tag(&p.peer_id, relay) }
                            <code title="leading bytes of the XOR distance from us">{ &p.distance }</code>
                        </span>
                    }
                }) }
            </div>
        </li>
    }
}

fn lookup_path(lookup: Option<&LookupView>, relay: Option<&str>) -> Html {
    let Some(l) = lookup else {
        return html! {
            <div class="dht-lookup" data-testid="dht-lookup">
                <p class="empty">{ "Run a get or put to see the lookup path." }</p>
            </div>
        };
    };
    // The rounds in order, each with its hops (a lookup has a few dozen hops at most).
    let after = |round: Option<u32>| {
        l.hops
            .iter()
            .map(|h| h.round)
            .filter(|r| round.is_none_or(|round| *r > round))
            .min()
    };
    let mut next = after(None);
    let rounds = std::iter::from_fn(|| {
        let round = next?;
        next = after(Some(round));
        Some((round, l.hops.iter().filter(move |h| h.round == round)))
    });
    let columns = rounds.enumerate().map(|(i, (round, hops))| {
        let source = if round <= 1 {
            "peers we knew".to_owned()
        } else {
            format!("named by round {} replies", round - 1)
        };
        html! {
            <>
                if i > 0 { <div class="dht-round-arrow" aria-hidden="true">{ "→" }</div> }
                <div class="dht-round" data-round={round.to_string()}>
                    <div class="dht-round-title">
                        { format!("Round {round}") }
                        <span class="muted">{ source }</span>
                    </div>
                    { for hops.map(|h| hop_box(h, relay)) }
                </div>
            </>
        }
    });
    html! {
        <div class="dht-lookup" data-testid="dht-lookup" data-running={l.running.to_string()}>
            <p class="dht-lookup-summary">
                <strong>{ kind_word(l.kind) }</strong>{ " " }<code>{ &l.target }</code>
                { format!(" · {} round(s) · {} peer(s) asked · {}", l.rounds, l.contacted, ms_text(l.duration_ms)) }
                if l.running {
                    <span class="badge relayed">{ "running" }</span>
                } else {
                    <span class="muted">{ " · done" }</span>
                }
                if let Some(result) = &l.result {
                    <span class="dht-lookup-result">{ format!(" · {result}") }</span>
                }
            </p>
            if l.hops.is_empty() {
                <p class="empty">{ "No peer asked yet." }</p>
            } else {
                <div class="dht-path">{ for columns }</div>
            }
        </div>
    }
}

fn hop_box(h: &HopView, relay: Option<&str>) -> Html {
    let (class, outcome) = match &h.outcome {
        HopOutcome::Pending => ("pending", "…".to_owned()),
        HopOutcome::Replied {
            found: true,
            closer,
            new,
        } => (
            "found",
            if *closer > 0 {
                format!("★ had it · named {closer} closer ({new} new)")
            } else {
                "★ had it".to_owned()
            },
        ),
        HopOutcome::Replied { closer, new, .. } => {
            ("replied", format!("named {closer} closer ({new} new)"))
        }
        HopOutcome::Failed { reason } => ("failed", reason.clone()),
        HopOutcome::Unanswered => (
            "unanswered",
            "not needed: the lookup ended first".to_owned(),
        ),
    };
    let took = h.took_ms.map_or_else(
        || {
            if matches!(h.outcome, HopOutcome::Unanswered) {
                "no answer".to_owned()
            } else {
                "waiting".to_owned()
            }
        },
        |t| format!("took {}", ms_text(t)),
    );
    html! {
        <div class={classes!("dht-hop", class)} data-testid="dht-hop" data-round={h.round.to_string()}
            data-status={class} data-peer-id={h.peer_id.clone()} title={h.peer_id.clone()}>
            <div class="peer-name">{ &h.name }{ relay_tag(&h.peer_id, relay) }</div>
            <div class="muted">{ format!("asked at +{} · {took}", ms_text(h.asked_at_ms)) }</div>
            <div class="dht-hop-outcome">{ outcome }</div>
        </div>
    }
}

fn kind_word(kind: LookupKind) -> &'static str {
    match kind {
        LookupKind::GetRecord => "get",
        LookupKind::PutRecord => "put",
        LookupKind::GetProviders => "find providers",
        LookupKind::AddProvider => "provide",
        LookupKind::FindNode => "find node",
    }
}

fn counters_text(c: &DhtCounters) -> String {
    let mut text = format!(
        "records accepted {} · refused {} (provider records {}) · handed over {} · restored {}",
        c.records_accepted, c.records_refused, c.providers_refused, c.handed_over, c.restored
    );
    if c.bootstraps_skipped > 0 {
        text.push_str(&format!(
            " · Kademlia's own bootstrap steps skipped {} (the relay had named every peer)",
            c.bootstraps_skipped
        ));
    }
    if let Some(reason) = &c.last_refusal {
        text.push_str(&format!(" · last refusal: {reason}"));
    }
    text
}

fn config_text(c: &DhtConfigView) -> String {
    let l = &c.limits;
    format!(
        "k = {} · replicated every {} · republished every {} · provider records live {} · \
         limits: key ≤ {} B, value ≤ {} B, TTL ≤ {} (default {}), {} live records per publisher, \
         {} keys per provider",
        c.replication_factor,
        span_text(c.replication_interval_ms),
        span_text(c.publication_interval_ms),
        span_text(c.provider_ttl_ms),
        // A record's key is stored under the `/tabmesh/` namespace, which takes its share.
        l.record
            .max_key_bytes
            .saturating_sub(tabmesh_core::dht::key::PREFIX.len()),
        l.record.max_value_bytes,
        span_text(l.record.max_ttl_ms),
        span_text(l.record.default_ttl_ms),
        l.max_records_per_publisher,
        l.max_keys_per_provider,
    )
}

/// A stretch of time to the nearest unit that matters to a reader: "45 s", "59 min", "2 h 5 min".
fn span_text(ms: u64) -> String {
    match ms {
        0 => "–".to_owned(),
        1..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{} s", ms / 1_000),
        60_000..=3_599_999 => format!("{} min", ms / 60_000),
        _ => match (ms / 3_600_000, ms % 3_600_000 / 60_000) {
            (h, 0) => format!("{h} h"),
            (h, m) => format!("{h} h {m} min"),
        },
    }
}

/// A lookup's times: ms while short, seconds beyond 10 s.
fn ms_text(ms: u64) -> String {
    if ms < 10_000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1e3)
    }
}

/// "2 bootstrap, 1 replicate".
fn queries_text(queries: &std::collections::BTreeMap<String, u64>) -> String {
    queries
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tabmesh_core::dht::DhtConfig;
    use wasm_bindgen_test::wasm_bindgen_test;

    use super::*;

    fn record(key: &str, seq: u64, expires_in_ms: u64) -> RecordView {
        RecordView {
            key: key.to_owned(),
            old_key: false,
            value: Some("v".to_owned()),
            preview: "v".to_owned(),
            value_bytes: 1,
            publisher: "id-p".to_owned(),
            publisher_name: "p".to_owned(),
            mine: false,
            seq,
            expires_at_unix_ms: 1_000_000 + seq,
            expires_in_ms,
            tombstone: false,
            from: None,
        }
    }

    fn provider(key: &str, expires_in_ms: Option<u64>) -> ProviderView {
        ProviderView {
            key: key.to_owned(),
            peer_id: "id-p".to_owned(),
            name: "p".to_owned(),
            mine: false,
            expires_in_ms,
        }
    }

    fn section(records: Vec<RecordView>, providers: Vec<ProviderView>) -> Option<DhtSection> {
        Some(DhtSection {
            records,
            providers,
            routing_table: Vec::new(),
            routing_table_size: 3,
            last_lookup: None,
            running_lookups: 0,
            queries: BTreeMap::new(),
            counters: DhtCounters::default(),
            config: DhtConfigView::from(&DhtConfig::default()),
        })
    }

    #[wasm_bindgen_test]
    fn times_to_expiry_count_as_shown() {
        let a = section(
            vec![record("k", 1, 42_900)],
            vec![provider("svc", Some(170_000))],
        );
        // 42.1 s still shows "42 s", 150 s still "2 min".
        let b = section(
            vec![record("k", 1, 42_100)],
            vec![provider("svc", Some(150_000))],
        );
        assert!(same_dht(&a, &b));
        assert!(same_dht(&a, &a.clone()));

        let record_crossed = section(
            vec![record("k", 1, 41_900)],
            vec![provider("svc", Some(170_000))],
        );
        assert!(!same_dht(&a, &record_crossed), "42 s became 41 s");
        let provider_crossed = section(
            vec![record("k", 1, 42_900)],
            vec![provider("svc", Some(119_000))],
        );
        assert!(!same_dht(&a, &provider_crossed), "2 min became 1 min");
        let no_expiry = section(vec![record("k", 1, 42_900)], vec![provider("svc", None)]);
        assert!(!same_dht(&a, &no_expiry));
    }

    #[wasm_bindgen_test]
    fn anything_else_that_changed_counts() {
        let a = section(vec![record("k", 1, 42_900)], Vec::new());
        let newer = section(vec![record("k", 2, 42_900)], Vec::new());
        assert!(!same_dht(&a, &newer), "a new version of the record");
        let more = section(
            vec![record("k", 1, 42_900), record("l", 1, 42_900)],
            Vec::new(),
        );
        assert!(!same_dht(&a, &more));
        let mut busier = a.clone();
        if let Some(section) = busier.as_mut() {
            section.running_lookups = 1;
        }
        assert!(!same_dht(&a, &busier));
        let mut refused = a.clone();
        if let Some(section) = refused.as_mut() {
            section.counters.records_refused = 1;
        }
        assert!(!same_dht(&a, &refused));
        assert!(same_dht(&None, &None));
        assert!(!same_dht(&a, &None));
        assert!(!same_dht(&None, &a));
    }
}
