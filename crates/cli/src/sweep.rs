//! `concord sweep`: many seeds, faults drawn from each.

use std::time::Instant;

use anyhow::Result;
use concord_check::linearizability::Verdict;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use concord_sim::report::SweepReport;

use crate::args::SweepArgs;
use crate::simulate::check_history;
use crate::Outcome;

/// A seed whose history failed the linearizability check.
#[derive(Serialize)]
struct HistoryFailure {
    seed: u64,
    verdict: String,
    replay: String,
}

/// Runs the sweep with a progress bar on standard error.
pub fn run(args: &SweepArgs) -> Result<Outcome> {
    let template = args.run.options(args.first_seed)?;
    let end = args.first_seed.checked_add(args.seeds).ok_or_else(|| {
        anyhow::anyhow!(
            "--first-seed {} + --seeds {} overflows",
            args.first_seed,
            args.seeds
        )
    })?;
    let bar = ProgressBar::new(args.seeds);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} seeds  {msg}  [{elapsed} / ~{eta}]")
            .expect("the template is valid"),
    );
    #[allow(clippy::disallowed_methods)] // the binary may read the wall clock
    let started = Instant::now();
    let mut history_failures = Vec::new();
    let mut undecided = 0u64;
    let mut not_checkable = 0u64;
    let report = concord_sim::sweep_runs(&template, args.first_seed..end, |progress, run| {
        if args.check && !run.history_checkable() {
            not_checkable += 1;
        } else if args.check {
            let failure = match check_history(&run.history) {
                Ok(report) => match report.verdict {
                    Verdict::Linearizable => None,
                    Verdict::Unknown { .. } => {
                        undecided += 1;
                        None
                    }
                    Verdict::NotLinearizable(_) => Some(crate::render::verdict(&report)),
                },
                Err(error) => Some(format!("{error:#}")),
            };
            if let Some(verdict) = failure {
                history_failures.push(HistoryFailure {
                    seed: progress.seed,
                    verdict,
                    replay: run.replay.clone(),
                });
            }
        }
        bar.set_position(progress.done);
        bar.set_message(format!(
            "{} violations",
            progress.failures as usize + history_failures.len()
        ));
    })?;
    bar.finish_and_clear();
    let elapsed = started.elapsed();

    if args.json {
        #[derive(Serialize)]
        struct Output<'a> {
            sweep: &'a SweepReport,
            history_failures: &'a [HistoryFailure],
            histories_undecided: u64,
            histories_not_checkable: u64,
        }
        let output = Output {
            sweep: &report,
            history_failures: &history_failures,
            histories_undecided: undecided,
            histories_not_checkable: not_checkable,
        };
        outln!("{}", serde_json::to_string_pretty(&output)?);
    } else {
        for failure in &report.failures {
            outln!(
                "seed {}: {}\n  replay: {}",
                failure.seed,
                failure.reason,
                failure.replay
            );
        }
        for failure in &history_failures {
            outln!(
                "seed {}: history {}\n  replay: {}",
                failure.seed,
                failure.verdict,
                failure.replay
            );
        }
        outln!(
            "{} seeds of {} in {:.1}s: {} violations{}; {} did not converge; {} events, {:.0} simulated seconds, {} operations ok",
            report.seeds_run,
            report.algorithm,
            elapsed.as_secs_f64(),
            report.failures.len(),
            if args.check {
                format!(
                    ", {} non-linearizable histories, {} undecided{}",
                    history_failures.len(),
                    undecided,
                    if not_checkable > 0 {
                        format!(
                            ", {not_checkable} not checked (a Byzantine client wrote too: safety only)"
                        )
                    } else {
                        String::new()
                    }
                )
            } else {
                String::new()
            },
            report.not_converged.len(),
            report.events,
            report.simulated_time as f64 / 1e9,
            report.operations_ok
        );
    }
    Ok(
        if !report.failures.is_empty() || !history_failures.is_empty() {
            Outcome::Violation
        } else if undecided > 0 {
            Outcome::Undecided
        } else {
            Outcome::Success
        },
    )
}
