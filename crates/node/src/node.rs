//! The node: the fan-in around the protocol behaviours.
//!
//! [`Node::run`] drives the swarm and does four things, each in one place:
//! - routes what the behaviours report ([`Node::on_report`]): violations to the misbehaviour
//!   ledger, the relay's identity and peers' identify information to the protocols that need
//!   them; and moves the lines they wrote into the one [`WireSink`] to the Event log
//!   ([`Node::flush_log`]);
//! - passes user commands to the protocol they are for ([`Node::on_command`]);
//! - publishes a [`NodeView`] assembled from each protocol's section ([`Node::view`]);
//! - closes every connection on shutdown.
//!
//! Protocol decisions are not made here: they belong to the behaviours and their core rules.

use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{PeerId, Swarm};
use tabmesh_core::names::{peer_name, short_id};
use tabmesh_core::peers::millis;
use tabmesh_core::snapshot::frame::ChannelFrame;
use tabmesh_core::trace::TraceSection;
use tabmesh_core::view::{Counters, NodeView};
use tabmesh_core::wire_log::{Topic, WireLog};
use web_time::Instant;

use crate::behaviour::NodeBehaviour;
use crate::report::{Report, WireNote, WireSink};
use crate::{Command, NodeConfig, NodeError, NodeEvent, NodeHandle, platform};

/// Capacity of the event channel to the UI or terminal: a few seconds of views and wire events.
const EVENT_CHANNEL_CAPACITY: usize = 256;
/// Commands are rare (user actions); a small buffer is plenty.
const COMMAND_CHANNEL_CAPACITY: usize = 16;

/// A tabmesh peer. Create it with [`Node::new`] and drive it with [`Node::run`].
pub struct Node {
    swarm: Swarm<NodeBehaviour>,
    config: NodeConfig,
    origin: Instant,
    relay: Option<PeerId>,
    sink: WireSink,
    wire: WireLog,
    events: mpsc::Sender<NodeEvent>,
    commands: mpsc::Receiver<Command>,
}

/// How soon a view follows a connection that opened or closed.
const PEERS_CHANGED_VIEW_DELAY: std::time::Duration = std::time::Duration::from_millis(40);

/// How long a shutdown waits for each group of connections (peers, then the relay) to close.
const SHUTDOWN_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl Node {
    /// Builds the node (its swarm and listeners); nothing happens until [`run`](Self::run).
    pub fn new(config: NodeConfig) -> Result<(Self, NodeHandle), NodeError> {
        let now = Instant::now();
        let origin = now.checked_sub(config.clock_origin_offset).unwrap_or(now);
        let sink = WireSink::default();
        let mut swarm = platform::build_swarm(config.keypair.clone(), |key, relay, webrtc| {
            NodeBehaviour::new(key, &config, origin, relay, webrtc, &sink)
        })?;
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
            relay: None,
            sink,
            wire: WireLog::new(origin, config.wire_log_capacity),
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
        // The first view waits for the first connection (the relay's, normally ~0.1 s after
        // start: a connection brings the view forward, below) or for one view interval. Shown at
        // once, its render would take the page's thread while the relay's address is fetched and
        // dialled: a tab opened alone reached its reservation ~0.1 s later that way. Until then
        // the page says the node is starting.
        let mut next_view = futures_timer::Delay::new(self.config.view_interval).fuse();
        let mut next_view_at = Instant::now() + self.config.view_interval;
        loop {
            futures::select! {
                event = self.swarm.select_next_some() => {
                    let peers_changed = matches!(
                        event,
                        SwarmEvent::ConnectionEstablished { .. } | SwarmEvent::ConnectionClosed { .. }
                    );
                    self.on_swarm_event(event);
                    // A peer that comes or goes shows at once (a burst of them in one view),
                    // not at the next regular view.
                    let soon = Instant::now() + PEERS_CHANGED_VIEW_DELAY;
                    if peers_changed && next_view_at > soon {
                        next_view_at = soon;
                        next_view = futures_timer::Delay::new(PEERS_CHANGED_VIEW_DELAY).fuse();
                    }
                }
                command = self.commands.next() => match command {
                    Some(Command::Shutdown) | None => break,
                    Some(command) => self.on_command(command),
                },
                () = next_view => {
                    self.publish_view();
                    next_view_at = Instant::now() + self.config.view_interval;
                    next_view = futures_timer::Delay::new(self.config.view_interval).fuse();
                }
            }
            self.flush_log();
        }
        self.shutdown().await;
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<Report>) {
        match event {
            SwarmEvent::Behaviour(report) => self.on_report(report),
            SwarmEvent::NewListenAddr { address, .. } => {
                self.sink
                    .local(Topic::Listen, None, format!("listening on {address}"));
            }
            // Connections, dials and listeners are each protocol's business (they see them as
            // `FromSwarm` events); nothing is left to do here.
            _ => {}
        }
    }

    /// The one place where what a behaviour reports reaches the rest of the node.
    fn on_report(&mut self, report: Report) {
        let behaviours = self.swarm.behaviour_mut();
        match report {
            Report::Misbehaved {
                peer,
                topic,
                reason,
            } => behaviours.ledger.strike(peer, topic, &reason),
            Report::RelayKnown {
                peer,
                addr,
                ice_servers,
            } => {
                self.relay = Some(peer);
                behaviours.ledger.exempt(peer);
                behaviours.peers.set_relay(peer);
                behaviours.trace.set_relay(peer);
                behaviours.direct.set_relay(&addr, &ice_servers);
                behaviours.dht.set_relay(peer, addr);
                behaviours.gimps.set_relay(peer);
                behaviours.services.set_relay(peer);
                behaviours.snapshot.set_relay(peer);
            }
            Report::Identified {
                peer,
                agent,
                listen_addrs,
                protocols,
            } => {
                behaviours
                    .dht
                    .on_identified(peer, &listen_addrs, &protocols);
                behaviours.snapshot.on_identified(peer, &protocols);
                if Some(peer) != self.relay {
                    behaviours.direct.on_identified(peer, &agent, &listen_addrs);
                }
            }
            Report::Heard(peer) => behaviours.peers.on_heard(&peer),
            Report::Answered { peer, connection } => {
                behaviours.direct.on_answered(peer, connection);
            }
            Report::Span(span) if self.config.tracing => behaviours.trace.record(span),
            Report::Span(_) => {}
            Report::Dht { request, reply } => behaviours.dht.start(request, reply),
            Report::StopProviding(key) => behaviours.dht.stop_providing(&key),
            Report::Gossip { to, frame } => {
                if let Err(ChannelFrame::Gimps { ack, bytes }) =
                    behaviours.snapshot.send_gossip(to, frame)
                {
                    behaviours.gimps.send_direct(to, bytes, ack);
                }
                behaviours.snapshot.set_gimps(behaviours.gimps.record());
            }
            Report::GossipArrived { from, frame } => {
                behaviours.gimps.on_channel_frame(from, frame);
                behaviours.snapshot.set_gimps(behaviours.gimps.record());
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        let behaviours = self.swarm.behaviour_mut();
        match command {
            Command::Sleep => behaviours.gimps.sleep(),
            Command::Wake => behaviours.gimps.wake(),
            Command::Reset => behaviours.gimps.reset(),
            Command::Cooperative(on) => behaviours.gimps.set_cooperative(on),
            Command::SearchPace(pace) => behaviours.gimps.set_pace(pace),
            Command::Dht(request, reply) => behaviours.dht.start(request, reply),
            Command::Perf {
                peer,
                upload,
                download,
                reply,
            } => match behaviours.peers.connection(&peer) {
                Some(connection) => behaviours
                    .perf
                    .run(peer, connection, upload, download, reply),
                None => {
                    let _ = reply.send(Err(format!("not connected to {}", peer_name(&peer))));
                }
            },
            Command::Services(command) => behaviours.services.command(command),
            Command::Trace(command) => behaviours.trace.command(command),
            Command::SlowMotion(delay) => behaviours.gimps.set_slow_motion(delay),
            Command::Snapshot(command) => {
                // A snapshot records the other protocols' figures as they are now.
                self.refresh_snapshot_facts();
                self.swarm.behaviour_mut().snapshot.command(command);
            }
            Command::WireLog(reply) => {
                // With what the behaviours logged since the last flush.
                self.flush_log();
                let _ = reply.send(self.wire.events().cloned().collect());
            }
            Command::Shutdown => {}
        }
    }

    /// Moves the lines the behaviours wrote to the Event log (the relay is named as such, not
    /// as a peer).
    fn flush_log(&mut self) {
        for WireNote {
            at,
            direction,
            topic,
            peer,
            summary,
        } in self.sink.take()
        {
            let peer = peer.filter(|p| Some(*p) != self.relay);
            let event = self
                .wire
                .push(at, direction, topic, peer.map(|p| peer_name(&p)), summary)
                .clone();
            if self.config.stream_wire_events {
                // Dropped when the consumer lags; the event stays in the view's wire list.
                let _ = self.events.try_send(NodeEvent::Wire(event));
            }
        }
    }

    /// Gives the snapshots the GIMPS and DHT figures a peer records.
    fn refresh_snapshot_facts(&mut self) {
        let b = self.swarm.behaviour_mut();
        b.snapshot.set_gimps(b.gimps.record());
        b.snapshot.set_dht_records(b.dht.view().records.len());
    }

    fn publish_view(&mut self) {
        self.flush_log();
        let view = self.view();
        if let Some(dht) = &view.dht {
            let b = self.swarm.behaviour_mut();
            b.snapshot.set_dht_records(dht.records.len());
        }
        let services = &mut self.swarm.behaviour_mut().services;
        if services.wants_status() {
            services.set_status(tabmesh_core::services::builtin::node_info(&view));
        }
        // Dropped when the consumer lags: the next view supersedes it.
        let _ = self.events.try_send(NodeEvent::View(Box::new(view)));
    }

    fn view(&mut self) -> NodeView {
        let me = self.peer_id();
        let listen_addrs = self.swarm.listeners().map(|a| a.to_string()).collect();
        let b = self.swarm.behaviour_mut();
        let (peers, ledger, direct) = (&b.peers, &b.ledger, &b.direct);
        let peer_counters = peers.counters();
        let bans = ledger.counters();
        let upgrades = direct.counters();
        let counters = Counters {
            violations: bans.strikes,
            bans: bans.bans,
            refused_banned: bans.refused,
            incoming_errors: peer_counters.incoming_errors,
            disconnects: peer_counters.disconnects,
            refused_connections: peer_counters.refused,
            dial_failures: peer_counters.dial_failures,
            dials_backed_off: peer_counters.backed_off,
            crossed_dials: peer_counters.crossed_dials,
            wire_events: self.wire.total(),
            webrtc_offers: upgrades.offers,
            direct_duplicates_closed: upgrades.duplicates_closed,
            direct_dials_failed: upgrades.failed,
        };
        NodeView {
            peer_id: me.to_base58(),
            name: peer_name(&me),
            short_id: short_id(&me),
            agent: self.config.agent.clone(),
            now_ms: millis(Instant::now().saturating_duration_since(self.origin)),
            started_at_ms: millis(self.config.clock_origin_offset),
            relay: b.relay.view(peers.relay_rtt()),
            peers: peers.view(|peer, view| {
                view.upgrade = direct.peer_view(peer);
                view.strikes = ledger.strikes(peer);
            }),
            listen_addrs,
            wire: self.wire.recent(crate::VIEW_WIRE_EVENTS).cloned().collect(),
            wire_kept: self.wire.events().len(),
            counters,
            banned: ledger.view(),
            gimps: Some(b.gimps.view()),
            dht: Some(b.dht.view()),
            services: Some(b.services.view()),
            trace: Some(TraceSection {
                slow_motion_ms: b.gimps.slow_motion().map(millis),
                tracing: self.config.tracing,
                ..b.trace.view()
            }),
            snapshot: Some(b.snapshot.view()),
        }
    }

    /// Says goodbye: closes the connections to peers first, while the relay connection still
    /// carries their circuits, then the relay's, waiting a moment for each group to close.
    /// Closing them all at once left the circuits' connections unable to send their close
    /// (their relay connection was gone), which yamux logged as failures, and the peers
    /// found out only from the relay.
    async fn shutdown(&mut self) {
        let relay = self.relay;
        for relay_stage in [false, true] {
            let closing: Vec<PeerId> = self
                .swarm
                .connected_peers()
                .copied()
                .filter(|p| (Some(*p) == relay) == relay_stage)
                .collect();
            for peer in &closing {
                let _ = self.swarm.disconnect_peer_id(*peer);
            }
            let mut deadline = futures_timer::Delay::new(SHUTDOWN_CLOSE_WAIT).fuse();
            while closing.iter().any(|p| self.swarm.is_connected(p)) {
                futures::select! {
                    event = self.swarm.select_next_some() => {
                        if let SwarmEvent::ConnectionEstablished { peer_id, .. } = event {
                            // A dial that was under way: it closes with the rest.
                            let _ = self.swarm.disconnect_peer_id(peer_id);
                        }
                    }
                    () = deadline => break,
                }
            }
        }
        self.sink.local(Topic::Node, None, "shut down");
        self.flush_log();
    }
}
