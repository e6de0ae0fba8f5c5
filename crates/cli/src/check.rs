//! `concord check`: is a recorded history linearizable, sequentially consistent, does it keep
//! the session guarantees, is it causally consistent, or, for transactions, which anomalies does
//! it show?

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use concord_check::{
    causal, check_linearizability, check_txn, convergence, linearizability, picture, read_edn,
    read_jepsen_log, sequential, session, txn, CounterModel, History, Model, QueueModel,
    RegisterModel, SetModel, StringKvModel,
};
use serde::Serialize;

use crate::args::{duration, CheckArgs};
use crate::{render, Outcome};

/// The history formats `concord check` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    JsonLines,
    Edn,
    JepsenLog,
}

/// The consistency models `concord check` decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Consistency {
    Linearizable,
    Sequential,
    Session,
    /// Causal consistency (Bouajjani et al.'s CC).
    Causal,
    /// Causal convergence (their CCv): causal consistency and one arbitration order.
    CausalConvergence,
    /// Convergence of replicas' final states: the input is states, not a history.
    Eventual,
}

impl Consistency {
    fn parse(text: &str) -> Result<Consistency> {
        Ok(match text {
            "linearizable" => Consistency::Linearizable,
            "sequential" => Consistency::Sequential,
            "session" => Consistency::Session,
            "causal" => Consistency::Causal,
            "causal-convergence" => Consistency::CausalConvergence,
            "eventual" => Consistency::Eventual,
            other => bail!(
                "--consistency: unknown consistency '{other}' (linearizable, sequential, session, causal, causal-convergence, eventual)"
            ),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Sequential => "sequential",
            Consistency::Session => "session",
            Consistency::Causal => "causal",
            Consistency::CausalConvergence => "causal-convergence",
            Consistency::Eventual => "eventual",
        }
    }
}

/// The report of whichever checker ran, with its picture when `--html` asked for one.
#[derive(Debug)]
enum Checked {
    Linearizable(linearizability::Report, Option<String>),
    Sequential(sequential::Report, Option<String>),
    Session(session::Report),
    Causal(causal::Report),
}

fn guess_format(first_line: &str) -> Format {
    let line = first_line.trim_start();
    if line.starts_with("{:") {
        Format::Edn
    } else if line.contains("jepsen.util -") {
        Format::JepsenLog
    } else {
        Format::JsonLines
    }
}

fn read(args: &CheckArgs) -> Result<History> {
    let open = || -> Result<BufReader<File>> {
        Ok(BufReader::new(File::open(&args.file).with_context(
            || format!("cannot open {}", args.file.display()),
        )?))
    };
    let format = match args.format.as_deref() {
        Some("jsonl") => Format::JsonLines,
        Some("edn") => Format::Edn,
        Some("jepsen-log") => Format::JepsenLog,
        Some(other) => bail!("--format: unknown format '{other}' (jsonl, edn, jepsen-log)"),
        None => {
            let mut first = String::new();
            open()?.read_line(&mut first)?;
            guess_format(&first)
        }
    };
    let reader = open()?;
    let history = match format {
        Format::JsonLines => History::read_jsonl(reader),
        Format::Edn => read_edn(reader),
        Format::JepsenLog => read_jepsen_log(reader),
    };
    history.with_context(|| format!("{}", args.file.display()))
}

/// Runs the search-based checkers with one model; draws the outcome when `html`.
fn search<M: Model>(
    consistency: Consistency,
    history: &History,
    model: &M,
    budget: Duration,
    html: bool,
) -> Result<Checked> {
    Ok(match consistency {
        Consistency::Linearizable => {
            let report = check_linearizability(history, model, Some(budget))?;
            let page = match html {
                true => Some(picture::linearizability(history, model, &report)?),
                false => None,
            };
            Checked::Linearizable(report, page)
        }
        Consistency::Sequential => {
            let report = sequential::check(history, model, Some(budget))?;
            let page = match html {
                true => picture::sequential(history, model, &report)?,
                false => None,
            };
            Checked::Sequential(report, page)
        }
        Consistency::Session => Checked::Session(session::check(history)?),
        Consistency::Causal | Consistency::CausalConvergence => {
            Checked::Causal(causal::check(history)?)
        }
        Consistency::Eventual => bail!("the eventual check reads replica states, not a history"),
    })
}

/// Rejects unknown or incompatible `--consistency` and `--model` before reading the file.
fn validate(args: &CheckArgs) -> Result<Consistency> {
    let consistency = Consistency::parse(&args.consistency)?;
    let model = args.model.as_str();
    if !MODELS.contains(&model) {
        return Err(unknown_model(model));
    }
    let registers_only = matches!(
        consistency,
        Consistency::Session | Consistency::Causal | Consistency::CausalConvergence
    );
    if registers_only && !matches!(model, "register" | "string-kv") {
        bail!(
            "--model: the {} check works on register and string-kv histories, not '{model}'",
            consistency.name()
        );
    }
    if matches!(
        consistency,
        Consistency::Causal | Consistency::CausalConvergence
    ) && args.html.is_some()
    {
        bail!("--html: the {} check draws no picture", consistency.name());
    }
    Ok(consistency)
}

const MODELS: [&str; 5] = ["register", "string-kv", "set", "queue", "counter"];

fn unknown_model(model: &str) -> anyhow::Error {
    anyhow::anyhow!("--model: unknown model '{model}' ({})", MODELS.join(", "))
}

fn decide(
    consistency: Consistency,
    model: &str,
    history: &History,
    budget: Duration,
    html: bool,
) -> Result<Checked> {
    match model {
        "register" => search(consistency, history, &RegisterModel, budget, html),
        "string-kv" => search(consistency, history, &StringKvModel, budget, html),
        "set" => search(consistency, history, &SetModel, budget, html),
        "queue" => search(consistency, history, &QueueModel, budget, html),
        "counter" => search(consistency, history, &CounterModel, budget, html),
        other => Err(unknown_model(other)),
    }
}

/// The report as JSON, with the consistency model checked beside the verdict.
fn json(consistency: &str, report: &impl Serialize) -> Result<String> {
    let mut document = serde_json::to_value(report)?;
    if let Some(fields) = document.as_object_mut() {
        fields.insert("consistency".into(), consistency.into());
    }
    Ok(serde_json::to_string_pretty(&document)?)
}

/// The workload named by `--txn`.
fn workload(name: &str) -> Result<txn::Workload> {
    Ok(match name {
        "list-append" => txn::Workload::ListAppend,
        "rw-register" => txn::Workload::RwRegister,
        other => bail!("--txn: unknown workload '{other}' (list-append, rw-register)"),
    })
}

/// `concord check --txn WORKLOAD FILE`: reads, finds anomalies and reports.
fn run_txn(args: &CheckArgs, name: &str) -> Result<Outcome> {
    let workload = workload(name)?;
    if args.html.is_some() {
        bail!("--html draws linearizability violations; it does not apply with --txn");
    }
    let history = read(args)?;
    let report =
        check_txn(&history, workload).with_context(|| format!("{}", args.file.display()))?;
    if args.json {
        outln!("{}", json("transactional", &report)?);
    } else {
        outln!("{}: {}", args.file.display(), render::txn(&report));
    }
    Ok(match report.verdict {
        txn::Verdict::Valid => Outcome::Success,
        txn::Verdict::Invalid => Outcome::Violation,
    })
}

/// `--consistency eventual`: reads replicas' final states and compares them.
fn converged(args: &CheckArgs) -> Result<Outcome> {
    if args.html.is_some() {
        bail!("--html: the eventual check has no timeline to draw");
    }
    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let replicas = convergence::read(BufReader::new(file))
        .with_context(|| format!("{}", args.file.display()))?;
    let report = convergence::check(&replicas);
    if args.json {
        outln!("{}", json("eventual", &report)?);
    } else {
        outln!("{}: {}", args.file.display(), render::convergence(&report));
    }
    Ok(match report.verdict {
        convergence::Verdict::Converged => Outcome::Success,
        convergence::Verdict::Diverged => Outcome::Violation,
    })
}

/// Writes the picture to the `--html` file, if there is one to write.
fn write_picture(args: &CheckArgs, page: &Option<String>) -> Result<()> {
    if let (Some(path), Some(page)) = (&args.html, page) {
        std::fs::write(path, page).with_context(|| format!("--html {}", path.display()))?;
    }
    Ok(())
}

/// Reads, checks and reports.
pub fn run(args: &CheckArgs) -> Result<Outcome> {
    if let Some(name) = &args.txn {
        return run_txn(args, name);
    }
    let budget = Duration::from_nanos(duration("budget", &args.budget)?);
    let checks = validate(args)?;
    if checks == Consistency::Eventual {
        return converged(args);
    }
    let consistency = checks.name();
    let history = read(args)?;
    let checked = decide(checks, &args.model, &history, budget, args.html.is_some())
        .with_context(|| format!("{}", args.file.display()))?;
    let file = args.file.display();
    let outcome = match &checked {
        Checked::Linearizable(report, page) => {
            if args.json {
                outln!("{}", json(consistency, report)?);
            } else {
                outln!("{file}: {}", render::verdict(report));
            }
            write_picture(args, page)?;
            linearizability_outcome(&report.verdict)
        }
        Checked::Sequential(report, page) => {
            if args.json {
                outln!("{}", json(consistency, report)?);
            } else {
                outln!("{file}: {}", render::sequential(report));
            }
            write_picture(args, page)?;
            match report.verdict {
                sequential::Verdict::SequentiallyConsistent => Outcome::Success,
                sequential::Verdict::NotSequentiallyConsistent(_) => Outcome::Violation,
                sequential::Verdict::Unknown { .. } => Outcome::Undecided,
            }
        }
        Checked::Session(report) => {
            if args.json {
                outln!("{}", json(consistency, report)?);
            } else {
                outln!("{file}: {}", render::session(report));
            }
            match report.verdict {
                session::Verdict::Consistent => Outcome::Success,
                session::Verdict::Violated => Outcome::Violation,
            }
        }
        Checked::Causal(report) => {
            let convergence = checks == Consistency::CausalConvergence;
            if args.json {
                outln!("{}", json(consistency, report)?);
            } else {
                outln!("{file}: {}", render::causal(report, convergence));
            }
            let verdict = match convergence {
                true => report.convergence,
                false => report.verdict,
            };
            match verdict {
                causal::Verdict::Consistent => Outcome::Success,
                causal::Verdict::Violated => Outcome::Violation,
            }
        }
    };
    Ok(outcome)
}

/// The exit status a linearizability verdict calls for.
pub(crate) fn linearizability_outcome(verdict: &linearizability::Verdict) -> Outcome {
    match verdict {
        linearizability::Verdict::Linearizable => Outcome::Success,
        linearizability::Verdict::NotLinearizable(_) => Outcome::Violation,
        linearizability::Verdict::Unknown { .. } => Outcome::Undecided,
    }
}
