//! Concord's shared vocabulary.
//!
//! Every protocol in Concord — Raft, Paxos, PBFT, the transaction protocols — is a *sans-IO*
//! state machine implementing [`Node`]: inputs (a peer message, a timer tick, a client request,
//! confirmation that a write is durable) go in; an ordered list of [`Effect`]s (send, persist,
//! apply, reply) comes out. No clocks, threads, sockets or global randomness live inside a node:
//! the current time and a seeded random generator arrive in [`Env`].
//!
//! The same node is driven deterministically by `concord-sim` and over TCP with a write-ahead
//! log by the real runtime. See `docs/architecture.md`.
#![deny(missing_docs)]

pub mod agreement;
pub mod kv;
pub mod node;
pub mod state_bytes;
pub mod status;
pub mod time;

pub use agreement::StateMachineSafety;
pub use kv::{KvCommand, KvOperation, KvOutcome, KvResult, KvStateMachine, StateMachine, Value};
pub use node::{
    digest, ClusterInvariant, Effect, EffectOf, Env, Input, KvService, Node, NodeId, PersistToken,
    RequestId, Violation,
};
pub use state_bytes::StateBytes;
pub use status::{NodeStatus, PeerProgress, Role};
pub use time::{Duration, Time};

/// The seeded random generator every driver passes to its nodes.
///
/// ChaCha8 is portable and reproducible across platforms and releases, which is what a
/// seed-for-seed replay needs.
pub type Rng = rand_chacha::ChaCha8Rng;

/// Builds the generator for `stream` (a node, a client, the nemesis) from a run's master seed.
pub fn seeded_rng(seed: u64, stream: u64) -> Rng {
    use rand::SeedableRng;
    let mut rng = Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}
