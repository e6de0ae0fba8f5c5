//! Linearizability checker speed.
//!
//! `cargo bench -p concord-check --bench checker` prints one line per workload (best of 3 runs
//! where a run is short), then lets criterion time the Porcupine suite and the 100,000-operation
//! history:
//!
//! * the Porcupine suite: every history of `shared/data/porcupine` checked per key, read and
//!   checked, with its known verdict asserted (set `CONCORD_PORCUPINE_DATA` to move it);
//! * Porcupine's `kv-unpartitioned` histories: its ten-key histories checked as one object;
//! * a generated linearizable history of 100,000 operations on 1,000 keys by 64 processes;
//! * a generated 1,000-operation single-key register history by 10 processes, with a 5 s budget
//!   (the line says whether it finished or came back unknown), as is and with one read
//!   corrupted near its end;
//! * the causal-consistency check on generated unique-value histories of 10,000 and 100,000
//!   operations, and on the smaller one with every fifth read changed to the initial value;
//! * the transactional (Elle-style) check on 100,000 generated serial transactions of each
//!   workload.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use concord_check::generate::{register_history, RegisterWorkload};
use concord_check::{
    check_linearizability, read_edn, read_jepsen_log, EventType, History, Model, RegisterModel,
    StringKvModel, Verdict,
};
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value as Json};

fn data_dir() -> PathBuf {
    std::env::var_os("CONCORD_PORCUPINE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/porcupine")
        })
}

/// `(file, model, expected verdict)` for every line of `verdicts.tsv`.
fn verdicts(dir: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(dir.join("verdicts.tsv")).expect("verdicts.tsv");
    text.lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            (
                fields[0].to_string(),
                fields[1].to_string(),
                fields[2].to_string(),
            )
        })
        .collect()
}

fn verdict_name(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Linearizable => "linearizable",
        Verdict::NotLinearizable(_) => "not-linearizable",
        Verdict::Unknown { .. } => "unknown",
    }
}

/// Reads and checks every per-key Porcupine history; returns how many.
fn porcupine_suite(dir: &Path, cases: &[(String, String, String)]) -> usize {
    let mut checked = 0;
    for (file, model, expected) in cases {
        let reader = BufReader::new(File::open(dir.join(file)).expect("history file"));
        let report = match model.as_str() {
            "cas-register" => {
                check_linearizability(&read_jepsen_log(reader).unwrap(), &RegisterModel, None)
            }
            "kv" => check_linearizability(&read_edn(reader).unwrap(), &StringKvModel, None),
            _ => continue,
        }
        .unwrap();
        assert_eq!(verdict_name(&report.verdict), expected, "{file}");
        checked += 1;
    }
    checked
}

/// Porcupine's key-value map checked as one object: the state is every key's string, and
/// each operation's input is `[key, value]` (see [`unpartitioned`]).
#[derive(Debug, Default)]
struct WholeKvModel;

impl Model for WholeKvModel {
    type State = std::collections::BTreeMap<String, String>;

    fn init(&self) -> Self::State {
        Self::State::new()
    }

    fn step(
        &self,
        state: &Self::State,
        f: &str,
        input: &Json,
        output: Option<&Json>,
    ) -> Option<Self::State> {
        let key = input[0].as_str()?;
        let current = state.get(key).map_or("", String::as_str);
        let next = StringKvModel.step(&current.to_string(), f, &input[1], output)?;
        if next == current {
            return Some(state.clone());
        }
        let mut state = state.clone();
        state.insert(key.to_string(), next);
        Some(state)
    }
}

/// Moves every event's key into its value, so the history is one object.
fn unpartitioned(mut history: History) -> History {
    for event in &mut history.events {
        let key = event.key.take().unwrap_or_default();
        if event.kind == EventType::Invoke {
            event.value = json!([key, event.value]);
        }
    }
    history
}

/// The best wall time of `runs` calls of `work`, and its last result.
#[allow(clippy::disallowed_methods)] // a benchmark reads the clock
fn best_of<T>(runs: usize, mut work: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut result = None;
    for _ in 0..runs {
        let started = Instant::now();
        result = Some(work());
        best = best.min(started.elapsed());
    }
    (best, result.expect("at least one run"))
}

fn seconds(duration: Duration) -> String {
    format!("{:.3} s", duration.as_secs_f64())
}

/// The 100,000-operation history.
fn large_history() -> History {
    register_history(&RegisterWorkload {
        operations: 100_000,
        keys: 1_000,
        processes: 64,
        values: 5,
        seed: 1,
    })
}

/// The 1,000-operation single-key history of 10 processes.
fn contended_history() -> History {
    register_history(&RegisterWorkload {
        operations: 1_000,
        keys: 1,
        processes: 10,
        values: 5,
        seed: 1,
    })
}

/// `history` with its last `ok` read before the final 5 % of events changed to a value no
/// write wrote.
fn corrupt_late_read(mut history: History) -> History {
    let limit = history.events.len() * 95 / 100;
    let read = (0..limit)
        .rev()
        .find(|&i| history.events[i].kind == EventType::Ok && history.events[i].f == "read")
        .expect("the history has a read");
    history.events[read].value = json!(-1);
    history
}

fn headline() {
    let dir = data_dir();
    let cases = verdicts(&dir);

    let (time, checked) = best_of(3, || porcupine_suite(&dir, &cases));
    println!(
        "porcupine suite ({checked} histories, per key, read + check): {}",
        seconds(time)
    );
    // Porcupine's published figure is for its 102 etcd histories alone: time that part, and
    // the per-key kv histories, separately.
    for model in ["cas-register", "kv"] {
        let part: Vec<_> = cases
            .iter()
            .filter(|(_, m, _)| m == model)
            .cloned()
            .collect();
        let (time, checked) = best_of(3, || porcupine_suite(&dir, &part));
        println!(
            "  of which {model} ({checked} histories): {}",
            seconds(time)
        );
    }
    for case in cases.iter().filter(|(_, m, _)| m == "kv") {
        let (time, _) = best_of(3, || porcupine_suite(&dir, std::slice::from_ref(case)));
        println!("    {} (per key): {}", case.0, seconds(time));
    }

    for (file, model, expected) in cases.iter().filter(|(_, m, _)| m == "kv-unpartitioned") {
        let reader = BufReader::new(File::open(dir.join(file)).unwrap());
        let history = unpartitioned(read_edn(reader).unwrap());
        let budget = Some(Duration::from_secs(60));
        let (time, report) = best_of(1, || {
            check_linearizability(&history, &WholeKvModel, budget).unwrap()
        });
        println!(
            "{file} ({model}, {} operations as one object): {} ({}; expected {expected})",
            report.operations,
            seconds(time),
            verdict_name(&report.verdict)
        );
    }

    let (generate, history) = best_of(1, large_history);
    let (time, report) = best_of(3, || {
        check_linearizability(&history, &RegisterModel, None).unwrap()
    });
    println!(
        "generated: 100,000 operations, 1,000 keys, 64 processes: {} ({}, {} parts; generating took {})",
        seconds(time),
        verdict_name(&report.verdict),
        report.parts,
        seconds(generate)
    );

    let budget = Some(Duration::from_secs(5));
    for (name, history) in [
        ("as generated", contended_history()),
        (
            "one late read corrupted",
            corrupt_late_read(contended_history()),
        ),
    ] {
        let (time, report) = best_of(1, || {
            check_linearizability(&history, &RegisterModel, budget).unwrap()
        });
        println!(
            "generated: 1,000 operations, 1 key, 10 processes, {name}, 5 s budget: {} ({})",
            seconds(time),
            verdict_name(&report.verdict)
        );
    }
}

/// The causal check on generated unique-value histories (first pass lines).
fn causal_lines() {
    use concord_check::generate::unique_register_history;
    let generated = |operations, keys, processes| {
        unique_register_history(&RegisterWorkload {
            operations,
            keys,
            processes,
            values: 0,
            seed: 1,
        })
    };
    for (operations, keys, processes) in [(10_000, 100, 16), (100_000, 1_000, 64)] {
        let history = generated(operations, keys, processes);
        let (time, report) = best_of(3, || concord_check::check_causal(&history).unwrap());
        assert_eq!(report.verdict, concord_check::causal::Verdict::Consistent);
        println!(
            "causal: {operations} operations, {keys} keys, {processes} processes: {} (consistent, {} reads checked)",
            seconds(time),
            report.reads_checked
        );
    }
    // Every fifth read changed to the initial value: thousands of violations.
    let mut history = generated(10_000, 100, 16);
    let reads: Vec<usize> = (0..history.events.len())
        .filter(|&i| history.events[i].kind == EventType::Ok && history.events[i].f == "read")
        .collect();
    for (n, &i) in reads.iter().enumerate() {
        if n % 5 == 0 {
            history.events[i].value = Json::Null;
        }
    }
    let (time, report) = best_of(3, || concord_check::check_causal(&history).unwrap());
    assert_eq!(report.verdict, concord_check::causal::Verdict::Violated);
    println!(
        "causal: 10,000 operations, every fifth read changed to the initial value: {} ({:?})",
        seconds(time),
        report.counts
    );
}

/// The transactional check on generated serial histories (first pass lines).
fn txn_lines() {
    use concord_check::txn::{Verdict, Workload};
    for workload in [Workload::ListAppend, Workload::RwRegister] {
        let history = concord_check::generate::serial_txn_history(workload, 11, 100_000);
        let (time, report) = best_of(3, || concord_check::check_txn(&history, workload).unwrap());
        assert_eq!(report.verdict, Verdict::Valid);
        println!(
            "txn: 100,000 serial transactions, {workload:?}: {} (valid)",
            seconds(time)
        );
    }
}

fn checker(c: &mut Criterion) {
    headline();
    causal_lines();
    txn_lines();
    let dir = data_dir();
    let cases = verdicts(&dir);
    let mut group = c.benchmark_group("linearizability");
    group.sample_size(10);
    group.bench_function("porcupine suite", |b| {
        b.iter(|| porcupine_suite(&dir, &cases))
    });
    let history = large_history();
    group.bench_function("100k operations, 1k keys, 64 processes", |b| {
        b.iter(|| check_linearizability(&history, &RegisterModel, None).unwrap())
    });
    group.finish();
}

criterion_group!(benches, checker);
criterion_main!(benches);
