//! `concord db nemesis`: Jepsen's method on Concord DB's real processes. A fresh local cluster
//! runs a checked client workload ([`concord_kv::workload`]) while a nemesis, drawn from a seed,
//! injects one fault at a time and undoes it:
//!
//! * `kill`: SIGKILL a node, then restart it from its data directory;
//! * `partition`: cut a random minority off from the rest (`--fault-injection`, as
//!   `concord db partition` does), then heal;
//! * `pause`: SIGSTOP a node (a long GC pause, a stalled VM), then SIGCONT;
//! * `disk`: make a node's next write-ahead log sync fail, as a failing disk's would
//!   (`--fault-injection`); the node must stop rather than retry and go on, and it is then
//!   restarted from its data directory;
//! * `clock`: jump a node's clock ahead by one to four election timeouts, as a clock set
//!   forward would (`--fault-injection`); its timers fire early. Never undone: clocks here only
//!   go forward;
//! * `member`: remove a node's member from the cluster and stop it, then bring the node back
//!   afresh as a new member: added as a learner, started with an empty data directory and the
//!   members as they are now, caught up, promoted (etcd's procedure to replace a member).
//!
//! At the end every fault is undone, the cluster must serve again, each member's final values
//! are read, and the verdict says whether an acknowledged write was lost, whether the watchers
//! saw every revision once and in order, and whether the history is linearizable. The same seed draws the same faults on the same nodes at the same times;
//! what the processes do in between depends on the machine's timing, so a failure may need a
//! few runs of its seed to show again.
// Real processes on a real clock: the fault schedule's waits are wall-clock time.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use concord_check::{check_linearizability, StringKvModel};
use concord_kv::pb::etcdserverpb::cluster_client::ClusterClient;
use concord_kv::pb::etcdserverpb::{
    MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
};
use concord_kv::workload::{self, Workload, WorkloadConfig, WorkloadOutcome};
use rand::Rng as _;

use crate::args::std_duration;
use crate::check::linearizability_outcome;
use crate::cluster::{inject_faults, split_nodes, Split};
use crate::db::LocalCluster;
use crate::{render, Outcome};
use concord_runtime::faults::Faults;

/// Flags of `concord db nemesis`.
#[derive(Debug, Args)]
pub struct NemesisArgs {
    /// The seed of the fault schedule: which fault, on which nodes, when, for how long.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How long faults are injected; the load runs throughout.
    #[arg(long, default_value = "30s")]
    pub duration: String,
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// The faults to draw from: kill, partition, pause, disk, clock, member.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,partition,pause,disk,clock,member"
    )]
    pub faults: Vec<String>,
    /// The mean time between faults, and a fault's mean length (each drawn from half to one
    /// and a half times this).
    #[arg(long, default_value = "3s")]
    pub interval: String,
    /// The nodes' heartbeat interval.
    #[arg(long, default_value = "100ms")]
    pub heartbeat: String,
    /// The nodes' election timeout.
    #[arg(long, default_value = "1s")]
    pub election_timeout: String,
    /// Node i serves clients on 127.0.0.1:(client-port + 10·(i−1)).
    #[arg(long, default_value_t = 22379)]
    pub client_port: u16,
    /// Node i talks to peers on 127.0.0.1:(peer-port + 10·(i−1)).
    #[arg(long, default_value_t = 22380)]
    pub peer_port: u16,
    /// The folder for the nodes' data and logs and the history (default: a new temporary
    /// folder, removed when everything held).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Kill,
    Partition,
    Pause,
    Disk,
    Clock,
    Member,
}

impl Fault {
    fn parse(name: &str) -> Result<Fault> {
        Ok(match name.trim() {
            "kill" => Fault::Kill,
            "partition" => Fault::Partition,
            "pause" => Fault::Pause,
            "disk" => Fault::Disk,
            "clock" => Fault::Clock,
            "member" => Fault::Member,
            other => bail!(
                "--faults: unknown fault '{other}' (kill, partition, pause, disk, clock, member)"
            ),
        })
    }
}

/// Runs `concord db nemesis`.
pub fn run(args: &NemesisArgs) -> Result<Outcome> {
    let duration = std_duration("duration", &args.duration)?;
    let interval = std_duration("interval", &args.interval)?;
    let election_timeout = std_duration("election-timeout", &args.election_timeout)?;
    if interval.is_zero() {
        bail!("--interval must be positive");
    }
    let mut faults = args
        .faults
        .iter()
        .map(|name| Fault::parse(name))
        .collect::<Result<Vec<_>>>()?;
    faults.sort();
    faults.dedup();
    if faults.is_empty() {
        bail!("--faults: name at least one of kill, partition, pause, disk, clock, member");
    }
    for (fault, name) in [(Fault::Partition, "partition"), (Fault::Member, "member")] {
        if faults.contains(&fault) && args.nodes < 3 {
            bail!("--faults {name} needs at least 3 nodes (a majority left without one)");
        }
    }
    let (dir, temporary) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!(
                "concord-nemesis-{}-{}",
                std::process::id(),
                args.seed
            )),
            true,
        ),
    };
    if dir.join("node1").exists() {
        bail!(
            "{} already holds a cluster: give a new folder",
            dir.display()
        );
    }
    let rt = crate::db::client_runtime(2)?;
    let extra = vec![
        "--fault-injection".to_string(),
        "--heartbeat".to_string(),
        args.heartbeat.clone(),
        "--election-timeout".to_string(),
        args.election_timeout.clone(),
    ];
    let ports = (args.client_port, args.peer_port);
    let mut cluster = LocalCluster::start(args.nodes, &dir, ports, extra)?;
    outln!(
        "{} nodes, data and logs under {}; seed {}",
        args.nodes,
        dir.display(),
        args.seed
    );
    cluster.wait_for_leader(&rt, Duration::from_secs(30))?;
    let workload = {
        let _context = rt.enter();
        Workload::start(WorkloadConfig::new(cluster.endpoints.clone()))
            .map_err(anyhow::Error::msg)?
    };
    wait_for_acks(&workload, &mut cluster, 20, "before the first fault")?;

    let start = Instant::now();
    let schedule = Schedule {
        args,
        faults,
        duration,
        interval,
        election_timeout,
    };
    let (injected, outcome) = match inject(&schedule, &rt, &mut cluster, workload, start) {
        Ok(done) => done,
        Err(error) => {
            outln!();
            outln!("the cluster did not recover: {error:#}");
            drop(cluster);
            outln!("kept: the nodes' logs under {}", dir.display());
            outln!("replay: {}", replay(args));
            return Ok(Outcome::Violation);
        }
    };
    drop(cluster);

    let count = |kind: Fault| injected.iter().filter(|&&f| f == kind).count();
    outln!();
    outln!(
        "faults: {} kill, {} partition, {} pause, {} disk, {} clock, {} member in {:.1}s",
        count(Fault::Kill),
        count(Fault::Partition),
        count(Fault::Pause),
        count(Fault::Disk),
        count(Fault::Clock),
        count(Fault::Member),
        start.elapsed().as_secs_f64()
    );
    let counts: Vec<String> = outcome
        .counts()
        .iter()
        .map(|(what, n)| format!("{} {n}", what.to_lowercase()))
        .collect();
    outln!("operations: {}", counts.join(", "));
    let history_path = dir.join("history.jsonl");
    let file = std::fs::File::create(&history_path)
        .with_context(|| format!("creating {}", history_path.display()))?;
    outcome
        .history
        .write_jsonl(std::io::BufWriter::new(file))
        .context("writing the history")?;
    let lost = outcome.lost_writes();
    if lost.is_empty() {
        outln!("acknowledged writes: every one present at every member");
    } else {
        outln!("acknowledged writes LOST:");
        for line in &lost {
            outln!("  {line}");
        }
    }
    let watch = outcome.watch_problems();
    let seen = |log: &concord_kv::workload::WatchLog| log.events.last().map_or(0, |e| e.0);
    if watch.is_empty() {
        let reconnects: usize = outcome.watches.iter().map(|w| w.reconnects).sum();
        outln!(
            "watches: {} watchers saw every revision from 2 to {} once, in order, alike \
             ({reconnects} streams resumed after a fault)",
            outcome.watches.len(),
            outcome.watches.iter().map(seen).min().unwrap_or(0)
        );
    } else {
        outln!("watches BROKE etcd's guarantees:");
        for line in watch.iter().take(20) {
            outln!("  {line}");
        }
        if watch.len() > 20 {
            outln!("  … and {} more", watch.len() - 20);
        }
    }
    let checked = Instant::now();
    let report = check_linearizability(
        &outcome.history,
        &StringKvModel,
        Some(Duration::from_secs(300)),
    )
    .map_err(|e| anyhow::anyhow!("the recorded history is malformed: {e}"))?;
    outln!(
        "history: {}, checked in {:.1}s",
        render::verdict(&report),
        checked.elapsed().as_secs_f64()
    );
    let outcome = if lost.is_empty() && watch.is_empty() {
        linearizability_outcome(&report.verdict)
    } else {
        Outcome::Violation
    };
    if outcome == Outcome::Success {
        if temporary {
            let _ = std::fs::remove_dir_all(&dir);
        }
    } else {
        outln!(
            "kept: the history at {}, the nodes' logs under {}",
            history_path.display(),
            dir.display()
        );
        outln!("replay: {}", replay(args));
    }
    Ok(outcome)
}

/// The command that runs `args`'s schedule again.
fn replay(args: &NemesisArgs) -> String {
    format!(
        "concord db nemesis --seed {} --duration {} --nodes {} --faults {} --interval {} \
         --heartbeat {} --election-timeout {}",
        args.seed,
        args.duration,
        args.nodes,
        args.faults.join(","),
        args.interval,
        args.heartbeat,
        args.election_timeout
    )
}

/// What the nemesis draws from.
struct Schedule<'a> {
    args: &'a NemesisArgs,
    /// The kinds of fault, each once, in a fixed order (so a seed means the same whatever the
    /// order of `--faults`).
    faults: Vec<Fault>,
    duration: Duration,
    interval: Duration,
    /// The nodes' election timeout: what a clock jump is measured in.
    election_timeout: Duration,
}

/// Injects the seed's faults, one at a time, each undone before the next, for `duration`;
/// then waits for the cluster to serve again and finishes the workload. An error says the
/// cluster did not recover (or a fault could not be injected).
fn inject(
    schedule: &Schedule<'_>,
    rt: &tokio::runtime::Runtime,
    cluster: &mut LocalCluster,
    workload: Workload,
    start: Instant,
) -> Result<(Vec<Fault>, WorkloadOutcome)> {
    let Schedule {
        args,
        faults,
        duration,
        interval,
        election_timeout,
    } = schedule;
    let (duration, interval, election_timeout) = (*duration, *interval, *election_timeout);
    let mut rng = concord_core::seeded_rng(args.seed, 0);
    let draw = |rng: &mut concord_core::Rng| interval.mul_f64(rng.gen_range(0.5..1.5));
    let mut injected = Vec::new();
    loop {
        let calm = draw(&mut rng);
        let fault = faults[rng.gen_range(0..faults.len())];
        let node = rng.gen_range(1..=args.nodes);
        let length = draw(&mut rng);
        if start.elapsed() + calm >= duration {
            break;
        }
        std::thread::sleep(calm);
        let at = start.elapsed().as_secs_f64();
        match fault {
            Fault::Kill => {
                cluster.children.kill(node);
                outln!("{at:7.1}s  kill -9 node {node}");
            }
            Fault::Pause => {
                cluster.children.signal(node, "STOP")?;
                outln!("{at:7.1}s  pause node {node} (SIGSTOP)");
            }
            Fault::Partition => {
                // A random minority, `node` among it, cut off from the rest.
                let mut minority = vec![node];
                let size = rng.gen_range(1..=(args.nodes - 1) / 2) as usize;
                while minority.len() < size {
                    let other = rng.gen_range(1..=args.nodes);
                    if !minority.contains(&other) {
                        minority.push(other);
                    }
                }
                // The split names members; the nodes' members change as they are replaced.
                let group = |inside: bool| {
                    let nodes = (1..=args.nodes).filter(|n| minority.contains(n) == inside);
                    let mut members: Vec<u64> = nodes.map(|n| cluster.member(n)).collect();
                    members.sort_unstable();
                    ids(&members)
                };
                let groups = format!("{}/{}", group(true), group(false));
                split(rt, cluster, Some(groups.clone()))?;
                outln!("{at:7.1}s  partition {groups} (members)");
            }
            Fault::Disk => {
                let faults = Faults {
                    fail_sync: true,
                    ..Faults::default()
                };
                rt.block_on(inject_faults(
                    &cluster.endpoints[node as usize - 1],
                    &faults,
                ))?;
                outln!("{at:7.1}s  fail node {node}'s next fsync");
            }
            Fault::Clock => {
                let jump = election_timeout.mul_f64(rng.gen_range(1.0..4.0));
                let faults = Faults {
                    clock_jump_ms: jump.as_millis() as u64,
                    ..Faults::default()
                };
                rt.block_on(inject_faults(
                    &cluster.endpoints[node as usize - 1],
                    &faults,
                ))?;
                outln!(
                    "{at:7.1}s  jump node {node}'s clock {} ms ahead",
                    faults.clock_jump_ms
                );
            }
            Fault::Member => {
                let old = cluster.member(node);
                rt.block_on(remove_member(cluster, node, old))?;
                cluster.children.kill(node);
                outln!("{at:7.1}s  remove member {old} (node {node}) and stop it");
            }
        }
        std::thread::sleep(length);
        let undone = match fault {
            Fault::Kill => {
                cluster.spawn(node)?;
                format!("restart node {node}")
            }
            Fault::Pause => {
                cluster.children.signal(node, "CONT")?;
                format!("resume node {node} (SIGCONT)")
            }
            Fault::Partition => {
                split(rt, cluster, None)?;
                "heal".to_string()
            }
            Fault::Disk => {
                // Under the load every member syncs many times a second: it has stopped by now.
                let how = match cluster
                    .children
                    .wait_exited(node, Duration::from_secs(10))?
                {
                    Some(status) => format!("node {node} had stopped ({status})"),
                    None => bail!("node {node} still runs 10 s after its fsync was made to fail"),
                };
                cluster.spawn(node)?;
                format!("{how}; restart it")
            }
            Fault::Clock => format!("node {node}'s clock stays ahead (clocks only go forward)"),
            Fault::Member => {
                let new = rt.block_on(add_learner(cluster, node))?;
                cluster.replace(node, new)?;
                rt.block_on(promote(cluster, node, new))?;
                format!("node {node} back as member {new}: added as a learner, caught up, promoted")
            }
        };
        outln!("{:7.1}s  {undone}", start.elapsed().as_secs_f64());
        injected.push(fault);
    }
    // Every fault is undone: the cluster must serve again.
    cluster.wait_for_leader(rt, Duration::from_secs(60))?;
    wait_for_acks(&workload, cluster, 20, "after the last fault")?;
    let outcome = rt
        .block_on(workload.finish(Duration::from_secs(60)))
        .map_err(anyhow::Error::msg)?;
    Ok((injected, outcome))
}

/// How long a membership change may take to go through.
const MEMBERSHIP_PATIENCE: Duration = Duration::from_secs(60);

/// Calls `call` at the members other than node `skip`, in turn, until one answers. Retried
/// until [`MEMBERSHIP_PATIENCE`] has passed.
async fn at_others<T, F, Fut>(
    cluster: &LocalCluster,
    skip: u64,
    what: &str,
    mut call: F,
) -> Result<T>
where
    F: FnMut(ClusterClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + MEMBERSHIP_PATIENCE;
    let mut last = String::new();
    while Instant::now() < deadline {
        for (index, url) in (1..).zip(&cluster.endpoints) {
            if index == skip {
                continue;
            }
            let channel =
                workload::channel(url, Duration::from_secs(5)).map_err(anyhow::Error::msg)?;
            match call(ClusterClient::new(channel)).await {
                Ok(answer) => return Ok(answer),
                Err(status) => last = format!("{url}: {}", status.message()),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{what} did not go through within {MEMBERSHIP_PATIENCE:?}: {last}")
}

/// Removes `member` (node `index`'s) through another member.
async fn remove_member(cluster: &LocalCluster, index: u64, member: u64) -> Result<()> {
    let what = format!("removing member {member}");
    at_others(cluster, index, &what, |mut client| async move {
        match client
            .member_remove(MemberRemoveRequest { id: member })
            .await
        {
            // "Not found": an earlier attempt that timed out went through.
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(status) => Err(status),
        }
    })
    .await
}

/// Adds node `index`'s peer URL as a learner; its new member ID.
async fn add_learner(cluster: &LocalCluster, index: u64) -> Result<u64> {
    let url = cluster.peer_url(index);
    let added = at_others(cluster, index, &format!("adding {url}"), |mut client| {
        let url = url.clone();
        async move {
            let request = MemberAddRequest {
                peer_ur_ls: vec![url.clone()],
                is_learner: true,
            };
            match client.member_add(request).await {
                Ok(response) => Ok(response.into_inner().member.map(|m| m.id)),
                // An earlier attempt that timed out went through: find the member it added.
                Err(status) if status.message().contains("Peer URLs already exists") => {
                    let list = client
                        .member_list(MemberListRequest { linearizable: true })
                        .await?;
                    Ok(list
                        .into_inner()
                        .members
                        .into_iter()
                        .find(|m| m.peer_ur_ls.contains(&url))
                        .map(|m| m.id))
                }
                Err(status) => Err(status),
            }
        }
    })
    .await?;
    added.with_context(|| format!("adding {url} named no member"))
}

/// Promotes learner `member` (node `index`'s) once it has caught up.
async fn promote(cluster: &LocalCluster, index: u64, member: u64) -> Result<()> {
    at_others(
        cluster,
        index,
        &format!("promoting member {member}"),
        |mut client| async move {
            client
                .member_promote(MemberPromoteRequest { id: member })
                .await
                .map(|_| ())
        },
    )
    .await
}

fn ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// Splits the cluster into `groups` (`None`: heals it).
fn split(
    rt: &tokio::runtime::Runtime,
    cluster: &LocalCluster,
    groups: Option<String>,
) -> Result<()> {
    let heal = groups.is_none();
    rt.block_on(split_nodes(&cluster.endpoints, &Split { groups, heal }))?;
    Ok(())
}

/// Waits until `more` writes beyond those acknowledged now are acknowledged (a minute at most).
fn wait_for_acks(
    workload: &Workload,
    cluster: &mut LocalCluster,
    more: u64,
    when: &str,
) -> Result<()> {
    let target = workload.acknowledged() + more;
    let deadline = Instant::now() + Duration::from_secs(60);
    while workload.acknowledged() < target {
        if let Some(report) = cluster.children.exited()? {
            bail!("{when}: {report}");
        }
        if Instant::now() >= deadline {
            bail!(
                "{when}: the cluster acknowledged {} of {target} writes within a minute",
                workload.acknowledged()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
