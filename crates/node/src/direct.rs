//! Relayed to direct: moving peers met through the relay to direct WebRTC connections.
//!
//! This behaviour owns the whole move, in the manner of `libp2p-dcutr`: it carries the WebRTC
//! signaling streams (`tabmesh-webrtc`'s behaviour, in tabs only), listens on
//! `<relay>/p2p-circuit/webrtc` as soon as our circuit address is up, learns peers' `/webrtc`
//! addresses from identify, and applies `tabmesh_core::direct_upgrade::DirectUpgrades` to the
//! swarm's connection events: it dials when the rules say so, closes the duplicate of two
//! direct connections and the relayed connection once the direct one has taken over, and
//! tries again when a direct connection is lost. A peer that breaks the signaling protocol is
//! reported for the misbehaviour ledger. Native nodes have no WebRTC: the behaviour then only
//! watches.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, DialError, FromSwarm, ListenOpts,
    NetworkBehaviour, THandler, THandlerInEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use tabmesh_core::bootstrap::{IceServer, with_peer_id};
use tabmesh_core::direct_upgrade::{
    CloseReason, DirectUpgrades, LinkChange, UpgradeAction, UpgradeConfig, UpgradeView,
};
use tabmesh_core::peers::{ConnectionKind, PeerKind};
use tabmesh_core::wire_log::Topic;
use tabmesh_webrtc::addr::{is_webrtc, parse_dial_addr};
use web_time::Instant;

use crate::forward::forward_to;
use crate::platform::DirectTransport;
use crate::relay_link::is_relayed;
use crate::report::{Report, WireSink, error_chain, transport_error_text, truncate};
use crate::timer::Timer;

/// The WebRTC side of a tab: the signaling behaviour and the transport's settings.
pub struct WebRtc {
    /// Carries `/webrtc-signaling/0.0.1` streams on the swarm's connections.
    pub signaling: tabmesh_webrtc::Behaviour,
    /// The transport's settings (ICE servers).
    pub transport: DirectTransport,
}

type Signaling = Toggle<tabmesh_webrtc::Behaviour>;

/// The relayed-to-direct upgrade of a node.
pub struct Behaviour {
    signaling: Signaling,
    transport: Option<DirectTransport>,
    upgrades: DirectUpgrades<ConnectionId>,
    /// The address we reach the relay at (without `/p2p`): we listen behind that one.
    relay_addr: Option<Multiaddr>,
    listener: Option<ListenerId>,
    events: VecDeque<ToSwarm<Report, THandlerInEvent<Signaling>>>,
    wire: WireSink,
    timer: Timer,
}

/// How a connection counts for the upgrade: a circuit is relayed, a `/webrtc` connection is
/// direct; others (the WebSocket to the relay, TCP between native nodes) do not take part.
fn upgrade_kind(endpoint: &libp2p::core::ConnectedPoint) -> Option<ConnectionKind> {
    if is_webrtc(endpoint.get_remote_address()) {
        Some(ConnectionKind::Direct)
    } else if endpoint.is_relayed() {
        Some(ConnectionKind::Relayed)
    } else {
        None
    }
}

/// Where to listen for WebRTC offers, given our circuit address: the relay client reports it
/// as `<relay>/p2p-circuit/p2p/<us>`; the WebRTC transport listens on
/// `<relay>/p2p-circuit/webrtc` (anything else would go to the relay client as a second
/// reservation).
fn webrtc_listen_addr(circuit: &Multiaddr) -> Multiaddr {
    let parts: Vec<Protocol<'_>> = circuit.iter().collect();
    let end = parts
        .iter()
        .rposition(|p| *p == Protocol::P2pCircuit)
        .map_or(parts.len(), |i| i + 1);
    parts[..end]
        .iter()
        .cloned()
        .chain(std::iter::once(Protocol::WebRTC))
        .collect()
}

impl Behaviour {
    /// The upgrade of node `local`: with `webrtc` (tabs) it moves peers to direct connections
    /// when `enabled`; without (native nodes) it never dials.
    pub fn new(
        local: PeerId,
        config: UpgradeConfig,
        webrtc: Option<WebRtc>,
        enabled: bool,
        wire: WireSink,
    ) -> Self {
        let (signaling, transport) = match webrtc {
            Some(w) => (Some(w.signaling), Some(w.transport)),
            None => (None, None),
        };
        let enabled = enabled && transport.is_some();
        Self {
            signaling: signaling.into(),
            transport,
            upgrades: DirectUpgrades::new(local, config, enabled),
            relay_addr: None,
            listener: None,
            events: VecDeque::new(),
            wire,
            timer: Timer::default(),
        }
    }

    /// The relay is reached at `addr` (without `/p2p`); `servers` are the STUN/TURN servers
    /// from its bootstrap document, for every new peer connection.
    pub fn set_relay(&mut self, addr: &Multiaddr, servers: &[IceServer]) {
        self.relay_addr = Some(addr.clone());
        if let Some(transport) = &self.transport {
            transport.set_ice_servers(servers);
        }
    }

    /// Whether `circuit` goes through the relay at the address we reach it at. The relay client
    /// reports a circuit address for each of the relay's addresses (TCP and WebSocket); peers
    /// must be able to reach the one we announce for `/webrtc`.
    fn behind_our_relay_addr(&self, circuit: &Multiaddr) -> bool {
        self.relay_addr.as_ref().is_none_or(|relay| {
            circuit.len() > relay.len() && circuit.iter().zip(relay.iter()).all(|(a, b)| a == b)
        })
    }

    /// `peer` told who it is (`agent`: a tabmesh tab runs the same upgrade rules, so its lead
    /// is waited for patiently) and announced its listen addresses: its `/webrtc` ones are how
    /// we go direct.
    pub fn on_identified(&mut self, peer: PeerId, agent: &str, listen_addrs: &[Multiaddr]) {
        let runs_these_rules = PeerKind::of_agent(Some(agent)) == PeerKind::Tab;
        self.upgrades.on_agent(peer, runs_these_rules);
        let dialable = listen_addrs
            .iter()
            .filter(|a| is_webrtc(a))
            .map(|a| with_peer_id(a.clone(), peer))
            .filter(|a| parse_dial_addr(a).is_some());
        self.upgrades.on_addresses(Instant::now(), peer, dialable);
    }

    /// `peer` answered on `connection`: if it is a direct one, the relayed connections go after
    /// the grace.
    pub fn on_answered(&mut self, peer: PeerId, connection: ConnectionId) {
        let actions = self.upgrades.on_answered(Instant::now(), peer, connection);
        self.apply(actions);
    }

    /// Where the move of `peer` stands, for the Peers panel.
    pub fn peer_view(&self, peer: &PeerId) -> Option<UpgradeView> {
        self.upgrades.peer_view(Instant::now(), peer)
    }

    /// Whether this node moves peers to direct connections itself.
    pub fn is_enabled(&self) -> bool {
        self.upgrades.is_enabled()
    }

    /// What the moves to direct connections have cost so far.
    pub fn counters(&self) -> tabmesh_core::direct_upgrade::UpgradeCounters {
        self.upgrades.counters()
    }

    fn report(&mut self, report: Report) {
        self.events.push_back(ToSwarm::GenerateEvent(report));
    }

    fn apply(&mut self, actions: Vec<UpgradeAction<ConnectionId>>) {
        let mut relayed_closed = Vec::new();
        for action in actions {
            match action {
                UpgradeAction::Dial { peer, addrs } => {
                    // (The tab's swarm tries the addresses one at a time, see `platform`.)
                    let opts = DialOpts::peer_id(peer)
                        .addresses(addrs)
                        .condition(PeerCondition::Always)
                        .build();
                    self.upgrades.on_dialing(peer, opts.connection_id());
                    self.events.push_back(ToSwarm::Dial { opts });
                    self.wire.sent(
                        Topic::Webrtc,
                        Some(peer),
                        "going direct: WebRTC offer via the relay",
                    );
                }
                UpgradeAction::Close {
                    peer,
                    connection,
                    reason,
                } => {
                    self.events.push_back(ToSwarm::CloseConnection {
                        peer_id: peer,
                        connection: CloseConnection::One(connection),
                    });
                    match reason {
                        CloseReason::RelayedReplaced if !relayed_closed.contains(&peer) => {
                            relayed_closed.push(peer);
                            self.wire.local(
                                Topic::Webrtc,
                                Some(peer),
                                "relayed connection closed: the direct one carries everything",
                            );
                        }
                        CloseReason::RelayedReplaced => {}
                        CloseReason::DuplicateDirect => self.wire.local(
                            Topic::Webrtc,
                            Some(peer),
                            "two direct connections: keeping the one the smaller id dialed",
                        ),
                    }
                }
                UpgradeAction::Failed { peer, error } => self.wire.local(
                    Topic::Webrtc,
                    Some(peer),
                    format!("direct connection failed, staying relayed: {error}"),
                ),
            }
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = THandler<Signaling>;
    type ToSwarm = Report;

    forward_to!(signaling: established_inbound, pending_outbound, established_outbound, handler_event);

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        // A peer's offer arrived: do not cross it with one of ours.
        if is_webrtc(remote_addr)
            && let Some(Protocol::P2p(peer)) = remote_addr.iter().last()
        {
            self.upgrades.on_remote_attempt(Instant::now(), peer);
        }
        self.signaling
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        let now = Instant::now();
        match &event {
            FromSwarm::ConnectionEstablished(e) => {
                if let Some(kind) = upgrade_kind(e.endpoint) {
                    let change = self.upgrades.on_connection_established(
                        now,
                        e.peer_id,
                        e.connection_id,
                        kind,
                        e.endpoint.is_dialer(),
                    );
                    if let LinkChange::DirectUp { upgrade_ms } = change {
                        let took = upgrade_ms
                            .map(|ms| format!(" ({ms} ms after the relayed one)"))
                            .unwrap_or_default();
                        self.wire.local(
                            Topic::Webrtc,
                            Some(e.peer_id),
                            format!("direct WebRTC connection up{took}"),
                        );
                    }
                }
            }
            FromSwarm::ConnectionClosed(e) => {
                let change = self
                    .upgrades
                    .on_connection_closed(now, e.peer_id, e.connection_id);
                if change == LinkChange::DirectLost {
                    let cause = e
                        .cause
                        .map_or_else(|| "closed".to_owned(), |c| c.to_string());
                    self.wire.local(
                        Topic::Webrtc,
                        Some(e.peer_id),
                        format!("direct connection lost ({cause}); relayed again"),
                    );
                }
            }
            FromSwarm::DialFailure(e) => {
                let text = dial_failure_text(e.error);
                let shown = truncate(&text, 300);
                if let Some(peer) = self.upgrades.on_dial_failed(now, e.connection_id, shown) {
                    tracing::info!(%peer, %text, "direct WebRTC connection failed");
                    self.wire.local(
                        Topic::Webrtc,
                        Some(peer),
                        format!(
                            "direct connection failed, staying relayed: {}",
                            truncate(&text, 160)
                        ),
                    );
                }
            }
            // Our circuit address is up (the reservation was accepted): peers can reach us on
            // `/webrtc` through the same relay.
            FromSwarm::NewListenAddr(e)
                if is_relayed(e.addr)
                    && self.upgrades.is_enabled()
                    && self.listener.is_none()
                    && self.behind_our_relay_addr(e.addr) =>
            {
                let opts = ListenOpts::new(webrtc_listen_addr(e.addr));
                self.listener = Some(opts.listener_id());
                self.events.push_back(ToSwarm::ListenOn { opts });
            }
            FromSwarm::ExpiredListenAddr(e) if is_relayed(e.addr) => {
                if let Some(id) = self.listener.take() {
                    self.events.push_back(ToSwarm::RemoveListener { id });
                }
            }
            FromSwarm::ListenerClosed(e) if Some(e.listener_id) == self.listener => {
                self.listener = None;
            }
            _ => {}
        }
        self.signaling.on_swarm_event(event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Report, THandlerInEvent<Self>>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(event);
            }
            match self.signaling.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(tabmesh_webrtc::Event::Violation {
                    peer,
                    reason,
                })) => {
                    self.report(Report::Misbehaved {
                        peer,
                        topic: Topic::Webrtc,
                        reason,
                    });
                    continue;
                }
                Poll::Ready(other) => {
                    return Poll::Ready(other.map_out(|_| unreachable!("handled above")));
                }
                Poll::Pending => {}
            }
            let actions = self.upgrades.poll(Instant::now());
            if !actions.is_empty() {
                self.apply(actions);
                continue;
            }
            if self
                .timer
                .poll_at(self.upgrades.poll_timeout(), cx)
                .is_pending()
            {
                return Poll::Pending;
            }
        }
    }
}

/// Why a direct dial failed, for the Peers panel and the Event log: the transport's own words,
/// without the address dialed. That address (the peer's `/webrtc` address behind the relay)
/// names the relay and two peer ids, ~200 characters: with it first, the text cut to fit the
/// panel ended before the cause ("Failed to negotiate transport protocol(s): [(/ip4/…").
fn dial_failure_text(error: &DialError) -> String {
    match error {
        DialError::Transport(attempts) if !attempts.is_empty() => {
            let mut causes: Vec<String> = Vec::new();
            for (_, why) in attempts {
                let mut why = transport_error_text(why);
                if why.is_empty() {
                    why = "no reason given".to_owned();
                }
                if !causes.contains(&why) {
                    causes.push(why);
                }
            }
            causes.join("; ")
        }
        other => error_chain(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_dial_says_why_without_the_address() {
        use libp2p::core::transport::TransportError;
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/9091/ws/p2p/12D3KooWNS3VLfddC167V74FaeCbaxbYJj6ZJJmCh7uMtmXehf1X/p2p-circuit/webrtc/p2p/12D3KooWKKFfRqFZ2K2rNkz2SKENtWMB3oXzPdZV5WrFpBhRbgLY"
            .parse()
            .unwrap();
        let error = DialError::Transport(vec![(
            addr.clone(),
            TransportError::Other(std::io::Error::other("no answer to the offer in 10 s")),
        )]);
        assert_eq!(dial_failure_text(&error), "no answer to the offer in 10 s");
        // The same cause twice is said once; another one is added.
        let error = DialError::Transport(vec![
            (
                addr.clone(),
                TransportError::Other(std::io::Error::other("ICE failed")),
            ),
            (
                addr.clone(),
                TransportError::Other(std::io::Error::other("ICE failed")),
            ),
            (addr, TransportError::Other(std::io::Error::other("closed"))),
        ]);
        assert_eq!(dial_failure_text(&error), "ICE failed; closed");
        assert_eq!(
            dial_failure_text(&DialError::NoAddresses),
            DialError::NoAddresses.to_string()
        );
    }

    #[test]
    fn webrtc_listens_behind_the_circuit_not_behind_our_own_id() {
        let circuit: Multiaddr = "/ip4/127.0.0.1/tcp/9091/ws/p2p/12D3KooWNS3VLfddC167V74FaeCbaxbYJj6ZJJmCh7uMtmXehf1X/p2p-circuit/p2p/12D3KooWKKFfRqFZ2K2rNkz2SKENtWMB3oXzPdZV5WrFpBhRbgLY"
            .parse()
            .unwrap();
        let listen = webrtc_listen_addr(&circuit);
        assert_eq!(
            listen.to_string(),
            "/ip4/127.0.0.1/tcp/9091/ws/p2p/12D3KooWNS3VLfddC167V74FaeCbaxbYJj6ZJJmCh7uMtmXehf1X/p2p-circuit/webrtc"
        );
        assert!(tabmesh_webrtc::addr::is_listen_addr(&listen));
    }

    /// Regression: with more peers due than attempts allowed at once, the schedule used to
    /// report a deadline already past that it could not act on, and the poll loop spun forever
    /// (a tab with more than four peers to dial froze).
    #[test]
    // `DirectTransport` is a unit struct natively, not in a tab.
    #[allow(clippy::default_constructed_unit_structs)]
    fn peers_due_beyond_the_attempt_limit_do_not_spin_the_poll_loop() {
        use libp2p::core::{ConnectedPoint, Endpoint};
        use libp2p::swarm::behaviour::ConnectionEstablished;
        use libp2p::swarm::{FromSwarm, NetworkBehaviour, ToSwarm};
        use std::task::{Context, Poll};

        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let local = libp2p::identity::Keypair::generate_ed25519()
                .public()
                .to_peer_id();
            let config = UpgradeConfig {
                first_delay: web_time::Duration::ZERO,
                takeover_delay: web_time::Duration::ZERO,
                max_concurrent: 1,
                settle: web_time::Duration::ZERO,
                ..UpgradeConfig::default()
            };
            let (signaling, _streams) = tabmesh_webrtc::behaviour::new();
            let webrtc = WebRtc {
                signaling,
                transport: DirectTransport::default(),
            };
            let mut direct = Behaviour::new(local, config, Some(webrtc), true, WireSink::discard());
            let relay: Multiaddr =
                "/memory/1/p2p/12D3KooWNS3VLfddC167V74FaeCbaxbYJj6ZJJmCh7uMtmXehf1X"
                    .parse()
                    .unwrap();
            for n in 0..3u64 {
                let peer = libp2p::identity::Keypair::generate_ed25519()
                    .public()
                    .to_peer_id();
                let endpoint = ConnectedPoint::Dialer {
                    address: relay
                        .clone()
                        .with(Protocol::P2pCircuit)
                        .with(Protocol::P2p(peer)),
                    role_override: Endpoint::Dialer,
                    port_use: libp2p::core::transport::PortUse::Reuse,
                };
                direct.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
                    peer_id: peer,
                    connection_id: ConnectionId::new_unchecked(n as usize),
                    endpoint: &endpoint,
                    failed_addresses: &[],
                    other_established: 0,
                }));
                let webrtc_addr = relay
                    .clone()
                    .with(Protocol::P2pCircuit)
                    .with(Protocol::WebRTC);
                direct.on_identified(peer, "test", &[webrtc_addr]);
            }
            let mut cx = Context::from_waker(futures::task::noop_waker_ref());
            let mut dials = 0;
            // One dial may start; then the poll must come back without one.
            loop {
                match direct.poll(&mut cx) {
                    Poll::Ready(ToSwarm::Dial { .. }) => dials += 1,
                    Poll::Ready(_) => {}
                    Poll::Pending => break,
                }
            }
            let _ = done_tx.send(dials);
        });
        let dials = done_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the poll loop came back");
        assert_eq!(dials, 1);
    }

    #[test]
    fn webrtc_listens_behind_the_relay_address_we_reached() {
        let local = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let mut direct = Behaviour::new(
            local,
            UpgradeConfig::default(),
            None,
            false,
            WireSink::discard(),
        );
        let circuit = |relay: &str| -> Multiaddr {
            format!("{relay}/p2p/12D3KooWNS3VLfddC167V74FaeCbaxbYJj6ZJJmCh7uMtmXehf1X/p2p-circuit")
                .parse()
                .unwrap()
        };
        // Before the relay is known, any circuit will do.
        assert!(direct.behind_our_relay_addr(&circuit("/ip4/127.0.0.1/tcp/9090")));
        direct.set_relay(&"/ip4/127.0.0.1/tcp/9091/ws".parse().unwrap(), &[]);
        assert!(direct.behind_our_relay_addr(&circuit("/ip4/127.0.0.1/tcp/9091/ws")));
        assert!(!direct.behind_our_relay_addr(&circuit("/ip4/127.0.0.1/tcp/9090")));
    }
}
