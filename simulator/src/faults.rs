//! The kinds of fault a run may inject, each a knob (`--faults`).

use std::collections::BTreeSet;
use std::fmt;

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Crash and restart of one node, losing unsynced writes.
    Crash,
    /// Power loss of every node at once.
    PowerLoss,
    /// Two-sided partitions: one node isolated, or a random split.
    Partition,
    /// A one-way cut between two nodes.
    OneWay,
    /// Two sides joined by one node that reaches both.
    Bridge,
    /// Lost Raft messages.
    Loss,
    /// Raft messages delivered twice.
    Duplicate,
    /// Raft message delay above the default (up to 80 ms).
    Delay,
    /// Every disk slower than the network (fsyncs up to 100 ms) and
    /// stalling now and then, for a while.
    SlowDisk,
    /// A node's messages and connections held for a while.
    Pause,
    /// Membership changes (remove a member, add it back).
    Membership,
    /// A client process killed (and, half the time, the leader after it).
    ClientKill,
    /// A client cut off from every node.
    ClientCut,
    /// A holder pausing between checking its lease and writing.
    HolderPause,
    /// Clock drift changes within ρ (steps only with `--clock-jumps`).
    Clock,
}

impl Fault {
    pub const ALL: [Fault; 15] = [
        Fault::Crash,
        Fault::PowerLoss,
        Fault::Partition,
        Fault::OneWay,
        Fault::Bridge,
        Fault::Loss,
        Fault::Duplicate,
        Fault::Delay,
        Fault::SlowDisk,
        Fault::Pause,
        Fault::Membership,
        Fault::ClientKill,
        Fault::ClientCut,
        Fault::HolderPause,
        Fault::Clock,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Crash => "crash",
            Fault::PowerLoss => "power-loss",
            Fault::Partition => "partition",
            Fault::OneWay => "one-way",
            Fault::Bridge => "bridge",
            Fault::Loss => "loss",
            Fault::Duplicate => "duplicate",
            Fault::Delay => "delay",
            Fault::SlowDisk => "slow-disk",
            Fault::Pause => "pause",
            Fault::Membership => "membership",
            Fault::ClientKill => "client-kill",
            Fault::ClientCut => "client-cut",
            Fault::HolderPause => "holder-pause",
            Fault::Clock => "clock",
        }
    }

    /// Every kind.
    pub fn all() -> BTreeSet<Fault> {
        Fault::ALL.into_iter().collect()
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses `all`, `none`, or a comma-separated list of kinds, each optionally
/// prefixed with `-` to take it away from `all` (e.g. `all,-membership`).
pub fn parse(s: &str) -> Result<BTreeSet<Fault>, String> {
    let mut set = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "all" => set.extend(Fault::ALL),
            "none" => set.clear(),
            _ => {
                let (remove, name) = match part.strip_prefix('-') {
                    Some(n) => (true, n),
                    None => (false, part),
                };
                let Some(kind) = Fault::ALL.into_iter().find(|k| k.name() == name) else {
                    let known: Vec<_> = Fault::ALL.iter().map(|k| k.name()).collect();
                    return Err(format!(
                        "unknown fault '{name}' (known: all, none, {})",
                        known.join(", ")
                    ));
                };
                if remove {
                    set.remove(&kind);
                } else {
                    set.insert(kind);
                }
            }
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists() {
        assert_eq!(parse("all").unwrap(), Fault::all());
        assert!(parse("none").unwrap().is_empty());
        let s = parse("all,-membership,-clock").unwrap();
        assert!(!s.contains(&Fault::Membership) && !s.contains(&Fault::Clock) && s.contains(&Fault::Crash));
        assert_eq!(parse("crash,loss").unwrap().len(), 2);
        assert!(parse("crash,bogus").unwrap_err().contains("bogus"));
    }
}
