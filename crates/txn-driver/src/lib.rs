//! Real drivers for `concord-txn`'s two-phase commit.
//!
//! * [`host`]: the sans-IO 2PC coordinator hosted on tokio, its decision log an fsync'd
//!   `concord_runtime::Wal` (group commit: one fsync per batch of inputs), sending each
//!   participant message to a [`Backend`] — the persist barrier honoured: no commit leaves
//!   before its decision is durable.
//! * [`postgres`]: a [`Backend`] of real PostgreSQL databases. Prepare is `BEGIN`, the
//!   updates, `PREPARE TRANSACTION 'concord_<epoch>_<sequence>_<participant>'`; commit and abort are
//!   `COMMIT PREPARED` and `ROLLBACK PREPARED`; recovery scans `pg_prepared_xacts` and asks
//!   the restored coordinator about each (presumed abort: no commit record means roll back).
//! * [`local`]: coordinator and participants all in one process, each with its own fsync'd
//!   log, for the throughput benchmark.
//!
//! A coordinator can be told to stop dead at a [`CrashPoint`] of a given transaction, as a
//! killed process would: what it had not fsynced is lost.
#![deny(missing_docs)]

pub mod host;
pub mod local;
pub mod log;
pub mod postgres;

pub use host::{Backend, CrashPlan, CrashPoint, Driver, DriverHandle};
