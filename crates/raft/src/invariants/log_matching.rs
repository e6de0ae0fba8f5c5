//! **Log Matching** (paper Figure 3, §5.3): if two logs contain an entry with the same index and
//! term, the logs are identical in all entries up through that index.
//!
//! Checked incrementally: every entry a node persists (its `Write::Append` effects) is recorded
//! as (index, term) → (previous entry's term, payload). A second entry with the same index and
//! term must have the same payload and the same predecessor term; by induction on the index,
//! that is the whole property.

use std::collections::BTreeMap;

use concord_core::{ClusterInvariant, Effect, EffectOf, NodeId, StateMachine, Violation};

use super::stepped_node;
use crate::{LogIndex, Payload, RaftNode, Term, Write};

/// What was recorded for one (index, term): the previous entry's term (if known) and the
/// payload.
type Record<C> = (Term, Option<Term>, Payload<C>);

/// Every (index, term) ever persisted, with its predecessor's term and its payload: the first
/// term seen at an index in a vector (one slot per index), other terms in a map (rare: only
/// uncommitted entries are ever replaced).
#[derive(Debug)]
pub struct LogMatching<C> {
    first: Vec<Option<Record<C>>>,
    others: BTreeMap<(LogIndex, Term), (Option<Term>, Payload<C>)>,
}

impl<C> Default for LogMatching<C> {
    fn default() -> Self {
        LogMatching {
            first: Vec::new(),
            others: BTreeMap::new(),
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
        let slot = usize::try_from(index.saturating_sub(1)).unwrap_or(usize::MAX);
        if slot >= self.first.len() && slot < self.first.len() + (1 << 20) {
            self.first.resize_with(slot + 1, || None);
        }
        let known = match self.first.get_mut(slot) {
            Some(first @ None) => {
                *first = Some((term, previous_term, payload.clone()));
                return Ok(());
            }
            Some(Some((first_term, known_previous, known_payload))) if *first_term == term => {
                (known_previous, &*known_payload)
            }
            _ => {
                let (known_previous, known_payload) = self
                    .others
                    .entry((index, term))
                    .or_insert_with(|| (previous_term, payload.clone()));
                (known_previous, &*known_payload)
            }
        };
        compare(index, term, previous_term, payload, known)
    }
}

/// Checks a new entry against what was recorded for its (index, term).
fn compare<C: PartialEq>(
    index: LogIndex,
    term: Term,
    previous_term: Option<Term>,
    payload: &Payload<C>,
    (known_previous, known_payload): (&mut Option<Term>, &Payload<C>),
) -> Result<(), String> {
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

impl<S: StateMachine + Default> ClusterInvariant<RaftNode<S>> for LogMatching<S::Command> {
    fn name(&self) -> &'static str {
        "log-matching"
    }

    fn check(
        &mut self,
        nodes: &[Option<&RaftNode<S>>],
        stepped: NodeId,
        effects: &[EffectOf<RaftNode<S>>],
    ) -> Result<(), Violation> {
        let node = stepped_node(nodes, stepped);
        for effect in effects {
            let Effect::Persist {
                write: Write::Append { entries, .. },
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn command(value: u8) -> Payload<u8> {
        Payload::Command(Arc::new(value))
    }

    #[test]
    fn same_index_and_term_must_mean_same_entry_and_same_predecessor() {
        let mut checker = LogMatching::default();
        assert!(checker.record(1, 1, Some(0), &command(1)).is_ok());
        assert!(checker.record(1, 1, Some(0), &command(1)).is_ok());
        assert!(
            checker.record(1, 2, Some(0), &command(9)).is_ok(),
            "another term may differ"
        );
        assert!(checker.record(1, 1, Some(0), &command(2)).is_err());
        assert!(checker.record(2, 2, None, &command(3)).is_ok());
        assert!(
            checker.record(2, 2, Some(1), &command(3)).is_ok(),
            "predecessor learned"
        );
        assert!(checker.record(2, 2, Some(2), &command(3)).is_err());
        assert!(checker.record(1, 2, Some(0), &command(8)).is_err());
    }
}
