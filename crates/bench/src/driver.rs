//! The in-process driver for Concord's cores: any [`Replica`] (a `concord-core`
//! [`Node`](concord_core::Node) that says how a proposal is made and when it completed) runs
//! under exactly the same discipline, so Concord's Raft, Multi-Paxos and PBFT are measured by
//! one harness.
//!
//! `n` nodes, in-memory storage, no network: sends go to one FIFO queue and are delivered in
//! order; sends and replies a node emits while any of its writes is unconfirmed wait until the
//! driver confirms it (stricter than the `Node` contract, which lets a write that is no
//! barrier go unwaited: the same for every core); every node's writes are confirmed at once
//! whenever the queue runs dry (group commit). The clock does not move during a
//! measurement, so no timer fires.

use std::collections::VecDeque;
use std::time::Instant;

use concord_core::{
    seeded_rng, Effect, EffectOf, Env, Input, KvOperation, KvOutcome, KvService, Node, NodeId,
    PersistToken, Rng,
};

use crate::{Throughput, Workload};

/// A core the driver can measure.
pub trait Replica: Node {
    /// Whether this node leads (Raft's leader, Paxos's distinguished proposer, PBFT's primary).
    fn is_leader(&self) -> bool;

    /// The `id`th proposal.
    fn proposal(id: u64) -> Self::Request;

    /// Whether `response` completes a proposal; the driver stops on anything else.
    fn completed(response: &Self::Response) -> bool;
}

/// A key-value write, `k{id % 64} = id`: the proposal of the cores that serve the key-value
/// workload.
pub fn kv_proposal<N: KvService>(id: u64) -> N::Request {
    N::kv_request(&KvOperation::Write {
        key: format!("k{}", id % 64),
        value: id as i64,
    })
}

/// Whether a key-value response says the write was applied.
pub fn kv_completed<N: KvService>(response: &N::Response) -> bool {
    matches!(N::kv_outcome(response), KvOutcome::Ok(_))
}

/// What a node is handed: a message, a request, a tick or a confirmation.
type InputOf<N> = Input<<N as concord_core::Node>::Message, <N as concord_core::Node>::Request>;

/// The most timer firings the driver waits for a leader.
const MAX_ELECTION_TICKS: usize = 1000;

struct Driver<N: Replica> {
    nodes: Vec<N>,
    storage: Vec<N::Storage>,
    rngs: Vec<Rng>,
    /// The last write each node emitted that the driver has not confirmed yet.
    unconfirmed: Vec<Option<PersistToken>>,
    /// Sends and replies held behind an unconfirmed write.
    held: Vec<Vec<EffectOf<N>>>,
    queue: VecDeque<(NodeId, InputOf<N>)>,
    now: u64,
    committed: u64,
    /// Stop draining once this many proposals are committed.
    target: u64,
    next_request: u64,
    effects: Vec<EffectOf<N>>,
}

impl<N: Replica> Driver<N> {
    fn new(config: &N::Config, replicas: u64) -> Driver<N> {
        let members: Vec<NodeId> = (0..replicas).collect();
        let mut rngs: Vec<Rng> = members.iter().map(|&id| seeded_rng(1, id)).collect();
        let nodes = members
            .iter()
            .map(|&id| {
                N::restore(
                    id,
                    &members,
                    config,
                    &N::Storage::default(),
                    1,
                    &mut rngs[id as usize],
                )
            })
            .collect();
        Driver {
            nodes,
            storage: vec![N::Storage::default(); members.len()],
            rngs,
            unconfirmed: vec![None; members.len()],
            held: members.iter().map(|_| Vec::new()).collect(),
            queue: VecDeque::new(),
            now: 1,
            committed: 0,
            target: u64::MAX,
            next_request: 0,
            effects: Vec::new(),
        }
    }

    fn step(&mut self, node: NodeId, input: InputOf<N>) {
        let i = node as usize;
        let mut effects = std::mem::take(&mut self.effects);
        effects.clear();
        let mut env = Env {
            now: self.now,
            rng: &mut self.rngs[i],
        };
        self.nodes[i].step(&mut env, input, &mut effects);
        for effect in effects.drain(..) {
            match effect {
                Effect::Persist { token, write } => {
                    N::apply_write(&mut self.storage[i], &write);
                    self.unconfirmed[i] = Some(token);
                }
                Effect::Send { .. } | Effect::Reply { .. } if self.unconfirmed[i].is_some() => {
                    self.held[i].push(effect);
                }
                other => self.perform(node, other),
            }
        }
        self.effects = effects;
    }

    fn perform(&mut self, node: NodeId, effect: EffectOf<N>) {
        match effect {
            Effect::Send { to, message } => self.queue.push_back((
                to,
                Input::Message {
                    from: node,
                    message,
                },
            )),
            Effect::Reply { response, .. } => {
                assert!(
                    N::completed(&response),
                    "node {node} failed a proposal: {response:?}"
                );
                self.committed += 1;
                self.propose(node);
            }
            Effect::Apply { .. } | Effect::Persist { .. } => {}
        }
    }

    /// Submits the next proposal at `node` (a proposer stays with the node that answers it).
    fn propose(&mut self, node: NodeId) {
        let id = self.next_request;
        self.next_request += 1;
        let request = N::proposal(id);
        self.queue.push_back((node, Input::Request { id, request }));
    }

    /// Delivers messages until none are left, then makes every write durable (group commit).
    fn drain(&mut self) {
        loop {
            while let Some((node, input)) = self.queue.pop_front() {
                self.step(node, input);
            }
            let mut confirmed = false;
            for i in 0..self.nodes.len() {
                if let Some(token) = self.unconfirmed[i].take() {
                    confirmed = true;
                    self.step(i as NodeId, Input::Persisted { token });
                    for effect in std::mem::take(&mut self.held[i]) {
                        self.perform(i as NodeId, effect);
                    }
                }
            }
            if (!confirmed && self.queue.is_empty()) || self.committed >= self.target {
                return;
            }
        }
    }

    /// Fires the earliest timer, then drains, until some node leads.
    fn elect(&mut self) -> NodeId {
        for _ in 0..MAX_ELECTION_TICKS {
            if let Some(leader) = self.nodes.iter().position(N::is_leader) {
                return leader as NodeId;
            }
            let (i, deadline) = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| n.next_deadline().map(|d| (i, d)))
                .min_by_key(|&(_, d)| d)
                .expect("nodes have timers");
            self.now = self.now.max(deadline);
            self.step(i as NodeId, Input::Tick);
            self.drain();
        }
        panic!("no leader elected after {MAX_ELECTION_TICKS} timer firings");
    }
}

/// Three nodes: elects a leader, then measures how fast `workload.proposers` closed-loop
/// proposers, all at the leader, get `workload.proposals` writes committed and applied.
pub fn run<N: Replica>(config: &N::Config, workload: &Workload) -> Throughput {
    run_with::<N>(config, workload, 3, |_, leader| leader)
}

/// [`run`] with `replicas` nodes, proposer `p` submitting at `entry(p, leader)` (PBFT's
/// clients sit at every replica; Raft's and Paxos's send to the leader).
pub fn run_with<N: Replica>(
    config: &N::Config,
    workload: &Workload,
    replicas: u64,
    entry: impl Fn(u64, NodeId) -> NodeId,
) -> Throughput {
    let mut driver = Driver::<N>::new(config, replicas);
    let leader = driver.elect();
    driver.target = workload.proposals;
    let started = Instant::now();
    for proposer in 0..workload.proposers as u64 {
        driver.propose(entry(proposer, leader));
    }
    while driver.committed < workload.proposals {
        driver.drain();
        assert!(
            driver.nodes[leader as usize].is_leader(),
            "leadership changed during the run"
        );
    }
    Throughput {
        committed: driver.committed,
        seconds: started.elapsed().as_secs_f64(),
    }
}
