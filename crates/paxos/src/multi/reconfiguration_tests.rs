//! Reconfiguration with a stop-sign: adding and removing members, the leader removing itself,
//! refusals, a new leader keeping to an adopted stop-sign, restarts, and random faults.

use concord_core::time::MILLISECOND;
use concord_core::{Input, KvOperation, KvStateMachine, NodeId, StateMachine};

use super::test_support::{leader, settle, Kv};
use super::{
    invariants, Accepted, Config, Configuration, Entry, Message, PaxosError, Request, Response,
};
use crate::testing::Harness;
use crate::Ballot;

/// Four nodes started, the first configuration `{0, 1, 2}`: node 3 waits, idle.
fn cluster(seed: u64, snapshot_threshold: u64) -> Harness<Kv> {
    let config = Config {
        initial_members: Some(vec![0, 1, 2]),
        snapshot_threshold,
        ..Config::default()
    };
    assert_eq!(config.validate(4), Ok(()));
    Harness::new(4, config, seed, invariants::<KvStateMachine>())
}

fn write(value: i64) -> Request<KvOperation, KvOperation> {
    Request::Propose(KvOperation::Write {
        key: format!("k{}", value % 5),
        value,
    })
}

/// Proposes `values` at whoever leads, waiting for each reply (retrying on refusals).
fn propose(harness: &mut Harness<Kv>, values: std::ops::Range<i64>) {
    for value in values {
        loop {
            let chief = settle(harness);
            let id = 10_000 + value as u64;
            harness.replies.retain(|(_, request, _)| *request != id);
            harness.request(chief, id, write(value));
            harness.run_for(100 * MILLISECOND);
            let done = harness.replies.iter().any(|(_, request, response)| {
                *request == id && matches!(response, Response::Applied { .. })
            });
            if done {
                break;
            }
        }
    }
}

/// Asks the leader to move to `members`; returns the reply once the stop-sign is applied.
fn reconfigure(harness: &mut Harness<Kv>, members: &[NodeId]) -> Response<concord_core::KvResult> {
    let chief = settle(harness);
    harness.request(chief, 1, Request::Reconfigure(members.to_vec()));
    harness.run_for(500 * MILLISECOND);
    let reply = harness
        .replies
        .iter()
        .find(|(_, request, _)| *request == 1)
        .expect("a reply to the reconfiguration");
    reply.2.clone()
}

/// The classic change: add node 3, remove node 0. The stop-sign is applied everywhere in
/// `{0, 1, 2}`; `{1, 2, 3}` elects a leader at a ballot of epoch 1; node 3 catches up from an
/// empty log and serves; node 0 is idle and applies nothing after the stop-sign.
#[test]
fn a_stop_sign_adds_one_node_and_removes_another() {
    let mut harness = cluster(1, 1000);
    let first = settle(&mut harness);
    assert!(first < 3, "node 3 is not a member and never leads");
    assert!(!harness.node(3).is_member());
    propose(&mut harness, 0..10);
    assert_eq!(harness.node(3).applied(), 0, "node 3 takes no part yet");
    let Response::Reconfigured {
        slot,
        configuration,
    } = reconfigure(&mut harness, &[1, 2, 3])
    else {
        panic!("the reconfiguration was refused");
    };
    assert_eq!(configuration, Configuration::new(1, &[1, 2, 3]));
    propose(&mut harness, 10..20);
    let chief = leader(&harness).unwrap();
    assert_ne!(chief, 0);
    assert_eq!(harness.node(chief).ballot().unwrap().epoch, 1);
    for id in 1..4 {
        let node = harness.node(id);
        assert_eq!(node.configuration(), &configuration, "node {id}");
        assert!(node.is_member());
        assert_eq!(node.applied(), harness.node(chief).applied(), "node {id}");
        assert_eq!(
            node.state().snapshot(),
            harness.node(chief).state().snapshot()
        );
    }
    let removed = harness.node(0);
    assert!(!removed.is_member());
    assert!(!removed.is_leader());
    assert_eq!(
        removed.applied(),
        slot,
        "nothing after the stop-sign reaches node 0"
    );
}

/// The leader removes itself: it proposes the stop-sign, applies it, steps down and stays
/// idle; the remaining members elect a leader among themselves.
#[test]
fn a_leader_that_removes_itself_steps_down_for_the_new_configuration() {
    let mut harness = cluster(2, 1000);
    let old = settle(&mut harness);
    propose(&mut harness, 0..5);
    let members: Vec<NodeId> = (0..4).filter(|&id| id != old).collect();
    assert!(matches!(
        reconfigure(&mut harness, &members),
        Response::Reconfigured { .. }
    ));
    propose(&mut harness, 5..10);
    let chief = leader(&harness).unwrap();
    assert!(members.contains(&chief));
    assert!(!harness.node(old).is_member() && !harness.node(old).is_leader());
    harness.run_for(2_000 * MILLISECOND);
    assert_eq!(
        leader(&harness),
        Some(chief),
        "the idle node never campaigns"
    );
}

/// Once a leader has proposed a stop-sign it takes nothing more (the configuration ends
/// there); memberships that cannot run are refused before taking a slot.
#[test]
fn requests_after_a_stop_sign_and_unworkable_memberships_are_refused() {
    let mut harness = cluster(3, 1000);
    let chief = settle(&mut harness);
    for (id, members) in [(5, vec![]), (6, vec![3, 7])] {
        harness.request(chief, id, Request::Reconfigure(members.clone()));
        harness.confirm(chief);
        let reply = harness.replies.iter().find(|r| r.1 == id).unwrap();
        assert_eq!(
            reply.2,
            Response::Failed(PaxosError::InvalidMembership { members }),
            "empty, or sharing no member"
        );
    }
    harness.request(chief, 7, Request::Reconfigure(vec![0, 1, 2, 3]));
    harness.request(chief, 8, write(1));
    harness.request(chief, 9, Request::Reconfigure(vec![1, 2]));
    harness.confirm(chief);
    for id in [8, 9] {
        let reply = harness.replies.iter().find(|r| r.1 == id).unwrap();
        assert_eq!(reply.2, Response::Failed(PaxosError::Reconfiguring));
    }
    let flexible = Config {
        phase1_quorum: Some(3),
        phase2_quorum: Some(2),
        ..Config::default()
    };
    let mut harness = Harness::new(4, flexible, 4, invariants::<KvStateMachine>());
    let chief = settle(&mut harness);
    harness.request(chief, 1, Request::Reconfigure(vec![0, 1]));
    harness.confirm(chief);
    assert!(
        matches!(
            harness.replies.last().unwrap().2,
            Response::Failed(PaxosError::InvalidMembership { .. })
        ),
        "a phase-1 quorum of 3 cannot run on 2 members"
    );
}

/// A new leader of the old configuration that adopts a stop-sign keeps to it: it drops adopted
/// slots after it and proposes nothing more.
#[test]
fn a_new_leader_keeps_to_an_adopted_stop_sign() {
    let mut harness = cluster(5, 1000);
    super::tests::campaign(&mut harness, 0, 1);
    harness.confirm(0);
    let ballot = harness.node(0).ballot().unwrap();
    let next = Configuration::new(1, &[0, 1, 3]);
    let old = Ballot::new(1, 2);
    let accepted = |entry| Accepted { ballot: old, entry };
    let promise = Message::Promise {
        ballot,
        snapshot: None,
        accepted: vec![
            (1, accepted(Entry::Noop)),
            (2, accepted(Entry::StopSign(next.clone()))),
            (3, accepted(Entry::Noop)),
        ],
    };
    harness.step(
        0,
        Input::Message {
            from: 1,
            message: promise,
        },
    );
    let node = harness.node(0);
    assert!(node.is_leader());
    assert_eq!(node.entry(2).unwrap().entry, Entry::StopSign(next));
    assert!(node.entry(3).is_none(), "nothing after the stop-sign");
    harness.request(0, 9, write(1));
    harness.confirm(0);
    assert_eq!(
        harness.replies.last().unwrap().2,
        Response::Failed(PaxosError::Reconfiguring)
    );
}

/// A node restarted after a reconfiguration rebuilds its configuration from its durable state:
/// the snapshot carries the configuration it was taken in, the log's stop-signs the rest.
#[test]
fn a_restarted_node_recovers_its_configuration() {
    for threshold in [1000, 4] {
        let mut harness = cluster(6, threshold);
        propose(&mut harness, 0..6);
        assert!(matches!(
            reconfigure(&mut harness, &[1, 2, 3]),
            Response::Reconfigured { .. }
        ));
        propose(&mut harness, 6..12);
        for id in [0, 2, 3] {
            let before = harness.node(id).configuration().clone();
            harness.crash(id);
            harness.restart(id);
            harness.step(id, Input::Tick);
            assert_eq!(harness.node(id).configuration(), &before, "node {id}");
        }
        propose(&mut harness, 12..16);
        assert!(harness.node(3).applied() >= 16, "threshold {threshold}");
    }
}

/// Loss, random delivery order, crashes and restarts while the members move back and forth
/// between `{0, 1, 2}` and `{1, 2, 3}`: every invariant holds after every step, and each
/// configuration that was reached keeps deciding.
#[test]
fn reconfigurations_under_random_faults_keep_every_invariant() {
    for seed in 0..8 {
        let mut harness = cluster(100 + seed, 8);
        harness.loss_per_mille = 20;
        let mut request = 100;
        for round in 0..40u64 {
            if let Some(chief) = leader(&harness) {
                request += 1;
                if round % 10 == 5 {
                    let epoch = harness.node(chief).configuration().epoch;
                    // Alternate: even epochs move to {1, 2, 3}, odd ones back to {0, 1, 2}.
                    let members = match epoch % 2 {
                        0 => vec![1, 2, 3],
                        _ => vec![0, 1, 2],
                    };
                    harness.request(chief, request, Request::Reconfigure(members));
                } else {
                    harness.request(chief, request, write(request as i64));
                }
            }
            if round % 9 == 4 {
                let victim = round % 4;
                harness.crash(victim);
                harness.run_for(200 * MILLISECOND);
                harness.restart(victim);
            }
            harness.run_for(150 * MILLISECOND);
        }
        harness.loss_per_mille = 0;
        let decided_before = harness.nodes.iter().flatten().map(|n| n.decided()).max();
        propose(&mut harness, 1_000..1_003);
        let decided_after = harness.nodes.iter().flatten().map(|n| n.decided()).max();
        assert!(decided_after > decided_before, "seed {seed}: no progress");
        let epochs: Vec<u64> = harness
            .nodes
            .iter()
            .flatten()
            .map(|n| n.configuration().epoch)
            .collect();
        assert!(
            epochs.iter().any(|&e| e >= 2),
            "seed {seed}: too few reconfigurations took: {epochs:?}"
        );
    }
}
