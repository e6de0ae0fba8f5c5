//! **Monotonic term and commit index** (paper Figure 2: `currentTerm` "increases
//! monotonically"; §5.3: committed entries are never lost). Within one incarnation a node's
//! term and commit index never decrease. Across a restart the term must not fall below the
//! last *durable* term (a confirmed hard state survives a crash; an unconfirmed one may not),
//! while the commit index restarts from the snapshot.

use concord_core::{ClusterInvariant, EffectOf, NodeId, StateMachine, Violation};

use super::{stepped_node, NodeTable};
use crate::{LogIndex, RaftNode, Term};

const NAME: &str = "monotonic-term-and-commit";

#[derive(Debug, Clone, Copy, PartialEq)]
struct Seen {
    incarnation: u64,
    term: Term,
    durable_term: Term,
    commit: LogIndex,
}

/// What was last seen of each node.
#[derive(Debug, Default)]
pub struct MonotonicProgress {
    seen: NodeTable<Seen>,
}

impl<S: StateMachine + Default> ClusterInvariant<RaftNode<S>> for MonotonicProgress {
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
        let now = Seen {
            incarnation: node.incarnation(),
            term: node.current_term(),
            durable_term: node.durable_term(),
            commit: node.commit_index(),
        };
        if self.seen.get(stepped) == Some(&now) {
            return Ok(()); // Nothing moved since the last step: nothing to check or record.
        }
        let fail = |detail: String| Err(Violation::on_node(NAME, stepped, detail));
        if let Some(before) = self.seen.insert(stepped, now) {
            if before.incarnation == now.incarnation {
                if now.term < before.term {
                    return fail(format!("term went from {} to {}", before.term, now.term));
                }
                if now.commit < before.commit {
                    return fail(format!(
                        "commit index went from {} to {}",
                        before.commit, now.commit
                    ));
                }
            } else if now.term < before.durable_term {
                return fail(format!(
                    "restarted in term {} below its durable term {}",
                    now.term, before.durable_term
                ));
            }
        }
        Ok(())
    }
}
