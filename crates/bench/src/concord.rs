//! The in-process driver for `concord-raft`.

use std::collections::VecDeque;
use std::time::Instant;

use concord_core::{
    seeded_rng, Effect, Env, Input, KvOperation, KvStateMachine, Node, NodeId, PersistToken, Rng,
};
use concord_raft::{Config, RaftNode, Request, Response, Storage};

use crate::{Throughput, Workload};

type KvNode = RaftNode<KvStateMachine>;
type KvInput = Input<concord_raft::Message<KvOperation>, Request<KvOperation, KvOperation>>;
type KvEffect = concord_core::EffectOf<KvNode>;

struct Driver {
    nodes: Vec<KvNode>,
    storage: Vec<Storage<KvOperation>>,
    rngs: Vec<Rng>,
    /// The last write each node emitted that the driver has not confirmed yet.
    unconfirmed: Vec<Option<PersistToken>>,
    /// Sends and replies held behind an unconfirmed write.
    held: Vec<Vec<KvEffect>>,
    queue: VecDeque<(NodeId, KvInput)>,
    now: u64,
    committed: u64,
    /// Stop draining once this many proposals are committed.
    target: u64,
    next_request: u64,
    effects: Vec<KvEffect>,
}

impl Driver {
    fn new(config: &Config) -> Driver {
        let members = [0, 1, 2];
        let mut rngs: Vec<Rng> = (0..3).map(|i| seeded_rng(1, i)).collect();
        let nodes = members
            .iter()
            .map(|&id| {
                Node::restore(
                    id,
                    &members,
                    config,
                    &Storage::default(),
                    0,
                    &mut rngs[id as usize],
                )
            })
            .collect();
        Driver {
            nodes,
            storage: vec![Storage::default(); 3],
            rngs,
            unconfirmed: vec![None; 3],
            held: vec![Vec::new(); 3],
            queue: VecDeque::new(),
            now: 0,
            committed: 0,
            target: u64::MAX,
            next_request: 0,
            effects: Vec::new(),
        }
    }

    fn step(&mut self, node: NodeId, input: KvInput) {
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
                    KvNode::apply_write(&mut self.storage[i], &write);
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

    fn perform(&mut self, node: NodeId, effect: KvEffect) {
        match effect {
            Effect::Send { to, message } => self.queue.push_back((
                to,
                Input::Message {
                    from: node,
                    message,
                },
            )),
            Effect::Reply { response, .. } => {
                if let Response::Applied { .. } = response {
                    self.committed += 1;
                    self.propose(node);
                }
            }
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
        self.queue.push_back((
            leader,
            Input::Request {
                id,
                request: Request::Propose(command),
            },
        ));
    }

    /// Delivers messages until none are left, then makes every write durable (group commit).
    fn drain(&mut self) {
        loop {
            while let Some((node, input)) = self.queue.pop_front() {
                self.step(node, input);
            }
            let mut confirmed = false;
            for i in 0..3 {
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

    fn elect(&mut self) -> NodeId {
        for _ in 0..100 {
            if let Some(leader) = self.nodes.iter().position(|n| n.is_leader()) {
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
        panic!("no leader elected");
    }
}

/// The configuration a workload runs with.
pub fn config(workload: &Workload) -> Config {
    Config {
        max_entries_per_message: if workload.batching { 4096 } else { 1 },
        max_inflight_appends: 4096,
        max_pending_requests: 1 << 20,
        ..Config::default()
    }
}

/// Measures `concord-raft`.
pub fn run(workload: &Workload) -> Throughput {
    let mut driver = Driver::new(&config(workload));
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
