//! A checked client workload over the etcd v3 API, as Jepsen runs one: writers put unique
//! values to a few keys and readers read them linearizably, through every endpoint, while
//! something goes wrong with the cluster (`concord db nemesis`, the crash and partition tests).
//! Every operation is recorded as a [`History`] for the linearizability checker, and once the
//! load stops each member's final values are read, so that [`WorkloadOutcome::lost_writes`] can
//! say whether an acknowledged write is missing.
//!
//! Watchers, one per endpoint, watch the whole key space from revision 1 and, after any
//! error, watch again from the revision after the last they saw, at the next endpoint.
//! [`WorkloadOutcome::watch_problems`] then checks etcd's watch guarantees: each watcher saw
//! every revision once, in order, with no gap; all saw the same event at each revision; every
//! acknowledged write is among them at the revision its response named.
//!
//! A write whose outcome the client cannot know (a timeout, a connection lost after sending,
//! a leader lost after proposing) is recorded as `info`, and its client process never invokes
//! again (a fresh process takes over), as the history format requires. A write refused before
//! being proposed (no leader, overload, nothing sent) is `fail`. A failed read had no effect,
//! so it is `fail` too.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use concord_check::{EventType, History, Op};
use serde_json::Value as Json;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::pb::etcdserverpb::kv_client::KvClient;
use crate::pb::etcdserverpb::watch_client::WatchClient;
use crate::pb::etcdserverpb::{
    watch_request, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest,
};

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
    /// Watchers of the whole key space.
    pub watchers: u64,
    /// A request slower than this is abandoned (a write's outcome is then unknown).
    pub request_timeout: Duration,
}

impl WorkloadConfig {
    /// Three keys, four writers, two readers, a watcher per endpoint, 2 s per request.
    pub fn new(endpoints: Vec<String>) -> Self {
        WorkloadConfig {
            watchers: endpoints.len() as u64,
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
    /// Each acknowledged write's key, value and revision (from its response's header).
    acked_revisions: Mutex<Vec<(String, String, i64)>>,
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
    channel(url, timeout).map(KvClient::new)
}

/// A channel to `url` for any of the etcd services, made as [`client`]'s.
pub fn channel(url: &str, timeout: Duration) -> Result<Channel, String> {
    Ok(lazy_endpoint(url)?.timeout(timeout).connect_lazy())
}

/// `url`, connected to lazily and given half a second to connect.
fn lazy_endpoint(url: &str) -> Result<Endpoint, String> {
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("endpoint '{url}': {e}"))?
        .connect_timeout(Duration::from_millis(500)))
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
            Ok(Ok(response)) => {
                let revision = response.into_inner().header.map_or(0, |h| h.revision);
                recorder.record(
                    process,
                    EventType::Ok,
                    "put",
                    &key,
                    Json::from(value.clone()),
                );
                recorder
                    .acked_revisions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((key, value, revision));
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
    read(client, key, timeout).await.map(|(value, _)| value)
}

/// [`get`], with the store's revision the answer was read at.
async fn read(
    client: &mut KvClient<Channel>,
    key: &str,
    timeout: Duration,
) -> Result<(String, i64), String> {
    let request = RangeRequest {
        key: key.as_bytes().to_vec(),
        ..RangeRequest::default()
    };
    match tokio::time::timeout(timeout, client.range(request)).await {
        Ok(Ok(response)) => {
            let response = response.into_inner();
            let value = response
                .kvs
                .first()
                .map(|kv| &kv.value[..])
                .unwrap_or_default();
            let revision = response.header.map_or(0, |h| h.revision);
            Ok((String::from_utf8_lossy(value).into_owned(), revision))
        }
        Ok(Err(status)) => Err(status.message().to_string()),
        Err(_) => Err("timed out".to_string()),
    }
}

/// Reads `key` at `client` and records it; the value and the revision it was read at.
async fn recorded_get(
    process: u64,
    client: &mut KvClient<Channel>,
    key: &str,
    config: &WorkloadConfig,
    recorder: &Recorder,
) -> Option<(String, i64)> {
    recorder.record(process, EventType::Invoke, "get", key, Json::Null);
    match read(client, key, config.request_timeout).await {
        Ok((value, revision)) => {
            let recorded = Json::from(value.clone());
            recorder.record(process, EventType::Ok, "get", key, recorded);
            Some((value, revision))
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

/// What one watcher saw.
#[derive(Clone, Debug, Default)]
pub struct WatchLog {
    /// Each event's revision, key and value (empty for a deletion), in arrival order.
    pub events: Vec<(i64, String, String)>,
    /// Streams that ended or failed, after which it watched again.
    pub reconnects: usize,
    /// What the servers did that a watcher must never see (a cancellation, a compaction).
    pub problems: Vec<String>,
}

/// Watches every key from revision 1 until told to stop and caught up with `target`; after an
/// error it watches again, at the next endpoint, from the revision after the last it saw.
async fn watcher(
    index: u64,
    config: Arc<WorkloadConfig>,
    log: Arc<Mutex<WatchLog>>,
    stop: Arc<AtomicBool>,
    target: Arc<AtomicI64>,
) {
    let mut endpoint = index as usize % config.endpoints.len();
    let mut last = 0i64;
    let done = |last: i64| stop.load(Ordering::SeqCst) && last >= target.load(Ordering::SeqCst);
    while !done(last) {
        let url = &config.endpoints[endpoint];
        endpoint = (endpoint + 1) % config.endpoints.len();
        // No request timeout: a watch stream lives as long as it is read. (The URLs were
        // checked when the workload started.)
        let Ok(target) = lazy_endpoint(url) else {
            return;
        };
        let mut client = WatchClient::new(target.connect_lazy());
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: vec![0],
                    range_end: vec![0],
                    start_revision: last + 1,
                    ..WatchCreateRequest::default()
                },
            )),
        };
        let requests =
            tokio_stream::StreamExt::chain(tokio_stream::once(create), tokio_stream::pending());
        let opened = tokio::time::timeout(config.request_timeout, client.watch(requests)).await;
        let Ok(Ok(response)) = opened else {
            tokio::time::sleep(BACKOFF).await;
            continue;
        };
        let mut stream = response.into_inner();
        loop {
            if done(last) {
                return;
            }
            let message = match tokio::time::timeout(BACKOFF * 10, stream.message()).await {
                Err(_) => continue,
                Ok(Ok(Some(message))) => message,
                Ok(Ok(None) | Err(_)) => break,
            };
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            if message.canceled || message.compact_revision != 0 {
                log.problems.push(format!(
                    "{url} canceled the watch from revision {}: {:?} (compacted at {})",
                    last + 1,
                    message.cancel_reason,
                    message.compact_revision
                ));
                break;
            }
            for event in message.events {
                let Some(kv) = event.kv else { continue };
                last = last.max(kv.mod_revision);
                log.events.push((
                    kv.mod_revision,
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    String::from_utf8_lossy(&kv.value).into_owned(),
                ));
            }
        }
        log.lock().unwrap_or_else(|e| e.into_inner()).reconnects += 1;
        tokio::time::sleep(BACKOFF).await;
    }
}

/// A running workload.
pub struct Workload {
    config: Arc<WorkloadConfig>,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    watches: Vec<(Arc<Mutex<WatchLog>>, JoinHandle<()>)>,
    /// The revision watchers must reach before they stop (set when the workload finishes).
    target: Arc<AtomicI64>,
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
    /// What each watcher saw.
    pub watches: Vec<WatchLog>,
    /// Each acknowledged write's key, value and revision.
    pub acked_revisions: Vec<(String, String, i64)>,
    /// The store's revision when the load had stopped: every watcher must have seen up to it.
    pub final_revision: i64,
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
            acked_revisions: Mutex::new(Vec::new()),
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
        let target = Arc::new(AtomicI64::new(i64::MAX));
        let watches = (0..config.watchers)
            .map(|index| {
                let log = Arc::new(Mutex::new(WatchLog::default()));
                let task = tokio::spawn(watcher(
                    index,
                    Arc::clone(&config),
                    Arc::clone(&log),
                    Arc::clone(&stop),
                    Arc::clone(&target),
                ));
                (log, task)
            })
            .collect();
        Ok(Workload {
            config,
            recorder,
            stop,
            tasks,
            watches,
            target,
        })
    }

    /// Writes acknowledged so far.
    pub fn acknowledged(&self) -> u64 {
        let acked = self.recorder.acked_revisions.lock();
        acked.unwrap_or_else(|e| e.into_inner()).len() as u64
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
        // The highest revision a final read saw: every write is at or below it.
        let mut final_revision = 0;
        for (node, mut client) in clients(config)?.into_iter().enumerate() {
            let mut values = BTreeMap::new();
            let process = 200_000_000 + node as u64;
            for key in (0..config.keys).map(|key| format!("k{key}")) {
                let deadline = Instant::now() + patience;
                let value = loop {
                    if let Some((value, revision)) =
                        recorded_get(process, &mut client, &key, config, recorder).await
                    {
                        final_revision = final_revision.max(revision);
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
        // Every watcher must catch up with the store's final revision.
        self.target.store(final_revision, Ordering::SeqCst);
        let mut watches = Vec::new();
        for (index, (log, task)) in self.watches.into_iter().enumerate() {
            let caught_up = tokio::time::timeout(patience, task).await;
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if caught_up.is_err() {
                let seen = log.events.last().map_or(0, |e| e.0);
                log.problems.push(format!(
                    "watcher {index} saw up to revision {seen} of {final_revision} within \
                     {patience:?}"
                ));
            }
            watches.push(log);
        }
        let acked_revisions = recorder
            .acked_revisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
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
            watches,
            acked_revisions,
            final_revision,
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

    /// Where the watchers break etcd's guarantees, one line each (empty: nowhere), for a
    /// workload whose writes are the cluster's only ones, from its start: each watcher saw
    /// every revision from 2 (the first write) on once, in order, up to the final revision at
    /// least; all saw the same key and value at each revision; every acknowledged write is
    /// there at the revision its response named; no write the client was told failed is.
    pub fn watch_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let failed: std::collections::BTreeSet<&str> = self
            .history
            .events
            .iter()
            .filter(|e| e.f == "put" && e.kind == EventType::Fail)
            .filter_map(|e| e.value.as_str())
            .collect();
        // Revision → key, value and the first watcher that saw it.
        let mut seen: BTreeMap<i64, (&str, &str, usize)> = BTreeMap::new();
        for (index, log) in self.watches.iter().enumerate() {
            problems.extend(log.problems.iter().map(|p| format!("watcher {index}: {p}")));
            let mut previous = 1;
            let mut broken = !log.problems.is_empty();
            for (revision, key, value) in &log.events {
                if *revision != previous + 1 {
                    broken = true;
                    let what = if *revision <= previous {
                        "again or out of order"
                    } else {
                        "a gap"
                    };
                    problems.push(format!(
                        "watcher {index}: revision {revision} after {previous} ({what})"
                    ));
                    break;
                }
                previous = *revision;
                if failed.contains(value.as_str()) {
                    problems.push(format!(
                        "watcher {index} saw {key}={value} at revision {revision}, a write its \
                         client was told failed"
                    ));
                }
                match seen.get(revision) {
                    Some((k, v, other)) if (*k, *v) != (key.as_str(), value.as_str()) => {
                        problems.push(format!(
                            "revision {revision}: watcher {other} saw {k}={v}, watcher {index} \
                             saw {key}={value}"
                        ));
                    }
                    Some(_) => {}
                    None => {
                        seen.insert(*revision, (key, value, index));
                    }
                }
            }
            if previous < self.final_revision && !broken {
                problems.push(format!(
                    "watcher {index} stopped at revision {previous} of {}",
                    self.final_revision
                ));
            }
        }
        for (key, value, revision) in &self.acked_revisions {
            match seen.get(revision) {
                Some((k, v, _)) if (*k, *v) == (key.as_str(), value.as_str()) => {}
                Some((k, v, index)) => problems.push(format!(
                    "the acknowledged write {key}={value} was at revision {revision}, where \
                     watcher {index} saw {k}={v}"
                )),
                None => problems.push(format!(
                    "the acknowledged write {key}={value} at revision {revision}: no watcher \
                     saw it"
                )),
            }
        }
        problems
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

    /// One put per entry, one after another, each by its own process, ending as given.
    fn puts(writes: &[(&str, EventType)]) -> Vec<Op> {
        let mut events = Vec::new();
        for (at, (value, kind)) in (1u64..).zip(writes) {
            events.push(op(at, EventType::Invoke, "put", value, 2 * at - 1));
            events.push(op(at, *kind, "put", value, 2 * at));
        }
        events
    }

    fn outcome(events: Vec<Op>, last: &str) -> WorkloadOutcome {
        WorkloadOutcome {
            history: History { events },
            finals: vec![BTreeMap::from([("k0".to_string(), last.to_string())])],
            errors: BTreeMap::new(),
            watches: Vec::new(),
            acked_revisions: Vec::new(),
            final_revision: 1,
        }
    }

    fn watched(revisions: &[(i64, &str)]) -> WatchLog {
        WatchLog {
            events: revisions
                .iter()
                .map(|(revision, value)| (*revision, "k0".to_string(), value.to_string()))
                .collect(),
            ..WatchLog::default()
        }
    }

    #[test]
    fn watchers_must_see_every_revision_once_in_order_and_alike() {
        let events = puts(&[
            ("a", EventType::Ok),
            ("b", EventType::Ok),
            ("x", EventType::Fail),
        ]);
        let mut outcome = outcome(events, "b");
        outcome.acked_revisions = vec![("k0".into(), "a".into(), 2), ("k0".into(), "b".into(), 3)];
        outcome.final_revision = 3;
        let problems = |watches: Vec<WatchLog>, outcome: &mut WorkloadOutcome| {
            outcome.watches = watches;
            outcome.watch_problems()
        };
        let good = watched(&[(2, "a"), (3, "b")]);
        assert!(problems(vec![good.clone(), good.clone()], &mut outcome).is_empty());
        for (bad, expected) in [
            (watched(&[(3, "b")]), "revision 3 after 1 (a gap)"),
            (
                watched(&[(2, "a"), (2, "a"), (3, "b")]),
                "revision 2 after 2 (again",
            ),
            (watched(&[(2, "a")]), "stopped at revision 2 of 3"),
            (
                watched(&[(2, "a"), (3, "c")]),
                "watcher 0 saw k0=b, watcher 1 saw k0=c",
            ),
            (watched(&[(2, "a"), (3, "x")]), "was told failed"),
        ] {
            let found = problems(vec![good.clone(), bad], &mut outcome);
            assert!(
                found.iter().any(|p| p.contains(expected)),
                "{expected}: {found:?}"
            );
        }
        let found = problems(vec![watched(&[(2, "a"), (3, "z")])], &mut outcome);
        assert!(
            found
                .iter()
                .any(|p| p.contains("the acknowledged write k0=b was at revision 3")),
            "{found:?}"
        );
    }

    #[test]
    fn the_last_acknowledged_write_or_a_later_unknown_one_survives() {
        let events = puts(&[
            ("a", EventType::Ok),
            ("b", EventType::Info),
            ("c", EventType::Fail),
        ]);
        assert!(outcome(events.clone(), "a").lost_writes().is_empty());
        assert!(outcome(events.clone(), "b").lost_writes().is_empty());
        let lost = outcome(events.clone(), "c").lost_writes();
        assert!(lost[0].contains("no acknowledged write"), "{lost:?}");
        let lost = outcome(events, "").lost_writes();
        assert_eq!(lost.len(), 1, "the acknowledged write is gone: {lost:?}");
    }

    #[test]
    fn an_older_acknowledged_value_after_a_newer_one_is_a_lost_write() {
        let events = puts(&[("a", EventType::Ok), ("b", EventType::Ok)]);
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
