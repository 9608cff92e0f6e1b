//! The tabmesh web app: one browser tab, one libp2p peer, and a Yew UI that shows it.
//!
//! On load the tab starts a [`tabmesh_node::Node`] (identity from `sessionStorage`, relay from
//! `/api/bootstrap`), renders the [`App`](app::App), and exposes `window.tabmesh` for tests and
//! the curious (see [`hook`]). The UI never touches the network: node views arrive as
//! [`Action`](state::Action)s on a Yew reducer.

mod app;
mod components;
mod hook;
mod runtime;
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
    hook::install();
    yew::Renderer::<app::App>::new().render();
}
