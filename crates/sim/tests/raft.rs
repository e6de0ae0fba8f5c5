//! The simulator driving Raft (`concord-raft`): elections, partitions, determinism, and a seed
//! sweep under every crash fault. The toolkit cases (a leader elected, a minority cut off, a
//! crashed leader replaced, the same report for the same seed, a requested partition) run for
//! every crash-fault algorithm of the registry: Raft and Multi-Paxos.

use concord_check::{check_linearizability, RegisterModel, Verdict};
use concord_core::time::{MILLISECOND, SECOND};
use concord_sim::{
    create_cluster, run, sweep, ClusterOptions, FaultSelection, SimOptions, WorkloadConfig,
};

/// The algorithms the toolkit cases run for.
const ALGORITHMS: [&str; 2] = ["raft", "paxos"];

fn options() -> ClusterOptions {
    ClusterOptions {
        workload: WorkloadConfig {
            clients: 5,
            operations: u64::MAX,
            ..WorkloadConfig::default()
        },
        ..ClusterOptions::default()
    }
}

#[test]
fn a_five_node_cluster_elects_one_leader() {
    for (algorithm, seed) in ALGORITHMS.iter().flat_map(|a| (0..5).map(move |s| (*a, s))) {
        let mut cluster = create_cluster(algorithm, 5, seed, &options()).unwrap();
        assert_eq!(cluster.algorithm(), algorithm);
        let leader = cluster.wait_for_leader(10 * SECOND).unwrap();
        assert!(leader.is_some(), "seed {seed}: no leader");
        let health = cluster.health();
        assert_eq!(health.leader, leader);
        assert_eq!(health.followers.len(), 4, "seed {seed}: {health:?}");
        assert!(health.term >= 1);
    }
}

#[test]
fn a_minority_partition_elects_nobody_and_serves_nothing_the_majority_does_both() {
    for (algorithm, seed) in ALGORITHMS.iter().flat_map(|a| (0..3).map(move |s| (*a, s))) {
        let mut cluster = create_cluster(algorithm, 5, seed, &options()).unwrap();
        let old = cluster.wait_for_leader(10 * SECOND).unwrap().unwrap();
        cluster.run_for(SECOND).unwrap();
        let buddy = (old + 1) % 5;
        cluster.isolate(&[old, buddy]).unwrap();
        // Let what was already replicated on a quorum before the cut finish committing (a few
        // ms); the majority cannot elect anyone this fast (Raft's election timeouts are
        // >= 500 ms; Multi-Paxos needs heartbeat rounds of 100 ms to notice).
        cluster.run_for(100 * MILLISECOND).unwrap();
        let effects = cluster.observe(10 * SECOND).unwrap();
        let minority = effects
            .sides
            .iter()
            .find(|s| s.nodes.contains(&old))
            .unwrap();
        let majority = effects
            .sides
            .iter()
            .find(|s| !s.nodes.contains(&old))
            .unwrap();
        assert_eq!(minority.nodes.len(), 2);
        assert!(
            !minority.leader_elected,
            "{algorithm} seed {seed}: {minority:?}"
        );
        assert!(
            !minority.log_replicated,
            "{algorithm} seed {seed}: {minority:?}"
        );
        assert_eq!(
            minority.requests_ok, 0,
            "{algorithm} seed {seed}: {minority:?}"
        );
        assert!(
            majority.leader_elected,
            "{algorithm} seed {seed}: {majority:?}"
        );
        assert!(
            majority.log_replicated,
            "{algorithm} seed {seed}: {majority:?}"
        );
        assert!(
            majority.requests_ok > 0,
            "{algorithm} seed {seed}: {majority:?}"
        );
        cluster.heal();
        cluster.stop_clients();
        cluster.run_for(10 * SECOND).unwrap();
        let health = cluster.health();
        assert!(health.leader.is_some());
        assert!(cluster.converged(), "{algorithm} seed {seed}: {health:?}");
    }
}

#[test]
fn a_crashed_leader_is_replaced_and_catches_up_after_restart() {
    for (algorithm, seed) in ALGORITHMS.iter().flat_map(|a| (0..3).map(move |s| (*a, s))) {
        let mut cluster = create_cluster(algorithm, 5, seed, &options()).unwrap();
        let old = cluster.wait_for_leader(10 * SECOND).unwrap().unwrap();
        cluster.run_for(SECOND).unwrap();
        cluster.crash(old).unwrap();
        let health = cluster.health();
        assert_eq!(health.nodes_up, 4, "{algorithm} seed {seed}: {health:?}");
        cluster.run_for(5 * SECOND).unwrap();
        let health = cluster.health();
        let new = health.leader.expect("a new leader among the four");
        assert_ne!(new, old, "{algorithm} seed {seed}");
        let committed_while_down = health.commit_index;
        cluster.restart(old).unwrap();
        cluster.stop_clients();
        cluster.run_for(5 * SECOND).unwrap();
        let health = cluster.health();
        assert_eq!(health.nodes_up, 5);
        assert!(
            health.nodes[old as usize].commit_index >= committed_while_down,
            "{algorithm} seed {seed}: {health:?}"
        );
        assert!(cluster.converged(), "{algorithm} seed {seed}: {health:?}");
    }
}

fn run_options(seed: u64) -> SimOptions {
    SimOptions {
        algorithm: "raft".into(),
        seed,
        duration: 6 * SECOND,
        ops: 100,
        ..SimOptions::default()
    }
}

#[test]
fn the_same_seed_gives_the_same_report() {
    for faults in [
        "all",
        "partition",
        "crash,pause",
        "loss,duplicate,reorder,drift",
    ] {
        for (algorithm, seed) in ALGORITHMS
            .iter()
            .flat_map(|a| [3, 14, 15].map(move |s| (*a, s)))
        {
            let options = SimOptions {
                algorithm: algorithm.into(),
                faults: faults.parse().unwrap(),
                ..run_options(seed)
            };
            let first = serde_json::to_string(&run(&options).unwrap()).unwrap();
            let second = serde_json::to_string(&run(&options).unwrap()).unwrap();
            assert_eq!(first, second, "{algorithm} seed {seed} faults {faults}");
        }
    }
}

#[test]
fn a_sweep_reports_failures_with_replay_commands() {
    // Byzantine senders break Raft, which tolerates crashes only: the sweep must notice. Seed
    // 60 (14 simulated seconds) is known to break "committed ⇒ durable on a quorum".
    let options = SimOptions {
        faults: "byzantine".parse().unwrap(),
        duration: 14 * SECOND,
        ..SimOptions::default()
    };
    let mut progress = Vec::new();
    let report = sweep(&options, 55..61, |p| progress.push(p.seed)).unwrap();
    assert_eq!(progress, (55..61).collect::<Vec<_>>());
    assert_eq!(report.seeds_run, 6);
    let failure = report
        .failures
        .iter()
        .find(|f| f.seed == 60)
        .expect("seed 60 fails");
    assert!(
        failure.reason.contains("committed-durable-on-quorum"),
        "{}",
        failure.reason
    );
    for failure in &report.failures {
        assert!(failure.replay.starts_with(&format!(
            "concord replay --algorithm raft --seed {} ",
            failure.seed
        )));
        assert!(failure.replay.contains("--faults byzantine"));
    }
}

#[test]
fn a_requested_partition_is_observed_and_healed() {
    for algorithm in ALGORITHMS {
        let options = SimOptions {
            algorithm: algorithm.into(),
            partition: Some(vec![0, 1]),
            faults: FaultSelection::None,
            ..run_options(5)
        };
        let report = run(&options).unwrap();
        assert!(report.failure.is_none(), "{algorithm}");
        let effects = report.partition.unwrap();
        assert_eq!(effects.sides.len(), 2);
        assert_eq!(effects.sides[0].nodes, vec![0, 1]);
        assert!(!effects.sides[0].leader_elected, "{algorithm}");
        assert_eq!(effects.sides[0].requests_ok, 0, "{algorithm}");
        assert!(effects.sides[1].log_replicated, "{algorithm}");
        assert!(report.converged, "{algorithm}");
    }
}

#[test]
fn histories_under_faults_are_linearizable() {
    for seed in 0..20 {
        let options = SimOptions {
            ops: 200,
            ..run_options(seed)
        };
        let report = run(&options).unwrap();
        assert!(report.failure.is_none(), "seed {seed}");
        assert!(report.history_summary.ok > 0, "seed {seed}");
        let check = check_linearizability(
            &report.history,
            &RegisterModel,
            Some(std::time::Duration::from_secs(20)),
        )
        .unwrap();
        assert!(
            !matches!(check.verdict, Verdict::NotLinearizable(_)),
            "seed {seed}: {:?}\nreplay: {}",
            check.verdict,
            report.replay
        );
    }
}

#[test]
fn a_seed_sweep_with_every_crash_fault_finds_no_violation() {
    let options = SimOptions {
        faults: FaultSelection::All,
        ..run_options(0)
    };
    let report = sweep(&options, 0..200, |_| {}).unwrap();
    assert_eq!(report.seeds_run, 200);
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert!(report.operations_ok > 0);
}

/// A crash resets the crashed node's connections, and the simulator tells every node that can
/// reach it (`Input::PeerLost`): Raft's followers then elect a successor within a quarter of
/// the minimum election timeout. A leader cut off by a partition resets nothing, so within the
/// same window nobody replaces it.
#[test]
fn a_crashed_leader_is_replaced_within_a_quarter_of_the_election_timeout_a_cut_off_one_is_not() {
    let window = concord_raft::Config::default().election_timeout_min / 4 + 50 * MILLISECOND;
    for seed in 0..5 {
        let mut cluster = create_cluster("raft", 5, seed, &options()).unwrap();
        let old = cluster.wait_for_leader(10 * SECOND).unwrap().unwrap();
        cluster.run_for(SECOND).unwrap();
        let term = cluster.health().term;
        cluster.crash(old).unwrap();
        cluster.run_for(window).unwrap();
        let health = cluster.health();
        let new = health
            .leader
            .unwrap_or_else(|| panic!("seed {seed}: {health:?}"));
        assert_ne!(new, old, "seed {seed}");
        assert!(health.term > term, "seed {seed}: {health:?}");

        let mut cluster = create_cluster("raft", 5, seed, &options()).unwrap();
        let old = cluster.wait_for_leader(10 * SECOND).unwrap().unwrap();
        cluster.run_for(SECOND).unwrap();
        let term = cluster.health().term;
        cluster.isolate(&[old]).unwrap();
        cluster.run_for(window).unwrap();
        let health = cluster.health();
        assert!(
            health
                .nodes
                .iter()
                .all(|node| node.id == old || node.term == term),
            "seed {seed}: nobody campaigns yet: {health:?}"
        );
    }
}
