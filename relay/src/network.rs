//! The relay's libp2p node: circuit relay v2 server, Kademlia bootstrap node, identify, ping,
//! the same misbehaviour ledger as every peer, and an entry to services: calls that arrive over
//! HTTP ([`RelayNode::service_commands`]) go into the mesh through the same services behaviour a
//! peer has (the relay offers none itself).
//!
//! The DHT is tabmesh's DHT behaviour in its bootstrap role: tabs can only listen through a
//! relay reservation, so the relay keeps the DHT's view of them honest. It learns each peer's
//! listen addresses from identify, adds the peers that speak tabmesh's Kademlia protocol to its
//! routing table, and removes a peer that was reachable only through our circuits as soon as its
//! last connection closes (its reservation died with it). A peer that breaks a protocol (a ping
//! echo that is not ours, a failed identify exchange, forged DHT records) gets a strike; enough
//! strikes ban it for a while, longer for repeat offenders (`--ban-after-strikes`, `--ban-secs`).

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::metrics::{Metrics, Recorder};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, connection_limits, identify, noise, ping, relay, tcp, yamux,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tabmesh_core::bootstrap::{BootstrapInfo, with_peer_id};
use tabmesh_core::dht::DhtConfig;
use tabmesh_core::protocol;
use tabmesh_core::wire_log::Topic;
use tabmesh_node::report::{Report, WireNote, WireSink};
use tabmesh_node::services::ServiceCommand;
use tabmesh_node::trace::TraceCommand;
use tabmesh_node::{dht, ledger, services, trace};
use tokio::sync::watch;

use crate::config::RelayArgs;

/// The relay's behaviours. The ledger comes first: a banned peer is refused before anything
/// else sees its connection.
#[derive(NetworkBehaviour)]
pub struct RelayBehaviour {
    ledger: ledger::Behaviour,
    limits: connection_limits::Behaviour,
    relay: relay::Behaviour,
    dht: dht::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    services: services::Behaviour,
    trace: trace::Behaviour,
}

/// Counters of rejected input, exported at `/metrics` next to libp2p's own.
#[derive(Clone, Default)]
struct RejectionCounters {
    incoming_connection_errors: Counter,
    protocol_violations: Counter,
    peers_banned: Counter,
    connections_refused_banned: Counter,
    dht_records_refused: Counter,
    dht_records_stored: Counter,
    /// Open connections now (libp2p's metrics count opened connections and the lifetimes of
    /// closed ones, but not how many are open).
    connections_open: Gauge,
    /// Peers holding a reservation now.
    reservations: Gauge,
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The totals last exported (the behaviours keep running totals; metrics get the increments).
#[derive(Default)]
struct Exported {
    bans: u64,
    refused: u64,
    stored: u64,
    refused_records: u64,
}

/// What the HTTP side needs from the network side.
pub struct SharedState {
    /// The bootstrap document, kept current as listeners come up.
    pub bootstrap: RwLock<BootstrapInfo>,
    /// Prometheus registry with libp2p's and our metrics.
    pub registry: std::sync::Mutex<Registry>,
}

/// A built relay node, not yet running.
pub struct RelayNode {
    swarm: Swarm<RelayBehaviour>,
    metrics: Arc<Metrics>,
    counters: RejectionCounters,
    exported: Exported,
    /// Peers holding a reservation (for the gauge).
    reserved: HashSet<PeerId>,
    shared: Arc<SharedState>,
    announce: Vec<Multiaddr>,
    /// Lines the DHT and the ledger write, logged at debug level.
    wire: WireSink,
    /// Service calls from the HTTP gateway.
    service_commands: (
        futures::channel::mpsc::Sender<ServiceCommand>,
        futures::channel::mpsc::Receiver<ServiceCommand>,
    ),
    /// Trace gatherings asked for over HTTP.
    trace_commands: (
        futures::channel::mpsc::Sender<TraceCommand>,
        futures::channel::mpsc::Receiver<TraceCommand>,
    ),
}

fn per_minute(n: u32) -> (NonZeroU32, Duration) {
    (
        NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN),
        Duration::from_secs(60),
    )
}

fn relay_config(args: &RelayArgs) -> relay::Config {
    let config = relay::Config {
        max_reservations: args.max_reservations,
        max_reservations_per_peer: args.max_reservations_per_peer,
        reservation_duration: Duration::from_secs(args.reservation_duration_secs),
        reservation_rate_limiters: Vec::new(),
        max_circuits: args.max_circuits,
        max_circuits_per_peer: args.max_circuits_per_peer,
        max_circuit_duration: Duration::from_secs(args.max_circuit_duration_secs),
        max_circuit_bytes: args.max_circuit_bytes,
        circuit_src_rate_limiters: Vec::new(),
    };
    let (n, i) = per_minute(args.reservation_rate_per_peer);
    let config = config.reservation_rate_per_peer(n, i);
    let (n, i) = per_minute(args.reservation_rate_per_ip);
    let config = config.reservation_rate_per_ip(n, i);
    let (n, i) = per_minute(args.circuit_rate_per_peer);
    let config = config.circuit_src_per_peer(n, i);
    let (n, i) = per_minute(args.circuit_rate_per_ip);
    config.circuit_src_per_ip(n, i)
}

impl RelayNode {
    /// Builds the swarm and starts its listeners.
    pub async fn new(key: Keypair, args: &RelayArgs) -> anyhow::Result<Self> {
        let span_export = match &args.otlp_endpoint {
            Some(endpoint) => {
                let sink = trace::export::start(endpoint, key.public().to_peer_id())
                    .map_err(anyhow::Error::msg)?;
                tracing::info!(%endpoint, "exporting spans to an OpenTelemetry collector");
                Some(trace::SpanExport::new(move |span| sink.send(span.clone())))
            }
            None => None,
        };
        let mut registry = Registry::with_prefix("tabmesh");
        let counters = RejectionCounters::default();
        registry.register(
            "relay_incoming_connection_errors",
            "Incoming connections that failed before being established (bad handshakes, garbage)",
            counters.incoming_connection_errors.clone(),
        );
        registry.register(
            "relay_protocol_violations",
            "Strikes against peers that broke a protocol (garbled pings, failed identify, forged DHT records)",
            counters.protocol_violations.clone(),
        );
        registry.register(
            "relay_peers_banned",
            "Bans decided by the misbehaviour ledger (a peer banned twice counts twice)",
            counters.peers_banned.clone(),
        );
        registry.register(
            "relay_connections_refused_banned",
            "Connections refused because the peer was banned",
            counters.connections_refused_banned.clone(),
        );
        registry.register(
            "relay_dht_records_refused",
            "DHT records and provider records refused (invalid, oversized, expired, forged, over quota)",
            counters.dht_records_refused.clone(),
        );
        registry.register(
            "relay_dht_records_stored",
            "DHT records other peers stored at the relay",
            counters.dht_records_stored.clone(),
        );
        registry.register(
            "relay_connections_open",
            "Connections open now",
            counters.connections_open.clone(),
        );
        registry.register(
            "relay_reservations",
            "Peers holding a reservation now",
            counters.reservations.clone(),
        );
        let dht_config = dht_config(args);
        let backend = crate::store::RedbBackend::open(&args.data_dir.join("dht.redb"))?;
        let ledger_config = args.ledger();
        let wire = WireSink::default();
        let behaviour_wire = wire.clone();
        let local_peer_id = key.public().to_peer_id();
        let relay_cfg = relay_config(args);
        tracing::info!(config = ?relay_cfg, "circuit relay limits");
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(args.max_connections))
            .with_max_established_per_peer(Some(args.max_connections_per_peer))
            .with_max_pending_incoming(Some(args.max_pending_incoming));
        let idle = Duration::from_secs(args.idle_timeout_secs);

        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_dns()?
            .with_websocket(noise::Config::new, yamux::Config::default)
            .await?
            .with_bandwidth_metrics(&mut registry)
            .with_behaviour(|key| {
                let dht = dht::Behaviour::new(
                    key.clone(),
                    dht_config,
                    Box::new(backend),
                    dht::Role::Bootstrap,
                    behaviour_wire.clone(),
                );
                RelayBehaviour {
                    ledger: ledger::Behaviour::new(ledger_config, behaviour_wire.clone()),
                    limits: connection_limits::Behaviour::new(limits),
                    relay: relay::Behaviour::new(local_peer_id, relay_cfg),
                    dht,
                    identify: identify::Behaviour::new(
                        identify::Config::new(protocol::IDENTIFY_VERSION.to_owned(), key.public())
                            .with_agent_version(format!(
                                "{}/{}",
                                protocol::AGENT_RELAY,
                                env!("CARGO_PKG_VERSION")
                            )),
                    ),
                    ping: ping::Behaviour::new(ping::Config::new()),
                    services: services::Behaviour::new(
                        local_peer_id,
                        "relay".to_owned(),
                        web_time::Instant::now(),
                        behaviour_wire.clone(),
                    ),
                    trace: {
                        let mut trace = trace::Behaviour::new(local_peer_id, behaviour_wire);
                        if let Some(export) = &span_export {
                            trace.export_to(export.clone());
                        }
                        trace
                    },
                }
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build();

        let host = match args.host {
            std::net::IpAddr::V4(ip) => Protocol::Ip4(ip),
            std::net::IpAddr::V6(ip) => Protocol::Ip6(ip),
        };
        let tcp_addr = Multiaddr::empty()
            .with(host.clone())
            .with(Protocol::Tcp(args.tcp_port));
        let ws_addr = Multiaddr::empty()
            .with(host)
            .with(Protocol::Tcp(args.ws_port))
            .with(Protocol::Ws("/".into()));
        for addr in [tcp_addr, ws_addr] {
            swarm
                .listen_on(addr.clone())
                .with_context(|| format!("cannot listen on {addr}"))?;
        }
        // A relay refuses reservations until it has a confirmed external address.
        for addr in &args.announce {
            swarm.add_external_address(addr.clone());
        }

        let restored = swarm.behaviour_mut().dht.counters().restored;
        tracing::info!(records = restored, "DHT records restored");
        let metrics = Arc::new(Metrics::new(&mut registry));
        let kad_metrics = metrics.clone();
        swarm
            .behaviour_mut()
            .dht
            .observe_kad(Box::new(move |event| kad_metrics.record(event)));
        let shared = Arc::new(SharedState {
            bootstrap: RwLock::new(BootstrapInfo {
                peer_id: local_peer_id.to_base58(),
                addrs: Vec::new(),
                ice_servers: args.ice_servers().map_err(anyhow::Error::msg)?,
                version: env!("CARGO_PKG_VERSION").to_owned(),
            }),
            registry: std::sync::Mutex::new(registry),
        });
        let node = Self {
            swarm,
            metrics,
            counters,
            exported: Exported::default(),
            reserved: HashSet::new(),
            shared,
            announce: args.announce.clone(),
            wire,
            service_commands: futures::channel::mpsc::channel(256),
            trace_commands: futures::channel::mpsc::channel(64),
        };
        node.publish_addrs();
        Ok(node)
    }

    /// State shared with the HTTP server.
    pub fn shared(&self) -> Arc<SharedState> {
        self.shared.clone()
    }

    /// Where the HTTP gateway sends service calls.
    pub fn service_commands(&self) -> futures::channel::mpsc::Sender<ServiceCommand> {
        self.service_commands.0.clone()
    }

    /// Where the HTTP side sends trace gatherings.
    pub fn trace_commands(&self) -> futures::channel::mpsc::Sender<TraceCommand> {
        self.trace_commands.0.clone()
    }

    /// The relay's peer id.
    pub fn peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    fn publish_addrs(&self) {
        let me = *self.swarm.local_peer_id();
        let addrs = self
            .swarm
            .external_addresses()
            .map(|a| with_peer_id(a.clone(), me).to_string())
            .collect();
        if let Ok(mut doc) = self.shared.bootstrap.write() {
            doc.addrs = addrs;
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                Some(command) = self.service_commands.1.next() => {
                    self.swarm.behaviour_mut().services.command(command);
                }
                Some(command) = self.trace_commands.1.next() => {
                    self.swarm.behaviour_mut().trace.command(command);
                }
                _ = tick.tick() => self.export_counters(),
                _ = shutdown.changed() => break,
            }
        }
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        tracing::info!(peers = peers.len(), "closing connections");
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn on_event(&mut self, event: SwarmEvent<RelayBehaviourEvent>) {
        self.metrics.record(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if self.announce.is_empty() {
                    self.swarm.add_external_address(address);
                }
                self.publish_addrs();
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                tracing::warn!(%address, "listen address expired");
                if self.announce.is_empty() {
                    self.swarm.remove_external_address(&address);
                }
                self.publish_addrs();
            }
            SwarmEvent::ListenerError { error, .. } => tracing::error!(%error, "listener error"),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                tracing::debug!(%peer_id, addr = %endpoint.get_remote_address(), num_established, "connection established");
                self.counters.connections_open.inc();
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                tracing::debug!(%peer_id, num_established, cause = ?cause, "connection closed");
                self.counters.connections_open.dec();
                if num_established == 0 && self.reserved.remove(&peer_id) {
                    // Why a reserved peer went away is what an operator asks first: its own
                    // close, a keep-alive timeout, an I/O error.
                    let cause =
                        cause.map_or_else(|| "closed without error".to_owned(), |e| e.to_string());
                    tracing::info!(%peer_id, %cause, "reserved peer's last connection closed");
                    self.counters.reservations.set(gauge(self.reserved.len()));
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                self.counters.incoming_connection_errors.inc();
                tracing::info!(from = %send_back_addr, %error, "rejected incoming connection");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    /// Exports what the behaviours counted since the last call, and logs their lines.
    fn export_counters(&mut self) {
        for WireNote {
            topic,
            peer,
            summary,
            ..
        } in self.wire.take()
        {
            tracing::debug!(peer = ?peer, "{topic}: {summary}");
        }
        let behaviour = self.swarm.behaviour_mut();
        let bans = behaviour.ledger.counters();
        let dht = behaviour.dht.counters();
        let refused_records = dht.records_refused + dht.providers_refused;
        let e = &mut self.exported;
        self.counters.peers_banned.inc_by(bans.bans - e.bans);
        self.counters
            .connections_refused_banned
            .inc_by(bans.refused - e.refused);
        self.counters
            .dht_records_stored
            .inc_by(dht.records_accepted - e.stored);
        self.counters
            .dht_records_refused
            .inc_by(refused_records - e.refused_records);
        *e = Exported {
            bans: bans.bans,
            refused: bans.refused,
            stored: dht.records_accepted,
            refused_records,
        };
    }

    fn on_behaviour_event(&mut self, event: RelayBehaviourEvent) {
        match event {
            RelayBehaviourEvent::Relay(event) => {
                self.metrics.record(&event);
                log_relay_event(&event);
                // (libp2p-relay reports `ReservationClosed` for every closed connection, with a
                // reservation or not: a reservation ends here with its peer's last connection.)
                match &event {
                    relay::Event::ReservationReqAccepted { src_peer_id, .. } => {
                        self.reserved.insert(*src_peer_id);
                    }
                    #[allow(deprecated)] // Still emitted by libp2p-relay 0.22.
                    relay::Event::ReservationTimedOut { src_peer_id } => {
                        self.reserved.remove(src_peer_id);
                    }
                    _ => {}
                }
                self.counters.reservations.set(gauge(self.reserved.len()));
                if let relay::Event::ReservationReqAccepted {
                    src_peer_id,
                    renewed: false,
                } = event
                {
                    // Listed in the DHT at once, at the addresses its reservation gives it.
                    let me = *self.swarm.local_peer_id();
                    let circuits = self
                        .swarm
                        .external_addresses()
                        .map(|a| with_peer_id(a.clone(), me).with(Protocol::P2pCircuit))
                        .collect();
                    self.swarm
                        .behaviour_mut()
                        .dht
                        .on_reserved(src_peer_id, circuits);
                }
            }
            RelayBehaviourEvent::Dht(report)
            | RelayBehaviourEvent::Ledger(report)
            | RelayBehaviourEvent::Services(report)
            | RelayBehaviourEvent::Trace(report) => {
                self.on_report(report);
            }
            RelayBehaviourEvent::Ping(event) => {
                self.metrics.record(&event);
                // Garbage or a wrong echo on the ping stream is a violation; a timeout is not
                // (a busy or throttled tab is slow, not hostile).
                match &event.result {
                    Err(ping::Failure::Other { error }) => {
                        let reason = format!("bad ping reply: {error}");
                        self.violation(event.peer, Topic::Ping, &reason);
                    }
                    Err(error) => tracing::debug!(peer = %event.peer, %error, "ping failed"),
                    Ok(_) => {}
                }
            }
            RelayBehaviourEvent::Identify(event) => {
                self.metrics.record(&event);
                self.on_identify(event);
            }
            RelayBehaviourEvent::Limits(never) => match never {},
        }
    }

    /// What the DHT and the ledger report: violations.
    fn on_report(&mut self, report: Report) {
        match report {
            Report::Misbehaved {
                peer,
                topic,
                reason,
            } => self.violation(peer, topic, &reason),
            Report::Dht { request, reply } => self.swarm.behaviour_mut().dht.start(request, reply),
            Report::StopProviding(key) => self.swarm.behaviour_mut().dht.stop_providing(&key),
            // The spans of the calls the relay enters into the mesh, kept for gathering.
            Report::Span(span) => self.swarm.behaviour_mut().trace.record(span),
            // Only a node's own behaviours report these; the relay's do not.
            Report::RelayKnown { .. }
            | Report::Identified { .. }
            | Report::Heard(_)
            | Report::Answered { .. }
            | Report::Gossip { .. }
            | Report::GossipArrived { .. } => {}
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        match event {
            identify::Event::Received { peer_id, info, .. } => {
                tracing::info!(
                    peer = %peer_id,
                    agent = %info.agent_version,
                    addrs = info.listen_addrs.len(),
                    "identified peer"
                );
                self.swarm.behaviour_mut().dht.on_identified(
                    peer_id,
                    &info.listen_addrs,
                    &info.protocols,
                );
            }
            identify::Event::Error { peer_id, error, .. } => {
                match tabmesh_node::peers::identify_violation(&error) {
                    Some(reason) => self.violation(peer_id, Topic::Identify, &reason),
                    None => tracing::debug!(peer = %peer_id, %error, "identify did not complete"),
                }
            }
            identify::Event::Sent { .. } | identify::Event::Pushed { .. } => {}
        }
    }

    /// A peer broke a protocol: a strike in the ledger, which bans it after too many. The relay
    /// keeps running.
    fn violation(&mut self, peer: PeerId, topic: Topic, reason: &str) {
        self.counters.protocol_violations.inc();
        tracing::warn!(%peer, %topic, reason, "protocol violation");
        self.swarm
            .behaviour_mut()
            .ledger
            .strike(peer, topic, reason);
    }
}

#[allow(deprecated)] // The deprecated variants are still emitted by libp2p-relay 0.22.
fn log_relay_event(event: &relay::Event) {
    use relay::Event::*;
    match event {
        ReservationReqAccepted {
            src_peer_id,
            renewed,
        } => {
            tracing::info!(peer = %src_peer_id, renewed, "reservation accepted")
        }
        ReservationReqDenied {
            src_peer_id,
            status,
        } => {
            tracing::warn!(peer = %src_peer_id, ?status, "reservation denied")
        }
        ReservationClosed { src_peer_id } => {
            tracing::info!(peer = %src_peer_id, "reservation closed")
        }
        ReservationTimedOut { src_peer_id } => {
            tracing::info!(peer = %src_peer_id, "reservation timed out")
        }
        CircuitReqAccepted {
            src_peer_id,
            dst_peer_id,
        } => {
            tracing::info!(src = %src_peer_id, dst = %dst_peer_id, "circuit opened")
        }
        CircuitReqDenied {
            src_peer_id,
            dst_peer_id,
            status,
        } => {
            tracing::warn!(src = %src_peer_id, dst = %dst_peer_id, ?status, "circuit denied")
        }
        CircuitClosed {
            src_peer_id,
            dst_peer_id,
            error,
        } => {
            tracing::info!(src = %src_peer_id, dst = %dst_peer_id, error = ?error, "circuit closed")
        }
        StatusChanged { status } => tracing::info!(?status, "relay service status"),
        other => tracing::warn!(event = ?other, "relay error"),
    }
}

/// The relay's DHT settings: the network-wide defaults, its own capacity from the CLI, and no
/// periodic bootstrap (it is the bootstrap node; its table fills from identify).
fn dht_config(args: &RelayArgs) -> DhtConfig {
    let mut config = DhtConfig {
        periodic_bootstrap: None,
        ..DhtConfig::default()
    };
    config.limits.max_records = args.dht_max_records as usize;
    config.limits.max_records_per_publisher = args.dht_max_records_per_publisher as usize;
    config
}
