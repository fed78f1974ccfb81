//! One port, two protocols: every accepted connection goes either to the
//! gRPC server or to the AppendEntries link (`raft::append_link`), by its
//! first byte.
//!
//! Why one port: members know each other by one address, and an operator
//! opens one port per member. The first byte is enough to tell them apart
//! (an HTTP/2 client starts with `P`, a link with `0x00`); it is read here
//! and given back to whichever side takes the connection.

use std::io;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::common::Streams;
use super::transport::serve_link;
use super::NodeContext;
use crate::raft::append_link::PREFACE;

/// How long a new connection may stay silent before it is closed. (Both
/// kinds of client speak first, at once.)
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections classified as gRPC and not yet taken by the server.
const HANDOFF_QUEUE: usize = 64;
/// Pause after a failed accept (out of file descriptors, say), so the loop
/// does not spin while the cause lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// A connection whose first byte was read to classify it, and is given back
/// to the first read.
pub struct Replayed<IO> {
    first: Option<u8>,
    io: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Replayed<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(first) = this.first {
            if buf.remaining() > 0 {
                buf.put_slice(&[first]);
                this.first = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Replayed<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for Replayed<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// Takes the connections `accepted` on a node's port: serves the
/// AppendEntries links among them on `ctx` (until `streams` says the node
/// stops) and returns the others, for the gRPC server. Accepting stops when
/// the node stops or `accepted` ends.
pub fn split<S, IO>(
    accepted: S,
    ctx: NodeContext,
    streams: Streams,
) -> impl Stream<Item = io::Result<Replayed<IO>>> + Send + 'static
where
    S: Stream<Item = io::Result<IO>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (grpc, taken) = mpsc::channel(HANDOFF_QUEUE);
    tokio::spawn(async move {
        let mut accepted = pin!(accepted);
        loop {
            let next = tokio::select! {
                biased;
                _ = streams.stopped() => return,
                next = accepted.next() => next,
            };
            match next {
                None => return,
                Some(Ok(io)) => {
                    tokio::spawn(classify(io, grpc.clone(), ctx.clone(), streams.clone()));
                }
                Some(Err(e)) => {
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    });
    ReceiverStream::new(taken).map(Ok)
}

/// Reads a connection's first byte and sends it where it belongs.
async fn classify<IO>(mut io: IO, grpc: mpsc::Sender<Replayed<IO>>, ctx: NodeContext, streams: Streams)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut first = [0u8; 1];
    let read = tokio::select! {
        biased;
        _ = streams.stopped() => return,
        read = tokio::time::timeout(FIRST_BYTE_TIMEOUT, io.read(&mut first)) => read,
    };
    // Closed, broken or silent before saying anything: nothing to serve.
    let Ok(Ok(1)) = read else { return };
    let io = Replayed {
        first: Some(first[0]),
        io,
    };
    if first[0] == PREFACE[0] {
        serve_link(ctx, io, streams).await;
    } else {
        // Only fails when the gRPC server has stopped.
        let _ = grpc.send(io).await;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn the_first_byte_is_given_back_to_the_first_read() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b"PRI * HTTP/2.0").await.unwrap();
        drop(a);
        let mut replayed = Replayed {
            first: Some(b'>'),
            io: b,
        };
        // A zero-length read takes nothing.
        let mut empty = [0u8; 0];
        assert_eq!(replayed.read(&mut empty).await.unwrap(), 0);
        let mut all = Vec::new();
        replayed.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b">PRI * HTTP/2.0");
    }
}
