//! Transactional anomalies, Elle-style (Kingsbury & Alvaro, "Elle: Inferring Isolation
//! Anomalies from Experimental Observations", VLDB 2020), named as in Adya's thesis ("Weak
//! Consistency", MIT 1999).
//!
//! A history of transactions over list-append or read-write-register objects is turned into a
//! dependency graph between transactions: write-write (`ww`), write-read (`wr`) and read-write
//! anti-dependency (`rw`) edges inferred from the values read and written (see
//! [`list_append`] and [`rw_register`] for what each workload can infer), plus process and
//! real-time order ([`order`]). Cycles are found in its strongly connected components, and the
//! smallest cycle of each class (G0, G1c, G-single, G2-item, and their `-process` and
//! `-realtime` variants) is reported with the edges that justify it. Anomalies visible without a
//! cycle (G1a, G1b, lost update, incompatible orders, internal inconsistency, garbage reads,
//! duplicate elements) are reported beside them, and each anomaly rules out the isolation
//! levels that proscribe it ([`anomaly`]). The format, the anomalies and the level mapping with
//! its sources are in `docs/checkers.md`.

pub mod anomaly;
pub mod graph;
pub mod list_append;
pub mod order;
pub mod rw_register;
pub mod transaction;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value as Json;

use crate::history::History;
use anomaly::{ruled_out, AnomalyName, IsolationLevel, CYCLE_CLASSES};
use graph::{smallest_cycle, Edge, EdgeKind, Graph, TxnId, Version};
use transaction::{transactions, Status, Transactions, Value};

/// The two transactional workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Transactions of `["append", k, v]` and `["r", k, [v1, v2, ...]]` over lists.
    ListAppend,
    /// Transactions of `["w", k, v]` and `["r", k, v]` over registers.
    RwRegister,
}

impl Workload {
    /// The workload's name: `list-append` or `rw-register`.
    pub fn name(self) -> &'static str {
        match self {
            Workload::ListAppend => "list-append",
            Workload::RwRegister => "rw-register",
        }
    }
}

/// A history the transactional check cannot read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// An event is not a well-formed transaction of the workload.
    #[error("history event {event}: {message}")]
    Malformed {
        /// 1-based position of the event in the history (its line, in a file without blank
        /// lines).
        event: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A value was written (appended) to a key twice: the check needs unique writes.
    #[error("history events {first} and {second}: value {value} is written to key {key} twice (the check needs unique values per key)")]
    DuplicateWrite {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// 1-based position of the first writer's invocation.
        first: usize,
        /// 1-based position of the second writer's invocation.
        second: usize,
    },
}

/// The verdict of the transactional check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// No anomaly found.
    Valid,
    /// At least one anomaly found.
    Invalid,
}

/// A transaction as a report shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TxnRef {
    /// `T` and the 1-based position of its invocation in the history (`T12`).
    pub name: String,
    /// The process that ran it.
    pub process: u64,
    /// ok, info or fail.
    pub status: Status,
    /// Its micro-operations as recorded.
    pub ops: Json,
}

/// One edge of a reported cycle.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    /// The source transaction's name.
    pub from: String,
    /// The target transaction's name.
    pub to: String,
    /// The kind of edge.
    pub kind: EdgeKind,
    /// For data edges: the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Value>,
    /// For `ww`: the source's version; `wr`: the version read; `rw`: the version the source
    /// read (`null`: the initial state).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    /// For `ww` and `rw`: the target's later version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_version: Option<Version>,
}

/// One anomaly found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Anomaly {
    /// Its name.
    pub name: AnomalyName,
    /// One line saying what happened; for a cycle, the cycle
    /// (`T1 --ww x:1→2--> T2 --rw y:init→3--> T1`).
    pub explanation: String,
    /// The transactions involved; for a cycle, in cycle order.
    pub txns: Vec<TxnRef>,
    /// For a cycle, its edges in order; empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cycle: Vec<Step>,
    /// For a cycle, the kinds of edge it uses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub edge_kinds: Vec<EdgeKind>,
}

/// The result of the transactional check.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Valid or invalid.
    pub verdict: Verdict,
    /// The workload checked.
    pub workload: Workload,
    /// Examples of each anomaly found: at most [`EXAMPLES`] of each name, in the order of
    /// [`AnomalyName`].
    pub anomalies: Vec<Anomaly>,
    /// How many of each anomaly were found (cycles: one per strongly connected component).
    pub counts: BTreeMap<AnomalyName, usize>,
    /// The isolation levels the anomalies rule out, weakest first.
    pub ruled_out: Vec<IsolationLevel>,
    /// Transactions by status.
    pub transactions: BTreeMap<Status, usize>,
    /// Edges of the dependency graph by kind.
    pub edges: BTreeMap<EdgeKind, usize>,
}

/// How many examples of each anomaly a report keeps.
pub const EXAMPLES: usize = 16;

/// An anomaly as inference finds it, before it is rendered.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Finding {
    pub name: AnomalyName,
    pub txns: Vec<TxnId>,
    pub explanation: String,
}

/// What a workload's inference found: dependency edges and anomalies without cycles.
#[derive(Debug, Default)]
pub(crate) struct Inference {
    pub edges: Vec<Edge>,
    pub findings: Vec<Finding>,
}

/// Lost updates: two or more committed transactions read the same version of a key and then
/// wrote the key. `readers` groups them by (key, version read: `None` for the initial state);
/// `what` words the finding from the key's name and the version.
pub(crate) fn lost_updates(
    parsed: &Transactions,
    readers: BTreeMap<(transaction::KeyId, Option<&Value>), Vec<TxnId>>,
    what: impl Fn(&str, Option<&Value>) -> String,
    findings: &mut Vec<Finding>,
) {
    for ((key, version), txns) in readers {
        if txns.len() < 2 {
            continue;
        }
        let names: Vec<String> = txns.iter().map(|&t| label(parsed, t)).collect();
        findings.push(Finding {
            name: AnomalyName::LostUpdate,
            explanation: format!(
                "{} all {}",
                names.join(", "),
                what(&parsed.keys[key as usize].to_string(), version)
            ),
            txns,
        });
    }
}

/// `T` and the 1-based position of the transaction's invocation.
pub(crate) fn label(parsed: &Transactions, txn: TxnId) -> String {
    format!("T{}", parsed.txns[txn as usize].index + 1)
}

/// A list for people: at most eight elements, the middle elided.
pub(crate) fn list(values: &[Value]) -> String {
    let show = |values: &[Value]| {
        values
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if values.len() <= 8 {
        format!("[{}]", show(values))
    } else {
        format!(
            "[{}, …, {}]",
            show(&values[..3]),
            show(&values[values.len() - 3..])
        )
    }
}

/// Checks a transactional history for anomalies.
pub fn check(history: &History, workload: Workload) -> Result<Report, TxnError> {
    let parsed = transactions(history, workload)?;
    let Inference {
        mut edges,
        mut findings,
    } = match workload {
        Workload::ListAppend => list_append::infer(&parsed)?,
        Workload::RwRegister => rw_register::infer(&parsed)?,
    };
    order::process_edges(&parsed, &mut edges);
    order::realtime_edges(&parsed, &mut edges);
    let graph = Graph::new(parsed.txns.len(), edges);
    let mut cycles: Vec<(AnomalyName, Vec<&Edge>)> = Vec::new();
    for component in graph.cycles_components() {
        for group in &CYCLE_CLASSES {
            for (name, class) in group {
                if let Some(cycle) = smallest_cycle(&graph, &component, class) {
                    cycles.push((*name, cycle));
                    break;
                }
            }
        }
    }
    let mut counts: BTreeMap<AnomalyName, usize> = BTreeMap::new();
    let mut anomalies: Vec<Anomaly> = Vec::new();
    findings.sort_by_key(|f| f.name);
    cycles.sort_by_key(|(name, _)| *name);
    for finding in findings {
        let count = counts.entry(finding.name).or_default();
        *count += 1;
        if *count <= EXAMPLES {
            anomalies.push(Anomaly {
                name: finding.name,
                explanation: finding.explanation,
                txns: finding.txns.iter().map(|&t| txn_ref(&parsed, t)).collect(),
                cycle: Vec::new(),
                edge_kinds: Vec::new(),
            });
        }
    }
    for (name, cycle) in cycles {
        let count = counts.entry(name).or_default();
        *count += 1;
        if *count <= EXAMPLES {
            anomalies.push(cycle_anomaly(&parsed, name, &cycle));
        }
    }
    anomalies.sort_by_key(|a| a.name);
    let mut transactions: BTreeMap<Status, usize> = BTreeMap::new();
    for txn in &parsed.txns {
        *transactions.entry(txn.status).or_default() += 1;
    }
    let mut edge_counts: BTreeMap<EdgeKind, usize> = BTreeMap::new();
    for edge in graph.edges() {
        *edge_counts.entry(edge.kind).or_default() += 1;
    }
    Ok(Report {
        verdict: if counts.is_empty() {
            Verdict::Valid
        } else {
            Verdict::Invalid
        },
        workload,
        anomalies,
        ruled_out: ruled_out(counts.keys().copied()),
        counts,
        transactions,
        edges: edge_counts,
    })
}

fn txn_ref(parsed: &Transactions, txn: TxnId) -> TxnRef {
    let t = &parsed.txns[txn as usize];
    TxnRef {
        name: label(parsed, txn),
        process: t.process,
        status: t.status,
        ops: t.value.clone(),
    }
}

fn cycle_anomaly(parsed: &Transactions, name: AnomalyName, cycle: &[&Edge]) -> Anomaly {
    let mut explanation = String::new();
    let mut steps = Vec::new();
    let mut kinds: Vec<EdgeKind> = Vec::new();
    for edge in cycle {
        let from = label(parsed, edge.from);
        let to = label(parsed, edge.to);
        let key = edge
            .why
            .as_ref()
            .map(|w| parsed.keys[w.key as usize].clone());
        let because = match (&edge.why, &key) {
            (Some(why), Some(key)) if edge.kind == EdgeKind::Wr => format!(" {key}:{}", why.to),
            (Some(why), Some(key)) => format!(" {key}:{}→{}", why.from, why.to),
            _ => String::new(),
        };
        let _ = write!(explanation, "{from} --{}{because}--> ", edge.kind.name());
        steps.push(Step {
            from,
            to,
            kind: edge.kind,
            key,
            version: edge.why.as_ref().map(|w| w.from.clone()),
            next_version: edge
                .why
                .as_ref()
                .filter(|_| edge.kind != EdgeKind::Wr)
                .map(|w| w.to.clone()),
        });
        if !kinds.contains(&edge.kind) {
            kinds.push(edge.kind);
        }
    }
    if let Some(first) = cycle.first() {
        explanation.push_str(&label(parsed, first.from));
    }
    kinds.sort_unstable();
    Anomaly {
        name,
        explanation,
        txns: cycle.iter().map(|e| txn_ref(parsed, e.from)).collect(),
        cycle: steps,
        edge_kinds: kinds,
    }
}
