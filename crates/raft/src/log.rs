//! The in-memory replicated log (paper §5.3) after the latest snapshot (§7), with the history of
//! configurations it holds (thesis §4.1: a configuration takes effect as soon as it is in the log,
//! and a truncated configuration entry reverts to the previous one).
//!
//! Invariant: `entries[k].index == snapshot_index + 1 + k`, and terms never decrease.

use std::sync::Arc;

use crate::{Entry, LogIndex, Membership, Payload, Term};

/// The log: a snapshot point followed by consecutive entries.
#[derive(Clone, Debug)]
pub struct RaftLog<C> {
    snapshot_index: LogIndex,
    snapshot_term: Term,
    entries: Vec<Entry<C>>,
    /// The configuration at `snapshot_index` (or the initial one).
    base_membership: Arc<Membership>,
    /// Configuration entries in `entries`, in index order.
    membership_changes: Vec<(LogIndex, Arc<Membership>)>,
}

impl<C> RaftLog<C> {
    /// A log holding `entries` after a snapshot at (`snapshot_index`, `snapshot_term`), whose
    /// configuration is `membership`.
    pub fn new(
        snapshot_index: LogIndex,
        snapshot_term: Term,
        membership: Membership,
        entries: Vec<Entry<C>>,
    ) -> Self {
        let mut log = RaftLog {
            snapshot_index,
            snapshot_term,
            entries: Vec::with_capacity(entries.len()),
            base_membership: Arc::new(membership),
            membership_changes: Vec::new(),
        };
        for entry in entries {
            log.append(entry);
        }
        log
    }

    /// The index of the last entry covered by the snapshot (0 without one).
    pub fn snapshot_index(&self) -> LogIndex {
        self.snapshot_index
    }

    /// The term of that entry.
    pub fn snapshot_term(&self) -> Term {
        self.snapshot_term
    }

    /// The index of the first entry still in memory.
    pub fn first_index(&self) -> LogIndex {
        self.snapshot_index + 1
    }

    /// The index of the last entry (or of the snapshot).
    pub fn last_index(&self) -> LogIndex {
        self.snapshot_index + self.entries.len() as u64
    }

    /// The term of the last entry (or of the snapshot).
    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.snapshot_term, |e| e.term)
    }

    /// The term of the entry at `index`: known for the snapshot point and the entries after
    /// it, `None` for compacted or missing ones. Index 0 has term 0.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index {
            Some(self.snapshot_term)
        } else {
            self.entry(index).map(|e| e.term)
        }
    }

    /// The entry at `index`, if it is in memory.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry<C>> {
        let position = index.checked_sub(self.first_index())?;
        self.entries.get(usize::try_from(position).ok()?)
    }

    /// The entries from `from` to the end (empty if `from` is past the end or compacted).
    pub fn entries_from(&self, from: LogIndex) -> &[Entry<C>] {
        if from < self.first_index() {
            return &[];
        }
        let position = (from - self.first_index()) as usize;
        self.entries.get(position..).unwrap_or(&[])
    }

    /// All entries in memory.
    pub fn entries(&self) -> &[Entry<C>] {
        &self.entries
    }

    /// Appends one entry at `last_index() + 1`.
    pub fn append(&mut self, entry: Entry<C>) {
        assert_eq!(
            entry.index,
            self.last_index() + 1,
            "log entries must be appended consecutively"
        );
        assert!(
            entry.term >= self.last_term(),
            "log terms must not decrease: {} after {}",
            entry.term,
            self.last_term()
        );
        if let Payload::Membership(membership) = &entry.payload {
            self.membership_changes
                .push((entry.index, Arc::clone(membership)));
        }
        self.entries.push(entry);
    }

    /// Removes every entry at or after `from` (a conflicting suffix, §5.3).
    pub fn truncate_from(&mut self, from: LogIndex) {
        assert!(
            from > self.snapshot_index,
            "cannot truncate into the snapshot"
        );
        self.entries.truncate((from - self.first_index()) as usize);
        while self
            .membership_changes
            .last()
            .is_some_and(|(index, _)| *index >= from)
        {
            self.membership_changes.pop();
        }
    }

    /// Moves the snapshot point to (`index`, `term`) with configuration `membership`: keeps the
    /// entries after it if the log holds that entry, otherwise discards the whole log (§7).
    pub fn compact(&mut self, index: LogIndex, term: Term, membership: Membership) {
        if index <= self.snapshot_index {
            return;
        }
        if self.term_at(index) == Some(term) {
            let drained = (index - self.snapshot_index) as usize;
            self.entries.drain(..drained);
            self.membership_changes.retain(|(i, _)| *i > index);
        } else {
            self.entries.clear();
            self.membership_changes.clear();
        }
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.base_membership = Arc::new(membership);
    }

    /// The configuration in effect: the latest one in the log.
    pub fn membership(&self) -> &Membership {
        self.membership_changes
            .last()
            .map_or(&self.base_membership, |(_, m)| m)
    }

    /// The index of the latest configuration entry (the snapshot index if none is in the log).
    pub fn membership_index(&self) -> LogIndex {
        self.membership_changes
            .last()
            .map_or(self.snapshot_index, |(index, _)| *index)
    }

    /// The configuration in effect at `index`, then every later one, in log order.
    pub fn memberships_from(&self, index: LogIndex) -> impl Iterator<Item = &Membership> {
        let later = self
            .membership_changes
            .iter()
            .filter(move |(i, _)| *i > index)
            .map(|(_, m)| m.as_ref());
        std::iter::once(self.membership_at(index)).chain(later)
    }

    /// The configuration in effect at `index` (for snapshots taken there).
    pub fn membership_at(&self, index: LogIndex) -> &Membership {
        self.membership_changes
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or(&self.base_membership, |(_, m)| m)
    }

    /// The first index holding `term` (terms never decrease, so a binary search), if any entry
    /// in memory has it.
    pub fn first_index_of_term(&self, term: Term) -> Option<LogIndex> {
        let position = self.entries.partition_point(|e| e.term < term);
        let entry = self.entries.get(position)?;
        (entry.term == term).then_some(entry.index)
    }

    /// The last index holding `term`, if any entry in memory has it.
    pub fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        let position = self.entries.partition_point(|e| e.term <= term);
        let entry = self.entries.get(position.checked_sub(1)?)?;
        (entry.term == term).then_some(entry.index)
    }

    /// Whether a candidate whose last entry is (`last_index`, `last_term`) is at least as up to
    /// date as this log (§5.4.1).
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: LogIndex, term: Term) -> Entry<u8> {
        Entry {
            index,
            term,
            payload: Payload::Noop,
        }
    }

    #[test]
    fn terms_and_truncation() {
        let mut log = RaftLog::new(0, 0, Membership::new([1]), Vec::new());
        for (i, t) in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3)] {
            log.append(entry(i, t));
        }
        assert_eq!(log.term_at(0), Some(0));
        assert_eq!(log.term_at(4), Some(2));
        assert_eq!(log.first_index_of_term(2), Some(3));
        assert_eq!(log.last_index_of_term(2), Some(4));
        assert_eq!(log.last_index_of_term(4), None);
        log.truncate_from(4);
        assert_eq!(log.last_index(), 3);
        log.compact(2, 1, Membership::new([1]));
        assert_eq!(log.first_index(), 3);
        assert_eq!(log.term_at(2), Some(1));
        assert_eq!(log.term_at(1), None);
        assert_eq!(log.entries_from(3).len(), 1);
    }
}
