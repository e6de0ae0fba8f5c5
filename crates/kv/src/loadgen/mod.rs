//! A load generator that speaks the etcd v3 API, so Concord DB and etcd are measured by the
//! same client code in the same run (`concord db bench`, `scripts/bench-db`).
//!
//! Each of `clients` tasks issues one request at a time, back to back, for `duration`; requests
//! are spread over `connections` HTTP/2 connections and over every endpoint given (followers
//! forward writes to the leader, as etcd's do). Latencies go into an HDR histogram.

mod grpc;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::Mutex;
use tokio::time::Instant;
use tokio_rustls::rustls::ClientConfig;

use self::grpc::Connection;
use crate::pb::etcdserverpb::{PutRequest, PutResponse, RangeRequest, RangeResponse};

/// The operation a load run issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadOp {
    /// Puts of random keys with values of `value_size` bytes.
    Put,
    /// Linearizable single-key ranges (the default etcd read).
    LinearizableGet,
    /// Serializable (member-local) single-key ranges.
    SerializableGet,
}

impl std::str::FromStr for LoadOp {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "put" => Ok(LoadOp::Put),
            "get" | "linearizable-get" => Ok(LoadOp::LinearizableGet),
            "serializable-get" => Ok(LoadOp::SerializableGet),
            other => Err(format!(
                "unknown operation '{other}' (expected put, get or serializable-get)"
            )),
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// `http://host:port` client URLs.
    pub endpoints: Vec<String>,
    /// Concurrent clients, each with one request in flight.
    pub clients: usize,
    /// HTTP/2 connections shared by the clients.
    pub connections: usize,
    /// The operation.
    pub op: LoadOp,
    /// How long to run.
    pub duration: Duration,
    /// Value size for puts.
    pub value_size: usize,
    /// Distinct keys.
    pub keys: u64,
    /// A request that takes longer than this counts as failed (and is retried elsewhere).
    pub request_timeout: Duration,
    /// TLS to `https://` endpoints.
    pub tls: Option<Arc<ClientConfig>>,
}

/// What a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    /// The operation.
    pub op: LoadOp,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests acknowledged.
    pub ok: u64,
    /// Requests that failed or timed out.
    pub failed: u64,
    /// Wall-clock seconds measured.
    pub seconds: f64,
    /// Acknowledged requests per second.
    pub throughput: f64,
    /// Median latency in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: f64,
    /// The longest time between two consecutive acknowledgements anywhere in the run, in
    /// milliseconds: with a leader killed mid-run, the failover gap.
    pub max_ack_gap_ms: f64,
    /// Why requests failed: each distinct gRPC status (code and message) with its count.
    pub errors: BTreeMap<String, u64>,
    /// The CPU time this process (the load generator) spent per acknowledged request, in
    /// microseconds: what driving the load costs on a machine it shares with the servers.
    pub client_cpu_us_per_op: Option<f64>,
}

struct Shared {
    histogram: Histogram<u64>,
    ok: u64,
    failed: u64,
    errors: BTreeMap<String, u64>,
    last_ack: Option<Instant>,
    max_gap: Duration,
}

/// Runs one load and reports what it measured.
pub async fn run(config: &LoadConfig) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(!config.endpoints.is_empty(), "no endpoints given");
    anyhow::ensure!(config.clients > 0, "--clients must be at least 1");
    let connections = config
        .connections
        .clamp(1, config.clients)
        .max(config.endpoints.len());
    let mut channels = Vec::with_capacity(connections);
    for index in 0..connections {
        let url = &config.endpoints[index % config.endpoints.len()];
        let connection = Connection::new(url, config.tls.as_ref(), Duration::from_secs(2))?;
        channels.push(Arc::new(Channel::new(connection)));
    }
    if config.op != LoadOp::Put {
        preload(&channels[0], config).await?;
    }
    let shared = Arc::new(Mutex::new(Shared {
        histogram: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        ok: 0,
        failed: 0,
        errors: BTreeMap::new(),
        last_ack: None,
        max_gap: Duration::ZERO,
    }));
    let cpu_before = concord_runtime::process_cpu_time();
    let start = Instant::now();
    let deadline = start + config.duration;
    let mut tasks = Vec::with_capacity(config.clients);
    for client in 0..config.clients {
        let channels = channels.clone();
        let shared = Arc::clone(&shared);
        let config = config.clone();
        tasks.push(tokio::spawn(async move {
            client_loop(client, &channels, &config, deadline, &shared).await;
        }));
    }
    for task in tasks {
        task.await?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = concord_runtime::process_cpu_time().saturating_sub(cpu_before);
    let shared = shared.lock().unwrap_or_else(|e| e.into_inner());
    let quantile_ms = |q: f64| shared.histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(LoadReport {
        op: config.op,
        clients: config.clients,
        ok: shared.ok,
        failed: shared.failed,
        seconds,
        throughput: shared.ok as f64 / seconds,
        p50_ms: quantile_ms(0.5),
        p99_ms: quantile_ms(0.99),
        max_ack_gap_ms: shared.max_gap.as_secs_f64() * 1000.0,
        errors: shared.errors.clone(),
        client_cpu_us_per_op: (shared.ok > 0).then(|| cpu.as_secs_f64() * 1e6 / shared.ok as f64),
    })
}

fn key(index: u64) -> Vec<u8> {
    format!("bench/{index:08}").into_bytes()
}

/// A connection with the URIs of the methods the load calls.
struct Channel {
    connection: Connection,
    put: http::Uri,
    range: http::Uri,
}

impl Channel {
    fn new(connection: Connection) -> Channel {
        Channel {
            put: connection.method("/etcdserverpb.KV/Put"),
            range: connection.method("/etcdserverpb.KV/Range"),
            connection,
        }
    }

    async fn put(&self, request: &PutRequest) -> Result<PutResponse, tonic::Status> {
        self.connection.unary(&self.put, request).await
    }

    async fn range(&self, request: &RangeRequest) -> Result<RangeResponse, tonic::Status> {
        self.connection.unary(&self.range, request).await
    }
}

async fn preload(channel: &Channel, config: &LoadConfig) -> anyhow::Result<()> {
    let value = vec![b'v'; config.value_size];
    for index in 0..config.keys.min(1000) {
        let request = PutRequest {
            key: key(index),
            value: value.clone(),
            ..Default::default()
        };
        tokio::time::timeout(config.request_timeout, channel.put(&request))
            .await
            .map_err(|_| anyhow::anyhow!("preloading keys failed: no answer in time"))?
            .map_err(|e| anyhow::anyhow!("preloading keys failed: {}", e.message()))?;
    }
    Ok(())
}

async fn client_loop(
    client_index: usize,
    channels: &[Arc<Channel>],
    config: &LoadConfig,
    deadline: Instant,
    shared: &Mutex<Shared>,
) {
    let mut channel_index = client_index % channels.len();
    let value = vec![b'v'; config.value_size];
    // A cheap per-client sequence spreads keys without a shared generator.
    let mut sequence = (client_index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let read_keys = config.keys.clamp(1, 1000);
    while Instant::now() < deadline {
        sequence = sequence
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let channel = &channels[channel_index];
        let started = Instant::now();
        let call = async {
            match config.op {
                LoadOp::Put => {
                    let request = PutRequest {
                        key: key((sequence >> 33) % config.keys.max(1)),
                        value: value.clone(),
                        ..Default::default()
                    };
                    channel.put(&request).await.map(|_| ())
                }
                LoadOp::LinearizableGet | LoadOp::SerializableGet => {
                    let request = RangeRequest {
                        key: key((sequence >> 33) % read_keys),
                        serializable: config.op == LoadOp::SerializableGet,
                        ..Default::default()
                    };
                    channel.range(&request).await.map(|_| ())
                }
            }
        };
        let result = tokio::time::timeout(config.request_timeout, call)
            .await
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer in time")));
        let finished = Instant::now();
        let failed = {
            // Held for a few field updates, never across an await.
            let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok(()) => {
                    let micros = (finished - started).as_micros().max(1) as u64;
                    let _ = shared.histogram.record(micros);
                    shared.ok += 1;
                    if let Some(last) = shared.last_ack {
                        let gap = finished.saturating_duration_since(last);
                        shared.max_gap = shared.max_gap.max(gap);
                    }
                    shared.last_ack = Some(finished);
                    false
                }
                Err(status) => {
                    shared.failed += 1;
                    let reason = format!("{:?}: {}", status.code(), status.message());
                    *shared.errors.entry(reason).or_default() += 1;
                    true
                }
            }
        };
        if failed {
            // Try another endpoint: this one may be down or partitioned.
            channel_index = (channel_index + 1) % channels.len();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
