//! `concord check --txn`: transactional histories end to end, with the documented exit codes
//! (0 no anomaly, 1 anomalies found, an error for bad input).

mod common;

use common::{concord, stderr, stdout};

use std::path::PathBuf;

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/histories")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn scratch(name: &str, text: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("txn-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn check_txn_list_append_passes_a_serial_history_with_exit_code_0() {
    let file = example("list-append-serial.jsonl");
    let output = concord(&["check", "--txn", "list-append", &file]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("no anomalies in 3 list-append transactions (3 ok;"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn check_txn_list_append_reports_read_skew_with_its_cycle_and_exit_code_1() {
    let file = example("list-append-g-single.jsonl");
    let output = concord(&["check", "--txn", "list-append", &file]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let text = stdout(&output);
    for needle in [
        "ANOMALIES G-single (1)",
        "rules out: repeatable-read, snapshot-isolation, serializable",
        "G-single: T1 --rw x:init→1--> T2 --wr y:1--> T1",
    ] {
        assert!(text.contains(needle), "missing '{needle}' in:\n{text}");
    }

    let output = concord(&["check", "--txn", "list-append", "--json", &file]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["verdict"], "invalid");
    assert_eq!(report["consistency"], "transactional");
    assert_eq!(report["workload"], "list-append");
    assert_eq!(report["counts"]["G-single"], 1);
    assert_eq!(
        report["anomalies"][0]["edge_kinds"],
        serde_json::json!(["wr", "rw"])
    );
    assert!(report["ruled_out"]
        .as_array()
        .unwrap()
        .contains(&"snapshot-isolation".into()));
}

#[test]
fn check_txn_rw_register_reports_write_skew() {
    let file = example("rw-register-write-skew.jsonl");
    let output = concord(&["check", "--txn", "rw-register", &file]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(stdout(&output).contains("G2-item: T1 --rw y:init→2--> T2 --rw x:init→1--> T1"));
}

#[test]
fn check_txn_reads_jepsen_edn() {
    let file = scratch(
        "g1c.edn",
        "{:process 0, :type :invoke, :f :txn, :value [[:append :x 1] [:r :y nil]]}\n\
         {:process 1, :type :invoke, :f :txn, :value [[:append :y 1] [:r :x nil]]}\n\
         {:process 0, :type :ok, :f :txn, :value [[:append :x 1] [:r :y [1]]]}\n\
         {:process 1, :type :ok, :f :txn, :value [[:append :y 1] [:r :x [1]]]}\n",
    );
    let output = concord(&["check", "--txn", "list-append", &file]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("G1c: T1 --wr x:1--> T2 --wr y:1--> T1"),
        "{}",
        stdout(&output)
    );
}

/// Bad input goes through the usual error path: one line on stderr, no report, and an exit
/// code that is neither "valid" nor "anomalies found".
fn assert_bad_input(args: &[&str], needle: &str) {
    let output = concord(args);
    let code = output.status.code();
    assert!(
        code != Some(0) && code != Some(1),
        "{args:?}: exit {code:?}"
    );
    assert!(stdout(&output).is_empty(), "{args:?}: {}", stdout(&output));
    assert!(
        stderr(&output).contains(needle),
        "{args:?}: {}",
        stderr(&output)
    );
}

#[test]
fn check_txn_rejects_bad_input_with_a_clear_error() {
    let register = example("rw-register-write-skew.jsonl");
    assert_bad_input(
        &["check", "--txn", "list-append", &register],
        "history event 1: micro-operation 3: unknown function 'w' for list-append",
    );
    assert_bad_input(
        &["check", "--txn", "snapshot", &register],
        "--txn: unknown workload 'snapshot' (list-append, rw-register)",
    );
    let malformed = scratch(
        "malformed.jsonl",
        "{\"process\":0,\"type\":\"invoke\",\"f\":\"txn\",\"value\":[[\"r\",\"x\",null]],\"time\":1}\n\
         {\"process\":0,\"type\":\"ok\",\"f\":\"txn\",\"value\":[[\"r\",\"x\",7]],\"time\":2}\n",
    );
    assert_bad_input(
        &["check", "--txn", "list-append", &malformed],
        "history event 2: micro-operation 1: a list-append read must be a list, got 7",
    );
    let not_json = scratch("not-json.jsonl", "{\"process\":0,\n");
    assert_bad_input(&["check", "--txn", "list-append", &not_json], "line 1");
}
