//! Cluster-wide safety properties of Raft (paper Figure 3), checked by the simulator after
//! every step. Each lives in its own file and cites its source. All are incremental: a check
//! costs O(new entries, new commits, new applies) plus O(nodes), never a whole-log comparison.
//!
//! They rely on node ids being the indexes of the `nodes` slice (`nodes[i]` is node `i`).

mod committed_durable;
mod election_safety;
mod leader_append_only;
mod leader_completeness;
mod log_matching;
mod monotonic;
mod state_machine_safety;

pub use committed_durable::CommittedDurable;
pub use election_safety::ElectionSafety;
pub use leader_append_only::LeaderAppendOnly;
pub use leader_completeness::LeaderCompleteness;
pub use log_matching::LogMatching;
pub use monotonic::MonotonicProgress;
pub use state_machine_safety::StateMachineSafety;

use concord_core::{ClusterInvariant, NodeId, StateMachine};

use crate::RaftNode;

/// Every Raft safety checker, fresh (they remember what they saw over a whole run).
pub fn invariants<S>() -> Vec<Box<dyn ClusterInvariant<RaftNode<S>>>>
where
    S: StateMachine + Default + 'static,
{
    vec![
        Box::new(ElectionSafety::default()),
        Box::new(LeaderAppendOnly::default()),
        Box::new(LogMatching::<S::Command>::default()),
        Box::new(LeaderCompleteness::default()),
        Box::new(StateMachineSafety::<S::Command>::default()),
        Box::new(MonotonicProgress::default()),
        Box::new(CommittedDurable::default()),
    ]
}

/// The node that just stepped, if it is up.
fn stepped_node<'a, S: StateMachine>(
    nodes: &[Option<&'a RaftNode<S>>],
    stepped: NodeId,
) -> Option<&'a RaftNode<S>> {
    nodes.get(usize::try_from(stepped).ok()?).copied().flatten()
}
