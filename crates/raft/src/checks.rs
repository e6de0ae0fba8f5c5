//! A node's local invariants (paper Figure 2 and §5), checked after every simulator step. They
//! are O(peers): the per-entry properties (consecutive indexes, non-decreasing terms) are
//! asserted when entries are appended (`RaftLog::append`).

use concord_core::{StateMachine, Violation};

use crate::node::{RaftNode, RaftRole};

const NAME: &str = "raft-local";

impl<S: StateMachine> RaftNode<S> {
    /// Checks the node's own state.
    pub(crate) fn check_local_invariants(&self) -> Result<(), Violation> {
        let fail = |detail: String| Err(Violation::on_node(NAME, self.id, detail));
        let last_index = self.log.last_index();
        if !(self.log.snapshot_index() <= self.last_applied
            && self.last_applied <= self.commit_index
            && self.commit_index <= last_index)
        {
            return fail(format!(
                "expected snapshot {} <= applied {} <= commit {} <= last index {last_index}",
                self.log.snapshot_index(),
                self.last_applied,
                self.commit_index
            ));
        }
        if self.log.last_term() > self.current_term {
            return fail(format!(
                "last log term {} is newer than the current term {}",
                self.log.last_term(),
                self.current_term
            ));
        }
        if self
            .log
            .entries()
            .first()
            .is_some_and(|e| e.term < self.log.snapshot_term())
        {
            return fail("the first entry's term is older than the snapshot's".into());
        }
        if self.durable_index > last_index {
            return fail(format!(
                "durable index {} is past the last index {last_index}",
                self.durable_index
            ));
        }
        self.check_role_invariants()
    }

    fn check_role_invariants(&self) -> Result<(), Violation> {
        let fail = |detail: String| Err(Violation::on_node(NAME, self.id, detail));
        match self.role {
            RaftRole::Leader | RaftRole::Candidate if self.voted_for != Some(self.id) => {
                return fail(format!(
                    "a {:?} of term {} voted for {:?}, not itself",
                    self.role, self.current_term, self.voted_for
                ));
            }
            RaftRole::Leader => {}
            _ if self.leader.is_some() => return fail("a non-leader holds leader state".into()),
            _ => return Ok(()),
        }
        let Some(leader) = &self.leader else {
            return fail("a leader without leader state".into());
        };
        if self.leader_id != Some(self.id) {
            return fail(format!("a leader believing in {:?}", self.leader_id));
        }
        if self
            .log
            .term_at(leader.term_start_index)
            .is_some_and(|t| t != self.current_term)
        {
            return fail("the leader's no-op is not of its term".into());
        }
        let next_bound = self.log.last_index() + 1;
        for (peer, progress) in &leader.progress {
            if progress.match_index >= progress.next_index || progress.next_index > next_bound {
                return fail(format!(
                    "peer {peer}: match {} next {} (last index {})",
                    progress.match_index,
                    progress.next_index,
                    self.log.last_index()
                ));
            }
        }
        Ok(())
    }
}
