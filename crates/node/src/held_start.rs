//! A behaviour whose connections open their first outbound streams a while after they are
//! established, not at once.
//!
//! libp2p's ping opens a stream on every new connection at once, to measure its round trip.
//! When tabs join together, those streams compete with the handshakes that make the mesh
//! (identify, the reservation, the lookups, the WebRTC signaling), and a relayed connection is
//! pinged through the relay although the direct one that replaces it a few hundred milliseconds
//! later will be pinged anyway. [`HeldStart`] wraps such a behaviour: each connection's handler
//! holds the streams it asks for during [`HeldStart::new`]'s `hold`, and asks for them when it
//! is over (if the connection is still open). Everything else goes on meanwhile: streams the
//! peer opens are answered, events pass both ways.

use std::collections::VecDeque;
use std::task::{Context, Poll};
use std::time::Duration;

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, NetworkBehaviour,
    SubstreamProtocol, THandlerInEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use web_time::Instant;

use crate::forward::forward_to;
use crate::timer::Timer;

/// `inner`, with every connection's outbound streams held for a while after it is established.
pub struct HeldStart<B> {
    inner: B,
    hold: Duration,
}

impl<B> HeldStart<B> {
    /// `inner`, whose handlers open no stream of their own in the first `hold` of a connection.
    pub fn new(inner: B, hold: Duration) -> Self {
        Self { inner, hold }
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for HeldStart<B> {
    type ConnectionHandler = Held<B::ConnectionHandler>;
    type ToSwarm = B::ToSwarm;

    forward_to!(inner: pending_inbound, pending_outbound, swarm_event, handler_event);

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<Self::ConnectionHandler, ConnectionDenied> {
        let handler = self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )?;
        Ok(Held::new(handler, Instant::now() + self.hold))
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<Self::ConnectionHandler, ConnectionDenied> {
        let handler = self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )?;
        Ok(Held::new(handler, Instant::now() + self.hold))
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.inner.poll(cx)
    }
}

/// A connection's handler, holding its outbound streams until `until`.
pub struct Held<H: ConnectionHandler> {
    inner: H,
    /// `None` once the hold is over.
    until: Option<Instant>,
    held: VecDeque<SubstreamProtocol<H::OutboundProtocol, H::OutboundOpenInfo>>,
    timer: Timer,
}

impl<H: ConnectionHandler> Held<H> {
    /// `inner`, whose outbound streams wait for `until`.
    pub fn new(inner: H, until: Instant) -> Self {
        Self {
            inner,
            until: Some(until),
            held: VecDeque::new(),
            timer: Timer::default(),
        }
    }
}

impl<H: ConnectionHandler> ConnectionHandler for Held<H> {
    type FromBehaviour = H::FromBehaviour;
    type ToBehaviour = H::ToBehaviour;
    type InboundProtocol = H::InboundProtocol;
    type OutboundProtocol = H::OutboundProtocol;
    type InboundOpenInfo = H::InboundOpenInfo;
    type OutboundOpenInfo = H::OutboundOpenInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        self.inner.listen_protocol()
    }

    fn connection_keep_alive(&self) -> bool {
        self.inner.connection_keep_alive()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        if let Some(until) = self.until {
            if Instant::now() < until && self.timer.poll_at(Some(until), cx).is_pending() {
                // Still held: the handler runs (answers the peer's streams, reports), and
                // what it asks for waits.
                loop {
                    match self.inner.poll(cx) {
                        Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                            protocol,
                        }) => self.held.push_back(protocol),
                        Poll::Ready(other) => return Poll::Ready(other),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }
            self.until = None;
            self.timer = Timer::default();
        }
        if let Some(protocol) = self.held.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest { protocol });
        }
        self.inner.poll(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::ToBehaviour>> {
        self.inner.poll_close(cx)
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        self.inner.on_behaviour_event(event);
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            '_,
            Self::InboundProtocol,
            Self::OutboundProtocol,
            Self::InboundOpenInfo,
            Self::OutboundOpenInfo,
        >,
    ) {
        self.inner.on_connection_event(event);
    }
}

#[cfg(test)]
mod tests {
    use libp2p::ping;

    use super::*;

    /// libp2p's ping behaviour held for `hold`, and the handler of a connection it just got.
    fn pinging(hold: Duration) -> Held<<ping::Behaviour as NetworkBehaviour>::ConnectionHandler> {
        let mut behaviour = HeldStart::new(ping::Behaviour::new(ping::Config::new()), hold);
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        behaviour
            .handle_established_outbound_connection(
                ConnectionId::new_unchecked(1),
                PeerId::random(),
                &addr,
                Endpoint::Dialer,
                PortUse::Reuse,
            )
            .unwrap()
    }

    /// Runs `handler` until it asks for a stream (`true`) or `within` has passed (`false`),
    /// woken by its own timers (libp2p's ping starts with a zero-length one, ready a moment
    /// after its first poll, not at it; the hold's ends the hold).
    fn asks_for_a_stream<H: ConnectionHandler>(handler: &mut H, within: Duration) -> bool {
        let asked = std::future::poll_fn(|cx| {
            loop {
                match handler.poll(cx) {
                    Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest { .. }) => {
                        return Poll::Ready(());
                    }
                    Poll::Ready(_) => {}
                    Poll::Pending => return Poll::Pending,
                }
            }
        });
        let give_up = futures_timer::Delay::new(within);
        futures::executor::block_on(async {
            futures::pin_mut!(asked);
            matches!(
                futures::future::select(asked, give_up).await,
                futures::future::Either::Left(_)
            )
        })
    }

    #[test]
    fn without_a_hold_a_ping_handler_asks_for_its_stream_at_once() {
        // What the wrapper is for: libp2p's ping opens a stream on a new connection at once.
        let mut held = pinging(Duration::ZERO);
        assert!(asks_for_a_stream(&mut held, Duration::from_secs(1)));
        assert!(held.until.is_none());
    }

    #[test]
    fn the_first_stream_waits_for_the_end_of_the_hold_then_goes() {
        let hold = Duration::from_secs(1);
        let mut held = pinging(hold);
        let until = held.until.expect("held");
        // Within the hold, the ping asks for its stream and is kept waiting.
        assert!(!asks_for_a_stream(&mut held, Duration::from_millis(300)));
        assert!(Instant::now() < until);
        assert_eq!(
            held.held.len(),
            1,
            "the ping's stream request is kept, once"
        );
        assert!(asks_for_a_stream(&mut held, Duration::from_secs(2)));
        assert!(Instant::now() >= until, "not before the hold ends");
        assert!(held.held.is_empty());
        assert!(held.until.is_none());
        // The ping now waits for its stream: nothing more to ask for.
        assert!(!asks_for_a_stream(&mut held, Duration::from_millis(100)));
    }
}
