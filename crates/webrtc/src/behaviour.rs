//! The swarm side of the transport: signaling streams on the connections the swarm already has.
//!
//! The WebRTC transport cannot open streams itself: the SDP offer and answer travel on a
//! `/webrtc-signaling/0.0.1` stream of a connection the swarm owns (normally the relayed one).
//! This [`Behaviour`] does that for it. The transport asks through a [`SignalingStreams`] handle
//! for a stream to a peer; the behaviour opens one on an existing connection, or first dials the
//! peer's relay circuit address. Signaling streams the peers open towards us are handed to the
//! transport as [`InboundSignaling`], with the peer they came from (authenticated by the
//! connection they arrived on: WebRTC private-to-private has no handshake of its own).
//! A peer that breaks the signaling protocol (a malformed or out-of-order message) is reported
//! by the transport and surfaces here as an [`Event::Violation`].
//!
//! Nothing here touches a browser, so it runs and is tested natively too.

use std::collections::{HashMap, VecDeque};
use std::task::{Context, Poll, Waker};

use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::ReadyUpgrade;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId,
    DialFailure, FromSwarm, NetworkBehaviour, NotifyHandler, Stream, StreamProtocol,
    SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};

use crate::signaling::PROTOCOL;

/// Signaling streams the peers opened and the transport has not taken yet, at most.
const MAX_PENDING_INBOUND: usize = 16;
/// Stream requests from the transport waiting for the behaviour, at most.
const MAX_PENDING_REQUESTS: usize = 32;
/// Violations reported by the transport and not yet taken by the behaviour, at most (more are
/// dropped: the peer is struck for the ones that got through).
const MAX_PENDING_VIOLATIONS: usize = 16;

/// What the behaviour reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `peer` broke the signaling protocol: it sent a malformed or out-of-order message.
    Violation {
        /// The peer.
        peer: PeerId,
        /// What it did.
        reason: String,
    },
}

/// Why no signaling stream could be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The peer could not be reached (the relay circuit dial failed).
    #[error("cannot reach the peer to signal: {0}")]
    Unreachable(String),
    /// The peer does not speak `/webrtc-signaling/0.0.1` or refused the stream.
    #[error("the peer refused the signaling stream: {0}")]
    Refused(String),
    /// The connection closed before the stream opened.
    #[error("the connection closed before the signaling stream opened")]
    ConnectionClosed,
    /// The swarm (and this behaviour) is gone.
    #[error("the node is shutting down")]
    Gone,
}

/// A signaling stream a peer opened towards us.
#[derive(Debug)]
pub struct InboundSignaling {
    /// The peer, as authenticated by the connection the stream came on.
    pub peer: PeerId,
    /// The stream.
    pub stream: Stream,
}

struct StreamRequest {
    peer: PeerId,
    /// Where to dial the peer if we have no connection to it (its relay circuit address).
    circuit_addr: Multiaddr,
    reply: oneshot::Sender<Result<Stream, StreamError>>,
}

/// The transport's end: ask for streams, receive the peers' streams.
pub struct SignalingStreams {
    requests: mpsc::Sender<StreamRequest>,
    violations: mpsc::Sender<Event>,
    /// Signaling streams opened by peers.
    pub inbound: mpsc::Receiver<InboundSignaling>,
}

/// How the transport reports a peer that broke the signaling protocol.
#[derive(Debug, Clone)]
pub struct ViolationReporter(mpsc::Sender<Event>);

impl ViolationReporter {
    /// `peer` broke the signaling protocol (dropped if too many reports are waiting).
    pub fn report(&self, peer: PeerId, reason: String) {
        let _ = self.0.clone().try_send(Event::Violation { peer, reason });
    }
}

impl SignalingStreams {
    /// A handle for reporting violations, for the upgrade futures.
    pub fn reporter(&self) -> ViolationReporter {
        ViolationReporter(self.violations.clone())
    }

    /// A signaling stream to `peer`: on a connection we have, else after dialing
    /// `circuit_addr`.
    pub fn open(
        &self,
        peer: PeerId,
        circuit_addr: Multiaddr,
    ) -> impl Future<Output = Result<Stream, StreamError>> + Send + 'static {
        let mut requests = self.requests.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            let request = StreamRequest {
                peer,
                circuit_addr,
                reply,
            };
            futures::SinkExt::send(&mut requests, request)
                .await
                .map_err(|_| StreamError::Gone)?;
            answer.await.map_err(|_| StreamError::Gone)?
        }
    }
}

/// Opens and accepts `/webrtc-signaling/0.0.1` streams for the WebRTC transport.
pub struct Behaviour {
    requests: mpsc::Receiver<StreamRequest>,
    violations: mpsc::Receiver<Event>,
    inbound: mpsc::Sender<InboundSignaling>,
    connections: HashMap<PeerId, Vec<ConnectionId>>,
    /// Requests waiting for a dial we started, by that dial's connection id.
    awaiting_dial: HashMap<ConnectionId, Vec<StreamRequest>>,
    /// Requests handed to a connection's handler, by request number.
    in_flight: HashMap<u64, (ConnectionId, oneshot::Sender<Result<Stream, StreamError>>)>,
    next_request: u64,
    actions: VecDeque<ToSwarm<Event, HandlerIn>>,
    waker: Option<Waker>,
}

/// A behaviour and the transport's handle to it.
pub fn new() -> (Behaviour, SignalingStreams) {
    let (requests_tx, requests_rx) = mpsc::channel(MAX_PENDING_REQUESTS);
    let (inbound_tx, inbound_rx) = mpsc::channel(MAX_PENDING_INBOUND);
    let (violations_tx, violations_rx) = mpsc::channel(MAX_PENDING_VIOLATIONS);
    (
        Behaviour {
            requests: requests_rx,
            violations: violations_rx,
            inbound: inbound_tx,
            connections: HashMap::new(),
            awaiting_dial: HashMap::new(),
            in_flight: HashMap::new(),
            next_request: 0,
            actions: VecDeque::new(),
            waker: None,
        },
        SignalingStreams {
            requests: requests_tx,
            violations: violations_tx,
            inbound: inbound_rx,
        },
    )
}

impl Behaviour {
    fn on_request(&mut self, request: StreamRequest) {
        if request.reply.is_canceled() {
            return;
        }
        match self.connections.get(&request.peer).and_then(|c| c.first()) {
            Some(&connection) => self.open_on(connection, request),
            None => {
                let opts = DialOpts::peer_id(request.peer)
                    .addresses(vec![request.circuit_addr.clone()])
                    .condition(PeerCondition::Always)
                    .build();
                let id = opts.connection_id();
                self.actions.push_back(ToSwarm::Dial { opts });
                self.awaiting_dial.entry(id).or_default().push(request);
            }
        }
    }

    fn open_on(&mut self, connection: ConnectionId, request: StreamRequest) {
        let id = self.next_request;
        self.next_request += 1;
        self.in_flight.insert(id, (connection, request.reply));
        self.actions.push_back(ToSwarm::NotifyHandler {
            peer_id: request.peer,
            handler: NotifyHandler::One(connection),
            event: HandlerIn::Open(id),
        });
    }

    fn reply(&mut self, id: u64, result: Result<Stream, StreamError>) {
        if let Some((_, reply)) = self.in_flight.remove(&id) {
            let _ = reply.send(result);
        }
    }

    fn on_connection(&mut self, peer: PeerId, connection: ConnectionId) {
        self.connections.entry(peer).or_default().push(connection);
        for request in self.awaiting_dial.remove(&connection).unwrap_or_default() {
            self.open_on(connection, request);
        }
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.on_connection(peer, connection);
        Ok(Handler::default())
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.on_connection(peer, connection);
        Ok(Handler::default())
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => {
                if let Some(list) = self.connections.get_mut(&peer_id) {
                    list.retain(|c| *c != connection_id);
                    if list.is_empty() {
                        self.connections.remove(&peer_id);
                    }
                }
                let lost: Vec<u64> = self
                    .in_flight
                    .iter()
                    .filter(|(_, (c, _))| *c == connection_id)
                    .map(|(id, _)| *id)
                    .collect();
                for id in lost {
                    self.reply(id, Err(StreamError::ConnectionClosed));
                }
            }
            FromSwarm::DialFailure(DialFailure {
                connection_id,
                error,
                ..
            }) => {
                for request in self
                    .awaiting_dial
                    .remove(&connection_id)
                    .unwrap_or_default()
                {
                    let _ = request
                        .reply
                        .send(Err(StreamError::Unreachable(error.to_string())));
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        _connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            HandlerOut::Opened(id, stream) => self.reply(id, Ok(stream)),
            HandlerOut::OpenFailed(id, reason) => self.reply(id, Err(StreamError::Refused(reason))),
            HandlerOut::Inbound(stream) => {
                if let Err(e) = self.inbound.try_send(InboundSignaling { peer, stream }) {
                    // Dropping the stream resets it: the dialer sees a clear failure.
                    let why = if e.is_full() {
                        "too many signaling streams waiting"
                    } else {
                        "no WebRTC transport"
                    };
                    tracing::warn!(%peer, "signaling stream refused: {why}");
                }
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        while let Poll::Ready(Some(request)) = self.requests.poll_next_unpin(cx) {
            self.on_request(request);
        }
        if let Poll::Ready(Some(violation)) = self.violations.poll_next_unpin(cx) {
            return Poll::Ready(ToSwarm::GenerateEvent(violation));
        }
        // Requests whose dial future was dropped (dial timed out) need no answer.
        self.in_flight.retain(|_, (_, reply)| !reply.is_canceled());
        if let Some(action) = self.actions.pop_front() {
            return Poll::Ready(action);
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Messages to a connection's handler.
#[derive(Debug)]
pub enum HandlerIn {
    /// Open a signaling stream; answer with this request number.
    Open(u64),
}

/// Messages from a connection's handler.
#[derive(Debug)]
pub enum HandlerOut {
    /// The stream for a request.
    Opened(u64, Stream),
    /// The stream for a request could not be opened.
    OpenFailed(u64, String),
    /// The peer opened a signaling stream.
    Inbound(Stream),
}

/// One connection's side: opens signaling streams on request, accepts the peer's.
#[derive(Default)]
pub struct Handler {
    to_open: VecDeque<u64>,
    events: VecDeque<HandlerOut>,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = HandlerIn;
    type ToBehaviour = HandlerOut;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = u64;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(StreamProtocol::new(PROTOCOL)), ())
    }

    fn connection_keep_alive(&self) -> bool {
        // Open streams keep the connection by themselves; requests waiting to open do here.
        !self.to_open.is_empty()
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, u64, HandlerOut>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }
        if let Some(id) = self.to_open.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(
                    ReadyUpgrade::new(StreamProtocol::new(PROTOCOL)),
                    id,
                ),
            });
        }
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, event: HandlerIn) {
        match event {
            HandlerIn::Open(id) => self.to_open.push_back(id),
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<'_, Self::InboundProtocol, Self::OutboundProtocol, (), u64>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: stream,
                ..
            }) => self.events.push_back(HandlerOut::Inbound(stream)),
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                info: id,
            }) => self.events.push_back(HandlerOut::Opened(id, stream)),
            ConnectionEvent::DialUpgradeError(DialUpgradeError { info: id, error }) => {
                self.events
                    .push_back(HandlerOut::OpenFailed(id, error.to_string()));
            }
            _ => {}
        }
    }
}
