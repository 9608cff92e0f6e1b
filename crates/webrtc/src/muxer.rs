//! A WebRTC connection as a libp2p stream muxer: every data channel is one stream.
//!
//! Outbound streams are new data channels (label `""`, in-band negotiated, ordered), ready once
//! the browser reports them open; inbound streams are the channels the peer opens. The `init`
//! channel the dialer used for its offer is not a stream and is closed if the peer leaves it
//! open. A connection that the browser reports `failed` or `closed` ends every poll with an
//! error; closing the muxer closes the `RTCPeerConnection`.
//!
//! libp2p requires muxers and streams to be `Send`; browser objects are not, and a tab has one
//! thread, so they are held in `SendWrapper`s (which panic if touched from another thread,
//! which never happens in a page).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures::{AsyncRead, AsyncWrite, StreamExt};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use send_wrapper::SendWrapper;
use web_sys::RtcPeerConnectionState;

use crate::browser::{DataChannel, PcEvent, PeerConnection};
use crate::substream::Substream;

/// Streams the peer may have opened and we have not taken yet, at most.
const MAX_PENDING_INBOUND: usize = 64;

/// Why a WebRTC connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The peer connection failed or was closed.
    #[error("the WebRTC connection is {0}")]
    Closed(&'static str),
    /// A data channel closed before it opened.
    #[error("a data channel closed before opening")]
    ChannelClosed,
}

struct Inner {
    pc: PeerConnection,
    inbound: VecDeque<DataChannel>,
    inbound_waker: Option<Waker>,
    opening: Option<DataChannel>,
    closed: Option<&'static str>,
}

impl Inner {
    /// Takes in the browser's events; wakes a waiting `poll_inbound`.
    fn drive(&mut self, cx: &mut Context<'_>) {
        while let Poll::Ready(event) = self.pc.events.poll_next_unpin(cx) {
            match event {
                // The dialer's `init` channel is the dialer's to close (see `Connection::new`).
                Some(PcEvent::DataChannel(channel)) if channel.channel.label() == "init" => {}
                Some(PcEvent::DataChannel(channel)) => {
                    if self.inbound.len() >= MAX_PENDING_INBOUND {
                        tracing::warn!("too many unaccepted WebRTC streams: closing one");
                        channel.channel.close();
                        continue;
                    }
                    self.inbound.push_back(channel);
                    if let Some(waker) = self.inbound_waker.take() {
                        waker.wake();
                    }
                }
                Some(PcEvent::State(RtcPeerConnectionState::Failed)) => {
                    self.closed = Some("failed");
                }
                Some(PcEvent::State(RtcPeerConnectionState::Closed)) | None => {
                    self.closed = Some("closed");
                }
                Some(PcEvent::State(_) | PcEvent::IceCandidate(_)) => {}
            }
            if self.closed.is_some() {
                if let Some(waker) = self.inbound_waker.take() {
                    waker.wake();
                }
                break;
            }
        }
    }
}

/// A connected `RTCPeerConnection` as a libp2p muxer.
pub struct Connection {
    inner: SendWrapper<Inner>,
}

impl Connection {
    /// The muxer over a connected peer connection; `early` are the channels the peer opened
    /// while signaling was finishing (see [`negotiate`](crate::browser::negotiate)).
    pub fn new(mut pc: PeerConnection, early: Vec<DataChannel>) -> Self {
        pc.watch_transport();
        // The dialer's `init` channel only gave its offer a data section; the dialer closes it
        // once open, and we leave it alone. js-libp2p's dialer waits for it to be open after
        // the peer connection is up: closed first from here, it is never open there, and the
        // dial hangs until its deadline (a clean-clone CI run: js-libp2p's dial to a tab timed
        // out after 30 s with the connection up at both ends).
        let inbound: VecDeque<DataChannel> = early
            .into_iter()
            .filter(|c| c.channel.label() != "init")
            .collect();
        Self {
            inner: SendWrapper::new(Inner {
                pc,
                inbound,
                inbound_waker: None,
                opening: None,
                closed: None,
            }),
        }
    }
}

impl StreamMuxer for Connection {
    type Substream = Stream;
    type Error = ConnectionError;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let inner = &mut *self.get_mut().inner;
        inner.drive(cx);
        if let Some(channel) = inner.inbound.pop_front() {
            return Poll::Ready(Ok(Stream::new(channel)));
        }
        if let Some(state) = inner.closed {
            return Poll::Ready(Err(ConnectionError::Closed(state)));
        }
        inner.inbound_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let inner = &mut *self.get_mut().inner;
        inner.drive(cx);
        if let Some(state) = inner.closed {
            return Poll::Ready(Err(ConnectionError::Closed(state)));
        }
        let channel = inner
            .opening
            .get_or_insert_with(|| inner.pc.open_channel(""));
        match channel.poll_open(cx) {
            Poll::Ready(true) => {
                let channel = inner.opening.take().ok_or(ConnectionError::ChannelClosed)?;
                Poll::Ready(Ok(Stream::new(channel)))
            }
            Poll::Ready(false) => {
                inner.opening = None;
                Poll::Ready(Err(ConnectionError::ChannelClosed))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let inner = &mut *self.get_mut().inner;
        inner.pc.inner().close();
        inner.closed = Some("closed");
        Poll::Ready(Ok(()))
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let inner = &mut *self.get_mut().inner;
        inner.drive(cx);
        match inner.closed {
            Some(state) => Poll::Ready(Err(ConnectionError::Closed(state))),
            None => Poll::Pending,
        }
    }
}

/// A libp2p stream of a WebRTC connection.
pub struct Stream {
    inner: SendWrapper<Substream>,
}

impl Stream {
    fn new(channel: DataChannel) -> Self {
        Self {
            inner: SendWrapper::new(Substream::new(channel)),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_close(cx)
    }
}
