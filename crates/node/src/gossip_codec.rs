//! Framing of the GIMPS gossip protocol, `/tabmesh/gimps/1.0.0`.
//!
//! One message per stream: the sender writes the JSON message and closes its side; the receiver
//! reads at most [`MAX_MESSAGE_BYTES`] + 1 bytes (so an oversized message is seen as such and
//! rejected by the core, never buffered whole) and acknowledges by closing the stream. Decoding
//! and validation happen in `tabmesh_core::gimps`, where rejections are counted.

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
        let mut bytes = Vec::new();
        io.take(MAX_MESSAGE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .await?;
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
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, (): ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.close().await
    }
}
