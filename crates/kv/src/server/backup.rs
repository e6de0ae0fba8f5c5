//! Backups: a running node streams its state (the Maintenance `Snapshot` RPC, so
//! `etcdctl snapshot save FILE` works), and [`restore`] seeds a new node's data directory from
//! such a file (`concord db restore`), as `etcdctl snapshot restore` does for etcd.
//!
//! A backup file is a tag (`CNCDBKUP`), the length (u64, little-endian) of the store's snapshot
//! encoding (`KvStore::encode`: the key space with its retained history, leases, members), that
//! encoding, zeros up to a multiple of 512 bytes, and the SHA-256 of everything before it. The
//! padding and the trailing SHA-256 are what `etcdctl snapshot save` checks for (etcd streams
//! page-aligned bbolt files followed by their SHA-256). It is not a bbolt file:
//! `etcdctl snapshot status` and `etcdctl snapshot restore` do not read it;
//! `concord db restore` does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use concord_raft::{HardState, Membership, Snapshot, SnapshotMeta, Storage};
use concord_runtime::WalOptions;
use sha2::{Digest, Sha256};

use super::DbNode;
use crate::KvStore;

/// Bytes of the checksum that ends a backup.
const CHECKSUM_BYTES: usize = 32;
/// The first bytes of a backup.
const BACKUP_TAG: &[u8; 8] = b"CNCDBKUP";
/// The backup's body is padded to a multiple of this.
const ALIGN: usize = 512;

/// Why a backup cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Shorter than its checksum.
    #[error("not a Concord DB backup: {0} bytes is too short")]
    TooShort(usize),
    /// The checksum does not match: the file is damaged or truncated.
    #[error("the backup's SHA-256 does not match its contents: the file is damaged or truncated")]
    Checksum,
    /// The contents do not decode as a store.
    #[error("the backup does not decode: {0}")]
    Corrupt(String),
    /// The target directory cannot take it.
    #[error("{0}")]
    DataDir(String),
}

/// A backup of `store` (the format is in the module docs).
pub fn backup_bytes(store: &KvStore) -> Vec<u8> {
    backup_of_encoding(&store.encode())
}

/// A backup of a store's snapshot encoding (`KvStore::encode`).
pub fn backup_of_encoding(encoding: &[u8]) -> Vec<u8> {
    let body = BACKUP_TAG.len() + 8 + encoding.len();
    let mut bytes = Vec::with_capacity(body.next_multiple_of(ALIGN) + CHECKSUM_BYTES);
    bytes.extend_from_slice(BACKUP_TAG);
    bytes.extend_from_slice(&(encoding.len() as u64).to_le_bytes());
    bytes.extend_from_slice(encoding);
    bytes.resize(body.next_multiple_of(ALIGN), 0);
    let checksum = Sha256::digest(&bytes);
    bytes.extend_from_slice(&checksum);
    bytes
}

/// Checks a backup's checksum and decodes the store in it.
pub fn read_backup(bytes: &[u8]) -> Result<KvStore, BackupError> {
    if bytes.len() < BACKUP_TAG.len() + 8 + CHECKSUM_BYTES {
        return Err(BackupError::TooShort(bytes.len()));
    }
    let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
    if Sha256::digest(body).as_slice() != checksum {
        return Err(BackupError::Checksum);
    }
    let rest = body
        .strip_prefix(BACKUP_TAG)
        .ok_or_else(|| BackupError::Corrupt("not a Concord DB backup (bad tag)".into()))?;
    let (length, rest) = rest.split_at(8);
    let length = u64::from_le_bytes(length.try_into().expect("8 bytes"));
    let encoding = usize::try_from(length)
        .ok()
        .and_then(|length| rest.get(..length))
        .ok_or_else(|| BackupError::Corrupt(format!("a length of {length} bytes overruns it")))?;
    KvStore::decode(encoding).map_err(|e| BackupError::Corrupt(e.to_string()))
}

/// What [`restore`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The store's revision.
    pub revision: i64,
    /// Live keys.
    pub keys: u64,
}

/// Seeds the empty data directory `data_dir` of node `id` of a new cluster `initial_cluster`
/// with the key space of a backup. Every node of the new cluster is restored from the same
/// file; they start from one snapshot (index 1, term 1) whose configuration is the new
/// cluster's, keep the backup's revisions and leases, and publish their member attributes
/// when they start (the old cluster's members are dropped, as etcd's restore does).
pub fn restore(
    backup: &[u8],
    data_dir: &Path,
    id: u64,
    initial_cluster: &BTreeMap<u64, SocketAddr>,
) -> Result<Restored, BackupError> {
    if !initial_cluster.contains_key(&id) {
        return Err(BackupError::DataDir(format!(
            "--initial-cluster does not list this node ({id})"
        )));
    }
    let mut store = read_backup(backup)?;
    store.members.clear();
    store.removed.clear();
    let restored = Restored {
        revision: store.revision(),
        keys: store.status().keys,
    };
    let membership = Membership {
        voters: initial_cluster.keys().copied().collect(),
        outgoing_voters: BTreeSet::new(),
        learners: BTreeSet::new(),
    };
    let storage: Storage<crate::Command> = Storage {
        hard_state: HardState {
            current_term: 1,
            voted_for: None,
        },
        snapshot: Some(Snapshot {
            meta: Arc::new(SnapshotMeta {
                last_index: 1,
                last_term: 1,
                membership,
            }),
            data: Arc::from(store.encode()),
        }),
        entries: Vec::new(),
    };
    std::fs::create_dir_all(data_dir)
        .map_err(|e| BackupError::DataDir(format!("creating {}: {e}", data_dir.display())))?;
    concord_runtime::seed_storage::<DbNode>(data_dir, &storage, WalOptions::default())
        .map_err(|e| BackupError::DataDir(e.to_string()))?;
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use concord_core::StateMachine;

    use super::*;
    use crate::{Command, PutRequest};

    #[test]
    fn a_damaged_or_truncated_backup_is_refused() {
        let mut store = KvStore::default();
        store.apply(&Command::Put(PutRequest::new("k", "v")));
        let bytes = backup_bytes(&store);
        assert_eq!(read_backup(&bytes).unwrap(), store);
        let mut flipped = bytes.clone();
        flipped[10] ^= 1;
        assert!(matches!(read_backup(&flipped), Err(BackupError::Checksum)));
        assert!(matches!(
            read_backup(&bytes[..bytes.len() - 1]),
            Err(BackupError::Checksum)
        ));
        assert!(matches!(
            read_backup(&[1, 2]),
            Err(BackupError::TooShort(2))
        ));
        assert_eq!(
            (bytes.len() - CHECKSUM_BYTES) % ALIGN,
            0,
            "page-aligned body"
        );
    }
}
