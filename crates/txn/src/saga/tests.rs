//! Sagas by hand: the barrier's three cases, compensation in reverse order, retries with
//! backoff and their limit, a hanging action blocked, and a crash of every node after every
//! step.

use concord_core::time::{MILLISECOND, SECOND};
use concord_core::{Input, NodeId};
use concord_paxos::testing::Harness;

use super::*;
use crate::types::Change;

type H = Harness<Saga>;

const ORCHESTRATOR: NodeId = 0;
const S1: SagaId = SagaId {
    epoch: 1,
    sequence: 1,
};

fn harness(seed: u64) -> H {
    Harness::new(
        4,
        Config::default(),
        seed,
        vec![Box::new(SagaOutcomes::new())],
    )
}

fn step(service: NodeId, account: u64, delta: i64) -> Step {
    Step {
        service,
        changes: vec![Change { account, delta }],
    }
}

/// Debit 100 at 1, credit 100 at 2, then a fee of `fee` at 3.
fn transfer_with_fee(fee: i64) -> Request {
    Request::Saga(vec![step(1, 0, -100), step(2, 0, 100), step(3, 0, -fee)])
}

fn service(h: &H, id: NodeId) -> &Service {
    h.node(id).as_service().expect("a service")
}

fn balance(h: &H, id: NodeId) -> i64 {
    service(h, id).ledger().balance(0)
}

fn finished(h: &H, request: u64) -> Option<SagaStatus> {
    h.replies
        .iter()
        .find_map(|(_, id, response)| match response {
            Response::Finished { status, .. } if *id == request => Some(*status),
            _ => None,
        })
}

fn to_service(h: &mut H, id: NodeId, message: Message) {
    h.step(
        id,
        Input::Message {
            from: ORCHESTRATOR,
            message,
        },
    );
    h.confirm(id);
}

fn action(step: u32, delta: i64) -> Message {
    Message::Action {
        saga: S1,
        step,
        changes: vec![Change { account: 0, delta }],
    }
}

fn compensate(step: u32, delta: i64) -> Message {
    Message::Compensate {
        saga: S1,
        step,
        changes: vec![Change { account: 0, delta }],
    }
}

fn results(h: &mut H) -> Vec<StepResult> {
    h.network
        .drain(..)
        .filter_map(|e| match e.message {
            Message::Result { result, .. } => Some(result),
            _ => None,
        })
        .collect()
}

#[test]
fn barrier_a_duplicate_action_applies_once_and_returns_the_same_result() {
    let mut h = harness(1);
    to_service(&mut h, 1, action(0, -100));
    to_service(&mut h, 1, action(0, -100));
    assert_eq!(balance(&h, 1), 900);
    assert_eq!(results(&mut h), vec![StepResult::Done; 2]);
    // A refused action is refused again, without a second look at the balance.
    to_service(&mut h, 1, action(1, -5_000));
    to_service(&mut h, 1, action(1, -5_000));
    let refused = StepResult::Refused(crate::Refusal::InsufficientFunds);
    assert_eq!(results(&mut h), vec![refused; 2]);
}

#[test]
fn barrier_a_null_compensation_changes_nothing_and_blocks_the_hanging_action() {
    let mut h = harness(2);
    // The compensation arrives first: nothing to undo.
    to_service(&mut h, 1, compensate(0, -100));
    assert_eq!(balance(&h, 1), 1_000);
    // The action arrives after it ("hanging"): refused by the barrier, never applied.
    to_service(&mut h, 1, action(0, -100));
    assert_eq!(balance(&h, 1), 1_000);
    assert_eq!(results(&mut h), vec![StepResult::Done, StepResult::Blocked]);
    assert_eq!(
        h.storage[1].barrier.get(&(S1, 0, Op::Action)),
        Some(&BarrierRow::Blocked)
    );
}

#[test]
fn barrier_a_compensation_undoes_once_however_often_it_arrives() {
    let mut h = harness(3);
    to_service(&mut h, 1, action(0, -100));
    to_service(&mut h, 1, compensate(0, -100));
    to_service(&mut h, 1, compensate(0, -100));
    assert_eq!(balance(&h, 1), 1_000);
    assert_eq!(results(&mut h), vec![StepResult::Done; 3]);
}

#[test]
fn a_saga_completes_when_every_action_applies() {
    let mut h = harness(4);
    h.request(ORCHESTRATOR, 1, transfer_with_fee(1));
    h.run_for(SECOND);
    assert_eq!(finished(&h, 1), Some(SagaStatus::Completed));
    assert_eq!(
        (balance(&h, 1), balance(&h, 2), balance(&h, 3)),
        (900, 1_100, 999)
    );
    assert_eq!(h.storage[0].sagas[&S1].status, SagaStatus::Completed);
}

#[test]
fn a_refused_step_compensates_the_earlier_steps_in_reverse_order() {
    let mut h = harness(5);
    h.request(ORCHESTRATOR, 1, transfer_with_fee(5_000));
    // Deliver in order, recording the compensations as they go out.
    let mut compensated = Vec::new();
    for _ in 0..1_000 {
        if let Some(envelope) = h.network.first() {
            if let Message::Compensate { step, .. } = envelope.message {
                compensated.push(step);
            }
            h.deliver(0);
        }
        for node in 0..4 {
            h.confirm(node);
        }
        if h.network.is_empty() && !h.advance() {
            break;
        }
    }
    assert_eq!(finished(&h, 1), Some(SagaStatus::Compensated));
    assert_eq!(compensated, vec![2, 1, 0]);
    assert_eq!(
        (balance(&h, 1), balance(&h, 2), balance(&h, 3)),
        (1_000, 1_000, 1_000)
    );
}

#[test]
fn an_unanswered_action_is_retried_with_growing_backoff_then_compensated() {
    let mut h = harness(6);
    h.crash(2);
    h.request(ORCHESTRATOR, 1, transfer_with_fee(1));
    let mut sent_at = Vec::new();
    for _ in 0..10_000 {
        h.network.retain(|e| {
            if e.to == 2 {
                if matches!(e.message, Message::Action { .. }) {
                    sent_at.push(h.now);
                }
                false
            } else {
                true
            }
        });
        let orchestrator = h.node(ORCHESTRATOR).as_orchestrator().unwrap();
        if orchestrator.status(S1) == Some(SagaStatus::Compensating) {
            break;
        }
        if !h.network.is_empty() {
            h.deliver(0);
            continue;
        }
        for node in 0..4 {
            h.confirm(node);
        }
        if h.network.is_empty() && !h.advance() {
            break;
        }
    }
    let config = Config::default();
    // The first try and `max_retries` retries, each wait longer than the one before.
    assert_eq!(sent_at.len() as u32, config.max_retries + 1, "{sent_at:?}");
    let gaps: Vec<u64> = sent_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.windows(2).all(|w| w[1] > w[0]), "{gaps:?}");
    assert_eq!(gaps[0], config.step_timeout);
    // Service 2 comes back: step 1 is compensated (a null compensation), then step 0.
    h.restart(2);
    h.run_for(5 * SECOND);
    assert_eq!(finished(&h, 1), Some(SagaStatus::Compensated));
    assert_eq!((balance(&h, 1), balance(&h, 2)), (1_000, 1_000));
}

#[test]
fn a_late_action_after_the_saga_compensated_is_blocked_by_the_barrier() {
    let mut h = harness(7);
    h.request(ORCHESTRATOR, 1, transfer_with_fee(1));
    // Hold back the first copy of step 1's action until the saga has given up on it.
    let mut held = None;
    for _ in 0..100_000 {
        if held.is_none() {
            if let Some(position) = h
                .network
                .iter()
                .position(|e| matches!(e.message, Message::Action { step: 1, .. }))
            {
                held = Some(h.network.swap_remove(position));
            }
        }
        h.network
            .retain(|e| !matches!(e.message, Message::Action { step: 1, .. }));
        if finished(&h, 1).is_some() {
            break;
        }
        if !h.random_action() {
            break;
        }
    }
    assert_eq!(finished(&h, 1), Some(SagaStatus::Compensated));
    let late = held.expect("the action was sent");
    h.network.push(late);
    h.run_for(SECOND);
    assert_eq!(balance(&h, 2), 1_000, "the hanging action never applied");
    assert_eq!(balance(&h, 1), 1_000);
}

fn steps_without_faults(seed: u64, workload: &[Request]) -> u64 {
    let mut h = harness(seed);
    for (index, request) in workload.iter().enumerate() {
        h.request(ORCHESTRATOR, index as u64 + 1, request.clone());
    }
    h.run_for(2 * SECOND);
    h.steps
}

fn assert_all_finished(h: &H) {
    for (saga, record) in &h.storage[0].sagas {
        assert!(
            matches!(
                record.status,
                SagaStatus::Completed | SagaStatus::Compensated
            ),
            "{saga} is {}",
            record.status.name()
        );
    }
    let net: i64 = (1..4).map(|id| service(h, id).ledger().net_change()).sum();
    let expected: i64 = h.storage[0]
        .sagas
        .values()
        .filter(|r| r.status == SagaStatus::Completed)
        .flat_map(|r| {
            r.steps
                .iter()
                .flat_map(|s| s.changes.iter().map(|c| c.delta))
        })
        .sum();
    assert_eq!(net, expected);
}

#[test]
fn every_node_recovers_from_a_crash_after_every_step_and_every_saga_finishes() {
    let workload = [
        transfer_with_fee(1),
        transfer_with_fee(5_000),
        Request::Saga(vec![step(3, 1, -50), step(1, 1, 50)]),
    ];
    let mut runs = 0;
    for seed in 0..8 {
        let total = steps_without_faults(seed, &workload);
        for victim in 0..4 {
            for crash_after in 0..=total {
                let mut h = harness(seed);
                for (index, request) in workload.iter().enumerate() {
                    h.request(ORCHESTRATOR, index as u64 + 1, request.clone());
                }
                while h.steps < crash_after && h.random_action() {}
                let context = format!("seed {seed} victim {victim} crash after {crash_after}");
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    h.crash(victim);
                    h.run_for(300 * MILLISECOND);
                    h.restart(victim);
                    h.run_for(10 * SECOND);
                    assert_all_finished(&h);
                }));
                assert!(outcome.is_ok(), "{context}");
                runs += 1;
            }
        }
    }
    assert!(runs > 1_000, "only {runs} crash points");
}
