//! The in-process driver for Concord's cores: any [`Replica`] (a `concord-core` [`Node`](concord_core::Node) that
//! serves the key-value workload) runs under exactly the same discipline, so Concord's Raft
//! and Multi-Paxos are measured by one harness.
//!
//! Three nodes, in-memory storage, no network: sends go to one FIFO queue and are delivered in
//! order; sends and replies a node emits while any of its writes is unconfirmed wait until the
//! driver confirms it (stricter than the `Node` contract, which lets a write that is no
//! barrier go unwaited: the same for every core); every node's writes are confirmed at once
//! whenever the queue runs dry (group commit). The clock does not move during a
//! measurement, so no timer fires.

use std::collections::VecDeque;
use std::time::Instant;

use concord_core::{
    seeded_rng, Effect, EffectOf, Env, Input, KvOperation, KvOutcome, KvService, NodeId,
    PersistToken, Rng,
};

use crate::{Throughput, Workload};

/// A core the driver can measure.
pub trait Replica: KvService {
    /// Whether this node leads (and so takes proposals).
    fn is_leader(&self) -> bool;
}

/// What a node is handed: a message, a request, a tick or a confirmation.
type InputOf<N> = Input<<N as concord_core::Node>::Message, <N as concord_core::Node>::Request>;

/// The members of the measured cluster.
const MEMBERS: [NodeId; 3] = [0, 1, 2];

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
    fn new(config: &N::Config) -> Driver<N> {
        let mut rngs: Vec<Rng> = MEMBERS.iter().map(|&id| seeded_rng(1, id)).collect();
        let nodes = MEMBERS
            .iter()
            .map(|&id| {
                N::restore(
                    id,
                    &MEMBERS,
                    config,
                    &N::Storage::default(),
                    0,
                    &mut rngs[id as usize],
                )
            })
            .collect();
        Driver {
            nodes,
            storage: vec![N::Storage::default(); MEMBERS.len()],
            rngs,
            unconfirmed: vec![None; MEMBERS.len()],
            held: MEMBERS.iter().map(|_| Vec::new()).collect(),
            queue: VecDeque::new(),
            now: 0,
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
            Effect::Reply { response, .. } => match N::kv_outcome(&response) {
                KvOutcome::Ok(_) => {
                    self.committed += 1;
                    self.propose(node);
                }
                failed => panic!("node {node} failed a proposal: {failed:?}"),
            },
            Effect::Apply { .. } | Effect::Persist { .. } => {}
        }
    }

    fn propose(&mut self, leader: NodeId) {
        let id = self.next_request;
        self.next_request += 1;
        let command = KvOperation::Write {
            key: format!("k{}", id % 64),
            value: id as i64,
        };
        let request = N::kv_request(&command);
        self.queue
            .push_back((leader, Input::Request { id, request }));
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

/// Elects a leader, then measures how fast `workload.proposers` closed-loop proposers get
/// `workload.proposals` writes committed and applied.
pub fn run<N: Replica>(config: &N::Config, workload: &Workload) -> Throughput {
    let mut driver = Driver::<N>::new(config);
    let leader = driver.elect();
    driver.target = workload.proposals;
    let started = Instant::now();
    for _ in 0..workload.proposers {
        driver.propose(leader);
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
