//! The saga orchestrator: runs each saga's actions in order, compensates in reverse on a
//! failure, retries with doubling backoff within limits, and logs every move so a restart
//! resumes where it stopped.

use std::collections::{BTreeMap, VecDeque};

use concord_core::{Duration, Effect, Input, NodeId, PersistToken, RequestId, Time, Violation};

use super::{
    Config, Message, Op, Request, Response, SagaEffect, SagaId, SagaStatus, Step, StepResult,
    Storage, Write,
};

/// A saga not yet finished.
#[derive(Clone, Debug)]
struct Tracked {
    steps: Vec<Step>,
    /// Pending, running or compensating.
    status: SagaStatus,
    /// Running: the step whose action is out; compensating: one above the step whose
    /// compensation is out.
    next: u32,
    /// Retries of the message now out.
    attempts: u32,
    /// When to retry it; `None` while pending.
    deadline: Option<Time>,
    /// The client to answer (none after a restart).
    request: Option<RequestId>,
}

/// The orchestrator's state.
#[derive(Clone, Debug)]
pub struct Orchestrator {
    id: NodeId,
    services: Vec<NodeId>,
    config: Config,
    epoch: u64,
    epoch_logged: bool,
    next_sequence: u64,
    next_token: PersistToken,
    /// Unfinished sagas. Invariant: the pending ones are exactly those in `queue`.
    sagas: BTreeMap<SagaId, Tracked>,
    queue: VecDeque<SagaId>,
    /// How each saga of this incarnation (or resumed by it) ended.
    finished: BTreeMap<SagaId, SagaStatus>,
    /// After a restart, start pending sagas at this time.
    wake_at: Option<Time>,
}

impl Orchestrator {
    pub(super) fn restore(
        id: NodeId,
        services: Vec<NodeId>,
        config: &Config,
        storage: &Storage,
        now: Time,
    ) -> Self {
        let mut sagas = BTreeMap::new();
        let mut queue = VecDeque::new();
        for (&saga, record) in &storage.sagas {
            if record.status.is_final() {
                continue;
            }
            let pending = record.status == SagaStatus::Pending;
            if pending {
                queue.push_back(saga);
            }
            let tracked = Tracked {
                steps: record.steps.clone(),
                status: record.status,
                next: record.next,
                attempts: 0,
                // Resume at once: resend the action or compensation the log stopped at.
                deadline: (!pending).then_some(now),
                request: None,
            };
            sagas.insert(saga, tracked);
        }
        Orchestrator {
            id,
            services,
            config: config.clone(),
            epoch: storage.epoch + 1,
            epoch_logged: false,
            next_sequence: 1,
            next_token: 0,
            sagas,
            wake_at: (!queue.is_empty()).then_some(now),
            queue,
            finished: BTreeMap::new(),
        }
    }

    /// The node id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The status of `saga`, if this incarnation knows it.
    pub fn status(&self, saga: SagaId) -> Option<SagaStatus> {
        self.sagas
            .get(&saga)
            .map(|t| t.status)
            .or_else(|| self.finished.get(&saga).copied())
    }

    /// Sagas not finished.
    pub fn unfinished(&self) -> usize {
        self.sagas.len()
    }

    /// How sagas finished, as far as this incarnation saw.
    pub fn finished(&self) -> &BTreeMap<SagaId, SagaStatus> {
        &self.finished
    }

    pub(super) fn step(
        &mut self,
        now: Time,
        input: Input<Message, Request>,
        effects: &mut Vec<SagaEffect>,
    ) {
        match input {
            Input::Request {
                id,
                request: Request::Saga(steps),
            } => self.accept(now, id, steps, effects),
            Input::Message {
                message:
                    Message::Result {
                        saga,
                        step,
                        op,
                        result,
                    },
                ..
            } => self.on_result(now, saga, step, op, result, effects),
            Input::Tick => self.on_tick(now, effects),
            Input::Message { .. } | Input::Persisted { .. } | Input::PeerLost { .. } => {}
        }
    }

    fn persist(&mut self, write: Write, effects: &mut Vec<SagaEffect>) {
        self.next_token += 1;
        effects.push(Effect::Persist {
            token: self.next_token,
            write,
        });
    }

    fn running(&self) -> usize {
        self.sagas.len() - self.queue.len()
    }

    fn accept(
        &mut self,
        now: Time,
        request: RequestId,
        steps: Vec<Step>,
        effects: &mut Vec<SagaEffect>,
    ) {
        let valid = !steps.is_empty()
            && steps.len() <= self.config.max_steps
            && steps.iter().all(|s| self.services.contains(&s.service))
            && self.sagas.len() < self.config.max_accepted;
        if !valid {
            return effects.push(Effect::Reply {
                id: request,
                response: Response::Rejected,
            });
        }
        if !self.epoch_logged {
            self.epoch_logged = true;
            self.persist(Write::Epoch(self.epoch), effects);
        }
        let saga = SagaId {
            epoch: self.epoch,
            sequence: self.next_sequence,
        };
        self.next_sequence += 1;
        self.persist(
            Write::Accepted {
                saga,
                steps: steps.clone(),
            },
            effects,
        );
        let tracked = Tracked {
            steps,
            status: SagaStatus::Pending,
            next: 0,
            attempts: 0,
            deadline: None,
            request: Some(request),
        };
        self.sagas.insert(saga, tracked);
        self.queue.push_back(saga);
        self.start_pending(now, effects);
    }

    /// Starts pending sagas while fewer than `max_running` run.
    fn start_pending(&mut self, now: Time, effects: &mut Vec<SagaEffect>) {
        while self.running() < self.config.max_running {
            let Some(saga) = self.queue.pop_front() else {
                break;
            };
            self.set_status(saga, SagaStatus::Running, 0, effects);
            self.send_current(now, saga, effects);
        }
    }

    fn set_status(
        &mut self,
        saga: SagaId,
        status: SagaStatus,
        next: u32,
        effects: &mut Vec<SagaEffect>,
    ) {
        let tracked = self.sagas.get_mut(&saga).expect("an unfinished saga");
        tracked.status = status;
        tracked.next = next;
        tracked.attempts = 0;
        self.persist(Write::Progress { saga, status, next }, effects);
    }

    /// Backoff before the retry after `attempts` failed tries: doubling from
    /// `backoff_initial`, at most `backoff_max`.
    fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(32);
        self.config
            .backoff_initial
            .saturating_mul(1 << doublings)
            .min(self.config.backoff_max)
    }

    /// Sends (again) the action or compensation the saga is at.
    fn send_current(&mut self, now: Time, saga: SagaId, effects: &mut Vec<SagaEffect>) {
        let backoff = self.backoff(self.sagas[&saga].attempts);
        let step_timeout = self.config.step_timeout;
        let tracked = self.sagas.get_mut(&saga).expect("an unfinished saga");
        let message = match tracked.status {
            SagaStatus::Running => {
                let step = tracked.next;
                let changes = tracked.steps[step as usize].changes.clone();
                (
                    step,
                    Message::Action {
                        saga,
                        step,
                        changes,
                    },
                )
            }
            SagaStatus::Compensating => {
                let step = tracked.next - 1;
                let changes = tracked.steps[step as usize].changes.clone();
                (
                    step,
                    Message::Compensate {
                        saga,
                        step,
                        changes,
                    },
                )
            }
            _ => return,
        };
        let (step, message) = message;
        let extra = if tracked.attempts == 0 { 0 } else { backoff };
        tracked.deadline = Some(now.saturating_add(step_timeout).saturating_add(extra));
        let to = tracked.steps[step as usize].service;
        effects.push(Effect::Send { to, message });
    }

    fn on_result(
        &mut self,
        now: Time,
        saga: SagaId,
        step: u32,
        op: Op,
        result: StepResult,
        effects: &mut Vec<SagaEffect>,
    ) {
        let Some(tracked) = self.sagas.get(&saga) else {
            return;
        };
        let (status, next, len) = (tracked.status, tracked.next, tracked.steps.len() as u32);
        match (status, op) {
            (SagaStatus::Running, Op::Action) if step == next => match result {
                StepResult::Done if next + 1 == len => {
                    self.finish(now, saga, SagaStatus::Completed, len, effects)
                }
                StepResult::Done => {
                    self.set_status(saga, SagaStatus::Running, next + 1, effects);
                    self.send_current(now, saga, effects);
                }
                StepResult::Refused(_) | StepResult::Blocked => {
                    self.compensate(now, saga, step + 1, effects)
                }
            },
            (SagaStatus::Compensating, Op::Compensation) if step + 1 == next => {
                if step == 0 {
                    self.finish(now, saga, SagaStatus::Compensated, 0, effects);
                } else {
                    self.set_status(saga, SagaStatus::Compensating, step, effects);
                    self.send_current(now, saga, effects);
                }
            }
            // A duplicate or late answer to an earlier message.
            _ => {}
        }
    }

    /// Compensates steps `above - 1` down to 0, in reverse order.
    fn compensate(&mut self, now: Time, saga: SagaId, above: u32, effects: &mut Vec<SagaEffect>) {
        self.set_status(saga, SagaStatus::Compensating, above, effects);
        self.send_current(now, saga, effects);
    }

    fn finish(
        &mut self,
        now: Time,
        saga: SagaId,
        status: SagaStatus,
        next: u32,
        effects: &mut Vec<SagaEffect>,
    ) {
        self.persist(Write::Progress { saga, status, next }, effects);
        let tracked = self.sagas.remove(&saga).expect("an unfinished saga");
        self.finished.insert(saga, status);
        if let Some(id) = tracked.request {
            effects.push(Effect::Reply {
                id,
                response: Response::Finished { saga, status },
            });
        }
        self.start_pending(now, effects);
    }

    fn on_tick(&mut self, now: Time, effects: &mut Vec<SagaEffect>) {
        if self.wake_at.is_some_and(|at| at <= now) {
            self.wake_at = None;
            self.start_pending(now, effects);
        }
        let due: Vec<SagaId> = self
            .sagas
            .iter()
            .filter(|(_, t)| t.deadline.is_some_and(|d| d <= now))
            .map(|(&saga, _)| saga)
            .collect();
        for saga in due {
            let tracked = self.sagas.get_mut(&saga).expect("due saga");
            tracked.attempts += 1;
            let (status, attempts, next) = (tracked.status, tracked.attempts, tracked.next);
            match status {
                // Out of retries: the action counts as failed; compensate it too, since it
                // may have applied (or may still arrive: the barrier blocks it then).
                SagaStatus::Running if attempts > self.config.max_retries => {
                    self.compensate(now, saga, next + 1, effects)
                }
                SagaStatus::Compensating if attempts > self.config.max_compensation_retries => {
                    self.finish(now, saga, SagaStatus::Failed, next, effects)
                }
                _ => self.send_current(now, saga, effects),
            }
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Time> {
        self.sagas
            .values()
            .filter_map(|t| t.deadline)
            .chain(self.wake_at)
            .min()
    }

    pub(super) fn check_invariants(&self) -> Result<(), Violation> {
        let fail = |detail: String| Err(Violation::on_node("saga-orchestrator", self.id, detail));
        let pending = self
            .sagas
            .values()
            .filter(|t| t.status == SagaStatus::Pending)
            .count();
        if pending != self.queue.len() {
            return fail(format!(
                "{pending} pending sagas but {} queued",
                self.queue.len()
            ));
        }
        for (saga, tracked) in &self.sagas {
            let len = tracked.steps.len() as u32;
            let in_range = match tracked.status {
                SagaStatus::Pending => tracked.next == 0,
                SagaStatus::Running => tracked.next < len,
                SagaStatus::Compensating => tracked.next >= 1 && tracked.next <= len,
                _ => false,
            };
            if !in_range {
                return fail(format!(
                    "{saga} is {} at step {} of {len}",
                    tracked.status.name(),
                    tracked.next
                ));
            }
        }
        Ok(())
    }
}
