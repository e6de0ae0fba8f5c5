//! Durable state (paper Figure 2 "persistent state on all servers", §7 snapshots): the writes a
//! node asks its driver to make durable, and the [`Storage`] they add up to.
//!
//! A node restarts from `Storage` alone (`Node::restore`); only confirmed writes are in it.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use concord_core::{NodeId, StateBytes};

use crate::{Entry, LogIndex, Membership, Term};

/// The term and vote, persisted before any message that depends on them (§5.1, §5.2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term the node has seen.
    pub current_term: Term,
    /// The candidate it voted for in `current_term`.
    pub voted_for: Option<NodeId>,
}

/// What a snapshot covers (paper §7).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The index of the last entry the snapshot replaces.
    pub last_index: LogIndex,
    /// The term of that entry.
    pub last_term: Term,
    /// The configuration in effect at `last_index`.
    pub membership: Membership,
}

/// A snapshot: its metadata and the state machine's serialized state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// What it covers (shared: sent with every chunk).
    pub meta: Arc<SnapshotMeta>,
    /// The state machine's bytes, in shared parts (never copied when kept or sent; joined
    /// when persisted).
    pub data: StateBytes,
}

/// A durable mutation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write<C> {
    /// Replace the term and vote.
    HardState(HardState),
    /// Remove every stored entry at or after `entries[0].index` (a conflicting suffix, §5.3),
    /// then append `entries`.
    Append {
        /// Consecutive entries; never empty.
        entries: Vec<Entry<C>>,
        /// Written by a leader to its own log: no message waits for it (its sends never depend
        /// on its own log being durable, and it counts itself towards commitment only for
        /// confirmed writes), so it is no barrier ([`concord_core::Node::is_barrier`]).
        #[serde(default)]
        by_leader: bool,
    },
    /// Store a snapshot and compact the log through its last index. If the stored log has the
    /// snapshot's last entry (same index and term), the entries after it are kept; otherwise the
    /// whole log is discarded (paper §7).
    Snapshot(Snapshot),
    /// A snapshot this node took of its own applied state: stored and the log compacted as for
    /// [`Write::Snapshot`], but no barrier and a checkpoint ([`concord_core::Node::is_checkpoint`]):
    /// it covers only entries written before it, so nothing this node says depends on it (if it
    /// is lost in a crash, the log still holds those entries). Its write, the size of the whole
    /// state, holds back no message or reply, and a runtime folds it into its next log
    /// compaction instead of writing it while other writes wait.
    Compact(Snapshot),
}

/// What all confirmed writes add up to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage<C> {
    /// The term and vote.
    pub hard_state: HardState,
    /// The latest snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// The entries after the snapshot, consecutive.
    pub entries: Vec<Entry<C>>,
}

impl<C> Default for Storage<C> {
    fn default() -> Self {
        Storage {
            hard_state: HardState::default(),
            snapshot: None,
            entries: Vec::new(),
        }
    }
}

impl<C: Clone> Storage<C> {
    /// The index of the last entry covered by the snapshot (0 without one).
    pub fn snapshot_index(&self) -> LogIndex {
        self.snapshot.as_ref().map_or(0, |s| s.meta.last_index)
    }

    /// The index of the last stored entry (or of the snapshot).
    pub fn last_index(&self) -> LogIndex {
        self.snapshot_index() + self.entries.len() as u64
    }

    /// Folds one confirmed write into the storage, in O(size of the write) plus the truncated
    /// suffix.
    pub fn apply(&mut self, write: &Write<C>) {
        match write {
            Write::HardState(hard_state) => self.hard_state = hard_state.clone(),
            Write::Append { entries, .. } => self.append(entries),
            Write::Snapshot(snapshot) | Write::Compact(snapshot) => self.install(snapshot),
        }
    }

    fn append(&mut self, entries: &[Entry<C>]) {
        let Some(first) = entries.first() else {
            return;
        };
        let offset = self.snapshot_index();
        assert!(
            first.index > offset && first.index <= self.last_index() + 1,
            "append at {} leaves a gap or rewrites the snapshot (snapshot {offset}, last {})",
            first.index,
            self.last_index()
        );
        self.entries.truncate((first.index - offset - 1) as usize);
        self.entries.extend_from_slice(entries);
    }

    fn install(&mut self, snapshot: &Snapshot) {
        let offset = self.snapshot_index();
        let index = snapshot.meta.last_index;
        if index <= offset {
            return;
        }
        let position = (index - offset - 1) as usize;
        let keeps_suffix = self
            .entries
            .get(position)
            .is_some_and(|entry| entry.term == snapshot.meta.last_term);
        if keeps_suffix {
            self.entries.drain(..=position);
        } else {
            self.entries.clear();
        }
        self.snapshot = Some(snapshot.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Payload;

    fn entry(index: LogIndex, term: Term) -> Entry<u8> {
        Entry {
            index,
            term,
            payload: Payload::Noop,
        }
    }

    fn snapshot(last_index: LogIndex, last_term: Term) -> Snapshot {
        Snapshot {
            meta: Arc::new(SnapshotMeta {
                last_index,
                last_term,
                membership: Membership::new([1]),
            }),
            data: StateBytes::from(b"state".to_vec()),
        }
    }

    #[test]
    fn append_truncates_a_conflicting_suffix() {
        let mut storage = Storage::default();
        storage.apply(&Write::Append {
            entries: vec![entry(1, 1), entry(2, 1), entry(3, 1)],
            by_leader: false,
        });
        storage.apply(&Write::Append {
            entries: vec![entry(2, 2)],
            by_leader: false,
        });
        let terms: Vec<Term> = storage.entries.iter().map(|e| e.term).collect();
        assert_eq!(terms, vec![1, 2]);
        assert_eq!(storage.last_index(), 2);
    }

    #[test]
    fn a_snapshot_keeps_the_matching_suffix_or_discards_the_log() {
        let mut storage = Storage::default();
        storage.apply(&Write::Append {
            entries: vec![entry(1, 1), entry(2, 1), entry(3, 2)],
            by_leader: false,
        });
        storage.apply(&Write::Snapshot(snapshot(2, 1)));
        assert_eq!(storage.snapshot_index(), 2);
        assert_eq!(storage.entries, vec![entry(3, 2)]);
        storage.apply(&Write::Snapshot(snapshot(3, 3)));
        assert!(
            storage.entries.is_empty(),
            "term mismatch: the log is discarded"
        );
        assert_eq!(storage.last_index(), 3);
        storage.apply(&Write::Snapshot(snapshot(1, 1)));
        assert_eq!(
            storage.snapshot_index(),
            3,
            "an older snapshot changes nothing"
        );
    }
}
