//! The bootstrap document a peer fetches from the relay, and the hex the other decoders use.

use multiaddr::Protocol;
use tabmesh_core::bootstrap::{BootstrapInfo, IceServer, RelayTransport};
use tabmesh_core::hex;

use super::{outcome, peer};
use crate::{Outcome, Target};

pub(super) const DOCUMENT: Target = Target {
    name: "bootstrap",
    about: "the bootstrap document (JSON from GET /api/bootstrap) and the addresses it yields",
    run: document,
    seeds: documents,
};

pub(super) const HEX: Target = Target {
    name: "hex",
    about: "hex text (signatures, trace ids, stored keys)",
    run: hex_text,
    seeds: hex_texts,
};

fn document(data: &[u8]) -> Outcome {
    let decoded = BootstrapInfo::decode(data);
    if let Ok(info) = &decoded {
        for transport in [
            RelayTransport::WebSocket,
            RelayTransport::SecureWebSocket,
            RelayTransport::Tcp,
        ] {
            let Ok(addrs) = info.dial_addrs(transport) else {
                continue;
            };
            let relay = info
                .relay_peer_id()
                .expect("addresses come with a relay id");
            for addr in addrs {
                assert_eq!(
                    addr.iter().last(),
                    Some(Protocol::P2p(relay)),
                    "{addr} is an address of the relay"
                );
            }
        }
        for server in &info.ice_servers {
            let _ = IceServer::check_url(&server.urls);
            let _ = server.is_turn();
        }
    }
    outcome(&decoded)
}

fn documents() -> Vec<Vec<u8>> {
    let relay = peer(8).to_base58();
    let document = format!(
        r#"{{"peer_id":"{relay}","addrs":["/ip4/127.0.0.1/tcp/9090/ws/p2p/{relay}","/ip4/127.0.0.1/tcp/9091/p2p/{relay}","/dns4/relay.example/tcp/443/wss/p2p/{relay}"],"ice_servers":[{{"urls":"stun:stun.example:3478"}},{{"urls":"turn:turn.example","username":"u","credential":"c"}}],"version":"0.1.0"}}"#
    );
    vec![document.into_bytes()]
}

fn hex_text(data: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(data) else {
        return Outcome::Refused;
    };
    match hex::decode(text) {
        Some(bytes) => {
            assert_eq!(
                hex::encode(&bytes),
                text.to_ascii_lowercase(),
                "hex survives"
            );
            Outcome::Accepted
        }
        None => Outcome::Refused,
    }
}

fn hex_texts() -> Vec<Vec<u8>> {
    vec![b"00ff7a".to_vec(), b"".to_vec()]
}
