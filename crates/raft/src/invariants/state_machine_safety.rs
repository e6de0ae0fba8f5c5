//! **State Machine Safety** (paper Figure 3, §5.4.3): if a server has applied a log entry at a
//! given index to its state machine, no other server will ever apply a different log entry for
//! the same index. Checked from the `Effect::Apply` records, O(applies).

use concord_core::{ClusterInvariant, Effect, EffectOf, NodeId, StateMachine, Violation};

use crate::RaftNode;

/// The command applied at every index so far.
#[derive(Debug)]
pub struct StateMachineSafety<C> {
    /// `applied[i - 1]` is the command applied at index `i`.
    applied: Vec<Option<C>>,
}

impl<C> Default for StateMachineSafety<C> {
    fn default() -> Self {
        StateMachineSafety {
            applied: Vec::new(),
        }
    }
}

impl<S: StateMachine + Default> ClusterInvariant<RaftNode<S>> for StateMachineSafety<S::Command> {
    fn name(&self) -> &'static str {
        "state-machine-safety"
    }

    fn check(
        &mut self,
        _nodes: &[Option<&RaftNode<S>>],
        stepped: NodeId,
        effects: &[EffectOf<RaftNode<S>>],
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
