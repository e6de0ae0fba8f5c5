//! The Multi-Paxos node: acceptor and learner always, candidate or leader by turns.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use concord_core::{
    Duration, Effect, Env, Input, Node, NodeId, NodeStatus, PeerProgress, PersistToken, RequestId,
    Rng, Role, StateMachine, Time, Violation,
};

use super::election::{Heartbeat, LeaderElection};
use super::read::Reads;
use super::{
    Accepted, Config, Configuration, Entry, Message, PaxosError, Quorums, ReadMode, Request,
    Response, Slot, Snapshot, Storage, Write,
};
use crate::Ballot;

pub(super) type Cmd<S> = <S as StateMachine>::Command;
pub(super) type Qry<S> = <S as StateMachine>::Query;
type LogWrite<S> = Write<Cmd<S>, Qry<S>>;
pub(super) type SlotEntries<S> = Vec<(Slot, Accepted<Cmd<S>, Qry<S>>)>;
pub(super) type MultiEffect<S> = Effect<
    Message<Cmd<S>, Qry<S>>,
    Write<Cmd<S>, Qry<S>>,
    Cmd<S>,
    Response<<S as StateMachine>::Output>,
>;

/// The node's part in the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Follower,
    Candidate,
    Leader,
}

/// A Multi-Paxos node replicating the state machine `S`.
#[derive(Clone, Debug)]
pub struct MultiPaxos<S: StateMachine> {
    pub(super) id: NodeId,
    /// The members and epoch, as far as the log is applied.
    pub(super) configuration: Configuration,
    pub(super) config: Config,
    /// The quorum sizes (majorities unless the configuration sets flexible ones).
    pub(super) quorums: Quorums,
    /// Acceptor: the highest ballot promised.
    pub(super) promised: Option<Ballot>,
    /// Acceptor: the accepted entries above the compaction point. Invariant: every slot in
    /// `compacted + 1 ..= decided` is present, and none at or below `compacted`.
    pub(super) log: BTreeMap<Slot, Accepted<Cmd<S>, Qry<S>>>,
    /// Learner: every slot up to here is chosen. Invariant: `compacted <= applied <= decided`.
    pub(super) decided: Slot,
    pub(super) applied: Slot,
    /// Every slot up to here is covered by `snapshot` and gone from the log.
    pub(super) compacted: Slot,
    /// The latest snapshot (`snapshot.slot == compacted`), sent to lagging followers.
    pub(super) snapshot: Option<Snapshot>,
    pub(super) state: S,
    pub(super) durable: Storage<Cmd<S>, Qry<S>>,
    /// A random number drawn when this incarnation started: differs across restarts.
    pub(super) incarnation: u64,
    pub(super) unconfirmed: VecDeque<(PersistToken, LogWrite<S>)>,
    pub(super) next_token: PersistToken,
    /// The highest ballot round seen anywhere.
    pub(super) max_round: u64,
    pub(super) phase: Phase,
    /// The leader this node last heard from (a hint for clients).
    pub(super) leader: Option<NodeId>,
    /// Follower: every slot up to here is held at `promised` or decided.
    pub(super) prefix: Slot,
    /// Ballot leader election: who may campaign, and when.
    pub(super) election: LeaderElection,
    /// Candidate and leader: the node's own ballot.
    pub(super) ballot: Option<Ballot>,
    pub(super) promises: BTreeMap<NodeId, SlotEntries<S>>,
    /// Candidate: the newest snapshot a promise carried.
    pub(super) offered: Option<Snapshot>,
    /// Leader: the last slot used, the highest slot durable locally, per-follower progress.
    pub(super) last: Slot,
    pub(super) durable_match: Slot,
    pub(super) matched: BTreeMap<NodeId, Slot>,
    pub(super) next: BTreeMap<NodeId, Slot>,
    /// Leader: the followers that acknowledged something at its ballot.
    pub(super) acked: BTreeSet<NodeId>,
    pub(super) heartbeat_deadline: Time,
    pub(super) pending: BTreeMap<Slot, RequestId>,
    /// Leader: the slot of the stop-sign it proposed or adopted; it proposes nothing after.
    pub(super) stopped: Option<Slot>,
    /// Reads served without the log (leader), and the lease promise (acceptor).
    pub(super) reads: Reads<Qry<S>>,
}

impl<S: StateMachine + Default> MultiPaxos<S> {
    /// The decided prefix: every slot up to here is chosen.
    pub fn decided(&self) -> Slot {
        self.decided
    }

    /// The highest slot applied to the state machine.
    pub fn applied(&self) -> Slot {
        self.applied
    }

    /// The accepted entry at `slot`.
    pub fn entry(&self, slot: Slot) -> Option<&Accepted<Cmd<S>, Qry<S>>> {
        self.log.get(&slot)
    }

    /// The durable state: what a crash would leave.
    pub fn durable(&self) -> &Storage<Cmd<S>, Qry<S>> {
        &self.durable
    }

    /// A random number drawn when this incarnation started: differs across restarts (even at
    /// the same instant), so checkers can tell a restart from a step.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Whether this node leads.
    pub fn is_leader(&self) -> bool {
        self.phase == Phase::Leader
    }

    /// The leader's (or candidate's) ballot, or the promised one.
    pub fn ballot(&self) -> Option<Ballot> {
        self.ballot.or(self.promised)
    }

    /// The replicated state machine.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// Promises a candidate needs (phase 1), itself included.
    pub(super) fn phase1_quorum(&self) -> usize {
        self.quorums.phase1
    }

    /// Acceptances that decide a slot (phase 2), the leader included.
    pub(super) fn phase2_quorum(&self) -> usize {
        self.quorums.phase2
    }

    /// Peers (itself included) a node must hear in a heartbeat round to be quorum-connected.
    pub(super) fn connectivity_quorum(&self) -> usize {
        self.quorums.connectivity()
    }

    /// The quorum sizes this node runs with.
    pub fn quorums(&self) -> Quorums {
        self.quorums
    }

    pub(super) fn persist(
        &mut self,
        write: Write<Cmd<S>, Qry<S>>,
        effects: &mut Vec<MultiEffect<S>>,
    ) {
        self.next_token += 1;
        self.unconfirmed.push_back((self.next_token, write.clone()));
        effects.push(Effect::Persist {
            token: self.next_token,
            write,
        });
    }

    pub(super) fn send(
        to: NodeId,
        message: Message<Cmd<S>, Qry<S>>,
        effects: &mut Vec<MultiEffect<S>>,
    ) {
        effects.push(Effect::Send { to, message });
    }

    pub(super) fn followers(&self) -> Vec<NodeId> {
        self.configuration
            .members
            .iter()
            .copied()
            .filter(|&m| m != self.id)
            .collect()
    }

    /// Raises the promise to `ballot` if it is not below it; a higher ballot ends this node's
    /// own candidacy or leadership.
    pub(super) fn promise(&mut self, ballot: Ballot, effects: &mut Vec<MultiEffect<S>>) -> bool {
        self.max_round = self.max_round.max(ballot.round);
        match self.promised {
            Some(promised) if promised > ballot => false,
            Some(promised) if promised == ballot => true,
            _ => {
                if self.phase != Phase::Follower && self.ballot != Some(ballot) {
                    self.become_follower(effects);
                }
                self.promised = Some(ballot);
                self.prefix = self.decided;
                self.persist(Write::Promise(ballot), effects);
                true
            }
        }
    }

    pub(super) fn become_follower(&mut self, effects: &mut Vec<MultiEffect<S>>) {
        for (slot, id) in std::mem::take(&mut self.pending) {
            effects.push(Effect::Reply {
                id,
                response: Response::Failed(PaxosError::OutcomeUnknown { slot }),
            });
        }
        self.fail_reads(effects);
        self.phase = Phase::Follower;
        self.ballot = None;
        self.leader = None;
        self.promises.clear();
        self.offered = None;
        self.stopped = None;
    }

    /// Phase 1 at `ballot` (which ballot leader election chose) for every slot above the
    /// decided prefix.
    pub(super) fn start_election(
        &mut self,
        env: &mut Env<'_>,
        ballot: Ballot,
        effects: &mut Vec<MultiEffect<S>>,
    ) {
        if !self.promise(ballot, effects) {
            return;
        }
        self.ballot = Some(ballot);
        self.phase = Phase::Candidate;
        self.leader = None;
        let first_slot = self.decided + 1;
        let own = self.accepted_from(first_slot);
        self.promises.clear();
        self.offered = None;
        self.promises.insert(self.id, own);
        for to in self.followers() {
            Self::send(to, Message::Prepare { ballot, first_slot }, effects);
        }
        if self.promises.len() >= self.phase1_quorum() {
            self.become_leader(env, effects);
        }
    }

    /// A candidate asks again the peers that have not promised yet (once per heartbeat round).
    pub(super) fn retransmit_prepare(&mut self, effects: &mut Vec<MultiEffect<S>>) {
        let Some(ballot) = self.ballot else { return };
        let first_slot = self.decided + 1;
        for to in self.followers() {
            if !self.promises.contains_key(&to) {
                Self::send(to, Message::Prepare { ballot, first_slot }, effects);
            }
        }
    }

    pub(super) fn advance_decided(&mut self, slot: Slot, effects: &mut Vec<MultiEffect<S>>) {
        if slot <= self.decided {
            return;
        }
        // Every slot up to `slot` must be present; stop at a hole (defensive).
        let mut reach = self.decided;
        while reach < slot && self.log.contains_key(&(reach + 1)) {
            reach += 1;
        }
        if reach > self.decided {
            self.decided = reach;
            self.persist(Write::Decided(reach), effects);
        }
    }

    /// Applies decided entries in slot order, answering the requests (and reads) waiting for
    /// them; then maybe takes a snapshot.
    fn apply_decided(&mut self, effects: &mut Vec<MultiEffect<S>>) {
        self.apply_decided_entries(effects);
        self.serve_applied_reads(effects);
        self.maybe_take_snapshot(effects);
    }

    fn apply_decided_entries(&mut self, effects: &mut Vec<MultiEffect<S>>) {
        while self.applied < self.decided {
            let slot = self.applied + 1;
            let Some(accepted) = self.log.get(&slot) else {
                break;
            };
            let output = match &accepted.entry {
                Entry::StopSign(next) => {
                    let next = next.clone();
                    self.applied = slot;
                    self.apply_stop_sign(slot, next, effects);
                    continue;
                }
                Entry::Noop => None,
                Entry::Command(command) => {
                    effects.push(Effect::Apply {
                        index: slot,
                        command: command.clone(),
                    });
                    Some(self.state.apply(command))
                }
                Entry::Read(query) => Some(self.state.query(query)),
            };
            self.applied = slot;
            if let Some(id) = self.pending.remove(&slot) {
                if let Some(output) = output {
                    effects.push(Effect::Reply {
                        id,
                        response: Response::Applied { slot, output },
                    });
                }
            }
        }
    }

    fn on_persisted(&mut self, token: PersistToken, effects: &mut Vec<MultiEffect<S>>) {
        while self
            .unconfirmed
            .front()
            .is_some_and(|(next, _)| *next <= token)
        {
            let Some((_, write)) = self.unconfirmed.pop_front() else {
                break;
            };
            if let Write::Accept {
                ballot,
                first,
                entries,
            } = &write
            {
                if self.phase == Phase::Leader && self.ballot == Some(*ballot) {
                    let end = first.saturating_add(entries.len() as u64).saturating_sub(1);
                    self.durable_match = self.durable_match.max(end);
                }
            }
            self.durable.apply(&write);
        }
        if self.phase == Phase::Leader {
            self.leader_advance(effects);
        }
    }

    fn on_message(
        &mut self,
        env: &mut Env<'_>,
        from: NodeId,
        message: Message<Cmd<S>, Qry<S>>,
        effects: &mut Vec<MultiEffect<S>>,
    ) {
        // Messages from non-members are handled too: a node being added, or one that has not
        // applied the latest stop-sign yet, must still be able to catch up. Only members'
        // promises and heartbeats count towards quorums.
        if from == self.id {
            return;
        }
        match message {
            Message::Prepare { ballot, first_slot } => {
                // Under a lease acknowledged to a leader, a new ballot waits (the candidate
                // asks again every heartbeat round).
                if self.promised >= Some(ballot) || !self.lease_guarded(env.now) {
                    self.on_prepare(from, ballot, first_slot, effects);
                }
            }
            Message::Promise {
                ballot,
                snapshot,
                accepted,
            } => {
                let counts = self.configuration.contains(from);
                if counts && self.phase == Phase::Candidate && self.ballot == Some(ballot) {
                    self.offer_snapshot(snapshot);
                    self.promises.insert(from, accepted);
                    if self.promises.len() >= self.phase1_quorum() {
                        self.become_leader(env, effects);
                    }
                }
            }
            Message::Accept { .. } => self.on_accept(env.now, from, message, effects),
            Message::Accepted {
                ballot,
                prefix,
                gap,
                read_round,
            } => {
                if self.on_accepted(from, ballot, prefix, gap, effects) {
                    self.on_read_round_acknowledged(env.now, from, read_round, effects);
                }
            }
            Message::InstallSnapshot {
                ballot,
                snapshot,
                read_round,
            } => {
                let now = env.now;
                self.on_install_snapshot(now, from, ballot, snapshot, read_round, effects);
            }
            Message::Rejected { ballot, promised } => {
                self.max_round = self.max_round.max(promised.round);
                if self.phase != Phase::Follower && self.ballot == Some(ballot) && promised > ballot
                {
                    self.become_follower(effects);
                }
            }
            Message::HeartbeatRequest { round } => self.on_heartbeat_request(from, round, effects),
            Message::HeartbeatReply {
                round,
                ballot,
                quorum_connected,
                follows,
            } => {
                let heartbeat = Heartbeat::new(ballot, quorum_connected, follows);
                self.on_heartbeat_reply(from, round, heartbeat);
            }
        }
    }
}

impl<S: StateMachine + Default> Node for MultiPaxos<S> {
    type Message = Message<Cmd<S>, Qry<S>>;
    type Request = Request<Cmd<S>, Qry<S>>;
    type Response = Response<S::Output>;
    type Write = Write<Cmd<S>, Qry<S>>;
    type Storage = Storage<Cmd<S>, Qry<S>>;
    type Command = Cmd<S>;
    type Config = Config;

    fn restore(
        id: NodeId,
        members: &[NodeId],
        config: &Config,
        storage: &Self::Storage,
        now: Time,
        rng: &mut Rng,
    ) -> Self {
        let max_round = storage
            .log
            .values()
            .map(|a| a.ballot.round)
            .chain(storage.promised.map(|b| b.round))
            .max()
            .unwrap_or(0);
        // An invalid configuration (drivers should `Config::validate` first) falls back to
        // majorities, which are always safe, and `check_invariants` reports it.
        let compacted = storage.compacted();
        let configuration = match &storage.snapshot {
            Some(snapshot) => snapshot.configuration.clone(),
            None => Configuration::new(0, config.initial_members.as_deref().unwrap_or(members)),
        };
        let quorums = config
            .quorums(configuration.members.len())
            .unwrap_or_else(|_| Quorums::majority(configuration.members.len()));
        let epoch = configuration.epoch;
        let mut state = S::default();
        if let Some(snapshot) = &storage.snapshot {
            // The node's own durable snapshot: if it does not restore, the disk is corrupt and
            // there is nothing safe to do but stop.
            if let Err(error) = state.restore(&snapshot.data) {
                panic!("node {id}: the stored snapshot at slot {compacted} is corrupt: {error}");
            }
        }
        MultiPaxos {
            id,
            configuration,
            config: config.clone(),
            quorums,
            promised: storage.promised,
            log: storage.log.clone(),
            decided: storage.decided.max(compacted),
            applied: compacted,
            compacted,
            snapshot: storage.snapshot.clone(),
            state,
            durable: storage.clone(),
            incarnation: rand::Rng::gen(rng),
            unconfirmed: VecDeque::new(),
            next_token: 0,
            max_round,
            phase: Phase::Follower,
            leader: None,
            prefix: storage.decided.max(compacted),
            election: LeaderElection::new(Ballot::in_epoch(epoch, 0, id), now),
            ballot: None,
            promises: BTreeMap::new(),
            offered: None,
            last: 0,
            durable_match: 0,
            matched: BTreeMap::new(),
            next: BTreeMap::new(),
            acked: BTreeSet::new(),
            heartbeat_deadline: now,
            pending: BTreeMap::new(),
            stopped: None,
            // A restarted node may have acknowledged a leader just before it stopped.
            reads: Reads::new(now.saturating_add(config.lease_duration)),
        }
    }

    fn apply_write(storage: &mut Self::Storage, write: &Self::Write) {
        storage.apply(write);
    }

    fn is_barrier(write: &Self::Write) -> bool {
        !matches!(write, Write::Decided(_))
    }

    fn step(
        &mut self,
        env: &mut Env<'_>,
        input: Input<Self::Message, Self::Request>,
        effects: &mut Vec<MultiEffect<S>>,
    ) {
        // A restarted node re-applies its decided log first (its configuration depends on it).
        self.apply_decided(effects);
        match input {
            Input::Message { from, message } => self.on_message(env, from, message, effects),
            Input::Tick => {
                if self.phase == Phase::Leader && env.now >= self.heartbeat_deadline {
                    self.heartbeat(env, effects);
                }
                if env.now >= self.election.round_deadline {
                    self.end_round(env, effects);
                }
            }
            Input::Request { id, request } => match request {
                Request::Propose(command) => self.on_request(id, Entry::Command(command), effects),
                Request::Read(query) if self.config.read_mode == ReadMode::Log => {
                    self.on_request(id, Entry::Read(query), effects);
                }
                Request::Read(query) => self.on_read(env.now, id, query, effects),
                Request::Reconfigure(members) => match self.next_configuration(&members) {
                    Ok(next) => self.on_request(id, Entry::StopSign(next), effects),
                    Err(error) => {
                        let response = Response::Failed(error);
                        effects.push(Effect::Reply { id, response });
                    }
                },
            },
            Input::Persisted { token } => self.on_persisted(token, effects),
            // Paxos waits out its own timeouts; connection hints are not used.
            Input::PeerLost { .. } => {}
        }
        self.apply_decided(effects);
    }

    fn next_deadline(&self) -> Option<Time> {
        let round_end = self.election.round_deadline;
        Some(if self.phase == Phase::Leader {
            self.heartbeat_deadline.min(round_end)
        } else {
            round_end
        })
    }

    fn status(&self) -> NodeStatus {
        let peers = if self.phase == Phase::Leader {
            self.followers()
                .into_iter()
                .map(|id| PeerProgress {
                    id,
                    match_index: self.matched.get(&id).copied().unwrap_or(0),
                    next_index: self.next.get(&id).copied().unwrap_or(0),
                    voter: true,
                })
                .collect()
        } else {
            Vec::new()
        };
        NodeStatus {
            id: self.id,
            role: match self.phase {
                Phase::Leader => Role::Leader,
                Phase::Candidate => Role::Candidate,
                Phase::Follower => Role::Follower,
            },
            leader: self.leader,
            term: self.ballot().map_or(0, |b| b.round),
            log_length: self
                .log
                .keys()
                .next_back()
                .copied()
                .unwrap_or(self.compacted),
            commit_index: self.decided,
            applied_index: self.applied,
            peers,
        }
    }

    fn check_invariants(&self) -> Result<(), Violation> {
        self.check_state()
    }

    fn id(&self) -> NodeId {
        self.id
    }

    /// A dead leader is noticed within two heartbeat rounds, ballots are raised in a third,
    /// and the highest quorum-connected node campaigns in a fourth.
    fn election_timeout(config: &Config) -> Duration {
        config.election_round.saturating_mul(4)
    }

    fn state_digest(&self) -> Option<u64> {
        Some(concord_core::digest(&self.state.snapshot()))
    }
}
