//! The cluster toolkit and the runner with `paxos` (Multi-Paxos), case for case what
//! `raft.rs` shows for Raft: one leader elected, a minority partition that elects nobody and
//! serves nothing while the majority does both, a crashed leader replaced and the restarted
//! node caught up, the same report for the same seed, and a requested partition observed.

use concord_core::time::{MILLISECOND, SECOND};
use concord_sim::{
    create_cluster, run, ClusterOptions, FaultSelection, SimOptions, WorkloadConfig,
};

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
fn a_five_node_paxos_cluster_elects_one_leader() {
    for seed in 0..5 {
        let mut cluster = create_cluster("paxos", 5, seed, &options()).unwrap();
        assert_eq!(cluster.algorithm(), "paxos");
        let leader = cluster.wait_for_leader(10 * SECOND).unwrap();
        assert!(leader.is_some(), "seed {seed}: no leader");
        let health = cluster.health();
        assert_eq!(health.leader, leader);
        assert_eq!(health.followers.len(), 4, "seed {seed}: {health:?}");
        assert!(health.term >= 1);
    }
}

#[test]
fn a_paxos_minority_elects_nobody_and_serves_nothing_the_majority_does_both() {
    for seed in 0..3 {
        let mut cluster = create_cluster("paxos", 5, seed, &options()).unwrap();
        let old = cluster.wait_for_leader(10 * SECOND).unwrap().unwrap();
        cluster.run_for(SECOND).unwrap();
        let buddy = (old + 1) % 5;
        cluster.isolate(&[old, buddy]).unwrap();
        // Let what a quorum already accepted before the cut be decided; the majority needs
        // heartbeat rounds (100 ms each) to notice the leader is gone.
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
        assert!(!minority.leader_elected, "seed {seed}: {minority:?}");
        assert!(!minority.log_replicated, "seed {seed}: {minority:?}");
        assert_eq!(minority.requests_ok, 0, "seed {seed}: {minority:?}");
        assert!(majority.leader_elected, "seed {seed}: {majority:?}");
        assert!(majority.log_replicated, "seed {seed}: {majority:?}");
        assert!(majority.requests_ok > 0, "seed {seed}: {majority:?}");
        cluster.heal();
        cluster.stop_clients();
        cluster.run_for(10 * SECOND).unwrap();
        let health = cluster.health();
        assert!(health.leader.is_some());
        assert!(cluster.converged(), "seed {seed}: {health:?}");
    }
}

#[test]
fn a_crashed_paxos_leader_is_replaced_and_catches_up_after_restart() {
    for seed in 0..3 {
        let mut cluster = create_cluster("paxos", 5, seed, &options()).unwrap();
        let old = cluster.wait_for_leader(10 * SECOND).unwrap().unwrap();
        cluster.run_for(SECOND).unwrap();
        cluster.crash(old).unwrap();
        let health = cluster.health();
        assert_eq!(health.nodes_up, 4, "seed {seed}: {health:?}");
        cluster.run_for(5 * SECOND).unwrap();
        let health = cluster.health();
        let new = health.leader.expect("a new leader among the four");
        assert_ne!(new, old, "seed {seed}");
        let decided_while_down = health.commit_index;
        cluster.restart(old).unwrap();
        cluster.stop_clients();
        cluster.run_for(5 * SECOND).unwrap();
        let health = cluster.health();
        assert_eq!(health.nodes_up, 5);
        assert!(
            health.nodes[old as usize].commit_index >= decided_while_down,
            "seed {seed}: {health:?}"
        );
        assert!(cluster.converged(), "seed {seed}: {health:?}");
    }
}

fn run_options(seed: u64) -> SimOptions {
    SimOptions {
        algorithm: "paxos".into(),
        seed,
        duration: 6 * SECOND,
        ops: 100,
        ..SimOptions::default()
    }
}

#[test]
fn the_same_paxos_seed_gives_the_same_report() {
    for faults in [
        "all",
        "partition",
        "crash,pause",
        "loss,duplicate,reorder,drift",
    ] {
        for seed in [3, 14] {
            let options = SimOptions {
                faults: faults.parse().unwrap(),
                ..run_options(seed)
            };
            let first = serde_json::to_string(&run(&options).unwrap()).unwrap();
            let second = serde_json::to_string(&run(&options).unwrap()).unwrap();
            assert_eq!(first, second, "seed {seed} faults {faults}");
        }
    }
}

#[test]
fn a_requested_partition_of_a_paxos_cluster_is_observed_and_healed() {
    let options = SimOptions {
        partition: Some(vec![0, 1]),
        faults: FaultSelection::None,
        ..run_options(5)
    };
    let report = run(&options).unwrap();
    assert!(report.failure.is_none());
    let effects = report.partition.unwrap();
    assert_eq!(effects.sides.len(), 2);
    assert_eq!(effects.sides[0].nodes, vec![0, 1]);
    assert!(!effects.sides[0].leader_elected);
    assert_eq!(effects.sides[0].requests_ok, 0);
    assert!(effects.sides[1].log_replicated);
    assert!(report.converged);
}
