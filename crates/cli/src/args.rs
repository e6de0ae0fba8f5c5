//! Command-line flags, and their translation into validated settings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use concord_core::time::parse_duration;
use concord_core::{Duration, NodeId};
use concord_sim::runner::SimOptions;
use concord_sim::workload::OperationMix;
use concord_sim::NemesisPlan;

/// Concord: consensus protocols in a deterministic simulator — partitions, crashes, message
/// loss — and as real processes, and checkers for what clients saw.
#[derive(Debug, Parser)]
#[command(name = "concord", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A guided tour: a 5-node Raft (or Multi-Paxos) cluster, a 2|3 partition, its effects,
    /// heal, convergence.
    Demo(DemoArgs),
    /// Run one seeded simulation and report health, partition effects and the history's verdict.
    Sim(SimArgs),
    /// Re-run one seed with a step-by-step trace (the command failures print).
    Replay(SimArgs),
    /// Run many seeds with faults drawn from each seed; report every violation.
    Sweep(SweepArgs),
    /// Check a recorded history: linearizable, sequentially consistent, session guarantees,
    /// causally consistent, or transactional anomalies (--txn).
    Check(CheckArgs),
    /// Concord DB: a replicated key-value database that etcd clients can talk to.
    Db(crate::db::DbArgs),
    /// One node of a Raft, Multi-Paxos or PBFT cluster as a real process, with an HTTP/JSON
    /// key-value API.
    Node(crate::node::NodeArgs),
    /// A local cluster of `concord node serve` processes: start it, show its health, partition
    /// it, read and write keys.
    Cluster(crate::cluster::ClusterArgs),
    /// Distributed transactions (2PC, 3PC, sagas) in the simulator under faults, with the
    /// atomicity and saga checkers' verdict.
    Txn(crate::txn::TxnArgs),
}

/// Flags of `concord demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The consensus algorithm: raft, or paxos (Multi-Paxos).
    #[arg(long, short, default_value = "raft")]
    pub algorithm: String,
    /// The seed (the whole tour is a function of it).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Flags shared by `sim`, `replay` and `sweep`.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// The consensus algorithm: raft, paxos (Multi-Paxos) or pbft (Byzantine fault tolerant).
    #[arg(long, short, default_value = "raft")]
    pub algorithm: String,
    /// Cluster size.
    #[arg(long, short, default_value_t = 5)]
    pub nodes: usize,
    /// Simulated duration, e.g. 30s, 500ms, 2m.
    #[arg(long, default_value = "10s")]
    pub duration: String,
    /// Client operations to invoke.
    #[arg(long, default_value_t = 200)]
    pub ops: u64,
    /// Concurrent client processes.
    #[arg(long, default_value_t = 3)]
    pub clients: usize,
    /// Keys the clients touch.
    #[arg(long)]
    pub keys: Option<usize>,
    /// Operation weights, e.g. read=4,write=3,cas=2,append=1.
    #[arg(long)]
    pub mix: Option<String>,
    /// How long a client waits for a reply before recording an unknown outcome.
    #[arg(long)]
    pub request_timeout: Option<String>,
    /// Faults drawn from the seed: all, none, or a list such as partition,crash,loss.
    #[arg(long, default_value = "all")]
    pub faults: String,
    /// A nemesis plan file (TOML or JSON); replaces the faults drawn from the seed.
    #[arg(long)]
    pub nemesis: Option<PathBuf>,
    /// Isolate these nodes (comma-separated ids) for the middle half of the run and observe.
    #[arg(long, value_delimiter = ',')]
    pub partition: Option<Vec<NodeId>>,
    /// Raft and Multi-Paxos: take a snapshot every this many applied entries, so that
    /// compaction, snapshot transfer and restarts from a snapshot happen under the faults
    /// (default: the protocol's, 10 000 and 1 000).
    #[arg(long)]
    pub snapshot_every: Option<u64>,
    /// Raft: followers forward the proposals they get to the leader and answer their clients
    /// themselves, instead of redirecting them to the leader.
    #[arg(long)]
    pub forward_proposals: bool,
}

/// Flags of `concord sim` and `concord replay`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Shared run settings.
    #[command(flatten)]
    pub run: RunArgs,
    /// The seed.
    #[arg(long, short, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Write the step-by-step trace to this file.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Write the client history (JSON lines) to this file.
    #[arg(long)]
    pub history: Option<PathBuf>,
}

/// Flags of `concord sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Shared run settings.
    #[command(flatten)]
    pub run: RunArgs,
    /// How many seeds.
    #[arg(long, default_value_t = 100)]
    pub seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Also check every run's history for linearizability.
    #[arg(long)]
    pub check: bool,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `concord check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The history file.
    pub file: PathBuf,
    /// Its format: jsonl (Concord), edn (Jepsen operation maps), jepsen-log (Jepsen console
    /// lines); by default guessed from the first line.
    #[arg(long)]
    pub format: Option<String>,
    /// The consistency model to decide: linearizable (real-time order, per key), sequential
    /// (each process's order, the whole history as one object), session (the four session
    /// guarantees of causal consistency; register and string-kv histories with unique writes),
    /// causal (causal consistency by the bad patterns of Bouajjani et al.; the same histories),
    /// causal-convergence (causal consistency with one arbitration order of concurrent writes)
    /// or eventual (FILE holds replicas' final states, which must all be equal).
    #[arg(long, default_value = "linearizable")]
    pub consistency: String,
    /// The model: register (read/write/cas/append, Concord and Jepsen's cas-register),
    /// string-kv (get/put/append of strings, etcd's key-value tests), set (add/read),
    /// queue (enqueue/dequeue) or counter (add/read).
    #[arg(long, default_value = "register")]
    pub model: String,
    /// Check a transactional history instead, Elle-style: list-append (transactions of
    /// ["append", k, v] and ["r", k, [..]]) or rw-register (["w", k, v] and ["r", k, v]).
    /// Reports anomalies (G0, G1a, G1b, G1c, G-single, G2-item, lost update, ...) and the
    /// isolation levels they rule out; --consistency and --model do not apply.
    #[arg(long, value_name = "WORKLOAD")]
    pub txn: Option<String>,
    /// Give up (exit 2, unknown) after this long.
    #[arg(long, default_value = "60s")]
    pub budget: String,
    /// Draw the outcome into this file (an HTML page with SVG timelines): a linearizable
    /// history with the order found, a violation's failing key where the search got stuck, or
    /// a sequential consistency violation.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Parses a duration flag, naming the flag on error.
pub fn duration(flag: &str, text: &str) -> Result<Duration> {
    parse_duration(text).map_err(|message| anyhow::anyhow!("--{flag}: {message}"))
}

/// Parses a duration flag (`5s`, `500ms`) for the runtime's timers, naming the flag on error.
pub fn std_duration(flag: &str, text: &str) -> Result<std::time::Duration> {
    let nanos = parse_duration(text).map_err(|e| anyhow::anyhow!("--{flag} '{text}': {e}"))?;
    Ok(std::time::Duration::from_nanos(nanos))
}

/// Parses a node list flag, `id=host:port,id=host:port,...` (an `http://` before an address
/// is allowed): at least one node, each id once. Which ids are valid is the caller's rule.
pub fn id_addresses(flag: &str, text: &str) -> Result<BTreeMap<NodeId, SocketAddr>> {
    let mut nodes = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((id, address)) = part.split_once('=') else {
            bail!("--{flag}: '{part}' is not id=host:port");
        };
        let id: NodeId = id
            .trim()
            .parse()
            .with_context(|| format!("--{flag}: '{}' is not a node id", id.trim()))?;
        let address = address.trim().trim_start_matches("http://");
        let address: SocketAddr = address
            .parse()
            .with_context(|| format!("--{flag}: '{address}' is not an ip:port address"))?;
        if nodes.insert(id, address).is_some() {
            bail!("--{flag}: node {id} is listed twice");
        }
    }
    if nodes.is_empty() {
        bail!("--{flag} lists no nodes");
    }
    Ok(nodes)
}

impl RunArgs {
    /// The validated simulator options for `seed`.
    pub fn options(&self, seed: u64) -> Result<SimOptions> {
        let defaults = SimOptions::default();
        let nemesis = match &self.nemesis {
            None => None,
            Some(path) => Some(
                NemesisPlan::load(path).with_context(|| format!("--nemesis {}", path.display()))?,
            ),
        };
        let options = SimOptions {
            algorithm: self.algorithm.clone(),
            nodes: self.nodes,
            seed,
            duration: duration("duration", &self.duration)?,
            ops: self.ops,
            clients: self.clients,
            keys: self.keys.unwrap_or(defaults.keys),
            mix: match &self.mix {
                None => defaults.mix.clone(),
                Some(text) => parse_mix(text)?,
            },
            request_timeout: match &self.request_timeout {
                None => defaults.request_timeout,
                Some(text) => duration("request-timeout", text)?,
            },
            faults: self
                .faults
                .parse()
                .map_err(|e| anyhow::anyhow!("--faults: {e}"))?,
            nemesis,
            nemesis_source: self.nemesis.as_ref().map(|p| p.display().to_string()),
            partition: self.partition.clone(),
            snapshot_every: self.snapshot_every,
            forward_proposals: self.forward_proposals,
            ..defaults
        };
        options.validate()?;
        Ok(options)
    }
}

/// Reads `read=4,write=3,cas=2,append=1` (missing names weigh 0).
fn parse_mix(text: &str) -> Result<OperationMix> {
    let mut mix = OperationMix {
        read: 0,
        write: 0,
        cas: 0,
        append: 0,
    };
    for part in text.split(',') {
        let Some((name, weight)) = part.split_once('=') else {
            bail!("--mix: expected name=weight, got '{part}'");
        };
        let weight: u32 = weight
            .trim()
            .parse()
            .with_context(|| format!("--mix: bad weight '{weight}'"))?;
        match name.trim() {
            "read" => mix.read = weight,
            "write" => mix.write = weight,
            "cas" => mix.cas = weight,
            "append" => mix.append = weight,
            other => bail!("--mix: unknown operation '{other}' (read, write, cas, append)"),
        }
    }
    if mix.read + mix.write + mix.cas + mix.append == 0 {
        bail!("--mix: at least one weight must be positive");
    }
    Ok(mix)
}
