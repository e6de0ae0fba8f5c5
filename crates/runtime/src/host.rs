//! The host: runs one sans-IO [`Node`] as a real process.
//!
//! One tokio task owns the node and serializes every input: peer messages, client requests,
//! timer ticks (it sleeps until `next_deadline()`, read on a monotonic clock as nanoseconds since
//! the host started, or since the UNIX epoch: [`HostConfig::time_origin`]) and persist
//! confirmations. It performs the node's effects in order:
//!
//! * `Persist` goes to the WAL thread, numbered in emission order;
//! * `Send` and `Reply` are released at once if every write emitted before them is durable, or
//!   else queued until the WAL thread confirms that write (the barrier of the `Node` contract);
//! * `Apply` needs nothing (the applied index is published from the node's status).
//!
//! The WAL thread does group commit: it takes every write waiting, appends them, syncs once,
//! folds them into its copy of the node's `Storage`, and confirms the last one. When the
//! compaction policy says so ([`CompactionPolicy::due`]) it rewrites the log as one base record
//! holding that `Storage`: a thread of its own encodes a copy of it, writes, syncs and renames
//! it into place while durable writes go on. A checkpoint write (`Node::is_checkpoint`, e.g. a
//! Raft snapshot of applied state, the size of the whole state) is not appended: it is folded
//! into the `Storage`, confirmed with its batch, and made durable by the next compaction, which
//! it starts once the log has grown in proportion to its last base. A crash before that
//! compaction is in place loses it, which the contract allows: the log still holds the writes
//! it restates, and a restart replays them.
//! A WAL failure (corruption at start, a failed write or fsync later) stops the host with the
//! error; it never retries and continues.
//!
//! Peer frames carry the node's messages, and also client requests one host forwards to another
//! ([`NodeHandle::forward`], e.g. a follower's proposal to its leader) with their answers: the
//! receiving host submits a forwarded request to its node like a local one and sends the reply
//! back over the transport.
//!
//! Log records are `Record::Base(Storage)` (first, after a compaction) or `Record::Write(Write)`;
//! on start the host replays them through `Node::apply_write` and calls `Node::restore`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use concord_core::{
    seeded_rng, Effect, Env, Input, Node, NodeId, NodeStatus, PersistToken, Rng, Role,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::clock::{Clock, Stopwatch, TimeOrigin};
use crate::codec;
use crate::faults::{Faults, Isolation};
use crate::metrics::HostMetrics;
use crate::transport::{BlockedPeers, ClusterId, Identity, Transport, TransportOptions};
use crate::wal::{Wal, WalError, WalOptions, WrittenRewrite};

/// A node the host can run: its messages, writes and storage are serializable, and everything
/// crosses threads.
pub trait HostedNode:
    Node<
        Message: Serialize + DeserializeOwned + Send + 'static,
        Request: Serialize + DeserializeOwned + Send + 'static,
        Response: Serialize + DeserializeOwned + Send + 'static,
        Write: Serialize + DeserializeOwned + Send + 'static,
        Storage: Serialize + DeserializeOwned + Send + 'static,
        Command: Send + 'static,
        Config: Send + 'static,
    > + Send
    + 'static
{
}

impl<N> HostedNode for N where
    N: Node<
            Message: Serialize + DeserializeOwned + Send + 'static,
            Request: Serialize + DeserializeOwned + Send + 'static,
            Response: Serialize + DeserializeOwned + Send + 'static,
            Write: Serialize + DeserializeOwned + Send + 'static,
            Storage: Serialize + DeserializeOwned + Send + 'static,
            Command: Send + 'static,
            Config: Send + 'static,
        > + Send
        + 'static
{
}

/// When the WAL is compacted into one base record: once it has grown to `growth_factor` times
/// its size after the last compaction, and then either a checkpoint has come since that
/// compaction or the log is past `min_bytes` (see [`CompactionPolicy::due`]).
///
/// Each compaction writes the whole state, so the growth factor is what keeps their cost in
/// proportion to the writes: a store that keeps its history (as etcd's does until compacted)
/// grows with every write, and a rewrite at every checkpoint (a Raft snapshot, every so many
/// entries) would write the whole of it again and again: quadratic in its size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Without a checkpoint, never compact a log smaller than this.
    pub min_bytes: u64,
    /// Compact only once the log is more than this many times its size after the last
    /// compaction.
    pub growth_factor: u64,
}

impl CompactionPolicy {
    /// Whether a log of `size` bytes, which had `size_after_compaction` bytes after its last
    /// compaction (or when opened), is due for one; `checkpoint` says whether a checkpoint was
    /// folded in since. A checkpoint lifts `min_bytes`, not the growth factor: a small log is
    /// compacted at its checkpoints, as often as they come, while a large one waits until it
    /// has grown in proportion to its base.
    pub fn due(&self, size: u64, size_after_compaction: u64, checkpoint: bool) -> bool {
        let grown = size > size_after_compaction.saturating_mul(self.growth_factor);
        grown && (checkpoint || size > self.min_bytes)
    }
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            min_bytes: 64 << 20,
            growth_factor: 2,
        }
    }
}

/// Everything a host needs to run node `id`.
#[derive(Debug)]
pub struct HostConfig<N: Node> {
    /// This node.
    pub id: NodeId,
    /// The cluster's initial members (passed to `Node::restore`).
    pub members: Vec<NodeId>,
    /// Addresses of the peers (this node's own entry, if present, is ignored).
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Where to listen for peers ([`start`] binds it; [`start_with_listener`] ignores it).
    pub listen: SocketAddr,
    /// The node's data directory; the WAL lives in `data_dir/wal`.
    pub data_dir: PathBuf,
    /// The protocol's configuration.
    pub node_config: N::Config,
    /// Segment and record limits of the WAL.
    pub wal: WalOptions,
    /// When to compact the WAL.
    pub compaction: CompactionPolicy,
    /// Seeds the node's random generator (with the node id as the stream). A real process
    /// should draw it afresh at every start ([`crate::fresh_seed`]): the same seed would make
    /// a restarted node draw the same incarnation number as before.
    pub seed: u64,
    /// What the node's time counts from: the host's start (the default), or the UNIX epoch for
    /// nodes whose times must keep increasing across restarts.
    pub time_origin: TimeOrigin,
    /// Peers of other clusters are refused at the handshake.
    pub cluster_id: u64,
    /// Ignore `cluster_id` and learn the cluster from the first peer that connects (a node
    /// joining a running cluster: [`crate::transport::ClusterId::learned_from_peers`]);
    /// [`NodeHandle::cluster_id`] tells it once known.
    pub learn_cluster_id: bool,
    /// The node is ticked at least this often, whatever its deadline.
    pub tick_interval: Duration,
    /// Most client requests in flight; more are refused with [`HostError::Overloaded`].
    pub max_in_flight_requests: usize,
    /// Peer transport limits.
    pub transport: TransportOptions,
    /// A test hook: when set, every WAL sync first waits for the gate to be open.
    pub sync_gate: Option<SyncGate>,
    /// How long the WAL may hold back the sync of writes the node says nothing waits for soon
    /// ([`Node::may_delay_sync`]: a Raft leader's own appends while its followers commit
    /// without it), so that the appends made meanwhile share it. Zero: never.
    pub sync_delay: Duration,
    /// Whether this node, as it stands, takes a request forwarded by peer `from`
    /// ([`NodeHandle::forward`]); a refused one fails at the sender with
    /// [`HostError::ForwardRefused`]. By default every peer is accepted.
    pub accept_forward: fn(&N, NodeId) -> bool,
    /// Whether the node knows `peer` was removed from the cluster for good. Such a peer's
    /// messages are dropped and it is told it was removed ([`NodeHandle::removed_by`]): a
    /// member removed while it was down learns it so when it comes back. By default no peer
    /// is.
    pub removed_peer: fn(&N, NodeId) -> bool,
}

impl<N: Node> HostConfig<N> {
    /// A configuration with default limits.
    pub fn new(
        id: NodeId,
        members: Vec<NodeId>,
        listen: SocketAddr,
        data_dir: PathBuf,
        node_config: N::Config,
    ) -> Self {
        HostConfig {
            id,
            members,
            peers: BTreeMap::new(),
            listen,
            data_dir,
            node_config,
            wal: WalOptions::default(),
            compaction: CompactionPolicy::default(),
            seed: 0,
            time_origin: TimeOrigin::default(),
            cluster_id: 0,
            learn_cluster_id: false,
            tick_interval: Duration::from_millis(100),
            max_in_flight_requests: 10_000,
            transport: TransportOptions::default(),
            sync_gate: None,
            sync_delay: Duration::ZERO,
            accept_forward: |_, _| true,
            removed_peer: |_, _| false,
        }
    }
}

/// A gate every WAL sync waits at while it is closed: lets tests hold writes "not yet durable".
#[derive(Clone, Debug, Default)]
pub struct SyncGate {
    state: Arc<(Mutex<bool>, Condvar)>,
}

impl SyncGate {
    /// An open gate.
    pub fn new() -> Self {
        SyncGate::default()
    }

    /// Holds every sync from now on until [`SyncGate::open`].
    pub fn close(&self) {
        *self.state.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }

    /// Lets syncs through.
    pub fn open(&self) {
        *self.state.0.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.state.1.notify_all();
    }

    fn wait(&self) {
        let (closed, condvar) = &*self.state;
        let mut closed = closed.lock().unwrap_or_else(|e| e.into_inner());
        while *closed {
            closed = condvar.wait(closed).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Why the host could not start or a request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostError {
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {reason}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The operating system's error.
        reason: String,
    },
    /// The write-ahead log could not be opened or recovered.
    #[error("cannot recover the write-ahead log: {0}")]
    Recovery(Arc<WalError>),
    /// A log record could not be decoded (the log is intact but unreadable by this build).
    #[error("write-ahead log record {index} cannot be decoded: {reason}")]
    Undecodable {
        /// The record's position in the log.
        index: usize,
        /// The decoder's error.
        reason: String,
    },
    /// Too many requests are in flight.
    #[error("overloaded: {limit} requests already in flight")]
    Overloaded {
        /// The limit.
        limit: usize,
    },
    /// A forwarded request got no answer in time: it may or may not have taken effect.
    #[error("no answer from node {to} to a forwarded request within {timeout:?}")]
    ForwardTimedOut {
        /// The node it was forwarded to.
        to: NodeId,
        /// How long the sender waited.
        timeout: Duration,
    },
    /// The request was not forwarded: this node has no connection to the node it would go to
    /// (it is down, restarting, or cut off). It took no effect.
    #[error("node {to} is unreachable: the request was not forwarded")]
    PeerUnreachable {
        /// The node it would have gone to.
        to: NodeId,
    },
    /// The connection to the node a request was forwarded to failed before its answer came:
    /// it may or may not have taken effect.
    #[error("the connection to node {to} failed before it answered a forwarded request")]
    ForwardConnectionLost {
        /// The node it was forwarded to.
        to: NodeId,
    },
    /// The node a request was forwarded to refused it (see [`HostConfig::accept_forward`]).
    #[error("node {to} refused a request forwarded by this node")]
    ForwardRefused {
        /// The node it was forwarded to.
        to: NodeId,
    },
    /// The host stopped: shut down, or a fatal error (the reason says which).
    #[error("the node is stopped: {reason}")]
    Stopped {
        /// Why.
        reason: Arc<str>,
    },
}

type InspectFn<N> = Box<dyn FnOnce(&N) + Send>;

enum Command<N: Node> {
    Request {
        request: N::Request,
        reply: oneshot::Sender<N::Response>,
        permit: OwnedSemaphorePermit,
    },
    Forward {
        to: NodeId,
        request: N::Request,
        reply: oneshot::Sender<Result<N::Response, HostError>>,
    },
    Inspect(InspectFn<N>),
    SetPeer(NodeId, SocketAddr),
    Shutdown,
}

enum WalCommand<W> {
    Write {
        sequence: u64,
        token: PersistToken,
        write: W,
        /// The node lets this write's sync wait ([`Node::may_delay_sync`]).
        may_delay: bool,
    },
}

enum WalEvent {
    /// Every write through `sequence` (the last with `token`) is durable.
    Durable { sequence: u64, token: PersistToken },
    /// The WAL failed; the host must stop.
    Fatal(String),
}

/// What one peer frame carries: a protocol message, or a client request forwarded to another
/// node ([`NodeHandle::forward`]) and its answer.
#[derive(Serialize)]
enum FrameRef<'a, M, Q, R> {
    Message(&'a M),
    Forward {
        id: u64,
        request: &'a Q,
    },
    Answer {
        id: u64,
        response: Option<&'a R>,
    },
    /// The receiver was removed from the sender's cluster.
    Removed,
}

type FrameOf<'a, N> =
    FrameRef<'a, <N as Node>::Message, <N as Node>::Request, <N as Node>::Response>;

/// The decoding side of [`FrameRef`]. `Answer` without a response: refused.
#[derive(Deserialize)]
enum Frame<M, Q, R> {
    Message(M),
    Forward { id: u64, request: Q },
    Answer { id: u64, response: Option<R> },
    Removed,
}

/// Who waits for a request's reply: a local caller, or a peer that forwarded it.
enum Waiter<R> {
    Local(oneshot::Sender<R>, OwnedSemaphorePermit),
    Peer { from: NodeId, id: u64 },
}

#[derive(Serialize)]
enum RecordRef<'a, S, W> {
    Base(&'a S),
    Write(&'a W),
}

#[derive(Deserialize)]
enum Record<S, W> {
    Base(S),
    Write(W),
}

/// A node's role, term and the leader it believes in: what changes only with elections, for
/// tasks that follow those alone ([`NodeHandle::watch_leadership`]). Its status
/// ([`NodeHandle::watch_status`]) changes with almost every step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// The node's role.
    pub role: Role,
    /// Term (Raft), ballot (Paxos) or view (PBFT).
    pub term: u64,
    /// The leader it believes in, if any.
    pub leader: Option<NodeId>,
}

impl Leadership {
    fn of(status: &NodeStatus) -> Self {
        Leadership {
            role: status.role,
            term: status.term,
            leader: status.leader,
        }
    }
}

/// The application's side of a running host. Cheap to clone.
pub struct NodeHandle<N: HostedNode> {
    id: NodeId,
    commands: mpsc::UnboundedSender<Command<N>>,
    in_flight: Arc<Semaphore>,
    in_flight_limit: usize,
    status: watch::Receiver<NodeStatus>,
    leadership: watch::Receiver<Leadership>,
    applied: watch::Receiver<u64>,
    stopped: watch::Receiver<Option<Arc<str>>>,
    removed_by: watch::Receiver<Option<NodeId>>,
    metrics: HostMetrics,
    local_addr: SocketAddr,
    blocked: BlockedPeers,
    /// Set by fault injection: the WAL thread fails its next sync.
    fail_sync: Arc<AtomicBool>,
    /// The node's clock, shared with its task (fault injection jumps it).
    clock: Clock,
    cluster_id: ClusterId,
    task: Arc<tokio::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl<N: HostedNode> Clone for NodeHandle<N> {
    fn clone(&self) -> Self {
        NodeHandle {
            id: self.id,
            commands: self.commands.clone(),
            in_flight: self.in_flight.clone(),
            in_flight_limit: self.in_flight_limit,
            status: self.status.clone(),
            leadership: self.leadership.clone(),
            applied: self.applied.clone(),
            stopped: self.stopped.clone(),
            removed_by: self.removed_by.clone(),
            metrics: self.metrics.clone(),
            local_addr: self.local_addr,
            blocked: self.blocked.clone(),
            fail_sync: self.fail_sync.clone(),
            clock: self.clock.clone(),
            cluster_id: self.cluster_id.clone(),
            task: self.task.clone(),
        }
    }
}

impl<N: HostedNode> std::fmt::Debug for NodeHandle<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("id", &self.id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl<N: HostedNode> NodeHandle<N> {
    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The address peers reach this node at.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Submits a request and waits for the node's reply. Refused at once with
    /// [`HostError::Overloaded`] when too many are in flight. Dropping the future abandons the
    /// wait, not the request.
    pub async fn request(&self, request: N::Request) -> Result<N::Response, HostError> {
        let permit = match self.in_flight.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.metrics.requests_overloaded.inc();
                return Err(HostError::Overloaded {
                    limit: self.in_flight_limit,
                });
            }
        };
        let (reply, response) = oneshot::channel();
        self.send(Command::Request {
            request,
            reply,
            permit,
        })?;
        response.await.map_err(|_| self.stopped_error())
    }

    /// Sends a request to node `to` over the peer transport (typically a proposal from a
    /// follower to its leader) and waits up to `timeout` for the reply its node gives. Cheaper
    /// than a client round trip: it shares the peers' connection and codec. If no answer comes
    /// in time (a lost frame, a crashed peer) the outcome is unknown:
    /// [`HostError::ForwardTimedOut`].
    pub async fn forward(
        &self,
        to: NodeId,
        request: N::Request,
        timeout: Duration,
    ) -> Result<N::Response, HostError> {
        let (reply, response) = oneshot::channel();
        self.send(Command::Forward { to, request, reply })?;
        match tokio::time::timeout(timeout, response).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.stopped_error()),
            Err(_) => Err(HostError::ForwardTimedOut { to, timeout }),
        }
    }

    /// Runs `f` on the node inside its task (between steps) and returns its result: local
    /// reads and status.
    pub async fn inspect<T: Send + 'static>(
        &self,
        f: impl FnOnce(&N) -> T + Send + 'static,
    ) -> Result<T, HostError> {
        let (sender, receiver) = oneshot::channel();
        self.send(Command::Inspect(Box::new(move |node: &N| {
            let _ = sender.send(f(node));
        })))?;
        receiver.await.map_err(|_| self.stopped_error())
    }

    /// The node's status as of its last step.
    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// Reads the node's status as of its last step without copying it (per-request paths).
    pub fn with_status<T>(&self, f: impl FnOnce(&NodeStatus) -> T) -> T {
        f(&self.status.borrow())
    }

    /// A receiver of the node's status, updated after every step that changes it: under load,
    /// thousands of times a second. A task that follows elections alone should watch
    /// [`NodeHandle::watch_leadership`] instead, or it wakes for every step.
    pub fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }

    /// A receiver of the node's role, term and leader, updated only when one of them changes.
    pub fn watch_leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// A receiver of the node's applied index: wakes whoever waits for new applied entries.
    pub fn watch_applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// Sets or changes a peer's address (e.g. for a node added by a membership change).
    pub fn set_peer(&self, id: NodeId, address: SocketAddr) -> Result<(), HostError> {
        self.send(Command::SetPeer(id, address))
    }

    /// Drops every frame to and from `peers` from now on (protocol messages, forwarded requests
    /// and their answers alike), in both directions, until called again; an empty set heals.
    /// A fault-injection hook: the node is cut off from those peers as by a network partition,
    /// while connections stay up.
    pub fn set_blocked_peers(&self, peers: impl IntoIterator<Item = NodeId>) {
        self.blocked.set(peers);
    }

    /// The cluster this node belongs to; `None` while a joining node has not yet been reached
    /// by a member ([`HostConfig::learn_cluster_id`]).
    pub fn cluster_id(&self) -> Option<u64> {
        self.cluster_id.get()
    }

    /// Where this node stands ([`crate::faults`]): its id, `members`, the peers it drops now.
    pub fn isolation(&self, members: BTreeSet<NodeId>) -> Isolation {
        Isolation {
            id: self.id,
            members,
            isolated: self.blocked_peers(),
            clock_ahead_ms: self.clock.ahead() / concord_core::time::MILLISECOND,
        }
    }

    /// Serves the body of a `POST /faults` ([`Faults::from_request`], checked against
    /// `members`): cuts this node off from the peers it names, with `fail_sync` makes its next
    /// WAL sync fail (so the node stops, as on a failing disk), and with `clock_jump_ms` jumps
    /// its clock ahead, saying so in the log; tells where the node stands then.
    pub fn apply_faults(
        &self,
        members: BTreeSet<NodeId>,
        body: &[u8],
    ) -> Result<Isolation, String> {
        let faults = Faults::from_request(self.id, &members, body)?;
        tracing::warn!(node = self.id, isolate = ?faults.isolate, "dropping traffic with peers (fault injection)");
        self.set_blocked_peers(faults.isolate);
        if faults.fail_sync {
            tracing::warn!(
                node = self.id,
                "the next write-ahead log sync will fail (fault injection)"
            );
        }
        self.fail_sync.store(faults.fail_sync, Ordering::SeqCst);
        if faults.clock_jump_ms > 0 {
            self.clock.jump(
                faults
                    .clock_jump_ms
                    .saturating_mul(concord_core::time::MILLISECOND),
            );
            tracing::warn!(
                node = self.id,
                by_ms = faults.clock_jump_ms,
                "the clock jumped ahead (fault injection)"
            );
        }
        Ok(self.isolation(members))
    }

    /// The peers whose traffic is dropped now ([`NodeHandle::set_blocked_peers`]).
    pub fn blocked_peers(&self) -> BTreeSet<NodeId> {
        self.blocked.get()
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &HostMetrics {
        &self.metrics
    }

    /// The peer that said this node was removed from the cluster (see
    /// [`HostConfig::removed_peer`]), if one did. The host keeps running: the application
    /// decides what a removed member still answers.
    pub fn removed_by(&self) -> Option<NodeId> {
        *self.removed_by.borrow()
    }

    /// Why the host stopped, once it has.
    pub fn stopped(&self) -> Option<Arc<str>> {
        self.stopped.borrow().clone()
    }

    /// Waits until the host stops (shutdown or fatal error) and returns why.
    pub async fn wait_stopped(&self) -> Arc<str> {
        let mut stopped = self.stopped.clone();
        loop {
            if let Some(reason) = stopped.borrow_and_update().clone() {
                return reason;
            }
            if stopped.changed().await.is_err() {
                return self.stopped().unwrap_or_else(|| Arc::from("stopped"));
            }
        }
    }

    /// Stops the host gracefully: writes already handed to the WAL are synced, peers are
    /// disconnected, the listener is closed. Returns the error if the host had stopped on one.
    pub async fn shutdown(&self) -> Result<(), HostError> {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
        match self.stopped() {
            Some(reason) if &*reason != SHUTDOWN => Err(HostError::Stopped { reason }),
            _ => Ok(()),
        }
    }

    fn send(&self, command: Command<N>) -> Result<(), HostError> {
        self.commands
            .send(command)
            .map_err(|_| self.stopped_error())
    }

    fn stopped_error(&self) -> HostError {
        HostError::Stopped {
            reason: self.stopped().unwrap_or_else(|| Arc::from("stopped")),
        }
    }
}

const SHUTDOWN: &str = "shut down";

/// What a host told by a peer that it was removed from the cluster logs
/// ([`HostConfig::removed_peer`]).
pub const REMOVED: &str = "this member has been permanently removed from the cluster";

/// How many of the items released together after a send are checked for one superseding it.
const SUPERSEDE_LOOKAHEAD: usize = 16;

/// A node step at least this long (nanoseconds) is logged as slow.
const SLOW_STEP: u64 = 50_000_000;

/// Binds `config.listen` and starts the host (see [`start_with_listener`]).
pub async fn start<N: HostedNode>(config: HostConfig<N>) -> Result<NodeHandle<N>, HostError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|error| HostError::Bind {
            address: config.listen,
            reason: error.to_string(),
        })?;
    start_with_listener(config, listener).await
}

/// Seeds an empty data directory with `storage` as the node's whole durable state (one base
/// record, synced), so that a host started on it restores from there: how a node is restored
/// from a backup. Refuses a directory whose write-ahead log already holds records.
pub fn seed_storage<N: HostedNode>(
    data_dir: &std::path::Path,
    storage: &N::Storage,
    options: WalOptions,
) -> Result<(), HostError> {
    let recovery = |error: WalError| HostError::Recovery(Arc::new(error));
    let (mut wal, records, _) = Wal::open(&data_dir.join("wal"), options).map_err(recovery)?;
    if !records.is_empty() {
        return Err(HostError::Stopped {
            reason: Arc::from(format!(
                "{} already holds a node's state; seed an empty directory",
                data_dir.display()
            )),
        });
    }
    let base = codec::encode(&RecordRef::<N::Storage, N::Write>::Base(storage)).map_err(|e| {
        HostError::Stopped {
            reason: Arc::from(format!("encoding the seeded state: {e}")),
        }
    })?;
    wal.append(&base).map_err(recovery)?;
    wal.sync().map_err(recovery)?;
    Ok(())
}

/// Starts the host on a bound listener (bind every node's listener first when ports are
/// chosen by the system): recovers the WAL, restores the node, and spawns its tasks.
pub async fn start_with_listener<N: HostedNode>(
    config: HostConfig<N>,
    listener: TcpListener,
) -> Result<NodeHandle<N>, HostError> {
    let local_addr = listener.local_addr().map_err(|error| HostError::Bind {
        address: config.listen,
        reason: error.to_string(),
    })?;
    let wal_dir = config.data_dir.join("wal");
    let options = config.wal.clone();
    let (wal, records, report) = tokio::task::spawn_blocking(move || Wal::open(&wal_dir, options))
        .await
        .map_err(|error| HostError::Stopped {
            reason: Arc::from(format!("WAL recovery task failed: {error}")),
        })?
        .map_err(|error| {
            error!(node = config.id, %error, "write-ahead log recovery failed");
            HostError::Recovery(Arc::new(error))
        })?;
    if let Some(torn) = &report.torn_tail {
        warn!(
            node = config.id,
            segment = %torn.segment.display(),
            offset = torn.offset,
            bytes = torn.bytes_dropped,
            reason = %torn.reason,
            "truncated a torn write-ahead log tail (a write interrupted by a crash)"
        );
    }
    let mut storage = N::Storage::default();
    for (index, record) in records.iter().enumerate() {
        let record: Record<N::Storage, N::Write> =
            codec::decode(record).map_err(|error| HostError::Undecodable {
                index,
                reason: error.to_string(),
            })?;
        match record {
            Record::Base(base) => storage = base,
            Record::Write(write) => N::apply_write(&mut storage, &write),
        }
    }
    info!(
        node = config.id,
        records = report.records,
        segments = report.segments,
        "recovered the write-ahead log"
    );

    let metrics = HostMetrics::default();
    metrics.wal_bytes.set(wal.total_bytes() as i64);
    metrics.wal_segments.set(wal.segment_count() as i64);
    let clock = Clock::start(config.time_origin);
    let mut rng = seeded_rng(config.seed, config.id);
    let node = N::restore(
        config.id,
        &config.members,
        &config.node_config,
        &storage,
        clock.now(),
        &mut rng,
    );
    let initial_status = node.status();
    metrics.observe_status(&initial_status);
    let (status_sender, status) = watch::channel(initial_status.clone());
    let (leadership_sender, leadership) = watch::channel(Leadership::of(&initial_status));
    let (applied_sender, applied) = watch::channel(initial_status.applied_index);
    let (stopped_sender, stopped) = watch::channel(None);
    let (removed_sender, removed_by) = watch::channel(None);

    let (wal_commands, wal_receiver) = mpsc::unbounded_channel();
    let (wal_events_sender, wal_events) = mpsc::unbounded_channel();
    let wal_worker = WalWorker::<N> {
        wal,
        storage,
        compaction: config.compaction.clone(),
        size_after_compaction: 0,
        metrics: metrics.clone(),
        gate: config.sync_gate.clone(),
        sync_delay: config.sync_delay,
        fail_sync: Arc::new(AtomicBool::new(false)),
        compacting: None,
        checkpoint_folded: false,
    };
    let fail_sync = wal_worker.fail_sync.clone();
    let wal_task =
        tokio::task::spawn_blocking(move || wal_worker.run(wal_receiver, wal_events_sender));

    let (inbound_sender, inbound) = mpsc::channel(config.transport.queue_capacity.max(1));
    let (lost_sender, lost) = mpsc::unbounded_channel();
    let cluster_id = if config.learn_cluster_id {
        ClusterId::learned_from_peers()
    } else {
        ClusterId::known(config.cluster_id)
    };
    let transport = Transport::start(
        Identity {
            id: config.id,
            cluster_id: cluster_id.clone(),
        },
        config.transport.clone(),
        listener,
        &config.peers,
        inbound_sender,
        lost_sender,
        metrics.clone(),
    );
    let blocked = transport.blocked_peers().clone();
    let (commands, command_receiver) = mpsc::unbounded_channel();
    let host = NodeTask::<N> {
        node,
        rng,
        clock: clock.clone(),
        tick_interval: config.tick_interval,
        transport,
        wal_commands: Some(wal_commands),
        delays_syncs: !config.sync_delay.is_zero(),
        wal_task: Some(wal_task),
        emitted: 0,
        barrier: 0,
        durable: 0,
        held: VecDeque::new(),
        next_request: 0,
        pending: BTreeMap::new(),
        forwards: BTreeMap::new(),
        next_forward: 0,
        accept_forward: config.accept_forward,
        removed_peer: config.removed_peer,
        effects: Vec::new(),
        status_sender,
        leadership_sender,
        applied_sender,
        stopped_sender,
        removed_sender,
        metrics: metrics.clone(),
    };
    let task = tokio::spawn(host.run(command_receiver, inbound, wal_events, lost));
    let limit = config.max_in_flight_requests.max(1);
    Ok(NodeHandle {
        id: config.id,
        commands,
        in_flight: Arc::new(Semaphore::new(limit)),
        in_flight_limit: limit,
        status,
        leadership,
        applied,
        stopped,
        removed_by,
        metrics,
        local_addr,
        blocked,
        fail_sync,
        clock,
        cluster_id,
        task: Arc::new(tokio::sync::Mutex::new(Some(task))),
    })
}

/// Where the answer to a forwarded request goes.
type ForwardReply<R> = oneshot::Sender<Result<R, HostError>>;

/// A `Send` or `Reply` waiting for the write emitted before it.
enum Held<N: Node> {
    Send { to: NodeId, message: N::Message },
    Reply { id: u64, response: N::Response },
}

/// The task that owns the node.
struct NodeTask<N: HostedNode> {
    node: N,
    rng: Rng,
    clock: Clock,
    tick_interval: Duration,
    transport: Transport,
    wal_commands: Option<mpsc::UnboundedSender<WalCommand<N::Write>>>,
    /// Whether the WAL may hold a sync back ([`HostConfig::sync_delay`] is not zero): only then
    /// is the node asked about each write ([`Node::may_delay_sync`]).
    delays_syncs: bool,
    wal_task: Option<JoinHandle<()>>,
    /// Persist effects emitted so far (the sequence number of the last).
    emitted: u64,
    /// The sequence number of the last barrier write (`Node::is_barrier`): later sends and
    /// replies wait until it is durable.
    barrier: u64,
    /// The sequence number of the last durable write.
    durable: u64,
    /// Sends and replies behind a barrier, with the sequence number they wait for, in order.
    held: VecDeque<(u64, Held<N>)>,
    next_request: u64,
    pending: BTreeMap<u64, Waiter<N::Response>>,
    /// Requests this node forwarded, by forward id, with the node they went to, until answered
    /// or abandoned (or the connection to that node fails).
    forwards: BTreeMap<u64, (NodeId, ForwardReply<N::Response>)>,
    next_forward: u64,
    accept_forward: fn(&N, NodeId) -> bool,
    removed_peer: fn(&N, NodeId) -> bool,
    effects: Vec<concord_core::EffectOf<N>>,
    status_sender: watch::Sender<NodeStatus>,
    leadership_sender: watch::Sender<Leadership>,
    applied_sender: watch::Sender<u64>,
    stopped_sender: watch::Sender<Option<Arc<str>>>,
    removed_sender: watch::Sender<Option<NodeId>>,
    metrics: HostMetrics,
}

impl<N: HostedNode> NodeTask<N> {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command<N>>,
        mut inbound: mpsc::Receiver<(NodeId, Bytes)>,
        mut wal_events: mpsc::UnboundedReceiver<WalEvent>,
        mut lost: mpsc::UnboundedReceiver<NodeId>,
    ) {
        // The last tick came at once, for a deadline already due.
        let mut ticked_at_once = false;
        let reason: Arc<str> = loop {
            let wake = self.next_wake();
            // A deadline already due (a node holding sends back until the queued inputs are
            // in, `next_deadline` = now) is met once no input waits, after one yield to the
            // scheduler (below), not at the timer wheel's next millisecond: a timer rounds its
            // deadline up to one. Not twice in a row, though: a node whose deadline a tick
            // leaves due waits for the timer.
            let due = !ticked_at_once && wake <= tokio::time::Instant::now();
            ticked_at_once = false;
            tokio::select! {
                biased;
                event = wal_events.recv() => match event {
                    Some(WalEvent::Durable { sequence, token }) => self.on_durable(sequence, token),
                    Some(WalEvent::Fatal(reason)) => {
                        error!(node = self.node.id(), "stopping: {reason}");
                        break Arc::from(reason);
                    }
                    None => break Arc::from("the write-ahead log thread ended unexpectedly"),
                },
                command = commands.recv() => match command {
                    Some(Command::Request { request, reply, permit }) => {
                        let id = self.next_request;
                        self.next_request += 1;
                        self.pending.insert(id, Waiter::Local(reply, permit));
                        self.step(Input::Request { id, request });
                    }
                    Some(Command::Forward { to, request, reply }) => {
                        // Fail at once rather than after the caller's timeout: with the
                        // leader down, its client retries elsewhere while the rest elect.
                        if !self.transport.is_connected(to) {
                            let _ = reply.send(Err(HostError::PeerUnreachable { to }));
                            continue;
                        }
                        let id = self.next_forward;
                        self.next_forward += 1;
                        let frame = FrameOf::<N>::Forward { id, request: &request };
                        if self.send_frame(to, &frame) {
                            self.forwards.insert(id, (to, reply));
                        }
                    }
                    Some(Command::Inspect(f)) => f(&self.node),
                    Some(Command::SetPeer(id, address)) => self.transport.set_peer(id, address),
                    Some(Command::Shutdown) | None => break Arc::from(SHUTDOWN),
                },
                Some((from, frame)) = inbound.recv() => self.on_frame(from, &frame),
                Some(peer) = lost.recv() => {
                    self.on_connection_lost(peer);
                    self.step(Input::PeerLost { peer });
                }
                () = async {
                    if due {
                        // Once every task woken meanwhile has run: a burst of client requests
                        // reaches the node whole, though each woke it on its own (tokio polls a
                        // task another one woke next, before the rest of its queue).
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep_until(wake).await;
                    }
                } => {
                    ticked_at_once = due;
                    // Forwards whose caller gave up waiting are forgotten.
                    self.forwards.retain(|_, (_, reply)| !reply.is_closed());
                    self.step(Input::Tick);
                }
            }
        };
        self.stop(reason, wal_events).await;
    }

    /// When to tick next: the node's deadline, but at least every tick interval.
    fn next_wake(&self) -> tokio::time::Instant {
        let now = self.clock.now();
        let interval = self.tick_interval.as_nanos() as u64;
        let deadline = self
            .node
            .next_deadline()
            .map_or(now + interval, |d| d.min(now + interval));
        self.clock.instant_at(deadline.max(now))
    }

    fn step(&mut self, input: Input<N::Message, N::Request>) {
        let mut effects = std::mem::take(&mut self.effects);
        let now = self.clock.now();
        let mut env = Env {
            now,
            rng: &mut self.rng,
        };
        self.node.step(&mut env, input, &mut effects);
        // Every input waits while a step runs: a long one (a snapshot of a large state) shows
        // up as a latency spike, and is worth a warning.
        let took = self.clock.now().saturating_sub(now);
        if took >= SLOW_STEP {
            warn!(
                node = self.node.id(),
                millis = took / 1_000_000,
                effects = effects.len(),
                "a step of the node took long; requests waited meanwhile"
            );
        }
        // Published first, so that whoever gets a reply sees a status at least as new.
        self.publish_status();
        for effect in effects.drain(..) {
            self.perform(effect);
        }
        self.effects = effects;
    }

    fn perform(&mut self, effect: concord_core::EffectOf<N>) {
        let blocked = self.barrier > self.durable;
        match effect {
            Effect::Persist { token, write } => {
                self.emitted += 1;
                if N::is_barrier(&write) {
                    self.barrier = self.emitted;
                }
                if let Some(wal) = &self.wal_commands {
                    let may_delay = self.delays_syncs && self.node.may_delay_sync(&write);
                    let _ = wal.send(WalCommand::Write {
                        sequence: self.emitted,
                        token,
                        write,
                        may_delay,
                    });
                }
            }
            Effect::Send { to, message } if blocked => {
                self.held
                    .push_back((self.barrier, Held::Send { to, message }));
            }
            Effect::Reply { id, response } if blocked => {
                self.held
                    .push_back((self.barrier, Held::Reply { id, response }));
            }
            Effect::Send { to, message } => self.transmit(to, &message),
            Effect::Reply { id, response } => self.reply(id, response),
            Effect::Apply { .. } => {}
        }
    }

    fn on_frame(&mut self, from: NodeId, frame: &[u8]) {
        let frame = match codec::decode::<Frame<N::Message, N::Request, N::Response>>(frame) {
            Ok(frame) => frame,
            Err(error) => {
                warn!(node = self.node.id(), peer = from, %error, "dropping an undecodable frame");
                self.metrics.dropped(from);
                return;
            }
        };
        match frame {
            Frame::Message(_) if (self.removed_peer)(&self.node, from) => {
                warn!(
                    node = self.node.id(),
                    peer = from,
                    "dropping a message from a removed member, and telling it so"
                );
                self.send_frame(from, &FrameOf::<N>::Removed);
            }
            Frame::Message(message) => self.step(Input::Message { from, message }),
            Frame::Forward { id, request } => {
                if (self.accept_forward)(&self.node, from) {
                    let local = self.next_request;
                    self.next_request += 1;
                    self.pending.insert(local, Waiter::Peer { from, id });
                    self.step(Input::Request { id: local, request });
                } else {
                    warn!(
                        node = self.node.id(),
                        peer = from,
                        "refusing a forwarded request"
                    );
                    let answer = FrameOf::<N>::Answer { id, response: None };
                    self.send_frame(from, &answer);
                }
            }
            Frame::Answer { id, response } => {
                if let Some((_, reply)) = self.forwards.remove(&id) {
                    let _ = reply.send(response.ok_or(HostError::ForwardRefused { to: from }));
                }
            }
            Frame::Removed => {
                if self.removed_sender.borrow().is_none() {
                    warn!(
                        node = self.node.id(),
                        peer = from,
                        "{REMOVED} (the peer says so)"
                    );
                    self.removed_sender.send_replace(Some(from));
                }
            }
        }
    }

    /// The connection to `peer` failed: requests forwarded to it will get no answer on it.
    fn on_connection_lost(&mut self, peer: NodeId) {
        let lost: Vec<u64> = self
            .forwards
            .iter()
            .filter(|(_, (to, _))| *to == peer)
            .map(|(&id, _)| id)
            .collect();
        for id in lost {
            if let Some((to, reply)) = self.forwards.remove(&id) {
                let _ = reply.send(Err(HostError::ForwardConnectionLost { to }));
            }
        }
    }

    fn transmit(&self, to: NodeId, message: &N::Message) {
        self.send_frame(to, &FrameOf::<N>::Message(message));
    }

    /// Encodes and queues one frame; false when it cannot be encoded (it is dropped).
    fn send_frame(&self, to: NodeId, frame: &FrameOf<'_, N>) -> bool {
        match codec::encode(frame) {
            Ok(bytes) => {
                self.transport.send(to, Bytes::from(bytes));
                true
            }
            Err(error) => {
                warn!(node = self.node.id(), peer = to, %error, "cannot encode a frame; dropped");
                self.metrics.dropped(to);
                false
            }
        }
    }

    fn reply(&mut self, id: u64, response: N::Response) {
        match self.pending.remove(&id) {
            Some(Waiter::Local(reply, _permit)) => {
                let _ = reply.send(response);
            }
            Some(Waiter::Peer { from, id }) => {
                let answer = FrameOf::<N>::Answer {
                    id,
                    response: Some(&response),
                };
                self.send_frame(from, &answer);
            }
            None => {}
        }
    }

    /// Writes through `sequence` are durable: release what waited for them, then confirm. A
    /// send that a later one released with it supersedes (`Node::supersedes`: a follower's
    /// acknowledgements of appends that became durable in one sync) is dropped; only the next
    /// [`SUPERSEDE_LOOKAHEAD`] released items are looked at, so a long release stays linear.
    fn on_durable(&mut self, sequence: u64, token: PersistToken) {
        debug_assert!(sequence > self.durable && sequence <= self.emitted);
        self.durable = sequence;
        while self
            .held
            .front()
            .is_some_and(|(barrier, _)| *barrier <= sequence)
        {
            match self.held.pop_front() {
                Some((_, Held::Send { to, message })) => {
                    let superseded = self
                        .held
                        .iter()
                        .take_while(|(barrier, _)| *barrier <= sequence)
                        .take(SUPERSEDE_LOOKAHEAD)
                        .any(|(_, later)| match later {
                            Held::Send {
                                to: peer,
                                message: later,
                            } => *peer == to && N::supersedes(&message, later),
                            Held::Reply { .. } => false,
                        });
                    if !superseded {
                        self.transmit(to, &message);
                    }
                }
                Some((_, Held::Reply { id, response })) => self.reply(id, response),
                None => break,
            }
        }
        self.step(Input::Persisted { token });
    }

    fn publish_status(&mut self) {
        let status = self.node.status();
        // The channel keeps the last status published: compared there, and moved in, not
        // copied (a leader's status holds a list of its peers).
        if status != *self.status_sender.borrow() {
            let leadership = Leadership::of(&status);
            if leadership != *self.leadership_sender.borrow() {
                info!(
                    node = status.id,
                    role = ?status.role,
                    term = status.term,
                    leader = ?status.leader,
                    "role, term or leader changed"
                );
                self.leadership_sender.send_replace(leadership);
            }
            self.metrics.observe_status(&status);
            self.applied_sender.send_if_modified(|applied| {
                std::mem::replace(applied, status.applied_index) != status.applied_index
            });
            self.status_sender.send_replace(status);
        }
    }

    async fn stop(mut self, reason: Arc<str>, mut wal_events: mpsc::UnboundedReceiver<WalEvent>) {
        // Closing the channel lets the WAL thread sync what it has and end.
        self.wal_commands = None;
        if let Some(task) = self.wal_task.take() {
            let _ = task.await;
        }
        let mut reason = reason;
        while let Ok(event) = wal_events.try_recv() {
            if let WalEvent::Fatal(fatal) = event {
                if &*reason == SHUTDOWN {
                    error!(node = self.node.id(), "stopping: {fatal}");
                    reason = Arc::from(fatal);
                }
            }
        }
        self.transport.shutdown().await;
        let mut status = NodeStatus::down(self.node.id());
        status.term = self.status_sender.borrow().term;
        self.leadership_sender.send_replace(Leadership::of(&status));
        self.status_sender.send_replace(status);
        info!(node = self.node.id(), "host stopped: {reason}");
        let _ = self.stopped_sender.send(Some(reason));
        // Dropping `pending` fails every waiting request with `Stopped`.
    }
}

/// The WAL thread: group commit, confirmations, compaction.
struct WalWorker<N: HostedNode> {
    wal: Wal,
    /// What every confirmed write adds up to (the base record of the next compaction).
    storage: N::Storage,
    compaction: CompactionPolicy,
    size_after_compaction: u64,
    metrics: HostMetrics,
    gate: Option<SyncGate>,
    /// [`HostConfig::sync_delay`].
    sync_delay: Duration,
    /// Fault injection ([`NodeHandle::apply_faults`]): fail the next sync.
    fail_sync: Arc<AtomicBool>,
    /// The compaction whose base is being written on a thread of its own, if any.
    compacting: Option<Compacting>,
    /// A checkpoint write was folded into `storage` without being appended since the last
    /// compaction: the next one makes it durable.
    checkpoint_folded: bool,
}

/// A compaction under way: its thread writes the base segment while durable writes go on.
struct Compacting {
    thread: std::thread::JoinHandle<Result<WrittenRewrite, WalError>>,
    started: Stopwatch,
    size_before: u64,
}

/// Most writes made durable by one fsync.
const MAX_BATCH_WRITES: usize = 4096;

/// Moves the writes waiting in `commands` into `batch`, up to [`MAX_BATCH_WRITES`].
fn drain<W>(commands: &mut mpsc::UnboundedReceiver<WalCommand<W>>, batch: &mut Vec<WalCommand<W>>) {
    while batch.len() < MAX_BATCH_WRITES {
        match commands.try_recv() {
            Ok(command) => batch.push(command),
            Err(_) => break,
        }
    }
}

impl<N: HostedNode> WalWorker<N> {
    fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<WalCommand<N::Write>>,
        events: mpsc::UnboundedSender<WalEvent>,
    ) {
        self.size_after_compaction = self.wal.total_bytes();
        let mut batch = Vec::new();
        while let Some(first) = commands.blocking_recv() {
            batch.push(first);
            drain(&mut commands, &mut batch);
            // Writes nothing waits for soon: one sleep, then whatever came meanwhile shares
            // the sync. (A sleep, not a wait for each new write: that would wake this thread
            // once per append.)
            if !self.sync_delay.is_zero()
                && batch
                    .iter()
                    .all(|WalCommand::Write { may_delay, .. }| *may_delay)
            {
                std::thread::sleep(self.sync_delay);
                drain(&mut commands, &mut batch);
            }
            match self.commit(&mut batch) {
                Ok(Some((sequence, token))) => {
                    let _ = events.send(WalEvent::Durable { sequence, token });
                }
                Ok(None) => {}
                Err(error) => {
                    let _ = events.send(WalEvent::Fatal(format!(
                        "write-ahead log failure, the node must stop: {error}"
                    )));
                    return;
                }
            }
            if let Err(error) = self.maybe_compact() {
                let _ = events.send(WalEvent::Fatal(format!(
                    "write-ahead log compaction failed, the node must stop: {error}"
                )));
                return;
            }
        }
        // Shutting down: a base being written is finished (or abandoned, on failure) before
        // the log is dropped, so no thread touches the directory once the host is gone.
        if let Some(compacting) = self.compacting.take() {
            if let Err(error) = self.finish_compaction(compacting) {
                warn!(%error, "write-ahead log compaction failed while shutting down");
            }
        }
    }

    /// Appends and syncs `batch`; returns the last write's sequence and token.
    fn commit(
        &mut self,
        batch: &mut Vec<WalCommand<N::Write>>,
    ) -> Result<Option<(u64, PersistToken)>, String> {
        let mut last = None;
        for WalCommand::Write {
            sequence, token, ..
        } in batch.iter()
        {
            last = Some((*sequence, *token));
        }
        for WalCommand::Write { write, .. } in batch.iter() {
            if N::is_checkpoint(write) {
                self.checkpoint_folded = true;
                continue;
            }
            let bytes = codec::encode(&RecordRef::<N::Storage, N::Write>::Write(write))
                .map_err(|e| e.to_string())?;
            self.wal.append(&bytes).map_err(|e| e.to_string())?;
        }
        if let Some(gate) = &self.gate {
            gate.wait();
        }
        if self.fail_sync.swap(false, Ordering::SeqCst) {
            return Err(
                "syncing the write-ahead log failed (fault injection: a failing disk)".into(),
            );
        }
        let stopwatch = Stopwatch::start();
        self.wal.sync().map_err(|e| e.to_string())?;
        self.metrics
            .fsync_seconds
            .observe(stopwatch.elapsed_seconds());
        self.metrics
            .persist_batch_writes
            .observe(batch.len() as f64);
        for WalCommand::Write { write, .. } in batch.drain(..) {
            N::apply_write(&mut self.storage, &write);
        }
        self.metrics.wal_bytes.set(self.wal.total_bytes() as i64);
        self.metrics
            .wal_segments
            .set(self.wal.segment_count() as i64);
        Ok(last)
    }

    /// Finishes a compaction whose base is written, or starts one once the policy says it is
    /// due ([`CompactionPolicy::due`]). The base (the `Storage` every
    /// confirmed write adds up to) is copied here, and encoded, written, synced and renamed
    /// into place on a thread of its own, so that durable writes wait only for the copy (whose
    /// large parts, such as a snapshot's bytes, are shared).
    fn maybe_compact(&mut self) -> Result<(), WalError> {
        if let Some(compacting) = self.compacting.take() {
            if !compacting.thread.is_finished() {
                self.compacting = Some(compacting);
                return Ok(());
            }
            self.finish_compaction(compacting)?;
        }
        let size = self.wal.total_bytes();
        if !self
            .compaction
            .due(size, self.size_after_compaction, self.checkpoint_folded)
        {
            return Ok(());
        }
        self.checkpoint_folded = false;
        let started = Stopwatch::start();
        let storage = self.storage.clone();
        let copied = started.elapsed_seconds();
        if copied >= 0.05 {
            warn!(
                seconds = copied,
                "copying the write-ahead log's base record held durable writes back"
            );
        }
        let rewrite = self.wal.begin_rewrite()?;
        let thread = std::thread::Builder::new()
            .name("wal-compaction".into())
            .spawn(move || {
                // Encoded into the file as it goes: never a second copy of the whole state.
                let written = rewrite.write_streamed(|out| {
                    codec::encode_to(out, &RecordRef::<N::Storage, N::Write>::Base(&storage))
                        .map_err(|e| {
                            std::io::Error::other(format!("encoding the base record: {e}"))
                        })
                });
                drop(storage);
                written
            })
            .map_err(|source| WalError::Io {
                context: "starting the compaction thread".into(),
                source,
            })?;
        self.compacting = Some(Compacting {
            thread,
            started,
            size_before: size,
        });
        Ok(())
    }

    /// Waits for the base to be in place and deletes the segments it replaced.
    fn finish_compaction(&mut self, compacting: Compacting) -> Result<(), WalError> {
        let written = compacting.thread.join().unwrap_or_else(|_| {
            Err(WalError::Io {
                context: "writing the base segment".into(),
                source: std::io::Error::other("the compaction thread panicked"),
            })
        })?;
        self.wal.finish_rewrite(written)?;
        self.size_after_compaction = self.wal.total_bytes();
        info!(
            before = compacting.size_before,
            after = self.size_after_compaction,
            seconds = compacting.started.elapsed_seconds(),
            "compacted the write-ahead log"
        );
        self.metrics.wal_compactions.inc();
        self.metrics.wal_bytes.set(self.wal.total_bytes() as i64);
        self.metrics
            .wal_segments
            .set(self.wal.segment_count() as i64);
        Ok(())
    }
}
