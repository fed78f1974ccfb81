//! rosterd: a Raft-replicated coordinator for leader election and role
//! assignment.
//!
//! Three layers, each in its own module tree:
//!
//! 1. [`state`]: the replicated state machine. Pure and deterministic: no I/O,
//!    no clock, no randomness. Time arrives only as a value in a command.
//! 2. [`raft`]: openraft wiring: type config, the log store (a segment
//!    log of our own) and state machine store, the peer transport (an
//!    AppendEntries link, the rest over tonic).
//! 3. [`api`]: gRPC services, request validation, leader forwarding, HTTP
//!    health.
//!
//! [`node`] assembles one running node from the three; [`config`] is its
//! configuration.

pub mod api;
pub mod config;
pub mod limits;
pub mod node;
pub mod planted;
pub mod raft;
pub mod state;
