//! The snapshot format: a magic tag, then the retained writes, leases, members and the IDs of
//! removed members encoded with postcard. The index and the lease key sets are rebuilt on restore, and every record is
//! checked, so a corrupt or hostile snapshot is refused instead of breaking an invariant.
//!
//! Encoding is deterministic (ordered maps only), so equal stores give equal bytes and
//! [`KvStore::digest`] is a content digest.

use std::collections::BTreeMap;

use bytes::Bytes;
use concord_core::StateBytes;
use serde::{Deserialize, Serialize};

use crate::members::MemberAttrs;
use crate::mvcc::{EventKind, Mvcc, Record, INITIAL_REVISION};
use crate::store::{Alarm, KvStore, Lease};
use crate::types::{KeyValue, LeaseId, Revision, SubRevision, NO_LEASE};

/// The first bytes of every snapshot: format name and version.
const MAGIC: &[u8; 8] = b"CNCDKV02";

/// Why a snapshot could not be restored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes do not start with the snapshot tag (not a snapshot, or another version).
    #[error("corrupt snapshot: not a Concord DB snapshot (bad magic)")]
    BadMagic,
    /// The bytes after the tag do not decode.
    #[error("corrupt snapshot: {0}")]
    Decode(String),
    /// The decoded content breaks an invariant.
    #[error("corrupt snapshot: {0}")]
    Inconsistent(String),
}

/// A retained write: its sub-revision, and the key-value (a tombstone for a delete) whose
/// `mod_revision` is its main revision.
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    pub(crate) sub: i64,
    pub(crate) kind: EventKind,
    pub(crate) kv: KeyValue,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotLease {
    pub(crate) id: LeaseId,
    pub(crate) ttl: i64,
    pub(crate) remaining_ttl: i64,
}

/// A store's whole state, as plain data: what a snapshot encodes, and what a backup in etcd's
/// format is read into ([`KvStore::from_data`] checks it either way).
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotData {
    pub(crate) revision: Revision,
    pub(crate) compact_revision: Revision,
    /// Records in revision order; the main revision is the record's `mod_revision`.
    pub(crate) records: Vec<SnapshotRecord>,
    pub(crate) leases: Vec<SnapshotLease>,
    pub(crate) members: Vec<MemberAttrs>,
    pub(crate) removed: Vec<u64>,
    /// Active alarms. Encoded after the rest, and only when there are any: a store without
    /// alarms encodes as before alarms existed, and such snapshots still decode.
    #[serde(skip)]
    pub(crate) alarms: Vec<(u64, Alarm)>,
}

impl SnapshotData {
    /// The plain data of [`KvStore::encode`]'s bytes, unchecked ([`KvStore::from_data`] checks).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let body = bytes.strip_prefix(MAGIC).ok_or(SnapshotError::BadMagic)?;
        let decode = |error: postcard::Error| SnapshotError::Decode(error.to_string());
        let (mut data, mut rest): (SnapshotData, &[u8]) =
            postcard::take_from_bytes(body).map_err(decode)?;
        if !rest.is_empty() {
            (data.alarms, rest) = postcard::take_from_bytes(rest).map_err(decode)?;
            if data.alarms.is_empty() {
                return Err(SnapshotError::Decode(
                    "an empty alarm list is never encoded".into(),
                ));
            }
        }
        if !rest.is_empty() {
            return Err(SnapshotError::Decode(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        Ok(data)
    }
}

/// A record as the snapshot encodes it (a `SnapshotRecord`), borrowed.
#[derive(Serialize)]
struct SnapshotRecordRef<'a> {
    sub: i64,
    kind: EventKind,
    kv: &'a KeyValue,
}

/// The records of a store's log encoded as its snapshot encodes them — the elements of
/// `SnapshotData::records`, in revision order — kept up to date write by write, so that a
/// snapshot shares these bytes instead of encoding every record while the node waits. Writes
/// only append to the log; a compaction (which removes records) re-encodes it. It costs a second
/// copy of the log's contents in memory. The bytes are kept in chunks of about
/// [`CHUNK_BYTES`]: full chunks are sealed (immutable and shared), so a snapshot
/// ([`KvStore::encode_parts`]) copies only the chunk still growing; and one growing buffer
/// would, each time it doubles, copy all of itself while the node waits.
#[derive(Clone, Default)]
pub(crate) struct EncodedRecords {
    sealed: Vec<Bytes>,
    tail: Vec<u8>,
    count: usize,
}

/// Appends what postcard writes to a buffer it borrows.
struct Append<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Append<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

/// The size a chunk of [`EncodedRecords`] grows to before it is sealed.
const CHUNK_BYTES: usize = 1 << 20;

impl EncodedRecords {
    /// Encodes every record of `records` (in revision order).
    pub(crate) fn of<'a>(records: impl Iterator<Item = (&'a SubRevision, &'a Record)>) -> Self {
        let mut encoded = EncodedRecords::default();
        for (at, record) in records {
            encoded.push(at, record);
        }
        encoded
    }

    /// The encoded records' bytes.
    pub(crate) fn len(&self) -> usize {
        self.sealed.iter().map(Bytes::len).sum::<usize>() + self.tail.len()
    }

    /// Appends one record (written after every record already here).
    pub(crate) fn push(&mut self, at: &SubRevision, record: &Record) {
        let value = SnapshotRecordRef {
            sub: at.sub,
            kind: record.kind,
            kv: &record.kv,
        };
        if self.tail.len() >= CHUNK_BYTES {
            let full = std::mem::replace(&mut self.tail, Vec::with_capacity(CHUNK_BYTES + 1024));
            // Sealing shares the buffer, not copies it.
            self.sealed.push(Bytes::from(full));
        } else if self.tail.capacity() == 0 {
            self.tail.reserve_exact(CHUNK_BYTES + 1024);
        }
        let before = self.tail.len();
        // Encoding plain data into a buffer cannot fail; were it to, nothing is kept of it.
        if postcard::to_extend(&value, Append(&mut self.tail)).is_ok() {
            self.count += 1;
        } else {
            self.tail.truncate(before);
        }
    }

    /// The encoded records as shared parts: the sealed chunks, and a copy of the growing one.
    fn parts(&self) -> impl Iterator<Item = Bytes> + '_ {
        self.sealed
            .iter()
            .cloned()
            .chain(std::iter::once(Bytes::copy_from_slice(&self.tail)))
    }
}

/// Derived data: equal stores may have grown their copies differently.
impl PartialEq for EncodedRecords {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for EncodedRecords {}

impl std::fmt::Debug for EncodedRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EncodedRecords({} records, {} bytes)",
            self.count,
            self.len()
        )
    }
}

fn inconsistent(message: String) -> SnapshotError {
    SnapshotError::Inconsistent(message)
}

impl KvStore {
    /// The whole state as bytes (what [`concord_core::StateMachine::snapshot`] returns).
    pub fn encode(&self) -> Vec<u8> {
        let parts = self.encode_parts();
        let mut bytes = Vec::with_capacity(parts.len());
        for part in parts.parts() {
            bytes.extend_from_slice(part);
        }
        bytes
    }

    /// [`KvStore::encode`]'s bytes as shared parts (what
    /// [`concord_core::StateMachine::snapshot_parts`] returns): the records' sealed chunks are
    /// shared, so this copies at most one chunk of them.
    pub fn encode_parts(&self) -> StateBytes {
        // The same bytes as `SnapshotData` (postcard encodes a struct as its fields in order, a
        // vector as its length then its elements), with the records taken from the store's
        // running encoding of its log.
        let records = self.mvcc.encoded();
        let leases: Vec<SnapshotLease> = self
            .leases
            .iter()
            .map(|(id, lease)| SnapshotLease {
                id: *id,
                ttl: lease.ttl,
                remaining_ttl: lease.remaining_ttl,
            })
            .collect();
        let members: Vec<&MemberAttrs> = self.members.values().collect();
        let mut head = Vec::with_capacity(MAGIC.len() + 32);
        head.extend_from_slice(MAGIC);
        let counts = (
            self.mvcc.revision(),
            self.mvcc.compact_revision(),
            records.count,
        );
        // Encoding plain data into a Vec cannot fail.
        head = postcard::to_extend(&counts, head).unwrap_or_default();
        let removed: Vec<u64> = self.removed.iter().copied().collect();
        let mut tail = postcard::to_allocvec(&(leases, members, removed)).unwrap_or_default();
        if !self.alarms.is_empty() {
            let alarms: Vec<(u64, Alarm)> = self.alarms.iter().copied().collect();
            tail = postcard::to_extend(&alarms, tail).unwrap_or_default();
        }
        StateBytes::from_parts(
            std::iter::once(Bytes::from(head))
                .chain(records.parts())
                .chain(std::iter::once(Bytes::from(tail))),
        )
    }

    /// Rebuilds a store from [`KvStore::encode`]'s bytes, checking them.
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        Self::from_data(SnapshotData::decode(bytes)?)
    }

    /// Rebuilds a store from its state as plain data, checking every record and invariant.
    pub(crate) fn from_data(data: SnapshotData) -> Result<Self, SnapshotError> {
        if data.revision < 0
            || data.revision == Revision::MAX
            || data.compact_revision < 0
            || data.compact_revision > data.revision
        {
            return Err(inconsistent(format!(
                "revision {} with compaction at {}",
                data.revision, data.compact_revision
            )));
        }
        let mut records = BTreeMap::new();
        for record in data.records {
            check_record(&record, data.revision)?;
            let at = SubRevision {
                main: record.kv.mod_revision,
                sub: record.sub,
            };
            let previous = records.insert(
                at,
                Record {
                    kind: record.kind,
                    kv: record.kv,
                },
            );
            if previous.is_some() {
                return Err(inconsistent(format!("two records at {at:?}")));
            }
        }
        // A never-written store is at revision 1 (etcd's numbering). Snapshots from before
        // Concord adopted it encode such a store at revision 0 (the checks above refuse any
        // record or compaction with it): read it as the empty store it is.
        let revision = data.revision.max(INITIAL_REVISION);
        let mvcc = Mvcc::from_records(revision, data.compact_revision, records);
        mvcc.check_invariants().map_err(inconsistent)?;
        let mut store = KvStore {
            mvcc,
            ..KvStore::default()
        };
        for lease in data.leases {
            let fresh = Lease {
                ttl: lease.ttl,
                remaining_ttl: lease.remaining_ttl,
                keys: Default::default(),
            };
            if lease.id == NO_LEASE || store.leases.insert(lease.id, fresh).is_some() {
                return Err(inconsistent(format!("lease ID {} repeated or 0", lease.id)));
            }
        }
        for member in data.members {
            if member.id == 0 || store.members.insert(member.id, member).is_some() {
                return Err(inconsistent("member ID repeated or 0".into()));
            }
        }
        for id in data.removed {
            if !store.removed.insert(id) {
                return Err(inconsistent(format!("removed member ID {id} repeated")));
            }
        }
        for alarm in data.alarms {
            if !store.alarms.insert(alarm) {
                return Err(inconsistent(format!("alarm {alarm:?} repeated")));
            }
        }
        attach_leases(&mut store)?;
        store.check_invariants().map_err(inconsistent)?;
        Ok(store)
    }

    /// A digest of the whole state (FNV-1a over the snapshot bytes): equal on every replica
    /// that applied the same commands.
    pub fn digest(&self) -> u64 {
        concord_core::digest(&self.encode())
    }
}

/// Rebuilds each lease's key set from the live keys that carry it.
fn attach_leases(store: &mut KvStore) -> Result<(), SnapshotError> {
    let revision = store.mvcc.revision();
    let attached: Vec<(LeaseId, Vec<u8>)> = store
        .mvcc
        .range_at(crate::types::KeyRange::new(&[0], &[0]), revision)
        .filter(|kv| kv.lease != NO_LEASE)
        .map(|kv| (kv.lease, kv.key.clone()))
        .collect();
    for (id, key) in attached {
        let lease = store
            .leases
            .get_mut(&id)
            .ok_or_else(|| inconsistent(format!("{key:?} is attached to missing lease {id}")))?;
        lease.keys.insert(key);
    }
    Ok(())
}

/// Checks one record's own consistency.
fn check_record(record: &SnapshotRecord, revision: Revision) -> Result<(), SnapshotError> {
    let kv = &record.kv;
    let main = kv.mod_revision;
    let fail = |what: &str| {
        Err(inconsistent(format!(
            "record at ({main}, {}): {what}",
            record.sub
        )))
    };
    if kv.key.is_empty() {
        return fail("empty key");
    }
    if main < 1 || main > revision || record.sub < 0 {
        return fail("revision out of range");
    }
    match record.kind {
        EventKind::Put => {
            if kv.version < 1 || kv.create_revision < 1 || kv.create_revision > main {
                return fail("bad version or create revision");
            }
        }
        EventKind::Delete => {
            if *kv != KeyValue::tombstone(kv.key.clone(), main) {
                return fail("tombstone with data");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use concord_core::StateMachine;

    use super::*;
    use crate::{Command, CompactRequest, DeleteRangeRequest, PutRequest};

    /// The snapshot encoded from scratch, record by record.
    fn encode_whole(store: &KvStore) -> Vec<u8> {
        #[derive(Serialize)]
        struct Whole<'a> {
            revision: Revision,
            compact_revision: Revision,
            records: Vec<SnapshotRecordRef<'a>>,
            leases: Vec<SnapshotLease>,
            members: Vec<&'a MemberAttrs>,
            removed: Vec<u64>,
        }
        let whole = Whole {
            revision: store.mvcc.revision(),
            compact_revision: store.mvcc.compact_revision(),
            records: store
                .mvcc
                .records()
                .map(|(at, record)| SnapshotRecordRef {
                    sub: at.sub,
                    kind: record.kind,
                    kv: &record.kv,
                })
                .collect(),
            leases: store
                .leases
                .iter()
                .map(|(id, lease)| SnapshotLease {
                    id: *id,
                    ttl: lease.ttl,
                    remaining_ttl: lease.remaining_ttl,
                })
                .collect(),
            members: store.members.values().collect(),
            removed: store.removed.iter().copied().collect(),
        };
        postcard::to_extend(&whole, MAGIC.to_vec()).unwrap()
    }

    fn put(store: &mut KvStore, key: &str, value: &str) {
        store.apply(&Command::Put(PutRequest::new(key, value)));
    }

    #[test]
    fn a_store_larger_than_a_chunk_encodes_and_decodes_whole() {
        let mut store = KvStore::default();
        let value = "v".repeat(100);
        for i in 0..25_000 {
            put(&mut store, &format!("key/{i:06}"), &value);
        }
        let records = store.mvcc.encoded();
        assert!(records.sealed.len() >= 2, "{} chunks", records.sealed.len());
        let decoded = KvStore::decode(&store.encode()).unwrap();
        assert_eq!(decoded, store);
        // A compaction (which keeps every record here: each key was written once) re-encodes
        // the log from scratch: the same bytes as grown write by write.
        let bytes = |records: &EncodedRecords| {
            let mut out = Vec::new();
            for part in records.parts() {
                out.extend_from_slice(&part);
            }
            out
        };
        let grown = bytes(store.mvcc.encoded());
        let revision = store.revision();
        store.apply(&Command::Compact(crate::CompactRequest {
            revision,
            physical: false,
        }));
        assert_eq!(bytes(store.mvcc.encoded()), grown);
        assert_eq!(KvStore::decode(&store.encode()).unwrap(), store);
    }

    #[test]
    fn a_snapshot_shares_the_sealed_chunks_and_later_writes_leave_it_unchanged() {
        let mut store = KvStore::default();
        let value = "v".repeat(100);
        for i in 0..20_000 {
            put(&mut store, &format!("key/{i:06}"), &value);
        }
        let first = store.encode_parts();
        assert_eq!(&first.contiguous()[..], &store.encode()[..]);
        let sealed = store.mvcc.encoded().sealed.clone();
        assert!(sealed.len() >= 2, "{} sealed chunks", sealed.len());
        // The head (magic and counts) is the first part; the sealed chunks follow, shared.
        for (part, chunk) in first.parts()[1..].iter().zip(&sealed) {
            assert_eq!(part.as_ptr(), chunk.as_ptr());
        }
        let before = first.contiguous();
        for i in 0..20_000 {
            put(&mut store, &format!("more/{i:06}"), &value);
        }
        assert_eq!(first.contiguous(), before, "a taken snapshot never changes");
        assert_eq!(KvStore::decode(&before).unwrap().revision(), 20_001);
        let second = store.encode_parts();
        assert_eq!(second.parts()[1].as_ptr(), first.parts()[1].as_ptr());
        assert_eq!(KvStore::decode(&second.contiguous()).unwrap(), store);
    }

    #[test]
    fn a_never_written_store_encoded_at_revision_0_restores_at_revision_1() {
        let old = SnapshotData {
            revision: 0,
            compact_revision: 0,
            records: Vec::new(),
            leases: vec![SnapshotLease {
                id: 7,
                ttl: 30,
                remaining_ttl: 0,
            }],
            members: Vec::new(),
            removed: Vec::new(),
            alarms: Vec::new(),
        };
        let bytes = postcard::to_extend(&old, MAGIC.to_vec()).unwrap();
        let mut store = KvStore::decode(&bytes).unwrap();
        let mut expected = KvStore::default();
        expected.apply(&Command::LeaseGrant { id: 7, ttl: 30 });
        assert_eq!(store, expected);
        assert_eq!(store.revision(), 1);
        put(&mut store, "k", "v");
        assert_eq!(store.get(b"k").unwrap().mod_revision, 2);
        // With revision 0, any record is out of range.
        let with_record = SnapshotData {
            records: vec![SnapshotRecord {
                sub: 0,
                kind: EventKind::Put,
                kv: KeyValue {
                    key: b"k".to_vec(),
                    create_revision: 1,
                    mod_revision: 1,
                    version: 1,
                    value: b"v".to_vec(),
                    lease: NO_LEASE,
                },
            }],
            leases: Vec::new(),
            ..old
        };
        let bytes = postcard::to_extend(&with_record, MAGIC.to_vec()).unwrap();
        assert!(KvStore::decode(&bytes).is_err());
    }

    #[test]
    fn the_running_encoding_gives_the_same_bytes_as_encoding_everything() {
        let mut store = KvStore::default();
        assert_eq!(store.encode(), encode_whole(&store));
        store.apply(&Command::LeaseGrant { id: 7, ttl: 30 });
        for i in 0..200 {
            put(&mut store, &format!("k{}", i % 17), &format!("v{i}"));
        }
        store.apply(&Command::DeleteRange(DeleteRangeRequest::new("k1", "k3")));
        store.apply(&Command::SetMember(MemberAttrs {
            id: 2,
            ..MemberAttrs::default()
        }));
        store.apply(&Command::SetMember(MemberAttrs {
            id: 3,
            ..MemberAttrs::default()
        }));
        store.apply(&Command::RemoveMember { id: 3 });
        assert!(store.is_removed(3));
        assert_eq!(store.encode(), encode_whole(&store), "after writes");
        assert_eq!(KvStore::decode(&store.encode()).unwrap(), store);
        store.apply(&Command::Compact(CompactRequest {
            revision: 150,
            physical: true,
        }));
        assert_eq!(store.encode(), encode_whole(&store), "after a compaction");
        for i in 0..50 {
            put(&mut store, &format!("n{i}"), "x");
        }
        assert_eq!(store.encode(), encode_whole(&store), "writes after it");
        let restored = KvStore::decode(&store.encode()).unwrap();
        assert_eq!(restored, store);
        let mut restored = restored;
        put(&mut restored, "after", "restore");
        assert_eq!(
            restored.encode(),
            encode_whole(&restored),
            "writes after a restore"
        );
    }
}
