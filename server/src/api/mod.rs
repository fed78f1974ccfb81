//! The serving layer: gRPC services for clients and peers, request
//! validation, routing of writes to the leader, linearizable reads, and the
//! HTTP health endpoint.
//!
//! Invariant: nothing here mutates state except by proposing a command
//! through Raft; reads either confirm leadership first (read index) or say
//! they are `serializable`.

pub mod batch;
pub mod cluster;
pub mod common;
pub mod context;
pub mod convert;
pub mod deadline;
pub mod election;
pub mod health;
pub mod kv;
pub mod lease;
pub mod lease_keeper;
pub mod listener;
pub mod route;
pub mod topology;
pub mod transport;
pub mod watch;

pub use context::NodeContext;
