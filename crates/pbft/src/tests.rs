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
        Response::Failed(_) => None,
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
