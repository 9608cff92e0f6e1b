//! GIMPS gossip as a libp2p behaviour around `tabmesh_core::gimps::node::GossipNode`.
//!
//! Gossip travels on the ordered channels ([`crate::channels`], through the node: a
//! [`Report::Gossip`] out, [`Behaviour::on_channel_frame`] in), so that Chandy-Lamport
//! snapshots cut it like any application message. To a peer without a channel (before identify
//! says it has one, or a peer that does not speak it) it goes on the protocol's own
//! request-response transport, `/tabmesh/gimps/1.0.0` ([`codec`]), which every peer still
//! answers.
//!
//! This module owns the protocol end to end: the transports, the
//! gossip peer list (every connected peer but the relay joins it), the timed routines, and the
//! Lucas-Lehmer search that the core asks for (on a thread natively, in slices in a tab), with
//! the test rate the dashboard shows. Rejected input is reported as a violation for the
//! misbehaviour ledger; a message that arrives counts as hearing from its sender.
//!
//! Tracing: the core records the spans of a `PRIME`'s spread; a `gimps.send` span stays open
//! here until its copy is acknowledged (on a channel, the receiver sends an acknowledgement
//! frame once it has handled the copy; on request-response, its reply), so its length is the
//! round trip, and the clocks of sender and receiver can be lined up from it. Slow motion holds
//! every traced copy for a while before sending it, so that a learner can watch a spread hop by
//! hop.

pub mod codec;

use std::collections::{HashMap, HashSet, VecDeque};
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::{Fuse, FusedFuture, LocalBoxFuture};
use libp2p::PeerId;
use libp2p::identity::Keypair;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::{FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, ToSwarm};
use tabmesh_core::gimps::message::{GossipMessage, MsgType};
use tabmesh_core::gimps::node::{GossipAction, GossipConfig, GossipNode};
use tabmesh_core::gimps::pace::{SearchPace, SearchView};
use tabmesh_core::names::peer_name;
use tabmesh_core::peers::millis;
use tabmesh_core::snapshot::frame::ChannelFrame;
use tabmesh_core::trace::{Span, SpanId, SpanStatus};
use tabmesh_core::view::GimpsSection;
use tabmesh_core::wire_log::Topic;
use web_time::{Duration, Instant};

use crate::forward::forward_to;
use crate::platform;
use crate::report::{Report, WireSink, truncate};
use crate::timer::Timer;
use codec::GossipCodec;

/// Window over which the Lucas-Lehmer test rate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(10);

type Transport = request_response::Behaviour<GossipCodec>;
type Search = Fuse<LocalBoxFuture<'static, (u32, bool)>>;

/// Traced copies held by slow motion at most (beyond, they are sent at once).
const MAX_HELD: usize = 1024;
/// A copy sent on a channel and not acknowledged within this long ends its span as failed.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Copies awaiting an acknowledgement at most (beyond, the oldest span ends as failed).
const MAX_AWAITING: usize = 4096;

/// A traced copy waiting for its slow-motion delay.
struct Held {
    due: Instant,
    to: PeerId,
    message: GossipMessage,
    span: Span,
}

/// The GIMPS gossip protocol of a node.
pub struct Behaviour {
    transport: Transport,
    /// `gimps.send` spans the core opened, until their copy is sent.
    opened: HashMap<SpanId, Span>,
    /// `gimps.send` spans of copies sent on request-response, until acknowledged.
    unacked: HashMap<OutboundRequestId, Span>,
    /// `gimps.send` spans of copies sent on a channel, by peer and token, until acknowledged.
    awaiting: HashMap<(PeerId, u64), (Instant, Span)>,
    next_token: u64,
    slow_motion: Option<Duration>,
    held: VecDeque<Held>,
    node: GossipNode,
    relay: Option<PeerId>,
    connected: HashSet<PeerId>,
    search: Search,
    /// How much of a core the search may take; read by the running test after each slice.
    pace: platform::SharedPace,
    tests_done: VecDeque<Instant>,
    tested_total: u64,
    learned_at_unix_ms: Option<u64>,
    events: VecDeque<ToSwarm<Report, THandlerInEvent<Transport>>>,
    wire: WireSink,
    timer: Timer,
}

impl Behaviour {
    /// The gossip node of `key`, with `config`, searching at `pace`; view timestamps count from
    /// `origin`, log lines go to `wire`; `PRIME` spreads are traced when `traced`.
    pub fn new(
        key: Keypair,
        config: GossipConfig,
        pace: SearchPace,
        origin: Instant,
        traced: bool,
        wire: WireSink,
    ) -> Self {
        let transport = request_response::Behaviour::with_codec(
            GossipCodec,
            [(codec::PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(Duration::from_secs(10))
                .with_max_concurrent_streams(64),
        );
        let now = Instant::now();
        let mut node = GossipNode::new(key, config, origin, now);
        if traced {
            let since_origin = millis(now.saturating_duration_since(origin));
            let origin_unix_ms = platform::unix_now_ms().saturating_sub(since_origin);
            let me = node.peer_id().to_bytes();
            let salt = u64::from_le_bytes(me[me.len() - 8..].try_into().unwrap_or_default());
            node.trace_with(origin_unix_ms, platform::unix_now_ms() ^ salt);
        }
        Self {
            transport,
            opened: HashMap::new(),
            unacked: HashMap::new(),
            awaiting: HashMap::new(),
            next_token: 0,
            slow_motion: None,
            held: VecDeque::new(),
            node,
            relay: None,
            connected: HashSet::new(),
            search: Fuse::terminated(),
            pace: platform::SharedPace::new(pace),
            tests_done: VecDeque::new(),
            tested_total: 0,
            learned_at_unix_ms: None,
            events: VecDeque::new(),
            wire,
            timer: Timer::default(),
        }
    }

    /// The relay is `peer`: it does not gossip.
    pub fn set_relay(&mut self, peer: PeerId) {
        self.relay = Some(peer);
        self.connected.remove(&peer);
    }

    /// Stop answering and sending (peers will evict us).
    pub fn sleep(&mut self) {
        self.node.sleep();
        self.wire
            .local(Topic::Gimps, None, "asleep: not answering or sending");
    }

    /// Answer and send again.
    pub fn wake(&mut self) {
        let now = Instant::now();
        self.node.wake(now);
        self.rejoin_connected_peers(now);
        self.wire.local(Topic::Gimps, None, "awake");
    }

    /// Forget what was learnt.
    pub fn reset(&mut self) {
        let now = Instant::now();
        self.node.reset(now);
        self.learned_at_unix_ms = None;
        self.rejoin_connected_peers(now);
        self.wire.local(Topic::Gimps, None, "state reset");
    }

    /// The share of a core the search may take from now on (also the test running now).
    pub fn set_pace(&mut self, pace: SearchPace) {
        self.pace.set(pace);
        let what = if pace.is_full() {
            "search pace: full speed".to_owned()
        } else {
            format!(
                "search pace: {:.0}% of a core",
                f64::from(pace.as_per_mille()) / 10.0
            )
        };
        self.wire.local(Topic::Gimps, None, what);
    }

    /// Turn the cooperative search mode on or off.
    pub fn set_cooperative(&mut self, on: bool) {
        self.node.set_cooperative(on);
        let mode = if on {
            "cooperative"
        } else {
            "racing (seed behaviour)"
        };
        self.wire
            .local(Topic::Gimps, None, format!("search mode: {mode}"));
    }

    /// Holds every traced copy for `delay` before sending it (`None`: send at once).
    pub fn set_slow_motion(&mut self, delay: Option<Duration>) {
        self.slow_motion = delay.filter(|d| !d.is_zero());
        let what = match self.slow_motion {
            Some(d) => format!("slow motion: traced copies held {} ms", d.as_millis()),
            None => "slow motion off".to_owned(),
        };
        self.wire.local(Topic::Trace, None, what);
        if self.slow_motion.is_none() {
            let now = Instant::now();
            for held in &mut self.held {
                held.due = now;
            }
        }
    }

    /// The slow-motion delay, if on.
    pub fn slow_motion(&self) -> Option<Duration> {
        self.slow_motion
    }

    /// What a snapshot records of GIMPS: the largest prime and its finder, the peer list's
    /// size, the message counters (cheap: read on every gossip message).
    pub fn record(&self) -> tabmesh_core::snapshot::state::GimpsRecord {
        let counters = self.node.counters();
        tabmesh_core::snapshot::state::GimpsRecord {
            largest_exponent: self.node.biggest().map(|(p, _)| p),
            finder: self.node.biggest().map(|(_, finder)| finder.to_base58()),
            peers: self.node.peer_list().count(),
            sent: counters.sent,
            received: counters.received,
        }
    }

    /// The `gimps` section of the view.
    pub fn view(&self) -> GimpsSection {
        GimpsSection {
            state: self.node.view(Instant::now()),
            tests_per_sec: self.tests_done.len() as f64 / RATE_WINDOW.as_secs_f64(),
            tested_total: self.tested_total,
            learned_at_unix_ms: self.learned_at_unix_ms,
            config: self.node.config().into(),
            search: SearchView {
                pace_per_mille: self.pace.get().as_per_mille(),
                place: platform::search_place(),
            },
        }
    }

    fn report(&mut self, report: Report) {
        self.events.push_back(ToSwarm::GenerateEvent(report));
    }

    /// Connected peers belong in the gossip peer list (the exercise's bootstrap list).
    fn rejoin_connected_peers(&mut self, now: Instant) {
        let peers: Vec<PeerId> = self.connected.iter().copied().collect();
        for peer in peers {
            let actions = self.node.on_peer_connected(now, peer);
            self.apply(actions);
        }
    }

    fn on_tested(&mut self, now: Instant, exponent: u32, prime: bool) {
        self.tested_total += 1;
        self.tests_done.push_back(now);
        while self
            .tests_done
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > RATE_WINDOW)
        {
            self.tests_done.pop_front();
        }
        let actions = self.node.on_tested(now, exponent, prime);
        self.apply(actions);
    }

    fn apply(&mut self, actions: Vec<GossipAction>) {
        for action in actions {
            match action {
                GossipAction::Send { to, message } => {
                    let span = message.trace.and_then(|c| self.opened.remove(&c.span_id));
                    match (span, self.slow_motion) {
                        (Some(span), Some(delay)) if self.held.len() < MAX_HELD => {
                            self.held.push_back(Held {
                                due: Instant::now() + delay,
                                to,
                                message,
                                span,
                            });
                        }
                        (span, _) => self.send(to, &message, span),
                    }
                }
                GossipAction::Traced(span) if span.end_ms.is_none() => {
                    self.opened.insert(span.span_id, span);
                }
                GossipAction::Traced(span) => self.report(Report::Span(span)),
                GossipAction::Evicted(peer) => {
                    self.wire
                        .local(Topic::Gimps, Some(peer), "evicted: silent too long")
                }
                GossipAction::NewBiggest {
                    exponent,
                    originator,
                } => {
                    self.learned_at_unix_ms = Some(platform::unix_now_ms());
                    let who = if originator == self.node.peer_id() {
                        "us".to_owned()
                    } else {
                        peer_name(&originator)
                    };
                    self.wire.local(
                        Topic::Gimps,
                        None,
                        format!("largest prime now 2^{exponent}-1, found by {who}"),
                    );
                }
                GossipAction::Rejected { from, reason } => {
                    self.wire.local(
                        Topic::Gimps,
                        Some(from),
                        format!("rejected: {}", truncate(&reason, 160)),
                    );
                    self.report(Report::Misbehaved {
                        peer: from,
                        topic: Topic::Gimps,
                        reason,
                    });
                }
            }
        }
    }

    /// Sends `message` to `to`; its open `gimps.send` span starts now and ends when the copy is
    /// acknowledged.
    fn send(&mut self, to: PeerId, message: &GossipMessage, span: Option<Span>) {
        if message.msg_type == MsgType::Prime {
            let trace = message
                .trace
                .map(|t| format!(", trace {}", &t.trace_id.to_string()[..8]))
                .unwrap_or_default();
            let summary = format!(
                "PRIME 2^{}-1 by {} (ttl {}{trace})",
                message.exponent.unwrap_or(0),
                peer_name(&message.msg_originator),
                message.ttl
            );
            self.wire.sent(Topic::Gimps, Some(to), summary);
        }
        let ack = match span {
            Some(mut span) => {
                let now = self.span_now_ms();
                if now > span.start_ms {
                    span.attribute("held_ms", now - span.start_ms);
                    span.start_ms = now;
                }
                if self.awaiting.len() >= MAX_AWAITING {
                    self.expire_awaiting(None);
                }
                self.next_token += 1;
                self.awaiting
                    .insert((to, self.next_token), (Instant::now(), span));
                self.next_token
            }
            None => 0,
        };
        self.report(Report::Gossip {
            to,
            frame: ChannelFrame::Gimps {
                ack,
                bytes: message.encode(),
            },
        });
    }

    /// `to` has no ordered channel: the message goes on the gossip protocol's own transport
    /// (its reply acknowledges it).
    pub fn send_direct(&mut self, to: PeerId, bytes: Vec<u8>, ack: u64) {
        let id = self.transport.send_request(&to, bytes);
        if let Some((_, span)) = self.awaiting.remove(&(to, ack)) {
            self.unacked.insert(id, span);
        }
    }

    /// Gossip, or an acknowledgement, arrived on the ordered channel from `from`.
    pub fn on_channel_frame(&mut self, from: PeerId, frame: ChannelFrame) {
        match frame {
            ChannelFrame::Gimps { ack, bytes } => {
                self.report(Report::Heard(from));
                let actions = self.node.on_message(Instant::now(), from, &bytes);
                self.apply(actions);
                if ack != 0 {
                    // Handled: the sender's span of this copy ends.
                    self.report(Report::Gossip {
                        to: from,
                        frame: ChannelFrame::GimpsAck(ack),
                    });
                }
            }
            ChannelFrame::GimpsAck(token) => {
                // Only the peer a copy went to can acknowledge it.
                let now = self.span_now_ms();
                if let Some((_, mut span)) = self.awaiting.remove(&(from, token)) {
                    span.end(now, SpanStatus::Ok);
                    self.report(Report::Span(span));
                }
            }
            ChannelFrame::Marker(_) | ChannelFrame::Tokens(_) => {}
        }
    }

    /// Ends as failed the spans of copies sent before `before` (all but the newest half when
    /// `None`: too many waiting) that were never acknowledged.
    fn expire_awaiting(&mut self, before: Option<Instant>) {
        let cutoff = before.unwrap_or_else(|| {
            let mut sent: Vec<Instant> = self.awaiting.values().map(|(at, _)| *at).collect();
            sent.sort();
            sent.get(sent.len() / 2)
                .copied()
                .unwrap_or_else(Instant::now)
        });
        let late: Vec<(PeerId, u64)> = self
            .awaiting
            .iter()
            .filter(|(_, (at, _))| *at < cutoff)
            .map(|(key, _)| *key)
            .collect();
        for key in late {
            if let Some((_, mut span)) = self.awaiting.remove(&key) {
                span.end(
                    self.span_now_ms(),
                    SpanStatus::Error("no acknowledgement".to_owned()),
                );
                self.report(Report::Span(span));
            }
        }
    }

    /// Now on the clock of this peer's spans: the core's, so a span's start (from the core) and
    /// its end (from here) agree.
    fn span_now_ms(&self) -> u64 {
        self.node
            .span_clock_ms(Instant::now())
            .unwrap_or_else(platform::unix_now_ms)
    }

    /// The copy's span ends: acknowledged, or failed with `error`.
    fn end_send_span(&mut self, id: OutboundRequestId, error: Option<String>) {
        if let Some(mut span) = self.unacked.remove(&id) {
            let status = error.map_or(SpanStatus::Ok, SpanStatus::Error);
            span.end(self.span_now_ms(), status);
            self.report(Report::Span(span));
        }
    }

    /// Sends the held copies that are due; the instant the next one is.
    fn release_held(&mut self, now: Instant) -> Option<Instant> {
        while self.held.front().is_some_and(|h| h.due <= now) {
            if let Some(Held {
                to, message, span, ..
            }) = self.held.pop_front()
            {
                self.send(to, &message, Some(span));
            }
        }
        self.held.front().map(|h| h.due)
    }

    fn on_transport_event(&mut self, now: Instant, event: request_response::Event<Vec<u8>, ()>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.report(Report::Heard(peer));
                let _ = self.transport.send_response(channel, ());
                let actions = self.node.on_message(now, peer, &request);
                self.apply(actions);
            }
            request_response::Event::OutboundFailure {
                peer,
                error,
                request_id,
                ..
            } => {
                tracing::debug!(%peer, %error, "gossip send failed");
                self.end_send_span(request_id, Some(error.to_string()));
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "gossip receive failed");
            }
            request_response::Event::Message {
                message: request_response::Message::Response { request_id, .. },
                ..
            } => self.end_send_span(request_id, None),
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = THandler<Transport>;
    type ToSwarm = Report;

    forward_to!(transport: pending_inbound, established_inbound, pending_outbound, established_outbound, handler_event);

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match &event {
            FromSwarm::ConnectionEstablished(e)
                if e.other_established == 0 && Some(e.peer_id) != self.relay =>
            {
                self.connected.insert(e.peer_id);
                let actions = self.node.on_peer_connected(Instant::now(), e.peer_id);
                self.apply(actions);
            }
            FromSwarm::ConnectionClosed(e) if e.remaining_established == 0 => {
                // The peer keeps its place in the gossip list until eviction, as in the exercise.
                self.connected.remove(&e.peer_id);
            }
            _ => {}
        }
        self.transport.on_swarm_event(event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Report, THandlerInEvent<Self>>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(event);
            }
            let now = Instant::now();
            match self.transport.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => {
                    self.on_transport_event(now, event);
                    continue;
                }
                Poll::Ready(other) => {
                    return Poll::Ready(other.map_out(|_| unreachable!("handled above")));
                }
                Poll::Pending => {}
            }
            let actions = self.node.on_tick(now);
            self.apply(actions);
            if let Some(cutoff) = now.checked_sub(ACK_TIMEOUT)
                && self.awaiting.values().any(|(at, _)| *at < cutoff)
            {
                self.expire_awaiting(Some(cutoff));
            }
            if self.search.is_terminated()
                && let Some(p) = self.node.next_candidate()
            {
                self.search = platform::lucas_lehmer(p, self.pace.clone())
                    .map(move |prime| (p, prime))
                    .boxed_local()
                    .fuse();
            }
            if !self.search.is_terminated()
                && let Poll::Ready((p, prime)) = self.search.poll_unpin(cx)
            {
                self.on_tested(Instant::now(), p, prime);
                continue;
            }
            let next_held = self.release_held(now);
            if !self.events.is_empty() {
                continue;
            }
            let wake = match (self.node.poll_timeout(), next_held) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if self.timer.poll_at(wake, cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}
