//! Clusters of real hosts on 127.0.0.1 for the integration tests: Raft ([`Cluster`]),
//! Multi-Paxos ([`PaxosCluster`]) and PBFT ([`PbftCluster`]), all replicating the key-value
//! state machine.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use concord_core::time::MILLISECOND;
use concord_core::{
    KvOperation, KvOutcome, KvResult, KvService, KvStateMachine, NodeId, Role, StateMachine, Value,
};
use concord_paxos::multi::MultiPaxos;
use concord_raft::{Config, RaftNode};
use concord_runtime::{
    start_with_listener, HostConfig, HostedNode, NodeHandle, SyncGate, TimeOrigin, TransportOptions,
};
use tokio::net::TcpListener;

/// The Raft node type under test.
pub type Kv = RaftNode<KvStateMachine>;

/// The Multi-Paxos node type under test.
pub type Paxos = MultiPaxos<KvStateMachine>;

/// Three (or n) Raft hosts.
pub type Cluster = TestCluster<Kv>;

/// Three (or n) Multi-Paxos hosts.
pub type PaxosCluster = TestCluster<Paxos>;

/// The PBFT replica type under test (each hosts a client proxy).
pub type Pbft = concord_pbft::Pbft<KvStateMachine>;

/// Four (`3f + 1`, or n) PBFT hosts.
pub type PbftCluster = TestCluster<Pbft>;

/// Generous: the machine is shared, and tests never assert on speed.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// What the harness needs of a protocol: hosted, serving the key-value workload, and able to
/// show its replicated state.
pub trait TestNode:
    HostedNode<Config: Clone, Request: Clone + Debug, Response: Debug> + KvService
{
    /// The replicated key-value state machine (as far as this node applied it).
    fn kv(&self) -> &KvStateMachine;

    /// The log index (Raft) or slot (Paxos) a successful write was applied at; `None` when
    /// the reply does not say (PBFT's names the client's timestamp, not a sequence number).
    fn applied_at(response: &Self::Response) -> Option<u64>;

    /// What the node's time counts from on its host.
    fn time_origin() -> TimeOrigin {
        TimeOrigin::HostStart
    }
}

impl TestNode for Kv {
    fn kv(&self) -> &KvStateMachine {
        self.state_machine()
    }

    fn applied_at(response: &Self::Response) -> Option<u64> {
        match response {
            concord_raft::Response::Applied { index, .. } => Some(*index),
            _ => None,
        }
    }
}

impl TestNode for Paxos {
    fn kv(&self) -> &KvStateMachine {
        self.state()
    }

    fn applied_at(response: &Self::Response) -> Option<u64> {
        match response {
            concord_paxos::multi::Response::Applied { slot, .. } => Some(*slot),
            _ => None,
        }
    }
}

impl TestNode for Pbft {
    fn kv(&self) -> &KvStateMachine {
        self.state()
    }

    fn applied_at(_: &Self::Response) -> Option<u64> {
        None
    }

    /// A client proxy stamps its requests with the node's time, and replicas ignore a client's
    /// request stamped no later than the last they executed: time must go on increasing
    /// across a restart.
    fn time_origin() -> TimeOrigin {
        TimeOrigin::UnixEpoch
    }
}

/// Small Raft timeouts keep the tests fast.
pub fn raft_config() -> Config {
    Config {
        election_timeout_min: 150 * MILLISECOND,
        election_timeout_max: 300 * MILLISECOND,
        heartbeat_interval: 30 * MILLISECOND,
        ..Config::default()
    }
}

/// Multi-Paxos with the default timing (heartbeat rounds of 100 ms).
pub fn paxos_config() -> concord_paxos::multi::Config {
    concord_paxos::multi::Config::default()
}

/// PBFT for real time on a shared machine: a checkpoint every 4 sequence numbers (a window of
/// 8), so checkpoints, garbage collection and state transfer happen within a test's few dozen
/// requests; a view-change timeout of 1 s, long enough that a loaded machine does not start
/// view changes for requests merely slow, short enough that a stopped primary is replaced
/// within seconds; client proxies that never give up within a test.
pub fn pbft_config() -> concord_pbft::Config {
    concord_pbft::Config {
        checkpoint_interval: 4,
        log_window: 8,
        view_change_timeout: 1_000 * MILLISECOND,
        max_view_change_timeout: 8_000 * MILLISECOND,
        client_give_up: 300_000 * MILLISECOND,
        key_seed: 0x5eed,
        ..concord_pbft::Config::default()
    }
}

/// Hosts 0..n, their data directories, addresses and sync gates.
pub struct TestCluster<N: TestNode> {
    pub root: tempfile::TempDir,
    pub addresses: BTreeMap<NodeId, SocketAddr>,
    pub nodes: Vec<Option<NodeHandle<N>>>,
    pub gates: Vec<SyncGate>,
    /// The protocol's configuration, the same on every node.
    pub node_config: N::Config,
    /// Which forwarded requests each host takes (`HostConfig::accept_forward`).
    pub accept_forward: fn(&N, NodeId) -> bool,
    /// Which peers each host (re)started from now on knows to be removed
    /// (`HostConfig::removed_peer`).
    pub removed_peer: fn(&N, NodeId) -> bool,
}

impl<N: TestNode> TestCluster<N> {
    /// Binds every listener first (ports chosen by the system), then starts every host.
    pub async fn start(n: u64, node_config: N::Config) -> Self {
        Self::start_with(n, node_config, |_, _| true).await
    }

    /// [`TestCluster::start`], with a filter on forwarded requests.
    pub async fn start_with(
        n: u64,
        node_config: N::Config,
        accept_forward: fn(&N, NodeId) -> bool,
    ) -> Self {
        let mut listeners = Vec::new();
        let mut addresses = BTreeMap::new();
        for id in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addresses.insert(id, listener.local_addr().unwrap());
            listeners.push(listener);
        }
        let mut cluster = TestCluster {
            root: tempfile::tempdir().unwrap(),
            addresses,
            nodes: (0..n).map(|_| None).collect(),
            gates: (0..n).map(|_| SyncGate::new()).collect(),
            node_config,
            accept_forward,
            removed_peer: |_, _| false,
        };
        for (id, listener) in listeners.into_iter().enumerate() {
            cluster.launch(id as NodeId, listener).await;
        }
        cluster
    }

    fn config(&self, id: NodeId) -> HostConfig<N> {
        let mut config = HostConfig::new(
            id,
            self.addresses.keys().copied().collect(),
            self.addresses[&id],
            self.data_dir(id),
            self.node_config.clone(),
        );
        config.peers = self.addresses.clone();
        config.seed = 7;
        config.time_origin = N::time_origin();
        config.cluster_id = 42;
        config.tick_interval = Duration::from_millis(10);
        config.transport = TransportOptions {
            backoff_min: Duration::from_millis(5),
            backoff_max: Duration::from_millis(100),
            ..TransportOptions::default()
        };
        config.sync_gate = Some(self.gates[id as usize].clone());
        config.accept_forward = self.accept_forward;
        config.removed_peer = self.removed_peer;
        config
    }

    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.root.path().join(format!("node-{id}"))
    }

    async fn launch(&mut self, id: NodeId, listener: TcpListener) {
        let handle = start_with_listener(self.config(id), listener)
            .await
            .unwrap_or_else(|e| panic!("node {id} does not start: {e}"));
        self.nodes[id as usize] = Some(handle);
    }

    /// Restarts a stopped node on its old address, from its data directory.
    pub async fn restart(&mut self, id: NodeId) {
        assert!(self.nodes[id as usize].is_none(), "node {id} is running");
        let address = self.addresses[&id];
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(address).await {
                Ok(listener) => break listener,
                Err(error) if attempts < 100 => {
                    attempts += 1;
                    eprintln!("rebinding {address}: {error}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("cannot rebind {address}: {error}"),
            }
        };
        self.launch(id, listener).await;
    }

    /// Gracefully stops a node.
    pub async fn stop(&mut self, id: NodeId) {
        let handle = self.nodes[id as usize].take().expect("node is running");
        handle.shutdown().await.expect("clean shutdown");
    }

    pub fn node(&self, id: NodeId) -> &NodeHandle<N> {
        self.nodes[id as usize].as_ref().expect("node is running")
    }

    pub fn running(&self) -> impl Iterator<Item = &NodeHandle<N>> {
        self.nodes.iter().flatten()
    }

    /// Waits until a running node leads and every running node follows it.
    pub async fn leader(&self) -> NodeId {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let statuses: Vec<_> = self.running().map(|n| n.status()).collect();
            let leaders: Vec<_> = statuses.iter().filter(|s| s.role == Role::Leader).collect();
            if let [leader] = leaders.as_slice() {
                let agreed = statuses
                    .iter()
                    .all(|s| s.leader == Some(leader.id) && s.term == leader.term);
                if agreed {
                    return leader.id;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader elected: {statuses:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a request to the leader, retrying on another leader until it is answered.
    pub async fn request(&self, request: N::Request) -> N::Response {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let leader = self.leader().await;
            let answer = tokio::time::timeout(
                Duration::from_secs(10),
                self.node(leader).request(request.clone()),
            )
            .await;
            let retry = match &answer {
                Ok(Ok(response)) => matches!(
                    N::kv_outcome(response),
                    KvOutcome::NotLeader { .. } | KvOutcome::Unknown
                ),
                Ok(Err(_)) | Err(_) => true,
            };
            match answer {
                Ok(Ok(response)) if !retry => return response,
                _ => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "request {request:?} never answered"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Writes `key = value` (idempotent, so retries are harmless); returns its log index.
    pub async fn write(&self, key: &str, value: i64) -> u64 {
        let operation = KvOperation::Write {
            key: key.into(),
            value,
        };
        let response = self.request(N::kv_request(&operation)).await;
        match (N::kv_outcome(&response), N::applied_at(&response)) {
            (KvOutcome::Ok(KvResult::Written), Some(index)) => index,
            _ => panic!("write {key}: {response:?}"),
        }
    }

    /// A linearizable read at the leader.
    pub async fn read(&self, key: &str) -> Option<Value> {
        let operation = KvOperation::Read { key: key.into() };
        let response = self.request(N::kv_request(&operation)).await;
        match N::kv_outcome(&response) {
            KvOutcome::Ok(KvResult::Read(value)) => value,
            _ => panic!("read {key}: {response:?}"),
        }
    }
}

impl<N: TestNode> Drop for TestCluster<N> {
    /// A failed assertion must not leave a WAL thread waiting at a closed gate: the runtime
    /// would wait for it forever.
    fn drop(&mut self) {
        for gate in &self.gates {
            gate.open();
        }
    }
}

/// Opens a gate when dropped (see `TestCluster`'s `Drop`).
pub struct OpenOnDrop(pub SyncGate);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// Reads `key` from node `id`'s own state machine (no consensus).
pub async fn local_read<N: TestNode>(node: &NodeHandle<N>, key: &str) -> Option<Value> {
    let query = KvOperation::Read { key: key.into() };
    match node
        .inspect(move |node: &N| node.kv().query(&query))
        .await
        .unwrap()
    {
        KvResult::Read(value) => value,
        other => panic!("{other:?}"),
    }
}

/// Waits until `node` has applied at least `index`.
pub async fn wait_applied<N: TestNode>(node: &NodeHandle<N>, index: u64) {
    let mut applied = node.watch_applied();
    tokio::time::timeout(PATIENCE, applied.wait_for(|&a| a >= index))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "node {} did not apply index {index}: {:?}",
                node.id(),
                node.status()
            )
        })
        .unwrap();
}
