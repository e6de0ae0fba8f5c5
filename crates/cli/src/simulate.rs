//! `concord sim` and `concord replay`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::time::Duration as WallDuration;

use anyhow::{Context, Result};
use concord_check::linearizability::{Report, Verdict};
use concord_check::{check_linearizability, History, RegisterModel};
use concord_core::time::format_duration;
use concord_sim::report::RunReport;
use serde::Serialize;

use crate::args::SimArgs;
use crate::{render, Outcome};

/// How long the built-in linearizability check may take on a simulator history.
pub const CHECK_BUDGET: WallDuration = WallDuration::from_secs(60);

/// A run and the verdict on its history: what `--json` prints.
#[derive(Serialize)]
struct Output<'a> {
    report: &'a RunReport,
    linearizability: &'a Report,
}

/// Checks a simulator history against the key-value register model.
pub fn check_history(history: &History) -> Result<Report> {
    check_linearizability(history, &RegisterModel, Some(CHECK_BUDGET))
        .context("the simulator recorded a malformed history")
}

/// What a run and its verdict mean for the exit code.
pub fn outcome(report: &RunReport, verdict: &Report) -> Outcome {
    match (&report.failure, &verdict.verdict) {
        (Some(_), _) => Outcome::Violation,
        (None, Verdict::NotLinearizable(_)) if report.history_checkable() => Outcome::Violation,
        (None, Verdict::NotLinearizable(_)) => Outcome::Success,
        (None, Verdict::Unknown { .. }) => Outcome::Undecided,
        (None, Verdict::Linearizable) => Outcome::Success,
    }
}

/// Runs one seed; `replay` turns the trace on and prints it step by step.
pub fn run(args: &SimArgs, replay: bool) -> Result<Outcome> {
    let mut options = args.run.options(args.seed)?;
    options.trace = replay || args.trace.is_some();
    let report = concord_sim::run(&options)?;
    let linearizability = check_history(&report.history)?;

    if let Some(path) = &args.history {
        let file = File::create(path).with_context(|| format!("--history {}", path.display()))?;
        let mut writer = BufWriter::new(file);
        report.history.write_jsonl(&mut writer)?;
        writer.flush()?;
    }
    if let Some(path) = &args.trace {
        let mut writer = BufWriter::new(
            File::create(path).with_context(|| format!("--trace {}", path.display()))?,
        );
        for line in &report.trace {
            writeln!(writer, "{line}")?;
        }
        writer.flush()?;
    }

    if args.json {
        let output = Output {
            report: &report,
            linearizability: &linearizability,
        };
        outln!("{}", serde_json::to_string_pretty(&output)?);
    } else {
        if replay {
            for line in &report.trace {
                outln!("{line}");
            }
            outln!();
        }
        out!("{}", summary(&report, &linearizability));
    }
    Ok(outcome(&report, &linearizability))
}

/// The human-readable account of a run.
pub fn summary(report: &RunReport, linearizability: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{} cluster of {} nodes, seed {}, {} simulated; faults: {}\n\n",
        report.algorithm,
        report.nodes,
        report.seed,
        format_duration(report.duration),
        if report.faults.is_empty() {
            "none".to_string()
        } else {
            report.faults.join(", ")
        }
    ));
    out.push_str(&render::health(
        "Health after warm-up",
        &report.health_before,
    ));
    out.push('\n');
    if let Some(effects) = &report.partition {
        out.push_str(&render::partition_effects(effects));
        out.push('\n');
    }
    out.push_str(&render::health("Health at the end", &report.health_after));
    out.push('\n');
    let s = &report.stats;
    out.push_str(&format!(
        "events: {}   messages: {} sent, {} delivered, {} dropped   writes: {} persisted, {} lost   crashes: {} ({} lost checkpoints)   nemesis actions: {}\n",
        s.events, s.messages_sent, s.messages_delivered, s.messages_dropped + s.messages_lost + s.messages_cut,
        s.persists_completed, s.persists_lost, s.crashes, s.checkpoints_lost, s.nemesis_actions
    ));
    let h = &report.history_summary;
    out.push_str(&format!(
        "client operations: {} invoked, {} ok, {} failed, {} unknown\n",
        h.invoke, h.ok, h.fail, h.info
    ));
    out.push_str(&format!(
        "converged after quiescence: {}\n",
        if report.converged { "yes" } else { "no" }
    ));
    if !report.history_checkable() {
        out.push_str(&format!(
            "Byzantine nodes: {}\nhistory (a Byzantine client wrote too, so its verdict is no violation): {}\n",
            report.byzantine.join(", "),
            render::verdict(linearizability)
        ));
    } else {
        if !report.byzantine.is_empty() {
            out.push_str(&format!(
                "Byzantine nodes: {}\n",
                report.byzantine.join(", ")
            ));
        }
        out.push_str(&format!("history: {}\n", render::verdict(linearizability)));
    }
    match &report.failure {
        Some(failure) => out.push_str(&format!("{}\n", render::failure(failure))),
        None => out.push_str("safety: no invariant violated\n"),
    }
    out
}
