//! What travels on an ordered channel: a tag byte, then the body.
//!
//! | tag | frame | body |
//! | --- | --- | --- |
//! | `M` | a marker | its JSON ([`Marker`]) |
//! | `T` | a token transfer | the amount, 8 bytes big-endian, from 1 to [`MAX_TRANSFER`] |
//! | `G` | a GIMPS gossip message | an acknowledgement token (8 bytes; 0: none wanted), then the message's bytes, checked by the gossip rules |
//! | `A` | the acknowledgement of a gossip message | its token (8 bytes, not 0) |
//!
//! Markers are the algorithm's own; transfers and gossip are the application messages a
//! snapshot cuts, counted and recorded in flight. Acknowledgements close a traced copy's send
//! span (its round trip), as the gossip protocol's replies did; like markers they are not
//! application messages.

use super::Marker;

/// Largest amount one transfer carries.
pub const MAX_TRANSFER: u64 = 1_000_000;

/// A frame of an ordered channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelFrame {
    /// A Chandy-Lamport marker.
    Marker(Marker),
    /// Tokens of the token demo.
    Tokens(u64),
    /// A GIMPS gossip message.
    Gimps {
        /// The token to acknowledge it with (0: no acknowledgement wanted).
        ack: u64,
        /// The message.
        bytes: Vec<u8>,
    },
    /// The acknowledgement of gossip message `token`.
    GimpsAck(u64),
}

/// Why bytes are not a channel frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No bytes.
    #[error("empty channel frame")]
    Empty,
    /// A tag we do not know.
    #[error("unknown channel frame tag {0:#04x}")]
    UnknownTag(u8),
    /// A malformed marker.
    #[error(transparent)]
    Marker(#[from] super::MarkerError),
    /// A transfer that is not 8 bytes, or whose amount is 0 or over the limit.
    #[error("malformed token transfer: {0}")]
    Tokens(String),
    /// A gossip frame without its token, or a malformed acknowledgement.
    #[error("malformed gossip frame: {0}")]
    Gimps(String),
}

impl ChannelFrame {
    /// Whether the frame is an application message (counted and recorded by snapshots).
    pub fn is_application(&self) -> bool {
        matches!(self, Self::Tokens(_) | Self::Gimps { .. })
    }

    /// The bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Marker(marker) => [b"M".as_slice(), &marker.encode()].concat(),
            Self::Tokens(amount) => [b"T".as_slice(), &amount.to_be_bytes()].concat(),
            Self::Gimps { ack, bytes } => [b"G".as_slice(), &ack.to_be_bytes(), bytes].concat(),
            Self::GimpsAck(token) => [b"A".as_slice(), &token.to_be_bytes()].concat(),
        }
    }

    /// Reads a frame.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let (&tag, body) = bytes.split_first().ok_or(FrameError::Empty)?;
        match tag {
            b'M' => Ok(Self::Marker(Marker::decode(body)?)),
            b'T' => {
                let amount = <[u8; 8]>::try_from(body)
                    .map(u64::from_be_bytes)
                    .map_err(|_| FrameError::Tokens(format!("{} bytes, not 8", body.len())))?;
                if amount == 0 || amount > MAX_TRANSFER {
                    return Err(FrameError::Tokens(format!(
                        "amount {amount}; from 1 to {MAX_TRANSFER}"
                    )));
                }
                Ok(Self::Tokens(amount))
            }
            b'G' => {
                let (ack, bytes) = body
                    .split_first_chunk::<8>()
                    .ok_or_else(|| FrameError::Gimps("no acknowledgement token".into()))?;
                Ok(Self::Gimps {
                    ack: u64::from_be_bytes(*ack),
                    bytes: bytes.to_vec(),
                })
            }
            b'A' => match <[u8; 8]>::try_from(body).map(u64::from_be_bytes) {
                Ok(token) if token != 0 => Ok(Self::GimpsAck(token)),
                _ => Err(FrameError::Gimps("malformed acknowledgement".into())),
            },
            other => Err(FrameError::UnknownTag(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SnapshotId;
    use libp2p_identity::Keypair;

    #[test]
    fn frames_round_trip_and_bad_ones_are_refused_with_a_reason() {
        let initiator = Keypair::generate_ed25519().public().to_peer_id();
        for frame in [
            ChannelFrame::Marker(Marker {
                id: SnapshotId { initiator, seq: 4 },
            }),
            ChannelFrame::Tokens(17),
            ChannelFrame::Gimps {
                ack: 0,
                bytes: b"{}".to_vec(),
            },
            ChannelFrame::Gimps {
                ack: 9,
                bytes: Vec::new(),
            },
            ChannelFrame::GimpsAck(9),
        ] {
            assert_eq!(ChannelFrame::decode(&frame.encode()), Ok(frame));
        }
        for (bytes, says) in [
            (Vec::new(), "empty"),
            (b"X1".to_vec(), "unknown channel frame tag 0x58"),
            (b"T123".to_vec(), "3 bytes, not 8"),
            ([b"T".as_slice(), &0u64.to_be_bytes()].concat(), "amount 0"),
            (
                [b"T".as_slice(), &(MAX_TRANSFER + 1).to_be_bytes()].concat(),
                "from 1 to",
            ),
            (b"M{}".to_vec(), "malformed marker"),
            (b"G1234".to_vec(), "no acknowledgement token"),
            (
                [b"A".as_slice(), &0u64.to_be_bytes()].concat(),
                "malformed acknowledgement",
            ),
        ] {
            let err = ChannelFrame::decode(&bytes).unwrap_err();
            assert!(err.to_string().contains(says), "{bytes:?}: {err}");
        }
    }
}
