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
mod state;

use wasm_bindgen::prelude::wasm_bindgen;

/// Entry point, run by the generated JS glue when the module is instantiated.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
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
