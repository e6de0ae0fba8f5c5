//! Null-operation throughput of 4 replicas in one process: PBFT and Concord's Raft side by side
//! in one run, under the same driver (`concord_bench::driver`): no network, in-memory storage
//! where writes become durable once the pending messages are drained (group commit), `K`
//! closed-loop proposers each keeping one null operation in flight.
//!
//! `cargo bench -p concord-bench --bench pbft_throughput` (`CONCORD_BENCH_PROPOSALS` sets the
//! operations per measurement; default 50000).

use concord_bench::{null, Throughput, Workload};

fn best_of(runs: usize, mut measure: impl FnMut() -> Throughput) -> f64 {
    (0..runs)
        .map(|_| measure().per_second())
        .fold(0.0, f64::max)
}

fn main() {
    let operations: u64 = std::env::var("CONCORD_BENCH_PROPOSALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    println!("4 replicas in-process, null operations, {operations} per run, best of 3");
    println!("| proposers | concord-pbft (ops/s) | concord-raft (ops/s) | PBFT / Raft |");
    println!("|---:|---:|---:|---:|");
    for proposers in [1, 16, 256] {
        let workload = Workload {
            proposers,
            proposals: operations,
            batching: true,
        };
        let pbft = best_of(3, || null::run_pbft(&workload));
        let raft = best_of(3, || null::run_raft(&workload));
        println!(
            "| {proposers} | {pbft:.0} | {raft:.0} | {:.3}× |",
            pbft / raft
        );
    }
}
