//! What the replicated state machine applies (`Command`) and answers
//! (`Response`).
//!
//! These types are the log format: every replica decodes the same bytes into
//! the same `Command` and must compute the same `Response`. They are plain
//! data; the gRPC layer converts to and from `roster.v1` messages at the edge.

use std::collections::BTreeMap;

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

/// What one entry does.
///
/// Client operations (KV, leases granted and revoked by clients, topology,
/// elections) normally carry a [`RequestId`]. `LeaseRenew`,
/// `LeaseCheckpoint`, `LeaseExpire` and `Tick` are proposed by the leader's
/// lease keeper without one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put(PutOp),
    Delete(DeleteOp),
    Txn(TxnOp),
    /// New lease → [`Response::LeaseGrant`].
    LeaseGrant(LeaseGrantOp),
    /// Ends a lease and everything attached to it → [`Response::LeaseRevoke`].
    LeaseRevoke(LeaseRevokeOp),
    /// Batched keepalives (rule 4) → [`Response::LeaseRenew`].
    LeaseRenew(LeaseRenewOp),
    /// The leader's periodic record of remaining TTLs (rule 5) →
    /// [`Response::LeaseCheckpoint`].
    LeaseCheckpoint(LeaseCheckpointOp),
    /// The leader's expiry decision (rule 3) → [`Response::LeaseExpire`].
    LeaseExpire(LeaseExpireOp),
    /// Registers or re-registers a managed node → [`Response::NodeRegister`].
    NodeRegister(NodeRegisterOp),
    NodeDeregister(NodeDeregisterOp),
    /// Creates a group; `AlreadyExists` if it exists → [`Response::GroupCreate`].
    GroupCreate(GroupCreateOp),
    /// Replaces a group's specs and members, creating it if absent →
    /// [`Response::GroupUpdate`].
    GroupUpdate(GroupUpdateOp),
    /// Deletes a group, releasing every grant → [`Response::GroupDelete`].
    GroupDelete(GroupDeleteOp),
    /// Joins (or updates a place in) a role's election → [`Response::Campaign`].
    Campaign(CampaignOp),
    /// Gives up a grant or leaves the queue → [`Response::Resign`].
    Resign(ResignOp),
    /// Updates a candidate's progress (replication position) →
    /// [`Response::ReportProgress`].
    ReportProgress(ReportProgressOp),
    /// Planned handover to a named waiting candidate, in one entry →
    /// [`Response::Switchover`].
    Switchover(SwitchoverOp),
    /// Operator fill of a free slot of a manual-failover role →
    /// [`Response::Promote`].
    Promote(PromoteOp),
    /// Does nothing by itself. The leader proposes it when
    /// `State::next_role_deadline_ms` arrives, so that a slot held back by a
    /// handover delay is granted even when no other entry comes along (every
    /// entry, this one included, first grants the slots whose delay has
    /// passed by its `stamp_ms`) → [`Response::Tick`].
    Tick,
    /// Several commands in one entry, proposed together by the leader's
    /// batcher (`api/batch.rs`): applied one after another, each exactly as
    /// it would be as an entry of its own at this place in the log (its own
    /// revision, deduplication, stamp and answer) → [`Response::Batch`], one
    /// answer per command in order. A batch inside a batch is rejected.
    Batch(Vec<Command>),
}

/// Proof that a write comes from a current holder of a role (rule 7): the
/// write is applied only if `token` is the token of a grant of
/// `group`/`role` that is current when the entry applies; otherwise it is
/// rejected with [`Rejection::Fenced`] and changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Fence {
    pub group: String,
    pub role: String,
    pub token: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutOp {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Return the previous pair in the result.
    pub prev_kv: bool,
    /// Lease to attach the key to (it is deleted when the lease ends); 0
    /// for none, which also detaches the key from a lease it had. The
    /// lease must exist, else [`Rejection::NotFound`].
    pub lease: i64,
    pub fence: Option<Fence>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteOp {
    /// The key, or the prefix when `prefix` is set (empty prefix: every key).
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub prefix: bool,
    pub prev_kv: bool,
    pub fence: Option<Fence>,
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
///
/// Fencing: `fence` and the fences of the puts and deletes of the branch
/// taken must all be current, else the whole transaction is rejected with
/// [`Rejection::Fenced`]. So are the leases of the branch's puts
/// ([`Rejection::NotFound`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOp {
    pub compare: Vec<Compare>,
    pub success: Vec<TxnAction>,
    pub failure: Vec<TxnAction>,
    pub fence: Option<Fence>,
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
    /// Attached lease, 0 for none.
    pub lease: i64,
}

// ---- leases ----

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrantOp {
    /// Requested id (> 0), or 0 to let the state machine pick the next free
    /// one (deterministic: the lowest unused id from a counter that only
    /// moves forward, so a chosen id is never handed out twice while the
    /// counter has not wrapped).
    pub id: i64,
    /// [`crate::limits::MIN_LEASE_TTL_MS`] to [`crate::limits::MAX_LEASE_TTL_MS`].
    pub ttl_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRevokeOp {
    pub id: i64,
}

/// Committed keepalives (rule 4): each existing lease named starts a full TTL
/// again. A renewal is acknowledged to its client only from this entry's
/// answer, so a deposed or paused leader can never extend a lease.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRenewOp {
    pub ids: Vec<i64>,
}

/// The leader's view of one lease when it decided something about it. The
/// decision applies only if the lease is still the same incarnation
/// (`granted_revision`) and no renewal has committed since
/// (`renewals_seen`): a renewal that commits after the leader looked always
/// wins over the leader's older view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseSeen {
    pub id: i64,
    /// `LeaseInfo::granted_revision` of the lease the leader looked at: an
    /// id revoked and granted again is a different lease.
    pub granted_revision: u64,
    /// `LeaseInfo::renewals` when the leader looked.
    pub renewals_seen: u64,
}

/// Rule 5: the remaining TTL of leases as the leader's timers see them, so
/// that a new leader resumes each lease from here instead of from a full
/// TTL (which would let a dead client's lease live forever through leader
/// changes) or from zero (which would expire it early).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseCheckpointOp {
    /// Each applies only as [`LeaseSeen`] says; unknown ids are ignored, and
    /// `remaining_ms` above the TTL is taken as the TTL.
    pub leases: Vec<(LeaseSeen, u64)>,
}

/// Rule 3: the leader decided these leases expired. Each ends, with
/// everything attached to it, only as [`LeaseSeen`] says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseExpireOp {
    pub leases: Vec<LeaseSeen>,
}

// ---- topology ----

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegisterOp {
    /// A name (see `validate`); registering an existing id updates it.
    pub id: String,
    pub address: String,
    /// A name, or empty for none.
    pub zone: String,
    /// Keys are names; values are printable text.
    pub labels: BTreeMap<String, String>,
    /// 0 for none (the node is taken as alive); otherwise an existing lease:
    /// the node is alive while it lives, and stays registered but not alive
    /// once it ends.
    pub lease: i64,
    pub fence: Option<Fence>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDeregisterOp {
    pub id: String,
    pub fence: Option<Fence>,
}

/// How a role's slot is filled again after its holder loses it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Failover {
    /// The next eligible candidate is granted in the entry that ends the
    /// grant (after the handover delay, if the holder's lease expired).
    #[default]
    Automatic,
    /// A slot that was held and lost (lease end, resign) stays empty until
    /// an operator fills it with [`Op::Promote`] (after the handover delay,
    /// if the holder's lease expired). Slots never held yet, e.g. at group
    /// creation or after a capacity increase, are filled automatically:
    /// "manual" is about failover, not about the first election. A planned
    /// handover between live candidates is an [`Op::Switchover`], in any
    /// mode.
    Manual,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleSpec {
    pub name: String,
    /// Holders at once: 1 for a primary, k for standbys
    /// (1 to [`crate::limits::MAX_ROLE_CAPACITY`]).
    pub capacity: u32,
    pub failover: Failover,
    /// Chubby's lock-delay: after a holder's lease *expires* (not after a
    /// resign or revoke, where the holder stopped on purpose), its slot stays
    /// empty until the leader's clock passes `stamp_ms + handover_delay_ms`,
    /// so that writes the lost holder still has in flight drain first. 0: none.
    pub handover_delay_ms: u64,
    /// Patroni's maximum lag on failover: a waiting candidate whose progress
    /// is more than this behind the most advanced eligible waiting candidate
    /// is passed over. `None`: no limit.
    pub max_lag: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    /// The member's node id; a candidate of this name is this member.
    pub node: String,
    /// Priority per role name of the group, overriding what the candidate
    /// campaigns with; 0 = never eligible for that role. A role without an
    /// entry uses the campaign's priority. Priorities decide elections
    /// only: lowering a current holder's priority does not end its grant
    /// (use a switchover).
    pub priorities: BTreeMap<String, u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCreateOp {
    pub name: String,
    pub roles: Vec<RoleSpec>,
    pub members: Vec<GroupMember>,
    pub fence: Option<Fence>,
}

/// Replaces the specs and members of a group (creating it if absent).
///
/// Without `force`, dropping a role that has holders, or lowering a role's
/// capacity below its holder count, is rejected with
/// [`Rejection::FailedPrecondition`]. With `force`, the holders of a dropped
/// role are released and its candidates withdrawn; when capacity drops, the
/// most recent grants are released back to the waiting queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupUpdateOp {
    pub name: String,
    pub roles: Vec<RoleSpec>,
    pub members: Vec<GroupMember>,
    pub force: bool,
    pub fence: Option<Fence>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDeleteOp {
    pub name: String,
    pub fence: Option<Fence>,
}

// ---- role elections ----

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignOp {
    pub group: String,
    pub role: String,
    pub candidate: String,
    /// Must exist; when it ends, the candidacy and any grant end with it.
    pub lease: i64,
    /// Higher is preferred; 0 = never elected. A group member's configured
    /// priority for the role overrides it.
    pub priority: u32,
    /// E.g. a replication position; see [`RoleSpec::max_lag`].
    pub progress: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResignOp {
    pub group: String,
    pub role: String,
    pub candidate: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportProgressOp {
    pub group: String,
    pub role: String,
    pub candidate: String,
    pub progress: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverOp {
    pub group: String,
    pub role: String,
    /// A waiting candidate with a priority above 0 (`max_lag` does not
    /// apply: the operator chose).
    pub to: String,
    /// The holder to replace; `None`: the holder with the oldest grant.
    pub from: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteOp {
    pub group: String,
    pub role: String,
    /// A waiting candidate with a priority above 0.
    pub candidate: String,
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
    LeaseGrant(LeaseGrantResult),
    LeaseRevoke(Ack),
    LeaseRenew(LeaseRenewResult),
    LeaseCheckpoint(Ack),
    LeaseExpire(LeaseExpireResult),
    NodeRegister(Ack),
    NodeDeregister(Ack),
    GroupCreate(Ack),
    GroupUpdate(Ack),
    GroupDelete(Ack),
    Campaign(CampaignResult),
    Resign(ResignResult),
    ReportProgress(Ack),
    Switchover(SwitchoverResult),
    Promote(PromoteResult),
    Tick(Ack),
    /// The command was rejected deterministically; the operation changed
    /// nothing. (Slots whose handover delay passed by the entry's
    /// `stamp_ms` are still granted: that is time passing, not the
    /// operation.)
    Rejected(Rejection),
    /// The answers to an [`Op::Batch`], one per command, in order.
    Batch(Vec<Response>),
}

/// Every `revision` in a response is the store revision after the entry:
/// the entry's own revision if it changed anything, else the unchanged one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub revision: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrantResult {
    pub revision: u64,
    pub id: i64,
    pub ttl_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRenewResult {
    pub revision: u64,
    /// Per id of the op, in order: the TTL it was renewed for, or `None` if
    /// the lease does not exist (the client must stop acting on it).
    pub ttl_ms: Vec<Option<u64>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseExpireResult {
    pub revision: u64,
    /// The ids that ended, in the op's order; the others were renewed (or
    /// re-granted) after the leader looked, or were already gone.
    pub ended: Vec<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CampaignOutcome {
    /// Granted by this entry, with this fencing token.
    Elected { token: u64 },
    /// Already held (the campaign updated lease, priority or progress); the
    /// grant and its token are unchanged.
    Holding { token: u64 },
    /// Waiting, at this 1-based position of the queue (priority, then
    /// arrival).
    Queued { position: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignResult {
    pub revision: u64,
    pub outcome: CampaignOutcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResignResult {
    pub revision: u64,
    /// A grant was released (else the candidate left the waiting queue).
    pub released: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverResult {
    pub revision: u64,
    /// The holder that was released back to the waiting queue.
    pub from: String,
    /// The new grant's token.
    pub token: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteResult {
    pub revision: u64,
    pub token: u64,
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
    /// A lease, group, role, node or candidate the command names does not
    /// exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A lease id or group name the command would create is taken.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A fence token is not the token of a current grant (rule 7).
    #[error("fenced: {0}")]
    Fenced(String),
    /// The command does not fit the current state (e.g. switchover to a
    /// candidate that is not waiting, dropping a role that has holders).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// A count limit (leases, nodes, groups, candidates) would be exceeded.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
}

impl Response {
    /// The store revision the response reports, if it reports one.
    pub fn revision(&self) -> Option<u64> {
        match self {
            Response::None | Response::Rejected(_) => None,
            Response::Batch(answers) => answers.iter().filter_map(Response::revision).max(),
            Response::Put(r) => Some(r.revision),
            Response::Delete(r) => Some(r.revision),
            Response::Txn(r) => Some(r.revision),
            Response::LeaseGrant(r) => Some(r.revision),
            Response::LeaseRenew(r) => Some(r.revision),
            Response::LeaseExpire(r) => Some(r.revision),
            Response::Campaign(r) => Some(r.revision),
            Response::Resign(r) => Some(r.revision),
            Response::Switchover(r) => Some(r.revision),
            Response::Promote(r) => Some(r.revision),
            Response::LeaseRevoke(a)
            | Response::LeaseCheckpoint(a)
            | Response::NodeRegister(a)
            | Response::NodeDeregister(a)
            | Response::GroupCreate(a)
            | Response::GroupUpdate(a)
            | Response::GroupDelete(a)
            | Response::ReportProgress(a)
            | Response::Tick(a) => Some(a.revision),
        }
    }

    /// Sets every revision the response reports (in a transaction, also
    /// each action's) to `revision`, the store revision after the entry:
    /// known only once the whole entry has run.
    pub(crate) fn set_revision(&mut self, revision: u64) {
        match self {
            // Each command of a batch carries the revision after itself.
            Response::None | Response::Rejected(_) | Response::Batch(_) => {}
            Response::Put(r) => r.revision = revision,
            Response::Delete(r) => r.revision = revision,
            Response::Txn(r) => {
                r.revision = revision;
                for action in &mut r.responses {
                    match action {
                        TxnActionResult::Range(x) => x.revision = revision,
                        TxnActionResult::Put(x) => x.revision = revision,
                        TxnActionResult::Delete(x) => x.revision = revision,
                    }
                }
            }
            Response::LeaseGrant(r) => r.revision = revision,
            Response::LeaseRenew(r) => r.revision = revision,
            Response::LeaseExpire(r) => r.revision = revision,
            Response::Campaign(r) => r.revision = revision,
            Response::Resign(r) => r.revision = revision,
            Response::Switchover(r) => r.revision = revision,
            Response::Promote(r) => r.revision = revision,
            Response::LeaseRevoke(a)
            | Response::LeaseCheckpoint(a)
            | Response::NodeRegister(a)
            | Response::NodeDeregister(a)
            | Response::GroupCreate(a)
            | Response::GroupUpdate(a)
            | Response::GroupDelete(a)
            | Response::ReportProgress(a)
            | Response::Tick(a) => a.revision = revision,
        }
    }
}
