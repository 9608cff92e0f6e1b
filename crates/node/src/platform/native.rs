//! Native side: TCP (with DNS) plus the relay client, bootstrap over HTTP with reqwest.

use std::time::Duration;

use futures::FutureExt;
use futures::future::LocalBoxFuture;
use libp2p::identity::Keypair;
use libp2p::{Swarm, noise, tcp, yamux};
use tabmesh_core::bootstrap::{BootstrapInfo, RelayTransport};

use super::{bootstrap_from_addr, bootstrap_url};

use crate::behaviour::NodeBehaviour;
use crate::dht::{MemoryBackend, StoreBackend};
use crate::direct::WebRtc;
use crate::{BootstrapSource, NodeError};

/// Native nodes reach the relay over plain TCP.
pub(crate) fn relay_transport() -> RelayTransport {
    RelayTransport::Tcp
}

/// A native node keeps its DHT share in memory: it is re-filled from the network (replication
/// and hand-over) when the node comes back; the relay is the peer that persists its share.
pub(crate) fn dht_backend() -> Box<dyn StoreBackend> {
    Box::new(MemoryBackend)
}

/// Native nodes have no WebRTC: they stay on their relayed and TCP connections.
#[derive(Debug, Clone, Default)]
pub struct DirectTransport;

impl DirectTransport {
    pub(crate) fn set_ice_servers(&self, _servers: &[tabmesh_core::bootstrap::IceServer]) {}
}

/// The native swarm: TCP (and DNS) plus the relay client; `behaviour` builds the behaviours
/// around the relay client (no WebRTC natively).
pub(crate) fn build_swarm(
    keypair: Keypair,
    behaviour: impl FnOnce(
        &Keypair,
        libp2p::relay::client::Behaviour,
        Option<WebRtc>,
    ) -> Result<NodeBehaviour, NodeError>,
) -> Result<Swarm<NodeBehaviour>, NodeError> {
    let transport_err = |e: &dyn std::fmt::Display| NodeError::Transport(e.to_string());
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| transport_err(&e))?
        .with_dns()
        .map_err(|e| transport_err(&e))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| transport_err(&e))?
        .with_behaviour(|key, relay| {
            behaviour(key, relay, None)
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })
        })
        .map_err(|e| transport_err(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
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
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .map_err(|e| e.to_string())?;
                let response = client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| format!("{url}: {}", crate::report::error_chain(&e)))?;
                let status = response.status();
                if !status.is_success() {
                    return Err(format!("{url}: HTTP {status}"));
                }
                let body = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
                BootstrapInfo::decode(&body)
            }
            .boxed_local()
        }
    }
}

/// A native node is a server or a command-line peer: it searches at full speed unless told
/// otherwise.
pub(crate) const DEFAULT_PACE: tabmesh_core::gimps::pace::SearchPace =
    tabmesh_core::gimps::pace::SearchPace::FULL;

/// Where the test runs: on a thread of its own.
pub(crate) fn search_place() -> tabmesh_core::gimps::pace::SearchPlace {
    tabmesh_core::gimps::pace::SearchPlace::Thread
}

/// Runs the Lucas-Lehmer test for `2^p - 1` on its own thread, off the event loop, in slices
/// with rests between them as `pace` says (at full speed, without a break).
pub(crate) fn lucas_lehmer(p: u32, pace: super::SharedPace) -> LocalBoxFuture<'static, bool> {
    use tabmesh_core::gimps::lucas_lehmer::LucasLehmer;
    use tabmesh_core::gimps::pace::SearchPace;

    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::spawn(move || {
        let origin = std::time::Instant::now();
        let mut test = LucasLehmer::new(p);
        let verdict = loop {
            let start = std::time::Instant::now();
            if let Some(verdict) = test.advance_for(SearchPace::SLICE, || origin.elapsed()) {
                break verdict;
            }
            if tx.is_canceled() {
                return; // nobody waits for the answer any more
            }
            let worked = start.elapsed();
            let rest = pace.get().rest_after(worked);
            if !rest.is_zero() {
                std::thread::sleep(rest);
            }
        };
        let _ = tx.send(verdict);
    });
    async move { rx.await.unwrap_or(false) }.boxed_local()
}
