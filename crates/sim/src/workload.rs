//! Clients: processes that issue key-value operations and record a Jepsen-style history.
//!
//! Each client is attached to a home node and runs one operation at a time. It sends the
//! operation to the node it believes leads (at first its home node) and follows `NotLeader`
//! hints up to `max_redirects` times; only the first invocation and the final outcome are
//! recorded, which keeps the history truthful:
//!
//! | outcome | recorded | then |
//! |---|---|---|
//! | `Ok` (a cas that matched) | `ok` with the result | next operation |
//! | cas that did not match, `Rejected`, `NotLeader` after the last redirect, target down | `fail` | next operation |
//! | `Unknown`, timeout | `info` | the process retires; a fresh process id takes over |
//!
//! Values: a write's value is an integer, a cas's `[from, to]`, an append's integer; a read's
//! `ok` carries the value read (`null` when missing, an integer or a list).

use std::collections::BTreeMap;

use concord_check::{EventType, History, Op};
use concord_core::time::{MILLISECOND, SECOND};
use concord_core::{
    Duration, KvOperation, KvOutcome, KvResult, KvService, Node, NodeId, RequestId, Rng, Time,
    Value,
};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

/// Relative weights of the four operations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationMix {
    /// Weight of reads.
    pub read: u32,
    /// Weight of writes.
    pub write: u32,
    /// Weight of compare-and-sets.
    pub cas: u32,
    /// Weight of appends.
    pub append: u32,
}

impl Default for OperationMix {
    fn default() -> Self {
        OperationMix {
            read: 4,
            write: 3,
            cas: 2,
            append: 1,
        }
    }
}

/// How the clients behave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    /// Concurrent client processes.
    pub clients: usize,
    /// Operations to invoke in total, over all clients.
    pub operations: u64,
    /// Keys `k0..k{keys-1}` the operations touch.
    pub keys: usize,
    /// The operation mix.
    pub mix: OperationMix,
    /// How long a client waits for a reply before recording `info`, ns.
    pub request_timeout: Duration,
    /// Largest pause between two operations of one client, ns.
    pub think_time_max: Duration,
    /// How many `NotLeader` hints a client follows for one operation.
    pub max_redirects: u32,
    /// When the clients start, ns of simulated time.
    pub start_at: Time,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            clients: 3,
            operations: 100,
            keys: 3,
            mix: OperationMix::default(),
            request_timeout: SECOND,
            think_time_max: 20 * MILLISECOND,
            max_redirects: 3,
            start_at: 0,
        }
    }
}

/// A workload setting that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// All weights are zero while operations are requested.
    #[error("the operation mix has only zero weights")]
    EmptyMix,
    /// Zero keys while operations are requested.
    #[error("the workload needs at least one key")]
    NoKeys,
    /// A zero request timeout.
    #[error("the request timeout must be positive")]
    ZeroTimeout,
}

impl WorkloadConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        if self.operations > 0 && self.clients > 0 {
            let m = &self.mix;
            if m.read + m.write + m.cas + m.append == 0 {
                return Err(WorkloadError::EmptyMix);
            }
            if self.keys == 0 {
                return Err(WorkloadError::NoKeys);
            }
        }
        if self.request_timeout == 0 {
            return Err(WorkloadError::ZeroTimeout);
        }
        Ok(())
    }
}

/// One completed client operation, for the toolkit's per-side counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Completion {
    /// When it was invoked.
    pub invoked: Time,
    /// When it completed.
    pub time: Time,
    /// The node that answered (or last tried, for timeouts).
    pub node: NodeId,
    /// The client's home node: the side of a partition the client is on.
    pub home: NodeId,
    /// `ok`, `fail` or `info`.
    pub kind: EventType,
}

/// Request ids the workload uses start here; smaller ids belong to [`crate::Simulation::submit`].
pub(crate) const WORKLOAD_REQUEST_BASE: RequestId = 1 << 62;

/// A request a client wants delivered.
#[derive(Clone, Debug)]
pub(crate) struct Outbound<Q> {
    pub id: RequestId,
    pub home: NodeId,
    pub target: NodeId,
    pub request: Q,
}

/// What the simulator should do after a client event.
#[derive(Clone, Debug)]
pub(crate) enum Next<Q> {
    /// Send this request.
    Send(Outbound<Q>),
    /// Wake this client at this time.
    Wake { client: usize, at: Time },
    /// Nothing to do.
    Idle,
}

#[derive(Clone, Debug)]
struct Pending {
    operation: KvOperation,
    invoked: Time,
    attempt: RequestId,
    target: NodeId,
    redirects: u32,
}

#[derive(Clone, Debug)]
struct Client {
    home: NodeId,
    process: u64,
    leader_hint: Option<NodeId>,
    pending: Option<Pending>,
}

/// The client processes of one run and the history they record.
pub struct Workload<N: Node> {
    config: WorkloadConfig,
    nodes: usize,
    make_request: fn(&KvOperation) -> N::Request,
    outcome: fn(&N::Response) -> KvOutcome,
    rng: Rng,
    clients: Vec<Client>,
    invoked: u64,
    next_process: u64,
    next_value: i64,
    next_attempt: RequestId,
    attempts: BTreeMap<RequestId, usize>,
    /// The names of the first keys (`k0`, `k1`, ...), made once instead of per operation.
    key_names: Vec<String>,
    history: History,
    completions: Vec<Completion>,
    stopped: bool,
}

impl<N: Node> std::fmt::Debug for Workload<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("config", &self.config)
            .field("invoked", &self.invoked)
            .field("events", &self.history.events.len())
            .finish()
    }
}

/// At most this many key names are made in advance.
const KEY_NAMES_KEPT: usize = 1024;

impl<N: KvService> Workload<N> {
    /// Clients for a key-value node, over a cluster of `nodes` nodes, with their own seeded
    /// generator. Client `c` lives at node `c % nodes`.
    pub fn new(config: WorkloadConfig, nodes: usize, rng: Rng) -> Result<Self, WorkloadError> {
        config.validate()?;
        let clients = (0..config.clients)
            .map(|c| Client {
                home: (c % nodes.max(1)) as NodeId,
                process: c as u64,
                leader_hint: None,
                pending: None,
            })
            .collect();
        let config_keys = config.keys;
        Ok(Workload {
            next_process: config.clients as u64,
            config,
            nodes,
            make_request: N::kv_request,
            outcome: N::kv_outcome,
            rng,
            clients,
            invoked: 0,
            next_value: 1,
            next_attempt: WORKLOAD_REQUEST_BASE,
            attempts: BTreeMap::new(),
            key_names: (0..config_keys.min(KEY_NAMES_KEPT))
                .map(|key| format!("k{key}"))
                .collect(),
            history: History::default(),
            completions: Vec::new(),
            stopped: false,
        })
    }
}

fn operation_value(operation: &KvOperation) -> serde_json::Value {
    match operation {
        KvOperation::Read { .. } => serde_json::Value::Null,
        KvOperation::Write { value, .. } | KvOperation::Append { value, .. } => (*value).into(),
        KvOperation::Cas { from, to, .. } => serde_json::json!([from, to]),
    }
}

fn operation_name(operation: &KvOperation) -> &'static str {
    match operation {
        KvOperation::Read { .. } => "read",
        KvOperation::Write { .. } => "write",
        KvOperation::Cas { .. } => "cas",
        KvOperation::Append { .. } => "append",
    }
}

fn read_value(value: &Option<Value>) -> serde_json::Value {
    match value {
        None => serde_json::Value::Null,
        Some(Value::Int(v)) => (*v).into(),
        Some(Value::List(list)) => serde_json::json!(list),
    }
}

impl<N: Node> Workload<N> {
    /// The configuration.
    pub fn config(&self) -> &WorkloadConfig {
        &self.config
    }

    /// The history recorded so far.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Every completed operation, in time order.
    pub fn completions(&self) -> &[Completion] {
        &self.completions
    }

    /// Whether every operation was invoked and completed.
    pub fn is_done(&self) -> bool {
        self.invoked >= self.config.operations && self.clients.iter().all(|c| c.pending.is_none())
    }

    /// Stops invoking new operations; pending ones still complete.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Whether no operation is pending.
    pub fn is_idle(&self) -> bool {
        self.clients.iter().all(|c| c.pending.is_none())
    }

    /// The home node of the client that made request `id`, while the request is current.
    pub(crate) fn home_of(&self, id: RequestId) -> Option<NodeId> {
        let client = *self.attempts.get(&id)?;
        Some(self.clients[client].home)
    }

    /// When each client first wakes.
    pub(crate) fn start(&mut self) -> Vec<(usize, Time)> {
        (0..self.clients.len())
            .map(|c| {
                let jitter = self.rng.gen_range(0..=self.config.think_time_max);
                (c, self.config.start_at + jitter)
            })
            .collect()
    }

    /// The name of key number `key`.
    fn key_name(&self, key: usize) -> String {
        match self.key_names.get(key) {
            Some(name) => name.clone(),
            None => format!("k{key}"),
        }
    }

    fn next_operation(&mut self) -> KvOperation {
        let key = self.rng.gen_range(0..self.config.keys);
        let key = self.key_name(key);
        let m = &self.config.mix;
        let total = m.read + m.write + m.cas + m.append;
        let pick = self.rng.gen_range(0..total);
        if pick < m.read {
            KvOperation::Read { key }
        } else if pick < m.read + m.write {
            KvOperation::Write {
                key,
                value: self.rng.gen_range(0..5),
            }
        } else if pick < m.read + m.write + m.cas {
            KvOperation::Cas {
                key,
                from: self.rng.gen_range(0..5),
                to: self.rng.gen_range(0..5),
            }
        } else {
            let value = self.next_value;
            self.next_value += 1;
            KvOperation::Append { key, value }
        }
    }

    fn record(
        &mut self,
        client: usize,
        kind: EventType,
        operation: &KvOperation,
        value: serde_json::Value,
        time: Time,
    ) {
        self.history.push(Op {
            process: self.clients[client].process,
            kind,
            f: operation_name(operation).into(),
            key: Some(operation.key().into()),
            value,
            time,
        });
    }

    fn attempt(&mut self, client: usize, target: NodeId) -> Next<N::Request> {
        let id = self.next_attempt;
        self.next_attempt += 1;
        self.attempts.insert(id, client);
        let state = &mut self.clients[client];
        let pending = state
            .pending
            .as_mut()
            .expect("an attempt needs a pending operation");
        pending.attempt = id;
        pending.target = target;
        Next::Send(Outbound {
            id,
            home: state.home,
            target,
            request: (self.make_request)(&pending.operation),
        })
    }

    /// Client `client` is ready: invoke its next operation, if any are left.
    pub(crate) fn wake(&mut self, client: usize, now: Time) -> Next<N::Request> {
        if self.stopped
            || self.invoked >= self.config.operations
            || self.clients[client].pending.is_some()
        {
            return Next::Idle;
        }
        self.invoked += 1;
        let operation = self.next_operation();
        self.record(
            client,
            EventType::Invoke,
            &operation,
            operation_value(&operation),
            now,
        );
        let target = self.clients[client]
            .leader_hint
            .unwrap_or(self.clients[client].home);
        self.clients[client].pending = Some(Pending {
            operation,
            invoked: now,
            attempt: 0,
            target,
            redirects: 0,
        });
        self.attempt(client, target)
    }

    /// Ends the pending operation of `client` with `kind`.
    fn complete(
        &mut self,
        client: usize,
        kind: EventType,
        value: Option<serde_json::Value>,
        now: Time,
    ) -> Next<N::Request> {
        let Some(pending) = self.clients[client].pending.take() else {
            return Next::Idle;
        };
        self.attempts.remove(&pending.attempt);
        let value = value.unwrap_or_else(|| operation_value(&pending.operation));
        self.record(client, kind, &pending.operation, value, now);
        self.completions.push(Completion {
            invoked: pending.invoked,
            time: now,
            node: pending.target,
            home: self.clients[client].home,
            kind,
        });
        if kind == EventType::Info {
            let state = &mut self.clients[client];
            state.process = self.next_process;
            state.leader_hint = None;
            self.next_process += 1;
        }
        let at = now + self.rng.gen_range(1..=self.config.think_time_max.max(1));
        Next::Wake { client, at }
    }

    fn client_of(&mut self, id: RequestId) -> Option<usize> {
        let client = *self.attempts.get(&id)?;
        let current = self.clients[client].pending.as_ref()?.attempt;
        if current != id {
            self.attempts.remove(&id);
            return None;
        }
        Some(client)
    }

    /// Tries the pending operation at another node, or fails it when out of redirects.
    fn redirect(&mut self, client: usize, hint: Option<NodeId>, now: Time) -> Next<N::Request> {
        let Some(pending) = self.clients[client].pending.as_mut() else {
            return Next::Idle;
        };
        let old = pending.attempt;
        if pending.redirects >= self.config.max_redirects {
            return self.complete(client, EventType::Fail, None, now);
        }
        pending.redirects += 1;
        let target = match hint {
            Some(hint) if hint != pending.target && (hint as usize) < self.nodes => hint,
            _ => (pending.target + 1) % self.nodes.max(1) as NodeId,
        };
        self.attempts.remove(&old);
        self.attempt(client, target)
    }

    /// A reply to request `id` reached its client.
    pub(crate) fn on_response(
        &mut self,
        id: RequestId,
        from: NodeId,
        response: &N::Response,
        now: Time,
    ) -> Next<N::Request> {
        let Some(client) = self.client_of(id) else {
            return Next::Idle;
        };
        let cas_args = match &self.clients[client].pending {
            Some(Pending {
                operation: KvOperation::Cas { from, to, .. },
                ..
            }) => Some(serde_json::json!([from, to])),
            _ => None,
        };
        match (self.outcome)(response) {
            KvOutcome::Ok(result) => {
                self.clients[client].leader_hint = Some(from);
                match result {
                    KvResult::Read(value) => {
                        self.complete(client, EventType::Ok, Some(read_value(&value)), now)
                    }
                    KvResult::Written => self.complete(client, EventType::Ok, None, now),
                    KvResult::Cas(true) => self.complete(client, EventType::Ok, cas_args, now),
                    KvResult::Cas(false) => self.complete(client, EventType::Fail, cas_args, now),
                }
            }
            KvOutcome::NotLeader { leader } => {
                self.clients[client].leader_hint = leader;
                self.redirect(client, leader, now)
            }
            KvOutcome::Rejected(_) => self.complete(client, EventType::Fail, None, now),
            KvOutcome::Unknown => self.complete(client, EventType::Info, None, now),
        }
    }

    /// Request `id` could not reach its node (link cut or node down): it was never delivered.
    pub(crate) fn on_unreachable(&mut self, id: RequestId, now: Time) -> Next<N::Request> {
        let Some(client) = self.client_of(id) else {
            return Next::Idle;
        };
        let home = self.clients[client].home;
        self.clients[client].leader_hint = None;
        let at_home = self.clients[client]
            .pending
            .as_ref()
            .is_some_and(|p| p.target == home);
        if at_home {
            self.complete(client, EventType::Fail, None, now)
        } else {
            self.redirect(client, Some(home), now)
        }
    }

    /// The client of request `id` stopped waiting.
    pub(crate) fn on_timeout(&mut self, id: RequestId, now: Time) -> Next<N::Request> {
        let Some(client) = self.client_of(id) else {
            return Next::Idle;
        };
        self.complete(client, EventType::Info, None, now)
    }
}
