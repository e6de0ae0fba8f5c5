//! The vocabulary the transaction protocols share: transaction ids, outcomes, and the small
//! account ledger each participant guards.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Names one global transaction (or saga).
///
/// A coordinator numbers its transactions within an *epoch*: it persists a fresh epoch each
/// time it starts, so ids stay unique across its crashes without a durable write per
/// transaction (which presumed abort does not otherwise need before the decision).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxnId {
    /// The coordinator's incarnation that began the transaction.
    pub epoch: u64,
    /// The transaction's number within the epoch, from 1.
    pub sequence: u64,
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}.{}", self.epoch, self.sequence)
    }
}

/// What a transaction came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every participant makes its changes durable.
    Commit,
    /// No participant keeps any change.
    Abort,
}

impl Outcome {
    /// The outcome's name as shown in reports.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Commit => "commit",
            Outcome::Abort => "abort",
        }
    }
}

/// Identifies an account within one participant.
pub type Account = u64;

/// One change a transaction makes at one participant: add `delta` to `account`'s balance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Change {
    /// The account.
    pub account: Account,
    /// The amount added (negative for a debit).
    pub delta: i64,
}

/// Why a participant refuses to prepare (votes no).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Refusal {
    /// A debit would take an account below zero.
    InsufficientFunds,
    /// An account is locked by another prepared transaction (no-wait locking: refusing
    /// instead of waiting rules out distributed deadlocks).
    Locked,
    /// The transaction was already aborted here (this participant answered a peer's query
    /// before the prepare arrived, or the coordinator's abort overtook it).
    AlreadyAborted,
}

/// A participant's accounts: balances start at `initial` and move by committed changes.
///
/// Invariant: no balance is ever below zero.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Balance of every account that was ever changed; others hold the initial balance.
    balances: BTreeMap<Account, i64>,
    /// The balance of an account never changed.
    initial: i64,
}

impl Ledger {
    /// A ledger where every account starts at `initial`.
    pub fn new(initial: i64) -> Self {
        Ledger {
            balances: BTreeMap::new(),
            initial,
        }
    }

    /// A ledger where every account starts at `initial`, then moved by the net `committed`
    /// change of each account (what a participant's durable storage keeps).
    pub fn with_committed(initial: i64, committed: &BTreeMap<Account, i64>) -> Self {
        let mut ledger = Ledger::new(initial);
        let changes: Vec<Change> = committed
            .iter()
            .map(|(&account, &delta)| Change { account, delta })
            .collect();
        ledger.apply(&changes);
        ledger
    }

    /// The balance of `account`.
    pub fn balance(&self, account: Account) -> i64 {
        self.balances.get(&account).copied().unwrap_or(self.initial)
    }

    /// Whether applying `changes` keeps every balance at or above zero.
    pub fn can_apply(&self, changes: &[Change]) -> bool {
        let mut after: BTreeMap<Account, i64> = BTreeMap::new();
        for change in changes {
            let balance = after
                .entry(change.account)
                .or_insert_with(|| self.balance(change.account));
            *balance = balance.saturating_add(change.delta);
        }
        after.values().all(|&balance| balance >= 0)
    }

    /// Applies `changes`.
    pub fn apply(&mut self, changes: &[Change]) {
        for change in changes {
            let balance = self.balance(change.account).saturating_add(change.delta);
            self.balances.insert(change.account, balance);
        }
    }

    /// Undoes `changes` (a saga's compensation).
    pub fn undo(&mut self, changes: &[Change]) {
        for change in changes {
            let balance = self.balance(change.account).saturating_sub(change.delta);
            self.balances.insert(change.account, balance);
        }
    }

    /// The sum of the changed balances' differences from the initial balance: zero while
    /// money is only moved, never created or destroyed.
    pub fn net_change(&self) -> i64 {
        self.balances
            .values()
            .map(|&balance| balance - self.initial)
            .sum()
    }

    /// The lowest balance of any changed account.
    pub fn lowest(&self) -> i64 {
        self.balances
            .values()
            .copied()
            .min()
            .unwrap_or(self.initial)
    }
}
