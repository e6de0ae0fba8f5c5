//! Committed proposals per second of a 3-node in-process cluster with in-memory storage and
//! no network, for 1, 64 and 1024 concurrent proposers, with and without batching: Concord's
//! Multi-Paxos and Concord's Raft side by side in one run, under the same driver.
//!
//! `cargo bench -p concord-bench --bench paxos_throughput` (set `CONCORD_BENCH_PROPOSALS` to
//! change the number of proposals per measurement; default 200000).

use concord_bench::{concord, multipaxos, Throughput, Workload};

fn best_of(runs: usize, mut measure: impl FnMut() -> Throughput) -> Throughput {
    (0..runs)
        .map(|_| measure())
        .max_by(|a, b| a.per_second().total_cmp(&b.per_second()))
        .expect("at least one run")
}

fn main() {
    let proposals: u64 = std::env::var("CONCORD_BENCH_PROPOSALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    println!(
        "3-node in-process Multi-Paxos and Raft, in-memory storage, {proposals} proposals per run, best of 3"
    );
    println!(
        "| proposers | batching | concord multi-paxos (proposals/s) | concord-raft (proposals/s) | ratio |"
    );
    println!("|---:|:---:|---:|---:|---:|");
    for batching in [true, false] {
        for proposers in [1, 64, 1024] {
            let workload = Workload {
                proposers,
                proposals,
                batching,
            };
            let paxos = best_of(3, || multipaxos::run(&workload));
            let raft = best_of(3, || concord::run(&workload));
            println!(
                "| {proposers} | {} | {:.0} | {:.0} | {:.2}× |",
                if batching { "on" } else { "off" },
                paxos.per_second(),
                raft.per_second(),
                paxos.per_second() / raft.per_second()
            );
        }
    }
}
