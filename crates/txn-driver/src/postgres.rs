//! PostgreSQL databases as 2PC participants.
//!
//! Each participant is one database with an `accounts (id bigint primary key, balance bigint)`
//! table and a `transfers (gid text, account bigint, delta bigint)` journal that every
//! transaction writes in the same local transaction as its updates (so a test can check, per
//! global transaction, that every database kept it or none did).
//!
//! | 2PC | SQL |
//! |---|---|
//! | prepare | `BEGIN`; `UPDATE accounts … WHERE balance + delta >= 0` per change (no row: refuse); the journal rows; `PREPARE TRANSACTION 'concord_<epoch>_<sequence>_<participant>'` |
//! | commit | `COMMIT PREPARED 'gid'` (an unknown gid: already committed) |
//! | abort | `ROLLBACK PREPARED 'gid'` (an unknown gid: never prepared, or already rolled back) |
//! | in doubt | `SELECT gid FROM pg_prepared_xacts WHERE database = current_database()` |
//!
//! A prepared transaction survives a PostgreSQL restart and holds its row locks until it is
//! committed or rolled back: that is what makes the database a 2PC participant, and what the
//! server's `max_prepared_transactions` (0 by default) must allow.

use std::sync::Mutex;

use anyhow::Context as _;
use concord_core::NodeId;
use concord_txn::{Change, Refusal, TxnId};
use tokio::sync::Semaphore;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::host::Backend;

/// The prefix of every global transaction id this driver prepares.
pub const GID_PREFIX: &str = "concord_";

/// The global transaction id of `txn` at `participant` in PostgreSQL. Prepared-transaction
/// ids are unique per server, not per database, so the participant is part of it.
pub fn gid(txn: TxnId, participant: NodeId) -> String {
    format!("{GID_PREFIX}{}_{}_{participant}", txn.epoch, txn.sequence)
}

/// Parses a global transaction id made by [`gid`].
pub fn parse_gid(gid: &str) -> Option<(TxnId, NodeId)> {
    let mut parts = gid.strip_prefix(GID_PREFIX)?.split('_');
    let txn = TxnId {
        epoch: parts.next()?.parse().ok()?,
        sequence: parts.next()?.parse().ok()?,
    };
    let participant = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((txn, participant))
}

/// Connects to `conninfo` (a libpq connection string), driving the connection on a task.
pub async fn connect(conninfo: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL ({conninfo})"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    // A transaction waits this long for a row lock before giving up (and voting no): no
    // distributed deadlock lasts.
    client
        .batch_execute("SET lock_timeout = '2s'")
        .await
        .context("setting lock_timeout")?;
    Ok(client)
}

/// A fixed set of connections to one database.
#[derive(Debug)]
pub struct Pool {
    clients: Mutex<Vec<Client>>,
    available: Semaphore,
}

impl Pool {
    /// Opens `size` connections to `conninfo`.
    pub async fn open(conninfo: &str, size: usize) -> anyhow::Result<Pool> {
        let mut clients = Vec::with_capacity(size);
        for _ in 0..size {
            clients.push(connect(conninfo).await?);
        }
        Ok(Pool {
            clients: Mutex::new(clients),
            available: Semaphore::new(size),
        })
    }

    /// Runs `work` on a connection of the pool.
    pub async fn with<T, F, Fut>(&self, work: F) -> T
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = (Client, T)>,
    {
        let permit = self
            .available
            .acquire()
            .await
            .expect("the pool is never closed");
        let client = self
            .clients
            .lock()
            .expect("the pool's lock")
            .pop()
            .expect("a permit means a connection");
        let (client, result) = work(client).await;
        self.clients.lock().expect("the pool's lock").push(client);
        drop(permit);
        result
    }
}

/// Creates (or resets) the tables of one participant database: `accounts` ids
/// `0..accounts` at `balance` each, and an empty journal. Rolls back any prepared transaction
/// of this driver left in it.
pub async fn reset(client: &Client, accounts: i64, balance: i64) -> anyhow::Result<()> {
    for gid in prepared_gids(client).await? {
        client
            .batch_execute(&format!("ROLLBACK PREPARED '{gid}'"))
            .await?;
    }
    client
        .batch_execute(
            "DROP TABLE IF EXISTS accounts, transfers;
             CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL);
             CREATE TABLE transfers (txn text NOT NULL, account bigint NOT NULL, delta bigint NOT NULL);",
        )
        .await?;
    client
        .execute(
            "INSERT INTO accounts SELECT g, $2::bigint FROM generate_series(0::bigint, $1::bigint - 1) g",
            &[&accounts, &balance],
        )
        .await?;
    Ok(())
}

/// Ids of this driver's prepared transactions in the database `client` is connected to.
pub async fn prepared_gids(client: &Client) -> anyhow::Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() ORDER BY gid",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| row.get::<_, String>(0))
        .filter(|gid| parse_gid(gid).is_some())
        .collect())
}

/// Transactions prepared for `participant` in the database `client` is connected to.
pub async fn prepared(client: &Client, participant: NodeId) -> anyhow::Result<Vec<TxnId>> {
    Ok(prepared_gids(client)
        .await?
        .iter()
        .filter_map(|gid| parse_gid(gid))
        .filter(|(_, p)| *p == participant)
        .map(|(txn, _)| txn)
        .collect())
}

/// What a database holds: the sum of its balances, and the transactions its journal kept
/// (as `<epoch>_<sequence>`).
pub async fn audit(client: &Client) -> anyhow::Result<(i64, Vec<String>)> {
    let total: i64 = client
        .query_one(
            "SELECT coalesce(sum(balance), 0)::bigint FROM accounts",
            &[],
        )
        .await?
        .get(0);
    let gids = client
        .query("SELECT DISTINCT txn FROM transfers ORDER BY txn", &[])
        .await?
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect();
    Ok((total, gids))
}

/// PostgreSQL databases as participants: participant `i` (from 1) is `pools[i - 1]`.
#[derive(Debug)]
pub struct Postgres {
    pools: Vec<Pool>,
}

impl Postgres {
    /// Participants over `pools`, in participant order.
    pub fn new(pools: Vec<Pool>) -> Self {
        Postgres { pools }
    }

    fn pool(&self, participant: NodeId) -> &Pool {
        &self.pools[participant as usize - 1]
    }
}

/// Runs the local part of `txn` and prepares it; refuses on a missing balance or a lock (or
/// any other database error, after rolling back).
async fn prepare_on(
    client: &Client,
    participant: NodeId,
    txn: TxnId,
    changes: &[Change],
) -> Result<(), Refusal> {
    let gid = gid(txn, participant);
    let journal = format!("{}_{}", txn.epoch, txn.sequence);
    let work = async {
        client.batch_execute("BEGIN").await?;
        for change in changes {
            let updated = client
                .execute(
                    "UPDATE accounts SET balance = balance + $1 WHERE id = $2 AND balance + $1 >= 0",
                    &[&change.delta, &(change.account as i64)],
                )
                .await?;
            if updated == 0 {
                return Ok(Err(Refusal::InsufficientFunds));
            }
            client
                .execute(
                    "INSERT INTO transfers (txn, account, delta) VALUES ($1, $2, $3)",
                    &[&journal, &(change.account as i64), &change.delta],
                )
                .await?;
        }
        client
            .batch_execute(&format!("PREPARE TRANSACTION '{gid}'"))
            .await?;
        Ok::<_, tokio_postgres::Error>(Ok(()))
    };
    match work.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(refusal)) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(refusal)
        }
        Err(_) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(Refusal::Locked)
        }
    }
}

/// Runs `COMMIT PREPARED` or `ROLLBACK PREPARED`; an unknown gid is not an error.
async fn finish_on(
    client: &Client,
    participant: NodeId,
    txn: TxnId,
    verb: &str,
) -> anyhow::Result<()> {
    match client
        .batch_execute(&format!("{verb} PREPARED '{}'", gid(txn, participant)))
        .await
    {
        Ok(()) => Ok(()),
        Err(error) if error.code() == Some(&SqlState::UNDEFINED_OBJECT) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

impl Backend for Postgres {
    async fn prepare(
        &self,
        participant: NodeId,
        txn: TxnId,
        changes: Vec<Change>,
    ) -> Result<(), Refusal> {
        self.pool(participant)
            .with(|client| async move {
                let vote = prepare_on(&client, participant, txn, &changes).await;
                (client, vote)
            })
            .await
    }

    async fn commit(&self, participant: NodeId, txn: TxnId) -> anyhow::Result<()> {
        self.pool(participant)
            .with(|client| async move {
                let result = finish_on(&client, participant, txn, "COMMIT").await;
                (client, result)
            })
            .await
    }

    async fn abort(&self, participant: NodeId, txn: TxnId) -> anyhow::Result<()> {
        self.pool(participant)
            .with(|client| async move {
                let result = finish_on(&client, participant, txn, "ROLLBACK").await;
                (client, result)
            })
            .await
    }

    async fn in_doubt(&self, participant: NodeId) -> anyhow::Result<Vec<TxnId>> {
        self.pool(participant)
            .with(|client| async move {
                let result = prepared(&client, participant).await;
                (client, result)
            })
            .await
    }
}
