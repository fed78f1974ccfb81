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

/// Most threads for rosterd's async work (`--worker-threads`).
pub const MAX_WORKER_THREADS: usize = 256;

// ---- Coordination: leases, topology, role elections, watch history ----

/// Shortest lease TTL, ms. A lease must outlive a leader election (1–2 s by
/// default) plus a renewal round trip, or it would expire whenever the
/// leader changes; 2 s is the design's minimum.
pub const MIN_LEASE_TTL_MS: u64 = 2_000;
/// Longest lease TTL, ms (one day). A dead client's lease keeps its keys and
/// roles until it expires, so this bounds how long a crash can block a role.
pub const MAX_LEASE_TTL_MS: u64 = 86_400_000;
/// Most leases at once (`LeaseGrant` beyond this: `RESOURCE_EXHAUSTED`).
pub const MAX_LEASES: usize = 100_000;
/// Most leases named in one leader entry (`LeaseRenew`, `LeaseCheckpoint`,
/// `LeaseExpire`). The lease keeper splits larger batches over several
/// entries, which keeps every log entry well below the transport's batch size.
pub const MAX_LEASE_BATCH: usize = 10_000;
/// Longest name, in bytes: node ids, group, role and candidate names, label
/// keys and zones. Names are `[a-z0-9][a-z0-9._-]*` (a DNS label, plus `_` and
/// `.`), so they are safe in URLs, metrics and file names.
pub const MAX_NAME_BYTES: usize = 63;
/// Most registered nodes of the managed system.
pub const MAX_NODES: usize = 10_000;
/// Longest node address, in bytes.
pub const MAX_NODE_ADDRESS_BYTES: usize = 256;
/// Most labels on one node.
pub const MAX_LABELS: usize = 64;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 256;
/// Most groups (shards or services).
pub const MAX_GROUPS: usize = 10_000;
/// Most role specs in one group.
pub const MAX_ROLES_PER_GROUP: usize = 16;
/// Most configured members of one group.
pub const MAX_GROUP_MEMBERS: usize = 256;
/// Largest role capacity (holders at once).
pub const MAX_ROLE_CAPACITY: u32 = 16;
/// Longest handover delay after a holder's lease expires, ms.
pub const MAX_HANDOVER_DELAY_MS: u64 = MAX_LEASE_TTL_MS;
/// Most candidates (holders and waiting) of one role.
pub const MAX_CANDIDATES_PER_ROLE: usize = 1_000;
/// Most candidates (holders and waiting) over all roles.
pub const MAX_CANDIDATES: usize = 100_000;
/// Most watch events retained; the oldest whole revisions are dropped
/// beyond this, and a watcher that is further behind gets "compacted".
pub const MAX_HISTORY_EVENTS: usize = 10_000;
/// Most bytes of watch events retained (keys, values and names, estimated
/// the same way on every replica); same eviction as `MAX_HISTORY_EVENTS`.
pub const MAX_HISTORY_BYTES: usize = 64 * 1024 * 1024;
/// Most streams that follow the applied state (`Watch`, `Observe`,
/// `Campaign`) open at once on one node (`RESOURCE_EXHAUSTED` beyond).
pub const MAX_WATCHERS: usize = 10_000;
/// Events read from the history at once by one watch stream.
pub const WATCH_PAGE_EVENTS: usize = 64;
/// Responses buffered per watch stream before the reader waits; a watcher
/// that stays behind until the history moves past it gets `compacted`.
pub const WATCH_BUFFER: usize = 4;
/// Target size of one watch response (estimated event bytes); a larger
/// revision is split over several responses marked `fragment`. With
/// `WATCH_BUFFER`, a stream queues about 1 MiB (plus one event and the
/// HTTP/2 windows) before it waits for its reader.
pub const WATCH_MESSAGE_BYTES: usize = 256 * 1024;
