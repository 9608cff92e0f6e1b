//! Request tracing as a behaviour (`/tabmesh/trace/1.0.0`): the testbed's traced ping, the
//! peer's span store, and the gathering of a whole trace from the peers it crossed.
//!
//! - **Traced ping**: a root span (`trace.ping`, client side) here, a child span (`trace.pong`,
//!   server side) recorded by the peer pinged, which answers.
//! - **Spans**: every span this peer records goes into a bounded [`SpanStore`] (oldest evicted
//!   first); recording is an insert, never a wait.
//! - **Gathering**: the peers a trace names (the recorders of its spans and the targets of its
//!   messages) are asked for their spans of it, then the peers their spans name, up to
//!   [`MAX_ASKED`]; a peer we are not connected to, or that fails to answer, is a gap
//!   ([`tabmesh_core::trace::assemble`]). Each round of asking can take a request's timeout,
//!   so a gathering also has a deadline of its own ([`GATHER_DEADLINE`]): then it is assembled
//!   from what came in, the peers still asked listed as missing. Malformed or oversized
//!   messages are violations.
//!
//! The rules (ids, bounds, assembly, clock offsets) are in [`tabmesh_core::trace`].

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::task::{Context, Poll};

use futures::channel::oneshot;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::{FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, ToSwarm};
use libp2p::{PeerId, StreamProtocol};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::IteratorRandom;
use serde::{Deserialize, Serialize};
use tabmesh_core::names::peer_name;
use tabmesh_core::trace::assemble::{self, Answer, KIND, REMOTE, Trace};
use tabmesh_core::trace::message::{TraceReply, TraceRequest};
use tabmesh_core::trace::store::SpanStore;
use tabmesh_core::trace::{Span, SpanId, SpanStatus, TraceContext, TraceId, TraceSection};
use tabmesh_core::wire_log::Topic;
use web_time::{Duration, Instant};

#[cfg(not(target_arch = "wasm32"))]
pub mod export;

use crate::forward::forward_to;
use crate::platform::unix_now_ms;
use crate::report::{Report, WireSink};
use crate::services::codec::ServiceCodec;
use crate::timer::Timer;

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new(tabmesh_core::trace::message::PROTOCOL);
/// Peers asked for their spans of one trace, at most.
pub const MAX_ASKED: usize = 64;
/// How long gathering a trace may take: a trace named peer by peer can need several rounds of
/// asking, each up to a request's timeout (10 s).
pub const GATHER_DEADLINE: Duration = Duration::from_secs(20);
/// Traces listed in the view.
pub const RECENT_SHOWN: usize = 20;

/// Length-prefixed frames of at most 64 KiB (the services' framing).
type Transport = request_response::Behaviour<ServiceCodec>;

/// What a traced ping answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingAnswer {
    /// The trace it made.
    pub trace_id: TraceId,
    /// The peer pinged.
    pub peer: String,
    /// Its name.
    pub peer_name: String,
    /// Round trip, ms.
    pub rtt_ms: u64,
}

/// Where a peer's finished spans go besides its store (natively: [`export::SpanSink`], an
/// OpenTelemetry collector).
#[derive(Clone)]
pub struct SpanExport(std::sync::Arc<dyn Fn(&Span) + Send + Sync>);

impl SpanExport {
    /// Finished spans go to `f`, which must not wait.
    pub fn new(f: impl Fn(&Span) + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(f))
    }
}

impl std::fmt::Debug for SpanExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpanExport")
    }
}

/// Where a traced ping's answer goes.
pub type PingReplySender = oneshot::Sender<Result<PingAnswer, String>>;
/// Where a gathered trace goes.
pub type TraceReplySender = oneshot::Sender<Result<Trace, String>>;

/// What a user asks of tracing.
#[derive(Debug)]
pub enum TraceCommand {
    /// A traced ping to `peer` (a random connected peer when `None`).
    Ping {
        /// The peer.
        peer: Option<PeerId>,
        /// The answer.
        reply: PingReplySender,
    },
    /// Gather trace `trace_id` from the peers it crossed.
    Gather {
        /// The trace.
        trace_id: TraceId,
        /// The trace put together.
        reply: TraceReplySender,
    },
}

struct Gathering {
    trace_id: TraceId,
    deadline: Instant,
    asked: BTreeSet<PeerId>,
    pending: usize,
    answers: Vec<Answer>,
    reply: TraceReplySender,
}

enum Pending {
    Ping {
        span: SpanId,
        peer: PeerId,
        started_ms: u64,
        reply: PingReplySender,
    },
    Spans {
        gathering: u64,
        peer: PeerId,
        /// Requests of this gathering to the peer so far, this one included.
        asked: u32,
    },
}

/// Tracing of a node.
pub struct Behaviour {
    transport: Transport,
    me: PeerId,
    relay: Option<PeerId>,
    store: SpanStore,
    rng: SmallRng,
    connected: HashSet<PeerId>,
    pending: HashMap<OutboundRequestId, Pending>,
    gatherings: HashMap<u64, Gathering>,
    next_gathering: u64,
    gather_deadline: Duration,
    timer: Timer,
    malformed: u64,
    export: Option<SpanExport>,
    events: VecDeque<Report>,
    wire: WireSink,
}

impl Behaviour {
    /// Tracing for peer `me`, logging into `wire`.
    pub fn new(me: PeerId, wire: WireSink) -> Self {
        let transport = request_response::Behaviour::with_codec(
            ServiceCodec,
            [(PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
        );
        Self {
            transport,
            me,
            relay: None,
            store: SpanStore::default(),
            rng: SmallRng::seed_from_u64(unix_now_ms() ^ u64::from(me.to_bytes()[2])),
            connected: HashSet::new(),
            pending: HashMap::new(),
            gatherings: HashMap::new(),
            next_gathering: 0,
            gather_deadline: GATHER_DEADLINE,
            timer: Timer::default(),
            malformed: 0,
            export: None,
            events: VecDeque::new(),
            wire,
        }
    }

    /// Gatherings take at most `deadline` (instead of [`GATHER_DEADLINE`]).
    pub fn with_gather_deadline(mut self, deadline: Duration) -> Self {
        self.gather_deadline = deadline;
        self
    }

    /// The relay is `peer` (it does not speak the protocol: never pinged at random).
    pub fn set_relay(&mut self, peer: PeerId) {
        self.relay = Some(peer);
    }

    /// Finished spans also go to `export`.
    pub fn export_to(&mut self, export: SpanExport) {
        self.export = Some(export);
    }

    /// Records a span this peer made (the other protocols' spans come in here).
    pub fn record(&mut self, span: Span) {
        if let Some(export) = &self.export
            && span.end_ms.is_some()
        {
            (export.0)(&span);
        }
        self.store.record(span);
    }

    /// The section of the view.
    pub fn view(&self) -> TraceSection {
        TraceSection {
            recent: self.store.recent(RECENT_SHOWN),
            spans_held: self.store.len(),
            bytes_held: self.store.bytes(),
            counters: self.store.counters(),
            malformed: self.malformed,
            ..TraceSection::default()
        }
    }

    /// Carries out a user's request.
    pub fn command(&mut self, command: TraceCommand) {
        match command {
            TraceCommand::Ping { peer, reply } => self.ping(peer, reply),
            TraceCommand::Gather { trace_id, reply } => self.gather(trace_id, reply),
        }
    }

    fn ping(&mut self, peer: Option<PeerId>, reply: PingReplySender) {
        let relay = self.relay;
        let peer = match peer {
            Some(peer) => peer,
            None => match self
                .connected
                .iter()
                .filter(|p| Some(**p) != relay)
                .copied()
                .choose(&mut self.rng)
            {
                Some(peer) => peer,
                None => {
                    let _ = reply.send(Err("no peer to ping yet".to_owned()));
                    return;
                }
            },
        };
        let now = unix_now_ms();
        let root = TraceContext::root(&mut self.rng);
        let mut span = Span::start(root, None, "trace.ping", &self.me.to_base58(), now);
        span.attribute(KIND, "client");
        span.attribute(REMOTE, peer.to_base58());
        self.store.record(span);
        let id = self
            .transport
            .send_request(&peer, TraceRequest::Ping { context: root }.encode());
        self.wire.sent(
            Topic::Trace,
            Some(peer),
            format!("traced ping (trace {})", short(root.trace_id)),
        );
        self.pending.insert(
            id,
            Pending::Ping {
                span: root.span_id,
                peer,
                started_ms: now,
                reply,
            },
        );
    }

    fn gather(&mut self, trace_id: TraceId, reply: TraceReplySender) {
        let local = self.store.spans_of(trace_id);
        let key = self.next_gathering;
        self.next_gathering += 1;
        let mut gathering = Gathering {
            trace_id,
            deadline: Instant::now() + self.gather_deadline,
            asked: BTreeSet::from([self.me]),
            pending: 0,
            answers: Vec::new(),
            reply,
        };
        let named = named_peers(&local);
        gathering.answers.push((self.me.to_base58(), Ok(local)));
        self.gatherings.insert(key, gathering);
        self.ask(key, named);
        self.finish_if_done(key);
    }

    /// Asks the peers in `named` that were not asked yet for their spans.
    fn ask(&mut self, key: u64, named: BTreeSet<PeerId>) {
        let Some(gathering) = self.gatherings.get_mut(&key) else {
            return;
        };
        let mut to_ask = Vec::new();
        for peer in named {
            if gathering.asked.len() >= MAX_ASKED || !gathering.asked.insert(peer) {
                continue;
            }
            if !self.connected.contains(&peer) {
                gathering
                    .answers
                    .push((peer.to_base58(), Err("not connected".to_owned())));
                continue;
            }
            gathering.pending += 1;
            to_ask.push(peer);
        }
        let trace_id = gathering.trace_id;
        for peer in to_ask {
            self.request_spans(key, trace_id, peer, 1);
        }
    }

    /// Sends the `asked`th request of gathering `key` to `peer` for its spans of `trace_id`.
    fn request_spans(&mut self, key: u64, trace_id: TraceId, peer: PeerId, asked: u32) {
        let request = TraceRequest::Spans { trace_id }.encode();
        let id = self.transport.send_request(&peer, request);
        let pending = Pending::Spans {
            gathering: key,
            peer,
            asked,
        };
        self.pending.insert(id, pending);
    }

    fn finish_if_done(&mut self, key: u64) {
        if self.gatherings.get(&key).is_some_and(|g| g.pending == 0)
            && let Some(gathering) = self.gatherings.remove(&key)
        {
            let trace =
                assemble::assemble(gathering.trace_id, &self.me.to_base58(), gathering.answers);
            self.wire.local(
                Topic::Trace,
                None,
                format!(
                    "trace {} gathered: {} span(s) from {} peer(s), {} missing",
                    short(trace.trace_id),
                    trace.spans.len(),
                    trace.peers.len(),
                    trace.missing.len()
                ),
            );
            let _ = gathering.reply.send(Ok(trace));
        }
    }

    /// Gatherings past their deadline are assembled from what came in; the peers that have not
    /// answered are missing.
    fn expire_gatherings(&mut self, now: Instant) {
        let late: Vec<u64> = self
            .gatherings
            .iter()
            .filter(|(_, g)| g.deadline <= now)
            .map(|(key, _)| *key)
            .collect();
        for key in late {
            let unanswered: Vec<(OutboundRequestId, PeerId)> = self
                .pending
                .iter()
                .filter_map(|(id, p)| match p {
                    Pending::Spans {
                        gathering, peer, ..
                    } if *gathering == key => Some((*id, *peer)),
                    _ => None,
                })
                .collect();
            let why = format!(
                "no answer within the gathering's {} s",
                self.gather_deadline.as_secs_f64()
            );
            if let Some(gathering) = self.gatherings.get_mut(&key) {
                for (id, peer) in unanswered {
                    // A late answer finds nothing pending and is dropped.
                    self.pending.remove(&id);
                    gathering.answers.push((peer.to_base58(), Err(why.clone())));
                }
                gathering.pending = 0;
            }
            self.finish_if_done(key);
        }
    }

    fn on_spans(&mut self, key: u64, peer: PeerId, answer: Result<Vec<Span>, String>) {
        let named = answer
            .as_ref()
            .map(|spans| named_peers(spans))
            .unwrap_or_default();
        if let Some(gathering) = self.gatherings.get_mut(&key) {
            gathering.pending = gathering.pending.saturating_sub(1);
            gathering.answers.push((peer.to_base58(), answer));
        }
        self.ask(key, named);
        self.finish_if_done(key);
    }

    fn misbehaved(&mut self, peer: PeerId, reason: String) {
        self.malformed += 1;
        self.events.push_back(Report::Misbehaved {
            peer,
            topic: Topic::Trace,
            reason,
        });
    }

    fn on_transport_event(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
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
                let reply = match TraceRequest::decode(&request) {
                    Ok(TraceRequest::Ping { context }) => {
                        let now = unix_now_ms();
                        let mut span = Span::start(
                            context.child(&mut self.rng),
                            Some(context.span_id),
                            "trace.pong",
                            &self.me.to_base58(),
                            now,
                        );
                        span.attribute(KIND, "server");
                        span.attribute("peer.caller", peer.to_base58());
                        span.end(now, SpanStatus::Ok);
                        self.record(span);
                        self.wire.received(
                            Topic::Trace,
                            Some(peer),
                            format!("traced ping (trace {})", short(context.trace_id)),
                        );
                        TraceReply::Pong
                    }
                    Ok(TraceRequest::Spans { trace_id }) => {
                        TraceReply::spans(self.store.spans_of(trace_id))
                    }
                    Err(malformed) => {
                        self.misbehaved(peer, format!("trace request: {malformed}"));
                        return;
                    }
                };
                let _ = self.transport.send_response(channel, reply.encode());
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let Some(pending) = self.pending.remove(&request_id) else {
                    return;
                };
                let reply = TraceReply::decode(&response).map_err(|malformed| {
                    self.misbehaved(peer, format!("trace reply: {malformed}"));
                    format!("answered garbage ({malformed})")
                });
                match (pending, reply) {
                    (
                        Pending::Ping {
                            span,
                            peer,
                            started_ms,
                            reply,
                        },
                        answer,
                    ) => {
                        let now = unix_now_ms();
                        let answer = match answer {
                            Ok(TraceReply::Pong) => Ok(()),
                            Ok(other) => Err(format!("answered {other:?} to a ping")),
                            Err(e) => Err(e),
                        };
                        self.end_ping(span, peer, started_ms, now, answer, reply);
                    }
                    (
                        Pending::Spans {
                            gathering, peer, ..
                        },
                        answer,
                    ) => {
                        let answer = match answer {
                            Ok(TraceReply::Spans { spans, .. }) => Ok(spans),
                            Ok(other) => Err(format!("answered {other:?}")),
                            Err(e) => Err(e),
                        };
                        self.on_spans(gathering, peer, answer);
                    }
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => match self.pending.remove(&request_id) {
                Some(Pending::Ping {
                    span,
                    peer,
                    started_ms,
                    reply,
                }) => {
                    let now = unix_now_ms();
                    self.end_ping(span, peer, started_ms, now, Err(error.to_string()), reply);
                }
                Some(Pending::Spans {
                    gathering,
                    peer,
                    asked,
                }) => {
                    let closed =
                        matches!(error, request_response::OutboundFailure::ConnectionClosed);
                    let trace_id = self.gatherings.get(&gathering).map(|g| g.trace_id);
                    match trace_id {
                        Some(trace_id)
                            if assemble::ask_again(
                                asked,
                                closed,
                                self.connected.contains(&peer),
                            ) =>
                        {
                            self.wire.local(
                                Topic::Trace,
                                Some(peer),
                                "asking again for its spans: the request was lost with its connection, another is up",
                            );
                            self.request_spans(gathering, trace_id, peer, asked + 1);
                        }
                        _ => self.on_spans(gathering, peer, Err(error.to_string())),
                    }
                }
                None => {}
            },
            request_response::Event::InboundFailure { .. }
            | request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn end_ping(
        &mut self,
        span: SpanId,
        peer: PeerId,
        started_ms: u64,
        now: u64,
        answer: Result<(), String>,
        reply: PingReplySender,
    ) {
        let status = match &answer {
            Ok(()) => SpanStatus::Ok,
            Err(why) => SpanStatus::Error(why.clone()),
        };
        let trace_id = self.store.get(span).map(|s| s.trace_id);
        self.store.end(span, now, status);
        if let (Some(export), Some(ended)) = (&self.export, self.store.get(span)) {
            (export.0)(ended);
        }
        let result = match (answer, trace_id) {
            (Ok(()), Some(trace_id)) => Ok(PingAnswer {
                trace_id,
                peer: peer.to_base58(),
                peer_name: peer_name(&peer),
                rtt_ms: now.saturating_sub(started_ms),
            }),
            (Ok(()), None) => Err("the ping's span was evicted".to_owned()),
            (Err(why), _) => Err(format!("traced ping to {} failed: {why}", peer_name(&peer))),
        };
        let _ = reply.send(result);
    }
}

/// The peers `spans` name: their recorders and the targets of their messages.
fn named_peers(spans: &[Span]) -> BTreeSet<PeerId> {
    spans
        .iter()
        .flat_map(|s| [Some(&s.peer), s.attributes.get(REMOTE)])
        .flatten()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn short(trace: TraceId) -> String {
    trace.to_string()[..8].to_owned()
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = THandler<Transport>;
    type ToSwarm = Report;

    forward_to!(transport: pending_inbound, established_inbound, pending_outbound, established_outbound, handler_event);

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match &event {
            FromSwarm::ConnectionEstablished(e) => {
                self.connected.insert(e.peer_id);
            }
            FromSwarm::ConnectionClosed(e) if e.remaining_established == 0 => {
                self.connected.remove(&e.peer_id);
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
            match self.transport.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => {
                    self.on_transport_event(event);
                    continue;
                }
                Poll::Ready(other) => {
                    return Poll::Ready(other.map_out(|_| unreachable!("handled above")));
                }
                Poll::Pending => {}
            }
            let next = self.gatherings.values().map(|g| g.deadline).min();
            match self.timer.poll_at(next, cx) {
                Poll::Ready(()) => self.expire_gatherings(Instant::now()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
