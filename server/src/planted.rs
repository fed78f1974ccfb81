//! Bugs planted on purpose, so that the simulator can prove its checkers
//! catch them (issue 4: "checkers proven to catch bugs").
//!
//! Each bug is a one-line deviation at the place the real rule lives (the
//! lease keeper, the state machine's lease bookkeeping, the fence check, the
//! read barrier). The switches exist only with the `planted-bugs` feature,
//! which only `roster-simulator` enables, and are per thread: the simulator
//! turns them on for its one simulation thread. Without the feature
//! [`active`] is a constant `false` and the compiler removes every hook.
//!
//! Note on Cargo's feature unification: a `cargo build --workspace` builds
//! roster-server once, with the feature, for every binary; rosterd then
//! contains the switches but never sets them (nothing outside the
//! simulator calls [`set`]). `cargo build -p roster-server` (what a release
//! build of rosterd does) leaves them out.

/// The bugs that can be planted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Planted {
    /// The lease keeper answers a keepalive as soon as it arrives, before
    /// the renewal is committed.
    KeepaliveAckBeforeCommit,
    /// A leader (re)starts every lease it takes over at its full TTL
    /// instead of the newest committed remaining TTL: leader churn keeps a
    /// dead client's lease alive.
    NewLeaderFullTtl,
    /// Committed renewals do not reset the replicated remaining TTL, and
    /// checkpoints come every 10 s instead of every second, so a new leader
    /// starts leases from an old checkpoint, ignoring newer renewals: it
    /// expires leases their clients rightly believe they hold (etcd once
    /// had this bug, with checkpoints minutes apart).
    IgnoreRenewalsAfterCheckpoint,
    /// Fenced writes are applied without checking the token.
    UncheckedFence,
    /// A follower serves a linearizable read from its local state, without
    /// asking the leader for a read index.
    FollowerLocalReads,
}

#[cfg(feature = "planted-bugs")]
thread_local! {
    static ACTIVE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Turns on exactly `bugs` on this thread (the simulator's).
#[cfg(feature = "planted-bugs")]
pub fn set(bugs: &[Planted]) {
    let mask = bugs.iter().fold(0u32, |m, b| m | 1 << (*b as u32));
    ACTIVE.with(|a| a.set(mask));
}

/// Whether `bug` is planted on this thread.
#[inline]
pub fn active(bug: Planted) -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        ACTIVE.with(|a| a.get() & (1 << (bug as u32)) != 0)
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        let _ = bug;
        false
    }
}
