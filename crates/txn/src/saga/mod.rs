//! Sagas (Garcia-Molina and Salem, "Sagas", SIGMOD 1987), orchestrated, with the
//! sub-transaction barrier of DTM (dtm-labs/dtm, `dtmcli/barrier.go`).
//!
//! A saga is a list of [`Step`]s, each an action at one service with a compensation that
//! undoes it. The orchestrator (node 0) runs the actions in order; when one fails (the service
//! refuses it, or it stays unanswered after [`Config::max_retries`] retries with doubling
//! backoff) it runs the compensations of every step begun so far, in reverse order, the failed
//! step's included (it may have been applied, or may arrive later). Compensations are retried
//! up to [`Config::max_compensation_retries`]; a saga whose compensation never succeeds ends
//! [`SagaStatus::Failed`] and needs a person.
//!
//! | message | from → to | meaning |
//! |---|---|---|
//! | [`Message::Action`] | orchestrator → service | run step `step` of `saga` |
//! | [`Message::Compensate`] | orchestrator → service | undo step `step` of `saga` |
//! | [`Message::Result`] | service → orchestrator | done, or refused (actions only) |
//!
//! **The barrier** (at each service, one row per `(saga, step, op)` — the idempotency key —
//! written in the same local transaction as the business change):
//!
//! * a **duplicate** action or compensation finds its row and returns the stored result
//!   without touching the business data;
//! * a **null compensation** (the compensation arrives and the action never ran) finds no
//!   action row: it writes one marked *blocked* and changes nothing;
//! * a **hanging** action (it arrives after its compensation) finds that blocked row and is
//!   refused, so it never applies after the saga was compensated.
//!
//! **The saga log** at the orchestrator: the saga and its steps when accepted; each step done;
//! the switch to compensating; each compensation done; the end status. Every record is a
//! barrier for the messages after it, so a restarted orchestrator resumes each unfinished
//! saga where its log says (resending the last action or compensation, which the barrier
//! makes harmless). Statuses: pending (accepted, waiting for a running slot), running,
//! completed, compensating, compensated, failed.
//!
//! **Checked by** [`crate::SagaOutcomes`]: no action applied twice or after its compensation,
//! no compensation undoing an action that never applied, or undoing twice; a saga logged
//! completed has every step applied, one logged compensated has every step undone or never
//! applied. What sagas do not give is isolation: between a step and its compensation others
//! see the change (a compensated credit may already have been spent: the balance goes below
//! zero, which services allow).

mod checker;
mod orchestrator;
pub mod scenario;
mod service;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use concord_core::time::MILLISECOND;
use concord_core::{Duration, Effect, Env, Input, Node, NodeId, NodeStatus, Rng, Time, Violation};

use crate::types::{Account, Change, Refusal, TxnId};

pub use checker::SagaOutcomes;
pub use orchestrator::Orchestrator;
pub use service::Service;

/// Names a saga: the orchestrator's epoch and a sequence number, as a [`TxnId`].
pub type SagaId = TxnId;

/// One step of a saga: changes at one service; the compensation undoes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The service.
    pub service: NodeId,
    /// What the action changes.
    pub changes: Vec<Change>,
}

/// Where a saga is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SagaStatus {
    /// Accepted and logged, waiting for a running slot.
    Pending,
    /// Running its actions.
    Running,
    /// Every action applied.
    Completed,
    /// An action failed: running the compensations.
    Compensating,
    /// Every begun step compensated.
    Compensated,
    /// A compensation never succeeded within its retries.
    Failed,
}

impl SagaStatus {
    /// Whether the saga is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Failed
        )
    }

    /// The status's name.
    pub fn name(self) -> &'static str {
        match self {
            SagaStatus::Pending => "pending",
            SagaStatus::Running => "running",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Compensated => "compensated",
            SagaStatus::Failed => "failed",
        }
    }
}

/// An action or a compensation: the third part of the idempotency key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// The step's action.
    Action,
    /// The step's compensation.
    Compensation,
}

/// What a service answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepResult {
    /// Applied (or, for a compensation, nothing is left to undo).
    Done,
    /// The action was refused: nothing changed.
    Refused(Refusal),
    /// The action arrived after its compensation (hanging) and was refused by the barrier.
    Blocked,
}

/// Messages between the orchestrator and the services.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Run a step's action.
    Action {
        /// The saga.
        saga: SagaId,
        /// The step's index.
        step: u32,
        /// Its changes.
        changes: Vec<Change>,
    },
    /// Run a step's compensation.
    Compensate {
        /// The saga.
        saga: SagaId,
        /// The step's index.
        step: u32,
        /// The action's changes (to undo).
        changes: Vec<Change>,
    },
    /// A service's answer.
    Result {
        /// The saga.
        saga: SagaId,
        /// The step.
        step: u32,
        /// Action or compensation.
        op: Op,
        /// The outcome.
        result: StepResult,
    },
}

/// A client request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Run a saga.
    Saga(Vec<Step>),
}

/// A reply to a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The saga ended with this status.
    Finished {
        /// The saga.
        saga: SagaId,
        /// Completed, compensated or failed.
        status: SagaStatus,
    },
    /// Refused before it began: no steps, an unknown service, or too many sagas.
    Rejected,
}

/// What the barrier keeps for one idempotency key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BarrierRow {
    /// The action applied, or the compensation ran.
    Done,
    /// The action was refused by the business rule.
    Refused(Refusal),
    /// Written by a null compensation: the action must never apply.
    Blocked,
}

/// The business change a barrier write carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BusinessChange {
    /// None (a duplicate, a refused action, a null compensation, a blocked action).
    Nothing,
    /// An action's changes applied.
    Applied(Vec<Change>),
    /// A compensation undid the action's changes.
    Undone(Vec<Change>),
}

/// A durable mutation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    /// Orchestrator: a new incarnation.
    Epoch(u64),
    /// Orchestrator: a saga accepted, with its steps.
    Accepted {
        /// The saga.
        saga: SagaId,
        /// Its steps.
        steps: Vec<Step>,
    },
    /// Orchestrator: the saga's status changed; `next` is the next step to act on (running:
    /// the next action; compensating: one above the next compensation).
    Progress {
        /// The saga.
        saga: SagaId,
        /// The status.
        status: SagaStatus,
        /// The position.
        next: u32,
    },
    /// Service: barrier rows and the business change, in one local transaction.
    Barrier {
        /// The saga.
        saga: SagaId,
        /// The step.
        step: u32,
        /// The rows written (the op's own; a null compensation also blocks the action).
        rows: Vec<(Op, BarrierRow)>,
        /// The business change.
        change: BusinessChange,
    },
}

/// A saga as the orchestrator's log keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaRecord {
    /// The steps.
    pub steps: Vec<Step>,
    /// The status.
    pub status: SagaStatus,
    /// Running: the next action; compensating: one above the next compensation.
    pub next: u32,
}

/// What all confirmed writes add up to; a node uses its role's part.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage {
    /// Orchestrator: the newest epoch.
    pub epoch: u64,
    /// Orchestrator: the saga log.
    pub sagas: BTreeMap<SagaId, SagaRecord>,
    /// Service: the barrier table.
    pub barrier: BTreeMap<(SagaId, u32, Op), BarrierRow>,
    /// Service: the net change of every account changed.
    pub committed: BTreeMap<Account, i64>,
}

impl Storage {
    /// Adds one confirmed write.
    pub fn apply(&mut self, write: &Write) {
        match write {
            Write::Epoch(epoch) => self.epoch = self.epoch.max(*epoch),
            Write::Accepted { saga, steps } => {
                let record = SagaRecord {
                    steps: steps.clone(),
                    status: SagaStatus::Pending,
                    next: 0,
                };
                self.sagas.insert(*saga, record);
            }
            Write::Progress { saga, status, next } => {
                if let Some(record) = self.sagas.get_mut(saga) {
                    record.status = *status;
                    record.next = *next;
                }
            }
            Write::Barrier {
                saga,
                step,
                rows,
                change,
            } => {
                for &(op, row) in rows {
                    self.barrier.insert((*saga, *step, op), row);
                }
                let (changes, sign) = match change {
                    BusinessChange::Nothing => return,
                    BusinessChange::Applied(changes) => (changes, 1),
                    BusinessChange::Undone(changes) => (changes, -1),
                };
                for change in changes {
                    *self.committed.entry(change.account).or_default() += sign * change.delta;
                }
            }
        }
    }
}

/// Timing, retries and limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The orchestrator's node id; every other member is a service.
    pub orchestrator: NodeId,
    /// Every account's opening balance.
    pub initial_balance: i64,
    /// How long the orchestrator waits for a result before retrying.
    pub step_timeout: Duration,
    /// The first backoff before a retry; it doubles with each retry of the same message.
    pub backoff_initial: Duration,
    /// The longest backoff.
    pub backoff_max: Duration,
    /// Retries of an action before it counts as failed (and the saga compensates).
    pub max_retries: u32,
    /// Retries of a compensation before the saga is failed.
    pub max_compensation_retries: u32,
    /// Sagas running at once; more wait as pending.
    pub max_running: usize,
    /// Sagas accepted and not finished, pending included; more are rejected.
    pub max_accepted: usize,
    /// Steps in one saga, at most.
    pub max_steps: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            orchestrator: 0,
            initial_balance: 1_000,
            step_timeout: 20 * MILLISECOND,
            backoff_initial: 10 * MILLISECOND,
            backoff_max: 320 * MILLISECOND,
            max_retries: 5,
            max_compensation_retries: 1_000,
            max_running: 64,
            max_accepted: 4_096,
            max_steps: 16,
        }
    }
}

/// The effect type of a saga node.
pub type SagaEffect = Effect<Message, Write, SagaId, Response>;

/// A saga node: the orchestrator or a service, by its id.
#[derive(Clone, Debug)]
pub enum Saga {
    /// The orchestrator.
    Orchestrator(Orchestrator),
    /// A service.
    Service(Service),
}

impl Saga {
    /// The orchestrator's state, if this node is it.
    pub fn as_orchestrator(&self) -> Option<&Orchestrator> {
        match self {
            Saga::Orchestrator(orchestrator) => Some(orchestrator),
            Saga::Service(_) => None,
        }
    }

    /// The service's state, if this node is one.
    pub fn as_service(&self) -> Option<&Service> {
        match self {
            Saga::Orchestrator(_) => None,
            Saga::Service(service) => Some(service),
        }
    }
}

impl Node for Saga {
    type Message = Message;
    type Request = Request;
    type Response = Response;
    type Write = Write;
    type Storage = Storage;
    type Command = SagaId;
    type Config = Config;

    fn restore(
        id: NodeId,
        members: &[NodeId],
        config: &Config,
        storage: &Storage,
        now: Time,
        _rng: &mut Rng,
    ) -> Self {
        if id == config.orchestrator {
            let services = members
                .iter()
                .copied()
                .filter(|&m| m != config.orchestrator)
                .collect();
            Saga::Orchestrator(Orchestrator::restore(id, services, config, storage, now))
        } else {
            Saga::Service(Service::restore(id, config, storage))
        }
    }

    fn apply_write(storage: &mut Storage, write: &Write) {
        storage.apply(write);
    }

    fn step(
        &mut self,
        env: &mut Env<'_>,
        input: Input<Message, Request>,
        effects: &mut Vec<SagaEffect>,
    ) {
        match self {
            Saga::Orchestrator(orchestrator) => orchestrator.step(env.now, input, effects),
            Saga::Service(service) => service.step(input, effects),
        }
    }

    fn next_deadline(&self) -> Option<Time> {
        match self {
            Saga::Orchestrator(orchestrator) => orchestrator.next_deadline(),
            Saga::Service(_) => None,
        }
    }

    fn status(&self) -> NodeStatus {
        let mut status = NodeStatus::down(self.id());
        status.role = match self {
            Saga::Orchestrator(_) => concord_core::Role::Leader,
            Saga::Service(_) => concord_core::Role::Follower,
        };
        status
    }

    fn check_invariants(&self) -> Result<(), Violation> {
        match self {
            Saga::Orchestrator(orchestrator) => orchestrator.check_invariants(),
            Saga::Service(_) => Ok(()),
        }
    }

    fn id(&self) -> NodeId {
        match self {
            Saga::Orchestrator(orchestrator) => orchestrator.id(),
            Saga::Service(service) => service.id(),
        }
    }

    fn election_timeout(config: &Config) -> Duration {
        config.step_timeout
    }
}
