//! Concord DB under faults on real processes. A write and read load runs against every node
//! while the leader or every node is killed with SIGKILL and restarted, or while the network
//! is split (`concord db partition`, the nodes running with `--fault-injection`). Every
//! acknowledged write must survive, and the client history must check as linearizable. And
//! what a partition does, step by step: the side without a majority serves no write and no
//! linearizable read, but answers serializable reads with what it had; the majority elects a
//! leader and goes on; after healing, the cut-off member catches up.
// Real processes on a real clock: the history's times and the waits need the wall clock.
#![allow(clippy::disallowed_methods)]

mod db;

use std::time::{Duration, Instant};

use concord_check::history::History;
use concord_check::{check_linearizability, StringKvModel, Verdict};
use concord_kv::pb::etcdserverpb::kv_client::KvClient;
use concord_kv::pb::etcdserverpb::{PutRequest, RangeRequest};
use concord_kv::workload::{self, Workload, WorkloadConfig};
use db::DbCluster;
use tonic::transport::{Channel, Endpoint};

/// A request slower than this is abandoned (a write's outcome is then unknown).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// One client per URL.
fn clients(urls: &[String]) -> Vec<KvClient<Channel>> {
    urls.iter()
        .map(|url| workload::client(url, REQUEST_TIMEOUT).expect("a valid URL"))
        .collect()
}

/// A linearizable read of `key`: the value (`""` when unset), or the error's message.
async fn get(client: &mut KvClient<Channel>, key: &str) -> Result<String, String> {
    workload::get(client, key, REQUEST_TIMEOUT).await
}

/// The checked workload (`concord_kv::workload`) on its own runtime, while the test thread
/// kills, restarts and partitions nodes.
struct Load {
    runtime: tokio::runtime::Runtime,
    workload: Workload,
}

impl Load {
    fn start(urls: Vec<String>) -> Load {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let workload = {
            let _context = runtime.enter();
            Workload::start(WorkloadConfig::new(urls)).expect("a workload")
        };
        Load { runtime, workload }
    }

    /// Waits until `more` writes beyond those acknowledged now are acknowledged.
    fn wait_for_more_acks(&self, more: u64, timeout: Duration, cluster: &DbCluster, what: &str) {
        let target = self.workload.acknowledged() + more;
        let deadline = Instant::now() + timeout;
        while self.workload.acknowledged() < target {
            assert!(
                Instant::now() < deadline,
                "{what}: only {} of {target} writes acknowledged within {timeout:?}\n{}",
                self.workload.acknowledged(),
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the load and checks what it saw: every acknowledged write survives, the watchers saw
    /// every revision once and in order, and the history is linearizable. `name` names a history kept for a failure; `what` says what was done.
    fn finish_and_check(self, cluster: &DbCluster, name: &str, what: &str) {
        let outcome = self
            .runtime
            .block_on(self.workload.finish(Duration::from_secs(30)))
            .unwrap_or_else(|error| panic!("{error}\n{}", cluster.logs()));
        eprintln!("errors: {:#?}", outcome.errors);
        eprintln!("{what}; {:?}", outcome.counts());
        let lost = outcome.lost_writes();
        assert!(
            lost.is_empty(),
            "acknowledged writes are lost:\n{}\n{}",
            lost.join("\n"),
            cluster.logs()
        );
        let watch = outcome.watch_problems();
        assert!(
            watch.is_empty(),
            "the watchers saw what etcd's watch guarantees rule out:\n{}\n{}",
            watch.join("\n"),
            cluster.logs()
        );
        assert_linearizable(&outcome.history, cluster, name);
    }
}

fn assert_linearizable(history: &History, cluster: &DbCluster, name: &str) {
    let report = check_linearizability(history, &StringKvModel, Some(Duration::from_secs(60)))
        .expect("a well-formed history");
    if report.verdict != Verdict::Linearizable {
        // Kept outside the cluster's temporary directory, which is removed on drop.
        let path =
            std::env::temp_dir().join(format!("concord-{name}-{}.jsonl", std::process::id()));
        let file = std::fs::File::create(&path).expect("history file");
        history.write_jsonl(file).expect("write history");
        panic!(
            "the history is not linearizable ({} operations): {:?}\nhistory kept at {}\n{}",
            report.operations,
            report.verdict,
            path.display(),
            cluster.logs()
        );
    }
}

/// A snapshot every this many entries, so that kills land before, during and after the log
/// compactions snapshots start (a snapshot is confirmed before its compaction is in place;
/// a snapshot compacts the log once it has doubled since the last compaction: in these runs
/// of a few hundred writes, a handful of times).
const FREQUENT_SNAPSHOTS: &[&str] = &["--snapshot-entries", "25"];

#[test]
fn killing_the_leader_under_load_loses_no_acknowledged_write() {
    let mut cluster = DbCluster::start(3, FREQUENT_SNAPSHOTS);
    let load = Load::start(cluster.urls());
    load.wait_for_more_acks(150, Duration::from_secs(30), &cluster, "before the crash");
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    cluster.kill(leader);
    // The load goes on until a new leader serves writes.
    load.wait_for_more_acks(
        50,
        Duration::from_secs(30),
        &cluster,
        "after killing the leader",
    );
    cluster.spawn(leader);
    load.wait_for_more_acks(100, Duration::from_secs(30), &cluster, "after the restart");
    load.finish_and_check(&cluster, "leader-crash", &format!("leader {leader} killed"));
}

#[test]
fn killing_every_node_under_load_loses_no_acknowledged_write() {
    let mut cluster = DbCluster::start(3, FREQUENT_SNAPSHOTS);
    let load = Load::start(cluster.urls());
    load.wait_for_more_acks(150, Duration::from_secs(30), &cluster, "before the crash");
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.spawn(id);
    }
    load.wait_for_more_acks(100, Duration::from_secs(30), &cluster, "after the restart");
    load.finish_and_check(&cluster, "all-crash", "every node killed");
}

#[test]
fn a_follower_whose_leader_died_fails_writes_at_once_and_retryably_until_a_new_one_serves() {
    let mut cluster = DbCluster::start(3, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let other = (1..=3)
        .find(|&id| id != leader && id != follower)
        .expect("another");
    let url = cluster.urls()[(follower - 1) as usize].clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // Far longer than a failover: a write that waited on the dead leader would show it.
    let patient = Duration::from_secs(120);
    let mut client = runtime.block_on(async {
        let channel = Endpoint::from_shared(url)
            .expect("a valid URL")
            .timeout(patient)
            .connect()
            .await
            .expect("the follower answers");
        KvClient::new(channel)
    });
    let put = |value: &str| PutRequest {
        key: b"k".to_vec(),
        value: value.as_bytes().to_vec(),
        ..Default::default()
    };
    runtime
        .block_on(client.put(put("before")))
        .expect("the follower forwards to the live leader");

    // The leader dies, and so does the other follower, so that no new leader can be elected
    // before the write below.
    cluster.kill(leader);
    cluster.kill(other);
    // The follower does not hold the write for a leader it can no longer reach: it fails it
    // with a status clients retry (etcd's clients retry Unavailable at another member) — at
    // once when it knows no leader, or when the lost connection (or the election it hurries)
    // ends what it forwarded, with an unknown outcome.
    let status = runtime
        .block_on(client.put(put("during")))
        .expect_err("no leader can take the write");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains("the leader is unreachable from this member")
            || status
                .message()
                .contains("possibly due to previous leader failure")
            || status.message().contains("no leader"),
        "{status:?}"
    );
    // Retried at the same member, the write goes through once a leader serves again.
    cluster.spawn(leader);
    cluster.spawn(other);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match runtime.block_on(client.put(put("after"))) {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                assert!(
                    Instant::now() < deadline,
                    "no leader serves again: {status:?}\n{}",
                    cluster.logs()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let value = runtime
        .block_on(client.range(RangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        }))
        .expect("a linearizable read")
        .into_inner();
    assert_eq!(value.kvs[0].value, b"after");
}

/// Runs `concord db partition` over `cluster`'s nodes with `split` (`--groups …` or `--heal`).
fn partition(cluster: &DbCluster, split: &[&str]) -> String {
    let output = db::concord()
        .args(["db", "partition", "--endpoints", &cluster.urls().join(",")])
        .args(split)
        .output()
        .expect("concord db partition runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "concord db partition {split:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Node `id`'s role and the leader it knows, from `concord db status`.
fn role(cluster: &DbCluster, id: u64) -> Option<(String, Option<u64>)> {
    let row = cluster.status(id)?;
    let status = &row["status"];
    Some((
        status["role"].as_str()?.to_string(),
        status["leader"].as_u64(),
    ))
}

/// Groups `--groups` writes for `alone` cut off from the other members of 1..=3.
fn alone(id: u64) -> String {
    let rest: Vec<String> = (1..=3)
        .filter(|&other| other != id)
        .map(|other| other.to_string())
        .collect();
    format!("{id}/{}", rest.join(","))
}

#[test]
fn a_cut_off_leader_serves_only_stale_reads_while_the_majority_elects_another_and_goes_on() {
    let cluster = DbCluster::start(3, &["--fault-injection"]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut clients = {
        let _context = runtime.enter();
        clients(&cluster.urls())
    };
    let put = |client: &mut KvClient<Channel>, value: &str| {
        let request = PutRequest {
            key: b"k".to_vec(),
            value: value.as_bytes().to_vec(),
            ..PutRequest::default()
        };
        runtime.block_on(async { tokio::time::timeout(REQUEST_TIMEOUT, client.put(request)).await })
    };
    let serializable_get = |client: &mut KvClient<Channel>| {
        let request = RangeRequest {
            key: b"k".to_vec(),
            serializable: true,
            ..RangeRequest::default()
        };
        let response = runtime
            .block_on(client.range(request))
            .expect("a serializable read answers")
            .into_inner();
        String::from_utf8_lossy(&response.kvs[0].value).into_owned()
    };
    let old = cluster.wait_for_leader(Duration::from_secs(20));
    let at_old = (old - 1) as usize;
    put(&mut clients[at_old], "before")
        .expect("no client timeout")
        .expect("the leader takes a write");

    let printed = partition(&cluster, &["--groups", &alone(old)]);
    assert!(
        printed.contains(&format!("node {old}: cut off from")),
        "{printed}"
    );
    // The majority elects a leader of its own.
    let majority: Vec<u64> = (1..=3).filter(|&id| id != old).collect();
    let new = db::eventually("a leader in the majority", Duration::from_secs(20), || {
        majority
            .iter()
            .copied()
            .find(|&id| role(&cluster, id).is_some_and(|(role, _)| role == "leader"))
    });
    let at_new = (new - 1) as usize;
    put(&mut clients[at_new], "after")
        .expect("no client timeout")
        .expect("the majority's leader takes a write");
    // The old leader finds it no longer hears a majority (check quorum) and steps down; it
    // then knows no leader.
    db::eventually(
        "the cut-off leader steps down",
        Duration::from_secs(20),
        || role(&cluster, old).filter(|(role, leader)| role != "leader" && leader.is_none()),
    );
    // The cut-off member refuses writes and linearizable reads, at once and retryably...
    let refused = put(&mut clients[at_old], "lost")
        .expect("refused before the client's timeout")
        .expect_err("a member without a leader takes no write");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("no leader"), "{refused:?}");
    let read = runtime.block_on(get(&mut clients[at_old], "k"));
    assert_eq!(read, Err("etcdserver: no leader".to_string()));
    // ...but still answers a serializable read, with what it had: stale, as the caller chose.
    assert_eq!(serializable_get(&mut clients[at_old]), "before");
    assert_eq!(serializable_get(&mut clients[at_new]), "after");

    let printed = partition(&cluster, &["--heal"]);
    assert_eq!(
        printed.matches("every link restored").count(),
        3,
        "{printed}"
    );
    // Healed, the old leader follows the new one and catches up; its refused write is nowhere.
    db::eventually("the old leader catches up", Duration::from_secs(20), || {
        (serializable_get(&mut clients[at_old]) == "after").then_some(())
    });
    let read = runtime.block_on(get(&mut clients[at_old], "k"));
    assert_eq!(read, Ok("after".to_string()));
    let leaders: Vec<u64> = (1..=3)
        .filter_map(|id| role(&cluster, id).and_then(|(_, leader)| leader))
        .collect();
    assert_eq!(leaders, vec![new; 3], "every member follows one leader");
}

/// Cuts node `id` off alone under the load, until it knows no leader and the others have
/// acknowledged more writes; then heals, and waits for more writes again.
fn cut_off_under_load(cluster: &DbCluster, load: &Load, id: u64, who: &str) {
    partition(cluster, &["--groups", &alone(id)]);
    db::wait_until(
        Duration::from_secs(20),
        || role(cluster, id).is_some_and(|(_, known)| known.is_none()),
        || {
            format!(
                "{who} {id}, cut off, still follows a leader\n{}",
                cluster.logs()
            )
        },
    );
    let timeout = Duration::from_secs(30);
    load.wait_for_more_acks(50, timeout, cluster, &format!("with {who} {id} cut off"));
    partition(cluster, &["--heal"]);
    load.wait_for_more_acks(50, timeout, cluster, &format!("after {who} {id} came back"));
}

#[test]
fn partitions_under_load_lose_no_acknowledged_write() {
    let cluster = DbCluster::start(3, &["--fault-injection"]);
    let load = Load::start(cluster.urls());
    load.wait_for_more_acks(
        100,
        Duration::from_secs(30),
        &cluster,
        "before the partitions",
    );
    // The leader cut off: it steps down, and the majority elects another that takes writes.
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    cut_off_under_load(&cluster, &load, leader, "leader");
    // A follower cut off: the leader keeps its majority.
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    cut_off_under_load(&cluster, &load, follower, "follower");
    load.finish_and_check(
        &cluster,
        "partitions",
        &format!("cut off: the leader, then follower {follower}"),
    );
}

#[test]
fn partitioning_needs_every_member_and_nodes_that_allow_it() {
    // Refused as bad input (exit code 3), with the reason.
    let refused = |endpoints: &[String], groups: &str| {
        let output = db::concord()
            .args(["db", "partition", "--endpoints", &endpoints.join(",")])
            .args(["--groups", groups])
            .output()
            .expect("concord db partition runs");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(3), "{stderr}");
        stderr
    };
    // Without --fault-injection a node serves no /faults, and the command says what to do.
    let cluster = DbCluster::start(3, &[]);
    let stderr = refused(&cluster.urls(), "1/2,3");
    assert!(stderr.contains("--fault-injection"), "{stderr}");
    drop(cluster);

    let cluster = DbCluster::start(3, &["--fault-injection"]);
    let stderr = refused(&cluster.urls()[..2], "1/2");
    assert!(stderr.contains("lacks node(s) [3]"), "{stderr}");
    let stderr = refused(&cluster.urls(), "1/4");
    assert!(stderr.contains("node 4 is not a member"), "{stderr}");
    // Nothing was cut: every member drops no peer, and follows a leader.
    for url in cluster.urls() {
        let output = std::process::Command::new("curl")
            .args(["-s", &format!("{url}/faults")])
            .output()
            .expect("curl runs");
        let answer: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("GET /faults answers JSON");
        assert_eq!(answer["isolated"], serde_json::json!([]), "{url}: {answer}");
    }
    for id in 1..=3 {
        assert!(role(&cluster, id).is_some_and(|(_, leader)| leader.is_some()));
    }
}

/// A client port P for `concord db nemesis --client-port P --peer-port P+1` with `nodes`
/// nodes: every port it will use (P + 10·i and P + 1 + 10·i) is free now.
fn nemesis_ports(nodes: u16) -> u16 {
    db::eventually(
        "free ports for the nemesis cluster",
        Duration::from_secs(10),
        || {
            let base = db::free_port();
            let free = (0..nodes)
                .flat_map(|i| [base + 10 * i, base + 1 + 10 * i])
                .all(|port| {
                    port < 32_000 && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
                });
            free.then_some(base)
        },
    )
}

/// What one `concord db nemesis` run printed and its nodes logged.
struct NemesisRun {
    stdout: String,
    /// Every node's log, each under a `--- node i ---` line.
    logs: String,
}

/// Runs `concord db nemesis` on a fresh 3-node cluster with short timeouts (heartbeat 50 ms,
/// election timeout 300 ms) and the flags given, its data under `dir/run`; checks that it
/// succeeded with nothing lost and a linearizable history.
fn nemesis(dir: &std::path::Path, flags: &[&str]) -> NemesisRun {
    let port = nemesis_ports(3);
    let output = db::concord()
        .args(["db", "nemesis"])
        .args(flags)
        .args(["--heartbeat", "50ms", "--election-timeout", "300ms"])
        .args(["--client-port", &port.to_string()])
        .args(["--peer-port", &(port + 1).to_string()])
        .arg("--dir")
        .arg(dir.join("run"))
        .output()
        .expect("concord db nemesis runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let logs = (1..=3)
        .map(|i| {
            let log = dir.join(format!("run/node{i}.log"));
            format!(
                "--- node {i} ---\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })
        .collect::<String>();
    assert!(
        output.status.success(),
        "{stdout}{}\n{logs}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("acknowledged writes: every one present at every member"),
        "{stdout}"
    );
    assert!(stdout.contains("history: linearizable"), "{stdout}");
    NemesisRun { stdout, logs }
}

#[test]
fn the_nemesis_kills_partitions_pauses_and_replaces_members_and_the_history_checks() {
    // Seed 1 draws every kind of fault in these 8 s (how many fit depends on the machine's
    // speed, so the test asks for two at least).
    let dir = tempfile::tempdir().expect("a temporary directory");
    let NemesisRun { stdout, .. } = nemesis(
        dir.path(),
        &["--seed", "1", "--duration", "8s", "--interval", "700ms"],
    );
    // The seed's schedule injected and undid faults (kill -9 … restart, partition … heal,
    // pause … resume, a failed fsync … restart, a clock jump, remove member … back as a new
    // member), and the workload went on through them.
    let injected = stdout
        .lines()
        .filter(|line| {
            line.contains("kill -9 node")
                || line.contains("partition ")
                || line.contains("(SIGSTOP)")
                || line.contains("next fsync")
                || line.contains("s clock ")
                || line.contains("remove member")
        })
        .count();
    assert!(injected >= 2, "{stdout}");
    assert!(stdout.contains("put ok"), "{stdout}");
    // The history stays in the folder given.
    assert!(dir.path().join("run/history.jsonl").exists());
}

#[test]
fn a_failed_fsync_stops_the_node_under_load_and_its_restart_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let NemesisRun { stdout, logs } = nemesis(
        dir.path(),
        &[
            "--seed",
            "3",
            "--faults",
            "disk",
            "--duration",
            "5s",
            "--interval",
            "700ms",
        ],
    );
    // Each injected failure stopped its node (the process exited on its own with the CLI's
    // error status, 3, never retrying), and the node was restarted from its data directory.
    let injected = stdout.matches("next fsync").count();
    let stopped = stdout
        .matches("had stopped (exit status: 3); restart it")
        .count();
    assert!(injected >= 2, "{stdout}");
    assert_eq!(stopped, injected, "{stdout}");
    assert!(
        logs.matches("syncing the write-ahead log failed").count() >= injected,
        "{logs}"
    );
}

#[test]
fn clocks_jumping_ahead_under_load_lose_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let NemesisRun { stdout, logs } = nemesis(
        dir.path(),
        &[
            "--seed",
            "5",
            "--faults",
            "clock",
            "--duration",
            "4s",
            "--interval",
            "500ms",
        ],
    );
    // Jumps of one to four election timeouts (300 ms), each told to its node.
    let jumps: Vec<u64> = stdout
        .lines()
        .filter_map(|line| line.split("clock ").nth(1)?.strip_suffix(" ms ahead"))
        .map(|ms| ms.parse().expect("a jump in ms"))
        .collect();
    assert!(jumps.len() >= 2, "{stdout}");
    assert!(jumps.iter().all(|ms| (300..1200).contains(ms)), "{jumps:?}");
    assert_eq!(
        logs.matches("the clock jumped ahead").count(),
        jumps.len(),
        "{logs}"
    );
}

#[test]
fn the_nemesis_refuses_bad_flags_before_starting_anything() {
    for (flags, reason) in [
        (&["--faults", "kill,meteor"][..], "unknown fault 'meteor'"),
        (
            &["--faults", "disk,fire"][..],
            "(kill, partition, pause, disk, clock, member)",
        ),
        (
            &["--election-timeout", "soon"][..],
            "--election-timeout 'soon'",
        ),
        (
            &["--faults", "partition", "--nodes", "2"][..],
            "at least 3 nodes",
        ),
        (
            &["--faults", "member", "--nodes", "1"][..],
            "at least 3 nodes",
        ),
        (&["--interval", "0s"][..], "--interval must be positive"),
        (&["--duration", "soon"][..], "--duration 'soon'"),
    ] {
        let output = db::concord()
            .args(["db", "nemesis"])
            .args(flags)
            .output()
            .expect("concord db nemesis runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{flags:?}: {stderr}");
        assert!(stderr.contains(reason), "{flags:?}: {stderr}");
    }
}
