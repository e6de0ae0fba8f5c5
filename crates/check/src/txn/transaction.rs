//! Transactions read from a history: each `invoke` of `f: "txn"` paired with its process's
//! completion, its micro-operations parsed and its keys interned.
//!
//! A transaction's value is a list of micro-operations in Jepsen's shape, `[f, key, value]`:
//! `["append", "x", 1]` and `["r", "x", [1, 2]]` for list-append, `["w", "x", 1]` and
//! `["r", "x", 1]` for rw-register. The invocation carries `null` for reads; an `ok` completion
//! carries the values read. A `fail` transaction did not happen (its writes must never be seen);
//! an `info` (or never completed) transaction may or may not have happened, and its reads are
//! unknown.

use std::collections::HashMap;
use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Value as Json;

use crate::history::{EventType, History, Op};
use crate::txn::{TxnError, Workload};

/// A key or a value: integers are kept as integers, strings as strings, any other JSON as its
/// text.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    /// A JSON integer.
    Integer(i64),
    /// A JSON string.
    Text(Box<str>),
    /// Any other JSON value, as JSON text.
    Json(Box<str>),
}

impl Value {
    fn from_json(json: &Json) -> Value {
        match json {
            Json::Number(n) => match n.as_i64() {
                Some(integer) => Value::Integer(integer),
                None => Value::Json(n.to_string().into()),
            },
            Json::String(s) => Value::Text(s.as_str().into()),
            other => Value::Json(other.to_string().into()),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Integer(n) => write!(f, "{n}"),
            Value::Text(s) | Value::Json(s) => f.write_str(s),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Integer(n) => serializer.serialize_i64(*n),
            Value::Text(s) | Value::Json(s) => serializer.serialize_str(s),
        }
    }
}

/// An interned key: an index into [`Transactions::keys`].
pub type KeyId = u32;

/// What a transaction's completion says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Completed `ok`: it committed, and its reads are known.
    Ok,
    /// Completed `info` or never completed: it may have committed; its reads are unknown.
    Info,
    /// Completed `fail`: it aborted; nothing it wrote may be seen.
    Fail,
}

impl Status {
    /// The status's name, as in the history: `ok`, `info` or `fail`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Info => "info",
            Status::Fail => "fail",
        }
    }
}

/// What a read observed.
#[derive(Clone, Debug, PartialEq)]
pub enum Observed {
    /// The transaction did not complete `ok`: the read's value is unknown.
    Unknown,
    /// A list-append read: the elements of the list, in order (`null` reads as empty).
    List(Vec<Value>),
    /// A register read: the value, `None` for `null` (the initial state).
    Register(Option<Value>),
}

/// One micro-operation of a transaction.
#[derive(Clone, Debug, PartialEq)]
pub enum MicroOp {
    /// `["append", key, element]`: appends a unique element to the list at `key`.
    Append {
        /// The key.
        key: KeyId,
        /// The element.
        element: Value,
    },
    /// `["w", key, value]`: sets the register at `key` to a unique value.
    Write {
        /// The key.
        key: KeyId,
        /// The value.
        value: Value,
    },
    /// `["r", key, value]`: reads `key`.
    Read {
        /// The key.
        key: KeyId,
        /// What it read.
        observed: Observed,
    },
}

/// One transaction of a history.
#[derive(Clone, Debug, PartialEq)]
pub struct Transaction {
    /// Position of its invocation in the history (0-based).
    pub index: usize,
    /// The process that ran it.
    pub process: u64,
    /// Committed, aborted or unknown.
    pub status: Status,
    /// Position of its completion in the history; `None` if it never completed.
    pub completion: Option<usize>,
    /// Its micro-operations, in order.
    pub ops: Vec<MicroOp>,
    /// The micro-operations as recorded (the completion's for `ok`, else the invocation's).
    pub value: Json,
}

/// The transactions of a history and its interned keys.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Transactions {
    /// The transactions, in invocation order.
    pub txns: Vec<Transaction>,
    /// Key names, indexed by [`KeyId`].
    pub keys: Vec<Value>,
}

/// Who wrote a version: an element appended (list-append) or a value written (rw-register).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Writer {
    /// The writing transaction.
    pub(crate) txn: crate::txn::graph::TxnId,
    /// Whether it was the transaction's last write of the key.
    pub(crate) last: bool,
    /// How the transaction ended.
    pub(crate) status: Status,
}

/// Indexes every version by its writer; `write` says which micro-operations write and what
/// (key, version). A version written twice is an error: versions must be unique per key.
pub(crate) fn writers<'a>(
    parsed: &'a Transactions,
    write: impl Fn(&'a MicroOp) -> Option<(KeyId, &'a Value)>,
) -> Result<HashMap<(KeyId, &'a Value), Writer>, TxnError> {
    let mut writers: HashMap<(KeyId, &Value), Writer> = HashMap::new();
    for (id, txn) in parsed.txns.iter().enumerate() {
        for (position, op) in txn.ops.iter().enumerate() {
            let Some((key, version)) = write(op) else {
                continue;
            };
            let last = !txn.ops[position + 1..]
                .iter()
                .any(|later| write(later).is_some_and(|(k, _)| k == key));
            let writer = Writer {
                txn: id as crate::txn::graph::TxnId,
                last,
                status: txn.status,
            };
            if let Some(first) = writers.insert((key, version), writer) {
                return Err(TxnError::DuplicateWrite {
                    key: parsed.keys[key as usize].to_string(),
                    value: version.to_string(),
                    first: parsed.txns[first.txn as usize].index + 1,
                    second: txn.index + 1,
                });
            }
        }
    }
    Ok(writers)
}

fn malformed(index: usize, message: impl Into<String>) -> TxnError {
    TxnError::Malformed {
        event: index + 1,
        message: message.into(),
    }
}

/// Pairs invocations with completions and parses every transaction's micro-operations.
pub fn transactions(history: &History, workload: Workload) -> Result<Transactions, TxnError> {
    let mut out = Transactions::default();
    let mut key_ids: HashMap<Value, KeyId> = HashMap::new();
    // process -> the transaction it has open
    let mut open: HashMap<u64, usize> = HashMap::new();
    for (index, event) in history.events.iter().enumerate() {
        if event.f != "txn" {
            return Err(malformed(
                index,
                format!(
                    "function '{}' is not a transaction (expected \"f\": \"txn\")",
                    event.f
                ),
            ));
        }
        match event.kind {
            EventType::Invoke => {
                if let Some(&txn) = open.get(&event.process) {
                    return Err(malformed(
                        index,
                        format!(
                            "process {} invokes while its transaction from event {} is open",
                            event.process,
                            out.txns[txn].index + 1
                        ),
                    ));
                }
                let ops = micro_ops(index, event, workload, false, &mut key_ids, &mut out.keys)?;
                open.insert(event.process, out.txns.len());
                out.txns.push(Transaction {
                    index,
                    process: event.process,
                    status: Status::Info,
                    completion: None,
                    ops,
                    value: event.value.clone(),
                });
            }
            EventType::Ok | EventType::Fail | EventType::Info => {
                let Some(slot) = open.remove(&event.process) else {
                    return Err(malformed(
                        index,
                        format!(
                            "process {} completes a transaction it never invoked",
                            event.process
                        ),
                    ));
                };
                let txn = &mut out.txns[slot];
                txn.completion = Some(index);
                match event.kind {
                    EventType::Ok => {
                        let ops =
                            micro_ops(index, event, workload, true, &mut key_ids, &mut out.keys)?;
                        same_shape(index, &txn.ops, &ops)?;
                        txn.ops = ops;
                        txn.value = event.value.clone();
                        txn.status = Status::Ok;
                    }
                    EventType::Fail => txn.status = Status::Fail,
                    _ => txn.status = Status::Info,
                }
            }
        }
    }
    Ok(out)
}

/// An `ok` completion must repeat its invocation's micro-operations with the reads filled in.
fn same_shape(index: usize, invoked: &[MicroOp], completed: &[MicroOp]) -> Result<(), TxnError> {
    if invoked.len() != completed.len() {
        return Err(malformed(
            index,
            format!(
                "the completion has {} micro-operations, its invocation {}",
                completed.len(),
                invoked.len()
            ),
        ));
    }
    for (position, (a, b)) in invoked.iter().zip(completed).enumerate() {
        let same = match (a, b) {
            (MicroOp::Read { key: k1, .. }, MicroOp::Read { key: k2, .. }) => k1 == k2,
            _ => a == b,
        };
        if !same {
            return Err(malformed(
                index,
                format!(
                    "micro-operation {} of the completion differs from its invocation",
                    position + 1
                ),
            ));
        }
    }
    Ok(())
}

fn micro_ops(
    index: usize,
    event: &Op,
    workload: Workload,
    completed: bool,
    key_ids: &mut HashMap<Value, KeyId>,
    keys: &mut Vec<Value>,
) -> Result<Vec<MicroOp>, TxnError> {
    let Json::Array(items) = &event.value else {
        return Err(malformed(
            index,
            "a transaction's value must be a list of micro-operations like [\"r\", \"x\", null]",
        ));
    };
    let mut ops = Vec::with_capacity(items.len());
    for (position, item) in items.iter().enumerate() {
        let op = micro_op(item, workload, completed, key_ids, keys).map_err(|message| {
            malformed(
                index,
                format!("micro-operation {}: {message}", position + 1),
            )
        })?;
        ops.push(op);
    }
    Ok(ops)
}

fn micro_op(
    item: &Json,
    workload: Workload,
    completed: bool,
    key_ids: &mut HashMap<Value, KeyId>,
    keys: &mut Vec<Value>,
) -> Result<MicroOp, String> {
    let Some([Json::String(f), key, value]) = item.as_array().map(Vec::as_slice) else {
        return Err(format!("expected [f, key, value], got {item}"));
    };
    let key = match key {
        Json::String(_) | Json::Number(_) => Value::from_json(key),
        other => return Err(format!("a key must be a string or a number, got {other}")),
    };
    let key = match key_ids.get(&key) {
        Some(&id) => id,
        None => {
            let id = KeyId::try_from(keys.len()).map_err(|_| "too many keys".to_string())?;
            key_ids.insert(key.clone(), id);
            keys.push(key);
            id
        }
    };
    let written = |value: &Json| match value {
        Json::Null => Err(format!("'{f}' of null: written values must not be null")),
        value => Ok(Value::from_json(value)),
    };
    Ok(match (workload, f.as_str()) {
        (Workload::ListAppend, "append") => MicroOp::Append {
            key,
            element: written(value)?,
        },
        (Workload::RwRegister, "w") => MicroOp::Write {
            key,
            value: written(value)?,
        },
        (_, "r") if !completed => MicroOp::Read {
            key,
            observed: Observed::Unknown,
        },
        (Workload::ListAppend, "r") => MicroOp::Read {
            key,
            observed: Observed::List(match value {
                Json::Null => Vec::new(),
                Json::Array(elements) => elements.iter().map(Value::from_json).collect(),
                other => return Err(format!("a list-append read must be a list, got {other}")),
            }),
        },
        (Workload::RwRegister, "r") => MicroOp::Read {
            key,
            observed: Observed::Register(match value {
                Json::Null => None,
                value => Some(Value::from_json(value)),
            }),
        },
        (Workload::ListAppend, other) => {
            return Err(format!(
                "unknown function '{other}' for list-append (append, r)"
            ))
        }
        (Workload::RwRegister, other) => {
            return Err(format!("unknown function '{other}' for rw-register (w, r)"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, workload: Workload) -> Result<Transactions, TxnError> {
        transactions(&History::read_jsonl(text.as_bytes()).unwrap(), workload)
    }

    #[test]
    fn pairs_invocations_with_completions_and_fills_in_reads() {
        let parsed = parse(
            "{\"process\":0,\"type\":\"invoke\",\"f\":\"txn\",\"value\":[[\"append\",\"x\",1],[\"r\",\"x\",null]],\"time\":1}\n\
             {\"process\":1,\"type\":\"invoke\",\"f\":\"txn\",\"value\":[[\"append\",5,2]],\"time\":2}\n\
             {\"process\":0,\"type\":\"ok\",\"f\":\"txn\",\"value\":[[\"append\",\"x\",1],[\"r\",\"x\",[1]]],\"time\":3}\n\
             {\"process\":1,\"type\":\"fail\",\"f\":\"txn\",\"value\":[[\"append\",5,2]],\"time\":4}\n",
            Workload::ListAppend,
        )
        .unwrap();
        assert_eq!(parsed.keys, [Value::Text("x".into()), Value::Integer(5)]);
        assert_eq!(parsed.txns[0].status, Status::Ok);
        assert_eq!(parsed.txns[0].completion, Some(2));
        assert_eq!(
            parsed.txns[0].ops[1],
            MicroOp::Read {
                key: 0,
                observed: Observed::List(vec![Value::Integer(1)])
            }
        );
        assert_eq!(parsed.txns[1].status, Status::Fail);
    }

    #[test]
    fn bad_micro_operations_name_their_event() {
        let cases = [
            (
                "[[\"w\",\"x\",1]]",
                "event 1: micro-operation 1: unknown function 'w'",
            ),
            (
                "[[\"append\",\"x\"]]",
                "event 1: micro-operation 1: expected [f, key, value]",
            ),
            ("[[\"append\",[1],1]]", "key must be a string or a number"),
            ("[[\"append\",\"x\",null]]", "must not be null"),
            ("{\"x\":1}", "must be a list of micro-operations"),
        ];
        for (value, expected) in cases {
            let text = format!(
                "{{\"process\":0,\"type\":\"invoke\",\"f\":\"txn\",\"value\":{value},\"time\":1}}\n"
            );
            let error = parse(&text, Workload::ListAppend).unwrap_err().to_string();
            assert!(error.contains(expected), "{value}: {error}");
        }
    }

    #[test]
    fn a_completion_must_repeat_its_invocation() {
        let error = parse(
            "{\"process\":0,\"type\":\"invoke\",\"f\":\"txn\",\"value\":[[\"w\",\"x\",1]],\"time\":1}\n\
             {\"process\":0,\"type\":\"ok\",\"f\":\"txn\",\"value\":[[\"w\",\"x\",2]],\"time\":2}\n",
            Workload::RwRegister,
        )
        .unwrap_err();
        assert!(error.to_string().starts_with("history event 2:"), "{error}");
    }

    #[test]
    fn other_functions_are_rejected() {
        let error = parse(
            "{\"process\":0,\"type\":\"invoke\",\"f\":\"read\",\"key\":\"x\",\"time\":1}\n",
            Workload::RwRegister,
        )
        .unwrap_err();
        assert!(error.to_string().contains("not a transaction"), "{error}");
    }
}
