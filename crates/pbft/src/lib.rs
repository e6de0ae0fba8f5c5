//! Practical Byzantine Fault Tolerance (Castro and Liskov, "Practical Byzantine Fault
//! Tolerance", OSDI 1999; "Practical Byzantine Fault Tolerance and Proactive Recovery", TOCS
//! 2002) as a sans-IO state machine on the `concord-core` contract.
//!
//! `n = 3f + 1` replicas (more are allowed; quorums are `⌊(n + f) / 2⌋ + 1`) order client
//! requests so that every correct replica executes the same batches in the same order, even
//! when `f` replicas are Byzantine:
//!
//! | message | from → to | meaning | authenticated by |
//! |---|---|---|---|
//! | `REQUEST` ([`Body::Request`]) | client → primary (all on retry) | execute `o` at timestamp `t` | an authenticator: one HMAC per replica |
//! | `PRE-PREPARE` | primary → backups | batch `d` gets sequence number `n` in view `v` | HMAC |
//! | `PREPARE` | backup → all | I accepted that pre-prepare | HMAC |
//! | `COMMIT` | replica → all | it prepared here (pre-prepare + `2f` prepares) | HMAC |
//! | `REPLY` | replica → client | result `r` of request `t` | HMAC (client key) |
//! | `CHECKPOINT` | replica → all | my state after `n` has digest `d` | ed25519 (forwarded as proof) |
//! | `VIEW-CHANGE` | replica → all | move to `v + 1`: my stable checkpoint proof, `P` and `Q` sets | ed25519 |
//! | `NEW-VIEW` | new primary → all | the view changes used and the pre-prepares they imply | ed25519 |
//! | `STATUS` | replica → all, periodically | my view and last executed: resend what I lack | HMAC |
//! | `STATE` | replica → lagging replica | a stable checkpoint's proof and state | the proof's signatures and digest |
//!
//! The modules: [`message`] (vocabulary, durable writes), `config`, [`auth`] (keys, MACs,
//! signatures, digests), `replica` (state, restart, the `Node` impl), `normal` (the
//! three-phase protocol and execution), `checkpoint` (checkpoints, garbage collection, state
//! transfer, status), `view_change` and [`decision`] (view changes, the new primary's
//! decision), `client` (the client proxy each node hosts: `f + 1` matching replies), and the
//! cluster [`invariants`]. See `docs/protocols/pbft.md`.
#![deny(missing_docs)]

pub mod auth;
mod checkpoint;
mod checks;
mod client;
mod config;
pub mod decision;
pub mod invariants;
mod kv;
pub mod message;
mod normal;
mod replica;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
mod view_change;

pub use auth::{Digest, Keys, Mac, Signature};
pub use checkpoint::checkpoint_bytes;
pub use config::{Config, ConfigError, Quorums};
pub use invariants::invariants;
pub use message::{
    AuthenticatedRequest, Body, CheckpointProof, ClientId, ClientRequest, Message, Operation,
    PbftError, Request, Response, Sequence, SignedCheckpoint, Storage, Timestamp, View, Write,
};
pub use replica::{
    batch_digest, seal_with, Authenticated, Batch, Counters, Executed, LastReply, Pbft, PbftBody,
    PbftMessage, Service,
};
