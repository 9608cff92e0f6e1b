//! What a tabmesh peer records, what is recorded in flight, and the global state a user sees:
//! [`SnapshotResult`], with both checks ([`Checks`]).

use std::collections::BTreeMap;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use super::{ChannelView, GlobalSnapshot};

/// A peer's GIMPS state as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GimpsRecord {
    /// The largest Mersenne exponent it knows.
    pub largest_exponent: Option<u32>,
    /// Who found it (peer id).
    pub finder: Option<String>,
    /// Peers in its gossip list.
    pub peers: usize,
    /// Gossip messages sent and received so far.
    pub sent: u64,
    /// See `sent`.
    pub received: u64,
}

/// A peer's token-demo state as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// Tokens it created when the demo was switched on.
    pub minted: u64,
    /// Tokens it holds.
    pub balance: u64,
    /// Whether it is sending.
    pub running: bool,
    /// Tokens sent to each peer (peer id), ever.
    pub sent_to: BTreeMap<String, u64>,
    /// Tokens received from each peer, ever.
    pub received_from: BTreeMap<String, u64>,
}

/// One peer's recorded state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerState {
    /// Its name.
    pub name: String,
    /// GIMPS.
    pub gimps: GimpsRecord,
    /// DHT records it stores.
    pub dht_records: usize,
    /// The peers it is connected to (peer ids; the relay excluded): the topology.
    pub connections: Vec<String>,
    /// The token demo, once switched on there.
    pub tokens: Option<TokenRecord>,
    /// When it recorded (Unix ms, its clock).
    pub recorded_unix_ms: u64,
    /// The channel traffic around its record, oldest first (for the space-time diagram).
    pub timeline: Vec<TimelineEvent>,
}

/// A frame a peer sent or received on a channel, as the diagram around a cut draws it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineEvent {
    /// When (Unix ms, the peer's clock).
    pub at_unix_ms: u64,
    /// Sent (otherwise received).
    pub sent: bool,
    /// The other peer (peer id).
    pub peer: String,
    /// The frame's number on its channel among application messages; a marker's, its
    /// snapshot's number (a send and its receipt share it).
    pub n: u64,
    /// `marker`, `tokens` or `gimps`.
    pub kind: String,
    /// The amount of a transfer.
    pub amount: u64,
}

/// The snapshot section of a node's view.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSection {
    /// Snapshots this peer takes part in now.
    pub running: usize,
    /// The last snapshots this peer took, newest first.
    pub recent: Vec<SnapshotResult>,
    /// Its token-demo state, once switched on.
    pub tokens: Option<TokenRecord>,
    /// Peers it has an ordered channel with (peer ids).
    pub channel_peers: Vec<String>,
    /// Frames sent and received on the channels.
    pub frames_sent: u64,
    /// See `frames_sent`.
    pub frames_received: u64,
    /// Frames dropped (queue full, too large) and breaks of order.
    pub frames_dropped: u64,
    /// See `frames_dropped`.
    pub breaks: u64,
    /// Malformed frames, markers and parts refused.
    pub refused: u64,
}

/// An application message recorded in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum InFlight {
    /// A token transfer.
    Tokens {
        /// Its amount.
        amount: u64,
    },
    /// A gossip message.
    Gimps {
        /// What it said, in a few words.
        summary: String,
    },
}

/// The token demo's accounting over a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenTotals {
    /// Tokens that should exist: those minted by the recorded peers, plus what came to them
    /// from peers outside the snapshot (that left) less what went to those.
    pub total: i64,
    /// Each recorded peer's balance (peer id → tokens).
    pub balances: BTreeMap<String, u64>,
    /// Tokens recorded in flight on the channels.
    pub in_flight: u64,
    /// Balances plus in flight.
    pub counted: i64,
}

/// The two checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checks {
    /// Balances plus tokens in flight equal the total.
    pub tokens_conserved: bool,
    /// For each channel, what its sender had sent equals what its receiver had received plus
    /// what was in flight.
    pub channels_consistent: bool,
}

/// One peer in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// Its peer id.
    pub peer_id: String,
    /// What it recorded.
    #[serde(flatten)]
    pub state: PeerState,
}

/// A global snapshot as a user sees it (`tabmesh.snapshot()`, the native `snapshot` command).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotResult {
    /// `name#seq` of the initiator.
    pub id: String,
    /// Asked every peer for its state, without markers.
    pub naive: bool,
    /// Every expected peer sent a complete part.
    pub complete: bool,
    /// Each peer's recorded state.
    pub peers: Vec<PeerEntry>,
    /// Every channel with its state.
    pub channels: Vec<ChannelView<InFlight>>,
    /// The token demo's accounting.
    pub tokens: TokenTotals,
    /// Both checks.
    pub checks: Checks,
    /// What is missing, when incomplete.
    pub missing: Vec<String>,
    /// From the initiator's record to the last part, ms.
    pub duration_ms: u64,
    /// When it started (Unix ms, the initiator's clock).
    pub started_unix_ms: u64,
    /// Markers sent, by all peers (each sends one per outgoing channel).
    pub markers_sent: u64,
    /// Bytes of markers and parts sent for it.
    pub bytes_sent: u64,
}

impl SnapshotResult {
    /// The user's view of an assembled snapshot.
    pub fn from_global(
        id: String,
        naive: bool,
        global: GlobalSnapshot<PeerState, InFlight>,
    ) -> Self {
        let tokens = token_totals(&global.states, &global.channels);
        let checks = Checks {
            tokens_conserved: tokens.counted == tokens.total,
            channels_consistent: global.channels_consistent,
        };
        Self {
            id,
            naive,
            complete: global.complete,
            peers: global
                .states
                .into_iter()
                .map(|(peer_id, state)| PeerEntry { peer_id, state })
                .collect(),
            channels: global.channels,
            tokens,
            checks,
            missing: global.missing,
            ..Self::default()
        }
    }
}

impl SnapshotResult {
    /// The snapshot in a few lines for a terminal: the outcome, both checks with their figures,
    /// a line per peer and the messages in flight.
    pub fn describe(&self) -> Vec<String> {
        let name = |id: &str| {
            self.peers
                .iter()
                .find(|p| p.peer_id == id)
                .map(|p| p.state.name.clone())
                .or_else(|| {
                    id.parse::<PeerId>()
                        .ok()
                        .map(|p| crate::names::peer_name(&p))
                })
                .unwrap_or_else(|| crate::names::short_text(id))
        };
        let what = if self.naive {
            "naive snapshot"
        } else {
            "snapshot"
        };
        let outcome = if self.complete {
            "complete"
        } else {
            "INCOMPLETE"
        };
        let mut lines = vec![format!(
            "{what} {}: {outcome} in {} ms ({} peers, {} channels, {} markers)",
            self.id,
            self.duration_ms,
            self.peers.len(),
            self.channels.len(),
            self.markers_sent
        )];
        let t = &self.tokens;
        lines.push(format!(
            "  tokens: {} in balances + {} in flight = {} of {} total: {}",
            t.counted - t.in_flight as i64,
            t.in_flight,
            t.counted,
            t.total,
            if self.checks.tokens_conserved {
                "conserved"
            } else {
                "NOT conserved"
            }
        ));
        let bad = self.channels.iter().filter(|c| !c.consistent).count();
        lines.push(if self.checks.channels_consistent {
            "  channels: every one consistent (sent = received + in flight)".to_owned()
        } else {
            format!("  channels: {bad} inconsistent (sent != received + in flight)")
        });
        lines.push(format!(
            "  {:<18} {:>8} {:>12} {:>8} {:>6}",
            "peer", "balance", "largest", "records", "links"
        ));
        for peer in &self.peers {
            let s = &peer.state;
            lines.push(format!(
                "  {:<18} {:>8} {:>12} {:>8} {:>6}",
                s.name,
                s.tokens
                    .as_ref()
                    .map_or("-".to_owned(), |t| t.balance.to_string()),
                s.gimps
                    .largest_exponent
                    .map_or("-".to_owned(), |e| format!("2^{e}-1")),
                s.dht_records,
                s.connections.len()
            ));
        }
        for c in self
            .channels
            .iter()
            .filter(|c| !c.in_flight.is_empty() || !c.consistent)
        {
            let messages: Vec<String> = c
                .in_flight
                .iter()
                .map(|m| match m {
                    InFlight::Tokens { amount } => format!("{amount} tokens"),
                    InFlight::Gimps { summary } => summary.clone(),
                })
                .collect();
            let mark = if c.consistent { "" } else { "  (inconsistent)" };
            lines.push(format!(
                "  in flight {} -> {}: {}{mark}",
                name(&c.from),
                name(&c.to),
                if messages.is_empty() {
                    "nothing".to_owned()
                } else {
                    messages.join(", ")
                }
            ));
        }
        for missing in &self.missing {
            lines.push(format!("  missing: {missing}"));
        }
        lines
    }
}

/// Counts the tokens of recorded `states` and of the `channels`' in-flight messages.
pub fn token_totals(
    states: &BTreeMap<String, PeerState>,
    channels: &[ChannelView<InFlight>],
) -> TokenTotals {
    let mut totals = TokenTotals::default();
    for (peer, state) in states {
        let Some(tokens) = &state.tokens else {
            continue;
        };
        totals.balances.insert(peer.clone(), tokens.balance);
        totals.total += tokens.minted as i64;
        // Exchanges with peers outside the snapshot moved tokens in or out of it.
        for (other, amount) in &tokens.received_from {
            if !states.contains_key(other) {
                totals.total += *amount as i64;
            }
        }
        for (other, amount) in &tokens.sent_to {
            if !states.contains_key(other) {
                totals.total -= *amount as i64;
            }
        }
    }
    totals.in_flight = tokens_in_flight(channels);
    totals.counted =
        totals.balances.values().map(|b| *b as i64).sum::<i64>() + totals.in_flight as i64;
    totals
}

/// Tokens recorded in flight on `channels`.
pub fn tokens_in_flight(channels: &[ChannelView<InFlight>]) -> u64 {
    channels
        .iter()
        .flat_map(|c| &c.in_flight)
        .map(|m| match m {
            InFlight::Tokens { amount } => *amount,
            InFlight::Gimps { .. } => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(minted: u64, balance: u64, sent: &[(&str, u64)], got: &[(&str, u64)]) -> PeerState {
        let map = |v: &[(&str, u64)]| v.iter().map(|(p, n)| ((*p).to_owned(), *n)).collect();
        PeerState {
            tokens: Some(TokenRecord {
                minted,
                balance,
                running: true,
                sent_to: map(sent),
                received_from: map(got),
            }),
            ..PeerState::default()
        }
    }

    #[test]
    fn tokens_are_counted_in_balances_and_in_flight_and_peers_that_left_move_the_total() {
        // a sent b 30 (10 still in flight) and gave c, who left, 5; c had given a 8.
        let states = BTreeMap::from([
            (
                "a".to_owned(),
                tokens(100, 73, &[("b", 30), ("c", 5)], &[("c", 8)]),
            ),
            ("b".to_owned(), tokens(0, 20, &[], &[("a", 20)])),
        ]);
        let channel = ChannelView {
            from: "a".into(),
            to: "b".into(),
            sent: Some(2),
            received: 1,
            in_flight: vec![
                InFlight::Tokens { amount: 10 },
                InFlight::Gimps {
                    summary: "PRIME".into(),
                },
            ],
            consistent: true,
        };
        let totals = token_totals(&states, &[channel]);
        assert_eq!(totals.total, 100 + 8 - 5);
        assert_eq!(totals.in_flight, 10);
        assert_eq!(totals.counted, 73 + 20 + 10);
        assert_eq!(totals.counted, totals.total);
        // Without the in-flight transfer the count falls short: what a naive snapshot sees.
        assert_eq!(token_totals(&states, &[]).counted, totals.total - 10);
    }
}

#[cfg(test)]
mod json_tests {
    use super::*;

    #[test]
    fn a_result_reads_back_from_its_json_as_scripts_and_the_testbed_read_it() {
        let result = SnapshotResult {
            id: "a#1".into(),
            peers: vec![PeerEntry {
                peer_id: "p".into(),
                state: PeerState {
                    name: "amber-heron".into(),
                    ..PeerState::default()
                },
            }],
            ..SnapshotResult::default()
        };
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["peers"][0]["name"], "amber-heron", "flattened: {json}");
        assert_eq!(
            serde_json::from_value::<SnapshotResult>(json).unwrap(),
            result
        );
    }
}
