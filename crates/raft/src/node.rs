//! [`RaftNode`]: one Raft server (paper Figure 2) as a sans-IO state machine.
//!
//! This file holds the node's state, its read-only accessors and the `Node` contract
//! (dispatch, restore, status). Each step runs the handlers (in `election`, `replication`,
//! `leadership`, `read`, `snapshot`, `transfer`, `membership_change`, `apply`), which queue
//! messages, writes and replies; `persistence` then emits them in a safe order.

use std::collections::{BTreeMap, VecDeque};

use concord_core::{
    Duration, Effect, Env, Input, Node, NodeId, NodeStatus, PeerProgress, PersistToken, RequestId,
    Rng, Role, StateMachine, Time, Violation,
};
use rand::Rng as _;

use crate::leader::LeaderState;
use crate::persistence::PendingWrite;
use crate::progress::ProgressState;
use crate::{
    Config, HardState, LogIndex, Membership, Message, RaftLog, Request, Response, Snapshot,
    Storage, Term, Write,
};

/// The effects a Raft node emits.
pub(crate) type RaftEffect<S> = Effect<
    Message<<S as StateMachine>::Command>,
    Write<<S as StateMachine>::Command>,
    <S as StateMachine>::Command,
    Response<<S as StateMachine>::Output>,
>;

/// The inputs a Raft node takes.
pub(crate) type RaftInput<S> = Input<
    Message<<S as StateMachine>::Command>,
    Request<<S as StateMachine>::Command, <S as StateMachine>::Query>,
>;

/// Which part a node plays in its current term (paper §5.1, thesis §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RaftRole {
    /// Passive: answers leaders and candidates.
    Follower,
    /// Asking for pre-votes before bumping its term.
    PreCandidate,
    /// Asking for votes in its term.
    Candidate,
    /// Leading its term.
    Leader,
}

/// One Raft server: persistent state, volatile state, the state machine, and per-role state.
#[derive(Clone, Debug)]
pub struct RaftNode<S: StateMachine> {
    pub(crate) id: NodeId,
    pub(crate) config: Config,
    pub(crate) now: Time,
    /// When this incarnation started (its `restore` time).
    pub(crate) started_at: Time,
    /// A random number drawn at `restore`, telling incarnations apart.
    pub(crate) incarnation: u64,

    // Persistent state on all servers (Figure 2).
    pub(crate) current_term: Term,
    pub(crate) voted_for: Option<NodeId>,
    pub(crate) log: RaftLog<S::Command>,

    // Volatile state on all servers. Invariant: snapshot index <= applied <= commit <= last index.
    pub(crate) commit_index: LogIndex,
    pub(crate) last_applied: LogIndex,
    pub(crate) state_machine: S,
    /// The latest snapshot (taken or installed), to send to lagging followers.
    pub(crate) snapshot: Option<Snapshot>,

    pub(crate) role: RaftRole,
    pub(crate) leader_id: Option<NodeId>,
    pub(crate) votes: BTreeMap<NodeId, bool>,
    pub(crate) election_deadline: Time,
    pub(crate) election_timer_reset: bool,
    /// Set when the leader's connection broke: campaign soon (see `on_peer_lost`).
    pub(crate) hurry_election: bool,
    /// Until this time the node ignores vote requests (leader stickiness, thesis §4.2.3).
    pub(crate) vote_lease_until: Time,
    pub(crate) leader: Option<Box<LeaderState<S::Query>>>,

    // Reads (thesis §6.4).
    /// The last id given to a forwarded read. It starts at a random value in each incarnation,
    /// so that a late answer to a read of an earlier incarnation cannot match a new read.
    pub(crate) next_read_id: u64,
    /// Orders reads waiting for the state machine.
    pub(crate) next_read_sequence: u64,
    /// Reads waiting to be forwarded to the leader, in one batch, once the batch in flight is
    /// answered.
    pub(crate) reads_to_forward: Vec<(RequestId, S::Query)>,
    /// The batch of reads whose ReadIndexRequest is in flight, by its read id.
    pub(crate) forwarded_reads: Option<(u64, crate::read::ForwardedReads<S::Query>)>,
    pub(crate) reads_awaiting_apply: BTreeMap<(LogIndex, u64), (RequestId, S::Query)>,
    // Proposal forwarding (`Config::forward_proposals`, module `forward`).
    /// Proposals to forward to the leader, in one message, at the end of the first step that
    /// is not itself a proposal (as `batch_proposals` holds a leader's broadcast back).
    pub(crate) proposals_to_forward: Vec<(RequestId, std::sync::Arc<S::Command>)>,
    /// Proposals forwarded and not yet applied here, by sequence number (so the first is the
    /// oldest).
    pub(crate) forwarded_proposals: BTreeMap<u64, crate::forward::ForwardedProposal>,
    /// The sequence number of the next forwarded proposal. Its id on the wire is offset by the
    /// incarnation's random number, so that an entry forwarded by an earlier incarnation
    /// cannot answer a new proposal.
    pub(crate) next_proposal: u64,
    /// The proposals this node appended as leader and did not see commit before it stepped
    /// down, in index order, waiting for the entries applied at their indexes (module
    /// `deposed`).
    pub(crate) deposed_proposals: VecDeque<crate::deposed::DeposedProposal>,
    /// The leader whose connection broke (`Input::PeerLost`) and that has not been heard from
    /// since: nothing is forwarded to it meanwhile.
    pub(crate) unreachable_leader: Option<NodeId>,
    /// This follower's log matches its leader's through this index (what that leader's
    /// AppendEntries established in this term): a `Message::Commit` is adopted up to here.
    pub(crate) leader_match: LogIndex,
    /// A leader's followers whose forwarded entries it committed in this step; each gets a
    /// `Message::Commit` unless an AppendEntries of this step carries the commit index.
    pub(crate) commit_notify: Vec<NodeId>,
    /// An InstallSnapshot being received in chunks: its metadata and the bytes so far.
    pub(crate) incoming_snapshot: Option<(std::sync::Arc<crate::SnapshotMeta>, Vec<u8>)>,

    // Persistence bookkeeping.
    pub(crate) next_token: PersistToken,
    pub(crate) pending_writes: VecDeque<PendingWrite>,
    pub(crate) persisted_hard_state: HardState,
    pub(crate) durable_index: LogIndex,
    pub(crate) durable_term: Term,
    pub(crate) written_index: LogIndex,
    pub(crate) log_dirty_from: Option<LogIndex>,
    pub(crate) queued_writes: Vec<Write<S::Command>>,

    // Output buffers, reused across steps.
    pub(crate) outbox: Vec<(NodeId, Message<S::Command>)>,
    pub(crate) early_effects: Vec<RaftEffect<S>>,
    pub(crate) needs_broadcast: bool,
    /// This step is a proposal and `Config::batch_proposals` holds its broadcast back.
    pub(crate) hold_broadcast: bool,
    pub(crate) needs_round: bool,
    pub(crate) batches: crate::replication::Batches<S::Command>,
    pub(crate) scratch: Vec<u64>,
    pub(crate) peer_scratch: Vec<NodeId>,
}

impl<S: StateMachine + Default> RaftNode<S> {
    /// Like [`RaftNode::new`], but an invalid `config` is an error instead of a panic.
    pub fn try_new(
        id: NodeId,
        members: &[NodeId],
        config: &Config,
        storage: &Storage<S::Command>,
        now: Time,
        rng: &mut Rng,
    ) -> Result<Self, crate::ConfigError> {
        config.validate()?;
        Ok(Self::new(id, members, config, storage, now, rng))
    }

    /// Builds a node from durable storage (see `Node::restore`).
    ///
    /// # Panics
    /// If `config` is invalid (call [`Config::validate`] first) or the stored snapshot cannot
    /// be restored (corrupt storage: an environmental dead end).
    pub fn new(
        id: NodeId,
        members: &[NodeId],
        config: &Config,
        storage: &Storage<S::Command>,
        now: Time,
        rng: &mut Rng,
    ) -> Self {
        if let Err(error) = config.validate() {
            panic!("invalid Raft configuration: {error}");
        }
        let mut state_machine = S::default();
        let (log, snapshot) = match &storage.snapshot {
            Some(snapshot) => {
                if let Err(error) = state_machine.restore(&snapshot.data.contiguous()) {
                    panic!("node {id}: stored snapshot cannot be restored: {error}");
                }
                let meta = &snapshot.meta;
                let log = RaftLog::new(
                    meta.last_index,
                    meta.last_term,
                    meta.membership.clone(),
                    storage.entries.clone(),
                );
                (log, Some(snapshot.clone()))
            }
            None => {
                let initial = Membership::new(members.iter().copied());
                (RaftLog::new(0, 0, initial, storage.entries.clone()), None)
            }
        };
        let snapshot_index = log.snapshot_index();
        let last_index = log.last_index();
        let hard_state = storage.hard_state.clone();
        let mut node = RaftNode {
            id,
            config: config.clone(),
            now,
            started_at: now,
            incarnation: rng.gen(),
            current_term: hard_state.current_term,
            voted_for: hard_state.voted_for,
            log,
            commit_index: snapshot_index,
            last_applied: snapshot_index,
            state_machine,
            snapshot,
            role: RaftRole::Follower,
            leader_id: None,
            votes: BTreeMap::new(),
            election_deadline: now,
            election_timer_reset: false,
            hurry_election: false,
            vote_lease_until: if config.lease_reads {
                now + config.election_timeout_min
            } else {
                0
            },
            leader: None,
            next_read_id: rng.gen(),
            next_read_sequence: 0,
            reads_to_forward: Vec::new(),
            forwarded_reads: None,
            reads_awaiting_apply: BTreeMap::new(),
            proposals_to_forward: Vec::new(),
            forwarded_proposals: BTreeMap::new(),
            next_proposal: 0,
            unreachable_leader: None,
            deposed_proposals: VecDeque::new(),
            leader_match: 0,
            commit_notify: Vec::new(),
            incoming_snapshot: None,
            next_token: 0,
            pending_writes: VecDeque::new(),
            durable_term: hard_state.current_term,
            persisted_hard_state: hard_state,
            durable_index: last_index,
            written_index: last_index,
            log_dirty_from: None,
            queued_writes: Vec::new(),
            outbox: Vec::new(),
            early_effects: Vec::new(),
            needs_broadcast: false,
            hold_broadcast: false,
            needs_round: false,
            batches: crate::replication::Batches::new(),
            scratch: Vec::new(),
            peer_scratch: Vec::new(),
        };
        node.election_deadline = node.random_election_deadline(rng);
        node
    }
}

impl<S: StateMachine> RaftNode<S> {
    // ----- read-only accessors (for drivers, tests and the invariant checkers) -----

    /// The latest term this node has seen.
    pub fn current_term(&self) -> Term {
        self.current_term
    }

    /// Whom it voted for in the current term.
    pub fn voted_for(&self) -> Option<NodeId> {
        self.voted_for
    }

    /// Whether it is the leader of its current term.
    pub fn is_leader(&self) -> bool {
        self.role == RaftRole::Leader
    }

    /// Its role, in the toolkit's terms.
    pub fn role(&self) -> Role {
        match self.role {
            RaftRole::Leader => Role::Leader,
            RaftRole::Candidate => Role::Candidate,
            RaftRole::PreCandidate => Role::PreCandidate,
            RaftRole::Follower if self.log.membership().is_learner(self.id) => Role::Learner,
            RaftRole::Follower => Role::Follower,
        }
    }

    /// The leader it believes in.
    pub fn leader_id(&self) -> Option<NodeId> {
        self.leader_id
    }

    /// The log (in memory: entries after the latest snapshot).
    pub fn log(&self) -> &RaftLog<S::Command> {
        &self.log
    }

    /// The highest index known committed.
    pub fn commit_index(&self) -> LogIndex {
        self.commit_index
    }

    /// The highest index applied to the state machine.
    pub fn applied_index(&self) -> LogIndex {
        self.last_applied
    }

    /// The state machine.
    pub fn state_machine(&self) -> &S {
        &self.state_machine
    }

    /// The configuration in effect (the latest in the log).
    pub fn membership(&self) -> &Membership {
        self.log.membership()
    }

    /// The highest index such that the log through it is confirmed durable.
    pub fn durable_index(&self) -> LogIndex {
        self.durable_index
    }

    /// The highest index such that the log through it was handed to the driver in a
    /// `Persist` (durable once confirmed; acknowledgements are released only after that).
    pub fn written_index(&self) -> LogIndex {
        self.written_index
    }

    /// The term in the latest confirmed hard state.
    pub fn durable_term(&self) -> Term {
        self.durable_term
    }

    /// When this incarnation of the node started.
    pub fn started_at(&self) -> Time {
        self.started_at
    }

    /// A random number drawn when this incarnation started: differs across restarts (even at
    /// the same instant), so checkers can tell a restart from a step.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The configuration of this node.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ----- output helpers for the handlers -----

    /// Queues a message; it leaves after this step's writes.
    pub(crate) fn send(&mut self, to: NodeId, message: Message<S::Command>) {
        self.outbox.push((to, message));
    }

    /// Answers a client request.
    pub(crate) fn reply(&mut self, id: RequestId, response: Response<S::Output>) {
        self.early_effects.push(Effect::Reply { id, response });
    }

    /// Asks for a fresh randomized election deadline at the end of this step (§5.2).
    pub(crate) fn reset_election_timer(&mut self) {
        self.election_timer_reset = true;
    }

    pub(crate) fn random_election_deadline(&self, rng: &mut Rng) -> Time {
        let timeout: Duration =
            rng.gen_range(self.config.election_timeout_min..self.config.election_timeout_max);
        self.now + timeout
    }

    // ----- log mutation with persistence tracking -----

    /// Whether `input` is of a kind that arrives in bursts under load, so that the broadcast
    /// and the commit notices it causes wait until the burst is in (`Config::batch_proposals`):
    /// a proposal, and at a leader, forwarded proposals and the acknowledgements that move
    /// the commit index.
    fn comes_in_bursts(&self, input: &RaftInput<S>) -> bool {
        match input {
            Input::Request {
                request: Request::Propose(_),
                ..
            } => true,
            Input::Message {
                message: Message::Propose { .. } | Message::AppendEntriesResponse { .. },
                ..
            } => self.role == RaftRole::Leader,
            _ => false,
        }
    }

    fn handle(&mut self, input: RaftInput<S>) {
        match input {
            Input::Message { from, message } => self.on_message(from, message),
            Input::Tick => self.on_tick(),
            Input::Request { id, request } => self.on_request(id, request),
            Input::Persisted { token } => self.on_persisted(token),
            Input::PeerLost { peer } => self.on_peer_lost(peer),
        }
    }

    fn on_tick(&mut self) {
        if self.role == RaftRole::Leader {
            self.on_leader_tick();
        } else if self.now >= self.election_deadline {
            self.on_election_timeout();
        }
        self.expire_forwarded_reads();
        self.expire_forwarded_proposals();
        self.expire_deposed();
    }

    fn on_request(&mut self, id: RequestId, request: Request<S::Command, S::Query>) {
        match request {
            Request::Propose(command) => self.on_propose(id, std::sync::Arc::new(command)),
            Request::Read(query) => self.on_read(id, query),
            Request::TransferLeadership { to } => self.on_transfer_leadership(id, to),
            Request::ChangeMembership { voters, learners } => {
                self.on_change_membership(id, voters, learners)
            }
        }
    }

    /// Applies the term rules of §5.1, then dispatches to the handler.
    fn on_message(&mut self, from: NodeId, message: Message<S::Command>) {
        if from == self.id {
            return;
        }
        if let Some(term) = message.term() {
            if term > self.current_term && !self.on_higher_term(from, &message, term) {
                return;
            }
            if term < self.current_term {
                self.on_stale_message(from, &message);
                return;
            }
        }
        self.dispatch(from, message);
    }

    fn dispatch(&mut self, from: NodeId, message: Message<S::Command>) {
        match message {
            Message::RequestVote {
                term,
                last_log_index,
                last_log_term,
                pre_vote,
                transfer,
            } => self.on_request_vote(
                from,
                term,
                last_log_index,
                last_log_term,
                pre_vote,
                transfer,
            ),
            Message::RequestVoteResponse {
                term,
                granted,
                pre_vote,
            } => self.on_request_vote_response(from, term, granted, pre_vote),
            Message::AppendEntries {
                term,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                round,
            } => self.on_append_entries(
                from,
                term,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                round,
            ),
            Message::AppendEntriesResponse {
                success,
                index,
                conflict_term,
                conflict_index,
                round,
                ..
            } => self.on_append_entries_response(
                from,
                success,
                index,
                conflict_term,
                conflict_index,
                round,
            ),
            Message::InstallSnapshot {
                term,
                meta,
                offset,
                total,
                data,
                round,
            } => self.on_install_snapshot(from, term, meta, offset, total, &data, round),
            Message::InstallSnapshotResponse {
                snapshot_index,
                next_offset,
                done,
                round,
                ..
            } => self.on_install_snapshot_response(from, snapshot_index, next_offset, done, round),
            Message::TimeoutNow { term } => self.on_timeout_now(from, term),
            Message::ReadIndexRequest { read_id } => self.on_read_index_request(from, read_id),
            Message::ReadIndexResponse {
                read_id,
                read_index,
                leader,
            } => self.on_read_index_response(read_id, read_index, leader),
            Message::Propose {
                incarnation,
                first,
                commands,
                ..
            } => self.on_forwarded_proposals(from, incarnation, first, commands),
            Message::ProposeRejected {
                incarnation,
                first,
                count,
                refusal,
            } => self.on_proposals_rejected(from, incarnation, first, count, refusal),
            Message::Commit { commit_index, .. } => self.on_commit(from, commit_index),
        }
    }

    fn status_peers(&self) -> Vec<PeerProgress> {
        let Some(leader) = &self.leader else {
            return Vec::new();
        };
        let membership = self.log.membership();
        leader
            .progress
            .iter()
            .map(|(&id, progress)| PeerProgress {
                id,
                match_index: progress.match_index,
                next_index: progress.next_index,
                voter: membership.is_voter(id),
            })
            .collect()
    }
}

impl<S: StateMachine + Default> Node for RaftNode<S> {
    type Message = Message<S::Command>;
    type Request = Request<S::Command, S::Query>;
    type Response = Response<S::Output>;
    type Write = Write<S::Command>;
    type Storage = Storage<S::Command>;
    type Command = S::Command;
    type Config = Config;

    fn restore(
        id: NodeId,
        members: &[NodeId],
        config: &Config,
        storage: &Storage<S::Command>,
        now: Time,
        rng: &mut Rng,
    ) -> Self {
        RaftNode::new(id, members, config, storage, now, rng)
    }

    fn apply_write(storage: &mut Storage<S::Command>, write: &Write<S::Command>) {
        storage.apply(write);
    }

    fn step(
        &mut self,
        env: &mut Env<'_>,
        input: Input<Self::Message, Self::Request>,
        effects: &mut Vec<RaftEffect<S>>,
    ) {
        self.now = self.now.max(env.now);
        self.hold_broadcast = self.config.batch_proposals && self.comes_in_bursts(&input);
        self.handle(input);
        self.flush(env.rng, effects);
    }

    fn next_deadline(&self) -> Option<Time> {
        let mut deadline = match &self.leader {
            Some(leader) => {
                let mut deadline = leader.heartbeat_deadline;
                if self.config.check_quorum {
                    deadline = deadline.min(leader.check_quorum_deadline);
                }
                if let Some(transfer) = &leader.transfer {
                    deadline = deadline.min(transfer.deadline);
                }
                if self.needs_broadcast || !self.commit_notify.is_empty() {
                    // Held back by `batch_proposals`: send them at the next chance.
                    deadline = deadline.min(self.now);
                }
                deadline
            }
            None => self.election_deadline,
        };
        if !self.proposals_to_forward.is_empty() {
            // Held back by `batch_proposals`: forward them at the next chance.
            deadline = deadline.min(self.now);
        }
        if let Some(oldest) = self.forwarded_proposals.values().next() {
            deadline = deadline.min(oldest.sent + self.config.outcome_timeout);
        }
        if let Some(oldest) = self.deposed_proposals.front() {
            deadline = deadline.min(oldest.since + self.config.outcome_timeout);
        }
        if let Some((_, batch)) = &self.forwarded_reads {
            deadline = deadline.min(batch.sent + self.config.election_timeout_max);
        }
        Some(deadline)
    }

    fn status(&self) -> NodeStatus {
        NodeStatus {
            id: self.id,
            role: self.role(),
            leader: self.leader_id,
            term: self.current_term,
            log_length: self.log.last_index(),
            commit_index: self.commit_index,
            applied_index: self.last_applied,
            peers: self.status_peers(),
        }
    }

    fn check_invariants(&self) -> Result<(), Violation> {
        self.check_local_invariants()
    }

    fn id(&self) -> NodeId {
        self.id
    }

    fn election_timeout(config: &Config) -> Duration {
        config.election_timeout_max
    }

    fn is_barrier(write: &Self::Write) -> bool {
        !matches!(
            write,
            Write::Append {
                by_leader: true,
                ..
            } | Write::Compact(_)
        )
    }

    /// A successful AppendEntriesResponse covers every earlier one of the same term that
    /// acknowledged no more of the log and no later heartbeat round: the leader keeps only
    /// the highest index and round it hears (`Progress::acknowledge`, the read rounds).
    fn supersedes(earlier: &Self::Message, later: &Self::Message) -> bool {
        matches!(
            (earlier, later),
            (
                Message::AppendEntriesResponse {
                    term: earlier_term,
                    success: true,
                    index: earlier_index,
                    round: earlier_round,
                    ..
                },
                Message::AppendEntriesResponse {
                    term,
                    success: true,
                    index,
                    round,
                    ..
                },
            ) if earlier_term == term && earlier_index <= index && earlier_round <= round
        )
    }

    /// A leader's own log append, while the followers it heard from within the last two
    /// heartbeat intervals, with their logs in the replicate state, make a quorum without it:
    /// they commit its entries, and its own copy only speeds a commit when one of them is
    /// slow. Holding its sync back then folds more appends into one sync. Never for a lone
    /// leader, nor one with a follower down, lagging or probed, where its own copy is part of
    /// every quorum; and not while a single entry awaits commitment (one client writing at a
    /// time), where no other append would share the sync and the wait would only slow it.
    fn may_delay_sync(&self, write: &Self::Write) -> bool {
        let Write::Append {
            by_leader: true, ..
        } = write
        else {
            return false;
        };
        if self.log.last_index() <= self.commit_index + 1 {
            return false;
        }
        let Some(leader) = self.leader.as_ref() else {
            return false;
        };
        let since = self
            .now
            .saturating_sub(self.config.heartbeat_interval.saturating_mul(2));
        let me = self.id;
        self.log.membership().is_quorum(|peer| {
            peer != me
                && leader.progress.get(&peer).is_some_and(|progress| {
                    matches!(progress.state, ProgressState::Replicate { .. })
                        && progress.last_heard >= since
                })
        })
    }

    /// A snapshot of this node's own applied state replaces entries its storage already
    /// holds: restarting without it replays them instead.
    fn is_checkpoint(write: &Self::Write) -> bool {
        matches!(write, Write::Compact(_))
    }

    fn state_digest(&self) -> Option<u64> {
        Some(concord_core::digest(&self.state_machine.snapshot()))
    }
}
