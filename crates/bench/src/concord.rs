//! Concord's Raft (`concord-raft`) under the in-process driver.

use concord_core::KvStateMachine;
use concord_raft::{Config, RaftNode};

use crate::driver::{self, Replica};
use crate::{Throughput, Workload};

impl Replica for RaftNode<KvStateMachine> {
    fn is_leader(&self) -> bool {
        RaftNode::is_leader(self)
    }

    fn proposal(id: u64) -> Self::Request {
        driver::kv_proposal::<Self>(id)
    }

    fn completed(response: &Self::Response) -> bool {
        driver::kv_completed::<Self>(response)
    }
}

/// The configuration a workload runs with.
pub fn config(workload: &Workload) -> Config {
    Config {
        max_entries_per_message: if workload.batching { 4096 } else { 1 },
        max_inflight_appends: 4096,
        max_pending_requests: 1 << 20,
        ..Config::default()
    }
}

/// Measures `concord-raft`.
pub fn run(workload: &Workload) -> Throughput {
    driver::run::<RaftNode<KvStateMachine>>(&config(workload), workload)
}
