//! Backups: a running node streams its state (the Maintenance `Snapshot` RPC, so
//! `etcdctl snapshot save FILE` works), and [`restore`] seeds a new node's data directory from
//! such a file (`concord db restore`), as `etcdctl snapshot restore` does for etcd.
//!
//! A backup is what etcd's is: a bbolt database in etcd's backend layout ([`crate::bolt`]),
//! followed by its SHA-256 (which `etcdctl snapshot save` checks). So `etcdctl snapshot status`
//! reads Concord's backups and `etcdctl snapshot restore` turns one into an etcd member's data
//! directory; and `concord db restore` reads etcd's snapshots as well as Concord's, which moves
//! a key space between the two in either direction, revisions, history and leases included.
//!
//! etcd's layout, as far as a key space needs it (etcd 3.4 `mvcc/kvstore.go`,
//! `lease/lessor.go`, `etcdserver/api/membership/store.go`):
//!
//! * bucket `key`: one entry per retained write. The key is the revision, 8 bytes of main
//!   revision and 8 of sub-revision, big-endian, joined by `_`, and a `t` after a deletion's;
//!   the value is the `mvccpb.KeyValue` protobuf (a deletion's holds the key only).
//! * bucket `meta`: `finishedCompactRev` and `scheduledCompactRev`, the last compaction's
//!   revision in the same 17-byte form.
//! * bucket `lease`: the lease ID (8 bytes, big-endian) → the `leasepb.Lease` protobuf (ID,
//!   TTL, remaining TTL).
//! * buckets `members` and `members_removed`: the member ID in hex → its JSON, or `removed`.
//!   Restoring drops both, here as in etcd: the new cluster's members replace them.
//!
//! Backups written by earlier versions of Concord DB (a `CNCDBKUP` tag, the store's snapshot
//! encoding, padding and the SHA-256) are still read.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use concord_raft::{HardState, Membership, Snapshot, SnapshotMeta, Storage};
use concord_runtime::WalOptions;
use prost::Message;
use sha2::{Digest, Sha256};

use super::DbNode;
use crate::bolt::{self, Buckets};
use crate::members::MemberAttrs;
use crate::mvcc::EventKind;
use crate::pb::mvccpb;
use crate::snapshot::{SnapshotData, SnapshotLease, SnapshotRecord};
use crate::types::{KeyValue, Revision};
use crate::KvStore;

/// Bytes of the checksum that ends a backup.
const CHECKSUM_BYTES: usize = 32;
/// The first bytes of a backup written by Concord DB before it wrote etcd's format.
const LEGACY_TAG: &[u8; 8] = b"CNCDBKUP";
/// A body whose length is a multiple of this, followed by 32 bytes, carries a SHA-256 (the
/// test `etcdctl snapshot restore` applies).
const ALIGN: usize = 512;

const KEY_BUCKET: &[u8] = b"key";
const META_BUCKET: &[u8] = b"meta";
const LEASE_BUCKET: &[u8] = b"lease";
const MEMBERS_BUCKET: &[u8] = b"members";
const REMOVED_BUCKET: &[u8] = b"members_removed";
const FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
const SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
/// Bytes of a revision key, and of a deletion's (with its `t`).
const REVISION_BYTES: usize = 17;

/// etcd's `leasepb.Lease`.
#[derive(Clone, PartialEq, Message)]
struct LeaseRecord {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
    #[prost(int64, tag = "3")]
    remaining_ttl: i64,
}

/// etcd's JSON for a member in its `members` bucket.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct MemberRecord<'a> {
    id: u64,
    #[serde(rename = "peerURLs")]
    peer_urls: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    is_learner: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(rename = "clientURLs", skip_serializing_if = "<[String]>::is_empty")]
    client_urls: &'a [String],
}

/// Why a backup cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Shorter than its checksum.
    #[error("not a backup: {0} bytes is too short")]
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

fn corrupt<T>(message: impl Into<String>) -> Result<T, BackupError> {
    Err(BackupError::Corrupt(message.into()))
}

/// A backup of a store from its snapshot encoding (`KvStore::encode`, the node's own, so
/// trusted): a bbolt file in etcd's layout, then its SHA-256. The records go from the
/// encoding to the file without the store being rebuilt. Each form is dropped once the next
/// is made (the encoding once decoded, the buckets once written): besides the live store, at
/// most two copies of the key space are held at once.
pub fn backup_of_encoding(encoding: Vec<u8>) -> Result<Vec<u8>, BackupError> {
    let data = SnapshotData::decode(&encoding).map_err(|e| BackupError::Corrupt(e.to_string()))?;
    drop(encoding);
    let buckets = etcd_buckets(data);
    let mut bytes = bolt::write(&buckets);
    drop(buckets);
    let checksum = Sha256::digest(&bytes);
    bytes.extend_from_slice(&checksum);
    Ok(bytes)
}

/// A revision as etcd's `key` bucket orders it.
fn revision_key(main: Revision, sub: i64, deletion: bool) -> Vec<u8> {
    let mut key = Vec::with_capacity(REVISION_BYTES + 1);
    key.extend_from_slice(&main.to_be_bytes());
    key.push(b'_');
    key.extend_from_slice(&sub.to_be_bytes());
    if deletion {
        key.push(b't');
    }
    key
}

/// A store's state in etcd's backend buckets (the module docs).
fn etcd_buckets(data: SnapshotData) -> Buckets {
    let mut buckets = Buckets::new();
    let keys = data
        .records
        .into_iter()
        .map(|record| {
            let main = record.kv.mod_revision;
            let deletion = record.kind == EventKind::Delete;
            let value = if deletion {
                mvccpb::KeyValue {
                    key: record.kv.key,
                    ..Default::default()
                }
            } else {
                super::convert::kv_to_pb(record.kv)
            };
            (
                revision_key(main, record.sub, deletion),
                value.encode_to_vec(),
            )
        })
        .collect();
    buckets.insert(KEY_BUCKET.to_vec(), keys);
    let mut meta = BTreeMap::new();
    if data.compact_revision > 0 {
        let at = revision_key(data.compact_revision, 0, false);
        meta.insert(FINISHED_COMPACT.to_vec(), at.clone());
        meta.insert(SCHEDULED_COMPACT.to_vec(), at);
    }
    buckets.insert(META_BUCKET.to_vec(), meta);
    let leases = data
        .leases
        .iter()
        .map(|lease| {
            let record = LeaseRecord {
                id: lease.id,
                ttl: lease.ttl,
                remaining_ttl: lease.remaining_ttl,
            };
            (lease.id.to_be_bytes().to_vec(), record.encode_to_vec())
        })
        .collect();
    buckets.insert(LEASE_BUCKET.to_vec(), leases);
    let members = data
        .members
        .iter()
        .map(|member| {
            let record = MemberRecord {
                id: member.id,
                peer_urls: &member.peer_urls,
                is_learner: member.is_learner,
                name: &member.name,
                client_urls: &member.client_urls,
            };
            // Plain strings and numbers always serialize.
            let json = serde_json::to_vec(&record).unwrap_or_default();
            (format!("{:x}", member.id).into_bytes(), json)
        })
        .collect();
    buckets.insert(MEMBERS_BUCKET.to_vec(), members);
    let removed = data
        .removed
        .iter()
        .map(|id| (format!("{id:x}").into_bytes(), b"removed".to_vec()))
        .collect();
    buckets.insert(REMOVED_BUCKET.to_vec(), removed);
    buckets
}

/// The main revision a 17-byte revision key names.
fn main_revision(key: &[u8]) -> Result<(Revision, i64), BackupError> {
    if key.len() < REVISION_BYTES || key[8] != b'_' {
        return corrupt(format!("a revision key of {} bytes", key.len()));
    }
    let main = i64::from_be_bytes(key[..8].try_into().expect("8 bytes"));
    let sub = i64::from_be_bytes(key[9..17].try_into().expect("8 bytes"));
    Ok((main, sub))
}

/// A key space from etcd's backend buckets. Members are not read: a restore replaces them.
fn store_of_buckets(buckets: &Buckets) -> Result<KvStore, BackupError> {
    let Some(keys) = buckets.get(KEY_BUCKET) else {
        return corrupt("no `key` bucket: not an etcd or Concord DB backup");
    };
    let mut records = Vec::with_capacity(keys.len());
    let mut revision: Revision = 1;
    for (at, value) in keys {
        let (main, sub) = main_revision(at)?;
        let deletion = match &at[REVISION_BYTES..] {
            [] => false,
            [b't'] => true,
            _ => return corrupt("a revision key with a bad suffix"),
        };
        let kv = mvccpb::KeyValue::decode(value.as_slice())
            .map_err(|e| BackupError::Corrupt(format!("the record at revision {main}: {e}")))?;
        let (kind, kv) = if deletion {
            (EventKind::Delete, KeyValue::tombstone(kv.key, main))
        } else {
            let kv = super::convert::kv_from_pb(kv);
            if kv.mod_revision != main {
                return corrupt(format!(
                    "the record at revision {main} says it was written at {}",
                    kv.mod_revision
                ));
            }
            (EventKind::Put, kv)
        };
        revision = revision.max(main);
        records.push(SnapshotRecord { sub, kind, kv });
    }
    let mut compact_revision = 0;
    if let Some(at) = buckets
        .get(META_BUCKET)
        .and_then(|meta| meta.get(FINISHED_COMPACT))
    {
        compact_revision = main_revision(at)?.0;
    }
    // As etcd restores it: the last write's revision, unless a compaction is later.
    revision = revision.max(compact_revision);
    let mut leases = Vec::new();
    for value in buckets
        .get(LEASE_BUCKET)
        .into_iter()
        .flat_map(BTreeMap::values)
    {
        let lease = LeaseRecord::decode(value.as_slice())
            .map_err(|e| BackupError::Corrupt(format!("a lease: {e}")))?;
        leases.push(SnapshotLease {
            id: lease.id,
            ttl: lease.ttl,
            remaining_ttl: lease.remaining_ttl,
        });
    }
    KvStore::from_data(SnapshotData {
        revision,
        compact_revision,
        records,
        leases,
        members: Vec::<MemberAttrs>::new(),
        removed: Vec::new(),
        // A restored cluster starts without alarms (a space alarm is raised again if the
        // store is still over a member's quota).
        alarms: Vec::new(),
    })
    .map_err(|e| BackupError::Corrupt(e.to_string()))
}

/// Checks a backup's checksum and reads the key space in it: etcd's format (a bbolt file, from
/// `etcdctl snapshot save` against etcd or Concord DB, or etcd's own `member/snap/db`, which
/// carries no checksum), or a backup of an earlier Concord DB. Members are not read: a restore
/// replaces them.
pub fn read_backup(bytes: &[u8]) -> Result<KvStore, BackupError> {
    if bytes.len() < CHECKSUM_BYTES + 16 {
        return Err(BackupError::TooShort(bytes.len()));
    }
    let body = if bytes.len() % ALIGN == CHECKSUM_BYTES {
        let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
        if Sha256::digest(body).as_slice() != checksum {
            return Err(BackupError::Checksum);
        }
        body
    } else if bytes.len().is_multiple_of(ALIGN) && !bytes.starts_with(LEGACY_TAG) {
        bytes
    } else {
        return Err(BackupError::Checksum);
    };
    if let Some(rest) = body.strip_prefix(LEGACY_TAG) {
        return read_legacy(rest);
    }
    let buckets = bolt::read(body).map_err(|e| BackupError::Corrupt(e.to_string()))?;
    store_of_buckets(&buckets)
}

/// A backup from before Concord DB wrote etcd's format: the length (u64, little-endian) of the
/// store's snapshot encoding, the encoding, and padding.
fn read_legacy(rest: &[u8]) -> Result<KvStore, BackupError> {
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
            data: store.encode_parts(),
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
    use crate::request::RequestOp;
    use crate::{Command, CompactRequest, DeleteRangeRequest, PutRequest, TxnRequest};

    /// A store with history, a compaction, deletions, a transaction's sub-revisions and a lease.
    fn store() -> KvStore {
        let mut store = KvStore::default();
        for i in 0..50 {
            store.apply(&Command::Put(PutRequest::new(
                format!("k{i:02}"),
                format!("v{i}"),
            )));
        }
        store.apply(&Command::Put(PutRequest::new("k03", "again")));
        store.apply(&Command::DeleteRange(DeleteRangeRequest::new("k05", "")));
        store.apply(&Command::Compact(CompactRequest {
            revision: 20,
            physical: false,
        }));
        store.apply(&Command::LeaseGrant { id: 7, ttl: 600 });
        let mut leased = PutRequest::new("leased", "x");
        leased.lease = 7;
        store.apply(&Command::Put(leased));
        store.apply(&Command::Txn(TxnRequest {
            success: vec![
                RequestOp::Put(PutRequest::new("t1", "a")),
                RequestOp::Put(PutRequest::new("t2", "b")),
                RequestOp::DeleteRange(DeleteRangeRequest::new("k01", "")),
            ],
            ..Default::default()
        }));
        store.apply(&Command::Put(PutRequest::new("big", "z".repeat(10_000))));
        store
    }

    #[test]
    fn a_backup_reads_back_as_the_same_key_space() {
        let store = store();
        let bytes = backup_of_encoding(store.encode()).unwrap();
        assert!((bytes.len() - CHECKSUM_BYTES).is_multiple_of(bolt::PAGE_SIZE));
        let mut expected = store.clone();
        expected.members.clear();
        expected.removed.clear();
        assert_eq!(read_backup(&bytes).unwrap(), expected);
    }

    #[test]
    fn a_damaged_or_truncated_backup_is_refused() {
        let bytes = backup_of_encoding(store().encode()).unwrap();
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
        // Without its checksum (etcd's `member/snap/db`), a damaged file fails to decode.
        let body = &bytes[..bytes.len() - CHECKSUM_BYTES];
        assert!(read_backup(body).is_ok());
        let mut damaged = body.to_vec();
        damaged[bolt::PAGE_SIZE * 3 + 20] ^= 0xff;
        assert!(read_backup(&damaged).is_err());
    }

    #[test]
    fn reads_a_snapshot_etcd_wrote() {
        let store = read_backup(include_bytes!("../../tests/data/etcd-3.4.23.snap")).unwrap();
        // etcd's run: k1..k10 at 2..11, k3 again at 12, k5 deleted at 13, `leased` at 14 with
        // lease TTL 600, a transaction at 15 (t1, t2, delete k1), `big` at 16; compacted at 4.
        assert_eq!(store.revision(), 16);
        assert_eq!(store.compact_revision(), 4);
        let kv = store.mvcc.latest(b"k3").unwrap();
        assert_eq!(
            (
                kv.value.as_slice(),
                kv.create_revision,
                kv.mod_revision,
                kv.version
            ),
            (b"again".as_slice(), 4, 12, 2)
        );
        assert!(store.mvcc.latest(b"k5").is_none());
        assert!(store.mvcc.latest(b"k1").is_none());
        assert_eq!(store.mvcc.latest(b"t2").unwrap().mod_revision, 15);
        assert_eq!(store.mvcc.latest(b"big").unwrap().value.len(), 10_000);
        let leased = store.mvcc.latest(b"leased").unwrap().lease;
        assert_eq!(store.leases[&leased].ttl, 600);
        assert!(store.leases[&leased].keys.contains(b"leased".as_slice()));
        // Written back in the same layout, the key bucket is byte for byte etcd's.
        let etcd = bolt::read(include_bytes!("../../tests/data/etcd-3.4.23.snap")).unwrap();
        let ours = etcd_buckets(SnapshotData::decode(&store.encode()).unwrap());
        assert_eq!(ours[KEY_BUCKET], etcd[KEY_BUCKET]);
        assert_eq!(ours[LEASE_BUCKET], etcd[LEASE_BUCKET]);
    }

    #[test]
    fn a_backup_of_an_earlier_version_still_reads() {
        let store = store();
        let encoding = store.encode();
        let body = LEGACY_TAG.len() + 8 + encoding.len();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(LEGACY_TAG);
        bytes.extend_from_slice(&(encoding.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&encoding);
        bytes.resize(body.next_multiple_of(ALIGN), 0);
        let checksum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&checksum);
        assert_eq!(read_backup(&bytes).unwrap(), store);
    }
}
