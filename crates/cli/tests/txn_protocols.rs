//! `concord txn 2pc|3pc|saga` end to end: the verdicts and exit codes of the named scenarios
//! (3PC's split under a partition exits 1; 2PC blocks and exits 0), a seed sweep per
//! protocol, JSON output and bad input.

mod common;

use common::{concord, stderr, stdout};

fn run(args: &[&str]) -> (i32, String) {
    let output = concord(args);
    let code = output.status.code().expect("an exit code");
    (code, format!("{}{}", stdout(&output), stderr(&output)))
}

#[test]
fn three_phase_commit_split_by_a_partition_is_reported_with_exit_code_1() {
    let (code, text) = run(&["txn", "3pc", "--scenario", "partition", "--seed", "1"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("VIOLATION of atomicity"), "{text}");
    assert!(text.contains("1 split"), "{text}");
}

#[test]
fn two_phase_commit_under_the_same_partition_blocks_and_passes() {
    let (code, text) = run(&["txn", "2pc", "--scenario", "partition", "--seed", "1"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("blocked  2 participant(s) in doubt"),
        "{text}"
    );
    assert!(text.contains("verdict  ok"), "{text}");
}

#[test]
fn the_coordinator_crash_blocks_2pc_but_not_3pc() {
    let (code, text) = run(&["txn", "2pc", "--scenario", "coordinator-crash", "--json"]);
    assert_eq!(code, 0, "{text}");
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["blocked"].as_array().unwrap().len(), 3, "{report}");
    let (code, text) = run(&["txn", "3pc", "--scenario", "coordinator-crash", "--json"]);
    assert_eq!(code, 0, "{text}");
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["blocked"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(report["decided_abort"], 1, "{report}");
}

#[test]
fn sweeps_of_2pc_and_sagas_under_every_fault_find_no_violation() {
    for protocol in ["2pc", "saga"] {
        let (code, text) = run(&["txn", protocol, "--seeds", "40", "--faults", "all"]);
        assert_eq!(code, 0, "{protocol}: {text}");
        assert!(text.contains("40 seeds"), "{text}");
        assert!(text.contains("0 violation(s)"), "{text}");
    }
}

#[test]
fn a_sweep_of_3pc_with_partitions_and_loss_lists_each_split_with_its_replay_command() {
    let (code, text) = run(&["txn", "3pc", "--seeds", "100", "--faults", "all"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("replay: concord txn 3pc"), "{text}");
}

#[test]
fn bad_input_exits_3() {
    for args in [
        &["txn", "4pc"][..],
        &["txn", "2pc", "--faults", "meteor"],
        &["txn", "2pc", "--scenario", "eclipse"],
        &["txn", "saga", "--scenario", "partition"],
        &["txn", "2pc", "--participants", "1"],
    ] {
        let (code, text) = run(args);
        assert_eq!(code, 3, "{args:?}: {text}");
    }
}
