//! 2PC in the simulator: 500 seeds of crashes, partitions and loss with no atomicity
//! violation, and the two named scenarios where 2PC blocks but stays atomic.

use concord_txn::scenario::{self, Faults, ScenarioKind, ScenarioOptions};
use concord_txn::twopc::TwoPhaseCommit;

fn named(kind: ScenarioKind, seed: u64) -> scenario::ScenarioReport {
    let options = ScenarioOptions {
        seed,
        kind,
        ..ScenarioOptions::default()
    };
    scenario::run::<TwoPhaseCommit>(&options).unwrap()
}

#[test]
fn five_hundred_seeds_of_crashes_partitions_and_loss_never_split_a_transaction() {
    let options = ScenarioOptions {
        kind: ScenarioKind::Random(Faults::ALL),
        ..ScenarioOptions::default()
    };
    let sweep = scenario::sweep::<TwoPhaseCommit>(&options, 0..500).unwrap();
    for report in &sweep.violations {
        eprintln!(
            "seed={} replay: concord txn 2pc --seed {} --faults all\n{report:#?}",
            report.seed, report.seed
        );
    }
    assert!(
        sweep.violations.is_empty(),
        "{} violations",
        sweep.violations.len()
    );
    // After the heal and the restarts every in-doubt participant learns the outcome.
    assert_eq!(sweep.blocked_runs, 0);
    assert!(sweep.committed > 1_000 && sweep.aborted > 500, "{sweep:?}");
    eprintln!("500 seeds: {sweep:?}");
}

#[test]
fn participants_block_while_the_coordinator_is_down_after_the_votes() {
    for seed in 0..20 {
        let report = named(ScenarioKind::CoordinatorCrash, seed);
        assert!(report.triggered, "{report:#?}");
        assert!(report.is_safe(), "{report:#?}");
        // Every participant voted yes and nobody knows the outcome: all three wait.
        assert_eq!(report.blocked.len(), 3, "{report:#?}");
        assert!(report.in_doubt.is_empty(), "{report:#?}");
        assert_eq!(report.decided_commit + report.decided_abort, 1);
        assert_eq!(report.net_money, 0);
    }
}

#[test]
fn a_partition_in_phase_two_blocks_the_cut_off_side_and_never_splits() {
    let mut triggered = 0;
    for seed in 0..20 {
        let report = named(ScenarioKind::Partition, seed);
        assert!(report.is_safe(), "{report:#?}");
        if report.triggered {
            triggered += 1;
            assert!(!report.blocked.is_empty(), "{report:#?}");
            assert_eq!(report.decided_commit, 1, "{report:#?}");
        }
        assert!(report.in_doubt.is_empty(), "{report:#?}");
    }
    assert!(
        triggered >= 10,
        "the split happened in only {triggered} of 20 runs"
    );
}
