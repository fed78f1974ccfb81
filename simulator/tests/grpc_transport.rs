//! rosterd's own Raft transport under the simulator's faults: AppendEntries
//! on one link per follower, votes and snapshots as unary gRPC calls, both
//! through each node's one listener as in rosterd, all over
//! the simulated connections (`RaftNet::Grpc`). Cuts and crashes reset
//! connections mid-exchange, pauses stall them into timeouts; every rule the
//! checkers follow must still hold, and runs must stay deterministic.

use std::time::Duration;

use roster_simulator::{run, RaftNet, SimConfig};

fn config(seed: u64, nodes: usize, secs: u64) -> SimConfig {
    SimConfig {
        seed,
        nodes,
        duration: Duration::from_secs(secs),
        raft_net: RaftNet::Grpc,
        ..SimConfig::default()
    }
}

#[test]
fn the_real_transport_keeps_every_rule_under_faults() {
    let mut failed_exchanges = 0;
    for seed in 1..=4 {
        let report = run(&SimConfig {
            keep_trace: true,
            log: Some("roster_server::raft::network=warn".into()),
            ..config(seed, 3, 30)
        });
        report.assert_no_violations();
        assert!(report.stats.writes_acked > 0, "seed {seed}: no write was acknowledged");
        assert_eq!(
            report.stats.messages_delivered, 0,
            "seed {seed}: Raft messages went through the in-process network"
        );
        let trace = report.full_trace.expect("kept trace");
        failed_exchanges += trace.iter().filter(|l| l.contains("peer unreachable or slow")).count();
    }
    // The failure paths ran: some exchange with a peer failed (a crash, a
    // cut or a pause) and replication recovered from it.
    assert!(failed_exchanges > 0, "no exchange with a peer ever failed");
}

#[test]
fn the_real_transport_is_deterministic() {
    for (seed, nodes) in [(5, 3), (6, 5)] {
        let a = run(&config(seed, nodes, 15));
        let b = run(&config(seed, nodes, 15));
        a.assert_no_violations();
        assert_eq!(
            (a.hash, a.trace_lines),
            (b.hash, b.trace_lines),
            "seed {seed}, {nodes} nodes diverged"
        );
    }
}
