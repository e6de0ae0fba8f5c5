//! One WAL append and `fdatasync`, with and without preallocated segment space: what a group
//! commit costs on this disk. Wall time per sync comes from criterion; the CPU time the process
//! spent per sync (user + system, which is what the database's throughput pays on a saturated
//! machine) is printed beside it.
//!
//!     cargo bench -p concord-runtime --bench wal_sync

use std::time::Duration;

use concord_runtime::{process_cpu_time, Wal, WalOptions};
use criterion::{criterion_group, criterion_main, Criterion};

/// About what one group commit of a dozen 100-byte puts writes.
const RECORD: usize = 1500;

fn sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_append_and_sync");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    for (name, preallocate_bytes) in [("preallocated", 4 << 20), ("growing", 0)] {
        // In the working directory's file system (the disk a data directory would be on),
        // not /tmp, which may be memory.
        let dir = tempfile::tempdir_in(".").expect("a temporary directory");
        let options = WalOptions {
            preallocate_bytes,
            ..WalOptions::default()
        };
        let (mut wal, _, _) = Wal::open(dir.path(), options).expect("a new log");
        let record = vec![7u8; RECORD];
        let mut syncs = 0u64;
        let cpu_before = process_cpu_time();
        group.bench_function(name, |b| {
            b.iter(|| {
                wal.append(&record).expect("append");
                wal.sync().expect("sync");
                syncs += 1;
            })
        });
        let cpu = process_cpu_time().saturating_sub(cpu_before);
        println!(
            "wal_append_and_sync/{name}: {:.1} µs of CPU per sync over {syncs} syncs",
            cpu.as_secs_f64() * 1e6 / syncs.max(1) as f64
        );
    }
    group.finish();
}

criterion_group!(benches, sync);
criterion_main!(benches);
