//! Register and key-value histories whose written values are unique per key ("differentiated"
//! histories, in the words of Bouajjani et al. 2017): which operations write, which read, and
//! which write each read observed. Shared by the session check ([`crate::session`]) and the
//! causal consistency check ([`crate::causal`]); the rules are in `docs/checkers.md`.
//!
//! * *Writes:* `write` and `put` write their value; `cas [from, to]` writes `to`. Completed and
//!   unknown writes both count (an unknown write may have happened, so its value may be read).
//! * *Reads:* `read` and `get` completed `ok`. A read names the write it observed: the one write
//!   of that value to that key. A read of `null` (or `""`) that no write wrote observed the
//!   initial value.
//! * A read whose value was written more than once to its key is *ambiguous*; so is a read of
//!   `null` or `""` when some write wrote that value. A read of a value no write of its key
//!   wrote is *unwritten*.
//! * Other functions (`append`, unknown names) are *ignored*; a key that any of them touches is
//!   *unsupported* and its reads are left out (after an `append` a read returns a list).

use std::collections::{HashMap, HashSet};

use serde_json::Value as Json;

use crate::linearizability::Operation;

/// A version of a key: its initial value or the value of one write (an operation index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    Initial,
    Write(usize),
}

/// What a read observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Observed {
    /// One version: the initial value or one write's.
    Version(Version),
    /// More than one write wrote the value read (or the value read is `null` or `""` and some
    /// write wrote it): the write observed is not known.
    Ambiguous,
    /// No write of the key wrote the value read.
    Unwritten,
    /// The key is also touched by an operation this reading does not model.
    Unsupported,
}

/// How an operation takes part in the check.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Role {
    Write(Json),
    Read(Json),
    Ignored,
}

fn role(op: &Operation) -> Role {
    match (op.f.as_str(), &op.output) {
        ("write" | "put", _) => Role::Write(op.input.clone()),
        ("cas", _) => match op.input.as_array().map(Vec::as_slice) {
            Some([_, to]) => Role::Write(to.clone()),
            _ => Role::Ignored,
        },
        ("read" | "get", Some(value)) => Role::Read(value.clone()),
        _ => Role::Ignored,
    }
}

/// The history indexed by key and value.
pub(crate) struct Index {
    /// The operations, in invocation order (failed ones are left out).
    pub(crate) ops: Vec<Operation>,
    /// Each operation's role.
    pub(crate) roles: Vec<Role>,
    /// (key, value text) -> the one write of that value, or `None` if written more than once.
    writers: HashMap<(Option<String>, String), Option<usize>>,
    /// Keys some operation other than a read, write or cas touches.
    unsupported: HashSet<Option<String>>,
}

impl Index {
    pub(crate) fn new(ops: Vec<Operation>) -> Index {
        let roles: Vec<Role> = ops.iter().map(role).collect();
        let mut writers: HashMap<(Option<String>, String), Option<usize>> = HashMap::new();
        for (i, role) in roles.iter().enumerate() {
            if let Role::Write(value) = role {
                // A write of `null` or `""` cannot be told from the initial value.
                let unique = !(value.is_null() || value == "");
                writers
                    .entry((ops[i].key.clone(), value.to_string()))
                    .and_modify(|w| *w = None)
                    .or_insert(unique.then_some(i));
            }
        }
        let unsupported = ops
            .iter()
            .zip(&roles)
            .filter(|(op, role)| {
                **role == Role::Ignored && !matches!(op.f.as_str(), "read" | "get")
            })
            .map(|(op, _)| op.key.clone())
            .collect();
        Index {
            ops,
            roles,
            writers,
            unsupported,
        }
    }

    /// What the read `read`, which returned `value`, observed.
    pub(crate) fn observed(&self, read: usize, value: &Json) -> Observed {
        if self.unsupported.contains(&self.ops[read].key) {
            return Observed::Unsupported;
        }
        let key = (self.ops[read].key.clone(), value.to_string());
        match self.writers.get(&key) {
            Some(Some(write)) => Observed::Version(Version::Write(*write)),
            Some(None) => Observed::Ambiguous,
            None if value.is_null() || value == "" => Observed::Version(Version::Initial),
            None => Observed::Unwritten,
        }
    }

    /// How many operations are neither reads nor writes.
    pub(crate) fn ignored(&self) -> usize {
        self.roles.iter().filter(|r| **r == Role::Ignored).count()
    }
}
