//! `--algorithm paxos` end to end: the demo's tour on Multi-Paxos and its claims, `sim` with a
//! requested partition, determinism of `sim --json`, `sweep` and `replay`.

mod common;

use common::{concord, stderr, stdout};

/// Runs `concord` and returns its standard output, asserting it succeeded.
fn succeeds(args: &[&str]) -> String {
    let output = concord(args);
    assert!(
        output.status.success(),
        "{args:?}: {}{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

#[test]
fn demo_partitions_a_five_node_multi_paxos_cluster_and_every_claim_holds() {
    let text = succeeds(&["demo", "--algorithm", "paxos", "--json"]);
    let tour: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(tour["algorithm"], "paxos");
    let initial = &tour["initial"];
    let leader = initial["leader"].as_u64().expect("a leader before the cut");
    assert_eq!(initial["followers"].as_array().unwrap().len(), 4);
    assert!(initial["commit_index"].as_u64().unwrap() > 0, "{initial}");

    // The old leader and one follower on one side, the three others on the other.
    let minority: Vec<u64> = tour["minority"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert_eq!(minority.len(), 2);
    assert!(minority.contains(&leader));
    let sides = tour["effects"]["sides"].as_array().unwrap();
    let side = |nodes: &serde_json::Value| {
        sides
            .iter()
            .find(|s| &s["nodes"] == nodes)
            .expect("a side per group")
    };
    let cut = side(&tour["minority"]);
    let rest = side(&tour["majority"]);
    assert_eq!(cut["leader_elected"], false, "{cut}");
    assert_eq!(cut["log_replicated"], false, "{cut}");
    assert_eq!(cut["requests_ok"], 0, "{cut}");
    assert!(cut["requests_failed"].as_u64().unwrap() > 0, "{cut}");
    assert_eq!(rest["leader_elected"], true, "{rest}");
    let new_leader = rest["leaders"][0]["node"].as_u64().unwrap();
    assert!(!minority.contains(&new_leader), "{rest}");
    assert_eq!(rest["log_replicated"], true, "{rest}");
    assert!(rest["requests_ok"].as_u64().unwrap() > 0, "{rest}");

    // After the heal every node is up, follows one leader and holds the same decided prefix.
    let after = &tour["after_heal"];
    assert!(after["leader"].is_u64(), "{after}");
    assert_eq!(after["nodes_up"], 5);
    let nodes = after["nodes"].as_array().unwrap();
    let decided = &nodes[0]["commit_index"];
    assert!(nodes
        .iter()
        .all(|n| &n["commit_index"] == decided && &n["applied_index"] == decided));
    assert_eq!(tour["converged"], true);
    assert_eq!(tour["linearizability"]["verdict"], "linearizable");
    for expectation in tour["expectations"].as_array().unwrap() {
        assert_eq!(expectation["held"], true, "{expectation}");
    }
}

#[test]
fn demo_names_multi_paxos_in_its_tables() {
    let text = succeeds(&["demo", "--algorithm", "paxos"]);
    for needle in [
        "a 5-node Multi-Paxos cluster",
        "ballot leader election",
        "leader elected",
        "[ok] the minority side elects no leader",
        "[ok] the majority side replicates the log and serves requests",
        "[ok] after heal all 5 nodes converge",
        "concord sim --algorithm paxos",
    ] {
        assert!(text.contains(needle), "missing '{needle}' in:\n{text}");
    }
    // The default is still Raft.
    assert!(succeeds(&["demo"]).contains("a 5-node Raft cluster"));
}

#[test]
fn sim_observes_a_requested_partition_of_a_paxos_cluster() {
    let text = succeeds(&[
        "sim",
        "--algorithm",
        "paxos",
        "--seed",
        "3",
        "--faults",
        "none",
        "--partition",
        "0,1",
        "--json",
    ]);
    let document: serde_json::Value = serde_json::from_str(&text).unwrap();
    let report = &document["report"];
    assert_eq!(report["algorithm"], "paxos");
    let sides = report["partition"]["sides"].as_array().unwrap();
    assert_eq!(sides[0]["nodes"], serde_json::json!([0, 1]));
    assert_eq!(sides[0]["leader_elected"], false);
    assert_eq!(sides[0]["requests_ok"], 0);
    assert_eq!(sides[1]["log_replicated"], true);
    assert!(sides[1]["requests_ok"].as_u64().unwrap() > 0);
    assert!(report["failure"].is_null());
    assert_eq!(report["converged"], true);
    assert_eq!(document["linearizability"]["verdict"], "linearizable");
    assert!(report["replay"]
        .as_str()
        .unwrap()
        .starts_with("concord replay --algorithm paxos --seed 3 "));
}

#[test]
fn paxos_sim_json_is_identical_across_runs_of_one_seed() {
    for faults in [
        "all",
        "partition",
        "crash,pause",
        "loss,duplicate,reorder,drift",
    ] {
        for seed in ["0", "1", "2"] {
            let args = [
                "sim",
                "--algorithm",
                "paxos",
                "--seed",
                seed,
                "--ops",
                "100",
                "--duration",
                "6s",
                "--faults",
                faults,
                "--json",
            ];
            assert_eq!(
                succeeds(&args),
                succeeds(&args),
                "{args:?} is not deterministic"
            );
        }
    }
}

#[test]
fn paxos_sweep_and_replay_run() {
    let text = succeeds(&[
        "sweep",
        "--algorithm",
        "paxos",
        "--seeds",
        "5",
        "--duration",
        "3s",
        "--ops",
        "60",
        "--check",
    ]);
    assert!(text.contains("5 seeds of paxos"), "{text}");
    assert!(text.contains("0 violations"), "{text}");

    let trace = succeeds(&[
        "replay",
        "--algorithm",
        "paxos",
        "--seed",
        "3",
        "--duration",
        "2s",
        "--ops",
        "20",
    ]);
    for needle in [
        "n0 tick -> [send n1",
        "paxos cluster of 5 nodes, seed 3",
        "safety: no invariant violated",
    ] {
        assert!(trace.contains(needle), "missing '{needle}' in the replay");
    }
}
