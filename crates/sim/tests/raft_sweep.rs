//! The CI seed sweep: 1000 seeds of a 5-node Raft cluster with every fault the simulator can
//! inject drawn from each seed (partitions of every shape, crashes, loss, duplication,
//! reordering, pauses, clock drift), invariants checked after every step, every client
//! history checked for linearizability, and every run required to converge once faults stop.
//!
//! A failure prints its seed and replay command. Larger sweeps run from the CLI:
//! `concord sweep --algorithm raft --seeds 100000 --check`.

use concord_check::{check_linearizability, RegisterModel, Verdict};
use concord_core::time::SECOND;
use concord_sim::{run, FaultSelection, SimOptions};

const SEEDS: u64 = 1000;

#[test]
fn a_thousand_seeds_with_all_faults_have_no_violation() {
    let mut faults_seen = std::collections::BTreeMap::<String, u64>::new();
    let mut operations_ok = 0;
    for seed in 0..SEEDS {
        let options = SimOptions {
            seed,
            duration: 8 * SECOND,
            ops: 150,
            faults: FaultSelection::All,
            ..SimOptions::default()
        };
        let report = run(&options).unwrap();
        if let Some(failure) = &report.failure {
            panic!(
                "seed {seed}: invariant '{}' violated at step {}: {}\nreplay: {}",
                failure.invariant, failure.step, failure.detail, failure.replay
            );
        }
        assert!(
            report.converged,
            "seed {seed} did not converge\nreplay: {}",
            report.replay
        );
        let verdict = check_linearizability(&report.history, &RegisterModel, None).unwrap();
        assert!(
            verdict.verdict == Verdict::Linearizable,
            "seed {seed}: history not linearizable: {:?}\nreplay: {}",
            verdict.verdict,
            report.replay
        );
        for fault in &report.faults {
            *faults_seen.entry(fault.clone()).or_default() += 1;
        }
        operations_ok += report.history_summary.ok;
    }
    for kind in [
        "partition",
        "crash",
        "loss",
        "duplicate",
        "reorder",
        "pause",
        "drift",
    ] {
        let runs = faults_seen.get(kind).copied().unwrap_or(0);
        assert!(
            runs >= SEEDS / 10,
            "fault '{kind}' was on in only {runs} of {SEEDS} runs"
        );
    }
    assert!(
        operations_ok > SEEDS * 20,
        "only {operations_ok} operations succeeded"
    );
}
