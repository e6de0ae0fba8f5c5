//! Who can talk to whom: the connectivity matrix and the partition shapes the nemesis builds.
//!
//! Every shape is a directed matrix `allowed[from][to]`; a node can always reach itself. The
//! shapes, for a cluster of `n` nodes:
//!
//! | shape | links kept | links cut |
//! |---|---|---|
//! | `full` | all | none |
//! | `groups [[0,1],[2,3,4]]` | both ways within each group | between groups; a node named in no group is alone |
//! | `isolate [0,1]` | within the set, and within the rest | between the set and the rest (= `groups [set, rest]`) |
//! | `cut from→to` (one-way) | all others | messages from each `from` to each `to` only |
//! | `quorum-loss center=c` | `c ↔ x` for every `x` | every `x ↔ y` with `x, y ≠ c` |
//! | `constrained-election center=c leader=l` | `c ↔ x` for every `x ≠ l` | everything touching `l`; every `x ↔ y` with `x, y ≠ c` |
//! | `chained [a,b,c,…]` | consecutive pairs `a ↔ b`, `b ↔ c`, … | every other pair; nodes outside the chain are alone |
//!
//! The last three are the partial-connectivity scenarios of the OmniPaxos paper (Ng, Haridi,
//! Carbone: "Omni-Paxos: Breaking the Barriers of Partial Connectivity", EuroSys 2023, §2):
//!
//! * **quorum-loss**: the leader loses its quorum, yet one follower `c` still reaches everyone.
//!   Leader-based protocols that elect only through `c` can livelock.
//! * **constrained-election**: the old leader `l` is gone, and the only node that reaches a
//!   quorum is `c`. When `c`'s log is outdated (isolate it for a while first; the swarm
//!   generator does), `c` cannot win and the up-to-date nodes cannot reach a quorum.
//! * **chained**: `a – b – c`: `b` sees both ends, the ends do not see each other. With the
//!   leader at one end, the other end keeps starting elections that unseat it.

use concord_core::NodeId;
use serde::Serialize;

/// A node id or shape that does not fit the cluster.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// A node id is not in `0..nodes`.
    #[error("node {node} does not exist (the cluster has nodes 0..{nodes})")]
    NoSuchNode {
        /// The id named.
        node: NodeId,
        /// The cluster size.
        nodes: usize,
    },
    /// A node is named twice where each node may appear once.
    #[error("node {node} appears more than once")]
    Duplicate {
        /// The repeated id.
        node: NodeId,
    },
    /// The shape needs more nodes than it was given.
    #[error("{shape} needs {needed}, got {got}")]
    TooFew {
        /// The shape.
        shape: &'static str,
        /// What it needs.
        needed: &'static str,
        /// How many it got.
        got: usize,
    },
}

/// A directed connectivity matrix: `allows(from, to)` says whether messages get through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Connectivity {
    nodes: usize,
    allowed: Vec<bool>,
}

/// Checks that every id is in range and none repeats.
pub fn check_nodes(nodes: usize, ids: &[NodeId]) -> Result<(), TopologyError> {
    let mut seen = vec![false; nodes];
    for &node in ids {
        let index = usize::try_from(node)
            .ok()
            .filter(|&i| i < nodes)
            .ok_or(TopologyError::NoSuchNode { node, nodes })?;
        if seen[index] {
            return Err(TopologyError::Duplicate { node });
        }
        seen[index] = true;
    }
    Ok(())
}

impl Connectivity {
    /// Everyone reaches everyone.
    pub fn full(nodes: usize) -> Self {
        Connectivity {
            nodes,
            allowed: vec![true; nodes * nodes],
        }
    }

    /// Nobody reaches anybody but itself.
    pub fn none(nodes: usize) -> Self {
        let mut shape = Connectivity {
            nodes,
            allowed: vec![false; nodes * nodes],
        };
        for node in 0..nodes {
            shape.allowed[node * nodes + node] = true;
        }
        shape
    }

    /// The cluster size.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Whether a message from `from` reaches `to`. Unknown ids never connect.
    pub fn allows(&self, from: NodeId, to: NodeId) -> bool {
        let (from, to) = (from as usize, to as usize);
        from < self.nodes && to < self.nodes && self.allowed[from * self.nodes + to]
    }

    /// Sets one directed link. Ids must be in range.
    pub fn set(&mut self, from: NodeId, to: NodeId, allowed: bool) {
        let (from, to) = (from as usize, to as usize);
        if from < self.nodes && to < self.nodes && from != to {
            self.allowed[from * self.nodes + to] = allowed;
        }
    }

    /// Sets both directions between `a` and `b`.
    pub fn set_both(&mut self, a: NodeId, b: NodeId, allowed: bool) {
        self.set(a, b, allowed);
        self.set(b, a, allowed);
    }

    /// Whether every link is up.
    pub fn is_full(&self) -> bool {
        self.allowed.iter().all(|&a| a)
    }

    /// Groups that talk within themselves only; nodes in no group are alone.
    pub fn groups(nodes: usize, groups: &[Vec<NodeId>]) -> Result<Self, TopologyError> {
        let all: Vec<NodeId> = groups.iter().flatten().copied().collect();
        check_nodes(nodes, &all)?;
        let mut shape = Connectivity::none(nodes);
        for group in groups {
            for &a in group {
                for &b in group {
                    shape.set(a, b, true);
                }
            }
        }
        Ok(shape)
    }

    /// `set` on one side, everyone else on the other.
    pub fn isolate(nodes: usize, set: &[NodeId]) -> Result<Self, TopologyError> {
        check_nodes(nodes, set)?;
        let rest: Vec<NodeId> = (0..nodes as NodeId).filter(|n| !set.contains(n)).collect();
        Connectivity::groups(nodes, &[set.to_vec(), rest])
    }

    /// Quorum loss: only `center` keeps links to everyone; all other pairs are cut.
    pub fn quorum_loss(nodes: usize, center: NodeId) -> Result<Self, TopologyError> {
        check_nodes(nodes, &[center])?;
        if nodes < 3 {
            return Err(TopologyError::TooFew {
                shape: "quorum-loss",
                needed: "at least 3 nodes",
                got: nodes,
            });
        }
        let mut shape = Connectivity::none(nodes);
        for other in 0..nodes as NodeId {
            shape.set_both(center, other, true);
        }
        Ok(shape)
    }

    /// Constrained election: `leader` is cut off from everyone, `center` keeps links to every
    /// other node, and all remaining pairs are cut.
    pub fn constrained_election(
        nodes: usize,
        center: NodeId,
        leader: NodeId,
    ) -> Result<Self, TopologyError> {
        check_nodes(nodes, &[center, leader])?;
        let mut shape = Connectivity::quorum_loss(nodes, center)?;
        for other in 0..nodes as NodeId {
            shape.set_both(leader, other, false);
        }
        Ok(shape)
    }

    /// Chained: consecutive nodes of `chain` are linked both ways; nothing else is.
    pub fn chained(nodes: usize, chain: &[NodeId]) -> Result<Self, TopologyError> {
        check_nodes(nodes, chain)?;
        if chain.len() < 3 {
            return Err(TopologyError::TooFew {
                shape: "chained",
                needed: "a chain of at least 3 nodes",
                got: chain.len(),
            });
        }
        let mut shape = Connectivity::none(nodes);
        for pair in chain.windows(2) {
            shape.set_both(pair[0], pair[1], true);
        }
        Ok(shape)
    }

    /// The connected components when links are read as undirected edges that exist in both
    /// directions: the "sides" of a partition, each sorted, ordered by smallest id.
    pub fn sides(&self) -> Vec<Vec<NodeId>> {
        let mut side_of = vec![usize::MAX; self.nodes];
        let mut sides: Vec<Vec<NodeId>> = Vec::new();
        for start in 0..self.nodes {
            if side_of[start] != usize::MAX {
                continue;
            }
            let index = sides.len();
            let mut members = vec![start as NodeId];
            side_of[start] = index;
            let mut cursor = 0;
            while cursor < members.len() {
                let a = members[cursor];
                cursor += 1;
                for (b, side) in side_of.iter_mut().enumerate() {
                    let b = b as NodeId;
                    if *side == usize::MAX && self.allows(a, b) && self.allows(b, a) {
                        *side = index;
                        members.push(b);
                    }
                }
            }
            members.sort_unstable();
            sides.push(members);
        }
        sides
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_cut_between_and_leave_unnamed_alone() {
        let shape = Connectivity::groups(5, &[vec![0, 1], vec![2, 3]]).unwrap();
        assert!(shape.allows(0, 1) && shape.allows(3, 2));
        assert!(!shape.allows(1, 2) && !shape.allows(4, 0) && !shape.allows(0, 4));
        assert_eq!(shape.sides(), vec![vec![0, 1], vec![2, 3], vec![4]]);
    }

    #[test]
    fn bad_ids_are_typed_errors() {
        assert_eq!(
            Connectivity::isolate(3, &[7]),
            Err(TopologyError::NoSuchNode { node: 7, nodes: 3 })
        );
        assert_eq!(
            Connectivity::groups(3, &[vec![0], vec![0, 1]]),
            Err(TopologyError::Duplicate { node: 0 })
        );
    }
}
