//! A sans-IO Raft core on the `concord-core` protocol contract.
//!
//! [`RaftNode`] implements Raft as described in Ongaro and Ousterhout, "In Search of an
//! Understandable Consensus Algorithm" (2014, "the paper") and Ongaro's thesis "Consensus:
//! Bridging Theory and Practice" (2014, "the thesis"):
//!
//! * leader election with randomized timeouts (paper §5.2), PreVote (thesis §9.6), CheckQuorum
//!   and leader stickiness (thesis §6.2, §4.2.3);
//! * log replication with fast backtracking, per-follower probe/replicate flow control,
//!   pipelining and batching (paper §5.3, thesis §10.2); the commit rule of §5.4.2;
//! * linearizable reads by ReadIndex, forwarded follower reads and opt-in leases (thesis §6.4);
//! * opt-in proposal forwarding: a follower batches the proposals it gets into one message to
//!   the leader and answers them from its own apply (etcd's MsgProp; see `forward`);
//! * snapshots sent in chunks (paper §7, thesis chapter 5);
//! * leadership transfer (thesis §3.10);
//! * membership changes by joint consensus, and learners (thesis chapter 4).
//!
//! Nothing here reads a clock or a global random generator: time and randomness arrive in
//! `concord_core::Env`. Durable state changes leave as `Effect::Persist` barriers (see
//! [`Write`] and [`Storage`]). Cluster-wide safety checkers live in [`mod@invariants`].
//!
//! `docs/protocols/raft.md` in the repository has the message table, the effect order, the
//! configuration and invariant tables, and the scenarios the tests cover.
//!
//! ```
//! use concord_core::{seeded_rng, Effect, Env, Input, KvStateMachine, Node};
//! use concord_raft::{Config, RaftNode, Storage};
//!
//! let config = Config::default();
//! config.validate().unwrap();
//! let mut rng = seeded_rng(1, 0);
//! let mut node: RaftNode<KvStateMachine> =
//!     Node::restore(0, &[0], &config, &Storage::default(), 0, &mut rng);
//! let deadline = node.next_deadline().unwrap();
//! let mut effects = Vec::new();
//! node.step(&mut Env { now: deadline, rng: &mut rng }, Input::Tick, &mut effects);
//! assert!(node.is_leader(), "a single voter elects itself");
//! assert!(matches!(effects[0], Effect::Persist { .. }), "its vote is persisted first");
//! ```
#![deny(missing_docs)]

mod apply;
mod checks;
mod config;
mod deposed;
mod election;
mod entry;
mod forward;
pub mod invariants;
mod kv;
mod leader;
mod leadership;
mod log;
mod membership;
mod membership_change;
mod message;
mod node;
mod persistence;
mod progress;
mod read;
mod replication;
mod request;
mod serde_bytes_arc;
mod snapshot;
mod storage;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod transfer;

pub use config::{Config, ConfigError};
pub use entry::{Entry, LogIndex, Payload, ProposalOrigin, Term};
pub use invariants::invariants;
pub use log::RaftLog;
pub use membership::{Membership, MembershipError};
pub use message::Message;
pub use node::RaftNode;
pub use request::{RaftError, Request, Response};
pub use storage::{HardState, Snapshot, SnapshotMeta, Storage, Write};
