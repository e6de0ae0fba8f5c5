//! Inference for read-write register histories (Elle §4.2, `elle.rw-register`): every value
//! written to a key is unique, so a read names the write it observed; but a read shows only one
//! version, so the version order of a key is known only in part.
//!
//! A transaction's *external* reads are its first read of each key, made before it writes the
//! key; its *external* writes are its last write of each key (its earlier writes are
//! intermediate: nobody else may see them). Versions are the values of external writes.
//!
//! * **wr.** The writer of a value precedes every transaction that externally read it.
//! * **Version order**, from two sources only:
//!   1. the initial state (`null`) precedes every version;
//!   2. a committed transaction that externally read `v` and externally wrote `w` of the same
//!      key puts `v` before `w` (Elle's `wfr-keys?` assumption: a transaction's write follows
//!      its own read).
//!
//!   A key whose known order has a cycle is reported as `incompatible-order` and gets no `ww` or
//!   `rw` edges. Nothing else is assumed (in particular not that real-time order is version
//!   order).
//! * **ww.** For `v` before `w`: the writer of `v` precedes the writer of `w`.
//! * **rw.** For `v` before `w`: whoever read `v` precedes the writer of `w`. From the initial
//!   state only to the writers of versions with no other known predecessor: the others follow
//!   those through `ww` edges, so no cycle is lost.
//!
//! A known precedence that skips versions stands for a path of edges of the same kinds, so the
//! cycles found are classified as the real ones would be. Anomalies found without cycles: G1a,
//! G1b, garbage reads, internal inconsistency (a read that differs from the transaction's own
//! last read or write of the key) and lost updates.

use std::collections::{BTreeMap, HashMap};

use crate::txn::anomaly::AnomalyName;
use crate::txn::graph::{Edge, EdgeKind, Graph, TxnId, Version, Why};
use crate::txn::transaction::{
    self, KeyId, MicroOp, Observed, Status, Transactions, Value, Writer,
};
use crate::txn::{label, Finding, Inference, TxnError};

/// A transaction's external reads and writes, by key.
#[derive(Debug, Default)]
struct External<'a> {
    /// (key, value read; `None` for `null`)
    reads: Vec<(KeyId, Option<&'a Value>)>,
    /// (key, value written)
    writes: Vec<(KeyId, &'a Value)>,
}

fn external(ops: &[MicroOp]) -> External<'_> {
    let mut out = External::default();
    for (position, op) in ops.iter().enumerate() {
        match op {
            MicroOp::Read {
                key,
                observed: Observed::Register(value),
            } => {
                let seen_before = ops[..position].iter().any(|o| match o {
                    MicroOp::Read { key: k, .. } | MicroOp::Write { key: k, .. } => k == key,
                    MicroOp::Append { .. } => false,
                });
                if !seen_before {
                    out.reads.push((*key, value.as_ref()));
                }
            }
            MicroOp::Write { key, value } => {
                let written_later = ops[position + 1..]
                    .iter()
                    .any(|o| matches!(o, MicroOp::Write { key: k, .. } if k == key));
                if !written_later {
                    out.writes.push((*key, value));
                }
            }
            _ => {}
        }
    }
    out
}

/// Infers the dependency edges of an rw-register history and the anomalies visible without
/// cycles.
pub(crate) fn infer(parsed: &Transactions) -> Result<Inference, TxnError> {
    let writers = writers(parsed)?;
    let externals: Vec<External> = parsed.txns.iter().map(|t| external(&t.ops)).collect();
    let mut inference = Inference::default();
    read_anomalies(parsed, &writers, &mut inference.findings);
    internal_anomalies(parsed, &mut inference.findings);
    lost_updates(parsed, &externals, &mut inference.findings);
    edges(parsed, &writers, &externals, &mut inference);
    Ok(inference)
}

fn writers(parsed: &Transactions) -> Result<HashMap<(KeyId, &Value), Writer>, TxnError> {
    transaction::writers(parsed, |op| match op {
        MicroOp::Write { key, value } => Some((*key, value)),
        _ => None,
    })
}

fn read_anomalies(
    parsed: &Transactions,
    writers: &HashMap<(KeyId, &Value), Writer>,
    findings: &mut Vec<Finding>,
) {
    for (id, txn) in parsed.txns.iter().enumerate() {
        if txn.status != Status::Ok {
            continue;
        }
        let id = id as TxnId;
        for op in &txn.ops {
            let MicroOp::Read {
                key,
                observed: Observed::Register(Some(value)),
            } = op
            else {
                continue;
            };
            let name = &parsed.keys[*key as usize];
            let reader = label(parsed, id);
            match writers.get(&(*key, value)) {
                None => findings.push(Finding {
                    name: AnomalyName::GarbageRead,
                    txns: vec![id],
                    explanation: format!(
                        "{reader} read {name} = {value}, which no transaction wrote"
                    ),
                }),
                Some(w) if w.status == Status::Fail => findings.push(Finding {
                    name: AnomalyName::G1a,
                    txns: vec![id, w.txn],
                    explanation: format!(
                        "{reader} read {name} = {value}, written by {}, which failed",
                        label(parsed, w.txn)
                    ),
                }),
                Some(w) if !w.last && w.txn != id => findings.push(Finding {
                    name: AnomalyName::G1b,
                    txns: vec![id, w.txn],
                    explanation: format!(
                        "{reader} read {name} = {value}, which {} wrote before writing {name} again",
                        label(parsed, w.txn)
                    ),
                }),
                Some(_) => {}
            }
        }
    }
}

fn shown(value: Option<&Value>) -> String {
    value.map_or("null".to_string(), Value::to_string)
}

fn internal_anomalies(parsed: &Transactions, findings: &mut Vec<Finding>) {
    for (id, txn) in parsed.txns.iter().enumerate() {
        if txn.status != Status::Ok {
            continue;
        }
        // key -> the value its own last read or write says it holds
        let mut state: Vec<(KeyId, Option<&Value>)> = Vec::new();
        for op in &txn.ops {
            let (key, now) = match op {
                MicroOp::Write { key, value } => (key, Some(value)),
                MicroOp::Read {
                    key,
                    observed: Observed::Register(value),
                } => (key, value.as_ref()),
                _ => continue,
            };
            match state.iter_mut().find(|(k, _)| k == key) {
                None => state.push((*key, now)),
                Some((_, before)) => {
                    if matches!(op, MicroOp::Read { .. }) && *before != now {
                        findings.push(Finding {
                            name: AnomalyName::Internal,
                            txns: vec![id as TxnId],
                            explanation: format!(
                                "{} read {} = {} but its own earlier read or write says {}",
                                label(parsed, id as TxnId),
                                parsed.keys[*key as usize],
                                shown(now),
                                shown(*before)
                            ),
                        });
                    }
                    *before = now;
                }
            }
        }
    }
}

fn lost_updates(parsed: &Transactions, externals: &[External], findings: &mut Vec<Finding>) {
    let mut readers: BTreeMap<(KeyId, Option<&Value>), Vec<TxnId>> = BTreeMap::new();
    for (id, (txn, ext)) in parsed.txns.iter().zip(externals).enumerate() {
        if txn.status != Status::Ok {
            continue;
        }
        for &(key, value) in &ext.reads {
            if ext.writes.iter().any(|&(k, _)| k == key) {
                readers.entry((key, value)).or_default().push(id as TxnId);
            }
        }
    }
    crate::txn::lost_updates(
        parsed,
        readers,
        |key, value| format!("read {key} = {} and then wrote it", shown(value)),
        findings,
    );
}

fn version(value: Option<&Value>) -> Version {
    value.map_or(Version::Initial, |v| Version::Of(v.clone()))
}

/// A known precedence between two versions of a key: `from` (`None`: initial) before `to`.
type Precedence<'a> = (KeyId, Option<&'a Value>, &'a Value);

fn edges(
    parsed: &Transactions,
    writers: &HashMap<(KeyId, &Value), Writer>,
    externals: &[External],
    inference: &mut Inference,
) {
    // The writer of a version: a transaction that did not fail, and whose write was external.
    let writer = |key: KeyId, value: &Value| {
        writers
            .get(&(key, value))
            .filter(|w| w.status != Status::Fail && w.last)
            .map(|w| w.txn)
    };
    let mut readers: HashMap<(KeyId, Option<&Value>), Vec<TxnId>> = HashMap::new();
    let mut follows: Vec<Precedence> = Vec::new();
    // Versions with a known predecessor other than the initial state.
    let mut has_predecessor: HashMap<(KeyId, &Value), ()> = HashMap::new();
    let mut versions: Vec<(KeyId, &Value)> = Vec::new();
    for (id, (txn, ext)) in parsed.txns.iter().zip(externals).enumerate() {
        if txn.status == Status::Fail {
            continue;
        }
        let id = id as TxnId;
        for &(key, value) in &ext.writes {
            versions.push((key, value));
        }
        if txn.status != Status::Ok {
            continue;
        }
        for &(key, read) in &ext.reads {
            readers.entry((key, read)).or_default().push(id);
            if let Some(from) = read.and_then(|v| writer(key, v)) {
                inference.edges.push(Edge {
                    from,
                    to: id,
                    kind: EdgeKind::Wr,
                    why: Some(Why {
                        key,
                        from: version(read),
                        to: version(read),
                    }),
                });
            }
            let (Some(read), Some(&(_, written))) =
                (read, ext.writes.iter().find(|&&(k, _)| k == key))
            else {
                continue;
            };
            follows.push((key, Some(read), written));
            has_predecessor.insert((key, written), ());
        }
    }
    let cyclic = cyclic_keys(parsed, &follows, inference);
    for &(key, value) in &versions {
        if !has_predecessor.contains_key(&(key, value)) {
            follows.push((key, None, value));
        }
    }
    for (key, from, to) in follows {
        if cyclic[key as usize] {
            continue;
        }
        let Some(later) = writer(key, to) else {
            continue;
        };
        let why = || {
            Some(Why {
                key,
                from: version(from),
                to: Version::Of(to.clone()),
            })
        };
        if let Some(earlier) = from.and_then(|v| writer(key, v)) {
            inference.edges.push(Edge {
                from: earlier,
                to: later,
                kind: EdgeKind::Ww,
                why: why(),
            });
        }
        for &reader in readers.get(&(key, from)).into_iter().flatten() {
            if reader != later {
                inference.edges.push(Edge {
                    from: reader,
                    to: later,
                    kind: EdgeKind::Rw,
                    why: why(),
                });
            }
        }
    }
}

/// Keys whose known version order has a cycle, each reported as `incompatible-order`.
fn cyclic_keys(
    parsed: &Transactions,
    follows: &[Precedence],
    inference: &mut Inference,
) -> Vec<bool> {
    let mut ids: HashMap<(KeyId, &Value), u32> = HashMap::new();
    let mut names: Vec<(KeyId, &Value)> = Vec::new();
    let mut edges = Vec::new();
    for &(key, from, to) in follows {
        let Some(from) = from else { continue };
        let mut intern = |value| {
            *ids.entry((key, value)).or_insert_with(|| {
                names.push((key, value));
                (names.len() - 1) as u32
            })
        };
        let (a, b) = (intern(from), intern(to));
        edges.push(Edge {
            from: a,
            to: b,
            kind: EdgeKind::Ww,
            why: None,
        });
    }
    let graph = Graph::new(names.len(), edges);
    let mut cyclic = vec![false; parsed.keys.len()];
    for component in graph.cycles_components() {
        let key = names[component[0] as usize].0;
        if std::mem::replace(&mut cyclic[key as usize], true) {
            continue;
        }
        let values: Vec<String> = component
            .iter()
            .map(|&v| names[v as usize].1.to_string())
            .collect();
        let txns: Vec<TxnId> = parsed
            .txns
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t.status == Status::Ok
                    && t.ops.iter().any(|o| match o {
                        MicroOp::Write { key: k, value } => {
                            *k == key && component.iter().any(|&v| names[v as usize].1 == value)
                        }
                        _ => false,
                    })
            })
            .map(|(id, _)| id as TxnId)
            .collect();
        inference.findings.push(Finding {
            name: AnomalyName::IncompatibleOrder,
            explanation: format!(
                "transactions that read {0} and then wrote it order its versions {1} in a cycle",
                parsed.keys[key as usize],
                values.join(", ")
            ),
            txns,
        });
    }
    cyclic
}
