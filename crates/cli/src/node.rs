//! `concord node serve`: one node of a Raft, Multi-Paxos or PBFT cluster as a real process.
//!
//! The node runs on the real runtime (`concord-runtime`: framed TCP between peers, an fsync'd
//! write-ahead log) and replicates the key-value state machine of `concord-core` (integer
//! registers). Clients talk to it over HTTP/1.1 with JSON bodies:
//!
//! | request | what it does |
//! | --- | --- |
//! | `GET /status` | the node's health as the runtime publishes it: role, leader, term (ballot, view), log length, commit and applied index |
//! | `PUT /kv/{key}` (body: an integer) | a write through consensus; a Raft or Multi-Paxos follower forwards it to its leader over the peer transport; any PBFT replica's client proxy takes it |
//! | `GET /kv/{key}` | a linearizable read through the protocol (404 when the key was never written) |
//! | `POST /faults` (`{"isolate": [ids]}`) | drops all traffic to and from those peers (`[]` heals); `GET /faults` shows the set, the node's id and the members |
//!
//! Errors answer a JSON `{"error": ...}`: 400 bad input, 503 not served (no leader known,
//! overloaded, stopped, or a proposal that a leader change surely dropped), 504 outcome unknown
//! (no answer in time: a leader deposed after proposing waits that long to learn whether the
//! next leader committed it).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::{Args, Subcommand};
use concord_core::time::{format_duration, MILLISECOND};
use concord_core::{
    KvOperation, KvOutcome, KvResult, KvService, KvStateMachine, NodeId, NodeStatus, Value,
};
use concord_runtime::{HostConfig, HostError, HostedNode, NodeHandle, TimeOrigin};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::args::{id_addresses, std_duration};
use crate::Outcome;

/// Flags of `concord node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: NodeCommand,
}

/// The `concord node` subcommands.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Run one node of a Raft, Multi-Paxos or PBFT cluster (one process per node), replicating
    /// the key-value state machine, with an HTTP/JSON client API.
    Serve(ServeArgs),
}

/// Flags of `concord node serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The consensus algorithm: raft, paxos (Multi-Paxos) or pbft (at least 4 nodes).
    #[arg(long, short)]
    pub algorithm: String,
    /// This node's id: one of the ids in --peers.
    #[arg(long)]
    pub id: NodeId,
    /// Every node's peer address, this one's included: `0=127.0.0.1:7000,1=127.0.0.1:7001,...`
    /// (ids 0, 1, ..., n-1).
    #[arg(long)]
    pub peers: String,
    /// Where the write-ahead log lives (created if missing; reused on restart).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Address of the HTTP client API.
    #[arg(long)]
    pub listen_client: SocketAddr,
    /// A client request not done within this long is answered 504 (outcome unknown).
    #[arg(long, default_value = "5s")]
    pub request_timeout: String,
    /// Identifies the cluster: peers of other clusters are refused, and PBFT's message keys
    /// are derived from it. Every node of a cluster must be given the same.
    #[arg(long, default_value_t = 1)]
    pub cluster_id: u64,
    /// Threads serving this node (default: one per core). Nodes sharing one machine do better
    /// with their share of its cores each; `concord cluster up` gives each that share.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,
}

/// The protocols a node can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Raft.
    Raft,
    /// Multi-Paxos.
    Paxos,
    /// PBFT.
    Pbft,
}

impl Algorithm {
    /// Parses a name given on the command line.
    pub fn parse(name: &str) -> Result<Algorithm> {
        match name.trim().to_ascii_lowercase().as_str() {
            "raft" => Ok(Algorithm::Raft),
            "paxos" | "multi-paxos" | "multipaxos" => Ok(Algorithm::Paxos),
            "pbft" => Ok(Algorithm::Pbft),
            other => bail!("unknown algorithm '{other}': choose raft, paxos or pbft"),
        }
    }

    /// The name shown in status reports.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Raft => "raft",
            Algorithm::Paxos => "paxos",
            Algorithm::Pbft => "pbft",
        }
    }

    /// What the protocol calls its term.
    pub fn term_name(self) -> &'static str {
        match self {
            Algorithm::Raft => "term",
            Algorithm::Paxos => "ballot",
            Algorithm::Pbft => "view",
        }
    }

    /// Refuses cluster sizes the protocol cannot run with.
    pub fn check_size(self, nodes: usize) -> Result<()> {
        if nodes == 0 {
            bail!("a cluster needs at least one node");
        }
        if self == Algorithm::Pbft && nodes < 4 {
            bail!(
                "pbft needs at least 4 nodes (n >= 3f + 1 to tolerate f = 1 Byzantine fault), \
                 got {nodes}"
            );
        }
        Ok(())
    }
}

/// What `GET /status` answers: the runtime's [`NodeStatus`] plus what the cluster commands
/// need to show it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusReport {
    /// raft, paxos or pbft.
    pub algorithm: String,
    /// What `term` counts: term (Raft), ballot (Multi-Paxos) or view (PBFT).
    pub term_name: String,
    /// The node's status (role, leader, term, log length, commit and applied index).
    #[serde(flatten)]
    pub status: NodeStatus,
    /// Every member of the cluster.
    pub members: Vec<NodeId>,
    /// The peers this node is cut off from (`POST /faults`).
    pub isolated: Vec<NodeId>,
}

/// Parses `0=host:port,1=host:port,...`: ids must be 0, 1, ..., n-1, each listed once.
pub fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, SocketAddr>> {
    let peers = id_addresses("peers", text)?;
    let n = peers.len() as NodeId;
    if let Some(&id) = peers.keys().find(|&&id| id >= n) {
        bail!(
            "--peers: node ids must be 0 to {} for {n} nodes, got {id}",
            n - 1
        );
    }
    Ok(peers)
}

/// Runs `concord node …`.
pub fn run(args: &NodeArgs) -> Result<Outcome> {
    match &args.command {
        NodeCommand::Serve(serve) => run_serve(serve),
    }
}

/// What the node serves with, whatever its protocol.
struct Settings {
    algorithm: Algorithm,
    id: NodeId,
    peers: BTreeMap<NodeId, SocketAddr>,
    data_dir: PathBuf,
    request_timeout: StdDuration,
    cluster_id: u64,
}

fn run_serve(args: &ServeArgs) -> Result<Outcome> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONCORD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let algorithm = Algorithm::parse(&args.algorithm).context("--algorithm")?;
    let peers = parse_peers(&args.peers)?;
    algorithm.check_size(peers.len())?;
    if !peers.contains_key(&args.id) {
        bail!(
            "--id {} is not in --peers (ids 0 to {})",
            args.id,
            peers.len() - 1
        );
    }
    let settings = Settings {
        algorithm,
        id: args.id,
        peers,
        data_dir: args.data_dir.clone(),
        request_timeout: std_duration("request-timeout", &args.request_timeout)?,
        cluster_id: args.cluster_id,
    };
    let runtime = concord_runtime::server_runtime(args.worker_threads.map(usize::from))
        .context("starting the async runtime")?;
    let client = args.listen_client;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(client)
            .await
            .with_context(|| format!("cannot listen for clients on {client}"))?;
        match algorithm {
            Algorithm::Raft => {
                let config = concord_raft::Config {
                    election_timeout_min: 300 * MILLISECOND,
                    election_timeout_max: 600 * MILLISECOND,
                    heartbeat_interval: 50 * MILLISECOND,
                    // A deposed leader's proposal waits for its outcome as long as its client.
                    outcome_timeout: (settings.request_timeout.as_nanos() as u64).max(1),
                    ..concord_raft::Config::default()
                };
                serve::<concord_raft::RaftNode<KvStateMachine>>(settings, config, listener).await
            }
            Algorithm::Paxos => {
                let config = concord_paxos::multi::Config::default();
                serve::<concord_paxos::multi::MultiPaxos<KvStateMachine>>(
                    settings, config, listener,
                )
                .await
            }
            Algorithm::Pbft => {
                let give_up = settings.request_timeout.as_nanos() as u64;
                let config = concord_pbft::Config {
                    view_change_timeout: 1_000 * MILLISECOND,
                    max_view_change_timeout: 8_000 * MILLISECOND,
                    // A proxy stops retransmitting a request when its client stops waiting.
                    client_give_up: give_up,
                    key_seed: pbft_key_seed(settings.cluster_id),
                    ..concord_pbft::Config::default()
                };
                config
                    .validate(settings.peers.len())
                    .map_err(|e| anyhow::anyhow!("pbft: {e}"))?;
                serve::<concord_pbft::Pbft<KvStateMachine>>(settings, config, listener).await
            }
        }
    })?;
    Ok(Outcome::Success)
}

/// PBFT's message keys derive from one cluster secret; here it comes from the cluster id, so
/// every node of a cluster agrees on it (authentication between replicas, not secrecy).
fn pbft_key_seed(cluster_id: u64) -> u64 {
    cluster_id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed
}

/// A protocol the node can serve: hosted by the runtime and speaking the key-value workload.
trait ServedNode: HostedNode<Request: Clone + Sync> + KvService {}

impl<N: HostedNode<Request: Clone + Sync> + KvService> ServedNode for N {}

/// What the HTTP handlers share.
struct Served<N: ServedNode> {
    handle: NodeHandle<N>,
    algorithm: Algorithm,
    members: Vec<NodeId>,
    request_timeout: StdDuration,
}

impl<N: ServedNode> Served<N> {
    fn member_set(&self) -> BTreeSet<NodeId> {
        self.members.iter().copied().collect()
    }
}

async fn serve<N: ServedNode>(
    settings: Settings,
    node_config: N::Config,
    client: tokio::net::TcpListener,
) -> Result<()> {
    let id = settings.id;
    let listen = settings.peers[&id];
    let mut config = HostConfig::<N>::new(
        id,
        settings.peers.keys().copied().collect(),
        listen,
        settings.data_dir.clone(),
        node_config,
    );
    config.peers = settings.peers.clone();
    config.seed = concord_runtime::fresh_seed();
    config.cluster_id = settings.cluster_id;
    config.time_origin = match settings.algorithm {
        // A PBFT proxy stamps requests with its node's time, which must keep increasing
        // across restarts.
        Algorithm::Pbft => TimeOrigin::UnixEpoch,
        Algorithm::Raft | Algorithm::Paxos => TimeOrigin::HostStart,
    };
    config.transport.backoff_min = StdDuration::from_millis(10);
    config.transport.backoff_max = StdDuration::from_millis(250);
    let handle = concord_runtime::start(config)
        .await
        .with_context(|| format!("starting node {id}"))?;
    let client_address = client.local_addr().context("the client listener")?;
    tracing::info!(
        node = id,
        algorithm = settings.algorithm.name(),
        peers = %listen,
        client = %client_address,
        data_dir = %settings.data_dir.display(),
        "serving"
    );
    let served = Arc::new(Served {
        handle: handle.clone(),
        algorithm: settings.algorithm,
        members: settings.peers.keys().copied().collect(),
        request_timeout: settings.request_timeout,
    });
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut stopping_server = stopping.clone();
    let server = tokio::spawn(async move {
        axum::serve(client, router(served))
            .with_graceful_shutdown(async move {
                let _ = stopping_server.wait_for(|&stop| stop).await;
            })
            .await
    });
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let failure = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        () = terminate => None,
        reason = handle.wait_stopped() => Some(reason),
    };
    let _ = stop.send(true);
    // Requests still waiting for consensus would hold the graceful shutdown back.
    let _ = tokio::time::timeout(StdDuration::from_secs(2), server).await;
    if let Some(reason) = failure {
        bail!("node {id} stopped: {reason}");
    }
    tracing::info!(node = id, "shutting down");
    handle.shutdown().await?;
    Ok(())
}

fn router<N: ServedNode>(served: Arc<Served<N>>) -> Router {
    Router::new()
        .route("/status", get(status::<N>))
        .route("/kv/{key}", get(read::<N>).put(write::<N>))
        .route("/faults", get(faults::<N>).post(set_faults::<N>))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such endpoint: GET /status, GET or PUT /kv/{key}, GET or POST /faults",
            )
        })
        .with_state(served)
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({ "error": message.into() }))).into_response()
}

async fn status<N: ServedNode>(State(served): State<Arc<Served<N>>>) -> Response {
    let report = StatusReport {
        algorithm: served.algorithm.name().to_string(),
        term_name: served.algorithm.term_name().to_string(),
        status: served.handle.status(),
        members: served.members.clone(),
        isolated: served.handle.blocked_peers().into_iter().collect(),
    };
    Json(report).into_response()
}

async fn faults<N: ServedNode>(State(served): State<Arc<Served<N>>>) -> Response {
    Json(served.handle.isolation(served.member_set())).into_response()
}

async fn set_faults<N: ServedNode>(State(served): State<Arc<Served<N>>>, body: Bytes) -> Response {
    match served.handle.apply_faults(served.member_set(), &body) {
        Ok(isolation) => Json(isolation).into_response(),
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

/// The longest key accepted.
const MAX_KEY_BYTES: usize = 128;

/// Keys are 1 to 128 characters of `A-Z a-z 0-9 _ - . :`.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "a key has 1 to {MAX_KEY_BYTES} characters, got {}",
            key.len()
        ));
    }
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        return Err(format!(
            "bad key '{key}': '{c}' is not allowed (letters, digits, '_', '-', '.', ':')"
        ));
    }
    Ok(())
}

async fn read<N: ServedNode>(
    State(served): State<Arc<Served<N>>>,
    Path(key): Path<String>,
) -> Response {
    if let Err(message) = check_key(&key) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    let operation = KvOperation::Read { key: key.clone() };
    let (served_by, answer) = match submit(&served, &operation).await {
        Ok(done) => done,
        Err(response) => return response,
    };
    match answer {
        KvResult::Read(Some(value)) => Json(json!({
            "key": key,
            "value": value_json(&value),
            "served_by": served_by,
        }))
        .into_response(),
        KvResult::Read(None) => (
            StatusCode::NOT_FOUND,
            Json(json!({
                "key": key,
                "value": null,
                "served_by": served_by,
                "error": format!("key '{key}' was never written"),
            })),
        )
            .into_response(),
        other => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("a read answered {other:?}"),
        ),
    }
}

fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Int(v) => json!(v),
        Value::List(items) => json!(items),
    }
}

async fn write<N: ServedNode>(
    State(served): State<Arc<Served<N>>>,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(message) = check_key(&key) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    let text = String::from_utf8_lossy(&body);
    let Ok(value) = text.trim().parse::<i64>() else {
        let shown: String = text.chars().take(40).collect();
        return error(
            StatusCode::BAD_REQUEST,
            format!("the body must be an integer (e.g. 42), got '{shown}'"),
        );
    };
    let operation = KvOperation::Write {
        key: key.clone(),
        value,
    };
    match submit(&served, &operation).await {
        Ok((served_by, KvResult::Written)) => Json(json!({
            "key": key,
            "value": value,
            "served_by": served_by,
        }))
        .into_response(),
        Ok((_, other)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("a write answered {other:?}"),
        ),
        Err(response) => response,
    }
}

/// Submits `operation` to this node; a Raft or Multi-Paxos follower that knows its leader
/// forwards it there once. Returns who served it and the result, or the HTTP error.
async fn submit<N: ServedNode>(
    served: &Served<N>,
    operation: &KvOperation,
) -> Result<(NodeId, KvResult), Response> {
    let timeout = served.request_timeout;
    let me = served.handle.id();
    let attempt = async {
        let request = N::kv_request(operation);
        let response = served.handle.request(request.clone()).await?;
        match N::kv_outcome(&response) {
            KvOutcome::NotLeader {
                leader: Some(leader),
            } if leader != me && served.members.contains(&leader) => {
                let response = served.handle.forward(leader, request, timeout).await?;
                Ok::<_, HostError>((leader, N::kv_outcome(&response)))
            }
            outcome => Ok((me, outcome)),
        }
    };
    let (served_by, outcome) = match tokio::time::timeout(timeout, attempt).await {
        Err(_) => {
            return Err(error(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "not done within {}: the outcome is unknown (is a quorum reachable?)",
                    format_duration(timeout.as_nanos() as u64)
                ),
            ))
        }
        Ok(Err(e)) => {
            let code = match e {
                HostError::ForwardTimedOut { .. } | HostError::ForwardConnectionLost { .. } => {
                    StatusCode::GATEWAY_TIMEOUT
                }
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            return Err(error(code, e.to_string()));
        }
        Ok(Ok(done)) => done,
    };
    match outcome {
        KvOutcome::Ok(result) => Ok((served_by, result)),
        KvOutcome::NotLeader { leader } => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "error": match leader {
                    Some(leader) if leader != served_by => format!(
                        "node {served_by} is not the leader; try node {leader}"
                    ),
                    Some(_) => format!(
                        "node {served_by} cannot serve it now: it does not lead with a quorum \
                         (cut off from its peers?)"
                    ),
                    None => format!("node {served_by} knows no leader (election under way?)"),
                },
                "leader": leader,
            })),
        )
            .into_response()),
        KvOutcome::Rejected(reason) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("node {served_by} refused the request: {reason}"),
        )),
        KvOutcome::Unknown => Err(error(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the outcome is unknown: node {served_by} proposed the request and did not \
                 learn whether it was committed"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_need_ids_zero_to_n_minus_one() {
        let peers = parse_peers("0=127.0.0.1:7000, 1=127.0.0.1:7001,2=127.0.0.1:7002").unwrap();
        assert_eq!(peers.len(), 3);
        assert_eq!(peers[&1], "127.0.0.1:7001".parse().unwrap());
        for bad in [
            "",
            "0=127.0.0.1:7000,1",
            "x=127.0.0.1:7000",
            "0=localhost",
            "0=127.0.0.1:7000,0=127.0.0.1:7001",
            "1=127.0.0.1:7000,2=127.0.0.1:7001",
        ] {
            assert!(parse_peers(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn algorithms_and_sizes() {
        assert_eq!(Algorithm::parse("Raft").unwrap(), Algorithm::Raft);
        assert_eq!(Algorithm::parse("multi-paxos").unwrap(), Algorithm::Paxos);
        assert!(Algorithm::parse("zab").is_err());
        assert!(Algorithm::Pbft.check_size(3).is_err());
        assert!(Algorithm::Pbft.check_size(4).is_ok());
        assert!(Algorithm::Raft.check_size(1).is_ok());
        assert!(Algorithm::Raft.check_size(0).is_err());
    }

    #[test]
    fn keys_are_short_and_plain() {
        assert!(check_key("user:42.name_x-y").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("a b").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
    }
}
