//! Consistency checkers for recorded histories.
//!
//! [`history`] is the JSON-lines format shared by the simulator, the checker and the database
//! client (see `docs/history-format.md`).
#![deny(missing_docs)]

pub mod history;

pub use history::{EventType, History, HistoryError, Op};
