//! Consistency checkers for recorded histories.
//!
//! [`history`] is the JSON-lines format shared by the simulator, the checker and the database
//! client (see `docs/history-format.md`); [`linearizability`] decides whether a history is
//! linearizable with respect to a [`model::Model`]; [`sequential`] whether it is sequentially
//! consistent; [`session`] whether a register or key-value history keeps the four session
//! guarantees of causal consistency; [`causal`] whether it is causally consistent (the bad
//! patterns of Bouajjani et al. 2017); [`picture`] draws a linearizability violation as HTML;
//! [`txn`] finds Elle-style anomalies (G0, G1, G-single, G2, ...) in transactional histories.
//! [`convergence`] decides whether replicas' final states agree (eventual consistency); [`generate`]
//! makes seeded linearizable histories for benchmarks and tests.
#![deny(missing_docs)]

pub mod causal;
pub mod collections;
pub mod convergence;
pub mod generate;
pub mod history;
pub mod linearizability;
pub mod model;
pub mod picture;
pub mod readers;
mod registers;
pub mod sequential;
pub mod session;
pub mod txn;

pub use causal::check as check_causal;
pub use collections::{CounterModel, QueueModel, SetModel};
pub use history::{EventType, History, HistoryError, Op};
pub use linearizability::{check as check_linearizability, Report, Verdict};
pub use model::{Model, RegisterModel, StringKvModel};
pub use readers::{read_edn, read_jepsen_log};
pub use sequential::check as check_sequential;
pub use session::check as check_session;
pub use txn::check as check_txn;
