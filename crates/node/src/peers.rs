//! The connected peers: who they are (identify), how fast they answer (ping), how they are
//! reached, and the table behind the Peers panel.
//!
//! This behaviour wraps libp2p's identify and ping and keeps `tabmesh_core::peers::PeerTable`:
//! it admits a new peer's connection only while the table has room (denied at the handshake, as
//! `connection-limits` does), closes a connection after too many failed pings in a row, and logs
//! connections opened, closed and failed. A malformed identify exchange or a ping echo that is
//! not ours is a violation, reported for the misbehaviour ledger; a slow or missing ping answer
//! is not (a busy or throttled tab is slow, not hostile). The relay is tracked apart: it is
//! not a peer of the table, only its round-trip time is kept.
//!
//! It also keeps the dial backoff (`tabmesh_core::dial_backoff`): after a dial that reached none
//! of a peer's addresses, any behaviour's further dials to that peer are refused here, before
//! anything goes on the wire, until its wait is over or a connection to it comes up. Without it,
//! a departed peer is dialed again by every lookup that names it (see the core module).
//!
//! And it settles dials that cross (`tabmesh_core::crossing_dials`): two peers named to each
//! other at the same moment both dial through the relay; of the two, the smaller peer id's is
//! kept. The other side's circuit is refused here when it arrives while our dial to it is on its
//! way, and a failed dial to a peer with a smaller id is held half a second before it counts,
//! since that peer's refusal can overtake its circuit through the relay.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::swarm::behaviour::{ConnectionClosed, ConnectionEstablished};
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, DialError, DialFailure, FromSwarm,
    ListenError, ListenFailure, NetworkBehaviour, THandler, THandlerInEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, identify, ping};
use serde::{Deserialize, Serialize};
use tabmesh_core::crossing_dials::{CrossingDials, Failed, Incoming};
use tabmesh_core::dial_backoff::{DialBackoff, DialBackoffConfig};
use tabmesh_core::peers::{
    Admission, ConnectionKind, PeerTable, PeerTableConfig, PeerView, Verdict,
};
use tabmesh_core::protocol;
use tabmesh_core::wire_log::Topic;
use web_time::{Duration, Instant};

use crate::forward::forward_to;
use crate::held_start::HeldStart;
use crate::report::{Report, WireSink, error_chain, truncate};
use crate::timer::Timer;

/// Whether a failed identify exchange was the peer's fault, and why: it sent a message that does
/// not decode (a bad protobuf, address or public key). A timeout, a closed stream or connection,
/// or a peer without identify is not: a peer that is busy, throttled or just killed looks like
/// that, and banning it would punish churn (found by the soak, where killed peers and a busy
/// machine had honest peers banned for "Timeout error while opening a substream").
pub fn identify_violation(
    error: &libp2p::swarm::StreamUpgradeError<identify::UpgradeError>,
) -> Option<String> {
    use identify::UpgradeError;
    use libp2p::swarm::StreamUpgradeError;
    match error {
        // The codec also passes on the stream's I/O errors (a connection reset mid-message):
        // only what does not decode (invalid data) is the peer's fault.
        StreamUpgradeError::Apply(UpgradeError::Codec(e)) if !invalid_data(e) => None,
        StreamUpgradeError::Apply(
            e @ (UpgradeError::Codec(_) | UpgradeError::Multiaddr(_) | UpgradeError::PublicKey(_)),
        ) => Some(format!(
            "malformed identify message: {}",
            truncate(&error_chain(e), 120)
        )),
        StreamUpgradeError::Apply(UpgradeError::Io(_) | UpgradeError::StreamClosed)
        | StreamUpgradeError::Timeout
        | StreamUpgradeError::NegotiationFailed
        | StreamUpgradeError::Io(_) => None,
    }
}

/// Whether `error`, or an error it wraps, is an I/O error of kind invalid data: how libp2p's
/// codecs report bytes that do not decode, apart from the stream's own failures.
fn invalid_data(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source())
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::InvalidData)
}

/// Whether a dial reached none of the peer's addresses, not counting `/webrtc` ones (a failed
/// direct upgrade says nothing about whether the peer is still there): the dial backoff and the
/// DHT's forgetting of departed peers both go by it.
pub fn reached_no_address(error: &DialError) -> bool {
    matches!(error, DialError::Transport(tried)
        if !tried.iter().all(|(a, _)| tabmesh_webrtc::addr::is_webrtc(a)))
}

/// Whether a failed dial was made at all. The swarm also reports, as failures, dials it
/// refused to start because the peer was connected or being dialed by then (two protocols, or
/// both ends of a pair, reaching for the same peer at once) and dials our own clean-up
/// aborted: nothing failed there, and 24 tabs joining at once logged a handful of such
/// "dial failed" lines per tab.
pub fn dial_was_made(error: &DialError) -> bool {
    !matches!(
        error,
        DialError::DialPeerConditionFalse(_) | DialError::Aborted
    )
}

mod protocols {
    // The derive generates `ProtocolsEvent` with one undocumented variant per field.
    #![allow(missing_docs)]
    use libp2p::{identify, ping};

    /// libp2p's identify and ping, the protocols the peers behaviour wraps.
    #[derive(libp2p::swarm::NetworkBehaviour)]
    #[behaviour(prelude = "libp2p::swarm::derive_prelude")]
    pub struct Protocols {
        pub(super) identify: identify::Behaviour,
        pub(super) ping: crate::held_start::HeldStart<ping::Behaviour>,
    }
}

pub use protocols::{Protocols, ProtocolsEvent};

/// Counters of connections refused, failed or closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCounters {
    /// Incoming connections that failed before being established.
    pub incoming_errors: u64,
    /// Outgoing dials that failed.
    pub dial_failures: u64,
    /// Connections closed for failed pings.
    pub disconnects: u64,
    /// Connections refused because the peer table was full.
    pub refused: u64,
    /// Dials refused locally: the peer was unreachable a moment ago (dial backoff).
    pub backed_off: u64,
    /// Dials that crossed the peer's dial to us (one of the two was refused).
    #[serde(default)]
    pub crossed_dials: u64,
}

/// Whether a connection goes through a relay circuit or straight to the peer. In a tab, a
/// `/webrtc` address names the relay it was signaled through, but the connection is direct. A
/// native node has no WebRTC transport: its relay client takes a tab's `/webrtc` address as a
/// plain circuit, so there such a connection is relayed.
pub fn connection_kind(endpoint: &ConnectedPoint) -> ConnectionKind {
    let direct_webrtc = cfg!(target_arch = "wasm32")
        && tabmesh_webrtc::addr::is_webrtc(endpoint.get_remote_address());
    if endpoint.is_relayed() && !direct_webrtc {
        ConnectionKind::Relayed
    } else {
        ConnectionKind::Direct
    }
}

/// The peers of a node.
pub struct Behaviour {
    inner: Protocols,
    table: PeerTable<ConnectionId>,
    origin: Instant,
    relay: Option<PeerId>,
    relay_rtt: Option<Duration>,
    counters: PeerCounters,
    backoff: DialBackoff<PeerId>,
    /// The crossing rules, holding for a moment the failed dials they may explain (`None`: a
    /// failure not to log, a dial never made say).
    crossing: CrossingDials<PeerId, ConnectionId, Option<DialFailed>>,
    timer: Timer,
    events: VecDeque<ToSwarm<Report, THandlerInEvent<Protocols>>>,
    wire: WireSink,
}

impl Behaviour {
    /// The peers of `key`'s node, announcing `agent`, pinging each connection every
    /// `ping_interval` from `first_ping_after` after it opened; timestamps count from `origin`;
    /// log lines go to `wire`.
    pub fn new(
        key: &libp2p::identity::Keypair,
        agent: String,
        ping_interval: Duration,
        first_ping_after: Duration,
        config: PeerTableConfig,
        origin: Instant,
        wire: WireSink,
    ) -> Self {
        Self {
            inner: Protocols {
                identify: identify::Behaviour::new(
                    identify::Config::new(protocol::IDENTIFY_VERSION.to_owned(), key.public())
                        .with_agent_version(agent)
                        // Announce our circuit address as soon as the reservation is up.
                        .with_push_listen_addr_updates(true),
                ),
                ping: HeldStart::new(
                    ping::Behaviour::new(
                        ping::Config::new()
                            .with_interval(ping_interval)
                            .with_timeout(Duration::from_secs(10)),
                    ),
                    first_ping_after,
                ),
            },
            table: PeerTable::new(config),
            origin,
            relay: None,
            relay_rtt: None,
            counters: PeerCounters::default(),
            backoff: DialBackoff::new(DialBackoffConfig::default()),
            crossing: CrossingDials::new(key.public().to_peer_id()),
            timer: Timer::default(),
            events: VecDeque::new(),
            wire,
        }
    }

    /// The relay is `peer`: it is tracked apart from the table.
    pub fn set_relay(&mut self, peer: PeerId) {
        self.relay = Some(peer);
        self.relay_rtt = None;
    }

    /// Something arrived from `peer` on an application protocol.
    pub fn on_heard(&mut self, peer: &PeerId) {
        self.table.on_heard(Instant::now(), peer);
    }

    /// Whether `peer` is connected.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.table.contains(peer)
    }

    /// How `peer` is reached, if it is connected.
    pub fn connection(&self, peer: &PeerId) -> Option<ConnectionKind> {
        self.table.contains(peer).then(|| {
            if self.table.is_direct(peer) {
                ConnectionKind::Direct
            } else {
                ConnectionKind::Relayed
            }
        })
    }

    /// Round trip of the last ping to the relay.
    pub fn relay_rtt(&self) -> Option<Duration> {
        self.relay_rtt
    }

    /// Counters of refused, failed and closed connections.
    pub fn counters(&self) -> PeerCounters {
        PeerCounters {
            backed_off: self.backoff.refused(),
            crossed_dials: self.crossing.crossed(),
            ..self.counters
        }
    }

    /// The Peers panel, each peer completed by `extra` (upgrade state, strikes).
    pub fn view(&self, extra: impl FnMut(&PeerId, &mut PeerView)) -> Vec<PeerView> {
        self.table.view_with(Instant::now(), self.origin, extra)
    }

    fn is_relay(&self, peer: &PeerId) -> bool {
        self.relay.as_ref() == Some(peer)
    }

    fn report(&mut self, report: Report) {
        self.events.push_back(ToSwarm::GenerateEvent(report));
    }

    /// Room for a new peer in the table? (Connections of known peers and the relay always are.)
    fn admit(&mut self, peer: &PeerId) -> Result<(), ConnectionDenied> {
        if self.is_relay(peer) || self.table.contains(peer) || self.table.has_room() {
            return Ok(());
        }
        self.counters.refused += 1;
        self.wire
            .local(Topic::Conn, Some(*peer), "refused: peer table full");
        Err(ConnectionDenied::new(TableFull))
    }

    fn on_connection_established(&mut self, now: Instant, e: &ConnectionEstablished<'_>) {
        self.crossing.on_established(&e.connection_id);
        self.backoff.connected(&e.peer_id);
        if self.is_relay(&e.peer_id) {
            return;
        }
        let kind = connection_kind(e.endpoint);
        if self
            .table
            .on_connection_established(now, e.peer_id, e.connection_id, kind)
            == Admission::Refused
        {
            // Admitted at the handshake, but the table filled up meanwhile.
            self.counters.refused += 1;
            self.events.push_back(ToSwarm::CloseConnection {
                peer_id: e.peer_id,
                connection: CloseConnection::One(e.connection_id),
            });
            return;
        }
        let how = match kind {
            ConnectionKind::Relayed => "relayed",
            ConnectionKind::Direct => "direct",
        };
        let who = if e.endpoint.is_dialer() {
            "dialed"
        } else {
            "accepted"
        };
        self.wire.local(
            Topic::Conn,
            Some(e.peer_id),
            format!("{who} {how} connection"),
        );
    }

    fn on_connection_closed(&mut self, e: &ConnectionClosed<'_>) {
        if self.is_relay(&e.peer_id) {
            if e.remaining_established == 0 {
                self.relay_rtt = None;
            }
            return;
        }
        if self.table.on_connection_closed(&e.peer_id, e.connection_id) {
            let cause = e
                .cause
                .map_or_else(|| "closed".to_owned(), |c| c.to_string());
            self.wire.local(
                Topic::Conn,
                Some(e.peer_id),
                format!("disconnected: {cause}"),
            );
        }
    }

    fn on_dial_failure(&mut self, now: Instant, e: &DialFailure<'_>) {
        let circuit_failed = matches!(e.error, DialError::Transport(tried)
            if !tried.is_empty() && tried.iter().all(|(a, _)| crate::relay_link::is_relayed(a)));
        // The relay link logs its own failures, the upgrade rules theirs (dials of `/webrtc`
        // addresses only), the denying behaviour its refusals.
        let webrtc_only = matches!(e.error, DialError::Transport(tried)
            if !tried.is_empty() && tried.iter().all(|(a, _)| tabmesh_webrtc::addr::is_webrtc(a)));
        let failed = e
            .peer_id
            .filter(|_| dial_was_made(e.error))
            .map(|peer| DialFailed {
                peer,
                text: error_chain(e.error),
                reached_no_address: reached_no_address(e.error),
                quiet: self.is_relay(&peer)
                    || webrtc_only
                    || matches!(e.error, DialError::Denied { .. }),
            });
        match self
            .crossing
            .on_failed(&e.connection_id, circuit_failed, failed, now)
        {
            Failed::Failed(failed) if dial_was_made(e.error) => {
                self.dial_failed(now, failed);
            }
            Failed::Held => {}
            Failed::Yielded | Failed::Failed(_) => {
                tracing::debug!(peer = ?e.peer_id, "dial not made or refused for crossing: {}", e.error);
            }
        }
    }

    /// A dial failed (and the crossing rules do not explain it); `None`: a dial without a peer
    /// id, counted only.
    fn dial_failed(&mut self, now: Instant, failed: Option<DialFailed>) {
        self.counters.dial_failures += 1;
        let Some(failed) = failed.filter(|f| !f.quiet) else {
            return;
        };
        let DialFailed { peer, text, .. } = failed;
        tracing::debug!(%peer, %text, "dial failed");
        // Every address was tried and none answered: the peer waits before the next dial. (A
        // second connection that failed while one is up says nothing about the peer.)
        let wait = if failed.reached_no_address && !self.table.contains(&peer) {
            let wait = self.backoff.failed(now, peer);
            format!("; not dialed again for {} s", wait.as_secs())
        } else {
            String::new()
        };
        self.wire.local(
            Topic::Conn,
            Some(peer),
            format!("dial failed: {}{wait}", truncate(&text, 160)),
        );
    }

    fn on_listen_failure(&mut self, now: Instant, e: &ListenFailure<'_>) {
        self.crossing.on_failed(&e.connection_id, false, None, now);
        if let ListenError::Denied { cause } = e.error {
            if cause.downcast_ref::<CrossedDial>().is_none() {
                self.counters.incoming_errors += 1;
            }
            return;
        }
        self.counters.incoming_errors += 1;
        let text = format!(
            "incoming connection from {} failed: {}",
            e.send_back_addr,
            error_chain(e.error)
        );
        tracing::info!("{text}");
        self.wire.local(Topic::Conn, None, truncate(&text, 200));
    }

    fn on_identify(&mut self, now: Instant, event: identify::Event) {
        match event {
            identify::Event::Received {
                peer_id,
                info,
                connection_id,
            } => {
                self.report(Report::Answered {
                    peer: peer_id,
                    connection: connection_id,
                });
                self.table.on_identified(now, &peer_id, &info.agent_version);
                self.wire.received(
                    Topic::Identify,
                    Some(peer_id),
                    format!("identify: {}", truncate(&info.agent_version, 40)),
                );
                self.report(Report::Identified {
                    peer: peer_id,
                    agent: info.agent_version,
                    listen_addrs: info.listen_addrs,
                    protocols: info.protocols,
                });
            }
            identify::Event::Pushed { peer_id, .. } | identify::Event::Sent { peer_id, .. } => {
                self.wire.sent(Topic::Identify, Some(peer_id), "identify");
            }
            identify::Event::Error { peer_id, error, .. } => match identify_violation(&error) {
                Some(reason) => self.report(Report::Misbehaved {
                    peer: peer_id,
                    topic: Topic::Identify,
                    reason,
                }),
                None => self.wire.local(
                    Topic::Identify,
                    Some(peer_id),
                    format!(
                        "identify did not complete: {}",
                        truncate(&error_chain(&error), 120)
                    ),
                ),
            },
        }
    }

    fn on_ping(&mut self, now: Instant, event: ping::Event) {
        let peer = event.peer;
        let is_relay = self.is_relay(&peer);
        match event.result {
            Ok(rtt) => {
                if is_relay {
                    self.relay_rtt = Some(rtt);
                } else {
                    self.report(Report::Answered {
                        peer,
                        connection: event.connection,
                    });
                    self.table
                        .on_ping_success(now, &peer, event.connection, rtt);
                }
                let to = if is_relay { " (relay)" } else { "" };
                self.wire.sent(
                    Topic::Ping,
                    Some(peer),
                    format!("ping{to}: {:.1} ms", rtt.as_secs_f64() * 1e3),
                );
            }
            Err(ping::Failure::Other { error }) if answered_wrongly(&*error) => {
                self.report(Report::Misbehaved {
                    peer,
                    topic: Topic::Ping,
                    reason: format!("bad ping reply: {}", truncate(&error.to_string(), 120)),
                });
            }
            Err(_) if is_relay => {}
            Err(error) => match self.table.on_ping_failure(&peer, event.connection) {
                Verdict::Disconnect(reason) => {
                    self.counters.disconnects += 1;
                    self.events.push_back(ToSwarm::CloseConnection {
                        peer_id: peer,
                        connection: CloseConnection::One(event.connection),
                    });
                    self.wire.local(
                        Topic::Ping,
                        Some(peer),
                        format!("closing connection: {reason}"),
                    );
                }
                Verdict::Keep => {
                    self.wire
                        .local(Topic::Ping, Some(peer), format!("ping failed: {error}"))
                }
            },
        }
    }
}

/// A failed dial, as logged.
struct DialFailed {
    peer: PeerId,
    text: String,
    reached_no_address: bool,
    /// Counted, not logged: another part logs it (the relay link, the upgrade, a refusal).
    quiet: bool,
}

/// The reason a circuit is refused when it crossed our own dial to the same peer.
#[derive(Debug, thiserror::Error)]
#[error("it crossed our dial to the same peer, which is the one kept")]
pub struct CrossedDial;

/// The peer a circuit coming in is from (the relay client names it as the connection's remote
/// address); `None` for any other connection, a `/webrtc` one among them.
pub(crate) fn circuit_source(local_addr: &Multiaddr, remote_addr: &Multiaddr) -> Option<PeerId> {
    use libp2p::multiaddr::Protocol;
    if !crate::relay_link::is_relayed(local_addr) {
        return None;
    }
    let mut remote = remote_addr.iter();
    match (remote.next(), remote.next()) {
        (Some(Protocol::P2p(peer)), None) => Some(peer),
        _ => None,
    }
}

/// The reason a connection is denied when the peer table is full.
#[derive(Debug, thiserror::Error)]
#[error("the peer table is full")]
pub struct TableFull;

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = THandler<Protocols>;
    type ToSwarm = Report;

    forward_to!(inner: handler_event);

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        if let Some(peer) = circuit_source(local_addr, remote_addr)
            && !self.is_relay(&peer)
        {
            match self.crossing.on_incoming(connection_id, peer) {
                Incoming::Accept => {}
                Incoming::Crossed => {
                    // Our dial to it is (or was already) refused over there.
                    self.wire.local(
                        Topic::Conn,
                        Some(peer),
                        "its circuit crossed our dial to it: its dial is kept (the smaller peer id's)",
                    );
                }
                Incoming::Refuse => {
                    self.wire.local(
                        Topic::Conn,
                        Some(peer),
                        "refused its circuit: it crossed our dial to it, which is kept (the smaller peer id's)",
                    );
                    return Err(ConnectionDenied::new(CrossedDial));
                }
            }
        }
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        if let Some(peer) = maybe_peer
            && !self.is_relay(&peer)
        {
            self.backoff
                .check(Instant::now(), &peer)
                .map_err(ConnectionDenied::new)?;
            // A direct upgrade's dial (to `/webrtc` addresses) is not one that crosses.
            if !addresses.iter().any(tabmesh_webrtc::addr::is_webrtc) {
                self.crossing.on_dial(connection_id, peer);
            }
        }
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit(&peer)?;
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit(&peer)?;
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        let now = Instant::now();
        match &event {
            FromSwarm::ConnectionEstablished(e) => self.on_connection_established(now, e),
            FromSwarm::ConnectionClosed(e) => self.on_connection_closed(e),
            FromSwarm::DialFailure(e) => self.on_dial_failure(now, e),
            FromSwarm::ListenFailure(e) => self.on_listen_failure(now, e),
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Report, THandlerInEvent<Self>>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(event);
            }
            let now = Instant::now();
            for failed in self.crossing.expired(now) {
                self.dial_failed(now, failed);
            }
            if self
                .timer
                .poll_at(self.crossing.poll_timeout(), cx)
                .is_ready()
            {
                continue;
            }
            match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => {
                    let now = Instant::now();
                    match event {
                        ProtocolsEvent::Identify(e) => self.on_identify(now, e),
                        ProtocolsEvent::Ping(e) => self.on_ping(now, e),
                    }
                }
                Poll::Ready(other) => {
                    return Poll::Ready(other.map_out(|_| unreachable!("handled above")));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Whether a ping failed because the peer answered with something other than our own bytes
/// (libp2p's ping reports it as invalid data): a protocol violation, for the misbehaviour
/// ledger. Its other failures (the protocol negotiation timing out, the stream lost) are a
/// slow or unreachable peer, not a misbehaving one: they count as failed pings.
fn answered_wrongly(error: &(dyn std::error::Error + Send + 'static)) -> bool {
    invalid_data(error)
}

#[cfg(test)]
mod tests {
    use std::io;

    use identify::UpgradeError;
    use libp2p::swarm::StreamUpgradeError;

    use super::*;

    #[test]
    fn a_dial_refused_because_the_peer_is_connected_is_no_failure() {
        use libp2p::swarm::dial_opts::PeerCondition;
        for condition in [
            PeerCondition::Disconnected,
            PeerCondition::NotDialing,
            PeerCondition::DisconnectedAndNotDialing,
        ] {
            assert!(!dial_was_made(&DialError::DialPeerConditionFalse(
                condition
            )));
        }
        assert!(!dial_was_made(&DialError::Aborted));
        assert!(dial_was_made(&DialError::NoAddresses));
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().expect("an address");
        let tried = vec![(addr, libp2p::TransportError::Other(refused))];
        assert!(dial_was_made(&DialError::Transport(tried)));
    }

    #[test]
    fn only_a_wrong_echo_is_misbehaviour_not_a_slow_or_lost_ping() {
        let wrong = io::Error::new(io::ErrorKind::InvalidData, "Ping payload mismatch");
        assert!(answered_wrongly(&wrong));
        let slow = io::Error::new(
            io::ErrorKind::TimedOut,
            "ping protocol negotiation timed out",
        );
        assert!(!answered_wrongly(&slow));
        let lost = io::Error::new(io::ErrorKind::ConnectionReset, "stream reset");
        assert!(!answered_wrongly(&lost));
        let other = std::fmt::Error;
        assert!(!answered_wrongly(&other));
    }

    #[test]
    fn a_message_that_does_not_decode_is_a_violation() {
        let bad_key = libp2p::identity::PublicKey::try_decode_protobuf(&[1, 2, 3])
            .expect_err("three bytes are no public key");
        let bad_addr = Multiaddr::try_from(vec![0xff, 0xff, 0xff]).expect_err("not an address");
        let bad_bytes = prost_codec::Error::from(io::Error::new(
            io::ErrorKind::InvalidData,
            "failed to decode Protobuf message",
        ));
        for error in [
            UpgradeError::PublicKey(bad_key),
            UpgradeError::Multiaddr(bad_addr),
            UpgradeError::Codec(bad_bytes),
        ] {
            let reason = identify_violation(&StreamUpgradeError::Apply(error));
            assert!(
                reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("malformed identify message")),
                "{reason:?}"
            );
        }
    }

    #[test]
    fn a_slow_closed_or_silent_peer_is_not_a_violation() {
        let io = || io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        for error in [
            StreamUpgradeError::Timeout,
            StreamUpgradeError::NegotiationFailed,
            StreamUpgradeError::Io(io()),
            StreamUpgradeError::Apply(UpgradeError::StreamClosed),
            StreamUpgradeError::Apply(UpgradeError::Io(io())),
            // What the soak saw: a connection reset while identify read, through its codec.
            StreamUpgradeError::Apply(UpgradeError::Codec(prost_codec::Error::from(io()))),
        ] {
            assert_eq!(identify_violation(&error), None, "{error:?}");
        }
    }
}
