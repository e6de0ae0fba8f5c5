//! Inference for list-append histories (Elle §4.1): every element appended to a key is unique,
//! so a read of a list names the writers of all its elements, in order.
//!
//! * **Version order.** Committed reads of a key must all be prefixes of its longest read
//!   (otherwise: `incompatible-order`); the longest read is the order of the key's versions.
//! * **wr.** A read whose list ends in `e` read the version made by the append of `e`.
//! * **ww.** An append of `e` follows the append just before `e` in the version order; an
//!   append never read follows the last element ever read.
//! * **rw.** Whoever read the version just before an append's (the list ending in the
//!   preceding element, or the empty list) did not see that append.
//!
//! Edges are inferred only when justified: none for a key whose reads are incompatible, and no
//! `ww` or `rw` edge for an append of an unknown-outcome transaction that nobody read (it may
//! not have happened). Anomalies found without cycles: G1a (a committed read includes an element
//! a failed transaction appended), G1b (a read ends in an element that was not its writer's
//! last append to the key), garbage reads (an element nobody appended), duplicate elements,
//! internal inconsistency (a read that contradicts the transaction's own earlier reads and
//! appends of the key, as Elle's `op-int-case`), and lost updates (two committed transactions
//! read the same version of a key before appending to it).

use std::collections::{BTreeMap, HashMap};

use crate::txn::anomaly::AnomalyName;
use crate::txn::graph::{Edge, EdgeKind, TxnId, Version, Why};
use crate::txn::transaction::{
    writers, KeyId, MicroOp, Observed, Status, Transactions, Value, Writer,
};
use crate::txn::{label, list, Finding, Inference, TxnError};

/// Who appended an element.
type Appender = Writer;

/// Infers the dependency edges of a list-append history and the anomalies visible without
/// cycles.
pub(crate) fn infer(parsed: &Transactions) -> Result<Inference, TxnError> {
    let appenders = appenders(parsed)?;
    let mut inference = Inference::default();
    let orders = version_orders(parsed, &mut inference.findings);
    read_anomalies(parsed, &appenders, &mut inference.findings);
    internal_anomalies(parsed, &mut inference.findings);
    lost_updates(parsed, &mut inference.findings);
    edges(parsed, &appenders, &orders, &mut inference.edges);
    Ok(inference)
}

fn appenders(parsed: &Transactions) -> Result<HashMap<(KeyId, &Value), Appender>, TxnError> {
    writers(parsed, |op| match op {
        MicroOp::Append { key, element } => Some((*key, element)),
        _ => None,
    })
}

/// Committed reads: (transaction, key, list).
fn reads(parsed: &Transactions) -> impl Iterator<Item = (TxnId, KeyId, &[Value])> {
    parsed.txns.iter().enumerate().flat_map(|(id, txn)| {
        txn.ops.iter().filter_map(move |op| match op {
            MicroOp::Read {
                key,
                observed: Observed::List(values),
            } if txn.status == Status::Ok => Some((id as TxnId, *key, values.as_slice())),
            _ => None,
        })
    })
}

/// The version order of each key: its longest read, without repeated elements; `None` for a
/// key whose reads are not all prefixes of it (reported as `incompatible-order`).
fn version_orders<'a>(
    parsed: &'a Transactions,
    findings: &mut Vec<Finding>,
) -> Vec<Option<Vec<&'a Value>>> {
    let mut longest: Vec<Option<(TxnId, &[Value])>> = vec![None; parsed.keys.len()];
    for (txn, key, values) in reads(parsed) {
        let slot = &mut longest[key as usize];
        if !slot.is_some_and(|(_, l)| values.len() <= l.len()) {
            *slot = Some((txn, values));
        }
    }
    let mut incompatible = vec![false; parsed.keys.len()];
    for (txn, key, values) in reads(parsed) {
        let Some((writer, long)) = longest[key as usize] else {
            continue;
        };
        if incompatible[key as usize] || long.starts_with(values) {
            continue;
        }
        incompatible[key as usize] = true;
        findings.push(Finding {
            name: AnomalyName::IncompatibleOrder,
            txns: vec![txn, writer],
            explanation: format!(
                "{} read {} = {} and {} read {} = {}: the first is not a prefix of the second",
                label(parsed, txn),
                parsed.keys[key as usize],
                list(values),
                label(parsed, writer),
                parsed.keys[key as usize],
                list(long)
            ),
        });
    }
    longest
        .into_iter()
        .zip(incompatible)
        .map(|(long, incompatible)| {
            if incompatible {
                return None;
            }
            let mut order: Vec<&Value> = Vec::new();
            let mut seen: std::collections::HashSet<&Value> = Default::default();
            for value in long.map_or(&[][..], |(_, l)| l) {
                if seen.insert(value) {
                    order.push(value);
                }
            }
            Some(order)
        })
        .collect()
}

fn read_anomalies(
    parsed: &Transactions,
    appenders: &HashMap<(KeyId, &Value), Appender>,
    findings: &mut Vec<Finding>,
) {
    for (txn, key, values) in reads(parsed) {
        let name = &parsed.keys[key as usize];
        let reader = label(parsed, txn);
        let mut counts: BTreeMap<&Value, usize> = BTreeMap::new();
        for value in values {
            *counts.entry(value).or_default() += 1;
        }
        let repeated: Vec<String> = counts
            .iter()
            .filter(|(_, &n)| n > 1)
            .map(|(v, n)| format!("{v} ({n} times)"))
            .collect();
        if !repeated.is_empty() {
            findings.push(Finding {
                name: AnomalyName::DuplicateElements,
                txns: vec![txn],
                explanation: format!(
                    "{reader} read {name} = {} with repeated elements: {}",
                    list(values),
                    repeated.join(", ")
                ),
            });
        }
        let mut garbage = Vec::new();
        let mut aborted = Vec::new();
        for value in counts.keys() {
            match appenders.get(&(key, value)) {
                None => garbage.push(value.to_string()),
                Some(a) if a.status == Status::Fail => aborted.push((*value, a.txn)),
                Some(_) => {}
            }
        }
        if !garbage.is_empty() {
            findings.push(Finding {
                name: AnomalyName::GarbageRead,
                txns: vec![txn],
                explanation: format!(
                    "{reader} read {name} = {}, with {} that no transaction appended",
                    list(values),
                    garbage.join(", ")
                ),
            });
        }
        for (value, writer) in aborted {
            findings.push(Finding {
                name: AnomalyName::G1a,
                txns: vec![txn, writer],
                explanation: format!(
                    "{reader} read {name} = {}, with {value}, appended by {}, which failed",
                    list(values),
                    label(parsed, writer)
                ),
            });
        }
        if let Some(last) = values.last() {
            if let Some(a) = appenders.get(&(key, last)) {
                if !a.last && a.txn != txn && a.status != Status::Fail {
                    findings.push(Finding {
                        name: AnomalyName::G1b,
                        txns: vec![txn, a.txn],
                        explanation: format!(
                            "{reader} read {name} = {}, ending in {last}, which {} appended before appending to {name} again",
                            list(values),
                            label(parsed, a.txn)
                        ),
                    });
                }
            }
        }
    }
}

/// What a transaction knows of a key from its own earlier micro-operations.
enum Expected<'a> {
    /// The whole list.
    Known(Vec<&'a Value>),
    /// Its own appends, after an unknown prefix.
    EndsWith(Vec<&'a Value>),
}

fn internal_anomalies(parsed: &Transactions, findings: &mut Vec<Finding>) {
    for (id, txn) in parsed.txns.iter().enumerate() {
        if txn.status != Status::Ok {
            continue;
        }
        let mut expected: Vec<(KeyId, Expected)> = Vec::new();
        for op in &txn.ops {
            match op {
                MicroOp::Append { key, element } => {
                    match expected.iter_mut().find(|(k, _)| k == key) {
                        Some((_, Expected::Known(list) | Expected::EndsWith(list))) => {
                            list.push(element)
                        }
                        None => expected.push((*key, Expected::EndsWith(vec![element]))),
                    }
                }
                MicroOp::Read {
                    key,
                    observed: Observed::List(values),
                } => {
                    let slot = expected.iter_mut().find(|(k, _)| k == key);
                    let now = Expected::Known(values.iter().collect());
                    let Some((_, before)) = slot else {
                        expected.push((*key, now));
                        continue;
                    };
                    let (consistent, shown) = match before {
                        Expected::Known(list) => (
                            values.iter().eq(list.iter().copied()),
                            own_list(list, false),
                        ),
                        Expected::EndsWith(list) => (
                            values.len() >= list.len()
                                && values[values.len() - list.len()..]
                                    .iter()
                                    .eq(list.iter().copied()),
                            own_list(list, true),
                        ),
                    };
                    if !consistent {
                        findings.push(Finding {
                            name: AnomalyName::Internal,
                            txns: vec![id as TxnId],
                            explanation: format!(
                                "{} read {} = {} but its own earlier reads and appends imply {shown}",
                                label(parsed, id as TxnId),
                                parsed.keys[*key as usize],
                                list(values)
                            ),
                        });
                    }
                    *before = now;
                }
                _ => {}
            }
        }
    }
}

fn own_list(values: &[&Value], unknown_prefix: bool) -> String {
    let owned: Vec<Value> = values.iter().map(|v| (*v).clone()).collect();
    let text = list(&owned);
    if unknown_prefix {
        format!("[…, {}", &text[1..])
    } else {
        text
    }
}

fn lost_updates(parsed: &Transactions, findings: &mut Vec<Finding>) {
    // (key, version read) -> committed transactions that read it and then appended to the key
    let mut readers: BTreeMap<(KeyId, Option<&Value>), Vec<TxnId>> = BTreeMap::new();
    for (id, txn) in parsed.txns.iter().enumerate() {
        if txn.status != Status::Ok {
            continue;
        }
        for (position, op) in txn.ops.iter().enumerate() {
            let MicroOp::Read {
                key,
                observed: Observed::List(values),
            } = op
            else {
                continue;
            };
            let touched_before = txn.ops[..position].iter().any(|o| op_key(o) == *key);
            let appends_after = txn.ops[position + 1..]
                .iter()
                .any(|o| matches!(o, MicroOp::Append { key: k, .. } if k == key));
            if !touched_before && appends_after {
                readers
                    .entry((*key, values.last()))
                    .or_default()
                    .push(id as TxnId);
            }
        }
    }
    crate::txn::lost_updates(
        parsed,
        readers,
        |key, version| {
            let version = version.map_or("init".to_string(), Value::to_string);
            format!("read {key} at version {version} and then appended to it")
        },
        findings,
    );
}

fn op_key(op: &MicroOp) -> KeyId {
    match op {
        MicroOp::Append { key, .. } | MicroOp::Write { key, .. } | MicroOp::Read { key, .. } => {
            *key
        }
    }
}

fn version(value: Option<&Value>) -> Version {
    value.map_or(Version::Initial, |v| Version::Of(v.clone()))
}

fn edges(
    parsed: &Transactions,
    appenders: &HashMap<(KeyId, &Value), Appender>,
    orders: &[Option<Vec<&Value>>],
    edges: &mut Vec<Edge>,
) {
    let writer = |key: KeyId, value: &Value| {
        appenders
            .get(&(key, value))
            .filter(|a| a.status != Status::Fail)
            .map(|a| a.txn)
    };
    // wr, and who read each version
    let mut readers: HashMap<(KeyId, Option<&Value>), Vec<TxnId>> = HashMap::new();
    for (txn, key, values) in reads(parsed) {
        let last = values.last();
        let entry = readers.entry((key, last)).or_default();
        if entry.last() != Some(&txn) {
            entry.push(txn);
        }
        if let Some(from) = last.and_then(|v| writer(key, v)) {
            edges.push(Edge {
                from,
                to: txn,
                kind: EdgeKind::Wr,
                why: Some(Why {
                    key,
                    from: version(last),
                    to: version(last),
                }),
            });
        }
    }
    let mut position: HashMap<(KeyId, &Value), usize> = HashMap::new();
    for (key, order) in orders.iter().enumerate() {
        for (index, value) in order.iter().flatten().enumerate() {
            position.insert((key as KeyId, value), index);
        }
    }
    // ww and rw
    for (id, txn) in parsed.txns.iter().enumerate() {
        if txn.status == Status::Fail {
            continue;
        }
        let id = id as TxnId;
        for op in &txn.ops {
            let MicroOp::Append { key, element } = op else {
                continue;
            };
            let Some(order) = &orders[*key as usize] else {
                continue;
            };
            let previous: Option<&Value> = match position.get(&(*key, element)) {
                Some(&index) => index.checked_sub(1).map(|i| order[i]),
                // never read: it came after everything read, if it happened at all
                None if txn.status == Status::Ok => order.last().copied(),
                None => continue,
            };
            if let Some(from) = previous.and_then(|v| writer(*key, v)) {
                edges.push(Edge {
                    from,
                    to: id,
                    kind: EdgeKind::Ww,
                    why: Some(Why {
                        key: *key,
                        from: version(previous),
                        to: Version::Of(element.clone()),
                    }),
                });
            }
            for &reader in readers.get(&(*key, previous)).into_iter().flatten() {
                if reader != id {
                    edges.push(Edge {
                        from: reader,
                        to: id,
                        kind: EdgeKind::Rw,
                        why: Some(Why {
                            key: *key,
                            from: version(previous),
                            to: Version::Of(element.clone()),
                        }),
                    });
                }
            }
        }
    }
}
