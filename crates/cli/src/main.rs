//! `concord`: create consensus clusters in the deterministic simulator, break them, watch what
//! happens, and check what clients saw.
//!
//! Exit codes: 0 success; 1 a safety violation, a history that breaks the consistency checked
//! (not linearizable, not sequentially consistent, a broken session guarantee) or a failed
//! expectation; 2 bad input (usage, unreadable files, invalid options); 3 the checker could not
//! decide within its budget.

/// Writes to standard output. A reader that goes away (`concord replay | head`) ends the
/// command quietly: the write fails with `BrokenPipe`, which `main` treats as success.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)?;
    }};
}

/// [`out!`] with a newline.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?;
    }};
}

mod args;
mod check;
mod db;
mod demo;
mod render;
mod simulate;
mod sweep;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

/// What a command concluded, mapped to the documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything held.
    Success,
    /// A violation, a history that breaks the consistency checked, or a failed expectation.
    Violation,
    /// The checker's budget ran out.
    Undecided,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Sim(args) => simulate::run(&args, false),
        Command::Replay(args) => simulate::run(&args, true),
        Command::Sweep(args) => sweep::run(&args),
        Command::Check(args) => check::run(&args),
        Command::Db(args) => db::run(&args),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Violation) => ExitCode::from(1),
        Ok(Outcome::Undecided) => ExitCode::from(3),
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
