//! Browser side: WebSocket (websocket-websys) to the relay, the relay client for circuits and
//! WebRTC (`/webrtc`) for direct connections between tabs; bootstrap with `fetch`, identity in
//! `sessionStorage`, clock origin from `performance.now()`.

use std::time::Duration;

use futures::FutureExt;
use futures::future::LocalBoxFuture;
use libp2p::core::Transport;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Swarm, noise, relay, websocket_websys, yamux};
use tabmesh_core::bootstrap::{BootstrapInfo, RelayTransport};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use super::{bootstrap_from_addr, bootstrap_url};
use tabmesh_core::dht::store::{ProviderEntry, StoreChange};

use crate::dht::store::{Persisted, StoreBackend};
use crate::direct::WebRtc;
use crate::{BootstrapSource, NodeError};

const IDENTITY_KEY: &str = "tabmesh.identity";

/// A page served over HTTPS may only open `wss://` connections.
pub(crate) fn relay_transport() -> RelayTransport {
    let secure = web_sys::window()
        .and_then(|w| w.location().protocol().ok())
        .is_some_and(|p| p == "https:");
    if secure {
        RelayTransport::SecureWebSocket
    } else {
        RelayTransport::WebSocket
    }
}

/// Prefix of the DHT record entries in `sessionStorage` (`…r.<hex key>` → hex envelope).
const DHT_RECORD_PREFIX: &str = "tabmesh.dht.r.";
/// Prefix of the DHT provider entries (`…p.<hex key>.<provider>` → JSON).
const DHT_PROVIDER_PREFIX: &str = "tabmesh.dht.p.";

/// The tab's DHT share in `sessionStorage`: a reload (same tab, same peer id) restores it.
/// Each change is written through at once, so closing or reloading the tab loses nothing.
/// The storage object is looked up on each call (it is not `Send`; the store must be).
#[derive(Debug, Default)]
pub struct SessionStorageBackend;

fn session_storage() -> Option<web_sys::Storage> {
    web_sys::window().and_then(|w| w.session_storage().ok().flatten())
}

impl StoreBackend for SessionStorageBackend {
    fn apply(&mut self, changes: &[StoreChange]) {
        let Some(storage) = session_storage() else {
            return;
        };
        for change in changes {
            let result = match change {
                StoreChange::RecordStored { key, raw } => storage.set_item(
                    &format!("{DHT_RECORD_PREFIX}{}", tabmesh_core::hex::encode(key)),
                    &tabmesh_core::hex::encode(raw),
                ),
                StoreChange::RecordRemoved { key } => storage.remove_item(&format!(
                    "{DHT_RECORD_PREFIX}{}",
                    tabmesh_core::hex::encode(key)
                )),
                StoreChange::ProviderStored { key, entry } => storage.set_item(
                    &format!(
                        "{DHT_PROVIDER_PREFIX}{}.{}",
                        tabmesh_core::hex::encode(key),
                        entry.provider
                    ),
                    &entry.encode(),
                ),
                StoreChange::ProviderRemoved { key, provider } => storage.remove_item(&format!(
                    "{DHT_PROVIDER_PREFIX}{}.{provider}",
                    tabmesh_core::hex::encode(key)
                )),
            };
            if let Err(e) = result {
                // Quota exceeded (sessionStorage holds ~5 MB): the record stays in memory.
                tracing::warn!("sessionStorage write failed: {}", js_error(&e));
            }
        }
    }

    fn load(&mut self) -> Persisted {
        let mut records = Vec::new();
        let mut providers = Vec::new();
        let Some(storage) = session_storage() else {
            return Persisted::default();
        };
        let len = storage.length().unwrap_or(0);
        for i in 0..len {
            let Some(name) = storage.key(i).ok().flatten() else {
                continue;
            };
            let Some(value) = storage.get_item(&name).ok().flatten() else {
                continue;
            };
            if let Some(hex_key) = name.strip_prefix(DHT_RECORD_PREFIX) {
                if let (Some(key), Some(raw)) = (
                    tabmesh_core::hex::decode(hex_key),
                    tabmesh_core::hex::decode(&value),
                ) {
                    records.push((key, raw));
                }
            } else if let Some(rest) = name.strip_prefix(DHT_PROVIDER_PREFIX)
                && let Some((hex_key, _)) = rest.split_once('.')
                && let (Some(key), Some(entry)) = (
                    tabmesh_core::hex::decode(hex_key),
                    ProviderEntry::decode(&value),
                )
            {
                providers.push((key, entry));
            }
        }
        Persisted { records, providers }
    }
}

pub(crate) fn dht_backend() -> Box<dyn StoreBackend> {
    Box::new(SessionStorageBackend)
}

/// The tab's WebRTC transport settings (ICE servers come with the bootstrap document).
#[derive(Debug, Clone, Default)]
pub struct DirectTransport(tabmesh_webrtc::Config);

impl DirectTransport {
    pub(crate) fn set_ice_servers(&self, servers: &[tabmesh_core::bootstrap::IceServer]) {
        self.0.set_ice_servers(
            servers
                .iter()
                .map(|s| tabmesh_webrtc::IceServer {
                    urls: s.urls.clone(),
                    username: s.username.clone(),
                    credential: s.credential.clone(),
                })
                .collect(),
        );
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Closes the page's WebRTC connections on `pagehide`, so that peers see a closed tab leave
/// at once rather than when ICE consent checks fail (see `tabmesh_webrtc::browser::close_all`).
/// Installed once per page.
fn close_connections_when_the_page_goes() {
    thread_local!(static INSTALLED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    if INSTALLED.with(|i| i.replace(true)) {
        return;
    }
    let Some(window) = web_sys::window() else {
        return;
    };
    let on_hide = Closure::<dyn FnMut()>::new(tabmesh_webrtc::browser::close_all);
    if window
        .add_event_listener_with_callback("pagehide", on_hide.as_ref().unchecked_ref())
        .is_ok()
    {
        // For the page's lifetime.
        on_hide.forget();
    }
}

/// The tab's swarm: WebSocket to the relay, relay circuits and `/webrtc`; `behaviour` builds
/// the behaviours around the relay client and the WebRTC signaling
/// ([`crate::behaviour::NodeBehaviour`] in a tab; public for `crates/size-floor`, which
/// measures this network stack alone).
pub fn build_swarm<B: NetworkBehaviour>(
    keypair: Keypair,
    behaviour: impl FnOnce(&Keypair, relay::client::Behaviour, Option<WebRtc>) -> Result<B, NodeError>,
) -> Result<Swarm<B>, NodeError> {
    let transport_err = |e: &dyn std::fmt::Display| NodeError::Transport(e.to_string());
    let direct = DirectTransport::default();
    // Our own stack instead of the builder's relay client: `/webrtc` must come before the relay
    // client, which would take any `/p2p-circuit` address (and `…/webrtc`) as a plain circuit.
    let (relay_transport, relay_behaviour) = relay::client::new(keypair.public().to_peer_id());
    let (webrtc_transport, webrtc_behaviour) = tabmesh_webrtc::new(direct.0.clone());
    close_connections_when_the_page_goes();
    // The security and multiplexer protocols are proposed lazily (multistream-select's
    // `V1Lazy`): every libp2p peer speaks Noise and yamux, so the dialer sends its first Noise
    // message with the proposal and the first yamux frames with the next, instead of waiting
    // a round trip for each "yes". That is two round trips less per connection, through the
    // relay for a circuit, and a relayed connection is what lists a peer: 8 tabs opened
    // together listed each other 0.12 s sooner, the median of ten A/B pairs of `cargo xtask
    // bench --only join` (README). A peer that refused one would end the connection either
    // way. Streams keep `V1`: an unsupported protocol must show as such
    // (`UnsupportedProtocols`), not as a failed read.
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_wasm_bindgen()
        .with_other_transport(move |key| {
            let websocket = websocket_websys::Transport::default()
                .map(|connection, _| Handed(connection))
                .upgrade(Version::V1Lazy)
                .authenticate(noise::Config::new(key).map_err(|e| -> BoxError { Box::new(e) })?)
                .multiplex(yamux::Config::default())
                .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
            let relayed = relay_transport
                .upgrade(Version::V1Lazy)
                .authenticate(noise::Config::new(key).map_err(|e| -> BoxError { Box::new(e) })?)
                .multiplex(yamux::Config::default())
                .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
            let webrtc = webrtc_transport
                .map(|(peer, connection), _| (peer, StreamMuxerBox::new(connection)));
            Ok::<_, BoxError>(
                webrtc
                    .or_transport(relayed)
                    .map(|either, _| either.into_inner())
                    .or_transport(websocket)
                    .map(|either, _| either.into_inner())
                    .boxed(),
            )
        })
        .map_err(|e| transport_err(&e))?
        .with_behaviour(|key| {
            behaviour(
                key,
                relay_behaviour,
                Some(WebRtc {
                    signaling: webrtc_behaviour,
                    transport: direct,
                }),
            )
            .map_err(|e| -> BoxError { Box::new(e) })
        })
        .map_err(|e| transport_err(&e))?
        // One address at a time: a WebRTC dial that loses a race against another address would
        // be abandoned after the peer answered, leaving it a dead peer connection.
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(Duration::from_secs(60))
                .with_dial_concurrency_factor(std::num::NonZeroU8::MIN)
        })
        // A handshake (relayed: noise and yamux over the circuit; direct: the signaling, ICE,
        // DTLS and noise) given up on by one side as the other finishes leaves the other with a
        // connection nobody answers on; the pair then loses each other and meets again from
        // the start. libp2p's 10 s did that dozens of times a minute with 24 tabs joining on two
        // cores, where handshakes take 5 to 20 s. Dead ends fail sooner anyway: the relay
        // refuses a circuit to a peer it does not know, a WebRTC dial fails with its signaling
        // timeout (`tabmesh_webrtc::signaling::DEFAULT_TIMEOUT`, shorter than this).
        .with_connection_timeout(Duration::from_secs(30))
        .build();
    Ok(swarm)
}

/// The relay's bootstrap document, fetched from its URL (or made from its address), as the
/// relay link reads it; for programs built on this crate that need the relay's address too.
pub fn fetch_bootstrap(
    source: &BootstrapSource,
) -> LocalBoxFuture<'static, Result<BootstrapInfo, String>> {
    match source {
        BootstrapSource::Addr(addr) => {
            futures::future::ready(bootstrap_from_addr(addr)).boxed_local()
        }
        BootstrapSource::Url(url) => {
            let url = bootstrap_url(url);
            async move {
                let window = web_sys::window().ok_or("no window")?;
                let response: web_sys::Response = JsFuture::from(window.fetch_with_str(&url))
                    .await
                    .map_err(|e| format!("{url}: {}", js_error(&e)))?
                    .dyn_into()
                    .map_err(|_| "fetch did not return a Response".to_owned())?;
                if !response.ok() {
                    return Err(format!("{url}: HTTP {}", response.status()));
                }
                let text = response.text().map_err(|e| js_error(&e))?;
                let text = JsFuture::from(text).await.map_err(|e| js_error(&e))?;
                let body = text.as_string().unwrap_or_default();
                BootstrapInfo::decode(body.as_bytes())
            }
            .boxed_local()
        }
    }
}

fn js_error(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

/// This tab's identity: kept in `sessionStorage`, so a reload keeps the peer id and a new tab
/// gets a new one. Falls back to a fresh key when storage is unavailable (private modes).
pub fn session_identity() -> Keypair {
    let storage = web_sys::window().and_then(|w| w.session_storage().ok().flatten());
    let Some(storage) = storage else {
        tracing::warn!("sessionStorage unavailable: this tab gets a new peer id on every load");
        return Keypair::generate_ed25519();
    };
    if let Some(stored) = storage.get_item(IDENTITY_KEY).ok().flatten() {
        match tabmesh_core::hex::decode(&stored)
            .and_then(|b| Keypair::from_protobuf_encoding(&b).ok())
        {
            Some(key) => return key,
            None => tracing::warn!("stored identity is unreadable; creating a new one"),
        }
    }
    let key = Keypair::generate_ed25519();
    let stored = key.to_protobuf_encoding().ok().is_some_and(|bytes| {
        storage
            .set_item(IDENTITY_KEY, &tabmesh_core::hex::encode(&bytes))
            .is_ok()
    });
    if !stored {
        tracing::warn!("cannot store the identity; a reload will change the peer id");
    }
    key
}

/// Time since the page started loading (`performance.now()`), the clock origin of tab views.
pub fn since_page_load() -> Duration {
    let ms = web_sys::window()
        .and_then(|w| w.performance())
        .map(|p| p.now())
        .unwrap_or(0.0);
    Duration::from_secs_f64(ms.max(0.0) / 1e3)
}

/// A tab searches gently by default (about a tenth of a core): a learner's 8 tabs must leave
/// the machine usable. The GIMPS panel has a switch for full speed.
pub(crate) const DEFAULT_PACE: tabmesh_core::gimps::pace::SearchPace =
    tabmesh_core::gimps::pace::SearchPace::GENTLE;

/// Where the test runs: in the tab's search worker, or on the page if it cannot run.
pub(crate) fn search_place() -> tabmesh_core::gimps::pace::SearchPlace {
    super::search_worker::place()
}

/// Runs the Lucas-Lehmer test for `2^p - 1` in slices of [`SearchPace::SLICE`] in the tab's
/// search worker, resting between slices as `pace` says. Without a worker the slices run on
/// the page, which yields to the browser's event loop between them so the tab never freezes.
///
/// [`SearchPace::SLICE`]: tabmesh_core::gimps::pace::SearchPace::SLICE
pub(crate) fn lucas_lehmer(p: u32, pace: super::SharedPace) -> LocalBoxFuture<'static, bool> {
    use tabmesh_core::gimps::lucas_lehmer::LucasLehmer;
    use tabmesh_core::gimps::pace::SearchPace;

    async move {
        let task = super::search_worker::next_task();
        let mut here: Option<LucasLehmer> = None;
        loop {
            let slice = match &mut here {
                None => super::search_worker::advance(task, p, SearchPace::SLICE).await,
                Some(_) => Err(String::new()),
            };
            let (verdict, worked) = match slice {
                Ok(slice) => (slice.verdict, slice.worked),
                Err(_) => {
                    // No worker (any more): this test goes on here, from the start.
                    let test = here.get_or_insert_with(|| LucasLehmer::new(p));
                    let start = web_time::Instant::now();
                    let verdict = test.advance_for(SearchPace::SLICE, since_page_load);
                    (verdict, start.elapsed())
                }
            };
            if let Some(verdict) = verdict {
                return verdict;
            }
            let rest = pace.get().rest_after(worked);
            if !rest.is_zero() || here.is_some() {
                // On the page, even at full speed, the browser gets its turn between slices.
                futures_timer::Delay::new(rest).await;
            }
        }
    }
    .boxed_local()
}

/// Runs a whole Lucas-Lehmer test of `2^p - 1` where the tab searches (its worker, or the
/// page without one), at full speed: the verdict and the time it took in milliseconds (for
/// benchmarks).
pub async fn time_search(p: u32) -> (bool, f64) {
    let start = web_time::Instant::now();
    let prime = lucas_lehmer(
        p,
        super::SharedPace::new(tabmesh_core::gimps::pace::SearchPace::FULL),
    )
    .await;
    (prime, start.elapsed().as_secs_f64() * 1e3)
}

/// Times a whole Lucas-Lehmer test of `2^p - 1` on the page, in milliseconds (for benchmarks;
/// blocks the tab while it runs).
pub fn time_lucas_lehmer(p: u32) -> f64 {
    let start = web_time::Instant::now();
    let _ = tabmesh_core::gimps::lucas_lehmer::is_mersenne_prime(p);
    start.elapsed().as_secs_f64() * 1e3
}

/// A browser WebSocket whose flush returns at once: what `send` took is with the browser, as
/// with a data channel (`tabmesh_webrtc`'s streams do the same). `websocket-websys` waits for
/// the socket's `bufferedAmount` to reach zero, which it checks on a 100 ms interval: every
/// flush on the relay connection (each noise handshake message, each yamux frame of every
/// circuit) waited up to 100 ms, and a tab's first connection took ~400 ms on loopback.
/// Writing still waits when the browser holds too much (`poll_write`).
struct Handed(websocket_websys::Connection);

impl futures::AsyncRead for Handed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl futures::AsyncWrite for Handed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_close(cx)
    }
}
