//! The 3PC participant: Skeen's *w* and *p* states, the termination protocol (as backup or
//! not) and recovery.

use std::collections::{BTreeMap, BTreeSet};

use concord_core::{Duration, Effect, Input, NodeId, PersistToken, Time, Violation};

use super::{Config, Message, Reported, Request, Response, Round, Storage, ThreePcEffect, Write};
use crate::types::{Account, Change, Ledger, Outcome, Refusal, TxnId};
use crate::Stage;

/// Skeen's undecided local states after the vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Local {
    /// *w*: voted yes, uncertain.
    Uncertain,
    /// *p*: pre-committed.
    PreCommitted,
}

impl Local {
    fn reported(self) -> Reported {
        match self {
            Local::Uncertain => Reported::Uncertain,
            Local::PreCommitted => Reported::PreCommitted,
        }
    }
}

/// What an undecided participant is doing about a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Role {
    /// Waiting for the coordinator, or for a backup's round to finish.
    Waiting,
    /// Asked `candidate` to run the termination protocol; suspects it when the timer fires.
    AwaitingBackup { candidate: NodeId },
    /// Backup: collecting state reports.
    Collecting {
        round: Round,
        reports: BTreeMap<NodeId, Reported>,
    },
    /// Backup: waiting for acks of its pre-commits.
    PreCommitting {
        round: Round,
        waiting: BTreeSet<NodeId>,
    },
    /// Restored undecided after a crash: asks everyone for the decision.
    Recovering { interval: Duration },
}

#[derive(Clone, Debug)]
struct Pending {
    changes: Vec<Change>,
    participants: Vec<NodeId>,
    local: Local,
    role: Role,
    /// When the role's timeout fires.
    timer: Time,
    /// The highest termination round heard of.
    highest_round: Round,
    /// Participants taken as failed (silent when asked).
    suspected: BTreeSet<NodeId>,
}

/// A participant's state.
#[derive(Clone, Debug)]
pub struct Participant {
    id: NodeId,
    config: Config,
    next_token: PersistToken,
    ledger: Ledger,
    /// Invariant: each lock's holder is pending.
    locks: BTreeMap<Account, TxnId>,
    /// Invariant: disjoint from `decided`'s keys.
    pending: BTreeMap<TxnId, Pending>,
    decided: BTreeMap<TxnId, Outcome>,
    /// A decision this participant was told to overturn (3PC's anomaly under partitions).
    overturned: Option<(TxnId, Outcome)>,
}

impl Participant {
    pub(super) fn restore(id: NodeId, config: &Config, storage: &Storage, now: Time) -> Self {
        let ledger = Ledger::with_committed(config.initial_balance, &storage.committed);
        let mut locks = BTreeMap::new();
        let mut pending = BTreeMap::new();
        for (&txn, prepared) in &storage.prepared {
            for change in &prepared.changes {
                locks.insert(change.account, txn);
            }
            let local = if prepared.precommitted {
                Local::PreCommitted
            } else {
                Local::Uncertain
            };
            let recovering = Pending {
                changes: prepared.changes.clone(),
                participants: prepared.participants.clone(),
                local,
                role: Role::Recovering {
                    interval: config.retry_interval,
                },
                timer: now,
                highest_round: Round::default(),
                suspected: BTreeSet::new(),
            };
            pending.insert(txn, recovering);
        }
        Participant {
            id,
            config: config.clone(),
            next_token: 0,
            ledger,
            locks,
            pending,
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

    /// Transactions voted yes for and not decided (*w* or *p*).
    pub fn undecided(&self) -> impl Iterator<Item = TxnId> + '_ {
        self.pending.keys().copied()
    }

    /// Whether this participant restarted undecided about `txn` and is asking for the outcome.
    pub fn is_recovering(&self, txn: TxnId) -> bool {
        self.pending
            .get(&txn)
            .is_some_and(|p| matches!(p.role, Role::Recovering { .. }))
    }

    /// How far this participant got with `txn`.
    pub fn stage(&self, txn: TxnId) -> Stage {
        match (self.decided.get(&txn), self.pending.get(&txn)) {
            (Some(&outcome), _) => Stage::Decided(outcome),
            (None, Some(pending)) => match pending.local {
                Local::Uncertain => Stage::Voted,
                Local::PreCommitted => Stage::PreCommitted,
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
            Input::Message { from, message } => self.on_message(now, from, message, effects),
            Input::Tick => self.on_tick(now, effects),
            Input::Request { id, .. } => effects.push(Effect::Reply {
                id,
                response: Response::Rejected(crate::twopc::RejectReason::NotCoordinator),
            }),
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

    fn send(to: NodeId, message: Message, effects: &mut Vec<ThreePcEffect>) {
        effects.push(Effect::Send { to, message });
    }

    fn on_message(
        &mut self,
        now: Time,
        from: NodeId,
        message: Message,
        effects: &mut Vec<ThreePcEffect>,
    ) {
        match message {
            Message::Prepare {
                txn,
                changes,
                participants,
            } => {
                let vote = match self.decided.get(&txn) {
                    Some(Outcome::Abort) => Err(Refusal::AlreadyAborted),
                    Some(Outcome::Commit) => Ok(()),
                    None if self.pending.contains_key(&txn) => Ok(()),
                    None => self.prepare(now, txn, changes, participants, effects),
                };
                Self::send(from, Message::Vote { txn, vote }, effects);
            }
            Message::PreCommit { txn, round } => self.on_pre_commit(now, from, txn, round, effects),
            Message::PreCommitAck { txn, round } => {
                self.on_pre_commit_ack(from, txn, round, effects)
            }
            Message::Decision { txn, outcome } => self.decide(txn, outcome, effects),
            Message::StateRequest { txn, round } => {
                self.on_state_request(now, from, txn, round, effects)
            }
            Message::StateReport { txn, round, state } => {
                self.on_state_report(now, from, txn, round, state, effects)
            }
            Message::TerminationNeeded { txn } => {
                self.on_termination_needed(now, from, txn, effects)
            }
            Message::DecisionRequest { txn } => {
                if let Some(&outcome) = self.decided.get(&txn) {
                    Self::send(from, Message::Decision { txn, outcome }, effects);
                }
            }
            Message::Vote { .. } => {}
        }
    }

    /// Phase 1 as in 2PC: refuse if locked or short of funds, else lock and log *w*.
    fn prepare(
        &mut self,
        now: Time,
        txn: TxnId,
        changes: Vec<Change>,
        participants: Vec<NodeId>,
        effects: &mut Vec<ThreePcEffect>,
    ) -> Result<(), Refusal> {
        let refusal = if changes.iter().any(|c| self.locks.contains_key(&c.account)) {
            Some(Refusal::Locked)
        } else if !self.ledger.can_apply(&changes) {
            Some(Refusal::InsufficientFunds)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            self.decide(txn, Outcome::Abort, effects);
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
        let pending = Pending {
            changes,
            participants,
            local: Local::Uncertain,
            role: Role::Waiting,
            timer: now.saturating_add(self.config.uncertain_timeout),
            highest_round: Round::default(),
            suspected: BTreeSet::new(),
        };
        self.pending.insert(txn, pending);
        Ok(())
    }

    fn timeout(&self, local: Local) -> Duration {
        match local {
            Local::Uncertain => self.config.uncertain_timeout,
            Local::PreCommitted => self.config.precommitted_timeout,
        }
    }

    /// Move to *p* (durably, before the ack) for the coordinator or a backup whose round is
    /// the newest heard.
    fn on_pre_commit(
        &mut self,
        now: Time,
        from: NodeId,
        txn: TxnId,
        round: Round,
        effects: &mut Vec<ThreePcEffect>,
    ) {
        let precommitted_timeout = self.config.precommitted_timeout;
        let Some(pending) = self.pending.get_mut(&txn) else {
            if self.decided.get(&txn) == Some(&Outcome::Commit) {
                Self::send(from, Message::PreCommitAck { txn, round }, effects);
            }
            return;
        };
        if round < pending.highest_round {
            return;
        }
        pending.highest_round = round;
        let moved = pending.local == Local::Uncertain;
        pending.local = Local::PreCommitted;
        if !matches!(pending.role, Role::Recovering { .. }) {
            pending.role = Role::Waiting;
            pending.timer = now.saturating_add(precommitted_timeout);
        }
        if moved {
            self.persist(Write::PreCommitted { txn }, effects);
        }
        Self::send(from, Message::PreCommitAck { txn, round }, effects);
    }

    fn on_pre_commit_ack(
        &mut self,
        from: NodeId,
        txn: TxnId,
        round: Round,
        effects: &mut Vec<ThreePcEffect>,
    ) {
        let Some(pending) = self.pending.get_mut(&txn) else {
            return;
        };
        if let Role::PreCommitting {
            round: ours,
            waiting,
        } = &mut pending.role
        {
            if *ours == round {
                waiting.remove(&from);
                if waiting.is_empty() {
                    self.decide_and_announce(txn, Outcome::Commit, effects);
                }
            }
        }
    }

    /// A backup asks for this participant's state.
    fn on_state_request(
        &mut self,
        now: Time,
        from: NodeId,
        txn: TxnId,
        round: Round,
        effects: &mut Vec<ThreePcEffect>,
    ) {
        let state = match (self.decided.get(&txn), self.pending.get(&txn)) {
            (Some(&outcome), _) => Reported::Decided(outcome),
            (None, None) => {
                // Never voted: abort on our own, durably, and say so.
                self.decide(txn, Outcome::Abort, effects);
                Reported::Decided(Outcome::Abort)
            }
            (None, Some(pending)) if matches!(pending.role, Role::Recovering { .. }) => {
                Reported::Recovering
            }
            (None, Some(pending)) if round < pending.highest_round => return,
            (None, Some(pending)) => {
                let timeout = self.timeout(pending.local);
                let pending = self.pending.get_mut(&txn).expect("pending");
                pending.highest_round = round;
                // A newer round supersedes ours; wait for its backup to finish.
                pending.role = Role::Waiting;
                pending.timer = now.saturating_add(timeout);
                pending.local.reported()
            }
        };
        Self::send(from, Message::StateReport { txn, round, state }, effects);
    }

    fn on_state_report(
        &mut self,
        now: Time,
        from: NodeId,
        txn: TxnId,
        round: Round,
        state: Reported,
        effects: &mut Vec<ThreePcEffect>,
    ) {
        let Some(pending) = self.pending.get_mut(&txn) else {
            return;
        };
        match &mut pending.role {
            Role::Collecting {
                round: ours,
                reports,
            } if *ours == round => {
                reports.insert(from, state);
                let others = pending.participants.len() - 1;
                if reports.len() >= others {
                    self.conclude(now, txn, effects);
                }
            }
            Role::AwaitingBackup { candidate }
                if *candidate == from && state == Reported::Recovering =>
            {
                pending.suspected.insert(from);
                self.start_termination(now, txn, effects);
            }
            _ => {}
        }
    }

    fn on_termination_needed(
        &mut self,
        now: Time,
        from: NodeId,
        txn: TxnId,
        effects: &mut Vec<ThreePcEffect>,
    ) {
        let Some(pending) = self.pending.get(&txn) else {
            let outcome = match self.decided.get(&txn) {
                Some(&outcome) => outcome,
                None => {
                    self.decide(txn, Outcome::Abort, effects);
                    Outcome::Abort
                }
            };
            return Self::send(from, Message::Decision { txn, outcome }, effects);
        };
        match pending.role {
            Role::Recovering { .. } => {
                let message = Message::StateReport {
                    txn,
                    round: Round::default(),
                    state: Reported::Recovering,
                };
                Self::send(from, message, effects);
            }
            Role::Collecting { .. } | Role::PreCommitting { .. } => {}
            Role::Waiting | Role::AwaitingBackup { .. } => {
                self.start_termination(now, txn, effects)
            }
        }
    }

    /// Turn to the lowest-id participant not suspected: run a round as backup if that is this
    /// node, otherwise ask it to.
    fn start_termination(&mut self, now: Time, txn: TxnId, effects: &mut Vec<ThreePcEffect>) {
        let id = self.id;
        let coordinator = self.config.coordinator;
        let report_timeout = self.config.report_timeout;
        let election_timeout = self.config.election_timeout;
        let pending = self
            .pending
            .get_mut(&txn)
            .expect("terminating a pending transaction");
        let candidate = pending
            .participants
            .iter()
            .copied()
            .find(|p| *p == id || !pending.suspected.contains(p))
            .unwrap_or(id);
        if candidate != id {
            pending.role = Role::AwaitingBackup { candidate };
            pending.timer = now.saturating_add(election_timeout);
            return Self::send(candidate, Message::TerminationNeeded { txn }, effects);
        }
        let round = Round {
            number: pending.highest_round.number + 1,
            backup: id,
        };
        pending.highest_round = round;
        pending.role = Role::Collecting {
            round,
            reports: BTreeMap::new(),
        };
        pending.timer = now.saturating_add(report_timeout);
        let others: Vec<NodeId> = pending
            .participants
            .iter()
            .copied()
            .filter(|&p| p != id)
            .chain(std::iter::once(coordinator))
            .collect();
        for to in others {
            Self::send(to, Message::StateRequest { txn, round }, effects);
        }
    }

    /// The backup's rule over the states of the sites that answered (Skeen; BHG §7.5).
    fn conclude(&mut self, now: Time, txn: TxnId, effects: &mut Vec<ThreePcEffect>) {
        let report_timeout = self.config.report_timeout;
        let pending = self
            .pending
            .get_mut(&txn)
            .expect("concluding a pending transaction");
        let Role::Collecting { round, reports } = &pending.role else {
            return;
        };
        let round = *round;
        // Participants that stayed silent are taken as failed from now on.
        let silent: Vec<NodeId> = pending
            .participants
            .iter()
            .copied()
            .filter(|p| *p != self.id && !reports.contains_key(p))
            .collect();
        let states: Vec<Reported> = reports
            .values()
            .copied()
            .filter(|s| *s != Reported::Recovering)
            .chain(std::iter::once(pending.local.reported()))
            .collect();
        let uncertain: BTreeSet<NodeId> = reports
            .iter()
            .filter(|(_, s)| **s == Reported::Uncertain)
            .map(|(&p, _)| p)
            .collect();
        pending.suspected.extend(silent);
        if states.contains(&Reported::Decided(Outcome::Commit)) {
            return self.decide_and_announce(txn, Outcome::Commit, effects);
        }
        if states.contains(&Reported::Decided(Outcome::Abort)) {
            return self.decide_and_announce(txn, Outcome::Abort, effects);
        }
        if !states.contains(&Reported::PreCommitted) {
            return self.decide_and_announce(txn, Outcome::Abort, effects);
        }
        // Some site is in *p*: move to *p* too (logged before anything is sent), pre-commit
        // the uncertain ones, and commit once they acknowledged.
        let moved = pending.local == Local::Uncertain;
        pending.local = Local::PreCommitted;
        let waiting = uncertain.clone();
        pending.role = Role::PreCommitting { round, waiting };
        pending.timer = now.saturating_add(report_timeout);
        if moved {
            self.persist(Write::PreCommitted { txn }, effects);
        }
        if uncertain.is_empty() {
            return self.decide_and_announce(txn, Outcome::Commit, effects);
        }
        for &to in &uncertain {
            Self::send(to, Message::PreCommit { txn, round }, effects);
        }
    }

    fn decide_and_announce(
        &mut self,
        txn: TxnId,
        outcome: Outcome,
        effects: &mut Vec<ThreePcEffect>,
    ) {
        let others: Vec<NodeId> = self.pending.get(&txn).map_or(Vec::new(), |pending| {
            pending
                .participants
                .iter()
                .copied()
                .filter(|&p| p != self.id)
                .chain(std::iter::once(self.config.coordinator))
                .collect()
        });
        self.decide(txn, outcome, effects);
        for to in others {
            Self::send(to, Message::Decision { txn, outcome }, effects);
        }
    }

    /// Records a decision; a contradicting one is kept for `check_invariants`.
    fn decide(&mut self, txn: TxnId, outcome: Outcome, effects: &mut Vec<ThreePcEffect>) {
        if let Some(&previous) = self.decided.get(&txn) {
            if previous != outcome && self.overturned.is_none() {
                self.overturned = Some((txn, outcome));
            }
            return;
        }
        match self.pending.remove(&txn) {
            Some(pending) => {
                for change in &pending.changes {
                    self.locks.remove(&change.account);
                }
                if outcome == Outcome::Commit {
                    self.ledger.apply(&pending.changes);
                }
            }
            None if outcome == Outcome::Commit => {
                self.overturned = Some((txn, outcome));
                return;
            }
            None => {}
        }
        self.decided.insert(txn, outcome);
        self.persist(Write::Decided { txn, outcome }, effects);
    }

    fn on_tick(&mut self, now: Time, effects: &mut Vec<ThreePcEffect>) {
        let due: Vec<TxnId> = self
            .pending
            .iter()
            .filter(|(_, pending)| pending.timer <= now)
            .map(|(&txn, _)| txn)
            .collect();
        for txn in due {
            let Some(pending) = self.pending.get_mut(&txn) else {
                continue;
            };
            match pending.role.clone() {
                Role::Waiting => self.start_termination(now, txn, effects),
                Role::AwaitingBackup { candidate } => {
                    pending.suspected.insert(candidate);
                    self.start_termination(now, txn, effects);
                }
                Role::Collecting { .. } => self.conclude(now, txn, effects),
                Role::PreCommitting { .. } => {
                    // Those that did not acknowledge are taken as failed.
                    self.decide_and_announce(txn, Outcome::Commit, effects)
                }
                Role::Recovering { interval } => {
                    pending.timer = now.saturating_add(interval);
                    let max = self.config.retry_interval.saturating_mul(8);
                    pending.role = Role::Recovering {
                        interval: interval.saturating_mul(2).min(max),
                    };
                    let everyone: Vec<NodeId> = pending
                        .participants
                        .iter()
                        .copied()
                        .filter(|&p| p != self.id)
                        .chain(std::iter::once(self.config.coordinator))
                        .collect();
                    for to in everyone {
                        Self::send(to, Message::DecisionRequest { txn }, effects);
                    }
                }
            }
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Time> {
        self.pending.values().map(|pending| pending.timer).min()
    }

    pub(super) fn check_invariants(&self) -> Result<(), Violation> {
        let fail = |detail: String| Err(Violation::on_node("3pc-participant", self.id, detail));
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
            if !self.pending.contains_key(txn) {
                return fail(format!("account {account} is locked by {txn}, not pending"));
            }
        }
        if let Some(txn) = self.pending.keys().find(|t| self.decided.contains_key(t)) {
            return fail(format!("{txn} is both pending and decided"));
        }
        Ok(())
    }
}
