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

mod builtin;
pub mod codec;

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

    fn offer(
        &mut self,
        descriptor: Descriptor,
        answerer: Answerer,
        now: Instant,
    ) -> Result<(), String> {
        let name = descriptor.name.clone();
        self.serving.offer(descriptor.clone(), answerer)?;
        self.wire.local(
            Topic::Service,
            None,
            format!(
                "offering {name} {} ({})",
                descriptor.version,
                types_of(&descriptor)
            ),
        );
        let announcements = self.announcer.on_offer(descriptor, now);
        self.announce(announcements);
        Ok(())
    }

    fn withdraw(&mut self, name: &str) -> Result<(), String> {
        let (was, waiting) = self.serving.withdraw(name);
        if !was {
            return Err(format!("\"{name}\" is not offered here"));
        }
        self.hosts.remove(name);
        for (responder, refusal) in waiting {
            self.respond(responder, self.me, Err(refusal), 0);
        }
        self.wire
            .local(Topic::Service, None, format!("withdrew {name}"));
        let announcements = self.announcer.on_withdraw(name);
        self.announce(announcements);
        Ok(())
    }

    fn announce(&mut self, announcements: Vec<Announcement>) {
        for a in announcements {
            let (request, key) = match a {
                Announcement::Provide(key) => (DhtRequest::Provide { key: key.clone() }, key),
                Announcement::StopProviding(key) => {
                    self.events.push_back(Report::StopProviding(key));
                    continue;
                }
                Announcement::Put { key, value, ttl_ms } => (
                    DhtRequest::Put {
                        key: key.clone(),
                        value,
                        ttl_ms: Some(ttl_ms),
                    },
                    key,
                ),
                Announcement::Remove(key) => (DhtRequest::Remove { key: key.clone() }, key),
            };
            self.ask_dht(request, Purpose::Announce(key));
        }
    }

    fn ask_dht(&mut self, request: DhtRequest, purpose: Purpose) {
        let (tx, rx) = oneshot::channel();
        self.events.push_back(Report::Dht { request, reply: tx });
        self.dht.push(
            async move {
                let result = rx.await.unwrap_or(Err(DhtError::Stopped));
                (purpose, result)
            }
            .boxed_local(),
        );
    }

    fn survey_lookup(&mut self, lookup: Lookup) {
        let request = match &lookup {
            Lookup::Providers(key) => DhtRequest::Providers { key: key.clone() },
            Lookup::Record(key) => DhtRequest::Get { key: key.clone() },
        };
        self.ask_dht(request, Purpose::Survey(lookup));
    }

    fn link(&self, peer: &PeerId) -> Link {
        if *peer == self.me {
            return Link::Local;
        }
        match self.links.get(peer) {
            Some(conns) if conns.values().any(|relayed| !relayed) => Link::Direct,
            Some(conns) if !conns.is_empty() => Link::Relayed,
            _ => Link::None,
        }
    }

    /// Runs the caller's state machine and carries out its steps.
    fn advance(&mut self, now: Instant) {
        let links: HashMap<PeerId, Link> = self
            .links
            .keys()
            .map(|p| (*p, self.link(p)))
            .chain([(self.me, Link::Local)])
            .collect();
        let steps = self
            .calls
            .advance(now, |p| links.get(p).copied().unwrap_or(Link::None));
        for step in steps {
            self.carry_out(step, now);
        }
    }

    fn carry_out(&mut self, step: Step, now: Instant) {
        match step {
            Step::FindProviders { service } => {
                let key = tabmesh_core::services::descriptor::provider_key(&service);
                self.ask_dht(DhtRequest::Providers { key }, Purpose::Providers(service));
            }
            Step::Describe { service, provider } => {
                let key = descriptor_key(&service, &provider);
                self.ask_dht(
                    DhtRequest::Get { key },
                    Purpose::Describe(service, provider),
                );
            }
            Step::Send {
                id,
                provider,
                link,
                mut request,
            } => {
                if let Some(outgoing) = self.outgoing.get(&id) {
                    let context = outgoing.context.child(&mut self.rng);
                    let mut span = Span::start(
                        context,
                        Some(outgoing.context.span_id),
                        &format!(
                            "service.request {}/{}",
                            request.service, request.message_type
                        ),
                        &self.me.to_base58(),
                        unix_now_ms(),
                    );
                    span.attribute(KIND, "client");
                    span.attribute(REMOTE, provider.to_base58());
                    span.attribute("link", format!("{link:?}").to_lowercase());
                    request.trace = Some(context);
                    self.attempts.insert(id, span);
                }
                if link == Link::Local {
                    self.admit(self.me, request, ReplyTo::Local(id), now);
                } else {
                    self.wire.sent(
                        Topic::Service,
                        Some(provider),
                        format!("call {}/{}", request.service, request.message_type),
                    );
                    let rid = self.transport.send_request(&provider, request.encode());
                    self.requests.insert(rid, (id, provider));
                    self.transport_work = true;
                }
            }
            Step::Done { id, result } => self.finish_call(id, result, now),
        }
    }

    /// Ends the open attempt span of call `id` (`Err`: why the attempt failed).
    fn end_attempt(&mut self, id: CallId, outcome: Result<(), String>) {
        if let Some(mut span) = self.attempts.remove(&id) {
            let status = match outcome {
                Ok(()) => SpanStatus::Ok,
                Err(why) => SpanStatus::Error(why),
            };
            span.end(unix_now_ms(), status);
            self.events.push_back(Report::Span(span));
        }
    }

    fn finish_call(&mut self, id: CallId, result: Result<Answered, CallError>, now: Instant) {
        let Some(mut outgoing) = self.outgoing.remove(&id) else {
            return;
        };
        // An attempt still open (the deadline passed while it waited) ends with the call.
        self.end_attempt(id, Err("abandoned: the call ended".to_owned()));
        let status = match &result {
            Ok(_) => SpanStatus::Ok,
            Err(e) => SpanStatus::Error(e.to_string()),
        };
        outgoing.span.end(unix_now_ms(), status);
        let trace_id = outgoing.span.trace_id.to_string();
        self.events.push_back(Report::Span(outgoing.span.clone()));
        let answer = result.map(|a| CallAnswer {
            trace_id: Some(trace_id.clone()),
            route: self.route(outgoing.request.origin.as_deref(), a.provider, a.link),
            provider: a.provider.to_base58(),
            provider_name: self.name_of(&a.provider),
            reply: a.data,
            link: a.link,
            duration_ms: a.duration_ms,
            attempts: a.attempts,
            provider_ms: a.provider_ms,
        });
        match &answer {
            Ok(a) => {
                self.wire.local(
                    Topic::Service,
                    None,
                    format!(
                        "{}/{} answered by {} in {} ms",
                        outgoing.request.service,
                        outgoing.request.message_type,
                        a.provider_name,
                        a.duration_ms
                    ),
                );
                self.record_made(
                    &outgoing.request,
                    Some(a.provider_name.clone()),
                    &a.route,
                    outgoing.started,
                    now,
                    Ok(()),
                    a.attempts,
                );
            }
            Err(e) => {
                self.wire.local(
                    Topic::Service,
                    None,
                    format!(
                        "{}/{} failed: {}",
                        outgoing.request.service,
                        outgoing.request.message_type,
                        truncate(&e.to_string(), 160)
                    ),
                );
                self.record_made(
                    &outgoing.request,
                    None,
                    &[],
                    outgoing.started,
                    now,
                    Err(e),
                    0,
                );
            }
        }
        let _ = outgoing.reply.send(answer);
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

    fn route(&self, origin: Option<&str>, provider: PeerId, link: Link) -> Vec<String> {
        let mut route: Vec<String> = origin.map(str::to_owned).into_iter().collect();
        route.push(self.label.clone());
        match link {
            Link::Local => return route,
            Link::Relayed => route.push("relay".to_owned()),
            Link::Direct | Link::None => {}
        }
        route.push(self.name_of(&provider));
        route
    }

    #[allow(clippy::too_many_arguments)]
    fn record_made(
        &mut self,
        request: &CallRequest,
        provider: Option<String>,
        route: &[String],
        started: Instant,
        now: Instant,
        outcome: Result<(), &CallError>,
        attempts: u32,
    ) {
        self.counters.made += 1;
        match outcome {
            Ok(()) => self.counters.answered += 1,
            Err(_) => self.counters.failed += 1,
        }
        self.push_record(CallRecord {
            at_ms: millis(now.saturating_duration_since(self.origin)),
            side: CallSide::Made,
            service: request.service.clone(),
            message_type: request.message_type.clone(),
            peer: provider.unwrap_or_else(|| "—".to_owned()),
            route: route.to_vec(),
            duration_ms: millis(now.saturating_duration_since(started)),
            attempts,
            ok: outcome.is_ok(),
            outcome: outcome.map_or_else(|e| e.to_string(), |()| "ok".to_owned()),
        });
    }

    fn push_record(&mut self, record: CallRecord) {
        if self.records.len() >= CALLS_SHOWN {
            self.records.pop_front();
        }
        self.records.push_back(record);
    }

    /// A call arrived (from a peer, or from ourselves): admit it and run it, queue it or refuse it.
    fn admit(&mut self, caller: PeerId, request: ServiceRequest, to: ReplyTo, now: Instant) {
        let (service, message_type) = (request.service.clone(), request.message_type.clone());
        // The provider's span: a child of the caller's attempt, when it traces the call.
        let span = request.trace.map(|context| {
            let mut span = Span::start(
                context.child(&mut self.rng),
                Some(context.span_id),
                &format!("service.serve {service}/{message_type}"),
                &self.me.to_base58(),
                unix_now_ms(),
            );
            span.attribute(KIND, "server");
            span.attribute("peer.caller", caller.to_base58());
            span
        });
        let responder = Responder { to, span };
        match self.serving.admit(caller, request, responder, now) {
            Admission::Run(job) => self.run(*job, now),
            Admission::Queued => {}
            Admission::Refused(responder, refusal) => {
                self.wire.local(
                    Topic::Service,
                    (caller != self.me).then_some(caller),
                    format!(
                        "refused {service}/{message_type}: {}",
                        truncate(&refusal.to_string(), 120)
                    ),
                );
                self.counters.refused += 1;
                self.push_record(CallRecord {
                    at_ms: millis(now.saturating_duration_since(self.origin)),
                    side: CallSide::Served,
                    service,
                    message_type,
                    peer: self.name_of(&caller),
                    route: Vec::new(),
                    duration_ms: 0,
                    attempts: 1,
                    ok: false,
                    outcome: refusal.to_string(),
                });
                self.respond(responder, caller, Err(refusal), 0);
            }
        }
    }

    /// Starts the handler of an admitted call.
    fn run(&mut self, job: Job<Responder>, now: Instant) {
        let Job {
            caller,
            request,
            received,
            deadline,
            payload,
        } = job;
        let ServiceRequest {
            service,
            message_type,
            data,
            origin,
            ..
        } = request;
        let handler: LocalBoxFuture<'static, Result<Value, String>> =
            match self.serving.offer_of(&service).map(|o| o.answerer) {
                Some(Answerer::Builtin) => builtin::run(&service, &data, &self.status),
                _ => match self.hosts.get_mut(&service) {
                    Some(host) => {
                        let caller_name = if Some(caller) == self.relay {
                            "relay".to_owned()
                        } else if caller == self.me {
                            self.label.clone()
                        } else {
                            peer_name(&caller)
                        };
                        let (tx, rx) = oneshot::channel();
                        let call = HostCall {
                            service: service.clone(),
                            message_type: message_type.clone(),
                            data,
                            caller: caller_name,
                            deadline_ms: millis(deadline.saturating_duration_since(now)),
                            reply: tx,
                        };
                        match host.try_send(call) {
                            Ok(()) => async move {
                                rx.await
                                    .unwrap_or_else(|_| Err("the handler went away".to_owned()))
                            }
                            .boxed_local(),
                            Err(_) => async { Err("the handler is not keeping up".to_owned()) }
                                .boxed_local(),
                        }
                    }
                    None => async { Err("no handler".to_owned()) }.boxed_local(),
                },
            };
        let wait = futures_timer::Delay::new(deadline.saturating_duration_since(now));
        self.running.push(
            async move {
                let result = futures::select! {
                    result = handler.fuse() => result.map_err(Refusal::Failed),
                    () = wait.fuse() => Err(Refusal::TimedOut),
                };
                Finished {
                    service,
                    message_type,
                    caller,
                    origin,
                    received,
                    responder: payload,
                    result,
                }
            }
            .boxed_local(),
        );
    }

    fn on_finished(&mut self, done: Finished, now: Instant) {
        let ms = millis(now.saturating_duration_since(done.received));
        let ended = if done.result.is_ok() {
            Ended::Served
        } else {
            Ended::Failed
        };
        match &done.result {
            Ok(_) => self.counters.served += 1,
            Err(_) => self.counters.refused += 1,
        }
        let who = self.name_of(&done.caller);
        let peer = match &done.origin {
            Some(origin) => format!("{who} for {origin}"),
            None => who,
        };
        let outcome = match &done.result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.to_string(),
        };
        self.wire.local(
            Topic::Service,
            (done.caller != self.me).then_some(done.caller),
            format!(
                "served {}/{} in {ms} ms: {}",
                done.service,
                done.message_type,
                truncate(&outcome, 120)
            ),
        );
        self.push_record(CallRecord {
            at_ms: millis(now.saturating_duration_since(self.origin)),
            side: CallSide::Served,
            service: done.service.clone(),
            message_type: done.message_type,
            peer,
            route: Vec::new(),
            duration_ms: ms,
            attempts: 1,
            ok: done.result.is_ok(),
            outcome,
        });
        self.respond(done.responder, done.caller, done.result, ms);
        if let Some(next) = self.serving.finished(&done.service, &done.caller, ended) {
            self.run(next, now);
        }
    }

    /// Answers a served call.
    fn respond(
        &mut self,
        responder: Responder,
        caller: PeerId,
        result: Result<Value, Refusal>,
        ms: u64,
    ) {
        let Responder { to, span } = responder;
        if let Some(mut span) = span {
            let status = match &result {
                Ok(_) => SpanStatus::Ok,
                Err(refusal) => SpanStatus::Error(refusal.to_string()),
            };
            span.end(unix_now_ms(), status);
            self.events.push_back(Report::Span(span));
        }
        match to {
            ReplyTo::Remote(channel) => {
                let reply = match result {
                    Ok(data) => ServiceReply::Ok { data, ms },
                    Err(refusal) => ServiceReply::Refused { refusal },
                };
                if self
                    .transport
                    .send_response(channel, reply.encode())
                    .is_err()
                {
                    tracing::debug!(%caller, "the caller went away before the reply");
                }
                self.transport_work = true;
            }
            ReplyTo::Local(id) => {
                let outcome = result.map(|data| (data, ms)).map_err(Failure::Refused);
                self.end_attempt(id, outcome.as_ref().map(|_| ()).map_err(Failure::summary));
                if let Some(step) = self.calls.on_reply(id, self.me, outcome, Instant::now()) {
                    self.carry_out(step, Instant::now());
                }
            }
        }
    }

    fn on_dht(&mut self, purpose: Purpose, result: Result<DhtReply, DhtError>, now: Instant) {
        match purpose {
            Purpose::Providers(service) => {
                let found = match result {
                    Ok(DhtReply::Providers { providers, .. }) => Ok(providers
                        .iter()
                        .filter_map(|p| p.peer_id.parse().ok())
                        .collect()),
                    Ok(_) => Ok(Vec::new()),
                    Err(e) => Err(e.to_string()),
                };
                self.calls.on_providers(&service, found, now);
            }
            Purpose::Describe(service, provider) => {
                let descriptor = match result {
                    Ok(DhtReply::Get {
                        record: Some(record),
                        ..
                    }) if !record.tombstone => record
                        .value
                        .and_then(|v| Descriptor::decode(v.as_bytes()).ok()),
                    _ => None,
                };
                self.calls
                    .on_descriptor(&service, provider, descriptor, now);
            }
            Purpose::Announce(key) => match result {
                Ok(reply) => {
                    tracing::debug!(key, summary = reply.summary(), "service announcement");
                }
                Err(DhtError::Refused(why)) => {
                    self.wire.local(
                        Topic::Service,
                        None,
                        format!("announcing {key} refused: {}", truncate(&why, 120)),
                    );
                }
                Err(e) => {
                    tracing::debug!(key, %e, "service announcement failed; retrying soon");
                    self.announcer.on_failed(now);
                }
            },
            Purpose::Survey(lookup) => self.on_survey(lookup, result),
        }
        self.advance(now);
    }

    fn on_survey(&mut self, lookup: Lookup, result: Result<DhtReply, DhtError>) {
        let Some((survey, _)) = &mut self.survey else {
            return;
        };
        let next = match (&lookup, result) {
            (Lookup::Providers(key), Ok(DhtReply::Providers { providers, .. })) => {
                let peers: Vec<PeerId> = providers
                    .iter()
                    .filter_map(|p| p.peer_id.parse().ok())
                    .collect();
                survey.on_providers(key, &peers)
            }
            (Lookup::Providers(key), _) => survey.on_providers(key, &[]),
            (
                Lookup::Record(key),
                Ok(DhtReply::Get {
                    record: Some(record),
                    ..
                }),
            ) if !record.tombstone => {
                survey.on_record(key, record.value.as_deref().map(str::as_bytes))
            }
            (Lookup::Record(key), _) => survey.on_record(key, None),
        };
        let done = survey.is_done();
        for lookup in next {
            self.survey_lookup(lookup);
        }
        if done && let Some((survey, waiting)) = self.survey.take() {
            let catalog = survey.catalog();
            for reply in waiting {
                let _ = reply.send(Ok(catalog.clone()));
            }
        }
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
                self.wire
                    .local(Topic::Service, Some(peer), format!("call failed: {error}"));
                let failure = Failure::Unreachable(outbound_failure(&error));
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
