//! The 3PC coordinator: votes, pre-commits, then the decision, each decision logged before it
//! is sent. On an ack timeout it commits anyway (Skeen's rule: the silent have failed).

use std::collections::{BTreeMap, BTreeSet};

use concord_core::{Effect, Input, NodeId, PersistToken, RequestId, Time, Violation};

use super::{Config, Message, Reported, Request, Response, Round, Storage, ThreePcEffect, Write};
use crate::twopc::RejectReason;
use crate::types::{Change, Outcome, Refusal, TxnId};
use crate::Stage;

/// Where an undecided transaction is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Collecting votes (Skeen's *w* at the coordinator).
    Voting { yes: BTreeSet<NodeId> },
    /// Pre-commits sent (*p*), collecting acks.
    PreCommitting { acked: BTreeSet<NodeId> },
}

#[derive(Clone, Debug)]
struct Active {
    request: RequestId,
    participants: Vec<NodeId>,
    phase: Phase,
    deadline: Time,
}

/// The coordinator's state.
#[derive(Clone, Debug)]
pub struct Coordinator {
    id: NodeId,
    participants: Vec<NodeId>,
    config: Config,
    epoch: u64,
    epoch_logged: bool,
    next_sequence: u64,
    next_token: PersistToken,
    /// Invariant: disjoint from `decided`.
    active: BTreeMap<TxnId, Active>,
    /// Decisions, with participants (logged, or being logged).
    decided: BTreeMap<TxnId, (Outcome, Vec<NodeId>)>,
    /// After a restart: resend the logged decisions at this time.
    resend_at: Option<Time>,
}

impl Coordinator {
    pub(super) fn restore(
        id: NodeId,
        participants: Vec<NodeId>,
        config: &Config,
        storage: &Storage,
        now: Time,
    ) -> Self {
        Coordinator {
            id,
            participants,
            config: config.clone(),
            epoch: storage.epoch + 1,
            epoch_logged: false,
            next_sequence: 1,
            next_token: 0,
            active: BTreeMap::new(),
            decided: storage.decisions.clone(),
            resend_at: (!storage.decisions.is_empty()).then_some(now),
        }
    }

    /// The node id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// How far the coordinator got with `txn`.
    pub fn stage(&self, txn: TxnId) -> Stage {
        match (self.active.get(&txn), self.decided.get(&txn)) {
            (_, Some((outcome, _))) => Stage::Decided(*outcome),
            (Some(active), None) => match active.phase {
                Phase::Voting { .. } => Stage::Voted,
                Phase::PreCommitting { .. } => Stage::PreCommitted,
            },
            (None, None) => Stage::Unknown,
        }
    }

    pub(super) fn step(
        &mut self,
        now: Time,
        input: Input<Message, Request>,
        effects: &mut Vec<ThreePcEffect>,
    ) {
        match input {
            Input::Request {
                id,
                request: Request::Transaction(changes),
            } => self.begin(now, id, changes, effects),
            Input::Message { from, message } => self.on_message(now, from, message, effects),
            Input::Tick => self.on_tick(now, effects),
            Input::Persisted { .. } | Input::PeerLost { .. } => {}
        }
    }

    fn persist(&mut self, write: Write, effects: &mut Vec<ThreePcEffect>) {
        self.next_token += 1;
        effects.push(Effect::Persist {
            token: self.next_token,
            write,
        });
    }

    fn begin(
        &mut self,
        now: Time,
        request: RequestId,
        changes: BTreeMap<NodeId, Vec<Change>>,
        effects: &mut Vec<ThreePcEffect>,
    ) {
        let reject = |reason| Effect::Reply {
            id: request,
            response: Response::Rejected(reason),
        };
        if changes.is_empty() || changes.keys().any(|p| !self.participants.contains(p)) {
            return effects.push(reject(RejectReason::BadParticipants));
        }
        if self.active.len() >= self.config.max_active {
            return effects.push(reject(RejectReason::Busy));
        }
        if !self.epoch_logged {
            self.epoch_logged = true;
            self.persist(Write::Epoch(self.epoch), effects);
        }
        let txn = TxnId {
            epoch: self.epoch,
            sequence: self.next_sequence,
        };
        self.next_sequence += 1;
        let participants: Vec<NodeId> = changes.keys().copied().collect();
        for (&to, changes) in &changes {
            let message = Message::Prepare {
                txn,
                changes: changes.clone(),
                participants: participants.clone(),
            };
            effects.push(Effect::Send { to, message });
        }
        let active = Active {
            request,
            participants,
            phase: Phase::Voting {
                yes: BTreeSet::new(),
            },
            deadline: now.saturating_add(self.config.vote_timeout),
        };
        self.active.insert(txn, active);
    }

    fn on_message(
        &mut self,
        now: Time,
        from: NodeId,
        message: Message,
        effects: &mut Vec<ThreePcEffect>,
    ) {
        match message {
            Message::Vote { txn, vote } => self.on_vote(now, from, txn, vote, effects),
            Message::PreCommitAck { txn, round } if round == Round::default() => {
                let Some(active) = self.active.get_mut(&txn) else {
                    return;
                };
                if let Phase::PreCommitting { acked } = &mut active.phase {
                    acked.insert(from);
                    if acked.len() == active.participants.len() {
                        self.decide(txn, Outcome::Commit, None, effects);
                    }
                }
            }
            // A backup or a recovering site asks: answer only with a decision.
            Message::StateRequest { txn, round } => {
                if let Some(&(outcome, _)) = self.decided.get(&txn) {
                    let state = Reported::Decided(outcome);
                    let message = Message::StateReport { txn, round, state };
                    effects.push(Effect::Send { to: from, message });
                }
            }
            Message::DecisionRequest { txn } | Message::TerminationNeeded { txn } => {
                if let Some(&(outcome, _)) = self.decided.get(&txn) {
                    let message = Message::Decision { txn, outcome };
                    effects.push(Effect::Send { to: from, message });
                }
            }
            _ => {}
        }
    }

    fn on_vote(
        &mut self,
        now: Time,
        from: NodeId,
        txn: TxnId,
        vote: Result<(), Refusal>,
        effects: &mut Vec<ThreePcEffect>,
    ) {
        if let Some(&(outcome, _)) = self.decided.get(&txn) {
            let message = Message::Decision { txn, outcome };
            return effects.push(Effect::Send { to: from, message });
        }
        let Some(active) = self.active.get_mut(&txn) else {
            return;
        };
        let Phase::Voting { yes } = &mut active.phase else {
            return;
        };
        if let Err(refusal) = vote {
            return self.decide(txn, Outcome::Abort, Some(refusal), effects);
        }
        yes.insert(from);
        if yes.len() < active.participants.len() {
            return;
        }
        active.phase = Phase::PreCommitting {
            acked: BTreeSet::new(),
        };
        active.deadline = now.saturating_add(self.config.ack_timeout);
        for &to in &active.participants {
            let message = Message::PreCommit {
                txn,
                round: Round::default(),
            };
            effects.push(Effect::Send { to, message });
        }
    }

    /// Logs the decision (a barrier for the messages and the reply), then sends it.
    fn decide(
        &mut self,
        txn: TxnId,
        outcome: Outcome,
        refusal: Option<Refusal>,
        effects: &mut Vec<ThreePcEffect>,
    ) {
        let active = self
            .active
            .remove(&txn)
            .expect("deciding an active transaction");
        self.persist(
            Write::CoordinatorDecided {
                txn,
                outcome,
                participants: active.participants.clone(),
            },
            effects,
        );
        for &to in &active.participants {
            effects.push(Effect::Send {
                to,
                message: Message::Decision { txn, outcome },
            });
        }
        let response = match outcome {
            Outcome::Commit => Response::Committed(txn),
            Outcome::Abort => Response::Aborted { txn, refusal },
        };
        effects.push(Effect::Reply {
            id: active.request,
            response,
        });
        self.decided.insert(txn, (outcome, active.participants));
    }

    fn on_tick(&mut self, now: Time, effects: &mut Vec<ThreePcEffect>) {
        let expired: Vec<(TxnId, Outcome)> = self
            .active
            .iter()
            .filter(|(_, active)| active.deadline <= now)
            .map(|(&txn, active)| match active.phase {
                Phase::Voting { .. } => (txn, Outcome::Abort),
                // Skeen: participants that did not acknowledge are taken as failed.
                Phase::PreCommitting { .. } => (txn, Outcome::Commit),
            })
            .collect();
        for (txn, outcome) in expired {
            self.decide(txn, outcome, None, effects);
        }
        if self.resend_at.is_some_and(|at| at <= now) {
            self.resend_at = None;
            for (&txn, (outcome, participants)) in &self.decided {
                for &to in participants {
                    let message = Message::Decision {
                        txn,
                        outcome: *outcome,
                    };
                    effects.push(Effect::Send { to, message });
                }
            }
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Time> {
        self.active
            .values()
            .map(|active| active.deadline)
            .chain(self.resend_at)
            .min()
    }

    pub(super) fn check_invariants(&self) -> Result<(), Violation> {
        if let Some(txn) = self.active.keys().find(|t| self.decided.contains_key(t)) {
            return Err(Violation::on_node(
                "3pc-coordinator",
                self.id,
                format!("{txn} is both active and decided"),
            ));
        }
        Ok(())
    }
}
