//! `window.tabmesh`: the page's scripting and test interface, on the same [`NodeClient`] as the
//! page (no side channel).
//!
//! - `window.tabmesh.state()` returns the node's current [`NodeView`](tabmesh_node::NodeView)
//!   as a plain object (`null` until the node has published its first view). Its fields are a
//!   stable interface that end-to-end tests read; later protocols add sections to it.
//! - `sleep()`, `wake()`, `reset()`: the GIMPS node's buttons.
//! - `benchLucasLehmer(p)`: times one whole Lucas-Lehmer test in this tab, in milliseconds
//!   (blocks the tab; for benchmarks).
//! - `put(key, value, ttlSeconds?)`, `get(key)`, `remove(key)`, `provide(key)`,
//!   `providers(key)`: the DHT panel's buttons. Each returns a `Promise` that resolves to the
//!   [`DhtReply`] as a plain object (tagged by `op`: `put`, `get`, `provide`, `providers`; a
//!   remove answers as a `put` with `removed: true`) and rejects with an `Error` whose message is
//!   the node's explanation (e.g. `refused: the value is 5000 bytes; at most 4096 are allowed`),
//!   or says which argument is missing. Keys and values are strings; `ttlSeconds` is a number
//!   (omitted or `null`: the node's default lifetime).
//! - `perf(peerId, uploadBytes, downloadBytes)`: libp2p's perf protocol to a connected peer over
//!   the connection we have to it; resolves to `{peer_id, connection, upload_bytes, upload_ms,
//!   download_bytes, download_ms}` (at most 64 MiB each way).

use wasm_bindgen::JsValue;
use wasm_bindgen::prelude::Closure;

use tabmesh_core::dht::{DhtReply, DhtRequest};
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
    install_dht(&api, client);
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
