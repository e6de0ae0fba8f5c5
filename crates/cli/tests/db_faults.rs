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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concord_check::history::{EventType, History, Op};
use concord_check::{check_linearizability, StringKvModel, Verdict};
use concord_kv::pb::etcdserverpb::kv_client::KvClient;
use concord_kv::pb::etcdserverpb::{PutRequest, RangeRequest};
use db::DbCluster;
use serde_json::Value as Json;
use tonic::transport::{Channel, Endpoint};

/// Keys written and read.
const KEYS: usize = 3;
/// Concurrent writers and readers.
const WRITERS: u64 = 4;
const READERS: u64 = 2;
/// A request slower than this is abandoned (a write's outcome is then unknown).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The client's record of what happened, in the order it happened.
struct Recorder {
    start: Instant,
    events: Mutex<Vec<Op>>,
    /// Writes acknowledged so far.
    acked: AtomicU64,
    /// Errors seen, with how they were recorded and how often (printed for diagnosis).
    errors: Mutex<BTreeMap<String, usize>>,
}

impl Recorder {
    fn new() -> Self {
        Recorder {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
            acked: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    fn record(&self, process: u64, kind: EventType, f: &str, key: &str, value: Json) {
        let mut events = self.events.lock().unwrap();
        // Timestamped under the lock, so events are in time order.
        let time = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        events.push(Op {
            process,
            kind,
            f: f.to_string(),
            key: Some(key.to_string()),
            value,
            time,
        });
    }

    fn error(&self, kind: &str, error: &str) {
        let error: String = error.chars().take(120).collect();
        *self
            .errors
            .lock()
            .unwrap()
            .entry(format!("{kind}: {error}"))
            .or_default() += 1;
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    fn history(&self) -> History {
        History {
            events: self.events.lock().unwrap().clone(),
        }
    }
}

/// One gRPC channel per endpoint; connections are made lazily and remade after a restart.
fn clients(urls: &[String]) -> Vec<KvClient<Channel>> {
    urls.iter()
        .map(|url| {
            let channel = Endpoint::from_shared(url.clone())
                .expect("a valid URL")
                .connect_timeout(Duration::from_millis(500))
                .timeout(REQUEST_TIMEOUT)
                .connect_lazy();
            KvClient::new(channel)
        })
        .collect()
}

/// Whether a failed write certainly did not take effect: it was refused before being proposed
/// (no or another leader, overload) or never reached a server. Anything else — a timeout, a
/// reset connection, a leader lost after proposing — leaves the outcome unknown.
fn definitely_not_applied(status: &tonic::Status) -> bool {
    let message = status.message();
    let refused = [
        "etcdserver: no leader",
        "etcdserver: not leader",
        "etcdserver: leader changed",
        "etcdserver: too many requests",
        "has not published its client URL",
        "has not joined the cluster",
    ];
    if refused
        .iter()
        .any(|r| message.starts_with(r) || message.contains(r))
    {
        return true;
    }
    // Our own connection could not be made, so nothing was sent. (A follower forwarding to a
    // dead leader reports the same, and it proposed nothing either.)
    let text = format!("{message} {status:?}").to_lowercase();
    text.contains("connection refused") || text.contains("tcp connect error")
}

async fn writer(
    index: u64,
    clients: Vec<KvClient<Channel>>,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) {
    let mut process = index * 1_000_000;
    let mut endpoint = index as usize % clients.len();
    let mut sequence = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let key = format!("k{}", (index as usize + sequence as usize) % KEYS);
        let value = format!("w{index}-{sequence}");
        sequence += 1;
        recorder.record(
            process,
            EventType::Invoke,
            "put",
            &key,
            Json::from(value.clone()),
        );
        let mut client = clients[endpoint].clone();
        let request = PutRequest {
            key: key.clone().into_bytes(),
            value: value.clone().into_bytes(),
            ..PutRequest::default()
        };
        let result = tokio::time::timeout(REQUEST_TIMEOUT, client.put(request)).await;
        match result {
            Ok(Ok(_)) => {
                recorder.record(process, EventType::Ok, "put", &key, Json::from(value));
                recorder.acked.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Err(status)) if definitely_not_applied(&status) => {
                recorder.error("put fail", status.message());
                recorder.record(process, EventType::Fail, "put", &key, Json::from(value));
                endpoint = (endpoint + 1) % clients.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => {
                recorder.error(
                    "put info",
                    &match other {
                        Ok(Err(status)) => status.message().to_string(),
                        _ => "client timeout".to_string(),
                    },
                );
                // Unknown outcome: this process never invokes again (history-format.md).
                recorder.record(process, EventType::Info, "put", &key, Json::from(value));
                process += 1;
                endpoint = (endpoint + 1) % clients.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A linearizable read of `key` at `client`: the value (`""` when unset), or the error.
async fn get(client: &mut KvClient<Channel>, key: &str) -> Result<String, String> {
    let request = RangeRequest {
        key: key.as_bytes().to_vec(),
        ..RangeRequest::default()
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, client.range(request)).await {
        Ok(Ok(response)) => Ok(response
            .into_inner()
            .kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .unwrap_or_default()),
        Ok(Err(status)) => Err(status.message().to_string()),
        Err(_) => Err("timed out".to_string()),
    }
}

/// Reads `key` at `client` and records it; a failed read had no effect, so it is `fail`.
async fn recorded_get(
    process: u64,
    client: &mut KvClient<Channel>,
    key: &str,
    recorder: &Recorder,
) -> Option<String> {
    recorder.record(process, EventType::Invoke, "get", key, Json::Null);
    match get(client, key).await {
        Ok(value) => {
            recorder.record(
                process,
                EventType::Ok,
                "get",
                key,
                Json::from(value.clone()),
            );
            Some(value)
        }
        Err(error) => {
            recorder.error("get fail", &error);
            recorder.record(process, EventType::Fail, "get", key, Json::Null);
            None
        }
    }
}

async fn reader(
    index: u64,
    clients: Vec<KvClient<Channel>>,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) {
    let process = 100_000_000 + index;
    let mut endpoint = index as usize % clients.len();
    let mut sequence = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let key = format!("k{}", sequence % KEYS);
        sequence += 1;
        let mut client = clients[endpoint].clone();
        if recorded_get(process, &mut client, &key, &recorder)
            .await
            .is_none()
        {
            endpoint = (endpoint + 1) % clients.len();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A load running on its own runtime while the test thread kills and restarts nodes.
struct Load {
    runtime: tokio::runtime::Runtime,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    urls: Vec<String>,
}

impl Load {
    fn start(urls: Vec<String>) -> Load {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let recorder = Arc::new(Recorder::new());
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        {
            let _guard = runtime.enter();
            for index in 0..WRITERS {
                tasks.push(runtime.spawn(writer(
                    index,
                    clients(&urls),
                    Arc::clone(&recorder),
                    Arc::clone(&stop),
                )));
            }
            for index in 0..READERS {
                tasks.push(runtime.spawn(reader(
                    index,
                    clients(&urls),
                    Arc::clone(&recorder),
                    Arc::clone(&stop),
                )));
            }
        }
        Load {
            runtime,
            recorder,
            stop,
            tasks,
            urls,
        }
    }

    /// Waits until `more` writes beyond those acknowledged now are acknowledged.
    fn wait_for_more_acks(&self, more: u64, timeout: Duration, cluster: &DbCluster, what: &str) {
        let target = self.recorder.acked() + more;
        let deadline = Instant::now() + timeout;
        while self.recorder.acked() < target {
            assert!(
                Instant::now() < deadline,
                "{what}: only {} of {target} writes acknowledged within {timeout:?}\n{}",
                self.recorder.acked(),
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the load, then reads every key linearizably at every node (retrying until each
    /// answers) and returns the history with those final reads, and the values each node read.
    fn finish(self, cluster: &DbCluster) -> (History, Vec<BTreeMap<String, String>>) {
        self.stop.store(true, Ordering::SeqCst);
        let Load {
            runtime,
            recorder,
            tasks,
            urls,
            ..
        } = self;
        runtime.block_on(async {
            for task in tasks {
                task.await.expect("a load task");
            }
        });
        let finals = runtime.block_on(async {
            let mut finals = Vec::new();
            for (node, mut client) in clients(&urls).into_iter().enumerate() {
                let mut values = BTreeMap::new();
                for key in 0..KEYS {
                    let key = format!("k{key}");
                    let deadline = Instant::now() + Duration::from_secs(30);
                    let process = 200_000_000 + node as u64;
                    let value = loop {
                        if let Some(value) =
                            recorded_get(process, &mut client, &key, &recorder).await
                        {
                            break value;
                        }
                        assert!(
                            Instant::now() < deadline,
                            "node {} does not answer a read of {key}\n{}",
                            node + 1,
                            cluster.logs()
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    };
                    values.insert(key, value);
                }
                finals.push(values);
            }
            finals
        });
        eprintln!("errors: {:#?}", recorder.errors.lock().unwrap());
        (recorder.history(), finals)
    }
}

impl Load {
    /// Stops the load and checks what it saw: every acknowledged write survives, and the history
    /// is linearizable. `name` names a history kept for a failure; `what` says what was done.
    fn finish_and_check(self, cluster: &DbCluster, name: &str, what: &str) {
        let (history, finals) = self.finish(cluster);
        eprintln!("{what}; {}", outcome_counts(&history));
        assert_acknowledged_writes_present(&history, &finals);
        assert_linearizable(&history, cluster, name);
    }
}

/// A write of the history: value, invoke time, completion time if acknowledged, outcome.
type Write = (String, u64, Option<u64>, EventType);

/// Every acknowledged write survives: a key's final value was written by an acknowledged write
/// that no other acknowledged write of that key strictly follows, or by a write of unknown
/// outcome.
fn assert_acknowledged_writes_present(history: &History, finals: &[BTreeMap<String, String>]) {
    // Per key: (value, invoke time, completion time or None when not acknowledged).
    let mut writes: BTreeMap<String, Vec<Write>> = BTreeMap::new();
    let mut open: BTreeMap<u64, (String, String, u64)> = BTreeMap::new();
    for event in &history.events {
        if event.f != "put" {
            continue;
        }
        let key = event.key.clone().unwrap_or_default();
        let value = event.value.as_str().unwrap_or_default().to_string();
        match event.kind {
            EventType::Invoke => {
                open.insert(event.process, (key, value, event.time));
            }
            kind => {
                let (key, value, invoked) = open.remove(&event.process).expect("an invoke");
                let done = (kind == EventType::Ok).then_some(event.time);
                writes
                    .entry(key)
                    .or_default()
                    .push((value, invoked, done, kind));
            }
        }
    }
    for (node, values) in finals.iter().enumerate() {
        for (key, value) in values {
            let writes = writes.get(key).cloned().unwrap_or_default();
            let acked: Vec<_> = writes.iter().filter(|w| w.3 == EventType::Ok).collect();
            let last_ack_invoked = acked.iter().map(|w| w.1).max();
            if acked.is_empty() && value.is_empty() {
                continue;
            }
            let Some(write) = writes
                .iter()
                .find(|w| &w.0 == value && w.3 != EventType::Fail)
            else {
                panic!(
                    "node {}: {key} = {value:?}, which no write (acknowledged or of unknown \
                     outcome) wrote; acknowledged: {:?}",
                    node + 1,
                    acked.iter().map(|w| &w.0).collect::<Vec<_>>()
                );
            };
            if let (Some(done), Some(last)) = (write.2, last_ack_invoked) {
                assert!(
                    done >= last,
                    "node {}: {key} = {value:?}, but an acknowledged write invoked after that \
                     write completed is lost",
                    node + 1
                );
            }
        }
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

fn outcome_counts(history: &History) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for event in &history.events {
        if event.kind != EventType::Invoke {
            *counts
                .entry(format!("{} {:?}", event.f, event.kind))
                .or_default() += 1;
        }
    }
    format!("{counts:?}")
}

#[test]
fn killing_the_leader_under_load_loses_no_acknowledged_write() {
    let mut cluster = DbCluster::start(3, &[]);
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
    let mut cluster = DbCluster::start(3, &[]);
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
    // with a status clients retry (etcd's clients retry Unavailable at another member).
    let status = runtime
        .block_on(client.put(put("during")))
        .expect_err("no leader can take the write");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains("the leader is unreachable from this member")
            || status.message().contains("possibly due to connection lost")
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
    // Nothing was cut: the cluster still serves through every member.
    for id in 1..=3 {
        assert!(role(&cluster, id).is_some_and(|(_, leader)| leader.is_some()));
    }
}
