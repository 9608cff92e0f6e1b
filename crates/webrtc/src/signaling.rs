//! `/webrtc-signaling/0.0.1`: how two peers that share a relayed connection agree on a direct
//! WebRTC connection (libp2p `webrtc/webrtc.md`).
//!
//! Messages are varint length-prefixed protobuf `Message { optional Type type = 1;
//! optional string data = 2 }` with `SDP_OFFER = 0`, `SDP_ANSWER = 1`, `ICE_CANDIDATE = 2`. The
//! type is always written, even when it is 0 (js-libp2p checks for its presence). An SDP travels
//! as the raw description text; an ICE candidate as the JSON of `RTCIceCandidate.toJSON()`.
//!
//! [`SignalingSession`] is one side's sequence as a clock-free state machine. The dialer (which
//! opened the stream) sends its offer before applying it locally, reads the answer, then trades
//! candidates until the peer connection is up; the listener reads the offer, answers, then trades
//! candidates. Inputs are what the browser and the stream report; outputs are
//! [`SignalingAction`]s for the driver to carry out. A deadline bounds the whole exchange:
//! a peer that never answers, a malformed or out-of-order message, or a stream closed too early
//! each end it with a [`SignalingError`], never a hang.

use web_time::{Duration, Instant};

use crate::pb::{self, Field, PbError};

/// The signaling protocol's name.
pub const PROTOCOL: &str = "/webrtc-signaling/0.0.1";
/// Largest signaling message accepted (an SDP is a few KB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Time a side gives the whole exchange, offer to connected. js-libp2p's listener allows 10 s,
/// enough for two idle tabs (a few hundred ms); 24 tabs joining at once on two cores took 5 to
/// 20 s per exchange, and at 10 s a third of them were given up on by one side just as the
/// other finished, which made each side start again.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// What a signaling message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// `SDP_OFFER`.
    Offer,
    /// `SDP_ANSWER`.
    Answer,
    /// `ICE_CANDIDATE`.
    IceCandidate,
}

impl SignalKind {
    fn number(self) -> u64 {
        match self {
            Self::Offer => 0,
            Self::Answer => 1,
            Self::IceCandidate => 2,
        }
    }
}

/// One signaling message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalingMessage {
    /// Its type.
    pub kind: SignalKind,
    /// The SDP or the candidate's JSON.
    pub data: String,
}

impl SignalingMessage {
    /// The message with its length prefix, ready for the stream.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.data.len() + 8);
        pb::put_varint_field(&mut body, 1, self.kind.number());
        pb::put_bytes_field(&mut body, 2, self.data.as_bytes());
        pb::length_prefixed(&body)
    }

    /// Parses a message body (without its prefix).
    pub fn decode(body: &[u8]) -> Result<Self, SignalingError> {
        let mut kind = None;
        let mut data = String::new();
        for (number, field) in pb::fields(body)? {
            match (number, field) {
                (1, Field::Varint(n)) => {
                    kind = Some(match n {
                        0 => SignalKind::Offer,
                        1 => SignalKind::Answer,
                        2 => SignalKind::IceCandidate,
                        other => {
                            return Err(SignalingError::Malformed(format!(
                                "unknown message type {other}"
                            )));
                        }
                    });
                }
                (2, Field::Bytes(bytes)) => {
                    data = String::from_utf8(bytes.to_vec())
                        .map_err(|_| SignalingError::Malformed("data is not UTF-8".to_owned()))?;
                }
                (1 | 2, _) => {
                    return Err(SignalingError::Malformed(format!(
                        "field {number} has the wrong wire type"
                    )));
                }
                _ => {}
            }
        }
        let kind = kind.ok_or_else(|| SignalingError::Malformed("no message type".to_owned()))?;
        Ok(Self { kind, data })
    }
}

/// Splits the signaling stream's bytes into messages, holding at most one message's bytes.
#[derive(Debug, Default)]
pub struct SignalingDecoder {
    frames: pb::FrameBuffer,
}

impl SignalingDecoder {
    /// Adds bytes read from the stream; returns the messages they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SignalingMessage>, SignalingError> {
        self.frames
            .push(bytes, MAX_MESSAGE_BYTES, SignalingMessage::decode)
    }
}

/// Why signaling failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalingError {
    /// Bytes that are not a signaling message.
    #[error("malformed signaling message: {0}")]
    Malformed(String),
    /// A message out of order.
    #[error("expected {expected}, got {got:?}")]
    Unexpected {
        /// What the sequence needed.
        expected: &'static str,
        /// What came.
        got: SignalKind,
    },
    /// The deadline passed.
    #[error("signaling timed out while {0}")]
    Timeout(&'static str),
    /// The peer closed the stream before the exchange was done.
    #[error("the peer closed the signaling stream while {0}")]
    PeerClosed(&'static str),
    /// The browser or the peer connection failed.
    #[error("{0}")]
    Failed(String),
}

impl SignalingError {
    /// Whether the peer broke the protocol (a malformed or out-of-order message), rather than
    /// being slow, gone or failed by its browser.
    pub fn is_violation(&self) -> bool {
        matches!(self, Self::Malformed(_) | Self::Unexpected { .. })
    }
}

impl From<PbError> for SignalingError {
    fn from(e: PbError) -> Self {
        Self::Malformed(e.to_string())
    }
}

/// Which side of the exchange we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opened the signaling stream; offers.
    Dialer,
    /// Accepted it; answers.
    Listener,
}

/// Which description an SDP is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpKind {
    /// An offer.
    Offer,
    /// An answer.
    Answer,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalingAction {
    /// Write this message on the stream.
    Send(SignalingMessage),
    /// Apply our own description (after it was sent, as the spec orders).
    SetLocalDescription(SdpKind, String),
    /// Apply the peer's description.
    SetRemoteDescription(SdpKind, String),
    /// Create an answer to the offer just applied, then report it with
    /// [`SignalingSession::on_local_answer`].
    CreateAnswer,
    /// Add the peer's candidate (`RTCIceCandidateInit` JSON).
    AddIceCandidate(String),
    /// Done: the peer connection is up; close the signaling stream (write side).
    Connected,
    /// Give up: reset the stream and close the peer connection.
    Fail(SignalingError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Dialer: waiting for the browser's offer.
    CreatingOffer,
    /// Dialer: offer sent, waiting for the answer.
    AwaitingAnswer,
    /// Listener: waiting for the offer.
    AwaitingOffer,
    /// Listener: waiting for the browser's answer.
    CreatingAnswer,
    /// Descriptions exchanged: trading candidates until connected.
    Connecting,
    Connected,
    Failed,
}

impl Phase {
    fn doing(self) -> &'static str {
        match self {
            Self::CreatingOffer => "creating the offer",
            Self::AwaitingAnswer => "waiting for the answer",
            Self::AwaitingOffer => "waiting for the offer",
            Self::CreatingAnswer => "creating the answer",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Failed => "failed",
        }
    }
}

/// One side of a signaling exchange.
#[derive(Debug)]
pub struct SignalingSession {
    phase: Phase,
    deadline: Instant,
    /// Our candidates gathered before our description went out.
    early_candidates: Vec<String>,
    /// The peer's candidates that arrived before its description.
    early_remote: Vec<String>,
}

impl SignalingSession {
    /// A session for `role` started at `now` that must finish within `timeout`.
    pub fn new(role: Role, now: Instant, timeout: Duration) -> Self {
        Self {
            phase: match role {
                Role::Dialer => Phase::CreatingOffer,
                Role::Listener => Phase::AwaitingOffer,
            },
            deadline: now + timeout,
            early_candidates: Vec::new(),
            early_remote: Vec::new(),
        }
    }

    /// Whether the exchange is over (connected or failed).
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Connected | Phase::Failed)
    }

    /// When [`on_timeout`](Self::on_timeout) must be called, while not done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.is_done()).then_some(self.deadline)
    }

    /// Time passes.
    pub fn on_timeout(&mut self, now: Instant) -> Vec<SignalingAction> {
        if self.is_done() || now < self.deadline {
            return Vec::new();
        }
        self.fail(SignalingError::Timeout(self.phase.doing()))
    }

    /// Dialer: the browser created our offer.
    pub fn on_local_offer(&mut self, sdp: String) -> Vec<SignalingAction> {
        if self.phase != Phase::CreatingOffer {
            return Vec::new();
        }
        self.phase = Phase::AwaitingAnswer;
        let mut actions = vec![
            SignalingAction::Send(SignalingMessage {
                kind: SignalKind::Offer,
                data: sdp.clone(),
            }),
            SignalingAction::SetLocalDescription(SdpKind::Offer, sdp),
        ];
        actions.extend(self.flush_early_candidates());
        actions
    }

    /// Listener: the browser created our answer.
    pub fn on_local_answer(&mut self, sdp: String) -> Vec<SignalingAction> {
        if self.phase != Phase::CreatingAnswer {
            return Vec::new();
        }
        self.phase = Phase::Connecting;
        let mut actions = vec![
            SignalingAction::Send(SignalingMessage {
                kind: SignalKind::Answer,
                data: sdp.clone(),
            }),
            SignalingAction::SetLocalDescription(SdpKind::Answer, sdp),
        ];
        actions.extend(self.flush_early_candidates());
        actions.extend(self.flush_early_remote());
        actions
    }

    /// The browser gathered a candidate (`None`: gathering is complete, which is not sent).
    pub fn on_local_candidate(&mut self, candidate: Option<String>) -> Vec<SignalingAction> {
        let Some(candidate) = candidate.filter(|c| !c.is_empty()) else {
            return Vec::new();
        };
        match self.phase {
            Phase::CreatingOffer | Phase::AwaitingOffer | Phase::CreatingAnswer => {
                self.early_candidates.push(candidate);
                Vec::new()
            }
            Phase::AwaitingAnswer | Phase::Connecting => {
                vec![SignalingAction::Send(SignalingMessage {
                    kind: SignalKind::IceCandidate,
                    data: candidate,
                })]
            }
            Phase::Connected | Phase::Failed => Vec::new(),
        }
    }

    /// Bytes from the stream became this message.
    pub fn on_message(&mut self, message: SignalingMessage) -> Vec<SignalingAction> {
        match (self.phase, message.kind) {
            (Phase::Connected | Phase::Failed, _) => Vec::new(),
            (Phase::AwaitingOffer, SignalKind::Offer) => {
                self.phase = Phase::CreatingAnswer;
                vec![
                    SignalingAction::SetRemoteDescription(SdpKind::Offer, message.data),
                    SignalingAction::CreateAnswer,
                ]
            }
            (Phase::AwaitingAnswer, SignalKind::Answer) => {
                self.phase = Phase::Connecting;
                let mut actions = vec![SignalingAction::SetRemoteDescription(
                    SdpKind::Answer,
                    message.data,
                )];
                actions.extend(self.flush_early_remote());
                actions
            }
            (_, SignalKind::IceCandidate) if is_end_of_candidates(&message.data) => Vec::new(),
            (Phase::Connecting, SignalKind::IceCandidate) => {
                vec![SignalingAction::AddIceCandidate(message.data)]
            }
            // A candidate racing ahead of the description it belongs to: keep it for later.
            (Phase::AwaitingAnswer | Phase::CreatingAnswer, SignalKind::IceCandidate) => {
                if self.early_remote.len() < MAX_EARLY_CANDIDATES {
                    self.early_remote.push(message.data);
                }
                Vec::new()
            }
            (phase, got) => self.fail(SignalingError::Unexpected {
                expected: match phase {
                    Phase::AwaitingOffer => "an SDP offer",
                    Phase::AwaitingAnswer => "an SDP answer",
                    _ => "an ICE candidate",
                },
                got,
            }),
        }
    }

    /// The stream's bytes could not be read.
    pub fn on_malformed(&mut self, error: SignalingError) -> Vec<SignalingAction> {
        if self.is_done() {
            return Vec::new();
        }
        self.fail(error)
    }

    /// The peer closed its side of the stream. While connecting this only means "no more
    /// candidates" (ICE may still succeed); before the descriptions are traded it is a failure.
    pub fn on_stream_closed(&mut self) -> Vec<SignalingAction> {
        match self.phase {
            Phase::Connecting | Phase::Connected | Phase::Failed => Vec::new(),
            phase => self.fail(SignalingError::PeerClosed(phase.doing())),
        }
    }

    /// The peer connection reached `connected`.
    pub fn on_connected(&mut self) -> Vec<SignalingAction> {
        if self.phase != Phase::Connecting {
            return Vec::new();
        }
        self.phase = Phase::Connected;
        vec![SignalingAction::Connected]
    }

    /// The peer connection failed or was closed, or the browser refused a description.
    pub fn on_failed(&mut self, reason: String) -> Vec<SignalingAction> {
        if self.is_done() {
            return Vec::new();
        }
        self.fail(SignalingError::Failed(reason))
    }

    fn fail(&mut self, error: SignalingError) -> Vec<SignalingAction> {
        self.phase = Phase::Failed;
        vec![SignalingAction::Fail(error)]
    }

    fn flush_early_candidates(&mut self) -> Vec<SignalingAction> {
        self.early_candidates
            .drain(..)
            .map(|data| {
                SignalingAction::Send(SignalingMessage {
                    kind: SignalKind::IceCandidate,
                    data,
                })
            })
            .collect()
    }

    fn flush_early_remote(&mut self) -> Vec<SignalingAction> {
        self.early_remote
            .drain(..)
            .map(SignalingAction::AddIceCandidate)
            .collect()
    }
}

/// Candidates kept while waiting for the peer's description.
const MAX_EARLY_CANDIDATES: usize = 64;

/// Older js-libp2p sends `"null"` (or an empty candidate) to mark the end of its candidates.
fn is_end_of_candidates(data: &str) -> bool {
    matches!(data.trim(), "" | "null" | "\"\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: SignalKind, data: &str) -> SignalingMessage {
        SignalingMessage {
            kind,
            data: data.to_owned(),
        }
    }

    fn session(role: Role) -> (SignalingSession, Instant) {
        let now = Instant::now();
        (SignalingSession::new(role, now, DEFAULT_TIMEOUT), now)
    }

    #[test]
    fn messages_round_trip_and_the_zero_type_is_written() {
        let offer = msg(SignalKind::Offer, "v=0\r\n");
        let bytes = offer.encode();
        // Prefix, then field 1 = 0 present (0x08 0x00).
        assert_eq!(&bytes[1..3], &[0x08, 0x00]);
        let mut decoder = SignalingDecoder::default();
        let mut all = bytes.clone();
        all.extend(msg(SignalKind::IceCandidate, "{}").encode());
        // Byte by byte: nothing until a message is complete, then exactly the messages.
        let mut got = Vec::new();
        for b in &all {
            got.extend(decoder.push(&[*b]).unwrap());
        }
        assert_eq!(got, vec![offer, msg(SignalKind::IceCandidate, "{}")]);
    }

    #[test]
    fn malformed_messages_are_errors() {
        let mut body = Vec::new();
        pb::put_bytes_field(&mut body, 2, b"no type");
        assert!(matches!(
            SignalingMessage::decode(&body),
            Err(SignalingError::Malformed(_))
        ));
        let mut body = Vec::new();
        pb::put_varint_field(&mut body, 1, 9);
        assert!(SignalingMessage::decode(&body).is_err());
        let mut body = Vec::new();
        pb::put_varint_field(&mut body, 1, 0);
        pb::put_bytes_field(&mut body, 2, &[0xff, 0xfe]);
        assert!(SignalingMessage::decode(&body).is_err());
        let mut decoder = SignalingDecoder::default();
        let mut huge = Vec::new();
        pb::put_varint(&mut huge, (MAX_MESSAGE_BYTES + 1) as u64);
        assert!(decoder.push(&huge).is_err());
        assert!(
            SignalingDecoder::default()
                .push(&[0x02, 0x0f, 0x00])
                .is_err()
        );
    }

    #[test]
    fn the_dialer_offers_then_applies_trades_candidates_and_connects() {
        let (mut s, _) = session(Role::Dialer);
        // A candidate before the offer went out waits for it.
        assert!(s.on_local_candidate(Some("c0".into())).is_empty());
        assert_eq!(
            s.on_local_offer("offer".into()),
            vec![
                SignalingAction::Send(msg(SignalKind::Offer, "offer")),
                SignalingAction::SetLocalDescription(SdpKind::Offer, "offer".into()),
                SignalingAction::Send(msg(SignalKind::IceCandidate, "c0")),
            ]
        );
        assert_eq!(
            s.on_local_candidate(Some("c1".into())),
            vec![SignalingAction::Send(msg(SignalKind::IceCandidate, "c1"))]
        );
        assert_eq!(s.on_local_candidate(None), vec![]);
        assert_eq!(
            s.on_message(msg(SignalKind::Answer, "answer")),
            vec![SignalingAction::SetRemoteDescription(
                SdpKind::Answer,
                "answer".into()
            )]
        );
        assert_eq!(
            s.on_message(msg(SignalKind::IceCandidate, "r1")),
            vec![SignalingAction::AddIceCandidate("r1".into())]
        );
        // js-libp2p's old end-of-candidates marker and a stream closed after the answer are fine.
        assert_eq!(s.on_message(msg(SignalKind::IceCandidate, "null")), vec![]);
        assert_eq!(s.on_stream_closed(), vec![]);
        assert_eq!(s.on_connected(), vec![SignalingAction::Connected]);
        assert!(s.is_done());
        assert_eq!(s.poll_timeout(), None);
        // Late candidates after connecting are ignored.
        assert_eq!(s.on_message(msg(SignalKind::IceCandidate, "late")), vec![]);
    }

    #[test]
    fn the_listener_answers_and_keeps_early_candidates() {
        let (mut s, _) = session(Role::Listener);
        assert_eq!(
            s.on_message(msg(SignalKind::Offer, "offer")),
            vec![
                SignalingAction::SetRemoteDescription(SdpKind::Offer, "offer".into()),
                SignalingAction::CreateAnswer
            ]
        );
        // The dialer's candidates arrive while the browser is still creating our answer.
        assert_eq!(s.on_message(msg(SignalKind::IceCandidate, "r1")), vec![]);
        assert!(s.on_local_candidate(Some("c1".into())).is_empty());
        assert_eq!(
            s.on_local_answer("answer".into()),
            vec![
                SignalingAction::Send(msg(SignalKind::Answer, "answer")),
                SignalingAction::SetLocalDescription(SdpKind::Answer, "answer".into()),
                SignalingAction::Send(msg(SignalKind::IceCandidate, "c1")),
                SignalingAction::AddIceCandidate("r1".into()),
            ]
        );
        assert_eq!(s.on_connected(), vec![SignalingAction::Connected]);
    }

    #[test]
    fn out_of_order_messages_fail_clearly() {
        let (mut s, _) = session(Role::Listener);
        assert_eq!(
            s.on_message(msg(SignalKind::Answer, "x")),
            vec![SignalingAction::Fail(SignalingError::Unexpected {
                expected: "an SDP offer",
                got: SignalKind::Answer
            })]
        );
        assert!(s.is_done());
        let (mut s, _) = session(Role::Dialer);
        s.on_local_offer("offer".into());
        assert!(matches!(
            s.on_message(msg(SignalKind::Offer, "x")).as_slice(),
            [SignalingAction::Fail(SignalingError::Unexpected { .. })]
        ));
    }

    #[test]
    fn a_peer_that_never_answers_times_out() {
        let (mut s, t0) = session(Role::Dialer);
        s.on_local_offer("offer".into());
        assert_eq!(s.poll_timeout(), Some(t0 + DEFAULT_TIMEOUT));
        assert_eq!(s.on_timeout(t0 + Duration::from_secs(9)), vec![]);
        assert_eq!(
            s.on_timeout(t0 + DEFAULT_TIMEOUT),
            vec![SignalingAction::Fail(SignalingError::Timeout(
                "waiting for the answer"
            ))]
        );
        assert_eq!(s.on_timeout(t0 + DEFAULT_TIMEOUT * 2), vec![]);
    }

    #[test]
    fn a_stream_closed_early_or_a_failed_connection_ends_it() {
        // An offer for a peer that is gone: its side closes the stream at once.
        let (mut s, _) = session(Role::Dialer);
        s.on_local_offer("offer".into());
        assert_eq!(
            s.on_stream_closed(),
            vec![SignalingAction::Fail(SignalingError::PeerClosed(
                "waiting for the answer"
            ))]
        );
        let (mut s, _) = session(Role::Listener);
        s.on_message(msg(SignalKind::Offer, "offer"));
        s.on_local_answer("answer".into());
        assert_eq!(
            s.on_failed("ICE failed".into()),
            vec![SignalingAction::Fail(SignalingError::Failed(
                "ICE failed".into()
            ))]
        );
        assert_eq!(s.on_connected(), vec![]);
        let (mut s, _) = session(Role::Listener);
        assert!(matches!(
            s.on_malformed(SignalingError::Malformed("x".into()))
                .as_slice(),
            [SignalingAction::Fail(SignalingError::Malformed(_))]
        ));
    }

    #[test]
    fn malformed_and_out_of_order_messages_are_violations_a_slow_peer_is_not() {
        assert!(SignalingError::Malformed("garbage".into()).is_violation());
        assert!(
            SignalingError::Unexpected {
                expected: "an answer",
                got: SignalKind::Offer,
            }
            .is_violation()
        );
        assert!(!SignalingError::Timeout("waiting for the answer").is_violation());
        assert!(!SignalingError::PeerClosed("waiting for the answer").is_violation());
        assert!(!SignalingError::Failed("ICE failed".into()).is_violation());
    }
}
