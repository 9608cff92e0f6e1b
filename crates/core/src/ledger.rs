//! The misbehaviour ledger: one record, for every protocol, of the peers that broke a rule.
//!
//! Every protocol of a tabmesh peer (GIMPS gossip, DHT records, WebRTC signaling, identify,
//! ping, perf and the protocols still to come) reports a violation here instead of keeping its
//! own strike count; the relay runs the same ledger. The policy, the same everywhere and
//! configurable through [`LedgerConfig`]:
//!
//! 1. Every violation is a **strike** against the peer that sent the offending input, kept with
//!    the protocol and the reason. Strikes older than `strike_window` (counted from the latest
//!    one) are forgiven.
//! 2. The `max_strikes`-th strike **bans** the peer: the driver disconnects it and refuses its
//!    connections until the ban ends. While a peer is banned its input is never read again.
//! 3. A ban lasts `first_ban`, multiplied by `ban_growth` for every earlier ban the peer served
//!    within `offence_memory` (a repeat offender stays out longer), at most `max_ban`.
//! 4. The ledger is keyed by peer id, not by connection: a peer that reconnects keeps its
//!    strikes and its ban.
//! 5. It is bounded: at most `capacity` peers are tracked. When it is full, a new offender
//!    replaces the entry least worth keeping: the longest-quiet peer without a ban, else the ban
//!    that ends first. Entries with nothing left to remember are dropped as time passes.
//! 6. **Exempt** peers (a node's relay) collect strikes, which are shown, but are never banned:
//!    refusing the relay would cut the node off from everyone.
//!
//! Time enters as `now`; ends of bans are outputs of [`Ledger::poll`], due at
//! [`Ledger::poll_timeout`].

use std::collections::{HashMap, HashSet};

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};
use web_time::{Duration, Instant};

use crate::names::peer_name;
use crate::peers::millis;
use crate::wire_log::Topic;

/// The ledger's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerConfig {
    /// Strikes that ban a peer (rule 2).
    pub max_strikes: u32,
    /// Strikes are forgiven after this long without a new one (rule 1).
    pub strike_window: Duration,
    /// Length of a first ban (rule 3).
    pub first_ban: Duration,
    /// Factor applied to the ban length for every earlier ban still remembered (rule 3).
    pub ban_growth: u32,
    /// Longest ban (rule 3).
    pub max_ban: Duration,
    /// How long a served ban still counts as an earlier offence (rule 3).
    pub offence_memory: Duration,
    /// Peers tracked at most (rule 5).
    pub capacity: usize,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            max_strikes: 3,
            strike_window: Duration::from_secs(600),
            first_ban: Duration::from_secs(60),
            ban_growth: 4,
            max_ban: Duration::from_secs(3600),
            offence_memory: Duration::from_secs(24 * 3600),
            capacity: 1024,
        }
    }
}

/// A ban in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// When it started.
    pub since: Instant,
    /// When it ends.
    pub until: Instant,
    /// The protocol of the strike that caused it.
    pub protocol: Topic,
    /// The strikes that caused it, summed up.
    pub reason: String,
    /// Which ban of the peer this is (1 for a first offence).
    pub offence: u32,
}

/// What a strike decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The peer stays; it has this many strikes now.
    Keep {
        /// Strikes within the window.
        strikes: u32,
    },
    /// The peer is banned now: disconnect it and refuse it until the ban ends.
    Ban(Ban),
    /// The peer was already banned (input still in flight while it is being disconnected):
    /// nothing changes.
    AlreadyBanned,
}

/// Why a connection is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("banned for another {} s ({reason})", left.as_secs().max(1))]
pub struct Refused {
    /// Time left of the ban.
    pub left: Duration,
    /// Why the peer was banned.
    pub reason: String,
    /// Connections of the peer refused during this ban, this one included.
    pub attempts: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    strikes: u32,
    last_strike: Instant,
    last_protocol: Topic,
    last_reason: String,
    ban: Option<Ban>,
    /// Bans served that still count (rule 3).
    offences: u32,
    /// When the latest ban ended (or was decided, while it runs).
    last_ban: Option<Instant>,
    /// Connections refused during the current ban.
    refused: u64,
}

impl Entry {
    /// Whether nothing about the peer is worth keeping at `now`.
    fn is_spent(&self, now: Instant, config: &LedgerConfig) -> bool {
        let strikes_forgiven = self.strikes == 0
            || now.saturating_duration_since(self.last_strike) > config.strike_window;
        let offences_forgotten = self
            .last_ban
            .is_none_or(|at| now.saturating_duration_since(at) > config.offence_memory);
        self.ban.is_none() && strikes_forgiven && offences_forgotten
    }
}

/// Totals since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerCounters {
    /// Strikes recorded.
    pub strikes: u64,
    /// Bans decided.
    pub bans: u64,
    /// Connections refused because the peer was banned.
    pub refused: u64,
    /// Entries dropped to stay within capacity.
    pub evicted: u64,
}

/// A banned peer, as `state().banned` and the Peers panel show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanView {
    /// The peer.
    pub peer_id: String,
    /// Its name.
    pub name: String,
    /// The protocol of the last strike.
    pub protocol: Topic,
    /// Why.
    pub reason: String,
    /// Milliseconds until the ban ends.
    pub time_left_ms: u64,
    /// Length of the ban, ms.
    pub ban_ms: u64,
    /// Which ban of the peer this is (1 for a first offence).
    pub offence: u32,
    /// Connections of the peer refused during this ban.
    pub refused_connections: u64,
}

/// The ledger of one peer (a node or the relay).
#[derive(Debug, Clone)]
pub struct Ledger {
    config: LedgerConfig,
    entries: HashMap<PeerId, Entry>,
    exempt: HashSet<PeerId>,
    counters: LedgerCounters,
}

impl Ledger {
    /// An empty ledger with `config`.
    pub fn new(config: LedgerConfig) -> Self {
        Self {
            config,
            entries: HashMap::new(),
            exempt: HashSet::new(),
            counters: LedgerCounters::default(),
        }
    }

    /// The policy.
    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    /// Never ban `peer` (rule 6). Lifts a ban it may have.
    pub fn exempt(&mut self, peer: PeerId) {
        // At most a handful of peers are exempt (the relays a node used).
        if self.exempt.len() >= 16 {
            self.exempt.clear();
        }
        self.exempt.insert(peer);
        if let Some(entry) = self.entries.get_mut(&peer) {
            entry.ban = None;
        }
    }

    /// Records a violation by `peer` of a `protocol` rule (rules 1-3, 5, 6).
    pub fn strike(&mut self, now: Instant, peer: PeerId, protocol: Topic, reason: &str) -> Verdict {
        self.counters.strikes += 1;
        if !self.entries.contains_key(&peer) {
            self.make_room(now);
        }
        let config = &self.config;
        let entry = self.entries.entry(peer).or_insert_with(|| Entry {
            strikes: 0,
            last_strike: now,
            last_protocol: protocol,
            last_reason: String::new(),
            ban: None,
            offences: 0,
            last_ban: None,
            refused: 0,
        });
        if entry.ban.is_some() {
            // Input still in flight from a peer being disconnected: the ban stands as it is.
            return Verdict::AlreadyBanned;
        }
        if now.saturating_duration_since(entry.last_strike) > config.strike_window {
            entry.strikes = 0;
        }
        if entry
            .last_ban
            .is_some_and(|at| now.saturating_duration_since(at) > config.offence_memory)
        {
            entry.offences = 0;
        }
        entry.strikes += 1;
        entry.last_strike = now;
        entry.last_protocol = protocol;
        entry.last_reason = reason.chars().take(200).collect();
        if entry.strikes < config.max_strikes.max(1) || self.exempt.contains(&peer) {
            return Verdict::Keep {
                strikes: entry.strikes,
            };
        }
        let length = ban_length(config, entry.offences);
        entry.offences += 1;
        let ban = Ban {
            since: now,
            until: now + length,
            protocol,
            reason: format!(
                "{} violations, last: {protocol}: {}",
                entry.strikes, entry.last_reason
            ),
            offence: entry.offences,
        };
        entry.strikes = 0;
        entry.refused = 0;
        entry.last_ban = Some(now);
        entry.ban = Some(ban.clone());
        self.counters.bans += 1;
        Verdict::Ban(ban)
    }

    /// Whether a connection of `peer` may be established at `now`; a refusal is counted.
    pub fn admit(&mut self, now: Instant, peer: &PeerId) -> Result<(), Refused> {
        let Some(entry) = self.entries.get_mut(peer) else {
            return Ok(());
        };
        match &entry.ban {
            Some(ban) if ban.until > now => {
                entry.refused += 1;
                self.counters.refused += 1;
                Err(Refused {
                    left: ban.until.saturating_duration_since(now),
                    reason: ban.reason.clone(),
                    attempts: entry.refused,
                })
            }
            _ => Ok(()),
        }
    }

    /// The ban `peer` is serving at `now`, if any.
    pub fn ban(&self, now: Instant, peer: &PeerId) -> Option<&Ban> {
        self.entries
            .get(peer)
            .and_then(|e| e.ban.as_ref())
            .filter(|b| b.until > now)
    }

    /// Strikes `peer` has within the window at `now` (for the Peers panel).
    pub fn strikes(&self, now: Instant, peer: &PeerId) -> u32 {
        self.entries.get(peer).map_or(0, |e| {
            if now.saturating_duration_since(e.last_strike) > self.config.strike_window {
                0
            } else {
                e.strikes
            }
        })
    }

    /// Ends the bans that are over at `now` and forgets what is spent; returns the peers whose
    /// ban ended.
    pub fn poll(&mut self, now: Instant) -> Vec<PeerId> {
        let mut lifted = Vec::new();
        for (peer, entry) in &mut self.entries {
            if let Some(ban) = entry.ban.take_if(|b| b.until <= now) {
                entry.last_ban = Some(ban.until);
                lifted.push(*peer);
            }
        }
        let config = &self.config;
        self.entries.retain(|_, e| !e.is_spent(now, config));
        lifted.sort_by_key(|p| p.to_bytes());
        lifted
    }

    /// When [`poll`](Self::poll) has a ban to end.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| e.ban.as_ref().map(|b| b.until))
            .min()
    }

    /// Totals since start.
    pub fn counters(&self) -> LedgerCounters {
        self.counters
    }

    /// Peers tracked now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bans in force at `now`, the one ending last first.
    pub fn view(&self, now: Instant) -> Vec<BanView> {
        let mut bans: Vec<BanView> = self
            .entries
            .iter()
            .filter_map(|(peer, e)| {
                let ban = e.ban.as_ref().filter(|b| b.until > now)?;
                Some(BanView {
                    peer_id: peer.to_base58(),
                    name: peer_name(peer),
                    protocol: ban.protocol,
                    reason: ban.reason.clone(),
                    time_left_ms: millis(ban.until.saturating_duration_since(now)),
                    ban_ms: millis(ban.until.saturating_duration_since(ban.since)),
                    offence: ban.offence,
                    refused_connections: e.refused,
                })
            })
            .collect();
        bans.sort_by(|a, b| {
            b.time_left_ms
                .cmp(&a.time_left_ms)
                .then_with(|| a.peer_id.cmp(&b.peer_id))
        });
        bans
    }

    /// Frees one entry if the ledger is full (rule 5).
    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < self.config.capacity.max(1) {
            return;
        }
        let config = &self.config;
        self.entries.retain(|_, e| !e.is_spent(now, config));
        if self.entries.len() < self.config.capacity.max(1) {
            return;
        }
        // The quiet peer without a ban goes first, then the ban that ends first.
        let victim = self
            .entries
            .iter()
            .min_by_key(|(peer, e)| {
                (
                    e.ban.is_some(),
                    e.ban.as_ref().map_or(e.last_strike, |b| b.until),
                    peer.to_bytes(),
                )
            })
            .map(|(peer, _)| *peer);
        if let Some(victim) = victim {
            self.entries.remove(&victim);
            self.counters.evicted += 1;
        }
    }
}

/// The length of a ban after `offences` earlier ones (rule 3).
fn ban_length(config: &LedgerConfig, offences: u32) -> Duration {
    let factor = config.ban_growth.max(1).saturating_pow(offences.min(16));
    config.first_ban.saturating_mul(factor).min(config.max_ban)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::Keypair;

    fn peer() -> PeerId {
        Keypair::generate_ed25519().public().to_peer_id()
    }

    fn config() -> LedgerConfig {
        LedgerConfig {
            max_strikes: 3,
            strike_window: Duration::from_secs(60),
            first_ban: Duration::from_secs(10),
            ban_growth: 4,
            max_ban: Duration::from_secs(100),
            offence_memory: Duration::from_secs(1000),
            capacity: 8,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn rule_1_strikes_count_and_are_forgiven_after_the_window() {
        let t0 = Instant::now();
        let mut l = Ledger::new(config());
        let p = peer();
        assert_eq!(
            l.strike(t0, p, Topic::Gimps, "garbage"),
            Verdict::Keep { strikes: 1 }
        );
        assert_eq!(
            l.strike(t0 + secs(30), p, Topic::Dht, "forged record"),
            Verdict::Keep { strikes: 2 }
        );
        assert_eq!(l.strikes(t0 + secs(30), &p), 2);
        // 61 s after the last strike the count starts over.
        assert_eq!(l.strikes(t0 + secs(91), &p), 0);
        assert_eq!(
            l.strike(t0 + secs(91), p, Topic::Ping, "bad echo"),
            Verdict::Keep { strikes: 1 }
        );
        assert_eq!(l.counters().strikes, 3);
    }

    #[test]
    fn rule_2_the_third_strike_bans_and_connections_are_refused_until_it_ends() {
        let t0 = Instant::now();
        let mut l = Ledger::new(config());
        let p = peer();
        l.strike(t0, p, Topic::Gimps, "malformed");
        l.strike(t0, p, Topic::Gimps, "malformed");
        let Verdict::Ban(ban) = l.strike(t0, p, Topic::Gimps, "fake PRIME 2^11-1") else {
            panic!("the third strike bans");
        };
        assert_eq!(ban.until, t0 + secs(10));
        assert_eq!(ban.offence, 1);
        assert!(ban.reason.contains("3 violations") && ban.reason.contains("gimps: fake PRIME"));
        let refused = l.admit(t0 + secs(4), &p).expect_err("refused while banned");
        assert_eq!((refused.left, refused.attempts), (secs(6), 1));
        assert!(
            refused.to_string().contains("banned for another 6 s"),
            "{refused}"
        );
        assert_eq!(l.counters().refused, 1);
        assert_eq!(l.view(t0 + secs(4))[0].refused_connections, 1);
        assert_eq!(l.view(t0 + secs(4))[0].time_left_ms, 6000);
        // Other peers are not affected.
        assert!(l.admit(t0, &peer()).is_ok());
        // The ban ends on time.
        assert_eq!(l.poll_timeout(), Some(t0 + secs(10)));
        assert!(l.poll(t0 + secs(9)).is_empty());
        assert_eq!(l.poll(t0 + secs(10)), vec![p]);
        assert!(l.admit(t0 + secs(10), &p).is_ok());
        assert!(l.view(t0 + secs(10)).is_empty());
    }

    #[test]
    fn rule_2_input_arriving_during_a_ban_does_not_stack_strikes() {
        let t0 = Instant::now();
        let mut l = Ledger::new(config());
        let p = peer();
        for _ in 0..3 {
            l.strike(t0, p, Topic::Gimps, "garbage");
        }
        assert_eq!(
            l.strike(t0 + secs(1), p, Topic::Gimps, "garbage"),
            Verdict::AlreadyBanned
        );
        assert_eq!(
            l.ban(t0 + secs(1), &p).map(|b| (b.offence, b.until)),
            Some((1, t0 + secs(10)))
        );
        assert_eq!(l.counters().bans, 1);
    }

    #[test]
    fn rule_3_repeat_offenders_are_banned_longer_up_to_the_maximum() {
        let t0 = Instant::now();
        let mut l = Ledger::new(config());
        let p = peer();
        let mut now = t0;
        let mut lengths = Vec::new();
        for _ in 0..4 {
            let verdict = (0..3)
                .map(|_| l.strike(now, p, Topic::Dht, "forged"))
                .last();
            let Some(Verdict::Ban(ban)) = verdict else {
                panic!("banned");
            };
            lengths.push(ban.until - ban.since);
            now = ban.until;
            assert_eq!(l.poll(now), vec![p]);
        }
        assert_eq!(lengths, vec![secs(10), secs(40), secs(100), secs(100)]);
    }

    #[test]
    fn rule_3_an_old_offence_is_forgotten() {
        let t0 = Instant::now();
        let mut l = Ledger::new(config());
        let p = peer();
        for _ in 0..3 {
            l.strike(t0, p, Topic::Dht, "forged");
        }
        l.poll(t0 + secs(10));
        // 1000 s after the first ban ended it no longer counts.
        let later = t0 + secs(10) + secs(1001);
        let verdict = (0..3)
            .map(|_| l.strike(later, p, Topic::Dht, "forged"))
            .last();
        let Some(Verdict::Ban(ban)) = verdict else {
            panic!("banned");
        };
        assert_eq!(ban.offence, 1);
        assert_eq!(ban.until - ban.since, secs(10));
    }

    #[test]
    fn rule_4_a_peer_that_comes_back_keeps_its_strikes() {
        // The ledger knows nothing of connections: strikes made on one connection count with
        // those made on the next (the driver calls `strike` whatever connection the input came on).
        let t0 = Instant::now();
        let mut l = Ledger::new(config());
        let p = peer();
        l.strike(t0, p, Topic::Gimps, "garbage");
        l.strike(t0, p, Topic::Gimps, "garbage");
        assert!(l.admit(t0 + secs(1), &p).is_ok(), "reconnects");
        assert!(matches!(
            l.strike(t0 + secs(2), p, Topic::Gimps, "garbage"),
            Verdict::Ban(_)
        ));
    }

    #[test]
    fn rule_5_the_ledger_is_bounded_and_keeps_bans_over_quiet_strikes() {
        let t0 = Instant::now();
        let mut l = Ledger::new(config());
        let banned: Vec<PeerId> = (0..4).map(|_| peer()).collect();
        for p in &banned {
            for _ in 0..3 {
                l.strike(t0, *p, Topic::Gimps, "garbage");
            }
        }
        // Many fresh identities, one strike each (validly signed fakes cost nothing to make).
        for i in 0..100 {
            l.strike(t0 + Duration::from_millis(i), peer(), Topic::Gimps, "fake");
        }
        assert_eq!(l.len(), 8);
        assert_eq!(l.counters().evicted, 96);
        for p in &banned {
            assert!(l.admit(t0 + secs(1), p).is_err(), "bans survive the flood");
        }
        // Spent entries go by themselves.
        l.poll(t0 + secs(10) + secs(1001));
        assert!(l.is_empty());
    }

    #[test]
    fn rule_6_exempt_peers_are_never_banned_but_their_strikes_show() {
        let t0 = Instant::now();
        let mut l = Ledger::new(config());
        let relay = peer();
        l.exempt(relay);
        for _ in 0..5 {
            assert!(matches!(
                l.strike(t0, relay, Topic::Ping, "bad echo"),
                Verdict::Keep { .. }
            ));
        }
        assert_eq!(l.strikes(t0, &relay), 5);
        assert!(l.admit(t0, &relay).is_ok());
    }

    #[test]
    fn bans_are_shown_longest_first_with_time_left() {
        let t0 = Instant::now();
        let mut l = Ledger::new(config());
        let (a, b) = (peer(), peer());
        for _ in 0..3 {
            l.strike(t0, a, Topic::Gimps, "garbage");
        }
        for _ in 0..3 {
            l.strike(t0 + secs(5), b, Topic::Dht, "forged");
        }
        let view = l.view(t0 + secs(6));
        assert_eq!(view.len(), 2);
        assert_eq!(view[0].peer_id, b.to_base58());
        assert_eq!(view[0].time_left_ms, 9000);
        assert_eq!(view[0].protocol, Topic::Dht);
        assert_eq!(view[1].time_left_ms, 4000);
        assert_eq!(view[1].ban_ms, 10_000);
    }
}
