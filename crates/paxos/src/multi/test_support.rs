//! What the Multi-Paxos test modules share: the node type under test and finding its leader.

use concord_core::time::MILLISECOND;
use concord_core::{KvStateMachine, Node, NodeId};

use super::MultiPaxos;
use crate::testing::Harness;

/// The node type under test.
pub(super) type Kv = MultiPaxos<KvStateMachine>;

/// The node that believes it leads, if any.
pub(super) fn leader(harness: &Harness<Kv>) -> Option<NodeId> {
    harness
        .nodes
        .iter()
        .flatten()
        .find(|n| n.is_leader())
        .map(Node::id)
}

/// Runs in steps of 100 ms (up to 6 s) until a node leads; returns it.
pub(super) fn settle(harness: &mut Harness<Kv>) -> NodeId {
    for _ in 0..60 {
        harness.run_for(100 * MILLISECOND);
        if let Some(chief) = leader(harness) {
            return chief;
        }
    }
    panic!("no leader");
}
