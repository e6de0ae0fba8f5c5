//! The key-value state machine every consensus protocol replicates in the simulator, and the
//! [`StateMachine`] trait it implements.
//!
//! Keys hold registers (integers written, read and compare-and-set) or lists (appended to),
//! the shapes Jepsen's and Elle's workloads use.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A deterministic state machine replicated by a consensus protocol.
pub trait StateMachine: Clone + std::fmt::Debug {
    /// A command that changes the state (goes through the log).
    type Command: Clone + std::fmt::Debug + PartialEq;
    /// A read-only query (served by ReadIndex, leases or locally; never logged).
    type Query: Clone + std::fmt::Debug;
    /// The result of a command or query.
    type Output: Clone + std::fmt::Debug + PartialEq;

    /// Applies a committed command.
    fn apply(&mut self, command: &Self::Command) -> Self::Output;
    /// Answers a query from the current state.
    fn query(&self, query: &Self::Query) -> Self::Output;
    /// Serializes the whole state for a snapshot.
    fn snapshot(&self) -> Vec<u8>;
    /// The same bytes as [`StateMachine::snapshot`], as shared parts. A state machine that
    /// keeps its encoding up to date overrides it, so that taking a snapshot (on the node's
    /// step) copies little.
    fn snapshot_parts(&self) -> crate::StateBytes {
        crate::StateBytes::from(self.snapshot())
    }
    /// Replaces the state with a snapshot made by [`StateMachine::snapshot`].
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String>;
}

/// A value held at a key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A register.
    Int(i64),
    /// A list built by appends.
    List(Vec<i64>),
}

/// One operation of the key-value workload.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "kebab-case")]
pub enum KvOperation {
    /// Read a key.
    Read {
        /// The key.
        key: String,
    },
    /// Write a register.
    Write {
        /// The key.
        key: String,
        /// The new value.
        value: i64,
    },
    /// Compare-and-set a register: set to `to` if it holds `from`.
    Cas {
        /// The key.
        key: String,
        /// Expected value.
        from: i64,
        /// New value.
        to: i64,
    },
    /// Append to a list.
    Append {
        /// The key.
        key: String,
        /// The element.
        value: i64,
    },
}

impl KvOperation {
    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            KvOperation::Read { key }
            | KvOperation::Write { key, .. }
            | KvOperation::Cas { key, .. }
            | KvOperation::Append { key, .. } => key,
        }
    }

    /// Whether the operation only reads.
    pub fn is_read(&self) -> bool {
        matches!(self, KvOperation::Read { .. })
    }
}

/// A logged key-value command (reads may be logged too, when a protocol has no read path).
pub type KvCommand = KvOperation;

/// What a client learns from a response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOutcome {
    /// Done. Reads carry the value (`None` for a missing key); a cas carries whether it matched.
    Ok(KvResult),
    /// Definitely not done: this node cannot serve it. `leader` is a hint where to go.
    NotLeader {
        /// The leader the node believes in.
        leader: Option<u64>,
    },
    /// Definitely not done, for another reason (bad request, overloaded).
    Rejected(String),
    /// May or may not have happened (leadership lost after proposing).
    Unknown,
}

/// The result of an applied key-value operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvResult {
    /// A read's value.
    Read(Option<Value>),
    /// A write or append took effect.
    Written,
    /// A compare-and-set: whether the expected value matched (and the write happened).
    Cas(bool),
}

/// The replicated key-value map.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStateMachine {
    data: BTreeMap<String, Value>,
    applied: u64,
}

impl KvStateMachine {
    /// The value at `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.data.get(key)
    }

    /// How many commands were applied (for monitoring).
    pub fn applied_commands(&self) -> u64 {
        self.applied
    }

    /// The whole map, in key order.
    pub fn entries(&self) -> &BTreeMap<String, Value> {
        &self.data
    }
}

impl StateMachine for KvStateMachine {
    type Command = KvOperation;
    type Query = KvOperation;
    type Output = KvResult;

    fn apply(&mut self, command: &KvOperation) -> KvResult {
        self.applied += 1;
        match command {
            KvOperation::Read { .. } => self.query(command),
            KvOperation::Write { key, value } => {
                self.data.insert(key.clone(), Value::Int(*value));
                KvResult::Written
            }
            KvOperation::Cas { key, from, to } => {
                if self.data.get(key) == Some(&Value::Int(*from)) {
                    self.data.insert(key.clone(), Value::Int(*to));
                    KvResult::Cas(true)
                } else {
                    KvResult::Cas(false)
                }
            }
            KvOperation::Append { key, value } => {
                match self
                    .data
                    .entry(key.clone())
                    .or_insert_with(|| Value::List(Vec::new()))
                {
                    Value::List(list) => list.push(*value),
                    register @ Value::Int(_) => {
                        // Appending to a register turns it into a one-element list history:
                        // the register's value is kept as the list's first element.
                        let Value::Int(previous) = *register else {
                            unreachable!()
                        };
                        *register = Value::List(vec![previous, *value]);
                    }
                }
                KvResult::Written
            }
        }
    }

    fn query(&self, query: &KvOperation) -> KvResult {
        KvResult::Read(self.data.get(query.key()).cloned())
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a map of strings and integers always serializes")
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        *self = serde_json::from_slice(snapshot).map_err(|e| format!("corrupt snapshot: {e}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(key: &str, value: i64) -> KvOperation {
        KvOperation::Write {
            key: key.into(),
            value,
        }
    }

    #[test]
    fn register_operations() {
        let mut sm = KvStateMachine::default();
        assert_eq!(
            sm.apply(&KvOperation::Read { key: "x".into() }),
            KvResult::Read(None)
        );
        assert_eq!(sm.apply(&write("x", 1)), KvResult::Written);
        let cas = |from, to| KvOperation::Cas {
            key: "x".into(),
            from,
            to,
        };
        assert_eq!(sm.apply(&cas(2, 3)), KvResult::Cas(false));
        assert_eq!(sm.apply(&cas(1, 3)), KvResult::Cas(true));
        assert_eq!(
            sm.query(&KvOperation::Read { key: "x".into() }),
            KvResult::Read(Some(Value::Int(3)))
        );
    }

    #[test]
    fn append_builds_lists_and_snapshots_round_trip() {
        let mut sm = KvStateMachine::default();
        sm.apply(&KvOperation::Append {
            key: "l".into(),
            value: 1,
        });
        sm.apply(&KvOperation::Append {
            key: "l".into(),
            value: 2,
        });
        assert_eq!(sm.get("l"), Some(&Value::List(vec![1, 2])));
        let mut copy = KvStateMachine::default();
        copy.restore(&sm.snapshot()).unwrap();
        assert_eq!(copy, sm);
        assert!(copy.restore(b"not json").is_err());
    }
}
