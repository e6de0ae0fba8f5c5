//! Applying committed entries to the state machine in log order (paper §5.3, Figure 2 "if
//! commitIndex > lastApplied: increment lastApplied, apply log[lastApplied]"), answering the
//! proposals and reads that waited for them, and taking snapshots (§7, thesis §5.1).
//!
//! Every applied *command* is reported with `Effect::Apply`; no-op and configuration entries
//! are not (they are not state-machine commands).

use std::sync::Arc;

use concord_core::{Effect, StateMachine};

use crate::node::RaftNode;
use crate::{Payload, ProposalOrigin, Response, Snapshot, SnapshotMeta};

impl<S: StateMachine> RaftNode<S> {
    /// Applies every committed entry not applied yet, then serves reads and maybe snapshots.
    pub(crate) fn apply_committed(&mut self) {
        let mut applied_term = None;
        while self.last_applied < self.commit_index {
            let index = self.last_applied + 1;
            let Some(entry) = self.log.entry(index) else {
                panic!(
                    "node {}: committed entry {index} is missing (log {}..={})",
                    self.id,
                    self.log.first_index(),
                    self.log.last_index()
                );
            };
            let payload = entry.payload.clone();
            let term = entry.term;
            applied_term = Some(term);
            self.last_applied = index;
            let unclaimed = match payload {
                Payload::Command(command) => self.apply_command(index, &command, None),
                Payload::Forwarded { command, origin } => {
                    self.apply_command(index, &command, Some(origin));
                    None
                }
                Payload::Membership(_) => {
                    self.on_membership_applied(index);
                    None
                }
                Payload::Noop => None,
            };
            self.settle_deposed(index, term, unclaimed);
        }
        if let Some(term) = applied_term {
            self.drop_superseded_forwards(term);
        }
        self.serve_applied_reads();
        self.maybe_take_snapshot();
    }

    /// Applies one command; answers its client if this node holds the request: the leader
    /// its own proposals, a follower those it forwarded (`origin`). Returns the output of a
    /// plain command no request of the leader took (a deposed leader's proposal may).
    fn apply_command(
        &mut self,
        index: u64,
        command: &S::Command,
        origin: Option<ProposalOrigin>,
    ) -> Option<S::Output> {
        let output = self.state_machine.apply(command);
        self.early_effects.push(Effect::Apply {
            index,
            command: command.clone(),
        });
        if let Some(origin) = origin {
            if let Some(id) = self.take_forwarded(&origin) {
                self.reply(id, Response::Applied { index, output });
            }
            return None;
        }
        let Some(leader) = self.leader.as_mut() else {
            return Some(output);
        };
        while leader
            .proposals
            .front()
            .is_some_and(|(proposed, _)| *proposed < index)
        {
            leader.proposals.pop_front();
        }
        if leader
            .proposals
            .front()
            .is_some_and(|(proposed, _)| *proposed == index)
        {
            let (_, id) = leader.proposals.pop_front().expect("checked above");
            self.reply(id, Response::Applied { index, output });
            return None;
        }
        Some(output)
    }

    /// Thesis §5.1: once enough entries were applied since the last snapshot, the state
    /// machine's state replaces them; the write is persisted, the log compacted.
    fn maybe_take_snapshot(&mut self) {
        let since = self.last_applied - self.log.snapshot_index();
        if since < self.config.snapshot_threshold {
            return;
        }
        let index = self.last_applied;
        let term = self
            .log
            .term_at(index)
            .expect("the applied entry is in the log");
        let membership = self.log.membership_at(index).clone();
        let snapshot = Snapshot {
            meta: Arc::new(SnapshotMeta {
                last_index: index,
                last_term: term,
                membership,
            }),
            data: self.state_machine.snapshot_parts(),
        };
        self.compact_log(snapshot, true);
    }
}
