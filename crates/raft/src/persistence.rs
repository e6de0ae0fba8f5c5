//! Persistence bookkeeping and the order of effects (paper Figure 2: persistent state is
//! "updated on stable storage before responding to RPCs"; the Concord contract makes every
//! `Persist` a barrier for later sends).
//!
//! Handlers change the log in memory and mark what must be written; at the end of each step
//! [`RaftNode::flush`] emits, in this order:
//!
//! 1. `Apply` and `Reply` effects (they depend on commitment, never on local durability);
//! 2. `Persist` of the hard state if the term or vote changed (§5.1: before any message);
//! 3. `Persist` of snapshot and log writes, in the order they happened (a leader with a
//!    write in flight holds new entries back and writes them together once it is confirmed);
//! 4. `Send`s — after the barriers, so a vote or an acknowledgement is released only once the
//!    state it promises is durable. A leader's sends come before its log writes instead: none
//!    of them depends on its own log being durable, and its log writes are no barrier
//!    (`Write::Append { by_leader: true }`), so later sends do not wait for them either. A
//!    leader that steps down makes no durability claim before it persists a new term (a
//!    barrier that follows all its earlier writes).
//!
//! Confirmations (`Input::Persisted`) advance the durable index, which is all a leader counts of
//! its own log towards commitment.

use concord_core::{Effect, PersistToken, Rng, StateMachine};

use crate::node::{RaftEffect, RaftNode, RaftRole};
use crate::{Entry, HardState, LogIndex, Payload, Snapshot, Term, Write};

/// A write waiting for the driver's confirmation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingWrite {
    /// The write's token.
    pub token: PersistToken,
    /// The log prefix through this index is durable once the write is.
    pub durable_index: LogIndex,
    /// The hard state's term as of this write.
    pub term: Term,
}

impl<S: StateMachine> RaftNode<S> {
    /// Appends an entry at the end of the log; it is persisted at the end of this step.
    pub(crate) fn append_to_log(&mut self, term: Term, payload: Payload<S::Command>) -> LogIndex {
        let index = self.log.last_index() + 1;
        self.log.append(Entry {
            index,
            term,
            payload,
        });
        self.log_dirty_from.get_or_insert(index);
        index
    }

    /// Appends an entry received from the leader.
    pub(crate) fn append_received(&mut self, entry: Entry<S::Command>) {
        let index = entry.index;
        self.log.append(entry);
        self.log_dirty_from.get_or_insert(index);
    }

    /// Removes the log suffix from `from` (§5.3); what was durable beyond it no longer counts.
    pub(crate) fn truncate_log(&mut self, from: LogIndex) {
        self.log.truncate_from(from);
        self.limit_durable(from - 1);
        self.leader_match = self.leader_match.min(from - 1);
        self.log_dirty_from = Some(self.log_dirty_from.map_or(from, |d| d.min(from)));
    }

    /// Caps every durability claim at `index` (after a truncation or a discarded log).
    pub(crate) fn limit_durable(&mut self, index: LogIndex) {
        self.durable_index = self.durable_index.min(index);
        self.written_index = self.written_index.min(index);
        for write in &mut self.pending_writes {
            write.durable_index = write.durable_index.min(index);
        }
    }

    /// Makes `snapshot` the node's snapshot: compacts the log through it (§7) and queues its
    /// write — after any log write made earlier in this step, which must reach storage first.
    /// Stores `snapshot` and compacts the log through it: `own` for a snapshot of this node's
    /// applied state (no barrier, [`Write::Compact`]), else one installed from the leader.
    pub(crate) fn compact_log(&mut self, snapshot: Snapshot, own: bool) {
        self.flush_log_write();
        let meta = &snapshot.meta;
        self.log
            .compact(meta.last_index, meta.last_term, meta.membership.clone());
        self.queued_writes.push(if own {
            Write::Compact(snapshot.clone())
        } else {
            Write::Snapshot(snapshot.clone())
        });
        self.snapshot = Some(snapshot);
    }

    fn flush_log_write(&mut self) {
        if let Some(from) = self.log_dirty_from.take() {
            let entries = self.log.entries_from(from).to_vec();
            if !entries.is_empty() {
                self.queued_writes.push(Write::Append {
                    entries,
                    by_leader: false,
                });
            }
        }
    }

    pub(crate) fn on_persisted(&mut self, token: PersistToken) {
        while let Some(write) = self.pending_writes.front() {
            if write.token > token {
                break;
            }
            self.durable_index = self
                .durable_index
                .max(write.durable_index)
                .min(self.log.last_index());
            self.durable_term = self.durable_term.max(write.term);
            self.pending_writes.pop_front();
        }
        if self.role == RaftRole::Leader {
            self.maybe_commit();
        }
    }

    // ----- the step -----

    /// Emits everything this step produced, in the order the contract needs (module docs).
    pub(crate) fn flush(&mut self, rng: &mut Rng, effects: &mut Vec<RaftEffect<S>>) {
        self.forward_reads();
        self.forward_proposals();
        let leading = self.role == RaftRole::Leader;
        if leading {
            self.flush_leader_sends();
        }
        self.needs_round = false;
        // Held back only while leading: any other role has nothing to broadcast.
        self.needs_broadcast = leading && self.hold_broadcast && self.needs_broadcast;
        if !leading {
            self.commit_notify.clear();
        }
        self.batches.clear();
        if self.election_timer_reset {
            self.election_timer_reset = false;
            self.election_deadline = self.random_election_deadline(rng);
        }
        if self.hurry_election {
            self.hurry_election = false;
            let soon =
                self.now + rand::Rng::gen_range(rng, 0..=self.config.election_timeout_min / 4);
            self.election_deadline = self.election_deadline.min(soon);
        }
        effects.append(&mut self.early_effects);
        let hard_state = HardState {
            current_term: self.current_term,
            voted_for: self.voted_for,
        };
        if hard_state != self.persisted_hard_state {
            self.persisted_hard_state = hard_state.clone();
            self.emit_write(Write::HardState(hard_state), effects);
        }
        if leading {
            // A leader's messages never depend on its own log writes (it counts itself only
            // for entries it knows are durable), so they go first: followers receive entries
            // while the leader writes them (thesis §10.2.1).
            self.emit_sends(effects);
            self.emit_log_writes(effects);
        } else {
            self.emit_log_writes(effects);
            self.emit_sends(effects);
        }
    }

    /// A leader's heartbeat round, new entries and read confirmations. New entries leave at
    /// once, while the leader's own write of them is in flight: its log appends are no barrier
    /// ([`Write::Append::by_leader`]), so followers write in parallel with the leader (thesis
    /// §10.2.1).
    fn flush_leader_sends(&mut self) {
        self.confirm_reads();
        let new_round = self.needs_round;
        if new_round {
            self.broadcast_heartbeat();
        }
        if self.needs_broadcast && !self.hold_broadcast {
            self.broadcast_append();
        }
        // Sending entries changes nothing `confirm_reads` looks at (acknowledged rounds, the
        // waiting reads, the configuration); a new round can (a lone voter confirms its own
        // round at once), so only then is it run again.
        if new_round {
            self.confirm_reads();
        }
        self.send_commit_notices();
    }

    /// Group commit (thesis §10.2.1): while one of a leader's writes is in flight, new entries
    /// accumulate and leave in one write when it is confirmed.
    fn emit_log_writes(&mut self, effects: &mut Vec<RaftEffect<S>>) {
        let group_commit = self.role == RaftRole::Leader
            && !self.pending_writes.is_empty()
            && self.queued_writes.is_empty();
        if !group_commit {
            self.flush_log_write();
        }
        let mut writes = std::mem::take(&mut self.queued_writes);
        for write in writes.drain(..) {
            self.emit_write(write, effects);
        }
        self.queued_writes = writes;
    }

    fn emit_sends(&mut self, effects: &mut Vec<RaftEffect<S>>) {
        effects.extend(
            self.outbox
                .drain(..)
                .map(|(to, message)| Effect::Send { to, message }),
        );
    }

    fn emit_write(&mut self, write: Write<S::Command>, effects: &mut Vec<RaftEffect<S>>) {
        self.next_token += 1;
        let token = self.next_token;
        // Decided at the end of the step, when the role is final: a node that is leader now
        // sends nothing that depends on this write.
        let write = match write {
            Write::Append { entries, .. } => Write::Append {
                entries,
                by_leader: self.role == RaftRole::Leader,
            },
            other => other,
        };
        let durable_index = match &write {
            Write::HardState(_) => 0,
            Write::Append { entries, .. } => entries.last().map_or(0, |e| e.index),
            Write::Snapshot(snapshot) | Write::Compact(snapshot) => snapshot.meta.last_index,
        };
        self.written_index = self.written_index.max(durable_index);
        self.pending_writes.push_back(PendingWrite {
            token,
            durable_index,
            term: self.persisted_hard_state.current_term,
        });
        effects.push(Effect::Persist { token, write });
    }
}
