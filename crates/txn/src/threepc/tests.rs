//! 3PC by hand, in a synchronous network (time moves only once every message in flight is
//! delivered and every write is durable, the model Skeen's termination protocol assumes):
//! the three phases, termination without the coordinator in each state, recovery, and a
//! crash of every node after every step.

use std::collections::BTreeMap;

use concord_core::time::{MILLISECOND, SECOND};
use concord_core::NodeId;
use concord_paxos::testing::Harness;
use rand::Rng as _;

use super::*;
use crate::types::{Change, Outcome};
use crate::{Atomicity, TxnNode};

type H = Harness<ThreePhaseCommit>;

const COORDINATOR: NodeId = 0;
const T1: TxnId = TxnId {
    epoch: 1,
    sequence: 1,
};

fn harness(seed: u64) -> H {
    Config::default().validate().unwrap();
    Harness::new(4, Config::default(), seed, vec![Box::new(Atomicity::new())])
}

/// 100 from participant `from`'s `account` to `to`'s, the third participant taking part with
/// no change.
fn transfer(from: NodeId, to: NodeId, account: u64, amount: i64) -> Request {
    let changes: BTreeMap<NodeId, Vec<Change>> = (1..4)
        .map(|node| {
            let delta = if node == from {
                -amount
            } else if node == to {
                amount
            } else {
                0
            };
            (node, vec![Change { account, delta }])
        })
        .collect();
    Request::Transaction(changes)
}

fn participant(h: &H, id: NodeId) -> &Participant {
    h.node(id).as_participant().expect("a participant")
}

fn decisions(h: &H, txn: TxnId) -> Vec<Option<Outcome>> {
    (1..4)
        .map(|id| participant(h, id).decided().get(&txn).copied())
        .collect()
}

/// One action of a synchronous network: deliver a message or make a node's writes durable;
/// only when nothing is in flight, let time pass to the next deadline.
fn sync_action(h: &mut H) -> bool {
    if !h.network.is_empty() && h.rng.gen_bool(0.8) {
        let position = h.rng.gen_range(0..h.network.len());
        h.deliver(position);
        return true;
    }
    let node = h.rng.gen_range(0..4);
    let before = h.steps;
    h.confirm(node);
    if h.steps > before || !h.network.is_empty() {
        return true;
    }
    for node in 0..4 {
        h.confirm(node);
    }
    h.network.is_empty() && h.advance() || !h.network.is_empty()
}

fn run_sync(h: &mut H, duration: u64) {
    let end = h.now + duration;
    while h.now < end && sync_action(h) {}
}

fn run_sync_until(h: &mut H, mut done: impl FnMut(&H) -> bool) -> bool {
    for _ in 0..100_000 {
        if done(h) {
            return true;
        }
        if !sync_action(h) {
            break;
        }
    }
    done(h)
}

/// Every live participant decided every transaction it knows alike and no money moved
/// without its counterpart; nobody is left undecided.
fn assert_settled(h: &H) {
    let mut outcomes: BTreeMap<TxnId, Outcome> = BTreeMap::new();
    let mut net = 0;
    for id in 1..4 {
        let node = h.node(id);
        assert!(
            node.in_doubt().is_empty(),
            "node {id} undecided: {:?}",
            node.in_doubt()
        );
        for (&txn, &outcome) in node.decided().unwrap() {
            assert_eq!(*outcomes.entry(txn).or_insert(outcome), outcome, "{txn}");
        }
        net += node.ledger().unwrap().net_change();
    }
    assert_eq!(net, 0, "money created or lost");
}

#[test]
fn commits_in_three_phases() {
    let mut h = harness(1);
    h.request(COORDINATOR, 1, transfer(1, 2, 0, 100));
    run_sync(&mut h, SECOND);
    assert_eq!(h.replies, vec![(0, 1, Response::Committed(T1))]);
    assert_eq!(decisions(&h, T1), vec![Some(Outcome::Commit); 3]);
    assert_eq!(participant(&h, 2).ledger().balance(0), 1_100);
    assert_settled(&h);
}

#[test]
fn a_no_vote_aborts() {
    let mut h = harness(2);
    h.request(COORDINATOR, 1, transfer(1, 2, 0, 5_000));
    run_sync(&mut h, SECOND);
    assert_eq!(decisions(&h, T1), vec![Some(Outcome::Abort); 3]);
    assert_settled(&h);
}

/// Runs until `ready`, crashes the coordinator for good, and checks that the participants
/// decide `expected` without it (nobody blocks).
fn terminate_without_coordinator(seed: u64, ready: impl FnMut(&H) -> bool, expected: Outcome) {
    let mut h = harness(seed);
    h.request(COORDINATOR, 1, transfer(1, 2, 0, 100));
    assert!(run_sync_until(&mut h, ready));
    h.crash(COORDINATOR);
    run_sync(&mut h, 5 * SECOND);
    assert_eq!(decisions(&h, T1), vec![Some(expected); 3], "seed {seed}");
    assert_settled(&h);
    // The coordinator comes back and learns nothing new: nothing changes.
    h.restart(COORDINATOR);
    run_sync(&mut h, SECOND);
    assert_settled(&h);
}

#[test]
fn every_participant_uncertain_terminates_with_abort_without_the_coordinator() {
    for seed in 0..10 {
        terminate_without_coordinator(
            seed,
            |h| (1..4).all(|id| participant(h, id).stage(T1) == Stage::Voted),
            Outcome::Abort,
        );
    }
}

#[test]
fn one_participant_precommitted_terminates_with_commit_without_the_coordinator() {
    for seed in 0..10 {
        terminate_without_coordinator(
            seed,
            |h| (1..4).any(|id| participant(h, id).stage(T1) == Stage::PreCommitted),
            Outcome::Commit,
        );
    }
}

#[test]
fn a_backup_that_crashes_mid_round_is_replaced_by_the_next_participant() {
    let mut h = harness(3);
    h.request(COORDINATOR, 1, transfer(1, 2, 0, 100));
    assert!(run_sync_until(&mut h, |h| {
        (1..4).all(|id| participant(h, id).stage(T1) == Stage::Voted)
    }));
    h.crash(COORDINATOR);
    // Participant 1, the first backup, crashes as soon as it asks for states.
    assert!(run_sync_until(&mut h, |h| h
        .network
        .iter()
        .any(|e| matches!(e.message, Message::StateRequest { .. }))));
    h.crash(1);
    run_sync(&mut h, 5 * SECOND);
    assert_eq!(decisions_of(&h, &[2, 3]), vec![Some(Outcome::Abort); 2]);
    // Participant 1 recovers, takes no part in termination, and learns the outcome.
    h.restart(1);
    run_sync(&mut h, SECOND);
    assert_eq!(decisions(&h, T1), vec![Some(Outcome::Abort); 3]);
    assert_settled(&h);
}

fn decisions_of(h: &H, ids: &[NodeId]) -> Vec<Option<Outcome>> {
    ids.iter()
        .map(|&id| participant(h, id).decided().get(&T1).copied())
        .collect()
}

#[test]
fn a_participant_restored_undecided_asks_and_learns_the_commit() {
    let mut h = harness(4);
    h.request(COORDINATOR, 1, transfer(1, 2, 0, 100));
    assert!(run_sync_until(&mut h, |h| {
        participant(h, 3).stage(T1) == Stage::PreCommitted
    }));
    h.crash(3);
    run_sync(&mut h, SECOND);
    assert_eq!(decisions_of(&h, &[1, 2]), vec![Some(Outcome::Commit); 2]);
    h.restart(3);
    assert!(participant(&h, 3).is_recovering(T1));
    run_sync(&mut h, SECOND);
    assert_eq!(decisions(&h, T1), vec![Some(Outcome::Commit); 3]);
    assert_settled(&h);
}

fn steps_without_faults(seed: u64, workload: &[Request]) -> u64 {
    let mut h = harness(seed);
    for (index, request) in workload.iter().enumerate() {
        h.request(COORDINATOR, index as u64 + 1, request.clone());
    }
    run_sync(&mut h, 2 * SECOND);
    assert_settled(&h);
    h.steps
}

fn crash_and_recover(seed: u64, workload: &[Request], victim: NodeId, crash_after: u64) {
    let mut h = harness(seed);
    for (index, request) in workload.iter().enumerate() {
        h.request(COORDINATOR, index as u64 + 1, request.clone());
    }
    while h.steps < crash_after && sync_action(&mut h) {}
    h.crash(victim);
    run_sync(&mut h, 500 * MILLISECOND);
    // Without the victim, the others have decided (3PC does not block on one crash)...
    if victim != COORDINATOR {
        for id in (1..4).filter(|&id| id != victim) {
            let node = h.node(id);
            assert!(
                node.in_doubt().is_empty(),
                "seed {seed} victim {victim} step {crash_after}: {id} blocked"
            );
        }
    }
    h.restart(victim);
    run_sync(&mut h, 5 * SECOND);
    assert_settled(&h);
}

#[test]
fn every_node_recovers_from_a_crash_after_every_step_and_the_rest_never_block() {
    let workload = [
        transfer(1, 2, 0, 100),
        transfer(2, 3, 1, 100),
        transfer(3, 1, 2, 5_000),
    ];
    let mut runs = 0;
    for seed in 0..12 {
        let total = steps_without_faults(seed, &workload);
        for victim in 0..4 {
            for crash_after in 0..=total {
                crash_and_recover(seed, &workload, victim, crash_after);
                runs += 1;
            }
        }
    }
    assert!(runs > 2_000, "only {runs} crash points");
}
