//! The toolkit over a toy cluster, and the runner's determinism.

mod common;

use common::{ToyConfig, ToyNode};
use concord_core::time::SECOND;
use concord_sim::{
    create_cluster, run_protocol, Cluster, ClusterOptions, FaultSelection, NemesisPlan, SimCluster,
    SimConfig, SimError, SimOptions, ToolkitError, TopologyError, WorkloadConfig,
};

fn toy_cluster(nodes: usize, seed: u64) -> Box<dyn Cluster> {
    let workload = WorkloadConfig {
        operations: u64::MAX,
        ..WorkloadConfig::default()
    };
    let cluster = SimCluster::<ToyNode>::new(
        "toy",
        SimConfig::new(nodes, seed),
        ToyConfig::default(),
        workload,
        Vec::new(),
    )
    .unwrap();
    Box::new(cluster)
}

#[test]
fn unsupported_and_unknown_algorithms_are_clear_errors() {
    let options = ClusterOptions::default();
    let error = |name: &str, nodes| create_cluster(name, nodes, 1, &options).err().unwrap();
    assert!(create_cluster("pbft", 4, 1, &options).is_ok());
    assert_eq!(
        error("x", 3).to_string(),
        "unknown algorithm 'x'; supported: raft, paxos, pbft"
    );
    assert_eq!(error("raft", 0), ToolkitError::NoNodes);
    assert!(matches!(
        error("raft", 1_000),
        ToolkitError::TooManyNodes { .. }
    ));
}

#[test]
fn health_shows_the_leader_and_per_node_rows() {
    let mut cluster = toy_cluster(3, 1);
    cluster.run_for(SECOND).unwrap();
    let health = cluster.health();
    assert_eq!(health.leader, Some(0));
    assert_eq!(health.followers, vec![1, 2]);
    assert_eq!(health.nodes.len(), 3);
    assert_eq!(health.nodes_up, 3);
    assert!(health.commit_index > 0);
    cluster.crash(2).unwrap();
    assert_eq!(cluster.health().nodes_up, 2);
    assert!(serde_json::to_string(&health)
        .unwrap()
        .contains("\"leader\":0"));
}

#[test]
fn observe_reports_each_side_of_a_partition() {
    let mut cluster = toy_cluster(5, 2);
    cluster.run_for(SECOND).unwrap();
    cluster.isolate(&[0, 1]).unwrap();
    let effects = cluster.observe(3 * SECOND).unwrap();
    assert_eq!(effects.sides.len(), 2);
    let (primary_side, other) = (&effects.sides[0], &effects.sides[1]);
    assert_eq!(primary_side.nodes, vec![0, 1]);
    assert_eq!(other.nodes, vec![2, 3, 4]);
    assert!(primary_side.log_replicated && primary_side.requests_ok > 0);
    assert!(!other.log_replicated && other.requests_ok == 0);
    assert!(
        !primary_side.leader_elected,
        "the toy's primary never changes term"
    );
    assert_eq!(effects.total_ok, primary_side.requests_ok);
    cluster.heal();
    cluster.run_for(SECOND).unwrap();
    assert!(cluster.stats().messages_cut > 0);
}

#[test]
fn bad_node_ids_are_typed_errors_not_panics() {
    let mut cluster = toy_cluster(3, 3);
    assert_eq!(
        cluster.isolate(&[5]).unwrap_err(),
        ToolkitError::Topology(TopologyError::NoSuchNode { node: 5, nodes: 3 })
    );
    assert!(cluster.partition(&[vec![0], vec![0, 1]]).is_err());
    assert!(cluster.crash(3).is_err());
    assert!(cluster.restart(99).is_err());
    let plan = NemesisPlan::from_toml("[[steps]]\nat = \"1s\"\naction = \"pause\"\nnodes = [4]\n");
    assert!(cluster.install_plan(&plan.unwrap()).is_err());
    let plan = NemesisPlan::from_toml("[[steps]]\nat = \"1s\"\naction = \"crash\"\nnodes = [2]\n");
    cluster.install_plan(&plan.unwrap()).unwrap();
    cluster.run_for(2 * SECOND).unwrap();
    assert_eq!(cluster.health().nodes_up, 2);
}

fn options(seed: u64, faults: &str) -> SimOptions {
    SimOptions {
        algorithm: "toy".into(),
        nodes: 5,
        seed,
        duration: 5 * SECOND,
        ops: 60,
        faults: faults.parse().unwrap(),
        ..SimOptions::default()
    }
}

fn report_json(options: &SimOptions) -> String {
    let report = run_protocol::<ToyNode>(options, ToyConfig::default(), Vec::new()).unwrap();
    serde_json::to_string(&report).unwrap()
}

#[test]
fn same_seed_gives_identical_reports_over_many_seeds_and_fault_mixes() {
    let mixes = [
        "all",
        "none",
        "partition",
        "crash,pause",
        "loss,duplicate,reorder",
        "drift",
    ];
    for seed in 0..12 {
        for faults in mixes {
            let options = options(seed, faults);
            let first = report_json(&options);
            assert_eq!(first, report_json(&options), "seed {seed} faults {faults}");
        }
    }
    assert_ne!(
        report_json(&options(1, "all")),
        report_json(&options(2, "all"))
    );
}

#[test]
fn runs_record_history_health_and_convergence() {
    let options = SimOptions {
        faults: FaultSelection::None,
        ..options(5, "none")
    };
    let report = run_protocol::<ToyNode>(&options, ToyConfig::default(), Vec::new()).unwrap();
    assert!(report.converged);
    assert!(report.failure.is_none());
    assert_eq!(report.history_summary.invoke, 60);
    assert_eq!(report.health_before.leader, Some(0));
    assert!(report
        .replay
        .starts_with("concord replay --algorithm toy --seed 5"));
    let partitioned = SimOptions {
        partition: Some(vec![3, 4]),
        ..options.clone()
    };
    let report = run_protocol::<ToyNode>(&partitioned, ToyConfig::default(), Vec::new()).unwrap();
    let effects = report.partition.expect("a partition was requested");
    assert_eq!(effects.sides[1].nodes, vec![3, 4]);
    assert!(report.replay.ends_with("--partition 3,4"));
    let bad = SimOptions {
        partition: Some(vec![7]),
        ..options.clone()
    };
    assert!(matches!(
        run_protocol::<ToyNode>(&bad, ToyConfig::default(), Vec::new()),
        Err(SimError::Topology(TopologyError::NoSuchNode {
            node: 7,
            ..
        }))
    ));
    let plan = NemesisPlan::from_toml("[[steps]]\nat = \"1s\"\naction = \"crash\"\nnodes = [9]\n")
        .unwrap();
    let bad = SimOptions {
        nemesis: Some(plan),
        ..options
    };
    assert!(run_protocol::<ToyNode>(&bad, ToyConfig::default(), Vec::new()).is_err());
}

#[test]
fn odd_but_legal_options_run_without_panicking() {
    let base = options(9, "all");
    let cases = [
        SimOptions {
            nodes: 1,
            ..base.clone()
        },
        SimOptions {
            nodes: 2,
            ..base.clone()
        },
        SimOptions {
            duration: 1,
            ..base.clone()
        },
        SimOptions {
            ops: 0,
            ..base.clone()
        },
        SimOptions {
            clients: 0,
            ..base.clone()
        },
        SimOptions {
            clients: 40,
            ops: 5,
            ..base.clone()
        },
        SimOptions {
            keys: 1,
            ..base.clone()
        },
        SimOptions {
            request_timeout: 1,
            ..base.clone()
        },
        SimOptions {
            faults: "byzantine".parse().unwrap(),
            nodes: 3,
            ..base.clone()
        },
        SimOptions {
            partition: Some(vec![]),
            ..base.clone()
        },
        SimOptions {
            partition: Some(vec![0, 1, 2, 3, 4]),
            ..base.clone()
        },
    ];
    for options in cases {
        let report = run_protocol::<ToyNode>(&options, ToyConfig::default(), Vec::new());
        assert!(report.is_ok(), "{options:?}: {report:?}");
    }
    let zero = SimOptions {
        nodes: 0,
        ..base.clone()
    };
    assert_eq!(
        run_protocol::<ToyNode>(&zero, ToyConfig::default(), Vec::new()).unwrap_err(),
        SimError::NoNodes
    );
    let forever = SimOptions {
        duration: u64::MAX,
        ..base
    };
    assert!(matches!(
        run_protocol::<ToyNode>(&forever, ToyConfig::default(), Vec::new()),
        Err(SimError::InvalidOption {
            name: "duration",
            ..
        })
    ));
}

/// A cluster invariant that breaks once five commands were applied anywhere.
#[derive(Debug, Default)]
struct AtMostFourCommands;

impl concord_core::ClusterInvariant<ToyNode> for AtMostFourCommands {
    fn name(&self) -> &'static str {
        "at-most-four-commands"
    }

    fn check(
        &mut self,
        _nodes: &[Option<&ToyNode>],
        stepped: concord_core::NodeId,
        effects: &[concord_sim::NodeEffect<ToyNode>],
    ) -> Result<(), concord_core::Violation> {
        for effect in effects {
            if let concord_core::Effect::Apply { index, .. } = effect {
                if *index >= 5 {
                    return Err(concord_core::Violation::on_node(
                        "at-most-four-commands",
                        stepped,
                        format!("applied index {index}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[test]
fn a_broken_cluster_invariant_stops_the_run_and_names_the_replay() {
    let options = SimOptions {
        mix: concord_sim::OperationMix {
            read: 0,
            write: 1,
            cas: 0,
            append: 0,
        },
        ..options(4, "none")
    };
    let report = run_protocol::<ToyNode>(
        &options,
        ToyConfig::default(),
        vec![Box::new(AtMostFourCommands)],
    )
    .unwrap();
    let failure = report.failure.expect("the invariant breaks");
    assert_eq!(failure.invariant, "at-most-four-commands");
    assert_eq!(failure.seed, 4);
    assert!(failure.time > 0 && failure.step > 0);
    assert_eq!(failure.replay, report.replay);
    assert!(failure
        .replay
        .starts_with("concord replay --algorithm toy --seed 4 --nodes 5 --duration 5s"));
    assert!(failure
        .replay
        .contains("--mix read=0,write=1,cas=0,append=0"));
    assert!(!report.converged);
    // The history stops where the run stopped.
    assert!(report
        .history
        .events
        .iter()
        .all(|op| op.time <= failure.time));
}

/// The seed's toolkit with `paxos` (Multi-Paxos): create a cluster by name, see its health, cut
/// off a minority with the leader, and observe that only the majority side elects a leader and
/// serves requests.
#[test]
fn a_paxos_cluster_is_created_by_name_and_its_majority_serves_through_a_partition() {
    let options = ClusterOptions::default();
    let mut cluster = create_cluster("paxos", 5, 11, &options).unwrap();
    cluster.run_for(3 * SECOND).unwrap();
    let health = cluster.health();
    let leader = health.leader.expect("a leader after three seconds");
    assert_eq!(health.nodes_up, 5);
    assert_eq!(health.followers.len(), 4);
    let minority: Vec<u64> = std::iter::once(leader)
        .chain((0..5).filter(|&n| n != leader).take(1))
        .collect();
    cluster.isolate(&minority).unwrap();
    let effects = cluster.observe(10 * SECOND).unwrap();
    let (cut, rest) = (&effects.sides[0], &effects.sides[1]);
    assert_eq!(cut.nodes.len(), 2);
    assert_eq!(rest.nodes.len(), 3);
    assert_eq!(
        cut.requests_ok, 0,
        "the minority serves nothing: {effects:?}"
    );
    assert!(rest.leader_elected, "the majority elects: {effects:?}");
    assert!(rest.log_replicated && rest.requests_ok > 0, "{effects:?}");
    cluster.heal();
    cluster.run_for(5 * SECOND).unwrap();
    let health = cluster.health();
    assert!(health.leader.is_some());
    assert_eq!(health.nodes_up, 5);
}
