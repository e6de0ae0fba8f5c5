//! Sagas in `concord-sim`: transfers as sagas of two or three steps (a debit that may be
//! refused, a credit, sometimes a fee that may be refused), with crashes, partitions and loss
//! drawn from the seed, then a heal, restarts and a long quiet spell. [`SagaOutcomes`] runs
//! after every step; at the end every saga in the orchestrator's durable log must be completed
//! or compensated, every service's barrier table must agree, and the balances must have moved
//! by exactly what the completed sagas moved.

use std::collections::BTreeMap;

use rand::Rng as _;
use serde::Serialize;

use concord_core::time::MILLISECOND;
use concord_core::{seeded_rng, ClusterInvariant, NodeId};
use concord_sim::{SimConfig, Simulation};

use super::{BarrierRow, Config, Op, Request, Saga, SagaOutcomes, SagaStatus, Step};
use crate::scenario::{
    apply_fault, fault_plan, settle_faults, Faults, ViolationReport, ACTIVE, MAX_PARTICIPANTS,
    SETTLE,
};
use crate::types::Change;

/// What one saga run came to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SagaReport {
    /// The seed.
    pub seed: u64,
    /// The faults drawn.
    pub scenario: String,
    /// Sagas submitted.
    pub submitted: u64,
    /// Sagas the log holds as completed.
    pub completed: u64,
    /// Sagas the log holds as compensated.
    pub compensated: u64,
    /// Sagas the log holds as failed (a compensation never succeeded).
    pub failed: u64,
    /// Sagas the log holds as pending, running or compensating at the end.
    pub unfinished: u64,
    /// The faults injected, with their times.
    pub faults: Vec<String>,
    /// The sum of every service's balance changes.
    pub net_money: i64,
    /// What the completed sagas' steps add up to: `net_money` must equal it.
    pub expected_net_money: i64,
    /// The first broken invariant, if any.
    pub violation: Option<ViolationReport>,
}

impl SagaReport {
    /// Whether every saga ended completed or compensated, consistently with the services.
    pub fn is_safe(&self) -> bool {
        self.violation.is_none()
            && self.failed == 0
            && self.unfinished == 0
            && self.net_money == self.expected_net_money
    }
}

/// Accounts per service the workload touches.
const ACCOUNTS: u64 = 4;

fn random_saga(rng: &mut concord_core::Rng, services: usize) -> Vec<Step> {
    let service = |rng: &mut concord_core::Rng| rng.gen_range(1..=services as NodeId);
    let amount = if rng.gen_bool(0.15) {
        5_000
    } else {
        rng.gen_range(1..200)
    };
    let debit = Step {
        service: service(rng),
        changes: vec![Change {
            account: rng.gen_range(0..ACCOUNTS),
            delta: -amount,
        }],
    };
    let credit = Step {
        service: service(rng),
        changes: vec![Change {
            account: rng.gen_range(0..ACCOUNTS),
            delta: amount,
        }],
    };
    let mut steps = vec![debit, credit];
    if rng.gen_bool(0.5) {
        let fee = if rng.gen_bool(0.2) { 5_000 } else { 1 };
        steps.push(Step {
            service: service(rng),
            changes: vec![Change {
                account: rng.gen_range(0..ACCOUNTS),
                delta: -fee,
            }],
        });
    }
    steps
}

/// Runs `sagas` random sagas over `services` services from `seed` with `faults`.
pub fn run(seed: u64, services: usize, sagas: u64, faults: Faults) -> Result<SagaReport, String> {
    if !(1..=MAX_PARTICIPANTS).contains(&services) {
        return Err(format!(
            "--participants must be between 1 and {MAX_PARTICIPANTS}, not {services}"
        ));
    }
    let mut sim_config = SimConfig::new(services + 1, seed);
    sim_config.replay = format!("concord txn saga --seed {seed}");
    let mut sim: Simulation<Saga> =
        Simulation::new(sim_config, Config::default()).map_err(|e| e.to_string())?;
    let checker: Box<dyn ClusterInvariant<Saga>> = Box::new(SagaOutcomes::new());
    sim.add_invariant(checker);
    let mut report = SagaReport {
        seed,
        scenario: format!("random ({})", faults.describe()),
        submitted: 0,
        completed: 0,
        compensated: 0,
        failed: 0,
        unfinished: 0,
        faults: Vec::new(),
        net_money: 0,
        expected_net_money: 0,
        violation: None,
    };
    let mut rng = seeded_rng(seed, 1 << 40);
    let mut plan: Vec<(u64, Option<Vec<Step>>, Option<crate::scenario::Fault>)> = Vec::new();
    for _ in 0..sagas {
        let at = rng.gen_range(0..ACTIVE);
        plan.push((at, Some(random_saga(&mut rng, services)), None));
    }
    for (at, fault) in fault_plan(&mut rng, faults, services + 1) {
        plan.push((at, None, Some(fault)));
    }
    plan.sort_by_key(|(at, _, _)| *at);
    let outcome = (|| {
        for (at, saga, fault) in plan {
            sim.run_until(at)?;
            if let Some(steps) = saga {
                report.submitted += 1;
                let _ = sim.submit(0, Request::Saga(steps));
            }
            if let Some(fault) = fault {
                apply_fault(&mut sim, fault, &mut report.faults);
            }
        }
        sim.run_until(ACTIVE + 200 * MILLISECOND)?;
        settle_faults(&mut sim, &mut report.faults);
        let end = sim.now() + SETTLE;
        sim.run_until(end)
    })();
    if let Err(failure) = outcome {
        report.violation = Some(ViolationReport {
            invariant: failure.invariant.to_string(),
            node: failure.node,
            detail: failure.detail.clone(),
            at_ms: failure.time / MILLISECOND,
        });
    }
    finish(&sim, services, &mut report);
    Ok(report)
}

/// Reads the orchestrator's durable log and the services' durable state: statuses, the
/// barrier tables' agreement with them, and the money.
fn finish(sim: &Simulation<Saga>, services: usize, report: &mut SagaReport) {
    let Some(log) = sim.storage(0) else { return };
    let tables: BTreeMap<NodeId, &BTreeMap<_, BarrierRow>> = (1..=services as NodeId)
        .filter_map(|s| sim.storage(s).map(|storage| (s, &storage.barrier)))
        .collect();
    for (saga, record) in &log.sagas {
        match record.status {
            SagaStatus::Completed => {
                report.completed += 1;
                for step in &record.steps {
                    for change in &step.changes {
                        report.expected_net_money += change.delta;
                    }
                }
            }
            SagaStatus::Compensated => report.compensated += 1,
            SagaStatus::Failed => report.failed += 1,
            _ => report.unfinished += 1,
        }
        for (index, step) in record.steps.iter().enumerate() {
            let Some(table) = tables.get(&step.service) else {
                continue;
            };
            let key = |op| (*saga, index as u32, op);
            let action = table.get(&key(Op::Action));
            let compensated = table.contains_key(&key(Op::Compensation));
            let half_done = match record.status {
                SagaStatus::Completed => action != Some(&BarrierRow::Done) || compensated,
                SagaStatus::Compensated => action == Some(&BarrierRow::Done) && !compensated,
                _ => false,
            };
            if half_done && report.violation.is_none() {
                report.violation = Some(ViolationReport {
                    invariant: "saga-outcomes".into(),
                    node: Some(step.service),
                    detail: format!(
                        "{saga} is {} but step {index}'s barrier rows say otherwise",
                        record.status.name()
                    ),
                    at_ms: sim.now() / MILLISECOND,
                });
            }
        }
    }
    report.net_money = (1..=services as NodeId)
        .filter_map(|s| sim.node(s).and_then(Saga::as_service))
        .map(|service| service.ledger().net_change())
        .sum();
}

/// The outcome of many seeds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SagaSweepReport {
    /// Runs made.
    pub runs: u64,
    /// Unsafe runs.
    pub violations: Vec<SagaReport>,
    /// Sagas completed, over all runs.
    pub completed: u64,
    /// Sagas compensated, over all runs.
    pub compensated: u64,
}

/// Runs every seed of `seeds`.
pub fn sweep(
    seeds: std::ops::Range<u64>,
    services: usize,
    sagas: u64,
    faults: Faults,
) -> Result<SagaSweepReport, String> {
    let mut sweep = SagaSweepReport::default();
    for seed in seeds {
        let report = run(seed, services, sagas, faults)?;
        sweep.runs += 1;
        sweep.completed += report.completed;
        sweep.compensated += report.compensated;
        if !report.is_safe() {
            sweep.violations.push(report);
        }
    }
    Ok(sweep)
}
