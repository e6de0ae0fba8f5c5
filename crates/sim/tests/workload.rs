//! Clients record a truthful Jepsen-style history.

mod common;

use std::collections::BTreeMap;

use common::{ToyConfig, ToyNode};
use concord_check::{EventType, History};
use concord_core::seeded_rng;
use concord_core::time::{MILLISECOND, SECOND};
use concord_sim::{
    NemesisAction, OperationMix, SimConfig, Simulation, Workload, WorkloadConfig, WorkloadError,
};

fn cluster(seed: u64, workload: WorkloadConfig) -> Simulation<ToyNode> {
    let mut sim = Simulation::new(SimConfig::new(3, seed), ToyConfig::default()).unwrap();
    let workload = Workload::new(workload, 3, seeded_rng(seed, 77)).unwrap();
    sim.attach_workload(workload);
    sim
}

/// Every process alternates invoke / completion, and completions repeat the invoked function.
fn check_well_formed(history: &History) {
    let mut open: BTreeMap<u64, &concord_check::Op> = BTreeMap::new();
    let mut last_time = 0;
    for op in &history.events {
        assert!(op.time >= last_time, "time goes forward");
        last_time = op.time;
        match op.kind {
            EventType::Invoke => assert!(open.insert(op.process, op).is_none(), "{op:?}"),
            _ => {
                let invoke = open.remove(&op.process).expect("completion without invoke");
                assert_eq!((&invoke.f, &invoke.key), (&op.f, &op.key));
            }
        }
    }
}

#[test]
fn clients_follow_leader_hints_and_complete_every_operation() {
    let config = WorkloadConfig {
        clients: 4,
        operations: 100,
        ..WorkloadConfig::default()
    };
    let mut sim = cluster(1, config);
    sim.run_for(20 * SECOND).unwrap();
    let workload = sim.workload().unwrap();
    assert!(workload.is_done());
    let history = sim.history();
    check_well_formed(history);
    assert_eq!(history.events.len(), 200);
    // Clients at nodes 1 and 2 were redirected to the primary: nothing failed or was unknown,
    // except compare-and-sets whose expected value did not match.
    for op in history.events.iter().filter(|o| o.kind == EventType::Fail) {
        assert_eq!(op.f, "cas");
    }
    assert!(history.events.iter().all(|o| o.kind != EventType::Info));
}

#[test]
fn values_are_encoded_as_in_jepsen() {
    let mut sim = cluster(2, WorkloadConfig::default());
    sim.run_for(20 * SECOND).unwrap();
    for op in &sim.history().events {
        let value = &op.value;
        match (op.f.as_str(), op.kind) {
            ("read", EventType::Invoke) => assert!(value.is_null()),
            ("read", EventType::Ok) => {
                assert!(value.is_null() || value.is_i64() || value.is_array())
            }
            ("write" | "append", _) => assert!(value.is_i64(), "{op:?}"),
            ("cas", _) => assert_eq!(value.as_array().map(|a| a.len()), Some(2), "{op:?}"),
            _ => {}
        }
        assert!(op.key.as_deref().is_some_and(|k| k.starts_with('k')));
    }
    let json = serde_json::to_string(&sim.history().events[0]).unwrap();
    assert!(json.contains("\"type\":\"invoke\""), "{json}");
}

#[test]
fn timeouts_are_info_and_the_process_retires() {
    let config = WorkloadConfig {
        clients: 1,
        operations: 3,
        mix: OperationMix {
            read: 0,
            write: 1,
            cas: 0,
            append: 0,
        },
        request_timeout: 500 * MILLISECOND,
        ..WorkloadConfig::default()
    };
    let mut sim = cluster(3, config);
    // The primary (the client's home) is paused: the first request waits, times out.
    sim.apply_action(&NemesisAction::Pause { nodes: vec![0] })
        .unwrap();
    sim.run_for(700 * MILLISECOND).unwrap();
    sim.apply_action(&NemesisAction::Resume { nodes: None })
        .unwrap();
    sim.run_for(5 * SECOND).unwrap();
    let events = &sim.history().events;
    check_well_formed(sim.history());
    assert_eq!(events[1].kind, EventType::Info);
    assert_eq!(events[0].process, 0);
    assert_eq!(events[2].process, 1, "a fresh process takes over");
    assert_eq!(events[3].kind, EventType::Ok);
}

#[test]
fn a_crashed_home_node_refuses_and_the_operation_fails() {
    let config = WorkloadConfig {
        clients: 1,
        operations: 1,
        ..WorkloadConfig::default()
    };
    let mut sim = cluster(4, config);
    sim.crash(0).unwrap();
    sim.run_for(SECOND).unwrap();
    let events = &sim.history().events;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].kind, EventType::Fail);
}

#[test]
fn bad_workloads_are_typed_errors() {
    let empty = WorkloadConfig {
        mix: OperationMix {
            read: 0,
            write: 0,
            cas: 0,
            append: 0,
        },
        ..WorkloadConfig::default()
    };
    assert_eq!(
        Workload::<ToyNode>::new(empty, 3, seeded_rng(1, 1)).unwrap_err(),
        WorkloadError::EmptyMix
    );
    let keys = WorkloadConfig {
        keys: 0,
        ..WorkloadConfig::default()
    };
    assert_eq!(
        Workload::<ToyNode>::new(keys, 3, seeded_rng(1, 1)).unwrap_err(),
        WorkloadError::NoKeys
    );
}
