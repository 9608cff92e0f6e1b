//! The browser/native split: transports, bootstrap fetching, identity and DHT storage, where
//! the Lucas-Lehmer test runs.
//!
//! Both sides offer the same crate-internal functions (`build_swarm`, `fetch_bootstrap`,
//! `relay_transport`, `lucas_lehmer`, `search_place`, `DEFAULT_PACE`); the behaviours and the
//! node call them without knowing which they got. `fetch_bootstrap` is public on both.

#[cfg(not(target_arch = "wasm32"))]
mod key_file;
#[cfg(not(target_arch = "wasm32"))]
mod native;
#[cfg(target_arch = "wasm32")]
mod search_worker;
#[cfg(target_arch = "wasm32")]
mod wasm;

#[cfg(not(target_arch = "wasm32"))]
pub use key_file::{KeyFileError, load_or_create_identity};
#[cfg(not(target_arch = "wasm32"))]
pub use native::fetch_bootstrap;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use native::*;
#[cfg(target_arch = "wasm32")]
pub use wasm::*;

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tabmesh_core::bootstrap::BootstrapInfo;
use tabmesh_core::gimps::pace::SearchPace;
use web_time::{SystemTime, UNIX_EPOCH};

/// The search pace, shared by whoever sets it (the GIMPS behaviour, on the user's command) and
/// the test running at that moment, which reads it after every slice.
#[derive(Debug, Clone)]
pub struct SharedPace(Arc<AtomicU16>);

impl SharedPace {
    /// A pace of `pace`.
    pub fn new(pace: SearchPace) -> Self {
        Self(Arc::new(AtomicU16::new(pace.as_per_mille())))
    }

    /// The pace now.
    pub fn get(&self) -> SearchPace {
        SearchPace::per_mille(self.0.load(Ordering::Relaxed))
    }

    /// Changes the pace, also for the test running now.
    pub fn set(&self, pace: SearchPace) {
        self.0.store(pace.as_per_mille(), Ordering::Relaxed);
    }
}

/// Wall-clock milliseconds since the Unix epoch (record expiry is absolute time, the same for
/// every peer).
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The URL of the bootstrap document for a relay URL given by a user: a base URL gets
/// `/api/bootstrap` appended, a full document URL is kept.
pub fn bootstrap_url(url: &str) -> String {
    if url.ends_with("/api/bootstrap") {
        url.to_owned()
    } else {
        format!("{}/api/bootstrap", url.trim_end_matches('/'))
    }
}

/// A bootstrap document for a relay known by multiaddr (which must end in `/p2p/<id>`).
pub fn bootstrap_from_addr(addr: &Multiaddr) -> Result<BootstrapInfo, String> {
    let Some(Protocol::P2p(peer)) = addr.iter().last() else {
        return Err(format!("{addr} must end with /p2p/<relay peer id>"));
    };
    let peer: PeerId = peer;
    Ok(BootstrapInfo {
        peer_id: peer.to_base58(),
        addrs: vec![addr.to_string()],
        ice_servers: Vec::new(),
        version: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_urls_are_completed() {
        assert_eq!(
            bootstrap_url("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080/api/bootstrap"
        );
        assert_eq!(
            bootstrap_url("http://127.0.0.1:8080/"),
            "http://127.0.0.1:8080/api/bootstrap"
        );
        assert_eq!(bootstrap_url("/api/bootstrap"), "/api/bootstrap");
    }

    #[test]
    fn a_multiaddr_needs_the_relay_id() {
        let bare: Multiaddr = "/ip4/127.0.0.1/tcp/9090".parse().unwrap();
        assert!(bootstrap_from_addr(&bare).unwrap_err().contains("/p2p/"));
        let peer = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let full = bare.with(Protocol::P2p(peer));
        assert_eq!(
            bootstrap_from_addr(&full).unwrap().peer_id,
            peer.to_base58()
        );
    }
}
