//! 3PC in the simulator: no violation in 500 seeds of crashes; non-blocking where 2PC blocks;
//! and the partition that makes 3PC commit on one side and abort on the other, caught by the
//! atomicity checker, while 2PC under the same partition blocks and stays atomic.

use concord_txn::scenario::{self, Faults, ScenarioKind, ScenarioOptions, ScenarioReport};
use concord_txn::threepc::ThreePhaseCommit;
use concord_txn::twopc::TwoPhaseCommit;

fn options(kind: ScenarioKind, seed: u64) -> ScenarioOptions {
    ScenarioOptions {
        seed,
        kind,
        ..ScenarioOptions::default()
    }
}

fn three(kind: ScenarioKind, seed: u64) -> ScenarioReport {
    scenario::run::<ThreePhaseCommit>(&options(kind, seed)).unwrap()
}

fn two(kind: ScenarioKind, seed: u64) -> ScenarioReport {
    scenario::run::<TwoPhaseCommit>(&options(kind, seed)).unwrap()
}

#[test]
fn five_hundred_seeds_of_crashes_never_split_a_transaction() {
    let options = options(ScenarioKind::Random(Faults::CRASH), 0);
    let sweep = scenario::sweep::<ThreePhaseCommit>(&options, 0..500).unwrap();
    for report in &sweep.violations {
        eprintln!(
            "seed={} replay: concord txn 3pc --seed {} --faults crash\n{report:#?}",
            report.seed, report.seed
        );
    }
    assert!(
        sweep.violations.is_empty(),
        "{} violations",
        sweep.violations.len()
    );
    assert!(sweep.committed > 1_000 && sweep.aborted > 500, "{sweep:?}");
    eprintln!("500 seeds: {sweep:?}");
}

#[test]
fn with_the_coordinator_down_3pc_decides_where_2pc_blocks() {
    for seed in 0..20 {
        let blocking = two(ScenarioKind::CoordinatorCrash, seed);
        assert!(blocking.triggered && blocking.is_safe(), "{blocking:#?}");
        assert_eq!(blocking.blocked.len(), 3, "2PC: {blocking:#?}");

        let nonblocking = three(ScenarioKind::CoordinatorCrash, seed);
        assert!(
            nonblocking.triggered && nonblocking.is_safe(),
            "{nonblocking:#?}"
        );
        assert!(nonblocking.blocked.is_empty(), "3PC: {nonblocking:#?}");
        // Every participant was uncertain when the coordinator failed: the backup aborts.
        assert_eq!(nonblocking.decided_abort, 1, "{nonblocking:#?}");
        assert!(nonblocking.in_doubt.is_empty());
    }
}

#[test]
fn a_partition_makes_3pc_commit_on_one_side_and_abort_on_the_other_and_the_checker_catches_it() {
    let mut caught = 0;
    for seed in 0..20 {
        let report = three(ScenarioKind::Partition, seed);
        if !report.triggered {
            continue;
        }
        let violation = report.violation.as_ref().expect("the split is detected");
        assert_eq!(violation.invariant, "atomicity", "{report:#?}");
        assert!(
            violation.detail.contains("decided commit")
                && violation.detail.contains("decided abort"),
            "{violation:?}"
        );
        caught += 1;

        // The same partition at the same moment of 2PC: the cut-off side waits; nothing splits.
        let blocking = two(ScenarioKind::Partition, seed);
        if blocking.triggered {
            assert!(blocking.is_safe(), "{blocking:#?}");
            assert!(!blocking.blocked.is_empty(), "{blocking:#?}");
        }
    }
    assert!(
        caught >= 10,
        "the anomaly showed in only {caught} of 20 runs"
    );
}

#[test]
fn random_partitions_and_loss_split_3pc_transactions_and_every_split_is_detected() {
    let options = options(ScenarioKind::Random(Faults::ALL), 0);
    let three = scenario::sweep::<ThreePhaseCommit>(&options, 0..500).unwrap();
    // Every unsafe run was stopped by the atomicity checker (money conservation agrees).
    for report in &three.violations {
        let violation = report.violation.as_ref().expect("a checker fired");
        assert!(
            ["atomicity", "3pc-participant"].contains(&violation.invariant.as_str()),
            "{report:#?}"
        );
    }
    assert!(!three.violations.is_empty(), "no anomaly in 500 seeds");
    let two = scenario::sweep::<TwoPhaseCommit>(&options, 0..500).unwrap();
    assert!(two.violations.is_empty());
    eprintln!(
        "500 seeds with partitions and loss: 3PC split {} runs, 2PC none",
        three.violations.len()
    );
}
