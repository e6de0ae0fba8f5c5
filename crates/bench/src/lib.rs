//! Drivers that run Concord's Raft core and its peer, raft-rs (TiKV's Raft), the same way in
//! one process: three nodes, in-memory storage, no network — messages are handed over
//! directly, and writes become durable as soon as the driver has drained the pending
//! messages (group commit). `K` closed-loop proposers each keep one proposal in flight and
//! submit the next as soon as the previous is applied.
//!
//! `benches/raft_throughput.rs` measures committed proposals per second with both.
#![deny(missing_docs)]
#![allow(clippy::disallowed_methods)] // a benchmark reads the wall clock

pub mod concord;
pub mod raftrs;

/// What one measurement produced.
#[derive(Clone, Copy, Debug)]
pub struct Throughput {
    /// Proposals committed and applied.
    pub committed: u64,
    /// Wall-clock seconds spent.
    pub seconds: f64,
}

impl Throughput {
    /// Committed proposals per second.
    pub fn per_second(&self) -> f64 {
        self.committed as f64 / self.seconds
    }
}

/// How one measurement runs.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// Concurrent closed-loop proposers.
    pub proposers: usize,
    /// Proposals to commit before stopping.
    pub proposals: u64,
    /// Whether leaders may put many entries in one AppendEntries (off: one entry a message).
    pub batching: bool,
}
