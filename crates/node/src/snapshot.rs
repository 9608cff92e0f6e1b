//! Chandy-Lamport global snapshots as a behaviour, on the ordered channels ([`crate::channels`]),
//! with the token demo and the collection of parts (`/tabmesh/snapshot/1.0.0`).
//!
//! - **Channels**: every frame of the algorithm goes on the FIFO channel to its peer: markers,
//!   and the application messages they cut (GIMPS gossip, which the node routes here
//!   ([`Behaviour::send_gossip`]), and the token demo's transfers). The peers with a channel are
//!   the connected ones (the relay excluded) that speak the channel protocol.
//! - **Recording**: [`tabmesh_core::snapshot::Recorder`] decides; this module tells it of every
//!   application frame sent and received, in channel order, of markers, closes and breaks, and
//!   sends the markers it asks for. A peer's recorded state is its token balance (exact: the
//!   demo lives here), its GIMPS figures as the node gives them after every gossip message
//!   ([`Behaviour::set_gimps`]), its DHT record count as of the last view
//!   ([`Behaviour::set_dht_records`]), and its connections.
//! - **Collection**: a finished part goes to the initiator over `/tabmesh/snapshot/1.0.0` (the
//!   connection says whose it is: a part cannot be sent in another peer's name). The
//!   initiator expects a part from itself and from every peer a part names as a channel,
//!   until every expected part came (complete when all are) or the deadline passed (incomplete,
//!   saying who sent nothing).
//! - **Naive snapshot**: asks every channel peer for its state and counts as they are now, with
//!   no marker; the same checks then show what a cut without markers gets wrong.
//!
//! Malformed frames, markers and parts are refused, counted and reported for the ledger.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::task::{Context, Poll};

use futures::channel::oneshot;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::{FromSwarm, NetworkBehaviour, THandlerInEvent, ToSwarm};
use libp2p::{PeerId, StreamProtocol};
use tabmesh_core::names::peer_name;
use tabmesh_core::snapshot::frame::ChannelFrame;
use tabmesh_core::snapshot::state::{
    GimpsRecord, InFlight, PeerState, SnapshotResult, SnapshotSection, TimelineEvent,
};
use tabmesh_core::snapshot::tokens::TokenDemo;
use tabmesh_core::snapshot::wire::{PartWire, SnapshotReply, SnapshotRequest};
use tabmesh_core::snapshot::{
    LocalSnapshot, Marker, Recorder, SnapshotAction, SnapshotConfig, SnapshotId, assemble,
    send_part_again,
};
use tabmesh_core::wire_log::Topic;
use web_time::{Duration, Instant};

use crate::channels::{self, ChannelEvent};
use crate::platform::unix_now_ms;
use crate::report::{Report, WireSink};
use crate::services::codec::ServiceCodec;
use crate::timer::Timer;

/// The collection protocol.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new(tabmesh_core::snapshot::wire::PROTOCOL);
/// Snapshots kept in the view.
pub const RECENT_KEPT: usize = 5;
/// Frames kept for the diagram around a cut.
const TIMELINE_KEPT: usize = 64;
/// The diagram shows the traffic from this long before a record.
const TIMELINE_BEFORE_MS: u64 = 1_500;
/// How often a token-demo peer sends.
const TOKEN_INTERVAL: Duration = Duration::from_millis(60);
/// The initiator waits this much longer than a peer's deadline for the parts.
const COLLECT_GRACE: Duration = Duration::from_secs(2);

/// Where a snapshot's result goes.
pub type SnapshotReplySender = oneshot::Sender<Result<SnapshotResult, String>>;

/// What a user asks of snapshots.
#[derive(Debug)]
pub enum SnapshotCommand {
    /// Take a snapshot (with markers), or a naive one (asking each peer, no markers).
    Take {
        /// No markers.
        naive: bool,
        /// The assembled snapshot.
        reply: SnapshotReplySender,
    },
    /// Switch the token demo on or off here.
    TokenDemo(bool),
}

mod transport {
    //! The channels and the collection protocol, composed (public only as the handler's type).
    #![allow(missing_docs)]

    use libp2p::request_response;
    use libp2p::swarm::NetworkBehaviour;

    use crate::channels;
    use crate::services::codec::ServiceCodec;

    #[derive(NetworkBehaviour)]
    #[behaviour(prelude = "libp2p::swarm::derive_prelude")]
    pub struct Transport {
        pub channels: channels::Behaviour,
        pub collect: request_response::Behaviour<ServiceCodec>,
    }
}
use transport::{Transport, TransportEvent};

/// A snapshot this peer started, gathering its parts.
struct Collecting {
    naive: bool,
    started: Instant,
    started_unix_ms: u64,
    deadline: Instant,
    parts: BTreeMap<PeerId, LocalSnapshot<PeerState, InFlight>>,
    /// Peers asked (naive) that have not answered.
    asked: BTreeSet<PeerId>,
    /// Expected peers that left before sending their part (not waited for).
    gone: BTreeSet<PeerId>,
    failures: Vec<String>,
    bytes: u64,
    reply: Option<SnapshotReplySender>,
}

/// A part sent to its initiator, kept until it answers so that it can be sent again.
struct PartOut {
    id: SnapshotId,
    bytes: Vec<u8>,
    attempts: u32,
}

/// Snapshots of a node.
pub struct Behaviour {
    transport: Transport,
    me: PeerId,
    relay: Option<PeerId>,
    connected: BTreeSet<PeerId>,
    speaks: HashSet<PeerId>,
    recorder: Recorder<PeerState, InFlight>,
    config: SnapshotConfig,
    tokens: TokenDemo,
    /// The other protocols' figures a record takes (the node gives them).
    gimps: GimpsRecord,
    dht_records: usize,
    collecting: BTreeMap<SnapshotId, Collecting>,
    naive_asked: HashMap<OutboundRequestId, (SnapshotId, PeerId)>,
    /// Our parts on their way to other peers' snapshots, until the initiator answers.
    parts_out: HashMap<OutboundRequestId, PartOut>,
    next_naive: u64,
    /// Application frames numbered per channel, for the diagram (sent, received).
    numbered: HashMap<PeerId, (u64, u64)>,
    timeline: VecDeque<TimelineEvent>,
    recent: VecDeque<SnapshotResult>,
    refused: u64,
    events: VecDeque<Report>,
    wire: WireSink,
    timer: Timer,
}

impl Behaviour {
    /// Snapshots for peer `me`; `seed` numbers its snapshots and drives the token demo.
    pub fn new(me: PeerId, seed: u64, wire: WireSink) -> Result<Self, crate::NodeError> {
        let config = SnapshotConfig::default();
        let mut recorder = Recorder::new(me, config.clone());
        // A reloaded tab keeps its identity: its new snapshots must not look like old ones.
        recorder.number_after(unix_now_ms());
        Ok(Self {
            transport: Transport {
                channels: channels::Behaviour::new()?,
                collect: request_response::Behaviour::with_codec(
                    ServiceCodec,
                    [(PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(10)),
                ),
            },
            me,
            relay: None,
            connected: BTreeSet::new(),
            speaks: HashSet::new(),
            recorder,
            config,
            tokens: TokenDemo::new(TOKEN_INTERVAL, seed ^ unix_now_ms()),
            gimps: GimpsRecord::default(),
            dht_records: 0,
            collecting: BTreeMap::new(),
            naive_asked: HashMap::new(),
            parts_out: HashMap::new(),
            next_naive: 0,
            numbered: HashMap::new(),
            timeline: VecDeque::new(),
            recent: VecDeque::new(),
            refused: 0,
            events: VecDeque::new(),
            wire,
            timer: Timer::default(),
        })
    }

    /// The relay is `peer`: no channel with it.
    pub fn set_relay(&mut self, peer: PeerId) {
        self.relay = Some(peer);
        self.connected.remove(&peer);
    }

    /// `peer` was identified with `protocols`: it has a channel if it speaks the protocol.
    pub fn on_identified(&mut self, peer: PeerId, protocols: &[StreamProtocol]) {
        if protocols.contains(&channels::PROTOCOL) {
            self.speaks.insert(peer);
        }
    }

    /// The DHT record count a record takes (the node gives it with every view).
    pub fn set_dht_records(&mut self, records: usize) {
        self.dht_records = records;
    }

    /// The GIMPS figures a record takes (the node gives them after every gossip message, so
    /// that a record agrees with the gossip counted on the channels).
    pub fn set_gimps(&mut self, gimps: GimpsRecord) {
        self.gimps = gimps;
    }

    /// Carries out a user's request.
    pub fn command(&mut self, command: SnapshotCommand) {
        match command {
            SnapshotCommand::Take {
                naive: false,
                reply,
            } => self.initiate(reply),
            SnapshotCommand::Take { naive: true, reply } => self.initiate_naive(reply),
            SnapshotCommand::TokenDemo(on) => {
                self.tokens.set_running(Instant::now(), on);
                let what = if on {
                    "token demo on: sending tokens to random peers"
                } else {
                    "token demo off"
                };
                self.wire.local(Topic::Snapshot, None, what);
            }
        }
    }

    /// The section of the view.
    pub fn view(&self) -> SnapshotSection {
        let counters = self.transport.channels.counters();
        SnapshotSection {
            running: self.recorder.running() + self.collecting.len(),
            recent: self.recent.iter().cloned().collect(),
            tokens: self.tokens.record(),
            channel_peers: self.channel_peers().iter().map(|p| p.to_base58()).collect(),
            frames_sent: counters.sent,
            frames_received: counters.received,
            frames_dropped: counters.dropped,
            breaks: counters.breaks,
            refused: self.refused,
        }
    }

    /// Peers with a channel: connected, not the relay, speaking the protocol.
    fn channel_peers(&self) -> Vec<PeerId> {
        self.connected
            .iter()
            .filter(|p| self.speaks.contains(p) && Some(**p) != self.relay)
            .copied()
            .collect()
    }

    fn state(&self) -> PeerState {
        PeerState {
            name: peer_name(&self.me),
            gimps: self.gimps.clone(),
            dht_records: self.dht_records,
            connections: self.channel_peers().iter().map(|p| p.to_base58()).collect(),
            tokens: self.tokens.record(),
            recorded_unix_ms: unix_now_ms(),
            timeline: Vec::new(),
        }
    }

    fn initiate(&mut self, reply: SnapshotReplySender) {
        let peers = self.channel_peers();
        let now = Instant::now();
        match self.recorder.initiate(now, self.state(), &peers, &peers) {
            Ok((id, actions)) => {
                self.collecting.insert(
                    id,
                    Collecting {
                        naive: false,
                        started: now,
                        started_unix_ms: unix_now_ms(),
                        deadline: now + self.config.deadline + COLLECT_GRACE,
                        parts: BTreeMap::new(),
                        asked: BTreeSet::new(),
                        gone: BTreeSet::new(),
                        failures: Vec::new(),
                        bytes: 0,
                        reply: Some(reply),
                    },
                );
                self.wire.local(
                    Topic::Snapshot,
                    None,
                    format!(
                        "snapshot {id} started: state recorded, markers to {} peer(s)",
                        peers.len()
                    ),
                );
                self.apply(actions);
            }
            Err(refused) => {
                let _ = reply.send(Err(refused.to_string()));
            }
        }
    }

    fn initiate_naive(&mut self, reply: SnapshotReplySender) {
        self.next_naive += 1;
        let id = SnapshotId {
            initiator: self.me,
            seq: self.next_naive,
        };
        let now = Instant::now();
        let mine = self.current_part(id);
        let mut collecting = Collecting {
            naive: true,
            started: now,
            started_unix_ms: unix_now_ms(),
            deadline: now + self.config.deadline,
            parts: BTreeMap::from([(self.me, mine)]),
            asked: BTreeSet::new(),
            gone: BTreeSet::new(),
            failures: Vec::new(),
            bytes: 0,
            reply: Some(reply),
        };
        for peer in self.channel_peers() {
            let Ok(bytes) = SnapshotRequest::State.encode() else {
                continue;
            };
            collecting.bytes += bytes.len() as u64;
            let request = self.transport.collect.send_request(&peer, bytes);
            self.naive_asked.insert(request, (id, peer));
            collecting.asked.insert(peer);
        }
        self.wire.local(
            Topic::Snapshot,
            None,
            format!(
                "naive snapshot: asking {} peer(s) for their state, no markers",
                collecting.asked.len()
            ),
        );
        self.collecting.insert(naive_key(id), collecting);
        self.finish_if_done(naive_key(id));
    }

    /// The naive answer: state and counts as they are now.
    fn current_part(&self, id: SnapshotId) -> LocalSnapshot<PeerState, InFlight> {
        let (sent, received) = self.recorder.counts();
        let peers = self.channel_peers();
        LocalSnapshot {
            id,
            peer: self.me,
            state: self.state(),
            sent: tabmesh_core::map_from(
                peers
                    .iter()
                    .map(|p| (*p, sent.get(p).copied().unwrap_or(0))),
            ),
            incoming: peers
                .iter()
                .map(|p| tabmesh_core::snapshot::IncomingChannel {
                    from: *p,
                    received: received.get(p).copied().unwrap_or(0),
                    in_flight: Vec::new(),
                    closed_by_marker: true,
                })
                .collect(),
            complete: true,
            missing: Vec::new(),
        }
    }

    fn apply(&mut self, actions: Vec<SnapshotAction<PeerState, InFlight>>) {
        for action in actions {
            match action {
                SnapshotAction::SendMarker { to, id } => {
                    let frame = ChannelFrame::Marker(Marker { id }).encode();
                    self.note(to, true, id.seq, "marker", 0);
                    if let Err(e) = self.transport.channels.send(to, frame) {
                        self.wire
                            .local(Topic::Snapshot, Some(to), format!("marker not sent: {e}"));
                    }
                }
                SnapshotAction::Recorded(part) => self.on_recorded(part),
            }
        }
    }

    /// This peer's part is finished: to the initiator (or kept, if that is us).
    fn on_recorded(&mut self, mut part: LocalSnapshot<PeerState, InFlight>) {
        let recorded = part.state.recorded_unix_ms;
        part.state.timeline = self
            .timeline
            .iter()
            .filter(|e| e.at_unix_ms + TIMELINE_BEFORE_MS >= recorded)
            .cloned()
            .collect();
        let id = part.id;
        let how = if part.complete {
            "complete"
        } else {
            "incomplete"
        };
        if id.initiator == self.me {
            self.take_part(self.me, part);
            return;
        }
        self.wire.sent(
            Topic::Snapshot,
            Some(id.initiator),
            format!("part of snapshot {id} ({how}) to its initiator"),
        );
        let request = SnapshotRequest::Part {
            part: Box::new(PartWire::from_part(&part)),
        };
        match request.encode() {
            Ok(bytes) => self.send_part(PartOut {
                id,
                bytes,
                attempts: 0,
            }),
            Err(e) => self
                .wire
                .local(Topic::Snapshot, None, format!("part of {id} not sent: {e}")),
        }
    }

    fn send_part(&mut self, mut part: PartOut) {
        part.attempts += 1;
        let request = self
            .transport
            .collect
            .send_request(&part.id.initiator, part.bytes.clone());
        self.parts_out.insert(request, part);
    }

    fn take_part(&mut self, from: PeerId, part: LocalSnapshot<PeerState, InFlight>) -> bool {
        let id = part.id;
        let Some(collecting) = self.collecting.get_mut(&id) else {
            return false;
        };
        collecting.parts.insert(from, part);
        self.finish_if_done(id);
        true
    }

    /// Peers whose parts are expected: us, and every peer a part names as a channel.
    fn expected(collecting: &Collecting, me: PeerId) -> BTreeSet<PeerId> {
        let mut expected = BTreeSet::from([me]);
        expected.extend(collecting.asked.iter().copied());
        for part in collecting.parts.values() {
            expected.extend(part.sent.keys().copied());
            expected.extend(part.incoming.iter().map(|c| c.from));
        }
        expected
    }

    fn finish_if_done(&mut self, key: SnapshotId) {
        let Some(collecting) = self.collecting.get(&key) else {
            return;
        };
        let waiting = if collecting.naive {
            // Asked peers that have not answered, while requests are still out.
            collecting
                .asked
                .iter()
                .any(|p| !collecting.parts.contains_key(p))
                && self
                    .naive_asked
                    .values()
                    .any(|(id, _)| naive_key(*id) == key)
        } else {
            !Self::expected(collecting, self.me)
                .iter()
                .all(|p| collecting.parts.contains_key(p) || collecting.gone.contains(p))
        };
        if !waiting {
            self.finish(key);
        }
    }

    fn finish(&mut self, key: SnapshotId) {
        let Some(mut collecting) = self.collecting.remove(&key) else {
            return;
        };
        let expected: Vec<PeerId> = Self::expected(&collecting, self.me).into_iter().collect();
        for peer in &expected {
            if collecting.gone.contains(peer) && !collecting.parts.contains_key(peer) {
                collecting
                    .failures
                    .push(format!("{} left during the snapshot", peer_name(peer)));
            }
        }
        let global = assemble(&expected, &collecting.parts);
        let id = if collecting.naive {
            format!("{}#naive{}", peer_name(&self.me), key.seq & 0xffff_ffff)
        } else {
            key.to_string()
        };
        let mut result = SnapshotResult::from_global(id, collecting.naive, global);
        result.missing.append(&mut collecting.failures);
        result.complete &= result.missing.is_empty();
        result.duration_ms = tabmesh_core::peers::millis(
            Instant::now().saturating_duration_since(collecting.started),
        );
        result.started_unix_ms = collecting.started_unix_ms;
        result.bytes_sent = collecting.bytes;
        if !collecting.naive {
            // Every peer sent a marker on each of its channels, and its part to us.
            result.markers_sent = collecting.parts.values().map(|p| p.sent.len() as u64).sum();
            let marker = 12 + ChannelFrame::Marker(Marker { id: key }).encode().len() as u64;
            let parts_bytes: u64 = collecting
                .parts
                .values()
                .filter(|p| p.peer != self.me)
                .filter_map(|p| {
                    SnapshotRequest::Part {
                        part: Box::new(PartWire::from_part(p)),
                    }
                    .encode()
                    .ok()
                })
                .map(|b| b.len() as u64)
                .sum();
            result.bytes_sent = result.markers_sent * marker + parts_bytes;
        }
        self.wire.local(
            Topic::Snapshot,
            None,
            format!(
                "snapshot {} {}: {} peer(s), {} channel(s), tokens {} ({} counted of {}), channels {}",
                result.id,
                if result.complete { "complete" } else { "incomplete" },
                result.peers.len(),
                result.channels.len(),
                if result.checks.tokens_conserved { "conserved" } else { "NOT conserved" },
                result.tokens.counted,
                result.tokens.total,
                if result.checks.channels_consistent { "consistent" } else { "NOT consistent" },
            ),
        );
        if self.recent.len() >= RECENT_KEPT {
            self.recent.pop_back();
        }
        self.recent.push_front(result.clone());
        if let Some(reply) = collecting.reply.take() {
            let _ = reply.send(Ok(result));
        }
    }

    /// Notes a frame for the diagram.
    fn note(&mut self, peer: PeerId, sent: bool, n: u64, kind: &str, amount: u64) {
        if self.timeline.len() >= TIMELINE_KEPT {
            self.timeline.pop_front();
        }
        self.timeline.push_back(TimelineEvent {
            at_unix_ms: unix_now_ms(),
            sent,
            peer: peer.to_base58(),
            n,
            kind: kind.to_owned(),
            amount,
        });
    }

    /// Puts gossip for `to` on its channel (a message is an application message, counted);
    /// gives it back when `to` has no channel.
    pub fn send_gossip(&mut self, to: PeerId, frame: ChannelFrame) -> Result<(), ChannelFrame> {
        if !self.speaks.contains(&to) || !self.connected.contains(&to) || Some(to) == self.relay {
            return Err(frame);
        }
        let application = frame.is_application();
        match self.transport.channels.send(to, frame.encode()) {
            Ok(()) if application => {
                self.recorder.on_sent(to);
                let n = self.number(to, true);
                self.note(to, true, n, "gimps", 0);
            }
            Ok(()) => {}
            Err(e) => tracing::debug!(%to, %e, "gossip not queued"),
        }
        Ok(())
    }

    /// The number of the next application frame sent to (or received from) `peer`.
    fn number(&mut self, peer: PeerId, sent: bool) -> u64 {
        let entry = self.numbered.entry(peer).or_default();
        let n = if sent { &mut entry.0 } else { &mut entry.1 };
        *n += 1;
        *n
    }

    fn send_tokens(&mut self, now: Instant) {
        // Checked first: this runs on every poll, and listing the peers costs one pass over them.
        if self.tokens.poll_timeout().is_none_or(|due| due > now) {
            return;
        }
        let peers = self.channel_peers();
        while let Some((to, amount)) = self.tokens.on_tick(now, &peers) {
            match self
                .transport
                .channels
                .send(to, ChannelFrame::Tokens(amount).encode())
            {
                Ok(()) => {
                    self.recorder.on_sent(to);
                    let n = self.number(to, true);
                    self.note(to, true, n, "tokens", amount);
                }
                Err(e) => {
                    self.tokens.refund(to, amount);
                    tracing::debug!(%to, %e, "transfer not queued");
                }
            }
        }
    }

    fn refuse(&mut self, peer: PeerId, reason: String) {
        self.refused += 1;
        self.wire
            .local(Topic::Snapshot, Some(peer), format!("refused: {reason}"));
        self.events.push_back(Report::Misbehaved {
            peer,
            topic: Topic::Snapshot,
            reason,
        });
    }

    fn on_channel(&mut self, event: ChannelEvent) {
        let now = Instant::now();
        match event {
            ChannelEvent::Frame { from, frame } => {
                self.speaks.insert(from);
                match ChannelFrame::decode(&frame) {
                    Ok(ChannelFrame::Marker(marker)) => {
                        self.note(from, false, marker.id.seq, "marker", 0);
                        let peers = self.channel_peers();
                        let state = self.state();
                        match self.recorder.on_marker(
                            now,
                            from,
                            marker.id,
                            || state,
                            &peers,
                            &peers,
                        ) {
                            Ok(actions) => {
                                if actions
                                    .iter()
                                    .any(|a| matches!(a, SnapshotAction::SendMarker { .. }))
                                {
                                    self.wire.received(
                                        Topic::Snapshot,
                                        Some(from),
                                        format!("first marker of {}: state recorded", marker.id),
                                    );
                                }
                                self.apply(actions);
                            }
                            Err(refused) => {
                                self.wire.local(
                                    Topic::Snapshot,
                                    Some(from),
                                    format!("marker refused: {refused}"),
                                );
                                self.refused += 1;
                            }
                        }
                    }
                    Ok(ChannelFrame::Tokens(amount)) => {
                        self.tokens.on_received(from, amount);
                        let n = self.number(from, false);
                        self.note(from, false, n, "tokens", amount);
                        let actions = self
                            .recorder
                            .on_received(from, &InFlight::Tokens { amount });
                        self.apply(actions);
                    }
                    Ok(frame @ ChannelFrame::Gimps { .. }) => {
                        let n = self.number(from, false);
                        self.note(from, false, n, "gimps", 0);
                        // Described only when a snapshot records it (decoding costs).
                        let message = if self.recorder.is_recording(&from) {
                            InFlight::Gimps {
                                summary: gossip_summary(&frame),
                            }
                        } else {
                            InFlight::Gimps {
                                summary: String::new(),
                            }
                        };
                        let actions = self.recorder.on_received(from, &message);
                        self.apply(actions);
                        self.events.push_back(Report::GossipArrived { from, frame });
                    }
                    Ok(frame @ ChannelFrame::GimpsAck(_)) => {
                        self.events.push_back(Report::GossipArrived { from, frame });
                    }
                    Err(e) => self.refuse(from, format!("channel frame: {e}")),
                }
            }
            ChannelEvent::Broke { from, why } => {
                let actions = self
                    .recorder
                    .on_channel_broken(from, &format!("channel lost its order ({why})"));
                self.apply(actions);
            }
            ChannelEvent::Closed(peer) => {
                self.numbered.remove(&peer);
                let actions = self.recorder.on_channel_closed(peer);
                self.apply(actions);
            }
        }
    }

    fn on_collect(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let reply = match SnapshotRequest::decode(&request) {
                    Ok(SnapshotRequest::State) => {
                        self.wire.received(
                            Topic::Snapshot,
                            Some(peer),
                            "naive snapshot: asked for our state",
                        );
                        let part = self.current_part(SnapshotId {
                            initiator: peer,
                            seq: 1,
                        });
                        SnapshotReply::State {
                            part: Box::new(PartWire::from_part(&part)),
                        }
                    }
                    Ok(SnapshotRequest::Part { part }) => match part.into_part(peer) {
                        Ok(part) => {
                            let id = part.id;
                            self.wire.received(
                                Topic::Snapshot,
                                Some(peer),
                                format!("part of snapshot {id}"),
                            );
                            if self.take_part(peer, part) {
                                SnapshotReply::Taken
                            } else {
                                SnapshotReply::Refused {
                                    reason: format!("no snapshot {id} is being collected here"),
                                }
                            }
                        }
                        Err(e) => {
                            self.refuse(peer, format!("snapshot part: {e}"));
                            SnapshotReply::Refused { reason: e }
                        }
                    },
                    Err(e) => {
                        self.refuse(peer, format!("snapshot request: {e}"));
                        SnapshotReply::Refused { reason: e }
                    }
                };
                if let Ok(bytes) = reply.encode() {
                    let _ = self.transport.collect.send_response(channel, bytes);
                }
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
                let Some((id, asked)) = self.naive_asked.remove(&request_id) else {
                    // The initiator's answer to a part.
                    self.parts_out.remove(&request_id);
                    if let Ok(SnapshotReply::Refused { reason }) = SnapshotReply::decode(&response)
                    {
                        self.wire.local(
                            Topic::Snapshot,
                            Some(peer),
                            format!("part refused: {reason}"),
                        );
                    }
                    return;
                };
                let answer = SnapshotReply::decode(&response).and_then(|reply| match reply {
                    SnapshotReply::State { part } => part.into_part(asked),
                    other => Err(format!("answered {other:?} to a state request")),
                });
                match answer {
                    Ok(mut part) => {
                        part.id = id;
                        if let Some(c) = self.collecting.get_mut(&naive_key(id)) {
                            c.bytes += response.len() as u64;
                            c.parts.insert(asked, part);
                        }
                    }
                    Err(e) => {
                        self.refuse(asked, format!("naive state: {e}"));
                        if let Some(c) = self.collecting.get_mut(&naive_key(id)) {
                            c.failures.push(format!("{}: {e}", peer_name(&asked)));
                        }
                    }
                }
                self.finish_if_done(naive_key(id));
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some((id, asked)) = self.naive_asked.remove(&request_id) {
                    if let Some(c) = self.collecting.get_mut(&naive_key(id)) {
                        c.failures
                            .push(format!("{} did not answer ({error})", peer_name(&asked)));
                    }
                    self.finish_if_done(naive_key(id));
                } else if let Some(part) = self.parts_out.remove(&request_id) {
                    let again = send_part_again(part.attempts, self.connected.contains(&peer));
                    let id = part.id;
                    self.wire.local(
                        Topic::Snapshot,
                        Some(peer),
                        if again {
                            format!(
                                "part of snapshot {id} not delivered ({error}): sending it again"
                            )
                        } else {
                            format!("part of snapshot {id} not delivered to the initiator: {error}")
                        },
                    );
                    if again {
                        self.send_part(part);
                    }
                }
            }
            request_response::Event::InboundFailure { .. }
            | request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// `peer` left: the snapshots collected here stop waiting for its part.
    fn on_left(&mut self, peer: PeerId) {
        let keys: Vec<SnapshotId> = self.collecting.keys().copied().collect();
        for key in keys {
            if let Some(c) = self.collecting.get_mut(&key)
                && !c.parts.contains_key(&peer)
            {
                c.gone.insert(peer);
            }
            self.finish_if_done(key);
        }
    }

    fn on_tick(&mut self, now: Instant) {
        let actions = self.recorder.on_tick(now);
        self.apply(actions);
        let late: Vec<SnapshotId> = self
            .collecting
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for key in late {
            if let Some(c) = self.collecting.get_mut(&key) {
                let waited = c.deadline.saturating_duration_since(c.started);
                c.failures.push(format!(
                    "the initiator stopped waiting after {} ms",
                    waited.as_millis()
                ));
                c.asked.retain(|p| c.parts.contains_key(p));
            }
            self.naive_asked.retain(|_, (id, _)| naive_key(*id) != key);
            self.finish(key);
        }
        self.send_tokens(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [
            self.recorder.poll_timeout(),
            self.tokens.poll_timeout(),
            self.collecting.values().map(|c| c.deadline).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// A gossip frame in a few words: `PRIME 2^127-1 (ttl 2)`, `PING`.
fn gossip_summary(frame: &ChannelFrame) -> String {
    let ChannelFrame::Gimps { bytes, .. } = frame else {
        return String::new();
    };
    match tabmesh_core::gimps::message::GossipMessage::decode(bytes) {
        Ok(m) => match m.exponent {
            Some(p) => format!("{} 2^{p}-1 (ttl {})", m.msg_type.as_str(), m.ttl),
            None => m.msg_type.as_str().to_owned(),
        },
        Err(_) => "gossip (malformed)".to_owned(),
    }
}

/// Naive snapshots are collected under a key apart from real ones (their numbers are ours).
fn naive_key(id: SnapshotId) -> SnapshotId {
    SnapshotId {
        initiator: id.initiator,
        seq: id.seq | (1 << 63),
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = <Transport as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = Report;

    crate::forward::forward_to!(transport: pending_inbound, established_inbound, pending_outbound, established_outbound, handler_event);

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match &event {
            FromSwarm::ConnectionEstablished(e) if Some(e.peer_id) != self.relay => {
                self.connected.insert(e.peer_id);
            }
            FromSwarm::ConnectionClosed(e) if e.remaining_established == 0 => {
                self.connected.remove(&e.peer_id);
                self.speaks.remove(&e.peer_id);
                self.on_left(e.peer_id);
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
                    match event {
                        TransportEvent::Channels(channels::Output::Channel(event)) => {
                            self.on_channel(event)
                        }
                        TransportEvent::Channels(channels::Output::Report(report)) => {
                            self.events.push_back(report)
                        }
                        TransportEvent::Collect(event) => self.on_collect(event),
                    }
                    continue;
                }
                Poll::Ready(other) => {
                    return Poll::Ready(other.map_out(|_| unreachable!("handled above")));
                }
                Poll::Pending => {}
            }
            self.on_tick(Instant::now());
            if !self.events.is_empty() {
                continue;
            }
            if self.timer.poll_at(self.poll_timeout(), cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}
