//! Shrinking a failing run to a shorter fault schedule that still fails.
//!
//! Faults are numbered in schedule order and each draws from its own
//! random stream, so a run can leave any subset out
//! ([`SimConfig::keep_faults`]) without moving the others. Shrinking is
//! delta debugging over that set: try leaving out halves, then quarters,
//! ... then single faults, keeping every removal after which the same rule
//! still breaks. The result replays with `--seed S --keep-faults LIST`.

use std::collections::BTreeSet;

use crate::sim::{run, SimConfig, SimReport};

/// What shrinking found.
pub struct Shrunk {
    /// The rule the original run broke first, still broken by `report`.
    pub rule: &'static str,
    /// Faults of the original schedule.
    pub original: usize,
    /// The faults kept.
    pub keep: BTreeSet<usize>,
    /// The run with only those faults.
    pub report: SimReport,
    /// Runs tried.
    pub runs: usize,
}

/// Shrinks the failing run `failed` of `cfg` (which must have violated a
/// rule). `progress` is told of every run tried (its fault count and
/// whether it still failed).
pub fn shrink(cfg: &SimConfig, failed: SimReport, mut progress: impl FnMut(usize, bool)) -> Shrunk {
    let rule = failed
        .violations
        .first()
        .map(|v| v.rule)
        .expect("shrinking needs a failing run");
    let original = failed.stats.faults;
    let mut keep: Vec<usize> = match &cfg.keep_faults {
        Some(k) => k.iter().copied().filter(|i| *i < original).collect(),
        None => (0..original).collect(),
    };
    let mut best = failed;
    let mut runs = 0;
    let mut still_fails = |kept: &[usize]| -> Option<SimReport> {
        let r = run(&SimConfig {
            keep_faults: Some(kept.iter().copied().collect()),
            keep_trace: false,
            ..cfg.clone()
        });
        runs += 1;
        let fails = r.violations.iter().any(|v| v.rule == rule);
        progress(kept.len(), fails);
        fails.then_some(r)
    };
    let mut chunk = keep.len().div_ceil(2).max(1);
    while !keep.is_empty() {
        let mut removed_any = false;
        let mut i = 0;
        while i < keep.len() {
            let candidate: Vec<usize> = keep[..i]
                .iter()
                .chain(&keep[(i + chunk).min(keep.len())..])
                .copied()
                .collect();
            match still_fails(&candidate) {
                Some(r) => {
                    keep = candidate;
                    best = r;
                    removed_any = true;
                }
                None => i += chunk,
            }
        }
        if !removed_any {
            if chunk == 1 {
                break;
            }
            chunk = chunk.div_ceil(2);
        }
    }
    Shrunk {
        rule,
        original,
        keep: keep.into_iter().collect(),
        report: best,
        runs,
    }
}

/// `--keep-faults` syntax: indices separated by commas, or `none`.
pub fn format_keep(keep: &BTreeSet<usize>) -> String {
    if keep.is_empty() {
        return "none".into();
    }
    keep.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

/// Parses [`format_keep`]'s output.
pub fn parse_keep(s: &str) -> Result<BTreeSet<usize>, String> {
    let s = s.trim();
    if s == "none" || s.is_empty() {
        return Ok(BTreeSet::new());
    }
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<usize>()
                .map_err(|_| format!("bad fault index '{p}' in '{s}'"))
        })
        .collect()
}
