//! A failure found by a sweep prints its seed and a replay command, and that command reproduces
//! the same violation with a step-by-step trace.
//!
//! Raft tolerates crashes, not lies: with Byzantine senders (`--faults byzantine`) seed 60
//! breaks "committed ⇒ durable on a quorum", which makes a known failure to replay.

mod common;

use common::concord;

#[test]
fn a_sweep_failure_prints_a_replay_command_that_reproduces_it() {
    let output = concord(&[
        "sweep",
        "--faults",
        "byzantine",
        "--first-seed",
        "60",
        "--seeds",
        "1",
        "--duration",
        "14s",
    ]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(1),
        "a violation exits with 1:\n{text}"
    );
    assert!(
        text.contains("seed 60: invariant 'committed-durable-on-quorum' violated"),
        "{text}"
    );
    let replay = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("replay: concord "))
        .expect("a replay command");
    assert!(
        replay.starts_with("replay --algorithm raft --seed 60 "),
        "{replay}"
    );

    let args: Vec<&str> = replay.split_whitespace().collect();
    let replayed = concord(&args);
    let trace = String::from_utf8_lossy(&replayed.stdout).into_owned();
    assert_eq!(replayed.status.code(), Some(1), "{trace}");
    assert!(trace.contains("VIOLATION seed=60"), "{trace}");
    assert!(trace.contains("invariant 'committed-durable-on-quorum'"));
    // The trace shows the steps that led there, one line each.
    assert!(
        trace
            .lines()
            .filter(|l| l.contains(" n") && l.contains(" -> ["))
            .count()
            > 100
    );
}
