//! **Election Safety** (paper Figure 3, §5.2; TLA+ `ElectionSafety`): at most one leader can be
//! elected in a given term — tracked over the whole run, across crashes.

use std::collections::BTreeMap;

use concord_core::{ClusterInvariant, EffectOf, NodeId, StateMachine, Violation};

use super::stepped_node;
use crate::{RaftNode, Term};

/// Remembers the leader of every term seen.
#[derive(Debug, Default)]
pub struct ElectionSafety {
    leaders: BTreeMap<Term, NodeId>,
}

impl<S: StateMachine + Default> ClusterInvariant<RaftNode<S>> for ElectionSafety {
    fn name(&self) -> &'static str {
        "election-safety"
    }

    fn check(
        &mut self,
        nodes: &[Option<&RaftNode<S>>],
        stepped: NodeId,
        _effects: &[EffectOf<RaftNode<S>>],
    ) -> Result<(), Violation> {
        let Some(node) = stepped_node(nodes, stepped).filter(|n| n.is_leader()) else {
            return Ok(());
        };
        let term = node.current_term();
        let leader = *self.leaders.entry(term).or_insert(stepped);
        if leader != stepped {
            return Err(Violation::cluster(
                "election-safety",
                format!("nodes {leader} and {stepped} were both leaders of term {term}"),
            ));
        }
        Ok(())
    }
}
