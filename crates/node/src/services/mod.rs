//! Services as a libp2p behaviour: `/tabmesh/service/1.0.0`, typed request/reply services that
//! peers offer, announce in the DHT and answer, and calls to them from this peer.
//!
//! The rules are `tabmesh_core::services`: [`Calls`] (provider choice, the descriptor check,
//! failover, deadlines), [`Serving`] (admission, bounds, queueing), [`Announcer`] (the DHT
//! entries of an offer and their renewal) and [`Survey`] (the catalog). This module carries
//! them out: it sends and answers calls on request-response ([`codec`]), runs the handlers (the
//! built-ins in [`builtin`], the host's through a [`HostHandler`] channel), and asks the DHT
//! for what it needs by reporting [`Report::Dht`], which the node passes to the DHT behaviour;
//! the answers come back on the channel sent with the request.
//!
//! A peer that sends an unreadable or oversized request or reply is reported to the
//! misbehaviour ledger; a call from a peer counts as hearing from it.

mod announcing;
mod builtin;
mod calling;
pub mod codec;
mod serving;

use std::collections::{HashMap, VecDeque};
use std::task::{Context, Poll};

use futures::channel::{mpsc, oneshot};
use futures::future::LocalBoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::PeerId;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{
    ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, ToSwarm,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tabmesh_core::dht::{DhtError, DhtReply, DhtRequest};
use tabmesh_core::names::peer_name;
use tabmesh_core::peers::millis;
use tabmesh_core::services::announce::{AnnounceConfig, Announcement, Announcer};
use tabmesh_core::services::calls::{Answered, CallConfig, CallId, Calls, Failure, Step};
use tabmesh_core::services::catalog::{Lookup, Survey};
use tabmesh_core::services::descriptor::descriptor_key;
use tabmesh_core::services::message::{Refusal, ServiceReply, ServiceRequest};
use tabmesh_core::services::serving::{Admission, Ended, Job, ServeConfig, Serving};
use tabmesh_core::services::{
    Answerer, BuiltinView, CALLS_SHOWN, CallError, CallRecord, CallRequest, CallSide, Catalog,
    Descriptor, Link, OfferView, ServiceCounters, ServicesSection, builtin as builtins,
};
use tabmesh_core::wire_log::Topic;
use web_time::{Duration, Instant};

use crate::forward::forward_to;
use crate::platform::unix_now_ms;
use crate::report::{Report, WireSink, truncate};
use crate::timer::Timer;
use codec::ServiceCodec;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tabmesh_core::trace::assemble::{KIND, REMOTE};
use tabmesh_core::trace::{Span, SpanStatus, TraceContext};

type Transport = request_response::Behaviour<ServiceCodec>;

/// Where the answer to a call goes.
pub type CallReplySender = oneshot::Sender<Result<CallAnswer, CallError>>;
/// Where the answer to an offer or a withdrawal goes.
pub type DoneSender = oneshot::Sender<Result<(), String>>;
/// Where a catalog goes.
pub type CatalogSender = oneshot::Sender<Result<Catalog, String>>;
/// The channel a host-answered service's calls arrive on.
pub type HostHandler = mpsc::Sender<HostCall>;

/// Calls a host handler may have waiting before the next is refused as overloaded.
pub const HOST_QUEUE: usize = 64;

/// A call for a service the host answers (a handler written in the tab's JavaScript).
#[derive(Debug)]
pub struct HostCall {
    /// The service.
    pub service: String,
    /// The message type.
    pub message_type: String,
    /// The data, checked against the declared shape.
    pub data: Value,
    /// Who called (a peer's name).
    pub caller: String,
    /// Milliseconds the caller still waits.
    pub deadline_ms: u64,
    /// Where the reply data, or the handler's error, goes.
    pub reply: oneshot::Sender<Result<Value, String>>,
}

/// What a user asks of the services.
#[derive(Debug)]
pub enum ServiceCommand {
    /// Switch a built-in service on or off.
    Builtin {
        /// Its name.
        name: String,
        /// On or off.
        on: bool,
        /// The outcome.
        reply: DoneSender,
    },
    /// Offer a service the host answers.
    Offer {
        /// Its declaration.
        descriptor: Descriptor,
        /// Where its calls go.
        handler: HostHandler,
        /// The outcome.
        reply: DoneSender,
    },
    /// Stop offering a service.
    Withdraw {
        /// Its name.
        name: String,
        /// The outcome.
        reply: DoneSender,
    },
    /// Call a service.
    Call(CallRequest, CallReplySender),
    /// Read every service the network offers.
    Catalog(CatalogSender),
}

/// A call's answer, as the caller sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallAnswer {
    /// The reply data.
    pub reply: Value,
    /// The call's trace (`tabmesh.trace(id)` gathers it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The provider's peer id.
    pub provider: String,
    /// The provider's name.
    pub provider_name: String,
    /// The hops the call took, caller first.
    pub route: Vec<String>,
    /// How we reached the provider.
    pub link: Link,
    /// Time from the call to the reply, ms.
    pub duration_ms: u64,
    /// Providers tried, the one that answered included.
    pub attempts: u32,
    /// Time the provider spent, ms.
    pub provider_ms: u64,
}

/// Who is waiting for a served call's answer.
struct Responder {
    to: ReplyTo,
    /// The provider's span of the call, when the caller traces it.
    span: Option<Span>,
}

/// Where an answer goes.
enum ReplyTo {
    /// A peer, on its stream.
    Remote(ResponseChannel<Vec<u8>>),
    /// One of our own calls.
    Local(CallId),
}

/// What a DHT answer is for.
#[derive(Debug, Clone)]
enum Purpose {
    Providers(String),
    Describe(String, PeerId),
    Announce(String),
    Survey(Lookup),
}

/// What a running handler hands back.
struct Finished {
    service: String,
    message_type: String,
    caller: PeerId,
    origin: Option<String>,
    received: Instant,
    responder: Responder,
    result: Result<Value, Refusal>,
}

/// An outstanding call of ours.
struct Outgoing {
    request: CallRequest,
    reply: CallReplySender,
    started: Instant,
    /// The call's root span (its trace is the call's).
    span: Span,
    context: TraceContext,
}

/// Services of a node: offered, served and called.
pub struct Behaviour {
    transport: Transport,
    me: PeerId,
    label: String,
    /// Calls carry their trace context.
    traced: bool,
    origin: Instant,
    relay: Option<PeerId>,
    links: HashMap<PeerId, HashMap<ConnectionId, bool>>,
    calls: Calls,
    outgoing: HashMap<CallId, Outgoing>,
    requests: HashMap<OutboundRequestId, (CallId, PeerId)>,
    serving: Serving<Responder>,
    hosts: HashMap<String, HostHandler>,
    announcer: Announcer,
    dht: FuturesUnordered<LocalBoxFuture<'static, (Purpose, Result<DhtReply, DhtError>)>>,
    running: FuturesUnordered<LocalBoxFuture<'static, Finished>>,
    survey: Option<(Survey, Vec<CatalogSender>)>,
    status: Value,
    records: VecDeque<CallRecord>,
    counters: ServiceCounters,
    events: VecDeque<Report>,
    /// The open attempt span of each call (the caller's side of one request).
    attempts: HashMap<CallId, Span>,
    /// Trace and span ids.
    rng: SmallRng,
    /// Something was handed to the transport since it was last polled.
    transport_work: bool,
    wire: WireSink,
    timer: Timer,
}

impl Behaviour {
    /// The services of peer `me`, named `label` in routes (a peer's name, or "relay"); view
    /// timestamps count from `origin`, log lines go to `wire`.
    pub fn new(me: PeerId, label: String, origin: Instant, wire: WireSink) -> Self {
        Self::with_tracing(me, label, origin, true, wire)
    }

    /// As [`new`](Self::new); calls carry their trace context only when `traced`.
    pub fn with_tracing(
        me: PeerId,
        label: String,
        origin: Instant,
        traced: bool,
        wire: WireSink,
    ) -> Self {
        let transport = request_response::Behaviour::with_codec(
            ServiceCodec,
            [(codec::PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(Duration::from_millis(
                    tabmesh_core::services::message::MAX_DEADLINE_MS + 5_000,
                ))
                .with_max_concurrent_streams(256),
        );
        Self {
            transport,
            me,
            label,
            origin,
            traced,
            relay: None,
            links: HashMap::new(),
            calls: Calls::new(CallConfig::default()),
            outgoing: HashMap::new(),
            requests: HashMap::new(),
            serving: Serving::new(ServeConfig::default()),
            hosts: HashMap::new(),
            announcer: Announcer::new(me, AnnounceConfig::default()),
            dht: FuturesUnordered::new(),
            running: FuturesUnordered::new(),
            survey: None,
            status: Value::Null,
            records: VecDeque::new(),
            counters: ServiceCounters::default(),
            events: VecDeque::new(),
            attempts: HashMap::new(),
            rng: SmallRng::seed_from_u64(unix_now_ms() ^ u64::from(me.to_bytes()[3])),
            transport_work: false,
            wire,
            timer: Timer::default(),
        }
    }

    /// The relay is `peer` (routes name it).
    pub fn set_relay(&mut self, peer: PeerId) {
        self.relay = Some(peer);
    }

    /// Whether the `node-info` service is on (then the node keeps its status current).
    pub fn wants_status(&self) -> bool {
        self.serving.offer_of(builtins::NODE_INFO).is_some()
    }

    /// What `node-info` answers.
    pub fn set_status(&mut self, status: Value) {
        self.status = status;
    }

    /// Carries out a user's request.
    pub fn command(&mut self, command: ServiceCommand) {
        let now = Instant::now();
        match command {
            ServiceCommand::Builtin { name, on, reply } => {
                let result = if on {
                    match builtins::descriptor(&name) {
                        Some(d) => self.offer(d, Answerer::Builtin, now),
                        None => Err(format!(
                            "no built-in service \"{name}\" (there are {})",
                            builtins::ALL.join(", ")
                        )),
                    }
                } else {
                    self.withdraw(&name)
                };
                let _ = reply.send(result);
            }
            ServiceCommand::Offer {
                descriptor,
                handler,
                reply,
            } => {
                let name = descriptor.name.clone();
                if builtins::ALL.contains(&name.as_str()) {
                    let _ = reply.send(Err(format!(
                        "\"{name}\" is a built-in service; switch it on instead"
                    )));
                    return;
                }
                let result = self.offer(descriptor, Answerer::Host, now);
                if result.is_ok() {
                    self.hosts.insert(name, handler);
                }
                let _ = reply.send(result);
            }
            ServiceCommand::Withdraw { name, reply } => {
                let _ = reply.send(self.withdraw(&name));
            }
            ServiceCommand::Call(request, reply) => match self.calls.start(request.clone(), now) {
                Ok(id) => {
                    self.wire.local(
                        Topic::Service,
                        None,
                        format!("call {}/{}", request.service, request.message_type),
                    );
                    let context = TraceContext::root(&mut self.rng);
                    let mut span = Span::start(
                        context,
                        None,
                        &format!("service.call {}/{}", request.service, request.message_type),
                        &self.me.to_base58(),
                        unix_now_ms(),
                    );
                    if let Some(origin) = &request.origin {
                        span.attribute("call.origin", origin);
                    }
                    self.outgoing.insert(
                        id,
                        Outgoing {
                            request,
                            reply,
                            started: now,
                            span,
                            context,
                        },
                    );
                    self.advance(now);
                }
                Err(error) => {
                    self.record_made(&request, None, &[], now, now, Err(&error), 0);
                    let _ = reply.send(Err(error));
                }
            },
            ServiceCommand::Catalog(reply) => match &mut self.survey {
                Some((_, waiting)) => waiting.push(reply),
                None => {
                    let (survey, lookups) = Survey::start();
                    self.survey = Some((survey, vec![reply]));
                    for lookup in lookups {
                        self.survey_lookup(lookup);
                    }
                }
            },
        }
    }

    /// The `services` section of the view.
    pub fn view(&self) -> ServicesSection {
        ServicesSection {
            offered: self
                .serving
                .offers()
                .map(|o| {
                    let (running, waiting) = self.serving.load(&o.descriptor.name);
                    OfferView {
                        name: o.descriptor.name.clone(),
                        version: o.descriptor.version.clone(),
                        description: o.descriptor.description.clone(),
                        answerer: o.answerer,
                        types: o.descriptor.types.clone(),
                        served: o.served,
                        refused: o.refused,
                        failed: o.failed,
                        running,
                        waiting,
                    }
                })
                .collect(),
            builtins: builtins::ALL
                .iter()
                .map(|name| BuiltinView {
                    name: (*name).to_owned(),
                    description: builtins::descriptor(name)
                        .map(|d| d.description)
                        .unwrap_or_default(),
                    on: self.serving.offer_of(name).is_some(),
                })
                .collect(),
            calls: self.records.iter().cloned().collect(),
            counters: self.counters,
            in_flight: self.calls.in_flight(),
        }
    }

    fn name_of(&self, peer: &PeerId) -> String {
        if Some(*peer) == self.relay {
            "relay".to_owned()
        } else if *peer == self.me {
            self.label.clone()
        } else {
            peer_name(peer)
        }
    }

    fn push_record(&mut self, record: CallRecord) {
        if self.records.len() >= CALLS_SHOWN {
            self.records.pop_front();
        }
        self.records.push_back(record);
    }

    fn on_transport_event(
        &mut self,
        event: request_response::Event<Vec<u8>, Vec<u8>>,
        now: Instant,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.events.push_back(Report::Heard(peer));
                match ServiceRequest::decode(&request) {
                    Ok(request) => {
                        self.wire.received(
                            Topic::Service,
                            Some(peer),
                            format!("call {}/{}", request.service, request.message_type),
                        );
                        self.admit(peer, request, ReplyTo::Remote(channel), now);
                    }
                    Err(malformed) => {
                        let reason = format!("service request: {malformed}");
                        self.wire
                            .received(Topic::Service, Some(peer), truncate(&reason, 160));
                        self.counters.malformed += 1;
                        let refusal = Refusal::Malformed(malformed.to_string());
                        let _ = self
                            .transport
                            .send_response(channel, ServiceReply::Refused { refusal }.encode());
                        self.events.push_back(Report::Misbehaved {
                            peer,
                            topic: Topic::Service,
                            reason,
                        });
                    }
                }
            }
            request_response::Event::Message {
                peer,
                connection_id,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
            } => {
                let Some((id, provider)) = self.requests.remove(&request_id) else {
                    return;
                };
                let outcome = match ServiceReply::decode(&response) {
                    Ok(ServiceReply::Ok { data, ms }) => Ok((data, ms)),
                    Ok(ServiceReply::Refused { refusal }) => Err(Failure::Refused(refusal)),
                    Err(malformed) => {
                        self.counters.malformed += 1;
                        let reason = format!("service reply: {malformed}");
                        self.events.push_back(Report::Misbehaved {
                            peer,
                            topic: Topic::Service,
                            reason,
                        });
                        Err(Failure::Malformed(malformed.to_string()))
                    }
                };
                self.end_attempt(id, outcome.as_ref().map(|_| ()).map_err(Failure::summary));
                if let Some(mut step) = self.calls.on_reply(id, provider, outcome, now) {
                    // The link the reply came over: request-response spreads requests over a
                    // peer's connections (a relayed one and a direct one, while both are up).
                    if let Step::Done {
                        result: Ok(answer), ..
                    } = &mut step
                        && let Some(relayed) = self
                            .links
                            .get(&peer)
                            .and_then(|conns| conns.get(&connection_id))
                    {
                        answer.link = if *relayed {
                            Link::Relayed
                        } else {
                            Link::Direct
                        };
                    }
                    self.carry_out(step, now);
                }
                self.advance(now);
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let Some((id, provider)) = self.requests.remove(&request_id) else {
                    return;
                };
                let failure = match error {
                    // (The swarm told us of the closed connection before request-response did.)
                    request_response::OutboundFailure::ConnectionClosed => {
                        Failure::ConnectionClosed {
                            still_linked: self.links.contains_key(&peer),
                        }
                    }
                    _ => Failure::Unreachable(outbound_failure(&error)),
                };
                let what = match failure {
                    Failure::ConnectionClosed { still_linked: true } => {
                        "its connection closed mid-call; another one is up, the call goes again"
                            .to_owned()
                    }
                    _ => format!("call failed: {error}"),
                };
                self.wire.local(Topic::Service, Some(peer), what);
                self.end_attempt(id, Err(failure.summary()));
                if let Some(step) = self.calls.on_reply(id, provider, Err(failure), now) {
                    self.carry_out(step, now);
                }
                self.advance(now);
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "service call not answered");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}

/// An outbound failure as the caller's list of tried providers shows it.
fn outbound_failure(error: &request_response::OutboundFailure) -> String {
    match error {
        request_response::OutboundFailure::DialFailure => "unreachable".to_owned(),
        request_response::OutboundFailure::Timeout => "no reply in time".to_owned(),
        request_response::OutboundFailure::ConnectionClosed => "connection closed".to_owned(),
        request_response::OutboundFailure::UnsupportedProtocols => {
            "does not speak the service protocol".to_owned()
        }
        request_response::OutboundFailure::Io(e) => format!("stream failed: {e}"),
    }
}

fn types_of(d: &Descriptor) -> String {
    d.types.keys().cloned().collect::<Vec<_>>().join(", ")
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = THandler<Transport>;
    type ToSwarm = Report;

    forward_to!(transport: pending_inbound, established_inbound, pending_outbound, established_outbound, handler_event);

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match &event {
            FromSwarm::ConnectionEstablished(e) => {
                let relayed = crate::peers::connection_kind(e.endpoint)
                    == tabmesh_core::peers::ConnectionKind::Relayed;
                self.links
                    .entry(e.peer_id)
                    .or_default()
                    .insert(e.connection_id, relayed);
            }
            FromSwarm::ConnectionClosed(e) => {
                if let Some(conns) = self.links.get_mut(&e.peer_id) {
                    conns.remove(&e.connection_id);
                    if conns.is_empty() {
                        self.links.remove(&e.peer_id);
                    }
                }
            }
            _ => {}
        }
        self.transport.on_swarm_event(event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Report, THandlerInEvent<Self>>> {
        loop {
            if let Some(report) = self.events.pop_front() {
                return Poll::Ready(ToSwarm::GenerateEvent(report));
            }
            let now = Instant::now();
            match self.transport.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => {
                    self.on_transport_event(event, now);
                    continue;
                }
                Poll::Ready(other) => {
                    return Poll::Ready(other.map_out(|_| unreachable!("handled above")));
                }
                Poll::Pending => {}
            }
            if let Poll::Ready(Some((purpose, result))) = self.dht.poll_next_unpin(cx) {
                self.on_dht(purpose, result, now);
                continue;
            }
            if let Poll::Ready(Some(done)) = self.running.poll_next_unpin(cx) {
                self.on_finished(done, now);
                continue;
            }
            for (responder, refusal) in self.serving.expire(now) {
                self.respond(responder, self.me, Err(refusal), 0);
            }
            let renewals = self.announcer.poll(now);
            self.announce(renewals);
            self.advance(now);
            if !self.events.is_empty() || std::mem::take(&mut self.transport_work) {
                continue;
            }
            let next = [
                self.calls.poll_timeout(),
                self.serving.poll_timeout(),
                self.announcer.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            if self.timer.poll_at(next, cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}
