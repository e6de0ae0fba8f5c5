//! Messages between Raft peers (paper Figure 2, §7; thesis §3.10, §6.4, §9.6).
//!
//! The sender is not part of a message: the transport reports it in `Input::Message::from`.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use concord_core::NodeId;

use crate::{Entry, LogIndex, RaftError, SnapshotMeta, Term};

/// A message between Raft peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<C> {
    /// RequestVote (paper §5.2), or a PreVote (thesis §9.6) when `pre_vote` is set.
    RequestVote {
        /// The candidate's term; for a pre-vote, the term it would campaign in.
        term: Term,
        /// Index of the candidate's last log entry (§5.4.1).
        last_log_index: LogIndex,
        /// Term of the candidate's last log entry.
        last_log_term: Term,
        /// This is a pre-vote: no term changes, no vote recorded.
        pre_vote: bool,
        /// The campaign was started by a leadership transfer (thesis §3.10) and overrides leader
        /// stickiness.
        transfer: bool,
    },
    /// The answer to [`Message::RequestVote`].
    RequestVoteResponse {
        /// The voter's term (for a granted pre-vote: the term asked about).
        term: Term,
        /// Whether the vote was granted.
        granted: bool,
        /// Whether this answers a pre-vote.
        pre_vote: bool,
    },
    /// AppendEntries (paper §5.3); with no entries, a heartbeat.
    AppendEntries {
        /// The leader's term.
        term: Term,
        /// Index of the entry just before the new ones.
        prev_log_index: LogIndex,
        /// Term of that entry.
        prev_log_term: Term,
        /// The new entries (possibly none), shared by the messages to every follower that
        /// needs the same batch.
        entries: Arc<[Entry<C>]>,
        /// The leader's commit index.
        leader_commit: LogIndex,
        /// The leader's heartbeat round when sending, echoed back to confirm leadership for
        /// ReadIndex and leases (thesis §6.4).
        round: u64,
    },
    /// The answer to [`Message::AppendEntries`].
    AppendEntriesResponse {
        /// The follower's term.
        term: Term,
        /// Whether the entries matched and were appended.
        success: bool,
        /// On success, the index of the last entry the message covered (now durable on the
        /// follower). On failure, the `prev_log_index` that was rejected.
        index: LogIndex,
        /// On failure: the term of the follower's conflicting entry at `prev_log_index`, if it has one.
        conflict_term: Option<Term>,
        /// On failure: the first index the leader should try (fast backtracking).
        conflict_index: LogIndex,
        /// The echoed heartbeat round.
        round: u64,
    },
    /// One chunk of a snapshot (paper §7).
    InstallSnapshot {
        /// The leader's term.
        term: Term,
        /// What the snapshot covers.
        meta: Arc<SnapshotMeta>,
        /// Byte offset of this chunk.
        offset: u64,
        /// Total size of the snapshot data.
        total: u64,
        /// The chunk's bytes.
        #[serde(with = "crate::serde_bytes_arc")]
        data: Arc<[u8]>,
        /// The echoed heartbeat round.
        round: u64,
    },
    /// The answer to [`Message::InstallSnapshot`].
    InstallSnapshotResponse {
        /// The follower's term.
        term: Term,
        /// The last index of the snapshot being received.
        snapshot_index: LogIndex,
        /// The byte offset the follower expects next; equal to the total when installed.
        next_offset: u64,
        /// Whether the snapshot is installed (and durable).
        done: bool,
        /// The echoed heartbeat round.
        round: u64,
    },
    /// Start an election now, skipping pre-vote and stickiness (thesis §3.10).
    TimeoutNow {
        /// The leader's term.
        term: Term,
    },
    /// A follower asks the leader for a read index (thesis §6.4).
    ReadIndexRequest {
        /// The follower's id for this read.
        read_id: u64,
    },
    /// The leader's answer: a read index confirmed by a quorum, or `None` if it cannot serve.
    ReadIndexResponse {
        /// The follower's id for the read.
        read_id: u64,
        /// The read index, or `None`.
        read_index: Option<LogIndex>,
        /// The leader the responder believes in (itself, when it answers with an index).
        leader: Option<NodeId>,
    },
    /// A follower forwards client proposals to the leader of `term`, all those that arrived
    /// since its last such message (`Config::forward_proposals`; etcd's MsgProp). It answers
    /// each client itself when it applies the entry, so the leader sends nothing back unless
    /// it refuses them. Only the leader of `term` appends them, once each however often the
    /// message arrives.
    Propose {
        /// The term of the leader they are for.
        term: Term,
        /// The follower's incarnation (a random number drawn at its start).
        incarnation: u64,
        /// The follower's sequence number of the first proposal; the rest follow in order.
        first: u64,
        /// The commands.
        commands: Vec<Arc<C>>,
    },
    /// The answer to a [`Message::Propose`] the receiver did not take.
    ProposeRejected {
        /// The follower's incarnation, echoed.
        incarnation: u64,
        /// The first refused sequence number.
        first: u64,
        /// How many, from `first` on.
        count: u64,
        /// Why, when the receiver is the leader of the message's term and appended none of
        /// them (it appends no copy of them later either): the follower fails them with it.
        /// `None` from a node that is not that leader, which cannot tell whether it took an
        /// earlier copy when it led: the follower keeps waiting for their outcome.
        refusal: Option<RaftError>,
    },
    /// The leader's commit index advanced over entries a follower forwarded: the follower
    /// applies them (and answers their clients) without waiting for the next AppendEntries.
    Commit {
        /// The leader's term.
        term: Term,
        /// The leader's commit index.
        commit_index: LogIndex,
    },
}

impl<C> Message<C> {
    /// The term a message carries, if it takes part in the term rules of §5.1.
    pub fn term(&self) -> Option<Term> {
        match self {
            Message::RequestVote { term, .. }
            | Message::RequestVoteResponse { term, .. }
            | Message::AppendEntries { term, .. }
            | Message::AppendEntriesResponse { term, .. }
            | Message::InstallSnapshot { term, .. }
            | Message::InstallSnapshotResponse { term, .. }
            | Message::TimeoutNow { term }
            | Message::Propose { term, .. }
            | Message::Commit { term, .. } => Some(*term),
            Message::ReadIndexRequest { .. }
            | Message::ReadIndexResponse { .. }
            | Message::ProposeRejected { .. } => None,
        }
    }
}
