//! **Leader Append-Only** (paper Figure 3, §5.3): a leader never overwrites or deletes entries
//! in its log; it only appends new entries. Checked per leader and term: while a node leads a
//! term (in one incarnation) its last index never decreases and the entry it had last keeps its
//! term (compaction into a snapshot is allowed). O(1) per step.

use concord_core::{ClusterInvariant, EffectOf, NodeId, StateMachine, Violation};

use super::{stepped_node, NodeTable};
use crate::{LogIndex, RaftNode, Term};

const NAME: &str = "leader-append-only";

/// What each leader's log ended with at its last step: (incarnation, term, last index, term of
/// the last entry).
#[derive(Debug, Default)]
pub struct LeaderAppendOnly {
    last_seen: NodeTable<(u64, Term, LogIndex, Term)>,
}

impl<S: StateMachine + Default> ClusterInvariant<RaftNode<S>> for LeaderAppendOnly {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check(
        &mut self,
        nodes: &[Option<&RaftNode<S>>],
        stepped: NodeId,
        _effects: &[EffectOf<RaftNode<S>>],
    ) -> Result<(), Violation> {
        let Some(node) = stepped_node(nodes, stepped).filter(|n| n.is_leader()) else {
            self.last_seen.remove(stepped);
            return Ok(());
        };
        let log = node.log();
        let now = (
            node.incarnation(),
            node.current_term(),
            log.last_index(),
            log.last_term(),
        );
        if self.last_seen.get(stepped) == Some(&now) {
            return Ok(()); // The log ends where it did: nothing was overwritten or removed.
        }
        if let Some((incarnation, term, last_index, last_term)) =
            self.last_seen.insert(stepped, now)
        {
            let same_reign = (incarnation, term) == (now.0, now.1);
            let kept = log.last_index() >= last_index
                && !matches!(log.term_at(last_index), Some(t) if t != last_term);
            if same_reign && !kept {
                return Err(Violation::on_node(
                    NAME,
                    stepped,
                    format!(
                        "leader of term {term} had ({last_index}, {last_term}) last; now its log ends at {} and holds {:?} there",
                        log.last_index(),
                        log.term_at(last_index)
                    ),
                ));
            }
        }
        Ok(())
    }
}
