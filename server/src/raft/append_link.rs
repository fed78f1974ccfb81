//! The AppendEntries link: replication's hot path on a plain framed byte
//! stream beside gRPC, on the same port.
//!
//! Why: every committed write costs two AppendEntries exchanges per
//! follower (the entries, then the commit index), and with one client a
//! profile of the leader (`perf record -g`, one-client put workload) put a
//! quarter of its CPU in the HTTP/2 connection tasks carrying them, and the
//! followers' HTTP/2 server side a third of theirs: each message went
//! through a channel, hyper's body pipe, h2's stream and connection state
//! and a wake-up per hop. None of that buys anything on a link that carries
//! one request at a time between two members. Here the replication task
//! writes its request and reads the reply itself: one `writev` and one
//! `recv` on each side, no hop. (etcd does the same: its peer traffic is its
//! own stream protocol, not gRPC.) Votes, snapshots, forwarding and read
//! index stay gRPC calls: they are rare, and tonic's timeouts and status
//! codes serve them well.
//!
//! The wire: the dialer writes [`PREFACE`], then each request and each
//! reply is one frame, a 4-byte big-endian length and that many bytes
//! (openraft's messages encoded with [`super::codec`]). A reply always
//! answers the request before it; there is never more than one request
//! outstanding. The listener tells the link from HTTP/2 by the first byte:
//! `0x00` starts neither an HTTP/2 client preface (`PRI …`) nor a TLS
//! record (`0x16`).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::network::MAX_PEER_MESSAGE_BYTES;

/// What a link's dialer writes first: a zero byte (see the module docs),
/// then the protocol's name and version.
pub const PREFACE: [u8; 8] = *b"\0rsterA1";

/// Largest frame either side accepts; a longer length is a broken or
/// hostile peer, and closes the link.
pub const MAX_FRAME_BYTES: usize = MAX_PEER_MESSAGE_BYTES;

/// A byte stream a link can run on: TCP in rosterd, an in-memory pipe
/// routed through the simulated network in the simulator.
pub trait LinkIo: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> LinkIo for T {}

/// Writes one frame: the length, then `payload`, in one vectored write
/// where the stream supports it.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> io::Result<()> {
    if payload.len() > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "frame of {} bytes exceeds the link's limit of {MAX_FRAME_BYTES}",
                payload.len()
            ),
        ));
    }
    let header = (payload.len() as u32).to_be_bytes();
    let mut frame = bytes::Buf::chain(&header[..], payload);
    w.write_all_buf(&mut frame).await?;
    w.flush().await
}

/// Reads one frame. `Ok(None)` when the stream ends cleanly between frames;
/// an error when it ends inside one or announces more than
/// [`MAX_FRAME_BYTES`].
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("peer announced a frame of {len} bytes; the limit is {MAX_FRAME_BYTES}"),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some(payload))
}

/// The dialing side of a link: one request, then its reply.
pub struct Link {
    io: BufReader<Box<dyn LinkIo>>,
}

impl Link {
    /// Starts a link on a fresh connection by writing the preface. (It is
    /// sent alone: once per connection, not worth a copy of every frame.)
    pub async fn open(mut io: Box<dyn LinkIo>) -> io::Result<Self> {
        io.write_all(&PREFACE).await?;
        Ok(Self { io: BufReader::new(io) })
    }

    /// Sends `request` and waits for its reply. A failed or dropped call
    /// leaves the link unusable (a reply may be half read, or still to
    /// come): the caller must drop it.
    pub async fn exchange(&mut self, request: &[u8]) -> io::Result<Vec<u8>> {
        write_frame(self.io.get_mut(), request).await?;
        read_frame(&mut self.io)
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed the AppendEntries link"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_end_cleanly_only_between_frames() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let big = vec![7u8; 1000];
        let writer = tokio::spawn(async move {
            write_frame(&mut a, b"hello").await.unwrap();
            write_frame(&mut a, b"").await.unwrap();
            write_frame(&mut a, &big).await.unwrap();
            a.write_all(&[0, 0]).await.unwrap();
        });
        assert_eq!(read_frame(&mut b).await.unwrap().as_deref(), Some(&b"hello"[..]));
        assert_eq!(read_frame(&mut b).await.unwrap().as_deref(), Some(&b""[..]));
        assert_eq!(read_frame(&mut b).await.unwrap().map(|f| f.len()), Some(1000));
        writer.await.unwrap();
        // Two bytes of a header, then the end: torn, not clean.
        let torn = read_frame(&mut b).await.unwrap_err();
        assert_eq!(torn.kind(), io::ErrorKind::UnexpectedEof);

        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        assert!(
            read_frame(&mut b).await.unwrap().is_none(),
            "an end between frames is clean"
        );
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_on_both_sides() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let announced = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes();
        a.write_all(&announced).await.unwrap();
        let err = read_frame(&mut b).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("limit"), "{err}");

        let too_big = vec![0u8; MAX_FRAME_BYTES + 1];
        let err = write_frame(&mut a, &too_big).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    async fn expect_preface(peer: &mut tokio::io::DuplexStream) {
        let mut preface = [0u8; PREFACE.len()];
        peer.read_exact(&mut preface).await.unwrap();
        assert_eq!(preface, PREFACE);
    }

    #[tokio::test]
    async fn a_link_sends_its_preface_then_exchanges_frames() {
        let (a, mut b) = tokio::io::duplex(64);
        let server = tokio::spawn(async move {
            expect_preface(&mut b).await;
            while let Some(request) = read_frame(&mut b).await.unwrap() {
                let mut reply = request.clone();
                reply.reverse();
                write_frame(&mut b, &reply).await.unwrap();
            }
        });
        let mut link = Link::open(Box::new(a)).await.unwrap();
        assert_eq!(link.exchange(b"abc").await.unwrap(), b"cba");
        assert_eq!(link.exchange(b"xy").await.unwrap(), b"yx");
        drop(link);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_peer_that_closes_mid_exchange_is_an_error() {
        let (a, mut b) = tokio::io::duplex(64);
        let server = tokio::spawn(async move {
            expect_preface(&mut b).await;
            let _ = read_frame(&mut b).await.unwrap();
            // Closes without answering.
        });
        let mut link = Link::open(Box::new(a)).await.unwrap();
        let err = link.exchange(b"abc").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        server.await.unwrap();
    }
}
