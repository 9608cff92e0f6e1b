//! The wire side of libp2p's perf protocol (`/perf/1.0.0`).
//!
//! The client opens a stream and writes the number of bytes it wants back (8 bytes, big
//! endian), then its upload, then closes its side. The server reads to the end, writes the
//! requested bytes and closes. Upload time ends when the server's close (or first byte) arrives,
//! because the server answers only after reading everything; download time runs from the
//! request to the last byte. Every peer serves; a request for more than [`MAX_BYTES`] is
//! refused (the stream is dropped), and so are streams beyond [`MAX_SERVING`] at once.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use web_time::Instant;

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/perf/1.0.0");
/// Most bytes one run moves in either direction.
pub const MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Perf streams served at once, at most.
pub const MAX_SERVING: usize = 4;

const CHUNK: usize = 64 * 1024;

/// Runs the client side on `stream`: sends `upload` bytes, asks for `download` back.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    upload: u64,
    download: u64,
) -> io::Result<(f64, f64)> {
    if upload > MAX_BYTES || download > MAX_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("at most {MAX_BYTES} bytes each way"),
        ));
    }
    let start = Instant::now();
    stream.write_all(&download.to_be_bytes()).await?;
    let chunk = vec![0u8; CHUNK];
    let mut left = upload;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        stream.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    stream.close().await?;
    let mut buf = vec![0u8; CHUNK];
    // The server answers after the whole upload: its first byte (or its close) ends the upload.
    let mut received = stream.read(&mut buf).await? as u64;
    let uploaded = Instant::now();
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        received += n as u64;
    }
    let done = Instant::now();
    if received != download {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("asked for {download} bytes, got {received}"),
        ));
    }
    Ok((
        uploaded.saturating_duration_since(start).as_secs_f64() * 1e3,
        done.saturating_duration_since(uploaded).as_secs_f64() * 1e3,
    ))
}

/// Serves one perf stream; returns the bytes received and sent.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> io::Result<(u64, u64)> {
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await?;
    let download = u64::from_be_bytes(header);
    if download > MAX_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{download} bytes asked, over the {MAX_BYTES}-byte limit"),
        ));
    }
    let mut buf = vec![0u8; CHUNK];
    let mut received = 0u64;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        received += n as u64;
        if received > MAX_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("upload over the {MAX_BYTES}-byte limit"),
            ));
        }
    }
    let mut left = download;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        stream.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    stream.close().await?;
    Ok((received, download))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    /// One end of an in-memory duplex: reads from `input`, collects writes in `output`.
    struct Duplex {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl AsyncRead for Duplex {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            std::pin::Pin::new(&mut self.input).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Duplex {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.output.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn the_server_reads_the_upload_and_sends_what_was_asked() {
        let mut request = 1000u64.to_be_bytes().to_vec();
        request.extend(vec![7u8; 300_000]);
        let mut server = Duplex {
            input: Cursor::new(request),
            output: Vec::new(),
        };
        let (up, down) = futures::executor::block_on(serve(&mut server)).unwrap();
        assert_eq!((up, down), (300_000, 1000));
        assert_eq!(server.output.len(), 1000);
    }

    #[test]
    fn oversized_requests_and_short_answers_are_errors() {
        let mut greedy = Duplex {
            input: Cursor::new((MAX_BYTES + 1).to_be_bytes().to_vec()),
            output: Vec::new(),
        };
        let error = futures::executor::block_on(serve(&mut greedy)).unwrap_err();
        assert!(error.to_string().contains("limit"), "{error}");

        // A server that sends 10 bytes where 20 were asked.
        let mut client = Duplex {
            input: Cursor::new(vec![0u8; 10]),
            output: Vec::new(),
        };
        let error = futures::executor::block_on(run(&mut client, 5, 20)).unwrap_err();
        assert!(error.to_string().contains("got 10"), "{error}");
        assert_eq!(&client.output[..8], &20u64.to_be_bytes());
        assert_eq!(client.output.len(), 8 + 5);
        let too_much = futures::executor::block_on(run(&mut client, MAX_BYTES + 1, 0));
        assert!(too_much.is_err());
    }
}
