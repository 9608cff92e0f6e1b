//! Crossing dials: when two peers dial each other at the same moment, one dial is kept.
//!
//! Tabs opened together reserve with the relay within a few hundred milliseconds of each other,
//! and each one's discovery lookup names the others that reserved before it answered: two tabs
//! that reserved close together are named to each other, and both dial. Each accepts the
//! other's circuit, and the pair holds two relayed connections, each with its own handshake,
//! identify, ping and a start of the direct upgrade (8 tabs opened together: about a third
//! of the 28 pairs, and two in five of those also ended up with two direct connections).
//! A swarm cannot take back a dial it has started, but each side sees the other's circuit
//! arrive (the relay's `STOP` names its source) while its own dial is still on its way, and
//! that is where the rule applies:
//!
//! 1. **The smaller peer id's dial is kept**, as the direct upgrade breaks its ties: a circuit
//!    from a peer we are dialing is refused when our id is the smaller one (our dial will
//!    arrive), and accepted when it is the larger one (our dial will be refused over there,
//!    which is expected, not a failure of the peer). Both sides decide alike without talking.
//! 2. **A refusal can overtake the circuit it answers**: the smaller peer's circuit and its
//!    refusal of ours travel through the relay side by side, and our dial may fail first (8
//!    tabs opened together: 8 of 18 refusals). So a dial of ours through the relay to a peer
//!    with a smaller id that reached no one is held for [`HOLD`] before it counts as failed:
//!    if that peer's circuit arrives meanwhile, the two crossed.
//! 3. **A peer whose circuit is coming in is not dialed by discovery** (the node's DHT keeps
//!    track of the circuits arriving): its connection is on its way. Other dials, a request
//!    to the peer say, still go (rule 1 settles them if they cross): refused, they would fail
//!    the request.
//! 4. Only dials that are still on their way count: once a connection is up, a new circuit
//!    from the same peer is accepted (it may have lost its side of the first one), and the
//!    rules of the peer table decide about it.
//!
//! `P` is the peer id, `C` the swarm's connection id, `F` what the node knows of a failure (a
//! held one is kept here and given back when it counts); time enters as `now`. Entries leave
//! when their connection comes up or fails (or their hold ends), so the bookkeeping is as large
//! as the connections being set up.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use web_time::{Duration, Instant};

/// How long a failed dial to a peer with a smaller id waits for that peer's circuit (rule 2).
/// Measured among 8 tabs opened together on two cores, the circuit came 1 to 50 ms after the
/// failure.
pub const HOLD: Duration = Duration::from_millis(500);

/// What to do with a circuit coming in from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// Accept it.
    Accept,
    /// Accept it: it crossed our own dial to the peer, which the peer refuses (rule 1) or has
    /// refused already (rule 2).
    Crossed,
    /// Refuse it: it crossed our own dial to the peer, which is the one kept (rule 1).
    Refuse,
}

/// What a failed connection was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed<F> {
    /// Our dial, refused by the peer whose circuit crossed it (rule 1): not a failure.
    Yielded,
    /// Our dial, held (rule 2): [`CrossingDials::expired`] gives the failure back if no circuit
    /// from the peer arrives in time.
    Held,
    /// A failure like any other.
    Failed(F),
}

/// A failed dial of ours, held (rule 2).
#[derive(Debug)]
struct Held<P, F> {
    peer: P,
    until: Instant,
    failure: F,
}

/// The dials and circuits of one node that are on their way.
#[derive(Debug)]
pub struct CrossingDials<P, C, F> {
    local: P,
    /// Our dials on their way, to whom.
    dialing: HashMap<C, P>,
    /// Circuits coming in that we accepted, from whom.
    incoming: HashMap<C, P>,
    /// Our dials that crossed a circuit of a peer with a smaller id: that peer refuses them.
    yielded: HashSet<C>,
    /// Our failed dials held (rule 2).
    held: Vec<Held<P, F>>,
    /// Circuits refused and dials that yielded, since the start.
    crossed: u64,
}

impl<P: Ord + Clone, C: Hash + Eq + Copy, F> CrossingDials<P, C, F> {
    /// The bookkeeping of the node `local`.
    pub fn new(local: P) -> Self {
        Self {
            local,
            dialing: HashMap::new(),
            incoming: HashMap::new(),
            yielded: HashSet::new(),
            held: Vec::new(),
            crossed: 0,
        }
    }

    /// We dial `peer` on `connection`.
    pub fn on_dial(&mut self, connection: C, peer: P) {
        self.dialing.insert(connection, peer);
    }

    /// A circuit from `peer` is coming in on `connection` (rules 1 and 2).
    pub fn on_incoming(&mut self, connection: C, peer: P) -> Incoming {
        let ours: Vec<C> = self
            .dialing
            .iter()
            .filter(|(_, p)| **p == peer)
            .map(|(c, _)| *c)
            .collect();
        let held_before = self.held.len();
        self.held.retain(|h| h.peer != peer);
        let refused_already = self.held.len() < held_before;
        let verdict = if !ours.is_empty() && self.local < peer {
            Incoming::Refuse
        } else if !ours.is_empty() || refused_already {
            self.yielded.extend(ours);
            Incoming::Crossed
        } else {
            Incoming::Accept
        };
        if verdict != Incoming::Accept {
            self.crossed += 1;
        }
        if verdict != Incoming::Refuse {
            self.incoming.insert(connection, peer);
        }
        verdict
    }

    /// `connection`, either way, came up.
    pub fn on_established(&mut self, connection: &C) {
        self.dialing.remove(connection);
        self.incoming.remove(connection);
        self.yielded.remove(connection);
    }

    /// `connection`, either way, failed or was refused at `now`, as `failure` says.
    /// `circuit_failed`: it was a dial through the relay that reached no one (a refusal looks
    /// like that from here): only such a failure of ours can be held (rule 2).
    pub fn on_failed(
        &mut self,
        connection: &C,
        circuit_failed: bool,
        failure: F,
        now: Instant,
    ) -> Failed<F> {
        self.incoming.remove(connection);
        let peer = self.dialing.remove(connection);
        if self.yielded.remove(connection) {
            return Failed::Yielded;
        }
        match peer {
            Some(peer) if circuit_failed && peer < self.local => {
                self.held.push(Held {
                    peer,
                    until: now + HOLD,
                    failure,
                });
                Failed::Held
            }
            _ => Failed::Failed(failure),
        }
    }

    /// The held failures whose peer's circuit did not come in time: failures after all.
    pub fn expired(&mut self, now: Instant) -> Vec<F> {
        let (done, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.until <= now);
        self.held = held;
        done.into_iter().map(|h| h.failure).collect()
    }

    /// When the next held failure expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.held.iter().map(|h| h.until).min()
    }

    /// Whether a circuit from `peer` is coming in (rule 3).
    pub fn is_incoming(&self, peer: &P) -> bool {
        self.incoming.values().any(|p| p == peer)
    }

    /// Whether a dial of ours to `peer` is on its way.
    pub fn is_dialing(&self, peer: &P) -> bool {
        self.dialing.values().any(|p| p == peer)
    }

    /// Dials that crossed, since the start (each side counts its own).
    pub fn crossed(&self) -> u64 {
        self.crossed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: u8 = 1;
    const LARGE: u8 = 2;

    /// Peers, connections and failures (the connection's number) as small numbers.
    type Dials = CrossingDials<u8, u8, u8>;

    #[test]
    fn rule_1_the_smaller_id_refuses_the_circuit_that_crossed_its_dial() {
        let now = Instant::now();
        let mut small = Dials::new(SMALL);
        small.on_dial(10, LARGE);
        assert_eq!(small.on_incoming(11, LARGE), Incoming::Refuse);
        assert_eq!(small.crossed(), 1);
        assert!(
            !small.is_incoming(&LARGE),
            "a refused circuit is not on its way"
        );
        // The refused circuit fails; our dial comes up.
        assert_eq!(small.on_failed(&11, false, 11, now), Failed::Failed(11));
        small.on_established(&10);
        assert!(!small.is_dialing(&LARGE));
    }

    #[test]
    fn rule_1_the_larger_id_accepts_it_and_expects_its_own_dial_refused() {
        let now = Instant::now();
        let mut large = Dials::new(LARGE);
        large.on_dial(20, SMALL);
        assert_eq!(large.on_incoming(21, SMALL), Incoming::Crossed);
        assert_eq!(large.crossed(), 1);
        assert_eq!(large.on_failed(&20, true, 20, now), Failed::Yielded);
        large.on_established(&21);
        assert!(!large.is_incoming(&SMALL));
        assert_eq!(large.poll_timeout(), None);
    }

    #[test]
    fn rule_1_both_sides_keep_the_same_dial() {
        // Each dials the other; each sees the other's circuit while its own dial is on its way.
        let mut small = Dials::new(SMALL);
        let mut large = Dials::new(LARGE);
        small.on_dial(1, LARGE);
        large.on_dial(2, SMALL);
        let at_small = small.on_incoming(3, LARGE);
        let at_large = large.on_incoming(4, SMALL);
        assert_eq!((at_small, at_large), (Incoming::Refuse, Incoming::Crossed));
        assert_eq!(
            large.on_failed(&2, true, 2, Instant::now()),
            Failed::Yielded
        );
    }

    #[test]
    fn rule_2_a_refusal_that_overtook_the_circuit_is_held_and_then_crossed() {
        let t0 = Instant::now();
        let mut large = Dials::new(LARGE);
        large.on_dial(1, SMALL);
        assert_eq!(large.on_failed(&1, true, 1, t0), Failed::Held);
        assert_eq!(large.poll_timeout(), Some(t0 + HOLD));
        assert_eq!(large.on_incoming(2, SMALL), Incoming::Crossed);
        assert_eq!(large.crossed(), 1);
        assert!(large.expired(t0 + HOLD).is_empty(), "no longer held");
        assert_eq!(large.poll_timeout(), None);
    }

    #[test]
    fn rule_2_a_held_failure_is_a_failure_when_no_circuit_comes() {
        let t0 = Instant::now();
        let mut large = Dials::new(LARGE);
        large.on_dial(1, SMALL);
        large.on_dial(2, 0);
        assert_eq!(large.on_failed(&1, true, 1, t0), Failed::Held);
        assert_eq!(large.on_failed(&2, true, 2, t0 + HOLD / 2), Failed::Held);
        assert!(large.expired(t0 + HOLD / 2).is_empty());
        assert_eq!(large.expired(t0 + HOLD), vec![1]);
        assert_eq!(large.poll_timeout(), Some(t0 + HOLD / 2 + HOLD));
        assert_eq!(large.expired(t0 + HOLD * 2), vec![2]);
        // A circuit from the peer later is no crossing.
        assert_eq!(large.on_incoming(3, SMALL), Incoming::Accept);
        assert_eq!(large.crossed(), 0);
    }

    #[test]
    fn rule_2_only_a_failed_circuit_to_a_smaller_id_is_held() {
        let now = Instant::now();
        let mut small = Dials::new(SMALL);
        small.on_dial(1, LARGE);
        assert_eq!(
            small.on_failed(&1, true, 1, now),
            Failed::Failed(1),
            "larger peer"
        );
        let mut large = Dials::new(LARGE);
        large.on_dial(1, SMALL);
        assert_eq!(
            large.on_failed(&1, false, 1, now),
            Failed::Failed(1),
            "refused here"
        );
        assert_eq!(
            large.on_failed(&9, true, 9, now),
            Failed::Failed(9),
            "not a dial we made"
        );
    }

    #[test]
    fn a_circuit_from_a_peer_we_are_not_dialing_is_accepted_without_crossing() {
        let mut d = Dials::new(SMALL);
        d.on_dial(1, 7);
        assert_eq!(d.on_incoming(2, LARGE), Incoming::Accept);
        assert_eq!(d.crossed(), 0);
        assert_eq!(d.on_failed(&1, true, 1, Instant::now()), Failed::Failed(1));
    }

    #[test]
    fn rule_3_a_peer_is_incoming_while_its_accepted_circuit_is_on_its_way() {
        let now = Instant::now();
        let mut d = Dials::new(SMALL);
        assert_eq!(d.on_incoming(5, LARGE), Incoming::Accept);
        assert!(d.is_incoming(&LARGE));
        d.on_failed(&5, false, 5, now);
        assert!(!d.is_incoming(&LARGE), "the circuit failed");
        assert_eq!(d.on_incoming(6, LARGE), Incoming::Accept);
        d.on_established(&6);
        assert!(!d.is_incoming(&LARGE), "up");
    }

    #[test]
    fn rule_4_a_circuit_after_our_dial_came_up_is_accepted() {
        let mut d = Dials::new(SMALL);
        d.on_dial(1, LARGE);
        d.on_established(&1);
        assert_eq!(d.on_incoming(2, LARGE), Incoming::Accept);
        assert_eq!(d.crossed(), 0);
    }
}
