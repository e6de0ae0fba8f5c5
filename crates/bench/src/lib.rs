//! Drivers that run Concord's consensus cores and a peer, raft-rs (TiKV's Raft), the same way
//! in one process: three nodes, in-memory storage, no network — messages are handed over
//! directly, and writes become durable as soon as the driver has drained the pending
//! messages (group commit). `K` closed-loop proposers each keep one proposal in flight and
//! submit the next as soon as the previous is applied.
//!
//! Concord's Raft ([`concord`]), Multi-Paxos ([`multipaxos`]) and PBFT ([`null`], with null
//! operations, four replicas) run under one generic driver ([`driver`]); raft-rs has its own
//! ([`raftrs`]) with the same discipline. `benches/raft_throughput.rs` measures committed
//! proposals per second of Concord's Raft and raft-rs; `benches/paxos_throughput.rs` of
//! Concord's Multi-Paxos and Raft; `benches/pbft_throughput.rs` of PBFT and Raft.
#![deny(missing_docs)]
#![allow(clippy::disallowed_methods)] // a benchmark reads the wall clock

pub mod concord;
pub mod driver;
pub mod multipaxos;
pub mod null;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every driver elects a leader and commits a short workload, batched or not.
    #[test]
    fn every_driver_commits_a_short_workload() {
        for batching in [true, false] {
            let workload = Workload {
                proposers: 8,
                proposals: 500,
                batching,
            };
            for (name, run) in [
                ("concord-raft", concord::run as fn(&Workload) -> Throughput),
                ("concord multi-paxos", multipaxos::run),
                ("raft-rs", raftrs::run),
                ("concord-pbft, null operations", null::run_pbft),
                ("concord-raft, null operations, 4 nodes", null::run_raft),
            ] {
                let throughput = run(&workload);
                assert!(
                    throughput.committed >= workload.proposals,
                    "{name}, batching {batching}: {throughput:?}"
                );
            }
        }
    }
}
