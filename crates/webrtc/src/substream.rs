//! One libp2p stream over one data channel: `AsyncRead` + `AsyncWrite` on top of the
//! [`framing`](crate::framing) state machine.
//!
//! Writes are cut into frames of at most 16 KiB and wait while the channel's send buffer is
//! above 2 MiB (woken by the browser's `bufferedamountlow`). Reads come from the channel's
//! messages; a peer that floods us beyond 1 MiB of unread data is reset, because a browser data
//! channel cannot push back. `close` sends `FIN` and waits for `FIN_ACK` (or gives up after
//! [`FIN_ACK_TIMEOUT`](crate::framing::FIN_ACK_TIMEOUT)); a `FIN` from the peer is answered at
//! once. Once both sides are closed, or on reset, the channel is closed.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures::{AsyncRead, AsyncWrite, FutureExt, StreamExt};
use wasm_bindgen::JsCast;
use wasm_bindgen::JsValue;
use wasm_bindgen::closure::Closure;
use web_time::Instant;

use crate::browser::DataChannel;
use crate::framing::{
    FIN_ACK_TIMEOUT, Frame, FrameDecoder, MAX_PAYLOAD_BYTES, StreamAction, StreamClose,
};

/// Send buffer level above which writes wait.
const MAX_BUFFERED: u32 = 2 * 1024 * 1024;
/// Send buffer level at which waiting writes resume.
const LOW_BUFFERED: u32 = 256 * 1024;
/// Unread bytes kept at most before the peer is reset.
const MAX_UNREAD: usize = 1024 * 1024;

/// A libp2p stream on a data channel.
pub struct Substream {
    channel: DataChannel,
    decoder: FrameDecoder,
    close: StreamClose,
    unread: VecDeque<u8>,
    read_eof: bool,
    write_closed: bool,
    reset: bool,
    fin_timer: Option<futures_timer::Delay>,
    writable: Rc<RefCell<Option<Waker>>>,
    _on_low: Closure<dyn FnMut(JsValue)>,
}

impl Substream {
    /// The stream on `channel` (which may still be opening).
    pub fn new(channel: DataChannel) -> Self {
        let writable: Rc<RefCell<Option<Waker>>> = Rc::default();
        let wake = writable.clone();
        let on_low = Closure::<dyn FnMut(JsValue)>::new(move |_| {
            if let Some(waker) = wake.borrow_mut().take() {
                waker.wake();
            }
        });
        channel
            .channel
            .set_buffered_amount_low_threshold(LOW_BUFFERED);
        channel
            .channel
            .set_onbufferedamountlow(Some(on_low.as_ref().unchecked_ref()));
        Self {
            channel,
            decoder: FrameDecoder::default(),
            close: StreamClose::new(),
            unread: VecDeque::new(),
            read_eof: false,
            write_closed: false,
            reset: false,
            fin_timer: None,
            writable,
            _on_low: on_low,
        }
    }

    fn apply(&mut self, actions: Vec<StreamAction>) -> io::Result<()> {
        for action in actions {
            match action {
                StreamAction::Send(frame) => self
                    .channel
                    .send(&frame.encode())
                    .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e))?,
                StreamAction::Deliver(bytes) => {
                    if self.unread.len() + bytes.len() > MAX_UNREAD {
                        let actions = self.close.reset();
                        self.apply(actions)?;
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "the peer sent more than 1 MiB that was not read: stream reset",
                        ));
                    }
                    self.unread.extend(bytes);
                }
                StreamAction::ReadClosed => self.read_eof = true,
                StreamAction::WriteClosed => self.write_closed = true,
                StreamAction::Reset => self.reset = true,
                StreamAction::CloseChannel => self.channel.channel.close(),
            }
        }
        Ok(())
    }

    /// Takes in what the channel has delivered; `Ready` if anything changed.
    fn poll_incoming(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut progressed = false;
        loop {
            match self.channel.messages.poll_next_unpin(cx) {
                Poll::Ready(Some(message)) => {
                    progressed = true;
                    let frames = match self.decoder.push(&message) {
                        Ok(frames) => frames,
                        Err(e) => {
                            let actions = self.close.reset();
                            self.apply(actions)?;
                            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                        }
                    };
                    for frame in frames {
                        let actions = self.close.on_frame(frame);
                        self.apply(actions)?;
                    }
                }
                Poll::Ready(None) => {
                    // The channel is gone: nothing more comes, nothing more goes.
                    if !(self.read_eof && self.write_closed) {
                        progressed = true;
                    }
                    self.read_eof = true;
                    self.write_closed = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if progressed {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

impl AsyncRead for Substream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if !this.unread.is_empty() {
                let n = buf.len().min(this.unread.len());
                for (slot, byte) in buf.iter_mut().zip(this.unread.drain(..n)) {
                    *slot = byte;
                }
                return Poll::Ready(Ok(n));
            }
            if this.reset {
                return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
            }
            if this.read_eof {
                return Poll::Ready(Ok(0));
            }
            match this.poll_incoming(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncWrite for Substream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // See a STOP_SENDING or RESET before writing more.
        if let Poll::Ready(Err(e)) = this.poll_incoming(cx) {
            return Poll::Ready(Err(e));
        }
        if this.reset {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        if !this.close.can_write() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if this.channel.channel.buffered_amount() > MAX_BUFFERED {
            *this.writable.borrow_mut() = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(MAX_PAYLOAD_BYTES);
        this.channel
            .send(&Frame::data(buf[..n].to_vec()).encode())
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e))?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Sent data is with the browser; it has no flush.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.fin_timer.is_none() && !this.write_closed && !this.reset {
            let actions = this.close.close_write(Instant::now());
            this.apply(actions)?;
            this.fin_timer = Some(futures_timer::Delay::new(FIN_ACK_TIMEOUT));
        }
        loop {
            if this.write_closed || this.reset {
                return Poll::Ready(Ok(()));
            }
            match this.poll_incoming(cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
            match this.fin_timer.as_mut().map(|t| t.poll_unpin(cx)) {
                Some(Poll::Ready(())) => {
                    this.fin_timer = None;
                    let actions = this.close.on_timeout(Instant::now());
                    this.apply(actions)?;
                    // The timer and the state machine share the deadline; whatever the clocks
                    // say, the wait is over.
                    this.write_closed = true;
                }
                _ => return Poll::Pending,
            }
        }
    }
}

impl Drop for Substream {
    fn drop(&mut self) {
        self.channel.channel.set_onbufferedamountlow(None);
        if !self.close.is_closed() {
            // Dropped while open: tell the peer rather than leaving it waiting.
            for action in self.close.reset() {
                if let StreamAction::Send(frame) = action {
                    let _ = self.channel.send(&frame.encode());
                }
            }
            self.channel.channel.close();
        }
    }
}
