//! Applying puts to the MVCC store, as every member does for every committed entry: 100-byte
//! values over 100 000 keys (the load `scripts/bench-db` drives), with the history growing
//! as it does between compactions; and puts of keys never written before. Per put,
//! single-threaded, in-memory.
//!
//!     cargo bench -p concord-kv --bench store_apply

use concord_core::StateMachine;
use concord_kv::{Command, KvStore, PutRequest, Query, RangeRequest};
use criterion::{criterion_group, criterion_main, Criterion};

const KEYS: u64 = 100_000;

fn key(index: u64) -> Vec<u8> {
    format!("bench/{index:08}").into_bytes()
}

/// A store where every key has been written once, and the keys a run writes, in order.
fn loaded() -> (KvStore, Vec<Command>) {
    let mut store = KvStore::default();
    for index in 0..KEYS {
        store.apply(&put(index));
    }
    let mut sequence = 1u64;
    let commands = (0..10_000)
        .map(|_| {
            sequence = sequence
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            put((sequence >> 33) % KEYS)
        })
        .collect();
    (store, commands)
}

fn put(index: u64) -> Command {
    Command::Put(PutRequest {
        key: key(index),
        value: vec![b'v'; 100],
        ..Default::default()
    })
}

fn apply(c: &mut Criterion) {
    let (mut store, commands) = loaded();
    let mut group = c.benchmark_group("store");
    group.sample_size(20);
    // One store throughout: its history grows from run to run, as between compactions.
    group.bench_function("apply 10 000 puts over 100 000 keys", |b| {
        b.iter(|| {
            for command in &commands {
                store.apply(command);
            }
        })
    });
    // New keys, as a key space fills: each run writes 10 000 keys never written before (with
    // the same shape as the others, so they interleave with them in key order).
    let mut next_new = KEYS;
    group.bench_function("apply 10 000 puts of new keys", |b| {
        b.iter_batched(
            || {
                let first = next_new;
                next_new += 10_000;
                (first..next_new)
                    .map(|i| put(i * 7919 % (KEYS * 1000)))
                    .collect::<Vec<_>>()
            },
            |commands| {
                for command in &commands {
                    store.apply(command);
                }
            },
            criterion::BatchSize::PerIteration,
        )
    });
    let reads: Vec<Query> = (0..10_000u64)
        .map(|i| {
            Query::Range(RangeRequest {
                key: key(i * 7 % KEYS),
                ..Default::default()
            })
        })
        .collect();
    group.bench_function("query 10 000 single keys of 100 000", |b| {
        b.iter(|| {
            for query in &reads {
                std::hint::black_box(store.query(query));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);
