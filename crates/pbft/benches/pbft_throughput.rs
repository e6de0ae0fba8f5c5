//! Null-operation throughput of 4 replicas in one process: PBFT (every message authenticated
//! with HMAC-SHA256, the client accepting `f + 1` matching replies) and Concord's Raft side by
//! side in one run, under the same driver: no network (messages are handed over directly),
//! in-memory storage where writes become durable once the pending messages are drained (group
//! commit), `K` closed-loop proposers each keeping one null operation in flight.
//!
//! `cargo bench -p concord-pbft --bench pbft_throughput` (`CONCORD_BENCH_PROPOSALS` sets the
//! operations per measurement; default 50000).
#![allow(clippy::disallowed_methods)] // a benchmark reads the wall clock

use std::collections::VecDeque;
use std::time::Instant;

use concord_core::{
    seeded_rng, Effect, EffectOf, Env, Input, Node, NodeId, PersistToken, Rng, StateMachine,
};

/// The null service: commands and queries carry nothing and change nothing.
#[derive(Clone, Debug, Default)]
struct Null;

impl StateMachine for Null {
    type Command = ();
    type Query = ();
    type Output = ();

    fn apply(&mut self, _: &()) {}
    fn query(&self, _: &()) {}
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(&mut self, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

type Pbft = concord_pbft::Pbft<Null>;
type Raft = concord_raft::RaftNode<Null>;

/// How a protocol is driven: its null request, and whether a response completes it.
trait Protocol: Node {
    fn null() -> Self::Request;
    fn completed(response: &Self::Response) -> bool;
}

impl Protocol for Pbft {
    fn null() -> Self::Request {
        concord_pbft::Request::Propose(())
    }
    fn completed(response: &Self::Response) -> bool {
        matches!(response, concord_pbft::Response::Done { .. })
    }
}

impl Protocol for Raft {
    fn null() -> Self::Request {
        concord_raft::Request::Propose(())
    }
    fn completed(response: &Self::Response) -> bool {
        matches!(response, concord_raft::Response::Applied { .. })
    }
}

type InputOf<N> = Input<<N as Node>::Message, <N as Node>::Request>;

struct Driver<N: Protocol> {
    nodes: Vec<N>,
    storage: Vec<N::Storage>,
    rngs: Vec<Rng>,
    unconfirmed: Vec<Option<PersistToken>>,
    held: Vec<Vec<EffectOf<N>>>,
    queue: VecDeque<(NodeId, InputOf<N>)>,
    now: u64,
    completed: u64,
    target: u64,
    next_request: u64,
}

const REPLICAS: u64 = 4;

impl<N: Protocol> Driver<N> {
    fn new(config: &N::Config) -> Self {
        let members: Vec<NodeId> = (0..REPLICAS).collect();
        let mut rngs: Vec<Rng> = members.iter().map(|&i| seeded_rng(1, i)).collect();
        let storage = vec![N::Storage::default(); members.len()];
        let nodes = members
            .iter()
            .map(|&id| N::restore(id, &members, config, &storage[0], 0, &mut rngs[id as usize]))
            .collect();
        Driver {
            nodes,
            storage,
            rngs,
            unconfirmed: vec![None; REPLICAS as usize],
            held: vec![Vec::new(); REPLICAS as usize],
            queue: VecDeque::new(),
            now: 1,
            completed: 0,
            target: u64::MAX,
            next_request: 0,
        }
    }

    fn step(&mut self, node: NodeId, input: InputOf<N>) {
        let i = node as usize;
        let mut effects = Vec::new();
        let mut env = Env {
            now: self.now,
            rng: &mut self.rngs[i],
        };
        self.nodes[i].step(&mut env, input, &mut effects);
        for effect in effects {
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
                if N::completed(&response) {
                    self.completed += 1;
                    self.propose(node);
                }
            }
            Effect::Apply { .. } | Effect::Persist { .. } => {}
        }
    }

    fn propose(&mut self, node: NodeId) {
        let id = self.next_request;
        self.next_request += 1;
        self.queue.push_back((
            node,
            Input::Request {
                id,
                request: N::null(),
            },
        ));
    }

    fn drain(&mut self) {
        loop {
            while let Some((node, input)) = self.queue.pop_front() {
                self.step(node, input);
            }
            let mut confirmed = false;
            for i in 0..REPLICAS as usize {
                if let Some(token) = self.unconfirmed[i].take() {
                    confirmed = true;
                    self.step(i as NodeId, Input::Persisted { token });
                    for effect in std::mem::take(&mut self.held[i]) {
                        self.perform(i as NodeId, effect);
                    }
                }
            }
            if (!confirmed && self.queue.is_empty()) || self.completed >= self.target {
                return;
            }
        }
    }

    /// Ticks the earliest timer until some node leads (Raft elects; PBFT's primary of view 0
    /// leads from the start).
    fn settle(&mut self) -> NodeId {
        for _ in 0..1_000 {
            let leader = self
                .nodes
                .iter()
                .position(|n| n.status().role == concord_core::Role::Leader);
            if let Some(leader) = leader {
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
        panic!("no leader");
    }

    /// Runs `operations` null operations from `proposers` closed-loop proposers, each sending
    /// to `entry(proposer, leader)`; returns operations per second.
    fn measure(
        mut self,
        proposers: u64,
        operations: u64,
        entry: impl Fn(u64, NodeId) -> NodeId,
    ) -> f64 {
        let leader = self.settle();
        self.target = operations;
        let started = Instant::now();
        for proposer in 0..proposers {
            self.propose(entry(proposer, leader));
        }
        while self.completed < operations {
            let before = self.completed;
            self.drain();
            assert!(self.completed > before, "no progress");
        }
        self.completed as f64 / started.elapsed().as_secs_f64()
    }
}

fn best_of(runs: usize, mut measure: impl FnMut() -> f64) -> f64 {
    (0..runs).map(|_| measure()).fold(0.0, f64::max)
}

fn main() {
    let operations: u64 = std::env::var("CONCORD_BENCH_PROPOSALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    println!("4 replicas in-process, null operations, {operations} per run, best of 3");
    println!("| proposers | concord-pbft (ops/s) | concord-raft (ops/s) | PBFT / Raft |");
    println!("|---:|---:|---:|---:|");
    for proposers in [1u64, 16, 256] {
        let pbft_config = concord_pbft::Config {
            client_lanes: proposers.div_ceil(REPLICAS),
            max_pending_requests: 1 << 16,
            ..concord_pbft::Config::default()
        };
        // PBFT's clients sit at every replica (each node's proxy sends to the primary).
        let pbft = best_of(3, || {
            Driver::<Pbft>::new(&pbft_config).measure(proposers, operations, |p, _| p % REPLICAS)
        });
        let raft_config = concord_raft::Config {
            max_entries_per_message: 4096,
            max_inflight_appends: 4096,
            max_pending_requests: 1 << 20,
            ..concord_raft::Config::default()
        };
        // Raft's clients send to the leader.
        let raft = best_of(3, || {
            Driver::<Raft>::new(&raft_config).measure(proposers, operations, |_, leader| leader)
        });
        println!(
            "| {proposers} | {pbft:.0} | {raft:.0} | {:.3}× |",
            pbft / raft
        );
    }
}
