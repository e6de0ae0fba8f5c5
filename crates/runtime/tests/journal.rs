//! The host with a toy node (a journal that persists each request, then acknowledges it): the
//! persist barrier, restarts, compaction and fatal WAL errors.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{OpenOnDrop, PATIENCE};
use concord_core::{
    Duration as Nanos, Effect, Env, Input, Node, NodeId, NodeStatus, PersistToken, Rng, Role, Time,
    Violation,
};
use concord_runtime::{
    start, CompactionPolicy, HostConfig, HostError, NodeHandle, SyncGate, Wal, WalError, WalOptions,
};

/// The write a journal treats as a checkpoint ([`Node::is_checkpoint`]).
const CHECKPOINT: u64 = u64::MAX;

/// A one-node journal: each request is persisted, then acknowledged.
#[derive(Debug)]
struct Journal {
    id: NodeId,
    next_token: PersistToken,
    entries: Vec<u64>,
}

impl Node for Journal {
    type Message = ();
    type Request = u64;
    type Response = u64;
    type Write = u64;
    type Storage = Vec<u64>;
    type Command = u64;
    type Config = ();

    fn restore(id: NodeId, _: &[NodeId], _: &(), storage: &Vec<u64>, _: Time, _: &mut Rng) -> Self {
        Journal {
            id,
            next_token: 0,
            entries: storage.clone(),
        }
    }

    fn apply_write(storage: &mut Vec<u64>, write: &u64) {
        storage.push(*write);
    }

    fn is_checkpoint(write: &u64) -> bool {
        *write == CHECKPOINT
    }

    fn step(
        &mut self,
        _: &mut Env<'_>,
        input: Input<(), u64>,
        effects: &mut Vec<Effect<(), u64, u64, u64>>,
    ) {
        if let Input::Request { id, request } = input {
            self.next_token += 1;
            self.entries.push(request);
            effects.push(Effect::Persist {
                token: self.next_token,
                write: request,
            });
            effects.push(Effect::Reply {
                id,
                response: request,
            });
        }
    }

    fn next_deadline(&self) -> Option<Time> {
        None
    }

    fn status(&self) -> NodeStatus {
        let mut status = NodeStatus::down(self.id);
        status.role = Role::Leader;
        status.log_length = self.entries.len() as u64;
        status.applied_index = self.entries.len() as u64;
        status
    }

    fn check_invariants(&self) -> Result<(), Violation> {
        Ok(())
    }

    fn id(&self) -> NodeId {
        self.id
    }

    fn election_timeout(_: &()) -> Nanos {
        0
    }
}

/// The entries a running host's journal holds.
async fn journal_entries(host: &NodeHandle<Journal>) -> Vec<u64> {
    host.inspect(|journal| journal.entries.clone())
        .await
        .unwrap()
}

fn journal_config(dir: &std::path::Path, gate: &SyncGate) -> HostConfig<Journal> {
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut config = HostConfig::new(0, vec![0], listen, dir.to_path_buf(), ());
    config.sync_gate = Some(gate.clone());
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_waits_for_its_write_to_be_durable() {
    let dir = tempfile::tempdir().unwrap();
    let gate = SyncGate::new();
    let _open_on_failure = OpenOnDrop(gate.clone());
    let host = start(journal_config(dir.path(), &gate)).await.unwrap();
    assert_eq!(
        host.request(1).await.unwrap(),
        1,
        "an open gate lets it through"
    );

    gate.close();
    let pending = tokio::spawn({
        let host = host.clone();
        async move { host.request(2).await }
    });
    // The node has stepped (its status counts the entry), but the write is not durable.
    let mut applied = host.watch_applied();
    tokio::time::timeout(PATIENCE, applied.wait_for(|&n| n == 2))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished(), "the reply overtook its write");

    gate.open();
    let reply = tokio::time::timeout(PATIENCE, pending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.unwrap(), 2);
    host.shutdown().await.unwrap();

    // Both acknowledged writes are in the log.
    let (_, records, _) = Wal::open(&dir.path().join("wal"), WalOptions::default()).unwrap();
    assert_eq!(records.len(), 2);
    let host = start(journal_config(dir.path(), &gate)).await.unwrap();
    let entries = journal_entries(&host).await;
    assert_eq!(entries, vec![1, 2]);
    host.shutdown().await.unwrap();
}

/// Takes `count` requests on a host whose log is compacted early (1 KiB segments, a rewrite
/// from 4 KiB) and whose physical records hold at most `max_record_bytes`; checks that the
/// log was compacted and that a restart recovers every entry. Returns the records the log
/// held after the first run.
async fn compact_and_restart(count: u64, max_record_bytes: u32) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let gate = SyncGate::new();
    let mut config = journal_config(dir.path(), &gate);
    config.wal.max_segment_bytes = 1024;
    config.wal.max_record_bytes = max_record_bytes;
    config.compaction = CompactionPolicy {
        min_bytes: 4096,
        growth_factor: 2,
    };
    let host = start(config).await.unwrap();
    for i in 0..count {
        assert_eq!(host.request(i).await.unwrap(), i);
    }
    assert!(
        host.metrics().wal_compactions.get() > 0,
        "the log was compacted"
    );
    host.shutdown().await.unwrap();
    let (_, records, _) = Wal::open(&dir.path().join("wal"), WalOptions::default()).unwrap();

    let host = start(journal_config(dir.path(), &gate)).await.unwrap();
    let entries = journal_entries(&host).await;
    assert_eq!(entries, (0..count).collect::<Vec<u64>>());
    host.shutdown().await.unwrap();
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_rewrites_the_log_as_one_base_record_and_restarts_from_it() {
    let records = compact_and_restart(2000, WalOptions::default().max_record_bytes).await;
    assert!(
        records.len() < 2000,
        "{} records after compaction",
        records.len()
    );
}

/// A base record many times longer than one physical record (as a large store's snapshot is
/// longer than `max_record_bytes`) is written in fragments; the host goes on, and a restart
/// reads it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_record_longer_than_a_physical_record_is_written_in_fragments() {
    let records = compact_and_restart(1000, 64).await;
    assert!(
        records.iter().any(|record| record.len() > 64),
        "a record longer than 64 bytes was recovered whole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_log_stops_the_start_with_the_segment_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let gate = SyncGate::new();
    let host = start(journal_config(dir.path(), &gate)).await.unwrap();
    for i in 0..5 {
        host.request(i).await.unwrap();
    }
    host.shutdown().await.unwrap();
    let segment = dir.path().join("wal").join("00000000000000000001.log");
    let mut data = std::fs::read(&segment).unwrap();
    data[32 + 9] ^= 0x40; // inside the first record's payload
    std::fs::write(&segment, &data).unwrap();
    match start(journal_config(dir.path(), &gate)).await {
        Err(HostError::Recovery(error)) => {
            assert!(
                matches!(*error, WalError::Corrupt { offset: 32, .. }),
                "{error}"
            );
        }
        other => panic!("expected a recovery error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_wal_write_stops_the_host_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let gate = SyncGate::new();
    let mut config = journal_config(dir.path(), &gate);
    config.wal.max_segment_bytes = 256;
    let host = start(config).await.unwrap();
    host.request(0).await.unwrap();
    // The WAL directory vanishes: the next segment cannot be created.
    std::fs::remove_dir_all(dir.path().join("wal")).unwrap();
    let mut failure = None;
    for i in 1..1000 {
        if let Err(error) = host.request(i).await {
            failure = Some(error);
            break;
        }
    }
    let failure = failure.expect("the host stops");
    assert!(matches!(failure, HostError::Stopped { .. }), "{failure}");
    let reason = tokio::time::timeout(PATIENCE, host.wait_stopped())
        .await
        .unwrap();
    assert!(reason.contains("write-ahead log"), "{reason}");
    assert!(
        host.request(5).await.is_err(),
        "a stopped host refuses requests"
    );
    assert!(
        host.shutdown().await.is_err(),
        "shutdown reports the fatal error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_is_not_appended_but_made_durable_by_the_compaction_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let gate = SyncGate::new();
    let mut config = journal_config(dir.path(), &gate);
    // Far above what this test writes: only the checkpoint starts a compaction.
    config.compaction = CompactionPolicy {
        min_bytes: 1 << 30,
        growth_factor: 2,
    };
    let host = start(config).await.unwrap();
    // More than doubles the empty log (a segment header): the checkpoint may compact it.
    for request in [1, 2, 3] {
        host.request(request).await.unwrap();
    }
    let metrics = host.metrics().clone();
    assert_eq!(metrics.wal_compactions.get(), 0);
    assert_eq!(host.request(CHECKPOINT).await.unwrap(), CHECKPOINT);
    host.request(4).await.unwrap();
    // Shutting down finishes the compaction under way.
    host.shutdown().await.unwrap();
    assert_eq!(
        metrics.wal_compactions.get(),
        1,
        "the checkpoint compacted the log"
    );

    // The log: one base record (1, 2, 3 and the checkpoint), then the write after it.
    let (_, records, _) = Wal::open(&dir.path().join("wal"), WalOptions::default()).unwrap();
    assert_eq!(records.len(), 2, "{records:?}");
    let host = start(journal_config(dir.path(), &gate)).await.unwrap();
    let entries = journal_entries(&host).await;
    assert_eq!(entries, vec![1, 2, 3, CHECKPOINT, 4]);
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_compacts_the_log_only_once_it_has_grown_in_proportion_to_its_base() {
    let dir = tempfile::tempdir().unwrap();
    let gate = SyncGate::new();
    let config = || {
        let mut config = journal_config(dir.path(), &gate);
        // Far above what this test writes: only checkpoints start compactions.
        config.compaction = CompactionPolicy {
            min_bytes: 1 << 30,
            growth_factor: 2,
        };
        config
    };
    let host = start(config()).await.unwrap();
    let metrics = host.metrics().clone();
    for request in [1, 2, 3, CHECKPOINT] {
        host.request(request).await.unwrap();
    }
    // One write after the base (1, 2, 3 and the checkpoint): far from twice the log's size
    // after that compaction, so this checkpoint is folded in and waits.
    host.request(4).await.unwrap();
    assert_eq!(host.request(CHECKPOINT).await.unwrap(), CHECKPOINT);
    host.shutdown().await.unwrap();
    assert_eq!(
        metrics.wal_compactions.get(),
        1,
        "only the first checkpoint"
    );

    // A crash or a restart before the next compaction loses the waiting checkpoint, never a
    // write: the log replays the base, then 4.
    let host = start(config()).await.unwrap();
    let entries = journal_entries(&host).await;
    assert_eq!(entries, vec![1, 2, 3, CHECKPOINT, 4]);
    // Once the log has more than doubled since it was opened, a checkpoint compacts it.
    let metrics = host.metrics().clone();
    for request in 5..40 {
        host.request(request).await.unwrap();
    }
    assert_eq!(metrics.wal_compactions.get(), 0, "writes alone never do");
    host.request(CHECKPOINT).await.unwrap();
    host.shutdown().await.unwrap();
    assert_eq!(
        metrics.wal_compactions.get(),
        1,
        "the checkpoint compacted the log"
    );
    let (_, records, _) = Wal::open(&dir.path().join("wal"), WalOptions::default()).unwrap();
    assert_eq!(records.len(), 1, "one base record holds it all");
    let host = start(config()).await.unwrap();
    let entries = journal_entries(&host).await;
    let mut expected = vec![1, 2, 3, CHECKPOINT, 4];
    expected.extend(5..40);
    expected.push(CHECKPOINT);
    assert_eq!(entries, expected);
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_sync_failure_stops_the_host_and_the_write_is_never_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let gate = SyncGate::new();
    let host = start(journal_config(dir.path(), &gate)).await.unwrap();
    assert_eq!(host.request(1).await.unwrap(), 1);
    let members = std::collections::BTreeSet::from([0]);
    assert!(host
        .apply_faults(members.clone(), br#"{"fail_sync": maybe}"#)
        .unwrap_err()
        .contains("fail_sync"));
    host.apply_faults(members, br#"{"fail_sync": true}"#)
        .unwrap();
    let failed = host.request(2).await;
    assert!(
        matches!(failed, Err(HostError::Stopped { .. })),
        "{failed:?}"
    );
    let reason = tokio::time::timeout(PATIENCE, host.wait_stopped())
        .await
        .unwrap();
    assert!(reason.contains("failing disk"), "{reason}");
    assert!(
        host.shutdown().await.is_err(),
        "shutdown reports the failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_jumps_add_up_and_the_fault_endpoint_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let gate = SyncGate::new();
    let host = start(journal_config(dir.path(), &gate)).await.unwrap();
    let members = std::collections::BTreeSet::from([0]);
    let jump = |ms: u64| {
        host.apply_faults(
            members.clone(),
            format!(r#"{{"clock_jump_ms": {ms}}}"#).as_bytes(),
        )
        .unwrap()
        .clock_ahead_ms
    };
    assert_eq!(jump(1500), 1500);
    assert_eq!(jump(500), 2000);
    // A body without a jump leaves the clock where it is.
    assert_eq!(jump(0), 2000);
    assert_eq!(host.request(1).await.unwrap(), 1, "the node still serves");
    host.shutdown().await.unwrap();
}

/// `inspect` reads the node as of its last step; once the host has stopped it fails instead
/// of reading a node nothing drives any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_reads_the_last_step_and_fails_once_the_host_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let gate = SyncGate::new();
    let host = start(journal_config(dir.path(), &gate)).await.unwrap();
    for value in 1..=50 {
        assert_eq!(host.request(value).await.unwrap(), value);
        let entries = journal_entries(&host).await;
        assert_eq!(entries, (1..=value).collect::<Vec<_>>(), "after {value}");
    }
    let reader = host.clone();
    host.shutdown().await.unwrap();
    assert!(matches!(
        reader.inspect(|journal| journal.entries.len()).await,
        Err(HostError::Stopped { .. })
    ));
}

/// The status changes with every step; the leadership watch (role, term, leader) only when one
/// of those does, so a task that follows elections is not woken for each request. A stop is a
/// change: the node is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leadership_watch_wakes_for_elections_and_stops_not_for_steps() {
    let dir = tempfile::tempdir().unwrap();
    let gate = SyncGate::new();
    let host = start(journal_config(dir.path(), &gate)).await.unwrap();
    let mut status = host.watch_status();
    let mut leadership = host.watch_leadership();
    status.borrow_and_update();
    assert_eq!(leadership.borrow_and_update().role, Role::Leader);
    for value in 1..=20 {
        assert_eq!(host.request(value).await.unwrap(), value);
    }
    assert!(
        status.has_changed().unwrap(),
        "the status follows each step"
    );
    assert_eq!(status.borrow().log_length, 20);
    assert!(
        !leadership.has_changed().unwrap(),
        "steps that leave role, term and leader alone changed the leadership watch"
    );
    host.shutdown().await.unwrap();
    assert_eq!(leadership.borrow().role, Role::Down);
}

#[test]
fn the_compaction_policy_waits_for_growth_and_then_for_a_checkpoint_or_min_bytes() {
    let policy = CompactionPolicy {
        min_bytes: 1000,
        growth_factor: 2,
    };
    // Not grown to twice the size after the last compaction: never, checkpoint or not.
    assert!(!policy.due(1500, 800, true));
    assert!(!policy.due(1500, 800, false));
    // Grown, small: only at a checkpoint.
    assert!(policy.due(500, 200, true));
    assert!(!policy.due(500, 200, false));
    // Grown and past min_bytes: at once.
    assert!(policy.due(1700, 800, false));
}
