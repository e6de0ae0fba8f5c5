//! `concord demo`: the guided tour of the README.
//!
//! A 5-node Raft (or, with `--algorithm paxos`, Multi-Paxos) cluster elects a leader under
//! client load; a 2|3 partition puts the leader and one follower on the minority side (with
//! `--algorithm pbft`: four replicas, the primary cut off alone); each side's behaviour is
//! observed; the partition heals; the cluster converges; the client history is checked for
//! linearizability.

use anyhow::Result;
use concord_check::linearizability::{Report, Verdict};
use concord_core::time::{format_duration, MILLISECOND};
use concord_core::NodeId;
use concord_sim::toolkit::{
    create_cluster, default_window, ClusterHealth, ClusterOptions, PartitionEffects,
};
use serde::Serialize;

use crate::args::DemoArgs;
use crate::simulate::check_history;
use crate::{render, Outcome};

/// A claim the tour makes, and whether it held.
#[derive(Serialize)]
struct Expectation {
    claim: String,
    held: bool,
}

#[derive(Serialize)]
struct Tour {
    algorithm: String,
    seed: u64,
    initial: ClusterHealth,
    minority: Vec<NodeId>,
    majority: Vec<NodeId>,
    effects: PartitionEffects,
    after_heal: ClusterHealth,
    converged: bool,
    linearizability: Report,
    expectations: Vec<Expectation>,
}

/// Runs the tour.
pub fn run(args: &DemoArgs) -> Result<Outcome> {
    let say = |text: String| -> Result<()> {
        if !args.json {
            outln!("{text}");
        }
        Ok(())
    };
    let algorithm = args.algorithm.as_str();
    // Crash-fault protocols: five nodes, the leader cut off with one follower (a minority of
    // two). PBFT: 3f + 1 = 4 replicas tolerating f = 1; the primary cut off alone leaves a
    // quorum of 2f + 1 = 3 on the other side.
    let (nodes, cut_with_leader) = match algorithm {
        "pbft" => (4, 0),
        _ => (5, 1),
    };
    let mut cluster = create_cluster(algorithm, nodes, args.seed, &ClusterOptions::default())?;
    let election_timeout = cluster.election_timeout();
    say(format!(
        "Concord demo: a {nodes}-node {} cluster in the deterministic simulator (seed {}), three clients writing, reading and compare-and-setting keys.\n{}",
        protocol_name(algorithm),
        args.seed,
        protocol_note(algorithm),
    ))?;

    let leader = cluster.wait_for_leader(20 * election_timeout)?;
    cluster.run_for(election_timeout)?;
    let initial = cluster.health();
    say(render::health(
        "1. The cluster elects a leader and serves clients",
        &initial,
    ))?;

    let leader = leader.or(initial.leader).unwrap_or(0);
    let mut minority: Vec<NodeId> = std::iter::once(leader)
        .chain(
            (0..nodes as NodeId)
                .filter(|&n| n != leader)
                .take(cut_with_leader),
        )
        .collect();
    minority.sort_unstable();
    let majority: Vec<NodeId> = (0..nodes as NodeId)
        .filter(|n| !minority.contains(n))
        .collect();
    cluster.partition(&[minority.clone(), majority.clone()])?;
    let others: Vec<NodeId> = minority.iter().copied().filter(|&n| n != leader).collect();
    say(if others.is_empty() {
        format!("2. Partition: the leader (node {leader}) is cut off from nodes {majority:?}.\n")
    } else {
        format!(
            "2. Partition: the leader (node {leader}) and node(s) {others:?} are cut off from nodes {majority:?}.\n"
        )
    })?;
    cluster.run_for(100 * MILLISECOND)?;
    let effects = cluster.observe(default_window(election_timeout))?;
    say(render::partition_effects(&effects))?;

    cluster.heal();
    say("3. Heal: every link is restored; the clients stop and the cluster settles.\n".into())?;
    cluster.run_for(2 * election_timeout)?;
    cluster.stop_clients();
    let mut converged = false;
    for _ in 0..40 {
        cluster.run_for(election_timeout / 2)?;
        if cluster.converged() {
            converged = true;
            break;
        }
    }
    let after_heal = cluster.health();
    say(render::health("4. After heal", &after_heal))?;

    let linearizability = check_history(cluster.history())?;
    say(format!(
        "5. The client history: {}\n",
        render::verdict(&linearizability)
    ))?;

    let side = |nodes: &[NodeId]| effects.sides.iter().find(|s| s.nodes == nodes);
    let minority_side = side(&minority);
    let majority_side = side(&majority);
    let expectations = vec![
        Expectation {
            claim: "the minority side elects no leader".into(),
            held: minority_side.is_some_and(|s| !s.leader_elected),
        },
        Expectation {
            claim: "the minority side serves no client request".into(),
            held: minority_side.is_some_and(|s| s.requests_ok == 0),
        },
        Expectation {
            claim: "the majority side elects a leader".into(),
            held: majority_side.is_some_and(|s| s.leader_elected),
        },
        Expectation {
            claim: "the majority side replicates the log and serves requests".into(),
            held: majority_side.is_some_and(|s| s.log_replicated && s.requests_ok > 0),
        },
        Expectation {
            claim: format!("after heal all {nodes} nodes converge"),
            held: converged,
        },
        Expectation {
            claim: "the client history is linearizable".into(),
            held: linearizability.verdict == Verdict::Linearizable,
        },
    ];
    let all_held = expectations.iter().all(|e| e.held);
    if args.json {
        let tour = Tour {
            algorithm: algorithm.to_string(),
            seed: args.seed,
            initial,
            minority,
            majority,
            effects,
            after_heal,
            converged,
            linearizability,
            expectations,
        };
        outln!("{}", serde_json::to_string_pretty(&tour)?);
    } else {
        outln!(
            "What the tour showed (simulated time {}):",
            format_duration(cluster.now())
        );
        for e in &expectations {
            outln!("  [{}] {}", if e.held { "ok" } else { "FAILED" }, e.claim);
        }
        let flag = if algorithm == "raft" {
            String::new()
        } else {
            format!(" --algorithm {algorithm}")
        };
        let cut = if algorithm == "pbft" { "0" } else { "0,1" };
        outln!(
            "\nCAP in one picture: the minority side chose consistency over availability; the majority stayed available.\nNext: concord sim{flag} --partition {cut} --seed 3   |   concord sweep{flag} --seeds 100"
        );
    }
    Ok(if all_held {
        Outcome::Success
    } else {
        Outcome::Violation
    })
}

/// How the tour names the protocol `algorithm` (a name `create_cluster` accepted).
fn protocol_name(algorithm: &str) -> &str {
    match algorithm {
        "raft" => "Raft",
        "paxos" => "Multi-Paxos",
        "pbft" => "PBFT",
        other => other,
    }
}

/// What a reader of the tables needs to know about the protocol `algorithm`.
fn protocol_note(algorithm: &str) -> &'static str {
    match algorithm {
        "paxos" => "Leaders come from ballot leader election (only a node that hears a quorum campaigns); \"term\" below is the round of a node's ballot, \"commit index\" its decided prefix.\n",
        "pbft" => "Byzantine fault tolerant: 3f + 1 = 4 replicas tolerate f = 1 faulty one. \"leader\" below is the primary, \"term\" the view, \"log length\" the last assigned sequence number, \"commit index\" the last executed.\n",
        _ => "",
    }
}
