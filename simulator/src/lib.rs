//! roster-simulator: whole Roster clusters in one process, deterministic.
//!
//! Real code under test: `openraft::Raft<TypeConfig>` with rosterd's
//! `RaftTiming::openraft_config`, the real `StateMachineStore` and `State`.
//! Simulated: the network ([`net`]), the disk ([`disk`]), the clock (a
//! paused single-threaded tokio runtime) and the randomness (tokio's
//! scheduler seeded with `Builder::rng_seed`, openraft's election jitter via
//! `roster_server::raft::seed_thread_rng`, and [`rng::SimRng`] for the
//! workload, faults, network and disk). See README.md.

#[cfg(not(tokio_unstable))]
compile_error!(
    "roster-simulator must be built with `--cfg tokio_unstable` (it seeds tokio's scheduler with \
     Builder::rng_seed). The workspace's .cargo/config.toml sets it; a RUSTFLAGS environment variable \
     replaces that setting, so add `--cfg tokio_unstable` to RUSTFLAGS or unset it."
);

pub mod conn;
pub mod disk;
pub mod faults;
pub mod history;
pub mod linearizability;
pub mod logs;
pub mod net;
pub mod rng;
pub mod shrink;
pub mod sim;
pub mod std_time;
pub mod trace;
pub mod workload;

pub use sim::{run, Bug, RaftNet, SimConfig, SimReport, Stats, Violation, RULES};
