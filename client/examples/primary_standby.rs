//! A primary/standby agent: campaigns for `primary` of a group, acts as
//! primary while holding it (a fenced heartbeat key, written every second
//! with its fencing token), steps down when the role is lost, and waits as
//! standby otherwise.
//!
//! ```text
//! rosterd dev &
//! rosterctl group create orders-db --role primary
//! cargo run -p roster-client --example primary_standby -- --group orders-db --name a
//! cargo run -p roster-client --example primary_standby -- --group orders-db --name b
//! ```
//! Stop `a` (Ctrl-C resigns at once; kill -9 lets the lease expire) and `b`
//! takes over with a greater token.

use std::time::Duration;

use roster_client::prelude::*;

#[derive(Debug)]
struct Args {
    group: String,
    name: String,
    ttl: Duration,
    endpoints: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        group: "orders-db".into(),
        name: String::new(),
        ttl: Duration::from_secs(5),
        endpoints: roster_client::DEFAULT_ENDPOINTS.iter().map(|s| s.to_string()).collect(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--group" => args.group = value()?,
            "--name" => args.name = value()?,
            "--ttl-secs" => args.ttl = Duration::from_secs(value()?.parse().map_err(|e| format!("--ttl-secs: {e}"))?),
            "--endpoints" => args.endpoints = value()?.split(',').map(str::to_owned).collect(),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.name.is_empty() {
        return Err("usage: primary_standby --group GROUP --name NAME [--ttl-secs N] [--endpoints A,B,C]".into());
    }
    Ok(args)
}

/// Acts as primary until the role is lost. Returns why.
async fn act_as_primary(client: &Client, guard: &RoleGuard, name: &str) -> RoleLost {
    let key = format!("{}/primary/heartbeat", guard.group());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let work = async {
        loop {
            tick.tick().await;
            // Check right before acting, and fence the write: a write made
            // with a stale token never lands.
            if !guard.is_held() {
                return;
            }
            let put = PutRequest {
                key: key.clone().into_bytes(),
                value: format!("{name} token={}", guard.token()).into_bytes(),
                ..Default::default()
            }
            .fenced(guard.fence());
            match client.put_with(put).await {
                Ok(r) => println!(
                    "[{name}] primary: heartbeat at revision {}",
                    r.header.map_or(0, |h| h.revision)
                ),
                Err(e) if e.code() == Code::FailedPrecondition => {
                    println!("[{name}] primary: fenced write refused ({e}); stepping down");
                    return;
                }
                Err(e) => println!("[{name}] primary: heartbeat failed: {e}"),
            }
        }
    };
    tokio::select! {
        lost = guard.lost() => lost,
        () = work => guard.lost_reason().unwrap_or(RoleLost::Released("fenced write refused".into())),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let client = Client::connect(ClientConfig::new(args.endpoints.clone())).await?;
    loop {
        let keeper = client.grant_and_keep(args.ttl, KeeperOptions::default()).await?;
        println!(
            "[{}] lease {:x} granted; campaigning for {}/primary",
            args.name,
            keeper.id(),
            args.group
        );
        let name = args.name.clone();
        let opts = CampaignOptions::default().on_state(move |state| println!("[{name}] standby: {state}"));
        let campaign = client.campaign(&args.group, "primary", &args.name, &keeper, opts);
        let guard = tokio::select! {
            guard = campaign => guard?,
            _ = tokio::signal::ctrl_c() => {
                keeper.revoke().await?;
                return Ok(());
            }
        };
        println!("[{}] PRIMARY (token {})", args.name, guard.token());
        tokio::select! {
            lost = act_as_primary(&client, &guard, &args.name) => {
                println!("[{}] stepped down: {lost}", args.name);
            }
            _ = tokio::signal::ctrl_c() => {
                guard.resign().await?;
                keeper.revoke().await?;
                println!("[{}] resigned", args.name);
                return Ok(());
            }
        }
        // Lost: start over with a fresh lease (the old one may be lost).
        drop(guard);
        let _ = keeper.revoke().await;
    }
}
