//! Human-readable tables.

use std::fmt::Write;

use concord_check::linearizability::{Operation, Report, Verdict};
use concord_check::{causal, convergence, sequential, session, txn};
use concord_core::time::format_duration;
use concord_sim::report::Failure;
use concord_sim::toolkit::{ClusterHealth, PartitionEffects};

/// The health summary and one row per node, at a simulated time.
pub fn health(title: &str, health: &ClusterHealth) -> String {
    health_table(
        &format!("{title} (t = {})", format_duration(health.time)),
        health,
    )
}

/// The health summary and one row per node of a cluster of real processes (no simulated
/// time).
pub fn live_health(title: &str, health: &ClusterHealth) -> String {
    health_table(title, health)
}

fn health_table(title: &str, health: &ClusterHealth) -> String {
    let mut out = String::new();
    let leader = health
        .leader
        .map_or("none".to_string(), |l| format!("node {l}"));
    let followers: Vec<String> = health.followers.iter().map(|f| f.to_string()).collect();
    let _ = writeln!(out, "{title}");
    let _ = writeln!(
        out,
        "  leader: {leader}   followers: [{}]   term: {}   log length: {}   commit index: {}   up: {}/{}",
        followers.join(", "),
        health.term,
        health.log_length,
        health.commit_index,
        health.nodes_up,
        health.nodes.len()
    );
    let _ = writeln!(
        out,
        "  {:>4}  {:<13}  {:>6}  {:>5}  {:>10}  {:>12}  {:>13}  {:>17}",
        "node",
        "role",
        "leader",
        "term",
        "log length",
        "commit index",
        "applied index",
        "match/next (lead)"
    );
    // Replication progress as the leader sees it.
    let progress = health
        .leader
        .and_then(|leader| health.nodes.iter().find(|n| n.id == leader))
        .map(|leader| leader.peers.as_slice())
        .unwrap_or_default();
    for node in &health.nodes {
        let peer = progress.iter().find(|p| p.id == node.id);
        let _ = writeln!(
            out,
            "  {:>4}  {:<13}  {:>6}  {:>5}  {:>10}  {:>12}  {:>13}  {:>17}",
            node.id,
            node.role.name(),
            node.leader.map_or("-".to_string(), |l| l.to_string()),
            node.term,
            node.log_length,
            node.commit_index,
            node.applied_index,
            peer.map_or("-".to_string(), |p| format!(
                "{}/{}",
                p.match_index, p.next_index
            ))
        );
    }
    out
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

/// One row per side of a partition: could it elect, replicate, serve?
pub fn partition_effects(effects: &PartitionEffects) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Partition effects over {} of simulated time",
        format_duration(effects.window_end - effects.window_start)
    );
    let _ = writeln!(
        out,
        "  {:<16}  {:>15}  {:>15}  {:>11}  {:>9}  {:>7}",
        "side", "leader elected", "log replicated", "requests ok", "failed", "unknown"
    );
    for side in &effects.sides {
        let nodes: Vec<String> = side.nodes.iter().map(|n| n.to_string()).collect();
        let _ = writeln!(
            out,
            "  {:<16}  {:>15}  {:>15}  {:>11}  {:>9}  {:>7}",
            format!("[{}]", nodes.join(", ")),
            yes_no(side.leader_elected),
            format!(
                "{} ({}→{})",
                yes_no(side.log_replicated),
                side.commit_index_before,
                side.commit_index_after
            ),
            side.requests_ok,
            side.requests_failed,
            side.requests_unknown
        );
    }
    out
}

/// The checker's verdict in one or a few lines.
pub fn verdict(report: &Report) -> String {
    match &report.verdict {
        Verdict::Linearizable => format!(
            "linearizable ({} operations over {} keys)",
            report.operations, report.parts
        ),
        Verdict::Unknown { reason } => format!("unknown: {reason}"),
        Verdict::NotLinearizable(counterexample) => {
            let mut out = format!(
                "NOT linearizable: key {:?}, {} operations linearized before the search got stuck",
                counterexample.key.as_deref().unwrap_or("(single object)"),
                counterexample.longest_prefix.len()
            );
            for op in &counterexample.stuck {
                let _ = write!(out, "\n  cannot place: {}", operation(op, false));
            }
            out
        }
    }
}

/// One operation: `process 3 write 5 -> 5 (history event 7, time 1200 .. 1900)`, with its key
/// after the function when `with_key`.
fn operation(op: &Operation, with_key: bool) -> String {
    let key = match (&op.key, with_key) {
        (Some(key), true) => format!(" {key}"),
        _ => String::new(),
    };
    format!(
        "process {} {}{key} {} -> {} (history event {}, time {} .. {})",
        op.process,
        op.f,
        op.input,
        op.output
            .as_ref()
            .map_or("?".to_string(), |o| o.to_string()),
        op.index + 1,
        op.call,
        if op.ret == u64::MAX {
            "open".to_string()
        } else {
            op.ret.to_string()
        }
    )
}

/// The sequential consistency verdict in one or a few lines.
pub fn sequential(report: &sequential::Report) -> String {
    match &report.verdict {
        sequential::Verdict::SequentiallyConsistent => format!(
            "sequentially consistent ({} operations of {} processes over {} keys)",
            report.operations, report.processes, report.keys
        ),
        sequential::Verdict::Unknown { reason } => format!("unknown: {reason}"),
        sequential::Verdict::NotSequentiallyConsistent(counterexample) => {
            let mut out = format!(
                "NOT sequentially consistent: {} operations placed in process order before the search got stuck",
                counterexample.longest_prefix.len()
            );
            for op in &counterexample.stuck {
                let _ = write!(out, "\n  cannot place: {}", operation(op, true));
            }
            out
        }
    }
}

/// The session guarantees' verdict, one paragraph per violation.
pub fn session(report: &session::Report) -> String {
    let mut out = match report.verdict {
        session::Verdict::Consistent => "session guarantees hold".to_string(),
        session::Verdict::Violated => format!(
            "session guarantees VIOLATED: {} violations, {} reads of values never written",
            report.violations.len(),
            report.unwritten_reads.len()
        ),
    };
    let _ = write!(
        out,
        " ({} reads checked, {} ambiguous, {} on keys with other operations, {} operations ignored)",
        report.reads_checked,
        report.reads_ambiguous,
        report.reads_unsupported,
        report.operations_ignored
    );
    for violation in &report.violations {
        let _ = write!(
            out,
            "\n  {}: {}\n    observed: {}\n    must not precede: {}",
            violation.guarantee.name(),
            operation(&violation.read, true),
            violation
                .observed
                .as_ref()
                .map_or("the initial value".to_string(), |op| operation(op, true)),
            operation(&violation.required, true)
        );
        for op in &violation.because {
            let _ = write!(out, "\n    because: {}", operation(op, true));
        }
    }
    for op in &report.unwritten_reads {
        let _ = write!(out, "\n  never written: {}", operation(op, true));
    }
    out
}

/// The causal consistency verdict (or, with `convergence`, the causal convergence verdict
/// first), the counts, and one paragraph per violation: its pattern, then its witness one edge
/// a line.
pub fn causal(report: &causal::Report, convergence: bool) -> String {
    let counts = |cc: bool| -> String {
        let found: Vec<String> = report
            .counts
            .iter()
            .filter(|(p, _)| !cc || p.breaks_causal_consistency())
            .map(|(p, n)| format!("{} ({n})", p.name()))
            .collect();
        found.join(", ")
    };
    let cc = match report.verdict {
        causal::Verdict::Consistent => "causally consistent".to_string(),
        causal::Verdict::Violated => format!("causal consistency VIOLATED: {}", counts(true)),
    };
    let ccv = match report.convergence {
        causal::Verdict::Consistent => "causal convergence holds".to_string(),
        causal::Verdict::Violated if report.verdict == causal::Verdict::Violated => {
            "causal convergence VIOLATED".to_string()
        }
        causal::Verdict::Violated => format!("causal convergence VIOLATED: {}", counts(false)),
    };
    let mut out = match convergence {
        true => format!("{ccv}; {cc}"),
        false => format!("{cc}; {ccv}"),
    };
    let _ = write!(
        out,
        " ({} reads checked, {} ambiguous, {} on keys with other operations, {} unknown writes read, {} unknown writes nobody read, {} operations ignored)",
        report.reads_checked,
        report.reads_ambiguous,
        report.reads_unsupported,
        report.unknown_writes_read,
        report.unknown_writes_dropped,
        report.operations_ignored
    );
    for violation in &report.violations {
        let _ = write!(out, "\n  {}:", violation.pattern.name());
        for step in &violation.witness {
            let edge = step
                .via
                .map_or("  ".to_string(), |e| format!("{} ", e.name()));
            let _ = write!(out, "\n    {edge}{}", operation(&step.operation, true));
            if let Some(read) = &step.read {
                let _ = write!(
                    out,
                    "\n         (the previous write is in the causal past of {}, which read this one)",
                    operation(read, true)
                );
            }
        }
    }
    for (pattern, count) in &report.counts {
        let shown = report
            .violations
            .iter()
            .filter(|v| v.pattern == *pattern)
            .count();
        if shown < *count {
            let _ = write!(
                out,
                "\n  ({} more {} not shown)",
                count - shown,
                pattern.name()
            );
        }
    }
    out
}

/// The transactional check's verdict: a summary line, the levels ruled out, then one line per
/// anomaly example (a cycle with the edges that justify it, or what was read).
pub fn txn(report: &txn::Report) -> String {
    let total: usize = report.transactions.values().sum();
    let statuses: Vec<String> = report
        .transactions
        .iter()
        .map(|(status, n)| format!("{n} {}", status.name()))
        .collect();
    let edges: Vec<String> = report
        .edges
        .iter()
        .map(|(kind, n)| format!("{n} {}", kind.name()))
        .collect();
    let counts = format!(
        "{} {} transactions ({}; edges: {})",
        total,
        report.workload.name(),
        statuses.join(", "),
        if edges.is_empty() {
            "none".to_string()
        } else {
            edges.join(", ")
        }
    );
    if report.verdict == txn::Verdict::Valid {
        return format!("no anomalies in {counts}");
    }
    let found: Vec<String> = report
        .counts
        .iter()
        .map(|(name, n)| format!("{} ({n})", name.name()))
        .collect();
    let levels: Vec<&str> = report.ruled_out.iter().map(|l| l.name()).collect();
    let mut out = format!(
        "ANOMALIES {} in {counts}\n  rules out: {}",
        found.join(", "),
        levels.join(", ")
    );
    for anomaly in &report.anomalies {
        let _ = write!(out, "\n  {}: {}", anomaly.name.name(), anomaly.explanation);
    }
    for (name, n) in &report.counts {
        if *n > txn::EXAMPLES {
            let _ = write!(
                out,
                "\n  ({} more {} not shown)",
                n - txn::EXAMPLES,
                name.name()
            );
        }
    }
    out
}

/// A safety violation with its replay command.
pub fn failure(failure: &Failure) -> String {
    let mut out = format!(
        "VIOLATION seed={} step={} t={}: invariant '{}'{}: {}\nreplay: {}",
        failure.seed,
        failure.step,
        format_duration(failure.time),
        failure.invariant,
        failure
            .node
            .map(|n| format!(" on node {n}"))
            .unwrap_or_default(),
        failure.detail,
        failure.replay
    );
    if !failure.trace_tail.is_empty() {
        out.push_str("\nlast steps:");
        for line in &failure.trace_tail {
            out.push_str("\n  ");
            out.push_str(line);
        }
    }
    out
}

/// The verdict of the convergence check, with every differing key and who holds what.
pub fn convergence(report: &convergence::Report) -> String {
    let compared = match report.keys {
        Some(keys) => format!("{} replicas, {keys} keys", report.replicas),
        None => format!("{} replicas, whole states", report.replicas),
    };
    let mut out = match report.verdict {
        convergence::Verdict::Converged => format!("converged ({compared})"),
        convergence::Verdict::Diverged => format!(
            "DIVERGED ({compared}): {} differ",
            match report.keys {
                Some(_) => format!("{} keys", report.differences.len()),
                None => "the states".to_string(),
            }
        ),
    };
    for difference in &report.differences {
        let groups: Vec<String> = difference
            .groups
            .iter()
            .map(|group| {
                let value = group
                    .value
                    .as_ref()
                    .map_or("(missing)".to_string(), |v| v.to_string());
                format!("{} = {value}", group.replicas.join(", "))
            })
            .collect();
        match &difference.key {
            Some(key) => {
                let _ = write!(out, "\n  key {key}: {}", groups.join("; "));
            }
            None => {
                let _ = write!(out, "\n  {}", groups.join("; "));
            }
        }
    }
    out
}
