//! 2PC by hand: the happy path, each kind of abort, cooperative termination, blocking, and a
//! crash of every node after every step of a run, each followed by recovery.

use std::collections::BTreeMap;

use concord_core::time::{MILLISECOND, SECOND};
use concord_core::NodeId;
use concord_paxos::testing::Harness;

use super::*;
use crate::types::{Change, Outcome, Refusal};
use crate::{Atomicity, TxnNode};

type H = Harness<TwoPhaseCommit>;

const COORDINATOR: NodeId = 0;

fn harness(seed: u64) -> H {
    Harness::new(4, Config::default(), seed, vec![Box::new(Atomicity::new())])
}

/// Moves `amount` from account `account` at `from` to the same account at `to`.
fn transfer(from: NodeId, to: NodeId, account: u64, amount: i64) -> Request {
    let mut changes = BTreeMap::new();
    changes.insert(
        from,
        vec![Change {
            account,
            delta: -amount,
        }],
    );
    changes.insert(
        to,
        vec![Change {
            account,
            delta: amount,
        }],
    );
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

/// Every node is up: nobody in doubt, every participant decided every transaction alike, no
/// money created or lost, and each client reply matches the participants' decisions.
fn assert_settled(h: &H) {
    let mut outcomes: BTreeMap<TxnId, Outcome> = BTreeMap::new();
    let mut net = 0;
    for id in 1..4 {
        let node = h.node(id);
        assert!(
            node.in_doubt().is_empty(),
            "node {id} in doubt: {:?}",
            node.in_doubt()
        );
        for (&txn, &outcome) in node.decided().unwrap() {
            let seen = *outcomes.entry(txn).or_insert(outcome);
            assert_eq!(seen, outcome, "{txn} decided both ways");
        }
        net += node.ledger().unwrap().net_change();
    }
    assert_eq!(net, 0, "money created or lost");
    for (_, _, response) in &h.replies {
        match response {
            Response::Committed(txn) => assert_eq!(outcomes.get(txn), Some(&Outcome::Commit)),
            Response::Aborted { txn, .. } => {
                assert_ne!(outcomes.get(txn), Some(&Outcome::Commit), "{txn}")
            }
            Response::Rejected(reason) => panic!("rejected: {reason:?}"),
        }
    }
}

fn first_txn() -> TxnId {
    TxnId {
        epoch: 1,
        sequence: 1,
    }
}

#[test]
fn commits_when_every_participant_votes_yes() {
    let mut h = harness(1);
    h.request(COORDINATOR, 1, transfer(1, 2, 7, 300));
    h.run_for(SECOND);
    assert_eq!(h.replies, vec![(0, 1, Response::Committed(first_txn()))]);
    assert_eq!(participant(&h, 1).ledger().balance(7), 700);
    assert_eq!(participant(&h, 2).ledger().balance(7), 1_300);
    assert_eq!(decisions(&h, first_txn())[..2], [Some(Outcome::Commit); 2]);
    // Every ack arrived: the commit record was ended, nothing is left to resend.
    assert!(h.storage[0].commits.is_empty());
    assert_eq!(h.node(COORDINATOR).next_deadline(), None);
    assert_settled(&h);
}

#[test]
fn aborts_when_a_participant_votes_no_and_keeps_no_change() {
    let mut h = harness(2);
    h.request(COORDINATOR, 1, transfer(1, 2, 7, 5_000));
    h.run_for(SECOND);
    assert_eq!(
        h.replies,
        vec![(
            0,
            1,
            Response::Aborted {
                txn: first_txn(),
                refusal: Some(Refusal::InsufficientFunds)
            }
        )]
    );
    assert_eq!(participant(&h, 2).ledger().balance(7), 1_000);
    // Presumed abort: the coordinator logged nothing but its epoch.
    assert!(h.storage[0].commits.is_empty());
    assert_settled(&h);
}

#[test]
fn a_locked_account_makes_a_conflicting_transaction_abort_instead_of_wait() {
    let mut h = harness(3);
    h.isolate(COORDINATOR);
    h.request(COORDINATOR, 1, transfer(1, 2, 7, 10));
    h.heal();
    // Deliver only the first transaction's prepares, then start a second on the same account.
    let prepares: Vec<usize> = (0..h.network.len()).rev().collect();
    for position in prepares {
        h.deliver(position);
    }
    h.request(COORDINATOR, 2, transfer(2, 3, 7, 10));
    h.run_for(SECOND);
    let second = TxnId {
        epoch: 1,
        sequence: 2,
    };
    assert!(h
        .replies
        .contains(&(0, 1, Response::Committed(first_txn()))));
    assert!(h.replies.contains(&(
        0,
        2,
        Response::Aborted {
            txn: second,
            refusal: Some(Refusal::Locked)
        }
    )));
    assert_settled(&h);
}

#[test]
fn the_coordinator_aborts_when_a_vote_is_late() {
    let mut h = harness(4);
    h.crash(3);
    h.request(COORDINATOR, 1, transfer(1, 3, 1, 10));
    h.run_for(SECOND);
    assert_eq!(
        h.replies,
        vec![(
            0,
            1,
            Response::Aborted {
                txn: first_txn(),
                refusal: None
            }
        )]
    );
    h.restart(3);
    h.run_for(SECOND);
    assert_settled(&h);
}

#[test]
fn participants_block_while_the_coordinator_is_down_and_presumed_abort_ends_it() {
    let mut h = harness(5);
    h.request(COORDINATOR, 1, transfer(1, 2, 1, 10));
    // Both participants prepare and vote; the coordinator crashes before logging a decision.
    h.confirm(COORDINATOR);
    while !h.network.is_empty() || (1..3).any(|id| participant(&h, id).in_doubt().count() == 0) {
        let position = h
            .network
            .iter()
            .position(|e| e.to != COORDINATOR)
            .expect("a prepare in flight");
        h.deliver(position);
        h.confirm(1);
        h.confirm(2);
        h.network.retain(|e| e.to != COORDINATOR);
    }
    h.crash(COORDINATOR);
    h.run_for(10 * SECOND);
    for id in 1..3 {
        assert_eq!(
            participant(&h, id).in_doubt().collect::<Vec<_>>(),
            vec![first_txn()]
        );
    }
    assert_eq!(decisions(&h, first_txn()), vec![None, None, None]);
    h.restart(COORDINATOR);
    h.run_for(SECOND);
    assert_eq!(
        decisions(&h, first_txn())[..2],
        [Some(Outcome::Abort), Some(Outcome::Abort)]
    );
    assert_settled(&h);
}

#[test]
fn cooperative_termination_learns_the_commit_from_a_peer() {
    let mut h = harness(6);
    h.request(COORDINATOR, 1, transfer(1, 2, 1, 10));
    // Once the commit is decided, cut the coordinator off from 2; run until 1 committed.
    let decided = h.run_random(10_000, |h| {
        h.node(COORDINATOR).as_coordinator().unwrap().committing() == 1
    });
    assert!(decided);
    h.cut.insert((COORDINATOR, 2));
    let committed = h.run_random(10_000, |h| {
        participant(h, 1).decided().get(&first_txn()) == Some(&Outcome::Commit)
    });
    assert!(committed);
    h.crash(COORDINATOR);
    h.run_for(2 * SECOND);
    assert_eq!(decisions(&h, first_txn())[..2], [Some(Outcome::Commit); 2]);
    h.heal();
    h.restart(COORDINATOR);
    h.run_for(SECOND);
    assert_settled(&h);
}

#[test]
fn a_peer_that_never_prepared_aborts_on_its_own_and_then_votes_no() {
    let mut h = harness(7);
    h.cut.insert((COORDINATOR, 3));
    h.request(COORDINATOR, 1, transfer(1, 3, 1, 10));
    // Participant 1 prepares; the coordinator crashes before any decision.
    let prepared = h.run_random(10_000, |h| participant(h, 1).in_doubt().count() == 1);
    assert!(prepared);
    h.crash(COORDINATOR);
    h.run_for(2 * SECOND);
    assert_eq!(
        participant(&h, 3).decided().get(&first_txn()),
        Some(&Outcome::Abort)
    );
    assert_eq!(
        participant(&h, 1).decided().get(&first_txn()),
        Some(&Outcome::Abort)
    );
    assert!(
        h.storage[3].decided.contains_key(&first_txn()),
        "the refusal is durable"
    );
    // The late prepare now gets a no.
    h.step(
        3,
        concord_core::Input::Message {
            from: COORDINATOR,
            message: Message::Prepare {
                txn: first_txn(),
                changes: vec![Change {
                    account: 1,
                    delta: 10,
                }],
                participants: vec![1, 3],
            },
        },
    );
    let vote = h.network.last().expect("a vote").message.clone();
    assert_eq!(
        vote,
        Message::Vote {
            txn: first_txn(),
            vote: Err(Refusal::AlreadyAborted)
        }
    );
    h.heal();
    h.restart(COORDINATOR);
    h.run_for(SECOND);
    assert_settled(&h);
}

/// The steps of a fault-free run of `workload` from `seed`, to bound the crash points.
fn steps_without_faults(seed: u64, workload: &[Request]) -> u64 {
    let mut h = harness(seed);
    for (index, request) in workload.iter().enumerate() {
        h.request(COORDINATOR, index as u64 + 1, request.clone());
    }
    h.run_for(2 * SECOND);
    assert_settled(&h);
    h.steps
}

/// Runs `workload` from `seed`, crashes `victim` right after step `crash_after`, lets the
/// others run on, restarts it and checks that everything settles atomically.
fn crash_and_recover(seed: u64, workload: &[Request], victim: NodeId, crash_after: u64) {
    let mut h = harness(seed);
    for (index, request) in workload.iter().enumerate() {
        h.request(COORDINATOR, index as u64 + 1, request.clone());
    }
    while h.steps < crash_after && h.random_action() {}
    h.crash(victim);
    h.run_for(500 * MILLISECOND);
    h.restart(victim);
    h.run_for(5 * SECOND);
    assert_settled(&h);
}

#[test]
fn every_node_recovers_from_a_crash_after_every_step() {
    let workload = [
        transfer(1, 2, 1, 100),
        transfer(2, 3, 2, 100),
        transfer(3, 1, 1, 5_000),
    ];
    let mut runs = 0;
    for seed in 0..16 {
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

/// Regression: a late duplicate vote reached the coordinator after it had forgotten a
/// committed transaction; its presumed-abort answer reached a participant that had committed,
/// which took it for an overturned decision.
#[test]
fn a_committed_participant_ignores_the_presumed_abort_of_a_forgotten_transaction() {
    let mut h = harness(8);
    h.request(COORDINATOR, 1, transfer(1, 2, 7, 300));
    h.run_for(SECOND);
    assert!(h.storage[0].commits.is_empty(), "forgotten after every ack");
    h.step(
        COORDINATOR,
        concord_core::Input::Message {
            from: 1,
            message: Message::Vote {
                txn: first_txn(),
                vote: Ok(()),
            },
        },
    );
    h.run_for(SECOND);
    assert_eq!(decisions(&h, first_txn())[..2], [Some(Outcome::Commit); 2]);
    assert_settled(&h);
}
