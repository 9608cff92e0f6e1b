//! The link to the relay: bootstrap document, connection, reservation, reconnection.
//!
//! This behaviour wraps libp2p's circuit relay v2 client and drives
//! `tabmesh_core::relay_link::RelayLink`: it fetches the relay's bootstrap document, listens on
//! `<relay>/p2p-circuit` (which makes the relay client dial the relay and ask for a
//! reservation), confirms our circuit addresses as external so identify announces them, and
//! when the connection, the dial or the reservation is lost it cleans up and lets the core's
//! backoff schedule the next attempt.
//!
//! What other protocols do with the relay follows from swarm events, not from calls: the DHT
//! starts discovery when our circuit address appears, the direct upgrade listens on
//! `/webrtc` then. The relay's identity, once known, is reported ([`Report::RelayKnown`]).

use std::collections::VecDeque;
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::{Fuse, FusedFuture, LocalBoxFuture};
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    CloseConnection, DialError, FromSwarm, ListenOpts, NetworkBehaviour, THandler, THandlerInEvent,
    ToSwarm,
};
use libp2p::{Multiaddr, PeerId, relay};
use tabmesh_core::bootstrap::BootstrapInfo;
use tabmesh_core::peers::millis;
use tabmesh_core::relay_link::{RelayCommand, RelayLink, RelayLinkConfig};
use tabmesh_core::view::RelayView;
use tabmesh_core::wire_log::Topic;
use web_time::{Duration, Instant};

use crate::forward::forward_to;
use crate::report::{Report, WireSink, error_chain, transport_error_text, truncate};
use crate::timer::Timer;
use crate::{BootstrapSource, platform};

type BootstrapFetch = Fuse<LocalBoxFuture<'static, Result<BootstrapInfo, String>>>;

/// The relay we are attached to.
#[derive(Debug, Clone)]
struct RelayTarget {
    peer_id: PeerId,
    addr: Multiaddr,
}

/// The relay link of a node.
pub struct Behaviour {
    client: relay::client::Behaviour,
    link: RelayLink,
    source: BootstrapSource,
    origin: Instant,
    relay: Option<RelayTarget>,
    /// Connections to the relay now open (ours, or another protocol's).
    relay_connections: usize,
    listener: Option<ListenerId>,
    reservation_at: Option<Instant>,
    fetch: BootstrapFetch,
    events: VecDeque<ToSwarm<Report, THandlerInEvent<relay::client::Behaviour>>>,
    wire: WireSink,
    timer: Timer,
}

/// Whether `addr` goes through a relay circuit.
pub fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// Whether `addr` is a relayed one: through a relay circuit, and not a direct WebRTC address
/// (`<relay>/p2p-circuit/webrtc`, reached through the relay only for signaling).
pub fn is_relayed(addr: &Multiaddr) -> bool {
    is_circuit(addr) && !tabmesh_webrtc::addr::is_webrtc(addr)
}

fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    let mut addr = addr.clone();
    if let Some(Protocol::P2p(_)) = addr.iter().last() {
        addr.pop();
    }
    addr
}

impl Behaviour {
    /// The link to the relay named by `source`, around the swarm's relay client; `seed` drives
    /// the backoff jitter, timestamps count from `origin`, log lines go to `wire`.
    pub fn new(
        client: relay::client::Behaviour,
        source: BootstrapSource,
        config: RelayLinkConfig,
        seed: u64,
        origin: Instant,
        wire: WireSink,
    ) -> Self {
        Self {
            client,
            link: RelayLink::new(config, seed),
            source,
            origin,
            relay: None,
            relay_connections: 0,
            listener: None,
            reservation_at: None,
            fetch: Fuse::terminated(),
            events: VecDeque::new(),
            wire,
            timer: Timer::default(),
        }
    }

    /// The relay's peer id, once known.
    pub fn relay_peer(&self) -> Option<PeerId> {
        self.relay.as_ref().map(|r| r.peer_id)
    }

    /// The `relay` section of the view; `rtt` is the last ping to the relay.
    pub fn view(&self, rtt: Option<Duration>) -> RelayView {
        let now = Instant::now();
        RelayView {
            peer_id: self.relay.as_ref().map(|r| r.peer_id.to_base58()),
            bootstrap: match &self.source {
                BootstrapSource::Url(u) => platform::bootstrap_url(u),
                BootstrapSource::Addr(a) => a.to_string(),
            },
            addr: self.relay.as_ref().map(|r| r.addr.to_string()),
            link: self.link.view(now),
            reservation_at_ms: self
                .reservation_at
                .map(|t| millis(t.saturating_duration_since(self.origin))),
            rtt_ms: rtt.map(|d| d.as_secs_f64() * 1e3),
        }
    }

    fn report(&mut self, report: Report) {
        self.events.push_back(ToSwarm::GenerateEvent(report));
    }

    fn on_bootstrap(&mut self, now: Instant, result: Result<BootstrapInfo, String>) {
        let target = result.and_then(|doc| {
            let peer_id = doc.relay_peer_id().map_err(|e| e.to_string())?;
            let addr = doc
                .dial_addrs(platform::relay_transport())
                .map_err(|e| e.to_string())?
                .remove(0);
            Ok((RelayTarget { peer_id, addr }, doc.ice_servers))
        });
        let (target, ice_servers) = match target {
            Ok(t) => t,
            Err(error) => {
                self.wire
                    .local(Topic::Relay, None, format!("bootstrap failed: {error}"));
                self.link.on_failure(now, error);
                return;
            }
        };
        if let Some(id) = self.listener.take() {
            self.events.push_back(ToSwarm::RemoveListener { id });
        }
        self.report(Report::RelayKnown {
            peer: target.peer_id,
            addr: without_p2p(&target.addr),
            ice_servers,
        });
        self.relay = Some(target);
        self.request_reservation();
    }

    /// Listens on `<relay>/p2p-circuit`: the relay client asks for a reservation on the
    /// connection to the relay it has, or dials one.
    fn request_reservation(&mut self) {
        let Some(target) = &self.relay else { return };
        let opts = ListenOpts::new(target.addr.clone().with(Protocol::P2pCircuit));
        self.listener = Some(opts.listener_id());
        self.events.push_back(ToSwarm::ListenOn { opts });
        self.wire.sent(
            Topic::Relay,
            None,
            format!("reservation request to {}", target.addr),
        );
    }

    /// Our reservation listener closed without an error while a connection to the relay is
    /// up: libp2p's relay client forgot the reservation on its side. It does so when one of
    /// our outbound circuits through the relay times out (after 60 s; libp2p-relay 0.22), while
    /// the relay still holds the reservation and the connection carries our other circuits.
    /// Ask again on the same connection rather than tear it down (within the core's budget).
    fn on_reservation_dropped(&mut self, now: Instant) {
        const WHY: &str = "our relay client dropped the reservation (it does when a circuit \
                           through the relay times out)";
        if self.link.on_reservation_dropped(now, WHY) {
            let what = format!("{WHY}; asking for it again on the same connection");
            tracing::info!(relay = ?self.relay_peer(), "{what}");
            self.wire.local(Topic::Relay, None, what);
            self.request_reservation();
        } else {
            self.on_relay_lost(now, format!("{WHY}, too often: reconnecting"));
        }
    }

    /// Why the relay is unreachable at the address in use, if a failed dial to it says so.
    /// Other protocols dial the relay too, at every address it announced, some of which this
    /// platform cannot use (its TCP address, in a browser); and a dial that was aborted (by our
    /// own clean-up) or never made is no news about the relay. Taking those for a failure
    /// closed the connection our own dial was opening, and cost a full backoff. The reason
    /// names only what happened at our address, not the others' "not supported".
    fn failure_at_our_address(&self, error: &DialError) -> Option<String> {
        match error {
            DialError::DialPeerConditionFalse(_) | DialError::Aborted | DialError::NoAddresses => {
                None
            }
            DialError::Transport(attempts) => {
                let ours = without_p2p(&self.relay.as_ref()?.addr);
                let (addr, why) = attempts
                    .iter()
                    .find(|(addr, _)| without_p2p(addr) == ours)?;
                Some(format!(
                    "{}: {}",
                    without_p2p(addr),
                    transport_error_text(why)
                ))
            }
            other => Some(error_chain(other)),
        }
    }

    /// The connection or reservation is gone: clean up, retry after the backoff.
    fn on_relay_lost(&mut self, now: Instant, reason: String) {
        self.wire.local(Topic::Relay, None, reason.clone());
        self.link.on_failure(now, reason);
        if let Some(id) = self.listener.take() {
            self.events.push_back(ToSwarm::RemoveListener { id });
        }
        if let Some(relay) = self.relay_peer() {
            self.events.push_back(ToSwarm::CloseConnection {
                peer_id: relay,
                connection: CloseConnection::All,
            });
        }
    }

    fn on_client_event(&mut self, now: Instant, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted { renewal, limit, .. } => {
                self.link.on_reservation_accepted(now);
                if !renewal {
                    self.reservation_at.get_or_insert(now);
                }
                let what = if renewal {
                    "reservation renewed"
                } else {
                    "reservation accepted"
                };
                let limit = limit
                    .and_then(|l| l.duration())
                    .map(|d| format!(" (circuits up to {} s)", d.as_secs()))
                    .unwrap_or_default();
                self.wire
                    .received(Topic::Relay, None, format!("{what}{limit}"));
            }
            relay::client::Event::OutboundCircuitEstablished { .. } => {
                self.wire
                    .sent(Topic::Relay, None, "circuit opened (outbound)");
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                self.wire
                    .received(Topic::Relay, Some(src_peer_id), "circuit opened (inbound)");
            }
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = THandler<relay::client::Behaviour>;
    type ToSwarm = Report;

    forward_to!(client: pending_inbound, established_inbound, pending_outbound, established_outbound, handler_event);

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        let now = Instant::now();
        let relay = self.relay_peer();
        match &event {
            FromSwarm::ConnectionEstablished(e) if Some(e.peer_id) == relay => {
                self.relay_connections = e.other_established + 1;
                self.link.on_connected(now);
                self.wire.local(Topic::Conn, None, "connected to the relay");
            }
            FromSwarm::ConnectionClosed(e) if Some(e.peer_id) == relay => {
                self.relay_connections = e.remaining_established;
            }
            _ => {}
        }
        match &event {
            FromSwarm::ConnectionClosed(e)
                if Some(e.peer_id) == relay && e.remaining_established == 0 =>
            {
                let cause = e
                    .cause
                    .map_or_else(|| "closed".to_owned(), |c| c.to_string());
                self.on_relay_lost(now, format!("relay connection lost: {cause}"));
            }
            FromSwarm::ListenerClosed(e) if Some(e.listener_id) == self.listener => {
                self.listener = None;
                match e.reason {
                    Ok(()) if self.relay_connections > 0 => self.on_reservation_dropped(now),
                    Ok(()) => self.on_relay_lost(now, "reservation listener closed".to_owned()),
                    Err(error) => {
                        let reason = format!("reservation failed: {}", error_chain(error));
                        self.on_relay_lost(now, reason);
                    }
                }
            }
            // The reservation listener may not report a failed dial; do not wait. A dial that
            // was not made because another one to the relay is under way (another protocol,
            // such as the DHT announcing a service at start, dialed first) is no failure:
            // treating it as one removed the reservation listener while that other dial went
            // on to carry the reservation, leaving a node that holds a reservation but refuses
            // every circuit. Nor is another protocol's dial at an address we do not use
            // (`failure_at_our_address`).
            FromSwarm::DialFailure(e) if e.peer_id.is_some() && e.peer_id == relay => {
                if !self.link.is_reserved()
                    && let Some(text) = self.failure_at_our_address(e.error)
                {
                    self.on_relay_lost(
                        now,
                        format!("cannot reach the relay at {}", truncate(&text, 200)),
                    );
                }
            }
            // Our relayed addresses are how every other peer reaches us: announce them.
            FromSwarm::NewListenAddr(e) if is_circuit(e.addr) => {
                self.events
                    .push_back(ToSwarm::ExternalAddrConfirmed(e.addr.clone()));
            }
            FromSwarm::ExpiredListenAddr(e) if is_circuit(e.addr) => {
                self.events
                    .push_back(ToSwarm::ExternalAddrExpired(e.addr.clone()));
            }
            _ => {}
        }
        self.client.on_swarm_event(event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Report, THandlerInEvent<Self>>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(event);
            }
            let now = Instant::now();
            if let Some(RelayCommand::Connect) = self.link.poll(now) {
                self.fetch = platform::fetch_bootstrap(&self.source).fuse();
            }
            if !self.fetch.is_terminated()
                && let Poll::Ready(result) = self.fetch.poll_unpin(cx)
            {
                self.on_bootstrap(now, result);
                continue;
            }
            match self.client.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => {
                    self.on_client_event(now, event);
                    continue;
                }
                Poll::Ready(other) => {
                    return Poll::Ready(other.map_out(|_| unreachable!("handled above")));
                }
                Poll::Pending => {}
            }
            if !self.events.is_empty() {
                continue;
            }
            if self
                .timer
                .poll_at(self.link.poll_timeout(), cx)
                .is_pending()
            {
                return Poll::Pending;
            }
        }
    }
}
