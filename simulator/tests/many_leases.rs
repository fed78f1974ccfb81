//! Many leases: the leader's lease keeper then waits up to 10 ms to batch
//! renewals (`linger_for`), a path the default workload (a handful of
//! leases) never takes. The clients' role leases renew in those batches, so
//! every rule the checkers follow must hold with that wait in use, under
//! every kind of fault.

use std::time::Duration;

use roster_simulator::sim::{run, SimConfig};

/// Extra leases per client (3 clients): about 135 renewals a second, more
/// than one per 10 ms, where the wait starts to pay.
const BACKGROUND: usize = 30;

#[test]
fn renewals_batched_with_a_wait_keep_every_rule() {
    for seed in 1..=4 {
        let report = run(&SimConfig {
            seed,
            duration: Duration::from_secs(30),
            background_leases: BACKGROUND,
            keep_trace: true,
            log: Some("roster_server::api::lease_keeper=debug".into()),
            ..SimConfig::default()
        });
        report.assert_no_violations();
        let trace = report.full_trace.expect("kept trace");
        let kept = format!("keeps {BACKGROUND} background leases");
        assert!(
            trace.iter().any(|l| l.contains(&kept)),
            "seed {seed}: no client got its background leases"
        );
        assert!(
            trace
                .iter()
                .any(|l| l.contains("renewal batch wait changed") && l.contains("wait_ms=10")),
            "seed {seed}: the keeper never waited to batch renewals"
        );
    }
}
