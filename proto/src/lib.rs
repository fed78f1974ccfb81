//! Generated gRPC types for Roster.
//!
//! * [`v1`]: the public API (`roster.v1`): key-value store and cluster
//!   administration. Stable across patch releases.
//! * [`raft`]: the internal transport between `rosterd` nodes
//!   (`roster.raft.v1`). Not for clients.

#![allow(clippy::all, missing_docs)]

pub mod codec;

/// Modules nested as the protobuf packages are, so generated cross-package
/// paths resolve.
pub mod roster {
    pub mod v1 {
        tonic::include_proto!("roster.v1");
    }
    pub mod raft {
        pub mod v1 {
            tonic::include_proto!("roster.raft.v1");
        }
    }
}

pub use roster::raft::v1 as raft;
pub use roster::v1;
