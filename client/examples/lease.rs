//! Grants a lease, keeps it alive and prints its state changes until Ctrl-C
//! (then revokes it) or until it is lost.
//!
//! ```text
//! cargo run -p roster-client --example lease -- [TTL_SECONDS] [ENDPOINT...]
//! ```
//!
//! Endpoints default to `ROSTER_ENDPOINTS` (comma-separated), then to the
//! local dev cluster.

use std::mem::discriminant;
use std::process::ExitCode;
use std::time::Duration;

use roster_client::{Client, ClientConfig, KeeperOptions, LeaseState, DEFAULT_ENDPOINTS};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let ttl = match args.next().map(|s| s.parse::<u64>()) {
        None => Duration::from_secs(5),
        Some(Ok(secs)) if secs > 0 => Duration::from_secs(secs),
        Some(_) => {
            eprintln!("usage: lease [TTL_SECONDS] [ENDPOINT...]");
            return ExitCode::from(2);
        }
    };
    let mut endpoints: Vec<String> = args.collect();
    if endpoints.is_empty() {
        endpoints = match std::env::var("ROSTER_ENDPOINTS") {
            Ok(list) => list.split(',').map(str::to_owned).collect(),
            Err(_) => DEFAULT_ENDPOINTS.iter().map(|s| s.to_string()).collect(),
        };
    }

    let client = match Client::connect(ClientConfig::new(endpoints)).await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let keeper = match client.grant_and_keep(ttl, KeeperOptions::default()).await {
        Ok(keeper) => keeper,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "lease {} granted with TTL {ttl:?}; Ctrl-C to revoke and exit",
        keeper.id()
    );

    let mut states = keeper.subscribe();
    let mut shown: Option<LeaseState> = None;
    loop {
        let state = states.borrow_and_update().clone();
        // Every acknowledged renewal moves the deadline; print only when
        // the kind of state (or the jeopardy reason) changes.
        let changed = match (&shown, &state) {
            (Some(LeaseState::Jeopardy { reason: a, .. }), LeaseState::Jeopardy { reason: b, .. }) => a != b,
            (Some(old), new) => discriminant(old) != discriminant(new),
            (None, _) => true,
        };
        if changed {
            println!("lease {}: {state}", keeper.id());
            shown = Some(state.clone());
        }
        if state.is_lost() {
            return ExitCode::FAILURE;
        }
        tokio::select! {
            changed = states.changed() => {
                if changed.is_err() {
                    return ExitCode::FAILURE;
                }
            }
            _ = tokio::signal::ctrl_c() => {
                match keeper.revoke().await {
                    Ok(_) => println!("lease {} revoked", keeper.id()),
                    Err(e) => eprintln!("revoke failed (the lease expires after its TTL): {e}"),
                }
                return ExitCode::SUCCESS;
            }
        }
    }
}
