//! Sending and installing snapshots (paper §7, thesis chapter 5).
//!
//! A leader whose follower needs compacted entries streams its latest snapshot in chunks of
//! `Config::snapshot_chunk_size` bytes, one chunk in flight (resent on heartbeats). The follower
//! assembles the chunks, restores its state machine, persists the snapshot (`Write::Snapshot`)
//! and only then — the persist being a barrier — acknowledges it. If its log holds the
//! snapshot's last entry, the entries after it are kept; otherwise the log is discarded.

use std::sync::Arc;

use concord_core::{NodeId, StateBytes, StateMachine};

use crate::node::{RaftNode, RaftRole};
use crate::progress::ProgressState;
use crate::{LogIndex, Message, Snapshot, SnapshotMeta, Term};

impl<S: StateMachine> RaftNode<S> {
    /// Switches `peer` to receiving the leader's latest snapshot.
    pub(crate) fn start_snapshot(&mut self, peer: NodeId) {
        let Some(snapshot) = self.snapshot.clone() else {
            panic!(
                "node {}: log compacted to {} without a snapshot",
                self.id,
                self.log.snapshot_index()
            );
        };
        let Some(progress) = self
            .leader
            .as_mut()
            .and_then(|leader| leader.progress.get_mut(&peer))
        else {
            return;
        };
        progress.state = ProgressState::Snapshot {
            snapshot,
            offset: 0,
        };
        self.send_snapshot_chunk(peer);
    }

    /// Sends the chunk at the current offset.
    pub(crate) fn send_snapshot_chunk(&mut self, peer: NodeId) {
        let term = self.current_term;
        let chunk_size = self.config.snapshot_chunk_size as u64;
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let round = leader.round;
        let Some(progress) = leader.progress.get_mut(&peer) else {
            return;
        };
        let ProgressState::Snapshot { snapshot, offset } = &progress.state else {
            return;
        };
        let total = snapshot.data.len() as u64;
        let start = (*offset).min(total);
        let end = (start + chunk_size).min(total);
        let data: Arc<[u8]> = Arc::from(&snapshot.data.slice(start as usize..end as usize)[..]);
        let message = Message::InstallSnapshot {
            term,
            meta: Arc::clone(&snapshot.meta),
            offset: start,
            total,
            data,
            round,
        };
        self.outbox.push((peer, message));
    }

    /// The leader learns how far a follower got with the snapshot.
    pub(crate) fn on_install_snapshot_response(
        &mut self,
        from: NodeId,
        snapshot_index: LogIndex,
        next_offset: u64,
        done: bool,
        round: u64,
    ) {
        let now = self.now;
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let current_round = leader.round;
        let Some(progress) = leader.progress.get_mut(&from) else {
            return;
        };
        progress.last_heard = now;
        progress.acked_round = progress.acked_round.max(round.min(current_round));
        let sending = match &mut progress.state {
            ProgressState::Snapshot { snapshot, offset }
                if snapshot.meta.last_index == snapshot_index =>
            {
                *offset = next_offset.min(snapshot.data.len() as u64);
                true
            }
            _ => false,
        };
        if done && snapshot_index <= self.log.last_index() {
            progress.match_index = progress.match_index.max(snapshot_index);
            progress.become_probe(progress.match_index + 1);
            self.maybe_commit();
            self.send_append(from, false);
        } else if sending {
            self.send_snapshot_chunk(from);
        }
        // Reads confirmed by the acknowledged round are released by the flush that ends the
        // step (`flush_leader_sends`).
    }

    /// A follower receives one chunk (paper §7 receiver implementation).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_install_snapshot(
        &mut self,
        from: NodeId,
        term: Term,
        meta: Arc<SnapshotMeta>,
        offset: u64,
        total: u64,
        data: &[u8],
        round: u64,
    ) {
        if self.role == RaftRole::Leader {
            return;
        }
        if self.role != RaftRole::Follower || self.leader_id != Some(from) {
            self.become_follower(term, Some(from));
        }
        self.note_leader_contact(from);
        let snapshot_index = meta.last_index;
        if snapshot_index <= self.commit_index {
            self.incoming_snapshot = None;
            self.answer_snapshot(from, snapshot_index, total, true, round);
            return;
        }
        let expected = match &self.incoming_snapshot {
            _ if offset == 0 => 0,
            Some((incoming, bytes)) if *incoming == meta => bytes.len() as u64,
            _ => 0,
        };
        if offset != expected {
            self.answer_snapshot(from, snapshot_index, expected, false, round);
            return;
        }
        if offset == 0 {
            self.incoming_snapshot = Some((meta, Vec::new()));
        }
        let Some((_, bytes)) = self.incoming_snapshot.as_mut() else {
            return;
        };
        bytes.extend_from_slice(data);
        let received = bytes.len() as u64;
        if received < total {
            self.answer_snapshot(from, snapshot_index, received, false, round);
            return;
        }
        let Some((meta, bytes)) = self.incoming_snapshot.take() else {
            return;
        };
        let installed = self.install_snapshot(meta, bytes);
        let next_offset = if installed { total } else { 0 };
        self.answer_snapshot(from, snapshot_index, next_offset, installed, round);
    }

    fn answer_snapshot(
        &mut self,
        to: NodeId,
        snapshot_index: LogIndex,
        next_offset: u64,
        done: bool,
        round: u64,
    ) {
        let message = Message::InstallSnapshotResponse {
            term: self.current_term,
            snapshot_index,
            next_offset,
            done,
            round,
        };
        self.send(to, message);
    }

    /// Restores the state machine from a complete snapshot and replaces the log prefix.
    /// Returns false (changing nothing) if the bytes do not restore.
    fn install_snapshot(&mut self, meta: Arc<SnapshotMeta>, bytes: Vec<u8>) -> bool {
        let mut state_machine = self.state_machine.clone();
        if state_machine.restore(&bytes).is_err() {
            return false;
        }
        self.state_machine = state_machine;
        let index = meta.last_index;
        if self.log.term_at(index) != Some(meta.last_term) {
            self.limit_durable(self.commit_index);
        }
        self.commit_index = index;
        self.last_applied = index;
        // The leader's snapshot is its committed state, so the log matches its log through
        // `index`. Entries this node forwarded to leaders of terms up to the snapshot's last
        // may be inside it, never to be applied here one by one: their outcome is unknown.
        // Those of later terms are not.
        self.leader_match = self.leader_match.max(index);
        let last_term = meta.last_term;
        self.fail_forwarded_proposals(|proposal| proposal.term <= last_term);
        self.settle_deposed_by_snapshot(index, last_term);
        self.compact_log(
            Snapshot {
                meta,
                data: StateBytes::from(bytes),
            },
            false,
        );
        self.serve_applied_reads();
        true
    }
}
