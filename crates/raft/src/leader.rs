//! The state only a leader keeps (paper Figure 2 "volatile state on leaders"), plus the
//! bookkeeping for client requests it must answer: proposals (§8), reads (thesis §6.4), a
//! leadership transfer (§3.10) and a membership change (chapter 4).

use std::collections::{BTreeMap, VecDeque};

use concord_core::{NodeId, RequestId, Time};

use crate::progress::Progress;
use crate::LogIndex;

/// Who asked for a read: a local client, or a follower that forwarded it (thesis §6.4).
#[derive(Clone, Debug)]
pub(crate) enum ReadOrigin<Q> {
    /// A client of this node.
    Local {
        /// The client's request.
        id: RequestId,
        /// The query to run once applied reaches the read index.
        query: Q,
    },
    /// A follower's ReadIndexRequest.
    Remote {
        /// The follower.
        from: NodeId,
        /// Its id for the read.
        read_id: u64,
    },
}

/// A read waiting for its heartbeat round to be acknowledged by a quorum.
#[derive(Clone, Debug)]
pub(crate) struct PendingRead<Q> {
    /// The commit index when the read arrived.
    pub read_index: LogIndex,
    /// The first heartbeat round sent after the read arrived.
    pub round: u64,
    /// Who asked.
    pub origin: ReadOrigin<Q>,
}

/// A leadership transfer in progress.
#[derive(Clone, Debug)]
pub(crate) struct Transfer {
    /// The target.
    pub to: NodeId,
    /// The admin request to answer.
    pub request: RequestId,
    /// When the transfer is abandoned.
    pub deadline: Time,
    /// Whether TimeoutNow was sent.
    pub timeout_now_sent: bool,
}

/// A membership change in progress.
#[derive(Clone, Debug)]
pub(crate) struct MembershipRequest {
    /// The admin request to answer.
    pub request: RequestId,
    /// The configuration entry whose commitment completes the change.
    pub awaited_index: LogIndex,
}

/// A leader's volatile state.
#[derive(Clone, Debug)]
pub(crate) struct LeaderState<Q> {
    /// Replication state of every other member.
    pub progress: BTreeMap<NodeId, Progress>,
    /// The index of the no-op this leader appended: once committed, the leader has committed
    /// an entry of its term (§5.4.2, §8).
    pub term_start_index: LogIndex,
    /// Proposals waiting to be applied, in index order.
    pub proposals: VecDeque<(LogIndex, RequestId)>,
    /// Reads waiting for a quorum round, in round order.
    pub reads_awaiting_quorum: VecDeque<PendingRead<Q>>,
    /// Reads that arrived before the leader committed an entry of its term.
    pub reads_awaiting_term_commit: Vec<ReadOrigin<Q>>,
    /// The current heartbeat round (thesis §6.4: a round acknowledged by a quorum confirms
    /// leadership as of its sending).
    pub round: u64,
    /// A read waits for a round while another is unconfirmed: start one when it is (rounds
    /// are coalesced, so reads cost O(rounds) messages, not O(reads)).
    pub round_wanted: bool,
    /// Send times of recent rounds, for leases.
    pub round_sent_at: VecDeque<(u64, Time)>,
    /// Reads may be served locally before this time (thesis §6.4.1).
    pub lease_until: Time,
    /// Set for good once TimeoutNow is sent: voters may then elect the target regardless of
    /// stickiness, so no lease this leader holds is safe any more.
    pub lease_revoked: bool,
    /// When to send the next heartbeat.
    pub heartbeat_deadline: Time,
    /// When to next check that a quorum is still in touch.
    pub check_quorum_deadline: Time,
    /// A leadership transfer in progress.
    pub transfer: Option<Transfer>,
    /// A membership change in progress.
    pub membership_request: Option<MembershipRequest>,
    /// Per follower, the forwarded proposals this leader appended: for each incarnation of
    /// the follower (a few at most, never forgotten within the term), the sequence number
    /// after the last one. A copy of a `Propose` (a duplicated message) appends nothing again.
    pub forwarded: BTreeMap<NodeId, Vec<(u64, u64)>>,
}

impl<Q> LeaderState<Q> {
    /// The state of a leader elected at `now` whose no-op is at `term_start_index`.
    pub fn new(term_start_index: LogIndex, now: Time, check_quorum_deadline: Time) -> Self {
        LeaderState {
            progress: BTreeMap::new(),
            term_start_index,
            proposals: VecDeque::new(),
            reads_awaiting_quorum: VecDeque::new(),
            reads_awaiting_term_commit: Vec::new(),
            round: 0,
            round_wanted: false,
            round_sent_at: VecDeque::new(),
            lease_until: 0,
            lease_revoked: false,
            heartbeat_deadline: now,
            check_quorum_deadline,
            transfer: None,
            membership_request: None,
            forwarded: BTreeMap::new(),
        }
    }

    /// How many client requests this leader is holding.
    pub fn pending_requests(&self) -> usize {
        self.proposals.len()
            + self.reads_awaiting_quorum.len()
            + self.reads_awaiting_term_commit.len()
    }
}
