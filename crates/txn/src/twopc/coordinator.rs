//! The 2PC coordinator: collects votes, logs commit decisions (never aborts: presumed abort),
//! drives phase 2 to every participant and forgets a transaction once all acknowledged.

use std::collections::{BTreeMap, BTreeSet};

use concord_core::{Effect, Input, NodeId, PersistToken, RequestId, Time, Violation};

use super::{
    sorted, Config, Message, RejectReason, Request, Response, Storage, TwoPcEffect, Write,
};
use crate::types::{Outcome, Refusal, TxnId};
use crate::Stage;

/// A transaction collecting votes.
#[derive(Clone, Debug)]
struct Voting {
    request: RequestId,
    participants: Vec<NodeId>,
    yes: BTreeSet<NodeId>,
    /// When to give up and abort.
    deadline: Time,
}

/// A transaction decided commit, waiting for acknowledgements.
#[derive(Clone, Debug)]
struct Committing {
    participants: Vec<NodeId>,
    acked: BTreeSet<NodeId>,
    /// When to resend the commit to participants that have not acknowledged.
    retry_at: Time,
}

/// The coordinator's state.
#[derive(Clone, Debug)]
pub struct Coordinator {
    id: NodeId,
    participants: Vec<NodeId>,
    config: Config,
    /// This incarnation's epoch: one above the newest logged.
    epoch: u64,
    epoch_logged: bool,
    next_sequence: u64,
    next_token: PersistToken,
    /// Invariant: disjoint from `committing`; at most `config.max_active` entries.
    voting: BTreeMap<TxnId, Voting>,
    committing: BTreeMap<TxnId, Committing>,
    committed: u64,
    aborted: u64,
}

impl Coordinator {
    pub(super) fn restore(
        id: NodeId,
        participants: Vec<NodeId>,
        config: &Config,
        storage: &Storage,
        now: Time,
    ) -> Self {
        let committing = storage
            .commits
            .iter()
            .map(|(&txn, participants)| {
                let committing = Committing {
                    participants: participants.clone(),
                    acked: BTreeSet::new(),
                    retry_at: now,
                };
                (txn, committing)
            })
            .collect();
        Coordinator {
            id,
            participants,
            config: config.clone(),
            epoch: storage.epoch + 1,
            epoch_logged: false,
            next_sequence: 1,
            next_token: 0,
            voting: BTreeMap::new(),
            committing,
            committed: 0,
            aborted: 0,
        }
    }

    /// The node id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This incarnation's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Transactions this incarnation decided to commit.
    pub fn committed_count(&self) -> u64 {
        self.committed
    }

    /// Transactions this incarnation aborted.
    pub fn aborted_count(&self) -> u64 {
        self.aborted
    }

    /// Transactions still collecting votes.
    pub fn voting(&self) -> usize {
        self.voting.len()
    }

    /// Transactions decided commit whose participants have not all acknowledged.
    pub fn committing(&self) -> usize {
        self.committing.len()
    }

    /// How far this coordinator got with `txn`.
    pub fn stage(&self, txn: TxnId) -> Stage {
        if self.voting.contains_key(&txn) {
            Stage::Voted
        } else if self.committing.contains_key(&txn) {
            Stage::Decided(Outcome::Commit)
        } else {
            Stage::Unknown
        }
    }

    pub(super) fn step(
        &mut self,
        now: Time,
        input: Input<Message, Request>,
        effects: &mut Vec<TwoPcEffect>,
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

    fn persist(&mut self, write: Write, effects: &mut Vec<TwoPcEffect>) {
        self.next_token += 1;
        effects.push(Effect::Persist {
            token: self.next_token,
            write,
        });
    }

    fn send(to: NodeId, message: Message, effects: &mut Vec<TwoPcEffect>) {
        effects.push(Effect::Send { to, message });
    }

    /// Starts a transaction: logs the epoch once per incarnation (so ids never repeat), then
    /// sends every participant its prepare.
    fn begin(
        &mut self,
        now: Time,
        request: RequestId,
        changes: BTreeMap<NodeId, Vec<crate::types::Change>>,
        effects: &mut Vec<TwoPcEffect>,
    ) {
        let reject = |reason, effects: &mut Vec<TwoPcEffect>| {
            effects.push(Effect::Reply {
                id: request,
                response: Response::Rejected(reason),
            });
        };
        if changes.is_empty() || changes.keys().any(|p| !self.participants.contains(p)) {
            return reject(RejectReason::BadParticipants, effects);
        }
        if self.voting.len() + self.committing.len() >= self.config.max_active {
            return reject(RejectReason::Busy, effects);
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
        let participants = sorted(changes.keys().copied());
        for (&to, changes) in &changes {
            let message = Message::Prepare {
                txn,
                changes: changes.clone(),
                participants: participants.clone(),
            };
            Self::send(to, message, effects);
        }
        let voting = Voting {
            request,
            participants,
            yes: BTreeSet::new(),
            deadline: now.saturating_add(self.config.vote_timeout),
        };
        self.voting.insert(txn, voting);
    }

    fn on_message(
        &mut self,
        now: Time,
        from: NodeId,
        message: Message,
        effects: &mut Vec<TwoPcEffect>,
    ) {
        match message {
            Message::Vote { txn, vote: Ok(()) } => self.on_yes(now, from, txn, effects),
            Message::Vote {
                txn,
                vote: Err(refusal),
            } => {
                if self.voting.contains_key(&txn) {
                    self.abort(txn, Some(refusal), effects);
                }
            }
            Message::Ack { txn } => self.on_ack(txn, from, effects),
            Message::Query { txn } => self.on_query(txn, from, effects),
            Message::Prepare { .. }
            | Message::Commit { .. }
            | Message::Abort { .. }
            | Message::Decision { .. } => {}
        }
    }

    fn on_yes(&mut self, now: Time, from: NodeId, txn: TxnId, effects: &mut Vec<TwoPcEffect>) {
        if let Some(voting) = self.voting.get_mut(&txn) {
            if voting.participants.contains(&from) {
                voting.yes.insert(from);
            }
            if voting.yes.len() == voting.participants.len() {
                self.commit(now, txn, effects);
            }
        } else if self.committing.contains_key(&txn) {
            Self::send(from, Message::Commit { txn }, effects);
        } else {
            // Decided abort, or forgotten after every acknowledgement (then the participant
            // has committed and ignores this): no record means abort.
            Self::send(from, Message::Abort { txn }, effects);
        }
    }

    /// Every vote is yes: log the decision (the barrier holds the commits and the client's
    /// reply until it is durable), then send it.
    fn commit(&mut self, now: Time, txn: TxnId, effects: &mut Vec<TwoPcEffect>) {
        let voting = self
            .voting
            .remove(&txn)
            .expect("committing a voting transaction");
        self.persist(
            Write::CommitDecided {
                txn,
                participants: voting.participants.clone(),
            },
            effects,
        );
        for &to in &voting.participants {
            Self::send(to, Message::Commit { txn }, effects);
        }
        effects.push(Effect::Reply {
            id: voting.request,
            response: Response::Committed(txn),
        });
        self.committed += 1;
        let committing = Committing {
            participants: voting.participants,
            acked: BTreeSet::new(),
            retry_at: now.saturating_add(self.config.retry_interval),
        };
        self.committing.insert(txn, committing);
    }

    /// Aborts a transaction still collecting votes. Nothing is logged (presumed abort).
    fn abort(&mut self, txn: TxnId, refusal: Option<Refusal>, effects: &mut Vec<TwoPcEffect>) {
        let voting = self
            .voting
            .remove(&txn)
            .expect("aborting a voting transaction");
        for &to in &voting.participants {
            Self::send(to, Message::Abort { txn }, effects);
        }
        effects.push(Effect::Reply {
            id: voting.request,
            response: Response::Aborted { txn, refusal },
        });
        self.aborted += 1;
    }

    fn on_ack(&mut self, txn: TxnId, from: NodeId, effects: &mut Vec<TwoPcEffect>) {
        let Some(committing) = self.committing.get_mut(&txn) else {
            return;
        };
        if committing.participants.contains(&from) {
            committing.acked.insert(from);
        }
        if committing.acked.len() == committing.participants.len() {
            self.committing.remove(&txn);
            self.persist(Write::Ended { txn }, effects);
        }
    }

    /// An in-doubt participant asks. Commit if a commit record exists; silence while votes are
    /// still being collected; otherwise abort (presumed abort: no record means abort).
    fn on_query(&mut self, txn: TxnId, from: NodeId, effects: &mut Vec<TwoPcEffect>) {
        let outcome = if self.committing.contains_key(&txn) {
            Outcome::Commit
        } else if self.voting.contains_key(&txn) {
            return;
        } else {
            Outcome::Abort
        };
        Self::send(from, Message::Decision { txn, outcome }, effects);
    }

    fn on_tick(&mut self, now: Time, effects: &mut Vec<TwoPcEffect>) {
        let expired: Vec<TxnId> = self
            .voting
            .iter()
            .filter(|(_, voting)| voting.deadline <= now)
            .map(|(&txn, _)| txn)
            .collect();
        for txn in expired {
            self.abort(txn, None, effects);
        }
        let retry_interval = self.config.retry_interval;
        for (&txn, committing) in &mut self.committing {
            if committing.retry_at > now {
                continue;
            }
            committing.retry_at = now.saturating_add(retry_interval);
            for &to in &committing.participants {
                if !committing.acked.contains(&to) {
                    Self::send(to, Message::Commit { txn }, effects);
                }
            }
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Time> {
        let voting = self.voting.values().map(|voting| voting.deadline);
        let committing = self.committing.values().map(|c| c.retry_at);
        voting.chain(committing).min()
    }

    pub(super) fn check_invariants(&self) -> Result<(), Violation> {
        let fail = |detail: String| Err(Violation::on_node("2pc-coordinator", self.id, detail));
        if let Some(txn) = self.voting.keys().find(|t| self.committing.contains_key(t)) {
            return fail(format!("{txn} is both voting and committing"));
        }
        for (txn, voting) in &self.voting {
            if !voting.yes.iter().all(|p| voting.participants.contains(p)) {
                return fail(format!("{txn} counts a yes vote from a non-participant"));
            }
            if voting.yes.len() >= voting.participants.len() {
                return fail(format!("{txn} has every vote but is undecided"));
            }
        }
        for (txn, committing) in &self.committing {
            if !committing
                .acked
                .iter()
                .all(|p| committing.participants.contains(p))
            {
                return fail(format!("{txn} counts an ack from a non-participant"));
            }
        }
        Ok(())
    }
}
