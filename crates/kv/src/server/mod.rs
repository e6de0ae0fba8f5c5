//! One Concord DB node as a real process: the Raft core hosted by `concord-runtime` (TCP between
//! peers, a write-ahead log with fsync), and etcd's v3 gRPC services for clients.
//!
//! ```text
//!  etcd clients ──gRPC──▶ KV · Watch · Lease · Cluster · Maintenance ─┐
//!                                                                      ▼
//!             followers forward writes to the leader's client URL   NodeHandle ──▶ RaftNode<KvStore>
//!                                                                      │            (runtime task)
//!  peers ◀──────────────────── TCP frames ───────────────────────────┘  WAL: group commit + fsync
//! ```
//!
//! Writes are proposed through Raft and answered once applied. Reads are linearizable by
//! default (ReadIndex, also at followers); `serializable` reads are answered from the local
//! state and still work with no leader. Lease expiry is decided by the leader's [`Lessor`] and
//! carried out by a `LeaseRevoke` proposal, so every replica deletes the same keys at the same
//! revision.

/// Turns a store output into the expected response, or its error into a status (every
/// service's handlers use it, so it stands before their modules).
macro_rules! expect_output {
    ($output:expr, $variant:ident) => {
        match $output {
            $crate::Output::$variant(response) => response,
            $crate::Output::Error(error) => return Err($crate::server::convert::status_of(&error)),
            other => {
                return Err(tonic::Status::internal(format!(
                    "unexpected store output {other:?}"
                )))
            }
        }
    };
}

mod authority;
pub mod backup;
mod cluster;
pub mod convert;
mod gateway;
mod gather;
mod http;
mod incoming;
mod kv;
mod lease;
mod metrics;
pub mod tls;
mod watch;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use anyhow::Context;
use concord_raft::{RaftError, RaftNode};
use concord_runtime::{HostConfig, HostError, NodeHandle, PeerTls, TlsFiles};
use serde::Serialize;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::pb::concordpb::node_client::NodeClient;
use crate::pb::concordpb::NodeStatusRequest;
use crate::server::convert::{HeaderInfo, Limits};
use crate::{Command, KvStore, Lessor, LessorConfig, Output, Query};
use incoming::Connections;

/// The Raft node Concord DB runs.
pub type DbNode = RaftNode<KvStore>;

/// Everything one node needs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// This node's id (positive, unique in the cluster).
    pub id: u64,
    /// Its human-readable name.
    pub name: String,
    /// Where its WAL lives.
    pub data_dir: PathBuf,
    /// Where clients connect (gRPC and `/metrics`).
    pub listen_client: SocketAddr,
    /// The client URL published to other members.
    pub advertise_client: String,
    /// Where peers connect.
    pub listen_peer: SocketAddr,
    /// The initial members and their peer addresses.
    pub initial_cluster: BTreeMap<u64, SocketAddr>,
    /// Join a running cluster instead of bootstrapping one.
    pub join: bool,
    /// Raft heartbeat interval.
    pub heartbeat: Duration,
    /// Lower bound of the randomized election timeout.
    pub election_timeout: Duration,
    /// Largest request in bytes.
    pub max_request_bytes: usize,
    /// Largest key in bytes.
    pub max_key_bytes: usize,
    /// The most bytes the key space with its history may take (etcd's
    /// `--quota-backend-bytes`, default 2 GiB): a write that would pass it raises the space
    /// alarm, and the cluster then refuses writes that add data until the alarm is cleared.
    pub quota_bytes: u64,
    /// Requests waiting for consensus before new ones are refused.
    pub max_inflight: usize,
    /// Snapshot every this many applied entries.
    pub snapshot_entries: u64,
    /// How long a leader may hold back the sync of its own log appends while its followers
    /// can commit them without it and more than one entry awaits commitment
    /// ([`concord_runtime::HostConfig::sync_delay`]). Zero: never.
    pub leader_sync_delay: Duration,
    /// TLS on the client port (`None`: plain TCP); see [`tls`].
    pub client_tls: Option<TlsFiles>,
    /// Mutual TLS between members (`None`: plain TCP).
    pub peer_tls: Option<TlsFiles>,
    /// Listeners for `/metrics`, `/health` and `/version` (etcd's `--listen-metrics-urls`),
    /// besides the client port.
    pub listen_metrics: Vec<MetricsListener>,
    /// Serve `GET` and `POST /faults` on the client port, so that a test can cut members off
    /// from each other ([`concord_runtime::faults`]). Off by default; never for production.
    pub fault_injection: bool,
}

impl ServerConfig {
    /// A configuration for node `id` of `initial_cluster` with etcd's defaults.
    pub fn new(
        id: u64,
        data_dir: PathBuf,
        listen_client: SocketAddr,
        listen_peer: SocketAddr,
        initial_cluster: BTreeMap<u64, SocketAddr>,
    ) -> Self {
        ServerConfig {
            id,
            name: format!("node{id}"),
            data_dir,
            listen_client,
            advertise_client: format!("http://{listen_client}"),
            listen_peer,
            initial_cluster,
            join: false,
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_secs(1),
            max_request_bytes: 1_572_864,
            max_key_bytes: 32 * 1024,
            quota_bytes: DEFAULT_QUOTA_BYTES,
            max_inflight: 5000,
            snapshot_entries: 100_000,
            leader_sync_delay: DEFAULT_LEADER_SYNC_DELAY,
            client_tls: None,
            peer_tls: None,
            listen_metrics: Vec::new(),
            fault_injection: false,
        }
    }

    /// How long a client request may wait for its answer (five election timeouts and two
    /// seconds, as etcd's request timeout is).
    fn request_timeout(&self) -> Duration {
        self.election_timeout * 5 + Duration::from_secs(2)
    }

    fn raft_config(&self) -> anyhow::Result<concord_raft::Config> {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let config = concord_raft::Config {
            election_timeout_min: nanos(self.election_timeout),
            election_timeout_max: nanos(self.election_timeout) * 2,
            heartbeat_interval: nanos(self.heartbeat),
            snapshot_threshold: self.snapshot_entries.max(1),
            max_pending_requests: self.max_inflight.max(1),
            forward_proposals: true,
            // Forwarded writes fail no sooner than the client-facing timeout would.
            outcome_timeout: nanos(self.request_timeout()),
            pre_vote: true,
            check_quorum: true,
            ..concord_raft::Config::default()
        };
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("raft settings: {e}"))?;
        Ok(config)
    }
}

/// A listener of `--listen-metrics-urls`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsListener {
    /// Where it listens.
    pub address: SocketAddr,
    /// `https://`: TLS with the client port's certificate (and its client-certificate check,
    /// when on), as etcd serves it.
    pub tls: bool,
}

/// The default [`ServerConfig::leader_sync_delay`]. With the followers' syncs deciding
/// commitment, a leader that syncs as often as it can spends a sync per group of appends for
/// nothing; holding it back a millisecond lets one sync cover about a millisecond of appends
/// (`docs/benchmarks.md`).
pub const DEFAULT_LEADER_SYNC_DELAY: Duration = Duration::from_millis(1);

/// etcd's default `--quota-backend-bytes`: 2 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

/// State shared by every service of one node.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    /// The local store's size ([`crate::KvStore::size_bytes`]), sampled as it changes.
    pub(crate) store_bytes: std::sync::atomic::AtomicU64,
    pub(crate) handle: NodeHandle<DbNode>,
    pub(crate) limits: Limits,
    /// The leader's lease clock; `None` on followers.
    pub(crate) lessor: StdMutex<Lessor>,
    pub(crate) lessor_config: LessorConfig,
    /// The origin of the node's monotonic clock, for the lessor.
    pub(crate) started: Instant,
    /// Channels to other members' client URLs, for forwarding.
    channels: StdMutex<BTreeMap<String, Channel>>,
    /// How those channels do TLS, when the client port does.
    member_tls: Option<tonic::transport::ClientTlsConfig>,
    pub(crate) metrics: metrics::DbMetrics,
    pub(crate) request_timeout: Duration,
    /// Lease ids are drawn from here.
    pub(crate) rng: StdMutex<concord_core::Rng>,
}

/// Marks a request already forwarded once, so it is never forwarded again.
pub(crate) const FORWARDED: &str = "concord-forwarded";

/// Where a request should go instead of this node.
pub(crate) enum Route {
    /// Serve it here.
    Local,
    /// Forward it to the leader at this client URL.
    Leader(Channel),
}

impl Shared {
    /// Nanoseconds on this node's monotonic clock.
    pub(crate) fn now(&self) -> concord_core::Time {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The header fields besides the revision.
    pub(crate) fn header_info(&self) -> HeaderInfo {
        HeaderInfo {
            cluster_id: self.handle.cluster_id().unwrap_or(0),
            member_id: self.config.id,
            raft_term: self.handle.with_status(|status| status.term),
        }
    }

    /// Proposes `command` and waits until it is applied here: a follower's Raft forwards it
    /// to the leader (`forward_proposals`) and answers once it applied the entry itself, so a
    /// client reads its own write on the member it wrote to, as with etcd.
    pub(crate) async fn propose(
        &self,
        command: Command,
    ) -> Result<Result<Output, RaftError>, Status> {
        self.propose_at(command, true).await
    }

    /// Proposes `command` at this node only (a follower answers `NotLeader` without proposing
    /// it): for requests whose handler also changes the leader's own state (its lessor), and so
    /// must run there. Should the node lose its leadership in between, its Raft forwards the
    /// proposal after all; the handler then touches a lessor that is not primary, which
    /// is rebuilt from the replicated lease table when its node leads again.
    pub(crate) async fn propose_here(
        &self,
        command: Command,
    ) -> Result<Result<Output, RaftError>, Status> {
        self.propose_at(command, false).await
    }

    async fn propose_at(
        &self,
        command: Command,
        forward: bool,
    ) -> Result<Result<Output, RaftError>, Status> {
        if command.adds_data() {
            self.check_quota(&command).await?;
        }
        let leader = self.handle.with_status(|status| status.leader);
        match leader {
            Some(leader) if leader != self.config.id => {
                if !forward {
                    return Ok(Err(RaftError::NotLeader {
                        leader: Some(leader),
                    }));
                }
                // Cut off from the leader (fault injection), fail at once and surely: nothing
                // was proposed.
                if self.handle.blocked_peers().contains(&leader) {
                    return Err(leader_unreachable());
                }
            }
            None if !forward => return Ok(Err(RaftError::NotLeader { leader: None })),
            _ => {}
        }
        let request = concord_raft::Request::Propose(command);
        let response = self.timed(self.handle.request(request)).await?;
        Ok(match response {
            concord_raft::Response::Applied { output, .. } => {
                self.metrics.proposals_committed.inc();
                Ok(output)
            }
            concord_raft::Response::Failed(error) => {
                self.metrics.proposals_failed.inc();
                Err(error)
            }
            other => Err(RaftError::OutcomeUnknown {
                index: match other {
                    concord_raft::Response::Read { read_index, .. } => read_index,
                    _ => 0,
                },
            }),
        })
    }

    /// Refuses a write that adds data once the store is over this member's quota, raising the
    /// space alarm for the member (through the log, so every member then refuses such writes
    /// until it is cleared), as etcd does.
    async fn check_quota(&self, command: &Command) -> Result<(), Status> {
        let size = self.store_bytes.load(std::sync::atomic::Ordering::Relaxed);
        if size.saturating_add(command.data_bytes()) <= self.config.quota_bytes {
            return Ok(());
        }
        tracing::warn!(
            node = self.config.id,
            size,
            quota = self.config.quota_bytes,
            "the store is over its space quota: raising the NOSPACE alarm"
        );
        let alarm = Command::Alarm {
            active: true,
            member: self.config.id,
            alarm: crate::Alarm::NoSpace,
        };
        // As etcd, the refusal waits for the alarm to be raised (an alarm adds no data, so
        // this recursion is one level deep).
        match Box::pin(self.propose_at(alarm, true)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(node = self.config.id, %error, "raising the NOSPACE alarm failed");
            }
            Err(status) => {
                tracing::warn!(node = self.config.id, %status, "raising the NOSPACE alarm failed");
            }
        }
        Err(convert::status_of(&crate::KvError::NoSpace))
    }

    /// A linearizable read through ReadIndex (at the leader or, by asking it, at a follower).
    pub(crate) async fn read(&self, query: Query) -> Result<Result<Output, RaftError>, Status> {
        let response = self
            .timed(self.handle.request(concord_raft::Request::Read(query)))
            .await?;
        Ok(match response {
            concord_raft::Response::Read { output, .. } => Ok(output),
            concord_raft::Response::Failed(error) => Err(error),
            _ => Err(RaftError::NotLeader { leader: None }),
        })
    }

    /// A read of the local state, possibly stale; works without a leader, but not on a node
    /// removed from the cluster (its state no longer follows the cluster's).
    pub(crate) async fn local(&self, query: Query) -> Result<Output, Status> {
        let id = self.config.id;
        let (member, applied, output) = self
            .handle
            .inspect(move |node: &DbNode| {
                if !is_member(node, id) {
                    return (false, node.applied_index(), None);
                }
                let output = concord_core::StateMachine::query(node.state_machine(), &query);
                (true, node.applied_index(), Some(output))
            })
            .await
            .map_err(host_status)?;
        self.membership_status(member, applied)?;
        output.ok_or_else(|| Status::internal("a member's local read gave no answer"))
    }

    /// Runs `f` on the local store.
    pub(crate) async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&KvStore) -> T + Send + 'static,
    ) -> Result<T, Status> {
        self.handle
            .inspect(move |node: &DbNode| f(node.state_machine()))
            .await
            .map_err(host_status)
    }

    async fn timed<T>(
        &self,
        future: impl std::future::Future<Output = Result<T, HostError>>,
    ) -> Result<T, Status> {
        match tokio::time::timeout(self.request_timeout, future).await {
            Ok(result) => result.map_err(host_status),
            Err(_) => Err(Status::unavailable("etcdserver: request timed out")),
        }
    }

    /// Decides where a request that needs the leader goes, given the error a local attempt
    /// gave (or the node's current view).
    pub(crate) async fn route_to_leader<T>(
        &self,
        request: &Request<T>,
        leader: Option<u64>,
    ) -> Result<Route, Status> {
        let Some(leader) = leader else {
            self.check_member().await?;
            return Err(Status::unavailable("etcdserver: no leader"));
        };
        if leader == self.config.id {
            self.check_member().await?;
            return Ok(Route::Local);
        }
        if request.metadata().get(FORWARDED).is_some() {
            return Err(Status::unavailable(
                "etcdserver: leader changed while the request was forwarded",
            ));
        }
        // Cut off from the leader's peer port (fault injection), a member does not reach it
        // through its client port either: a partition cuts both.
        if self.handle.blocked_peers().contains(&leader) {
            return Err(leader_unreachable());
        }
        // One visit to the node task answers both questions: is this node still a member, and
        // where does the leader take client requests? A new leader publishes its client URL
        // right after its election: wait for it a little rather than fail the request.
        let id = self.config.id;
        let deadline = Instant::now() + self.config.election_timeout;
        let url = loop {
            let (member, applied, url) = self
                .handle
                .inspect(move |node: &DbNode| {
                    let url = node
                        .state_machine()
                        .members()
                        .into_iter()
                        .find(|m| m.id == leader)
                        .and_then(|m| m.client_urls.into_iter().next());
                    (is_member(node, id), node.applied_index(), url)
                })
                .await
                .map_err(host_status)?;
            self.membership_status(member, applied)?;
            if url.is_some() || Instant::now() >= deadline {
                break url;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let Some(url) = url else {
            return Err(Status::unavailable(format!(
                "etcdserver: leader {leader} has not published its client URL yet"
            )));
        };
        Ok(Route::Leader(self.channel(&url)?))
    }

    fn channel(&self, url: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(url) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| Status::internal(format!("bad client URL '{url}': {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .timeout(self.request_timeout)
            .tcp_nodelay(true);
        let endpoint = tls::with_tls(endpoint, self.member_tls.as_ref())
            .map_err(|e| Status::internal(format!("TLS to '{url}': {e}")))?;
        let channel = endpoint.connect_lazy();
        channels.insert(url.to_string(), channel.clone());
        Ok(channel)
    }

    /// Refuses service on a node removed from the cluster.
    pub(crate) async fn check_member(&self) -> Result<(), Status> {
        let id = self.config.id;
        let (member, applied) = self
            .handle
            .inspect(move |node: &DbNode| (is_member(node, id), node.applied_index()))
            .await
            .map_err(host_status)?;
        self.membership_status(member, applied)
    }

    /// [`membership_status`], unless a peer already said this node was removed (a member
    /// removed while it was down never applies its own removal).
    fn membership_status(&self, member: bool, applied: u64) -> Result<(), Status> {
        if self.handle.removed_by().is_some() {
            return Err(removed_status());
        }
        membership_status(member, applied)
    }
}

/// Whether `id` belongs to the configuration `node` is moving to. A removed node usually
/// learns only of the joint configuration `C_old,new` (it is in `C_old` only): the leader stops
/// replicating to it once it appends `C_new`, so "in `C_old`" must not count as a member.
fn is_member(node: &DbNode, id: u64) -> bool {
    let membership = node.membership();
    membership.voters.contains(&id) || membership.learners.contains(&id)
}

/// The answer of [`Shared::check_member`] for a node that is (or is not) a member.
fn membership_status(member: bool, applied: u64) -> Result<(), Status> {
    if member {
        Ok(())
    } else if applied == 0 {
        Err(Status::unavailable(
            "etcdserver: this member has not joined the cluster yet",
        ))
    } else {
        Err(removed_status())
    }
}

/// etcd's answer on a member removed from the cluster.
fn removed_status() -> Status {
    Status::failed_precondition(
        "etcdserver: the member has been permanently removed from the cluster",
    )
}

/// A forwarded request carries the marker.
pub(crate) fn forwarded<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    request
}

/// The gRPC status for a Raft error that forwarding cannot fix.
pub(crate) fn raft_status(error: &RaftError) -> Status {
    match error {
        RaftError::NotLeader { leader: None } => Status::unavailable("etcdserver: no leader"),
        RaftError::NotLeader { leader: Some(_) } => {
            Status::unavailable("etcdserver: not leader (leader changed)")
        }
        RaftError::LeaderChanged { .. } => Status::unavailable("etcdserver: leader changed"),
        RaftError::LeaderUnreachable { .. } => leader_unreachable(),
        RaftError::NotMember => removed_status(),
        RaftError::OutcomeUnknown { .. } | RaftError::ForwardedOutcomeUnknown { .. } => {
            Status::unavailable(
                "etcdserver: request timed out, possibly due to previous leader failure",
            )
        }
        RaftError::Overloaded { .. } => Status::resource_exhausted("etcdserver: too many requests"),
        RaftError::TransferInProgress => {
            Status::unavailable("etcdserver: leadership transfer in progress")
        }
        RaftError::LearnerBehind { .. } => Status::failed_precondition(
            "etcdserver: can only promote a learner member which is in sync with leader",
        ),
        RaftError::MembershipChangeInProgress | RaftError::LeaderNotReady => {
            Status::failed_precondition(format!("etcdserver: {error}"))
        }
        other => Status::failed_precondition(format!("etcdserver: {other}")),
    }
}

/// A request for the leader that cannot reach it from here.
fn leader_unreachable() -> Status {
    Status::unavailable("etcdserver: the leader is unreachable from this member")
}

/// The gRPC status for a host failure.
pub(crate) fn host_status(error: HostError) -> Status {
    match error {
        HostError::Overloaded { .. } => Status::resource_exhausted("etcdserver: too many requests"),
        HostError::Stopped { reason } => {
            Status::unavailable(format!("etcdserver: server stopped: {reason}"))
        }
        HostError::ForwardRefused { .. } => removed_status(),
        HostError::ForwardTimedOut { .. } => Status::unavailable("etcdserver: request timed out"),
        // etcd's own words for an outcome lost with the connection to the leader.
        HostError::ForwardConnectionLost { .. } => {
            Status::unavailable("etcdserver: request timed out, possibly due to connection lost")
        }
        HostError::PeerUnreachable { .. } => leader_unreachable(),
        other => Status::internal(other.to_string()),
    }
}

/// One node's health, as `concord db status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatusReport {
    /// The node.
    pub id: u64,
    /// leader, follower, candidate, pre-candidate or learner.
    pub role: String,
    /// The leader it believes in.
    pub leader: Option<u64>,
    /// Its term.
    pub term: u64,
    /// Index of its last log entry.
    pub log_length: u64,
    /// Highest index it knows committed.
    pub commit_index: u64,
    /// Highest index applied.
    pub applied_index: u64,
    /// The store's revision.
    pub revision: i64,
    /// Voters of the configuration in effect.
    pub voters: Vec<u64>,
    /// Learners of the configuration in effect.
    pub learners: Vec<u64>,
    /// The last index covered by its snapshot: its log starts after it (0: no snapshot).
    pub snapshot_index: u64,
}

/// Asks the node at `endpoint` (a client URL; `https://` with `tls`) for its status.
pub async fn fetch_status(
    endpoint: &str,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> anyhow::Result<NodeStatusReport> {
    let channel = Endpoint::from_shared(endpoint.to_string())
        .with_context(|| format!("bad endpoint '{endpoint}'"))?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(2));
    let channel = tls::with_tls(channel, tls)?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {endpoint}"))?;
    let status = NodeClient::new(channel)
        .status(NodeStatusRequest {})
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?
        .into_inner();
    Ok(NodeStatusReport {
        id: status.id,
        role: status.role,
        leader: (status.leader != 0).then_some(status.leader),
        term: status.term,
        log_length: status.log_length,
        commit_index: status.commit_index,
        applied_index: status.applied_index,
        revision: status.revision,
        voters: status.voters,
        learners: status.learners,
        snapshot_index: status.snapshot_index,
    })
}

/// A running node.
#[derive(Debug)]
pub struct Server {
    shared: Arc<SharedHandle>,
    serve: tokio::task::JoinHandle<()>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

/// Opaque wrapper so `Server` can derive Debug.
pub(crate) struct SharedHandle(pub(crate) Arc<Shared>);

impl std::fmt::Debug for SharedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("id", &self.0.config.id)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Recovers the node from its data directory, joins its peers and starts serving clients.
    pub async fn start(config: ServerConfig) -> anyhow::Result<Server> {
        let client_listener = tokio::net::TcpListener::bind(config.listen_client)
            .await
            .with_context(|| format!("cannot listen for clients on {}", config.listen_client))?;
        Server::start_with_listener(config, client_listener).await
    }

    /// [`Server::start`] on a bound client listener.
    pub async fn start_with_listener(
        config: ServerConfig,
        client_listener: tokio::net::TcpListener,
    ) -> anyhow::Result<Server> {
        anyhow::ensure!(config.id != 0, "node ids start at 1");
        let raft = config.raft_config()?;
        let members: Vec<u64> = config
            .initial_cluster
            .keys()
            .copied()
            .filter(|&id| !config.join || id != config.id)
            .collect();
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        // The cluster's id is fixed when it bootstraps (a digest of its first members) and kept
        // in the data directory, so that later members and restarts with an updated
        // `--initial-cluster` belong to the same cluster. A member joining a running cluster
        // learns it from the first peer that reaches it.
        let cluster_file = config.data_dir.join(CLUSTER_ID_FILE);
        let (cluster_id, learn_cluster_id) = match read_cluster_id(&cluster_file)? {
            Some(id) => (id, false),
            None if config.join => (0, true),
            None => {
                let id = concord_core::digest(
                    &members
                        .iter()
                        .flat_map(|id| id.to_le_bytes())
                        .collect::<Vec<u8>>(),
                );
                write_cluster_id(&cluster_file, id)?;
                (id, false)
            }
        };
        let mut host = HostConfig::new(
            config.id,
            members,
            config.listen_peer,
            config.data_dir.clone(),
            raft,
        );
        host.peers = config.initial_cluster.clone();
        host.cluster_id = cluster_id;
        host.learn_cluster_id = learn_cluster_id;
        host.seed = concord_runtime::fresh_seed();
        host.tick_interval = config.heartbeat.min(Duration::from_millis(50));
        host.max_in_flight_requests = config.max_inflight.max(1);
        host.sync_delay = config.leader_sync_delay;
        // A member removed while it was down learns it from its old peers, and stops.
        host.removed_peer = |node: &DbNode, from| node.state_machine().is_removed(from);
        if let Some(files) = &config.peer_tls {
            host.transport.tls = Some(PeerTls::new(files).context("peer TLS")?);
        }
        // Set up before the node starts: bad TLS files or a taken port stop it with a clear
        // error.
        let client_tls = config.client_tls.as_ref();
        let connections = Connections::accept(client_listener, client_tls).context("client TLS")?;
        let mut metrics_connections = Vec::with_capacity(config.listen_metrics.len());
        for listener in &config.listen_metrics {
            let tls = match (listener.tls, client_tls) {
                (false, _) => None,
                (true, Some(files)) => Some(files),
                (true, None) => anyhow::bail!(
                    "an https:// metrics URL is served with the client port's certificate: \
                     give --cert-file and --key-file"
                ),
            };
            let address = listener.address;
            let socket = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for metrics on {address}"))?;
            metrics_connections.push(Connections::accept(socket, tls).context("metrics TLS")?);
        }
        let member_tls = match &config.client_tls {
            Some(files) => Some(tls::member_client_tls(files)?),
            None => None,
        };
        let handle = concord_runtime::start::<DbNode>(host)
            .await
            .with_context(|| format!("starting node {}", config.id))?;
        let lessor_config = LessorConfig::default();
        let seed = concord_runtime::fresh_seed();
        let shared = Arc::new(Shared {
            store_bytes: std::sync::atomic::AtomicU64::new(0),
            limits: Limits {
                max_request_bytes: config.max_request_bytes,
                max_key_bytes: config.max_key_bytes,
            },
            request_timeout: config.request_timeout(),
            config,
            handle,
            lessor: StdMutex::new(Lessor::new(lessor_config)),
            lessor_config,
            started: Instant::now(),
            channels: StdMutex::new(BTreeMap::new()),
            member_tls,
            metrics: metrics::DbMetrics::default(),
            rng: StdMutex::new(concord_core::seeded_rng(seed, 0)),
        });
        let mut background = vec![
            tokio::spawn(keep_cluster_id(Arc::clone(&shared), cluster_file)),
            tokio::spawn(lease::run_lessor(Arc::clone(&shared))),
            tokio::spawn(cluster::publish_and_track_members(Arc::clone(&shared))),
            tokio::spawn(metrics::track(Arc::clone(&shared))),
        ];
        for connections in metrics_connections {
            let routes = tonic::service::Routes::from(http::router(&shared));
            background.push(connections.serve(routes));
        }
        // `Connections` turns Nagle off on every accepted connection: a response written as
        // several small frames would otherwise wait out the client's delayed acknowledgement
        // (about 40 ms).
        let serve = connections.serve(build_router(&shared));
        Ok(Server {
            shared: Arc::new(SharedHandle(shared)),
            serve,
            background,
        })
    }

    /// The node's runtime handle.
    pub fn handle(&self) -> &NodeHandle<DbNode> {
        &self.shared.0.handle
    }

    /// Waits until the node stops on its own (a fatal storage error) and says why.
    pub async fn stopped(&self) -> String {
        self.shared.0.handle.wait_stopped().await.to_string()
    }

    /// Stops serving and shuts the node down, flushing its WAL.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.serve.abort();
        for task in &self.background {
            task.abort();
        }
        self.shared
            .0
            .handle
            .shutdown()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// The file in a data directory that holds the cluster's id (decimal).
const CLUSTER_ID_FILE: &str = "cluster-id";

/// The cluster id a data directory holds, if it holds one.
fn read_cluster_id(path: &std::path::Path) -> anyhow::Result<Option<u64>> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{} does not hold a cluster id: {text:?}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the cluster id durably: a synced temporary file renamed over `path`, then the
/// directory synced.
fn write_cluster_id(path: &std::path::Path, id: u64) -> anyhow::Result<()> {
    use std::io::Write as _;
    let temp = path.with_extension("tmp");
    let mut file =
        std::fs::File::create(&temp).with_context(|| format!("creating {}", temp.display()))?;
    file.write_all(format!("{id}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("renaming to {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(())
}

/// Keeps the cluster id a joining member learns from its first peer, once it does.
async fn keep_cluster_id(shared: Arc<Shared>, path: PathBuf) {
    if path.exists() {
        return;
    }
    let id = loop {
        if let Some(id) = shared.handle.cluster_id() {
            break id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let node = shared.config.id;
    match tokio::task::spawn_blocking(move || write_cluster_id(&path, id)).await {
        Ok(Ok(())) => tracing::info!(node, cluster = id, "joined the cluster; its id is kept"),
        Ok(Err(error)) => tracing::error!(node, "keeping the cluster id failed: {error:#}"),
        Err(error) => tracing::error!(node, "keeping the cluster id failed: {error}"),
    }
}

fn build_router(shared: &Arc<Shared>) -> tonic::service::Routes {
    use crate::pb::concordpb::node_server::NodeServer;
    use crate::pb::etcdserverpb::{
        cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
        maintenance_server::MaintenanceServer, watch_server::WatchServer,
    };
    // As etcd (grpcOverheadBytes): gRPC accepts 512 KiB beyond the request limit, so a request
    // somewhat over the limit reaches the size checks and gets etcd's InvalidArgument "request
    // is too large", not the transport's OutOfRange "decoded message length too large". Go
    // clients send at most 2 MiB by default, exactly this much with the default limit.
    let max = shared.config.max_request_bytes + 512 * 1024;
    let routes = tonic::service::Routes::new(
        KvServer::new(kv::KvService(Arc::clone(shared))).max_decoding_message_size(max),
    )
    .add_service(WatchServer::new(watch::WatchService(Arc::clone(shared))))
    .add_service(LeaseServer::new(lease::LeaseService(Arc::clone(shared))))
    .add_service(ClusterServer::new(cluster::ClusterService(Arc::clone(
        shared,
    ))))
    .add_service(MaintenanceServer::new(cluster::MaintenanceService(
        Arc::clone(shared),
    )))
    .add_service(NodeServer::new(cluster::NodeService(Arc::clone(shared))))
    // The standard gRPC health service, as etcd registers it: load balancers and gRPC probes
    // ask it; the whole server ("") is SERVING while it runs.
    .add_service(tonic_health::server::health_reporter().1);
    // `/metrics`, `/health`, `/version` and the JSON gateway beside gRPC, as etcd serves them.
    let mut router = routes
        .into_axum_router()
        .merge(http::router(shared))
        .merge(gateway::router(shared));
    if shared.config.fault_injection {
        router = router.merge(http::faults_router(shared));
    }
    tonic::service::Routes::from(router)
}

/// Runs a node until Ctrl-C or SIGTERM (graceful: the WAL is flushed), or until it stops on a
/// fatal error, which is returned.
pub async fn run_until_signal(config: ServerConfig) -> anyhow::Result<()> {
    let id = config.id;
    let server = Server::start(config).await?;
    tracing::info!(node = id, "serving");
    let terminate = async {
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
        reason = server.stopped() => {
            anyhow::bail!("node {id} stopped: {reason}");
        }
    }
    tracing::info!(node = id, "shutting down");
    server.shutdown().await
}
