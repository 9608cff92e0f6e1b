//! The token demo: a peer that switches it on mints [`MINTED`] tokens once and keeps sending
//! random amounts to random peers over the ordered channels. Tokens are only ever moved, so a
//! consistent snapshot finds every one: balances plus transfers in flight equal the total.

use std::collections::BTreeMap;

use libp2p_identity::PeerId;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use web_time::{Duration, Instant};

use super::state::TokenRecord;

/// Tokens a peer creates when it first switches the demo on.
pub const MINTED: u64 = 1_000;
/// Largest single transfer.
pub const MAX_AMOUNT: u64 = 50;

/// One peer's side of the token demo.
#[derive(Debug, Clone)]
pub struct TokenDemo {
    minted: u64,
    balance: u64,
    running: bool,
    interval: Duration,
    next: Option<Instant>,
    rng: SmallRng,
    sent_to: BTreeMap<PeerId, u64>,
    received_from: BTreeMap<PeerId, u64>,
}

impl TokenDemo {
    /// A demo that sends about every `interval` once started; `seed` drives its choices.
    pub fn new(interval: Duration, seed: u64) -> Self {
        Self {
            minted: 0,
            balance: 0,
            running: false,
            interval,
            next: None,
            rng: SmallRng::seed_from_u64(seed),
            sent_to: BTreeMap::new(),
            received_from: BTreeMap::new(),
        }
    }

    /// Whether the demo was ever switched on here (its state is recorded from then).
    pub fn is_on(&self) -> bool {
        self.minted > 0 || !self.received_from.is_empty()
    }

    /// Whether it is sending.
    pub fn running(&self) -> bool {
        self.running
    }

    /// Starts sending (minting [`MINTED`] tokens the first time) or stops.
    pub fn set_running(&mut self, now: Instant, on: bool) {
        if on && self.minted == 0 {
            self.minted = MINTED;
            self.balance += MINTED;
        }
        self.running = on;
        self.next = on.then(|| now + self.interval);
    }

    /// When the next transfer is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    /// The transfer due at `now`, if any: a random amount to a random one of `peers`, taken
    /// from the balance at once (it is in flight until the receiver counts it).
    pub fn on_tick(&mut self, now: Instant, peers: &[PeerId]) -> Option<(PeerId, u64)> {
        let due = self.next.filter(|at| *at <= now)?;
        // Jittered so that peers do not send in lockstep.
        let jitter = self.rng.gen_range(0.5..1.5);
        self.next = Some(due.max(now) + self.interval.mul_f64(jitter));
        let to = *peers.choose(&mut self.rng)?;
        if self.balance == 0 {
            return None;
        }
        let amount = self.rng.gen_range(1..=self.balance.min(MAX_AMOUNT));
        self.balance -= amount;
        *self.sent_to.entry(to).or_default() += amount;
        Some((to, amount))
    }

    /// A transfer could not be queued: the tokens come back.
    pub fn refund(&mut self, to: PeerId, amount: u64) {
        self.balance += amount;
        if let Some(sent) = self.sent_to.get_mut(&to) {
            *sent = sent.saturating_sub(amount);
        }
    }

    /// Tokens arrived from `from`.
    pub fn on_received(&mut self, from: PeerId, amount: u64) {
        self.balance = self.balance.saturating_add(amount);
        *self.received_from.entry(from).or_default() += amount;
    }

    /// The state a snapshot records (`None` before the demo ever ran here).
    pub fn record(&self) -> Option<TokenRecord> {
        self.is_on().then(|| TokenRecord {
            minted: self.minted,
            balance: self.balance,
            running: self.running,
            sent_to: crate::map_from(self.sent_to.iter().map(|(p, n)| (p.to_base58(), *n))),
            received_from: crate::map_from(
                self.received_from.iter().map(|(p, n)| (p.to_base58(), *n)),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::Keypair;

    #[test]
    fn switching_on_mints_once_and_transfers_move_tokens_without_making_any() {
        let t0 = Instant::now();
        let (a, b) = (
            Keypair::generate_ed25519().public().to_peer_id(),
            Keypair::generate_ed25519().public().to_peer_id(),
        );
        let mut demo = TokenDemo::new(Duration::from_millis(100), 1);
        assert_eq!((demo.record(), demo.poll_timeout()), (None, None));
        demo.set_running(t0, true);
        assert_eq!(demo.on_tick(t0, &[a]), None, "not due yet");
        let mut sent = 0;
        let mut t = t0;
        for _ in 0..50 {
            t = demo.poll_timeout().unwrap();
            if let Some((to, amount)) = demo.on_tick(t, &[a, b]) {
                assert!((1..=MAX_AMOUNT).contains(&amount) && [a, b].contains(&to));
                sent += amount;
            }
        }
        let record = demo.record().unwrap();
        assert_eq!(record.balance + sent, MINTED);
        assert_eq!(record.sent_to.values().sum::<u64>(), sent);
        demo.refund(a, 5);
        demo.on_received(b, 7);
        demo.set_running(t, false);
        demo.set_running(t, true);
        let record = demo.record().unwrap();
        assert_eq!(record.minted, MINTED, "minted once");
        assert_eq!(record.balance + sent, MINTED + 12);
        demo.set_running(t, false);
        assert_eq!(demo.poll_timeout(), None);
        // No peer to send to: nothing sent.
        let mut poor = TokenDemo::new(Duration::from_millis(1), 2);
        poor.on_received(a, 1);
        poor.set_running(t0, true);
        let at = poor.poll_timeout().unwrap();
        assert_eq!(poor.on_tick(at, &[]), None);
    }
}
