//! `window.tabmesh`: the page's scripting and test interface, on the same [`NodeClient`] as the
//! page (no side channel).
//!
//! - `window.tabmesh.state()` returns the node's current [`NodeView`](tabmesh_node::NodeView)
//!   as a plain object (`null` until the node has published its first view). Its fields are a
//!   stable interface that end-to-end tests read; later protocols add sections to it.
//! - `wireLog()` returns a `Promise` of every wire event the node keeps, oldest first (`state()`
//!   has the newest 50; `?wire_log=N` in the page's URL keeps N, 500 by default), each as in
//!   `state().wire`: `{seq, at_ms, direction, protocol, peer, summary}`.
//! - `sleep()`, `wake()`, `reset()`: the GIMPS node's buttons.
//! - `benchLucasLehmer(p)`: times one whole Lucas-Lehmer test on the page, in milliseconds
//!   (blocks the tab; for benchmarks). `benchSearch(p)`: a `Promise` of `{ prime, ms }` for
//!   the same test where the tab searches (its worker), at full speed.
//! - `put(key, value, ttlSeconds?)`, `get(key)`, `remove(key)`, `provide(key)`,
//!   `providers(key)`: the DHT panel's buttons. Each returns a `Promise` that resolves to the
//!   [`DhtReply`] as a plain object (tagged by `op`: `put`, `get`, `provide`, `providers`; a
//!   remove answers as a `put` with `removed: true`) and rejects with an `Error` whose message is
//!   the node's explanation (e.g. `refused: the value is 5000 bytes; at most 4096 are allowed`),
//!   or says which argument is missing. Keys and values are strings; `ttlSeconds` is a number
//!   (omitted or `null`: the node's default lifetime).
//! - `memory()` returns `{heap_bytes, wasm_bytes, js_heap_bytes}`: the bytes the app's Rust
//!   code holds now (counted by its allocator: a leak in Rust shows here), the size of its
//!   WebAssembly memory (it grows and never shrinks: the most it ever held, with the allocator's
//!   free space) and the page's JavaScript heap in use (`performance.memory`, Chromium only;
//!   `null` elsewhere). The soak reads it.
//! - `renders()` returns how many times each part of the page rendered since it loaded, by
//!   name (`{app, header, relay_banner, gimps, gimps_log, services, tracing, snapshot, dht,
//!   peers, event_log}`): a panel renders only when what it shows changed.
//! - `perf(peerId, uploadBytes, downloadBytes)`: libp2p's perf protocol to a connected peer over
//!   the connection we have to it; resolves to `{peer_id, connection, upload_bytes, upload_ms,
//!   download_bytes, download_ms}` (at most 64 MiB each way).
//! - Services (each returns a `Promise`):
//!   - `call(service, type, data, {deadlineMs}?)` resolves to `{reply, trace_id, provider, provider_name,
//!     route, link, duration_ms, attempts, provider_ms}` and rejects with an `Error` whose
//!     message starts with the reason (`no provider…`, `unknown message type…`, `bad data: …`,
//!     `timed out after N ms`, `provider refused: …`) and whose `code` is a stable word
//!     (`unknown_service`, `no_provider`, `unknown_message_type`, `bad_data`, `timed_out`,
//!     `refused`, `busy`, `invalid`);
//!   - `offer(name, {types, version?, description?}, handler)`: offers a service answered by
//!     `handler(type, data)`, which returns the reply data or a `Promise` of it (a thrown error
//!     is the caller's `provider refused: …`). `types` lists the message types' names, or maps
//!     each to `{request, reply}` shapes (a JSON Schema subset: `type`, `properties`,
//!     `required`, `additionalProperties`, `items`, `maxItems`, `maxLength`, `enum`, `minimum`,
//!     `maximum`); data that does not fit never reaches the handler;
//!   - `withdraw(name)`; `builtin(name, on)` switches `lucas-lehmer`, `echo` or `node-info` on or
//!     off; `services()` resolves to the catalog of every service the network offers.
//! - Tracing (each returns a `Promise`): `tracePing(peerId?)` (a random peer when omitted)
//!   resolves to `{trace_id, peer, peer_name, rtt_ms}`; `trace(traceId)` to the trace gathered
//!   from the peers it crossed (`{trace_id, spans, peers, missing, offsets_ms, refused}`);
//!   `traceOtlp(traceId)` to the same spans as OTLP/JSON; `slowMotion(ms)` holds every traced
//!   gossip copy `ms` before sending it (0: off), as the Tracing panel's switch does.
//! - Snapshots: `snapshot()` takes a Chandy-Lamport snapshot from this tab and resolves to
//!   `{id, naive, complete, peers, channels, tokens: {total, balances, in_flight, counted},
//!   checks: {tokens_conserved, channels_consistent}, missing, duration_ms, markers_sent,
//!   bytes_sent}`; `naiveSnapshot()` asks every connected peer for its state, with no markers,
//!   and resolves to the same shape; `tokenDemo(on)` switches the token demo in this tab.

use wasm_bindgen::prelude::Closure;
use wasm_bindgen::{JsCast, JsValue};

use serde::Serialize;
use tabmesh_core::dht::{DhtReply, DhtRequest};
use tabmesh_core::services::{CallRequest, Descriptor, MessageType};
use tabmesh_node::Command;

use crate::node_client::NodeClient;

/// Installs `window.tabmesh` for the node behind `client`.
pub(crate) fn install(client: &NodeClient) {
    let Some(window) = web_sys::window() else {
        return;
    };
    let api = js_sys::Object::new();
    let node = client.clone();
    let state = Closure::<dyn Fn() -> JsValue>::new(move || {
        node.latest_view()
            .and_then(|view| serde_json::to_string(&*view).ok())
            .and_then(|json| js_sys::JSON::parse(&json).ok())
            .unwrap_or(JsValue::NULL)
    });
    let _ = js_sys::Reflect::set(&api, &"state".into(), state.as_ref());
    // The closures live as long as the page.
    state.forget();
    let node = client.clone();
    let wire_log = Closure::<dyn Fn() -> js_sys::Promise>::new(move || {
        let node = node.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            plain_object(&node.wire_log().await.map_err(js_error)?)
        })
    });
    set(&api, "wireLog", wire_log);
    type NamedCommand = (&'static str, fn() -> Command);
    let commands: [NamedCommand; 3] = [
        ("sleep", || Command::Sleep),
        ("wake", || Command::Wake),
        ("reset", || Command::Reset),
    ];
    for (name, command) in commands {
        let node = client.clone();
        let f = Closure::<dyn Fn()>::new(move || {
            node.send(command());
        });
        let _ = js_sys::Reflect::set(&api, &name.into(), f.as_ref());
        f.forget();
    }
    let bench = Closure::<dyn Fn(u32) -> f64>::new(tabmesh_node::platform::time_lucas_lehmer);
    let _ = js_sys::Reflect::set(&api, &"benchLucasLehmer".into(), bench.as_ref());
    bench.forget();
    let bench = Closure::<dyn Fn(JsValue) -> js_sys::Promise>::new(|p: JsValue| {
        wasm_bindgen_futures::future_to_promise(async move {
            let p = p
                .as_f64()
                .filter(|p| p.fract() == 0.0 && (2.0..=1e7).contains(p))
                .ok_or_else(|| JsValue::from_str("p must be a whole number from 2 to 10^7"))?;
            let (prime, ms) = tabmesh_node::platform::time_search(p as u32).await;
            let out = js_sys::Object::new();
            let _ = js_sys::Reflect::set(&out, &"prime".into(), &prime.into());
            let _ = js_sys::Reflect::set(&out, &"ms".into(), &ms.into());
            Ok(out.into())
        })
    });
    let _ = js_sys::Reflect::set(&api, &"benchSearch".into(), bench.as_ref());
    bench.forget();
    install_dht(&api, client);
    install_services(&api, client);
    install_trace(&api, client);
    install_snapshot(&api, client);
    let memory = Closure::<dyn Fn() -> JsValue>::new(memory_use);
    let _ = js_sys::Reflect::set(&api, &"memory".into(), memory.as_ref());
    memory.forget();
    let renders = Closure::<dyn Fn() -> JsValue>::new(|| {
        let out = js_sys::Object::new();
        for (part, n) in crate::renders::counts() {
            let _ = js_sys::Reflect::set(&out, &part.into(), &(n as f64).into());
        }
        out.into()
    });
    let _ = js_sys::Reflect::set(&api, &"renders".into(), renders.as_ref());
    renders.forget();
    let node = client.clone();
    let perf = Closure::<dyn Fn(JsValue, JsValue, JsValue) -> js_sys::Promise>::new(
        move |peer: JsValue, upload: JsValue, download: JsValue| {
            let node = node.clone();
            wasm_bindgen_futures::future_to_promise(async move {
                let peer = text_arg(&peer, "peerId")
                    .and_then(|p| {
                        p.parse::<tabmesh_node::libp2p::PeerId>()
                            .map_err(|e| format!("peerId: {e}"))
                    })
                    .map_err(js_error)?;
                let bytes = |v: &JsValue, name: &str| match v.as_f64() {
                    Some(n) if n.is_finite() && n >= 0.0 => Ok(n as u64),
                    _ => Err(js_error(format!("{name} must be a number of bytes"))),
                };
                let report = node
                    .perf(
                        peer,
                        bytes(&upload, "uploadBytes")?,
                        bytes(&download, "downloadBytes")?,
                    )
                    .await
                    .map_err(js_error)?;
                let json = serde_json::to_string(&report).map_err(|e| js_error(e.to_string()))?;
                js_sys::JSON::parse(&json)
            })
        },
    );
    let _ = js_sys::Reflect::set(&api, &"perf".into(), perf.as_ref());
    perf.forget();
    let _ = js_sys::Reflect::set(&window, &"tabmesh".into(), &api);
}

/// Adds the DHT requests to `api`.
fn install_dht(api: &js_sys::Object, client: &NodeClient) {
    let node = client.clone();
    let put = Closure::<dyn Fn(JsValue, JsValue, JsValue) -> js_sys::Promise>::new(
        move |key: JsValue, value: JsValue, ttl: JsValue| {
            dht_promise(node.clone(), put_request(&key, &value, &ttl))
        },
    );
    let _ = js_sys::Reflect::set(api, &"put".into(), put.as_ref());
    put.forget();
    type KeyRequest = (&'static str, fn(String) -> DhtRequest);
    let requests: [KeyRequest; 4] = [
        ("get", |key| DhtRequest::Get { key }),
        ("remove", |key| DhtRequest::Remove { key }),
        ("provide", |key| DhtRequest::Provide { key }),
        ("providers", |key| DhtRequest::Providers { key }),
    ];
    for (name, request) in requests {
        let node = client.clone();
        let f = Closure::<dyn Fn(JsValue) -> js_sys::Promise>::new(move |key: JsValue| {
            dht_promise(node.clone(), text_arg(&key, "key").map(request))
        });
        let _ = js_sys::Reflect::set(api, &name.into(), f.as_ref());
        f.forget();
    }
}

/// Adds the services to `api`.
fn install_services(api: &js_sys::Object, client: &NodeClient) {
    let node = client.clone();
    let call = Closure::<dyn Fn(JsValue, JsValue, JsValue, JsValue) -> js_sys::Promise>::new(
        move |service: JsValue, message_type: JsValue, data: JsValue, options: JsValue| {
            let node = node.clone();
            let request = call_request(&service, &message_type, &data, &options);
            wasm_bindgen_futures::future_to_promise(async move {
                let request = request.map_err(|e| coded_error(&e, "invalid"))?;
                match node.call(request).await {
                    Ok(answer) => plain_object(&answer),
                    Err(e) => Err(coded_error(&e.to_string(), e.code())),
                }
            })
        },
    );
    set(api, "call", call);
    let node = client.clone();
    let offer = Closure::<dyn Fn(JsValue, JsValue, JsValue) -> js_sys::Promise>::new(
        move |name: JsValue, spec: JsValue, handler: JsValue| {
            let node = node.clone();
            let offered = descriptor_arg(&name, &spec).and_then(|d| {
                handler
                    .dyn_into::<js_sys::Function>()
                    .map(|h| (d, h))
                    .map_err(|_| "handler must be a function (type, data) => reply".to_owned())
            });
            wasm_bindgen_futures::future_to_promise(async move {
                let (descriptor, handler) = offered.map_err(js_error)?;
                node.offer(descriptor, handler).await.map_err(js_error)?;
                Ok(JsValue::UNDEFINED)
            })
        },
    );
    set(api, "offer", offer);
    let node = client.clone();
    let withdraw = Closure::<dyn Fn(JsValue) -> js_sys::Promise>::new(move |name: JsValue| {
        let node = node.clone();
        let name = text_arg(&name, "name");
        wasm_bindgen_futures::future_to_promise(async move {
            node.withdraw(name.map_err(js_error)?)
                .await
                .map_err(js_error)?;
            Ok(JsValue::UNDEFINED)
        })
    });
    set(api, "withdraw", withdraw);
    let node = client.clone();
    let builtin = Closure::<dyn Fn(JsValue, JsValue) -> js_sys::Promise>::new(
        move |name: JsValue, on: JsValue| {
            let node = node.clone();
            let name = text_arg(&name, "name");
            let on = on.as_bool().unwrap_or(true);
            wasm_bindgen_futures::future_to_promise(async move {
                node.builtin(name.map_err(js_error)?, on)
                    .await
                    .map_err(js_error)?;
                Ok(JsValue::UNDEFINED)
            })
        },
    );
    set(api, "builtin", builtin);
    let node = client.clone();
    let services = Closure::<dyn Fn() -> js_sys::Promise>::new(move || {
        let node = node.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let catalog = node.catalog().await.map_err(js_error)?;
            plain_object(&catalog)
        })
    });
    set(api, "services", services);
}

/// Adds request tracing to `api`.
fn install_trace(api: &js_sys::Object, client: &NodeClient) {
    let node = client.clone();
    let ping = Closure::<dyn Fn(JsValue) -> js_sys::Promise>::new(move |peer: JsValue| {
        let node = node.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let peer = if peer.is_undefined() || peer.is_null() {
                None
            } else {
                let text = text_arg(&peer, "peerId").map_err(js_error)?;
                Some(
                    text.parse::<tabmesh_node::libp2p::PeerId>()
                        .map_err(|e| js_error(format!("peerId: {e}")))?,
                )
            };
            let answer = node.trace_ping(peer).await.map_err(js_error)?;
            plain_object(&answer)
        })
    });
    set(api, "tracePing", ping);
    let node = client.clone();
    let slow = Closure::<dyn Fn(JsValue)>::new(move |ms: JsValue| {
        let ms = ms
            .as_f64()
            .filter(|ms| *ms > 0.0)
            .map(|ms| ms.min(60_000.0) as u64);
        node.send(Command::SlowMotion(
            ms.map(std::time::Duration::from_millis),
        ));
    });
    set(api, "slowMotion", slow);
    for (name, otlp) in [("trace", false), ("traceOtlp", true)] {
        let node = client.clone();
        let gather = Closure::<dyn Fn(JsValue) -> js_sys::Promise>::new(move |id: JsValue| {
            let node = node.clone();
            wasm_bindgen_futures::future_to_promise(async move {
                let text = text_arg(&id, "traceId").map_err(js_error)?;
                let trace_id = tabmesh_core::trace::TraceId::parse(&text)
                    .map_err(|e| js_error(format!("traceId: {e}")))?;
                let trace = node.trace(trace_id).await.map_err(js_error)?;
                if otlp {
                    plain_object(&tabmesh_core::trace::otlp::export(
                        trace.spans.iter().map(|p| &p.span),
                    ))
                } else {
                    plain_object(&trace)
                }
            })
        });
        set(api, name, gather);
    }
}

/// Adds snapshots and the token demo to `api`.
fn install_snapshot(api: &js_sys::Object, client: &NodeClient) {
    for (name, naive) in [("snapshot", false), ("naiveSnapshot", true)] {
        let node = client.clone();
        let take = Closure::<dyn Fn() -> js_sys::Promise>::new(move || {
            let node = node.clone();
            wasm_bindgen_futures::future_to_promise(async move {
                let snapshot = node.snapshot(naive).await.map_err(js_error)?;
                plain_object(&snapshot)
            })
        });
        set(api, name, take);
    }
    let node = client.clone();
    let tokens = Closure::<dyn Fn(JsValue)>::new(move |on: JsValue| {
        node.send(Command::Snapshot(
            tabmesh_node::snapshot::SnapshotCommand::TokenDemo(on.is_truthy()),
        ));
    });
    set(api, "tokenDemo", tokens);
}

/// Puts `f` on `api` as `name`, for the page's lifetime.
fn set<F: ?Sized + wasm_bindgen::closure::WasmClosure>(
    api: &js_sys::Object,
    name: &str,
    f: Closure<F>,
) {
    let _ = js_sys::Reflect::set(api, &name.into(), f.as_ref());
    f.forget();
}

/// The call that `call(service, type, data, {deadlineMs}?)` asks for.
fn call_request(
    service: &JsValue,
    message_type: &JsValue,
    data: &JsValue,
    options: &JsValue,
) -> Result<CallRequest, String> {
    let deadline_ms = match js_sys::Reflect::get(options, &"deadlineMs".into()) {
        Ok(v) if v.is_undefined() || v.is_null() => None,
        Ok(v) => match v.as_f64() {
            Some(ms) if ms.is_finite() && ms >= 1.0 => Some(ms as u64),
            _ => return Err("deadlineMs must be a positive number of milliseconds".to_owned()),
        },
        Err(_) => None,
    };
    Ok(CallRequest {
        service: text_arg(service, "service")?,
        message_type: text_arg(message_type, "type")?,
        data: json_value(data)?,
        deadline_ms,
        origin: None,
    })
}

/// The descriptor that `offer(name, {types, version?, description?}, handler)` declares.
fn descriptor_arg(name: &JsValue, spec: &JsValue) -> Result<Descriptor, String> {
    let name = text_arg(name, "name")?;
    let spec = json_value(spec)?;
    let field = |key: &str| spec.get(key).and_then(serde_json::Value::as_str);
    let types: Vec<(String, MessageType)> = match spec.get("types") {
        Some(serde_json::Value::Array(names)) => names
            .iter()
            .map(|n| {
                n.as_str()
                    .map(|n| (n.to_owned(), MessageType::default()))
                    .ok_or_else(|| "types must list names (strings)".to_owned())
            })
            .collect::<Result<_, _>>()?,
        Some(serde_json::Value::Object(map)) => map
            .iter()
            .map(|(n, shapes)| {
                serde_json::from_value::<MessageType>(shapes.clone())
                    .map(|t| (n.clone(), t))
                    .map_err(|e| format!("types.{n}: {e}"))
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(
                "the second argument must be {types: [names…]} or {types: {name: {request, reply}}}"
                    .to_owned(),
            );
        }
    };
    Descriptor::new(
        name,
        field("version").unwrap_or("1.0"),
        field("description").unwrap_or(""),
        types,
    )
    .map_err(|e| e.to_string())
}

/// A JavaScript value as JSON (`undefined` is `null`).
fn json_value(value: &JsValue) -> Result<serde_json::Value, String> {
    if value.is_undefined() {
        return Ok(serde_json::Value::Null);
    }
    let text = js_sys::JSON::stringify(value)
        .ok()
        .and_then(|t| t.as_string())
        .ok_or_else(|| "the data must be JSON (no functions or cycles)".to_owned())?;
    // Bytes, not `from_str`: see `tabmesh_core::dht::store::ProviderEntry::decode`.
    serde_json::from_slice(text.as_bytes()).map_err(|e| format!("the data must be JSON: {e}"))
}

/// `value` as a plain JS object.
fn plain_object(value: &impl Serialize) -> Result<JsValue, JsValue> {
    let json = serde_json::to_string(value).map_err(|e| js_error(e.to_string()))?;
    js_sys::JSON::parse(&json)
}

/// An `Error` with `message` and a `code` property.
fn coded_error(message: &str, code: &str) -> JsValue {
    let error = js_sys::Error::new(message);
    let _ = js_sys::Reflect::set(&error, &"code".into(), &code.into());
    error.into()
}

/// The put that `put(key, value, ttlSeconds?)` asks for.
fn put_request(key: &JsValue, value: &JsValue, ttl: &JsValue) -> Result<DhtRequest, String> {
    Ok(DhtRequest::Put {
        key: text_arg(key, "key")?,
        value: text_arg(value, "value")?,
        ttl_ms: ttl_arg(ttl)?,
    })
}

/// A promise of the node's answer to `request`, or rejected with why there is no request.
fn dht_promise(node: NodeClient, request: Result<DhtRequest, String>) -> js_sys::Promise {
    wasm_bindgen_futures::future_to_promise(async move {
        let request = request.map_err(js_error)?;
        let reply = node
            .dht(request)
            .await
            .map_err(|e| js_error(e.to_string()))?;
        reply_object(&reply)
    })
}

/// `reply` as a plain JS object, as `state()` returns the view.
fn reply_object(reply: &DhtReply) -> Result<JsValue, JsValue> {
    let json = serde_json::to_string(reply).map_err(|e| js_error(e.to_string()))?;
    js_sys::JSON::parse(&json)
}

fn js_error(message: String) -> JsValue {
    js_sys::Error::new(&message).into()
}

/// A string argument, or why it is unusable.
fn text_arg(value: &JsValue, name: &str) -> Result<String, String> {
    value.as_string().ok_or_else(|| {
        if value.is_undefined() || value.is_null() {
            format!("{name} is missing")
        } else {
            format!("{name} must be a string")
        }
    })
}

/// The optional `ttlSeconds` argument in ms (the node checks its bounds).
fn ttl_arg(value: &JsValue) -> Result<Option<u64>, String> {
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    match value.as_f64() {
        Some(secs) if secs.is_finite() && secs >= 0.0 => Ok(Some((secs * 1e3).round() as u64)),
        _ => Err("ttlSeconds must be a non-negative number of seconds (or omitted)".to_owned()),
    }
}

/// `{heap_bytes, wasm_bytes, js_heap_bytes}` of the page (see the module's documentation).
fn memory_use() -> JsValue {
    let heap_bytes = crate::ALLOCATOR.allocated() as f64;
    let wasm_bytes = wasm_bindgen::memory()
        .dyn_into::<js_sys::WebAssembly::Memory>()
        .ok()
        .and_then(|m| m.buffer().dyn_into::<js_sys::ArrayBuffer>().ok())
        .map_or(JsValue::NULL, |b| JsValue::from(b.byte_length()));
    let js_heap_bytes = web_sys::window()
        .and_then(|w| w.performance())
        .and_then(|p| js_sys::Reflect::get(&p, &"memory".into()).ok())
        .filter(|m| m.is_object())
        .and_then(|m| js_sys::Reflect::get(&m, &"usedJSHeapSize".into()).ok())
        .unwrap_or(JsValue::NULL);
    let out = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&out, &"heap_bytes".into(), &heap_bytes.into());
    let _ = js_sys::Reflect::set(&out, &"wasm_bytes".into(), &wasm_bytes);
    let _ = js_sys::Reflect::set(&out, &"js_heap_bytes".into(), &js_heap_bytes);
    out.into()
}
