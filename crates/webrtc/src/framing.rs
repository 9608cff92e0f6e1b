//! What travels on every data channel: one libp2p stream per channel, its bytes cut into
//! frames `Message { optional Flag flag = 1; optional bytes message = 2 }` with
//! `FIN = 0`, `STOP_SENDING = 1`, `RESET = 2`, `FIN_ACK = 3`, each varint length-prefixed and
//! at most 16 KiB with its prefix (libp2p `webrtc/README.md`, "Multiplexing").
//!
//! Frames may share or span data-channel messages (js-libp2p decodes a byte stream), so
//! [`FrameDecoder`] buffers bytes, never more than one frame.
//!
//! [`StreamClose`] is the closing protocol as a clock-free state machine: `FIN` closes our
//! write side and is answered with `FIN_ACK` (js-libp2p waits for it; a peer that never answers
//! is given up on after a timeout); `STOP_SENDING` asks the peer to stop writing; `RESET`
//! aborts both sides. Once both sides are closed the channel itself is closed.

use web_time::{Duration, Instant};

use crate::pb::{self, Field, PbError};

/// Largest frame, length prefix included.
pub const MAX_FRAME_BYTES: usize = 16 * 1024;
/// Largest payload in one frame: the frame limit minus prefix (2), flag (2) and the payload's
/// tag and length (3).
pub const MAX_PAYLOAD_BYTES: usize = MAX_FRAME_BYTES - 7;
/// How long a `FIN` waits for its `FIN_ACK` (js-libp2p waits 10 s).
pub const FIN_ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// A frame's flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// The sender will write no more.
    Fin,
    /// The sender will read no more.
    StopSending,
    /// The sender aborts the stream.
    Reset,
    /// The sender saw our `FIN`.
    FinAck,
}

impl Flag {
    fn number(self) -> u64 {
        match self {
            Self::Fin => 0,
            Self::StopSending => 1,
            Self::Reset => 2,
            Self::FinAck => 3,
        }
    }

    fn from_number(n: u64) -> Option<Self> {
        Some(match n {
            0 => Self::Fin,
            1 => Self::StopSending,
            2 => Self::Reset,
            3 => Self::FinAck,
            _ => return None,
        })
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frame {
    /// Its flag, if any.
    pub flag: Option<Flag>,
    /// Its payload, if any.
    pub message: Option<Vec<u8>>,
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not a frame.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A flag this protocol does not have.
    #[error("unknown flag {0}")]
    UnknownFlag(u64),
}

impl From<PbError> for FrameError {
    fn from(e: PbError) -> Self {
        Self::Malformed(e.to_string())
    }
}

impl Frame {
    /// A data frame.
    pub fn data(bytes: Vec<u8>) -> Self {
        Self {
            flag: None,
            message: Some(bytes),
        }
    }

    /// A flag-only frame.
    pub fn flag(flag: Flag) -> Self {
        Self {
            flag: Some(flag),
            message: None,
        }
    }

    /// The frame with its length prefix. Payloads over [`MAX_PAYLOAD_BYTES`] must be split by
    /// the caller ([`data_frames`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        if let Some(flag) = self.flag {
            // Written even for FIN (= 0): receivers check for the field's presence.
            pb::put_varint_field(&mut body, 1, flag.number());
        }
        if let Some(message) = &self.message {
            pb::put_bytes_field(&mut body, 2, message);
        }
        pb::length_prefixed(&body)
    }

    /// Parses a frame body (without its prefix).
    pub fn decode(body: &[u8]) -> Result<Self, FrameError> {
        let mut frame = Self::default();
        for (number, field) in pb::fields(body)? {
            match (number, field) {
                (1, Field::Varint(n)) => {
                    frame.flag = Some(Flag::from_number(n).ok_or(FrameError::UnknownFlag(n))?);
                }
                (2, Field::Bytes(bytes)) => frame.message = Some(bytes.to_vec()),
                (1 | 2, _) => {
                    return Err(FrameError::Malformed(format!(
                        "field {number} has the wrong wire type"
                    )));
                }
                _ => {}
            }
        }
        Ok(frame)
    }
}

/// `bytes` as encoded data frames of at most [`MAX_PAYLOAD_BYTES`] each.
pub fn data_frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .chunks(MAX_PAYLOAD_BYTES)
        .map(|chunk| Frame::data(chunk.to_vec()).encode())
        .collect()
}

/// Turns a data channel's messages back into frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    frames: pb::FrameBuffer,
}

impl FrameDecoder {
    /// Adds one data-channel message; returns the frames it completes.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
        // The limit counts the prefix; the body limit is a little smaller.
        self.frames.push(bytes, MAX_FRAME_BYTES - 2, Frame::decode)
    }
}

/// What the driver must do for a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamAction {
    /// Send this frame on the channel.
    Send(Frame),
    /// Hand these bytes to the reader.
    Deliver(Vec<u8>),
    /// The reader has reached the end (the peer sent `FIN`, or we stopped reading).
    ReadClosed,
    /// Our write side is closed (acknowledged, given up on, or the peer stopped reading).
    WriteClosed,
    /// The stream was reset (by the peer, or by us): both sides fail.
    Reset,
    /// Both sides are closed: close the data channel.
    CloseChannel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    Open,
    FinSent { deadline: Instant },
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    Open,
    /// We sent `STOP_SENDING`: incoming data is dropped, flags still count.
    Stopped,
    Closed,
}

/// The closing protocol of one stream.
#[derive(Debug)]
pub struct StreamClose {
    write: Write,
    read: Read,
    reset: bool,
    channel_closed: bool,
    /// Payload bytes that arrived after the peer's `FIN` or our `STOP_SENDING`.
    pub dropped_bytes: u64,
}

impl Default for StreamClose {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamClose {
    /// An open stream.
    pub fn new() -> Self {
        Self {
            write: Write::Open,
            read: Read::Open,
            reset: false,
            channel_closed: false,
            dropped_bytes: 0,
        }
    }

    /// Whether we may still write.
    pub fn can_write(&self) -> bool {
        self.write == Write::Open && !self.reset
    }

    /// Whether the stream is over (both sides closed, or reset).
    pub fn is_closed(&self) -> bool {
        self.reset || (self.write == Write::Closed && self.read == Read::Closed)
    }

    /// When [`on_timeout`](Self::on_timeout) must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.write {
            Write::FinSent { deadline } if !self.reset => Some(deadline),
            _ => None,
        }
    }

    /// We close our write side.
    pub fn close_write(&mut self, now: Instant) -> Vec<StreamAction> {
        if !self.can_write() {
            return Vec::new();
        }
        self.write = Write::FinSent {
            deadline: now + FIN_ACK_TIMEOUT,
        };
        vec![StreamAction::Send(Frame::flag(Flag::Fin))]
    }

    /// We stop reading.
    pub fn close_read(&mut self) -> Vec<StreamAction> {
        if self.reset || self.read != Read::Open {
            return Vec::new();
        }
        self.read = Read::Stopped;
        let mut actions = vec![
            StreamAction::Send(Frame::flag(Flag::StopSending)),
            StreamAction::ReadClosed,
        ];
        actions.extend(self.maybe_close_channel());
        actions
    }

    /// We abort the stream.
    pub fn reset(&mut self) -> Vec<StreamAction> {
        if self.reset || self.is_closed() {
            return Vec::new();
        }
        self.reset = true;
        let mut actions = vec![
            StreamAction::Send(Frame::flag(Flag::Reset)),
            StreamAction::Reset,
        ];
        actions.extend(self.maybe_close_channel());
        actions
    }

    /// A frame arrived.
    pub fn on_frame(&mut self, frame: Frame) -> Vec<StreamAction> {
        if self.reset {
            return Vec::new();
        }
        let mut actions = Vec::new();
        if let Some(bytes) = frame.message.filter(|b| !b.is_empty()) {
            if self.read == Read::Open {
                actions.push(StreamAction::Deliver(bytes));
            } else {
                self.dropped_bytes += bytes.len() as u64;
            }
        }
        match frame.flag {
            None => {}
            Some(Flag::Fin) => {
                // Acknowledge every FIN, even a repeated one: the peer may be waiting for it.
                actions.push(StreamAction::Send(Frame::flag(Flag::FinAck)));
                if self.read != Read::Closed {
                    if self.read == Read::Open {
                        actions.push(StreamAction::ReadClosed);
                    }
                    self.read = Read::Closed;
                }
            }
            Some(Flag::StopSending) if self.write != Write::Closed => {
                self.write = Write::Closed;
                actions.push(StreamAction::WriteClosed);
            }
            Some(Flag::FinAck) if matches!(self.write, Write::FinSent { .. }) => {
                self.write = Write::Closed;
                actions.push(StreamAction::WriteClosed);
            }
            // A repeated STOP_SENDING, or a FIN_ACK we did not ask for: nothing to do.
            Some(Flag::StopSending | Flag::FinAck) => {}
            Some(Flag::Reset) => {
                self.reset = true;
                actions.push(StreamAction::Reset);
            }
        }
        actions.extend(self.maybe_close_channel());
        actions
    }

    /// Time passes: a `FIN` unacknowledged for too long closes our side anyway.
    pub fn on_timeout(&mut self, now: Instant) -> Vec<StreamAction> {
        match self.write {
            Write::FinSent { deadline } if now >= deadline && !self.reset => {
                self.write = Write::Closed;
                let mut actions = vec![StreamAction::WriteClosed];
                actions.extend(self.maybe_close_channel());
                actions
            }
            _ => Vec::new(),
        }
    }

    fn maybe_close_channel(&mut self) -> Vec<StreamAction> {
        let done = self.reset
            || (self.write == Write::Closed && matches!(self.read, Read::Closed | Read::Stopped));
        if done && !self.channel_closed {
            self.channel_closed = true;
            if self.read == Read::Stopped {
                self.read = Read::Closed;
            }
            return vec![StreamAction::CloseChannel];
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_with_explicit_fin() {
        let fin = Frame::flag(Flag::Fin).encode();
        assert_eq!(fin, vec![0x02, 0x08, 0x00]);
        let mut decoder = FrameDecoder::default();
        assert_eq!(decoder.push(&fin).unwrap(), vec![Frame::flag(Flag::Fin)]);
        let both = Frame {
            flag: Some(Flag::FinAck),
            message: Some(b"last".to_vec()),
        };
        assert_eq!(Frame::decode(&both.encode()[1..]).unwrap(), both);
    }

    #[test]
    fn frames_may_share_or_span_messages_and_stay_under_16_kib() {
        let big = vec![7u8; MAX_PAYLOAD_BYTES * 2 + 10];
        let encoded = data_frames(&big);
        assert_eq!(encoded.len(), 3);
        assert!(
            encoded.iter().all(|f| f.len() <= MAX_FRAME_BYTES),
            "{:?}",
            encoded.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let stream: Vec<u8> = encoded.concat();
        let mut decoder = FrameDecoder::default();
        let mut payload = Vec::new();
        for piece in stream.chunks(1000) {
            for frame in decoder.push(piece).unwrap() {
                payload.extend(frame.message.unwrap_or_default());
            }
        }
        assert_eq!(payload, big);
    }

    #[test]
    fn oversized_and_malformed_frames_are_refused() {
        let mut decoder = FrameDecoder::default();
        let mut prefix = Vec::new();
        pb::put_varint(&mut prefix, MAX_FRAME_BYTES as u64);
        assert!(decoder.push(&prefix).is_err());
        assert_eq!(
            Frame::decode(&[0x08, 0x09]),
            Err(FrameError::UnknownFlag(9))
        );
        assert!(Frame::decode(&[0x12, 0x05, 1]).is_err());
    }

    #[test]
    fn a_clean_close_is_fin_fin_ack_both_ways() {
        let t0 = Instant::now();
        let (mut a, mut b) = (StreamClose::new(), StreamClose::new());
        assert_eq!(
            a.close_write(t0),
            vec![StreamAction::Send(Frame::flag(Flag::Fin))]
        );
        assert!(!a.can_write());
        assert_eq!(
            b.on_frame(Frame::flag(Flag::Fin)),
            vec![
                StreamAction::Send(Frame::flag(Flag::FinAck)),
                StreamAction::ReadClosed
            ]
        );
        assert_eq!(
            a.on_frame(Frame::flag(Flag::FinAck)),
            vec![StreamAction::WriteClosed]
        );
        assert_eq!(a.poll_timeout(), None);
        // b finishes writing: data, then FIN.
        assert_eq!(
            b.close_write(t0),
            vec![StreamAction::Send(Frame::flag(Flag::Fin))]
        );
        assert_eq!(
            a.on_frame(Frame {
                flag: Some(Flag::Fin),
                message: Some(b"bye".to_vec())
            }),
            vec![
                StreamAction::Deliver(b"bye".to_vec()),
                StreamAction::Send(Frame::flag(Flag::FinAck)),
                StreamAction::ReadClosed,
                StreamAction::CloseChannel
            ]
        );
        assert!(a.is_closed());
        assert_eq!(
            b.on_frame(Frame::flag(Flag::FinAck)),
            vec![StreamAction::WriteClosed, StreamAction::CloseChannel]
        );
        assert!(b.is_closed());
    }

    #[test]
    fn a_missing_fin_ack_is_given_up_on() {
        let t0 = Instant::now();
        let mut s = StreamClose::new();
        s.on_frame(Frame::flag(Flag::Fin));
        s.close_write(t0);
        assert_eq!(s.poll_timeout(), Some(t0 + FIN_ACK_TIMEOUT));
        assert_eq!(s.on_timeout(t0 + Duration::from_secs(1)), vec![]);
        assert_eq!(
            s.on_timeout(t0 + FIN_ACK_TIMEOUT),
            vec![StreamAction::WriteClosed, StreamAction::CloseChannel]
        );
    }

    #[test]
    fn reset_and_stop_sending() {
        let mut s = StreamClose::new();
        assert_eq!(
            s.on_frame(Frame::flag(Flag::StopSending)),
            vec![StreamAction::WriteClosed]
        );
        assert!(!s.can_write());
        assert_eq!(
            s.on_frame(Frame::flag(Flag::Reset)),
            vec![StreamAction::Reset, StreamAction::CloseChannel]
        );
        assert!(s.is_closed());
        assert_eq!(s.on_frame(Frame::data(b"late".to_vec())), vec![]);

        let mut s = StreamClose::new();
        assert_eq!(
            s.close_read(),
            vec![
                StreamAction::Send(Frame::flag(Flag::StopSending)),
                StreamAction::ReadClosed
            ]
        );
        // Data after STOP_SENDING is dropped and counted; flags still count.
        assert_eq!(s.on_frame(Frame::data(b"ignored".to_vec())), vec![]);
        assert_eq!(s.dropped_bytes, 7);
        let mut s2 = StreamClose::new();
        assert_eq!(
            s2.reset(),
            vec![
                StreamAction::Send(Frame::flag(Flag::Reset)),
                StreamAction::Reset,
                StreamAction::CloseChannel
            ]
        );
        assert_eq!(s2.reset(), vec![]);
    }
}
