//! The deterministic simulator: virtual time, an event queue, and the driver side of the
//! [`Node`] contract.
//!
//! One [`Simulation`] runs one cluster from one seed. All randomness comes from
//! [`concord_core::seeded_rng`] streams derived from that seed (one per node, one for the
//! network, the disk, the Byzantine hook and the clients), events at equal times run in the
//! order they were scheduled, and nothing iterates a hash map: one seed gives one run, bit for
//! bit.
//!
//! The driver contract, as this simulator honours it:
//!
//! * **Timers.** After every step the simulator asks [`Node::next_deadline`] (on the node's own,
//!   possibly drifting, clock) and schedules one tick for it; there is no periodic ticking.
//! * **Persistence.** Each [`Effect::Persist`] goes to the node's disk, which completes writes in
//!   FIFO order after a latency drawn from `[persist_latency_min, persist_latency_max]`. On
//!   completion the write is added to the node's durable storage with [`Node::apply_write`] and
//!   [`Input::Persisted`] is delivered. A confirmed checkpoint ([`Node::is_checkpoint`])
//!   settles only after 1 to 16 more writes are durable (a fixed pseudo-random count per
//!   checkpoint); a crash before that loses it, as a real runtime loses a checkpoint whose log
//!   compaction is not in place yet.
//! * **Ordering rule.** A `Send` or `Reply` emitted after a `Persist` (in the same step or a
//!   later one) is held until that write, and every write before it, is durable. Sends with no
//!   unconfirmed write before them leave at once, and so do sends whose only unconfirmed writes
//!   are ones [`Node::is_barrier`] exempts.
//! * **Invariants.** After every step the stepped node's [`Node::check_invariants`], every
//!   registered [`ClusterInvariant`] and the built-in `apply-agreement` check (no two nodes
//!   apply different commands at one index) run; the first violation stops the run with a
//!   [`Failure`].

use std::collections::{BTreeSet, VecDeque};

use concord_core::time::MILLISECOND;
use concord_core::{
    seeded_rng, ClusterInvariant, Duration, Effect, Env, Input, Node, NodeId, RequestId, Rng, Role,
    Time, Violation,
};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::agreement::AppliedCommands;
use crate::byzantine::Corruptor;
use crate::error::SimError;
use crate::event::{Event, EventQueue};
use crate::nemesis::{NemesisAction, NemesisPlan};
use crate::network::{LinkConfig, Network, Route};
use crate::report::{Failure, Stats};
use crate::slot::{Held, InFlightWrite, NodeEvent, Slot};
use crate::workload::{Workload, WORKLOAD_REQUEST_BASE};

/// An effect of node type `N`.
pub type NodeEffect<N> =
    Effect<<N as Node>::Message, <N as Node>::Write, <N as Node>::Command, <N as Node>::Response>;

/// Random streams of a run, so every component draws from its own generator.
pub(crate) mod streams {
    /// Node `i` uses stream `NODE + i`.
    pub const NODE: u64 = 1;
    /// The network.
    pub const NETWORK: u64 = 1 << 32;
    /// Disk latencies.
    pub const DISK: u64 = (1 << 32) + 1;
    /// The Byzantine hook.
    pub const BYZANTINE: u64 = (1 << 32) + 2;
    /// The clients.
    pub const WORKLOAD: u64 = (1 << 32) + 3;
    /// The swarm nemesis generator.
    pub const SWARM: u64 = (1 << 32) + 4;
}

/// Settings of the simulator itself (the protocol's own settings are `N::Config`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Cluster size; nodes are `0..nodes`.
    pub nodes: usize,
    /// The master seed.
    pub seed: u64,
    /// How every link starts out.
    pub link: LinkConfig,
    /// Fastest fsync, ns.
    pub persist_latency_min: Duration,
    /// Slowest fsync, ns.
    pub persist_latency_max: Duration,
    /// At most this many nodes may be Byzantine at once (`f`).
    pub max_byzantine: usize,
    /// Keep a human-readable trace line per event.
    pub trace: bool,
    /// Keep at most this many trace lines (the newest).
    pub trace_limit: usize,
    /// Stop with an `event-budget` failure after this many events (a protocol busy-looping).
    pub max_events: u64,
    /// Stop with a `pending-event-bound` failure when more events than this wait at once (a
    /// message storm, e.g. a protocol answering every duplicate of a duplicated message).
    pub max_pending_events: usize,
    /// The command printed in failure reports to replay this run.
    pub replay: String,
}

impl SimConfig {
    /// Defaults for a cluster of `nodes` nodes from `seed`.
    pub fn new(nodes: usize, seed: u64) -> Self {
        SimConfig {
            nodes,
            seed,
            link: LinkConfig::default(),
            persist_latency_min: MILLISECOND / 5,
            persist_latency_max: 2 * MILLISECOND,
            max_byzantine: nodes.saturating_sub(1) / 3,
            trace: false,
            trace_limit: 100_000,
            max_events: 200_000_000,
            max_pending_events: 1_000_000,
            replay: format!("concord replay --seed {seed}"),
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.nodes == 0 {
            return Err(SimError::NoNodes);
        }
        self.link.validate()?;
        if self.persist_latency_min > self.persist_latency_max {
            return Err(SimError::InvalidOption {
                name: "persist latency",
                message: "the minimum is larger than the maximum".into(),
            });
        }
        Ok(())
    }
}

/// Clusters up to this size hand the invariant checkers a node view built on the stack.
const VIEW_ON_STACK: usize = 16;

/// A reply to a request made with [`Simulation::submit`].
#[derive(Clone, Debug, PartialEq)]
pub struct Reply<O> {
    /// The request.
    pub id: RequestId,
    /// The node that answered.
    pub node: NodeId,
    /// The answer.
    pub response: O,
    /// When it was released (after the writes it depended on were durable).
    pub time: Time,
}

/// Leaders seen while an observation window is open.
#[derive(Clone, Debug, Default)]
pub(crate) struct Observation {
    /// `(term, node)` of every node seen in the leader role.
    pub leaders: BTreeSet<(u64, NodeId)>,
}

/// A deterministic simulation of a cluster of `N` nodes.
pub struct Simulation<N: Node> {
    pub(crate) config: SimConfig,
    pub(crate) node_config: N::Config,
    pub(crate) members: Vec<NodeId>,
    pub(crate) now: Time,
    pub(crate) queue: EventQueue<NodeEvent<N>>,
    pub(crate) slots: Vec<Slot<N>>,
    pub(crate) network: Network,
    pub(crate) disk_rng: Rng,
    pub(crate) byzantine_rng: Rng,
    pub(crate) invariants: Vec<Box<dyn ClusterInvariant<N>>>,
    pub(crate) applied: AppliedCommands<N::Command>,
    pub(crate) effects: Vec<NodeEffect<N>>,
    pub(crate) stats: Stats,
    pub(crate) trace: Option<VecDeque<String>>,
    pub(crate) workload: Option<Workload<N>>,
    pub(crate) replies: Vec<Reply<N::Response>>,
    pub(crate) next_request: RequestId,
    pub(crate) plan: Vec<NemesisAction>,
    pub(crate) corruptor: Option<Corruptor<N::Message>>,
    pub(crate) failure: Option<Failure>,
    pub(crate) observation: Option<Observation>,
    pub(crate) stale_dropped: u64,
    pub(crate) cut_in_flight: u64,
}

impl<N: Node> std::fmt::Debug for Simulation<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("seed", &self.config.seed)
            .field("nodes", &self.config.nodes)
            .field("now", &self.now)
            .field("pending_events", &self.queue.len())
            .field("slots", &self.slots)
            .finish()
    }
}

impl<N: Node> Simulation<N> {
    /// Starts a cluster: every node is restored from empty storage at time 0.
    pub fn new(config: SimConfig, node_config: N::Config) -> Result<Self, SimError> {
        config.validate()?;
        let seed = config.seed;
        let nodes = config.nodes;
        let mut simulation = Simulation {
            members: (0..nodes as NodeId).collect(),
            now: 0,
            queue: EventQueue::default(),
            slots: (0..nodes as u64)
                .map(|i| Slot::new(seeded_rng(seed, streams::NODE + i)))
                .collect(),
            network: Network::new(
                nodes,
                config.link.clone(),
                seeded_rng(seed, streams::NETWORK),
            ),
            disk_rng: seeded_rng(seed, streams::DISK),
            byzantine_rng: seeded_rng(seed, streams::BYZANTINE),
            invariants: Vec::new(),
            applied: AppliedCommands::default(),
            effects: Vec::new(),
            stats: Stats::default(),
            trace: config.trace.then(VecDeque::new),
            workload: None,
            replies: Vec::new(),
            next_request: 1,
            plan: Vec::new(),
            corruptor: None,
            failure: None,
            observation: None,
            stale_dropped: 0,
            cut_in_flight: 0,
            node_config,
            config,
        };
        for id in 0..nodes as NodeId {
            simulation.boot(id);
        }
        Ok(simulation)
    }

    /// Registers a cluster-wide invariant, checked after every step.
    pub fn add_invariant(&mut self, invariant: Box<dyn ClusterInvariant<N>>) {
        self.invariants.push(invariant);
    }

    /// Supplies the protocol's message corruption for the `corrupt` Byzantine behaviour.
    pub fn set_corruptor(&mut self, corruptor: Corruptor<N::Message>) {
        self.corruptor = Some(corruptor);
    }

    /// Attaches the clients; they start at their configured time.
    pub fn attach_workload(&mut self, mut workload: Workload<N>) {
        for (client, at) in workload.start() {
            self.queue
                .push(at.max(self.now), Event::ClientWake { client });
        }
        self.workload = Some(workload);
    }

    /// Schedules every step of `plan` (validated against the cluster first).
    pub fn install_plan(&mut self, plan: &NemesisPlan) -> Result<(), SimError> {
        plan.validate(self.config.nodes)?;
        for step in &plan.steps {
            if let NemesisAction::Byzantine { nodes, behavior } = &step.action {
                if nodes.len() > self.config.max_byzantine {
                    return Err(SimError::ByzantineBudget {
                        max: self.config.max_byzantine,
                        requested: nodes.len(),
                    });
                }
                if *behavior == crate::ByzantineKind::Corrupt && self.corruptor.is_none() {
                    return Err(SimError::NoCorruptor);
                }
            }
        }
        for step in &plan.steps {
            let index = self.plan.len();
            self.plan.push(step.action.clone());
            self.queue
                .push(step.at.max(self.now), Event::Nemesis { index });
        }
        Ok(())
    }

    pub(crate) fn check_node(&self, id: NodeId) -> Result<(), SimError> {
        if (id as usize) < self.config.nodes {
            Ok(())
        } else {
            Err(SimError::NoSuchNode {
                node: id,
                nodes: self.config.nodes,
            })
        }
    }

    /// Runs every event up to and including simulated time `until`.
    pub fn run_until(&mut self, until: Time) -> Result<(), Failure> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        while let Some((time, event)) = self.queue.pop_due(until) {
            self.now = time;
            self.stats.events += 1;
            let result = if self.stats.events > self.config.max_events {
                Err(Violation::cluster(
                    "event-budget",
                    format!("more than {} events", self.config.max_events),
                ))
            } else if self.queue.len() > self.config.max_pending_events {
                Err(Violation::cluster(
                    "pending-event-bound",
                    format!(
                        "more than {} events pending at once: a message storm",
                        self.config.max_pending_events
                    ),
                ))
            } else {
                self.handle(event)
            };
            if let Err(violation) = result {
                let failure = self.make_failure(violation);
                self.failure = Some(failure.clone());
                return Err(failure);
            }
        }
        self.now = self.now.max(until);
        Ok(())
    }

    /// Runs for `duration` of simulated time.
    pub fn run_for(&mut self, duration: Duration) -> Result<(), Failure> {
        self.run_until(self.now.saturating_add(duration))
    }

    pub(crate) fn make_failure(&self, violation: Violation) -> Failure {
        let trace_tail = self
            .trace
            .as_ref()
            .map(|t| t.iter().rev().take(50).rev().cloned().collect())
            .unwrap_or_default();
        Failure {
            seed: self.config.seed,
            step: self.stats.steps,
            time: self.now,
            invariant: violation.invariant.to_string(),
            node: violation.node,
            detail: violation.detail,
            replay: self.config.replay.clone(),
            trace_tail,
        }
    }

    pub(crate) fn trace_line(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            if trace.len() >= self.config.trace_limit.max(1) {
                trace.pop_front();
            }
            trace.push_back(format!("{:>12.6}s {}", self.now as f64 / 1e9, line()));
        }
    }

    /// Restores node `id` from its durable storage and schedules its first tick.
    pub(crate) fn boot(&mut self, id: NodeId) {
        let slot = &mut self.slots[id as usize];
        let now = slot.clock.local(self.now);
        let node = N::restore(
            id,
            &self.members,
            &self.node_config,
            &slot.storage,
            now,
            &mut slot.rng,
        );
        slot.node = Some(node);
        self.schedule_timer(id);
    }

    /// Makes sure a timer event fires no later than the node's next deadline.
    ///
    /// Deadlines mostly move later (every heartbeat pushes a follower's election deadline
    /// back), so an already scheduled earlier event is kept: when it fires, the deadline is
    /// checked again and the tick is only delivered once it is due. This keeps one live timer
    /// event per node instead of one per step.
    pub(crate) fn schedule_timer(&mut self, id: NodeId) {
        let slot = &mut self.slots[id as usize];
        let Some(node) = &slot.node else { return };
        if slot.paused {
            return;
        }
        let Some(deadline) = node.next_deadline() else {
            return;
        };
        let at = slot.clock.global_of(deadline).max(self.now + 1);
        if slot.timer_at.is_some_and(|scheduled| scheduled <= at) {
            return;
        }
        slot.timer_generation += 1;
        slot.timer_at = Some(at);
        let event = Event::Timer {
            node: id,
            incarnation: slot.incarnation,
            generation: slot.timer_generation,
        };
        self.queue.push(at, event);
    }

    pub(crate) fn handle(&mut self, event: NodeEvent<N>) -> Result<(), Violation> {
        if let Some(id) = event.inbox() {
            let slot = &mut self.slots[id as usize];
            if slot.paused && slot.node.is_some() {
                if !matches!(event, Event::Timer { .. }) {
                    slot.parked.push(event);
                }
                return Ok(());
            }
        }
        match event {
            Event::Deliver {
                claimed_from,
                sender,
                sender_incarnation,
                to,
                to_incarnation,
                message,
            } => {
                let target = &self.slots[to as usize];
                if target.node.is_none()
                    || target.incarnation != to_incarnation
                    || self.slots[sender as usize].incarnation != sender_incarnation
                {
                    self.stale_dropped += 1;
                    return Ok(());
                }
                if !self.network.is_connected(sender, to) {
                    self.cut_in_flight += 1;
                    return Ok(());
                }
                self.stats.messages_delivered += 1;
                let input = Input::Message {
                    from: claimed_from,
                    message,
                };
                self.step_node(to, input)
            }
            Event::Timer {
                node,
                incarnation,
                generation,
            } => {
                let slot = &mut self.slots[node as usize];
                if slot.incarnation != incarnation || slot.timer_generation != generation {
                    return Ok(());
                }
                slot.timer_at = None;
                let due = slot.node.as_ref().and_then(|n| n.next_deadline());
                match due {
                    Some(deadline) if slot.clock.global_of(deadline) <= self.now => {
                        self.step_node(node, Input::Tick)
                    }
                    _ => {
                        // The deadline moved later (or went away) since this event was set.
                        self.schedule_timer(node);
                        Ok(())
                    }
                }
            }
            Event::PersistDone {
                node,
                incarnation,
                sequence,
            } => self.complete_write(node, incarnation, sequence),
            Event::PeerLost {
                node,
                incarnation,
                peer,
            } => {
                let slot = &self.slots[node as usize];
                if slot.node.is_none() || slot.incarnation != incarnation {
                    return Ok(());
                }
                self.step_node(node, Input::PeerLost { peer })
            }
            Event::RequestArrive {
                home,
                node,
                id,
                request,
            } => {
                if !self.network.is_connected(home, node) {
                    self.trace_line(|| format!("n{node} request r{id} lost: link cut"));
                    return Ok(());
                }
                if self.slots[node as usize].node.is_none() {
                    self.trace_line(|| format!("n{node} request r{id} refused: node down"));
                    if id >= WORKLOAD_REQUEST_BASE {
                        self.client_event(|workload, now| workload.on_unreachable(id, now));
                    }
                    return Ok(());
                }
                self.stats.client_requests += 1;
                for invariant in &mut self.invariants {
                    invariant.observe_request(node, &request);
                }
                self.step_node(node, Input::Request { id, request })
            }
            Event::ResponseArrive {
                home,
                id,
                from,
                response,
            } => {
                if !self.network.is_connected(from, home) {
                    self.trace_line(|| format!("reply r{id} from n{from} lost: link cut"));
                    return Ok(());
                }
                self.client_event(|workload, now| workload.on_response(id, from, &response, now));
                Ok(())
            }
            Event::RequestTimeout { id } => {
                self.client_event(|workload, now| workload.on_timeout(id, now));
                Ok(())
            }
            Event::ClientWake { client } => {
                self.client_event(|workload, now| workload.wake(client, now));
                Ok(())
            }
            Event::Nemesis { index } => {
                let action = self.plan[index].clone();
                self.stats.nemesis_actions += 1;
                if let Err(error) = self.apply_action(&action) {
                    self.trace_line(|| format!("nemesis {} skipped: {error}", action.name()));
                }
                Ok(())
            }
        }
    }

    /// Hands one input to node `id`, performs its effects and checks invariants.
    pub(crate) fn step_node(
        &mut self,
        id: NodeId,
        input: Input<N::Message, N::Request>,
    ) -> Result<(), Violation> {
        let slot = &mut self.slots[id as usize];
        let Some(node) = slot.node.as_mut() else {
            return Ok(());
        };
        let mut effects = std::mem::take(&mut self.effects);
        effects.clear();
        let input_text = self.trace.as_ref().map(|_| describe_input(&input));
        let mut env = Env {
            now: slot.clock.local(self.now),
            rng: &mut slot.rng,
        };
        node.step(&mut env, input, &mut effects);
        self.stats.steps += 1;
        if let Some(input_text) = input_text {
            let effects_text = describe_effects::<N>(&effects);
            self.trace_line(|| format!("n{id} {input_text} -> [{effects_text}]"));
        }
        let checked = self.check_step(id, &effects);
        if checked.is_ok() {
            for effect in effects.drain(..) {
                self.perform(id, effect);
            }
            self.schedule_timer(id);
        }
        self.effects = effects;
        checked
    }

    pub(crate) fn check_step(
        &mut self,
        id: NodeId,
        effects: &[NodeEffect<N>],
    ) -> Result<(), Violation> {
        let node = self.slots[id as usize]
            .node
            .as_ref()
            .expect("a stepped node is up");
        node.check_invariants()?;
        if let Some(observation) = &mut self.observation {
            let status = node.status();
            if status.role == Role::Leader {
                observation.leaders.insert((status.term, id));
            }
        }
        for effect in effects {
            if let Effect::Apply { index, command } = effect {
                self.applied.record(id, *index, command)?;
            }
        }
        if self.invariants.is_empty() {
            return Ok(());
        }
        // The view of every node lives on the stack for clusters of usual sizes: no allocation
        // per step.
        let mut on_stack: [Option<&N>; VIEW_ON_STACK] = [None; VIEW_ON_STACK];
        let on_heap: Vec<Option<&N>>;
        let nodes: &[Option<&N>] = if self.slots.len() <= VIEW_ON_STACK {
            for (view, slot) in on_stack.iter_mut().zip(&self.slots) {
                *view = slot.node.as_ref();
            }
            &on_stack[..self.slots.len()]
        } else {
            on_heap = self.slots.iter().map(|s| s.node.as_ref()).collect();
            &on_heap
        };
        for invariant in &mut self.invariants {
            invariant.check(nodes, id, effects)?;
        }
        Ok(())
    }

    /// Performs one effect of node `id`, honouring the persist barrier.
    pub(crate) fn perform(&mut self, id: NodeId, effect: NodeEffect<N>) {
        let slot = &mut self.slots[id as usize];
        let barrier = slot.barrier;
        let blocked = barrier > slot.durable;
        match effect {
            Effect::Send { to, message } if blocked => {
                slot.held.push_back((barrier, Held::Send { to, message }));
            }
            Effect::Reply {
                id: request,
                response,
            } if blocked => {
                slot.held.push_back((
                    barrier,
                    Held::Reply {
                        id: request,
                        response,
                    },
                ));
            }
            Effect::Send { to, message } => self.transmit(id, to, message),
            Effect::Reply {
                id: request,
                response,
            } => self.reply(id, request, response),
            Effect::Persist { token, write } => {
                slot.emitted += 1;
                let sequence = slot.emitted;
                if N::is_barrier(&write) {
                    slot.barrier = sequence;
                }
                let latency = self
                    .disk_rng
                    .gen_range(self.config.persist_latency_min..=self.config.persist_latency_max);
                let done = (self.now + latency).max(slot.disk_tail);
                slot.disk_tail = done;
                slot.writes.push_back(InFlightWrite {
                    sequence,
                    token,
                    write,
                });
                self.stats.persists += 1;
                let event = Event::PersistDone {
                    node: id,
                    incarnation: slot.incarnation,
                    sequence,
                };
                self.queue.push(done, event);
            }
            Effect::Apply { .. } => {}
        }
    }

    /// The oldest write of `node` is durable: store it, release what waited for it, confirm.
    pub(crate) fn complete_write(
        &mut self,
        node: NodeId,
        incarnation: u64,
        sequence: u64,
    ) -> Result<(), Violation> {
        let slot = &mut self.slots[node as usize];
        if slot.incarnation != incarnation || slot.node.is_none() {
            return Ok(());
        }
        let Some(write) = slot.writes.pop_front() else {
            return Ok(());
        };
        debug_assert_eq!(write.sequence, sequence, "writes complete in FIFO order");
        slot.store(write.sequence, &write.write);
        slot.durable = write.sequence;
        self.stats.persists_completed += 1;
        let durable = slot.durable;
        let token = write.token;
        loop {
            let slot = &mut self.slots[node as usize];
            if !slot
                .held
                .front()
                .is_some_and(|(barrier, _)| *barrier <= durable)
            {
                break;
            }
            let Some((_, held)) = slot.held.pop_front() else {
                break;
            };
            match held {
                Held::Send { to, message } => self.transmit(node, to, message),
                Held::Reply { id, response } => self.reply(node, id, response),
            }
        }
        self.step_node(node, Input::Persisted { token })
    }

    /// Sends a message from `from`, through its Byzantine behaviour if it has one.
    pub(crate) fn transmit(&mut self, from: NodeId, to: NodeId, message: N::Message) {
        self.stats.messages_sent += 1;
        let nodes = self.config.nodes;
        if let Some(rewriter) = self.slots[from as usize].byzantine.as_mut() {
            let outgoing = rewriter.on_send(from, to, message, nodes, &mut self.byzantine_rng);
            for out in outgoing {
                self.route(from, out.to, out.claimed_from, out.message);
            }
        } else {
            self.route(from, to, from, message);
        }
    }

    pub(crate) fn route(
        &mut self,
        sender: NodeId,
        to: NodeId,
        claimed_from: NodeId,
        message: N::Message,
    ) {
        if to as usize >= self.config.nodes {
            self.stale_dropped += 1;
            return;
        }
        let Route::Deliver { delay, duplicate } = self.network.route(sender, to) else {
            return;
        };
        let sender_incarnation = self.slots[sender as usize].incarnation;
        let to_incarnation = self.slots[to as usize].incarnation;
        let deliver = |message| Event::Deliver {
            claimed_from,
            sender,
            sender_incarnation,
            to,
            to_incarnation,
            message,
        };
        if let Some(duplicate) = duplicate {
            self.queue
                .push(self.now + duplicate, deliver(message.clone()));
        }
        self.queue.push(self.now + delay, deliver(message));
    }
}

fn describe_input<M: std::fmt::Debug, Q: std::fmt::Debug>(input: &Input<M, Q>) -> String {
    match input {
        Input::Message { from, message } => format!("message from n{from}: {message:?}"),
        Input::Tick => "tick".into(),
        Input::Request { id, request } => format!("request r{id}: {request:?}"),
        Input::Persisted { token } => format!("persisted t{token}"),
        Input::PeerLost { peer } => format!("connection to n{peer} lost"),
    }
}

fn describe_effects<N: Node>(effects: &[NodeEffect<N>]) -> String {
    effects
        .iter()
        .map(|effect| match effect {
            Effect::Send { to, .. } => format!("send n{to}"),
            Effect::Persist { token, .. } => format!("persist t{token}"),
            Effect::Apply { index, .. } => format!("apply #{index}"),
            Effect::Reply { id, .. } => format!("reply r{id}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
