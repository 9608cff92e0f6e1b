//! The node's event loop: the libp2p adapter around the `tabmesh-core` state machines.
//!
//! Every swarm event is handled in three steps: read the clock once, update the core state
//! (peer table, relay link, discovery schedule, wire log), and apply what it decided to the
//! swarm. Timers are the core types' `poll_timeout`s; the loop sleeps until the earliest one.

use futures::channel::mpsc;
use futures::future::{Fuse, FusedFuture, LocalBoxFuture};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad, ping, relay, request_response};
use std::collections::{HashMap, VecDeque};
use tabmesh_core::bootstrap::{BootstrapInfo, is_dialable, with_peer_id};
use tabmesh_core::direct_upgrade::{DirectUpgrades, UpgradeAction};
use tabmesh_core::discovery::DiscoverySchedule;
use tabmesh_core::gimps::message::MsgType;
use tabmesh_core::gimps::node::{GossipAction, GossipNode};
use tabmesh_core::names::{peer_name, short_id};
use tabmesh_core::peers::{Admission, ConnectionKind, PeerTable, Verdict, millis};
use tabmesh_core::protocol;
use tabmesh_core::relay_link::{RelayCommand, RelayLink};
use tabmesh_core::view::{Counters, GimpsSection, NodeView, RelayView};
use tabmesh_core::wire_log::{Direction, WireLog};
use web_time::{Duration, Instant};

use crate::behaviour::{NodeBehaviour, NodeBehaviourEvent};
use crate::dht::Dht;
use crate::{BootstrapSource, Command, NodeConfig, NodeError, NodeEvent, NodeHandle, platform};

/// Capacity of the event channel to the UI or terminal: a few seconds of views and wire events.
const EVENT_CHANNEL_CAPACITY: usize = 256;
/// Commands are rare (user actions); a small buffer is plenty.
const COMMAND_CHANNEL_CAPACITY: usize = 16;
/// Most addresses tried per discovered peer.
const MAX_DIAL_ADDRS: usize = 8;
/// Window over which the Lucas-Lehmer test rate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// How long a relayed connection stays after a direct one to the same peer is up (requests
/// already on it finish), before it is closed: the relay is only for meeting.
const RELAYED_GRACE: Duration = Duration::from_secs(3);
/// `/webrtc` addresses kept per peer at most.
const MAX_WEBRTC_ADDRS: usize = 4;

type SearchFuture = Fuse<LocalBoxFuture<'static, (u32, bool)>>;

/// The relay we are attached to (known once the bootstrap document has been read).
#[derive(Debug, Clone)]
struct RelayTarget {
    peer_id: PeerId,
    addr: Multiaddr,
}

/// A tabmesh peer. Create it with [`Node::new`] and drive it with [`Node::run`].
pub struct Node {
    swarm: Swarm<NodeBehaviour>,
    config: NodeConfig,
    origin: Instant,
    peers: PeerTable<ConnectionId>,
    relay_link: RelayLink,
    discovery: DiscoverySchedule,
    wire: WireLog,
    counters: Counters,
    relay: Option<RelayTarget>,
    relay_listener: Option<ListenerId>,
    relay_rtt: Option<Duration>,
    reservation_at: Option<Instant>,
    gossip: GossipNode,
    dht: Dht,
    direct: platform::DirectTransport,
    webrtc_listener: Option<ListenerId>,
    upgrades: DirectUpgrades,
    /// Peers' `/webrtc` dial addresses, from identify.
    webrtc_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// Our dials for a direct connection, by connection id.
    upgrade_dials: HashMap<ConnectionId, PeerId>,
    /// Direct connections per peer, with who dialed each.
    direct_links: HashMap<PeerId, Vec<(ConnectionId, PeerId)>>,
    /// Relayed connections to close once their grace time is over, by peer.
    relayed_closing: VecDeque<(Instant, PeerId)>,
    /// Streams of the perf protocol, ours and the peers'.
    streams: libp2p_stream::Control,
    perf_incoming: futures::stream::Fuse<libp2p_stream::IncomingStreams>,
    /// Perf runs and perf streams being served (each ends by itself).
    tasks: FuturesUnordered<LocalBoxFuture<'static, ()>>,
    serving: std::rc::Rc<()>,
    tests_done: VecDeque<Instant>,
    tested_total: u64,
    learned_at_unix_ms: Option<u64>,
    events: mpsc::Sender<NodeEvent>,
    commands: mpsc::Receiver<Command>,
}

impl Node {
    /// Builds the node (its swarm and listeners); nothing happens until [`run`](Self::run).
    pub fn new(config: NodeConfig) -> Result<(Self, NodeHandle), NodeError> {
        let now = Instant::now();
        let origin = now.checked_sub(config.clock_origin_offset).unwrap_or(now);
        let (mut swarm, direct) = platform::build_swarm(
            config.keypair.clone(),
            config.agent.clone(),
            config.ping_interval,
            &config.dht,
        )?;
        let restored = swarm.behaviour_mut().kad.store_mut().restored();
        let mut streams = swarm.behaviour().stream.new_control();
        let perf_incoming = streams
            .accept(crate::perf::PROTOCOL)
            .map_err(|e| NodeError::Transport(e.to_string()))?;
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Listen(addr.clone(), e.to_string()))?;
        }
        let (events_tx, events_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_CHANNEL_CAPACITY);
        let node = Self {
            swarm,
            origin,
            peers: PeerTable::new(config.peer_table.clone()),
            relay_link: RelayLink::new(config.relay_link.clone(), config.seed),
            discovery: DiscoverySchedule::new(config.discovery.clone()),
            wire: WireLog::new(origin, config.wire_log_capacity),
            counters: Counters::default(),
            relay: None,
            relay_listener: None,
            relay_rtt: None,
            reservation_at: None,
            gossip: GossipNode::new(config.keypair.clone(), config.gossip.clone(), origin, now),
            dht: Dht::new(config.dht.clone(), config.keypair.clone(), restored, now),
            direct,
            webrtc_listener: None,
            upgrades: DirectUpgrades::new(
                config.keypair.public().to_peer_id(),
                config.upgrade.clone(),
            ),
            webrtc_addrs: HashMap::new(),
            upgrade_dials: HashMap::new(),
            relayed_closing: VecDeque::new(),
            direct_links: HashMap::new(),
            streams,
            perf_incoming: perf_incoming.fuse(),
            tasks: FuturesUnordered::new(),
            serving: std::rc::Rc::new(()),
            tests_done: VecDeque::new(),
            tested_total: 0,
            learned_at_unix_ms: None,
            events: events_tx,
            commands: commands_rx,
            config,
        };
        Ok((
            node,
            NodeHandle {
                events: events_rx,
                commands: commands_tx,
            },
        ))
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// Runs the node until a [`Command::Shutdown`] arrives or the handle is dropped.
    pub async fn run(mut self) {
        let mut bootstrap: Fuse<LocalBoxFuture<'static, Result<BootstrapInfo, String>>> =
            Fuse::terminated();
        let mut search: SearchFuture = Fuse::terminated();
        let mut next_view = Instant::now();
        loop {
            let now = Instant::now();
            if let Some(RelayCommand::Connect) = self.relay_link.poll(now) {
                bootstrap = platform::fetch_bootstrap(&self.config.bootstrap).fuse();
            }
            if self.discovery.poll(now) {
                self.discover(now);
            }
            let actions = self.gossip.on_tick(now);
            self.apply_gossip(now, actions);
            self.dht.on_tick(&mut self.swarm.behaviour_mut().kad, now);
            self.drain_dht_logs(now);
            self.upgrade_due(now);
            if search.is_terminated()
                && let Some(p) = self.gossip.next_candidate()
            {
                search = platform::lucas_lehmer(p)
                    .map(move |prime| (p, prime))
                    .boxed_local()
                    .fuse();
            }
            if now >= next_view {
                self.publish_view(now);
                next_view = now + self.config.view_interval;
            }
            let wake = [
                self.relay_link.poll_timeout(),
                self.discovery.poll_timeout(),
                self.gossip.poll_timeout(),
                Some(self.dht.poll_timeout()),
                self.upgrades.poll_timeout(),
                self.relayed_closing.front().map(|(at, _)| *at),
            ]
            .into_iter()
            .flatten()
            .fold(next_view, Instant::min);
            let mut sleep = futures_timer::Delay::new(wake.saturating_duration_since(now)).fuse();

            futures::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(Instant::now(), event),
                result = bootstrap => self.on_bootstrap(Instant::now(), result),
                (p, prime) = search => self.on_tested(Instant::now(), p, prime),
                (peer, stream) = self.perf_incoming.select_next_some() => self.serve_perf(peer, stream),
                () = self.tasks.select_next_some() => {}
                command = self.commands.next() => match command {
                    Some(Command::Shutdown) | None => break,
                    Some(command) => self.on_command(Instant::now(), command),
                },
                () = sleep => {}
            }
        }
        self.shutdown();
    }

    fn on_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Sleep => {
                self.gossip.sleep();
                self.log(
                    now,
                    Direction::Local,
                    "gimps",
                    None,
                    "asleep: not answering or sending",
                );
            }
            Command::Wake => {
                self.gossip.wake(now);
                self.rejoin_connected_peers(now);
                self.log(now, Direction::Local, "gimps", None, "awake");
            }
            Command::Reset => {
                self.gossip.reset(now);
                self.learned_at_unix_ms = None;
                self.rejoin_connected_peers(now);
                self.log(now, Direction::Local, "gimps", None, "state reset");
            }
            Command::Cooperative(on) => {
                self.gossip.set_cooperative(on);
                let mode = if on {
                    "cooperative"
                } else {
                    "racing (seed behaviour)"
                };
                self.log(
                    now,
                    Direction::Local,
                    "gimps",
                    None,
                    format!("search mode: {mode}"),
                );
            }
            Command::Dht(request, reply) => {
                self.dht
                    .start(&mut self.swarm.behaviour_mut().kad, now, request, reply);
                self.drain_dht_logs(now);
            }
            Command::Perf {
                peer,
                upload,
                download,
                reply,
            } => self.run_perf(peer, upload, download, reply),
            Command::Shutdown => {}
        }
    }

    /// Times a perf run to `peer` on the connection we have to it.
    fn run_perf(
        &mut self,
        peer: PeerId,
        upload: u64,
        download: u64,
        reply: futures::channel::oneshot::Sender<Result<crate::perf::PerfReport, String>>,
    ) {
        if !self.peers.contains(&peer) {
            let _ = reply.send(Err(format!("not connected to {}", peer_name(&peer))));
            return;
        }
        let connection = if self.peers.is_direct(&peer) {
            "direct"
        } else {
            "relayed"
        };
        let mut control = self.streams.clone();
        self.tasks.push(
            async move {
                let run = async {
                    let stream = control
                        .open_stream(peer, crate::perf::PROTOCOL)
                        .await
                        .map_err(|e| e.to_string())?;
                    crate::perf::run(stream, upload, download)
                        .await
                        .map_err(|e| format!("perf run failed: {e}"))
                };
                let timeout = futures_timer::Delay::new(Duration::from_secs(120));
                let result = futures::select! {
                    result = run.fuse() => result,
                    () = timeout.fuse() => Err("perf run timed out after 120 s".to_owned()),
                };
                let _ =
                    reply.send(
                        result.map(|(upload_ms, download_ms)| crate::perf::PerfReport {
                            peer_id: peer.to_base58(),
                            connection: connection.to_owned(),
                            upload_bytes: upload,
                            upload_ms,
                            download_bytes: download,
                            download_ms,
                        }),
                    );
            }
            .boxed_local(),
        );
    }

    /// Serves a peer's perf stream, unless too many are being served already.
    fn serve_perf(&mut self, peer: PeerId, stream: libp2p::Stream) {
        // Each served stream holds a clone of `serving`.
        if std::rc::Rc::strong_count(&self.serving) > crate::perf::MAX_SERVING {
            self.counters.violations += 1;
            tracing::warn!(%peer, "perf stream refused: {} being served", crate::perf::MAX_SERVING);
            return;
        }
        let slot = self.serving.clone();
        self.tasks.push(
            async move {
                let _slot = slot;
                if let Err(e) = crate::perf::serve(stream).await {
                    tracing::info!(%peer, %e, "perf stream ended with an error");
                }
            }
            .boxed_local(),
        );
    }

    fn drain_dht_logs(&mut self, now: Instant) {
        for line in self.dht.take_logs() {
            let direction = if line.sent {
                Direction::Sent
            } else if line.peer.is_some() {
                Direction::Received
            } else {
                Direction::Local
            };
            let peer = line.peer.filter(|p| Some(*p) != self.relay_peer());
            self.log(now, direction, "dht", peer, line.summary);
        }
    }

    /// Connected peers belong in the gossip peer list (the exercise's bootstrap list).
    fn rejoin_connected_peers(&mut self, now: Instant) {
        let peers: Vec<PeerId> = self.peers.peer_ids().copied().collect();
        for peer in peers {
            let actions = self.gossip.on_peer_connected(now, peer);
            self.apply_gossip(now, actions);
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
        let actions = self.gossip.on_tested(now, exponent, prime);
        self.apply_gossip(now, actions);
    }

    fn apply_gossip(&mut self, now: Instant, actions: Vec<GossipAction>) {
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
                        self.log(now, Direction::Sent, "gimps", Some(to), summary);
                    }
                    self.swarm
                        .behaviour_mut()
                        .gimps
                        .send_request(&to, message.encode());
                }
                GossipAction::Evicted(peer) => {
                    self.log(
                        now,
                        Direction::Local,
                        "gimps",
                        Some(peer),
                        "evicted: silent too long",
                    );
                }
                GossipAction::NewBiggest {
                    exponent,
                    originator,
                } => {
                    self.learned_at_unix_ms = Some(crate::dht::unix_now_ms());
                    let who = if originator == self.peer_id() {
                        "us".to_owned()
                    } else {
                        peer_name(&originator)
                    };
                    self.log(
                        now,
                        Direction::Local,
                        "gimps",
                        None,
                        format!("largest prime now 2^{exponent}-1, found by {who}"),
                    );
                }
                GossipAction::Rejected {
                    from,
                    reason,
                    disconnect,
                } => {
                    self.counters.violations += 1;
                    tracing::warn!(peer = %from, %reason, "gossip message rejected");
                    self.log(
                        now,
                        Direction::Local,
                        "gimps",
                        Some(from),
                        format!("rejected: {}", truncate(&reason, 160)),
                    );
                    if disconnect && Some(from) != self.relay_peer() {
                        self.counters.disconnects += 1;
                        let _ = self.swarm.disconnect_peer_id(from);
                        self.log(
                            now,
                            Direction::Local,
                            "conn",
                            Some(from),
                            "disconnecting: too many gossip violations",
                        );
                    }
                }
            }
        }
    }

    fn on_gimps_event(&mut self, now: Instant, event: request_response::Event<Vec<u8>, ()>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.peers.on_heard(now, &peer);
                let _ = self.swarm.behaviour_mut().gimps.send_response(channel, ());
                let actions = self.gossip.on_message(now, peer, &request);
                self.apply_gossip(now, actions);
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

    fn shutdown(&mut self) {
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        self.log(Instant::now(), Direction::Local, "node", None, "shut down");
    }

    fn on_bootstrap(&mut self, now: Instant, result: Result<BootstrapInfo, String>) {
        if let Ok(doc) = &result {
            self.direct.set_ice_servers(&doc.ice_servers);
        }
        let target = result.and_then(|doc| {
            let peer_id = doc.relay_peer_id().map_err(|e| e.to_string())?;
            let addr = doc
                .dial_addrs(platform::relay_transport())
                .map_err(|e| e.to_string())?
                .remove(0);
            Ok(RelayTarget { peer_id, addr })
        });
        let target = match target {
            Ok(t) => t,
            Err(error) => {
                self.log(
                    now,
                    Direction::Local,
                    "relay",
                    None,
                    format!("bootstrap failed: {error}"),
                );
                self.relay_link.on_failure(now, error);
                return;
            }
        };
        if let Some(listener) = self.relay_listener.take() {
            self.swarm.remove_listener(listener);
        }
        let dial_addr = without_p2p(&target.addr);
        self.swarm
            .behaviour_mut()
            .kad
            .add_address(&target.peer_id, dial_addr);
        match self
            .swarm
            .listen_on(target.addr.clone().with(Protocol::P2pCircuit))
        {
            Ok(id) => {
                self.log(
                    now,
                    Direction::Sent,
                    "relay",
                    None,
                    format!("reservation request to {}", target.addr),
                );
                self.relay_listener = Some(id);
            }
            Err(e) => self.relay_link.on_failure(now, e.to_string()),
        }
        self.relay = Some(target);
    }

    fn relay_peer(&self) -> Option<PeerId> {
        self.relay.as_ref().map(|r| r.peer_id)
    }

    fn on_swarm_event(&mut self, now: Instant, event: SwarmEvent<NodeBehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(now, event),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => self.on_connection_established(now, peer_id, connection_id, &endpoint),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                endpoint,
                ..
            } => {
                let was_webrtc = tabmesh_webrtc::addr::is_webrtc(endpoint.get_remote_address());
                if was_webrtc && let Some(list) = self.direct_links.get_mut(&peer_id) {
                    list.retain(|(c, _)| *c != connection_id);
                    if list.is_empty() {
                        self.direct_links.remove(&peer_id);
                    }
                }
                let cause = cause.map_or_else(|| "closed".to_owned(), |c| c.to_string());
                if Some(peer_id) == self.relay_peer() {
                    if num_established == 0 {
                        self.log(
                            now,
                            Direction::Local,
                            "conn",
                            None,
                            format!("relay connection lost: {cause}"),
                        );
                        self.on_relay_lost(now, format!("relay connection lost: {cause}"));
                    }
                } else if self.peers.on_connection_closed(&peer_id, connection_id) {
                    self.upgrades.on_disconnected(&peer_id);
                    self.gossip.on_peer_disconnected(&peer_id);
                    self.log(
                        now,
                        Direction::Local,
                        "conn",
                        Some(peer_id),
                        format!("disconnected: {cause}"),
                    );
                } else if was_webrtc && !self.peers.is_direct(&peer_id) {
                    // Still reached through the relay: try to go direct again.
                    self.upgrades.on_direct_closed(now, peer_id);
                    self.log(
                        now,
                        Direction::Local,
                        "webrtc",
                        Some(peer_id),
                        format!("direct connection lost ({cause}); relayed again"),
                    );
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } if Some(listener_id) == self.relay_listener => {
                self.relay_listener = None;
                let reason = match reason {
                    Ok(()) => "reservation listener closed".to_owned(),
                    Err(e) => format!("reservation failed: {}", error_chain(&e)),
                };
                self.log(now, Direction::Local, "relay", None, reason.clone());
                self.on_relay_lost(now, reason);
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                if is_circuit(&address) {
                    // Our relayed address is how every other peer reaches us: announce it.
                    self.swarm.add_external_address(address.clone());
                }
                self.log(
                    now,
                    Direction::Local,
                    "listen",
                    None,
                    format!("listening on {address}"),
                );
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.swarm.remove_external_address(&address);
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id,
                error,
                connection_id,
            } => {
                self.counters.dial_failures += 1;
                let text = error_chain(&error);
                tracing::debug!(?peer_id, %text, "dial failed");
                if let Some(peer) = self.upgrade_dials.remove(&connection_id) {
                    self.upgrades
                        .on_attempt_failed(now, peer, truncate(&text, 300));
                    tracing::info!(%peer, %text, "direct WebRTC connection failed");
                    let reason = format!(
                        "direct connection failed, staying relayed: {}",
                        truncate(&text, 160)
                    );
                    self.log(now, Direction::Local, "webrtc", Some(peer), reason);
                } else if peer_id.is_some() && peer_id == self.relay_peer() {
                    if !self.relay_link.is_reserved() {
                        // The reservation listener may not report a failed dial; do not wait.
                        let reason = format!("cannot reach the relay: {}", truncate(&text, 200));
                        self.log(now, Direction::Local, "conn", None, reason.clone());
                        self.on_relay_lost(now, reason);
                    }
                } else if peer_id.is_some() {
                    let reason = format!("dial failed: {}", truncate(&text, 160));
                    self.log(now, Direction::Local, "conn", peer_id, reason);
                }
            }
            SwarmEvent::IncomingConnection { send_back_addr, .. }
                if tabmesh_webrtc::addr::is_webrtc(&send_back_addr) =>
            {
                if let Some(Protocol::P2p(peer)) = send_back_addr.iter().last() {
                    self.upgrades.on_remote_attempt(now, peer);
                }
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                self.counters.incoming_errors += 1;
                let text = format!(
                    "incoming connection from {send_back_addr} failed: {}",
                    error_chain(&error)
                );
                tracing::info!("{text}");
                self.log(now, Direction::Local, "conn", None, truncate(&text, 200));
            }
            _ => {}
        }
    }

    fn on_connection_established(
        &mut self,
        now: Instant,
        peer: PeerId,
        id: ConnectionId,
        endpoint: &ConnectedPoint,
    ) {
        if Some(peer) == self.relay_peer() {
            self.relay_link.on_connected();
            self.log(
                now,
                Direction::Local,
                "conn",
                None,
                "connected to the relay",
            );
            return;
        }
        let webrtc = tabmesh_webrtc::addr::is_webrtc(endpoint.get_remote_address());
        // A `/webrtc` address names the relay it was signaled through, but is direct.
        let kind = if endpoint.is_relayed() && !webrtc {
            ConnectionKind::Relayed
        } else {
            ConnectionKind::Direct
        };
        self.upgrade_dials.remove(&id);
        match self.peers.on_connection_established(now, peer, id, kind) {
            Admission::Accepted => {
                let actions = self.gossip.on_peer_connected(now, peer);
                self.apply_gossip(now, actions);
                let how = match kind {
                    ConnectionKind::Relayed => "relayed",
                    ConnectionKind::Direct => "direct",
                };
                let dir = if endpoint.is_dialer() {
                    "dialed"
                } else {
                    "accepted"
                };
                self.log(
                    now,
                    Direction::Local,
                    "conn",
                    Some(peer),
                    format!("{dir} {how} connection"),
                );
                if webrtc {
                    self.on_direct(now, peer, id, endpoint.is_dialer());
                } else if kind == ConnectionKind::Relayed && self.peers.is_direct(&peer) {
                    // A late relayed connection (the peer's discovery dial): it goes too.
                    self.relayed_closing.push_back((now + RELAYED_GRACE, peer));
                } else if kind == ConnectionKind::Relayed {
                    self.maybe_upgrade(now, peer);
                }
            }
            Admission::Refused => {
                self.counters.refused_connections = self.peers.refused();
                self.swarm.close_connection(id);
                self.log(
                    now,
                    Direction::Local,
                    "conn",
                    Some(peer),
                    "refused: peer table full",
                );
            }
        }
    }

    fn on_relay_lost(&mut self, now: Instant, reason: String) {
        self.relay_link.on_failure(now, reason);
        self.discovery.stop();
        if let Some(listener) = self.relay_listener.take() {
            self.swarm.remove_listener(listener);
        }
        if let Some(listener) = self.webrtc_listener.take() {
            self.swarm.remove_listener(listener);
        }
        if let Some(relay) = self.relay_peer() {
            let _ = self.swarm.disconnect_peer_id(relay);
        }
        self.relay_rtt = None;
    }

    fn on_behaviour_event(&mut self, now: Instant, event: NodeBehaviourEvent) {
        match event {
            NodeBehaviourEvent::Relay(event) => self.on_relay_event(now, event),
            NodeBehaviourEvent::Kad(event) => self.on_kad_event(now, event),
            NodeBehaviourEvent::Identify(event) => self.on_identify_event(now, event),
            NodeBehaviourEvent::Ping(event) => self.on_ping_event(now, event),
            NodeBehaviourEvent::Gimps(event) => self.on_gimps_event(now, event),
            NodeBehaviourEvent::Webrtc(_) | NodeBehaviourEvent::Stream(()) => {}
        }
    }

    fn on_relay_event(&mut self, now: Instant, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted { renewal, limit, .. } => {
                self.relay_link.on_reservation_accepted(now);
                if !renewal {
                    self.reservation_at.get_or_insert(now);
                    self.discovery.start(now);
                    self.listen_webrtc(now);
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
                self.log(
                    now,
                    Direction::Received,
                    "relay",
                    None,
                    format!("{what}{limit}"),
                );
            }
            relay::client::Event::OutboundCircuitEstablished { .. } => {
                self.log(
                    now,
                    Direction::Sent,
                    "relay",
                    None,
                    "circuit opened (outbound)",
                );
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                self.log(
                    now,
                    Direction::Received,
                    "relay",
                    Some(src_peer_id),
                    "circuit opened (inbound)",
                );
            }
        }
    }

    fn on_kad_event(&mut self, now: Instant, event: kad::Event) {
        let event = self
            .dht
            .on_kad_event(&mut self.swarm.behaviour_mut().kad, now, event);
        self.drain_dht_logs(now);
        let Some(event) = event else {
            return;
        };
        match event {
            kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::GetClosestPeers(result),
                step,
                ..
            } => {
                let peers = match result {
                    Ok(ok) => ok.peers,
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                };
                if step.last {
                    let others = peers
                        .iter()
                        .filter(|p| Some(p.peer_id) != self.relay_peer())
                        .count();
                    self.log(
                        now,
                        Direction::Received,
                        "kad",
                        None,
                        format!("lookup done: {others} peer(s) near us"),
                    );
                }
                for info in peers {
                    self.dial_discovered(info.peer_id, info.addrs);
                }
            }
            kad::Event::RoutingUpdated {
                peer, addresses, ..
            } => {
                self.dial_discovered(peer, addresses.into_vec());
            }
            _ => {}
        }
    }

    fn dial_discovered(&mut self, peer: PeerId, mut addrs: Vec<Multiaddr>) {
        if peer == self.peer_id()
            || Some(peer) == self.relay_peer()
            || self.peers.contains(&peer)
            || addrs.is_empty()
        {
            return;
        }
        // Meet through the relay first; whether and who goes direct is the upgrade rules' call.
        addrs.retain(|a| !tabmesh_webrtc::addr::is_webrtc(a));
        if addrs.is_empty() {
            return;
        }
        addrs.truncate(MAX_DIAL_ADDRS);
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%peer, %e, "not dialing");
        }
    }

    fn discover(&mut self, now: Instant) {
        let me = self.peer_id();
        self.swarm.behaviour_mut().kad.get_closest_peers(me);
        self.log(
            now,
            Direction::Sent,
            "kad",
            None,
            "lookup: FIND_NODE for our own id",
        );
    }

    fn on_identify_event(&mut self, now: Instant, event: identify::Event) {
        match event {
            identify::Event::Received { peer_id, info, .. } => {
                self.peers.on_identified(now, &peer_id, &info.agent_version);
                self.learn_webrtc_addrs(now, peer_id, &info.listen_addrs);
                let speaks_kad = info
                    .protocols
                    .iter()
                    .any(|p| p.as_ref() == protocol::KADEMLIA);
                if speaks_kad && Some(peer_id) != self.relay_peer() {
                    // `/webrtc` addresses are for the upgrade rules, not for discovery dials.
                    let plain = |a: &Multiaddr| !tabmesh_webrtc::addr::is_webrtc(a);
                    for addr in info
                        .listen_addrs
                        .into_iter()
                        .filter(is_dialable)
                        .filter(plain)
                    {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
                let who = (Some(peer_id) != self.relay_peer()).then_some(peer_id);
                self.log(
                    now,
                    Direction::Received,
                    "identify",
                    who,
                    format!("identify: {}", truncate(&info.agent_version, 40)),
                );
            }
            identify::Event::Pushed { peer_id, .. } | identify::Event::Sent { peer_id, .. } => {
                let who = (Some(peer_id) != self.relay_peer()).then_some(peer_id);
                self.log(now, Direction::Sent, "identify", who, "identify");
            }
            identify::Event::Error { peer_id, error, .. } => {
                let reason = format!("identify failed: {}", truncate(&error.to_string(), 120));
                self.misbehaved(now, peer_id, &reason);
            }
        }
    }

    fn on_ping_event(&mut self, now: Instant, event: ping::Event) {
        let peer = event.peer;
        let is_relay = Some(peer) == self.relay_peer();
        match event.result {
            Ok(rtt) => {
                if is_relay {
                    self.relay_rtt = Some(rtt);
                } else {
                    self.peers
                        .on_ping_success(now, &peer, event.connection, rtt);
                }
                let who = (!is_relay).then_some(peer);
                let to = if is_relay { " (relay)" } else { "" };
                self.log(
                    now,
                    Direction::Sent,
                    "ping",
                    who,
                    format!("ping{to}: {:.1} ms", rtt.as_secs_f64() * 1e3),
                );
            }
            Err(ping::Failure::Other { error }) => {
                // Anything but our own bytes echoed back: a protocol violation.
                let reason = format!("bad ping reply: {}", truncate(&error.to_string(), 120));
                self.misbehaved(now, peer, &reason);
            }
            Err(error) => {
                if is_relay {
                    return;
                }
                if let Verdict::Disconnect(reason) =
                    self.peers.on_ping_failure(&peer, event.connection)
                {
                    self.counters.disconnects += 1;
                    self.swarm.close_connection(event.connection);
                    self.log(
                        now,
                        Direction::Local,
                        "ping",
                        Some(peer),
                        format!("closing connection: {reason}"),
                    );
                } else {
                    self.log(
                        now,
                        Direction::Local,
                        "ping",
                        Some(peer),
                        format!("ping failed: {error}"),
                    );
                }
            }
        }
    }

    /// A peer broke a protocol: count and log it, and disconnect it once it has too many strikes.
    fn misbehaved(&mut self, now: Instant, peer: PeerId, reason: &str) {
        self.counters.violations += 1;
        tracing::warn!(%peer, reason, "peer misbehaved");
        let verdict = if Some(peer) == self.relay_peer() {
            Verdict::Keep
        } else {
            self.peers.on_misbehaviour(&peer, reason)
        };
        match verdict {
            Verdict::Keep => self.log(now, Direction::Local, "conn", Some(peer), reason.to_owned()),
            Verdict::Disconnect(why) => {
                self.counters.disconnects += 1;
                let _ = self.swarm.disconnect_peer_id(peer);
                self.log(
                    now,
                    Direction::Local,
                    "conn",
                    Some(peer),
                    format!("disconnecting: {why}"),
                );
            }
        }
    }

    /// Listen on `<relay>/p2p-circuit/webrtc` once the reservation is up: peers reach us there.
    fn listen_webrtc(&mut self, now: Instant) {
        if !platform::DirectTransport::AVAILABLE
            || !self.config.direct_upgrade
            || self.webrtc_listener.is_some()
        {
            return;
        }
        let Some(relay) = &self.relay else {
            return;
        };
        let addr = relay
            .addr
            .clone()
            .with(Protocol::P2pCircuit)
            .with(Protocol::WebRTC);
        match self.swarm.listen_on(addr.clone()) {
            Ok(id) => self.webrtc_listener = Some(id),
            Err(e) => self.log(
                now,
                Direction::Local,
                "webrtc",
                None,
                format!("cannot listen on {addr}: {e}"),
            ),
        }
    }

    /// A peer told us its listen addresses: its `/webrtc` ones are how we go direct.
    fn learn_webrtc_addrs(&mut self, now: Instant, peer: PeerId, listen: &[Multiaddr]) {
        if !platform::DirectTransport::AVAILABLE || Some(peer) == self.relay_peer() {
            return;
        }
        let addrs: Vec<Multiaddr> = listen
            .iter()
            .filter(|a| tabmesh_webrtc::addr::is_webrtc(a))
            .map(|a| with_peer_id(a.clone(), peer))
            .filter(|a| tabmesh_webrtc::addr::parse_dial_addr(a).is_some())
            .take(MAX_WEBRTC_ADDRS)
            .collect();
        if addrs.is_empty() {
            return;
        }
        self.webrtc_addrs.insert(peer, addrs);
        self.maybe_upgrade(now, peer);
    }

    /// `peer` is reached through the relay only: plan a direct connection if it can take one.
    fn maybe_upgrade(&mut self, now: Instant, peer: PeerId) {
        if self.config.direct_upgrade
            && self.peers.contains(&peer)
            && !self.peers.is_direct(&peer)
            && self.webrtc_addrs.contains_key(&peer)
        {
            self.upgrades.on_relayed(now, peer);
        }
    }

    /// A direct connection to `peer` is up: the relayed ones go after a grace time.
    fn on_direct(&mut self, now: Instant, peer: PeerId, id: ConnectionId, we_dialed: bool) {
        self.upgrades.on_direct_established(now, peer);
        // Two direct connections (both sides offered at once): both sides keep the one the
        // smaller peer id dialed, so they agree without talking.
        let me = self.peer_id();
        let smaller = if self.upgrades.offers_first(&peer) {
            me
        } else {
            peer
        };
        let list = self.direct_links.entry(peer).or_default();
        list.push((id, if we_dialed { me } else { peer }));
        if list.len() > 1 {
            let keep = list
                .iter()
                .find(|(_, dialer)| *dialer == smaller)
                .or(list.first())
                .map(|(c, _)| *c);
            let extra: Vec<ConnectionId> = list
                .iter()
                .map(|(c, _)| *c)
                .filter(|c| Some(*c) != keep)
                .collect();
            for connection in extra {
                self.swarm.close_connection(connection);
            }
        }
        let took = self
            .upgrades
            .peer_view(now, &peer)
            .and_then(|v| v.upgrade_ms)
            .map(|ms| format!(" ({ms} ms after the relayed one)"))
            .unwrap_or_default();
        self.log(
            now,
            Direction::Local,
            "webrtc",
            Some(peer),
            format!("direct WebRTC connection up{took}"),
        );
        self.relayed_closing.push_back((now + RELAYED_GRACE, peer));
    }

    /// Starts the direct-connection attempts that are due; closes relayed connections whose
    /// peer is now reached directly.
    fn upgrade_due(&mut self, now: Instant) {
        for UpgradeAction::Dial(peer) in self.upgrades.poll(now) {
            let addrs = self.webrtc_addrs.get(&peer).cloned().unwrap_or_default();
            if addrs.is_empty() {
                self.upgrades
                    .on_attempt_failed(now, peer, "no /webrtc address known".into());
                continue;
            }
            // (The tab's swarm tries the addresses one at a time, see `platform::build_swarm`.)
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::Always)
                .build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    self.upgrade_dials.insert(id, peer);
                    self.log(
                        now,
                        Direction::Sent,
                        "webrtc",
                        Some(peer),
                        "going direct: WebRTC offer via the relay",
                    );
                }
                Err(e) => self.upgrades.on_attempt_failed(now, peer, e.to_string()),
            }
        }
        while let Some(&(at, peer)) = self.relayed_closing.front()
            && at <= now
        {
            self.relayed_closing.pop_front();
            if !self.peers.is_direct(&peer) {
                continue;
            }
            let relayed = self.peers.relayed_connections(&peer);
            if relayed.is_empty() {
                continue;
            }
            for connection in relayed {
                self.swarm.close_connection(connection);
            }
            self.log(
                now,
                Direction::Local,
                "webrtc",
                Some(peer),
                "relayed connection closed: the direct one carries everything",
            );
        }
    }

    fn log(
        &mut self,
        now: Instant,
        direction: Direction,
        protocol: &str,
        peer: Option<PeerId>,
        summary: impl Into<String>,
    ) {
        let event = self
            .wire
            .push(
                now,
                direction,
                protocol,
                peer.map(|p| peer_name(&p)),
                summary,
            )
            .clone();
        // Dropped when the consumer lags; the event stays in the view's wire list.
        let _ = self.events.try_send(NodeEvent::Wire(event));
    }

    fn publish_view(&mut self, now: Instant) {
        self.dht
            .absorb_observations(&mut self.swarm.behaviour_mut().kad);
        let view = self.view(now);
        // Dropped when the consumer lags: the next view supersedes it.
        let _ = self.events.try_send(NodeEvent::View(Box::new(view)));
    }

    fn view(&mut self, now: Instant) -> NodeView {
        let dht = self.dht.view(&mut self.swarm.behaviour_mut().kad, now);
        let me = self.peer_id();
        let mut counters = self.counters.clone();
        counters.wire_events = self.wire.total();
        NodeView {
            peer_id: me.to_base58(),
            name: peer_name(&me),
            short_id: short_id(&me),
            agent: self.config.agent.clone(),
            now_ms: millis(now.saturating_duration_since(self.origin)),
            relay: RelayView {
                peer_id: self.relay.as_ref().map(|r| r.peer_id.to_base58()),
                bootstrap: match &self.config.bootstrap {
                    BootstrapSource::Url(u) => platform::bootstrap_url(u),
                    BootstrapSource::Addr(a) => a.to_string(),
                },
                addr: self.relay.as_ref().map(|r| r.addr.to_string()),
                link: self.relay_link.view(now),
                reservation_at_ms: self
                    .reservation_at
                    .map(|t| millis(t.saturating_duration_since(self.origin))),
                rtt_ms: self.relay_rtt.map(|d| d.as_secs_f64() * 1e3),
            },
            // The table's view lists its peers in `peer_ids` order.
            peers: self
                .peers
                .view(now, self.origin)
                .into_iter()
                .zip(self.peers.peer_ids())
                .map(|(mut peer, id)| {
                    peer.upgrade = self.upgrades.peer_view(now, id);
                    peer
                })
                .collect(),
            listen_addrs: self.swarm.listeners().map(|a| a.to_string()).collect(),
            wire: self.wire.events().cloned().collect(),
            counters,
            gimps: Some(GimpsSection {
                state: self.gossip.view(now),
                tests_per_sec: self.tests_done.len() as f64 / RATE_WINDOW.as_secs_f64(),
                tested_total: self.tested_total,
                learned_at_unix_ms: self.learned_at_unix_ms,
                config: self.gossip.config().into(),
            }),
            dht: Some(dht),
        }
    }
}

fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    let mut addr = addr.clone();
    if let Some(Protocol::P2p(_)) = addr.iter().last() {
        addr.pop();
    }
    addr
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max).collect();
    cut.push('…');
    cut
}

/// An error with its sources, skipping sources whose text is already included.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
