//! A toy protocol for testing the simulator: a fixed-primary replicated register.
//!
//! Node 0 is the primary. A write is persisted, applied and replicated; the reply and the
//! replication messages are emitted after the Persist effect, so the simulator must hold them
//! until the write is durable. Backups persist each replicated write before acknowledging it.
//! Every node ticks every `heartbeat` of its own clock; the primary sends heartbeats.
#![allow(dead_code)]

use std::collections::BTreeMap;

use concord_core::time::MILLISECOND;
use concord_core::{
    Duration, Effect, Env, Input, KvOperation, KvOutcome, KvResult, KvService, KvStateMachine,
    Node, NodeId, NodeStatus, Rng, Role, StateMachine, Time, Violation,
};

pub const PRIMARY: NodeId = 0;

#[derive(Clone, Debug, PartialEq)]
pub enum ToyMessage {
    Replicate { index: u64, operation: KvOperation },
    Ack { index: u64 },
    Heartbeat { sequence: u64 },
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToyStorage {
    pub log: Vec<KvOperation>,
}

#[derive(Clone, Debug)]
pub struct ToyConfig {
    pub heartbeat: Duration,
}

impl Default for ToyConfig {
    fn default() -> Self {
        ToyConfig {
            heartbeat: 100 * MILLISECOND,
        }
    }
}

#[derive(Debug)]
pub struct ToyNode {
    pub id: NodeId,
    pub members: Vec<NodeId>,
    pub config: ToyConfig,
    pub log: Vec<KvOperation>,
    pub state: KvStateMachine,
    pub next_tick: Time,
    pub ticks: u64,
    pub heartbeat_sequence: u64,
    /// Heartbeats received, by claimed sender, with the sequence numbers seen.
    pub heartbeats: BTreeMap<NodeId, Vec<u64>>,
    /// Messages received in total.
    pub received: u64,
    pub next_token: u64,
    /// Local times at which ticks happened.
    pub tick_times: Vec<Time>,
    /// Replicated writes that arrived ahead of a gap.
    pub early: BTreeMap<u64, KvOperation>,
}

type ToyEffect = Effect<ToyMessage, KvOperation, KvOperation, KvOutcome>;

impl ToyNode {
    fn append(&mut self, operation: KvOperation, effects: &mut Vec<ToyEffect>) -> KvResult {
        self.next_token += 1;
        effects.push(Effect::Persist {
            token: self.next_token,
            write: operation.clone(),
        });
        self.log.push(operation.clone());
        let index = self.log.len() as u64;
        effects.push(Effect::Apply {
            index,
            command: operation.clone(),
        });
        self.state.apply(&operation)
    }
}

impl Node for ToyNode {
    type Message = ToyMessage;
    type Request = KvOperation;
    type Response = KvOutcome;
    type Write = KvOperation;
    type Storage = ToyStorage;
    type Command = KvOperation;
    type Config = ToyConfig;

    fn restore(
        id: NodeId,
        members: &[NodeId],
        config: &ToyConfig,
        storage: &ToyStorage,
        now: Time,
        _rng: &mut Rng,
    ) -> Self {
        let mut state = KvStateMachine::default();
        for operation in &storage.log {
            state.apply(operation);
        }
        ToyNode {
            id,
            members: members.to_vec(),
            config: config.clone(),
            log: storage.log.clone(),
            state,
            next_tick: now + config.heartbeat,
            ticks: 0,
            heartbeat_sequence: 0,
            heartbeats: BTreeMap::new(),
            received: 0,
            next_token: 0,
            tick_times: Vec::new(),
            early: BTreeMap::new(),
        }
    }

    fn apply_write(storage: &mut ToyStorage, write: &KvOperation) {
        storage.log.push(write.clone());
    }

    fn step(
        &mut self,
        env: &mut Env<'_>,
        input: Input<ToyMessage, KvOperation>,
        effects: &mut Vec<ToyEffect>,
    ) {
        match input {
            Input::Tick => {
                if env.now >= self.next_tick {
                    self.ticks += 1;
                    self.tick_times.push(env.now);
                    self.next_tick = env.now + self.config.heartbeat;
                    if self.id == PRIMARY {
                        self.heartbeat_sequence += 1;
                        for &peer in &self.members {
                            if peer != self.id {
                                effects.push(Effect::Send {
                                    to: peer,
                                    message: ToyMessage::Heartbeat {
                                        sequence: self.heartbeat_sequence,
                                    },
                                });
                            }
                        }
                    }
                }
            }
            Input::Request { id, request } => {
                if self.id != PRIMARY {
                    effects.push(Effect::Reply {
                        id,
                        response: KvOutcome::NotLeader {
                            leader: Some(PRIMARY),
                        },
                    });
                    return;
                }
                if request.is_read() {
                    let result = self.state.query(&request);
                    effects.push(Effect::Reply {
                        id,
                        response: KvOutcome::Ok(result),
                    });
                    return;
                }
                let result = self.append(request.clone(), effects);
                let index = self.log.len() as u64;
                for &peer in &self.members {
                    if peer != self.id {
                        effects.push(Effect::Send {
                            to: peer,
                            message: ToyMessage::Replicate {
                                index,
                                operation: request.clone(),
                            },
                        });
                    }
                }
                effects.push(Effect::Reply {
                    id,
                    response: KvOutcome::Ok(result),
                });
            }
            Input::Message { from, message } => {
                self.received += 1;
                match message {
                    ToyMessage::Replicate { index, operation } => {
                        if index > self.log.len() as u64 {
                            self.early.insert(index, operation);
                        }
                        while let Some(next) = self.early.remove(&(self.log.len() as u64 + 1)) {
                            self.append(next, effects);
                            let index = self.log.len() as u64;
                            effects.push(Effect::Send {
                                to: from,
                                message: ToyMessage::Ack { index },
                            });
                        }
                    }
                    ToyMessage::Ack { .. } => {}
                    ToyMessage::Heartbeat { sequence } => {
                        self.heartbeats.entry(from).or_default().push(sequence);
                    }
                }
            }
            Input::Persisted { .. } | Input::PeerLost { .. } => {}
        }
    }

    fn next_deadline(&self) -> Option<Time> {
        Some(self.next_tick)
    }

    fn status(&self) -> NodeStatus {
        NodeStatus {
            id: self.id,
            role: if self.id == PRIMARY {
                Role::Leader
            } else {
                Role::Follower
            },
            leader: Some(PRIMARY),
            term: 1,
            log_length: self.log.len() as u64,
            commit_index: self.log.len() as u64,
            applied_index: self.log.len() as u64,
            peers: Vec::new(),
        }
    }

    fn check_invariants(&self) -> Result<(), Violation> {
        for operation in &self.log {
            if let KvOperation::Write { value: -1, .. } = operation {
                return Err(Violation::on_node(
                    "toy-no-negative-one",
                    self.id,
                    "the log holds a write of -1",
                ));
            }
        }
        Ok(())
    }

    fn id(&self) -> NodeId {
        self.id
    }

    fn election_timeout(config: &ToyConfig) -> Duration {
        3 * config.heartbeat
    }
}

impl KvService for ToyNode {
    fn kv_request(operation: &KvOperation) -> KvOperation {
        operation.clone()
    }

    fn kv_outcome(response: &KvOutcome) -> KvOutcome {
        response.clone()
    }
}

pub fn write(key: &str, value: i64) -> KvOperation {
    KvOperation::Write {
        key: key.into(),
        value,
    }
}

pub fn read(key: &str) -> KvOperation {
    KvOperation::Read { key: key.into() }
}

/// A toy simulation with default settings.
pub fn toy(nodes: usize, seed: u64) -> concord_sim::Simulation<ToyNode> {
    concord_sim::Simulation::new(
        concord_sim::SimConfig::new(nodes, seed),
        ToyConfig::default(),
    )
    .expect("valid config")
}
