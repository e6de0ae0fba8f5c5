//! Three-phase commit (Skeen, "Nonblocking Commit Protocols", SIGMOD 1981; Skeen and
//! Stonebraker, "A Formal Model of Crash Recovery in a Distributed System", 1983; the
//! termination protocol as in Bernstein, Hadzilacos and Goodman, *Concurrency Control and
//! Recovery in Database Systems*, 1987, §7.5).
//!
//! Skeen's local states: *q* (initial), *w* (voted yes, uncertain), *p* (pre-committed),
//! *c* (committed), *a* (aborted). No state is adjacent to both *c* and *a*, and no
//! uncertain state is adjacent to *c*: that is what lets operational sites decide without the
//! coordinator.
//!
//! | message | from → to | meaning |
//! |---|---|---|
//! | [`Message::Prepare`] | coordinator → participant | phase 1 (can-commit) |
//! | [`Message::Vote`] | participant → coordinator | yes (now in *w*, durably) or no |
//! | [`Message::PreCommit`] | coordinator or backup → participant | phase 2: move to *p* |
//! | [`Message::PreCommitAck`] | participant → coordinator or backup | in *p*, durably |
//! | [`Message::Decision`] | anyone → participant | phase 3: commit, or abort |
//! | [`Message::StateRequest`] | backup → participants, coordinator | termination: "what is your state?" |
//! | [`Message::StateReport`] | participant → backup | *w*, *p*, *c*, *a*, or "recovering" |
//! | [`Message::TerminationNeeded`] | participant → its backup candidate | "run the termination protocol" |
//! | [`Message::DecisionRequest`] | recovering site → everyone | "what was decided?" |
//!
//! **Coordinator.** Collects votes (a no, or a missing vote after [`Config::vote_timeout`]:
//! abort); with every yes sends pre-commits; once all acknowledged, *or after
//! [`Config::ack_timeout`], treating the silent as failed* (Skeen's rule), logs commit and
//! sends it. Decisions are logged before they are sent. A coordinator that restarts before
//! deciding knows nothing and decides nothing: the participants terminate without it.
//!
//! **Termination protocol.** A participant in *w* past [`Config::uncertain_timeout`], or in
//! *p* past [`Config::precommitted_timeout`], turns to its backup candidate: the lowest-id
//! participant it does not suspect. If that is itself it becomes the backup: it asks every
//! participant's state (a round numbered above any it has seen), waits
//! [`Config::report_timeout`], and applies Skeen's rule to the states of the sites that
//! answered (crashed ones are taken as failed): any *c* → commit; any *a* → abort; any *p* →
//! move to *p* itself, pre-commit the uncertain ones, wait for their acks, commit; all *w* →
//! abort. Otherwise it asks the candidate to terminate and suspects it if nothing comes within
//! [`Config::election_timeout`]. A participant that never voted and is asked aborts on its
//! own (durably) and says so.
//!
//! **Recovery.** A participant restored in *w* or *p* is *recovering*: it takes no part in
//! termination (it reports "recovering", which backups ignore) and asks everyone for the
//! decision until someone tells it. If every site failed, recovering sites block.
//!
//! **Assumptions, and what breaks them.** The rule is safe only if a site that is silent has
//! really failed — a synchronous network that neither loses messages nor splits. A partition
//! makes each side take the other for failed: the side with a *p* commits and the side of
//! uncertain sites aborts. [`crate::Atomicity`] reports it; see `scenario`.

mod coordinator;
mod participant;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use concord_core::time::MILLISECOND;
use concord_core::{Duration, Effect, Env, Input, Node, NodeId, NodeStatus, Rng, Time, Violation};

use crate::types::{Account, Change, Ledger, Outcome, Refusal, TxnId};
use crate::{Stage, TxnNode};

pub use coordinator::Coordinator;
pub use participant::Participant;

/// A termination round: a number, then the backup's id, so two backups never share one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Round {
    /// The round number; the coordinator's own pre-commit is round 0.
    pub number: u64,
    /// The node running the round.
    pub backup: NodeId,
}

/// A participant's state as it reports it to a backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reported {
    /// *w*: voted yes, uncertain.
    Uncertain,
    /// *p*: pre-committed.
    PreCommitted,
    /// *c* or *a*.
    Decided(Outcome),
    /// Restored after a crash while undecided: takes no part in termination.
    Recovering,
}

/// Messages of three-phase commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Phase 1.
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
        /// Yes, or no with the reason.
        vote: Result<(), Refusal>,
    },
    /// Phase 2: move to *p*.
    PreCommit {
        /// The transaction.
        txn: TxnId,
        /// Round 0 from the coordinator; a termination round from a backup.
        round: Round,
    },
    /// In *p*, durably.
    PreCommitAck {
        /// The transaction.
        txn: TxnId,
        /// The round acknowledged.
        round: Round,
    },
    /// Phase 3, a termination decision, or an answer to a decision request.
    Decision {
        /// The transaction.
        txn: TxnId,
        /// What was decided.
        outcome: Outcome,
    },
    /// Termination: the backup asks for states.
    StateRequest {
        /// The transaction.
        txn: TxnId,
        /// The backup's round.
        round: Round,
    },
    /// Termination: a participant's state.
    StateReport {
        /// The transaction.
        txn: TxnId,
        /// The round answered.
        round: Round,
        /// The state.
        state: Reported,
    },
    /// A participant asks its backup candidate to run the termination protocol.
    TerminationNeeded {
        /// The transaction.
        txn: TxnId,
    },
    /// A recovering site asks for the decision.
    DecisionRequest {
        /// The transaction.
        txn: TxnId,
    },
}

/// A client request (as in 2PC).
pub type Request = crate::twopc::Request;
/// A reply to a client (as in 2PC).
pub type Response = crate::twopc::Response;

/// A durable mutation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    /// Coordinator: a new incarnation began.
    Epoch(u64),
    /// Coordinator: the decision (forced before it is sent).
    CoordinatorDecided {
        /// The transaction.
        txn: TxnId,
        /// The decision.
        outcome: Outcome,
        /// Its participants.
        participants: Vec<NodeId>,
    },
    /// Participant: *w* (forced before voting yes).
    Prepared {
        /// The transaction.
        txn: TxnId,
        /// The changes to make on commit.
        changes: Vec<Change>,
        /// Every participant.
        participants: Vec<NodeId>,
    },
    /// Participant: *p* (forced before acknowledging).
    PreCommitted {
        /// The transaction.
        txn: TxnId,
    },
    /// Participant: *c* or *a*.
    Decided {
        /// The transaction.
        txn: TxnId,
        /// The decision.
        outcome: Outcome,
    },
}

/// An undecided transaction in a participant's durable state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurablePrepared {
    /// The changes to make on commit.
    pub changes: Vec<Change>,
    /// Every participant.
    pub participants: Vec<NodeId>,
    /// Whether it reached *p*.
    pub precommitted: bool,
}

/// What all confirmed writes add up to; a node uses its role's part.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage {
    /// Coordinator: the newest epoch.
    pub epoch: u64,
    /// Coordinator: its decisions, with the participants.
    pub decisions: BTreeMap<TxnId, (Outcome, Vec<NodeId>)>,
    /// Participant: undecided transactions (*w* or *p*).
    pub prepared: BTreeMap<TxnId, DurablePrepared>,
    /// Participant: decisions.
    pub decided: BTreeMap<TxnId, Outcome>,
    /// Participant: the net committed change of every account changed.
    pub committed: BTreeMap<Account, i64>,
}

impl Storage {
    /// Adds one confirmed write.
    pub fn apply(&mut self, write: &Write) {
        match write {
            Write::Epoch(epoch) => self.epoch = self.epoch.max(*epoch),
            Write::CoordinatorDecided {
                txn,
                outcome,
                participants,
            } => {
                self.decisions
                    .insert(*txn, (*outcome, participants.clone()));
            }
            Write::Prepared {
                txn,
                changes,
                participants,
            } => {
                let prepared = DurablePrepared {
                    changes: changes.clone(),
                    participants: participants.clone(),
                    precommitted: false,
                };
                self.prepared.insert(*txn, prepared);
            }
            Write::PreCommitted { txn } => {
                if let Some(prepared) = self.prepared.get_mut(txn) {
                    prepared.precommitted = true;
                }
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
        }
    }
}

/// Timing and limits. The termination protocol is safe only if a participant's timeouts
/// outlast the coordinator's phases ([`Config::validate`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The coordinator's node id; every other member is a participant.
    pub coordinator: NodeId,
    /// Every account's opening balance.
    pub initial_balance: i64,
    /// The coordinator aborts if the votes are not all in by then.
    pub vote_timeout: Duration,
    /// The coordinator commits this long after its pre-commits even without every ack.
    pub ack_timeout: Duration,
    /// A participant in *w* starts termination after this long without news.
    pub uncertain_timeout: Duration,
    /// A participant in *p* starts termination after this long without the decision.
    pub precommitted_timeout: Duration,
    /// A backup waits this long for state reports, and for acks of its pre-commits.
    pub report_timeout: Duration,
    /// A participant suspects its backup candidate after this long without a round from it.
    pub election_timeout: Duration,
    /// How often a recovering site asks for the decision (doubling up to 8 times this).
    pub retry_interval: Duration,
    /// The most transactions the coordinator runs at once.
    pub max_active: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            coordinator: 0,
            initial_balance: 1_000,
            vote_timeout: 50 * MILLISECOND,
            ack_timeout: 50 * MILLISECOND,
            uncertain_timeout: 300 * MILLISECOND,
            precommitted_timeout: 200 * MILLISECOND,
            report_timeout: 30 * MILLISECOND,
            election_timeout: 100 * MILLISECOND,
            retry_interval: 20 * MILLISECOND,
            max_active: 1024,
        }
    }
}

/// A timeout setting that makes the termination protocol unsafe even without partitions.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("3PC timeouts: {0}")]
pub struct ConfigError(pub &'static str);

impl Config {
    /// Checks that participants wait out the coordinator: a participant in *w* must not start
    /// termination while the coordinator may still pre-commit or commit, nor one in *p* while
    /// it may still commit.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let phases = self.vote_timeout + self.ack_timeout;
        if self.uncertain_timeout <= 2 * phases {
            return Err(ConfigError(
                "uncertain_timeout must exceed twice vote_timeout + ack_timeout",
            ));
        }
        if self.precommitted_timeout <= 2 * self.ack_timeout {
            return Err(ConfigError(
                "precommitted_timeout must exceed twice ack_timeout",
            ));
        }
        if self.max_active == 0 {
            return Err(ConfigError("max_active must be at least 1"));
        }
        Ok(())
    }
}

/// The effect type of a 3PC node.
pub type ThreePcEffect = Effect<Message, Write, TxnId, Response>;

/// A three-phase-commit node: the coordinator or a participant, by its id.
#[derive(Clone, Debug)]
pub enum ThreePhaseCommit {
    /// The coordinator.
    Coordinator(Coordinator),
    /// A participant.
    Participant(Participant),
}

impl ThreePhaseCommit {
    /// The coordinator's state, if this node is the coordinator.
    pub fn as_coordinator(&self) -> Option<&Coordinator> {
        match self {
            ThreePhaseCommit::Coordinator(coordinator) => Some(coordinator),
            ThreePhaseCommit::Participant(_) => None,
        }
    }

    /// The participant's state, if this node is a participant.
    pub fn as_participant(&self) -> Option<&Participant> {
        match self {
            ThreePhaseCommit::Coordinator(_) => None,
            ThreePhaseCommit::Participant(participant) => Some(participant),
        }
    }
}

impl Node for ThreePhaseCommit {
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
            ThreePhaseCommit::Coordinator(Coordinator::restore(
                id,
                participants,
                config,
                storage,
                now,
            ))
        } else {
            ThreePhaseCommit::Participant(Participant::restore(id, config, storage, now))
        }
    }

    fn apply_write(storage: &mut Storage, write: &Write) {
        storage.apply(write);
    }

    fn step(
        &mut self,
        env: &mut Env<'_>,
        input: Input<Message, Request>,
        effects: &mut Vec<ThreePcEffect>,
    ) {
        match self {
            ThreePhaseCommit::Coordinator(coordinator) => coordinator.step(env.now, input, effects),
            ThreePhaseCommit::Participant(participant) => participant.step(env.now, input, effects),
        }
    }

    fn next_deadline(&self) -> Option<Time> {
        match self {
            ThreePhaseCommit::Coordinator(coordinator) => coordinator.next_deadline(),
            ThreePhaseCommit::Participant(participant) => participant.next_deadline(),
        }
    }

    fn status(&self) -> NodeStatus {
        let mut status = NodeStatus::down(self.id());
        status.role = match self {
            ThreePhaseCommit::Coordinator(_) => concord_core::Role::Leader,
            ThreePhaseCommit::Participant(_) => concord_core::Role::Follower,
        };
        status
    }

    fn check_invariants(&self) -> Result<(), Violation> {
        match self {
            ThreePhaseCommit::Coordinator(coordinator) => coordinator.check_invariants(),
            ThreePhaseCommit::Participant(participant) => participant.check_invariants(),
        }
    }

    fn id(&self) -> NodeId {
        match self {
            ThreePhaseCommit::Coordinator(coordinator) => coordinator.id(),
            ThreePhaseCommit::Participant(participant) => participant.id(),
        }
    }

    fn election_timeout(config: &Config) -> Duration {
        config.uncertain_timeout
    }
}

impl TxnNode for ThreePhaseCommit {
    fn participant_decision(write: &Write) -> Option<(TxnId, Outcome)> {
        match write {
            Write::Decided { txn, outcome } => Some((*txn, *outcome)),
            _ => None,
        }
    }

    fn decided(&self) -> Option<&BTreeMap<TxnId, Outcome>> {
        self.as_participant().map(Participant::decided)
    }

    fn in_doubt(&self) -> Vec<TxnId> {
        self.as_participant()
            .map(|participant| participant.undecided().collect())
            .unwrap_or_default()
    }

    fn ledger(&self) -> Option<&Ledger> {
        self.as_participant().map(Participant::ledger)
    }

    fn stage(&self, txn: TxnId) -> Stage {
        match self {
            ThreePhaseCommit::Coordinator(coordinator) => coordinator.stage(txn),
            ThreePhaseCommit::Participant(participant) => participant.stage(txn),
        }
    }
}

impl crate::scenario::CommitProtocol for ThreePhaseCommit {
    const NAME: &'static str = "3pc";

    fn scenario_config() -> Config {
        Config::default()
    }

    fn transaction(changes: BTreeMap<NodeId, Vec<Change>>) -> Request {
        Request::Transaction(changes)
    }

    fn reply_outcome(response: &Response) -> Option<Outcome> {
        <crate::twopc::TwoPhaseCommit as crate::scenario::CommitProtocol>::reply_outcome(response)
    }
}
