//! **Log Matching** (paper Figure 3, §5.3): if two logs contain an entry with the same index and
//! term, the logs are identical in all entries up through that index.
//!
//! Checked incrementally: every entry a node persists (its `Write::Append` effects) is recorded
//! as (index, term) → (previous entry's term, payload). A second entry with the same index and
//! term must have the same payload and the same predecessor term; by induction on the index,
//! that is the whole property.

use std::collections::BTreeMap;

use concord_core::{ClusterInvariant, Effect, Node, NodeId, StateMachine, Violation};

use super::stepped_node;
use crate::{LogIndex, Payload, RaftNode, Term, Write};

/// Every (index, term) ever persisted, with its predecessor's term and its payload.
#[derive(Debug)]
pub struct LogMatching<C> {
    entries: BTreeMap<(LogIndex, Term), (Option<Term>, Payload<C>)>,
}

impl<C> Default for LogMatching<C> {
    fn default() -> Self {
        LogMatching {
            entries: BTreeMap::new(),
        }
    }
}

impl<C: Clone + PartialEq> LogMatching<C> {
    fn record(
        &mut self,
        index: LogIndex,
        term: Term,
        previous_term: Option<Term>,
        payload: &Payload<C>,
    ) -> Result<(), String> {
        let (known_previous, known_payload) = self
            .entries
            .entry((index, term))
            .or_insert_with(|| (previous_term, payload.clone()));
        if known_payload != payload {
            return Err(format!(
                "two different entries at index {index} in term {term}"
            ));
        }
        match (*known_previous, previous_term) {
            (Some(a), Some(b)) if a != b => Err(format!(
                "entries ({index}, {term}) follow different terms {a} and {b} at index {}",
                index - 1
            )),
            (None, Some(_)) => {
                *known_previous = previous_term;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl<S: StateMachine + Default> ClusterInvariant<RaftNode<S>> for LogMatching<S::Command> {
    fn name(&self) -> &'static str {
        "log-matching"
    }

    fn check(
        &mut self,
        nodes: &[Option<&RaftNode<S>>],
        stepped: NodeId,
        effects: &[Effect<
            <RaftNode<S> as Node>::Message,
            <RaftNode<S> as Node>::Write,
            <RaftNode<S> as Node>::Command,
            <RaftNode<S> as Node>::Response,
        >],
    ) -> Result<(), Violation> {
        let node = stepped_node(nodes, stepped);
        for effect in effects {
            let Effect::Persist {
                write: Write::Append { entries },
                ..
            } = effect
            else {
                continue;
            };
            let Some(first) = entries.first() else {
                continue;
            };
            let mut previous_term = node.and_then(|n| n.log().term_at(first.index - 1));
            for entry in entries {
                self.record(entry.index, entry.term, previous_term, &entry.payload)
                    .map_err(|detail| Violation::on_node("log-matching", stepped, detail))?;
                previous_term = Some(entry.term);
            }
        }
        Ok(())
    }
}
