//! Framing of the GIMPS gossip protocol, `/tabmesh/gimps/1.0.0`.
//!
//! One message per stream, framed as a big-endian `u16` length and the JSON bytes; the receiver
//! acknowledges by closing the stream. Framing makes a stream cut short (its connection closed
//! mid-message) an I/O failure, logged but not held against the peer, while a complete but bad
//! message reaches `tabmesh_core::gimps`, which rejects and counts it. A length above
//! [`MAX_MESSAGE_BYTES`] is not read: the core is handed an oversized placeholder to reject.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response::Codec;
use tabmesh_core::gimps::message::MAX_MESSAGE_BYTES;

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/tabmesh/gimps/1.0.0");

/// Raw message bytes out, an empty acknowledgement back.
#[derive(Debug, Clone, Copy, Default)]
pub struct GossipCodec;

impl Codec for GossipCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut len = [0u8; 2];
        io.read_exact(&mut len).await?;
        let len = usize::from(u16::from_be_bytes(len));
        if len > MAX_MESSAGE_BYTES {
            // Not read, not buffered: the core sees the size and rejects the message as such.
            return Ok(vec![0; MAX_MESSAGE_BYTES + 1]);
        }
        let mut bytes = vec![0; len];
        io.read_exact(&mut bytes).await?;
        Ok(bytes)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut rest = Vec::new();
        io.take(1).read_to_end(&mut rest).await?;
        Ok(())
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let len = u16::try_from(req.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "gossip message over 64 KiB")
        })?;
        io.write_all(&len.to_be_bytes()).await?;
        io.write_all(&req).await?;
        io.flush().await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, _: &mut T, (): ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        // The handler closes the stream after this: the close is the acknowledgement.
        Ok(())
    }
}
