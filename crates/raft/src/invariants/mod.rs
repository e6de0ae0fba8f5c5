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
        Box::new(StateMachineSafety::<RaftNode<S>>::default()),
        Box::new(MonotonicProgress::default()),
        Box::new(CommittedDurable::default()),
    ]
}

/// Per-node records, indexed by node id (ids are small: `0..n`), so that a check costs no map
/// lookup.
#[derive(Debug, Clone)]
pub(crate) struct NodeTable<T> {
    slots: Vec<Option<T>>,
}

impl<T> Default for NodeTable<T> {
    fn default() -> Self {
        NodeTable { slots: Vec::new() }
    }
}

impl<T> NodeTable<T> {
    fn slot(&mut self, id: NodeId) -> &mut Option<T> {
        let index = usize::try_from(id).expect("node ids are small");
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        &mut self.slots[index]
    }

    /// Records `value` for `id`, returning the previous record.
    pub fn insert(&mut self, id: NodeId, value: T) -> Option<T> {
        self.slot(id).replace(value)
    }

    /// The record for `id`.
    pub fn get(&self, id: NodeId) -> Option<&T> {
        self.slots.get(usize::try_from(id).ok()?)?.as_ref()
    }

    /// The record for `id`, created with `value` if there is none.
    pub fn get_or_insert(&mut self, id: NodeId, value: T) -> &mut T {
        self.slot(id).get_or_insert(value)
    }

    /// Forgets `id`.
    pub fn remove(&mut self, id: NodeId) {
        if let Ok(index) = usize::try_from(id) {
            if let Some(slot) = self.slots.get_mut(index) {
                *slot = None;
            }
        }
    }
}

/// The node that just stepped, if it is up.
fn stepped_node<'a, S: StateMachine>(
    nodes: &[Option<&'a RaftNode<S>>],
    stepped: NodeId,
) -> Option<&'a RaftNode<S>> {
    nodes.get(usize::try_from(stepped).ok()?).copied().flatten()
}
