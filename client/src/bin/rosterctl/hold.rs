//! `rosterctl hold`: hold a role and supervise a command while holding it.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use roster_client::{CampaignOptions, CampaignState, Client, KeeperOptions, LeaseKeeper, RoleGuard};
use tokio::process::{Child, Command};

use crate::coord_args::HoldArgs;
use crate::coord_run::interrupted;
use crate::run::Failure;

struct Log {
    prefix: String,
}

impl Log {
    fn say(&self, message: &str) {
        eprintln!("{} {message}", self.prefix);
    }
}

/// The environment of the hooks and the command.
fn env(args: &HoldArgs, guard: &RoleGuard) -> Vec<(&'static str, String)> {
    vec![
        ("ROSTER_GROUP", args.target.group.clone()),
        ("ROSTER_ROLE", args.target.role.clone()),
        ("ROSTER_CANDIDATE", args.candidate.clone()),
        ("ROSTER_TOKEN", guard.token().to_string()),
        ("ROSTER_LEASE", format!("{:x}", guard.lease_id())),
    ]
}

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("killed by signal {sig}");
        }
    }
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => "unknown status".into(),
    }
}

/// Runs a hook with `sh -c`, waiting for it.
async fn hook(log: &Log, name: &str, cmd: &str, env: &[(&'static str, String)]) -> bool {
    log.say(&format!("running {name}: {cmd}"));
    let status = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .envs(env.iter().cloned())
        .status()
        .await;
    match status {
        Ok(s) if s.success() => true,
        Ok(s) => {
            log.say(&format!("{name} failed: {}", describe(s)));
            false
        }
        Err(e) => {
            log.say(&format!("{name} could not be started: {e}"));
            false
        }
    }
}

fn spawn(args: &HoldArgs, env: &[(&'static str, String)]) -> std::io::Result<Child> {
    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..])
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    #[cfg(target_os = "linux")]
    {
        // Its own process group, so that a stop reaches its children too;
        // and SIGKILL if rosterctl dies, since nothing would stop it then.
        cmd.process_group(0);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // rosterctl may have died before the prctl took effect.
                if libc::getppid() == 1 {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    cmd.spawn()
}

fn signal_group(child: &Child, signal: i32) {
    if let Some(pid) = child.id() {
        // SAFETY: plain syscall; the group was created for this child.
        unsafe {
            #[cfg(target_os = "linux")]
            libc::kill(-(pid as i32), signal);
            #[cfg(not(target_os = "linux"))]
            libc::kill(pid as i32, signal);
        }
    }
}

/// SIGTERM, then SIGKILL after `grace`; waits for the exit.
async fn stop(log: &Log, child: &mut Child, grace: Duration) {
    if let Ok(Some(status)) = child.try_wait() {
        log.say(&format!("command had already exited ({})", describe(status)));
        return;
    }
    log.say(&format!("stopping command (SIGTERM, SIGKILL after {grace:?})"));
    signal_group(child, libc::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(status)) => log.say(&format!("command stopped ({})", describe(status))),
        _ => {
            log.say("command still running after the grace period: SIGKILL");
            signal_group(child, libc::SIGKILL);
            let _ = child.kill().await;
            log.say("command killed");
        }
    }
    // Reap anything left in the group.
    signal_group(child, libc::SIGKILL);
}

enum Held {
    /// The role was lost; campaign again unless --once.
    Lost,
    /// The command exited on its own with this status.
    Exited(ExitStatus),
    /// Ctrl-C / SIGTERM.
    Interrupted,
    /// A hook or the command could not run: resign and exit 1.
    Failed(String),
}

pub async fn hold(client: &Client, args: HoldArgs) -> Result<Vec<u8>, Failure> {
    let log = Log {
        prefix: format!(
            "rosterctl hold [{}/{} as {}]:",
            args.target.group, args.target.role, args.candidate
        ),
    };
    let interrupt = interrupted();
    tokio::pin!(interrupt);
    let mut keeper: Option<LeaseKeeper> = None;
    loop {
        // A lease, new if the previous one was lost.
        let k = match keeper.take() {
            Some(k) if k.is_held() => k,
            _ => {
                let k = tokio::select! {
                    reason = &mut interrupt => { log.say(&format!("{reason}; exiting")); return Ok(Vec::new()); }
                    k = client.grant_and_keep(args.ttl, KeeperOptions::default()) => k?,
                };
                log.say(&format!("lease {:x} granted (TTL {:?})", k.id(), args.ttl));
                k
            }
        };
        let prefix = log.prefix.clone();
        let opts = CampaignOptions::default()
            .priority(args.priority)
            .on_state(move |s| match s {
                CampaignState::Queued(p) => eprintln!("{prefix} standby: queued at position {p}"),
                CampaignState::Elected(_) => {}
            });
        log.say("campaigning");
        let guard = tokio::select! {
            reason = &mut interrupt => {
                log.say(&format!("{reason} while waiting; withdrawing"));
                let _ = client.resign(&args.target.group, &args.target.role, &args.candidate).await;
                let _ = k.revoke().await;
                return Ok(Vec::new());
            }
            g = client.campaign(&args.target.group, &args.target.role, &args.candidate, &k, opts) => match g {
                Ok(g) => g,
                Err(e) if !k.is_held() && !args.once => {
                    log.say(&format!("campaign ended: {e}; retrying with a new lease"));
                    keeper = Some(k);
                    continue;
                }
                Err(e) => return Err(e.into()),
            },
        };
        log.say(&format!(
            "ACQUIRED role (token {}, lease {:x})",
            guard.token(),
            guard.lease_id()
        ));
        let env = env(&args, &guard);
        let outcome = run_held(&log, &args, &guard, &env, &mut interrupt).await;
        match outcome {
            Held::Exited(status) => {
                log.say(&format!("command exited on its own ({}); resigning", describe(status)));
                if let Err(e) = guard.resign().await {
                    log.say(&format!("resign failed: {e}"));
                }
                let _ = k.revoke().await;
                if let Some(cmd) = &args.on_lose {
                    hook(&log, "--on-lose", cmd, &env).await;
                }
                let code = status.code().unwrap_or(1).clamp(0, 255) as u8;
                return Err(Failure::Exit(code));
            }
            Held::Interrupted => {
                log.say("resigning");
                if let Err(e) = guard.resign().await {
                    log.say(&format!("resign failed: {e}"));
                }
                let _ = k.revoke().await;
                log.say("resigned; exiting");
                return Ok(Vec::new());
            }
            Held::Failed(message) => {
                log.say(&format!("{message}; resigning"));
                let _ = guard.resign().await;
                let _ = k.revoke().await;
                return Err(Failure::Local(message));
            }
            Held::Lost => {
                drop(guard);
                if args.once {
                    let _ = client
                        .resign(&args.target.group, &args.target.role, &args.candidate)
                        .await;
                    let _ = k.revoke().await;
                    return Err(Failure::Local("role lost (--once)".into()));
                }
                keeper = Some(k);
            }
        }
    }
}

async fn run_held(
    log: &Log,
    args: &HoldArgs,
    guard: &RoleGuard,
    env: &[(&'static str, String)],
    interrupt: &mut std::pin::Pin<&mut impl std::future::Future<Output = &'static str>>,
) -> Held {
    if let Some(cmd) = &args.on_acquire {
        if !guard.is_held() || !hook(log, "--on-acquire", cmd, env).await {
            log.say("not starting the command");
            if let Some(cmd) = &args.on_lose {
                hook(log, "--on-lose", cmd, env).await;
            }
            return Held::Failed("--on-acquire failed or the role was lost during it".into());
        }
    }
    if !guard.is_held() {
        log.say("role lost before the command could start");
        return Held::Lost;
    }
    let mut child = match spawn(args, env) {
        Ok(child) => child,
        Err(e) => {
            if let Some(cmd) = &args.on_lose {
                hook(log, "--on-lose", cmd, env).await;
            }
            return Held::Failed(format!("cannot start {:?}: {e}", args.command[0]));
        }
    };
    log.say(&format!("command started (pid {})", child.id().unwrap_or(0)));
    let outcome = tokio::select! {
        lost = guard.lost() => {
            log.say(&format!("LOST role: {lost}"));
            Held::Lost
        }
        status = child.wait() => match status {
            Ok(status) => return Held::Exited(status),
            Err(e) => { log.say(&format!("waiting for the command failed: {e}")); Held::Lost }
        },
        reason = interrupt.as_mut() => {
            log.say(reason);
            Held::Interrupted
        }
    };
    stop(log, &mut child, args.grace).await;
    if let Some(cmd) = &args.on_lose {
        hook(log, "--on-lose", cmd, env).await;
    }
    outcome
}
