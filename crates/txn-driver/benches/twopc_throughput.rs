//! Two-phase commit throughput (a benchmark, never a timed test):
//!
//! 1. In process: the sans-IO coordinator and 3 participants, each with its own fsync'd log,
//!    every transaction touching all three (`concord_txn_driver::local`).
//! 2. Over 2 PostgreSQL databases (when reachable, see `scripts/postgres-up`): the same
//!    transfers through the 2PC driver (PREPARE TRANSACTION, fsync'd decision log, COMMIT
//!    PREPARED), and committed without 2PC (one local transaction per database, both in
//!    parallel), in one run.
//!
//! `cargo bench -p concord-txn-driver --bench twopc_throughput`; `TXN_BENCH_SCALE` (default 1)
//! multiplies the transaction counts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use concord_txn::twopc::{Config, Response};
use concord_txn::Change;
use concord_txn_driver::host::Driver;
use concord_txn_driver::local;
use concord_txn_driver::postgres::{self, Pool, Postgres};

const ACCOUNTS: i64 = 10_000;

fn scale() -> u64 {
    std::env::var("TXN_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

fn conninfo(which: &str) -> String {
    std::env::var(format!("CONCORD_PG_{}", which.to_uppercase())).unwrap_or_else(|_| {
        format!("host=127.0.0.1 user=concord password=concord dbname=concord_{which}")
    })
}

#[allow(clippy::disallowed_methods)] // A benchmark reads the wall clock.
fn now() -> std::time::Instant {
    std::time::Instant::now()
}

fn in_process() {
    println!("## 2PC in process: coordinator + 3 participants, fsync'd logs");
    println!("| clients | transactions | committed/s | fsyncs per transaction |");
    println!("|---:|---:|---:|---:|");
    for (clients, count) in [(1, 500), (16, 5_000), (256, 20_000)] {
        let count = count * scale();
        let dir = tempfile::tempdir().expect("a temporary folder");
        let report = local::run(dir.path(), 3, count, clients).expect("the run");
        assert_eq!(report.committed, count, "{report:?}");
        println!(
            "| {clients} | {count} | {:.0} | {:.2} |",
            report.per_second(),
            report.fsyncs as f64 / report.committed as f64
        );
    }
}

/// Transfer `i`: 1 between account `i % ACCOUNTS` of each database, alternating direction.
fn transfer(i: i64) -> BTreeMap<u64, Vec<Change>> {
    let account = (i % ACCOUNTS) as u64;
    let (from, to) = if i % 2 == 0 { (1, 2) } else { (2, 1) };
    BTreeMap::from([
        (from, vec![Change { account, delta: -1 }]),
        (to, vec![Change { account, delta: 1 }]),
    ])
}

async fn plain_side(pool: &Pool, i: i64, delta: i64) {
    pool.with(|client| async move {
        let account = i % ACCOUNTS;
        let txn = format!("plain_{i}");
        let result = async {
            client.batch_execute("BEGIN").await?;
            client
                .execute(
                    "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
                    &[&delta, &account],
                )
                .await?;
            client
                .execute(
                    "INSERT INTO transfers (txn, account, delta) VALUES ($1, $2, $3)",
                    &[&txn, &account, &delta],
                )
                .await?;
            client.batch_execute("COMMIT").await
        }
        .await;
        if result.is_err() {
            let _ = client.batch_execute("ROLLBACK").await;
        }
        (client, ())
    })
    .await
}

async fn postgres_runs() -> anyhow::Result<()> {
    let probe = postgres::connect(&conninfo("a")).await;
    if let Err(error) = probe {
        println!("\n(PostgreSQL not reachable, its figures skipped: {error:#})");
        return Ok(());
    }
    println!("\n## Over 2 PostgreSQL databases: 2PC vs the same writes without 2PC");
    println!("| clients | transactions | 2PC committed/s | without 2PC/s | ratio |");
    println!("|---:|---:|---:|---:|---:|");
    for (clients, count) in [(1, 300), (16, 3_000)] {
        let count = (count * scale()) as i64;
        for which in ["a", "b"] {
            let client = postgres::connect(&conninfo(which)).await?;
            postgres::reset(&client, ACCOUNTS, 1_000_000).await?;
        }
        // With 2PC.
        let backend = Arc::new(Postgres::new(vec![
            Pool::open(&conninfo("a"), clients).await?,
            Pool::open(&conninfo("b"), clients).await?,
        ]));
        let dir = tempfile::tempdir()?;
        let config = Config {
            vote_timeout: 10_000_000_000,
            retry_interval: 1_000_000_000,
            max_active: 4 * clients + 16,
            ..Config::default()
        };
        let (driver, handle) = Driver::open(dir.path(), backend, 2, config, None)?;
        let running = tokio::spawn(driver.run());
        let next = Arc::new(AtomicI64::new(0));
        let started = now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (handle, next) = (handle.clone(), Arc::clone(&next));
            tasks.push(tokio::spawn(async move {
                let mut committed = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return committed;
                    }
                    if let Some(Response::Committed(_)) = handle.transact(transfer(i)).await {
                        committed += 1;
                    }
                }
            }));
        }
        drop(handle);
        let mut committed = 0;
        for task in tasks {
            committed += task.await?;
        }
        let two_phase = committed as f64 / started.elapsed().as_secs_f64();
        running.await??;
        // Without 2PC: each database commits its half on its own.
        let pools = Arc::new([
            Pool::open(&conninfo("a"), clients).await?,
            Pool::open(&conninfo("b"), clients).await?,
        ]);
        let next = Arc::new(AtomicI64::new(count));
        let started = now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (pools, next) = (Arc::clone(&pools), Arc::clone(&next));
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= 2 * count {
                        return;
                    }
                    let sign = if i % 2 == 0 { 1 } else { -1 };
                    tokio::join!(
                        plain_side(&pools[0], i, -sign),
                        plain_side(&pools[1], i, sign)
                    );
                }
            }));
        }
        for task in tasks {
            task.await?;
        }
        let plain = count as f64 / started.elapsed().as_secs_f64();
        println!(
            "| {clients} | {count} | {two_phase:.0} | {plain:.0} | {:.2} |",
            two_phase / plain
        );
        if committed != count as u64 {
            println!("(only {committed} of {count} committed with 2PC)");
        }
    }
    Ok(())
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is expected.
    in_process();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    if let Err(error) = runtime.block_on(postgres_runs()) {
        println!("PostgreSQL run failed: {error:#}");
    }
}
