//! The Services panel: what this tab offers (the built-ins' switches, services written here in
//! JavaScript, with their call counts), what the network offers (read from the DHT), a call
//! form built from a service's declared message types, and the latest calls made and served,
//! each with the route it took drawn hop by hop.
//!
//! Requests go to the node through the page's client; calls, catalog reads and offers are
//! [`Action`]s on the page's reducer.

use gloo_timers::callback::{Interval, Timeout};
use serde_json::Value;
use tabmesh_core::peers::PeerView;
use tabmesh_core::services::{
    Answerer, CallRecord, CallRequest, CallSide, Catalog, Descriptor, Listing, MessageType,
    OfferView, ServicesSection,
};
use wasm_bindgen::JsCast;
use web_sys::{HtmlInputElement, HtmlSelectElement, HtmlTextAreaElement};
use yew::prelude::*;

use crate::app::Ui;
use crate::node_client::error_text;
use crate::state::{Action, CallLine, CatalogLine, Part};

/// How often the network's catalog is read while the panel is shown, in ms.
const CATALOG_EVERY_MS: u32 = 30_000;

/// When the catalog is first read, in ms after the panel is shown (the page's start): tabs
/// opened together have met by then, and the survey's lookups no longer compete with their
/// handshakes.
const FIRST_CATALOG_AFTER_MS: u32 = 3_000;

/// Properties of [`ServicesPanel`].
#[derive(Properties, PartialEq)]
pub(crate) struct ServicesPanelProps {
    /// The `services` section of the node's view; `None` until it reports.
    pub(crate) services: Part<Option<ServicesSection>>,
    /// This tab's peer id, to mark it among providers.
    pub(crate) me: AttrValue,
    /// Our peers now, to tell providers we are connected to from those that may have left.
    pub(crate) peers: Part<[PeerView]>,
    /// The network's catalog.
    pub(crate) catalog: CatalogLine,
    /// The form's latest call.
    pub(crate) call: Option<CallLine>,
    /// What the last change to the offers did.
    pub(crate) note: Option<Result<String, String>>,
}

/// Reads the catalog and reports it to the reducer.
fn read_catalog(ui: &Ui) {
    let ui = ui.clone();
    ui.dispatch.dispatch(Action::CatalogAsked);
    wasm_bindgen_futures::spawn_local(async move {
        let read = ui.client.catalog().await;
        ui.dispatch.dispatch(Action::CatalogRead(read));
    });
}

/// The Services panel.
#[function_component(ServicesPanel)]
pub(crate) fn services_panel(props: &ServicesPanelProps) -> Html {
    crate::renders::count("services");
    let ui = use_context::<Ui>();
    {
        let ui = ui.clone();
        use_effect_with((), move |()| {
            let timers = ui.map(|ui| {
                let first = {
                    let ui = ui.clone();
                    Timeout::new(FIRST_CATALOG_AFTER_MS, move || read_catalog(&ui))
                };
                (
                    first,
                    Interval::new(CATALOG_EVERY_MS, move || read_catalog(&ui)),
                )
            });
            move || drop(timers)
        });
    }
    let Some(services) = props.services.as_ref() else {
        return html! {
            <section class="panel services" data-testid="services-panel">
                <h2>{ "Services" }</h2>
                <p class="empty" aria-busy="true">{ "The services are starting…" }</p>
            </section>
        };
    };
    let c = &services.counters;
    html! {
        <section class="panel services" data-testid="services-panel">
            <h2>
                { "Services " }
                <span class="count">
                    { format!("{} offered here · {} call(s) made, {} answered · {} served",
                        services.offered.len(), c.made, c.answered, c.served) }
                </span>
                if services.in_flight > 0 {
                    <span class="badge relayed">{ format!("{} call(s) in flight", services.in_flight) }</span>
                }
            </h2>
            <div class="svc-columns">
                <div>
                    <h3>{ "Offered by this tab" }</h3>
                    <Offered services={services.clone()} note={props.note.clone()} />
                    <OfferForm />
                </div>
                <div>
                    <h3>
                        { "In the network " }
                        <span class="count">{ catalog_count(&props.catalog) }</span>
                        if let Some(ui) = ui.clone() {
                            <button type="button" class="copy" data-testid="svc-refresh"
                                onclick={Callback::from(move |_: MouseEvent| read_catalog(&ui))}>
                                { "Refresh" }
                            </button>
                        }
                    </h3>
                    { catalog_table(&props.catalog, &props.me, &props.peers) }
                </div>
            </div>
            <h3>{ "Call a service" }</h3>
            <CallForm catalog={props.catalog.catalog.clone()} call={props.call.clone()} />
            <h3>{ "Latest calls " }<span class="count">{ services.calls.len() }</span></h3>
            { calls_table(&services.calls) }
        </section>
    }
}

fn catalog_count(line: &CatalogLine) -> String {
    match (&line.catalog, line.loading) {
        (None, true) => "reading the DHT…".to_owned(),
        (None, false) => String::new(),
        (Some(c), loading) => {
            let providers: usize = c.services.iter().map(|s| s.providers.len()).sum();
            format!(
                "{} service(s), {providers} provider(s){}",
                c.services.len(),
                if loading { " · refreshing…" } else { "" }
            )
        }
    }
}

/// Properties of [`Offered`].
#[derive(Properties, PartialEq)]
struct OfferedProps {
    services: ServicesSection,
    note: Option<Result<String, String>>,
}

/// The built-ins' switches and the services offered here, with their counts.
#[function_component(Offered)]
fn offered(props: &OfferedProps) -> Html {
    let ui = use_context::<Ui>();
    let switch = |name: String, on: bool| {
        let ui = ui.clone();
        Callback::from(move |_: Event| {
            let Some(ui) = ui.clone() else {
                return;
            };
            let name = name.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let done = ui.client.builtin(name.clone(), !on).await;
                let verb = if on { "withdrew" } else { "offering" };
                ui.dispatch
                    .dispatch(Action::OfferNote(done.map(|()| format!("{verb} {name}"))));
            });
        })
    };
    let withdraw = |name: String| {
        let ui = ui.clone();
        Callback::from(move |_: MouseEvent| {
            let Some(ui) = ui.clone() else {
                return;
            };
            let name = name.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let done = ui.client.withdraw(name.clone()).await;
                ui.dispatch
                    .dispatch(Action::OfferNote(done.map(|()| format!("withdrew {name}"))));
            });
        })
    };
    let offers: Vec<&OfferView> = props.services.offered.iter().collect();
    html! {
        <>
            <ul class="plain svc-builtins">
                { for props.services.builtins.iter().map(|b| html! {
                    <li>
                        <label class="switch" title={b.description.clone()}>
                            <input type="checkbox" checked={b.on}
                                data-testid={format!("svc-builtin-{}", b.name)}
                                onchange={switch(b.name.clone(), b.on)} />
                            <code class="svc-name">{ &b.name }</code>
                        </label>
                        <span class="muted">{ &b.description }</span>
                    </li>
                }) }
            </ul>
            if offers.is_empty() {
                <p class="empty">{ "Nothing offered yet: switch a built-in on, or write a service below." }</p>
            } else {
                <table class="dht-table" data-testid="svc-offered">
                    <thead><tr>
                        <th>{ "service" }</th><th>{ "types" }</th><th>{ "answered by" }</th>
                        <th class="num">{ "served" }</th><th class="num">{ "refused" }</th>
                        <th class="num">{ "failed" }</th><th class="num" title="calls being answered now, and calls queued behind them">{ "running / queued" }</th><th></th>
                    </tr></thead>
                    <tbody>
                        { for offers.iter().map(|o| html! {
                            <tr data-testid={format!("svc-offer-{}", o.name)}>
                                <td><code class="svc-name">{ &o.name }</code>{ " " }<span class="muted">{ &o.version }</span></td>
                                <td>{ o.types.keys().cloned().collect::<Vec<_>>().join(", ") }</td>
                                <td>{ match o.answerer { Answerer::Builtin => "built-in", Answerer::Host => "JavaScript" } }</td>
                                <td class="num">{ o.served }</td>
                                <td class="num">{ o.refused }</td>
                                <td class="num">{ o.failed }</td>
                                <td class="num">{ format!("{} / {}", o.running, o.waiting) }</td>
                                <td>
                                    if o.answerer == Answerer::Host {
                                        <button type="button" class="copy" onclick={withdraw(o.name.clone())}>{ "Withdraw" }</button>
                                    }
                                </td>
                            </tr>
                        }) }
                    </tbody>
                </table>
            }
            { match &props.note {
                Some(Err(e)) => html! { <p class="dht-result error"><span class="dht-error">{ e }</span></p> },
                Some(Ok(done)) => html! { <p class="muted svc-note">{ done }</p> },
                None => html! {},
            } }
        </>
    }
}

/// A service written in the page: a name, its message types and a JavaScript function body.
#[function_component(OfferForm)]
fn offer_form() -> Html {
    let ui = use_context::<Ui>();
    let name = use_node_ref();
    let types = use_node_ref();
    let body = use_node_ref();
    let onclick = {
        let (name, types, body) = (name.clone(), types.clone(), body.clone());
        Callback::from(move |_: MouseEvent| {
            let Some(ui) = ui.clone() else {
                return;
            };
            let input = |r: &NodeRef| {
                r.cast::<HtmlInputElement>()
                    .map(|i| i.value())
                    .unwrap_or_default()
            };
            let code = body
                .cast::<HtmlTextAreaElement>()
                .map(|t| t.value())
                .unwrap_or_default();
            let (name, types) = (input(&name).trim().to_owned(), input(&types));
            let types: Vec<(String, MessageType)> = types
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| (t.to_owned(), MessageType::default()))
                .collect();
            let handler = match js_sys::Function::new_with_args("type, data", &code)
                .dyn_into::<js_sys::Function>()
            {
                Ok(f) => f,
                Err(e) => {
                    ui.dispatch.dispatch(Action::OfferNote(Err(error_text(&e))));
                    return;
                }
            };
            let descriptor = match Descriptor::new(name.clone(), "1.0", "written in a tab", types) {
                Ok(d) => d,
                Err(e) => {
                    ui.dispatch.dispatch(Action::OfferNote(Err(e.to_string())));
                    return;
                }
            };
            wasm_bindgen_futures::spawn_local(async move {
                let done = ui.client.offer(descriptor, handler).await;
                ui.dispatch
                    .dispatch(Action::OfferNote(done.map(|()| format!("offering {name}"))));
            });
        })
    };
    html! {
        <details class="svc-write">
            <summary>{ "Write a service in JavaScript" }</summary>
            <div class="dht-form">
                <div class="dht-inputs">
                    <label>{ "name" }<input ref={name} value="sum" data-testid="svc-new-name" /></label>
                    <label>{ "message types (comma-separated)" }<input ref={types} value="add" data-testid="svc-new-types" /></label>
                </div>
                <label class="svc-code">
                    { "function (type, data) { … } — return the reply, or a Promise of it; throw to refuse" }
                    <textarea ref={body} rows="3" spellcheck="false" data-testid="svc-new-body"
                        value="return { sum: (data.a ?? 0) + (data.b ?? 0) };" />
                </label>
                <div class="dht-buttons">
                    <button type="button" class="action" data-testid="svc-offer" {onclick}>{ "Offer" }</button>
                    <span class="muted">{ "or from the console: " }<code>{ "tabmesh.offer(name, {types}, handler)" }</code></span>
                </div>
            </div>
        </details>
    }
}

fn catalog_table(line: &CatalogLine, me: &str, peers: &[PeerView]) -> Html {
    if let Some(error) = &line.error {
        return html! { <p class="dht-result error"><span class="dht-error">{ format!("Could not read the catalog: {error}") }</span></p> };
    }
    let Some(catalog) = &line.catalog else {
        return html! { <p class="empty" aria-busy="true">{ "Reading the DHT…" }</p> };
    };
    if catalog.services.is_empty() {
        return html! { <p class="empty">{ "No peer offers a service yet." }</p> };
    }
    html! {
        <table class="dht-table" data-testid="svc-catalog">
            <thead><tr><th>{ "service" }</th><th>{ "types" }</th><th>{ "providers" }</th></tr></thead>
            <tbody>
                { for catalog.services.iter().map(|s| html! {
                    <tr data-testid={format!("svc-listing-{}", s.name)}>
                        <td><code class="svc-name">{ &s.name }</code></td>
                        <td>{ s.types().join(", ") }</td>
                        <td class="dht-chips">
                            { for s.providers.iter().map(|p| {
                                let link = peers.iter().find(|peer| peer.peer_id == p.peer_id).map(|peer| peer.connection);
                                let (class, note, title) = match (p.peer_id == me, link) {
                                    (true, _) => ("connected", "(this tab)".to_owned(), String::new()),
                                    (false, Some(kind)) => ("", kind.as_str().to_owned(), format!(" · connected {kind}")),
                                    (false, None) => ("disconnected", "not connected".to_owned(),
                                        " · not connected now: it may have left (its announcement expires within 5 min); a call dials it or goes to another provider".to_owned()),
                                };
                                html! {
                                    <span class={classes!("dht-chip", (!class.is_empty()).then_some(class))}
                                        title={format!("{} · version {}{title}", p.peer_id, p.version)}>
                                        <span class="dht-chip-name">{ &p.peer_name }</span>
                                        <span class="muted">{ note }</span>
                                    </span>
                                }
                            }) }
                        </td>
                    </tr>
                }) }
            </tbody>
        </table>
    }
}

/// The declared request shape of `service`/`message_type` in the catalog.
fn declared(catalog: &Catalog, service: &str, message_type: &str) -> Option<MessageType> {
    catalog
        .services
        .iter()
        .find(|s| s.name == service)?
        .providers
        .iter()
        .find_map(|p| p.types.get(message_type).cloned())
}

/// Properties of [`CallForm`].
#[derive(Properties, PartialEq)]
struct CallFormProps {
    catalog: Option<Catalog>,
    call: Option<CallLine>,
}

/// Service and message type chosen from the catalog, the data (started from the declared
/// shape), and the latest call's answer with its route.
#[function_component(CallForm)]
fn call_form(props: &CallFormProps) -> Html {
    let ui = use_context::<Ui>();
    let service = use_state(String::new);
    let message_type = use_state(String::new);
    let data = use_node_ref();
    let catalog = props.catalog.clone().unwrap_or_default();
    // The chosen service, or the first one.
    let chosen = catalog
        .services
        .iter()
        .find(|s| s.name == *service)
        .or_else(|| catalog.services.first());
    let types = chosen.map(Listing::types).unwrap_or_default();
    let chosen_type = types
        .iter()
        .find(|t| **t == *message_type)
        .or_else(|| types.first())
        .cloned()
        .unwrap_or_default();
    let chosen_name = chosen.map(|s| s.name.clone()).unwrap_or_default();
    let example = declared(&catalog, &chosen_name, &chosen_type)
        .map(|t| t.request.example())
        .filter(|v| !v.is_null())
        .unwrap_or_else(|| serde_json::json!({}));
    {
        // A new service or type starts the data from its declared shape.
        let data = data.clone();
        let example = example.to_string();
        use_effect_with((chosen_name.clone(), chosen_type.clone()), move |_| {
            if let Some(area) = data.cast::<HtmlTextAreaElement>() {
                area.set_value(&example);
            }
        });
    }
    let on_service = {
        let (service, message_type) = (service.clone(), message_type.clone());
        Callback::from(move |e: Event| {
            if let Some(select) = e.target_dyn_into::<HtmlSelectElement>() {
                service.set(select.value());
                message_type.set(String::new());
            }
        })
    };
    let on_type = {
        let message_type = message_type.clone();
        Callback::from(move |e: Event| {
            if let Some(select) = e.target_dyn_into::<HtmlSelectElement>() {
                message_type.set(select.value());
            }
        })
    };
    let onclick = {
        let (name, kind, data) = (chosen_name.clone(), chosen_type.clone(), data.clone());
        Callback::from(move |_: MouseEvent| {
            let Some(ui) = ui.clone() else {
                return;
            };
            let text = data
                .cast::<HtmlTextAreaElement>()
                .map(|t| t.value())
                .unwrap_or_default();
            let id = ui.client.next_request_id();
            let asked = format!("{name}/{kind}");
            let parsed: Result<Value, _> = serde_json::from_slice(if text.trim().is_empty() {
                b"null"
            } else {
                text.as_bytes()
            });
            let data = match parsed {
                Ok(data) => data,
                Err(e) => {
                    ui.dispatch.dispatch(Action::Called(CallLine {
                        id,
                        asked,
                        answer: Some(Err((
                            "invalid".to_owned(),
                            format!("the data is not JSON: {e}"),
                        ))),
                    }));
                    return;
                }
            };
            ui.dispatch.dispatch(Action::Called(CallLine {
                id,
                asked: asked.clone(),
                answer: None,
            }));
            let request = CallRequest {
                service: name.clone(),
                message_type: kind.clone(),
                data,
                deadline_ms: None,
                origin: None,
            };
            wasm_bindgen_futures::spawn_local(async move {
                let answer = ui
                    .client
                    .call(request)
                    .await
                    .map_err(|e| (e.code().to_owned(), e.to_string()));
                ui.dispatch.dispatch(Action::Called(CallLine {
                    id,
                    asked,
                    answer: Some(answer),
                }));
            });
        })
    };
    html! {
        <div class="dht-form svc-call">
            if catalog.services.is_empty() {
                <p class="empty">{ "Nothing to call yet: the catalog lists no service." }</p>
            } else {
                <div class="dht-inputs">
                    <label>{ "service" }
                        <select data-testid="svc-call-service" onchange={on_service}>
                            { for catalog.services.iter().map(|s| html! {
                                <option value={s.name.clone()} selected={s.name == chosen_name}>{ &s.name }</option>
                            }) }
                        </select>
                    </label>
                    <label>{ "message type" }
                        <select data-testid="svc-call-type" onchange={on_type}>
                            { for types.iter().map(|t| html! {
                                <option value={t.clone()} selected={*t == chosen_type}>{ t }</option>
                            }) }
                        </select>
                    </label>
                    <label class="dht-value-input">{ "data (JSON)" }
                        <textarea ref={data} rows="2" spellcheck="false" data-testid="svc-call-data" />
                    </label>
                </div>
                <div class="dht-buttons">
                    <button type="button" class="action" data-testid="svc-call" {onclick}>{ "Call" }</button>
                </div>
            }
            { call_result(props.call.as_ref()) }
        </div>
    }
}

fn call_result(call: Option<&CallLine>) -> Html {
    let Some(call) = call else {
        return html! {};
    };
    match &call.answer {
        None => html! {
            <div class="dht-result pending" data-testid="svc-call-result">
                <span class="dht-asked">{ &call.asked }</span>{ " — finding a provider…" }
            </div>
        },
        Some(Err((code, message))) => html! {
            <div class="dht-result error" data-testid="svc-call-result">
                <span class="dht-asked">{ &call.asked }</span>{ " " }
                <span class="dht-error">{ message }</span>{ " " }
                <code>{ code }</code>
            </div>
        },
        Some(Ok(answer)) => html! {
            <div class="dht-result ok" data-testid="svc-call-result">
                <span class="dht-asked">{ &call.asked }</span>{ " " }
                <span class="dht-summary">
                    { format!("answered by {} in {} ms", answer.provider_name, answer.duration_ms) }
                </span>
                <span class="muted">
                    { format!(" ({} ms at the provider, {} attempt(s))", answer.provider_ms, answer.attempts) }
                </span>
                { route_picture(&answer.route) }
                <pre class="dht-value">{ serde_json::to_string_pretty(&answer.reply).unwrap_or_default() }</pre>
            </div>
        },
    }
}

/// A route as boxes and arrows: caller, relay if the call went through it, provider.
fn route_picture(route: &[String]) -> Html {
    if route.is_empty() {
        return html! {};
    }
    let last = route.len() - 1;
    html! {
        <div class="svc-route" data-testid="svc-route">
            { for route.iter().enumerate().map(|(i, hop)| {
                let role = if i == last { "provider" } else if hop == "relay" { "relay" } else if i == 0 { "caller" } else { "hop" };
                html! {
                    <>
                        if i > 0 { <span class="svc-arrow">{ "→" }</span> }
                        <span class={classes!("svc-hop", role)}>{ hop }</span>
                    </>
                }
            }) }
        </div>
    }
}

fn calls_table(calls: &[CallRecord]) -> Html {
    if calls.is_empty() {
        return html! { <p class="empty">{ "No calls yet." }</p> };
    }
    html! {
        <div class="dht-records">
            <table class="dht-table" data-testid="svc-calls">
                <thead><tr>
                    <th></th><th>{ "call" }</th><th>{ "with" }</th><th>{ "route" }</th>
                    <th class="num">{ "ms" }</th><th>{ "outcome" }</th>
                </tr></thead>
                <tbody>
                    { for calls.iter().rev().map(|c| {
                        let side = match c.side { CallSide::Made => ("→", "sent", "made"), CallSide::Served => ("←", "received", "served") };
                        html! {
                            <tr class={classes!(side.1, (!c.ok).then_some("failed"))}>
                                <td class="dir" title={side.2}>{ side.0 }</td>
                                <td><code>{ format!("{}/{}", c.service, c.message_type) }</code></td>
                                <td>{ &c.peer }</td>
                                <td class="muted">{ c.route.join(" → ") }</td>
                                <td class="num">{ c.duration_ms }</td>
                                <td class={if c.ok { "svc-ok" } else { "svc-bad" }}>{ &c.outcome }</td>
                            </tr>
                        }
                    }) }
                </tbody>
            </table>
        </div>
    }
}
