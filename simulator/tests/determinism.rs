//! The same seed gives the same trace; the checkers pass on a healthy
//! cluster under faults.

use std::time::Duration;

use roster_simulator::{run, SimConfig};

fn config(seed: u64, nodes: usize, secs: u64) -> SimConfig {
    SimConfig {
        seed,
        nodes,
        duration: Duration::from_secs(secs),
        ..SimConfig::default()
    }
}

#[test]
fn same_seed_same_trace_hash() {
    for seed in [1, 2, 3, 4] {
        let a = run(&config(seed, 3, 20));
        let b = run(&config(seed, 3, 20));
        assert!(
            a.violations.is_empty(),
            "seed {seed}: {:?}\n{}",
            a.violations,
            a.tail.join("\n")
        );
        assert_eq!(
            a.hash, b.hash,
            "seed {seed} diverged: {} vs {} lines",
            a.trace_lines, b.trace_lines
        );
        assert_eq!(a.trace_lines, b.trace_lines);
        assert!(a.stats.writes_acked > 0, "seed {seed}: no write was acknowledged");
    }
}

#[test]
fn different_seeds_differ() {
    let a = run(&config(11, 3, 10));
    let b = run(&config(12, 3, 10));
    assert_ne!(a.hash, b.hash);
}

#[test]
fn five_nodes_deterministic_and_safe() {
    let a = run(&config(7, 5, 20));
    let b = run(&config(7, 5, 20));
    assert!(a.violations.is_empty(), "{:?}\n{}", a.violations, a.tail.join("\n"));
    assert_eq!(a.hash, b.hash);
}

#[test]
fn faults_happen_and_cluster_recovers() {
    let r = run(&config(5, 3, 40));
    assert!(r.violations.is_empty(), "{:?}\n{}", r.violations, r.tail.join("\n"));
    assert!(r.stats.crashes + r.stats.partitions > 0, "{:?}", r.stats);
    assert!(r.stats.max_term > 1, "{:?}", r.stats);
    // The workload really ran through the API: roles changed hands, holders
    // wrote with their fence, the watcher saw the history, reads were
    // checked.
    let s = &r.stats;
    assert!(
        s.elections >= 2 && s.fenced_writes > 0 && s.watch_events > 0 && s.reads_ok > 0,
        "{s:?}"
    );
    assert_eq!(s.linearizability_unknown, 0, "{s:?}");
}

/// Runs seeds `1..=max` with `cfg` until one violates a rule; returns the
/// seed and the rules violated.
fn first_caught(max: u64, cfg: impl Fn(u64) -> SimConfig) -> Option<(u64, Vec<&'static str>)> {
    (1..=max).find_map(|seed| {
        let r = run(&cfg(seed));
        (!r.violations.is_empty()).then(|| (seed, r.violations.iter().map(|v| v.rule).collect()))
    })
}

/// The checkers catch a planted durability bug (the disk acknowledges
/// appends, votes and commit markers before syncing them) by a durability
/// rule within 100 seeds (first at seed 71 today; seed 69 is caught earlier
/// by the dead-lease bound, as lost checkpoints keep a lease alive).
#[test]
fn planted_ack_before_sync_is_caught() {
    let durability = |r: &&str| {
        matches!(
            *r,
            "committed-entries-stable" | "acked-writes-durable" | "one-leader-per-term" | "linearizable-kv"
        )
    };
    let caught = (1..=100).find(|&seed| {
        let r = run(&SimConfig {
            bug: Some(roster_simulator::Bug::AckBeforeSync),
            ..config(seed, 3, 60)
        });
        let rules: Vec<&str> = r.violations.iter().map(|v| v.rule).collect();
        rules.iter().any(durability)
    });
    assert!(
        caught.is_some(),
        "ack-before-sync not caught by a durability rule in seeds 1..=100"
    );
}

/// Clients that keep their deadline at the full TTL (no `1 − 2ρ` margin)
/// believe they hold a role after the server gave it to another, under
/// clocks drifting within ρ = 10 %: role exclusivity catches it within 20
/// seeds (first at seed 10 today), and the same seeds pass without the bug.
#[test]
fn planted_no_drift_margin_is_caught() {
    let with_rho = |seed, bug| SimConfig {
        rho: 0.1,
        bug,
        ..config(seed, 3, 60)
    };
    let (seed, rules) = first_caught(20, |seed| with_rho(seed, Some(roster_simulator::Bug::NoDriftMargin)))
        .expect("no-drift-margin not caught in seeds 1..=20");
    assert!(rules.contains(&"role-exclusivity"), "seed {seed}: {rules:?}");
    let clean = run(&with_rho(seed, None));
    assert!(
        clean.violations.is_empty(),
        "seed {seed} fails without the bug: {:?}",
        clean.violations
    );
}

/// Clock jumps break the drift assumption that lease safety rests on; the
/// simulator shows it (an expected failure) within 10 seeds.
#[test]
fn clock_jumps_break_exclusivity() {
    let (seed, rules) = first_caught(10, |seed| SimConfig {
        clock_jumps: true,
        ..config(seed, 3, 60)
    })
    .expect("clock jumps never broke anything in seeds 1..=10");
    assert!(rules.contains(&"role-exclusivity"), "seed {seed}: {rules:?}");
}
