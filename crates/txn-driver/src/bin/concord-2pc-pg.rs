//! `concord-2pc-pg`: a 2PC coordinator moving money between accounts in two PostgreSQL
//! databases, which tests kill at each step of a transaction and restart to recover.
//!
//! ```text
//! concord-2pc-pg reset    [--accounts N] [--balance B]
//! concord-2pc-pg transfer --log DIR --count N [--concurrency C] [--crash-at POINT --crash-txn K]
//! concord-2pc-pg recover  --log DIR
//! concord-2pc-pg audit
//! ```
//!
//! The databases: `CONCORD_PG_A` and `CONCORD_PG_B` (libpq connection strings), by default
//! `host=127.0.0.1 user=concord password=concord dbname=concord_a` (and `concord_b`).
//! Exit codes: 0 done, 86 a planned crash, 3 bad input or an unreachable database.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use concord_txn::twopc::{Config, Response};
use concord_txn::Change;
use concord_txn_driver::host::{CrashPlan, CrashPoint, Driver};
use concord_txn_driver::postgres::{self, Pool, Postgres};

fn conninfo(which: &str) -> String {
    std::env::var(format!("CONCORD_PG_{}", which.to_uppercase())).unwrap_or_else(|_| {
        format!("host=127.0.0.1 user=concord password=concord dbname=concord_{which}")
    })
}

struct Flags(Vec<String>);

impl Flags {
    fn value(&self, name: &str) -> Option<&str> {
        let position = self.0.iter().position(|a| a == name)?;
        self.0.get(position + 1).map(String::as_str)
    }

    fn number(&self, name: &str, default: i64) -> Result<i64> {
        match self.value(name) {
            None => Ok(default),
            Some(text) => text.parse().with_context(|| format!("{name} {text}")),
        }
    }

    fn log(&self) -> Result<PathBuf> {
        Ok(PathBuf::from(
            self.value("--log").context("--log DIR is required")?,
        ))
    }
}

fn pg_config() -> Config {
    Config {
        vote_timeout: 10_000_000_000,
        retry_interval: 500_000_000,
        ..Config::default()
    }
}

async fn backend(pool_size: usize) -> Result<Arc<Postgres>> {
    let a = Pool::open(&conninfo("a"), pool_size).await?;
    let b = Pool::open(&conninfo("b"), pool_size).await?;
    Ok(Arc::new(Postgres::new(vec![a, b])))
}

/// Transfer `i`: 10 to 70 between account `i % 10` of one database and `3i % 10` of the
/// other, alternating direction.
fn transfer(i: i64) -> BTreeMap<u64, Vec<Change>> {
    let amount = (i % 7 + 1) * 10;
    let (from, to) = if i % 2 == 0 { (1, 2) } else { (2, 1) };
    let mut changes = BTreeMap::new();
    changes.insert(
        from,
        vec![Change {
            account: (i % 10) as u64,
            delta: -amount,
        }],
    );
    changes.insert(
        to,
        vec![Change {
            account: (i * 3 % 10) as u64,
            delta: amount,
        }],
    );
    changes
}

async fn run_transfers(flags: &Flags) -> Result<()> {
    let count = flags.number("--count", 10)?;
    let concurrency = flags.number("--concurrency", 1)?.max(1) as usize;
    let crash = match flags.value("--crash-at") {
        None => None,
        Some(name) => Some(CrashPlan {
            point: CrashPoint::parse(name)
                .with_context(|| format!("unknown crash point {name}"))?,
            sequence: flags.number("--crash-txn", 1)? as u64,
        }),
    };
    let backend = backend(concurrency).await?;
    let (mut driver, handle) = Driver::open(&flags.log()?, backend, 2, pg_config(), crash)?;
    let resolved = driver.recover().await?;
    if resolved > 0 {
        eprintln!("recovered {resolved} in-doubt transaction(s)");
    }
    let running = tokio::spawn(driver.run());
    let next = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let mut clients = Vec::new();
    for _ in 0..concurrency {
        let handle = handle.clone();
        let next = Arc::clone(&next);
        clients.push(tokio::spawn(async move {
            let (mut committed, mut aborted) = (0, 0);
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return (committed, aborted);
                }
                match handle.transact(transfer(i)).await {
                    Some(Response::Committed(_)) => committed += 1,
                    _ => aborted += 1,
                }
            }
        }));
    }
    drop(handle);
    let (mut committed, mut aborted) = (0, 0);
    for client in clients {
        let (c, a) = client.await?;
        committed += c;
        aborted += a;
    }
    running.await??;
    println!("{committed} committed, {aborted} aborted");
    Ok(())
}

async fn main_result() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first().cloned() else {
        bail!("usage: concord-2pc-pg reset|transfer|recover|audit [flags]");
    };
    let flags = Flags(args[1..].to_vec());
    match command.as_str() {
        "reset" => {
            let accounts = flags.number("--accounts", 10)?;
            let balance = flags.number("--balance", 1_000)?;
            for which in ["a", "b"] {
                let client = postgres::connect(&conninfo(which)).await?;
                postgres::reset(&client, accounts, balance).await?;
            }
        }
        "transfer" => run_transfers(&flags).await?,
        "recover" => {
            let (mut driver, _handle) =
                Driver::open(&flags.log()?, backend(1).await?, 2, pg_config(), None)?;
            let resolved = driver.recover().await?;
            println!("resolved {resolved} in-doubt transaction(s)");
        }
        "audit" => {
            let mut report = serde_json::Map::new();
            for which in ["a", "b"] {
                let client = postgres::connect(&conninfo(which)).await?;
                let (total, gids) = postgres::audit(&client).await?;
                let prepared = postgres::prepared_gids(&client).await?;
                report.insert(
                    which.into(),
                    serde_json::json!({ "total": total, "gids": gids, "prepared": prepared }),
                );
            }
            println!("{}", serde_json::Value::Object(report));
        }
        other => bail!("unknown command {other}"),
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(error) = main_result().await {
        eprintln!("error: {error:#}");
        std::process::exit(3);
    }
}
