//! **Committed implies durable on a quorum** (paper §5.3 and §5.4: an entry is committed once
//! stored on a majority; Figure 2 "persistent state ... updated on stable storage before
//! responding to RPCs"). Whenever a leader's commit index advances to `c`, a quorum of its
//! configuration must hold entry `c`: the leader itself in its *confirmed durable* prefix, each
//! follower in the prefix it has handed to a `Persist` (the driver releases its acknowledgement
//! only once that is durable). For a crashed follower the last prefix seen is used.

use concord_core::{ClusterInvariant, EffectOf, NodeId, StateMachine, Violation};

use super::{stepped_node, NodeTable};
use crate::{LogIndex, RaftNode, Term};

const NAME: &str = "committed-durable-on-quorum";

/// What each node was last seen to have written, and its commit index at its last step.
#[derive(Debug, Default)]
pub struct CommittedDurable {
    written: NodeTable<LogIndex>,
    /// Per node: incarnation, term and commit index at its last step.
    last_seen: NodeTable<(u64, Term, LogIndex)>,
}

impl CommittedDurable {
    fn holds<S: StateMachine>(
        &self,
        nodes: &[Option<&RaftNode<S>>],
        leader: &RaftNode<S>,
        voter: NodeId,
        commit: LogIndex,
    ) -> bool {
        if voter == leader.id {
            return leader.durable_index() >= commit;
        }
        match stepped_node(nodes, voter) {
            Some(node) => {
                let log = node.log();
                node.written_index() >= commit
                    && (commit <= log.snapshot_index()
                        || log.term_at(commit) == leader.log().term_at(commit))
            }
            None => self.written.get(voter).is_some_and(|&w| w >= commit),
        }
    }
}

impl<S: StateMachine + Default> ClusterInvariant<RaftNode<S>> for CommittedDurable {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check(
        &mut self,
        nodes: &[Option<&RaftNode<S>>],
        stepped: NodeId,
        _effects: &[EffectOf<RaftNode<S>>],
    ) -> Result<(), Violation> {
        let Some(node) = stepped_node(nodes, stepped) else {
            return Ok(());
        };
        let commit = node.commit_index();
        let now = (node.incarnation(), node.current_term(), commit);
        if self.last_seen.get(stepped) == Some(&now)
            && self.written.get(stepped) == Some(&node.written_index())
        {
            return Ok(()); // Nothing moved since the last step: the commit index did not advance.
        }
        self.written.insert(stepped, node.written_index());
        let before = self.last_seen.insert(stepped, now);
        // Only an advance made by this leader in its term counts: a node that learned a commit
        // index as a follower and then won an election did not commit anything itself.
        let advanced = before.is_some_and(|(started, term, previous)| {
            (started, term) == (now.0, now.1) && commit > previous
        });
        if !node.is_leader() || !advanced || commit <= node.log().snapshot_index() {
            return Ok(());
        }
        if node
            .membership()
            .is_quorum(|voter| self.holds(nodes, node, voter, commit))
        {
            return Ok(());
        }
        let holders: Vec<String> = node
            .membership()
            .members()
            .into_iter()
            .map(|voter| match stepped_node(nodes, voter) {
                Some(n) => format!(
                    "{voter}: durable {} written {} term {:?}",
                    n.durable_index(),
                    n.written_index(),
                    n.log().term_at(commit)
                ),
                None => format!("{voter}: down, written {:?}", self.written.get(voter)),
            })
            .collect();
        Err(Violation::on_node(
            NAME,
            stepped,
            format!(
                "leader of term {} committed index {commit} (term {:?}), which is not durable on a quorum of {:?}: {holders:?}",
                node.current_term(),
                node.log().term_at(commit),
                node.membership()
            ),
        ))
    }
}
