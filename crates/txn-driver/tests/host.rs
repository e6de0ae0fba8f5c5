//! The coordinator host without PostgreSQL: an in-memory backend records what each
//! participant was told. Transactions commit through the fsync'd log; recovery commits the
//! in-doubt transactions the log holds a commit record for and rolls back the others
//! (presumed abort).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use concord_core::NodeId;
use concord_txn::twopc::{Config, Response, TwoPhaseCommit, Write};
use concord_txn::{Change, Refusal, TxnId};
use concord_txn_driver::host::{Backend, Driver};
use concord_txn_driver::log::DurableLog;

#[derive(Debug, Default)]
struct Memory {
    prepared: Mutex<BTreeSet<(NodeId, TxnId)>>,
    committed: Mutex<BTreeSet<(NodeId, TxnId)>>,
    aborted: Mutex<BTreeSet<(NodeId, TxnId)>>,
}

impl Backend for Memory {
    async fn prepare(&self, p: NodeId, txn: TxnId, changes: Vec<Change>) -> Result<(), Refusal> {
        if changes.iter().any(|c| c.delta < -1_000) {
            return Err(Refusal::InsufficientFunds);
        }
        self.prepared.lock().unwrap().insert((p, txn));
        Ok(())
    }

    async fn commit(&self, p: NodeId, txn: TxnId) -> anyhow::Result<()> {
        self.prepared.lock().unwrap().remove(&(p, txn));
        self.committed.lock().unwrap().insert((p, txn));
        Ok(())
    }

    async fn abort(&self, p: NodeId, txn: TxnId) -> anyhow::Result<()> {
        self.prepared.lock().unwrap().remove(&(p, txn));
        self.aborted.lock().unwrap().insert((p, txn));
        Ok(())
    }

    async fn in_doubt(&self, p: NodeId) -> anyhow::Result<Vec<TxnId>> {
        let prepared = self.prepared.lock().unwrap();
        Ok(prepared
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, t)| *t)
            .collect())
    }
}

fn transfer(amount: i64) -> BTreeMap<NodeId, Vec<Change>> {
    BTreeMap::from([
        (
            1,
            vec![Change {
                account: 0,
                delta: -amount,
            }],
        ),
        (
            2,
            vec![Change {
                account: 0,
                delta: amount,
            }],
        ),
    ])
}

fn txn(epoch: u64, sequence: u64) -> TxnId {
    TxnId { epoch, sequence }
}

#[tokio::test]
async fn transactions_commit_or_abort_through_the_fsynced_log() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(Memory::default());
    let (driver, handle) =
        Driver::open(dir.path(), Arc::clone(&backend), 2, Config::default(), None).unwrap();
    let running = tokio::spawn(driver.run());
    assert_eq!(
        handle.transact(transfer(10)).await,
        Some(Response::Committed(txn(1, 1)))
    );
    assert!(matches!(
        handle.transact(transfer(5_000)).await,
        Some(Response::Aborted {
            refusal: Some(Refusal::InsufficientFunds),
            ..
        })
    ));
    drop(handle);
    running.await.unwrap().unwrap();
    let committed = backend.committed.lock().unwrap().clone();
    assert_eq!(committed, BTreeSet::from([(1, txn(1, 1)), (2, txn(1, 1))]));
    assert!(backend.prepared.lock().unwrap().is_empty());
    // The log holds the epoch and the ended commit: a new driver starts epoch 2.
    let (_, storage) = DurableLog::open::<TwoPhaseCommit>(dir.path()).unwrap();
    assert_eq!(storage.epoch, 1);
    assert!(storage.commits.is_empty());
}

#[tokio::test]
async fn recovery_commits_what_the_log_decided_and_rolls_back_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    // A coordinator that crashed: its log holds a commit record for t1.5 (not ended); the
    // databases hold t1.5 and t1.6 prepared.
    {
        let (mut log, _) = DurableLog::open::<TwoPhaseCommit>(dir.path()).unwrap();
        log.append(&Write::Epoch(1)).unwrap();
        log.append(&Write::CommitDecided {
            txn: txn(1, 5),
            participants: vec![1, 2],
        })
        .unwrap();
        log.sync().unwrap();
    }
    let backend = Arc::new(Memory::default());
    for p in [1, 2] {
        backend.prepared.lock().unwrap().insert((p, txn(1, 5)));
        backend.prepared.lock().unwrap().insert((p, txn(1, 6)));
    }
    let (mut driver, _handle) =
        Driver::open(dir.path(), Arc::clone(&backend), 2, Config::default(), None).unwrap();
    assert_eq!(driver.recover().await.unwrap(), 4);
    assert!(backend.prepared.lock().unwrap().is_empty());
    let committed = backend.committed.lock().unwrap().clone();
    assert_eq!(committed, BTreeSet::from([(1, txn(1, 5)), (2, txn(1, 5))]));
    let aborted = backend.aborted.lock().unwrap().clone();
    assert_eq!(aborted, BTreeSet::from([(1, txn(1, 6)), (2, txn(1, 6))]));
    // Every participant acknowledged: the commit record is ended.
    let (_, storage) = DurableLog::open::<TwoPhaseCommit>(dir.path()).unwrap();
    assert!(storage.commits.is_empty(), "{storage:?}");
}
