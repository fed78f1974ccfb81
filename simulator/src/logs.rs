//! The server's and client's own logs (`tracing`), captured into the event
//! trace with simulated time, for diagnosing a run: `roster-sim --seed S
//! --log info --trace t.txt`. Off by default: logs change the trace (and its
//! hash), and formatting them costs time.

use std::io;

use tracing::subscriber::DefaultGuard;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::trace::{self, SharedTrace};

/// Sends every log event matching `filter` (an `EnvFilter` directive such as
/// `info` or `roster_server::api::lease_keeper=debug`) to `trace` while the
/// guard lives, on this thread.
pub fn capture(filter: &str, trace: SharedTrace) -> Result<DefaultGuard, String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("bad --log filter '{filter}': {e}"))?;
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .without_time()
        .with_ansi(false)
        .with_writer(ToTrace(trace))
        .finish();
    Ok(tracing::subscriber::set_default(subscriber))
}

struct ToTrace(SharedTrace);

/// Collects one formatted event and records it as one trace line.
struct Line {
    trace: SharedTrace,
    buf: Vec<u8>,
}

impl<'a> MakeWriter<'a> for ToTrace {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            trace: self.0.clone(),
            buf: Vec::new(),
        }
    }
}

impl io::Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end();
        if !text.is_empty() {
            trace::record(&self.trace, "LOG", text);
        }
    }
}
