//! A small deterministic harness for driving PBFT replicas by hand (this crate's tests, and
//! other crates' with the `testing` feature).
//!
//! Writes are durable at once (the simulator covers slow disks and crashes between a write and
//! its confirmation); messages wait in one FIFO network and are delivered with no latency
//! within a time step; time advances in steps of `tick`. A replica's outgoing messages can be
//! rewritten by a Byzantine hook; a replica can have a twin (a second instance with the same
//! identity and keys). Every step runs the local and cluster invariants; the first violation
//! is kept in `violation`.

use std::collections::{BTreeSet, VecDeque};

use concord_core::time::MILLISECOND;
use concord_core::{
    seeded_rng, ClusterInvariant, Effect, Env, Input, Node, NodeId, RequestId, Rng, Time, Violation,
};

use crate::config::Config;
use crate::message::{Request, Response, Storage};
use crate::replica::{Executed, Pbft, PbftMessage, Service};

/// A message in flight.
#[derive(Clone, Debug)]
pub struct Envelope<M> {
    /// The sender the receiver is told.
    pub from: NodeId,
    /// The destination.
    pub to: NodeId,
    /// The message.
    pub message: M,
}

/// Rewrites what a Byzantine replica sends: `(to, message)` in, envelopes out.
pub type Rewrite<S> = Box<dyn FnMut(NodeId, PbftMessage<S>) -> Vec<Envelope<PbftMessage<S>>>>;

/// `n` replicas (plus twins), their storage, a network and a clock.
#[allow(missing_debug_implementations)]
pub struct Harness<S: Service> {
    /// The configuration every replica runs.
    pub config: Config,
    /// The current time.
    pub now: Time,
    /// How far time advances per step of [`Harness::run_for`].
    pub tick: Time,
    members: Vec<NodeId>,
    /// The replicas (`None` while crashed); entries past `n` are twins.
    pub nodes: Vec<Option<Pbft<S>>>,
    /// Which identity each entry of `nodes` has.
    pub identity: Vec<NodeId>,
    /// Each entry's storage.
    pub storage: Vec<Storage<S::Command, S::Query>>,
    rngs: Vec<Rng>,
    /// Messages sent and not yet delivered.
    pub network: VecDeque<Envelope<PbftMessage<S>>>,
    /// Replies released to clients: (node, request, response).
    pub replies: Vec<(NodeId, RequestId, Response<S::Output>)>,
    /// What each entry executed: (sequence number, batch).
    pub applied: Vec<Vec<(u64, Executed<S>)>>,
    invariants: Vec<Box<dyn ClusterInvariant<Pbft<S>>>>,
    /// Directed links `(from, to)` that lose every message.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Which entries a message to an identity with a twin reaches: `None` both.
    pub twin_route: Option<Box<dyn Fn(NodeId, usize) -> bool>>,
    /// Byzantine rewriting per entry.
    pub byzantine: Vec<Option<Rewrite<S>>>,
    /// The first invariant violation.
    pub violation: Option<Violation>,
    next_request: RequestId,
    /// Messages delivered so far.
    pub delivered: u64,
}

impl<S: Service + 'static> Harness<S> {
    /// `n` fresh replicas with `config`, checked by `invariants`.
    pub fn new(
        n: u64,
        config: Config,
        seed: u64,
        invariants: Vec<Box<dyn ClusterInvariant<Pbft<S>>>>,
    ) -> Self {
        let members: Vec<NodeId> = (0..n).collect();
        let mut harness = Harness {
            config,
            now: 0,
            tick: MILLISECOND,
            nodes: Vec::new(),
            identity: Vec::new(),
            storage: Vec::new(),
            rngs: Vec::new(),
            network: VecDeque::new(),
            replies: Vec::new(),
            applied: Vec::new(),
            invariants,
            cut: BTreeSet::new(),
            twin_route: None,
            byzantine: Vec::new(),
            violation: None,
            next_request: 1,
            delivered: 0,
            members,
        };
        for id in 0..n {
            harness.add_instance(id, seed);
        }
        harness
    }

    fn add_instance(&mut self, id: NodeId, seed: u64) -> usize {
        let entry = self.nodes.len();
        let mut rng = seeded_rng(seed, entry as u64 + 1);
        let storage = Storage::default();
        let node = Pbft::restore(
            id,
            &self.members,
            &self.config,
            &storage,
            self.now,
            &mut rng,
        );
        self.nodes.push(Some(node));
        self.identity.push(id);
        self.storage.push(storage);
        self.rngs.push(rng);
        self.applied.push(Vec::new());
        self.byzantine.push(None);
        entry
    }

    /// Adds a twin of `id`: a second, fresh instance with the same identity and keys. Returns
    /// its entry.
    pub fn add_twin(&mut self, id: NodeId, seed: u64) -> usize {
        self.add_instance(id, seed ^ 0x7715)
    }

    /// Replica `entry` (panics while crashed).
    pub fn node(&self, entry: usize) -> &Pbft<S> {
        self.nodes[entry].as_ref().expect("the replica is up")
    }

    /// Hands `input` to entry `entry` and carries out its effects.
    pub fn step(
        &mut self,
        entry: usize,
        input: Input<PbftMessage<S>, Request<S::Command, S::Query>>,
    ) {
        let Some(node) = self.nodes[entry].as_mut() else {
            return;
        };
        let mut effects = Vec::new();
        let mut env = Env {
            now: self.now,
            rng: &mut self.rngs[entry],
        };
        node.step(&mut env, input, &mut effects);
        let id = self.identity[entry];
        if self.violation.is_none() {
            let result = node.check_invariants().and_then(|()| {
                let view: Vec<Option<&Pbft<S>>> = self.nodes[..self.members.len()]
                    .iter()
                    .map(|n| n.as_ref())
                    .collect();
                self.invariants
                    .iter_mut()
                    .try_for_each(|invariant| invariant.check(&view, id, &effects))
            });
            if let Err(violation) = result {
                self.violation = Some(violation);
            }
        }
        for effect in effects {
            match effect {
                Effect::Send { to, message } => {
                    let outgoing = match self.byzantine[entry].as_mut() {
                        Some(rewrite) => rewrite(to, message),
                        None => vec![Envelope {
                            from: id,
                            to,
                            message,
                        }],
                    };
                    self.network.extend(outgoing);
                }
                Effect::Persist { token, write } => {
                    Pbft::<S>::apply_write(&mut self.storage[entry], &write);
                    let _ = token;
                }
                Effect::Apply { index, command } => self.applied[entry].push((index, command)),
                Effect::Reply {
                    id: request,
                    response,
                } => self.replies.push((id, request, response)),
            }
        }
    }

    /// Hands a client request to node `entry`'s proxy; returns its id.
    pub fn request(&mut self, entry: usize, request: Request<S::Command, S::Query>) -> RequestId {
        let id = self.next_request;
        self.next_request += 1;
        self.step(entry, Input::Request { id, request });
        id
    }

    /// Delivers queued messages (and what they cause) until none is left or `limit` were
    /// delivered.
    pub fn deliver_all(&mut self, limit: u64) {
        let mut budget = limit;
        while budget > 0 {
            let Some(envelope) = self.network.pop_front() else {
                return;
            };
            budget -= 1;
            if self.cut.contains(&(envelope.from, envelope.to)) {
                continue;
            }
            let targets: Vec<usize> = (0..self.nodes.len())
                .filter(|&entry| self.identity[entry] == envelope.to)
                .filter(|&entry| {
                    self.twin_route
                        .as_ref()
                        .is_none_or(|route| route(envelope.from, entry))
                })
                .collect();
            for entry in targets {
                self.delivered += 1;
                let input = Input::Message {
                    from: envelope.from,
                    message: envelope.message.clone(),
                };
                self.step(entry, input);
            }
        }
    }

    /// Ticks every replica whose deadline has come.
    pub fn tick_due(&mut self) {
        for entry in 0..self.nodes.len() {
            let due = self.nodes[entry]
                .as_ref()
                .and_then(|n| n.next_deadline())
                .is_some_and(|at| at <= self.now);
            if due {
                self.step(entry, Input::Tick);
            }
        }
    }

    /// Runs for `duration`: each tick, delivers everything, then fires due timers.
    pub fn run_for(&mut self, duration: Time) {
        let end = self.now + duration;
        while self.now < end {
            self.deliver_all(100_000);
            self.now += self.tick;
            self.tick_due();
        }
        self.deliver_all(100_000);
    }

    /// Crashes entry `entry` (its storage survives; queued messages to it are lost).
    pub fn crash(&mut self, entry: usize) {
        self.nodes[entry] = None;
    }

    /// Restarts entry `entry` from its storage.
    pub fn restart(&mut self, entry: usize) {
        let id = self.identity[entry];
        let node = Pbft::restore(
            id,
            &self.members,
            &self.config,
            &self.storage[entry],
            self.now,
            &mut self.rngs[entry],
        );
        self.nodes[entry] = Some(node);
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&mut self, id: NodeId) {
        for other in &self.members {
            self.cut.insert((id, *other));
            self.cut.insert((*other, id));
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// The replies to request `id`.
    pub fn replies_to(&self, id: RequestId) -> Vec<&Response<S::Output>> {
        self.replies
            .iter()
            .filter(|(_, request, _)| *request == id)
            .map(|(_, _, response)| response)
            .collect()
    }

    /// Panics with the violation, if any.
    pub fn assert_safe(&self) {
        if let Some(violation) = &self.violation {
            panic!("{violation}");
        }
    }
}
