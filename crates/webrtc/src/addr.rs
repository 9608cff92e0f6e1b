//! The addresses of the `/webrtc` transport.

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// Splits `<relay>/p2p-circuit/webrtc/p2p/<peer>` into the circuit address
/// (`<relay>/p2p-circuit/p2p/<peer>`) and the peer; `None` for any other address.
pub fn parse_dial_addr(addr: &Multiaddr) -> Option<(Multiaddr, PeerId)> {
    let parts: Vec<Protocol<'_>> = addr.iter().collect();
    let [
        before @ ..,
        Protocol::P2pCircuit,
        Protocol::WebRTC,
        Protocol::P2p(peer),
    ] = parts.as_slice()
    else {
        return None;
    };
    // The relay part must name the relay: `…/p2p/<relay>/p2p-circuit`.
    if !matches!(before.last(), Some(Protocol::P2p(_))) {
        return None;
    }
    let circuit = before
        .iter()
        .cloned()
        .chain([Protocol::P2pCircuit, Protocol::P2p(*peer)])
        .collect();
    Some((circuit, *peer))
}

/// Whether `addr` is one this transport listens on: `/webrtc` alone or after `/p2p-circuit`.
pub fn is_listen_addr(addr: &Multiaddr) -> bool {
    let parts: Vec<Protocol<'_>> = addr.iter().collect();
    matches!(
        parts.as_slice(),
        [Protocol::WebRTC] | [.., Protocol::P2pCircuit, Protocol::WebRTC]
    )
}

/// Whether a connection with this (remote or dialed) address is a direct WebRTC connection
/// (its address names the relay it was signaled through, but no byte goes through the relay).
pub fn is_webrtc(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::WebRTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_end_in_webrtc() {
        let relay = PeerId::random();
        let ok: Multiaddr = format!("/ip4/127.0.0.1/tcp/9090/ws/p2p/{relay}/p2p-circuit/webrtc")
            .parse()
            .unwrap();
        assert!(is_listen_addr(&ok));
        assert!(is_listen_addr(&"/webrtc".parse().unwrap()));
        assert!(!is_listen_addr(&"/ip4/127.0.0.1/tcp/1/ws".parse().unwrap()));
        assert!(!is_listen_addr(
            &format!("/ip4/127.0.0.1/tcp/9090/ws/p2p/{relay}/p2p-circuit")
                .parse()
                .unwrap()
        ));
    }

    #[test]
    fn dial_addresses_name_the_relay_and_the_peer() {
        let relay = PeerId::random();
        let peer = PeerId::random();
        let addr: Multiaddr =
            format!("/ip4/127.0.0.1/tcp/9090/ws/p2p/{relay}/p2p-circuit/webrtc/p2p/{peer}")
                .parse()
                .unwrap();
        let (circuit, to) = parse_dial_addr(&addr).unwrap();
        assert_eq!(to, peer);
        assert_eq!(
            circuit.to_string(),
            format!("/ip4/127.0.0.1/tcp/9090/ws/p2p/{relay}/p2p-circuit/p2p/{peer}")
        );
        for other in [
            format!("/ip4/127.0.0.1/tcp/9090/ws/p2p/{relay}/p2p-circuit/p2p/{peer}"),
            format!("/ip4/127.0.0.1/tcp/9090/ws/p2p/{relay}/p2p-circuit/webrtc"),
            format!("/ip4/127.0.0.1/tcp/9090/ws/p2p-circuit/webrtc/p2p/{peer}"),
            format!("/ip4/127.0.0.1/udp/1/webrtc-direct/p2p/{peer}"),
        ] {
            assert!(
                parse_dial_addr(&other.parse().unwrap()).is_none(),
                "{other}"
            );
        }
    }
}
