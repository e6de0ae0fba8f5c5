//! Two-phase commit with presumed abort (Gray, "Notes on Data Base Operating Systems", 1978;
//! Mohan, Lindsay and Obermarck, "Transaction Management in the R* Distributed Database
//! Management System", TODS 1986, §2–3 for presumed abort).
//!
//! One node is the coordinator ([`Config::coordinator`], node 0 by default); every other
//! member is a participant guarding a [`Ledger`](crate::Ledger) of accounts. A client asks
//! the coordinator for a transaction: a list of [`Change`]s per participant.
//!
//! | message | from → to | meaning |
//! |---|---|---|
//! | [`Message::Prepare`] | coordinator → participant | phase 1: "can you make these changes durable?" |
//! | [`Message::Vote`] | participant → coordinator | yes (prepared, durably) or no (with the reason) |
//! | [`Message::Commit`] | coordinator → participant | phase 2: the decision, after it is logged |
//! | [`Message::Abort`] | coordinator → participant | phase 2: the decision (never logged: presumed abort) |
//! | [`Message::Ack`] | participant → coordinator | the commit is durable here; the coordinator may forget |
//! | [`Message::Query`] | participant → coordinator, peers | "I am prepared and in doubt: what was decided?" |
//! | [`Message::Decision`] | coordinator or peer → participant | the answer to a query |
//!
//! **Durable state.** The coordinator logs a fresh epoch when it starts (transaction ids are
//! `(epoch, sequence)`), a commit record before it sends any [`Message::Commit`] (a barrier),
//! and an end record once every participant acknowledged (not a barrier). It logs nothing for
//! an abort: a transaction with no commit record *is* aborted (presumed abort), so a query
//! about a transaction the coordinator does not know is answered with abort. A participant
//! logs its prepared state (the changes and the other participants) before voting yes, and
//! its decision before acknowledging a commit. Aborts are not forced, except a *unilateral*
//! abort (below), which a promise to a peer depends on.
//!
//! **Timeouts and termination.** The coordinator aborts a transaction whose votes are not all
//! in after [`Config::vote_timeout`], and resends a commit to unacknowledged participants
//! every [`Config::retry_interval`]. A prepared participant in doubt for
//! [`Config::decision_timeout`] asks the coordinator *and the other participants*
//! (cooperative termination): a peer that knows the decision tells it; a peer that never
//! prepared aborts unilaterally (durably, then answers abort), so it will vote no if the
//! prepare arrives later; a peer in doubt stays silent. The participant asks again with a
//! doubling interval up to [`Config::query_interval_max`]. While the coordinator is down and
//! every participant is prepared, nobody can decide: 2PC blocks, but never splits.
//!
//! **Checked by** [`crate::Atomicity`] after every step.

mod coordinator;
mod participant;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use concord_core::time::MILLISECOND;
use concord_core::{Duration, Effect, Env, Input, Node, NodeId, NodeStatus, Rng, Time, Violation};

use crate::types::{Change, Ledger, Outcome, Refusal, TxnId};
use crate::{Stage, TxnNode};

pub use coordinator::Coordinator;
pub use participant::Participant;

/// Messages between the coordinator and the participants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Phase 1: prepare `changes`; `participants` are everyone in the transaction (for
    /// cooperative termination).
    Prepare {
        /// The transaction.
        txn: TxnId,
        /// This participant's changes.
        changes: Vec<Change>,
        /// Every participant of the transaction.
        participants: Vec<NodeId>,
    },
    /// A participant's vote.
    Vote {
        /// The transaction.
        txn: TxnId,
        /// `Ok` for yes (prepared durably), `Err` for no.
        vote: Result<(), Refusal>,
    },
    /// Phase 2: commit (the coordinator logged the decision).
    Commit {
        /// The transaction.
        txn: TxnId,
    },
    /// Phase 2: abort.
    Abort {
        /// The transaction.
        txn: TxnId,
    },
    /// The participant's commit is durable.
    Ack {
        /// The transaction.
        txn: TxnId,
    },
    /// An in-doubt participant asks what was decided.
    Query {
        /// The transaction.
        txn: TxnId,
    },
    /// The answer to a query.
    Decision {
        /// The transaction.
        txn: TxnId,
        /// What was decided.
        outcome: Outcome,
    },
}

/// A client request to the coordinator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Run one transaction: the changes each participant makes.
    Transaction(BTreeMap<NodeId, Vec<Change>>),
}

/// A reply to a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The transaction committed (its commit record is durable).
    Committed(TxnId),
    /// The transaction aborted.
    Aborted {
        /// The transaction.
        txn: TxnId,
        /// Why, when a participant said no; `None` after a timeout.
        refusal: Option<Refusal>,
    },
    /// The request was refused before a transaction began.
    Rejected(RejectReason),
}

/// Why the coordinator refused to begin a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// The node asked is not the coordinator.
    NotCoordinator,
    /// [`Config::max_active`] transactions are already in progress.
    Busy,
    /// The request names no participant, or a node that is not a participant.
    BadParticipants,
}

/// A durable mutation of a coordinator's or a participant's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    /// Coordinator: a new incarnation began.
    Epoch(u64),
    /// Coordinator: the decision to commit (forced before any commit message).
    CommitDecided {
        /// The transaction.
        txn: TxnId,
        /// Its participants, to finish phase 2 after a restart.
        participants: Vec<NodeId>,
    },
    /// Coordinator: every participant acknowledged; the transaction can be forgotten.
    Ended {
        /// The transaction.
        txn: TxnId,
    },
    /// Participant: prepared, holding its locks (forced before voting yes).
    Prepared {
        /// The transaction.
        txn: TxnId,
        /// The changes to make on commit.
        changes: Vec<Change>,
        /// Every participant (whom to ask in doubt).
        participants: Vec<NodeId>,
    },
    /// Participant: the transaction is decided here (a commit applies the prepared changes).
    Decided {
        /// The transaction.
        txn: TxnId,
        /// The decision.
        outcome: Outcome,
    },
    /// Participant: aborted on its own before preparing, because a peer asked (forced: the
    /// peer relies on it).
    Refused {
        /// The transaction.
        txn: TxnId,
    },
}

/// A prepared transaction as a participant keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedTxn {
    /// The changes to make on commit.
    pub changes: Vec<Change>,
    /// Every participant of the transaction.
    pub participants: Vec<NodeId>,
}

/// What all confirmed writes add up to. A node uses its role's half.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage {
    /// Coordinator: the newest epoch logged.
    pub epoch: u64,
    /// Coordinator: transactions decided commit and not yet ended, with their participants.
    pub commits: BTreeMap<TxnId, Vec<NodeId>>,
    /// Participant: prepared transactions not yet decided.
    pub prepared: BTreeMap<TxnId, PreparedTxn>,
    /// Participant: decided transactions.
    pub decided: BTreeMap<TxnId, Outcome>,
    /// Participant: the net committed change of every account changed.
    pub committed: BTreeMap<crate::types::Account, i64>,
}

impl Storage {
    /// Adds one confirmed write.
    pub fn apply(&mut self, write: &Write) {
        match write {
            Write::Epoch(epoch) => self.epoch = self.epoch.max(*epoch),
            Write::CommitDecided { txn, participants } => {
                self.commits.insert(*txn, participants.clone());
            }
            Write::Ended { txn } => {
                self.commits.remove(txn);
            }
            Write::Prepared {
                txn,
                changes,
                participants,
            } => {
                self.prepared.insert(
                    *txn,
                    PreparedTxn {
                        changes: changes.clone(),
                        participants: participants.clone(),
                    },
                );
            }
            Write::Decided { txn, outcome } => {
                let prepared = self.prepared.remove(txn);
                if let (Outcome::Commit, Some(prepared)) = (outcome, prepared) {
                    for change in &prepared.changes {
                        *self.committed.entry(change.account).or_default() += change.delta;
                    }
                }
                self.decided.insert(*txn, *outcome);
            }
            Write::Refused { txn } => {
                self.decided.insert(*txn, Outcome::Abort);
            }
        }
    }
}

/// Timing and limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The coordinator's node id; every other member is a participant.
    pub coordinator: NodeId,
    /// Every account's opening balance at every participant.
    pub initial_balance: i64,
    /// How long the coordinator waits for all votes before aborting.
    pub vote_timeout: Duration,
    /// How often the coordinator resends a commit to participants that have not acknowledged.
    pub retry_interval: Duration,
    /// How long a prepared participant waits for the decision before asking.
    pub decision_timeout: Duration,
    /// The longest interval between an in-doubt participant's queries (they double up to it).
    pub query_interval_max: Duration,
    /// The most transactions the coordinator runs at once; more are rejected.
    pub max_active: usize,
    /// Whether an in-doubt participant also asks the other participants (cooperative
    /// termination), not only the coordinator.
    pub cooperative_termination: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            coordinator: 0,
            initial_balance: 1_000,
            vote_timeout: 50 * MILLISECOND,
            retry_interval: 20 * MILLISECOND,
            decision_timeout: 100 * MILLISECOND,
            query_interval_max: 400 * MILLISECOND,
            max_active: 1024,
            cooperative_termination: true,
        }
    }
}

/// The effect type of a 2PC node.
pub type TwoPcEffect = Effect<Message, Write, TxnId, Response>;

/// A two-phase-commit node: the coordinator or a participant, by its id.
#[derive(Clone, Debug)]
pub enum TwoPhaseCommit {
    /// The coordinator.
    Coordinator(Coordinator),
    /// A participant.
    Participant(Participant),
}

impl TwoPhaseCommit {
    /// The coordinator's state, if this node is the coordinator.
    pub fn as_coordinator(&self) -> Option<&Coordinator> {
        match self {
            TwoPhaseCommit::Coordinator(coordinator) => Some(coordinator),
            TwoPhaseCommit::Participant(_) => None,
        }
    }

    /// The participant's state, if this node is a participant.
    pub fn as_participant(&self) -> Option<&Participant> {
        match self {
            TwoPhaseCommit::Coordinator(_) => None,
            TwoPhaseCommit::Participant(participant) => Some(participant),
        }
    }
}

impl Node for TwoPhaseCommit {
    type Message = Message;
    type Request = Request;
    type Response = Response;
    type Write = Write;
    type Storage = Storage;
    type Command = TxnId;
    type Config = Config;

    fn restore(
        id: NodeId,
        members: &[NodeId],
        config: &Config,
        storage: &Storage,
        now: Time,
        _rng: &mut Rng,
    ) -> Self {
        let participants: Vec<NodeId> = members
            .iter()
            .copied()
            .filter(|&member| member != config.coordinator)
            .collect();
        if id == config.coordinator {
            TwoPhaseCommit::Coordinator(Coordinator::restore(
                id,
                participants,
                config,
                storage,
                now,
            ))
        } else {
            TwoPhaseCommit::Participant(Participant::restore(id, config, storage, now))
        }
    }

    fn apply_write(storage: &mut Storage, write: &Write) {
        storage.apply(write);
    }

    fn is_barrier(write: &Write) -> bool {
        match write {
            Write::Epoch(_)
            | Write::CommitDecided { .. }
            | Write::Prepared { .. }
            | Write::Refused { .. } => true,
            Write::Decided { outcome, .. } => *outcome == Outcome::Commit,
            Write::Ended { .. } => false,
        }
    }

    fn step(
        &mut self,
        env: &mut Env<'_>,
        input: Input<Message, Request>,
        effects: &mut Vec<TwoPcEffect>,
    ) {
        match self {
            TwoPhaseCommit::Coordinator(coordinator) => coordinator.step(env.now, input, effects),
            TwoPhaseCommit::Participant(participant) => participant.step(env.now, input, effects),
        }
    }

    fn next_deadline(&self) -> Option<Time> {
        match self {
            TwoPhaseCommit::Coordinator(coordinator) => coordinator.next_deadline(),
            TwoPhaseCommit::Participant(participant) => participant.next_deadline(),
        }
    }

    fn status(&self) -> NodeStatus {
        let mut status = NodeStatus::down(self.id());
        match self {
            TwoPhaseCommit::Coordinator(coordinator) => {
                status.role = concord_core::Role::Leader;
                status.leader = Some(coordinator.id());
                status.term = coordinator.epoch();
                status.commit_index = coordinator.committed_count();
            }
            TwoPhaseCommit::Participant(participant) => {
                status.role = concord_core::Role::Follower;
                status.commit_index = participant.decided().len() as u64;
            }
        }
        status
    }

    fn check_invariants(&self) -> Result<(), Violation> {
        match self {
            TwoPhaseCommit::Coordinator(coordinator) => coordinator.check_invariants(),
            TwoPhaseCommit::Participant(participant) => participant.check_invariants(),
        }
    }

    fn id(&self) -> NodeId {
        match self {
            TwoPhaseCommit::Coordinator(coordinator) => coordinator.id(),
            TwoPhaseCommit::Participant(participant) => participant.id(),
        }
    }

    fn election_timeout(config: &Config) -> Duration {
        config.decision_timeout
    }
}

impl TxnNode for TwoPhaseCommit {
    fn participant_decision(write: &Write) -> Option<(TxnId, Outcome)> {
        match write {
            Write::Decided { txn, outcome } => Some((*txn, *outcome)),
            Write::Refused { txn } => Some((*txn, Outcome::Abort)),
            _ => None,
        }
    }

    fn decided(&self) -> Option<&BTreeMap<TxnId, Outcome>> {
        self.as_participant().map(Participant::decided)
    }

    fn in_doubt(&self) -> Vec<TxnId> {
        self.as_participant()
            .map(|participant| participant.in_doubt().collect())
            .unwrap_or_default()
    }

    fn ledger(&self) -> Option<&Ledger> {
        self.as_participant().map(Participant::ledger)
    }

    fn stage(&self, txn: TxnId) -> Stage {
        match self {
            TwoPhaseCommit::Coordinator(coordinator) => coordinator.stage(txn),
            TwoPhaseCommit::Participant(participant) => participant.stage(txn),
        }
    }
}

/// The participants of `txn` that `ids` names, sorted and without duplicates.
pub(crate) fn sorted(ids: impl IntoIterator<Item = NodeId>) -> Vec<NodeId> {
    ids.into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

impl crate::scenario::CommitProtocol for TwoPhaseCommit {
    const NAME: &'static str = "2pc";

    fn scenario_config() -> Config {
        Config::default()
    }

    fn transaction(changes: BTreeMap<NodeId, Vec<Change>>) -> Request {
        Request::Transaction(changes)
    }

    fn reply_outcome(response: &Response) -> Option<Outcome> {
        match response {
            Response::Committed(_) => Some(Outcome::Commit),
            Response::Aborted { .. } => Some(Outcome::Abort),
            Response::Rejected(_) => None,
        }
    }
}
