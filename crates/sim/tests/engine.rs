//! The engine honours the driver contract: persistence ordering, crashes, restarts, pauses,
//! clock drift, invariants.

mod common;

use common::{read, toy, write, ToyConfig, ToyNode, PRIMARY};
use concord_core::time::{MILLISECOND, SECOND};
use concord_core::{KvOutcome, KvResult, Value};
use concord_sim::{SimConfig, Simulation};

#[test]
fn reply_is_held_until_its_write_is_durable() {
    let mut config = SimConfig::new(3, 1);
    config.persist_latency_min = 10 * MILLISECOND;
    config.persist_latency_max = 10 * MILLISECOND;
    let mut sim: Simulation<ToyNode> = Simulation::new(config, ToyConfig::default()).unwrap();
    sim.run_for(MILLISECOND).unwrap();
    sim.submit(PRIMARY, write("x", 7)).unwrap();
    sim.run_for(5 * MILLISECOND).unwrap();
    assert!(
        sim.take_replies().is_empty(),
        "reply released before the fsync"
    );
    assert_eq!(sim.pending_writes(PRIMARY), 1);
    assert!(sim.storage(PRIMARY).unwrap().log.is_empty());
    sim.run_for(10 * MILLISECOND).unwrap();
    let replies = sim.take_replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].response, KvOutcome::Ok(KvResult::Written));
    assert!(replies[0].time >= MILLISECOND + 10 * MILLISECOND);
    assert_eq!(sim.storage(PRIMARY).unwrap().log, vec![write("x", 7)]);
}

#[test]
fn crash_loses_unconfirmed_writes_and_restart_restores_durable_state() {
    let mut config = SimConfig::new(3, 2);
    config.persist_latency_min = 10 * MILLISECOND;
    config.persist_latency_max = 10 * MILLISECOND;
    let mut sim: Simulation<ToyNode> = Simulation::new(config, ToyConfig::default()).unwrap();
    sim.submit(PRIMARY, write("x", 1)).unwrap();
    sim.run_for(50 * MILLISECOND).unwrap();
    sim.submit(PRIMARY, write("x", 2)).unwrap();
    sim.run_for(2 * MILLISECOND).unwrap();
    assert_eq!(
        sim.node(PRIMARY).unwrap().log.len(),
        2,
        "volatile state has both"
    );
    sim.crash(PRIMARY).unwrap();
    assert!(!sim.is_up(PRIMARY));
    assert_eq!(sim.stats().persists_lost, 1);
    assert_eq!(sim.storage(PRIMARY).unwrap().log, vec![write("x", 1)]);
    // The held reply to the second write was lost with the crash.
    let replies = sim.take_replies();
    assert_eq!(replies.len(), 1);
    sim.run_for(50 * MILLISECOND).unwrap();
    // Backups never saw the second write: its Replicate was held behind the fsync.
    for backup in [1, 2] {
        assert_eq!(sim.node(backup).unwrap().log, vec![write("x", 1)]);
    }
    sim.restart(PRIMARY).unwrap();
    let node = sim.node(PRIMARY).unwrap();
    assert_eq!(node.log, vec![write("x", 1)]);
    assert_eq!(node.state.get("x"), Some(&Value::Int(1)));
    assert_eq!(sim.stats().restarts, 1);
}

#[test]
fn messages_to_a_crashed_incarnation_are_discarded() {
    let mut sim = toy(3, 3);
    sim.run_for(SECOND).unwrap();
    let before = sim.node(1).unwrap().heartbeats.len();
    assert_eq!(before, 1);
    // The primary's heartbeat of t=1s is in flight; node 1 crashes and restarts at once.
    sim.crash(1).unwrap();
    sim.restart(1).unwrap();
    // Heartbeats sent to the old incarnation must not reach the new one.
    sim.run_for(5 * MILLISECOND).unwrap();
    assert!(sim.node(1).unwrap().heartbeats.is_empty());
    assert!(sim.stats().messages_dropped > 0);
}

#[test]
fn a_paused_node_processes_nothing_and_its_inbox_waits() {
    let mut sim = toy(3, 4);
    sim.run_for(SECOND).unwrap();
    sim.pause(1).unwrap();
    let received = sim.node(1).unwrap().received;
    let ticks = sim.node(1).unwrap().ticks;
    sim.run_for(SECOND).unwrap();
    assert!(sim.is_paused(1));
    assert_eq!(sim.node(1).unwrap().received, received);
    assert_eq!(sim.node(1).unwrap().ticks, ticks);
    assert_eq!(sim.statuses()[1].role, concord_core::Role::Down);
    sim.resume(1).unwrap();
    sim.run_for(MILLISECOND).unwrap();
    // The ~10 heartbeats that waited are handed over on resume.
    assert!(sim.node(1).unwrap().received >= received + 9);
}

#[test]
fn drift_changes_the_node_clock_rate() {
    let mut sim = toy(3, 5);
    sim.set_clock_rate(1, 2.0).unwrap();
    sim.set_clock_rate(2, 0.5).unwrap();
    sim.run_for(10 * SECOND).unwrap();
    let ticks = |n| sim.node(n).unwrap().ticks as i64;
    assert!((ticks(0) - 100).abs() <= 1, "{}", ticks(0));
    assert!((ticks(1) - 200).abs() <= 2, "{}", ticks(1));
    assert!((ticks(2) - 50).abs() <= 1, "{}", ticks(2));
    assert_eq!(sim.local_time(1), Some(20 * SECOND));
    assert_eq!(sim.local_time(2), Some(5 * SECOND));
    assert!(sim.set_clock_rate(1, f64::NAN).is_err());
    assert!(sim.set_clock_rate(9, 1.0).is_err());
}

#[test]
fn a_node_invariant_violation_stops_the_run_with_a_report() {
    let mut config = SimConfig::new(3, 99);
    config.replay = "concord replay --algorithm toy --seed 99".into();
    config.trace = true;
    let mut sim: Simulation<ToyNode> = Simulation::new(config, ToyConfig::default()).unwrap();
    sim.run_for(SECOND).unwrap();
    sim.submit(PRIMARY, write("x", -1)).unwrap();
    let failure = sim.run_for(SECOND).unwrap_err();
    assert_eq!(failure.seed, 99);
    assert_eq!(failure.invariant, "toy-no-negative-one");
    assert_eq!(failure.node, Some(PRIMARY));
    assert_eq!(failure.time, SECOND);
    assert!(failure.step > 0);
    assert_eq!(failure.replay, "concord replay --algorithm toy --seed 99");
    assert!(!failure.trace_tail.is_empty());
    assert!(failure.to_string().contains("replay: concord replay"));
    // The run stays stopped.
    assert_eq!(sim.run_for(SECOND).unwrap_err(), failure);
}

#[test]
fn reads_see_writes_and_trace_lines_name_events() {
    let mut config = SimConfig::new(3, 6);
    config.trace = true;
    let mut sim: Simulation<ToyNode> = Simulation::new(config, ToyConfig::default()).unwrap();
    sim.submit(PRIMARY, write("k", 4)).unwrap();
    sim.run_for(100 * MILLISECOND).unwrap();
    sim.submit(PRIMARY, read("k")).unwrap();
    sim.run_for(100 * MILLISECOND).unwrap();
    let replies = sim.take_replies();
    assert_eq!(
        replies[1].response,
        KvOutcome::Ok(KvResult::Read(Some(Value::Int(4))))
    );
    let trace = sim.trace();
    assert!(trace
        .iter()
        .any(|l| l.contains("n0 request r1") && l.contains("persist t1")));
    assert!(trace.iter().any(|l| l.contains("persisted t1")));
}

#[test]
fn invalid_setups_are_typed_errors() {
    let zero = Simulation::<ToyNode>::new(SimConfig::new(0, 1), ToyConfig::default());
    assert_eq!(zero.unwrap_err(), concord_sim::SimError::NoNodes);
    let mut config = SimConfig::new(3, 1);
    config.link.drop_probability = 1.5;
    assert!(Simulation::<ToyNode>::new(config, ToyConfig::default()).is_err());
    let mut sim = toy(3, 1);
    assert!(matches!(
        sim.crash(3),
        Err(concord_sim::SimError::NoSuchNode { node: 3, nodes: 3 })
    ));
    assert!(sim.submit(17, read("x")).is_err());
}

#[test]
fn a_message_storm_stops_the_run_instead_of_eating_memory() {
    let mut config = SimConfig::new(4, 7);
    config.max_pending_events = 1_000;
    let mut sim: Simulation<ToyNode> = Simulation::new(config, ToyConfig::default()).unwrap();
    // Every heartbeat the primary sends goes out 2^k times: a duplicate behaviour of our own.
    #[derive(Debug)]
    struct Flood;
    impl concord_sim::ByzantineBehavior<ToyNode> for Flood {
        fn name(&self) -> &'static str {
            "flood"
        }
        fn on_send(
            &mut self,
            from: concord_core::NodeId,
            to: concord_core::NodeId,
            message: common::ToyMessage,
            _nodes: usize,
            _rng: &mut concord_core::Rng,
        ) -> Vec<concord_sim::Outgoing<common::ToyMessage>> {
            let copy = concord_sim::Outgoing {
                to,
                claimed_from: from,
                message,
            };
            vec![copy; 500]
        }
    }
    sim.set_byzantine(PRIMARY, Some(Box::new(Flood))).unwrap();
    let failure = sim.run_for(10 * SECOND).unwrap_err();
    assert_eq!(failure.invariant, "pending-event-bound");
}
