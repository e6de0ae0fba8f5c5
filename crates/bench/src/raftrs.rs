//! The in-process driver for raft-rs (`raft` 0.7, TiKV's Raft), the peer.

use std::collections::VecDeque;
use std::time::Instant;

use concord_core::{KvOperation, KvStateMachine, StateMachine};
use raft::prelude::{ConfState, Entry, Message};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole};

use crate::{Throughput, Workload};

struct Driver {
    nodes: Vec<RawNode<MemStorage>>,
    machines: Vec<KvStateMachine>,
    queue: VecDeque<Message>,
    committed: u64,
    next_request: u64,
}

fn command(data: &[u8]) -> Option<KvOperation> {
    let id = u64::from_le_bytes(data.try_into().ok()?);
    Some(KvOperation::Write {
        key: format!("k{}", id % 64),
        value: id as i64,
    })
}

impl Driver {
    fn new(workload: &Workload) -> Driver {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let nodes = (1..=3u64)
            .map(|id| {
                let config = Config {
                    id,
                    election_tick: 10,
                    heartbeat_tick: 1,
                    max_size_per_msg: if workload.batching { 1 << 30 } else { 0 },
                    max_inflight_msgs: 4096,
                    ..Config::default()
                };
                let storage =
                    MemStorage::new_with_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
                RawNode::new(&config, storage, &logger).expect("valid raft-rs configuration")
            })
            .collect();
        Driver {
            nodes,
            machines: vec![KvStateMachine::default(); 3],
            queue: VecDeque::new(),
            committed: 0,
            next_request: 0,
        }
    }

    fn propose(&mut self, leader: usize) {
        let id = self.next_request;
        self.next_request += 1;
        self.nodes[leader]
            .propose(vec![], id.to_le_bytes().to_vec())
            .expect("the leader proposes");
    }

    fn apply(&mut self, i: usize, entries: Vec<Entry>, leader: Option<usize>) {
        for entry in entries {
            if let Some(command) = command(entry.get_data()) {
                self.machines[i].apply(&command);
                if Some(i) == leader {
                    self.committed += 1;
                    self.propose(i);
                }
            }
        }
    }

    /// One round: deliver every queued message, then handle every node's Ready (persist to
    /// memory, send, apply).
    fn round(&mut self, leader: Option<usize>) -> bool {
        let mut progressed = false;
        while let Some(message) = self.queue.pop_front() {
            progressed = true;
            let to = message.to as usize - 1;
            let _ = self.nodes[to].step(message);
        }
        for i in 0..3 {
            if !self.nodes[i].has_ready() {
                continue;
            }
            progressed = true;
            let mut ready = self.nodes[i].ready();
            self.queue.extend(ready.take_messages());
            let committed = ready.take_committed_entries();
            self.apply(i, committed, leader);
            let storage = self.nodes[i].store().clone();
            if !ready.entries().is_empty() {
                storage
                    .wl()
                    .append(ready.entries())
                    .expect("in-memory append");
            }
            if let Some(hard_state) = ready.hs() {
                storage.wl().set_hardstate(hard_state.clone());
            }
            self.queue.extend(ready.take_persisted_messages());
            let mut light = self.nodes[i].advance(ready);
            if let Some(commit) = light.commit_index() {
                storage.wl().mut_hard_state().set_commit(commit);
            }
            self.queue.extend(light.take_messages());
            let committed = light.take_committed_entries();
            self.apply(i, committed, leader);
            self.nodes[i].advance_apply();
        }
        progressed
    }

    fn elect(&mut self) -> usize {
        self.nodes[0].campaign().expect("campaign");
        for _ in 0..100 {
            self.round(None);
            if self.nodes[0].raft.state == StateRole::Leader {
                // Settle the leader's first (empty) entry.
                while self.round(None) {}
                return 0;
            }
        }
        panic!("raft-rs elected no leader");
    }
}

/// Measures raft-rs.
pub fn run(workload: &Workload) -> Throughput {
    let mut driver = Driver::new(workload);
    let leader = driver.elect();
    let started = Instant::now();
    for _ in 0..workload.proposers {
        driver.propose(leader);
    }
    while driver.committed < workload.proposals {
        driver.round(Some(leader));
    }
    Throughput {
        committed: driver.committed,
        seconds: started.elapsed().as_secs_f64(),
    }
}
