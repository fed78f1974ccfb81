//! Request deadlines: the client's `grpc-timeout`, capped by the server's own
//! limit, so that no request waits forever for a quorum that is not there.

use std::time::Duration;

use tokio::time::Instant;

/// Most the server keeps back from the client's timeout.
const MARGIN: Duration = Duration::from_millis(100);

/// The deadline for `request`: now plus the smaller of the client's
/// `grpc-timeout` (if sent and parseable) and `server_limit`.
pub fn of<T>(request: &tonic::Request<T>, server_limit: Duration) -> Instant {
    let client = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    // Answer a little before the client gives up, so that it hears why
    // (UNAVAILABLE: no quorum) instead of seeing its own timer fire.
    let budget = match client {
        Some(client) => client.saturating_sub((client / 10).min(MARGIN)).min(server_limit),
        None => server_limit,
    };
    Instant::now() + budget
}

/// Parses the gRPC wire format of a timeout: up to 8 digits and a unit
/// (H, M, S, m, u, n).
pub fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.checked_mul(3600)?),
        "M" => Duration::from_secs(value.checked_mul(60)?),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
    }
}
