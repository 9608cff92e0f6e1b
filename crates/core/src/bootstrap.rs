//! The bootstrap document: how a peer finds the relay without configuration.
//!
//! The relay serves it as JSON at `GET /api/bootstrap`. A browser tab fetches it from the origin
//! that served the page, a native node from the URL given on its command line, and each picks the
//! addresses its transports can dial with [`BootstrapInfo::dial_addrs`].

use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};
use serde::{Deserialize, Serialize};

/// The JSON body of `GET /api/bootstrap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapInfo {
    /// The relay's peer id (stable across restarts: its key lives in the relay's data directory).
    pub peer_id: String,
    /// Multiaddrs of the relay, each ending in `/p2p/<peer_id>`.
    pub addrs: Vec<String>,
    /// ICE servers (STUN/TURN) for direct WebRTC between peers; empty on loopback and LANs.
    /// Each is an `RTCIceServer` dictionary, so a page can pass the list to the browser as is.
    #[serde(default)]
    pub ice_servers: Vec<IceServer>,
    /// The relay's software version, for display.
    #[serde(default)]
    pub version: String,
}

impl BootstrapInfo {
    /// Largest bootstrap document accepted.
    pub const MAX_BYTES: usize = 64 * 1024;

    /// Parses the body of `GET /api/bootstrap` (at most [`Self::MAX_BYTES`]); the fields are
    /// checked when used ([`Self::relay_peer_id`], [`Self::dial_addrs`]).
    pub fn decode(body: &[u8]) -> Result<Self, String> {
        if body.len() > Self::MAX_BYTES {
            return Err(format!(
                "bootstrap document of {} bytes is over the {}-byte limit",
                body.len(),
                Self::MAX_BYTES
            ));
        }
        serde_json::from_slice(body).map_err(|e| format!("malformed bootstrap document: {e}"))
    }
}

/// A STUN or TURN server, as the browser's `RTCIceServer` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:`, `stuns:`, `turn:` or `turns:` URL.
    pub urls: String,
    /// TURN user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl IceServer {
    /// Checks an ICE server URL: a `stun:`, `stuns:`, `turn:` or `turns:` URL with a host.
    pub fn check_url(url: &str) -> Result<(), String> {
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(format!(
                "{url:?} is not an ICE server URL (stun:HOST[:PORT] or turn:HOST[:PORT])"
            ));
        };
        if !matches!(scheme, "stun" | "stuns" | "turn" | "turns") {
            return Err(format!(
                "{url:?}: an ICE server URL starts with stun:, stuns:, turn: or turns:"
            ));
        }
        if rest.is_empty() || rest.starts_with(':') || url.chars().any(char::is_whitespace) {
            return Err(format!("{url:?}: no host"));
        }
        Ok(())
    }

    /// Whether this is a TURN server (which browsers only use with credentials).
    pub fn is_turn(&self) -> bool {
        self.urls.starts_with("turn:") || self.urls.starts_with("turns:")
    }
}

/// Which transports a peer can dial the relay with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayTransport {
    /// A browser on a plain-HTTP page: `/ws` and `/wss`.
    WebSocket,
    /// A browser on an HTTPS page: only `/wss` (browsers block `ws://` from secure pages).
    SecureWebSocket,
    /// A native node: plain TCP.
    Tcp,
}

/// Why a bootstrap document cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BootstrapError {
    /// The `peer_id` field is not a peer id.
    #[error("bootstrap peer_id {0:?} is not a valid peer id")]
    InvalidPeerId(String),
    /// No address in the document can be dialed with the transports at hand.
    #[error("the relay offers no address this peer can dial over {0:?} (offered: {1:?})")]
    NoUsableAddress(RelayTransport, Vec<String>),
}

impl BootstrapInfo {
    /// The relay's peer id.
    pub fn relay_peer_id(&self) -> Result<PeerId, BootstrapError> {
        self.peer_id
            .parse()
            .map_err(|_| BootstrapError::InvalidPeerId(self.peer_id.clone()))
    }

    /// The relay addresses dialable with `transport`, in the document's order, each ending in
    /// the relay's `/p2p/` component. Malformed entries are skipped: one bad address must not
    /// keep a peer off the network.
    pub fn dial_addrs(&self, transport: RelayTransport) -> Result<Vec<Multiaddr>, BootstrapError> {
        let relay = self.relay_peer_id()?;
        let usable: Vec<Multiaddr> = self
            .addrs
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
            .filter(|a| transport_of(a) == Some(transport) || accepts(transport, a))
            // An address naming another peer would fail the handshake: not the relay's.
            .filter(|a| names_only(a, relay))
            .map(|a| with_peer_id(a, relay))
            .collect();
        if usable.is_empty() {
            return Err(BootstrapError::NoUsableAddress(
                transport,
                self.addrs.clone(),
            ));
        }
        Ok(usable)
    }
}

/// Whether every `/p2p` component of `addr` is `peer`.
fn names_only(addr: &Multiaddr, peer: PeerId) -> bool {
    addr.iter()
        .all(|p| !matches!(p, Protocol::P2p(other) if other != peer))
}

fn accepts(transport: RelayTransport, addr: &Multiaddr) -> bool {
    // A plain-HTTP page may also use wss; a secure page may use only wss.
    transport == RelayTransport::WebSocket
        && transport_of(addr) == Some(RelayTransport::SecureWebSocket)
}

fn transport_of(addr: &Multiaddr) -> Option<RelayTransport> {
    let mut tcp = false;
    let mut kind = None;
    for p in addr.iter() {
        match p {
            Protocol::Tcp(_) => tcp = true,
            Protocol::Ws(_) => kind = Some(RelayTransport::WebSocket),
            Protocol::Wss(_) => kind = Some(RelayTransport::SecureWebSocket),
            Protocol::Tls => kind = kind.or(Some(RelayTransport::SecureWebSocket)),
            Protocol::P2pCircuit | Protocol::Udp(_) => return None,
            _ => {}
        }
    }
    match (tcp, kind) {
        (true, None) => Some(RelayTransport::Tcp),
        (true, Some(k)) => Some(k),
        _ => None,
    }
}

/// Whether another peer could dial `addr`: unspecified addresses (0.0.0.0, ::) and addresses
/// with nothing but a `/p2p` component are useless in a routing table.
pub fn is_dialable(addr: &Multiaddr) -> bool {
    addr.iter().all(|p| match p {
        Protocol::Ip4(ip) => !ip.is_unspecified(),
        Protocol::Ip6(ip) => !ip.is_unspecified(),
        _ => true,
    }) && addr.iter().any(|p| !matches!(p, Protocol::P2p(_)))
}

/// `addr` with a trailing `/p2p/<peer>` (added if missing, kept if present).
pub fn with_peer_id(addr: Multiaddr, peer: PeerId) -> Multiaddr {
    match addr.iter().last() {
        Some(Protocol::P2p(_)) => addr,
        _ => addr.with(Protocol::P2p(peer)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay() -> PeerId {
        libp2p_identity::Keypair::ed25519_from_bytes([7; 32])
            .expect("32 bytes are an ed25519 secret")
            .public()
            .to_peer_id()
    }

    #[test]
    fn garbage_and_oversized_documents_are_refused() {
        assert!(
            BootstrapInfo::decode(b"<html>")
                .unwrap_err()
                .contains("malformed")
        );
        let huge = vec![b' '; BootstrapInfo::MAX_BYTES + 1];
        assert!(BootstrapInfo::decode(&huge).unwrap_err().contains("limit"));
    }

    #[test]
    fn ice_server_urls_are_checked() {
        for ok in [
            "stun:stun.example.org",
            "stun:127.0.0.1:3478",
            "turns:t.example.org:443?transport=tcp",
        ] {
            assert_eq!(IceServer::check_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "stun.example.org",
            "http://x",
            "stun:",
            "turn::3478",
            "stun:a b",
        ] {
            assert!(IceServer::check_url(bad).is_err(), "{bad}");
        }
        let turn = IceServer {
            urls: "turn:t.example.org".into(),
            username: Some("u".into()),
            credential: Some("p".into()),
        };
        assert!(turn.is_turn());
        // The JSON is an RTCIceServer dictionary; STUN entries carry no credential fields.
        let stun = IceServer {
            urls: "stun:s.example.org".into(),
            username: None,
            credential: None,
        };
        assert_eq!(
            serde_json::to_string(&stun).unwrap(),
            r#"{"urls":"stun:s.example.org"}"#
        );
    }

    fn info(addrs: &[&str]) -> BootstrapInfo {
        BootstrapInfo {
            peer_id: relay().to_base58(),
            addrs: addrs.iter().map(|s| s.to_string()).collect(),
            ice_servers: vec![],
            version: String::new(),
        }
    }

    #[test]
    fn picks_addresses_per_transport() {
        let doc = info(&[
            "/ip4/127.0.0.1/tcp/9090",
            "/ip4/127.0.0.1/tcp/9091/ws",
            "/dns4/relay.example/tcp/443/wss",
            "/ip4/127.0.0.1/udp/9092/webrtc-direct",
            "not an address",
        ]);
        let tcp = doc.dial_addrs(RelayTransport::Tcp).unwrap();
        assert_eq!(tcp.len(), 1);
        assert!(
            tcp[0]
                .to_string()
                .starts_with("/ip4/127.0.0.1/tcp/9090/p2p/12D3KooW")
        );
        let ws = doc.dial_addrs(RelayTransport::WebSocket).unwrap();
        assert_eq!(ws.len(), 2);
        let wss = doc.dial_addrs(RelayTransport::SecureWebSocket).unwrap();
        assert_eq!(wss.len(), 1);
        assert!(wss[0].to_string().contains("/wss"));
    }

    #[test]
    fn explains_when_nothing_is_dialable() {
        let doc = info(&["/ip4/127.0.0.1/tcp/9090"]);
        let err = doc.dial_addrs(RelayTransport::SecureWebSocket).unwrap_err();
        assert!(matches!(err, BootstrapError::NoUsableAddress(..)));
        assert!(err.to_string().contains("/ip4/127.0.0.1/tcp/9090"));
    }

    #[test]
    fn rejects_a_forged_peer_id() {
        let mut doc = info(&["/ip4/127.0.0.1/tcp/9090"]);
        doc.peer_id = "relay".into();
        assert_eq!(
            doc.dial_addrs(RelayTransport::Tcp),
            Err(BootstrapError::InvalidPeerId("relay".into()))
        );
    }

    #[test]
    fn unspecified_and_bare_addresses_are_not_dialable() {
        let ok: Multiaddr = "/ip4/127.0.0.1/tcp/9090".parse().unwrap();
        let any: Multiaddr = "/ip4/0.0.0.0/tcp/9090".parse().unwrap();
        let circuit = format!("/ip4/127.0.0.1/tcp/9091/ws/p2p/{}/p2p-circuit", relay());
        let bare: Multiaddr = format!("/p2p/{}", relay()).parse().unwrap();
        assert!(is_dialable(&ok));
        assert!(is_dialable(&circuit.parse().unwrap()));
        assert!(!is_dialable(&any));
        assert!(!is_dialable(&bare));
    }

    #[test]
    fn keeps_an_existing_p2p_suffix() {
        let addr = format!("/ip4/127.0.0.1/tcp/9090/p2p/{}", relay());
        let doc = info(&[addr.as_str()]);
        let tcp = doc.dial_addrs(RelayTransport::Tcp).unwrap();
        assert_eq!(
            tcp[0]
                .iter()
                .filter(|p| matches!(p, Protocol::P2p(_)))
                .count(),
            1
        );
    }

    #[test]
    fn skips_an_address_of_another_peer() {
        // Found by fuzzing (bootstrap): an address ending in another peer's id was offered as
        // the relay's; dialing it fails the handshake.
        let other = libp2p_identity::Keypair::ed25519_from_bytes([8; 32])
            .expect("32 bytes are an ed25519 secret")
            .public()
            .to_peer_id();
        let doc = info(&[
            &format!("/ip4/127.0.0.1/tcp/9090/p2p/{other}"),
            &format!("/ip4/127.0.0.1/tcp/9091/p2p/{}", relay()),
        ]);
        let tcp = doc.dial_addrs(RelayTransport::Tcp).unwrap();
        assert_eq!(tcp.len(), 1);
        assert!(tcp[0].to_string().contains("/tcp/9091/"), "{}", tcp[0]);
        let doc = info(&[&format!("/ip4/127.0.0.1/tcp/9090/p2p/{other}")]);
        assert!(matches!(
            doc.dial_addrs(RelayTransport::Tcp),
            Err(BootstrapError::NoUsableAddress(..))
        ));
    }
}
