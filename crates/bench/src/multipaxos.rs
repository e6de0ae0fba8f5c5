//! Concord's Multi-Paxos (`concord-paxos`) under the in-process driver, configured like
//! [`crate::concord`]'s Raft: the same batch limit, no limit on waiting requests in practice,
//! and the same snapshot threshold.

use concord_core::KvStateMachine;
use concord_paxos::multi::{Config, MultiPaxos};

use crate::driver::{self, Replica};
use crate::{Throughput, Workload};

impl Replica for MultiPaxos<KvStateMachine> {
    fn is_leader(&self) -> bool {
        MultiPaxos::is_leader(self)
    }

    fn proposal(id: u64) -> Self::Request {
        driver::kv_proposal::<Self>(id)
    }

    fn completed(response: &Self::Response) -> bool {
        driver::kv_completed::<Self>(response)
    }
}

/// The configuration a workload runs with. Multi-Paxos has no in-flight window per follower
/// (its pipeline is bounded only by the batch size and the requests waiting), which is what
/// Raft's window of 4096 appends amounts to here.
pub fn config(workload: &Workload) -> Config {
    Config {
        max_batch: if workload.batching { 4096 } else { 1 },
        max_pending: 1 << 20,
        snapshot_threshold: concord_raft::Config::default().snapshot_threshold,
        ..Config::default()
    }
}

/// Measures `concord-paxos`'s Multi-Paxos.
pub fn run(workload: &Workload) -> Throughput {
    driver::run::<MultiPaxos<KvStateMachine>>(&config(workload), workload)
}
