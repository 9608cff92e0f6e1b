//! The collection protocol, `/tabmesh/snapshot/1.0.0`: JSON requests and replies of at most
//! [`MAX_MESSAGE_BYTES`], strictly decoded.
//!
//! - `part`: a peer sends its part of a snapshot to the initiator, which answers `taken` (or
//!   `refused`, saying why). The part's peer is the connection's peer, never a field, so no
//!   peer can send a part in another's name.
//! - `state`: the naive snapshot asks a peer for its state and its channel counts as they are
//!   now, with no marker; it answers `state`.

use std::collections::BTreeMap;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use super::state::{InFlight, PeerState};
use super::{IncomingChannel, LocalSnapshot, SnapshotId};

/// The protocol name.
pub const PROTOCOL: &str = "/tabmesh/snapshot/1.0.0";
/// Longest message.
pub const MAX_MESSAGE_BYTES: usize = crate::services::message::MAX_MESSAGE_BYTES;

/// One incoming channel of a part, on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncomingWire {
    /// The sender (peer id).
    pub from: String,
    /// Messages received before the record.
    pub received: u64,
    /// Messages in flight.
    pub in_flight: Vec<InFlight>,
    /// The marker arrived.
    pub closed_by_marker: bool,
}

/// A peer's part, on the wire (its peer is the sender's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartWire {
    /// The initiator (peer id).
    pub initiator: String,
    /// The snapshot's number there.
    pub seq: u64,
    /// The recorded state.
    pub state: PeerState,
    /// Messages sent on each outgoing channel (peer id → count).
    pub sent: BTreeMap<String, u64>,
    /// The incoming channels.
    pub incoming: Vec<IncomingWire>,
    /// Every channel brought its marker.
    pub complete: bool,
    /// Why not.
    pub missing: Vec<String>,
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SnapshotRequest {
    /// A part for the initiator.
    Part {
        /// It.
        part: Box<PartWire>,
    },
    /// The naive snapshot's question.
    State,
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SnapshotReply {
    /// The part was taken.
    Taken,
    /// The part was refused.
    Refused {
        /// Why.
        reason: String,
    },
    /// The naive answer: the state and counts as they are now (no in-flight messages; seq 0).
    State {
        /// It.
        part: Box<PartWire>,
    },
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "{} bytes; at most {MAX_MESSAGE_BYTES}",
            bytes.len()
        ));
    }
    Ok(bytes)
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "{} bytes; at most {MAX_MESSAGE_BYTES}",
            bytes.len()
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("malformed: {e}"))
}

impl SnapshotRequest {
    /// The bytes, or why they would be too many.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        encode(self)
    }
    /// Reads a request.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        decode(bytes)
    }
}

impl SnapshotReply {
    /// The bytes, or why they would be too many.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        encode(self)
    }
    /// Reads a reply.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        decode(bytes)
    }
}

impl PartWire {
    /// The wire form of `part`. In-flight messages beyond what fits are left out and the part
    /// says so (incomplete).
    pub fn from_part(part: &LocalSnapshot<PeerState, InFlight>) -> Self {
        let mut wire = Self {
            initiator: part.id.initiator.to_base58(),
            seq: part.id.seq,
            state: part.state.clone(),
            sent: crate::map_from(part.sent.iter().map(|(p, n)| (p.to_base58(), *n))),
            incoming: part
                .incoming
                .iter()
                .map(|c| IncomingWire {
                    from: c.from.to_base58(),
                    received: c.received,
                    in_flight: c.in_flight.clone(),
                    closed_by_marker: c.closed_by_marker,
                })
                .collect(),
            complete: part.complete,
            missing: part.missing.clone(),
        };
        // Halve the longest in-flight list until the part fits.
        while encode(&SnapshotRequest::Part {
            part: Box::new(wire.clone()),
        })
        .is_err()
        {
            let Some(longest) = wire
                .incoming
                .iter_mut()
                .max_by_key(|c| c.in_flight.len())
                .filter(|c| !c.in_flight.is_empty())
            else {
                break;
            };
            let keep = longest.in_flight.len() / 2;
            longest.in_flight.truncate(keep);
            longest.closed_by_marker = false;
            wire.complete = false;
            if !wire.missing.iter().any(|m| m.contains("too large")) {
                wire.missing
                    .push("the part was too large: in-flight messages left out".to_owned());
            }
        }
        wire
    }

    /// The part it carries, sent by `peer`: its ids checked.
    pub fn into_part(self, peer: PeerId) -> Result<LocalSnapshot<PeerState, InFlight>, String> {
        let parse = |s: &str| -> Result<PeerId, String> {
            s.parse().map_err(|_| format!("{s:?} is not a peer id"))
        };
        let mut sent = BTreeMap::new();
        for (p, n) in self.sent {
            sent.insert(parse(&p)?, n);
        }
        let mut incoming = Vec::new();
        for c in self.incoming {
            incoming.push(IncomingChannel {
                from: parse(&c.from)?,
                received: c.received,
                in_flight: c.in_flight,
                closed_by_marker: c.closed_by_marker,
            });
        }
        Ok(LocalSnapshot {
            id: SnapshotId {
                initiator: parse(&self.initiator)?,
                seq: self.seq,
            },
            peer,
            state: self.state,
            sent,
            incoming,
            complete: self.complete,
            missing: self.missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::Keypair;

    fn peer() -> PeerId {
        Keypair::generate_ed25519().public().to_peer_id()
    }

    #[test]
    fn a_part_round_trips_and_is_always_the_senders() {
        let (a, b) = (peer(), peer());
        let part = LocalSnapshot {
            id: SnapshotId {
                initiator: a,
                seq: 2,
            },
            peer: b,
            state: PeerState::default(),
            sent: BTreeMap::from([(a, 3)]),
            incoming: vec![IncomingChannel {
                from: a,
                received: 1,
                in_flight: vec![InFlight::Tokens { amount: 4 }],
                closed_by_marker: true,
            }],
            complete: true,
            missing: Vec::new(),
        };
        let request = SnapshotRequest::Part {
            part: Box::new(PartWire::from_part(&part)),
        };
        let bytes = request.encode().unwrap();
        let SnapshotRequest::Part { part: wire } = SnapshotRequest::decode(&bytes).unwrap() else {
            panic!("a part");
        };
        assert_eq!(wire.clone().into_part(b).unwrap(), part);
        // Whoever sends it owns it.
        assert_eq!(wire.into_part(a).unwrap().peer, a);
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason_and_a_huge_part_is_cut_to_fit() {
        for (input, says) in [
            (r#"{"type":"nope"}"#.to_owned(), "malformed"),
            (
                r#"{"type":"part","part":{"x":1}}"#.to_owned(),
                "unknown field",
            ),
            (" ".repeat(MAX_MESSAGE_BYTES + 1), "at most"),
        ] {
            let err = SnapshotRequest::decode(input.as_bytes()).unwrap_err();
            assert!(err.contains(says), "{input:.40}: {err}");
        }
        let bad = PartWire {
            initiator: "x".into(),
            seq: 1,
            state: PeerState::default(),
            sent: BTreeMap::new(),
            incoming: Vec::new(),
            complete: true,
            missing: Vec::new(),
        };
        assert!(bad.into_part(peer()).unwrap_err().contains("not a peer id"));
        let (a, b) = (peer(), peer());
        let part = LocalSnapshot {
            id: SnapshotId {
                initiator: a,
                seq: 1,
            },
            peer: b,
            state: PeerState::default(),
            sent: BTreeMap::new(),
            incoming: vec![IncomingChannel {
                from: a,
                received: 0,
                in_flight: vec![InFlight::Tokens { amount: 1 }; 20_000],
                closed_by_marker: true,
            }],
            complete: true,
            missing: Vec::new(),
        };
        let wire = PartWire::from_part(&part);
        assert!(!wire.complete && wire.missing[0].contains("too large"));
        assert!(!wire.incoming[0].in_flight.is_empty());
        let request = SnapshotRequest::Part {
            part: Box::new(wire),
        };
        assert!(request.encode().is_ok());
    }
}
