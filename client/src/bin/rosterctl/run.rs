//! Executes a parsed command against the cluster.

use std::io::{IsTerminal, Read};
use std::time::Duration;

use clap::error::ErrorKind;
use clap::CommandFactory;
use roster_client::proto::{DeleteRequest, MemberListRequest, PutRequest, RangeRequest, TxnRequest};
use roster_client::{Client, ClientConfig};

use crate::args::{Cli, Command, KvCommand, MemberCommand, ReadOptions, DEFAULT_MEMBER_ADD_TIMEOUT, DEFAULT_TIMEOUT};
use crate::output::{self, RangeView};

/// Why a command did not produce output.
#[derive(Debug)]
pub enum Failure {
    /// Wrong usage found after parsing: exit 2 with clap's formatting.
    Usage(clap::Error),
    /// The request failed: `error: CODE: message`, exit 1.
    Client(roster_client::Error),
    /// A local problem (e.g. reading stdin): `error: message`, exit 1.
    Local(String),
    /// Exit with this status, nothing more to print (e.g. `hold` passing
    /// on its command's status).
    Exit(u8),
}

impl From<roster_client::Error> for Failure {
    fn from(e: roster_client::Error) -> Self {
        Failure::Client(e)
    }
}

fn usage(kind: ErrorKind, message: impl std::fmt::Display) -> Failure {
    Failure::Usage(Cli::command().error(kind, message))
}

/// Runs `cli`; returns what to print on stdout.
pub async fn run(cli: Cli) -> Result<Vec<u8>, Failure> {
    let json = cli.json;
    let timeout = cli.timeout.unwrap_or(match &cli.command {
        Command::Member(MemberCommand::Add { .. }) => DEFAULT_MEMBER_ADD_TIMEOUT,
        _ => DEFAULT_TIMEOUT,
    });
    // Check what can be checked before touching the network.
    let stdin_value = match &cli.command {
        Command::Kv(KvCommand::Put { stdin: true, .. }) => Some(read_stdin_value()?),
        Command::Kv(KvCommand::Del { key, prefix: true, .. }) if key.is_empty() => {
            return Err(usage(
                ErrorKind::InvalidValue,
                "refusing to delete with an empty prefix: it matches every key",
            ))
        }
        Command::Kv(KvCommand::Txn {
            compares,
            success,
            failure,
        }) if compares.is_empty() && success.is_empty() && failure.is_empty() => {
            return Err(usage(
                ErrorKind::MissingRequiredArgument,
                "nothing to do: give at least one --if, --then or --else",
            ))
        }
        _ => None,
    };

    let client = connect(cli.endpoints, timeout).await?;
    match cli.command {
        Command::Status => Ok(output::status(&client.status().await?, json)),
        Command::Member(cmd) => member(&client, cmd, json).await,
        Command::Kv(cmd) => kv(&client, cmd, stdin_value, json).await,
        Command::Lease(cmd) => crate::coord_run::lease(&client, cmd, json).await,
        Command::Role(cmd) => crate::coord_run::role(&client, cmd, json).await,
        Command::Topology(cmd) => crate::coord_run::topology(&client, cmd, json).await,
        Command::Node(cmd) => crate::coord_run::node(&client, cmd, json).await,
        Command::Group(cmd) => crate::coord_run::group(&client, cmd, json).await,
        Command::Hold(args) => crate::hold::hold(&client, args).await,
    }
}

async fn connect(endpoints: Vec<String>, timeout: Duration) -> Result<Client, Failure> {
    let config = ClientConfig::new(endpoints)
        .request_timeout(timeout)
        .connect_timeout(timeout.min(roster_client::DEFAULT_CONNECT_TIMEOUT));
    Ok(Client::connect(config).await?)
}

fn read_stdin_value() -> Result<Vec<u8>, Failure> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(usage(
            ErrorKind::MissingRequiredArgument,
            "--stdin: stdin is a terminal; pipe the value in (e.g. rosterctl kv put KEY --stdin < file)",
        ));
    }
    let mut value = Vec::new();
    stdin
        .read_to_end(&mut value)
        .map_err(|e| Failure::Local(format!("reading the value from stdin: {e}")))?;
    Ok(value)
}

async fn member(client: &Client, cmd: MemberCommand, json: bool) -> Result<Vec<u8>, Failure> {
    Ok(match cmd {
        MemberCommand::List { serializable } => output::member_list(
            &client.member_list_with(MemberListRequest { serializable }).await?,
            json,
        ),
        MemberCommand::Add { id, addr } => {
            let r = client.member_add(id, addr.clone()).await?;
            output::member_change(&format!("added member {id} ({addr}) as a learner"), &r.members, json)
        }
        MemberCommand::Promote { id } => {
            let r = client.member_promote(id).await?;
            output::member_change(&format!("promoted member {id} to voter"), &r.members, json)
        }
        MemberCommand::Remove { id } => {
            let r = client.member_remove(id).await?;
            output::member_change(&format!("removed member {id}"), &r.members, json)
        }
    })
}

fn range_request(key: String, prefix: bool, read: ReadOptions, count_only: bool) -> RangeRequest {
    RangeRequest {
        key: key.into_bytes(),
        prefix,
        limit: read.limit,
        serializable: read.serializable,
        keys_only: read.keys_only,
        count_only,
    }
}

async fn kv(client: &Client, cmd: KvCommand, stdin_value: Option<Vec<u8>>, json: bool) -> Result<Vec<u8>, Failure> {
    Ok(match cmd {
        KvCommand::Put {
            key, value, prev_kv, ..
        } => {
            let value = value.map(String::into_bytes).or(stdin_value).unwrap_or_default();
            let r = client
                .put_with(PutRequest {
                    key: key.into_bytes(),
                    value,
                    prev_kv,
                    request_id: None,
                    ..Default::default()
                })
                .await?;
            output::put(&r, prev_kv, json)
        }
        KvCommand::Get {
            key,
            read,
            prefix,
            print_value_only,
        } => {
            let r = client.range(range_request(key, prefix, read, false)).await?;
            let view = RangeView {
                keys_only: read.keys_only,
                count_only: false,
                values_only: print_value_only,
            };
            output::range(&r, view, json)
        }
        KvCommand::Range {
            prefix,
            read,
            count_only,
        } => {
            let r = client.range(range_request(prefix, true, read, count_only)).await?;
            let view = RangeView {
                keys_only: read.keys_only,
                count_only,
                values_only: false,
            };
            output::range(&r, view, json)
        }
        KvCommand::Del { key, prefix, prev_kv } => {
            let r = client
                .delete_with(DeleteRequest {
                    key: key.into_bytes(),
                    prefix,
                    prev_kv,
                    request_id: None,
                    ..Default::default()
                })
                .await?;
            output::delete(&r, prev_kv, json)
        }
        KvCommand::Txn {
            compares,
            success,
            failure,
        } => {
            let r = client
                .txn(TxnRequest {
                    compare: compares,
                    success,
                    failure,
                    request_id: None,
                    ..Default::default()
                })
                .await?;
            output::txn(&r, json)
        }
    })
}
