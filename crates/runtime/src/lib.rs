//! The real runtime for Concord's sans-IO cores: one process, one node, tokio, TCP between
//! peers and a durable write-ahead log.
//!
//! ```text
//!   NodeHandle ──requests, inspect, set_peer, shutdown──┐
//!                                                      ▼
//!   TCP peers ──(from, frame)──►  node task  ──Send──► transport (one queue and task per peer)
//!   timers ─────────Tick───────►  (owns N)   ──Persist──► WAL thread: group commit, one fsync
//!   WAL thread ───Persisted────►             ◄──────────┘   per batch, then compaction
//! ```
//!
//! * [`wal`]: segmented write-ahead log with checksummed records and crash recovery.
//! * [`transport`]: framed TCP between peers with a handshake, bounded per-peer queues and
//!   reconnects.
//! * [`host`]: [`start`] runs any [`concord_core::Node`] whose messages and writes are
//!   serializable, honouring the persist barrier; [`NodeHandle`] is how an application talks to
//!   it.
//! * [`metrics`]: Prometheus metrics of the host.
//! * [`tls`]: TLS from PEM files; mutual TLS for the peer transport.
//!
//! See `crates/runtime/README.md` and the runtime section of `docs/architecture.md`.
#![deny(missing_docs)]

mod clock;
pub mod codec;
pub mod faults;
pub mod host;
pub mod metrics;
pub mod tls;
pub mod transport;
pub mod wal;

pub use clock::{fresh_seed, process_cpu_time, TimeOrigin};
pub use host::{
    seed_storage, start, start_with_listener, CompactionPolicy, HostConfig, HostError, HostedNode,
    Leadership, NodeHandle, SyncGate, REMOVED,
};
pub use metrics::HostMetrics;
pub use tls::{PeerTls, TlsError, TlsFiles};
pub use transport::{BlockedPeers, TransportOptions};
pub use wal::{RecoveryReport, Rewrite, Wal, WalError, WalOptions, WrittenRewrite};

/// The multi-threaded tokio runtime a server process runs on, timers and I/O on: with
/// `worker_threads` workers, or by default one per core (`TOKIO_WORKER_THREADS` overrides the
/// default, as `GOMAXPROCS` does for etcd).
///
/// Processes that share a machine's cores (the members of a local cluster) do better with
/// their share of the cores each than with a worker per core apiece: each worker that finds
/// its queue empty parks, and a task woken for it then costs a futex wake-up and a context
/// switch, which oversubscribed cores make frequent. Three members on two cores, each with
/// one worker instead of two: 12–27 % less of the servers' CPU per request and 10–22 % more
/// throughput, for puts and for reads (`docs/benchmarks.md`).
///
/// When built with `--cfg tokio_unstable` (the workspace's `.cargo/config.toml` sets it), the
/// scheduler's LIFO slot is off: a woken task goes to the back of its worker's queue instead
/// of running next. When a node applies a batch of commits it wakes every waiting request
/// handler at once; with the slot, each handler's connection task ran right after it and
/// wrote its one reply, a system call per reply. Without it the handlers run first, then
/// each connection writes all its replies together. With three members and the load
/// generator (which runs on this too) sharing two cores at 64 clients: 0.3 writes per put
/// to clients instead of 1, half the peer sends, and 68–81 instead of 90–101 µs of the
/// servers' CPU per put (`docs/benchmarks.md`).
pub fn server_runtime(worker_threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(workers) = worker_threads {
        builder.worker_threads(workers.max(1));
    }
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder.build()
}
