//! Scenario tests on the hand-driven harness, grouped by paper section.

use concord_core::time::{MILLISECOND, SECOND};

const _: u64 = SECOND;
use concord_core::{KvOperation, KvResult, KvStateMachine, Value};

use crate::message::{Body, Request, Response};
use crate::testing::{Envelope, Harness};
use crate::{invariants, Config};

type Kv = KvStateMachine;

fn cluster(n: u64, config: Config, seed: u64) -> Harness<Kv> {
    Harness::new(n, config, seed, invariants::<Kv>())
}

fn write(key: &str, value: i64) -> Request<KvOperation, KvOperation> {
    Request::Propose(KvOperation::Write {
        key: key.into(),
        value,
    })
}

fn read(key: &str) -> Request<KvOperation, KvOperation> {
    Request::Read(KvOperation::Read { key: key.into() })
}

fn done(harness: &Harness<Kv>, id: u64) -> Option<KvResult> {
    harness.replies_to(id).into_iter().find_map(|r| match r {
        Response::Done { result, .. } => Some(result.clone()),
        Response::Failed(_) | Response::Unknown { .. } => None,
    })
}

/// §4.2: a request goes through pre-prepare, prepare and commit, is executed at every replica
/// at one sequence number, and the client accepts the result.
#[test]
fn normal_case_orders_executes_and_replies() {
    let mut h = cluster(4, Config::default(), 1);
    let w = h.request(2, write("x", 7));
    h.run_for(50 * MILLISECOND);
    assert_eq!(done(&h, w), Some(KvResult::Written));
    let r = h.request(3, read("x"));
    h.run_for(50 * MILLISECOND);
    assert_eq!(done(&h, r), Some(KvResult::Read(Some(Value::Int(7)))));
    for entry in 0..4 {
        assert_eq!(h.node(entry).executed(), 2, "replica {entry}");
        assert_eq!(h.applied[entry].len(), 2);
        assert_eq!(h.applied[entry], h.applied[0]);
    }
    assert!(h.node(0).is_primary());
    assert_eq!(h.node(0).counters().authentication_failures, 0);
    h.assert_safe();
}

/// §5.1.4: requests that arrive while batches are in flight go out together.
#[test]
fn requests_are_batched_while_others_are_in_flight() {
    let config = Config {
        max_in_flight: 1,
        ..Config::default()
    };
    let mut h = cluster(4, config, 2);
    let ids: Vec<u64> = (0..24)
        .map(|i| h.request((i % 4) as usize, write("k", i)))
        .collect();
    h.run_for(200 * MILLISECOND);
    for id in ids {
        assert_eq!(done(&h, id), Some(KvResult::Written), "request {id}");
    }
    let sequences = h.node(1).executed();
    assert!(sequences < 24, "24 requests in {sequences} batches");
    h.assert_safe();
}

/// §4.1: the client needs f + 1 matching replies; one replica's wrong result is outvoted.
#[test]
fn a_lying_replica_cannot_make_a_client_accept_a_wrong_result() {
    let mut h = cluster(4, Config::default(), 3);
    let keys = h.node(3).keys().clone();
    h.byzantine[3] = Some(Box::new(move |to, mut message: crate::PbftMessage<Kv>| {
        if let Body::Reply { result, .. } = &mut message.body {
            *result = KvResult::Read(Some(Value::Int(666)));
            let bytes = crate::auth::encode(&message.body);
            message.mac = crate::seal_with(&keys, to, &message.body, &bytes);
        }
        vec![Envelope {
            from: 3,
            to,
            message,
        }]
    }));
    let w = h.request(1, write("x", 1));
    h.run_for(50 * MILLISECOND);
    let r = h.request(1, read("x"));
    h.run_for(50 * MILLISECOND);
    assert_eq!(done(&h, w), Some(KvResult::Written));
    assert_eq!(done(&h, r), Some(KvResult::Read(Some(Value::Int(1)))));
    h.assert_safe();
}

/// With only f replicas reachable, no result is accepted.
#[test]
fn no_result_without_f_plus_one_replies() {
    let mut h = cluster(4, Config::default(), 4);
    h.isolate(1);
    h.isolate(2);
    let w = h.request(3, write("x", 1));
    h.run_for(300 * MILLISECOND);
    assert_eq!(done(&h, w), None);
    h.assert_safe();
}

/// §5.1: a message whose MAC does not verify — tampered, or claiming another sender — is
/// dropped and counted.
#[test]
fn messages_that_fail_authentication_are_dropped_and_counted() {
    let mut h = cluster(4, Config::default(), 5);
    h.byzantine[3] = Some(Box::new(|to, message| {
        // Claims to be node 0 (the primary) or 1; keeps its own MAC.
        let claimed = if to == 0 { 1 } else { 0 };
        vec![Envelope {
            from: claimed,
            to,
            message,
        }]
    }));
    let w = h.request(2, write("x", 1));
    h.run_for(100 * MILLISECOND);
    assert_eq!(done(&h, w), Some(KvResult::Written));
    let failures: u64 = (0..3)
        .map(|e| h.node(e).counters().authentication_failures)
        .sum();
    assert!(failures > 0);
    h.assert_safe();
}

fn small_window() -> Config {
    Config {
        checkpoint_interval: 4,
        log_window: 8,
        max_batch: 1,
        ..Config::default()
    }
}

/// §4.3: every K sequence numbers a checkpoint; a quorum of matching signed checkpoints makes
/// it stable, and the log below it is discarded. The watermarks bound the log.
#[test]
fn checkpoints_become_stable_and_the_log_is_collected() {
    let mut h = cluster(4, small_window(), 6);
    for i in 0..22 {
        let id = h.request(1, write("x", i));
        h.run_for(20 * MILLISECOND);
        assert_eq!(done(&h, id), Some(KvResult::Written), "request {i}");
    }
    for entry in 0..4 {
        let node = h.node(entry);
        assert_eq!(node.executed(), 22);
        assert_eq!(node.low_watermark(), 20, "replica {entry}");
        assert_eq!(node.high_watermark(), 28);
        assert!(node.log_len() <= 8);
        let proof = node.stable_checkpoint();
        assert!(proof.signatures.len() >= 3);
        assert!(node.verify_proof(proof));
    }
    assert_eq!(h.storage[2].stable(), 20);
    assert!(h.storage[2].committed.keys().all(|&n| n > 20));
    h.assert_safe();
}

/// §4.3: a replica cut off while the others moved past a stable checkpoint fetches the state,
/// checks it against the quorum's digest, and carries on from there.
#[test]
fn a_replica_that_fell_behind_catches_up_by_state_transfer() {
    let mut h = cluster(4, small_window(), 7);
    h.isolate(3);
    for i in 0..13 {
        h.request(1, write("x", i));
        h.run_for(20 * MILLISECOND);
    }
    assert_eq!(h.node(3).executed(), 0);
    h.heal();
    h.run_for(300 * MILLISECOND);
    let lagger = h.node(3);
    assert_eq!(lagger.executed(), 13);
    assert!(lagger.counters().states_installed >= 1);
    assert_eq!(lagger.state(), h.node(0).state());
    // It serves again: a request through its proxy completes.
    let id = h.request(3, read("x"));
    h.run_for(50 * MILLISECOND);
    assert_eq!(done(&h, id), Some(KvResult::Read(Some(Value::Int(12)))));
    h.assert_safe();
}

/// §4.4: a crashed primary is replaced; requests complete in the next view.
#[test]
fn a_crashed_primary_is_replaced_by_a_view_change() {
    let mut h = cluster(4, Config::default(), 8);
    let first = h.request(2, write("x", 1));
    h.run_for(50 * MILLISECOND);
    assert_eq!(done(&h, first), Some(KvResult::Written));
    h.crash(0);
    let second = h.request(2, write("x", 2));
    h.run_for(2 * SECOND);
    assert_eq!(done(&h, second), Some(KvResult::Written));
    for entry in 1..4 {
        let node = h.node(entry);
        assert_eq!(node.view(), 1, "replica {entry}");
        assert!(node.is_active());
        assert_eq!(node.executed(), 2);
    }
    assert!(h.node(1).is_primary());
    h.assert_safe();
}

/// A replica that missed a view change is brought into the new view by its peers even after
/// every replica restarted: the NEW-VIEW is kept with the view, so restarted peers can still
/// answer its STATUS with it.
#[test]
fn a_replica_that_missed_a_view_change_catches_up_after_every_replica_restarts() {
    let mut h = cluster(4, Config::default(), 18);
    h.isolate(0);
    let request = h.request(2, write("x", 1));
    h.run_for(3 * SECOND);
    assert_eq!(done(&h, request), Some(KvResult::Written));
    for entry in 1..4 {
        assert_eq!((h.node(entry).view(), h.node(entry).is_active()), (1, true));
    }
    assert_eq!(h.node(0).view(), 0, "the isolated primary missed it");
    for entry in 0..4 {
        h.crash(entry);
        h.restart(entry);
    }
    h.heal();
    h.run_for(3 * SECOND);
    let old = h.node(0);
    assert_eq!((old.view(), old.is_active()), (1, true));
    assert!(!old.is_primary());
    assert_eq!(old.executed(), h.node(1).executed());
    h.assert_safe();
}

/// §4.4: a primary that goes silent is replaced too: what it ordered before commits without
/// it, and a request it then ignores is ordered by the next primary (which knew it waiting).
#[test]
fn a_primary_that_goes_silent_is_replaced() {
    let mut h = cluster(4, Config::default(), 9);
    let first = h.request(3, write("x", 1));
    h.run_for(50 * MILLISECOND);
    assert_eq!(done(&h, first), Some(KvResult::Written));
    // The primary goes quiet once its pre-prepare for the next request is out.
    let mut sent_pre_prepare = false;
    h.byzantine[0] = Some(Box::new(move |to, message: crate::PbftMessage<Kv>| {
        let pass = matches!(message.body, Body::PrePrepare { .. }) && !sent_pre_prepare;
        if to == 3 && pass {
            sent_pre_prepare = true;
        }
        if pass {
            vec![Envelope {
                from: 0,
                to,
                message,
            }]
        } else {
            Vec::new()
        }
    }));
    let second = h.request(3, write("x", 2));
    h.run_for(3 * SECOND);
    assert_eq!(done(&h, second), Some(KvResult::Written));
    let r = h.request(2, read("x"));
    h.run_for(SECOND);
    assert_eq!(done(&h, r), Some(KvResult::Read(Some(Value::Int(2)))));
    assert!(h.node(1).view() >= 1);
    h.assert_safe();
}

/// §4.5.2: view changes that bring no new view follow each other with doubling timeouts.
#[test]
fn fruitless_view_changes_back_off_exponentially() {
    let mut h = cluster(4, Config::default(), 10);
    // The primary is silent and no NEW-VIEW ever arrives: every view change is fruitless.
    for entry in 0..4 {
        h.byzantine[entry] = Some(Box::new(move |to, message: crate::PbftMessage<Kv>| {
            if entry == 0 || matches!(message.body, Body::NewView(_)) {
                return Vec::new();
            }
            vec![Envelope {
                from: entry as u64,
                to,
                message,
            }]
        }));
    }
    let _ = h.request(1, write("x", 1));
    let mut changes = Vec::new();
    let mut view = 0;
    for _ in 0..2_000 {
        h.run_for(10 * MILLISECOND);
        if h.node(1).view() > view {
            view = h.node(1).view();
            changes.push(h.now);
        }
    }
    let gaps: Vec<u64> = changes
        .windows(2)
        .map(|w| (w[1] - w[0]) / MILLISECOND)
        .collect();
    // 400ms, 800ms, 1.6s, 3.2s, 6.4s, then the 8s cap: a handful in 20 s, not fifty.
    assert!(
        (4..=7).contains(&changes.len()),
        "view changes at {changes:?}"
    );
    for pair in gaps.windows(2).take(3) {
        assert!(
            pair[1] >= 2 * pair[0] - 20,
            "gaps {gaps:?} ms do not double"
        );
    }
    h.assert_safe();
}

/// §4.5.2, liveness rule 1: a replica alone in its view change (cut off from the others)
/// does not run through views on its own; its timer waits for a quorum.
#[test]
fn a_lone_replica_does_not_run_through_views() {
    let mut h = cluster(4, Config::default(), 15);
    for id in 0..4 {
        h.isolate(id);
    }
    let _ = h.request(1, write("x", 1));
    h.run_for(20 * SECOND);
    let node = h.node(1);
    assert_eq!(node.counters().view_changes_started, 1);
    assert_eq!(node.view(), 1);
    assert!(!node.is_active());
    h.assert_safe();
}

/// A proxy that gives up waiting tells its caller the outcome is unknown, rather than leaving
/// the request unanswered; a request queued behind it is then sent.
#[test]
fn a_request_the_proxy_gives_up_on_is_answered_unknown() {
    let config = Config {
        client_lanes: 1,
        ..Config::default()
    };
    let give_up = config.client_give_up;
    let mut h = cluster(4, config, 17);
    h.isolate(1);
    let first = h.request(1, write("x", 1));
    let queued = h.request(1, write("x", 2));
    h.run_for(give_up + SECOND);
    match h.replies_to(first).as_slice() {
        [Response::Unknown { .. }] => {}
        other => panic!("expected one Unknown answer, got {other:?}"),
    }
    // The queued request took the lane when the first was given up; back in touch, it completes.
    h.heal();
    h.run_for(give_up);
    match h.replies_to(queued).as_slice() {
        [Response::Done { result, .. }] => assert_eq!(*result, KvResult::Written),
        other => panic!("expected the queued request done, got {other:?}"),
    }
    h.assert_safe();
}

/// A replica stuck in a view change the others never joined still executes what they commit
/// (a quorum of commits for one view proves a batch committed) and converges.
#[test]
fn a_replica_in_another_view_executes_on_commit_certificates() {
    let mut h = cluster(4, Config::default(), 16);
    h.isolate(2);
    let _ = h.request(2, write("x", 1));
    h.run_for(2 * SECOND);
    assert_eq!(h.node(2).view(), 1);
    h.heal();
    for i in 0..5 {
        h.request(1, write("y", i));
        h.run_for(50 * MILLISECOND);
    }
    h.run_for(SECOND);
    let stuck = h.node(2);
    assert_eq!((stuck.view(), stuck.is_active()), (1, false));
    assert_eq!(h.node(0).view(), 0);
    assert_eq!(stuck.executed(), h.node(0).executed());
    assert_eq!(stuck.state(), h.node(0).state());
    h.assert_safe();
}

/// Writes are durable before the messages that depend on them: a backup restarted from its
/// storage rejoins, keeps its view and its certificates, and executes what it missed.
#[test]
fn a_restarted_replica_recovers_from_its_storage() {
    let mut h = cluster(4, small_window(), 11);
    for i in 0..6 {
        h.request(0, write("x", i));
        h.run_for(20 * MILLISECOND);
    }
    h.crash(2);
    for i in 6..9 {
        h.request(0, write("x", i));
        h.run_for(20 * MILLISECOND);
    }
    h.restart(2);
    assert_eq!(h.node(2).executed(), 6);
    assert_eq!(h.node(2).low_watermark(), 4);
    // What it re-executed above the checkpoint is still known committed (it resends those
    // batches and its commits to replicas that lack them).
    assert!(h.node(2).committed(5).is_some() && h.node(2).committed(6).is_some());
    h.run_for(300 * MILLISECOND);
    assert_eq!(h.node(2).executed(), 9);
    assert_eq!(h.node(2).state(), h.node(0).state());
    h.assert_safe();
}

/// Re-authenticates a rewritten message with the sender's own keys.
fn reseal(
    keys: &crate::Keys,
    to: u64,
    mut message: crate::PbftMessage<Kv>,
) -> crate::PbftMessage<Kv> {
    let bytes = crate::auth::encode(&message.body);
    message.mac = crate::seal_with(keys, to, &message.body, &bytes);
    message
}

/// A Byzantine sender that tells `victims` the null batch wherever it tells the others a
/// batch: equivocating pre-prepares (as primary), prepares and commits.
fn equivocate(keys: crate::Keys, victims: Vec<u64>) -> crate::testing::Rewrite<Kv> {
    let from = keys.id();
    let null = crate::batch_digest::<KvOperation, KvOperation>(&[]);
    Box::new(move |to, mut message: crate::PbftMessage<Kv>| {
        if victims.contains(&to) {
            match &mut message.body {
                Body::PrePrepare { digest, batch, .. } => {
                    *digest = null;
                    batch.clear();
                }
                Body::Prepare { digest, .. } | Body::Commit { digest, .. } => *digest = null,
                _ => {}
            }
            message = reseal(&keys, to, message);
        }
        vec![Envelope { from, to, message }]
    })
}

/// §4.2: a primary that sends different pre-prepares for one sequence number to different
/// backups cannot make correct replicas commit different batches; the request still completes.
#[test]
fn an_equivocating_primary_cannot_split_the_replicas() {
    let mut h = cluster(4, small_window(), 12);
    let keys = h.node(0).keys().clone();
    h.byzantine[0] = Some(equivocate(keys, vec![3]));
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(h.request(1, write("x", i)));
        h.run_for(30 * MILLISECOND);
    }
    h.run_for(2 * SECOND);
    for id in ids {
        assert_eq!(done(&h, id), Some(KvResult::Written));
    }
    assert_eq!(h.node(1).state(), h.node(2).state());
    h.assert_safe();
}

/// Twins (Bano et al., 2020): two instances of the primary with one identity and one set of
/// keys, each hearing a different part of the cluster, propose different batches for the same
/// sequence numbers. With one Byzantine identity (f = 1) safety holds.
#[test]
fn twins_of_the_primary_cannot_break_safety() {
    let mut h = cluster(4, Config::default(), 13);
    let twin = h.add_twin(0, 13);
    // Replica 1 talks to the first instance, replica 2 to the twin, replica 3 to both.
    h.twin_route = Some(Box::new(move |from, entry| match from {
        1 => entry != twin,
        2 => entry == twin || entry != 0,
        _ => true,
    }));
    let a = h.request(1, write("x", 1));
    let b = h.request(2, write("x", 2));
    h.run_for(20 * MILLISECOND);
    // The twins assigned sequence number 1 to different batches.
    let first = |entry: usize| {
        h.node(entry)
            .log
            .get(&1)
            .and_then(|s| s.pre_prepare.as_ref().map(|p| p.digest))
    };
    assert!(first(0).is_some() && first(twin).is_some());
    assert_ne!(first(0), first(twin));
    h.run_for(3 * SECOND);
    h.assert_safe();
    for entry in 1..4 {
        for other in 1..4 {
            let common = h.applied[entry].len().min(h.applied[other].len());
            assert_eq!(h.applied[entry][..common], h.applied[other][..common]);
        }
    }
    assert!(done(&h, a).is_some() || done(&h, b).is_some());
}

/// With f + 1 Byzantine replicas (the primary equivocating and a backup backing both sides)
/// two correct replicas commit different batches at one sequence number: the checkers catch
/// it. PBFT promises nothing beyond f faults; this shows the checkers would notice.
#[test]
fn f_plus_one_byzantine_replicas_break_safety_and_the_checkers_say_so() {
    let mut h = cluster(4, Config::default(), 14);
    let primary = h.node(0).keys().clone();
    let accomplice = h.node(1).keys().clone();
    h.byzantine[0] = Some(equivocate(primary, vec![3]));
    h.byzantine[1] = Some(equivocate(accomplice, vec![3]));
    h.request(2, write("x", 1));
    h.run_for(100 * MILLISECOND);
    let violation = h.violation.clone().expect("safety broke");
    assert!(
        ["committed-agreement", "state-machine-safety"].contains(&violation.invariant),
        "{violation}"
    );
}

fn read_only() -> Config {
    Config {
        read_only: true,
        ..Config::default()
    }
}

/// §5.1.3: with the read-only optimization a read goes to every replica, is answered from the
/// executed state without being ordered, and completes with a quorum of matching replies.
#[test]
fn read_only_requests_complete_without_ordering() {
    let mut h = cluster(4, read_only(), 17);
    let w = h.request(1, write("x", 3));
    h.run_for(50 * MILLISECOND);
    assert_eq!(done(&h, w), Some(KvResult::Written));
    let ordered = h.node(0).executed();
    let r = h.request(2, read("x"));
    h.run_for(50 * MILLISECOND);
    assert_eq!(done(&h, r), Some(KvResult::Read(Some(Value::Int(3)))));
    assert!(h.replies_to(r).iter().all(|resp| matches!(
        resp,
        Response::Done {
            read_only: true,
            ..
        }
    )));
    assert_eq!(
        h.node(0).executed(),
        ordered,
        "the read took no sequence number"
    );
    h.assert_safe();
}

/// §5.1.3: replicas that disagree (one has not executed the last write) give no quorum of
/// matching replies; the client then orders the read like a write.
#[test]
fn a_read_only_request_without_a_quorum_of_matching_replies_is_ordered() {
    let mut h = cluster(4, read_only(), 18);
    // Replica 3 lies about every read: the other three still match.
    let keys = h.node(3).keys().clone();
    h.byzantine[3] = Some(Box::new(move |to, mut message: crate::PbftMessage<Kv>| {
        if let Body::Reply { result, .. } = &mut message.body {
            *result = KvResult::Read(Some(Value::Int(-1)));
            message = reseal(&keys, to, message);
        }
        vec![Envelope {
            from: 3,
            to,
            message,
        }]
    }));
    let w = h.request(1, write("x", 3));
    h.run_for(50 * MILLISECOND);
    assert_eq!(done(&h, w), Some(KvResult::Written));
    let r = h.request(2, read("x"));
    h.run_for(50 * MILLISECOND);
    assert_eq!(done(&h, r), Some(KvResult::Read(Some(Value::Int(3)))));
    // Now replica 2 lags too (cut off from the next write): 1 stale + 1 lying + 2 fresh
    // replies — no quorum; the read is ordered and still returns the fresh value.
    h.isolate(2);
    let w2 = h.request(1, write("x", 4));
    h.run_for(50 * MILLISECOND);
    assert_eq!(done(&h, w2), Some(KvResult::Written));
    h.heal();
    h.cut.insert((0, 2));
    h.cut.insert((1, 2));
    h.cut.insert((3, 2));
    let before = h.node(0).executed();
    let r2 = h.request(1, read("x"));
    h.run_for(500 * MILLISECOND);
    assert_eq!(done(&h, r2), Some(KvResult::Read(Some(Value::Int(4)))));
    assert!(h.node(0).executed() > before, "the read was ordered");
    assert!(h.replies_to(r2).iter().all(|resp| matches!(
        resp,
        Response::Done {
            read_only: false,
            ..
        }
    )));
    h.assert_safe();
}
