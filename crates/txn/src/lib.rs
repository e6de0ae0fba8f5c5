//! Distributed transactions on the `concord-core` contract, and what each protocol does
//! wrong under partitions.
//!
//! * [`twopc`]: two-phase commit with presumed abort, a durable decision log, in-doubt
//!   participants that ask the coordinator and (cooperatively) each other, timeouts and
//!   recovery. Blocks while the coordinator is unreachable; never splits.
//! * [`threepc`]: three-phase commit with Skeen's states (q, w, p, c, a), timeouts and the
//!   termination protocol. Non-blocking when sites only crash; a partition can make one side
//!   commit and the other abort, which [`Atomicity`] catches.
//! * [`saga`]: an orchestrator running steps and their compensations in reverse, with retries,
//!   backoff, idempotency keys, a durable saga log, and services guarded by a sub-transaction
//!   barrier (duplicates, null compensations, hanging actions), checked by [`SagaOutcomes`].
//! * [`scenario`]: each protocol in `concord-sim` with crashes, partitions and loss drawn from
//!   a seed, and the checkers' verdict (what `concord txn` prints).
//!
//! Nothing here reads a clock or a global random generator; durable state leaves as
//! `Effect::Persist` barriers, so a vote, a decision or a saga step is durable before the
//! message that depends on it is sent.
#![deny(missing_docs)]
// A simulator `Failure` is the terminal outcome of a run, carried once: its size does not matter.
#![allow(clippy::result_large_err)]

mod atomicity;
pub mod saga;
pub mod scenario;
pub mod threepc;
pub mod twopc;
mod types;

use std::collections::BTreeMap;

use concord_core::Node;

pub use atomicity::Atomicity;
pub use saga::SagaOutcomes;
pub use types::{Account, Change, Ledger, Outcome, Refusal, TxnId};

/// A node of an atomic commitment protocol, as the checkers see it.
pub trait TxnNode: Node {
    /// The decision a participant's write records, if it records one: the checker reads
    /// decisions off the writes a step emits, so a crashed participant's are remembered.
    fn participant_decision(write: &Self::Write) -> Option<(TxnId, Outcome)>;

    /// Every transaction this node (a participant) decided; `None` for a coordinator.
    fn decided(&self) -> Option<&BTreeMap<TxnId, Outcome>>;

    /// Transactions this participant has voted yes for and not yet learned the outcome of.
    fn in_doubt(&self) -> Vec<TxnId>;

    /// The participant's balances; `None` for a coordinator.
    fn ledger(&self) -> Option<&Ledger>;

    /// How far this node (coordinator or participant) got with `txn`.
    fn stage(&self, txn: TxnId) -> Stage;
}

/// How far a node got with one transaction, in the order the protocols move.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Nothing known (a participant that has not voted; a coordinator that forgot it).
    Unknown,
    /// Voting: a participant voted yes and is uncertain (Skeen's *w*); the coordinator
    /// collects votes.
    Voted,
    /// Three-phase commit only: pre-committed (Skeen's *p*), at a participant or the
    /// coordinator.
    PreCommitted,
    /// Decided.
    Decided(Outcome),
}
