//! Multi-Paxos in the simulator: a 5-node `MultiPaxos<KvStateMachine>` cluster under the
//! simulator's key-value workload and faults, with the Paxos safety checkers run after every
//! step and every client history checked for linearizability.

use concord_check::{check_linearizability, RegisterModel, Verdict};
use concord_core::time::SECOND;
use concord_core::KvStateMachine;
use concord_paxos::multi::{invariants, Config, MultiPaxos};
use concord_sim::{run_protocol, FaultSelection, SimOptions};

type Paxos = MultiPaxos<KvStateMachine>;

fn check_seed(seed: u64, faults: FaultSelection) {
    check_seed_with(seed, faults, Config::default());
}

fn check_seed_with(seed: u64, faults: FaultSelection, config: Config) {
    let options = SimOptions {
        seed,
        duration: 8 * SECOND,
        ops: 100,
        faults,
        ..SimOptions::default()
    };
    let report = run_protocol::<Paxos>(&options, config, invariants::<KvStateMachine>()).unwrap();
    if let Some(failure) = &report.failure {
        panic!(
            "seed {seed}: invariant '{}' violated at step {}: {}",
            failure.invariant, failure.step, failure.detail
        );
    }
    let verdict = check_linearizability(&report.history, &RegisterModel, None).unwrap();
    assert!(
        verdict.verdict == Verdict::Linearizable,
        "seed {seed}: history not linearizable: {:?}",
        verdict.verdict
    );
    assert!(report.converged, "seed {seed} did not converge");
    assert!(
        report.history_summary.ok > 0,
        "seed {seed}: no operation succeeded"
    );
}

#[test]
fn multi_paxos_without_faults_is_safe_and_linearizable() {
    for seed in 0..5 {
        check_seed(seed, FaultSelection::None);
    }
}

/// 500 seeds, every fault the simulator injects (larger sweeps: `concord sweep --algorithm paxos`).
#[test]
fn multi_paxos_with_all_faults_is_safe_and_linearizable() {
    for seed in 0..500 {
        check_seed(seed, FaultSelection::All);
    }
}

/// Flexible Paxos (Howard et al. 2016): phase-1 quorums of 4 and phase-2 quorums of 2 out of 5
/// intersect, so the cluster stays safe and linearizable under every fault, and decides.
#[test]
fn multi_paxos_with_flexible_quorums_is_safe_and_linearizable() {
    let config = Config::with_quorums(5, 4, 2).unwrap();
    for seed in 0..100 {
        check_seed_with(seed, FaultSelection::All, config.clone());
    }
}

/// Snapshots every 8 slots under every fault: compaction, snapshot transfer and snapshots in
/// promises keep every checker (including `snapshots-agree`) and linearizability.
#[test]
fn multi_paxos_with_frequent_snapshots_is_safe_and_linearizable() {
    let config = Config {
        snapshot_threshold: 8,
        ..Config::default()
    };
    for seed in 0..200 {
        check_seed_with(seed, FaultSelection::All, config.clone());
    }
}
