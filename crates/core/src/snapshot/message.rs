//! The marker as it travels on a channel: `{"snapshot":"<initiator peer id>","seq":N}`, strictly
//! decoded (bounded size, no unknown fields, a real peer id, a sequence number from 1).

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use super::SnapshotId;

/// Longest encoded marker accepted.
pub const MAX_MARKER_BYTES: usize = 256;

/// A Chandy-Lamport marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// The snapshot it belongs to.
    pub id: SnapshotId,
}

/// Why bytes are not a marker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarkerError {
    /// Over [`MAX_MARKER_BYTES`].
    #[error("marker of {0} bytes exceeds the {MAX_MARKER_BYTES}-byte limit")]
    Oversized(usize),
    /// Not a marker.
    #[error("malformed marker: {0}")]
    Malformed(String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    snapshot: String,
    seq: u64,
}

impl Marker {
    /// The JSON form.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&Wire {
            snapshot: self.id.initiator.to_base58(),
            seq: self.id.seq,
        })
        .unwrap_or_default()
    }

    /// Reads a marker.
    pub fn decode(bytes: &[u8]) -> Result<Self, MarkerError> {
        if bytes.len() > MAX_MARKER_BYTES {
            return Err(MarkerError::Oversized(bytes.len()));
        }
        let wire: Wire =
            serde_json::from_slice(bytes).map_err(|e| MarkerError::Malformed(e.to_string()))?;
        let initiator: PeerId = wire
            .snapshot
            .parse()
            .map_err(|_| MarkerError::Malformed("snapshot is not a peer id".into()))?;
        if wire.seq == 0 {
            return Err(MarkerError::Malformed("seq starts at 1".into()));
        }
        Ok(Self {
            id: SnapshotId {
                initiator,
                seq: wire.seq,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::Keypair;

    #[test]
    fn a_marker_round_trips_and_bad_ones_are_refused_with_a_reason() {
        let initiator = Keypair::ed25519_from_bytes([1; 32])
            .unwrap()
            .public()
            .to_peer_id();
        let marker = Marker {
            id: SnapshotId { initiator, seq: 3 },
        };
        assert_eq!(Marker::decode(&marker.encode()), Ok(marker));
        let me = initiator.to_base58();
        for (input, says) in [
            ("nope".to_owned(), "malformed"),
            (r#"{"snapshot":"x","seq":1}"#.to_owned(), "not a peer id"),
            (
                format!(r#"{{"snapshot":"{me}","seq":0}}"#),
                "seq starts at 1",
            ),
            (format!(r#"{{"snapshot":"{me}","seq":-1}}"#), "malformed"),
            (
                format!(r#"{{"snapshot":"{me}","seq":1,"x":2}}"#),
                "unknown field",
            ),
        ] {
            let err = Marker::decode(input.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(says), "{input}: {err}");
        }
        assert_eq!(
            Marker::decode(&[b' '; MAX_MARKER_BYTES + 1]),
            Err(MarkerError::Oversized(MAX_MARKER_BYTES + 1))
        );
    }
}
