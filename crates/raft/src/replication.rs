//! Log replication (paper §5.3) and commitment (§5.4.2), leader side and follower side.
//!
//! * AppendEntries carries `prev_log_index`/`prev_log_term`; a follower rejects a mismatch with
//!   a conflict term and the first index of that term, so the leader skips a whole term per
//!   round trip (the optimization sketched at the end of §5.3).
//! * A conflicting suffix is truncated; entries the follower already has are never rewritten.
//! * Each follower is probed, then pipelined within a bounded in-flight window (see
//!   `progress`); messages carry at most `max_entries_per_message` entries.
//! * Heartbeats are empty AppendEntries; they also carry the leader's heartbeat round, which
//!   confirms leadership for ReadIndex (thesis §6.4).
//! * The leader commits only an entry of its own term by counting replicas, counting itself only
//!   for entries it knows are durable (Figure 8); earlier entries commit with it.

use std::sync::Arc;

use concord_core::{NodeId, StateMachine};

use crate::node::{RaftNode, RaftRole};
use crate::progress::ProgressState;
use crate::{Config, Entry, LogIndex, Message, RaftLog, Term};

impl<S: StateMachine> RaftNode<S> {
    /// Sends `peer` what it needs next: entries (pipelined within the window), a heartbeat, or
    /// a snapshot chunk when its next entry is compacted away.
    pub(crate) fn send_append(&mut self, peer: NodeId, heartbeat: bool) {
        let max_inflight = self.config.max_inflight_appends;
        let Some(progress) = self.leader.as_ref().and_then(|l| l.progress.get(&peer)) else {
            return;
        };
        match &progress.state {
            ProgressState::Snapshot { .. } if heartbeat => self.send_snapshot_chunk(peer),
            ProgressState::Snapshot { .. } => {}
            ProgressState::Replicate { .. } if heartbeat => self.send_heartbeat(peer),
            _ if heartbeat || progress.can_send(max_inflight) => self.send_entries(peer),
            _ => {}
        }
    }

    /// An empty AppendEntries at the follower's match point: keeps its leader alive and carries
    /// the round and the commit index (which it adopts up to what it holds).
    fn send_heartbeat(&mut self, peer: NodeId) {
        let snapshot_index = self.log.snapshot_index();
        let Some(leader) = self.leader.as_ref() else {
            return;
        };
        let Some(progress) = leader.progress.get(&peer) else {
            return;
        };
        let prev = progress
            .match_index
            .max(snapshot_index)
            .min(progress.next_index - 1);
        let Some(prev_log_term) = self.log.term_at(prev) else {
            return;
        };
        let message = Message::AppendEntries {
            term: self.current_term,
            prev_log_index: prev,
            prev_log_term,
            entries: Arc::clone(&self.batches.empty),
            leader_commit: self.commit_index,
            round: leader.round,
        };
        self.outbox.push((peer, message));
    }

    /// Sends entries from the follower's next index, or a snapshot if they are compacted.
    fn send_entries(&mut self, peer: NodeId) {
        if !self.send_entry_batches(peer) {
            self.start_snapshot(peer);
        }
    }

    /// Sends one probe, or as many batches as the in-flight window allows. Returns false if
    /// the follower needs a snapshot instead.
    fn send_entry_batches(&mut self, peer: NodeId) -> bool {
        let (term, leader_commit, now) = (self.current_term, self.commit_index, self.now);
        let Some(leader) = self.leader.as_mut() else {
            return true;
        };
        let round = leader.round;
        let Some(progress) = leader.progress.get_mut(&peer) else {
            return true;
        };
        loop {
            let prev = progress.next_index - 1;
            let Some(prev_log_term) = self.log.term_at(prev) else {
                return false;
            };
            let entries = self
                .batches
                .batch(&self.log, progress.next_index, &self.config);
            let last = prev + entries.len() as u64;
            let replicating = matches!(progress.state, ProgressState::Replicate { .. });
            if entries.is_empty() && replicating {
                return true;
            }
            let message = Message::AppendEntries {
                term,
                prev_log_index: prev,
                prev_log_term,
                entries,
                leader_commit,
                round,
            };
            self.outbox.push((peer, message));
            match &mut progress.state {
                ProgressState::Replicate { inflight } => {
                    inflight.push_back((last, now));
                    progress.next_index = last + 1;
                    if inflight.len() >= self.config.max_inflight_appends
                        || progress.next_index > self.log.last_index()
                    {
                        return true;
                    }
                }
                ProgressState::Probe { paused } => {
                    *paused = true;
                    return true;
                }
                ProgressState::Snapshot { .. } => return true,
            }
        }
    }

    /// §5.3 receiver implementation: reply false on a `prev_log_index`/`prev_log_term`
    /// mismatch, truncate a conflicting suffix, append what is new, advance the commit index.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_append_entries(
        &mut self,
        from: NodeId,
        term: Term,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Arc<[Entry<S::Command>]>,
        leader_commit: LogIndex,
        round: u64,
    ) {
        if self.role == RaftRole::Leader {
            return; // Election safety: no two leaders share a term, so this is not a leader.
        }
        if self.role != RaftRole::Follower || self.leader_id != Some(from) {
            self.become_follower(term, Some(from));
        }
        self.note_leader_contact(from);
        if !well_formed(prev_log_index, prev_log_term, term, &entries) {
            return;
        }
        if let Err((conflict_term, conflict_index)) =
            self.check_previous(prev_log_index, prev_log_term)
        {
            let message = Message::AppendEntriesResponse {
                term,
                success: false,
                index: prev_log_index,
                conflict_term,
                conflict_index,
                round,
            };
            self.send(from, message);
            return;
        }
        let last_new = prev_log_index + entries.len() as u64;
        if !self.merge_entries(&entries) {
            return;
        }
        // The log now matches this leader's through `last_new`, and through what earlier
        // AppendEntries of this leader established (`forward` module docs).
        self.leader_match = self.leader_match.max(last_new);
        self.adopt_leader_commit(leader_commit);
        let message = Message::AppendEntriesResponse {
            term,
            success: true,
            index: last_new,
            conflict_term: None,
            conflict_index: 0,
            round,
        };
        self.send(from, message);
    }

    /// The consistency check of §5.3; on a mismatch, the hint for fast backtracking.
    fn check_previous(
        &self,
        prev_log_index: LogIndex,
        prev_log_term: Term,
    ) -> Result<(), (Option<Term>, LogIndex)> {
        if prev_log_index < self.log.snapshot_index() {
            return Ok(()); // Compacted entries are committed, so they match (§5.4.3).
        }
        match self.log.term_at(prev_log_index) {
            None => Err((None, self.log.last_index() + 1)),
            Some(term) if term != prev_log_term => {
                let first = self
                    .log
                    .first_index_of_term(term)
                    .unwrap_or(prev_log_index)
                    .max(self.commit_index + 1);
                Err((Some(term), first.min(prev_log_index)))
            }
            Some(_) => Ok(()),
        }
    }

    /// Appends the entries the log lacks, truncating a conflicting suffix first. Returns
    /// false (and changes nothing) if they conflict with a committed entry, which only a
    /// faulty leader could send.
    fn merge_entries(&mut self, entries: &[Entry<S::Command>]) -> bool {
        let mut appending = false;
        for entry in entries {
            if appending {
                self.append_received(entry.clone());
                continue;
            }
            if entry.index <= self.log.snapshot_index() {
                continue;
            }
            let existing = self.log.term_at(entry.index);
            match existing {
                Some(term) if term == entry.term => continue,
                Some(_) if entry.index <= self.commit_index => return false,
                _ => {}
            }
            let predecessor = self.log.term_at(entry.index - 1);
            if predecessor.is_some_and(|term| entry.term < term) {
                return false; // Would make log terms decrease: not from an honest leader.
            }
            if existing.is_some() {
                self.truncate_log(entry.index);
            }
            appending = true;
            self.append_received(entry.clone());
        }
        true
    }

    /// The leader learns a follower's answer: advance its progress and maybe the commit
    /// index, or back up its next index with the conflict hint.
    pub(crate) fn on_append_entries_response(
        &mut self,
        from: NodeId,
        success: bool,
        index: LogIndex,
        conflict_term: Option<Term>,
        conflict_index: LogIndex,
        round: u64,
    ) {
        let now = self.now;
        let last_index = self.log.last_index();
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let current_round = leader.round;
        let Some(progress) = leader.progress.get_mut(&from) else {
            return;
        };
        progress.last_heard = now;
        progress.acked_round = progress.acked_round.max(round.min(current_round));
        if success {
            if index <= last_index && progress.acknowledge(index) {
                self.maybe_commit();
                self.maybe_send_timeout_now(from);
            }
        } else if conflict_term.is_none()
            && conflict_index > 0
            && conflict_index <= progress.match_index
            && index >= conflict_index
            && !matches!(progress.state, ProgressState::Snapshot { .. })
        {
            // The follower's log ends before what it acknowledged: it lost the tail of its log
            // (a damaged write-ahead log truncated on restart). Believe it and probe from its
            // end; otherwise every probe would stop at the old match index and it would never
            // catch up.
            progress.match_index = conflict_index - 1;
            progress.become_probe(conflict_index);
        } else {
            let hint = backtrack_hint(&self.log, conflict_term, conflict_index);
            let stale = match &progress.state {
                ProgressState::Replicate { .. } => index <= progress.match_index,
                ProgressState::Probe { .. } => index != progress.next_index - 1,
                ProgressState::Snapshot { .. } => true,
            };
            if stale {
                if let ProgressState::Probe { paused } = &mut progress.state {
                    *paused = false;
                }
            } else {
                progress.become_probe(hint.min(index).min(last_index + 1).max(1));
            }
        }
        self.send_append(from, false);
        // The acknowledged round may confirm waiting reads: the flush that ends every leader
        // step (`flush_leader_sends`) releases them, right after this handler returns.
    }

    /// §5.3, §5.4.2: the highest index stored on a quorum (the leader counting only its durable
    /// prefix) is committed if it belongs to the current term.
    pub(crate) fn maybe_commit(&mut self) {
        let Some(leader) = &self.leader else {
            return;
        };
        let own = self.durable_index.min(self.log.last_index());
        let id = self.id;
        let quorum_index = self
            .log
            .membership()
            .quorum_value(&mut self.scratch, |peer| {
                if peer == id {
                    own
                } else {
                    leader.progress.get(&peer).map_or(0, |p| p.match_index)
                }
            });
        if quorum_index > self.commit_index
            && quorum_index != u64::MAX
            && self.log.term_at(quorum_index) == Some(self.current_term)
        {
            self.note_forwarded_commits(self.commit_index, quorum_index);
            self.commit_index = quorum_index;
            self.on_leader_commit();
        }
    }

    fn on_leader_commit(&mut self) {
        self.apply_committed();
        self.maybe_leave_joint();
        let commit_index = self.commit_index;
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        if commit_index >= leader.term_start_index && !leader.reads_awaiting_term_commit.is_empty()
        {
            self.release_reads_awaiting_term_commit();
        }
    }
}

/// Batches of entries for AppendEntries, built once per step and shared by every follower
/// that needs the same one (no copy per follower).
#[derive(Clone, Debug)]
pub(crate) struct Batches<C> {
    /// The empty batch (heartbeats, probes of caught-up followers).
    pub empty: Arc<[Entry<C>]>,
    /// The last batch built this step.
    last: Option<Batch<C>>,
}

/// A batch: its first index, its length and its entries.
type Batch<C> = (LogIndex, usize, Arc<[Entry<C>]>);

impl<C: Clone> Batches<C> {
    /// No batches yet.
    pub fn new() -> Self {
        Batches {
            empty: Arc::from(Vec::new()),
            last: None,
        }
    }

    /// The entries for one AppendEntries from `from`, within the count and byte limits.
    pub fn batch(&mut self, log: &RaftLog<C>, from: LogIndex, config: &Config) -> Arc<[Entry<C>]> {
        let available = log.entries_from(from);
        let mut count = available.len().min(config.max_entries_per_message);
        if let Some(first) = available.first() {
            let by_bytes = config.max_bytes_per_message / first.estimated_size().max(1);
            count = count.min(by_bytes.max(1));
        }
        if count == 0 {
            return Arc::clone(&self.empty);
        }
        match &self.last {
            Some((first, length, entries)) if (*first, *length) == (from, count) => {
                Arc::clone(entries)
            }
            _ => {
                let entries: Arc<[Entry<C>]> = Arc::from(&available[..count]);
                self.last = Some((from, count, Arc::clone(&entries)));
                entries
            }
        }
    }

    /// Forgets the last batch (the log may change before the next step).
    pub fn clear(&mut self) {
        self.last = None;
    }
}

/// Where a leader should probe next after a rejection: just past its own last entry of the
/// conflict term if it has that term, otherwise the first index of that term on the follower.
fn backtrack_hint<C>(
    log: &RaftLog<C>,
    conflict_term: Option<Term>,
    conflict_index: LogIndex,
) -> LogIndex {
    match conflict_term.and_then(|term| log.last_index_of_term(term)) {
        Some(last) => last + 1,
        None => conflict_index,
    }
}

/// Rejects malformed AppendEntries (a faulty peer) instead of panicking on them: entries must
/// be consecutive after `prev_log_index`, their terms must not decrease, and none may be newer
/// than the message's term.
fn well_formed<C>(
    prev_log_index: LogIndex,
    prev_log_term: Term,
    term: Term,
    entries: &[Entry<C>],
) -> bool {
    if prev_log_index
        .checked_add(entries.len() as u64 + 1)
        .is_none()
    {
        return false;
    }
    let mut previous_term = prev_log_term;
    for (offset, entry) in (1..).zip(entries) {
        if entry.index != prev_log_index + offset || entry.term < previous_term || entry.term > term
        {
            return false;
        }
        previous_term = entry.term;
    }
    prev_log_term <= term
}
