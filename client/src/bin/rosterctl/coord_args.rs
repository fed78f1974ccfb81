//! Command-line syntax of the coordination commands: leases, roles,
//! topology, nodes, groups and `hold`.

use std::collections::HashMap;
use std::time::Duration;

use clap::{Args, Subcommand};
use roster_client::proto::role_spec::Failover;
use roster_client::proto::{GroupMember, RoleSpec};

use crate::duration::parse_duration;

/// Default lease TTL of `role campaign` and `hold`.
pub const DEFAULT_TTL: &str = "10s";

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease with time to live TTL (e.g. 10s); prints its id (hex).
    Grant {
        /// Time to live (2s to 24h).
        #[arg(value_parser = parse_duration)]
        ttl: Duration,
        /// Requested lease id, hex as printed (default: the cluster chooses).
        #[arg(long, value_parser = parse_lease_id)]
        id: Option<i64>,
    },
    /// Keep lease ID alive, printing every state change, until Ctrl-C
    /// (exit 0) or the lease is lost (exit 1).
    #[command(visible_alias = "keep-alive")]
    Keepalive {
        /// Lease id (hex, as printed).
        #[arg(value_parser = parse_lease_id)]
        id: i64,
    },
    /// Revoke lease ID: it ends at once, with its keys and role grants.
    Revoke {
        /// Lease id (hex, as printed).
        #[arg(value_parser = parse_lease_id)]
        id: i64,
    },
    /// List live leases.
    #[command(visible_alias = "ls")]
    List,
    /// Show the granted and remaining TTL of lease ID.
    #[command(visible_alias = "timetolive")]
    Ttl {
        /// Lease id (hex, as printed).
        #[arg(value_parser = parse_lease_id)]
        id: i64,
        /// Also list the attached keys.
        #[arg(long)]
        keys: bool,
    },
}

/// A group and one of its roles.
#[derive(Debug, Args, Clone)]
pub struct RoleRef {
    /// The group (e.g. orders-db).
    pub group: String,
    /// The role (e.g. primary).
    pub role: String,
}

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Grant a lease, campaign for the role, print queue positions and the
    /// election, hold until Ctrl-C, then resign.
    Campaign {
        #[command(flatten)]
        target: RoleRef,
        /// Candidate name (unique per role).
        #[arg(long)]
        candidate: String,
        /// Lease TTL: the role passes on this long after this process stops renewing.
        #[arg(long, value_parser = parse_duration, default_value = DEFAULT_TTL)]
        ttl: Duration,
        /// Higher is preferred; 0 is never elected.
        #[arg(long, default_value_t = 1)]
        priority: u32,
        /// Progress (e.g. a replication position): the most advanced of the
        /// best priority wins.
        #[arg(long, default_value_t = 0)]
        progress: u64,
    },
    /// Withdraw a candidate: release its grant or leave the queue.
    Resign {
        #[command(flatten)]
        target: RoleRef,
        /// Candidate name.
        #[arg(long)]
        candidate: String,
    },
    /// Show the holders and the waiting queue.
    Holders {
        #[command(flatten)]
        target: RoleRef,
        /// Answer from the contacted node's local state (may be stale).
        #[arg(long)]
        serializable: bool,
    },
    /// Print every change of the holders until Ctrl-C.
    Observe {
        #[command(flatten)]
        target: RoleRef,
    },
    /// Hand the role to the waiting candidate --to, without a gap or overlap.
    Switchover {
        #[command(flatten)]
        target: RoleRef,
        /// A waiting, eligible candidate.
        #[arg(long)]
        to: String,
        /// With capacity > 1: the holder to replace (default: the oldest grant).
        #[arg(long)]
        from: Option<String>,
    },
    /// Fill a free slot of a manual-failover role with a waiting candidate.
    Promote {
        #[command(flatten)]
        target: RoleRef,
        /// A waiting, eligible candidate.
        #[arg(long)]
        candidate: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TopologyCommand {
    /// Nodes, groups, role specs and holders at one revision.
    Show {
        /// Answer from the contacted node's local state (may be stale).
        #[arg(long)]
        serializable: bool,
    },
    /// Print lease, role and topology events (and key events under each
    /// --prefix) until Ctrl-C; resumes across failures without gaps.
    Watch {
        /// Start after this revision (default: now).
        #[arg(long, value_name = "REV", default_value_t = 0)]
        after: u64,
        /// Also watch keys under this prefix (repeatable; "" is every key).
        #[arg(long = "prefix", value_name = "P")]
        prefixes: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Register (or replace) a managed node.
    Register {
        /// Node id.
        id: String,
        /// Address of the node (free-form, e.g. 10.0.0.5:5432).
        #[arg(long)]
        address: String,
        /// Zone (data centre, rack).
        #[arg(long, default_value = "")]
        zone: String,
        /// A label key=value (repeatable).
        #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Lease (hex) that keeps the node alive (default: none).
        #[arg(long, value_parser = parse_lease_id)]
        lease: Option<i64>,
    },
    /// Remove a managed node.
    Deregister {
        /// Node id.
        id: String,
    },
}

/// The definition of a group.
#[derive(Debug, Args, Clone)]
pub struct GroupSpec {
    /// Group name.
    pub name: String,
    /// A role: NAME[:capacity=N][:failover=manual|automatic][:handover-delay=5s][:max-lag=N] (repeatable).
    #[arg(long = "role", value_name = "SPEC", value_parser = parse_role_spec, required = true)]
    pub roles: Vec<RoleSpec>,
    /// A member: NODE[:ROLE=PRIORITY,...] (repeatable; priority 0 = never eligible).
    #[arg(long = "member", value_name = "SPEC", value_parser = parse_member_spec)]
    pub members: Vec<GroupMember>,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group (fails if it exists).
    Create {
        #[command(flatten)]
        spec: GroupSpec,
    },
    /// Create or replace a group's roles and members.
    Update {
        #[command(flatten)]
        spec: GroupSpec,
        /// Allow dropping held roles or lowering capacities below the holder
        /// count (those holders are released).
        #[arg(long)]
        force: bool,
    },
    /// Delete a group (its grants and candidacies end).
    Delete {
        /// Group name.
        name: String,
    },
}

/// `rosterctl hold`.
#[derive(Debug, Args)]
#[command(after_help = HOLD_HELP)]
pub struct HoldArgs {
    #[command(flatten)]
    pub target: RoleRef,
    /// Candidate name (unique per role, e.g. the host name).
    #[arg(long)]
    pub candidate: String,
    /// Lease TTL: the role passes on at most this long after this process stops renewing.
    #[arg(long, value_parser = parse_duration, default_value = DEFAULT_TTL)]
    pub ttl: Duration,
    /// Higher is preferred; 0 is never elected.
    #[arg(long, default_value_t = 1)]
    pub priority: u32,
    /// After SIGTERM, wait this long for COMMAND to exit before SIGKILL.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub grace: Duration,
    /// Shell command run (sh -c) when the role is acquired, before COMMAND.
    #[arg(long, value_name = "CMD")]
    pub on_acquire: Option<String>,
    /// Shell command run (sh -c) after the role is lost and COMMAND stopped.
    #[arg(long, value_name = "CMD")]
    pub on_lose: Option<String>,
    /// Exit (status 1) when the role is lost instead of campaigning again.
    #[arg(long)]
    pub once: bool,
    /// The command to run while holding the role, and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

const HOLD_HELP: &str = "\
Grants and keeps a lease, campaigns for the role, and when elected runs
--on-acquire, then COMMAND, both with ROSTER_GROUP, ROSTER_ROLE, ROSTER_TOKEN
(the fencing token) and ROSTER_LEASE (hex) in the environment.

When the role is lost (lease lost by the local deadline, released by the
cluster), COMMAND gets SIGTERM, then SIGKILL after --grace; --on-lose runs;
then it campaigns again (or exits 1 with --once). If COMMAND exits on its
own, the role is resigned and rosterctl exits with COMMAND's status. On
Ctrl-C or SIGTERM, COMMAND is stopped the same way, the role resigned, and
rosterctl exits 0. If rosterctl itself dies, COMMAND gets SIGKILL.

COMMAND may outlive the role by up to --grace: pass ROSTER_TOKEN to the
resources it writes (fencing) to make stale writes fail.

Example (replaces a keepalived failover script):
  rosterctl hold db primary --candidate $(hostname) --ttl 5s \\
      --on-acquire 'ip addr add 10.0.0.100/24 dev eth0' \\
      --on-lose 'ip addr del 10.0.0.100/24 dev eth0' -- ./run-primary.sh";

/// A lease id as printed: hex, optionally with `0x`.
pub fn parse_lease_id(raw: &str) -> Result<i64, String> {
    let s = raw.trim();
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    match i64::from_str_radix(digits, 16) {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(format!(
            "expected a lease id in hex as printed (e.g. 7a3f), got {raw:?}"
        )),
    }
}

/// `key=value`.
pub fn parse_label(raw: &str) -> Result<(String, String), String> {
    let (k, v) = raw
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {raw:?}"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("empty label key in {raw:?}"));
    }
    Ok((k.to_owned(), v.trim().to_owned()))
}

/// `NAME[:capacity=N][:failover=manual|automatic][:handover-delay=5s][:max-lag=N]`.
pub fn parse_role_spec(raw: &str) -> Result<RoleSpec, String> {
    let mut parts = raw.split(':');
    let name = parts.next().unwrap_or_default().trim();
    if name.is_empty() {
        return Err(format!("missing role name in {raw:?} (e.g. primary:capacity=1)"));
    }
    let mut spec = RoleSpec {
        name: name.to_owned(),
        capacity: 1,
        failover: Failover::Automatic as i32,
        handover_delay_ms: 0,
        max_lag: None,
    };
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("expected KEY=VALUE after ':' in {raw:?}, got {part:?}"))?;
        let (key, value) = (key.trim(), value.trim());
        let number = |what: &str| {
            value
                .parse::<u64>()
                .map_err(|_| format!("{what} must be a non-negative integer, got {value:?} in {raw:?}"))
        };
        match key {
            "capacity" => {
                let n = number("capacity")?;
                if !(1..=16).contains(&n) {
                    return Err(format!("capacity must be between 1 and 16, got {n} in {raw:?}"));
                }
                spec.capacity = n as u32;
            }
            "failover" => {
                spec.failover = match value.to_ascii_lowercase().as_str() {
                    "manual" => Failover::Manual as i32,
                    "automatic" | "auto" => Failover::Automatic as i32,
                    _ => {
                        return Err(format!(
                            "failover must be manual or automatic, got {value:?} in {raw:?}"
                        ))
                    }
                }
            }
            "handover-delay" | "handover_delay" => {
                let d = parse_duration(value)?;
                spec.handover_delay_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            }
            "max-lag" | "max_lag" => spec.max_lag = Some(number("max-lag")?),
            other => {
                return Err(format!(
                    "unknown role option {other:?} in {raw:?} (use capacity, failover, handover-delay, max-lag)"
                ))
            }
        }
    }
    Ok(spec)
}

/// `NODE[:ROLE=PRIORITY,...]`.
pub fn parse_member_spec(raw: &str) -> Result<GroupMember, String> {
    let (node, rest) = match raw.split_once(':') {
        Some((node, rest)) => (node.trim(), Some(rest)),
        None => (raw.trim(), None),
    };
    if node.is_empty() {
        return Err(format!("missing node id in {raw:?} (e.g. db-1:primary=100,replica=50)"));
    }
    let mut priorities = HashMap::new();
    for item in rest
        .into_iter()
        .flat_map(|r| r.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (role, prio) = item
            .split_once('=')
            .ok_or_else(|| format!("expected ROLE=PRIORITY in {raw:?}, got {item:?}"))?;
        let role = role.trim();
        if role.is_empty() {
            return Err(format!("empty role name in {raw:?}"));
        }
        let prio: u32 = prio
            .trim()
            .parse()
            .map_err(|_| format!("priority must be a non-negative integer, got {prio:?} in {raw:?}"))?;
        if priorities.insert(role.to_owned(), prio).is_some() {
            return Err(format!("role {role:?} given twice in {raw:?}"));
        }
    }
    Ok(GroupMember {
        node: node.to_owned(),
        priorities,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_specs() {
        let r = parse_role_spec("primary").unwrap();
        assert_eq!((r.name.as_str(), r.capacity, r.failover), ("primary", 1, 0));
        assert_eq!(r.max_lag, None);
        let r = parse_role_spec("replica:capacity=3:failover=manual:handover-delay=5s:max-lag=100").unwrap();
        assert_eq!(r.name, "replica");
        assert_eq!(r.capacity, 3);
        assert_eq!(r.failover, Failover::Manual as i32);
        assert_eq!(r.handover_delay_ms, 5000);
        assert_eq!(r.max_lag, Some(100));
        assert_eq!(parse_role_spec("p:max-lag=0").unwrap().max_lag, Some(0));
        assert_eq!(
            parse_role_spec("p:handover-delay=1m30s").unwrap().handover_delay_ms,
            90_000
        );
        for bad in [
            "",
            ":capacity=1",
            "p:capacity=0",
            "p:capacity=17",
            "p:capacity=x",
            "p:failover=sometimes",
            "p:handover-delay=5",
            "p:max-lag=-1",
            "p:colour=red",
            "p:capacity",
        ] {
            assert!(parse_role_spec(bad).is_err(), "{bad:?}");
        }
        let e = parse_role_spec("p:colour=red").unwrap_err();
        assert!(e.contains("unknown role option"), "{e}");
    }

    #[test]
    fn member_specs() {
        let m = parse_member_spec("db-1:primary=100,replica=50").unwrap();
        assert_eq!(m.node, "db-1");
        assert_eq!(m.priorities.get("primary"), Some(&100));
        assert_eq!(m.priorities.get("replica"), Some(&50));
        let m = parse_member_spec("db-2").unwrap();
        assert!(m.priorities.is_empty());
        let m = parse_member_spec("db-3:primary=0").unwrap();
        assert_eq!(m.priorities.get("primary"), Some(&0));
        for bad in [
            ":primary=1",
            "db:primary",
            "db:primary=x",
            "db:=1",
            "db:p=1,p=2",
            "db:p=-1",
        ] {
            assert!(parse_member_spec(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels_and_lease_ids() {
        assert_eq!(parse_label("zone=eu-1"), Ok(("zone".into(), "eu-1".into())));
        assert_eq!(parse_label("empty="), Ok(("empty".into(), String::new())));
        assert_eq!(parse_label("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("=v").is_err());
        assert_eq!(parse_lease_id("7a3f"), Ok(0x7a3f));
        assert_eq!(parse_lease_id("0x10"), Ok(16));
        assert!(parse_lease_id("0").is_err());
        assert!(parse_lease_id("xyz").is_err());
        assert!(parse_lease_id("-1").is_err());
    }
}
