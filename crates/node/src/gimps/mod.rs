//! GIMPS gossip as a libp2p behaviour: `/tabmesh/gimps/1.0.0` between every pair of connected
//! peers, around `tabmesh_core::gimps::node::GossipNode`.
//!
//! This module owns the protocol end to end: the request-response transport ([`codec`]), the
//! gossip peer list (every connected peer but the relay joins it), the timed routines, and the
//! Lucas-Lehmer search that the core asks for (on a thread natively, in slices in a tab), with
//! the test rate the dashboard shows. Rejected input is reported as a violation for the
//! misbehaviour ledger; a message that arrives counts as hearing from its sender.

pub mod codec;

use std::collections::{HashSet, VecDeque};
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::{Fuse, FusedFuture, LocalBoxFuture};
use libp2p::PeerId;
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, ToSwarm};
use tabmesh_core::gimps::message::MsgType;
use tabmesh_core::gimps::node::{GossipAction, GossipConfig, GossipNode};
use tabmesh_core::names::peer_name;
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

/// The GIMPS gossip protocol of a node.
pub struct Behaviour {
    transport: Transport,
    node: GossipNode,
    relay: Option<PeerId>,
    connected: HashSet<PeerId>,
    search: Search,
    tests_done: VecDeque<Instant>,
    tested_total: u64,
    learned_at_unix_ms: Option<u64>,
    events: VecDeque<ToSwarm<Report, THandlerInEvent<Transport>>>,
    wire: WireSink,
    timer: Timer,
}

impl Behaviour {
    /// The gossip node of `key`, with `config`; view timestamps count from `origin`, log lines
    /// go to `wire`.
    pub fn new(key: Keypair, config: GossipConfig, origin: Instant, wire: WireSink) -> Self {
        let transport = request_response::Behaviour::with_codec(
            GossipCodec,
            [(codec::PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(Duration::from_secs(10))
                .with_max_concurrent_streams(64),
        );
        Self {
            transport,
            node: GossipNode::new(key, config, origin, Instant::now()),
            relay: None,
            connected: HashSet::new(),
            search: Fuse::terminated(),
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

    /// The `gimps` section of the view.
    pub fn view(&self) -> GimpsSection {
        GimpsSection {
            state: self.node.view(Instant::now()),
            tests_per_sec: self.tests_done.len() as f64 / RATE_WINDOW.as_secs_f64(),
            tested_total: self.tested_total,
            learned_at_unix_ms: self.learned_at_unix_ms,
            config: self.node.config().into(),
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
                    if message.msg_type == MsgType::Prime {
                        let summary = format!(
                            "PRIME 2^{}-1 by {} (ttl {})",
                            message.exponent.unwrap_or(0),
                            peer_name(&message.msg_originator),
                            message.ttl
                        );
                        self.wire.sent(Topic::Gimps, Some(to), summary);
                    }
                    self.transport.send_request(&to, message.encode());
                }
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
            request_response::Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "gossip send failed");
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "gossip receive failed");
            }
            request_response::Event::Message { .. }
            | request_response::Event::ResponseSent { .. } => {}
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
            if self.search.is_terminated()
                && let Some(p) = self.node.next_candidate()
            {
                self.search = platform::lucas_lehmer(p)
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
            if !self.events.is_empty() {
                continue;
            }
            if self
                .timer
                .poll_at(self.node.poll_timeout(), cx)
                .is_pending()
            {
                return Poll::Pending;
            }
        }
    }
}
