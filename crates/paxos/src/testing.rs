//! A small deterministic harness for driving any [`Node`] by hand (enabled in this crate's tests
//! and by the `testing` feature).
//!
//! [`Harness`] follows the driver contract of `concord_core::node`: writes reach storage in
//! emission order, and a barrier write holds the node's later sends and replies until it is
//! confirmed ([`Harness::confirm`]). Messages wait in one network pool; [`Harness::run_random`]
//! delivers them in a seeded random order, optionally losing some. Every step runs the node's
//! local invariants and the cluster invariants given, panicking on a violation.

use std::collections::{BTreeSet, VecDeque};

use concord_core::{
    seeded_rng, ClusterInvariant, Effect, EffectOf, Env, Input, Node, NodeId, PersistToken,
    RequestId, Rng, Time,
};
use rand::Rng as _;

/// A message in flight.
#[derive(Clone, Debug)]
pub struct Envelope<M> {
    /// The sender.
    pub from: NodeId,
    /// The destination.
    pub to: NodeId,
    /// The message.
    pub message: M,
}

/// N nodes, their storage, a network pool and a shared clock.
#[allow(missing_debug_implementations)]
pub struct Harness<N: Node> {
    /// The configuration every node runs.
    pub config: N::Config,
    /// The current time.
    pub now: Time,
    members: Vec<NodeId>,
    /// The nodes; `None` while crashed.
    pub nodes: Vec<Option<N>>,
    /// Each node's confirmed storage.
    pub storage: Vec<N::Storage>,
    rngs: Vec<Rng>,
    /// The harness's own generator (delivery order, loss).
    pub rng: Rng,
    pending: Vec<VecDeque<(PersistToken, N::Write)>>,
    held: Vec<VecDeque<EffectOf<N>>>,
    /// Messages sent and not yet delivered.
    pub network: Vec<Envelope<N::Message>>,
    /// Replies released to clients: (node, request, response).
    pub replies: Vec<(NodeId, RequestId, N::Response)>,
    /// Commands each node applied: (index, command).
    pub applied: Vec<Vec<(u64, N::Command)>>,
    invariants: Vec<Box<dyn ClusterInvariant<N>>>,
    /// Probability (per mille) that [`Harness::run_random`] loses a delivered message.
    pub loss_per_mille: u32,
    /// Directed links `(from, to)` that lose every message delivered over them.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Steps taken so far.
    pub steps: u64,
}

impl<N: Node> Harness<N> {
    /// `size` fresh nodes `0..size` with `config`, checked by `invariants`.
    pub fn new(
        size: u64,
        config: N::Config,
        seed: u64,
        invariants: Vec<Box<dyn ClusterInvariant<N>>>,
    ) -> Self {
        let members: Vec<NodeId> = (0..size).collect();
        let mut rngs: Vec<Rng> = members.iter().map(|&id| seeded_rng(seed, id + 1)).collect();
        let storage = vec![N::Storage::default(); members.len()];
        let nodes = members
            .iter()
            .map(|&id| {
                let index = id as usize;
                Some(N::restore(
                    id,
                    &members,
                    &config,
                    &storage[index],
                    0,
                    &mut rngs[index],
                ))
            })
            .collect();
        Harness {
            config,
            now: 0,
            nodes,
            storage,
            rngs,
            rng: seeded_rng(seed, 0),
            pending: vec![VecDeque::new(); members.len()],
            held: members.iter().map(|_| VecDeque::new()).collect(),
            network: Vec::new(),
            replies: Vec::new(),
            applied: vec![Vec::new(); members.len()],
            invariants,
            loss_per_mille: 0,
            cut: BTreeSet::new(),
            steps: 0,
            members,
        }
    }

    /// The live node `id`.
    pub fn node(&self, id: NodeId) -> &N {
        self.nodes[id as usize].as_ref().expect("node is up")
    }

    /// Feeds `input` to node `id` (ignored while it is crashed) and performs its effects.
    pub fn step(&mut self, id: NodeId, input: Input<N::Message, N::Request>) {
        let index = id as usize;
        let Some(node) = self.nodes[index].as_mut() else {
            return;
        };
        let mut effects = Vec::new();
        let mut env = Env {
            now: self.now,
            rng: &mut self.rngs[index],
        };
        node.step(&mut env, input, &mut effects);
        self.steps += 1;
        if let Err(violation) = node.check_invariants() {
            panic!("{violation}");
        }
        let view: Vec<Option<&N>> = self.nodes.iter().map(Option::as_ref).collect();
        for invariant in &mut self.invariants {
            if let Err(violation) = invariant.check(&view, id, &effects) {
                panic!("{violation}");
            }
        }
        for effect in effects {
            self.perform(id, effect);
        }
    }

    fn perform(&mut self, id: NodeId, effect: EffectOf<N>) {
        let index = id as usize;
        match effect {
            Effect::Persist { token, write } => self.pending[index].push_back((token, write)),
            Effect::Apply {
                index: slot,
                command,
            } => self.applied[index].push((slot, command)),
            Effect::Send { .. } | Effect::Reply { .. } => {
                let blocked = self.pending[index]
                    .iter()
                    .any(|(_, write)| N::is_barrier(write));
                if blocked || !self.held[index].is_empty() {
                    self.held[index].push_back(effect);
                } else {
                    self.release(id, effect);
                }
            }
        }
    }

    fn release(&mut self, id: NodeId, effect: EffectOf<N>) {
        match effect {
            Effect::Send { to, message } => self.network.push(Envelope {
                from: id,
                to,
                message,
            }),
            Effect::Reply {
                id: request,
                response,
            } => self.replies.push((id, request, response)),
            Effect::Persist { .. } | Effect::Apply { .. } => {}
        }
    }

    /// Makes every pending write of node `id` durable, releases what waited for them and
    /// confirms the last one to the node.
    pub fn confirm(&mut self, id: NodeId) {
        let index = id as usize;
        let mut last = None;
        while let Some((token, write)) = self.pending[index].pop_front() {
            N::apply_write(&mut self.storage[index], &write);
            last = Some(token);
        }
        while let Some(effect) = self.held[index].pop_front() {
            self.release(id, effect);
        }
        if let Some(token) = last {
            self.step(id, Input::Persisted { token });
        }
    }

    /// Crashes node `id`: its unconfirmed writes and held messages are lost.
    pub fn crash(&mut self, id: NodeId) {
        let index = id as usize;
        self.nodes[index] = None;
        self.pending[index].clear();
        self.held[index].clear();
    }

    /// Restarts node `id` from its confirmed storage.
    pub fn restart(&mut self, id: NodeId) {
        let index = id as usize;
        self.nodes[index] = Some(N::restore(
            id,
            &self.members,
            &self.config,
            &self.storage[index],
            self.now,
            &mut self.rngs[index],
        ));
    }

    /// Tells the checkers that a client asked node `id` for `request` without stepping it: for
    /// tests that forge the messages such a request would have caused.
    pub fn note_request(&mut self, id: NodeId, request: &N::Request) {
        for invariant in &mut self.invariants {
            invariant.observe_request(id, request);
        }
    }

    /// Sends a client request to node `id`.
    pub fn request(&mut self, id: NodeId, request_id: RequestId, request: N::Request) {
        if self.nodes[id as usize].is_some() {
            for invariant in &mut self.invariants {
                invariant.observe_request(id, &request);
            }
        }
        self.step(
            id,
            Input::Request {
                id: request_id,
                request,
            },
        );
    }

    /// Cuts node `id` off from every other node, both ways.
    pub fn isolate(&mut self, id: NodeId) {
        for &other in &self.members {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Delivers the message at `position` in the pool (losing it if its link is cut).
    pub fn deliver(&mut self, position: usize) {
        let envelope = self.network.swap_remove(position);
        if self.cut.contains(&(envelope.from, envelope.to)) {
            return;
        }
        self.step(
            envelope.to,
            Input::Message {
                from: envelope.from,
                message: envelope.message,
            },
        );
    }

    /// Moves time to the earliest deadline of a live node and ticks every node due.
    /// Returns false when no node asks for a tick.
    pub fn advance(&mut self) -> bool {
        let Some(deadline) = self
            .nodes
            .iter()
            .flatten()
            .filter_map(Node::next_deadline)
            .min()
        else {
            return false;
        };
        self.now = self.now.max(deadline);
        for id in self.members.clone() {
            let due = self.nodes[id as usize]
                .as_ref()
                .and_then(Node::next_deadline)
                .is_some_and(|d| d <= self.now);
            if due {
                self.step(id, Input::Tick);
            }
        }
        true
    }

    /// One random action: deliver (or lose) a random message, confirm a node's writes, or let
    /// time pass. Returns false when nothing can happen.
    pub fn random_action(&mut self) -> bool {
        let with_writes: Vec<usize> = (0..self.pending.len())
            .filter(|&i| !self.pending[i].is_empty())
            .collect();
        let roll = self.rng.gen_range(0..100);
        if !self.network.is_empty() && (roll < 70 || with_writes.is_empty()) {
            let position = self.rng.gen_range(0..self.network.len());
            if self.rng.gen_range(0..1000) < self.loss_per_mille {
                self.network.swap_remove(position);
            } else {
                self.deliver(position);
            }
            true
        } else if !with_writes.is_empty() && (roll < 95 || !self.has_deadline()) {
            let pick = with_writes[self.rng.gen_range(0..with_writes.len())];
            self.confirm(pick as NodeId);
            true
        } else {
            self.advance()
        }
    }

    /// Delivers messages and confirms writes in random order until none are left, then lets
    /// time pass to the next deadline, over and over until `end`. Panics if the network never
    /// quiets down (a message storm).
    pub fn run_until(&mut self, end: Time) {
        const MAX_STEPS: u64 = 10_000_000;
        let limit = self.steps + MAX_STEPS;
        loop {
            while !self.network.is_empty() || self.pending.iter().any(|p| !p.is_empty()) {
                assert!(self.steps < limit, "the network never quiets down");
                let with_writes: Vec<usize> = (0..self.pending.len())
                    .filter(|&i| !self.pending[i].is_empty())
                    .collect();
                if !self.network.is_empty() && (with_writes.is_empty() || self.rng.gen_bool(0.7)) {
                    let position = self.rng.gen_range(0..self.network.len());
                    if self.rng.gen_range(0..1000) < self.loss_per_mille {
                        self.network.swap_remove(position);
                    } else {
                        self.deliver(position);
                    }
                } else {
                    let pick = with_writes[self.rng.gen_range(0..with_writes.len())];
                    self.confirm(pick as NodeId);
                }
            }
            let next = self
                .nodes
                .iter()
                .flatten()
                .filter_map(Node::next_deadline)
                .min();
            match next {
                Some(deadline) if deadline <= end => {
                    self.advance();
                }
                _ => {
                    self.now = self.now.max(end);
                    return;
                }
            }
        }
    }

    /// [`Harness::run_until`] `duration` from now.
    pub fn run_for(&mut self, duration: u64) {
        self.run_until(self.now.saturating_add(duration));
    }

    fn has_deadline(&self) -> bool {
        self.nodes
            .iter()
            .flatten()
            .any(|node| node.next_deadline().is_some())
    }

    /// Runs random actions until `done` holds or `max_steps` actions were taken; returns
    /// whether `done` held.
    pub fn run_random(&mut self, max_steps: u64, mut done: impl FnMut(&Self) -> bool) -> bool {
        for _ in 0..max_steps {
            if done(self) {
                return true;
            }
            if !self.random_action() {
                break;
            }
        }
        done(self)
    }
}
