//! Measures simulator speed for a 5-node Raft cluster under client load, with and without the
//! Raft cluster invariants: `cargo run --release -p concord-sim --example speed`.
use std::time::Instant;

use concord_core::time::SECOND;
use concord_core::KvStateMachine;
use concord_raft::RaftNode;
use concord_sim::{Cluster, SimCluster, SimConfig, WorkloadConfig};

type Raft = RaftNode<KvStateMachine>;

// Wall-clock time is read only to report the simulator's speed; the simulation never sees it.
#[allow(clippy::disallowed_methods)]
fn measure(label: &str, with_invariants: bool) {
    let started = Instant::now();
    let mut events = 0;
    let runs = 5;
    for seed in 0..runs {
        let workload = WorkloadConfig {
            clients: 5,
            operations: u64::MAX,
            ..WorkloadConfig::default()
        };
        let invariants = if with_invariants {
            concord_raft::invariants::<KvStateMachine>()
        } else {
            Vec::new()
        };
        let mut cluster = SimCluster::<Raft>::new(
            "raft",
            SimConfig::new(5, seed),
            concord_raft::Config::default(),
            workload,
            invariants,
        )
        .expect("valid");
        cluster.run_for(10 * SECOND).expect("no violation");
        events += cluster.stats().events;
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "{label}: {:.0}x real time, {:.0} events/s",
        (runs * 10) as f64 / wall,
        events as f64 / wall
    );
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("with") => measure("with raft invariants", true),
        Some("without") => measure("without cluster invariants", false),
        _ => {
            measure("with raft invariants", true);
            measure("without cluster invariants", false);
        }
    }
}
