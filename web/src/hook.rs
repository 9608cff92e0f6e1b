//! `window.tabmesh`: the page's scripting and test interface.
//!
//! - `window.tabmesh.state()` returns the node's current [`NodeView`](tabmesh_node::NodeView)
//!   as a plain object (`null` until the node has published its first view). Its fields are a
//!   stable interface that end-to-end tests read; later protocols add sections to it.

use wasm_bindgen::JsValue;
use wasm_bindgen::prelude::Closure;

use crate::runtime;

/// Installs `window.tabmesh`.
pub(crate) fn install() {
    let Some(window) = web_sys::window() else {
        return;
    };
    let api = js_sys::Object::new();
    let state = Closure::<dyn Fn() -> JsValue>::new(|| {
        runtime::latest_view()
            .and_then(|view| serde_json::to_string(&*view).ok())
            .and_then(|json| js_sys::JSON::parse(&json).ok())
            .unwrap_or(JsValue::NULL)
    });
    let _ = js_sys::Reflect::set(&api, &"state".into(), state.as_ref());
    // The closure lives as long as the page.
    state.forget();
    let _ = js_sys::Reflect::set(&window, &"tabmesh".into(), &api);
}
