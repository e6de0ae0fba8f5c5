//! Snapshots and log compaction: bounded logs, catch-up by snapshot transfer, bounded promises,
//! a candidate behind the compaction point, and restart from snapshot plus log.

use concord_core::time::MILLISECOND;
use concord_core::{Input, KvOperation, KvStateMachine, StateMachine};

use super::test_support::{leader, settle, Kv};
use super::{invariants, Accepted, Config, Configuration, Entry, Message, Request, Snapshot};
use crate::testing::Harness;
use crate::Ballot;

const THRESHOLD: u64 = 20;

fn cluster(size: u64, seed: u64) -> Harness<Kv> {
    let config = Config {
        snapshot_threshold: THRESHOLD,
        ..Config::default()
    };
    Harness::new(size, config, seed, invariants::<KvStateMachine>())
}

fn write(value: i64) -> KvOperation {
    KvOperation::Write {
        key: format!("k{}", value % 7),
        value,
    }
}

/// Proposes `count` writes at the leader, a few at a time, running between batches; calls
/// `each` after every batch.
fn propose(harness: &mut Harness<Kv>, count: i64, mut each: impl FnMut(&Harness<Kv>)) {
    let mut value = 0;
    while value < count {
        let chief = settle(harness);
        for _ in 0..5 {
            value += 1;
            let id = 1_000 + value as u64;
            harness.request(chief, id, Request::Propose(write(value)));
        }
        harness.run_for(20 * MILLISECOND);
        each(harness);
    }
    harness.run_for(500 * MILLISECOND);
}

/// The most entries a log may hold: what was applied since the last snapshot (below the
/// threshold) plus what is decided or accepted and not applied yet.
const LOG_BOUND: usize = THRESHOLD as usize + 64;

/// A long run: every node snapshots every `THRESHOLD` slots and its log, in memory and on
/// disk, stays bounded.
#[test]
fn compaction_keeps_every_log_bounded_in_a_long_run() {
    let mut harness = cluster(3, 1);
    let mut longest = 0;
    propose(&mut harness, 600, |h| {
        for (node, storage) in h.nodes.iter().flatten().zip(&h.storage) {
            assert!(node.log_len() <= LOG_BOUND, "log of {}", node.log_len());
            assert!(
                storage.log.len() <= LOG_BOUND,
                "stored log {}",
                storage.log.len()
            );
            longest = longest.max(node.log_len());
        }
    });
    for (node, storage) in harness.nodes.iter().flatten().zip(&harness.storage) {
        assert!(node.applied() >= 600);
        assert!(node.compacted() >= 600 - THRESHOLD, "{}", node.compacted());
        assert_eq!(storage.compacted(), node.compacted());
        assert!(storage.log.keys().all(|&slot| slot > storage.compacted()));
    }
    assert!(longest > 0);
}

/// A node crashed before anything was written restarts far behind the leader's compaction
/// point; the leader sends its snapshot, the node installs it and follows on from there: it
/// never applies the covered slots one by one, and ends with the same state.
#[test]
fn a_restarted_node_far_behind_catches_up_by_snapshot_transfer() {
    let mut harness = cluster(3, 2);
    let chief = settle(&mut harness);
    let lagging = (chief + 1) % 3;
    harness.crash(lagging);
    propose(&mut harness, 200, |_| {});
    assert!(harness.node(chief).compacted() >= 200 - THRESHOLD);
    harness.restart(lagging);
    propose(&mut harness, 10, |_| {});
    let node = harness.node(lagging);
    let chief = leader(&harness).unwrap();
    assert_eq!(node.applied(), harness.node(chief).applied());
    assert_eq!(
        node.state().snapshot(),
        harness.node(chief).state().snapshot()
    );
    let first_applied = harness.applied[lagging as usize].first().unwrap().0;
    assert!(
        first_applied > 150,
        "slots up to the snapshot were installed, not applied (first apply at {first_applied})"
    );
    assert!(harness.storage[lagging as usize].snapshot.is_some());
}

/// Phase 1 after compaction: an acceptor promises with its snapshot and only the entries
/// above its compaction point, however far behind the candidate is.
#[test]
fn a_promise_carries_the_snapshot_and_only_the_entries_above_it() {
    let mut harness = cluster(3, 3);
    propose(&mut harness, 100, |_| {});
    let chief = leader(&harness).unwrap();
    let acceptor = (chief + 1) % 3;
    let candidate = (chief + 2) % 3;
    let compacted = harness.node(acceptor).compacted();
    assert!(compacted >= 100 - THRESHOLD);
    harness.network.clear();
    let ballot = Ballot::new(1_000, candidate);
    harness.step(
        acceptor,
        Input::Message {
            from: candidate,
            message: Message::Prepare {
                ballot,
                first_slot: 1,
            },
        },
    );
    harness.confirm(acceptor);
    let promise = harness
        .network
        .iter()
        .find_map(|e| match &e.message {
            Message::Promise {
                snapshot, accepted, ..
            } if e.to == candidate => Some((snapshot.clone(), accepted.clone())),
            _ => None,
        })
        .expect("a promise");
    let (snapshot, accepted) = promise;
    assert_eq!(snapshot.map(|s| s.slot), Some(compacted));
    assert!(accepted.iter().all(|(slot, _)| *slot > compacted));
    assert!(accepted.len() <= LOG_BOUND);
}

/// A candidate whose decided prefix is below an acceptor's compaction point installs the
/// snapshot a promise carries, then adopts the entries above it.
#[test]
fn a_candidate_installs_a_promised_snapshot_then_adopts_the_entries_above_it() {
    let mut harness = cluster(3, 4);
    let id = 0;
    let mut state = KvStateMachine::default();
    for value in 1..=50 {
        state.apply(&write(value));
    }
    let snapshot = Snapshot {
        slot: 50,
        configuration: Configuration::new(0, &[0, 1, 2]),
        data: state.snapshot(),
    };
    super::tests::campaign(&mut harness, id, 1);
    harness.confirm(id);
    let ballot = harness.node(id).ballot().unwrap();
    let above = |value: i64| Accepted {
        ballot: Ballot::new(1, 2),
        entry: Entry::Command(write(value)),
    };
    // Node 2 led ballot (1, 2) and took its clients' 51 and 52; the promise is forged.
    for value in [51, 52] {
        harness.note_request(2, &Request::Propose(write(value)));
    }
    harness.step(
        id,
        Input::Message {
            from: 1,
            message: Message::Promise {
                ballot,
                snapshot: Some(snapshot.clone()),
                accepted: vec![(51, above(51)), (52, above(52))],
            },
        },
    );
    let node = harness.node(id);
    assert!(node.is_leader());
    assert_eq!(node.compacted(), 50);
    assert!(node.decided() >= 50);
    assert_eq!(node.snapshot(), Some(&snapshot));
    assert_eq!(node.entry(51).unwrap().entry, Entry::Command(write(51)));
    assert_eq!(node.entry(52).unwrap().entry, Entry::Command(write(52)));
    assert!(node.entry(50).is_none(), "compacted");
    harness.run_for(500 * MILLISECOND);
    let mut expected = state;
    expected.apply(&write(51));
    expected.apply(&write(52));
    assert_eq!(harness.node(id).state().snapshot(), expected.snapshot());
}

/// A restart restores the state machine from the stored snapshot, then applies the decided
/// entries stored after it: the state is what it was before the crash.
#[test]
fn a_restart_restores_from_the_snapshot_and_the_log_after_it() {
    let mut harness = cluster(3, 5);
    propose(&mut harness, 95, |_| {});
    let chief = leader(&harness).unwrap();
    let victim = (chief + 1) % 3;
    let before = harness.node(victim).state().snapshot();
    let applied = harness.node(victim).applied();
    let storage = harness.storage[victim as usize].clone();
    assert!(storage.compacted() > 0 && storage.decided > storage.compacted());
    harness.crash(victim);
    harness.restart(victim);
    assert_eq!(harness.node(victim).applied(), storage.compacted());
    harness.step(victim, Input::Tick);
    assert_eq!(storage.decided, applied, "everything applied was durable");
    let node = harness.node(victim);
    assert_eq!(node.applied(), applied);
    assert_eq!(node.state().snapshot(), before);
}

/// The `snapshots-agree` checker flags two different states snapshotted at one slot.
#[test]
fn the_checker_catches_two_different_snapshots_of_one_slot() {
    use concord_core::{ClusterInvariant, Effect};

    use super::invariants::SnapshotsAgree;
    use super::Write;

    let persist = |data: &[u8]| -> Vec<concord_core::EffectOf<Kv>> {
        vec![Effect::Persist {
            token: 1,
            write: Write::Snapshot(Snapshot {
                slot: 7,
                configuration: Configuration::new(0, &[0, 1, 2]),
                data: data.to_vec(),
            }),
        }]
    };
    let mut checker = SnapshotsAgree::default();
    let nodes: Vec<Option<&Kv>> = vec![None, None];
    assert!(checker.check(&nodes, 0, &persist(b"a")).is_ok());
    assert!(checker.check(&nodes, 1, &persist(b"a")).is_ok());
    let violation = checker.check(&nodes, 1, &persist(b"b")).unwrap_err();
    assert_eq!(violation.invariant, "snapshots-agree");
}
