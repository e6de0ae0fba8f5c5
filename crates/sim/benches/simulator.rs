//! Simulator speed: a 5-node Raft cluster (50 ms heartbeats) under continuous client load.
//!
//! `cargo bench -p concord-sim --bench simulator` prints simulated seconds per wall second and
//! events per second, then lets criterion time one 10-second simulated run.

use std::time::{Duration as WallDuration, Instant};

use concord_core::time::SECOND;
use concord_sim::{create_cluster, ClusterOptions, WorkloadConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Simulated time per run.
const SIMULATED: u64 = 10 * SECOND;

/// Runs a 5-node Raft cluster with `clients` closed-loop clients (each waits up to 20 ms
/// between operations) for 10 simulated seconds; returns the events processed and the client
/// operations completed.
fn simulate(seed: u64, clients: usize) -> (u64, u64) {
    let options = ClusterOptions {
        workload: WorkloadConfig {
            clients,
            operations: if clients == 0 { 0 } else { u64::MAX },
            ..WorkloadConfig::default()
        },
        ..ClusterOptions::default()
    };
    let mut cluster = create_cluster("raft", 5, seed, &options).expect("raft is supported");
    cluster.run_for(SIMULATED).expect("no invariant breaks");
    let completed = cluster.history().events.len() as u64 / 2;
    (cluster.stats().events, completed)
}

// Wall-clock time is read only to report the simulator's speed; the simulation never sees it.
#[allow(clippy::disallowed_methods)]
fn headline(clients: usize) -> u64 {
    let runs = 5;
    let started = Instant::now();
    let mut events = 0;
    let mut operations = 0;
    for seed in 0..runs {
        let (e, o) = simulate(seed, clients);
        events += e;
        operations += o;
    }
    let wall = started
        .elapsed()
        .max(WallDuration::from_nanos(1))
        .as_secs_f64();
    let simulated = (runs * SIMULATED) as f64 / 1e9;
    println!(
        "5-node raft, 50ms heartbeats, {clients} clients ({:.0} ops per simulated s): {simulated:.0} simulated s in {wall:.3} wall s = {:.0}x real time, {:.0} events/s, {} events, {} client ops",
        operations as f64 / simulated,
        simulated / wall,
        events as f64 / wall,
        events,
        operations
    );
    events / runs
}

fn bench(c: &mut Criterion) {
    for clients in [0, 1, 3] {
        headline(clients);
    }
    let events = headline(5);
    let mut group = c.benchmark_group("simulator");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events));
    group.bench_function("raft-5-nodes-10s-simulated", |b| b.iter(|| simulate(1, 5)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
