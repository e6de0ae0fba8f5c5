//! PBFT in the simulator: 4 replicas (f = 1) under the simulator's faults and, with
//! `byzantine`, up to f replicas running the PBFT attacks of `concord_sim::pbft`. Every step
//! runs PBFT's checkers (committed agreement, state machine safety, checkpoints agree, clients
//! accept correct results); every history is checked for linearizability; once the faults
//! stop the cluster must converge.

use std::collections::BTreeSet;

use concord_check::{check_linearizability, EventType, RegisterModel, Verdict};
use concord_core::time::{MILLISECOND, SECOND};
use concord_core::KvOperation;
use concord_sim::pbft::{
    adversaries, install_attacks, replica_config, Pbft, PbftAdversary, PbftAttack, Replica,
};
use concord_sim::{
    create_cluster, run, ClusterOptions, FaultKind, FaultSelection, RunReport, SimConfig,
    SimOptions, Simulation, Workload, WorkloadConfig,
};

fn options(seed: u64, faults: FaultSelection) -> SimOptions {
    SimOptions {
        algorithm: "pbft".into(),
        nodes: 4,
        seed,
        duration: 4 * SECOND,
        ops: 40,
        faults,
        ..SimOptions::default()
    }
}

fn all_with_byzantine() -> FaultSelection {
    let selection: FaultSelection = "all,byzantine".parse().unwrap();
    let mut kinds: BTreeSet<FaultKind> = FaultKind::ALL.into_iter().collect();
    kinds.insert(FaultKind::Byzantine);
    assert_eq!(selection, FaultSelection::Only(kinds));
    selection
}

fn check(report: &RunReport, linearizable: bool) {
    let seed = report.seed;
    if let Some(failure) = &report.failure {
        panic!(
            "seed {seed}: invariant '{}' violated at step {}: {}\nreplay: {}",
            failure.invariant, failure.step, failure.detail, report.replay
        );
    }
    if linearizable {
        let verdict = check_linearizability(&report.history, &RegisterModel, None).unwrap();
        assert!(
            verdict.verdict == Verdict::Linearizable,
            "seed {seed}: history not linearizable: {:?}\nreplay: {}",
            verdict.verdict,
            report.replay
        );
    }
    assert!(
        report.converged,
        "seed {seed} did not converge\nreplay: {}",
        report.replay
    );
    assert!(
        report.history_summary.ok > 0,
        "seed {seed}: no operation succeeded\nreplay: {}",
        report.replay
    );
}

/// A Byzantine client's history is its own to spoil (it asked one replica for one thing and
/// another for something else): its seeds are checked for safety, not linearizability.
fn byzantine_client(seed: u64) -> bool {
    adversaries(seed, 4, 1)
        .iter()
        .any(|(_, attack)| *attack == PbftAttack::ByzantineClient)
}

#[test]
fn pbft_without_faults_is_safe_linearizable_and_live() {
    for seed in 0..5 {
        check(&run(&options(seed, FaultSelection::None)).unwrap(), true);
    }
}

/// 500 seeds with every fault and up to f Byzantine replicas, every attack among them, twins
/// too (larger sweeps: `concord sweep --algorithm pbft --nodes 4 --faults all,byzantine`).
#[test]
fn pbft_with_every_fault_and_f_byzantine_replicas_is_safe() {
    let mut attacks = BTreeSet::new();
    let mut twins = 0;
    for seed in 0..500 {
        let report = run(&options(seed, all_with_byzantine())).unwrap();
        check(&report, !byzantine_client(seed));
        for (_, attack) in adversaries(seed, 4, 1) {
            attacks.insert(attack);
            twins += usize::from(attack == PbftAttack::Twins);
        }
    }
    assert_eq!(attacks, PbftAttack::ALL.into_iter().collect());
    assert!(twins >= 20, "twins on {twins} seeds");
}

fn simulation(seed: u64, max_byzantine: usize) -> Simulation<Pbft> {
    let mut config = SimConfig::new(4, seed);
    config.max_byzantine = max_byzantine;
    let mut sim = Simulation::new(config, concord_sim::pbft::config(seed)).unwrap();
    for invariant in concord_pbft::invariants() {
        sim.add_invariant(invariant);
    }
    sim
}

fn write(value: i64) -> concord_pbft::Request<KvOperation, KvOperation> {
    concord_pbft::Request::Propose(KvOperation::Write {
        key: "k0".into(),
        value,
    })
}

/// §4.4 and liveness: a primary that is silent for good is replaced, every request completes,
/// the view settles (the other three replicas are active in one view with a new primary) and
/// they converge.
#[test]
fn a_silent_primary_is_replaced_and_the_view_settles() {
    for seed in 0..10 {
        let mut sim = simulation(seed, 1);
        let silent = PbftAdversary::new(PbftAttack::Silent, 0, 4, sim.node_config());
        sim.set_byzantine(0, Some(Box::new(silent))).unwrap();
        let workload = WorkloadConfig {
            operations: 30,
            ..WorkloadConfig::default()
        };
        let rng = concord_core::seeded_rng(seed, 99);
        sim.attach_workload(Workload::new(workload, 4, rng).unwrap());
        sim.run_for(20 * SECOND).unwrap();
        let history = sim.workload().unwrap();
        assert!(history.is_done(), "seed {seed}: requests still pending");
        assert!(history
            .history()
            .events
            .iter()
            .any(|e| e.kind == EventType::Ok));
        let statuses = sim.statuses();
        let views: BTreeSet<u64> = statuses[1..].iter().map(|s| s.term).collect();
        assert_eq!(views.len(), 1, "seed {seed}: views {statuses:?}");
        assert!(statuses[1..].iter().all(|s| s.leader == statuses[1].leader));
        assert_ne!(statuses[1].leader, Some(0));
        // The correct replicas converge (the silent one never says what it lacks).
        let correct: BTreeSet<(u64, Option<u64>)> = (1..4)
            .map(|n| {
                let node = sim.node(n).unwrap();
                (node.executed(), concord_core::Node::state_digest(node))
            })
            .collect();
        assert_eq!(correct.len(), 1, "seed {seed}: {statuses:?}");
    }
}

/// Beyond f: the primary and one backup (f + 1 = 2 of 4) tell replica 3 the null batch where
/// they tell replica 2 a client's batch. Both correct replicas commit — different batches at one
/// sequence number — and the checkers report it.
#[test]
fn f_plus_one_byzantine_replicas_break_safety_and_the_checkers_catch_it() {
    let mut caught = 0;
    for seed in 0..5 {
        let mut sim = simulation(seed, 2);
        let config = sim.node_config().clone();
        for node in [0, 1] {
            let adversary =
                PbftAdversary::new(PbftAttack::Equivocate, node, 4, &config).with_victims(&[3]);
            sim.set_byzantine(node, Some(Box::new(adversary))).unwrap();
        }
        sim.submit(2, write(1)).unwrap();
        let failure = sim.run_for(SECOND).expect_err("safety must break");
        assert!(
            [
                "committed-agreement",
                "state-machine-safety",
                "apply-agreement"
            ]
            .contains(&failure.invariant.as_str()),
            "seed {seed}: {failure:?}"
        );
        caught += 1;
    }
    assert_eq!(caught, 5);
}

/// The attacks happen: forged senders and corrupted MACs are dropped and counted, equivocation
/// and lies are refused, and still every seed above stays safe.
#[test]
fn byzantine_messages_are_dropped_and_counted() {
    let mut sim = simulation(3, 1);
    let config = sim.node_config().clone();
    let forge = PbftAdversary::new(PbftAttack::Forge, 3, 4, &config);
    sim.set_byzantine(3, Some(Box::new(forge))).unwrap();
    for value in 0..10 {
        sim.submit(1, write(value)).unwrap();
        sim.run_for(100 * MILLISECOND).unwrap();
    }
    let dropped: u64 = (0..3)
        .map(|n| sim.node(n).unwrap().counters().authentication_failures)
        .sum();
    assert!(dropped > 0);
    let done = sim
        .take_replies()
        .iter()
        .filter(|r| matches!(r.response, concord_pbft::Response::Done { .. }))
        .count();
    assert_eq!(done, 10);
}

/// §5.1.3: with the read-only optimization on, reads skip ordering and histories stay
/// linearizable under every crash fault (100 seeds; with Byzantine replicas read-only reads
/// are not claimed linearizable: see the crate's README).
#[test]
fn pbft_read_only_reads_stay_linearizable_under_crash_faults() {
    for seed in 0..100 {
        let config = concord_pbft::Config {
            read_only: true,
            ..concord_sim::pbft::config(seed)
        };
        let report = concord_sim::pbft::run(&options(seed, FaultSelection::All), config).unwrap();
        check(&report, true);
    }
}

/// The toolkit with `pbft`: the primary shows as leader, the view as term, the last executed
/// sequence number as commit index; cutting the primary off, the other three change views and
/// keep serving, the primary's side serves nothing.
#[test]
fn the_toolkit_shows_the_primary_and_a_partition_replaces_it() {
    let mut cluster = create_cluster("pbft", 4, 5, &ClusterOptions::default()).unwrap();
    assert_eq!(cluster.wait_for_leader(SECOND).unwrap(), Some(0));
    cluster.run_for(2 * SECOND).unwrap();
    let health = cluster.health();
    assert_eq!((health.leader, health.term), (Some(0), 0));
    assert!(health.commit_index > 0);
    cluster.isolate(&[0]).unwrap();
    let effects = cluster.observe(5 * SECOND).unwrap();
    let primary_side = &effects.sides[0];
    let others = &effects.sides[1];
    assert_eq!(primary_side.nodes, vec![0]);
    assert!(!primary_side.log_replicated);
    assert_eq!(primary_side.requests_ok, 0);
    assert!(others.leader_elected, "{effects:?}");
    assert!(others.log_replicated);
    assert!(others.requests_ok > 0);
    let health = cluster.health();
    assert!(health.term >= 1);
    assert_ne!(health.leader, Some(0));
}

/// Liveness with a Byzantine primary for good: whatever attack the initial primary keeps up,
/// requests complete and the correct replicas converge; a silent or slow primary (its
/// pre-prepares late beyond the view-change timeout) is replaced. (`PBFT_ATTACK_SEEDS=60`
/// for more seeds per attack.)
#[test]
fn every_attack_by_the_primary_for_good_still_lets_requests_complete() {
    let seeds: u64 = std::env::var("PBFT_ATTACK_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for attack in PbftAttack::REWRITING {
        for seed in 0..seeds {
            let mut sim = simulation(seed, 1);
            let adversary = PbftAdversary::new(attack, 0, 4, sim.node_config());
            sim.set_byzantine(0, Some(Box::new(adversary))).unwrap();
            let workload = WorkloadConfig {
                operations: 30,
                ..WorkloadConfig::default()
            };
            let rng = concord_core::seeded_rng(seed, 99);
            sim.attach_workload(Workload::new(workload, 4, rng).unwrap());
            if let Err(failure) = sim.run_for(30 * SECOND) {
                panic!("{}: seed {seed}: {failure:?}", attack.name());
            }
            let clients = sim.workload().unwrap();
            assert!(clients.is_done(), "{}: seed {seed}: pending", attack.name());
            let ok = clients
                .history()
                .events
                .iter()
                .filter(|e| e.kind == EventType::Ok)
                .count();
            assert!(ok >= 15, "{}: seed {seed}: {ok} ok", attack.name());
            if matches!(attack, PbftAttack::Silent | PbftAttack::Slow) {
                let view = sim.node(1).unwrap().view();
                assert!(view >= 1, "{}: seed {seed}: not replaced", attack.name());
            }
            let correct: BTreeSet<(u64, Option<u64>)> = (1..4)
                .map(|n| {
                    let node = sim.node(n).unwrap();
                    (node.executed(), concord_core::Node::state_digest(node))
                })
                .collect();
            assert_eq!(correct.len(), 1, "{}: seed {seed}", attack.name());
        }
    }
}

/// A simulation of `Replica` nodes with `attacks` installed.
fn replica_simulation(seed: u64, attacks: &[(u64, PbftAttack)]) -> Simulation<Replica> {
    let mut config = SimConfig::new(4, seed);
    config.max_byzantine = 1;
    let node_config = replica_config(concord_sim::pbft::config(seed), attacks);
    let mut sim = Simulation::new(config, node_config).unwrap();
    for invariant in concord_sim::pbft_twins::invariants() {
        sim.add_invariant(invariant);
    }
    install_attacks(&mut sim, attacks).unwrap();
    sim
}

/// Twins, the only attack: two correct instances of one replica (the primary, then a backup)
/// share its identity and keys, each hearing a different part of the cluster; the node's
/// clients talk to the first. The twins diverge — a primary's twins order different batches, a
/// backup's prepare, commit and execute differently — while every step's checkers hold, every
/// request completes, the history is linearizable, and the correct replicas converge.
#[test]
fn twins_in_the_simulator_cannot_break_safety_and_requests_complete() {
    let mut diverged = 0;
    let mut backup_diverged = 0;
    for twin in [0, 2] {
        for seed in 0..4 {
            let mut sim = replica_simulation(seed, &[(twin, PbftAttack::Twins)]);
            assert!(sim.node(twin).unwrap().is_twins());
            let workload = WorkloadConfig {
                operations: 30,
                ..WorkloadConfig::default()
            };
            let rng = concord_core::seeded_rng(seed, 99);
            sim.attach_workload(Workload::new(workload, 4, rng).unwrap());
            if let Err(failure) = sim.run_for(30 * SECOND) {
                panic!("twins at {twin}: seed {seed}: {failure:?}");
            }
            let clients = sim.workload().unwrap();
            assert!(clients.is_done(), "twins at {twin}: seed {seed}: pending");
            let history = clients.history();
            let ok = history
                .events
                .iter()
                .filter(|e| e.kind == EventType::Ok)
                .count();
            assert!(ok >= 15, "twins at {twin}: seed {seed}: {ok} ok");
            let verdict = check_linearizability(history, &RegisterModel, None).unwrap();
            assert_eq!(verdict.verdict, Verdict::Linearizable, "seed {seed}");
            let node = sim.node(twin).unwrap();
            let second = node.second().expect("still twins");
            let first = node.first();
            if twin == 0 {
                // Both instances acted as primary; the second, without the node's own clients'
                // requests, ordered batches that lost to the first's and fell behind.
                assert!(second.last_assigned() > 0, "seed {seed}");
                if second.executed() < first.executed() {
                    diverged += 1;
                }
            } else {
                assert!(!node.second_hears().is_empty(), "seed {seed}");
                if (second.executed(), second.view()) != (first.executed(), first.view()) {
                    backup_diverged += 1;
                }
            }
            let correct: BTreeSet<(u64, Option<u64>)> = (0..4)
                .filter(|&n| n != twin)
                .map(|n| {
                    let node = sim.node(n).unwrap();
                    (node.executed(), concord_core::Node::state_digest(node))
                })
                .collect();
            assert_eq!(correct.len(), 1, "twins at {twin}: seed {seed}");
        }
    }
    assert!(diverged > 0, "the twins of the primary never diverged");
    assert!(backup_diverged > 0, "the twins of a backup never diverged");
}

/// Seeds the 100 000-seed CLI sweep found breaking `pbft-watermarks`: a replica restarted with
/// an older durable stable checkpoint than the sequence numbers it had accepted (and executed)
/// put them back in its log, above its high watermark. The log is now rebuilt within the
/// watermarks, and the next sequence number stays above everything accepted in the view.
#[test]
fn a_replica_restarted_behind_its_own_log_keeps_to_its_watermarks() {
    for seed in [12125, 12240, 20168, 75534, 98686] {
        let options = SimOptions {
            algorithm: "pbft".into(),
            seed,
            nodes: 5,
            duration: 10 * SECOND,
            ops: 200,
            clients: 3,
            faults: "all,byzantine".parse().unwrap(),
            ..SimOptions::default()
        };
        let report = concord_sim::run(&options).unwrap();
        assert!(
            report.failure.is_none(),
            "seed {seed}: {:?}\nreplay: {}",
            report.failure,
            report.replay
        );
    }
}
