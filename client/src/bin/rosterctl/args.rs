//! Command-line syntax.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use roster_client::proto::{Compare, RequestOp};

use crate::coord_args::{GroupCommand, HoldArgs, LeaseCommand, NodeCommand, RoleCommand, TopologyCommand};
use crate::duration::parse_timeout;
use crate::expr::{parse_compare, parse_op};

/// Default `--timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `--timeout` of `member add`, which waits for the learner to catch up.
pub const DEFAULT_MEMBER_ADD_TIMEOUT: Duration = Duration::from_secs(60);

const AFTER_HELP: &str = "\
Requests go to any endpoint; writes are forwarded to the leader. Failed
attempts (node down, no leader, no quorum) are retried on other endpoints with
backoff until --timeout; a retried write is applied at most once.

Exit status: 0 on success, 1 when a request fails (the message starts with
the gRPC code, e.g. 'error: UNAVAILABLE: ...'), 2 on a usage error.";

/// Command-line client for Roster.
#[derive(Debug, Parser)]
#[command(name = "rosterctl", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Cluster endpoints, comma-separated (host:port or http://host:port).
    #[arg(
        long,
        global = true,
        env = "ROSTER_ENDPOINTS",
        value_delimiter = ',',
        value_name = "ADDRS",
        default_value = "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403",
        value_parser = parse_endpoint_arg,
        hide_env_values = true
    )]
    pub endpoints: Vec<String>,

    /// Overall deadline of the request, retries included (e.g. 5s, 500ms,
    /// 1m) [default: 5s; 60s for `member add`].
    #[arg(
        long,
        global = true,
        env = "ROSTER_TIMEOUT",
        value_name = "DURATION",
        value_parser = parse_timeout,
        hide_env_values = true
    )]
    pub timeout: Option<Duration>,

    /// Print one JSON document instead of tables. Keys and values are JSON
    /// strings when UTF-8; otherwise escaped (\xHH), with "key_escaped" or
    /// "value_escaped": true alongside.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show every member: role, Raft state, log and apply progress.
    Status,
    /// List and change cluster membership.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Read and write keys.
    #[command(subcommand)]
    Kv(KvCommand),
    /// Grant, keep alive, revoke and inspect leases.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Campaign for, inspect and hand over roles of groups.
    #[command(subcommand)]
    Role(RoleCommand),
    /// Show or watch the topology (nodes, groups, holders).
    #[command(subcommand)]
    Topology(TopologyCommand),
    /// Register and deregister managed nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Create, update and delete groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Hold a role and run COMMAND while holding it (a failover supervisor).
    Hold(HoldArgs),
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List members.
    #[command(visible_alias = "ls")]
    List {
        /// Answer from the contacted node's local state, without asking the leader.
        #[arg(long)]
        serializable: bool,
    },
    /// Add a node as a learner; returns when it has caught up with the leader.
    Add {
        /// Node id (unique, non-zero).
        #[arg(value_parser = parse_member_id)]
        id: u64,
        /// Address the new node serves at (host:port).
        addr: String,
    },
    /// Make a learner a voter.
    Promote {
        /// Node id.
        #[arg(value_parser = parse_member_id)]
        id: u64,
    },
    /// Remove a voter or learner.
    #[command(visible_alias = "rm")]
    Remove {
        /// Node id.
        #[arg(value_parser = parse_member_id)]
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Set KEY to VALUE.
    Put {
        /// The key.
        key: String,
        /// The value (or use --stdin).
        #[arg(required_unless_present = "stdin")]
        value: Option<String>,
        /// Read the value, as raw bytes, from stdin instead.
        #[arg(long, conflicts_with = "value")]
        stdin: bool,
        /// Also print the previous value.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Read KEY (or every key under it with --prefix).
    Get {
        /// The key, or the prefix with --prefix.
        key: String,
        #[command(flatten)]
        read: ReadOptions,
        /// Treat KEY as a prefix.
        #[arg(long)]
        prefix: bool,
        /// Print only the values, raw, one per line.
        #[arg(long, conflicts_with = "keys_only")]
        print_value_only: bool,
    },
    /// Delete KEY (or every key under it with --prefix).
    #[command(visible_alias = "delete")]
    Del {
        /// The key, or the prefix with --prefix.
        key: String,
        /// Treat KEY as a prefix (an empty prefix is refused).
        #[arg(long)]
        prefix: bool,
        /// Also print the deleted pairs.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Read every key starting with PREFIX (all keys when omitted).
    Range {
        /// The prefix.
        #[arg(default_value = "")]
        prefix: String,
        #[command(flatten)]
        read: ReadOptions,
        /// Print only the number of matching keys.
        #[arg(long, conflicts_with = "keys_only")]
        count_only: bool,
    },
    /// Compare-and-set transaction: if every --if holds, run the --then
    /// operations, else the --else operations, atomically.
    #[command(after_help = TXN_HELP)]
    Txn {
        /// A condition, e.g. 'mod(KEY) = 5' (repeatable; all must hold).
        #[arg(long = "if", value_name = "EXPR", value_parser = parse_compare)]
        compares: Vec<Compare>,
        /// An operation run when the conditions hold (repeatable).
        #[arg(long = "then", value_name = "OP", value_parser = parse_op)]
        success: Vec<RequestOp>,
        /// An operation run otherwise (repeatable).
        #[arg(long = "else", value_name = "OP", value_parser = parse_op)]
        failure: Vec<RequestOp>,
    },
}

/// Options shared by reads.
#[derive(Debug, Args, Clone, Copy)]
pub struct ReadOptions {
    /// Answer from the contacted node's local state (may be stale).
    #[arg(long)]
    pub serializable: bool,
    /// Print keys and metadata without values.
    #[arg(long)]
    pub keys_only: bool,
    /// Return at most N pairs (0: the server's limit).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub limit: u32,
}

const TXN_HELP: &str = "\
Compares (--if):   TARGET(KEY) OP OPERAND
  TARGET   mod (mod_revision), create (create_revision), version, value
  OP       =  !=  >  <
  A missing key has version, create and mod revision 0.
  e.g.     'mod(config) = 42'   'create(lock) = 0'   'value(mode) != active'

Operations (--then, --else):
  put KEY VALUE      get KEY [--prefix]      del KEY [--prefix]

Quote keys or values with spaces using \"...\" or '...' inside the argument;
within quotes \\\\ \\\" \\' \\n \\t \\r \\0 and \\xHH are escapes.

Example:
  rosterctl kv txn --if 'create(lock) = 0' --then 'put lock node-1' --else 'get lock'";

fn parse_endpoint_arg(raw: &str) -> Result<String, String> {
    roster_client::parse_endpoint(raw).map_err(|e| e.message())
}

fn parse_member_id(raw: &str) -> Result<u64, String> {
    match raw.trim().parse::<u64>() {
        Ok(0) => Err("member id must not be 0".into()),
        Ok(id) => Ok(id),
        Err(_) => Err(format!("expected a positive integer, got {raw:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("rosterctl").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options() {
        let cli = parse(&[
            "--endpoints",
            "a:1, http://b:2",
            "--timeout",
            "750ms",
            "status",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.endpoints, vec!["a:1", "b:2"]);
        assert_eq!(cli.timeout, Some(Duration::from_millis(750)));
        assert!(cli.json);
        assert!(matches!(cli.command, Command::Status));
    }

    #[test]
    fn default_endpoints_are_the_dev_cluster() {
        // Only meaningful when the environment does not override them.
        if std::env::var_os("ROSTER_ENDPOINTS").is_some() {
            return;
        }
        let cli = parse(&["status"]).unwrap();
        assert_eq!(
            cli.endpoints,
            vec!["127.0.0.1:7401", "127.0.0.1:7402", "127.0.0.1:7403"]
        );
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["--timeout", "5", "status"][..],
            &["--timeout", "0s", "status"],
            &["--endpoints", "https://a:1", "status"],
            &["--endpoints", "a", "status"],
            &["member", "remove", "0"],
            &["member", "add", "x", "a:1"],
            &["kv", "txn", "--if", "mod(k) = x"],
            &["kv", "txn", "--then", "frob k"],
            &["kv", "get", "k", "--limit", "-1"],
            &["kv", "get", "k", "--keys-only", "--print-value-only"],
            &["kv", "range", "--keys-only", "--count-only"],
            &["bogus"],
        ] {
            let err = parse(args).expect_err(&format!("{args:?}"));
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn kv_commands() {
        let cli = parse(&["kv", "put", "k", "v", "--prev-kv"]).unwrap();
        match cli.command {
            Command::Kv(KvCommand::Put {
                key,
                value,
                stdin,
                prev_kv,
            }) => {
                assert_eq!((key.as_str(), value.as_deref(), prev_kv), ("k", Some("v"), true));
                assert!(!stdin);
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&["kv", "put", "k", "--stdin"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Kv(KvCommand::Put {
                value: None,
                stdin: true,
                ..
            })
        ));
        assert!(parse(&["kv", "put", "k"]).is_err());
        assert!(parse(&["kv", "put", "k", "v", "--stdin"]).is_err());
        let cli = parse(&[
            "kv",
            "get",
            "app/",
            "--prefix",
            "--keys-only",
            "--limit",
            "10",
            "--serializable",
        ])
        .unwrap();
        match cli.command {
            Command::Kv(KvCommand::Get { key, read, prefix, .. }) => {
                assert_eq!(key, "app/");
                assert!(prefix && read.keys_only && read.serializable);
                assert_eq!(read.limit, 10);
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&["kv", "range", "--count-only"]).unwrap();
        match cli.command {
            Command::Kv(KvCommand::Range { prefix, count_only, .. }) => assert!(prefix.is_empty() && count_only),
            other => panic!("{other:?}"),
        }
        let cli = parse(&["kv", "delete", "k", "--prefix", "--prev-kv"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Kv(KvCommand::Del {
                prefix: true,
                prev_kv: true,
                ..
            })
        ));
    }

    #[test]
    fn txn_command() {
        let cli = parse(&[
            "kv",
            "txn",
            "--if",
            "create(lock) = 0",
            "--if",
            "value(mode) != off",
            "--then",
            "put lock me",
            "--then",
            "get lock",
            "--else",
            "get lock",
        ])
        .unwrap();
        match cli.command {
            Command::Kv(KvCommand::Txn {
                compares,
                success,
                failure,
            }) => {
                assert_eq!(compares.len(), 2);
                assert_eq!(success.len(), 2);
                assert_eq!(failure.len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn coordination_commands() {
        use crate::coord_args::*;
        let cli = parse(&["lease", "grant", "10s", "--id", "ff"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Lease(LeaseCommand::Grant { ttl, id: Some(255) }) if ttl == Duration::from_secs(10)
        ));
        assert!(parse(&["lease", "keepalive", "1a"]).is_ok());
        assert!(parse(&["lease", "ttl", "1a", "--keys"]).is_ok());
        let cli = parse(&[
            "role",
            "campaign",
            "db",
            "primary",
            "--candidate",
            "a",
            "--ttl",
            "5s",
            "--priority",
            "3",
        ])
        .unwrap();
        match cli.command {
            Command::Role(RoleCommand::Campaign {
                target,
                candidate,
                ttl,
                priority,
                progress,
            }) => {
                assert_eq!(
                    (target.group.as_str(), target.role.as_str(), candidate.as_str()),
                    ("db", "primary", "a")
                );
                assert_eq!((ttl, priority, progress), (Duration::from_secs(5), 3, 0));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["role", "switchover", "db", "primary", "--to", "b"]).is_ok());
        let cli = parse(&[
            "group",
            "create",
            "db",
            "--role",
            "primary:failover=manual",
            "--role",
            "replica:capacity=2",
            "--member",
            "n1:primary=10",
        ])
        .unwrap();
        match cli.command {
            Command::Group(GroupCommand::Create { spec }) => {
                assert_eq!(spec.roles.len(), 2);
                assert_eq!(spec.members[0].priorities.get("primary"), Some(&10));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["group", "update", "db", "--role", "primary", "--force"]).is_ok());
        let cli = parse(&[
            "node",
            "register",
            "n1",
            "--address",
            "10.0.0.1:5432",
            "--label",
            "rack=r1",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Node(NodeCommand::Register { ref labels, .. }) if labels.len() == 1));
        let cli = parse(&[
            "hold",
            "db",
            "primary",
            "--candidate",
            "a",
            "--grace",
            "2s",
            "--once",
            "--",
            "sh",
            "-c",
            "sleep 1",
        ])
        .unwrap();
        match cli.command {
            Command::Hold(h) => {
                assert_eq!(h.command, vec!["sh", "-c", "sleep 1"]);
                assert_eq!(h.grace, Duration::from_secs(2));
                assert_eq!(h.ttl, Duration::from_secs(10));
                assert!(h.once);
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&["topology", "watch", "--after", "5", "--prefix", "a/", "--prefix", ""]).unwrap();
        assert!(
            matches!(cli.command, Command::Topology(TopologyCommand::Watch { after: 5, ref prefixes }) if prefixes.len() == 2)
        );
        for args in [
            &["lease", "grant", "10"][..],
            &["lease", "revoke", "zz"],
            &["role", "campaign", "db", "primary"],
            &["group", "create", "db"],
            &["group", "create", "db", "--role", "p:capacity=0"],
            &["node", "register", "n1", "--address", "a", "--label", "x"],
            &["hold", "db", "primary", "--candidate", "a"],
            &[
                "hold",
                "db",
                "primary",
                "--candidate",
                "a",
                "--grace",
                "5",
                "--",
                "true",
            ],
        ] {
            let err = parse(args).expect_err(&format!("{args:?}"));
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn member_commands() {
        let cli = parse(&["member", "add", "4", "10.0.0.4:7401"]).unwrap();
        assert!(matches!(cli.command, Command::Member(MemberCommand::Add { id: 4, .. })));
        let cli = parse(&["member", "ls", "--serializable"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Member(MemberCommand::List { serializable: true })
        ));
        assert!(parse(&["member", "promote", "2"]).is_ok());
        assert!(parse(&["member", "rm", "2"]).is_ok());
    }
}
