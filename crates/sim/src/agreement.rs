//! The built-in `apply-agreement` check: no two nodes apply different commands at one index.
//!
//! Log indexes are dense (1, 2, 3, ...), so the record is a vector with one slot per index
//! rather than a search tree: a check is one bounds check and one comparison, and nothing is
//! rebalanced as the run goes on. An index far beyond the highest one seen goes to a map
//! instead, so a protocol with sparse indexes cannot make the vector huge.

use std::collections::BTreeMap;

use concord_core::{NodeId, Violation};

/// Every command applied so far, by index, with the first node that applied it.
#[derive(Debug, Clone)]
pub struct AppliedCommands<C> {
    /// `slots[i]` is what was applied at index `i` (index 0 is never used by a protocol, but
    /// is allowed).
    slots: Vec<Option<(NodeId, C)>>,
    /// Indexes at or past `slots.len()` that were too far ahead to get a slot.
    far: BTreeMap<u64, (NodeId, C)>,
    /// How many slots are filled.
    len: usize,
}

impl<C> Default for AppliedCommands<C> {
    fn default() -> Self {
        AppliedCommands {
            slots: Vec::new(),
            far: BTreeMap::new(),
            len: 0,
        }
    }
}

/// Indexes further than this past the end of the vector go to the map.
const MAX_GAP: u64 = 1 << 20;

impl<C: Clone + PartialEq + std::fmt::Debug> AppliedCommands<C> {
    /// The first node that applied a command at `index`, and the command.
    pub fn get(&self, index: &u64) -> Option<&(NodeId, C)> {
        match usize::try_from(*index).ok().and_then(|i| self.slots.get(i)) {
            Some(slot) => slot.as_ref(),
            None => self.far.get(index),
        }
    }

    /// How many indexes have an applied command.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was applied yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The applied commands in index order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &(NodeId, C))> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| Some((index as u64, slot.as_ref()?)))
            .chain(self.far.iter().map(|(&index, applied)| (index, applied)))
    }

    /// Records that node `id` applied `command` at `index`; an error if another command was
    /// applied there before.
    pub(crate) fn record(&mut self, id: NodeId, index: u64, command: &C) -> Result<(), Violation> {
        let end = self.slots.len() as u64;
        if index >= end && index - end > MAX_GAP {
            return match self.far.get(&index) {
                Some(first) => agree(id, index, command, first),
                None => {
                    self.far.insert(index, (id, command.clone()));
                    self.len += 1;
                    Ok(())
                }
            };
        }
        let slot = self.dense_slot(index);
        match slot {
            Some(first) => agree(id, index, command, first),
            None => {
                *slot = Some((id, command.clone()));
                self.len += 1;
                Ok(())
            }
        }
    }

    /// The vector slot of `index` (at most `MAX_GAP` past the end), growing the vector.
    fn dense_slot(&mut self, index: u64) -> &mut Option<(NodeId, C)> {
        let position = usize::try_from(index).expect("a dense index fits in memory");
        if position >= self.slots.len() {
            self.slots.resize_with(position + 1, || None);
            // Far indexes the vector now reaches move into it: each index has one home.
            while let Some(entry) = self.far.first_entry() {
                if *entry.key() > index {
                    break;
                }
                let (moved, applied) = entry.remove_entry();
                self.slots[moved as usize] = Some(applied);
            }
        }
        &mut self.slots[position]
    }
}

/// Checks `command`, applied by `id` at `index`, against the first one applied there.
fn agree<C: PartialEq + std::fmt::Debug>(
    id: NodeId,
    index: u64,
    command: &C,
    (first, existing): &(NodeId, C),
) -> Result<(), Violation> {
    if existing == command {
        return Ok(());
    }
    Err(Violation::cluster(
        "apply-agreement",
        format!(
            "node {id} applied {command:?} at index {index}, node {first} applied {existing:?}"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_command_at_one_index_is_a_violation() {
        let mut applied = AppliedCommands::default();
        assert!(applied.record(0, 1, &"a").is_ok());
        assert!(applied.record(1, 1, &"a").is_ok());
        assert!(applied.record(2, 3, &"c").is_ok());
        let violation = applied.record(2, 1, &"b").unwrap_err();
        assert_eq!(violation.invariant, "apply-agreement");
        assert_eq!(applied.get(&1), Some(&(0, "a")));
        assert_eq!(applied.get(&2), None);
        assert_eq!(applied.len(), 2);
        assert_eq!(applied.iter().map(|(i, _)| i).collect::<Vec<_>>(), [1, 3]);
        let far = 10 + 2 * MAX_GAP;
        assert!(applied.record(0, far, &"f").is_ok());
        assert!(applied.record(1, far, &"g").is_err());
        assert_eq!(applied.get(&far), Some(&(0, "f")));
        assert_eq!(
            applied.iter().map(|(i, _)| i).collect::<Vec<_>>(),
            [1, 3, far]
        );
    }
}
