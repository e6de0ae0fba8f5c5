//! Nemesis plans: every action parses and runs; bad plans get typed errors naming the step.

mod common;

use std::sync::Arc;

use common::{toy, ToyMessage};
use concord_core::time::{MILLISECOND, SECOND};
use concord_core::Rng;
use concord_sim::{swarm_plan, Corruptor, FaultKind, FaultSelection, NemesisError, NemesisPlan};

const EVERY_ACTION: &str = r#"
[[steps]]
at = "100ms"
action = "partition"
groups = [[0, 1], [2, 3, 4]]

[[steps]]
at = "200ms"
action = "isolate"
nodes = [4]

[[steps]]
at = "300ms"
action = "cut"
from = [0]
to = [1, 2]

[[steps]]
at = "400ms"
action = "quorum-loss"

[[steps]]
at = "500ms"
action = "constrained-election"
center = 2

[[steps]]
at = "600ms"
action = "chained"
chain = [0, 1, 2]

[[steps]]
at = "700ms"
action = "heal"

[[steps]]
at = "800ms"
action = "crash"
nodes = [1, 2]

[[steps]]
at = "900ms"
action = "restart"
nodes = [1]

[[steps]]
at = "1s"
action = "pause"
nodes = [3]

[[steps]]
at = "1100ms"
action = "resume"

[[steps]]
at = "1200ms"
action = "loss"
probability = 0.1

[[steps]]
at = "1300ms"
action = "duplicate"
probability = 0.1

[[steps]]
at = "1400ms"
action = "reorder"
probability = 0.2
max_delay = "30ms"

[[steps]]
at = "1500ms"
action = "latency"
min = "1ms"
max = "5ms"

[[steps]]
at = "1550ms"
action = "loss"
probability = 1.0
from = [3]
to = [4]

[[steps]]
at = "1600ms"
action = "drift"
nodes = [0, 4]
rate = 1.1

[[steps]]
at = "1700ms"
action = "byzantine"
nodes = [4]
behavior = "corrupt"

[[steps]]
at = "1800ms"
action = "byzantine-off"

[[steps]]
at = "1900ms"
action = "reset"
"#;

#[test]
fn a_plan_with_every_action_parses_and_runs() {
    let plan = NemesisPlan::from_toml(EVERY_ACTION).unwrap();
    assert_eq!(plan.steps.len(), 20);
    let mut sim = toy(5, 3);
    sim.set_corruptor(Corruptor(Arc::new(|_: &mut ToyMessage, _: &mut Rng| {})));
    sim.install_plan(&plan).unwrap();
    sim.run_for(850 * MILLISECOND).unwrap();
    assert_eq!(sim.crashed(), vec![1, 2]);
    sim.run_for(200 * MILLISECOND).unwrap();
    assert!(sim.is_paused(3));
    sim.run_for(SECOND).unwrap();
    let stats = sim.stats();
    assert_eq!(stats.nemesis_actions, 20);
    assert_eq!(stats.crashes, 2);
    assert_eq!(stats.restarts, 2, "node 1 by `restart`, node 2 by `reset`");
    assert!(sim.crashed().is_empty());
    assert!(!sim.is_paused(3));
    assert_eq!(sim.clock_rate(0), Some(1.0));
    assert!(!sim.is_byzantine(4));
    assert!(sim.network().connectivity().is_full());
    assert_eq!(sim.network().link(0, 1).unwrap().drop_probability, 0.0);
    assert!(sim.network().link(0, 5).is_none());
}

#[test]
fn link_faults_can_target_some_links() {
    let plan = NemesisPlan::from_toml(
        "[[steps]]\nat = \"0s\"\naction = \"loss\"\nprobability = 0.5\nfrom = [0]\nto = [1, 2]\n",
    )
    .unwrap();
    let mut sim = toy(3, 1);
    sim.install_plan(&plan).unwrap();
    sim.run_for(MILLISECOND).unwrap();
    let drop = |a, b| sim.network().link(a, b).unwrap().drop_probability;
    assert_eq!((drop(0, 1), drop(0, 2)), (0.5, 0.5));
    assert_eq!((drop(1, 0), drop(2, 1)), (0.0, 0.0));
    let bad = NemesisPlan::from_toml(
        "[[steps]]\nat = \"0s\"\naction = \"latency\"\nmin = \"1ms\"\nmax = \"2ms\"\nto = [8]\n",
    )
    .unwrap();
    assert!(bad.validate(3).unwrap_err().to_string().contains("node 8"));
}

#[test]
fn json_plans_and_round_trips() {
    let json = r#"{"steps": [{"at": "1s", "action": "isolate", "nodes": [0]},
                             {"at": 2000000000, "action": "heal"}]}"#;
    let plan = NemesisPlan::from_json(json).unwrap();
    assert_eq!(plan.steps[1].at, 2 * SECOND);
    let bare = NemesisPlan::from_json(r#"[{"at": "1s", "action": "isolate", "nodes": [0]}]"#);
    assert_eq!(bare.unwrap().steps[0], plan.steps[0]);
    let every = NemesisPlan::from_toml(EVERY_ACTION).unwrap();
    assert_eq!(NemesisPlan::from_toml(&every.to_toml()).unwrap(), every);
    let as_json = serde_json::to_string(&every).unwrap();
    assert_eq!(NemesisPlan::from_json(&as_json).unwrap(), every);
}

fn error(toml: &str) -> String {
    match NemesisPlan::from_toml(toml) {
        Ok(plan) => plan.validate(5).unwrap_err().to_string(),
        Err(error) => error.to_string(),
    }
}

#[test]
fn bad_plans_name_the_step_and_the_problem() {
    let unknown = error("[[steps]]\nat = \"1s\"\naction = \"partiton\"\n");
    assert!(
        unknown.starts_with("nemesis plan step 1 (at 1s): unknown variant `partiton`"),
        "{unknown}"
    );
    let range = error("[[steps]]\nat = \"1s\"\naction = \"heal\"\n[[steps]]\nat = \"2s\"\naction = \"crash\"\nnodes = [7]\n");
    assert_eq!(
        range,
        "nemesis plan step 2 (at 2s): node 7 does not exist (the cluster has nodes 0..5)"
    );
    let probability = error("[[steps]]\nat = \"1s\"\naction = \"loss\"\nprobability = 1.5\n");
    assert!(
        probability.contains("between 0 and 1, got 1.5"),
        "{probability}"
    );
    let missing = error("[[steps]]\naction = \"heal\"\n");
    assert!(missing.contains("step 1: missing `at`"), "{missing}");
    let field = error("[[steps]]\nat = \"1s\"\naction = \"partition\"\n");
    assert!(field.contains("missing field `groups`"), "{field}");
    let extra = error("[[steps]]\nat = \"1s\"\naction = \"heal\"\nnodes = [1]\n");
    assert!(extra.contains("unknown field `nodes`"), "{extra}");
    let duration = error("[[steps]]\nat = \"soon\"\naction = \"heal\"\n");
    assert!(duration.contains("bad `at`"), "{duration}");
    let twice =
        error("[[steps]]\nat = \"1s\"\naction = \"partition\"\ngroups = [[0, 1], [1, 2]]\n");
    assert!(twice.contains("node 1 appears more than once"), "{twice}");
    let drift = error("[[steps]]\nat = \"1s\"\naction = \"drift\"\nnodes = [0]\nrate = 0\n");
    assert!(drift.contains("drift rate"), "{drift}");
    assert!(matches!(
        NemesisPlan::from_toml("steps = 3"),
        Err(NemesisError::NotAList)
    ));
    assert!(matches!(
        NemesisPlan::from_json("{"),
        Err(NemesisError::Syntax { format: "JSON", .. })
    ));
    assert!(matches!(
        NemesisPlan::load(std::path::Path::new("/no/such/plan.toml")),
        Err(NemesisError::Io { .. })
    ));
}

#[test]
fn installing_a_plan_checks_it_against_the_cluster() {
    let mut sim = toy(3, 1);
    let plan =
        NemesisPlan::from_toml("[[steps]]\nat = \"1s\"\naction = \"isolate\"\nnodes = [3]\n")
            .unwrap();
    assert!(sim.install_plan(&plan).is_err());
    let plan =
        NemesisPlan::from_toml("[[steps]]\nat = \"1s\"\naction = \"quorum-loss\"\n").unwrap();
    assert!(
        toy(2, 1).install_plan(&plan).is_err(),
        "quorum-loss needs 3 nodes"
    );
}

#[test]
fn swarm_plans_come_from_the_seed_and_end_with_a_reset() {
    let all = FaultSelection::All;
    let (profile, plan) = swarm_plan(7, 5, &all, SECOND, 20 * SECOND);
    assert_eq!(
        swarm_plan(7, 5, &all, SECOND, 20 * SECOND),
        (profile.clone(), plan.clone())
    );
    assert!(!profile.enabled.is_empty());
    plan.validate(5).unwrap();
    let last = plan.steps.last().unwrap();
    assert_eq!(last.at, 20 * SECOND);
    assert_eq!(last.action, concord_sim::NemesisAction::Reset {});
    assert!(plan.steps.windows(2).all(|w| w[0].at <= w[1].at));
    // Different seeds switch different kinds on; over many seeds every kind shows up.
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..50 {
        seen.extend(swarm_plan(seed, 5, &all, SECOND, 20 * SECOND).0.enabled);
    }
    assert_eq!(seen.len(), FaultKind::ALL.len());
    let only: FaultSelection = "crash,loss".parse().unwrap();
    for seed in 0..20 {
        let (profile, plan) = swarm_plan(seed, 3, &only, SECOND, 10 * SECOND);
        assert!(profile
            .enabled
            .iter()
            .all(|k| [FaultKind::Crash, FaultKind::Loss].contains(k)));
        plan.validate(3).unwrap();
    }
    assert!("crash,meteor".parse::<FaultSelection>().is_err());
    assert_eq!(
        "none".parse::<FaultSelection>().unwrap(),
        FaultSelection::None
    );
}
