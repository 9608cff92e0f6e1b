//! Framing of the service protocol, `/tabmesh/service/1.0.0`: one request and one reply per
//! stream, each a big-endian `u32` length and the JSON bytes
//! ([`tabmesh_core::services::message`]).
//!
//! A length above [`MAX_MESSAGE_BYTES`] is not read: the behaviour is handed an oversized
//! placeholder, which the core rejects as such (a violation), so a peer cannot make us buffer
//! more than the limit. A stream cut short is an I/O failure (the connection went away), not
//! held against anyone.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response::Codec;
use tabmesh_core::services::message::MAX_MESSAGE_BYTES;

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new(tabmesh_core::services::PROTOCOL);

/// Raw message bytes both ways.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServiceCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len > MAX_MESSAGE_BYTES {
        // Not read, not buffered: the core sees the size and rejects the message as such.
        return Ok(vec![0; MAX_MESSAGE_BYTES + 1]);
    }
    let mut bytes = vec![0; len];
    io.read_exact(&mut bytes).await?;
    Ok(bytes)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|n| *n as usize <= MAX_MESSAGE_BYTES)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "service message too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.flush().await
}

impl Codec for ServiceCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
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
        write_frame(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res).await
    }
}
