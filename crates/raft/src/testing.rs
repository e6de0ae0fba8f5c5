//! A tiny deterministic harness for testing Raft nodes by hand (enabled in this crate's tests
//! and by the `testing` feature).
//!
//! [`Cluster`] holds N [`RaftNode<KvStateMachine>`]s and follows the driver contract of
//! `concord_core::node`: a `Persist` is a barrier for the node's later sends and replies, which
//! are held until the write is confirmed. Writes are confirmed at once (`auto_persist`) or on
//! demand ([`Cluster::confirm_persists`]). Messages wait in one FIFO network queue until a test
//! delivers them; time moves only when the test says so. Every step runs the node's local
//! invariants and all cluster invariants of [`mod@crate::invariants`], panicking on a violation.

use std::collections::{BTreeSet, VecDeque};

use concord_core::{
    seeded_rng, ClusterInvariant, Effect, Env, Input, KvCommand, KvOperation, KvStateMachine, Node,
    NodeId, PersistToken, RequestId, Rng, Time,
};

use crate::node::RaftEffect;
use crate::{invariants, Config, Message, RaftNode, Request, Response, Storage, Write};

/// The node type the harness drives.
pub type KvNode = RaftNode<KvStateMachine>;
/// An effect of a [`KvNode`].
pub type KvEffect = RaftEffect<KvStateMachine>;
/// A message between [`KvNode`]s.
pub type KvMessage = Message<KvCommand>;
/// A request to a [`KvNode`].
pub type KvRequest = Request<KvCommand, KvOperation>;

/// A message in flight.
#[derive(Clone, Debug)]
pub struct Envelope {
    /// The sender.
    pub from: NodeId,
    /// The destination.
    pub to: NodeId,
    /// The message.
    pub message: KvMessage,
}

/// N nodes, their storage, a network queue and a clock, all driven by hand.
#[derive(Debug)]
pub struct Cluster {
    /// The configuration every node runs.
    pub config: Config,
    /// The current time (shared by all nodes).
    pub now: Time,
    members: Vec<NodeId>,
    /// The nodes; `None` while crashed.
    pub nodes: Vec<Option<KvNode>>,
    /// Each node's confirmed durable storage.
    pub storage: Vec<Storage<KvCommand>>,
    rngs: Vec<Rng>,
    pending_writes: Vec<VecDeque<(PersistToken, Write<KvCommand>)>>,
    held: Vec<VecDeque<KvEffect>>,
    /// Confirm every write as soon as it is emitted.
    pub auto_persist: bool,
    /// Messages sent and not yet delivered, oldest first.
    pub network: VecDeque<Envelope>,
    /// Replies released to clients: (node, request, response).
    pub replies: Vec<(NodeId, RequestId, Response<concord_core::KvResult>)>,
    /// Commands each node applied, in order: (index, command).
    pub applied: Vec<Vec<(u64, KvCommand)>>,
    cut: BTreeSet<(NodeId, NodeId)>,
    invariants: Vec<Box<dyn ClusterInvariant<KvNode>>>,
    /// Run the cluster invariants after every step (turn off for tests that forge messages a
    /// real peer would never send, e.g. acknowledgements of entries it does not hold).
    pub check_cluster_invariants: bool,
    /// Print every step (input and effects) to stderr, for debugging a failing test.
    pub trace: bool,
    /// Each node's clock rate in thousandths (1000: exact). Node `i` reads the time
    /// `now * clock_rate[i] / 1000`, so clocks drift apart at a bounded rate.
    pub clock_rate: Vec<u64>,
    next_request: RequestId,
}

impl Cluster {
    /// `size` fresh nodes `0..size`, all voters, with `config`; writes confirmed at once.
    pub fn new(size: u64, config: Config) -> Self {
        Self::with_members(size, (0..size).collect(), config)
    }

    /// `size` fresh nodes of which only `members` are in the initial configuration (the
    /// others can join later as learners).
    pub fn with_members(size: u64, members: Vec<NodeId>, config: Config) -> Self {
        let mut cluster = Cluster {
            config,
            now: 0,
            members,
            nodes: Vec::new(),
            storage: vec![Storage::default(); size as usize],
            rngs: (0..size).map(|id| seeded_rng(7, id)).collect(),
            pending_writes: vec![VecDeque::new(); size as usize],
            held: vec![VecDeque::new(); size as usize],
            auto_persist: true,
            network: VecDeque::new(),
            replies: Vec::new(),
            applied: vec![Vec::new(); size as usize],
            cut: BTreeSet::new(),
            invariants: invariants(),
            check_cluster_invariants: true,
            trace: false,
            clock_rate: vec![1000; size as usize],
            next_request: 0,
        };
        for id in 0..size {
            let node = cluster.boot(id);
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    /// Nodes `0..storage.len()`, all voters, restored from the given storage (to set up logs
    /// like the paper's figures).
    pub fn with_storage(storage: Vec<Storage<KvCommand>>, config: Config) -> Self {
        let size = storage.len() as u64;
        let mut cluster = Self::new(size, config);
        cluster.storage = storage;
        for id in 0..size {
            cluster.restart(id);
        }
        cluster
    }

    fn boot(&mut self, id: NodeId) -> KvNode {
        let index = id as usize;
        KvNode::restore(
            id,
            &self.members,
            &self.config,
            &self.storage[index],
            self.node_time(id),
            &mut self.rngs[index],
        )
    }

    /// Node `id`, which must be up.
    pub fn node(&self, id: NodeId) -> &KvNode {
        self.nodes[id as usize].as_ref().expect("node is up")
    }

    /// Feeds one input to node `id` and handles its effects per the contract; returns the
    /// effects exactly as emitted.
    pub fn step(&mut self, id: NodeId, input: Input<KvMessage, KvRequest>) -> Vec<KvEffect> {
        let index = id as usize;
        let mut effects = Vec::new();
        if self.trace {
            eprintln!("t={} node {id} <- {input:?}", self.now);
        }
        if let (Input::Request { request, .. }, Some(_)) = (&input, &self.nodes[index]) {
            for invariant in &mut self.invariants {
                invariant.observe_request(id, request);
            }
        }
        {
            let now = self.node_time(id);
            let Some(node) = self.nodes[index].as_mut() else {
                return effects;
            };
            let mut env = Env {
                now,
                rng: &mut self.rngs[index],
            };
            node.step(&mut env, input, &mut effects);
        }
        if self.trace {
            for effect in &effects {
                eprintln!("    {effect:?}");
            }
        }
        self.check(id, &effects);
        for effect in effects.iter().cloned() {
            self.route(id, effect);
        }
        if self.auto_persist {
            self.confirm_persists(id);
        }
        effects
    }

    fn check(&mut self, id: NodeId, effects: &[KvEffect]) {
        let node = self.nodes[id as usize]
            .as_ref()
            .expect("stepped node is up");
        if let Err(violation) = node.check_invariants() {
            panic!("{violation}");
        }
        if !self.check_cluster_invariants {
            return;
        }
        let views: Vec<Option<&KvNode>> = self.nodes.iter().map(Option::as_ref).collect();
        for invariant in &mut self.invariants {
            if let Err(violation) = invariant.check(&views, id, effects) {
                panic!("{violation}");
            }
        }
    }

    fn route(&mut self, id: NodeId, effect: KvEffect) {
        let index = id as usize;
        match effect {
            Effect::Persist { token, write } => {
                self.pending_writes[index].push_back((token, write))
            }
            Effect::Apply { index: at, command } => self.applied[index].push((at, command)),
            other
                if self.pending_writes[index]
                    .iter()
                    .any(|(_, write)| KvNode::is_barrier(write)) =>
            {
                self.held[index].push_back(other)
            }
            other => self.release(id, other),
        }
    }

    fn release(&mut self, from: NodeId, effect: KvEffect) {
        match effect {
            Effect::Send { to, message } if !self.cut.contains(&(from, to)) => {
                self.network.push_back(Envelope { from, to, message });
            }
            Effect::Reply { id, response } => self.replies.push((from, id, response)),
            _ => {}
        }
    }

    /// Makes every pending write of node `id` durable, releases what waited for them and
    /// confirms them to the node.
    pub fn confirm_persists(&mut self, id: NodeId) {
        let index = id as usize;
        let mut last = None;
        while let Some((token, write)) = self.pending_writes[index].pop_front() {
            KvNode::apply_write(&mut self.storage[index], &write);
            last = Some(token);
        }
        let Some(token) = last else {
            return;
        };
        while let Some(effect) = self.held[index].pop_front() {
            self.release(id, effect);
        }
        self.step(id, Input::Persisted { token });
    }

    /// Whether node `id` has writes not yet confirmed.
    pub fn has_pending_writes(&self, id: NodeId) -> bool {
        !self.pending_writes[id as usize].is_empty()
    }

    /// Node `id`'s writes not confirmed yet, oldest first.
    pub fn pending_writes(&self, id: NodeId) -> impl Iterator<Item = &Write<KvCommand>> {
        self.pending_writes[id as usize]
            .iter()
            .map(|(_, write)| write)
    }

    /// Delivers the oldest message in flight; returns false when there is none.
    pub fn deliver_one(&mut self) -> bool {
        let Some(envelope) = self.network.pop_front() else {
            return false;
        };
        let reachable = !self.cut.contains(&(envelope.from, envelope.to));
        if reachable
            && self
                .nodes
                .get(envelope.to as usize)
                .is_some_and(Option::is_some)
        {
            let input = Input::Message {
                from: envelope.from,
                message: envelope.message,
            };
            self.step(envelope.to, input);
        }
        true
    }

    /// Delivers the `n`-th message in flight (out of order); returns false if there is none.
    pub fn deliver_nth(&mut self, n: usize) -> bool {
        let Some(envelope) = self.network.remove(n) else {
            return false;
        };
        self.network.push_front(envelope);
        self.deliver_one()
    }

    /// Ticks every up node whose deadline has passed.
    pub fn tick_due(&mut self) {
        for id in 0..self.nodes.len() as NodeId {
            let due = self.nodes[id as usize]
                .as_ref()
                .and_then(|node| node.next_deadline())
                .is_some_and(|deadline| deadline <= self.node_time(id));
            if due {
                self.tick(id);
            }
        }
    }

    /// Delivers messages until none is in flight. Whenever none is, a node whose deadline is
    /// due (one holding sends back until its inputs are in, `Config::batch_proposals`) is
    /// ticked, as the runtime does once no input waits.
    pub fn deliver_all(&mut self) {
        let mut budget = 1_000_000;
        loop {
            while self.deliver_one() {
                budget -= 1;
                assert!(budget > 0, "messages never stopped flowing");
            }
            self.tick_due();
            if self.network.is_empty() {
                break;
            }
        }
    }

    /// Drops every message in flight.
    pub fn drop_messages(&mut self) {
        self.network.clear();
    }

    /// Takes the messages in flight out of the network (to inspect or reorder them).
    pub fn take_messages(&mut self) -> Vec<Envelope> {
        self.network.drain(..).collect()
    }

    /// Ticks node `id` at the current time.
    pub fn tick(&mut self, id: NodeId) -> Vec<KvEffect> {
        self.step(id, Input::Tick)
    }

    /// Moves the clock to node `id`'s next deadline (if later) and ticks it there.
    pub fn tick_at_deadline(&mut self, id: NodeId) -> Vec<KvEffect> {
        let deadline = self.deadline_of(id).unwrap_or(self.now);
        self.now = self.now.max(deadline);
        self.tick(id)
    }

    /// Node `id`'s clock.
    pub fn node_time(&self, id: NodeId) -> Time {
        let rate = self.clock_rate[id as usize];
        (u128::from(self.now) * u128::from(rate) / 1000) as Time
    }

    /// When (on the shared clock) node `id` wants its next tick.
    fn deadline_of(&self, id: NodeId) -> Option<Time> {
        let deadline = self.nodes[id as usize].as_ref()?.next_deadline()?;
        let rate = u128::from(self.clock_rate[id as usize]);
        Some((u128::from(deadline) * 1000).div_ceil(rate) as Time)
    }

    /// Moves the clock forward, ticking each node at each of its deadlines and delivering all
    /// messages after every tick (zero network latency).
    pub fn run_for(&mut self, duration: u64) {
        let end = self.now + duration;
        loop {
            self.deliver_all();
            let next = (0..self.nodes.len() as NodeId)
                .filter_map(|id| Some((self.deadline_of(id)?, id)))
                .min();
            match next {
                Some((deadline, id)) if deadline <= end => {
                    self.now = self.now.max(deadline);
                    self.tick(id);
                }
                _ => break,
            }
        }
        self.now = end;
    }

    /// Makes node `id` time out and campaign at once, then delivers all messages.
    pub fn elect(&mut self, id: NodeId) {
        let deadline = self.deadline_of(id).unwrap_or(self.now);
        self.now = self.now.max(deadline);
        self.tick(id);
        self.deliver_all();
    }

    /// The up node that leads the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .flatten()
            .filter(|node| node.is_leader())
            .max_by_key(|node| node.current_term())
            .map(|node| node.id())
    }

    /// Crashes node `id`: unconfirmed writes and held messages are lost.
    pub fn crash(&mut self, id: NodeId) {
        let index = id as usize;
        self.nodes[index] = None;
        self.pending_writes[index].clear();
        self.held[index].clear();
    }

    /// Restarts node `id` from its storage.
    pub fn restart(&mut self, id: NodeId) {
        let node = self.boot(id);
        self.nodes[id as usize] = Some(node);
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&mut self, id: NodeId) {
        for other in 0..self.nodes.len() as NodeId {
            self.cut.insert((id, other));
            self.cut.insert((other, id));
        }
    }

    /// Cuts the link from `from` to `to` (one direction).
    pub fn cut(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Sends a client request to node `id`; returns its id.
    pub fn request(&mut self, id: NodeId, request: KvRequest) -> RequestId {
        self.next_request += 1;
        let request_id = self.next_request;
        self.step(
            id,
            Input::Request {
                id: request_id,
                request,
            },
        );
        request_id
    }

    /// Proposes writing `value` to `key` at node `id`.
    pub fn propose(&mut self, id: NodeId, key: &str, value: i64) -> RequestId {
        let command = KvOperation::Write {
            key: key.into(),
            value,
        };
        self.request(id, Request::Propose(command))
    }

    /// Asks node `id` to read `key`.
    pub fn read(&mut self, id: NodeId, key: &str) -> RequestId {
        self.request(id, Request::Read(KvOperation::Read { key: key.into() }))
    }

    /// The reply to request `id`, if released.
    pub fn reply(&self, id: RequestId) -> Option<&Response<concord_core::KvResult>> {
        self.replies
            .iter()
            .find(|(_, request, _)| *request == id)
            .map(|(_, _, response)| response)
    }
}
