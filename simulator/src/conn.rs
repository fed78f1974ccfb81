//! gRPC connections through the simulated network: the API layer and the
//! clients run their real HTTP/2 + gRPC stacks over in-memory pipes.
//!
//! A dial from a client (or from a node forwarding to its leader) to
//! `nX:port` becomes two in-memory pipes joined by a relay task that the
//! network owns:
//!
//! ```text
//! caller ⇄ pipe ⇄ [relay: delay per chunk, stalls while paused] ⇄ pipe ⇄ node X's tonic server
//! ```
//!
//! A dial to a crashed node is refused after a short delay; a dial across a
//! cut link hangs (a lost SYN) until the caller's connect timeout. When a
//! node crashes or a link is cut, the network aborts the relays of the
//! affected connections: both ends see the connection close, as with a
//! reset TCP connection. Bytes in a direction keep their order (one pump per
//! direction), so HTTP/2 framing is never corrupted.

use std::io;
use std::time::Duration;

use roster_env::dial::{Dialer, Dialing};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

use crate::net::{Net, PartyId};

/// Size of each in-memory pipe's buffer.
const PIPE_BYTES: usize = 256 * 1024;
/// How long a dial across a cut link hangs before failing (the callers'
/// own connect timeouts are shorter).
const LOST_SYN: Duration = Duration::from_secs(30);

/// Dials nodes of the simulated network on behalf of `from`.
pub struct SimDialer {
    pub net: Net,
    pub from: PartyId,
}

/// The node an address `nX:port` names.
pub fn node_of(addr: &str) -> Option<u64> {
    let host = addr.split(':').next()?;
    host.strip_prefix('n')?.parse().ok()
}

impl Dialer for SimDialer {
    fn dial(&self, addr: &str) -> Dialing {
        let net = self.net.clone();
        let from = self.from;
        let target = node_of(addr);
        Box::pin(async move {
            let Some(to) = target else {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a simulated node"));
            };
            match net.connect_fate(from, to) {
                ConnectFate::Refused(delay) => {
                    tokio::time::sleep(delay).await;
                    Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        format!("n{to} is down"),
                    ))
                }
                ConnectFate::Lost => {
                    tokio::time::sleep(LOST_SYN).await;
                    Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
                }
                ConnectFate::Connect(delay) => {
                    tokio::time::sleep(delay).await;
                    let (caller, relay_a) = tokio::io::duplex(PIPE_BYTES);
                    let (relay_b, server) = tokio::io::duplex(PIPE_BYTES);
                    // The node may have crashed during the handshake.
                    let Some(incoming) = net.accept(from, to) else {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionRefused,
                            format!("n{to} is down"),
                        ));
                    };
                    let relay = tokio::spawn(relay(net.clone(), from, to, relay_a, relay_b));
                    net.track_conn(from, to, relay.abort_handle());
                    if incoming.send(server).is_err() {
                        relay.abort();
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionRefused,
                            format!("n{to} is down"),
                        ));
                    }
                    Ok(caller)
                }
            }
        })
    }
}

/// What a connection attempt meets.
pub enum ConnectFate {
    Refused(Duration),
    Lost,
    Connect(Duration),
}

async fn relay(net: Net, from: PartyId, to: u64, a: DuplexStream, b: DuplexStream) {
    let (a_read, a_write) = tokio::io::split(a);
    let (b_read, b_write) = tokio::io::split(b);
    tokio::join!(
        pump(net.clone(), from, to, a_read, b_write),
        pump(net, from, to, b_read, a_write)
    );
}

/// Copies one direction, chunk by chunk, each after the network's delay and
/// after any pause of either end.
async fn pump(net: Net, from: PartyId, to: u64, mut r: ReadHalf<DuplexStream>, mut w: WriteHalf<DuplexStream>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let delay = net.stream_delay();
        tokio::time::sleep(delay).await;
        net.wait_unpaused(from, to).await;
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}
