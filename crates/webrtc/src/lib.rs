//! The libp2p WebRTC *private-to-private* transport (`/webrtc`), so that browser tabs talk to
//! each other (and to other libp2p implementations, e.g. js-libp2p) over direct
//! `RTCPeerConnection` data channels, using the relay only to meet.
//!
//! The specification is libp2p's `webrtc/webrtc.md` (signaling over a relayed connection) and
//! `webrtc/README.md` (data-channel framing). This crate is built in the house style: the wire
//! formats and the state machines are plain, clock-free types tested here; the browser driver
//! (web-sys `RtcPeerConnection`, the libp2p `Transport`) sits on top of them.
//!
//! - [`pb`]: the little protobuf both protocols need (varints, length prefixes, two fields).
//! - [`signaling`]: `/webrtc-signaling/0.0.1` messages (SDP offer, answer, ICE candidates), their
//!   framing, and the dialer's and listener's sequence as a state machine with a deadline.
//! - [`framing`]: the messages on every data channel (payload plus FIN / STOP_SENDING / RESET /
//!   FIN_ACK flags, at most 16 KiB a frame) and the stream-closing state machine.
//! - `browser` (wasm32 only): an `RTCPeerConnection` driven by the signaling state machine, and
//!   data channels that never lose a message.
//! - `substream` (wasm32 only): one libp2p stream (`AsyncRead` + `AsyncWrite`) per data channel.
//! - `muxer` (wasm32 only): a connected peer connection as a libp2p `StreamMuxer`.
//! - [`behaviour`]: the swarm side, which opens and accepts signaling streams on the
//!   connections the swarm has (any target).
//! - `transport` (wasm32 only): the libp2p `Transport` for `/p2p-circuit/webrtc` addresses.
#![deny(missing_docs)]

pub mod addr;
pub mod behaviour;
#[cfg(target_arch = "wasm32")]
pub mod browser;
pub mod framing;
#[cfg(target_arch = "wasm32")]
pub mod muxer;
pub mod pb;
pub mod signaling;
#[cfg(target_arch = "wasm32")]
pub mod substream;
#[cfg(target_arch = "wasm32")]
pub mod transport;

pub use behaviour::{Behaviour, Event};

/// A STUN or TURN server for new peer connections (the browser's `RTCIceServer`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IceServer {
    /// `stun:`, `stuns:`, `turn:` or `turns:` URL.
    pub urls: String,
    /// TURN user name.
    pub username: Option<String>,
    /// TURN password.
    pub credential: Option<String>,
}
#[cfg(target_arch = "wasm32")]
pub use transport::{Config, Transport};

/// The transport and the behaviour that serves it; put both in the same swarm.
#[cfg(target_arch = "wasm32")]
pub fn new(config: Config) -> (Transport, Behaviour) {
    let (behaviour, streams) = behaviour::new();
    (Transport::new(config, streams), behaviour)
}
