//! Cluster configurations and quorums (Raft thesis chapter 4).
//!
//! A configuration is either simple (one voter set) or joint (`C_old,new`, §4.3): during joint
//! consensus every decision (election, commitment) needs a majority of *both* the incoming and the
//! outgoing voter sets. Learners receive the log but never vote or count towards a quorum.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use concord_core::NodeId;

/// A cluster configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The voters (in a joint configuration: the incoming voters, `C_new`).
    pub voters: BTreeSet<NodeId>,
    /// The outgoing voters `C_old` of a joint configuration; empty when not joint.
    pub outgoing_voters: BTreeSet<NodeId>,
    /// Non-voting members that receive the log.
    pub learners: BTreeSet<NodeId>,
}

/// Why a requested configuration cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MembershipError {
    /// A configuration needs at least one voter.
    #[error("a configuration needs at least one voter")]
    NoVoters,
    /// A node cannot be both a voter and a learner.
    #[error("node {node} is listed both as a voter and as a learner")]
    VoterAndLearner {
        /// The node listed twice.
        node: NodeId,
    },
}

impl Membership {
    /// A simple configuration of `voters` with no learners.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Membership {
            voters: voters.into_iter().collect(),
            ..Membership::default()
        }
    }

    /// A simple configuration with the given voters and learners, checked.
    pub fn with_learners(
        voters: impl IntoIterator<Item = NodeId>,
        learners: impl IntoIterator<Item = NodeId>,
    ) -> Result<Self, MembershipError> {
        let membership = Membership {
            voters: voters.into_iter().collect(),
            outgoing_voters: BTreeSet::new(),
            learners: learners.into_iter().collect(),
        };
        membership.validate()?;
        Ok(membership)
    }

    /// Checks that this is a usable target configuration.
    pub fn validate(&self) -> Result<(), MembershipError> {
        if self.voters.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        match self.voters.intersection(&self.learners).next() {
            Some(&node) => Err(MembershipError::VoterAndLearner { node }),
            None => Ok(()),
        }
    }

    /// Whether this is a joint configuration `C_old,new`.
    pub fn is_joint(&self) -> bool {
        !self.outgoing_voters.is_empty()
    }

    /// Whether `id` votes (in either half of a joint configuration).
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing_voters.contains(&id)
    }

    /// Whether `id` is a learner (and not a voter).
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id) && !self.is_voter(id)
    }

    /// Whether `id` belongs to the configuration at all.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    /// Every member, voters and learners, in id order, each once.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.clone();
        all.extend(self.outgoing_voters.iter().copied());
        all.extend(self.learners.iter().copied());
        all
    }

    /// The configuration that ends joint consensus: the incoming voters and the learners.
    pub fn leave_joint(&self) -> Membership {
        Membership {
            voters: self.voters.clone(),
            outgoing_voters: BTreeSet::new(),
            learners: self.learners.clone(),
        }
    }

    /// Whether the nodes for which `agrees` holds form a quorum: a majority of the voters, and
    /// in a joint configuration also a majority of the outgoing voters.
    pub fn is_quorum(&self, mut agrees: impl FnMut(NodeId) -> bool) -> bool {
        majority_agrees(&self.voters, &mut agrees)
            && (self.outgoing_voters.is_empty()
                || majority_agrees(&self.outgoing_voters, &mut agrees))
    }

    /// Whether the nodes for which `rejects` holds make a quorum impossible.
    pub fn is_quorum_impossible(&self, mut rejects: impl FnMut(NodeId) -> bool) -> bool {
        minority_blocks(&self.voters, &mut rejects)
            || minority_blocks(&self.outgoing_voters, &mut rejects)
    }

    /// The largest value that a quorum has reached, given each voter's value (e.g. its match
    /// index): the commit point of §5.3 / §4.3. `scratch` is reused to avoid allocating.
    pub fn quorum_value(
        &self,
        scratch: &mut Vec<u64>,
        mut value: impl FnMut(NodeId) -> u64,
    ) -> u64 {
        let incoming = majority_value(&self.voters, scratch, &mut value);
        if self.outgoing_voters.is_empty() {
            incoming
        } else {
            incoming.min(majority_value(&self.outgoing_voters, scratch, &mut value))
        }
    }
}

fn majority_agrees(set: &BTreeSet<NodeId>, agrees: &mut impl FnMut(NodeId) -> bool) -> bool {
    let yes = set.iter().filter(|&&id| agrees(id)).count();
    yes > set.len() / 2
}

fn minority_blocks(set: &BTreeSet<NodeId>, rejects: &mut impl FnMut(NodeId) -> bool) -> bool {
    if set.is_empty() {
        return false;
    }
    let no = set.iter().filter(|&&id| rejects(id)).count();
    no >= set.len() - set.len() / 2
}

fn majority_value(
    set: &BTreeSet<NodeId>,
    scratch: &mut Vec<u64>,
    value: &mut impl FnMut(NodeId) -> u64,
) -> u64 {
    if set.is_empty() {
        return u64::MAX;
    }
    if set.len() <= SMALL_SET {
        let mut values = [0; SMALL_SET];
        for (slot, &id) in values.iter_mut().zip(set) {
            *slot = value(id);
        }
        return value_reached_by_majority(&mut values[..set.len()]);
    }
    scratch.clear();
    scratch.extend(set.iter().map(|&id| value(id)));
    value_reached_by_majority(scratch)
}

/// Voter sets up to this size are evaluated in an array on the stack.
const SMALL_SET: usize = 9;

/// The largest value that more than half of `values` reach (the median, upper half).
fn value_reached_by_majority(values: &mut [u64]) -> u64 {
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[values.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_value_is_the_majority_median() {
        let membership = Membership::new([1, 2, 3]);
        let mut scratch = Vec::new();
        assert_eq!(membership.quorum_value(&mut scratch, |id| id * 10), 20);
    }

    #[test]
    fn joint_quorum_needs_both_majorities() {
        let membership = Membership {
            voters: [4, 5, 6].into(),
            outgoing_voters: [1, 2, 3].into(),
            learners: BTreeSet::new(),
        };
        assert!(!membership.is_quorum(|id| id <= 3));
        assert!(membership.is_quorum(|id| id <= 2 || id >= 5));
        let mut scratch = Vec::new();
        assert_eq!(
            membership.quorum_value(&mut scratch, |id| if id <= 3 { 9 } else { 4 }),
            4
        );
    }

    #[test]
    fn validate_rejects_overlap_and_empty() {
        assert_eq!(
            Membership::with_learners([1], [1]),
            Err(MembershipError::VoterAndLearner { node: 1 })
        );
        assert_eq!(
            Membership::with_learners([], [1]),
            Err(MembershipError::NoVoters)
        );
    }
}
