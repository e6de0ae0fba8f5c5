//! Ballots (Lamport, "Paxos Made Simple" §2.2: proposal numbers): a round paired with the
//! proposer's node id, so two proposers never share one. Ordered by epoch, then round, then
//! node id. The epoch numbers Multi-Paxos configurations (Vertical Paxos: every ballot of a
//! newer configuration outranks every ballot of an older one); single-decree Paxos leaves it 0.

use serde::{Deserialize, Serialize};

use concord_core::NodeId;

/// A ballot (proposal number): ordered by `epoch`, then `round`, then `node`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Ballot {
    /// The configuration the ballot belongs to (0: the first, and always in single-decree).
    #[serde(default)]
    pub epoch: u64,
    /// The round; a proposer picks one above every round it has seen.
    pub round: u64,
    /// The proposer that owns the ballot (ties between equal rounds break by id).
    pub node: NodeId,
}

impl Ballot {
    /// The ballot `round` owned by `node`, in the first configuration.
    pub fn new(round: u64, node: NodeId) -> Self {
        Ballot::in_epoch(0, round, node)
    }

    /// The ballot `round` owned by `node` in configuration `epoch`.
    pub fn in_epoch(epoch: u64, round: u64, node: NodeId) -> Self {
        Ballot { epoch, round, node }
    }

    /// The smallest ballot owned by `node` above `self`, in the same epoch.
    pub fn next_for(self, node: NodeId) -> Self {
        Ballot {
            epoch: self.epoch,
            round: self.round.saturating_add(1),
            node,
        }
    }
}

impl std::fmt::Display for Ballot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.epoch == 0 {
            write!(f, "{}.{}", self.round, self.node)
        } else {
            write!(f, "{}:{}.{}", self.epoch, self.round, self.node)
        }
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
        assert!(Ballot::new(u64::MAX, 9) < Ballot::in_epoch(1, 0, 0));
        assert_eq!(
            Ballot::in_epoch(2, 3, 4).next_for(1),
            Ballot::in_epoch(2, 4, 1)
        );
        assert_eq!(Ballot::in_epoch(2, 3, 4).to_string(), "2:3.4");
    }
}
