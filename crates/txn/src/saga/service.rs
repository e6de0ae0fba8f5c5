//! A saga service behind DTM's sub-transaction barrier: every action and compensation writes
//! its barrier row in the same local transaction as its business change, so duplicates, null
//! compensations and hanging actions are each handled by looking the key up first.

use std::collections::BTreeMap;

use concord_core::{Effect, Input, NodeId, PersistToken};

use super::{
    BarrierRow, BusinessChange, Config, Message, Op, Request, Response, SagaEffect, SagaId,
    StepResult, Storage, Write,
};
use crate::types::{Change, Ledger, Refusal};

/// A service's state.
#[derive(Clone, Debug)]
pub struct Service {
    id: NodeId,
    orchestrator: NodeId,
    next_token: PersistToken,
    ledger: Ledger,
    barrier: BTreeMap<(SagaId, u32, Op), BarrierRow>,
    /// Steps taken since this incarnation was restored.
    steps: u64,
}

impl Service {
    pub(super) fn restore(id: NodeId, config: &Config, storage: &Storage) -> Self {
        let ledger = Ledger::with_committed(config.initial_balance, &storage.committed);
        Service {
            id,
            orchestrator: config.orchestrator,
            next_token: 0,
            ledger,
            barrier: storage.barrier.clone(),
            steps: 0,
        }
    }

    /// The node id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The balances.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The barrier table (rows being written included).
    pub fn barrier(&self) -> &BTreeMap<(SagaId, u32, Op), BarrierRow> {
        &self.barrier
    }

    /// Steps taken since this incarnation was restored (1 during its first step after a
    /// restart: the checker then knows its barrier table was exactly the durable one).
    pub fn steps_since_restore(&self) -> u64 {
        self.steps
    }

    pub(super) fn step(&mut self, input: Input<Message, Request>, effects: &mut Vec<SagaEffect>) {
        self.steps += 1;
        match input {
            Input::Message {
                message:
                    Message::Action {
                        saga,
                        step,
                        changes,
                    },
                ..
            } => {
                let result = self.on_action(saga, step, changes, effects);
                self.answer(saga, step, Op::Action, result, effects);
            }
            Input::Message {
                message:
                    Message::Compensate {
                        saga,
                        step,
                        changes,
                    },
                ..
            } => {
                self.on_compensate(saga, step, changes, effects);
                self.answer(saga, step, Op::Compensation, StepResult::Done, effects);
            }
            Input::Request { id, .. } => effects.push(Effect::Reply {
                id,
                response: Response::Rejected,
            }),
            Input::Message { .. }
            | Input::Tick
            | Input::Persisted { .. }
            | Input::PeerLost { .. } => {}
        }
    }

    /// The answer leaves after the barrier write (held until it is durable) — or, for a
    /// duplicate, after the original write, which is still ahead of it in the log.
    fn answer(
        &self,
        saga: SagaId,
        step: u32,
        op: Op,
        result: StepResult,
        effects: &mut Vec<SagaEffect>,
    ) {
        effects.push(Effect::Send {
            to: self.orchestrator,
            message: Message::Result {
                saga,
                step,
                op,
                result,
            },
        });
    }

    fn write(
        &mut self,
        saga: SagaId,
        step: u32,
        rows: Vec<(Op, BarrierRow)>,
        change: BusinessChange,
        effects: &mut Vec<SagaEffect>,
    ) {
        for &(op, row) in &rows {
            self.barrier.insert((saga, step, op), row);
        }
        self.next_token += 1;
        effects.push(Effect::Persist {
            token: self.next_token,
            write: Write::Barrier {
                saga,
                step,
                rows,
                change,
            },
        });
    }

    fn on_action(
        &mut self,
        saga: SagaId,
        step: u32,
        changes: Vec<Change>,
        effects: &mut Vec<SagaEffect>,
    ) -> StepResult {
        match self.barrier.get(&(saga, step, Op::Action)) {
            // Duplicate: the stored result, no business change.
            Some(BarrierRow::Done) => return StepResult::Done,
            Some(BarrierRow::Refused(refusal)) => return StepResult::Refused(*refusal),
            // Hanging: the compensation ran first and blocked this action.
            Some(BarrierRow::Blocked) => return StepResult::Blocked,
            None => {}
        }
        if self.ledger.can_apply(&changes) {
            self.ledger.apply(&changes);
            let rows = vec![(Op::Action, BarrierRow::Done)];
            self.write(saga, step, rows, BusinessChange::Applied(changes), effects);
            StepResult::Done
        } else {
            let refusal = Refusal::InsufficientFunds;
            let rows = vec![(Op::Action, BarrierRow::Refused(refusal))];
            self.write(saga, step, rows, BusinessChange::Nothing, effects);
            StepResult::Refused(refusal)
        }
    }

    fn on_compensate(
        &mut self,
        saga: SagaId,
        step: u32,
        changes: Vec<Change>,
        effects: &mut Vec<SagaEffect>,
    ) {
        if self.barrier.contains_key(&(saga, step, Op::Compensation)) {
            return; // Duplicate.
        }
        let done = (Op::Compensation, BarrierRow::Done);
        match self.barrier.get(&(saga, step, Op::Action)) {
            // Null compensation: nothing to undo; block the action should it come later.
            None => {
                let rows = vec![(Op::Action, BarrierRow::Blocked), done];
                self.write(saga, step, rows, BusinessChange::Nothing, effects);
            }
            Some(BarrierRow::Done) => {
                self.ledger.undo(&changes);
                self.write(
                    saga,
                    step,
                    vec![done],
                    BusinessChange::Undone(changes),
                    effects,
                );
            }
            Some(BarrierRow::Refused(_) | BarrierRow::Blocked) => {
                self.write(saga, step, vec![done], BusinessChange::Nothing, effects);
            }
        }
    }
}
