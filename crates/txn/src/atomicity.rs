//! **Atomicity**: all participants of a transaction that decide, decide alike, and none
//! changes its decision (Bernstein, Hadzilacos and Goodman, *Concurrency Control and
//! Recovery in Database Systems*, 1987, §7.2, atomic commitment conditions AC1 and AC2).
//!
//! The checker reads each participant's decisions off the writes it emits (a participant
//! decides when it logs its decision; see [`TxnNode::participant_decision`]), so it remembers
//! the decisions of participants that crash afterwards.

use std::collections::BTreeMap;

use concord_core::{ClusterInvariant, Effect, EffectOf, NodeId, Violation};

use crate::types::{Outcome, TxnId};
use crate::TxnNode;

const NAME: &str = "atomicity";

/// Every participant's decision on every transaction seen so far.
#[derive(Clone, Debug, Default)]
pub struct Atomicity {
    decisions: BTreeMap<TxnId, BTreeMap<NodeId, Outcome>>,
}

impl Atomicity {
    /// A checker that has seen nothing.
    pub fn new() -> Self {
        Atomicity::default()
    }

    /// Records that `node` decided `outcome` for `txn`; fails if that contradicts a decision
    /// seen before (by any participant).
    pub fn record(&mut self, node: NodeId, txn: TxnId, outcome: Outcome) -> Result<(), Violation> {
        let decided = self.decisions.entry(txn).or_default();
        if let Some(&previous) = decided.get(&node) {
            if previous != outcome {
                return Err(Violation::on_node(
                    NAME,
                    node,
                    format!(
                        "{txn}: decided {} after deciding {}",
                        outcome.name(),
                        previous.name()
                    ),
                ));
            }
            return Ok(());
        }
        if let Some((&other, &theirs)) = decided.iter().find(|(_, &o)| o != outcome) {
            return Err(Violation::cluster(
                NAME,
                format!(
                    "{txn}: participant {node} decided {} but participant {other} decided {}",
                    outcome.name(),
                    theirs.name()
                ),
            ));
        }
        decided.insert(node, outcome);
        Ok(())
    }

    /// Transactions some participant decided, with each one's decision.
    pub fn decisions(&self) -> &BTreeMap<TxnId, BTreeMap<NodeId, Outcome>> {
        &self.decisions
    }
}

impl<N: TxnNode> ClusterInvariant<N> for Atomicity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check(
        &mut self,
        _nodes: &[Option<&N>],
        stepped: NodeId,
        effects: &[EffectOf<N>],
    ) -> Result<(), Violation> {
        for effect in effects {
            if let Effect::Persist { write, .. } = effect {
                if let Some((txn, outcome)) = N::participant_decision(write) {
                    self.record(stepped, txn, outcome)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TxnId = TxnId {
        epoch: 1,
        sequence: 1,
    };

    #[test]
    fn participants_that_agree_pass_and_one_that_disagrees_fails() {
        let mut checker = Atomicity::new();
        checker.record(1, T, Outcome::Commit).unwrap();
        checker.record(2, T, Outcome::Commit).unwrap();
        checker.record(2, T, Outcome::Commit).unwrap();
        let violation = checker.record(3, T, Outcome::Abort).unwrap_err();
        assert_eq!(violation.invariant, "atomicity");
        assert!(violation.detail.contains("participant 3 decided abort"));
    }

    #[test]
    fn a_participant_that_changes_its_mind_fails() {
        let mut checker = Atomicity::new();
        checker.record(1, T, Outcome::Abort).unwrap();
        let violation = checker.record(1, T, Outcome::Commit).unwrap_err();
        assert_eq!(violation.node, Some(1));
    }
}
