//! What a node reports for monitoring: the toolkit's health view.

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// A node's role, in terms shared by all protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Leads the cluster: Raft leader, Multi-Paxos distinguished proposer, PBFT primary.
    Leader,
    /// Follows a leader: Raft follower, Paxos acceptor, PBFT backup.
    Follower,
    /// Campaigning in a real election.
    Candidate,
    /// Campaigning in a pre-vote (Raft §9.6): no term is bumped yet.
    PreCandidate,
    /// A non-voting member catching up (Raft learner).
    Learner,
    /// Between views (PBFT view change) or otherwise not serving.
    ViewChange,
    /// Crashed or paused (set by the driver, never by a node).
    Down,
}

impl Role {
    /// The role's name as shown in tables.
    pub fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::PreCandidate => "pre-candidate",
            Role::Learner => "learner",
            Role::ViewChange => "view-change",
            Role::Down => "down",
        }
    }
}

/// Replication progress of one peer, as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerProgress {
    /// The peer.
    pub id: NodeId,
    /// Highest log index known to be replicated on the peer.
    pub match_index: u64,
    /// Next log index to send to the peer.
    pub next_index: u64,
    /// Whether the peer votes (false for learners).
    pub voter: bool,
}

/// One node's health: the seed's `monitor_consensus_health`, per node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// The leader it believes in, if any.
    pub leader: Option<NodeId>,
    /// Term (Raft), ballot (Paxos) or view (PBFT).
    pub term: u64,
    /// Index of the last entry in its log (0 when empty).
    pub log_length: u64,
    /// Highest index known committed (decided, executed-ready).
    pub commit_index: u64,
    /// Highest index applied to its state machine.
    pub applied_index: u64,
    /// Per-peer replication progress; filled by leaders only.
    pub peers: Vec<PeerProgress>,
}

impl NodeStatus {
    /// The status a driver reports for a node that is crashed or paused.
    pub fn down(id: NodeId) -> Self {
        NodeStatus {
            id,
            role: Role::Down,
            leader: None,
            term: 0,
            log_length: 0,
            commit_index: 0,
            applied_index: 0,
            peers: Vec::new(),
        }
    }
}
