//! Moving peers from relayed to direct connections: every rule of the upgrade in one place.
//!
//! Two tabs meet through a relay circuit and then move to a direct WebRTC connection; the relay
//! is only for meeting. [`DirectUpgrades`] holds the whole bookkeeping of that move for one
//! node, in the manner of `libp2p-dcutr`, which owns its relayed-to-direct state end to end;
//! the libp2p behaviour around it only translates swarm events and carries out its actions:
//!
//! 1. **Who dials when** ([`schedule`]): the side that dialed the relayed connection leads, as
//!    in the libp2p WebRTC spec (the dialer of `<relay>/p2p-circuit/webrtc` offers over that
//!    circuit, as js-libp2p does): it dials after `first_delay`; the side that was dialed waits
//!    `takeover_delay` for the leader's offer and dials only if nothing direct appeared (covers
//!    peers that never upgrade by themselves, such as js-libp2p nodes dialing a plain circuit).
//!    A leader known to run these rules (a tabmesh tab, by its identify agent) is given
//!    `patient_takeover_delay` instead: its offer is sure to come, though a tab meeting many
//!    peers at once queues its attempts (`max_concurrent`), and an offer of ours sent sooner
//!    would cross it (24 tabs on two cores: ~170 pairs with two direct connections a run).
//!    If both dialed a relayed connection, the smaller peer id leads (looked at again as each
//!    relayed connection comes up: each side may see the other's first). An offer from the
//!    peer postpones ours; failures back off exponentially; few attempts at once. While peers
//!    keep arriving through the relay (tabs opened together), attempts wait until none has
//!    arrived for `settle` (at most `max_settle`): the join comes first.
//! 2. **What to dial**: the `/webrtc` addresses the peer announced (identify), at most
//!    `max_addrs_per_peer`, forgotten when the peer is gone. A peer without one is never dialed.
//! 3. **Duplicates**: if both sides still offered at once and two direct connections came up,
//!    both sides keep the one the smaller peer id dialed (of several it dialed, the newest) and
//!    close the other, so they agree without talking. Only connections the peer answered on
//!    count (rule 4): one it never answered on is not a duplicate but a dead end, and keeping
//!    it would close the live one.
//! 4. **The relayed connection goes**: `relayed_grace` after the peer first answered on a direct
//!    connection (requests in flight finish), every relayed connection to the peer is closed,
//!    also one that arrives later (the peer's discovery dial). Up is not enough: a handshake
//!    can finish on one side just as the other gives up on it (its dial timed out), and the
//!    first side then holds a direct connection nobody answers on. Measured with 24 tabs on two
//!    cores, closing the relayed connection at that point lost the pair altogether (40 to 60
//!    pairs a minute), and each lost pair met again through the relay from the start.
//! 5. **A lost direct link is retried**: if the direct connection drops while a relayed one
//!    remains, the attempts start again with the delays of rule 1.
//!
//! `C` is the transport's connection id. Time enters as `now`; actions leave as
//! [`UpgradeAction`]s.

pub mod schedule;

use std::collections::{HashMap, HashSet, VecDeque};

use libp2p_identity::PeerId;
use multiaddr::Multiaddr;

use crate::peers::ConnectionKind;
pub use schedule::{
    ScheduleAction, Turn, UpgradeConfig, UpgradeSchedule, UpgradeState, UpgradeView,
};
use web_time::Instant;

/// Peers whose `/webrtc` addresses are kept at most (connected peers only; the peer table holds
/// at most a few hundred).
const MAX_PEERS_WITH_ADDRS: usize = 1024;

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeAction<C> {
    /// Dial `peer` directly at these addresses, one at a time; report the connection id with
    /// [`DirectUpgrades::on_dialing`] and the outcome with
    /// [`DirectUpgrades::on_connection_established`] or [`DirectUpgrades::on_dial_failed`].
    Dial {
        /// The peer.
        peer: PeerId,
        /// Its `/webrtc` addresses.
        addrs: Vec<Multiaddr>,
    },
    /// Close this connection to `peer`.
    Close {
        /// The peer.
        peer: PeerId,
        /// The connection.
        connection: C,
        /// Why.
        reason: CloseReason,
    },
    /// An attempt could not even start (rule 2); it counts as a failure.
    Failed {
        /// The peer.
        peer: PeerId,
        /// Why.
        error: String,
    },
}

/// Why a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A second direct connection; the other one is kept (rule 3).
    DuplicateDirect,
    /// The relayed connection, once its grace after the direct one is over (rule 4).
    RelayedReplaced,
}

/// What happened to a connection of interest, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkChange {
    /// Nothing worth telling.
    None,
    /// A direct connection is up, `upgrade_ms` after the relayed one (if it was relayed first).
    DirectUp {
        /// Time from the relayed connection to this one.
        upgrade_ms: Option<u64>,
    },
    /// The direct connection dropped while a relayed one remains: we will try again (rule 5).
    DirectLost,
}

#[derive(Debug, Clone)]
struct Link<C> {
    id: C,
    kind: ConnectionKind,
    /// Who dialed it.
    dialer: PeerId,
    /// The peer has answered on it (rule 4).
    answered: bool,
}

/// What the moves to direct connections have cost one node so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpgradeCounters {
    /// Direct connections we dialed: each a WebRTC offer sent through the relay.
    pub offers: u64,
    /// Direct connections we closed because another one to the same peer stays (rule 3): what
    /// crossing offers cost.
    pub duplicates_closed: u64,
    /// Our direct dials that failed (rule 5 retries them after a backoff).
    pub failed: u64,
}

/// The upgrade bookkeeping of one node, for connection ids `C`.
#[derive(Debug, Clone)]
pub struct DirectUpgrades<C> {
    local: PeerId,
    enabled: bool,
    schedule: UpgradeSchedule,
    links: HashMap<PeerId, Vec<Link<C>>>,
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// Connected peers that run these rules themselves (rule 1).
    rule_followers: HashSet<PeerId>,
    dials: HashMap<C, PeerId>,
    relayed_closing: VecDeque<(Instant, PeerId)>,
    counters: UpgradeCounters,
}

impl<C: Copy + Eq + std::hash::Hash> DirectUpgrades<C> {
    /// The rules for node `local`; with `enabled` false (no WebRTC here, or the user keeps the
    /// tab on the relay) nothing is ever dialed, and direct connections opened by the peer are
    /// still resolved by rules 3 and 4.
    pub fn new(local: PeerId, config: UpgradeConfig, enabled: bool) -> Self {
        Self {
            local,
            enabled,
            schedule: UpgradeSchedule::new(local, config),
            links: HashMap::new(),
            addrs: HashMap::new(),
            rule_followers: HashSet::new(),
            dials: HashMap::new(),
            relayed_closing: VecDeque::new(),
            counters: UpgradeCounters::default(),
        }
    }

    /// What the upgrades have cost so far.
    pub fn counters(&self) -> UpgradeCounters {
        self.counters
    }

    /// Whether this node moves peers to direct connections itself.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The configuration.
    pub fn config(&self) -> &UpgradeConfig {
        self.schedule.config()
    }

    /// Whether `peer` is reached over a direct connection.
    pub fn is_direct(&self, peer: &PeerId) -> bool {
        self.links
            .get(peer)
            .is_some_and(|l| l.iter().any(|l| l.kind == ConnectionKind::Direct))
    }

    /// Whether `peer` has answered on a direct connection (rule 4).
    fn answers_directly(&self, peer: &PeerId) -> bool {
        self.links.get(peer).is_some_and(|l| {
            l.iter()
                .any(|l| l.kind == ConnectionKind::Direct && l.answered)
        })
    }

    /// Peers with `/webrtc` addresses known (bounded by connected peers).
    pub fn peers_with_addrs(&self) -> usize {
        self.addrs.len()
    }

    /// `peer` told who it is: `runs_these_rules` when it is a node that applies these same
    /// rules (a tabmesh tab), so that its lead is waited for patiently (rule 1). Before its
    /// addresses ([`on_addresses`](Self::on_addresses)), which plan the first attempt.
    pub fn on_agent(&mut self, peer: PeerId, runs_these_rules: bool) {
        if !runs_these_rules {
            self.rule_followers.remove(&peer);
        } else if self.links.contains_key(&peer) && self.rule_followers.len() < MAX_PEERS_WITH_ADDRS
        {
            self.rule_followers.insert(peer);
        }
    }

    /// `peer` announced these listen addresses; `dialable` keeps the `/webrtc` ones we can dial
    /// (rule 2).
    pub fn on_addresses(
        &mut self,
        now: Instant,
        peer: PeerId,
        dialable: impl IntoIterator<Item = Multiaddr>,
    ) {
        if !self.enabled || peer == self.local || !self.links.contains_key(&peer) {
            return;
        }
        let addrs: Vec<Multiaddr> = dialable
            .into_iter()
            .take(self.config().max_addrs_per_peer)
            .collect();
        if addrs.is_empty() {
            return;
        }
        if !self.addrs.contains_key(&peer) && self.addrs.len() >= MAX_PEERS_WITH_ADDRS {
            return;
        }
        self.addrs.insert(peer, addrs);
        self.maybe_plan(now, peer);
    }

    /// A connection to `peer` is up: relayed (a circuit) or direct (WebRTC); `we_dialed` tells
    /// who dialed it.
    pub fn on_connection_established(
        &mut self,
        now: Instant,
        peer: PeerId,
        id: C,
        kind: ConnectionKind,
        we_dialed: bool,
    ) -> LinkChange {
        self.dials.remove(&id);
        let dialer = if we_dialed { self.local } else { peer };
        let was_direct = self.is_direct(&peer);
        self.links.entry(peer).or_default().push(Link {
            id,
            kind,
            dialer,
            answered: false,
        });
        match kind {
            ConnectionKind::Direct => {
                self.schedule.on_direct_established(now, peer);
                if was_direct {
                    return LinkChange::None;
                }
                let upgrade_ms = self
                    .schedule
                    .peer_view(now, &peer)
                    .and_then(|v| v.upgrade_ms);
                LinkChange::DirectUp { upgrade_ms }
            }
            ConnectionKind::Relayed => {
                self.schedule.on_arrival(now);
                if self.answers_directly(&peer) {
                    // A late relayed connection (the peer's discovery dial): it goes too.
                    self.relayed_closing
                        .push_back((now + self.config().relayed_grace, peer));
                } else if !was_direct {
                    self.maybe_plan(now, peer);
                }
                LinkChange::None
            }
        }
    }

    /// Rule 3: of several direct connections the peer answered on, keep the one the smaller
    /// peer id dialed, the newest of several.
    fn resolve_duplicates(&mut self, peer: PeerId) -> Vec<UpgradeAction<C>> {
        let smaller = if self.schedule.is_smaller(&peer) {
            self.local
        } else {
            peer
        };
        let Some(links) = self.links.get(&peer) else {
            return Vec::new();
        };
        let direct: Vec<&Link<C>> = links
            .iter()
            .filter(|l| l.kind == ConnectionKind::Direct && l.answered)
            .collect();
        if direct.len() < 2 {
            return Vec::new();
        }
        let keep = direct
            .iter()
            .rev()
            .find(|l| l.dialer == smaller)
            .or(direct.last())
            .map(|l| l.id);
        let closes: Vec<_> = direct
            .iter()
            .filter(|l| Some(l.id) != keep)
            .map(|l| UpgradeAction::Close {
                peer,
                connection: l.id,
                reason: CloseReason::DuplicateDirect,
            })
            .collect();
        self.counters.duplicates_closed += closes.len() as u64;
        closes
    }

    /// `peer` answered on connection `id` (identify or ping): a direct connection it answers on
    /// is in use at both ends; of two such, one goes (rule 3), and the relayed ones go after
    /// the grace (rule 4).
    pub fn on_answered(&mut self, now: Instant, peer: PeerId, id: C) -> Vec<UpgradeAction<C>> {
        let Some(link) = self
            .links
            .get_mut(&peer)
            .and_then(|l| l.iter_mut().find(|l| l.id == id))
        else {
            return Vec::new();
        };
        if link.kind != ConnectionKind::Direct || link.answered {
            return Vec::new();
        }
        link.answered = true;
        self.relayed_closing
            .push_back((now + self.config().relayed_grace, peer));
        self.resolve_duplicates(peer)
    }

    /// A connection to `peer` closed.
    pub fn on_connection_closed(&mut self, now: Instant, peer: PeerId, id: C) -> LinkChange {
        self.dials.remove(&id);
        let Some(links) = self.links.get_mut(&peer) else {
            return LinkChange::None;
        };
        let Some(closed) = links
            .iter()
            .position(|l| l.id == id)
            .map(|i| links.remove(i))
        else {
            return LinkChange::None;
        };
        if links.is_empty() {
            // The peer is gone altogether: forget everything about it.
            self.links.remove(&peer);
            self.addrs.remove(&peer);
            self.rule_followers.remove(&peer);
            self.schedule.on_disconnected(&peer);
            self.relayed_closing.retain(|(_, p)| *p != peer);
            return LinkChange::None;
        }
        if closed.kind == ConnectionKind::Direct && !self.is_direct(&peer) {
            // Rule 5: still reached through the relay, so try to go direct again.
            let turn = self.turn(&peer);
            self.schedule.on_direct_closed(now, peer, turn);
            return LinkChange::DirectLost;
        }
        LinkChange::None
    }

    /// The peer is setting up a direct connection to us (its offer arrived).
    pub fn on_remote_attempt(&mut self, now: Instant, peer: PeerId) {
        self.schedule.on_remote_attempt(now, peer);
    }

    /// Our dial for `peer` (from [`UpgradeAction::Dial`]) has connection id `id`.
    pub fn on_dialing(&mut self, peer: PeerId, id: C) {
        self.counters.offers += 1;
        self.dials.insert(id, peer);
    }

    /// Whether `id` is one of our direct dials still in progress.
    pub fn is_our_dial(&self, id: &C) -> bool {
        self.dials.contains_key(id)
    }

    /// A dial failed; returns the peer when it was one of ours (it then counts as a failed
    /// attempt, retried after a backoff).
    pub fn on_dial_failed(&mut self, now: Instant, id: C, error: String) -> Option<PeerId> {
        let peer = self.dials.remove(&id)?;
        self.counters.failed += 1;
        self.schedule.on_attempt_failed(now, peer, error);
        Some(peer)
    }

    fn maybe_plan(&mut self, now: Instant, peer: PeerId) {
        if self.enabled && !self.is_direct(&peer) && self.addrs.contains_key(&peer) {
            let turn = self.turn(&peer);
            self.schedule.on_relayed(now, peer, turn);
        }
    }

    /// Rule 1: who dials first, and how long the other side waits.
    fn turn(&self, peer: &PeerId) -> Turn {
        if self.leads(peer) {
            Turn::Ours
        } else if self.rule_followers.contains(peer) {
            Turn::TheirsSurely
        } else {
            Turn::Theirs
        }
    }

    /// Rule 1: we lead the move to `peer` if we dialed a relayed connection to it and it did
    /// not dial one to us, or both did and our id is the smaller. A peer that dialed us through
    /// the relay leads: its offer is likely already on the way, and one of ours would cross it
    /// (two peer connections set up at once; js-libp2p, which does not apply rule 3, may keep
    /// using the one we close).
    fn leads(&self, peer: &PeerId) -> bool {
        let relayed = || {
            self.links
                .get(peer)
                .into_iter()
                .flatten()
                .filter(|l| l.kind == ConnectionKind::Relayed)
        };
        let ours = relayed().any(|l| l.dialer == self.local);
        let theirs = relayed().any(|l| l.dialer == *peer);
        ours && (!theirs || self.schedule.is_smaller(peer))
    }

    /// What is due at `now`: attempts to start (rule 1) and relayed connections to close
    /// (rule 4).
    pub fn poll(&mut self, now: Instant) -> Vec<UpgradeAction<C>> {
        let mut actions = Vec::new();
        for ScheduleAction::Dial(peer) in self.schedule.poll(now) {
            match self.addrs.get(&peer) {
                Some(addrs) if !addrs.is_empty() => actions.push(UpgradeAction::Dial {
                    peer,
                    addrs: addrs.clone(),
                }),
                _ => {
                    let error = "no /webrtc address known".to_owned();
                    self.schedule.on_attempt_failed(now, peer, error.clone());
                    actions.push(UpgradeAction::Failed { peer, error });
                }
            }
        }
        while let Some(&(at, peer)) = self.relayed_closing.front()
            && at <= now
        {
            self.relayed_closing.pop_front();
            if !self.answers_directly(&peer) {
                continue;
            }
            let relayed = self.links.get(&peer).into_iter().flatten();
            actions.extend(
                relayed
                    .filter(|l| l.kind == ConnectionKind::Relayed)
                    .map(|l| UpgradeAction::Close {
                        peer,
                        connection: l.id,
                        reason: CloseReason::RelayedReplaced,
                    }),
            );
        }
        actions
    }

    /// When [`poll`](Self::poll) has something to do next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let closing = self.relayed_closing.front().map(|(at, _)| *at);
        match (self.schedule.poll_timeout(), closing) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// `peer`'s upgrade state, if it has one.
    pub fn peer_view(&self, now: Instant, peer: &PeerId) -> Option<UpgradeView> {
        self.schedule.peer_view(now, peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::Keypair;
    use web_time::Duration;

    /// Two peer ids, the smaller first.
    pub(super) fn ordered_pair() -> (PeerId, PeerId) {
        let a = Keypair::generate_ed25519().public().to_peer_id();
        let b = Keypair::generate_ed25519().public().to_peer_id();
        if a.to_bytes() < b.to_bytes() {
            (a, b)
        } else {
            (b, a)
        }
    }

    fn webrtc_addr() -> Multiaddr {
        "/ip4/127.0.0.1/tcp/9091/ws/p2p-circuit/webrtc"
            .parse()
            .expect("valid")
    }

    /// The rules of when to dial, without waiting for arrivals to stop (that rule has its own
    /// test: `attempts_wait_until_peers_stop_arriving`).
    fn without_settling() -> UpgradeConfig {
        UpgradeConfig {
            settle: Duration::ZERO,
            ..UpgradeConfig::default()
        }
    }

    fn closes(actions: &[UpgradeAction<u32>]) -> Vec<(u32, CloseReason)> {
        actions
            .iter()
            .filter_map(|a| match a {
                UpgradeAction::Close {
                    connection, reason, ..
                } => Some((*connection, *reason)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn rule_2_a_relayed_peer_with_a_webrtc_address_is_dialed_at_that_address() {
        let (small, large) = ordered_pair();
        let config = without_settling();
        let t0 = Instant::now();
        let mut u = DirectUpgrades::<u32>::new(small, config.clone(), true);
        u.on_connection_established(t0, large, 1, ConnectionKind::Relayed, true);
        // Nothing to dial without an address.
        assert_eq!(u.poll(t0 + config.takeover_delay), vec![]);
        u.on_addresses(t0, large, [webrtc_addr()]);
        let actions = u.poll(t0 + config.first_delay);
        assert_eq!(
            actions,
            vec![UpgradeAction::Dial {
                peer: large,
                addrs: vec![webrtc_addr()]
            }]
        );
        // Addresses of peers we are not connected to are not kept.
        let stranger = Keypair::generate_ed25519().public().to_peer_id();
        u.on_addresses(t0, stranger, [webrtc_addr()]);
        assert_eq!(u.peers_with_addrs(), 1);
        // The peer leaves: its addresses go with it.
        u.on_connection_closed(t0, large, 1);
        assert_eq!(u.peers_with_addrs(), 0);
    }

    #[test]
    fn rule_1_a_leader_that_runs_these_rules_is_waited_for_patiently() {
        let (small, large) = ordered_pair();
        let config = without_settling();
        assert!(config.patient_takeover_delay > config.takeover_delay);
        let t0 = Instant::now();
        let dial = vec![UpgradeAction::Dial {
            peer: large,
            addrs: vec![webrtc_addr()],
        }];
        // The larger id dialed the circuit and leads; it is a tabmesh tab: its offer may wait in
        // its queue past the ordinary takeover, and ours would cross it.
        let mut u = DirectUpgrades::<u32>::new(small, config.clone(), true);
        u.on_connection_established(t0, large, 1, ConnectionKind::Relayed, false);
        u.on_agent(large, true);
        u.on_addresses(t0, large, [webrtc_addr()]);
        assert_eq!(u.poll_timeout(), Some(t0 + config.patient_takeover_delay));
        assert_eq!(u.poll(t0 + config.takeover_delay), vec![]);
        // Its offer never came after all: we take over, later.
        assert_eq!(u.poll(t0 + config.patient_takeover_delay), dial);
        // A lost direct connection is retried with the same patience.
        u.on_connection_established(t0, large, 2, ConnectionKind::Direct, true);
        let t1 = t0 + config.patient_takeover_delay;
        u.on_connection_closed(t1, large, 2);
        assert_eq!(u.poll(t1 + config.takeover_delay), vec![]);
        assert_eq!(u.poll(t1 + config.patient_takeover_delay), dial);
        // Another kind of peer (a js-libp2p node, say) gets the ordinary takeover.
        let mut u = DirectUpgrades::<u32>::new(small, config.clone(), true);
        u.on_connection_established(t0, large, 1, ConnectionKind::Relayed, false);
        u.on_agent(large, false);
        u.on_addresses(t0, large, [webrtc_addr()]);
        assert_eq!(u.poll(t0 + config.takeover_delay), dial);
        // What a peer said of itself goes with it: after it left and came back unidentified,
        // the ordinary takeover again.
        let mut u = DirectUpgrades::<u32>::new(small, config.clone(), true);
        u.on_connection_established(t0, large, 1, ConnectionKind::Relayed, false);
        u.on_agent(large, true);
        u.on_connection_closed(t0, large, 1);
        u.on_connection_established(t0, large, 3, ConnectionKind::Relayed, false);
        u.on_addresses(t0, large, [webrtc_addr()]);
        assert_eq!(u.poll_timeout(), Some(t0 + config.takeover_delay));
        // We lead toward such a peer as toward any other when we dialed the circuit.
        let mut u = DirectUpgrades::<u32>::new(small, config.clone(), true);
        u.on_connection_established(t0, large, 1, ConnectionKind::Relayed, true);
        u.on_agent(large, true);
        u.on_addresses(t0, large, [webrtc_addr()]);
        assert_eq!(u.poll(t0 + config.first_delay), dial);
    }

    #[test]
    fn rule_1_the_side_that_dialed_the_relayed_connection_leads() {
        let (small, large) = ordered_pair();
        let config = without_settling();
        let t0 = Instant::now();
        let dial = |peer| {
            vec![UpgradeAction::Dial {
                peer,
                addrs: vec![webrtc_addr()],
            }]
        };
        // The larger id dialed the circuit: it leads, the smaller one waits for its offer.
        let mut dialer = DirectUpgrades::<u32>::new(large, config.clone(), true);
        dialer.on_connection_established(t0, small, 1, ConnectionKind::Relayed, true);
        dialer.on_addresses(t0, small, [webrtc_addr()]);
        assert_eq!(dialer.poll(t0 + config.first_delay), dial(small));
        let mut dialed = DirectUpgrades::<u32>::new(small, config.clone(), true);
        dialed.on_connection_established(t0, large, 1, ConnectionKind::Relayed, false);
        dialed.on_addresses(t0, large, [webrtc_addr()]);
        assert_eq!(dialed.poll(t0 + config.first_delay), vec![]);
        assert_eq!(dialed.poll_timeout(), Some(t0 + config.takeover_delay));
        // Its offer does not come (a js-libp2p node that dialed a plain circuit): we take over.
        assert_eq!(dialed.poll(t0 + config.takeover_delay), dial(large));
        // Both dialed at once and each saw the other's circuit first: both wait, until their own
        // circuit shows up and the smaller id finds that it leads.
        let mut crossed = [
            DirectUpgrades::<u32>::new(small, config.clone(), true),
            DirectUpgrades::<u32>::new(large, config.clone(), true),
        ];
        for (u, peer) in crossed.iter_mut().zip([large, small]) {
            u.on_connection_established(t0, peer, 1, ConnectionKind::Relayed, false);
            u.on_addresses(t0, peer, [webrtc_addr()]);
            assert_eq!(u.poll(t0), vec![]);
        }
        let t1 = t0 + Duration::from_millis(30);
        for (u, peer) in crossed.iter_mut().zip([large, small]) {
            u.on_connection_established(t1, peer, 2, ConnectionKind::Relayed, true);
        }
        assert_eq!(crossed[0].poll(t1), dial(large));
        assert_eq!(crossed[1].poll(t1), vec![]);
        // Unless the peer's offer came meanwhile: then ours would cross it.
        let mut offered = DirectUpgrades::<u32>::new(small, config.clone(), true);
        offered.on_connection_established(t0, large, 1, ConnectionKind::Relayed, false);
        offered.on_addresses(t0, large, [webrtc_addr()]);
        offered.on_remote_attempt(t0, large);
        offered.on_connection_established(t1, large, 2, ConnectionKind::Relayed, true);
        assert_eq!(offered.poll(t1), vec![]);
        // Both dialed a relayed connection: the smaller id leads.
        for (local, peer, leads) in [(small, large, true), (large, small, false)] {
            let mut both = DirectUpgrades::<u32>::new(local, config.clone(), true);
            both.on_connection_established(t0, peer, 1, ConnectionKind::Relayed, false);
            both.on_connection_established(t0, peer, 2, ConnectionKind::Relayed, true);
            both.on_addresses(t0, peer, [webrtc_addr()]);
            let expected = if leads { dial(peer) } else { vec![] };
            assert_eq!(both.poll(t0 + config.first_delay), expected);
        }
    }

    #[test]
    fn rule_2_addresses_are_bounded_per_peer_and_disabled_nodes_never_dial() {
        let (small, large) = ordered_pair();
        let config = without_settling();
        let t0 = Instant::now();
        let mut u = DirectUpgrades::<u32>::new(small, config.clone(), true);
        u.on_connection_established(t0, large, 1, ConnectionKind::Relayed, true);
        u.on_addresses(t0, large, std::iter::repeat_n(webrtc_addr(), 10));
        let Some(UpgradeAction::Dial { addrs, .. }) =
            u.poll(t0 + config.first_delay).into_iter().next()
        else {
            panic!("dials");
        };
        assert_eq!(addrs.len(), config.max_addrs_per_peer);
        let mut off = DirectUpgrades::<u32>::new(small, config.clone(), false);
        off.on_connection_established(t0, large, 1, ConnectionKind::Relayed, true);
        off.on_addresses(t0, large, [webrtc_addr()]);
        assert_eq!(off.poll(t0 + config.takeover_delay), vec![]);
        assert_eq!(off.poll_timeout(), None);
    }

    #[test]
    fn rule_3_both_sides_keep_the_direct_connection_the_smaller_id_dialed() {
        let (small, large) = ordered_pair();
        let t0 = Instant::now();
        let config = without_settling();
        let mut at_small = DirectUpgrades::<u32>::new(small, config.clone(), true);
        let mut at_large = DirectUpgrades::<u32>::new(large, config, true);
        // Connection 7 was dialed by the small side, 8 by the large side; each side numbers them
        // its own way (ids are local), but both know who dialed which.
        at_small.on_connection_established(t0, large, 7, ConnectionKind::Direct, true);
        at_small.on_connection_established(t0, large, 8, ConnectionKind::Direct, false);
        at_large.on_connection_established(t0, small, 108, ConnectionKind::Direct, true);
        at_large.on_connection_established(t0, small, 107, ConnectionKind::Direct, false);
        // Nothing is decided before the peer answers on both.
        assert!(at_small.on_answered(t0, large, 7).is_empty());
        assert!(at_large.on_answered(t0, small, 108).is_empty());
        assert_eq!(
            closes(&at_small.on_answered(t0, large, 8)),
            vec![(8, CloseReason::DuplicateDirect)]
        );
        assert_eq!(
            closes(&at_large.on_answered(t0, small, 107)),
            vec![(108, CloseReason::DuplicateDirect)]
        );
        // Each side counts the one it closed.
        for side in [&at_small, &at_large] {
            assert_eq!(side.counters().duplicates_closed, 1);
        }
        // Either order of arrival and of answers gives the same answer.
        let mut reversed = DirectUpgrades::<u32>::new(small, UpgradeConfig::default(), true);
        reversed.on_connection_established(t0, large, 8, ConnectionKind::Direct, false);
        reversed.on_connection_established(t0, large, 7, ConnectionKind::Direct, true);
        assert!(reversed.on_answered(t0, large, 7).is_empty());
        assert_eq!(
            closes(&reversed.on_answered(t0, large, 8)),
            vec![(8, CloseReason::DuplicateDirect)]
        );
    }

    #[test]
    fn rule_3_a_direct_connection_the_peer_never_answered_on_does_not_displace_a_live_one() {
        // The small side offered, timed out and gave up just as our side finished: connection 1
        // is up here only. Its second offer brings connection 2, up at both ends.
        let (small, large) = ordered_pair();
        let t0 = Instant::now();
        let mut at_large = DirectUpgrades::<u32>::new(large, UpgradeConfig::default(), true);
        at_large.on_connection_established(t0, small, 1, ConnectionKind::Direct, false);
        at_large.on_connection_established(t0, small, 2, ConnectionKind::Direct, false);
        assert!(closes(&at_large.on_answered(t0, small, 2)).is_empty());
        // Had both been answered on, the newer of the two the small side dialed would stay.
        let mut both = DirectUpgrades::<u32>::new(large, UpgradeConfig::default(), true);
        both.on_connection_established(t0, small, 1, ConnectionKind::Direct, false);
        both.on_connection_established(t0, small, 2, ConnectionKind::Direct, false);
        both.on_answered(t0, small, 2);
        assert_eq!(
            closes(&both.on_answered(t0, small, 1)),
            vec![(1, CloseReason::DuplicateDirect)]
        );
    }

    #[test]
    fn rule_4_the_relayed_connection_closes_after_the_grace_also_a_late_one() {
        let (small, large) = ordered_pair();
        let config = without_settling();
        let grace = config.relayed_grace;
        let t0 = Instant::now();
        let mut u = DirectUpgrades::<u32>::new(small, config, true);
        u.on_connection_established(t0, large, 1, ConnectionKind::Relayed, true);
        let t1 = t0 + Duration::from_millis(700);
        let change = u.on_connection_established(t1, large, 2, ConnectionKind::Direct, true);
        assert_eq!(change, LinkChange::DirectUp { upgrade_ms: None });
        // The peer answers on the direct connection (its identify) a moment later: the grace
        // counts from there.
        let t2 = t1 + Duration::from_millis(300);
        u.on_answered(t2, large, 2);
        assert_eq!(u.poll_timeout(), Some(t2 + grace));
        assert!(closes(&u.poll(t2 + grace - Duration::from_millis(1))).is_empty());
        assert_eq!(
            closes(&u.poll(t2 + grace)),
            vec![(1, CloseReason::RelayedReplaced)]
        );
        u.on_connection_closed(t2 + grace, large, 1);
        // Its ping answers too, later: nothing more to close.
        u.on_answered(t2 + grace, large, 2);
        assert!(closes(&u.poll(t2 + grace * 2)).is_empty());
        // The peer's own discovery dial arrives later through the relay: it goes too.
        let t3 = t2 + Duration::from_secs(10);
        u.on_connection_established(t3, large, 3, ConnectionKind::Relayed, false);
        assert_eq!(
            closes(&u.poll(t3 + grace)),
            vec![(3, CloseReason::RelayedReplaced)]
        );
    }

    #[test]
    fn rule_4_a_direct_connection_the_peer_never_answered_on_replaces_nothing() {
        // Our side of the handshake finished just as the peer's dial timed out: the direct
        // connection is up here and nobody answers on it.
        let (small, large) = ordered_pair();
        let config = without_settling();
        let grace = config.relayed_grace;
        let t0 = Instant::now();
        let mut u = DirectUpgrades::<u32>::new(small, config, true);
        u.on_connection_established(t0, large, 1, ConnectionKind::Relayed, false);
        u.on_connection_established(t0, large, 2, ConnectionKind::Direct, false);
        // An answer on the relayed connection says nothing about the direct one.
        u.on_answered(t0, large, 1);
        assert!(u.is_direct(&large));
        assert!(closes(&u.poll(t0 + grace * 10)).is_empty());
        // The peer meets us again through the relay meanwhile: that connection stays too.
        let t1 = t0 + Duration::from_secs(5);
        u.on_connection_established(t1, large, 3, ConnectionKind::Relayed, true);
        assert!(closes(&u.poll(t1 + grace * 10)).is_empty());
        // The dead connection is found out at last: the peer is still reached, through the
        // relay, and the move is tried again (rule 5).
        assert_eq!(
            u.on_connection_closed(t1 + grace * 10, large, 2),
            LinkChange::DirectLost
        );
        assert!(!u.is_direct(&large));
    }

    #[test]
    fn rule_4_a_relayed_connection_stays_if_the_direct_one_dropped_during_the_grace() {
        let (small, large) = ordered_pair();
        let config = without_settling();
        let t0 = Instant::now();
        let mut u = DirectUpgrades::<u32>::new(small, config.clone(), true);
        u.on_connection_established(t0, large, 1, ConnectionKind::Relayed, true);
        u.on_connection_established(t0, large, 2, ConnectionKind::Direct, true);
        u.on_answered(t0, large, 2);
        assert_eq!(u.on_connection_closed(t0, large, 2), LinkChange::DirectLost);
        assert!(closes(&u.poll(t0 + config.relayed_grace)).is_empty());
    }

    #[test]
    fn rule_5_a_lost_direct_link_is_retried_and_a_failed_dial_backs_off() {
        let (small, large) = ordered_pair();
        let config = without_settling();
        let t0 = Instant::now();
        let mut u = DirectUpgrades::<u32>::new(small, config.clone(), true);
        u.on_connection_established(t0, large, 1, ConnectionKind::Relayed, true);
        u.on_addresses(t0, large, [webrtc_addr()]);
        let t1 = t0 + config.first_delay;
        assert_eq!(u.poll(t1).len(), 1);
        u.on_dialing(large, 50);
        assert!(u.is_our_dial(&50));
        assert_eq!(u.on_dial_failed(t1, 50, "ICE failed".into()), Some(large));
        assert_eq!(u.on_dial_failed(t1, 51, "not ours".into()), None);
        assert_eq!(u.poll_timeout(), Some(t1 + config.initial_backoff));
        let view = u.peer_view(t1, &large).expect("tracked");
        assert_eq!(view.state, UpgradeState::Waiting);
        assert_eq!(view.last_error.as_deref(), Some("ICE failed"));
        // The retry succeeds, then the direct link drops: waiting again, with the first delay.
        let t2 = t1 + config.initial_backoff;
        assert_eq!(u.poll(t2).len(), 1);
        u.on_dialing(large, 52);
        u.on_connection_established(t2, large, 52, ConnectionKind::Direct, true);
        assert!(u.is_direct(&large) && !u.is_our_dial(&52));
        assert_eq!(
            u.on_connection_closed(t2, large, 52),
            LinkChange::DirectLost
        );
        assert_eq!(u.poll_timeout(), Some(t2 + config.first_delay));
        // Two offers, one failed, nothing closed as a duplicate.
        let counted = UpgradeCounters {
            offers: 2,
            duplicates_closed: 0,
            failed: 1,
        };
        assert_eq!(u.counters(), counted);
    }

    #[test]
    fn attempts_wait_until_peers_stop_arriving() {
        let (small, large) = ordered_pair();
        let config = UpgradeConfig::default();
        assert!(config.settle > Duration::ZERO && config.max_settle > config.settle);
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let dial = |peer| {
            vec![UpgradeAction::Dial {
                peer,
                addrs: vec![webrtc_addr()],
            }]
        };
        // We dialed a circuit to `large` and lead: the attempt waits for the arrivals to stop.
        let mut u = DirectUpgrades::<u32>::new(small, config.clone(), true);
        u.on_connection_established(t0, large, 1, ConnectionKind::Relayed, true);
        u.on_addresses(t0, large, [webrtc_addr()]);
        assert_eq!(u.poll(t0), vec![]);
        assert_eq!(u.poll_timeout(), Some(t0 + config.settle));
        let view = u.peer_view(t0, &large).expect("tracked");
        assert_eq!(
            view.next_attempt_in_ms,
            Some(config.settle.as_millis() as u64)
        );
        // Another peer arrives just before: the wait starts again from it.
        let other = Keypair::generate_ed25519().public().to_peer_id();
        let t1 = t0 + config.settle - ms(1);
        u.on_connection_established(t1, other, 2, ConnectionKind::Relayed, false);
        assert_eq!(u.poll(t0 + config.settle), vec![]);
        assert_eq!(u.poll_timeout(), Some(t1 + config.settle));
        assert_eq!(u.poll(t1 + config.settle), dial(large));
        // Peers that never stop arriving hold the attempts for `max_settle` at most.
        let mut busy = DirectUpgrades::<u32>::new(small, config.clone(), true);
        busy.on_connection_established(t0, large, 1, ConnectionKind::Relayed, true);
        busy.on_addresses(t0, large, [webrtc_addr()]);
        let step = config.settle / 2;
        let mut t = t0;
        let mut id = 10;
        while t < t0 + config.max_settle {
            assert_eq!(busy.poll(t), vec![], "held at {:?}", t - t0);
            let arrival = Keypair::generate_ed25519().public().to_peer_id();
            busy.on_connection_established(t, arrival, id, ConnectionKind::Relayed, false);
            id += 1;
            t += step;
        }
        assert_eq!(busy.poll_timeout(), Some(t0 + config.max_settle));
        assert_eq!(busy.poll(t0 + config.max_settle), dial(large));
        // A peer arriving later, alone (a tab opened once the others met), waits `settle`.
        let later = t0 + Duration::from_secs(60);
        let newcomer = Keypair::generate_ed25519().public().to_peer_id();
        busy.on_connection_established(later, newcomer, 99, ConnectionKind::Relayed, true);
        busy.on_addresses(later, newcomer, [webrtc_addr()]);
        assert_eq!(busy.poll(later), vec![]);
        assert_eq!(busy.poll(later + config.settle), dial(newcomer));
        // A direct connection is not an arrival through the relay; settling off holds nothing.
        let mut off = DirectUpgrades::<u32>::new(small, without_settling(), true);
        off.on_connection_established(t0, large, 1, ConnectionKind::Relayed, true);
        off.on_addresses(t0, large, [webrtc_addr()]);
        assert_eq!(off.poll(t0), dial(large));
        let mut direct = DirectUpgrades::<u32>::new(small, config.clone(), true);
        direct.on_connection_established(t0, large, 1, ConnectionKind::Relayed, true);
        direct.on_addresses(t0, large, [webrtc_addr()]);
        direct.on_connection_established(t1, other, 5, ConnectionKind::Direct, true);
        assert_eq!(direct.poll(t0 + config.settle), dial(large));
    }
}
