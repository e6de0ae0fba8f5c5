//! `concord`: create consensus clusters in the deterministic simulator, break them, watch what
//! happens, and check what clients saw; run the same protocols as real processes (`concord node
//! serve`, `concord cluster …`).
//!
//! Exit codes: 0 success; 1 a safety violation, a history that breaks the consistency checked
//! (not linearizable, not sequentially consistent, a broken session guarantee, a bad pattern of
//! causal consistency) or a failed
//! expectation; 2 undecided: the checker could not decide within its budget; 3 bad input
//! (usage errors, unreadable files, invalid options).

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
mod children;
mod cluster;
mod db;
mod db_nemesis;
mod demo;
mod node;
mod render;
mod simulate;
mod sweep;
mod txn;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

/// The database's many small, short-lived allocations (requests, log entries, frames) cost
/// markedly less with mimalloc than with the system allocator. It is built without transparent
/// huge pages (feature `no_thp`): with them, a thread that touches fresh memory stalls while
/// the kernel zeroes 2 MiB; without, put p99 at 64 clients is lower at the same throughput
/// (measured in `docs/benchmarks.md`, "Concord DB beside etcd").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// The exit code of a violation.
const EXIT_VIOLATION: u8 = 1;
/// The exit code of an undecided check.
const EXIT_UNDECIDED: u8 = 2;
/// The exit code of bad input: a usage error, an unreadable file, an invalid option.
const EXIT_BAD_INPUT: u8 = 3;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage(&error),
    };
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Sim(args) => simulate::run(&args, false),
        Command::Replay(args) => simulate::run(&args, true),
        Command::Sweep(args) => sweep::run(&args),
        Command::Check(args) => check::run(&args),
        Command::Db(args) => db::run(&args),
        Command::Node(args) => node::run(&args),
        Command::Cluster(args) => cluster::run(&args),
        Command::Txn(args) => txn::run(&args),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Violation) => ExitCode::from(EXIT_VIOLATION),
        Ok(Outcome::Undecided) => ExitCode::from(EXIT_UNDECIDED),
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

/// Prints what clap has to say: `--help` and `--version` to standard output with success,
/// usage errors to standard error with the bad-input code.
fn usage(error: &clap::Error) -> ExitCode {
    let _ = error.print();
    if error.use_stderr() {
        ExitCode::from(EXIT_BAD_INPUT)
    } else {
        ExitCode::SUCCESS
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
