//! The misbehaviour ledger as a libp2p behaviour: one policy for every protocol.
//!
//! The rules are `tabmesh_core::ledger`'s. This behaviour applies them where libp2p decides
//! about connections, as libp2p's own connection-management behaviours (`allow-block-list`,
//! `connection-limits`) do: a banned peer's connections are denied before any protocol handler
//! exists for them, so nothing it sends is read, judged or counted again; when a strike bans a
//! peer, all its connections are closed. Every protocol reports a violation as
//! [`Report::Misbehaved`], which the node passes to [`Behaviour::strike`]; the relay runs the
//! same behaviour.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};
use tabmesh_core::ledger::{BanView, Ledger, LedgerConfig, LedgerCounters, Verdict};
use tabmesh_core::names::peer_name;
use tabmesh_core::wire_log::Topic;
use web_time::Instant;

use crate::report::{Report, WireSink};
use crate::timer::Timer;

/// The misbehaviour ledger of a peer.
pub struct Behaviour {
    ledger: Ledger,
    events: VecDeque<ToSwarm<Report, Infallible>>,
    wire: WireSink,
    timer: Timer,
}

impl Behaviour {
    /// A ledger with `config`'s policy, logging to `wire`.
    pub fn new(config: LedgerConfig, wire: WireSink) -> Self {
        Self {
            ledger: Ledger::new(config),
            events: VecDeque::new(),
            wire,
            timer: Timer::default(),
        }
    }

    /// `peer` broke a rule of `topic`. Bans it (disconnecting it) when that was one strike too
    /// many.
    pub fn strike(&mut self, peer: PeerId, topic: Topic, reason: &str) {
        let now = Instant::now();
        match self.ledger.strike(now, peer, topic, reason) {
            Verdict::Keep { strikes } => {
                tracing::info!(%peer, %topic, reason, strikes, "peer misbehaved");
                self.wire.local(
                    topic,
                    Some(peer),
                    format!(
                        "strike {strikes} of {}: {reason}",
                        self.ledger.config().max_strikes
                    ),
                );
            }
            Verdict::Ban(ban) => {
                let length = seconds(ban.until.saturating_duration_since(ban.since));
                tracing::warn!(%peer, reason = %ban.reason, length, offence = ban.offence, "peer banned");
                self.wire.local(
                    Topic::Ban,
                    Some(peer),
                    format!("banned for {length} (ban #{}): {}", ban.offence, ban.reason),
                );
                self.events.push_back(ToSwarm::CloseConnection {
                    peer_id: peer,
                    connection: CloseConnection::All,
                });
            }
            // Input still in flight from a peer being disconnected.
            Verdict::AlreadyBanned => {}
        }
    }

    /// Never ban `peer` (a node's relay: refusing it would cut the node off).
    pub fn exempt(&mut self, peer: PeerId) {
        self.ledger.exempt(peer);
    }

    /// Strikes against `peer` now.
    pub fn strikes(&self, peer: &PeerId) -> u32 {
        self.ledger.strikes(Instant::now(), peer)
    }

    /// The bans in force.
    pub fn view(&self) -> Vec<BanView> {
        self.ledger.view(Instant::now())
    }

    /// Totals since start.
    pub fn counters(&self) -> LedgerCounters {
        self.ledger.counters()
    }

    /// Denies a connection of a banned peer.
    fn admit(&mut self, peer: PeerId) -> Result<(), ConnectionDenied> {
        let refused = match self.ledger.admit(Instant::now(), &peer) {
            Ok(()) => return Ok(()),
            Err(refused) => refused,
        };
        if refused.attempts == 1 {
            self.wire.local(
                Topic::Ban,
                Some(peer),
                format!("connection refused: {refused}"),
            );
        }
        tracing::debug!(peer = %peer_name(&peer), %refused, "connection refused");
        Err(ConnectionDenied::new(refused))
    }
}

/// "0.8 s", "60 s".
fn seconds(d: web_time::Duration) -> String {
    if d.as_secs() < 10 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} s", d.as_secs())
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Report;

    fn handle_established_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit(peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        _addresses: &[Multiaddr],
        _effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        // Do not even dial a banned peer.
        if let Some(peer) = maybe_peer {
            self.admit(peer)?;
        }
        Ok(Vec::new())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit(peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _event: FromSwarm<'_>) {}

    fn on_connection_handler_event(
        &mut self,
        _peer_id: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Report, THandlerInEvent<Self>>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(event);
            }
            for peer in self.ledger.poll(Instant::now()) {
                self.wire.local(
                    Topic::Ban,
                    Some(peer),
                    "ban ended: connections accepted again",
                );
            }
            if !self.events.is_empty() {
                continue;
            }
            if self
                .timer
                .poll_at(self.ledger.poll_timeout(), cx)
                .is_pending()
            {
                return Poll::Pending;
            }
        }
    }
}
