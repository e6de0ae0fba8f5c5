//! A checked client workload over the etcd v3 API, as Jepsen runs one: writers put unique
//! values to a few keys and readers read them linearizably, through every endpoint, while
//! something goes wrong with the cluster (`concord db nemesis`, the crash and partition tests).
//! Every operation is recorded as a [`History`] for the linearizability checker, and once the
//! load stops each member's final values are read, so that [`WorkloadOutcome::lost_writes`] can
//! say whether an acknowledged write is missing.
//!
//! A write whose outcome the client cannot know (a timeout, a connection lost after sending,
//! a leader lost after proposing) is recorded as `info`, and its client process never invokes
//! again (a fresh process takes over), as the history format requires. A write refused before
//! being proposed (no leader, overload, nothing sent) is `fail`. A failed read had no effect,
//! so it is `fail` too.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use concord_check::{EventType, History, Op};
use serde_json::Value as Json;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::pb::etcdserverpb::kv_client::KvClient;
use crate::pb::etcdserverpb::{PutRequest, RangeRequest};

/// What the workload does.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Client URLs (`http://host:port`); each client starts at one and moves on after a
    /// failure.
    pub endpoints: Vec<String>,
    /// Keys written and read (`k0`, `k1`, …).
    pub keys: usize,
    /// Concurrent writers.
    pub writers: u64,
    /// Concurrent readers.
    pub readers: u64,
    /// A request slower than this is abandoned (a write's outcome is then unknown).
    pub request_timeout: Duration,
}

impl WorkloadConfig {
    /// Three keys, four writers, two readers, 2 s per request.
    pub fn new(endpoints: Vec<String>) -> Self {
        WorkloadConfig {
            endpoints,
            keys: 3,
            writers: 4,
            readers: 2,
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// The client's record of what happened, in the order it happened.
struct Recorder {
    start: Instant,
    events: Mutex<Vec<Op>>,
    /// Writes acknowledged so far.
    acked: AtomicU64,
    /// Errors seen, with how they were recorded and how often (for diagnosis).
    errors: Mutex<BTreeMap<String, usize>>,
}

impl Recorder {
    fn record(&self, process: u64, kind: EventType, f: &str, key: &str, value: Json) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
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
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *errors.entry(format!("{kind}: {error}")).or_default() += 1;
    }
}

/// A client of `url` whose connection is made lazily (and remade after a restart), each request
/// bounded by `timeout`. Call it within a tokio runtime.
pub fn client(url: &str, timeout: Duration) -> Result<KvClient<Channel>, String> {
    let channel = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("endpoint '{url}': {e}"))?
        .connect_timeout(Duration::from_millis(500))
        .timeout(timeout)
        .connect_lazy();
    Ok(KvClient::new(channel))
}

/// One client per endpoint.
fn clients(config: &WorkloadConfig) -> Result<Vec<KvClient<Channel>>, String> {
    config
        .endpoints
        .iter()
        .map(|url| client(url, config.request_timeout))
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
        "etcdserver: the leader is unreachable from this member",
        "has not published its client URL",
        "has not joined the cluster",
    ];
    if refused.iter().any(|r| message.contains(r)) {
        return true;
    }
    // Our own connection could not be made, so nothing was sent. (A follower forwarding to a
    // dead leader reports the same, and it proposed nothing either.)
    let text = format!("{message} {status:?}").to_lowercase();
    text.contains("connection refused") || text.contains("tcp connect error")
}

/// A pause after a failure, before trying the next endpoint.
const BACKOFF: Duration = Duration::from_millis(20);

async fn writer(
    index: u64,
    clients: Vec<KvClient<Channel>>,
    config: Arc<WorkloadConfig>,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) {
    let mut process = index * 1_000_000;
    let mut endpoint = index as usize % clients.len();
    let mut sequence = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let key = format!("k{}", (index as usize + sequence as usize) % config.keys);
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
        let result = tokio::time::timeout(config.request_timeout, client.put(request)).await;
        match result {
            Ok(Ok(_)) => {
                recorder.record(process, EventType::Ok, "put", &key, Json::from(value));
                recorder.acked.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            Ok(Err(status)) if definitely_not_applied(&status) => {
                recorder.error("put fail", status.message());
                recorder.record(process, EventType::Fail, "put", &key, Json::from(value));
            }
            other => {
                let error = match other {
                    Ok(Err(status)) => status.message().to_string(),
                    _ => "client timeout".to_string(),
                };
                recorder.error("put info", &error);
                // Unknown outcome: this process never invokes again.
                recorder.record(process, EventType::Info, "put", &key, Json::from(value));
                process += 1;
            }
        }
        endpoint = (endpoint + 1) % clients.len();
        tokio::time::sleep(BACKOFF).await;
    }
}

/// A linearizable read of `key` at `client`: the value (`""` when unset), or the error's
/// message (`timed out` after `timeout`).
pub async fn get(
    client: &mut KvClient<Channel>,
    key: &str,
    timeout: Duration,
) -> Result<String, String> {
    let request = RangeRequest {
        key: key.as_bytes().to_vec(),
        ..RangeRequest::default()
    };
    match tokio::time::timeout(timeout, client.range(request)).await {
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

/// Reads `key` at `client` and records it.
async fn recorded_get(
    process: u64,
    client: &mut KvClient<Channel>,
    key: &str,
    config: &WorkloadConfig,
    recorder: &Recorder,
) -> Option<String> {
    recorder.record(process, EventType::Invoke, "get", key, Json::Null);
    match get(client, key, config.request_timeout).await {
        Ok(value) => {
            let recorded = Json::from(value.clone());
            recorder.record(process, EventType::Ok, "get", key, recorded);
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
    config: Arc<WorkloadConfig>,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) {
    let process = 100_000_000 + index;
    let mut endpoint = index as usize % clients.len();
    let mut sequence = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let key = format!("k{}", sequence % config.keys);
        sequence += 1;
        let mut client = clients[endpoint].clone();
        if recorded_get(process, &mut client, &key, &config, &recorder)
            .await
            .is_none()
        {
            endpoint = (endpoint + 1) % clients.len();
            tokio::time::sleep(BACKOFF).await;
        }
    }
}

/// A running workload.
pub struct Workload {
    config: Arc<WorkloadConfig>,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("config", &self.config)
            .field("acknowledged", &self.acknowledged())
            .finish()
    }
}

/// What a finished workload saw.
#[derive(Debug)]
pub struct WorkloadOutcome {
    /// Every operation, for the checker.
    pub history: History,
    /// Each endpoint's final value of every key, read linearizably after the load stopped.
    pub finals: Vec<BTreeMap<String, String>>,
    /// Errors the clients met, and how often.
    pub errors: BTreeMap<String, usize>,
}

impl Workload {
    /// Starts the clients on the current tokio runtime.
    pub fn start(config: WorkloadConfig) -> Result<Workload, String> {
        if config.endpoints.is_empty() || config.keys == 0 {
            return Err("a workload needs endpoints and keys".into());
        }
        let config = Arc::new(config);
        let recorder = Arc::new(Recorder {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
            acked: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let roles = (0..config.writers).map(|index| (index, true));
        for (index, writes) in roles.chain((0..config.readers).map(|index| (index, false))) {
            let clients = clients(&config)?;
            let (config, recorder, stop) = (
                Arc::clone(&config),
                Arc::clone(&recorder),
                Arc::clone(&stop),
            );
            tasks.push(if writes {
                tokio::spawn(writer(index, clients, config, recorder, stop))
            } else {
                tokio::spawn(reader(index, clients, config, recorder, stop))
            });
        }
        Ok(Workload {
            config,
            recorder,
            stop,
            tasks,
        })
    }

    /// Writes acknowledged so far.
    pub fn acknowledged(&self) -> u64 {
        self.recorder.acked.load(Ordering::SeqCst)
    }

    /// Stops the clients, then reads every key linearizably at every endpoint, retrying each
    /// until it answers or `patience` has passed (an error naming the endpoint).
    pub async fn finish(self, patience: Duration) -> Result<WorkloadOutcome, String> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await
                .map_err(|e| format!("a client task failed: {e}"))?;
        }
        let config = &self.config;
        let recorder = &self.recorder;
        let mut finals = Vec::new();
        for (node, mut client) in clients(config)?.into_iter().enumerate() {
            let mut values = BTreeMap::new();
            let process = 200_000_000 + node as u64;
            for key in (0..config.keys).map(|key| format!("k{key}")) {
                let deadline = Instant::now() + patience;
                let value = loop {
                    if let Some(value) =
                        recorded_get(process, &mut client, &key, config, recorder).await
                    {
                        break value;
                    }
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "{} does not answer a read of {key} within {patience:?}",
                            config.endpoints[node]
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                values.insert(key, value);
            }
            finals.push(values);
        }
        let history = History {
            events: recorder
                .events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        };
        let errors = recorder
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(WorkloadOutcome {
            history,
            finals,
            errors,
        })
    }
}

/// A write of the history: value, invoke time, completion time if acknowledged, outcome.
type Write = (String, u64, Option<u64>, EventType);

impl WorkloadOutcome {
    /// Acknowledged writes that did not survive, one line each (empty: none). A key's final
    /// value must have been written by an acknowledged write that no other acknowledged write
    /// of that key strictly follows, or by a write of unknown outcome.
    pub fn lost_writes(&self) -> Vec<String> {
        let mut writes: BTreeMap<String, Vec<Write>> = BTreeMap::new();
        let mut open: BTreeMap<u64, (String, String, u64)> = BTreeMap::new();
        for event in self.history.events.iter().filter(|e| e.f == "put") {
            let key = event.key.clone().unwrap_or_default();
            let value = event.value.as_str().unwrap_or_default().to_string();
            match event.kind {
                EventType::Invoke => {
                    open.insert(event.process, (key, value, event.time));
                }
                kind => {
                    if let Some((key, value, invoked)) = open.remove(&event.process) {
                        let done = (kind == EventType::Ok).then_some(event.time);
                        writes
                            .entry(key)
                            .or_default()
                            .push((value, invoked, done, kind));
                    }
                }
            }
        }
        let mut lost = Vec::new();
        for (node, values) in self.finals.iter().enumerate() {
            for (key, value) in values {
                let writes = writes.get(key).map(Vec::as_slice).unwrap_or_default();
                let acked: Vec<&Write> = writes.iter().filter(|w| w.3 == EventType::Ok).collect();
                let last_ack_invoked = acked.iter().map(|w| w.1).max();
                if acked.is_empty() && value.is_empty() {
                    continue;
                }
                let endpoint = node + 1;
                let Some(write) = writes
                    .iter()
                    .find(|w| &w.0 == value && w.3 != EventType::Fail)
                else {
                    lost.push(format!(
                        "endpoint {endpoint}: {key} = {value:?}, which no acknowledged write or \
                         write of unknown outcome wrote; acknowledged: {:?}",
                        acked.iter().map(|w| &w.0).collect::<Vec<_>>()
                    ));
                    continue;
                };
                if let (Some(done), Some(last)) = (write.2, last_ack_invoked) {
                    if done < last {
                        lost.push(format!(
                            "endpoint {endpoint}: {key} = {value:?}, but an acknowledged write \
                             invoked after that write completed is lost"
                        ));
                    }
                }
            }
        }
        lost
    }

    /// How many operations ended each way, e.g. `{"get Ok": 510, "put Info": 4, …}`.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for event in &self.history.events {
            if event.kind != EventType::Invoke {
                *counts
                    .entry(format!("{} {:?}", event.f, event.kind))
                    .or_default() += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(process: u64, kind: EventType, f: &str, value: &str, time: u64) -> Op {
        Op {
            process,
            kind,
            f: f.into(),
            key: Some("k0".into()),
            value: Json::from(value),
            time,
        }
    }

    fn outcome(events: Vec<Op>, last: &str) -> WorkloadOutcome {
        WorkloadOutcome {
            history: History { events },
            finals: vec![BTreeMap::from([("k0".to_string(), last.to_string())])],
            errors: BTreeMap::new(),
        }
    }

    #[test]
    fn the_last_acknowledged_write_or_a_later_unknown_one_survives() {
        let events = vec![
            op(1, EventType::Invoke, "put", "a", 1),
            op(1, EventType::Ok, "put", "a", 2),
            op(2, EventType::Invoke, "put", "b", 3),
            op(2, EventType::Info, "put", "b", 4),
            op(3, EventType::Invoke, "put", "c", 5),
            op(3, EventType::Fail, "put", "c", 6),
        ];
        assert!(outcome(events.clone(), "a").lost_writes().is_empty());
        assert!(outcome(events.clone(), "b").lost_writes().is_empty());
        let lost = outcome(events.clone(), "c").lost_writes();
        assert!(lost[0].contains("no acknowledged write"), "{lost:?}");
        let lost = outcome(events, "").lost_writes();
        assert_eq!(lost.len(), 1, "the acknowledged write is gone: {lost:?}");
    }

    #[test]
    fn an_older_acknowledged_value_after_a_newer_one_is_a_lost_write() {
        let events = vec![
            op(1, EventType::Invoke, "put", "a", 1),
            op(1, EventType::Ok, "put", "a", 2),
            op(2, EventType::Invoke, "put", "b", 3),
            op(2, EventType::Ok, "put", "b", 4),
        ];
        let lost = outcome(events.clone(), "a").lost_writes();
        assert!(lost[0].contains("is lost"), "{lost:?}");
        assert!(outcome(events, "b").lost_writes().is_empty());
    }

    #[test]
    fn refused_and_unknown_writes_are_told_apart() {
        for message in [
            "etcdserver: no leader",
            "etcdserver: the leader is unreachable from this member",
            "etcdserver: too many requests",
        ] {
            assert!(definitely_not_applied(&tonic::Status::unavailable(message)));
        }
        for message in [
            "etcdserver: request timed out",
            "etcdserver: request timed out, possibly due to connection lost",
        ] {
            assert!(!definitely_not_applied(&tonic::Status::unavailable(
                message
            )));
        }
    }
}
