//! Every limit rosterd enforces, in one place. Each one is documented in the
//! README; breaking one gets `INVALID_ARGUMENT` with the limit named, never a
//! panic or a silently truncated write.

/// Longest key, in bytes. Keys must also be non-empty.
pub const MAX_KEY_BYTES: usize = 4 * 1024;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Most compares in one transaction.
pub const MAX_TXN_COMPARES: usize = 128;
/// Most operations in one branch (success or failure) of a transaction.
pub const MAX_TXN_OPS: usize = 128;
/// Largest encoded write request, in bytes (`INVALID_ARGUMENT` beyond).
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024 + 64 * 1024;
/// Largest message the gRPC transport decodes at all; larger ones are cut
/// off by the transport with `OUT_OF_RANGE` before they reach a handler.
pub const MAX_TRANSPORT_BYTES: usize = 4 * MAX_REQUEST_BYTES;
/// Largest encoded response, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Most pairs one range returns (a larger match sets `more`).
pub const MAX_RANGE_RESULTS: usize = 10_000;
/// Most key+value bytes one range returns before it stops and sets `more`.
pub const MAX_RANGE_BYTES: usize = 8 * 1024 * 1024;
/// Client sessions remembered for retry deduplication; the least recently
/// used one is forgotten beyond this.
pub const MAX_SESSIONS: usize = 10_000;
/// Answers remembered per client session (writes a client may have in flight
/// at once and still retry safely).
pub const SESSION_WINDOW: usize = 64;
/// Member ids are non-zero and below this.
pub const MAX_NODE_ID: u64 = u64::MAX >> 1;
/// Longest member address, in bytes.
pub const MAX_ADDR_BYTES: usize = 256;
/// Longest cluster name, in bytes (`[A-Za-z0-9._-]`).
pub const MAX_CLUSTER_NAME_BYTES: usize = 64;
