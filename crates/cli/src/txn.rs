//! `concord txn 2pc|3pc|saga`: one distributed-transaction scenario (or a sweep of seeds) in
//! the simulator, with what clients heard, what participants decided, who blocked, and the
//! checkers' verdict. A violation exits 1 — including 3PC's split under a partition, which is
//! the point of `concord txn 3pc --scenario partition`.

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use concord_txn::saga::scenario::{self as saga_scenario, SagaReport};
use concord_txn::scenario::{self, Faults, ScenarioKind, ScenarioOptions, ScenarioReport};
use concord_txn::threepc::ThreePhaseCommit;
use concord_txn::twopc::TwoPhaseCommit;

use crate::Outcome;

/// The protocols `concord txn` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// Two-phase commit with presumed abort.
    #[value(name = "2pc")]
    TwoPc,
    /// Three-phase commit with the termination protocol.
    #[value(name = "3pc")]
    ThreePc,
    /// An orchestrated saga with compensations.
    Saga,
}

/// Flags of `concord txn`.
#[derive(Debug, Args)]
pub struct TxnArgs {
    /// The protocol: 2pc, 3pc or saga.
    #[arg(value_enum)]
    pub protocol: Protocol,
    /// The scenario: random (faults drawn from the seed), coordinator-crash (the coordinator
    /// fails once every participant voted) or partition (the network splits between the
    /// participants that heard the second phase and those that did not). Sagas run random.
    #[arg(long, default_value = "random")]
    pub scenario: String,
    /// Faults of a random scenario: all, none, or a list of crash, partition, loss.
    #[arg(long, default_value = "all")]
    pub faults: String,
    /// The seed (the first one with --seeds).
    #[arg(long, short, default_value_t = 0)]
    pub seed: u64,
    /// Run this many seeds and report every violation.
    #[arg(long)]
    pub seeds: Option<u64>,
    /// Participants (services, for sagas); the coordinator is one more node.
    #[arg(long, default_value_t = 3)]
    pub participants: usize,
    /// Transactions (or sagas) a random scenario submits.
    #[arg(long, default_value_t = 20)]
    pub transactions: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `concord txn`.
pub fn run(args: &TxnArgs) -> Result<Outcome> {
    let faults = Faults::parse(&args.faults).map_err(anyhow::Error::msg)?;
    let kind = ScenarioKind::parse(&args.scenario, faults).map_err(anyhow::Error::msg)?;
    if args.protocol == Protocol::Saga && !matches!(kind, ScenarioKind::Random(_)) {
        bail!(
            "--scenario {}: sagas run the random scenario only",
            args.scenario
        );
    }
    if args.seeds == Some(0) {
        bail!("--seeds must be at least 1");
    }
    let options = ScenarioOptions {
        seed: args.seed,
        participants: args.participants,
        transactions: args.transactions,
        kind,
    };
    match args.seeds {
        None => one(args, &options, faults),
        Some(count) => many(args, &options, faults, count),
    }
}

fn one(args: &TxnArgs, options: &ScenarioOptions, faults: Faults) -> Result<Outcome> {
    let safe = match args.protocol {
        Protocol::Saga => {
            let report = saga_scenario::run(
                options.seed,
                options.participants,
                options.transactions,
                faults,
            )
            .map_err(anyhow::Error::msg)?;
            print_saga(args, &report)?;
            report.is_safe()
        }
        Protocol::TwoPc | Protocol::ThreePc => {
            let report = match args.protocol {
                Protocol::TwoPc => scenario::run::<TwoPhaseCommit>(options),
                _ => scenario::run::<ThreePhaseCommit>(options),
            }
            .map_err(anyhow::Error::msg)?;
            print_commit(args, &report)?;
            report.is_safe()
        }
    };
    Ok(if safe {
        Outcome::Success
    } else {
        Outcome::Violation
    })
}

fn print_commit(args: &TxnArgs, report: &ScenarioReport) -> Result<()> {
    if args.json {
        outln!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    outln!(
        "{} · scenario {} · seed {}",
        report.protocol,
        report.scenario,
        report.seed
    );
    if !report.triggered {
        outln!("  the scenario's moment never came (try another seed)");
    }
    for fault in &report.faults {
        outln!("  fault    {fault}");
    }
    outln!(
        "  clients  {} submitted, {} told committed, {} told aborted or rejected",
        report.submitted,
        report.replied_commit,
        report.replied_abort
    );
    outln!(
        "  decided  {} committed, {} aborted, {} split (by the participants)",
        report.decided_commit,
        report.decided_abort,
        report.decided_split
    );
    let doubt = |list: &[scenario::InDoubt]| {
        list.iter()
            .map(|d| format!("n{} {}", d.node, d.txn))
            .collect::<Vec<_>>()
            .join(", ")
    };
    outln!(
        "  blocked  {} participant(s) in doubt before the heal and restarts{}",
        report.blocked.len(),
        if report.blocked.is_empty() {
            String::new()
        } else {
            format!(": {}", doubt(&report.blocked))
        }
    );
    outln!(
        "  at end   {} in doubt; money {}",
        report.in_doubt.len(),
        money(report.net_money, 0)
    );
    verdict(report.violation.as_ref(), report.is_safe())
}

fn print_saga(args: &TxnArgs, report: &SagaReport) -> Result<()> {
    if args.json {
        outln!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    outln!("saga · scenario {} · seed {}", report.scenario, report.seed);
    for fault in &report.faults {
        outln!("  fault    {fault}");
    }
    outln!(
        "  sagas    {} submitted: {} completed, {} compensated, {} failed, {} unfinished",
        report.submitted,
        report.completed,
        report.compensated,
        report.failed,
        report.unfinished
    );
    outln!(
        "  money    {}",
        money(report.net_money, report.expected_net_money)
    );
    verdict(report.violation.as_ref(), report.is_safe())
}

fn money(net: i64, expected: i64) -> String {
    if net == expected {
        format!("conserved (net change {net})")
    } else {
        format!("NOT conserved: net change {net}, expected {expected}")
    }
}

fn verdict(violation: Option<&scenario::ViolationReport>, safe: bool) -> Result<()> {
    match violation {
        Some(v) => outln!(
            "  verdict  VIOLATION of {} at {} ms{}: {}",
            v.invariant,
            v.at_ms,
            v.node.map(|n| format!(" on n{n}")).unwrap_or_default(),
            v.detail
        ),
        None if safe => outln!("  verdict  ok: every checker passed"),
        None => outln!("  verdict  VIOLATION: the end state is inconsistent (see above)"),
    }
    Ok(())
}

fn many(args: &TxnArgs, options: &ScenarioOptions, faults: Faults, count: u64) -> Result<Outcome> {
    let seeds = options.seed..options.seed.saturating_add(count);
    let (runs, unsafe_seeds, summary) = match args.protocol {
        Protocol::Saga => {
            let sweep =
                saga_scenario::sweep(seeds, options.participants, options.transactions, faults)
                    .map_err(anyhow::Error::msg)?;
            if args.json {
                outln!("{}", serde_json::to_string_pretty(&sweep)?);
            }
            let unsafe_seeds: Vec<(u64, String)> = sweep
                .violations
                .iter()
                .map(|r| (r.seed, describe(r.violation.as_ref())))
                .collect();
            let summary = format!(
                "{} sagas completed, {} compensated",
                sweep.completed, sweep.compensated
            );
            (sweep.runs, unsafe_seeds, summary)
        }
        Protocol::TwoPc | Protocol::ThreePc => {
            let sweep = match args.protocol {
                Protocol::TwoPc => scenario::sweep::<TwoPhaseCommit>(options, seeds),
                _ => scenario::sweep::<ThreePhaseCommit>(options, seeds),
            }
            .map_err(anyhow::Error::msg)?;
            if args.json {
                outln!("{}", serde_json::to_string_pretty(&sweep)?);
            }
            let unsafe_seeds: Vec<(u64, String)> = sweep
                .violations
                .iter()
                .map(|r| (r.seed, describe(r.violation.as_ref())))
                .collect();
            let summary = format!(
                "{} committed, {} aborted; {} run(s) ended with a participant in doubt",
                sweep.committed, sweep.aborted, sweep.blocked_runs
            );
            (sweep.runs, unsafe_seeds, summary)
        }
    };
    if !args.json {
        outln!("{runs} seeds: {summary}");
        for (seed, what) in &unsafe_seeds {
            outln!(
                "  seed={seed} {what}  replay: concord txn {} --scenario {} --faults {} --seed {seed}",
                protocol_name(args.protocol),
                args.scenario,
                args.faults
            );
        }
        outln!("{} violation(s)", unsafe_seeds.len());
    }
    Ok(if unsafe_seeds.is_empty() {
        Outcome::Success
    } else {
        Outcome::Violation
    })
}

fn describe(violation: Option<&scenario::ViolationReport>) -> String {
    match violation {
        Some(v) => format!("{}: {}", v.invariant, v.detail),
        None => "inconsistent end state".into(),
    }
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::TwoPc => "2pc",
        Protocol::ThreePc => "3pc",
        Protocol::Saga => "saga",
    }
}
