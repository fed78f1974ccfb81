//! What the replicated state machine applies (`Command`) and answers
//! (`Response`).
//!
//! These types are the log format: every replica decodes the same bytes into
//! the same `Command` and must compute the same `Response`. They are plain
//! data; the gRPC layer converts to and from `roster.v1` messages at the edge.

use serde::{Deserialize, Serialize};

// Keys and values are encoded with `serde_bytes`: as one length-prefixed
// blob instead of a sequence of u8, which matters for 1 MiB values.

/// Identifies one logical client write, so that a retry applies at most once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId {
    /// Chosen at random by the client, once per client instance.
    pub client_id: u64,
    /// Increases by one for each distinct write; a retry reuses it.
    pub sequence: u64,
}

/// One log entry's application payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Present for client writes that ask to be deduplicated.
    pub request_id: Option<RequestId>,
    /// Leader's wall-clock time in milliseconds when it proposed the entry.
    /// This is the only way time enters the state machine: a value in the
    /// log, identical on every replica.
    pub stamp_ms: u64,
    pub op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put(PutOp),
    Delete(DeleteOp),
    Txn(TxnOp),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutOp {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Return the previous pair in the result.
    pub prev_kv: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteOp {
    /// The key, or the prefix when `prefix` is set (empty prefix: every key).
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub prefix: bool,
    pub prev_kv: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeOp {
    /// The key, or the prefix when `prefix` is set (empty prefix: every key).
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub prefix: bool,
    /// Maximum pairs returned; 0 means `limits::MAX_RANGE_RESULTS`.
    pub limit: u32,
    pub keys_only: bool,
    pub count_only: bool,
}

/// Compare-and-set: all `compare` hold → `success`, else `failure`; applied
/// atomically at one revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOp {
    pub compare: Vec<Compare>,
    pub success: Vec<TxnAction>,
    pub failure: Vec<TxnAction>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnAction {
    Range(RangeOp),
    Put(PutOp),
    Delete(DeleteOp),
}

/// A condition on one key. A missing key has version, create and mod
/// revision 0 and equals no value (every value comparison is false... except
/// `NotEqual`, which is true).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub target: CompareTarget,
    pub result: CompareResult,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Version(u64),
    CreateRevision(u64),
    ModRevision(u64),
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareResult {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// A stored pair with its etcd-style metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub create_revision: u64,
    pub mod_revision: u64,
    /// Writes since creation: 1 after the first put.
    pub version: u64,
    /// Attached lease, 0 for none (leases arrive with the coordination API).
    pub lease: i64,
}

/// What applying one log entry produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Blank and membership entries produce nothing.
    #[default]
    None,
    Put(PutResult),
    Delete(DeleteResult),
    Txn(TxnResult),
    /// The command was rejected deterministically; the store is unchanged.
    Rejected(Rejection),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResult {
    /// Store revision after the put.
    pub revision: u64,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResult {
    /// Store revision after the delete (unchanged when nothing was deleted).
    pub revision: u64,
    pub deleted: u64,
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResult {
    pub revision: u64,
    pub kvs: Vec<KeyValue>,
    /// More pairs matched than were returned.
    pub more: bool,
    /// Pairs that matched in all.
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResult {
    /// Store revision after the transaction.
    pub revision: u64,
    pub succeeded: bool,
    pub responses: Vec<TxnActionResult>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnActionResult {
    Range(RangeResult),
    Put(PutResult),
    Delete(DeleteResult),
}

/// Why the state machine refused a command. The API layer validates first,
/// so a rejection here means a stale retry or a check only the state machine
/// can make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// A retry of a write older than the client's retained window: it may
    /// have been applied, and its answer is no longer kept.
    #[error("request {sequence} of client {client_id:#x} is older than the retained retry window (oldest kept: {oldest_kept})")]
    StaleRetry {
        client_id: u64,
        sequence: u64,
        oldest_kept: u64,
    },
    /// The command breaks a limit (defence in depth behind API validation).
    #[error("invalid command: {0}")]
    Invalid(String),
}
