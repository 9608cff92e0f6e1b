//! The tab's node and the one handle to it.
//!
//! The client exists from the start ([`NodeClient::new`]); the node behind it is built by
//! [`NodeClient::launch`] just after the page's first render, so that the page shows its
//! loading state first. The client is the only way in and out:
//! commands leave through it ([`NodeClient::send`], [`NodeClient::dht`], [`NodeClient::perf`]),
//! and every view the node publishes arrives through it, kept as the latest (for
//! `window.tabmesh.state()`) and passed to the page's reducer as an
//! [`Action`](crate::state::Action), except while the page is hidden: a background tab renders
//! nothing and shows the latest view when it is visible again. Components reach it through a
//! Yew context.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use futures::future::Either;
use tabmesh_core::Duration;
use tabmesh_core::dht::{DhtConfig, DhtError, DhtReply, DhtRequest};
use tabmesh_core::gimps::pace::SearchPace;
use tabmesh_core::protocol::AGENT_WEB;
use tabmesh_core::services::{CallError, CallRequest, Catalog, Descriptor};
use tabmesh_core::wire_log::{MAX_CAPACITY, WireEvent};
use tabmesh_node::perf::PerfReport;
use tabmesh_node::services::{CallAnswer, HOST_QUEUE, HostCall, ServiceCommand};
use tabmesh_node::{BootstrapSource, Command, Node, NodeConfig, NodeEvent, NodeView, platform};
use wasm_bindgen::{JsCast, JsValue};
use yew::Callback;

/// What the node tells the page.
#[derive(Debug, Clone)]
pub(crate) enum Update {
    /// A fresh view.
    View(Rc<NodeView>),
    /// The node could not start, and why.
    Fatal(String),
}

/// What the client shares with the tasks that build and hear the node.
#[derive(Default)]
struct Shared {
    /// Kept for the page's lifetime: dropping the last command sender stops the node. `None`
    /// until the node is built.
    commands: RefCell<Option<mpsc::Sender<Command>>>,
    latest: RefCell<Option<Rc<NodeView>>>,
    fatal: RefCell<Option<String>>,
    listener: RefCell<Option<Callback<Update>>>,
    next_request: Cell<u64>,
    /// Views arrived while the page was hidden, and the page has not shown the latest yet.
    unshown: Cell<bool>,
}

impl Shared {
    fn tell(&self, update: Update) {
        let listener = self.listener.borrow().clone();
        if let Some(listener) = listener {
            listener.emit(update);
        }
    }

    /// Passes `view` to the page, unless the page is hidden (a background tab, a minimised
    /// window): nobody would see it rendered, so a hidden tab spends no CPU on rendering, and
    /// shows the latest view the moment it is visible again ([`Self::on_visibility_change`]).
    fn show(&self, view: Rc<NodeView>) {
        if page_hidden() {
            self.unshown.set(true);
        } else {
            self.tell(Update::View(view));
        }
    }

    fn on_visibility_change(&self) {
        if page_hidden() || !self.unshown.replace(false) {
            return;
        }
        let latest = self.latest.borrow().clone();
        if let Some(view) = latest {
            self.tell(Update::View(view));
        }
    }
}

/// Whether the page is hidden (`document.hidden`).
fn page_hidden() -> bool {
    web_sys::window()
        .and_then(|w| w.document())
        .is_some_and(|d| d.hidden())
}

/// The handle to this tab's node.
#[derive(Clone, Default)]
pub(crate) struct NodeClient {
    shared: Rc<Shared>,
}

impl PartialEq for NodeClient {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.shared, &other.shared)
    }
}

impl NodeClient {
    /// A client whose node is not built yet (see [`launch`](Self::launch)).
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Builds the node (this tab's identity, the settings in the page's URL) and starts it,
    /// in a task of its own that runs after the page's first render, which was queued before.
    pub(crate) fn launch(&self) {
        self.follow_visibility();
        let shared = self.shared.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let mut config = NodeConfig::new(
                platform::session_identity(),
                BootstrapSource::Url("/api/bootstrap".to_owned()),
                format!("{AGENT_WEB}/{}", env!("CARGO_PKG_VERSION")),
            );
            config.clock_origin_offset = platform::since_page_load();
            config.seed = (js_sys::Math::random() * 2f64.powi(53)) as u64;
            url_settings(&mut config);
            let (node, mut handle) = match Node::new(config) {
                Ok(built) => built,
                Err(error) => {
                    *shared.fatal.borrow_mut() = Some(error.to_string());
                    shared.tell(Update::Fatal(error.to_string()));
                    return;
                }
            };
            *shared.commands.borrow_mut() = Some(handle.commands);
            wasm_bindgen_futures::spawn_local(node.run());
            while let Some(event) = handle.events.next().await {
                if let NodeEvent::View(view) = event {
                    let view = Rc::new(*view);
                    *shared.latest.borrow_mut() = Some(view.clone());
                    shared.show(view);
                }
            }
        });
    }

    /// Shows the latest view when the page becomes visible again, for the page's lifetime.
    fn follow_visibility(&self) {
        let Some(document) = web_sys::window().and_then(|w| w.document()) else {
            return;
        };
        let shared = Rc::downgrade(&self.shared);
        let listener = wasm_bindgen::closure::Closure::<dyn Fn()>::new(move || {
            if let Some(shared) = shared.upgrade() {
                shared.on_visibility_change();
            }
        });
        let added = document.add_event_listener_with_callback(
            "visibilitychange",
            listener.as_ref().unchecked_ref(),
        );
        if added.is_ok() {
            // Called for as long as the page lives.
            listener.forget();
        }
    }

    /// Calls `listener` with what the node tells from now on (the page's reducer), starting
    /// with what it has told already.
    pub(crate) fn on_update(&self, listener: Callback<Update>) {
        if let Some(error) = self.shared.fatal.borrow().clone() {
            listener.emit(Update::Fatal(error));
        }
        if let Some(view) = self.latest_view() {
            listener.emit(Update::View(view));
        }
        *self.shared.listener.borrow_mut() = Some(listener);
    }

    /// The latest view, if the node has published one.
    pub(crate) fn latest_view(&self) -> Option<Rc<NodeView>> {
        self.shared.latest.borrow().clone()
    }

    /// A new id for a request whose answer the page waits for.
    pub(crate) fn next_request_id(&self) -> u64 {
        let id = self.shared.next_request.get() + 1;
        self.shared.next_request.set(id);
        id
    }

    /// Sends `command`; `false` if the node is not running yet, gone or swamped (a click can
    /// retry).
    pub(crate) fn send(&self, command: Command) -> bool {
        let sender = self.shared.commands.borrow().clone();
        sender.is_some_and(|mut sender| sender.try_send(command).is_ok())
    }

    /// Sends the command `command` builds around a reply channel and waits for the answer, at
    /// most `patience`: a request the node never took, dropped or left unanswered (a node that
    /// stopped or hangs) ends with `failed(why)`, so no Promise stays pending for ever.
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
        patience: Duration,
        failed: impl FnOnce(Unanswered) -> T,
    ) -> T {
        let (reply, answer) = oneshot::channel();
        if !self.send(command(reply)) {
            return failed(Unanswered::NotTaken);
        }
        let ms = u32::try_from(patience.as_millis()).unwrap_or(u32::MAX);
        let timer = gloo_timers::future::TimeoutFuture::new(ms);
        match futures::future::select(answer, timer).await {
            Either::Left((Ok(answer), _)) => answer,
            Either::Left((Err(oneshot::Canceled), _)) => failed(Unanswered::NotTaken),
            Either::Right(_) => failed(Unanswered::Silent(patience)),
        }
    }

    /// Sends `request` to the node's DHT and waits for its answer (the node answers within
    /// the DHT's `op_timeout`).
    pub(crate) async fn dht(&self, request: DhtRequest) -> Result<DhtReply, DhtError> {
        let patience = DhtConfig::default().op_timeout + NODE_SLACK;
        self.ask(
            |reply| Command::Dht(request, reply),
            patience,
            |why| Err(DhtError::Failed(why.to_string())),
        )
        .await
    }

    /// Times a perf run (libp2p's `/perf/1.0.0`) to `peer`: `upload` bytes there, `download`
    /// back.
    pub(crate) async fn perf(
        &self,
        peer: tabmesh_node::libp2p::PeerId,
        upload: u64,
        download: u64,
    ) -> Result<PerfReport, String> {
        let command = |reply| Command::Perf {
            peer,
            upload,
            download,
            reply,
        };
        self.ask(command, PATIENCE, Unanswered::error).await
    }

    /// Every wire event the node keeps (`?wire_log=N` of them), oldest first.
    pub(crate) async fn wire_log(&self) -> Result<Vec<WireEvent>, String> {
        let mut unanswered = None;
        let events = self
            .ask(Command::WireLog, PATIENCE, |why| {
                unanswered = Some(why);
                Vec::new()
            })
            .await;
        unanswered.map_or(Ok(events), Unanswered::error)
    }
}

impl NodeClient {
    /// Sends a services command built around a reply channel and waits for the answer.
    async fn services<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> ServiceCommand,
        failed: impl FnOnce(Unanswered) -> T,
    ) -> T {
        self.ask(|reply| Command::Services(command(reply)), PATIENCE, failed)
            .await
    }

    /// Calls a service (the node finds a provider, checks the data and fails over).
    pub(crate) async fn call(&self, request: CallRequest) -> Result<CallAnswer, CallError> {
        self.services(
            |reply| ServiceCommand::Call(request, reply),
            |why| {
                Err(match why {
                    Unanswered::NotTaken => CallError::Busy(0),
                    Unanswered::Silent(after) => CallError::TimedOut {
                        ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
                        waiting: "waiting for this tab's node to answer".to_owned(),
                    },
                })
            },
        )
        .await
    }

    /// A traced ping to `peer` (a random connected peer when `None`).
    pub(crate) async fn trace_ping(
        &self,
        peer: Option<tabmesh_node::libp2p::PeerId>,
    ) -> Result<tabmesh_node::trace::PingAnswer, String> {
        let command =
            |reply| Command::Trace(tabmesh_node::trace::TraceCommand::Ping { peer, reply });
        self.ask(command, PATIENCE, Unanswered::error).await
    }

    /// Trace `trace_id`, gathered from the peers it crossed.
    pub(crate) async fn trace(
        &self,
        trace_id: tabmesh_core::trace::TraceId,
    ) -> Result<tabmesh_core::trace::assemble::Trace, String> {
        let command =
            |reply| Command::Trace(tabmesh_node::trace::TraceCommand::Gather { trace_id, reply });
        self.ask(command, PATIENCE, Unanswered::error).await
    }

    /// A snapshot (with markers), or a naive one.
    pub(crate) async fn snapshot(
        &self,
        naive: bool,
    ) -> Result<tabmesh_core::snapshot::state::SnapshotResult, String> {
        let command = |reply| {
            Command::Snapshot(tabmesh_node::snapshot::SnapshotCommand::Take { naive, reply })
        };
        self.ask(command, PATIENCE, Unanswered::error).await
    }

    /// Every service the network offers.
    pub(crate) async fn catalog(&self) -> Result<Catalog, String> {
        self.services(ServiceCommand::Catalog, Unanswered::error)
            .await
    }

    /// Switches built-in service `name` on or off.
    pub(crate) async fn builtin(&self, name: String, on: bool) -> Result<(), String> {
        self.services(
            |reply| ServiceCommand::Builtin { name, on, reply },
            Unanswered::error,
        )
        .await
    }

    /// Offers a service whose calls `handler` answers: `handler(type, data)` returns the reply
    /// data or a `Promise` of it; a thrown error (or a rejected promise) is the call's error.
    pub(crate) async fn offer(
        &self,
        descriptor: Descriptor,
        handler: js_sys::Function,
    ) -> Result<(), String> {
        let (tx, mut calls) = mpsc::channel::<HostCall>(HOST_QUEUE);
        let answered = self
            .services(
                |reply| ServiceCommand::Offer {
                    descriptor,
                    handler: tx,
                    reply,
                },
                Unanswered::error,
            )
            .await;
        if answered.is_ok() {
            // Runs until the service is withdrawn (the node drops its sender).
            wasm_bindgen_futures::spawn_local(async move {
                while let Some(call) = calls.next().await {
                    wasm_bindgen_futures::spawn_local(serve(handler.clone(), call));
                }
            });
        }
        answered
    }

    /// Stops offering `name`.
    pub(crate) async fn withdraw(&self, name: String) -> Result<(), String> {
        self.services(
            |reply| ServiceCommand::Withdraw { name, reply },
            Unanswered::error,
        )
        .await
    }
}

/// Answers `call` with the JavaScript `handler`.
async fn serve(handler: js_sys::Function, call: HostCall) {
    let data = serde_json::to_string(&call.data)
        .ok()
        .and_then(|json| js_sys::JSON::parse(&json).ok())
        .unwrap_or(JsValue::NULL);
    let returned = handler.call2(&JsValue::NULL, &call.message_type.clone().into(), &data);
    let settled = match returned {
        Ok(value) => match value.dyn_into::<js_sys::Promise>() {
            Ok(promise) => wasm_bindgen_futures::JsFuture::from(promise).await,
            Err(value) => Ok(value),
        },
        Err(thrown) => Err(thrown),
    };
    let reply = match settled {
        Ok(value) if value.is_undefined() => Ok(serde_json::Value::Null),
        Ok(value) => js_sys::JSON::stringify(&value)
            .ok()
            .and_then(|text| text.as_string())
            .and_then(|text| serde_json::from_slice(text.as_bytes()).ok())
            .ok_or_else(|| "the handler returned something that is not JSON".to_owned()),
        Err(thrown) => Err(error_text(&thrown)),
    };
    let _ = call.reply.send(reply);
}

/// What a thrown JavaScript value says.
pub(crate) fn error_text(thrown: &JsValue) -> String {
    if let Some(error) = thrown.dyn_ref::<js_sys::Error>() {
        return String::from(error.message());
    }
    thrown
        .as_string()
        .or_else(|| {
            js_sys::JSON::stringify(thrown)
                .ok()
                .and_then(|s| s.as_string())
        })
        .unwrap_or_else(|| "the handler failed".to_owned())
}

/// Why the page has no answer from its node.
#[derive(Debug, Clone, Copy)]
enum Unanswered {
    /// The node did not take the request, or dropped it.
    NotTaken,
    /// No answer within this long.
    Silent(Duration),
}

impl Unanswered {
    fn error<T>(self) -> Result<T, String> {
        Err(self.to_string())
    }
}

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotTaken => write!(
                f,
                "the node did not take the request (it has stopped or is busy); try again"
            ),
            Self::Silent(after) => write!(
                f,
                "no answer from this tab's node in {} s: it may have stopped \
                 (the browser console says why)",
                after.as_secs()
            ),
        }
    }
}

/// How long the page waits for the node's answer to a request with no deadline of its own in
/// the node's config (perf runs give up after 120 s, snapshots and service calls sooner).
const PATIENCE: Duration = Duration::from_secs(150);

/// What the page adds to a deadline the node keeps before deciding the node is gone.
const NODE_SLACK: Duration = Duration::from_secs(10);

/// Settings from the page's query string, e.g. `?stale_timeout=5&ttl=3` (seconds for
/// intervals), `?direct=off` (stay on the relay: no WebRTC upgrade, no `/webrtc` address),
/// `?libp2p_ping=0.5` (seconds between libp2p pings on each connection), `?first_ping=0` (seconds
/// a new connection waits for its first ping), `?direct_settle=0` (seconds without a new peer
/// before going direct), `?ban_secs=10`
/// (length of a first ban) or `?search_pace=full` (the search's share of a core: `full`,
/// `gentle` or a percentage). Unknown keys are ignored; bad values keep the default and are
/// logged.
fn url_settings(config: &mut NodeConfig) {
    let search = web_sys::window()
        .and_then(|w| w.location().search().ok())
        .unwrap_or_default();
    let Ok(params) = web_sys::UrlSearchParams::new_with_str(&search) else {
        return;
    };
    // Seconds in `range` (an interval is never 0; a delay may be, to compare with none).
    let seconds = |key: &str, range: std::ops::RangeInclusive<f64>| -> Option<Duration> {
        let raw = params.get(key)?;
        match raw.parse::<f64>() {
            Ok(v) if range.contains(&v) => Some(Duration::from_secs_f64(v)),
            _ => {
                tracing::warn!(key, raw, "ignoring bad seconds in the URL");
                None
            }
        }
    };
    let secs = |key: &str| seconds(key, f64::MIN_POSITIVE..=86_400.0);
    if let Some(d) = secs("libp2p_ping") {
        config.ping_interval = d;
    }
    // `?first_ping=0` pings each new connection at once, as libp2p does (to compare).
    if let Some(d) = seconds("first_ping", 0.0..=60.0) {
        config.first_ping_after = d;
    }
    // `?direct_settle=0` starts direct attempts while peers are still arriving (to compare).
    if let Some(d) = seconds("direct_settle", 0.0..=60.0) {
        config.upgrade.settle = d;
    }
    if let Some(d) = secs("ban_secs") {
        config.ledger.first_ban = d;
        config.ledger.max_ban = config.ledger.max_ban.max(d);
    }
    if let Some(tracing) = params.get("tracing") {
        config.tracing = !matches!(tracing.as_str(), "0" | "false" | "off" | "no");
    }
    if let Some(raw) = params.get("wire_log") {
        match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_CAPACITY).contains(&n) => config.wire_log_capacity = n,
            _ => tracing::warn!(
                raw,
                max = MAX_CAPACITY,
                "ignoring a bad wire_log in the URL (events to keep, 1 to max)"
            ),
        }
    }
    if let Some(direct) = params.get("direct") {
        config.direct_upgrade = !matches!(direct.as_str(), "0" | "false" | "off" | "no");
    }
    if let Some(raw) = params.get("search_pace") {
        match raw.as_str() {
            "full" => config.search_pace = SearchPace::FULL,
            "gentle" => config.search_pace = SearchPace::GENTLE,
            other => match other.parse::<f64>() {
                Ok(percent) if percent > 0.0 && percent <= 100.0 => {
                    config.search_pace = SearchPace::per_mille((percent * 10.0).round() as u16);
                }
                _ => tracing::warn!(raw, "ignoring a bad search_pace in the URL"),
            },
        }
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
    if let Some(search) = params.get("search") {
        g.search = !matches!(search.as_str(), "0" | "false" | "off" | "no");
    }
    // Zero is allowed here: the first round starts at once.
    if let Some(d) = seconds("search_settle", 0.0..=3_600.0) {
        g.settle = d;
    }
    if let Some(prune) = params.get("prune") {
        g.prune = !matches!(prune.as_str(), "0" | "false" | "off" | "no");
    }
    if let Some(mode) = params.get("cooperative") {
        g.cooperative = matches!(mode.as_str(), "1" | "true" | "on" | "yes");
    }
    if let Some(ttl) = params.get("ttl").and_then(|t| t.parse::<u8>().ok()) {
        g.initial_ttl = ttl.min(16);
        g.max_ttl = g.max_ttl.max(g.initial_ttl);
    }
}
