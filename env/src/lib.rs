//! The three places where Roster touches the world outside its own logic,
//! each behind a small type that is the real thing in `rosterd`,
//! `roster-client` and `rosterctl`, and a simulated one in `roster-sim`:
//!
//! * [`Clock`]: the local clock a lease deadline is measured on. Real time
//!   in production; in the simulator a clock that runs fast or slow within a
//!   drift bound, or jumps.
//! * [`Dial`]: how a gRPC channel reaches an address. TCP in production; in
//!   the simulator an in-memory pipe through the simulated network.
//! * [`random`]: jitter and ids. OS randomness in production; a seeded
//!   stream on the simulator's one thread.
//!
//! Everything else (the state machine, Raft, the API handlers, the client's
//! lease and role logic) is the same code in both worlds: that is what lets
//! the simulator's verdicts speak for the production binaries.

pub mod clock;
pub mod dial;
pub mod random;

pub use clock::Clock;
pub use dial::{Dial, Dialer};
