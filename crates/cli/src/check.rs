//! `concord check`: is a recorded history linearizable?

use std::fs::File;
use std::io::{BufRead, BufReader};

use anyhow::{bail, Context, Result};
use concord_check::linearizability::Verdict;
use concord_check::{
    check_linearizability, read_edn, read_jepsen_log, History, RegisterModel, StringKvModel,
};

use crate::args::{duration, CheckArgs};
use crate::{render, Outcome};

/// The history formats `concord check` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    JsonLines,
    Edn,
    JepsenLog,
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

/// Reads, checks and reports.
pub fn run(args: &CheckArgs) -> Result<Outcome> {
    let budget = duration("budget", &args.budget)?;
    let history = read(args)?;
    let budget = Some(std::time::Duration::from_nanos(budget));
    let report = match args.model.as_str() {
        "register" => check_linearizability(&history, &RegisterModel, budget),
        "string-kv" => check_linearizability(&history, &StringKvModel, budget),
        other => bail!("--model: unknown model '{other}' (register, string-kv)"),
    }
    .with_context(|| format!("{}", args.file.display()))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!("{}: {}", args.file.display(), render::verdict(&report));
    }
    Ok(match report.verdict {
        Verdict::Linearizable => Outcome::Success,
        Verdict::NotLinearizable(_) => Outcome::Violation,
        Verdict::Unknown { .. } => Outcome::Undecided,
    })
}
