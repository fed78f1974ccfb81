//! Seeds that once broke a rule, kept as tests while they still take the
//! path that broke. Traces move with every change to the code, so each test
//! also checks that its seed still reaches that path; when one stops, find
//! a new seed (a sweep with the fix reverted) rather than drop the check.

use std::time::Duration;

use roster_simulator::sim::{run, SimConfig};

/// The lease keeper's failed attempt to take office (its read barrier
/// found no quorum after seconds of waiting) was measured by its next tick
/// as a process stall, and every lease deadline moved back by it: a dead
/// client's lease outlived its bound (`dead-lease-bound`, 5 nodes, seed 72).
#[test]
fn a_failed_attempt_to_take_office_is_not_a_stall() {
    let report = run(&SimConfig {
        seed: 72,
        nodes: 5,
        duration: Duration::from_secs(60),
        keep_trace: true,
        log: Some("roster_server::api::lease_keeper=info".into()),
        ..SimConfig::default()
    });
    report.assert_no_violations();
    let trace = report.full_trace.expect("kept trace");
    assert!(
        trace.iter().any(|l| l.contains("cannot confirm leadership yet")),
        "seed 72 no longer fails to take office: find another seed for this test"
    );
    assert!(
        !trace.iter().any(|l| l.contains("lease keeper stalled")),
        "the keeper took its own wait for office for a stall"
    );
}
