//! A node's durable log of `concord-txn` writes on a `concord_runtime::Wal` (one JSON record
//! per write), replayed into its storage on open.

use std::path::Path;

use concord_core::Node;
use concord_runtime::{Wal, WalError, WalOptions};
use serde::{de::DeserializeOwned, Serialize};

/// Why a log cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The write-ahead log failed.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A record is not a write this node understands.
    #[error("log record {index} cannot be decoded: {source}")]
    Decode {
        /// The record's position.
        index: usize,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// An open log of `N`'s writes.
#[derive(Debug)]
pub struct DurableLog {
    wal: Wal,
    unsynced: usize,
}

impl DurableLog {
    /// Opens (or creates) the log in `dir` and returns it with the storage its records add
    /// up to.
    pub fn open<N>(dir: &Path) -> Result<(DurableLog, N::Storage), LogError>
    where
        N: Node,
        N::Write: DeserializeOwned,
    {
        let (wal, records, _report) = Wal::open(dir, WalOptions::default())?;
        let mut storage = N::Storage::default();
        for (index, record) in records.iter().enumerate() {
            let write: N::Write = serde_json::from_slice(record)
                .map_err(|source| LogError::Decode { index, source })?;
            N::apply_write(&mut storage, &write);
        }
        Ok((DurableLog { wal, unsynced: 0 }, storage))
    }

    /// Appends one write (durable only after [`DurableLog::sync`]).
    pub fn append<W: Serialize>(&mut self, write: &W) -> Result<(), WalError> {
        let bytes = serde_json::to_vec(write).expect("writes serialize");
        self.wal.append(&bytes)?;
        self.unsynced += 1;
        Ok(())
    }

    /// Makes every appended write durable (one fsync); returns how many it covered.
    pub fn sync(&mut self) -> Result<usize, WalError> {
        if self.unsynced == 0 {
            return Ok(0);
        }
        self.wal.sync()?;
        Ok(std::mem::take(&mut self.unsynced))
    }

    /// Writes appended and not yet synced.
    pub fn unsynced(&self) -> usize {
        self.unsynced
    }
}
