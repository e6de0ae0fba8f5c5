//! `concord db …`: run Concord DB nodes, a local cluster for newcomers, its status, and the
//! etcd-API load generator.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration as StdDuration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use concord_kv::loadgen::{LoadConfig, LoadOp, LoadReport};
use concord_kv::server::tls::ClientTlsConfig;
use concord_kv::server::{MetricsListener, NodeStatusReport, ServerConfig};
use concord_runtime::TlsFiles;

use crate::args::{id_addresses, std_duration};
use crate::children::{worker_share, Children};
use crate::cluster::{partition_nodes, Split};
use crate::Outcome;

/// Flags of `concord db`.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: DbCommand,
}

/// The `concord db` subcommands.
// Parsed once at start: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Start a local cluster: one `concord db serve` process per node, data under one folder.
    Up(UpArgs),
    /// Run one node (for real deployments: one per machine).
    Serve(ServeArgs),
    /// Show each node's health: role, leader, term, log length, commit and applied index.
    Status(StatusArgs),
    /// Drive endpoints that speak the etcd v3 API (Concord DB or etcd) with a load.
    Bench(BenchArgs),
    /// Split the nodes into groups that cannot talk to each other (`--groups 1/2,3`), or heal
    /// (`--heal`): for tests of what the cluster does under a partition. The nodes must run
    /// with `--fault-injection`.
    Partition(PartitionArgs),
    /// Run a fresh local cluster under a checked workload while a seeded nemesis kills,
    /// partitions, pauses, fails the fsync of, and replaces nodes; then say whether an acknowledged write was lost,
    /// whether watches saw every revision once and in order, and whether the history is
    /// linearizable (Jepsen's method, on real processes).
    Nemesis(crate::db_nemesis::NemesisArgs),
    /// Seed a new node's data directory from a backup (`etcdctl snapshot save FILE` against a
    /// running Concord DB or etcd node); restore every node of the new cluster from the same
    /// file.
    Restore(RestoreArgs),
}

/// Flags of `concord db restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file: a snapshot of Concord DB or of etcd (a bbolt file, with or without
    /// its trailing SHA-256).
    pub backup: PathBuf,
    /// This node's id in the new cluster.
    #[arg(long)]
    pub id: u64,
    /// The data directory to create (it must not hold a node's state yet).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The new cluster: `1=10.0.0.1:2380,2=10.0.0.2:2380,3=10.0.0.3:2380` (peer addresses), as
    /// `concord db serve --initial-cluster` will be given.
    #[arg(long)]
    pub initial_cluster: String,
}

/// Flags of `concord db up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// The folder holding every node's data and log.
    #[arg(long, default_value = "concord-data")]
    pub dir: PathBuf,
    /// Node i serves clients on 127.0.0.1:(client-port + 10·(i−1)).
    #[arg(long, default_value_t = 2379)]
    pub client_port: u16,
    /// Node i talks to peers on 127.0.0.1:(peer-port + 10·(i−1)).
    #[arg(long, default_value_t = 2380)]
    pub peer_port: u16,
    /// Start the nodes with `--fault-injection`, so that `concord db partition` can split
    /// them: to watch what a partition does.
    #[arg(long)]
    pub fault_injection: bool,
}

/// Flags of `concord db serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// This node's id (a positive integer, unique in the cluster).
    #[arg(long)]
    pub id: u64,
    /// A human-readable name (defaults to node<id>).
    #[arg(long)]
    pub name: Option<String>,
    /// Where the write-ahead log and snapshots live.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Address for clients (etcd v3 gRPC and /metrics).
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub listen_client: SocketAddr,
    /// Client URL other members and clients should use (defaults to http://<listen-client>).
    #[arg(long)]
    pub advertise_client: Option<String>,
    /// Address for peers (Raft traffic).
    #[arg(long, default_value = "127.0.0.1:2380")]
    pub listen_peer: SocketAddr,
    /// The initial cluster: `1=10.0.0.1:2380,2=10.0.0.2:2380,3=10.0.0.3:2380` (peer addresses).
    /// A node joining a running cluster (after `member add`) lists the members it was told.
    #[arg(long)]
    pub initial_cluster: String,
    /// Join a running cluster as the member `member add` created, instead of bootstrapping.
    #[arg(long)]
    pub join: bool,
    /// Raft heartbeat interval.
    #[arg(long, default_value = "100ms")]
    pub heartbeat: String,
    /// Raft election timeout (the lower bound; elections randomize up to twice it).
    #[arg(long, default_value = "1s")]
    pub election_timeout: String,
    /// The largest request accepted, in bytes (etcd's default).
    #[arg(long, default_value_t = 1_572_864)]
    pub max_request_bytes: usize,
    /// The largest key accepted, in bytes.
    #[arg(long, default_value_t = 32 * 1024)]
    pub max_key_bytes: usize,
    /// The most bytes the key space with its history may take before the member raises the
    /// NOSPACE alarm and the cluster refuses writes that add data (etcd's flag; 0: the
    /// default, 2 GiB). Compact, then `etcdctl alarm disarm`, to write again.
    #[arg(long, default_value_t = 0)]
    pub quota_backend_bytes: u64,
    /// Requests waiting for consensus before new ones are refused.
    #[arg(long, default_value_t = 5000)]
    pub max_inflight: usize,
    /// Take a snapshot every this many applied entries (etcd's --snapshot-count default); a
    /// snapshot compacts the write-ahead log once it has doubled since its last compaction.
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_entries: u64,
    /// How long a leader may hold back the sync of its own log appends while its followers
    /// commit them without it and several entries await commitment, so that one sync covers
    /// more of them (0ms: never). Its copy only speeds a commit when a follower is slow; with
    /// a follower down, or a single write in flight, it syncs at once.
    #[arg(long, default_value = "1ms")]
    pub leader_sync_delay: String,
    /// Extra listeners for /metrics, /health and /version (etcd's flag), e.g.
    /// http://127.0.0.1:2381: for scrapers and liveness probes that hold no client
    /// certificate; an https:// one serves TLS with --cert-file and --key-file.
    #[arg(long, value_delimiter = ',')]
    pub listen_metrics_urls: Vec<String>,
    /// TLS on the client port: this node's certificate (PEM). Clients then use https://.
    #[arg(long, requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// The key of --cert-file (PEM).
    #[arg(long, requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// The CA (PEM) that signs client certificates, and the other members' (they reach each
    /// other's client port when they forward to the leader).
    #[arg(long, requires = "cert_file")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Accept only clients with a certificate signed by --trusted-ca-file.
    #[arg(long, requires = "trusted_ca_file")]
    pub client_cert_auth: bool,
    /// TLS between members: this node's peer certificate (PEM; it must name the --listen-peer
    /// IP address, at which the others dial it).
    #[arg(long, requires_all = ["peer_key_file", "peer_trusted_ca_file"])]
    pub peer_cert_file: Option<PathBuf>,
    /// The key of --peer-cert-file (PEM).
    #[arg(long, requires = "peer_cert_file")]
    pub peer_key_file: Option<PathBuf>,
    /// The CA (PEM) that signs every member's peer certificate.
    #[arg(long, requires = "peer_cert_file")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Accept only peers presenting a certificate signed by --peer-trusted-ca-file.
    #[arg(long, requires = "peer_cert_file")]
    pub peer_client_cert_auth: bool,
    /// Serve `GET` and `POST /faults` on the client port, so that `concord db partition` can
    /// cut members off from each other and `concord db nemesis` can fail a sync. For tests of
    /// partitions and failing disks; never in production.
    #[arg(long)]
    pub fault_injection: bool,
    /// Threads serving this member (default: one per core). Members sharing one machine do
    /// better with their share of its cores each; `concord db up` gives each that share.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,
}

/// TLS flags of a client of the etcd API (etcdctl's names).
#[derive(Debug, Default, Args)]
pub struct ClientTlsArgs {
    /// The CA (PEM) that signed the servers' certificates (for https:// endpoints).
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// A client certificate (PEM), for servers that require one.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// The key of --cert (PEM).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// Whether TLS is asked for: a flag is given or an endpoint is https://.
    fn wanted(&self, endpoints: &[String]) -> bool {
        self.cacert.is_some()
            || self.cert.is_some()
            || endpoints.iter().any(|e| e.starts_with("https://"))
    }

    /// The TLS settings, when [`ClientTlsArgs::wanted`].
    fn config(&self, endpoints: &[String]) -> Result<Option<ClientTlsConfig>> {
        self.build(endpoints, concord_kv::server::tls::client_tls)
    }

    /// The same, for the load generator.
    fn load_config(
        &self,
        endpoints: &[String],
    ) -> Result<Option<std::sync::Arc<concord_kv::server::tls::LoadTlsConfig>>> {
        self.build(endpoints, concord_kv::server::tls::load_tls)
    }

    /// `make` of the CA, certificate and key files, when [`ClientTlsArgs::wanted`].
    fn build<T>(
        &self,
        endpoints: &[String],
        make: impl FnOnce(Option<&Path>, Option<&Path>, Option<&Path>) -> Result<T>,
    ) -> Result<Option<T>> {
        if !self.wanted(endpoints) {
            return Ok(None);
        }
        make(
            self.cacert.as_deref(),
            self.cert.as_deref(),
            self.key.as_deref(),
        )
        .map(Some)
    }
}

/// The client URLs of the cluster `concord db up` starts with its default ports.
const LOCAL_ENDPOINTS: &str = "http://127.0.0.1:2379,http://127.0.0.1:2389,http://127.0.0.1:2399";

/// Flags of `concord db status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Client URLs of the nodes to ask.
    #[arg(long, value_delimiter = ',', default_value = LOCAL_ENDPOINTS)]
    pub endpoints: Vec<String>,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
    /// TLS to the endpoints.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// Flags of `concord db partition`.
#[derive(Debug, Args)]
pub struct PartitionArgs {
    /// Client URLs of every member (plain `http://`: fault injection is for test clusters).
    #[arg(long, value_delimiter = ',', default_value = LOCAL_ENDPOINTS)]
    pub endpoints: Vec<String>,
    /// The split, or healing it.
    #[command(flatten)]
    pub split: Split,
}

/// Flags of `concord db bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Client URLs to drive (any server speaking the etcd v3 API).
    #[arg(long, value_delimiter = ',', default_value = LOCAL_ENDPOINTS)]
    pub endpoints: Vec<String>,
    /// put, get (linearizable) or serializable-get.
    #[arg(long, default_value = "put")]
    pub op: String,
    /// Concurrent clients; several values run one after another (e.g. 1,16,64,256).
    #[arg(long, value_delimiter = ',', default_value = "16")]
    pub clients: Vec<usize>,
    /// gRPC connections shared by the clients.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Threads the load generator runs on; 1 runs every client on one thread, which spends
    /// the least CPU per request (no wake-ups across threads), so the servers get the rest.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// How long each run lasts.
    #[arg(long, default_value = "10s")]
    pub duration: String,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Distinct keys written.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// A request slower than this fails and is retried at another endpoint.
    #[arg(long, default_value = "1s")]
    pub request_timeout: String,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
    /// TLS to the endpoints.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// Runs `concord db …`.
pub fn run(args: &DbArgs) -> Result<Outcome> {
    match &args.command {
        DbCommand::Up(up) => run_up(up),
        DbCommand::Serve(serve) => run_serve(serve),
        DbCommand::Status(status) => runtime()?.block_on(run_status(status)),
        DbCommand::Bench(bench) => client_runtime(bench.threads)?.block_on(run_bench(bench)),
        DbCommand::Nemesis(nemesis) => crate::db_nemesis::run(nemesis),
        DbCommand::Partition(partition) => {
            runtime()?.block_on(partition_nodes(&partition.endpoints, &partition.split))
        }
        DbCommand::Restore(restore) => run_restore(restore),
    }
}

fn run_restore(args: &RestoreArgs) -> Result<Outcome> {
    let initial_cluster = parse_cluster(&args.initial_cluster)?;
    let bytes = std::fs::read(&args.backup)
        .with_context(|| format!("reading {}", args.backup.display()))?;
    let restored =
        concord_kv::server::backup::restore(&bytes, &args.data_dir, args.id, &initial_cluster)
            .with_context(|| format!("restoring {}", args.backup.display()))?;
    println!(
        "restored {} keys at revision {} into {} for node {}; start it with `concord db serve --id {} --data-dir {} --initial-cluster {}`",
        restored.keys,
        restored.revision,
        args.data_dir.display(),
        args.id,
        args.id,
        args.data_dir.display(),
        args.initial_cluster
    );
    Ok(Outcome::Success)
}

/// A client's runtime (the load generator, the nemesis, `concord cluster`): one thread, or a
/// pool of `threads` workers.
pub(crate) fn client_runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    concord_runtime::server_runtime(None).context("starting the async runtime")
}

/// Parses `1=host:port,2=host:port`: ids start at 1, each listed once.
fn parse_cluster(text: &str) -> Result<BTreeMap<u64, SocketAddr>> {
    let members = id_addresses("initial-cluster", text)?;
    if members.contains_key(&0) {
        bail!("--initial-cluster: node ids start at 1");
    }
    Ok(members)
}

fn run_serve(args: &ServeArgs) -> Result<Outcome> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONCORD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    if args.id == 0 {
        bail!("--id must be a positive integer");
    }
    let initial_cluster = parse_cluster(&args.initial_cluster)?;
    if !args.join && !initial_cluster.contains_key(&args.id) {
        bail!(
            "--initial-cluster does not list this node ({}); pass --join to join a running cluster",
            args.id
        );
    }
    let config = ServerConfig {
        id: args.id,
        name: args
            .name
            .clone()
            .unwrap_or_else(|| format!("node{}", args.id)),
        data_dir: args.data_dir.clone(),
        listen_client: args.listen_client,
        advertise_client: args.advertise_client.clone().unwrap_or_else(|| {
            let scheme = if args.cert_file.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}", args.listen_client)
        }),
        listen_peer: args.listen_peer,
        initial_cluster,
        listen_metrics: metrics_listeners(&args.listen_metrics_urls)?,
        join: args.join,
        heartbeat: std_duration("heartbeat", &args.heartbeat)?,
        election_timeout: std_duration("election-timeout", &args.election_timeout)?,
        max_request_bytes: args.max_request_bytes,
        max_key_bytes: args.max_key_bytes,
        quota_bytes: match args.quota_backend_bytes {
            0 => concord_kv::server::DEFAULT_QUOTA_BYTES,
            bytes => bytes,
        },
        max_inflight: args.max_inflight,
        snapshot_entries: args.snapshot_entries,
        leader_sync_delay: std_duration("leader-sync-delay", &args.leader_sync_delay)?,
        client_tls: args.cert_file.clone().map(|cert| TlsFiles {
            cert,
            key: args.key_file.clone().unwrap_or_default(),
            trusted_ca: args.trusted_ca_file.clone(),
            client_cert_auth: args.client_cert_auth,
        }),
        peer_tls: args.peer_cert_file.clone().map(|cert| TlsFiles {
            cert,
            key: args.peer_key_file.clone().unwrap_or_default(),
            trusted_ca: args.peer_trusted_ca_file.clone(),
            client_cert_auth: args.peer_client_cert_auth,
        }),
        fault_injection: args.fault_injection,
    };
    concord_runtime::server_runtime(args.worker_threads.map(usize::from))
        .context("starting the async runtime")?
        .block_on(concord_kv::server::run_until_signal(config))?;
    Ok(Outcome::Success)
}

/// The listeners of `--listen-metrics-urls` (`http://ip:port` or `https://ip:port` each).
fn metrics_listeners(urls: &[String]) -> Result<Vec<MetricsListener>> {
    urls.iter()
        .map(|url| {
            let (address, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
                (Some(address), _) => (address, false),
                (_, Some(address)) => (address, true),
                _ => bail!("--listen-metrics-urls: '{url}' is not an http:// or https:// URL"),
            };
            let address = address.trim_end_matches('/').parse().with_context(|| {
                format!("--listen-metrics-urls: '{url}' is not http(s)://ip:port")
            })?;
            Ok(MetricsListener { address, tls })
        })
        .collect()
}

/// A cluster of `concord db serve` processes on this machine, data and logs under one folder
/// (`concord db up`, `concord db nemesis`): node i serves clients on 127.0.0.1:(client port +
/// 10·(i−1)) and peers on 127.0.0.1:(peer port + 10·(i−1)).
pub(crate) struct LocalCluster {
    /// The node processes.
    pub(crate) children: Children,
    /// Client URLs, node 1 first.
    pub(crate) endpoints: Vec<String>,
    dir: PathBuf,
    exe: PathBuf,
    /// `--listen-client` and `--listen-peer` of each node, node 1 first.
    ports: Vec<(u16, u16)>,
    /// The member each node runs: node i starts as member i, and a node that replaced its
    /// member ([`LocalCluster::replace`]) runs the new one, which joined the running cluster.
    members: Vec<(u64, bool)>,
    /// Flags every node gets besides its own.
    extra: Vec<String>,
}

impl LocalCluster {
    /// Starts `nodes` nodes with `extra` flags each.
    pub(crate) fn start(
        nodes: u64,
        dir: &std::path::Path,
        (client_port, peer_port): (u16, u16),
        extra: Vec<String>,
    ) -> Result<LocalCluster> {
        if nodes == 0 || nodes > 9 {
            bail!("--nodes must be between 1 and 9");
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut ports = Vec::new();
        for index in 1..=nodes {
            let offset = u16::try_from(10 * (index - 1)).context("too many nodes")?;
            let client = client_port
                .checked_add(offset)
                .context("--client-port too high for this many nodes")?;
            let peer = peer_port
                .checked_add(offset)
                .context("--peer-port too high for this many nodes")?;
            ports.push((client, peer));
        }
        let mut cluster = LocalCluster {
            children: Children(Vec::new()),
            endpoints: ports
                .iter()
                .map(|(client, _)| format!("http://127.0.0.1:{client}"))
                .collect(),
            dir: dir.to_path_buf(),
            exe: std::env::current_exe().context("finding the concord binary")?,
            members: (1..=nodes).map(|id| (id, false)).collect(),
            ports,
            extra,
        };
        for index in 1..=nodes {
            cluster.spawn(index)?;
        }
        Ok(cluster)
    }

    /// Starts (or restarts) node `index` from its data directory, with the members as they are
    /// now as its `--initial-cluster`.
    pub(crate) fn spawn(&mut self, index: u64) -> Result<()> {
        let (client, peer) = self.ports[(index - 1) as usize];
        let (member, joined) = self.members[(index - 1) as usize];
        let initial_cluster = self
            .members
            .iter()
            .zip(&self.ports)
            .map(|((member, _), (_, peer))| format!("{member}=127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut command = Command::new(&self.exe);
        command
            .args(["db", "serve", "--id", &member.to_string()])
            .arg("--data-dir")
            .arg(self.data_dir(index))
            .args(["--listen-client", &format!("127.0.0.1:{client}")])
            .args(["--listen-peer", &format!("127.0.0.1:{peer}")])
            .args(["--initial-cluster", &initial_cluster])
            // The nodes share this machine's cores.
            .args([
                "--worker-threads",
                &worker_share(self.ports.len() as u64).to_string(),
            ])
            .args(&self.extra);
        if joined {
            command.arg("--join");
        }
        let log = self.dir.join(format!("node{index}.log"));
        self.children.spawn(index, &mut command, &log)
    }

    fn data_dir(&self, index: u64) -> PathBuf {
        self.dir.join(format!("node{index}"))
    }

    /// The member node `index` runs now.
    pub(crate) fn member(&self, index: u64) -> u64 {
        self.members[(index - 1) as usize].0
    }

    /// The peer URL of node `index`.
    pub(crate) fn peer_url(&self, index: u64) -> String {
        format!("http://127.0.0.1:{}", self.ports[(index - 1) as usize].1)
    }

    /// Starts node `index`, stopped and removed from the cluster, afresh as `member` (added to
    /// the cluster already): an empty data directory, joining the running cluster.
    pub(crate) fn replace(&mut self, index: u64, member: u64) -> Result<()> {
        let data_dir = self.data_dir(index);
        if data_dir.exists() {
            std::fs::remove_dir_all(&data_dir)
                .with_context(|| format!("removing {}", data_dir.display()))?;
        }
        self.members[(index - 1) as usize] = (member, true);
        self.spawn(index)
    }

    /// Waits until a node reports itself leader, or fails after `timeout` (or at once when a
    /// node exits on its own).
    pub(crate) fn wait_for_leader(
        &mut self,
        rt: &tokio::runtime::Runtime,
        timeout: StdDuration,
    ) -> Result<()> {
        let polls = timeout.as_millis() / 100;
        for _ in 0..polls.max(1) {
            if let Some(reports) = self.children.exited()? {
                bail!("{reports}");
            }
            let reports = rt.block_on(collect_status(&self.endpoints, None));
            if reports
                .iter()
                .any(|r| r.as_ref().is_ok_and(|s| s.role == "leader"))
            {
                return Ok(());
            }
            std::thread::sleep(StdDuration::from_millis(100));
        }
        bail!(
            "no leader was elected within {timeout:?}; see the logs under {}",
            self.dir.display()
        )
    }
}

fn run_up(args: &UpArgs) -> Result<Outcome> {
    let extra = if args.fault_injection {
        vec!["--fault-injection".to_string()]
    } else {
        Vec::new()
    };
    let ports = (args.client_port, args.peer_port);
    let mut cluster = LocalCluster::start(args.nodes, &args.dir, ports, extra)?;
    let endpoints = cluster.endpoints.clone();
    outln!(
        "started {} nodes; data and logs under {}",
        args.nodes,
        args.dir.display()
    );
    let rt = runtime()?;
    let status = StatusArgs {
        endpoints: endpoints.clone(),
        json: false,
        tls: ClientTlsArgs::default(),
    };
    // Wait for a leader, then show the cluster as `concord db status` does.
    cluster.wait_for_leader(&rt, StdDuration::from_secs(10))?;
    rt.block_on(run_status(&status))?;
    outln!();
    outln!(
        "try:  ETCDCTL_API=3 etcdctl --endpoints {} put greeting hello",
        endpoints.join(",")
    );
    outln!(
        "      concord db status --endpoints {}",
        endpoints.join(",")
    );
    if args.fault_injection {
        outln!(
            "      concord db partition --endpoints {} --groups 1/2,3   (then --heal)",
            endpoints.join(",")
        );
    }
    outln!(
        "Ctrl-C stops the cluster (data stays in {}).",
        args.dir.display()
    );
    cluster.children.wait_for_stop(&rt)?;
    outln!("stopping");
    Ok(Outcome::Success)
}

async fn collect_status(
    endpoints: &[String],
    tls: Option<&ClientTlsConfig>,
) -> Vec<Result<NodeStatusReport>> {
    let mut reports = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        reports.push(concord_kv::server::fetch_status(endpoint, tls).await);
    }
    reports
}

async fn run_status(args: &StatusArgs) -> Result<Outcome> {
    let tls = args.tls.config(&args.endpoints)?;
    let reports = collect_status(&args.endpoints, tls.as_ref()).await;
    if args.json {
        let rows: Vec<serde_json::Value> = args
            .endpoints
            .iter()
            .zip(&reports)
            .map(|(endpoint, report)| match report {
                Ok(status) => serde_json::json!({"endpoint": endpoint, "status": status}),
                Err(error) => {
                    serde_json::json!({"endpoint": endpoint, "error": format!("{error:#}")})
                }
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        outln!(
            "{:<24} {:>4} {:<14} {:>6} {:>6} {:>10} {:>8} {:>8} {:>9}",
            "ENDPOINT",
            "ID",
            "ROLE",
            "LEADER",
            "TERM",
            "LOG LENGTH",
            "COMMIT",
            "APPLIED",
            "REVISION"
        );
        for (endpoint, report) in args.endpoints.iter().zip(&reports) {
            match report {
                Ok(s) => outln!(
                    "{:<24} {:>4} {:<14} {:>6} {:>6} {:>10} {:>8} {:>8} {:>9}",
                    endpoint,
                    s.id,
                    s.role,
                    s.leader.map_or("-".to_string(), |l| l.to_string()),
                    s.term,
                    s.log_length,
                    s.commit_index,
                    s.applied_index,
                    s.revision
                ),
                Err(error) => outln!("{endpoint:<24} unreachable: {error:#}"),
            }
        }
    }
    let reachable = reports.iter().filter(|r| r.is_ok()).count();
    let leaders = reports
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|s| s.role == "leader"))
        .count();
    if reachable == 0 {
        bail!("no endpoint answered");
    }
    Ok(if leaders == 0 {
        Outcome::Violation
    } else {
        Outcome::Success
    })
}

async fn run_bench(args: &BenchArgs) -> Result<Outcome> {
    let op: LoadOp = args.op.parse().map_err(anyhow::Error::msg)?;
    let duration = std_duration("duration", &args.duration)?;
    let request_timeout = std_duration("request-timeout", &args.request_timeout)?;
    let tls = args.tls.load_config(&args.endpoints)?;
    if !args.json {
        outln!(
            "{:<18} {:>8} {:>10} {:>8} {:>12} {:>9} {:>9} {:>11}",
            "OP",
            "CLIENTS",
            "OK",
            "FAILED",
            "OPS/S",
            "P50 MS",
            "P99 MS",
            "MAX GAP MS"
        );
    }
    for &clients in &args.clients {
        let config = LoadConfig {
            endpoints: args.endpoints.clone(),
            clients,
            connections: args.connections,
            op,
            duration,
            value_size: args.value_size,
            keys: args.keys,
            request_timeout,
            tls: tls.clone(),
        };
        let report = concord_kv::loadgen::run(&config).await?;
        print_bench(&report, args.json)?;
    }
    Ok(Outcome::Success)
}

fn print_bench(report: &LoadReport, json: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string(report)?);
    } else {
        outln!(
            "{:<18} {:>8} {:>10} {:>8} {:>12.0} {:>9.2} {:>9.2} {:>11.1}",
            serde_json::to_value(report.op)?
                .as_str()
                .unwrap_or_default(),
            report.clients,
            report.ok,
            report.failed,
            report.throughput,
            report.p50_ms,
            report.p99_ms,
            report.max_ack_gap_ms
        );
        for (reason, count) in &report.errors {
            outln!("  failed {count}×: {reason}");
        }
    }
    Ok(())
}
