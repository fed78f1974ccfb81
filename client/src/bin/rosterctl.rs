//! `rosterctl`: command-line client for Roster.
//!
//! See `rosterctl --help`. Exit status: 0 on success, 1 when a request fails
//! (`error: <CODE>: <message>` on stderr), 2 on a usage error.

// The crate root is `rosterctl.rs`, so its modules need explicit paths.
#[path = "rosterctl/args.rs"]
mod args;
#[path = "rosterctl/coord_args.rs"]
mod coord_args;
#[path = "rosterctl/coord_run.rs"]
mod coord_run;
#[path = "rosterctl/duration.rs"]
mod duration;
#[path = "rosterctl/expr.rs"]
mod expr;
#[path = "rosterctl/hold.rs"]
mod hold;
#[path = "rosterctl/output.rs"]
mod output;
#[path = "rosterctl/run.rs"]
mod run;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::run::Failure;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run::run(cli)) {
        Ok(out) => write_stdout(&out),
        Err(Failure::Usage(e)) => e.exit(),
        Err(Failure::Client(e)) => fail(&e.to_string()),
        Err(Failure::Local(message)) => fail(&message),
        Err(Failure::Exit(code)) => ExitCode::from(code),
    }
}

fn fail(message: &str) -> ExitCode {
    // Nothing sensible is left to do if stderr itself is gone.
    let _ = writeln!(std::io::stderr().lock(), "error: {message}");
    ExitCode::from(1)
}

fn write_stdout(out: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(out).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`rosterctl ... | head`): not our failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(&format!("writing output: {e}")),
    }
}
