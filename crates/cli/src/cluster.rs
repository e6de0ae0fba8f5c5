//! `concord cluster …`: a local cluster of `concord node serve` processes (Raft, Multi-Paxos or
//! PBFT), its health, partitions between its nodes, and one-key reads and writes, all through
//! each node's HTTP client API (see `node.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration as StdDuration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use concord_core::{NodeId, NodeStatus, Role};
use concord_runtime::faults;
use concord_sim::toolkit::ClusterHealth;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value as Json};

use crate::children::{worker_share, Children};
use crate::node::{check_key, Algorithm, StatusReport};
use crate::{render, Outcome};

/// Flags of `concord cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// The `concord cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Start a local cluster: one `concord node serve` process per node on free loopback
    /// ports, data and logs under one folder; runs until Ctrl-C.
    Up(UpArgs),
    /// Show every node's health: leader, followers, term (ballot, view), log length, commit
    /// index.
    Status(StatusArgs),
    /// Split the nodes into groups that cannot talk to each other (`--groups 0,1/2,3,4`;
    /// nodes in no group are cut off alone), or heal (`--heal`).
    Partition(PartitionArgs),
    /// Write an integer to a key through consensus.
    Put(PutArgs),
    /// Read a key through the protocol (linearizable).
    Get(GetArgs),
}

/// Flags of `concord cluster up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The consensus algorithm: raft, paxos (Multi-Paxos) or pbft.
    #[arg(long, short, default_value = "raft")]
    pub algorithm: String,
    /// Cluster size (pbft: at least 4).
    #[arg(long, short, default_value_t = 3)]
    pub nodes: usize,
    /// The folder holding every node's data directory and log.
    #[arg(long, default_value = "concord-cluster")]
    pub dir: PathBuf,
}

/// The nodes to talk to.
#[derive(Debug, Args)]
pub struct Endpoints {
    /// Client API addresses of the nodes (`127.0.0.1:7100,127.0.0.1:7101` or `http://...`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
}

/// Flags of `concord cluster status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The nodes.
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `concord cluster partition`.
#[derive(Debug, Args)]
pub struct PartitionArgs {
    /// The nodes (every one must answer).
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// The split, or healing it.
    #[command(flatten)]
    pub split: Split,
}

/// How to split a cluster (`concord cluster partition`, `concord db partition`).
#[derive(Debug, Args)]
pub struct Split {
    /// Groups of node ids separated by '/', e.g. 0,1/2,3,4; a node in no group is cut off
    /// alone.
    #[arg(long, required_unless_present = "heal", conflicts_with = "heal")]
    pub groups: Option<String>,
    /// Restore every link.
    #[arg(long)]
    pub heal: bool,
}

/// Flags of `concord cluster put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The nodes, tried in order until one serves the write.
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// The key.
    pub key: String,
    /// The value (an integer).
    #[arg(allow_negative_numbers = true)]
    pub value: i64,
}

/// Flags of `concord cluster get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The nodes, tried in order until one serves the read.
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// The key.
    pub key: String,
}

/// Runs `concord cluster …`.
pub fn run(args: &ClusterArgs) -> Result<Outcome> {
    match &args.command {
        ClusterCommand::Up(up) => run_up(up),
        ClusterCommand::Status(status) => runtime()?.block_on(run_status(status)),
        ClusterCommand::Partition(partition) => runtime()?.block_on(partition_nodes(
            &partition.endpoints.endpoints,
            &partition.split,
        )),
        ClusterCommand::Put(put) => runtime()?.block_on(run_put(put)),
        ClusterCommand::Get(get) => runtime()?.block_on(run_get(get)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    crate::db::client_runtime(1)
}

/// `host:port` or `http://host:port` as a base URL.
fn base_url(endpoint: &str) -> Result<String> {
    let endpoint = endpoint.trim().trim_end_matches('/');
    let url = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    if !url.starts_with("http://") {
        bail!("endpoint '{endpoint}': only http:// is served");
    }
    url.parse::<hyper::Uri>()
        .with_context(|| format!("endpoint '{endpoint}' is not host:port"))?;
    Ok(url)
}

/// How long one call to a node may take: longer than a node's own request timeout, so its
/// answer (504, outcome unknown) arrives rather than ours.
const CALL_TIMEOUT: StdDuration = StdDuration::from_secs(15);

/// One HTTP call; the status and the JSON body.
async fn call(
    endpoint: &str,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<(StatusCode, Json)> {
    let url = format!("{}{path}", base_url(endpoint)?);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::builder()
        .method(method)
        .uri(&url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .with_context(|| format!("bad request to {url}"))?;
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok::<_, anyhow::Error>((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("{url}: no answer within {CALL_TIMEOUT:?}"))?
        .with_context(|| format!("cannot reach {url}"))?;
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({ "error": String::from_utf8_lossy(&bytes).trim().to_string() }));
    Ok((status, json))
}

/// The error message of a JSON error body.
fn message(json: &Json) -> String {
    json["error"]
        .as_str()
        .map_or_else(|| json.to_string(), str::to_string)
}

async fn fetch_status(endpoint: &str) -> Result<StatusReport> {
    let (status, json) = call(endpoint, Method::GET, "/status", None).await?;
    if !status.is_success() {
        bail!("{endpoint}: {status}: {}", message(&json));
    }
    serde_json::from_value(json).with_context(|| format!("{endpoint}: not a node's status"))
}

/// Every endpoint's status (or why it has none), asked concurrently.
async fn collect_status(endpoints: &[String]) -> Vec<Result<StatusReport>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (index, endpoint) in endpoints.iter().enumerate() {
        let endpoint = endpoint.clone();
        tasks.spawn(async move { (index, fetch_status(&endpoint).await) });
    }
    let mut reports: Vec<Option<Result<StatusReport>>> = endpoints.iter().map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((index, report)) = joined {
            reports[index] = Some(report);
        }
    }
    reports
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("the status request failed"))))
        .collect()
}

/// The toolkit's health view of the nodes that answered; members that did not are down.
fn health(reports: &[Result<StatusReport>]) -> Option<(ClusterHealth, &StatusReport)> {
    let answered: Vec<&StatusReport> = reports.iter().filter_map(|r| r.as_ref().ok()).collect();
    let first = *answered.first()?;
    let members: BTreeSet<NodeId> = answered
        .iter()
        .flat_map(|r| r.members.iter().copied())
        .chain(answered.iter().map(|r| r.status.id))
        .collect();
    let size = members.iter().max().map_or(0, |&m| m + 1);
    let statuses: Vec<NodeStatus> = (0..size)
        .map(|id| {
            answered
                .iter()
                .find(|r| r.status.id == id)
                .map_or_else(|| NodeStatus::down(id), |r| r.status.clone())
        })
        .collect();
    Some((ClusterHealth::from_statuses(0, statuses), first))
}

async fn run_status(args: &StatusArgs) -> Result<Outcome> {
    let endpoints = &args.endpoints.endpoints;
    let reports = collect_status(endpoints).await;
    if args.json {
        let rows: Vec<Json> = endpoints
            .iter()
            .zip(&reports)
            .map(|(endpoint, report)| match report {
                Ok(status) => json!({ "endpoint": endpoint, "status": status }),
                Err(error) => json!({ "endpoint": endpoint, "error": format!("{error:#}") }),
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    }
    let Some((health, first)) = health(&reports) else {
        for (endpoint, report) in endpoints.iter().zip(&reports) {
            if let Err(error) = report {
                eprintln!("{endpoint}: {error:#}");
            }
        }
        bail!("no endpoint answered");
    };
    if !args.json {
        let title = format!("{} cluster ({})", first.algorithm, first.term_name);
        out!("{}", render::live_health(&title, &health));
        for (endpoint, report) in endpoints.iter().zip(&reports) {
            match report {
                Ok(status) if !status.isolated.is_empty() => outln!(
                    "  node {} ({endpoint}) is cut off from {:?}",
                    status.status.id,
                    status.isolated
                ),
                Ok(_) => {}
                Err(error) => outln!("  {endpoint} unreachable: {error:#}"),
            }
        }
    }
    Ok(if health.leader.is_some() {
        Outcome::Success
    } else {
        Outcome::Violation
    })
}

/// `concord cluster partition` and `concord db partition`: [`split_nodes`], saying what each
/// node was told.
pub(crate) async fn partition_nodes(endpoints: &[String], args: &Split) -> Result<Outcome> {
    for (id, cut) in split_nodes(endpoints, args).await? {
        if cut.is_empty() {
            outln!("node {id}: every link restored");
        } else {
            outln!("node {id}: cut off from {cut:?}");
        }
    }
    Ok(Outcome::Success)
}

/// Splits the nodes at `endpoints` into groups that cannot talk to each other, or heals them:
/// each node's `GET /faults` says who it is and who the members are, and its `POST /faults`
/// tells it whom to cut off ([`concord_runtime::faults`]). Every member must be listed.
/// Returns whom each node was told to cut off (none: healed).
pub(crate) async fn split_nodes(
    endpoints: &[String],
    args: &Split,
) -> Result<BTreeMap<NodeId, Vec<NodeId>>> {
    let mut nodes: BTreeMap<NodeId, &str> = BTreeMap::new();
    let mut members = BTreeSet::new();
    let mut unreachable = Vec::new();
    for endpoint in endpoints {
        let answer = call(endpoint, Method::GET, "/faults", None).await;
        let isolation = answer.as_ref().ok().and_then(|(status, json)| {
            status
                .is_success()
                .then(|| serde_json::from_value::<faults::Isolation>(json.clone()).ok())?
        });
        match (answer, isolation) {
            (_, Some(isolation)) => {
                nodes.insert(isolation.id, endpoint);
                members.extend(isolation.members);
            }
            (Ok((status, json)), None) => unreachable.push(format!(
                "{endpoint}: no fault injection here ({status} {}): Concord DB nodes serve it \
                 when started with --fault-injection",
                message(&json)
            )),
            (Err(error), None) => unreachable.push(format!("{endpoint}: {error:#}")),
        }
    }
    let isolate: BTreeMap<NodeId, Vec<NodeId>> = if args.heal {
        nodes.keys().map(|&id| (id, Vec::new())).collect()
    } else {
        if !unreachable.is_empty() {
            bail!(
                "every node must answer to be partitioned:\n  {}",
                unreachable.join("\n  ")
            );
        }
        let missing: Vec<NodeId> = members
            .iter()
            .filter(|id| !nodes.contains_key(id))
            .copied()
            .collect();
        if !missing.is_empty() {
            bail!("--endpoints lacks node(s) {missing:?}: every member must be listed");
        }
        let groups = faults::parse_groups(args.groups.as_deref().unwrap_or_default(), &members)
            .map_err(anyhow::Error::msg)?;
        faults::cut_offs(&members, &groups)
    };
    let mut failed = Vec::new();
    for (id, cut) in &isolate {
        let body = serde_json::to_string(&faults::Faults {
            isolate: cut.clone(),
            ..faults::Faults::default()
        })?;
        match call(nodes[id], Method::POST, "/faults", Some(body)).await {
            Ok((status, _)) if status.is_success() => {}
            Ok((status, json)) => failed.push(format!("node {id}: {status}: {}", message(&json))),
            Err(error) => failed.push(format!("node {id}: {error:#}")),
        }
    }
    failed.extend(unreachable);
    if !failed.is_empty() {
        bail!("not every node was reached:\n  {}", failed.join("\n  "));
    }
    Ok(isolate)
}

/// Tells the node at `endpoint` its faults (`POST /faults`): e.g. to fail its next
/// write-ahead log sync, as a failing disk would (the node stops), or to jump its clock ahead.
/// Any partition of the node that `faults` does not name is healed.
pub(crate) async fn inject_faults(endpoint: &str, faults: &faults::Faults) -> Result<()> {
    let body = serde_json::to_string(faults)?;
    match call(endpoint, Method::POST, "/faults", Some(body)).await? {
        (status, _) if status.is_success() => Ok(()),
        (status, json) => bail!("{endpoint}: {status}: {}", message(&json)),
    }
}

/// Sends one key's request to each endpoint in turn until one gives a definite answer (done,
/// a missing key, or bad input); returns the endpoint and its answer.
async fn first_answer(
    endpoints: &[String],
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<(String, StatusCode, Json)> {
    let mut errors = Vec::new();
    for endpoint in endpoints {
        match call(endpoint, method.clone(), path, body.clone()).await {
            Ok((status, json))
                if status.is_success()
                    || status == StatusCode::NOT_FOUND
                    || status == StatusCode::BAD_REQUEST =>
            {
                return Ok((endpoint.clone(), status, json));
            }
            Ok((status, json)) => errors.push(format!("{endpoint}: {status}: {}", message(&json))),
            Err(error) => errors.push(format!("{endpoint}: {error:#}")),
        }
    }
    bail!("no node served the request:\n  {}", errors.join("\n  "))
}

async fn run_put(args: &PutArgs) -> Result<Outcome> {
    check_key(&args.key).map_err(anyhow::Error::msg)?;
    let path = format!("/kv/{}", args.key);
    let (endpoint, status, json) = first_answer(
        &args.endpoints.endpoints,
        Method::PUT,
        &path,
        Some(args.value.to_string()),
    )
    .await?;
    if !status.is_success() {
        bail!("{endpoint}: {}", message(&json));
    }
    outln!(
        "{} = {} (through {endpoint}, served by node {})",
        args.key,
        args.value,
        json["served_by"]
    );
    Ok(Outcome::Success)
}

async fn run_get(args: &GetArgs) -> Result<Outcome> {
    check_key(&args.key).map_err(anyhow::Error::msg)?;
    let path = format!("/kv/{}", args.key);
    let (endpoint, status, json) =
        first_answer(&args.endpoints.endpoints, Method::GET, &path, None).await?;
    if status == StatusCode::BAD_REQUEST {
        bail!("{endpoint}: {}", message(&json));
    }
    if status == StatusCode::NOT_FOUND {
        outln!(
            "{} is not set (through {endpoint}, served by node {})",
            args.key,
            json["served_by"]
        );
    } else {
        outln!(
            "{} = {} (through {endpoint}, served by node {})",
            args.key,
            json["value"],
            json["served_by"]
        );
    }
    Ok(Outcome::Success)
}

/// `count` ports nobody listens on now, on 127.0.0.1.
fn free_ports(count: usize) -> Result<Vec<u16>> {
    // Held together, so that no two are the same.
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

fn run_up(args: &UpArgs) -> Result<Outcome> {
    let algorithm = Algorithm::parse(&args.algorithm).context("--algorithm")?;
    algorithm.check_size(args.nodes)?;
    if args.nodes > 16 {
        bail!("--nodes: at most 16 on one machine");
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let ports = free_ports(2 * args.nodes)?;
    let (peer_ports, client_ports) = ports.split_at(args.nodes);
    let peers = peer_ports
        .iter()
        .enumerate()
        .map(|(id, port)| format!("{id}=127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    let endpoints: Vec<String> = client_ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let exe = std::env::current_exe().context("finding the concord binary")?;
    let mut children = Children(Vec::new());
    let workers = worker_share(args.nodes as u64);
    for (id, endpoint) in endpoints.iter().enumerate() {
        children.spawn(
            id as NodeId,
            Command::new(&exe)
                .args(["node", "serve", "--algorithm", algorithm.name()])
                .args(["--id", &id.to_string(), "--peers", &peers])
                .arg("--data-dir")
                .arg(args.dir.join(format!("node-{id}")))
                .args(["--listen-client", endpoint])
                .args(["--worker-threads", &workers.to_string()]),
            &args.dir.join(format!("node-{id}.log")),
        )?;
    }
    outln!(
        "started {} {} nodes; data and logs under {}",
        args.nodes,
        algorithm.name(),
        args.dir.display()
    );
    for (id, endpoint) in endpoints.iter().enumerate() {
        outln!(
            "  node {id}: client http://{endpoint}   peers 127.0.0.1:{}",
            peer_ports[id]
        );
    }
    let rt = runtime()?;
    // Wait until the nodes agree on a leader (primary).
    let mut elected = None;
    for _ in 0..300 {
        if let Some(report) = children.exited()? {
            bail!("{report}");
        }
        let reports = rt.block_on(collect_status(&endpoints));
        let everyone = reports.iter().all(|r| r.is_ok());
        if let Some((health, _)) = health(&reports) {
            let agreed = health.leader.is_some_and(|leader| {
                health
                    .nodes
                    .iter()
                    .all(|n| n.leader == Some(leader) && n.role != Role::Down)
            });
            if everyone && agreed {
                elected = Some(health);
                break;
            }
        }
        std::thread::sleep(StdDuration::from_millis(100));
    }
    let Some(health) = elected else {
        bail!(
            "no leader agreed on within 30 s; see the logs under {}",
            args.dir.display()
        );
    };
    outln!();
    let title = format!("{} cluster ({})", algorithm.name(), algorithm.term_name());
    out!("{}", render::live_health(&title, &health));
    let list = endpoints.join(",");
    outln!();
    outln!("try:  concord cluster put --endpoints {list} greeting 42");
    outln!("      concord cluster get --endpoints {list} greeting");
    outln!("      concord cluster status --endpoints {list}");
    outln!(
        "      concord cluster partition --endpoints {list} --groups {}",
        example_groups(args.nodes)
    );
    outln!("      concord cluster partition --endpoints {list} --heal");
    outln!("      curl http://{}/status", endpoints[0]);
    outln!(
        "Ctrl-C stops the cluster (data stays in {}).",
        args.dir.display()
    );
    children.wait_for_stop(&rt)?;
    outln!("stopping");
    Ok(Outcome::Success)
}

/// A minority and a majority: `0/1,2` for 3 nodes, `0,1/2,3,4` for 5.
fn example_groups(nodes: usize) -> String {
    let minority = (nodes - 1) / 2;
    let minority = minority.max(1).min(nodes - 1);
    let ids =
        |range: std::ops::Range<usize>| range.map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    format!("{}/{}", ids(0..minority), ids(minority..nodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_examples() {
        assert_eq!(base_url("127.0.0.1:7").unwrap(), "http://127.0.0.1:7");
        assert_eq!(
            base_url("http://127.0.0.1:7/").unwrap(),
            "http://127.0.0.1:7"
        );
        assert!(base_url("https://127.0.0.1:7").is_err());
        assert_eq!(example_groups(3), "0/1,2");
        assert_eq!(example_groups(5), "0,1/2,3,4");
        assert_eq!(example_groups(4), "0/1,2,3");
    }
}
