//! A cluster of real Raft hosts on 127.0.0.1 for the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use concord_core::time::MILLISECOND;
use concord_core::{KvOperation, KvResult, KvStateMachine, NodeId, Role, StateMachine, Value};
use concord_raft::{Config, RaftError, RaftNode, Request, Response};
use concord_runtime::{start_with_listener, HostConfig, NodeHandle, SyncGate, TransportOptions};
use tokio::net::TcpListener;

/// The node type under test.
pub type Kv = RaftNode<KvStateMachine>;

/// Generous: the machine is shared, and tests never assert on speed.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Small Raft timeouts keep the tests fast.
pub fn raft_config() -> Config {
    Config {
        election_timeout_min: 150 * MILLISECOND,
        election_timeout_max: 300 * MILLISECOND,
        heartbeat_interval: 30 * MILLISECOND,
        ..Config::default()
    }
}

/// Hosts 0..n, their data directories, addresses and sync gates.
pub struct Cluster {
    pub root: tempfile::TempDir,
    pub addresses: BTreeMap<NodeId, SocketAddr>,
    pub nodes: Vec<Option<NodeHandle<Kv>>>,
    pub gates: Vec<SyncGate>,
    pub raft: Config,
    /// Which forwarded requests each host takes (`HostConfig::accept_forward`).
    pub accept_forward: fn(&Kv, NodeId) -> bool,
}

impl Cluster {
    /// Binds every listener first (ports chosen by the system), then starts every host.
    pub async fn start(n: u64, raft: Config) -> Cluster {
        Cluster::start_with(n, raft, |_, _| true).await
    }

    /// [`Cluster::start`], with a filter on forwarded requests.
    pub async fn start_with(
        n: u64,
        raft: Config,
        accept_forward: fn(&Kv, NodeId) -> bool,
    ) -> Cluster {
        let mut listeners = Vec::new();
        let mut addresses = BTreeMap::new();
        for id in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addresses.insert(id, listener.local_addr().unwrap());
            listeners.push(listener);
        }
        let mut cluster = Cluster {
            root: tempfile::tempdir().unwrap(),
            addresses,
            nodes: (0..n).map(|_| None).collect(),
            gates: (0..n).map(|_| SyncGate::new()).collect(),
            raft,
            accept_forward,
        };
        for (id, listener) in listeners.into_iter().enumerate() {
            cluster.launch(id as NodeId, listener).await;
        }
        cluster
    }

    fn config(&self, id: NodeId) -> HostConfig<Kv> {
        let mut config = HostConfig::new(
            id,
            self.addresses.keys().copied().collect(),
            self.addresses[&id],
            self.data_dir(id),
            self.raft.clone(),
        );
        config.peers = self.addresses.clone();
        config.seed = 7;
        config.cluster_id = 42;
        config.tick_interval = Duration::from_millis(10);
        config.transport = TransportOptions {
            backoff_min: Duration::from_millis(5),
            backoff_max: Duration::from_millis(100),
            ..TransportOptions::default()
        };
        config.sync_gate = Some(self.gates[id as usize].clone());
        config.accept_forward = self.accept_forward;
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

    pub fn node(&self, id: NodeId) -> &NodeHandle<Kv> {
        self.nodes[id as usize].as_ref().expect("node is running")
    }

    pub fn running(&self) -> impl Iterator<Item = &NodeHandle<Kv>> {
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
    pub async fn request(&self, request: Request<KvOperation, KvOperation>) -> Response<KvResult> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let leader = self.leader().await;
            let answer = tokio::time::timeout(
                Duration::from_secs(10),
                self.node(leader).request(request.clone()),
            )
            .await;
            match answer {
                Ok(Ok(Response::Failed(
                    RaftError::NotLeader { .. } | RaftError::OutcomeUnknown { .. },
                )))
                | Ok(Err(_))
                | Err(_) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "request {request:?} never answered"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(Ok(response)) => return response,
            }
        }
    }

    /// Writes `key = value` (idempotent, so retries are harmless); returns its log index.
    pub async fn write(&self, key: &str, value: i64) -> u64 {
        let response = self
            .request(Request::Propose(KvOperation::Write {
                key: key.into(),
                value,
            }))
            .await;
        match response {
            Response::Applied {
                index,
                output: KvResult::Written,
            } => index,
            other => panic!("write {key}: {other:?}"),
        }
    }

    /// A linearizable read at the leader.
    pub async fn read(&self, key: &str) -> Option<Value> {
        match self
            .request(Request::Read(KvOperation::Read { key: key.into() }))
            .await
        {
            Response::Read {
                output: KvResult::Read(value),
                ..
            } => value,
            other => panic!("read {key}: {other:?}"),
        }
    }
}

impl Drop for Cluster {
    /// A failed assertion must not leave a WAL thread waiting at a closed gate: the runtime
    /// would wait for it forever.
    fn drop(&mut self) {
        for gate in &self.gates {
            gate.open();
        }
    }
}

/// Opens a gate when dropped (see `Cluster`'s `Drop`).
pub struct OpenOnDrop(pub SyncGate);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// Reads `key` from node `id`'s own state machine (no consensus).
pub async fn local_read(node: &NodeHandle<Kv>, key: &str) -> Option<Value> {
    let query = KvOperation::Read { key: key.into() };
    match node
        .inspect(move |raft: &Kv| raft.state_machine().query(&query))
        .await
        .unwrap()
    {
        KvResult::Read(value) => value,
        other => panic!("{other:?}"),
    }
}

/// Waits until `node` has applied at least `index`.
pub async fn wait_applied(node: &NodeHandle<Kv>, index: u64) {
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
