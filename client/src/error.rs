//! The error type of every client call.

use std::time::Duration;

use tonic::{Code, Status};

/// Result of a client call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a call failed.
///
/// Every variant maps to a gRPC [`Code`] through [`Error::code`], so callers
/// can branch on the code whatever the variant:
///
/// * `INVALID_ARGUMENT`, `NOT_FOUND`, `FAILED_PRECONDITION`, ... come back
///   from the server at once, unretried, as [`Error::Rpc`].
/// * When the overall deadline runs out while retrying, the result is
///   [`Error::DeadlineExceeded`], whose code is the code of the last failure
///   (`UNAVAILABLE` when no node could serve the request, `DEADLINE_EXCEEDED`
///   when attempts timed out).
/// * Bad configuration is `INVALID_ARGUMENT`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server (or the transport) answered with a status that is not
    /// worth retrying.
    #[error("{}: {}", code_name(.status.code()), status_message(.status))]
    Rpc {
        /// Endpoint (`host:port`) that produced the status.
        endpoint: String,
        /// The status as received, metadata included.
        status: Status,
    },

    /// The overall deadline ran out before any attempt succeeded.
    #[error("{}: {}", code_name(.last.code()), self.message())]
    DeadlineExceeded {
        /// The configured overall deadline.
        timeout: Duration,
        /// Number of attempts made.
        attempts: u32,
        /// Endpoint of the last failure.
        endpoint: String,
        /// The last failure. An attempt cut short by the overall deadline
        /// does not replace an earlier, more telling failure.
        last: Status,
    },

    /// An endpoint address could not be parsed.
    #[error("INVALID_ARGUMENT: invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The address as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A configuration value is out of range.
    #[error("INVALID_ARGUMENT: invalid client configuration: {0}")]
    InvalidConfig(String),
}

impl Error {
    /// The gRPC code of this error. For [`Error::DeadlineExceeded`] it is the
    /// code of the last failure, so a cluster without quorum yields
    /// `UNAVAILABLE` even after the deadline.
    pub fn code(&self) -> Code {
        match self {
            Error::Rpc { status, .. } => status.code(),
            Error::DeadlineExceeded { last, .. } => last.code(),
            Error::InvalidEndpoint { .. } | Error::InvalidConfig(_) => Code::InvalidArgument,
        }
    }

    /// A human-readable explanation without the code.
    pub fn message(&self) -> String {
        match self {
            Error::Rpc { status, .. } => status_message(status).to_owned(),
            Error::DeadlineExceeded {
                timeout,
                attempts,
                endpoint,
                last,
            } => format!(
                "{} (gave up after {attempts} attempt{} within the {timeout:?} deadline; last tried {endpoint})",
                status_message(last),
                if *attempts == 1 { "" } else { "s" },
            ),
            Error::InvalidEndpoint { endpoint, reason } => {
                format!("invalid endpoint {endpoint:?}: {reason}")
            }
            Error::InvalidConfig(reason) => format!("invalid client configuration: {reason}"),
        }
    }

    /// The gRPC status behind this error, if it came from a call.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::Rpc { status, .. } => Some(status),
            Error::DeadlineExceeded { last, .. } => Some(last),
            _ => None,
        }
    }

    /// The endpoint whose answer this error reports, if it came from a call.
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            Error::Rpc { endpoint, .. } | Error::DeadlineExceeded { endpoint, .. } => Some(endpoint),
            _ => None,
        }
    }
}

/// The canonical upper-case name of a gRPC code, e.g. `UNAVAILABLE`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The status message, or the code's description when the server sent none.
fn status_message(status: &Status) -> &str {
    if status.message().is_empty() {
        status.code().description()
    } else {
        status.message()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_error_keeps_code_and_message() {
        let e = Error::Rpc {
            endpoint: "a:1".into(),
            status: Status::not_found("member 7 is not a member"),
        };
        assert_eq!(e.code(), Code::NotFound);
        assert_eq!(e.message(), "member 7 is not a member");
        assert_eq!(e.to_string(), "NOT_FOUND: member 7 is not a member");
        assert_eq!(e.endpoint(), Some("a:1"));
    }

    #[test]
    fn deadline_error_reports_last_code() {
        let e = Error::DeadlineExceeded {
            timeout: Duration::from_secs(5),
            attempts: 3,
            endpoint: "b:2".into(),
            last: Status::unavailable("no quorum"),
        };
        assert_eq!(e.code(), Code::Unavailable);
        let text = e.to_string();
        assert!(text.starts_with("UNAVAILABLE: no quorum (gave up after 3 attempts"));
        assert!(text.contains("last tried b:2"), "{text}");
    }

    #[test]
    fn empty_message_falls_back_to_description() {
        let e = Error::Rpc {
            endpoint: "a:1".into(),
            status: Status::new(Code::Unavailable, ""),
        };
        assert!(!e.message().is_empty());
    }

    #[test]
    fn config_errors_are_invalid_argument() {
        let e = Error::InvalidConfig("x".into());
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(e.to_string(), format!("INVALID_ARGUMENT: {}", e.message()));
    }
}
