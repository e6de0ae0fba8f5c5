//! The single-decree Paxos node: proposer, acceptor and learner in one.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;

use rand::Rng as _;

use concord_core::{
    Duration, Effect, Env, Input, Node, NodeId, NodeStatus, PersistToken, RequestId, Rng, Role,
    Time, Violation,
};

use super::{Config, Message, Proposal, Request, Response, Storage, Write};
use crate::Ballot;

type PaxosEffect<V> = Effect<Message<V>, Write<V>, V, Response<V>>;

/// The most client requests a node holds while it has not decided; later ones wait for the
/// decision by retrying.
const MAX_WAITING: usize = 1024;

/// Where the proposer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing to propose.
    Idle,
    /// Phase 1: waiting for promises.
    Preparing,
    /// Phase 2: waiting for acceptances.
    Accepting,
    /// Preempted or timed out: waiting for a random backoff before retrying.
    BackingOff,
}

/// A single-decree Paxos node generic over the value `V`.
#[derive(Clone, Debug)]
pub struct SinglePaxos<V> {
    id: NodeId,
    members: Vec<NodeId>,
    config: Config,
    /// Acceptor state. Invariant: `accepted.ballot <= promised`.
    promised: Option<Ballot>,
    accepted: Option<Proposal<V>>,
    /// Learner state.
    decided: Option<V>,
    /// What confirmed writes add up to (`durable <= memory` component-wise).
    durable: Storage<V>,
    unconfirmed: VecDeque<(PersistToken, Write<V>)>,
    next_token: PersistToken,
    /// The highest round seen in any ballot; the next ballot goes above it.
    max_round: u64,
    /// Proposer state.
    phase: Phase,
    ballot: Option<Ballot>,
    value: Option<V>,
    promises: BTreeMap<NodeId, Option<Proposal<V>>>,
    proposal: Option<Proposal<V>>,
    acceptances: BTreeMap<NodeId, ()>,
    deadline: Option<Time>,
    attempts: u32,
    waiting: Vec<RequestId>,
}

impl<V: Clone + Debug + PartialEq> SinglePaxos<V> {
    /// The value this node learned was chosen, if any.
    pub fn decided(&self) -> Option<&V> {
        self.decided.as_ref()
    }

    /// The durable state (confirmed writes only): what a crash would leave.
    pub fn durable(&self) -> &Storage<V> {
        &self.durable
    }

    /// The ballot promised (acceptor).
    pub fn promised(&self) -> Option<Ballot> {
        self.promised
    }

    /// The proposal accepted (acceptor).
    pub fn accepted(&self) -> Option<&Proposal<V>> {
        self.accepted.as_ref()
    }

    /// The cluster size.
    pub fn cluster_size(&self) -> usize {
        self.members.len()
    }

    fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }

    fn persist(&mut self, write: Write<V>, effects: &mut Vec<PaxosEffect<V>>) {
        self.next_token += 1;
        self.unconfirmed.push_back((self.next_token, write.clone()));
        effects.push(Effect::Persist {
            token: self.next_token,
            write,
        });
    }

    fn broadcast(&self, message: &Message<V>, effects: &mut Vec<PaxosEffect<V>>) {
        for &to in &self.members {
            if to != self.id {
                effects.push(Effect::Send {
                    to,
                    message: message.clone(),
                });
            }
        }
    }

    /// Acceptor, phase 1b: promise `ballot` if no higher one was promised.
    fn promise(
        &mut self,
        ballot: Ballot,
        effects: &mut Vec<PaxosEffect<V>>,
    ) -> Result<Option<Proposal<V>>, Ballot> {
        self.max_round = self.max_round.max(ballot.round);
        match self.promised {
            Some(promised) if promised > ballot => Err(promised),
            Some(promised) if promised == ballot => Ok(self.accepted.clone()),
            _ => {
                self.promised = Some(ballot);
                self.persist(Write::Promise(ballot), effects);
                Ok(self.accepted.clone())
            }
        }
    }

    /// Acceptor, phase 2b: accept `proposal` if no higher ballot was promised.
    fn accept(
        &mut self,
        proposal: Proposal<V>,
        effects: &mut Vec<PaxosEffect<V>>,
    ) -> Result<(), Ballot> {
        self.max_round = self.max_round.max(proposal.ballot.round);
        if let Some(promised) = self.promised.filter(|p| *p > proposal.ballot) {
            return Err(promised);
        }
        if self.accepted.as_ref() == Some(&proposal) {
            return Ok(());
        }
        self.promised = Some(proposal.ballot);
        self.accepted = Some(proposal.clone());
        self.persist(Write::Accept(proposal), effects);
        Ok(())
    }

    /// Learner: the value is chosen. `announce` tells the others (the proposer that saw the
    /// quorum does).
    fn learn(&mut self, value: V, announce: bool, effects: &mut Vec<PaxosEffect<V>>) {
        if self.decided.is_some() {
            return;
        }
        self.decided = Some(value.clone());
        self.persist(Write::Decided(value.clone()), effects);
        effects.push(Effect::Apply {
            index: 1,
            command: value.clone(),
        });
        if announce {
            self.broadcast(
                &Message::Decided {
                    value: value.clone(),
                },
                effects,
            );
        }
        for id in std::mem::take(&mut self.waiting) {
            effects.push(Effect::Reply {
                id,
                response: Response::Decided(value.clone()),
            });
        }
        self.phase = Phase::Idle;
        self.deadline = None;
    }

    /// Proposer, phase 1a: a fresh ballot above every round seen, promised locally first.
    fn start_prepare(&mut self, now: Time, effects: &mut Vec<PaxosEffect<V>>) {
        let ballot = Ballot::new(self.max_round, self.id).next_for(self.id);
        self.ballot = Some(ballot);
        self.phase = Phase::Preparing;
        self.promises.clear();
        self.acceptances.clear();
        self.proposal = None;
        self.deadline = Some(now.saturating_add(self.config.phase_timeout));
        if let Ok(accepted) = self.promise(ballot, effects) {
            self.promises.insert(self.id, accepted);
        }
        self.broadcast(&Message::Prepare { ballot }, effects);
        self.try_accept_phase(effects);
    }

    /// Proposer, phase 2a once a quorum promised: adopt the highest accepted value.
    fn try_accept_phase(&mut self, effects: &mut Vec<PaxosEffect<V>>) {
        let Some(ballot) = self.ballot else { return };
        if self.phase != Phase::Preparing || self.promises.len() < self.quorum() {
            return;
        }
        let adopted = self
            .promises
            .values()
            .flatten()
            .max_by_key(|proposal| proposal.ballot)
            .map(|proposal| proposal.value.clone());
        let Some(value) = adopted.or_else(|| self.value.clone()) else {
            return;
        };
        let proposal = Proposal { ballot, value };
        self.phase = Phase::Accepting;
        self.proposal = Some(proposal.clone());
        if self.accept(proposal.clone(), effects).is_ok() {
            self.acceptances.insert(self.id, ());
        }
        self.broadcast(&Message::Accept { proposal }, effects);
        self.try_decide(effects);
    }

    fn try_decide(&mut self, effects: &mut Vec<PaxosEffect<V>>) {
        if self.phase != Phase::Accepting || self.acceptances.len() < self.quorum() {
            return;
        }
        if let Some(proposal) = self.proposal.clone() {
            self.learn(proposal.value, true, effects);
        }
    }

    /// Preempted or timed out: retry after a random backoff that doubles with each attempt.
    fn back_off(&mut self, rng: &mut Rng, now: Time) {
        self.attempts = self.attempts.saturating_add(1);
        let min = self.config.backoff_min;
        let cap = min
            .saturating_mul(1u64 << self.attempts.min(16))
            .clamp(min, self.config.backoff_max.max(min));
        let delay: Duration = rng.gen_range(min..=cap);
        self.phase = Phase::BackingOff;
        self.deadline = Some(now.saturating_add(delay));
    }

    fn on_message(
        &mut self,
        env: &mut Env<'_>,
        from: NodeId,
        message: Message<V>,
        effects: &mut Vec<PaxosEffect<V>>,
    ) {
        if from == self.id || !self.members.contains(&from) {
            return;
        }
        let reply = |message, effects: &mut Vec<PaxosEffect<V>>| {
            effects.push(Effect::Send { to: from, message });
        };
        match message {
            Message::Prepare { .. } | Message::Accept { .. } if self.decided.is_some() => {
                if let Some(value) = self.decided.clone() {
                    reply(Message::Decided { value }, effects);
                }
            }
            Message::Prepare { ballot } => match self.promise(ballot, effects) {
                Ok(accepted) => reply(Message::Promise { ballot, accepted }, effects),
                Err(promised) => reply(Message::Rejected { ballot, promised }, effects),
            },
            Message::Accept { proposal } => {
                let ballot = proposal.ballot;
                match self.accept(proposal, effects) {
                    Ok(()) => reply(Message::Accepted { ballot }, effects),
                    Err(promised) => reply(Message::Rejected { ballot, promised }, effects),
                }
            }
            Message::Promise { ballot, accepted } => {
                if self.ballot == Some(ballot) && self.phase == Phase::Preparing {
                    self.promises.insert(from, accepted);
                    self.try_accept_phase(effects);
                }
            }
            Message::Accepted { ballot } => {
                if self.ballot == Some(ballot) && self.phase == Phase::Accepting {
                    self.acceptances.insert(from, ());
                    self.try_decide(effects);
                }
            }
            Message::Rejected { ballot, promised } => {
                self.max_round = self.max_round.max(promised.round);
                let active = matches!(self.phase, Phase::Preparing | Phase::Accepting);
                if active && self.ballot == Some(ballot) && promised > ballot {
                    self.back_off(env.rng, env.now);
                }
            }
            Message::Decided { value } => self.learn(value, false, effects),
        }
    }

    fn on_persisted(&mut self, token: PersistToken) {
        while let Some((next, _)) = self.unconfirmed.front() {
            if *next > token {
                break;
            }
            if let Some((_, write)) = self.unconfirmed.pop_front() {
                self.durable.apply(&write);
            }
        }
    }
}

impl<V: Clone + Debug + PartialEq> Node for SinglePaxos<V> {
    type Message = Message<V>;
    type Request = Request<V>;
    type Response = Response<V>;
    type Write = Write<V>;
    type Storage = Storage<V>;
    type Command = V;
    type Config = Config;

    fn restore(
        id: NodeId,
        members: &[NodeId],
        config: &Config,
        storage: &Storage<V>,
        _now: Time,
        _rng: &mut Rng,
    ) -> Self {
        SinglePaxos {
            id,
            members: members.to_vec(),
            config: config.clone(),
            promised: storage.promised,
            accepted: storage.accepted.clone(),
            decided: storage.decided.clone(),
            durable: storage.clone(),
            unconfirmed: VecDeque::new(),
            next_token: 0,
            max_round: storage.promised.map_or(0, |b| b.round),
            phase: Phase::Idle,
            ballot: None,
            value: None,
            promises: BTreeMap::new(),
            proposal: None,
            acceptances: BTreeMap::new(),
            deadline: None,
            attempts: 0,
            waiting: Vec::new(),
        }
    }

    fn apply_write(storage: &mut Storage<V>, write: &Write<V>) {
        storage.apply(write);
    }

    fn step(
        &mut self,
        env: &mut Env<'_>,
        input: Input<Message<V>, Request<V>>,
        effects: &mut Vec<PaxosEffect<V>>,
    ) {
        match input {
            Input::Message { from, message } => self.on_message(env, from, message, effects),
            Input::Tick => {
                if self.phase != Phase::Idle && self.deadline.is_some_and(|d| d <= env.now) {
                    if self.phase == Phase::BackingOff {
                        self.start_prepare(env.now, effects);
                    } else {
                        self.back_off(env.rng, env.now);
                    }
                }
            }
            Input::Request {
                id,
                request: Request::Propose(value),
            } => {
                if let Some(decided) = &self.decided {
                    effects.push(Effect::Reply {
                        id,
                        response: Response::Decided(decided.clone()),
                    });
                    return;
                }
                if self.waiting.len() < MAX_WAITING {
                    self.waiting.push(id);
                }
                if self.value.is_none() {
                    self.value = Some(value);
                }
                if self.phase == Phase::Idle {
                    self.start_prepare(env.now, effects);
                }
            }
            Input::Persisted { token } => self.on_persisted(token),
            // Paxos waits out its own timeouts; connection hints are not used.
            Input::PeerLost { .. } => {}
        }
    }

    fn next_deadline(&self) -> Option<Time> {
        if self.phase == Phase::Idle {
            None
        } else {
            self.deadline
        }
    }

    fn status(&self) -> NodeStatus {
        let decided = u64::from(self.decided.is_some());
        NodeStatus {
            id: self.id,
            role: match self.phase {
                Phase::Accepting => Role::Leader,
                Phase::Preparing => Role::Candidate,
                Phase::Idle | Phase::BackingOff => Role::Follower,
            },
            leader: self
                .ballot
                .filter(|_| self.phase == Phase::Accepting)
                .map(|b| b.node),
            term: self.promised.map_or(0, |b| b.round),
            log_length: u64::from(self.accepted.is_some() || self.decided.is_some()),
            commit_index: decided,
            applied_index: decided,
            peers: Vec::new(),
        }
    }

    fn check_invariants(&self) -> Result<(), Violation> {
        let fail = |detail: String| Err(Violation::on_node("acceptor-state", self.id, detail));
        if let Some(accepted) = &self.accepted {
            if Some(accepted.ballot) > self.promised {
                return fail(format!(
                    "accepted ballot {} above promise {:?}",
                    accepted.ballot, self.promised
                ));
            }
        }
        if self.durable.promised > self.promised {
            return fail("durable promise above the promise in memory".into());
        }
        if self.durable.decided.is_some() && self.durable.decided != self.decided {
            return fail("durable decision differs from the one in memory".into());
        }
        if let Some(ballot) = self.ballot {
            if ballot.round > self.max_round || ballot.node != self.id {
                return fail(format!("own ballot {ballot} not above the rounds seen"));
            }
        }
        Ok(())
    }

    fn id(&self) -> NodeId {
        self.id
    }

    fn election_timeout(config: &Config) -> Duration {
        config.phase_timeout.saturating_add(config.backoff_max)
    }
}
