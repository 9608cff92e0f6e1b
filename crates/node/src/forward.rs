//! Passing a behaviour's connection set-up and handler events on to the behaviour it wraps.
//!
//! Each protocol module wraps one libp2p behaviour (request-response, Kademlia, identify and
//! ping, the relay client, libp2p-stream, the WebRTC signaling) and adds its own bookkeeping.
//! Most of `NetworkBehaviour`'s methods then only pass the call on; [`forward_to!`] writes
//! those, so that a module writes out just the methods where it has work of its own.

/// Writes `NetworkBehaviour` methods that pass the call on to the field `self.$inner`: any of
/// `pending_inbound`, `established_inbound`, `pending_outbound`, `established_outbound`,
/// `swarm_event`, `handler_event` (the connection handler must be the inner one's).
macro_rules! forward_to {
    ($inner:ident: $($method:ident),+ $(,)?) => {
        $( $crate::forward::forward_to!(@ $inner $method); )+
    };
    (@ $inner:ident pending_inbound) => {
        fn handle_pending_inbound_connection(
            &mut self,
            connection_id: ::libp2p::swarm::ConnectionId,
            local_addr: &::libp2p::Multiaddr,
            remote_addr: &::libp2p::Multiaddr,
        ) -> Result<(), ::libp2p::swarm::ConnectionDenied> {
            self.$inner
                .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
        }
    };
    (@ $inner:ident established_inbound) => {
        fn handle_established_inbound_connection(
            &mut self,
            connection_id: ::libp2p::swarm::ConnectionId,
            peer: ::libp2p::PeerId,
            local_addr: &::libp2p::Multiaddr,
            remote_addr: &::libp2p::Multiaddr,
        ) -> Result<::libp2p::swarm::THandler<Self>, ::libp2p::swarm::ConnectionDenied> {
            self.$inner.handle_established_inbound_connection(
                connection_id,
                peer,
                local_addr,
                remote_addr,
            )
        }
    };
    (@ $inner:ident pending_outbound) => {
        fn handle_pending_outbound_connection(
            &mut self,
            connection_id: ::libp2p::swarm::ConnectionId,
            maybe_peer: Option<::libp2p::PeerId>,
            addresses: &[::libp2p::Multiaddr],
            effective_role: ::libp2p::core::Endpoint,
        ) -> Result<Vec<::libp2p::Multiaddr>, ::libp2p::swarm::ConnectionDenied> {
            self.$inner.handle_pending_outbound_connection(
                connection_id,
                maybe_peer,
                addresses,
                effective_role,
            )
        }
    };
    (@ $inner:ident established_outbound) => {
        fn handle_established_outbound_connection(
            &mut self,
            connection_id: ::libp2p::swarm::ConnectionId,
            peer: ::libp2p::PeerId,
            addr: &::libp2p::Multiaddr,
            role_override: ::libp2p::core::Endpoint,
            port_use: ::libp2p::core::transport::PortUse,
        ) -> Result<::libp2p::swarm::THandler<Self>, ::libp2p::swarm::ConnectionDenied> {
            self.$inner.handle_established_outbound_connection(
                connection_id,
                peer,
                addr,
                role_override,
                port_use,
            )
        }
    };
    (@ $inner:ident swarm_event) => {
        fn on_swarm_event(&mut self, event: ::libp2p::swarm::FromSwarm<'_>) {
            self.$inner.on_swarm_event(event);
        }
    };
    (@ $inner:ident handler_event) => {
        fn on_connection_handler_event(
            &mut self,
            peer_id: ::libp2p::PeerId,
            connection_id: ::libp2p::swarm::ConnectionId,
            event: ::libp2p::swarm::THandlerOutEvent<Self>,
        ) {
            self.$inner
                .on_connection_handler_event(peer_id, connection_id, event);
        }
    };
}

pub(crate) use forward_to;
