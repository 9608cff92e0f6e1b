//! The tab's node: started once, its latest view kept for `window.tabmesh.state()`; commands
//! go to it through [`command`], and DHT requests, which have an answer, through [`dht`].

use std::cell::RefCell;
use std::rc::Rc;

use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use tabmesh_core::dht::{DhtError, DhtReply, DhtRequest};
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

/// Sends `command` to the node (dropped if the node is gone or swamped, which a click can retry).
pub(crate) fn command(command: Command) {
    COMMANDS.with(|c| {
        if let Some(sender) = c.borrow_mut().as_mut() {
            let _ = sender.try_send(command);
        }
    });
}

/// Sends `request` to the node's DHT and waits for its answer (a lookup takes up to the query
/// timeout). A request the node never took (stopped, or its command queue full) fails with a
/// message saying so, since no reply will ever come.
pub(crate) async fn dht(request: DhtRequest) -> Result<DhtReply, DhtError> {
    let (reply, answer) = oneshot::channel();
    command(Command::Dht(request, reply));
    answer.await.unwrap_or_else(|oneshot::Canceled| {
        Err(DhtError::Failed(
            "the node did not take the request (it has stopped or is busy); try again".to_owned(),
        ))
    })
}

/// Times a perf run (libp2p's `/perf/1.0.0`) to `peer`: `upload` bytes there, `download` back.
pub(crate) async fn perf(
    peer: tabmesh_node::libp2p::PeerId,
    upload: u64,
    download: u64,
) -> Result<tabmesh_node::perf::PerfReport, String> {
    let (reply, answer) = oneshot::channel();
    command(Command::Perf {
        peer,
        upload,
        download,
        reply,
    });
    answer
        .await
        .unwrap_or_else(|oneshot::Canceled| Err("the node did not take the request".to_owned()))
}

/// Settings from the page's query string, e.g. `?stale_timeout=5&ttl=3` (seconds for
/// intervals), `?direct=off` (stay on the relay: no WebRTC upgrade, no `/webrtc` address) or
/// `?libp2p_ping=0.5` (seconds between libp2p pings on each connection). Unknown keys are
/// ignored; bad values keep the default and are logged.
fn gossip_overrides(config: &mut NodeConfig) {
    let search = web_sys::window()
        .and_then(|w| w.location().search().ok())
        .unwrap_or_default();
    let Ok(params) = web_sys::UrlSearchParams::new_with_str(&search) else {
        return;
    };
    let secs = |key: &str| -> Option<tabmesh_core::Duration> {
        let raw = params.get(key)?;
        match raw.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => {
                Some(tabmesh_core::Duration::from_secs_f64(v))
            }
            _ => {
                tracing::warn!(key, raw, "ignoring a bad interval in the URL");
                None
            }
        }
    };
    if let Some(d) = secs("libp2p_ping") {
        config.ping_interval = d;
    }
    if let Some(direct) = params.get("direct") {
        config.direct_upgrade = !matches!(direct.as_str(), "0" | "false" | "off" | "no");
    }
    let g = &mut config.gossip;
    if let Some(d) = secs("search_interval") {
        g.search_interval = d;
    }
    if let Some(d) = secs("evict_interval") {
        g.evict_interval = d;
    }
    if let Some(d) = secs("stale_timeout") {
        g.stale_timeout = d;
    }
    if let Some(d) = secs("ping_interval") {
        g.ping_interval = d;
    }
    if let Some(mode) = params.get("cooperative") {
        g.cooperative = matches!(mode.as_str(), "1" | "true" | "on" | "yes");
    }
    if let Some(ttl) = params.get("ttl").and_then(|t| t.parse::<u8>().ok()) {
        g.initial_ttl = ttl.min(16);
        g.max_ttl = g.max_ttl.max(g.initial_ttl);
    }
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
    gossip_overrides(&mut config);
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
