//! `window.tabmesh`: the page's scripting and test interface.
//!
//! - `window.tabmesh.state()` returns the node's current [`NodeView`](tabmesh_node::NodeView)
//!   as a plain object (`null` until the node has published its first view). Its fields are a
//!   stable interface that end-to-end tests read; later protocols add sections to it.
//! - `sleep()`, `wake()`, `reset()`: the GIMPS node's buttons.
//! - `benchLucasLehmer(p)`: times one whole Lucas-Lehmer test in this tab, in milliseconds
//!   (blocks the tab; for benchmarks).

use wasm_bindgen::JsValue;
use wasm_bindgen::prelude::Closure;

use tabmesh_node::Command;

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
    // The closures live as long as the page.
    state.forget();
    type NamedCommand = (&'static str, fn() -> Command);
    let commands: [NamedCommand; 3] = [
        ("sleep", || Command::Sleep),
        ("wake", || Command::Wake),
        ("reset", || Command::Reset),
    ];
    for (name, command) in commands {
        let f = Closure::<dyn Fn()>::new(move || runtime::command(command()));
        let _ = js_sys::Reflect::set(&api, &name.into(), f.as_ref());
        f.forget();
    }
    let bench = Closure::<dyn Fn(u32) -> f64>::new(tabmesh_node::platform::time_lucas_lehmer);
    let _ = js_sys::Reflect::set(&api, &"benchLucasLehmer".into(), bench.as_ref());
    bench.forget();
    let _ = js_sys::Reflect::set(&window, &"tabmesh".into(), &api);
}
