//! The `concord` binary, end to end: the demo's claims, determinism of `sim --json`, and a
//! clear one-line error with a non-zero exit for every kind of bad input.

mod common;

use common::{concord, stderr, stdout};

use std::path::PathBuf;
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn demo_partitions_a_five_node_raft_cluster_and_every_claim_holds() {
    let output = concord(&["demo", "--json"]);
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let tour: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let sides = tour["effects"]["sides"].as_array().unwrap();
    let minority = &sides[0];
    let majority = &sides[1];
    assert_eq!(minority["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(minority["leader_elected"], false);
    assert_eq!(minority["requests_ok"], 0);
    assert_eq!(majority["leader_elected"], true);
    assert_eq!(majority["log_replicated"], true);
    assert!(majority["requests_ok"].as_u64().unwrap() > 0);
    assert_eq!(tour["converged"], true);
    assert_eq!(tour["linearizability"]["verdict"], "linearizable");
    let after = tour["after_heal"]["nodes"].as_array().unwrap();
    let commit = &after[0]["commit_index"];
    assert!(after
        .iter()
        .all(|n| &n["commit_index"] == commit && &n["applied_index"] == commit));
    for expectation in tour["expectations"].as_array().unwrap() {
        assert_eq!(expectation["held"], true, "{expectation}");
    }
}

#[test]
fn demo_prints_tables_for_people() {
    let output = concord(&["demo"]);
    assert!(output.status.success());
    let text = stdout(&output);
    for needle in [
        "leader elected",
        "log replicated",
        "commit index",
        "[ok] the minority side elects no leader",
    ] {
        assert!(text.contains(needle), "missing '{needle}' in:\n{text}");
    }
}

fn tour_plan() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/nemesis/tour.toml")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn sim_json_is_identical_across_runs_of_one_seed_for_every_fault_mix() {
    let plan = tour_plan();
    let mixes: [&[&str]; 6] = [
        &["--faults", "all", "--duration", "6s"],
        &["--faults", "none", "--duration", "6s"],
        &["--faults", "partition", "--duration", "6s"],
        &["--faults", "crash,pause", "--duration", "6s"],
        &[
            "--faults",
            "loss,duplicate,reorder,drift",
            "--duration",
            "6s",
        ],
        &["--nemesis", &plan, "--duration", "20s"],
    ];
    for mix in mixes {
        for seed in 0..8 {
            let seed = seed.to_string();
            let mut args = vec!["sim", "--seed", &seed, "--ops", "100", "--json"];
            args.extend_from_slice(mix);
            let first = concord(&args);
            let second = concord(&args);
            assert!(
                first.status.success(),
                "{args:?}: {}{}",
                stdout(&first),
                stderr(&first)
            );
            assert_eq!(
                stdout(&first),
                stdout(&second),
                "{args:?} is not deterministic"
            );
        }
    }
}

#[test]
fn the_nemesis_tour_injects_every_fault_and_raft_stays_safe_and_live() {
    let plan = tour_plan();
    for seed in ["1", "2", "3"] {
        let output = concord(&[
            "sim",
            "--seed",
            seed,
            "--duration",
            "20s",
            "--nemesis",
            &plan,
            "--json",
        ]);
        assert!(
            output.status.success(),
            "seed {seed}: {}{}",
            stdout(&output),
            stderr(&output)
        );
        let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let report = &document["report"];
        let stats = &report["stats"];
        assert_eq!(stats["nemesis_actions"], 17, "seed {seed}: every step ran");
        assert_eq!(stats["crashes"], 2);
        assert_eq!(stats["restarts"], 2);
        for counter in [
            "messages_cut",
            "messages_lost",
            "messages_duplicated",
            "messages_reordered",
        ] {
            assert!(
                stats[counter].as_u64().unwrap() > 0,
                "seed {seed}: no {counter}"
            );
        }
        assert!(
            report["failure"].is_null(),
            "seed {seed}: {}",
            report["failure"]
        );
        assert_eq!(report["converged"], true, "seed {seed}");
        assert_eq!(document["linearizability"]["verdict"], "linearizable");
        assert!(report["history_summary"]["ok"].as_u64().unwrap() > 0);
    }
}

#[test]
fn sim_writes_history_and_trace_files() {
    let history = scratch("history.jsonl");
    let trace = scratch("trace.txt");
    let output = concord(&[
        "sim",
        "--seed",
        "4",
        "--duration",
        "3s",
        "--partition",
        "0,1",
        "--history",
        history.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("Partition effects"));
    let checked = concord(&["check", history.to_str().unwrap()]);
    assert!(checked.status.success(), "{}", stdout(&checked));
    assert!(stdout(&checked).contains("linearizable"));
    assert!(std::fs::read_to_string(&trace).unwrap().lines().count() > 100);
}

#[test]
fn check_reports_a_non_linearizable_history_with_exit_code_1() {
    let path = scratch("stale-read.jsonl");
    std::fs::write(
        &path,
        r#"{"process":0,"type":"invoke","f":"write","key":"x","value":1,"time":0}
{"process":0,"type":"ok","f":"write","key":"x","value":1,"time":10}
{"process":1,"type":"invoke","f":"read","key":"x","value":null,"time":20}
{"process":1,"type":"ok","f":"read","key":"x","value":null,"time":30}
"#,
    )
    .unwrap();
    let output = concord(&["check", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("NOT linearizable"),
        "{}",
        stdout(&output)
    );
}

/// Bad input: exit code 3 and exactly one line on standard error, never a panic.
fn assert_clear_error(args: &[&str], needle: &str) {
    let output = concord(args);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected '{needle}' in: {err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: not one line: {err}"
    );
}

#[test]
fn bad_input_gets_a_one_line_error() {
    assert_clear_error(
        &["sim", "--algorithm", "zab"],
        "unknown algorithm 'zab'; supported: raft, paxos, pbft",
    );
    assert_clear_error(&["sim", "--nodes", "0"], "at least one node");
    assert_clear_error(&["sim", "--partition", "0,9"], "node 9");
    assert_clear_error(&["sim", "--duration", "soon"], "--duration");
    assert_clear_error(&["sim", "--faults", "meteor"], "--faults");
    assert_clear_error(&["sim", "--mix", "read=x"], "--mix");
    assert_clear_error(
        &["sim", "--nemesis", "/no/such/plan.toml"],
        "/no/such/plan.toml",
    );
    assert_clear_error(
        &["demo", "--algorithm", "zab"],
        "unknown algorithm 'zab'; supported: raft, paxos, pbft",
    );
    assert_clear_error(
        &["db", "bench", "--threads", "0"],
        "--threads must be at least 1",
    );
    assert_clear_error(&["check", "/no/such/history.jsonl"], "cannot open");
    assert_clear_error(&["check", "--model", "queue", "Cargo.toml"], "");

    let plan = scratch("bad-plan.toml");
    std::fs::write(
        &plan,
        "[[steps]]\nat = \"1s\"\naction = \"crash\"\nnodes = [7]\n",
    )
    .unwrap();
    assert_clear_error(&["sim", "--nemesis", plan.to_str().unwrap()], "node 7");
    std::fs::write(&plan, "[[steps]]\nat = \"1s\"\naction = \"explode\"\n").unwrap();
    assert_clear_error(&["sim", "--nemesis", plan.to_str().unwrap()], "explode");

    let history = scratch("bad-history.jsonl");
    std::fs::write(
        &history,
        "{\"process\":1,\"type\":\"invoke\",\"f\":\"read\",\"time\":1}\nnot json\n",
    )
    .unwrap();
    assert_clear_error(&["check", history.to_str().unwrap()], "line 2");
}

#[test]
fn usage_errors_exit_with_3() {
    for args in [
        &["sim", "--nodes", "many"][..],
        &["frobnicate"],
        &["check"],
        &["check", "h.jsonl", "--no-such-flag"],
        &[],
        &[
            "db",
            "serve",
            "--id",
            "1",
            "--data-dir",
            "d",
            "--initial-cluster",
            "1=127.0.0.1:1",
            "--worker-threads",
            "0",
        ],
        &["node", "serve", "-a", "raft", "--worker-threads", "0"],
    ] {
        let output = concord(args);
        assert_eq!(
            output.status.code(),
            Some(3),
            "{args:?}: {}",
            stderr(&output)
        );
        if args.contains(&"--worker-threads") {
            assert!(
                stderr(&output).contains("--worker-threads"),
                "{args:?}: names the flag: {}",
                stderr(&output)
            );
        }
        assert!(
            output.stdout.is_empty(),
            "{args:?}: usage goes to standard error"
        );
        assert!(!stderr(&output).is_empty(), "{args:?}: says what is wrong");
    }
}

#[test]
fn help_and_version_print_to_standard_output_and_exit_0() {
    for args in [
        &["--help"][..],
        &["check", "--help"],
        &["help"],
        &["--version"],
    ] {
        let output = concord(args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            !stdout(&output).is_empty(),
            "{args:?}: prints to standard output"
        );
    }
    assert!(stdout(&concord(&["--version"])).starts_with("concord "));
    assert!(stdout(&concord(&["check", "--help"])).contains("--consistency"));
}

#[test]
fn sweep_runs_seeds_and_reports_zero_violations() {
    let output = concord(&[
        "sweep",
        "--seeds",
        "5",
        "--duration",
        "3s",
        "--ops",
        "60",
        "--check",
    ]);
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("5 seeds of raft"),
        "{}",
        stdout(&output)
    );
    assert!(
        stdout(&output).contains("0 violations"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn frequent_snapshots_run_from_the_command_line_and_their_replay_keeps_them() {
    for algorithm in ["raft", "paxos"] {
        let args = [
            "sim",
            "--algorithm",
            algorithm,
            "--seed",
            "3",
            "--duration",
            "4s",
            "--snapshot-every",
            "8",
            "--json",
        ];
        let output = concord(&args);
        let out = stdout(&output);
        assert!(
            output.status.success(),
            "{args:?}: {out}{}",
            stderr(&output)
        );
        let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        let replay = json["report"]["replay"].as_str().unwrap_or_default();
        assert!(replay.ends_with("--snapshot-every 8"), "{args:?}: {replay}");
    }
    let output = concord(&[
        "sweep",
        "--seeds",
        "4",
        "--duration",
        "3s",
        "--snapshot-every",
        "8",
        "--check",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("0 violations"),
        "{}",
        stdout(&output)
    );
    assert_clear_error(&["sim", "--snapshot-every", "0"], "at least 1 entry");
    assert_clear_error(
        &["sim", "--algorithm", "pbft", "--snapshot-every", "8"],
        "applies to raft and paxos",
    );
}

/// Regression: `concord replay | head` panicked with "failed printing to stdout: Broken pipe".
#[test]
fn a_reader_closing_the_pipe_ends_the_command_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["replay", "--seed", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
}

/// One operation: `(process, f, key, value, invoked at)`; `key` "" means a single object.
type Step<'a> = (u64, &'a str, &'a str, serde_json::Value, u64);

/// Writes a history of operations, each completed `ok` one nanosecond after its invocation.
fn history_file(name: &str, ops: &[Step]) -> PathBuf {
    let mut events = Vec::new();
    for (process, f, key, value, time) in ops {
        let input = if ["read", "dequeue"].contains(f) {
            serde_json::Value::Null
        } else {
            value.clone()
        };
        for (kind, value, time) in [("invoke", input, *time), ("ok", value.clone(), time + 1)] {
            let mut event = serde_json::json!({
                "process": process, "type": kind, "f": f, "value": value, "time": time
            });
            if !key.is_empty() {
                event["key"] = serde_json::json!(key);
            }
            events.push((time, event.to_string()));
        }
    }
    events.sort_by_key(|(time, _)| *time);
    let text: Vec<String> = events.into_iter().map(|(_, line)| line).collect();
    let path = scratch(name);
    std::fs::write(&path, text.join("\n") + "\n").unwrap();
    path
}

fn check_json(args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let output = concord(args);
    let document = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}{}", stdout(&output), stderr(&output)));
    (output.status.code(), document)
}

use serde_json::json;

#[test]
fn check_sequential_accepts_a_stale_read_that_linearizability_rejects() {
    let path = history_file(
        "stale-but-sequential.jsonl",
        &[
            (0, "write", "x", json!(1), 0),
            (0, "write", "x", json!(2), 10),
            (1, "read", "x", json!(1), 20),
        ],
    );
    let file = path.to_str().unwrap();
    let linearizable = concord(&["check", file]);
    assert_eq!(linearizable.status.code(), Some(1));
    let output = concord(&["check", file, "--consistency", "sequential"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(stdout(&output)
        .contains("sequentially consistent (3 operations of 2 processes over 1 keys)"));
    let (code, document) = check_json(&["check", file, "--consistency", "sequential", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(document["verdict"], "sequentially-consistent");
    assert_eq!(document["consistency"], "sequential");
}

#[test]
fn check_sequential_rejects_two_readers_seeing_writes_in_opposite_orders() {
    let path = history_file(
        "opposite-orders.jsonl",
        &[
            (0, "write", "x", json!(1), 0),
            (1, "write", "x", json!(2), 0),
            (2, "read", "x", json!(1), 10),
            (2, "read", "x", json!(2), 20),
            (3, "read", "x", json!(2), 10),
            (3, "read", "x", json!(1), 20),
        ],
    );
    let file = path.to_str().unwrap();
    let output = concord(&["check", file, "--consistency", "sequential"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("NOT sequentially consistent"),
        "{}",
        stdout(&output)
    );
    let (code, document) = check_json(&["check", file, "--consistency", "sequential", "--json"]);
    assert_eq!(code, Some(1));
    assert_eq!(document["verdict"], "not-sequentially-consistent");
    assert!(!document["stuck"].as_array().unwrap().is_empty());
}

#[test]
fn check_sequential_gives_exit_code_2_when_the_budget_runs_out() {
    // Eight writers and a read of a value nobody wrote: the search must try every order.
    let mut ops: Vec<Step> = Vec::new();
    for process in 0..8u64 {
        for i in 0..3u64 {
            ops.push((process, "write", "x", json!(process * 10 + i), i * 10));
        }
    }
    ops.push((9, "read", "x", json!(-1), 100));
    let path = history_file("exhausting.jsonl", &ops);
    let output = concord(&[
        "check",
        path.to_str().unwrap(),
        "--consistency",
        "sequential",
        "--budget",
        "0s",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    assert!(stdout(&output).contains("unknown: time budget exhausted"));
}

#[test]
fn check_session_names_the_broken_guarantee_and_the_process() {
    let path = history_file(
        "monotonic-reads.jsonl",
        &[
            (1, "write", "x", json!(1), 0),
            (1, "write", "x", json!(2), 10),
            (0, "read", "x", json!(2), 20),
            (0, "read", "x", json!(1), 30),
        ],
    );
    let file = path.to_str().unwrap();
    let output = concord(&["check", file, "--consistency", "session"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(
        text.contains("session guarantees VIOLATED: 1 violations"),
        "{text}"
    );
    assert!(
        text.contains("monotonic-reads: process 0 read x null -> 1"),
        "{text}"
    );
    let (code, document) = check_json(&["check", file, "--consistency", "session", "--json"]);
    assert_eq!(code, Some(1));
    assert_eq!(document["verdict"], "violated");
    let violation = &document["violations"][0];
    assert_eq!(violation["guarantee"], "monotonic-reads");
    assert_eq!(violation["process"], 0);
    assert_eq!(violation["required"]["input"], 2);
}

#[test]
fn check_session_passes_a_stale_read_by_another_process() {
    let path = history_file(
        "session-clean.jsonl",
        &[
            (0, "write", "x", json!(1), 0),
            (0, "write", "x", json!(2), 10),
            (1, "read", "x", json!(1), 20),
            (1, "read", "x", json!(2), 30),
        ],
    );
    let output = concord(&["check", path.to_str().unwrap(), "--consistency", "session"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(stdout(&output).contains("session guarantees hold (2 reads checked"));
}

#[test]
fn check_causal_accepts_what_sequential_consistency_rejects_and_gives_exit_code_0() {
    // Dekker: each process misses the other's write.
    let path = history_file(
        "causal-dekker.jsonl",
        &[
            (0, "write", "x", json!(1), 0),
            (1, "write", "y", json!(1), 10),
            (0, "read", "y", serde_json::Value::Null, 20),
            (1, "read", "x", serde_json::Value::Null, 30),
        ],
    );
    let file = path.to_str().unwrap();
    let sequential = concord(&["check", file, "--consistency", "sequential"]);
    assert_eq!(sequential.status.code(), Some(1), "{}", stdout(&sequential));
    let output = concord(&["check", file, "--consistency", "causal"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let text = stdout(&output);
    assert!(
        text.contains("causally consistent; causal convergence holds (2 reads checked"),
        "{text}"
    );
    let (code, document) = check_json(&["check", file, "--consistency", "causal", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(document["consistency"], "causal");
    assert_eq!(document["verdict"], "consistent");
    assert_eq!(document["convergence"], "consistent");
    assert_eq!(document["reads_checked"], 2);
    assert!(document["violations"].as_array().unwrap().is_empty());
}

#[test]
fn check_causal_names_the_bad_pattern_and_its_chain_with_exit_code_1() {
    // x = 1 reaches P3 through three processes; P3 then reads x's initial value. The session
    // check carries causality one hop and lets it pass.
    let null = serde_json::Value::Null;
    let path = history_file(
        "causal-three-hops.jsonl",
        &[
            (0, "write", "x", json!(1), 0),
            (1, "read", "x", json!(1), 10),
            (1, "write", "y", json!(1), 20),
            (2, "read", "y", json!(1), 30),
            (2, "write", "z", json!(1), 40),
            (3, "read", "z", json!(1), 50),
            (3, "read", "x", null, 60),
        ],
    );
    let file = path.to_str().unwrap();
    let session = concord(&["check", file, "--consistency", "session"]);
    assert_eq!(session.status.code(), Some(0), "{}", stdout(&session));
    let output = concord(&["check", file, "--consistency", "causal"]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let text = stdout(&output);
    for needle in [
        "causal consistency VIOLATED: WriteCOInitRead (1); causal convergence VIOLATED",
        "\n  WriteCOInitRead:\n      process 0 write x 1 -> 1",
        "\n    rf process 1 read x null -> 1",
        "\n    po process 3 read x null -> null",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let (code, document) = check_json(&["check", file, "--consistency", "causal", "--json"]);
    assert_eq!(code, Some(1));
    assert_eq!(document["verdict"], "violated");
    assert_eq!(document["counts"]["WriteCOInitRead"], 1);
    let violation = &document["violations"][0];
    assert_eq!(violation["pattern"], "WriteCOInitRead");
    let edges: Vec<&str> = violation["witness"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["via"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(edges, ["-", "rf", "po", "rf", "po", "rf", "po"]);
}

#[test]
fn check_causal_convergence_rejects_writes_each_process_sees_in_its_own_order() {
    let path = history_file(
        "causal-divergent.jsonl",
        &[
            (0, "write", "x", json!(1), 0),
            (1, "write", "x", json!(2), 10),
            (0, "read", "x", json!(2), 20),
            (1, "read", "x", json!(1), 30),
        ],
    );
    let file = path.to_str().unwrap();
    let output = concord(&["check", file, "--consistency", "causal"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(
        stdout(&output).contains("causally consistent; causal convergence VIOLATED: CyclicCF (1)")
    );
    let output = concord(&["check", file, "--consistency", "causal-convergence"]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with(&format!(
            "{file}: causal convergence VIOLATED: CyclicCF (1); causally consistent"
        )),
        "{text}"
    );
    assert!(text.contains("\n    cf process 1 write x 2 -> 2"), "{text}");
    let (code, document) = check_json(&[
        "check",
        file,
        "--consistency",
        "causal-convergence",
        "--json",
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(document["consistency"], "causal-convergence");
    assert_eq!(document["verdict"], "consistent");
    assert_eq!(document["convergence"], "violated");
    assert_eq!(document["violations"][0]["pattern"], "CyclicCF");
}

#[test]
fn check_causal_bad_input_gets_exit_code_3() {
    let path = history_file("causal-any.jsonl", &[(0, "write", "x", json!(1), 0)]);
    let file = path.to_str().unwrap();
    assert_clear_error(
        &["check", file, "--consistency", "causal", "--model", "set"],
        "--model: the causal check works on register and string-kv histories, not 'set'",
    );
    assert_clear_error(
        &["check", file, "--consistency", "causal", "--html", "x.html"],
        "--html: the causal check draws no picture",
    );
    let malformed = scratch("causal-malformed.jsonl");
    std::fs::write(
        &malformed,
        "{\"process\":0,\"type\":\"invoke\",\"f\":\"write\",\"key\":\"x\",\"value\":1,\"time\":0}\n\
         {\"process\":0,\"type\":\"invoke\",\"f\":\"read\",\"key\":\"x\",\"value\":null,\"time\":1}\n",
    )
    .unwrap();
    assert_clear_error(
        &[
            "check",
            malformed.to_str().unwrap(),
            "--consistency",
            "causal",
        ],
        "still open",
    );
}

#[test]
fn check_reads_set_queue_and_counter_histories() {
    let cases: [(&str, Vec<Step>, i32); 6] = [
        (
            "set",
            vec![(0, "add", "", json!(1), 0), (1, "read", "", json!([1]), 10)],
            0,
        ),
        (
            "set",
            vec![(0, "add", "", json!(1), 0), (0, "read", "", json!([]), 10)],
            1,
        ),
        (
            "queue",
            vec![
                (0, "enqueue", "", json!(1), 0),
                (0, "enqueue", "", json!(2), 10),
                (1, "dequeue", "", json!(1), 20),
            ],
            0,
        ),
        (
            "queue",
            vec![
                (0, "enqueue", "", json!(1), 0),
                (0, "enqueue", "", json!(2), 10),
                (0, "dequeue", "", json!(2), 20),
            ],
            1,
        ),
        (
            "counter",
            vec![(0, "add", "", json!(3), 0), (1, "read", "", json!(3), 10)],
            0,
        ),
        (
            "counter",
            vec![(0, "add", "", json!(3), 0), (1, "read", "", json!(4), 10)],
            1,
        ),
    ];
    // The illegal cases break the process's own order, so both checkers reject them.
    for (i, (model, ops, expected)) in cases.iter().enumerate() {
        let path = history_file(&format!("{model}-{i}.jsonl"), ops);
        for consistency in ["linearizable", "sequential"] {
            let output = concord(&[
                "check",
                path.to_str().unwrap(),
                "--model",
                model,
                "--consistency",
                consistency,
            ]);
            assert_eq!(
                output.status.code(),
                Some(*expected),
                "{model} {consistency} case {i}: {}{}",
                stdout(&output),
                stderr(&output)
            );
        }
    }
}

#[test]
fn check_rejects_unknown_consistency_and_models_the_session_check_cannot_read() {
    let path = history_file("any.jsonl", &[(0, "write", "x", json!(1), 0)]);
    let file = path.to_str().unwrap();
    assert_clear_error(
        &["check", file, "--consistency", "causal-plus"],
        "--consistency: unknown consistency 'causal-plus'",
    );
    assert_clear_error(
        &["check", file, "--model", "stack"],
        "--model: unknown model 'stack'",
    );
    assert_clear_error(
        &[
            "check",
            file,
            "--consistency",
            "session",
            "--model",
            "queue",
        ],
        "register and string-kv",
    );
}

/// Regression: the sequential search exhausted a 20 s budget on seed 2's history (six unknown
/// writes). Simulated Raft histories are linearizable, so every checker must accept them.
#[test]
fn simulated_histories_pass_every_consistency_check() {
    for seed in ["2", "7"] {
        let path = scratch(&format!("sim-{seed}.jsonl"));
        let file = path.to_str().unwrap();
        let output = concord(&["sim", "--seed", seed, "--history", file]);
        assert!(output.status.success(), "seed {seed}: {}", stderr(&output));
        for consistency in ["linearizable", "sequential", "session", "causal"] {
            let output = concord(&["check", file, "--consistency", consistency]);
            assert_eq!(
                output.status.code(),
                Some(0),
                "seed {seed} {consistency}: {}{}",
                stdout(&output),
                stderr(&output)
            );
        }
    }
}

#[test]
fn check_eventual_reports_converged_replicas() {
    let path = scratch("converged.json");
    std::fs::write(
        &path,
        r#"{"replicas": {"n1": {"x": 1, "y": "a"}, "n2": {"y": "a", "x": 1}, "n3": {"x": 1, "y": "a"}}}"#,
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let output = concord(&["check", file, "--consistency", "eventual"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("converged (3 replicas, 2 keys)"),
        "{}",
        stdout(&output)
    );
    let (code, document) = check_json(&["check", file, "--consistency", "eventual", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(document["verdict"], "converged");
    assert_eq!(document["consistency"], "eventual");
}

#[test]
fn check_eventual_names_the_replicas_and_keys_that_differ() {
    let path = scratch("diverged.jsonl");
    std::fs::write(
        &path,
        "{\"replica\": \"n1\", \"state\": {\"x\": 1, \"y\": 2}}\n\
         {\"replica\": \"n2\", \"state\": {\"x\": 1, \"y\": 3}}\n\
         {\"replica\": \"n3\", \"state\": {\"x\": 1}}\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let output = concord(&["check", file, "--consistency", "eventual"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(
        text.contains("DIVERGED (3 replicas, 2 keys): 1 keys differ"),
        "{text}"
    );
    assert!(
        text.contains("key y: n1 = 2; n2 = 3; n3 = (missing)"),
        "{text}"
    );
    let (code, document) = check_json(&["check", file, "--consistency", "eventual", "--json"]);
    assert_eq!(code, Some(1));
    assert_eq!(document["verdict"], "diverged");
    assert_eq!(document["differences"][0]["key"], "y");
    assert_eq!(document["differences"][0]["groups"][2]["replicas"][0], "n3");
}

#[test]
fn check_eventual_rejects_bad_replica_files() {
    let path = scratch("bad-replicas.jsonl");
    std::fs::write(&path, "{\"replica\": \"n1\", \"state\": 1}\n[1, 2]\n").unwrap();
    let file = path.to_str().unwrap();
    assert_clear_error(&["check", file, "--consistency", "eventual"], "line 2");
    std::fs::write(&path, "").unwrap();
    assert_clear_error(&["check", file, "--consistency", "eventual"], "no replicas");
    assert_clear_error(
        &["check", "/no/such/states.json", "--consistency", "eventual"],
        "cannot open",
    );
}

#[test]
fn sim_reports_the_checkers_verdict_on_its_history_in_text_and_json() {
    let args = ["sim", "--seed", "3", "--duration", "3s", "--ops", "40"];
    let output = concord(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.lines()
            .any(|l| l.starts_with("history: linearizable (") && l.contains(" operations over ")),
        "{text}"
    );
    let (code, document) = check_json(&[&args[..], &["--json"]].concat());
    assert_eq!(code, Some(0));
    assert_eq!(document["linearizability"]["verdict"], "linearizable");
    assert!(document["linearizability"]["operations"].as_u64().unwrap() > 0);
}
