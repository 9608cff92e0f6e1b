//! The tabmesh web app: one browser tab, one libp2p peer, and a Yew UI that shows it.
//!
//! On load the tab exposes `window.tabmesh` for scripts and tests ([`js_api`]), renders the
//! [`App`](app::App) and then starts its node ([`node_client::NodeClient`]: identity from
//! `sessionStorage`, relay from `/api/bootstrap`). Node views and the answers to the page's
//! requests reach the UI as [`Action`](state::Action)s on one Yew reducer; the UI never touches
//! the network, and every command leaves through the one client.

mod app;
mod components;
mod js_api;
mod node_client;
mod renders;
mod state;

/// The system allocator, counting the bytes in use. WebAssembly memory only grows, so its size
/// is the most the app ever held at once; what it holds now (`window.tabmesh.memory()`'s
/// `heap_bytes`) is what tells a leak from a peak.
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// Entry point, run by the generated JS glue when the module is instantiated (not in the unit
/// tests' module, whose page has no app).
#[cfg_attr(not(test), wasm_bindgen::prelude::wasm_bindgen(start))]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        show_crash(&info.to_string());
    }));
    tracing_wasm::set_as_global_default_with_config(
        tracing_wasm::WASMLayerConfigBuilder::new()
            .set_max_level(tracing::Level::INFO)
            .build(),
    );
    let client = node_client::NodeClient::new();
    js_api::install(&client);
    yew::Renderer::<app::App>::with_props(app::AppProps {
        client: client.clone(),
    })
    .render();
    client.launch();
}

/// After a panic the tab's node is gone and the UI frozen: say so on the page, in a banner that
/// needs nothing of the (possibly broken) app, and keep the message in `window.tabmeshCrash` for
/// scripts and tests (the console has it too, with the stack).
fn show_crash(message: &str) {
    let Some(window) = web_sys::window() else {
        return;
    };
    let _ = js_sys::Reflect::set(&window, &"tabmeshCrash".into(), &message.into());
    let Some(document) = window.document() else {
        return;
    };
    let (Ok(banner), Some(body)) = (document.create_element("div"), document.body()) else {
        return;
    };
    banner.set_id("crash");
    let _ = banner.set_attribute("role", "alert");
    let _ = banner.set_attribute(
        "style",
        "position:fixed;top:0;left:0;right:0;z-index:1000;padding:12px 16px;\
         background:#b00020;color:#fff;font:14px/1.4 system-ui,sans-serif;white-space:pre-wrap",
    );
    banner.set_text_content(Some(&format!(
        "This tab's node crashed, a bug in tabmesh: {message}\n\
         It no longer takes part in the network. Reload the page to start again \
         (the console has the details)."
    )));
    let _ = body.prepend_with_node_1(&banner);
}

// The unit tests run in headless Chromium, as the app does (`cargo xtask test`).
#[cfg(test)]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);
