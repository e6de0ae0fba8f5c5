//! Single-decree Paxos (Lamport, "Paxos Made Simple", 2001): one value is chosen, once.
//!
//! [`SinglePaxos`] plays all three roles of the paper in one node: proposer, acceptor and
//! learner. Ballots are (round, node id) pairs ([`crate::Ballot`]).
//!
//! | message | from → to | meaning (paper §2.2–2.3) |
//! |---|---|---|
//! | [`Message::Prepare`] | proposer → acceptors | phase 1a: "promise to ignore ballots below `ballot`" |
//! | [`Message::Promise`] | acceptor → proposer | phase 1b: the promise, with the highest proposal it accepted |
//! | [`Message::Accept`] | proposer → acceptors | phase 2a: "accept `value` at `ballot`" |
//! | [`Message::Accepted`] | acceptor → proposer | phase 2b: accepted |
//! | [`Message::Rejected`] | acceptor → proposer | preemption: the acceptor promised a higher ballot |
//! | [`Message::Decided`] | proposer (or any learner) → all | the chosen value, for learners |
//!
//! Durable state ([`Storage`]): the highest promise, the accepted proposal and the learned
//! value. An acceptor persists a promise or an acceptance before answering (the persist
//! barrier of `concord_core::node` holds the answer until the write is durable), so a crashed
//! and restored acceptor keeps its word. A proposer promises its own ballot first, which also
//! makes every ballot it ever uses durable: after a restart it picks a higher round.
//!
//! A proposer that learns of a higher ballot (a [`Message::Rejected`]) or whose phase times
//! out backs off for a random time drawn from `Env::rng`, growing with each attempt, then
//! retries with a higher ballot — the usual liveness remedy for duelling proposers (§2.4).
//!
//! Safety is checked by [`AtMostOneChosen`] (the paper's safety requirement: "only a single
//! value is chosen"; and [`OnlyProposedChosen`]: "only a value that has been proposed may be
//! chosen").

mod invariant;
mod node;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use concord_core::time::MILLISECOND;
use concord_core::Duration;

use crate::Ballot;

pub use invariant::{AtMostOneChosen, OnlyProposedChosen};
pub use node::SinglePaxos;

/// A value proposed at a ballot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal<V> {
    /// The ballot it was proposed at.
    pub ballot: Ballot,
    /// The value.
    pub value: V,
}

/// Messages between single-decree Paxos nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<V> {
    /// Phase 1a.
    Prepare {
        /// The proposer's ballot.
        ballot: Ballot,
    },
    /// Phase 1b: a promise to accept nothing below `ballot`.
    Promise {
        /// The ballot promised.
        ballot: Ballot,
        /// The highest-ballot proposal this acceptor accepted, if any.
        accepted: Option<Proposal<V>>,
    },
    /// Phase 2a.
    Accept {
        /// The proposal to accept.
        proposal: Proposal<V>,
    },
    /// Phase 2b.
    Accepted {
        /// The ballot accepted.
        ballot: Ballot,
    },
    /// The acceptor has promised a higher ballot than the one asked for.
    Rejected {
        /// The ballot refused.
        ballot: Ballot,
        /// The acceptor's promise.
        promised: Ballot,
    },
    /// The chosen value.
    Decided {
        /// The value.
        value: V,
    },
}

/// A client request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<V> {
    /// Propose `value`; answered with the value actually chosen (maybe another one).
    Propose(V),
}

/// A reply to a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response<V> {
    /// The chosen value.
    Decided(V),
}

/// A durable mutation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write<V> {
    /// Promise `ballot` (phase 1b; also a proposer's own ballot).
    Promise(Ballot),
    /// Accept a proposal (phase 2b); implies promising its ballot.
    Accept(Proposal<V>),
    /// The value is chosen.
    Decided(V),
}

/// The durable state: what all confirmed writes add up to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage<V> {
    /// The highest ballot promised.
    pub promised: Option<Ballot>,
    /// The highest-ballot proposal accepted.
    pub accepted: Option<Proposal<V>>,
    /// The chosen value, once learned.
    pub decided: Option<V>,
}

impl<V> Default for Storage<V> {
    fn default() -> Self {
        Storage {
            promised: None,
            accepted: None,
            decided: None,
        }
    }
}

impl<V: Clone> Storage<V> {
    /// Adds one confirmed write.
    pub fn apply(&mut self, write: &Write<V>) {
        match write {
            Write::Promise(ballot) => self.promised = self.promised.max(Some(*ballot)),
            Write::Accept(proposal) => {
                self.promised = self.promised.max(Some(proposal.ballot));
                self.accepted = Some(proposal.clone());
            }
            Write::Decided(value) => self.decided = Some(value.clone()),
        }
    }
}

/// Timing of a proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// How long a phase may wait for a quorum before the proposer retries.
    pub phase_timeout: Duration,
    /// The smallest random backoff after a preemption.
    pub backoff_min: Duration,
    /// The cap on the random backoff (which doubles with each failed attempt).
    pub backoff_max: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            phase_timeout: 100 * MILLISECOND,
            backoff_min: 10 * MILLISECOND,
            backoff_max: 400 * MILLISECOND,
        }
    }
}
