//! Sans-IO Paxos cores on the `concord-core` protocol contract.
//!
//! * [`single`]: single-decree Paxos (Lamport, "Paxos Made Simple", 2001) — proposer,
//!   acceptor and learner in one node, with randomized backoff between duelling proposers.
//! * [`multi`]: Multi-Paxos with a stable leader (van Renesse and Altinbuken, "Paxos Made
//!   Moderately Complex", 2015) replicating a log of [`concord_core::StateMachine`] commands.
//!
//! Nothing here reads a clock or a global random generator: time and randomness arrive in
//! `concord_core::Env`. Durable state changes leave as `Effect::Persist` barriers, so an
//! acceptor's promise or acceptance is durable before the message that reports it is sent.
//! Cluster-wide safety checkers are `concord_core::ClusterInvariant`s next to each core.
#![deny(missing_docs)]

mod ballot;
pub mod multi;
mod proposed;
pub mod single;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use ballot::Ballot;
