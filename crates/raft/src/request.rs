//! Client and administrator requests, and their responses: proposals (paper §8), linearizable
//! reads (thesis §6.4), leadership transfer (§3.10) and membership changes (chapter 4).

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use concord_core::NodeId;

use crate::{LogIndex, Membership, MembershipError, Term};

/// A request to a Raft node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<C, Q> {
    /// Append a command to the log; answered once it is applied.
    Propose(C),
    /// A linearizable read, served by ReadIndex (or a lease when configured); never logged.
    Read(Q),
    /// Hand leadership to `to` (thesis §3.10). Answered when `TimeoutNow` is sent.
    TransferLeadership {
        /// The voter to hand over to.
        to: NodeId,
    },
    /// Move to a new configuration: joint consensus when the voters change, a single entry
    /// when only learners change (thesis §4.3). Answered once the final configuration commits.
    ChangeMembership {
        /// The new voters.
        voters: BTreeSet<NodeId>,
        /// The new learners.
        learners: BTreeSet<NodeId>,
    },
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response<O> {
    /// The proposal was committed and applied at `index` with this result.
    Applied {
        /// Its log index.
        index: LogIndex,
        /// The state machine's result.
        output: O,
    },
    /// The read's result, as of a state at least as new as `read_index`.
    Read {
        /// The read index the read waited for.
        read_index: LogIndex,
        /// The query's result.
        output: O,
    },
    /// The leader sent `TimeoutNow` to the target.
    TransferStarted {
        /// The target.
        to: NodeId,
    },
    /// The new configuration is committed at `index`.
    MembershipChanged {
        /// The index of the final configuration entry.
        index: LogIndex,
        /// The configuration now in effect.
        membership: Box<Membership>,
    },
    /// The request failed.
    Failed(RaftError),
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RaftError {
    /// This node is not the leader and did nothing; try `leader`.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// The leader this node believes in.
        leader: Option<NodeId>,
    },
    /// The request was appended at `index` but leadership was lost before it committed: it may
    /// or may not take effect.
    #[error("leadership lost after the request was appended at index {index}; outcome unknown")]
    OutcomeUnknown {
        /// Where it was appended.
        index: LogIndex,
    },
    /// The proposal was forwarded to leader `to`, and then the connection to it was lost, or
    /// it was not applied here within `Config::outcome_timeout`, or a snapshot that may hold
    /// it was installed: it may or may not take effect.
    #[error("forwarded to leader {to}, whose connection was lost or which did not commit it in time; outcome unknown")]
    ForwardedOutcomeUnknown {
        /// The leader it was forwarded to.
        to: NodeId,
    },
    /// The proposal was forwarded to the leader of `term`, and an entry of a later term was
    /// applied before it: it was not committed, and never will be (log terms only grow, and
    /// the committed prefix is final). Safe to retry.
    #[error("the leader of term {term} lost leadership before committing the forwarded proposal; it was not applied and never will be")]
    LeaderChanged {
        /// The term of the leader it was forwarded to.
        term: Term,
    },
    /// The connection to leader `leader` broke and the leader has not been heard from since,
    /// so the proposal was not forwarded. Nothing was done.
    #[error("the connection to leader {leader} is down; the proposal was not forwarded")]
    LeaderUnreachable {
        /// The leader this node believes in.
        leader: NodeId,
    },
    /// The leader refused a forwarded proposal because this node is not in its configuration
    /// (it was removed). Nothing was done.
    #[error("this node is not a member of the leader's configuration")]
    NotMember,
    /// Too many requests are waiting.
    #[error("overloaded: {pending} requests already waiting")]
    Overloaded {
        /// How many are waiting.
        pending: usize,
    },
    /// A leadership transfer is under way; proposals are refused until it ends.
    #[error("a leadership transfer is in progress")]
    TransferInProgress,
    /// The transfer target is not a voter, or is this node.
    #[error("cannot transfer leadership to {to}: not another voter")]
    InvalidTransferTarget {
        /// The target.
        to: NodeId,
    },
    /// The transfer did not complete within an election timeout.
    #[error("leadership transfer to {to} timed out")]
    TransferTimedOut {
        /// The target.
        to: NodeId,
    },
    /// A configuration change is still in progress (only one at a time, thesis §4.1).
    #[error("a membership change is already in progress")]
    MembershipChangeInProgress,
    /// The leader has not yet committed an entry of its term, which it must before changing
    /// the configuration (the 2015 single-server change fix).
    #[error("the leader has not committed an entry of its term yet")]
    LeaderNotReady,
    /// A learner to be promoted to voter does not yet hold every committed entry.
    #[error("learner {learner} is behind (match index {match_index}, commit index {commit_index}); promote it once it has caught up")]
    LearnerBehind {
        /// The learner.
        learner: NodeId,
        /// The highest index known replicated on it.
        match_index: LogIndex,
        /// The leader's commit index.
        commit_index: LogIndex,
    },
    /// The requested configuration is unusable.
    #[error("invalid membership: {0}")]
    InvalidMembership(#[from] MembershipError),
}
