//! The tab's node: started once, its latest view kept for `window.tabmesh.state()`.

use std::cell::RefCell;
use std::rc::Rc;

use futures::StreamExt;
use futures::channel::mpsc;
use tabmesh_core::protocol::AGENT_WEB;
use tabmesh_node::{BootstrapSource, Command, Node, NodeConfig, NodeEvent, NodeView, platform};

thread_local! {
    static LATEST: RefCell<Option<Rc<NodeView>>> = const { RefCell::new(None) };
    /// Kept for the page's lifetime: dropping the last command sender stops the node.
    static COMMANDS: RefCell<Option<mpsc::Sender<Command>>> = const { RefCell::new(None) };
}

/// The latest view, if the node has published one.
pub(crate) fn latest_view() -> Option<Rc<NodeView>> {
    LATEST.with(|l| l.borrow().clone())
}

/// Starts the node and calls `on_view` with each view it publishes.
pub(crate) fn start(on_view: impl Fn(Rc<NodeView>) + 'static) -> Result<(), String> {
    let mut config = NodeConfig::new(
        platform::session_identity(),
        BootstrapSource::Url("/api/bootstrap".to_owned()),
        format!("{AGENT_WEB}/{}", env!("CARGO_PKG_VERSION")),
    );
    config.clock_origin_offset = platform::since_page_load();
    config.seed = (js_sys::Math::random() * 2f64.powi(53)) as u64;
    let (node, mut handle) = Node::new(config).map_err(|e| e.to_string())?;
    COMMANDS.with(|c| *c.borrow_mut() = Some(handle.commands.clone()));
    wasm_bindgen_futures::spawn_local(node.run());
    wasm_bindgen_futures::spawn_local(async move {
        while let Some(event) = handle.events.next().await {
            if let NodeEvent::View(view) = event {
                let view = Rc::new(*view);
                LATEST.with(|l| *l.borrow_mut() = Some(view.clone()));
                on_view(view);
            }
        }
    });
    Ok(())
}
