//! The safety property every replicated log shares, checked from the `Apply` effects alone:
//! no two nodes apply different commands at one index. Raft calls it State Machine Safety
//! (paper Figure 3, §5.4.3); for Multi-Paxos it is "Paxos Made Moderately Complex"'s R3
//! (replicas agree on the command in each slot). O(applies).

use std::fmt;

use crate::{ClusterInvariant, Effect, EffectOf, Node, NodeId, Violation};

/// The command applied at every index so far, by any node.
pub struct StateMachineSafety<N: Node> {
    /// `applied[i - 1]` is the command applied at index `i`.
    applied: Vec<Option<N::Command>>,
}

impl<N: Node> Default for StateMachineSafety<N> {
    fn default() -> Self {
        StateMachineSafety {
            applied: Vec::new(),
        }
    }
}

impl<N: Node> fmt::Debug for StateMachineSafety<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMachineSafety")
            .field("indices", &self.applied.len())
            .finish()
    }
}

impl<N: Node> ClusterInvariant<N> for StateMachineSafety<N> {
    fn name(&self) -> &'static str {
        "state-machine-safety"
    }

    fn check(
        &mut self,
        _nodes: &[Option<&N>],
        stepped: NodeId,
        effects: &[EffectOf<N>],
    ) -> Result<(), Violation> {
        for effect in effects {
            let Effect::Apply { index, command } = effect else {
                continue;
            };
            let Some(slot) = index.checked_sub(1).and_then(|s| usize::try_from(s).ok()) else {
                continue;
            };
            if self.applied.len() <= slot {
                self.applied.resize(slot + 1, None);
            }
            match &self.applied[slot] {
                None => self.applied[slot] = Some(command.clone()),
                Some(known) if known != command => {
                    return Err(Violation::on_node(
                        "state-machine-safety",
                        stepped,
                        format!(
                            "applied {command:?} at index {index}, where {known:?} was applied"
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}
