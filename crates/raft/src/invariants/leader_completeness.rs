//! **Leader Completeness** (paper Figure 3, §5.4.1, §5.4.3): if an entry is committed in a
//! given term, it is present in the logs of the leaders of all higher terms.
//!
//! The checker keeps a global record of committed (index, term), fed by each node's commit
//! index as it advances (O(new commits)); two different terms committed at one index is also
//! reported. With each entry it keeps the term in which it was seen committed (the observing
//! node's current term: never below the term of the leader that committed it). When a node
//! becomes leader of term T, its log must hold the highest entry seen committed in a term below
//! T (which, by Log Matching, implies every earlier one). Entries committed in T or later need
//! not be there: a candidate of an older term can still win with votes cast before them.

use concord_core::{ClusterInvariant, EffectOf, NodeId, StateMachine, Violation};

use super::{stepped_node, NodeTable};
use crate::{LogIndex, RaftNode, Term};

const NAME: &str = "leader-completeness";

/// The committed entries' terms, and what was seen of each node.
#[derive(Debug, Default)]
pub struct LeaderCompleteness {
    /// `committed[i - 1]` is (term of the committed entry at index `i`, earliest term in which
    /// it was seen committed); (0, 0) when not seen.
    committed: Vec<(Term, Term)>,
    /// Per node: incarnation start and the commit index already recorded.
    seen_commit: NodeTable<(u64, LogIndex)>,
    /// Per node: the last term in which it was checked as a leader.
    checked_leader_term: NodeTable<Term>,
}

impl LeaderCompleteness {
    fn record_commits<S: StateMachine>(
        &mut self,
        id: NodeId,
        node: &RaftNode<S>,
    ) -> Result<(), Violation> {
        let commit = node.commit_index();
        let seen = self
            .seen_commit
            .get_or_insert(id, (node.incarnation(), node.log().snapshot_index()));
        if seen.0 != node.incarnation() {
            *seen = (node.incarnation(), node.log().snapshot_index());
        }
        let from = seen.1.max(node.log().snapshot_index());
        seen.1 = seen.1.max(commit);
        let observed_in = node.current_term();
        for index in from + 1..=commit {
            let Some(term) = node.log().term_at(index) else {
                continue;
            };
            let slot = usize::try_from(index - 1).expect("index fits in memory");
            if self.committed.len() <= slot {
                self.committed.resize(slot + 1, (0, 0));
            }
            match self.committed[slot] {
                (0, _) => self.committed[slot] = (term, observed_in),
                (known, _) if known != term => {
                    return Err(Violation::on_node(
                        NAME,
                        id,
                        format!("index {index} committed with term {term}, but term {known} was committed there before"),
                    ))
                }
                (_, seen_in) => self.committed[slot].1 = seen_in.min(observed_in),
            }
        }
        Ok(())
    }

    fn check_new_leader<S: StateMachine>(
        &mut self,
        id: NodeId,
        node: &RaftNode<S>,
    ) -> Result<(), Violation> {
        let term = node.current_term();
        if self.checked_leader_term.insert(id, term) == Some(term) {
            return Ok(());
        }
        let Some(slot) = self
            .committed
            .iter()
            .rposition(|&(entry_term, seen_in)| entry_term != 0 && seen_in < term)
        else {
            return Ok(());
        };
        let index = slot as u64 + 1;
        let committed_term = self.committed[slot].0;
        let log = node.log();
        if index <= log.snapshot_index() || log.term_at(index) == Some(committed_term) {
            return Ok(());
        }
        Err(Violation::on_node(
            NAME,
            id,
            format!(
                "leader of term {term} lacks committed entry ({index}, {committed_term}): it has {:?}",
                log.term_at(index)
            ),
        ))
    }
}

impl<S: StateMachine + Default> ClusterInvariant<RaftNode<S>> for LeaderCompleteness {
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
        if node.is_leader() {
            self.check_new_leader(stepped, node)?;
        }
        self.record_commits(stepped, node)
    }
}
