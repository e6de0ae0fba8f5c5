//! The 2PC participant: prepares durably before voting yes, holds its locks while in doubt,
//! asks the coordinator and its peers when the decision is late, and never changes a decision.

use std::collections::BTreeMap;

use concord_core::{Duration, Effect, Input, NodeId, PersistToken, Time, Violation};

use super::{Config, Message, PreparedTxn, Request, Response, Storage, TwoPcEffect, Write};
use crate::types::{Account, Change, Ledger, Outcome, Refusal, TxnId};
use crate::Stage;

/// A prepared transaction waiting for its decision.
#[derive(Clone, Debug)]
struct InDoubt {
    prepared: PreparedTxn,
    /// When to ask (again) what was decided.
    ask_at: Time,
    /// The wait before the next question; doubles up to `Config::query_interval_max`.
    interval: Duration,
}

/// A participant's state.
#[derive(Clone, Debug)]
pub struct Participant {
    id: NodeId,
    config: Config,
    next_token: PersistToken,
    /// Balances with every commit applied (in memory; the durable copy is in `Storage`).
    ledger: Ledger,
    /// Accounts held by a prepared transaction. Invariant: each lock's holder is in doubt.
    locks: BTreeMap<Account, TxnId>,
    /// Invariant: disjoint from `decided`'s keys.
    in_doubt: BTreeMap<TxnId, InDoubt>,
    decided: BTreeMap<TxnId, Outcome>,
    /// A decision this participant was told to overturn: a broken protocol (or 3PC's
    /// anomaly, which this crate's 2PC must never show). Reported by `check_invariants`.
    overturned: Option<(TxnId, Outcome)>,
}

impl Participant {
    pub(super) fn restore(id: NodeId, config: &Config, storage: &Storage, now: Time) -> Self {
        let ledger = Ledger::with_committed(config.initial_balance, &storage.committed);
        let mut locks = BTreeMap::new();
        let mut in_doubt = BTreeMap::new();
        for (&txn, prepared) in &storage.prepared {
            for change in &prepared.changes {
                locks.insert(change.account, txn);
            }
            // In doubt after a restart: ask at once.
            let waiting = InDoubt {
                prepared: prepared.clone(),
                ask_at: now,
                interval: config.retry_interval,
            };
            in_doubt.insert(txn, waiting);
        }
        Participant {
            id,
            config: config.clone(),
            next_token: 0,
            ledger,
            locks,
            in_doubt,
            decided: storage.decided.clone(),
            overturned: None,
        }
    }

    /// The node id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The balances, with every commit applied.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Every transaction decided here.
    pub fn decided(&self) -> &BTreeMap<TxnId, Outcome> {
        &self.decided
    }

    /// Prepared transactions waiting for their decision.
    pub fn in_doubt(&self) -> impl Iterator<Item = TxnId> + '_ {
        self.in_doubt.keys().copied()
    }

    /// How far this participant got with `txn`.
    pub fn stage(&self, txn: TxnId) -> Stage {
        match self.decided.get(&txn) {
            Some(&outcome) => Stage::Decided(outcome),
            None if self.in_doubt.contains_key(&txn) => Stage::Voted,
            None => Stage::Unknown,
        }
    }

    pub(super) fn step(
        &mut self,
        now: Time,
        input: Input<Message, Request>,
        effects: &mut Vec<TwoPcEffect>,
    ) {
        match input {
            Input::Message { from, message } => self.on_message(now, from, message, effects),
            Input::Tick => self.on_tick(now, effects),
            Input::Request { id, .. } => effects.push(Effect::Reply {
                id,
                response: Response::Rejected(super::RejectReason::NotCoordinator),
            }),
            Input::Persisted { .. } | Input::PeerLost { .. } => {}
        }
    }

    fn persist(&mut self, write: Write, effects: &mut Vec<TwoPcEffect>) {
        self.next_token += 1;
        effects.push(Effect::Persist {
            token: self.next_token,
            write,
        });
    }

    fn on_message(
        &mut self,
        now: Time,
        from: NodeId,
        message: Message,
        effects: &mut Vec<TwoPcEffect>,
    ) {
        let coordinator = self.config.coordinator;
        match message {
            Message::Prepare {
                txn,
                changes,
                participants,
            } => self.on_prepare(now, txn, changes, participants, effects),
            Message::Commit { txn } => {
                self.decide(txn, Outcome::Commit, effects);
                effects.push(Effect::Send {
                    to: coordinator,
                    message: Message::Ack { txn },
                });
            }
            Message::Abort { txn } => self.decide(txn, Outcome::Abort, effects),
            Message::Decision { txn, outcome } => {
                self.decide(txn, outcome, effects);
                if from == coordinator && outcome == Outcome::Commit {
                    effects.push(Effect::Send {
                        to: coordinator,
                        message: Message::Ack { txn },
                    });
                }
            }
            Message::Query { txn } => self.on_query(txn, from, effects),
            Message::Vote { .. } | Message::Ack { .. } => {}
        }
    }

    /// Phase 1: vote no if the changes cannot be made or their accounts are held by another
    /// transaction; otherwise lock, log the prepared state (a barrier), then vote yes.
    fn on_prepare(
        &mut self,
        now: Time,
        txn: TxnId,
        changes: Vec<Change>,
        participants: Vec<NodeId>,
        effects: &mut Vec<TwoPcEffect>,
    ) {
        let vote = match self.decided.get(&txn) {
            Some(Outcome::Abort) => Err(Refusal::AlreadyAborted),
            Some(Outcome::Commit) => Ok(()),
            None if self.in_doubt.contains_key(&txn) => Ok(()),
            None => self.prepare(now, txn, changes, participants, effects),
        };
        effects.push(Effect::Send {
            to: self.config.coordinator,
            message: Message::Vote { txn, vote },
        });
    }

    fn prepare(
        &mut self,
        now: Time,
        txn: TxnId,
        changes: Vec<Change>,
        participants: Vec<NodeId>,
        effects: &mut Vec<TwoPcEffect>,
    ) -> Result<(), Refusal> {
        let refusal = if changes.iter().any(|c| self.locks.contains_key(&c.account)) {
            Some(Refusal::Locked)
        } else if !self.ledger.can_apply(&changes) {
            Some(Refusal::InsufficientFunds)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            self.decided.insert(txn, Outcome::Abort);
            self.persist(
                Write::Decided {
                    txn,
                    outcome: Outcome::Abort,
                },
                effects,
            );
            return Err(refusal);
        }
        for change in &changes {
            self.locks.insert(change.account, txn);
        }
        self.persist(
            Write::Prepared {
                txn,
                changes: changes.clone(),
                participants: participants.clone(),
            },
            effects,
        );
        let waiting = InDoubt {
            prepared: PreparedTxn {
                changes,
                participants,
            },
            ask_at: now.saturating_add(self.config.decision_timeout),
            interval: self.config.retry_interval,
        };
        self.in_doubt.insert(txn, waiting);
        Ok(())
    }

    /// Applies a decision heard from the coordinator or a peer. A decision never changes: a
    /// contradicting one is recorded for `check_invariants`.
    fn decide(&mut self, txn: TxnId, outcome: Outcome, effects: &mut Vec<TwoPcEffect>) {
        if let Some(&previous) = self.decided.get(&txn) {
            // A coordinator that forgot a transaction after every acknowledgement answers a
            // late duplicate vote or query about it with abort (presumed abort): only a
            // participant that already committed can hear that, and it ignores it.
            let stale_presumption = previous == Outcome::Commit && outcome == Outcome::Abort;
            if previous != outcome && !stale_presumption && self.overturned.is_none() {
                self.overturned = Some((txn, outcome));
            }
            return;
        }
        match self.in_doubt.remove(&txn) {
            Some(waiting) => {
                for change in &waiting.prepared.changes {
                    self.locks.remove(&change.account);
                }
                if outcome == Outcome::Commit {
                    self.ledger.apply(&waiting.prepared.changes);
                }
            }
            None if outcome == Outcome::Commit => {
                // Told to commit what was never prepared here: a broken protocol.
                self.overturned = Some((txn, outcome));
                return;
            }
            None => {}
        }
        self.decided.insert(txn, outcome);
        self.persist(Write::Decided { txn, outcome }, effects);
    }

    /// Cooperative termination, the peer's side: tell a known decision; stay silent while in
    /// doubt too; abort unilaterally (durably, before answering) if never prepared.
    fn on_query(&mut self, txn: TxnId, from: NodeId, effects: &mut Vec<TwoPcEffect>) {
        let outcome = match self.decided.get(&txn) {
            Some(&outcome) => outcome,
            None if self.in_doubt.contains_key(&txn) => return,
            None => {
                self.decided.insert(txn, Outcome::Abort);
                self.persist(Write::Refused { txn }, effects);
                Outcome::Abort
            }
        };
        effects.push(Effect::Send {
            to: from,
            message: Message::Decision { txn, outcome },
        });
    }

    /// In doubt past the timeout: ask the coordinator and, cooperatively, the other
    /// participants; ask again later with a doubling interval.
    fn on_tick(&mut self, now: Time, effects: &mut Vec<TwoPcEffect>) {
        let coordinator = self.config.coordinator;
        let cooperative = self.config.cooperative_termination;
        let interval_max = self.config.query_interval_max;
        for (&txn, waiting) in &mut self.in_doubt {
            if waiting.ask_at > now {
                continue;
            }
            waiting.ask_at = now.saturating_add(waiting.interval);
            waiting.interval = waiting.interval.saturating_mul(2).min(interval_max);
            let peers = waiting
                .prepared
                .participants
                .iter()
                .copied()
                .filter(|&peer| cooperative && peer != self.id);
            for to in std::iter::once(coordinator).chain(peers) {
                effects.push(Effect::Send {
                    to,
                    message: Message::Query { txn },
                });
            }
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Time> {
        self.in_doubt.values().map(|waiting| waiting.ask_at).min()
    }

    pub(super) fn check_invariants(&self) -> Result<(), Violation> {
        let fail = |detail: String| Err(Violation::on_node("2pc-participant", self.id, detail));
        if let Some((txn, outcome)) = self.overturned {
            return fail(format!(
                "told to {} {txn}, which was decided otherwise here (or never prepared)",
                outcome.name()
            ));
        }
        if self.ledger.lowest() < 0 {
            return fail(format!("a balance fell to {}", self.ledger.lowest()));
        }
        for (account, txn) in &self.locks {
            if !self.in_doubt.contains_key(txn) {
                return fail(format!(
                    "account {account} is locked by {txn}, not in doubt"
                ));
            }
        }
        if let Some(txn) = self.in_doubt.keys().find(|t| self.decided.contains_key(t)) {
            return fail(format!("{txn} is both in doubt and decided"));
        }
        Ok(())
    }
}
