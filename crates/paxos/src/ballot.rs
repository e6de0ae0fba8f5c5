//! Ballots (Lamport, "Paxos Made Simple" §2.2: proposal numbers): a round paired with the
//! proposer's node id, so two proposers never share one. Ordered by round, then node id.

use serde::{Deserialize, Serialize};

use concord_core::NodeId;

/// A ballot (proposal number): ordered by `round`, then `node`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Ballot {
    /// The round; a proposer picks one above every round it has seen.
    pub round: u64,
    /// The proposer that owns the ballot (ties between equal rounds break by id).
    pub node: NodeId,
}

impl Ballot {
    /// The ballot `round` owned by `node`.
    pub fn new(round: u64, node: NodeId) -> Self {
        Ballot { round, node }
    }

    /// The smallest ballot owned by `node` above `self`.
    pub fn next_for(self, node: NodeId) -> Self {
        Ballot {
            round: self.round.saturating_add(1),
            node,
        }
    }
}

impl std::fmt::Display for Ballot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.round, self.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ballots_order_by_round_then_node() {
        assert!(Ballot::new(1, 9) < Ballot::new(2, 0));
        assert!(Ballot::new(2, 0) < Ballot::new(2, 1));
        assert_eq!(Ballot::new(3, 4).next_for(1), Ballot::new(4, 1));
        assert_eq!(Ballot::new(u64::MAX, 0).next_for(1).round, u64::MAX);
    }
}
