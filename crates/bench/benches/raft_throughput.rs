//! Committed proposals per second of a 3-node in-process cluster with in-memory storage and
//! no network, for 1, 64 and 1024 concurrent proposers, with and without batching: Concord's
//! Raft and raft-rs side by side in one run.
//!
//! `cargo bench -p concord-bench --bench raft_throughput` (set `CONCORD_BENCH_PROPOSALS` to
//! change the number of proposals per measurement; default 200000).

use concord_bench::{concord, raftrs, Throughput, Workload};

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
    println!("3-node in-process Raft, in-memory storage, {proposals} proposals per run, best of 3");
    println!(
        "| proposers | batching | concord-raft (proposals/s) | raft-rs 0.7 (proposals/s) | ratio |"
    );
    println!("|---:|:---:|---:|---:|---:|");
    for batching in [true, false] {
        for proposers in [1, 64, 1024] {
            let workload = Workload {
                proposers,
                proposals,
                batching,
            };
            let ours = best_of(3, || concord::run(&workload));
            let peer = best_of(3, || raftrs::run(&workload));
            println!(
                "| {proposers} | {} | {:.0} | {:.0} | {:.2}× |",
                if batching { "on" } else { "off" },
                ours.per_second(),
                peer.per_second(),
                ours.per_second() / peer.per_second()
            );
        }
    }
}
