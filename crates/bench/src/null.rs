//! Null operations on PBFT (`concord-pbft`) and on Concord's Raft under the in-process driver:
//! the service does nothing, so what is measured is the protocol alone — for PBFT every message
//! authenticated with HMAC-SHA256 and the client accepting `f + 1` matching replies.

use concord_core::{NodeId, StateMachine};

use crate::driver::{self, Replica};
use crate::{Throughput, Workload};

/// The null service: commands and queries carry nothing and change nothing.
#[derive(Clone, Debug, Default)]
pub struct Null;

impl StateMachine for Null {
    type Command = ();
    type Query = ();
    type Output = ();

    fn apply(&mut self, _: &()) {}
    fn query(&self, _: &()) {}
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(&mut self, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// PBFT replicating the null service.
pub type Pbft = concord_pbft::Pbft<Null>;
/// Concord's Raft replicating the null service.
pub type Raft = concord_raft::RaftNode<Null>;

/// Replicas: `3f + 1` with `f = 1`, for both protocols.
pub const REPLICAS: u64 = 4;

impl Replica for Pbft {
    fn is_leader(&self) -> bool {
        concord_core::Node::status(self).role == concord_core::Role::Leader
    }

    fn proposal(_: u64) -> Self::Request {
        concord_pbft::Request::Propose(())
    }

    fn completed(response: &Self::Response) -> bool {
        matches!(response, concord_pbft::Response::Done { .. })
    }
}

impl Replica for Raft {
    fn is_leader(&self) -> bool {
        concord_raft::RaftNode::is_leader(self)
    }

    fn proposal(_: u64) -> Self::Request {
        concord_raft::Request::Propose(())
    }

    fn completed(response: &Self::Response) -> bool {
        matches!(response, concord_raft::Response::Applied { .. })
    }
}

/// Measures PBFT on 4 replicas, its clients spread over every replica's proxy.
pub fn run_pbft(workload: &Workload) -> Throughput {
    let config = concord_pbft::Config {
        client_lanes: (workload.proposers as u64).div_ceil(REPLICAS),
        max_pending_requests: 1 << 16,
        ..concord_pbft::Config::default()
    };
    driver::run_with::<Pbft>(&config, workload, REPLICAS, |p: u64, _: NodeId| {
        p % REPLICAS
    })
}

/// Measures Concord's Raft on 4 replicas, its clients at the leader.
pub fn run_raft(workload: &Workload) -> Throughput {
    let config = concord_raft::Config {
        max_entries_per_message: if workload.batching { 4096 } else { 1 },
        max_inflight_appends: 4096,
        max_pending_requests: 1 << 20,
        ..concord_raft::Config::default()
    };
    driver::run_with::<Raft>(&config, workload, REPLICAS, |_, leader| leader)
}
