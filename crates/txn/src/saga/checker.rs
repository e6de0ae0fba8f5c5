//! **Saga outcomes**: every saga ends completed or fully compensated, with no step left
//! half-done (Garcia-Molina and Salem, "Sagas", 1987, §2: either T1…Tn, or T1…Tj, Cj…C1),
//! and the barrier's guarantees (DTM): no action applies twice or after its compensation, no
//! compensation undoes an action that never applied, none undoes twice.
//!
//! The checker reads business changes off the services' barrier writes, and forgets a write a
//! service lost in a crash (its row is gone from the restarted service's barrier table, so
//! re-running that action is not a duplicate). It checks each saga's end when the
//! orchestrator logs it: by then every result it relied on was durable at its service.

use std::collections::BTreeMap;

use concord_core::{ClusterInvariant, Effect, EffectOf, NodeId, Violation};

use super::{BusinessChange, Op, Saga, SagaId, SagaStatus, Write};

const NAME: &str = "saga-outcomes";

/// What happened to one step at its service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct StepFacts {
    service: NodeId,
    applied: bool,
    undone: bool,
    compensated: bool,
}

/// The checker's memory: every step's facts and every saga's step count.
#[derive(Clone, Debug, Default)]
pub struct SagaOutcomes {
    steps: BTreeMap<(SagaId, u32), StepFacts>,
    lengths: BTreeMap<SagaId, u32>,
    ended: BTreeMap<SagaId, SagaStatus>,
}

impl SagaOutcomes {
    /// A checker that has seen nothing.
    pub fn new() -> Self {
        SagaOutcomes::default()
    }

    /// How each saga ended, as logged.
    pub fn ended(&self) -> &BTreeMap<SagaId, SagaStatus> {
        &self.ended
    }

    /// On a service's first step after a restart, forgets the facts whose rows its barrier
    /// table did not hold before the step (writes lost in the crash): re-running that action
    /// or compensation is then not a duplicate.
    fn forget_lost(&mut self, service: NodeId, node: &Saga, effects: &[EffectOf<Saga>]) {
        let Some(service_state) = node.as_service() else {
            return;
        };
        if service_state.steps_since_restore() != 1 {
            return;
        }
        let table = service_state.barrier();
        let written: Vec<(SagaId, u32, Op)> = effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Persist {
                    write:
                        Write::Barrier {
                            saga, step, rows, ..
                        },
                    ..
                } => Some(rows.iter().map(move |(op, _)| (*saga, *step, *op))),
                _ => None,
            })
            .flatten()
            .collect();
        let held_before = |key| table.contains_key(&key) && !written.contains(&key);
        for (&(saga, step), facts) in &mut self.steps {
            if facts.service != service {
                continue;
            }
            if facts.applied && !held_before((saga, step, Op::Action)) {
                facts.applied = false;
            }
            if facts.compensated && !held_before((saga, step, Op::Compensation)) {
                facts.compensated = false;
                facts.undone = false;
            }
        }
    }

    fn on_barrier(
        &mut self,
        service: NodeId,
        saga: SagaId,
        step: u32,
        rows: &[(Op, super::BarrierRow)],
        change: &BusinessChange,
    ) -> Result<(), Violation> {
        let facts = self.steps.entry((saga, step)).or_insert(StepFacts {
            service,
            ..StepFacts::default()
        });
        let fail = |what: &str| {
            Err(Violation::on_node(
                NAME,
                service,
                format!("{saga} step {step}: {what}"),
            ))
        };
        match change {
            BusinessChange::Applied(_) if facts.applied => return fail("action applied twice"),
            BusinessChange::Applied(_) if facts.compensated => {
                return fail("hanging action applied after its compensation")
            }
            BusinessChange::Applied(_) => facts.applied = true,
            BusinessChange::Undone(_) if !facts.applied => {
                return fail("compensation undid an action that never applied")
            }
            BusinessChange::Undone(_) if facts.undone => return fail("compensated twice"),
            BusinessChange::Undone(_) => facts.undone = true,
            BusinessChange::Nothing => {}
        }
        if rows.iter().any(|(op, _)| *op == Op::Compensation) {
            facts.compensated = true;
        }
        Ok(())
    }

    fn on_end(&mut self, saga: SagaId, status: SagaStatus) -> Result<(), Violation> {
        self.ended.insert(saga, status);
        let length = self.lengths.get(&saga).copied().unwrap_or(0);
        for step in 0..length {
            let facts = self.steps.get(&(saga, step)).copied().unwrap_or_default();
            let half_done = match status {
                SagaStatus::Completed => !facts.applied || facts.undone,
                SagaStatus::Compensated => facts.applied && !facts.undone,
                _ => false,
            };
            if half_done {
                return Err(Violation::cluster(
                    NAME,
                    format!(
                        "{saga} logged {} but step {step} is {}",
                        status.name(),
                        if facts.applied {
                            "applied"
                        } else {
                            "not applied"
                        }
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl ClusterInvariant<Saga> for SagaOutcomes {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check(
        &mut self,
        nodes: &[Option<&Saga>],
        stepped: NodeId,
        effects: &[EffectOf<Saga>],
    ) -> Result<(), Violation> {
        if let Some(Some(node)) = nodes.get(stepped as usize) {
            self.forget_lost(stepped, node, effects);
        }
        for effect in effects {
            let Effect::Persist { write, .. } = effect else {
                continue;
            };
            match write {
                Write::Accepted { saga, steps } => {
                    self.lengths.insert(*saga, steps.len() as u32);
                }
                Write::Progress { saga, status, .. } if status.is_final() => {
                    self.on_end(*saga, *status)?;
                }
                Write::Barrier {
                    saga,
                    step,
                    rows,
                    change,
                } => self.on_barrier(stepped, *saga, *step, rows, change)?,
                _ => {}
            }
        }
        Ok(())
    }
}
