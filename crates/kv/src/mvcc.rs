//! The multi-version store: every write is kept, in revision order, until a compaction removes
//! it (etcd's `mvcc` package).
//!
//! Two structures hold the history:
//!
//! * the **log**, `BTreeMap<SubRevision, Record>`: every retained write in revision order, the
//!   full key-value with its metadata (or a tombstone). Watch events are a range scan of it.
//! * the **index** ([`Index`]): per key, the revisions of its retained writes, ascending. A
//!   read at revision `R` is a range scan of the index and, per key, a binary search for its
//!   last write at or before `R`. Keys are found by hash (a put, a single-key read) and
//!   walked in order through a sorted set of them (a range).
//!
//! Invariants (checked by [`crate::KvStore::check_invariants`]): every log entry is listed once in its
//! key's index entry and vice versa; a record's `mod_revision` is its main revision; no index
//! entry is empty; `revision` is at least 1 (an empty store is at revision 1, as etcd's: the
//! first write makes revision 2); every main revision is at most `revision`; after a compaction
//! at `C`, a key has at most one write at or before `C`, and it is not a tombstone.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::error::KvError;
use crate::request::{RangeRequest, RangeResponse, SortOrder, SortTarget};
use crate::snapshot::EncodedRecords;
use crate::types::{KeyRange, KeyValue, LeaseId, ResponseHeader, Revision, SubRevision};

/// What a write did to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// One retained write: the key-value it left (a tombstone for a delete).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) kind: EventKind,
    pub(crate) kv: KeyValue,
}

impl Record {
    /// What a later put of the key needs of this write: nothing after a delete.
    fn version(&self) -> Option<PreviousVersion> {
        (self.kind == EventKind::Put).then_some(PreviousVersion {
            create_revision: self.kv.create_revision,
            version: self.kv.version,
            lease: self.kv.lease,
        })
    }
}

/// A change to a key, as a watcher sees it (etcd's `mvccpb.Event`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key-value after the put, or for a delete a tombstone: the key and the deletion's
    /// revision as `mod_revision`, everything else zero or empty.
    pub kv: KeyValue,
    /// The key-value before this change, when asked for and still retained (a compaction may
    /// have removed it; a put that created the key has none).
    pub prev_kv: Option<KeyValue>,
}

/// What a put needs of the version it replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PreviousVersion {
    pub(crate) create_revision: Revision,
    pub(crate) version: i64,
    pub(crate) lease: LeaseId,
}

/// The versioned key space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mvcc {
    index: Index,
    log: BTreeMap<SubRevision, Record>,
    /// The current revision: the main revision of the last write transaction, or
    /// [`INITIAL_REVISION`] before the first.
    revision: Revision,
    /// The revision of the last compaction (0: never compacted).
    compact_revision: Revision,
    /// How many keys are live (not deleted) at the current revision.
    live_keys: u64,
    /// The log as a snapshot encodes it, kept up to date ([`EncodedRecords`]).
    encoded: EncodedRecords,
}

/// An empty key space is at revision 1, as etcd's is: its first write makes revision 2.
pub(crate) const INITIAL_REVISION: Revision = 1;

impl Default for Mvcc {
    fn default() -> Self {
        Mvcc {
            index: Index::default(),
            log: BTreeMap::new(),
            revision: INITIAL_REVISION,
            compact_revision: 0,
            live_keys: 0,
            encoded: EncodedRecords::default(),
        }
    }
}

impl Mvcc {
    /// The current revision.
    pub(crate) fn revision(&self) -> Revision {
        self.revision
    }

    /// The log as a snapshot encodes it.
    pub(crate) fn encoded(&self) -> &EncodedRecords {
        &self.encoded
    }

    /// The last compaction's revision.
    pub(crate) fn compact_revision(&self) -> Revision {
        self.compact_revision
    }

    /// Live keys at the current revision.
    pub(crate) fn live_keys(&self) -> u64 {
        self.live_keys
    }

    /// Retained writes (puts and tombstones).
    pub(crate) fn record_count(&self) -> usize {
        self.log.len()
    }

    /// Every retained write in revision order (for snapshots).
    #[cfg(test)]
    pub(crate) fn records(&self) -> impl Iterator<Item = (&SubRevision, &Record)> {
        self.log.iter()
    }

    /// Rebuilds a store from its retained writes; the caller has checked each record.
    pub(crate) fn from_records(
        revision: Revision,
        compact_revision: Revision,
        records: BTreeMap<SubRevision, Record>,
    ) -> Self {
        let mut index = Index::default();
        for (at, record) in &records {
            index.push(&record.kv.key, *at, record.version());
        }
        let encoded = EncodedRecords::of(records.iter());
        let live_keys = index.live_keys();
        Self {
            index,
            log: records,
            revision,
            compact_revision,
            live_keys,
            encoded,
        }
    }

    /// What a put needs of the key's live version at the current revision, without reading
    /// the version itself (including writes of an unfinished write transaction).
    pub(crate) fn latest_version(&self, key: &[u8]) -> Option<PreviousVersion> {
        self.index.latest_version(key)
    }

    /// The key's live key-value at the current revision (including writes of an unfinished
    /// write transaction).
    pub(crate) fn latest(&self, key: &[u8]) -> Option<&KeyValue> {
        let at = self.index.get(key)?.last()?;
        self.live(at)
    }

    fn live(&self, at: &SubRevision) -> Option<&KeyValue> {
        match self.log.get(at) {
            Some(Record {
                kind: EventKind::Put,
                kv,
            }) => Some(kv),
            _ => None,
        }
    }

    /// The key's live key-value at `revision` (assumed retained).
    fn visible_at(&self, history: &[SubRevision], revision: Revision) -> Option<&KeyValue> {
        let after = history.partition_point(|at| at.main <= revision);
        self.live(history.get(after.checked_sub(1)?)?)
    }

    /// Checks a read revision: 0 or negative means current; compacted or future ones fail.
    pub(crate) fn read_revision(&self, requested: Revision) -> Result<Revision, KvError> {
        if requested > self.revision {
            return Err(KvError::FutureRevision);
        }
        if requested <= 0 {
            return Ok(self.revision);
        }
        if requested < self.compact_revision {
            return Err(KvError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        Ok(requested)
    }

    /// The index entries of the keys in `range`, in key order.
    fn keys_in<'a>(
        &'a self,
        range: KeyRange<'a>,
    ) -> Box<dyn Iterator<Item = (&'a [u8], &'a Vec<SubRevision>)> + 'a> {
        if range.is_empty() {
            return Box::new(std::iter::empty());
        }
        match range {
            KeyRange::Single(key) => Box::new(self.index.get_key_value(key).into_iter()),
            KeyRange::Interval(start, end) => {
                let end = end.map_or(Bound::Unbounded, Bound::Excluded);
                Box::new(self.index.range((Bound::Included(start), end)))
            }
        }
    }

    /// The live key-values in `range` at `revision` (already checked), in key order.
    pub(crate) fn range_at<'a>(
        &'a self,
        range: KeyRange<'a>,
        revision: Revision,
    ) -> impl Iterator<Item = &'a KeyValue> + 'a {
        self.keys_in(range)
            .filter_map(move |(_, history)| self.visible_at(history, revision))
    }

    /// Serves a range request at `default_revision` unless it names its own revision (etcd's
    /// `applierV3backend.Range`). Inside a write transaction the default is the revision being
    /// written, so the transaction's earlier writes are visible.
    pub(crate) fn range(
        &self,
        request: &RangeRequest,
        default_revision: Revision,
    ) -> Result<RangeResponse, KvError> {
        if request.key.is_empty() {
            return Err(KvError::EmptyKey);
        }
        let revision = if request.revision > 0 {
            self.read_revision(request.revision)?
        } else {
            default_revision
        };
        let header = ResponseHeader { revision };
        let keys = KeyRange::new(&request.key, &request.range_end);
        let visible = self.range_at(keys, revision);
        if request.count_only {
            return Ok(RangeResponse {
                header,
                kvs: Vec::new(),
                more: false,
                count: visible.count() as i64,
            });
        }
        let sort_order = match (request.sort_order, request.sort_target) {
            (SortOrder::None, SortTarget::Key) => SortOrder::None,
            (SortOrder::None, _) => SortOrder::Ascend,
            (order, _) => order,
        };
        let filtered = request.min_mod_revision != 0
            || request.max_mod_revision != 0
            || request.min_create_revision != 0
            || request.max_create_revision != 0;
        let needs_all = filtered || sort_order != SortOrder::None;
        // Collect one more than the limit to learn whether there is more.
        let collect_limit = match request.limit {
            limit if limit > 0 && !needs_all => usize::try_from(limit).unwrap_or(usize::MAX),
            _ => usize::MAX,
        }
        .saturating_add(1);
        let mut count: i64 = 0;
        let mut kvs: Vec<KeyValue> = Vec::new();
        for kv in visible {
            count += 1;
            if kvs.len() < collect_limit && keep(request, kv) {
                let mut kv = kv.clone();
                if request.keys_only {
                    kv.value = Vec::new();
                }
                kvs.push(kv);
            }
        }
        sort(&mut kvs, sort_order, request.sort_target);
        let mut more = false;
        if let Ok(limit) = usize::try_from(request.limit) {
            if limit > 0 && kvs.len() > limit {
                kvs.truncate(limit);
                more = true;
            }
        }
        Ok(RangeResponse {
            header,
            kvs,
            more,
            count,
        })
    }

    /// The writes after `from_revision` (inclusive) to keys in `range`, in revision order.
    pub(crate) fn events(
        &self,
        from_revision: Revision,
        range: KeyRange<'_>,
        prev_kv: bool,
    ) -> Result<Vec<Event>, KvError> {
        if self.compact_revision > 0 && from_revision <= self.compact_revision {
            return Err(KvError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        let start = SubRevision {
            main: from_revision.max(1),
            sub: 0,
        };
        let mut events = Vec::new();
        for (at, record) in self.log.range(start..) {
            if !range.contains(&record.kv.key) {
                continue;
            }
            let prev_kv = if prev_kv {
                self.previous(&record.kv.key, at).cloned()
            } else {
                None
            };
            events.push(Event {
                kind: record.kind,
                kv: record.kv.clone(),
                prev_kv,
            });
        }
        Ok(events)
    }

    /// The key's live key-value just before the write at `at`, if retained.
    fn previous(&self, key: &[u8], at: &SubRevision) -> Option<&KeyValue> {
        let history = self.index.get(key)?;
        let position = history.partition_point(|other| other < at);
        self.live(history.get(position.checked_sub(1)?)?)
    }

    /// Starts the write transaction that will create revision `revision + 1`.
    pub(crate) fn begin_write(&mut self) -> WriteTxn<'_> {
        let main = self.revision.saturating_add(1);
        WriteTxn {
            store: self,
            main,
            next_sub: 0,
        }
    }

    /// Removes every write a read at `revision` or later cannot see (etcd's compaction): per
    /// key, only the last write at or before `revision` survives, and not if it is a delete.
    pub(crate) fn compact(&mut self, revision: Revision) -> Result<(), KvError> {
        if revision <= self.compact_revision {
            return Err(KvError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        if revision > self.revision {
            return Err(KvError::FutureRevision);
        }
        // Only keys written since the last compaction can have anything new to drop.
        let first = SubRevision {
            main: self.compact_revision.saturating_add(1),
            sub: 0,
        };
        let last = SubRevision {
            main: revision,
            sub: i64::MAX,
        };
        let touched: BTreeSet<Vec<u8>> = self
            .log
            .range(first..=last)
            .map(|(_, record)| record.kv.key.clone())
            .collect();
        for key in touched {
            self.compact_key(&key, revision);
        }
        self.compact_revision = revision;
        self.encoded = EncodedRecords::of(self.log.iter());
        Ok(())
    }

    fn compact_key(&mut self, key: &[u8], revision: Revision) {
        let Some(history) = self.index.get_mut(key) else {
            return;
        };
        let upto = history.partition_point(|at| at.main <= revision);
        let keep_last = upto
            .checked_sub(1)
            .and_then(|last| self.log.get(&history[last]))
            .is_some_and(|record| record.kind == EventKind::Put);
        let drop_count = if keep_last { upto - 1 } else { upto };
        for at in history.drain(..drop_count) {
            self.log.remove(&at);
        }
        if history.is_empty() {
            self.index.remove(key);
        }
    }

    /// Checks the structure's invariants (module docs); returns the first broken one.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        if self.revision < INITIAL_REVISION {
            return Err(format!(
                "revision {} is before the initial revision {INITIAL_REVISION}",
                self.revision
            ));
        }
        let mut listed = 0usize;
        if let Some(problem) = self.index.check() {
            return Err(problem);
        }
        for (key, history) in self.index.iter() {
            if history.is_empty() {
                return Err(format!("empty index entry for {key:?}"));
            }
            if history.windows(2).any(|pair| pair[0] >= pair[1]) {
                return Err(format!("index entry of {key:?} is not ascending"));
            }
            let before_compaction = history
                .iter()
                .filter(|at| at.main <= self.compact_revision)
                .count();
            if before_compaction > 1 {
                return Err(format!(
                    "{key:?} keeps {before_compaction} compacted writes"
                ));
            }
            for at in history {
                let record = self
                    .log
                    .get(at)
                    .ok_or_else(|| format!("{key:?} lists {at:?} missing from the log"))?;
                if record.kv.key != *key || record.kv.mod_revision != at.main {
                    return Err(format!("record at {at:?} does not match its index entry"));
                }
                if at.main <= self.compact_revision && record.kind == EventKind::Delete {
                    return Err(format!("compacted tombstone of {key:?} kept"));
                }
                if at.main > self.revision {
                    return Err(format!("record at {at:?} is after the revision"));
                }
            }
            let last = history.last().and_then(|at| self.log.get(at));
            if self.index.latest_version(key) != last.and_then(Record::version) {
                return Err(format!(
                    "the index's copy of {key:?}'s live version differs from its last write"
                ));
            }
            listed += history.len();
        }
        if listed != self.log.len() {
            return Err(format!(
                "log holds {} records, index lists {listed}",
                self.log.len()
            ));
        }
        let live = self
            .index
            .keys()
            .filter(|k| self.latest(k).is_some())
            .count() as u64;
        if live != self.live_keys {
            return Err(format!("live key count {} != {live}", self.live_keys));
        }
        Ok(())
    }
}

/// Every retained key with the revisions of its writes: a hash map finds a key, a sorted set
/// of the same keys walks a range in order. The sorted set changes only when a key first
/// appears or its last retained write is compacted away.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Index {
    histories: HashMap<IndexKey, KeyHistory, foldhash::fast::FixedState>,
    ordered: BTreeSet<OrderedKey>,
}

/// A key as the hash map holds it: up to 24 bytes inline, in the map's own slot, so that
/// finding a key that short reads no memory besides the slot, and a put's lookup into a key
/// space larger than the caches misses once instead of twice. Longer keys live on the heap,
/// as all did before.
type IndexKey = smallvec::SmallVec<[u8; 24]>;

/// A key's retained writes, and what a put needs of its live version: a put then reads one
/// hash map entry instead of also finding its last write in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
struct KeyHistory {
    revisions: Vec<SubRevision>,
    /// Of the last write; `None` when it is a delete. Compaction never removes the last write
    /// of a key unless it removes the key.
    latest: Option<PreviousVersion>,
}

/// A key in the index's sorted set, with its first 16 bytes copied inline. Inserting a key
/// compares it with a few dozen others; most comparisons end within those bytes, read from the
/// tree's node itself instead of through a pointer to each key (a cache miss apiece once the
/// key space outgrows the caches: it was the largest cost of a put into 100 000 keys).
#[derive(Clone, Debug, PartialEq, Eq)]
struct OrderedKey {
    /// The first 16 bytes, big-endian, zero-padded: ordered as the keys are whenever two
    /// differ (a zero pad sorts a shorter key first, as it should; equal heads compare the
    /// whole keys).
    head: u128,
    key: Vec<u8>,
}

impl OrderedKey {
    fn new(key: &[u8]) -> Self {
        let mut head = [0u8; 16];
        let n = key.len().min(16);
        head[..n].copy_from_slice(&key[..n]);
        OrderedKey {
            head: u128::from_be_bytes(head),
            key: key.to_vec(),
        }
    }
}

impl Ord for OrderedKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.head
            .cmp(&other.head)
            .then_with(|| self.key.cmp(&other.key))
    }
}

impl PartialOrd for OrderedKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Ranges and removals look keys up as byte strings: the orders agree (see `head`).
impl std::borrow::Borrow<[u8]> for OrderedKey {
    fn borrow(&self) -> &[u8] {
        &self.key
    }
}

impl Index {
    fn get(&self, key: &[u8]) -> Option<&Vec<SubRevision>> {
        self.histories.get(key).map(|history| &history.revisions)
    }

    /// The key's revisions, for compaction (which keeps the last write, or removes the key).
    fn get_mut(&mut self, key: &[u8]) -> Option<&mut Vec<SubRevision>> {
        self.histories
            .get_mut(key)
            .map(|history| &mut history.revisions)
    }

    fn get_key_value(&self, key: &[u8]) -> Option<(&[u8], &Vec<SubRevision>)> {
        self.histories
            .get_key_value(key)
            .map(|(key, history)| (key.as_slice(), &history.revisions))
    }

    fn latest_version(&self, key: &[u8]) -> Option<PreviousVersion> {
        self.histories.get(key)?.latest
    }

    /// Keys whose last write is a put.
    fn live_keys(&self) -> u64 {
        self.ordered
            .iter()
            .filter(|ordered| self.latest_version(&ordered.key).is_some())
            .count() as u64
    }

    /// Adds the write at `at` (after every other write of `key`), which leaves `latest`.
    fn push(&mut self, key: &[u8], at: SubRevision, latest: Option<PreviousVersion>) {
        match self.histories.get_mut(key) {
            Some(history) => {
                history.revisions.push(at);
                history.latest = latest;
            }
            None => {
                let revisions = vec![at];
                self.histories
                    .insert(IndexKey::from_slice(key), KeyHistory { revisions, latest });
                self.ordered.insert(OrderedKey::new(key));
            }
        }
    }

    fn remove(&mut self, key: &[u8]) {
        self.histories.remove(key);
        self.ordered.remove(key);
    }

    /// The keys in `bounds` with their histories, in key order.
    fn range<'a>(
        &'a self,
        bounds: (Bound<&'a [u8]>, Bound<&'a [u8]>),
    ) -> impl Iterator<Item = (&'a [u8], &'a Vec<SubRevision>)> + 'a {
        self.ordered
            .range::<[u8], _>(bounds)
            .filter_map(|ordered| self.get_key_value(ordered.key.as_slice()))
    }

    /// Every key with its history, in key order.
    fn iter(&self) -> impl Iterator<Item = (&[u8], &Vec<SubRevision>)> {
        self.range((Bound::Unbounded, Bound::Unbounded))
    }

    fn keys(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.ordered.iter().map(|ordered| &ordered.key)
    }

    /// Whether the map and the sorted set hold the same keys; what differs if not.
    fn check(&self) -> Option<String> {
        if self.histories.len() != self.ordered.len() {
            return Some(format!(
                "the index finds {} keys by hash but sorts {}",
                self.histories.len(),
                self.ordered.len()
            ));
        }
        self.ordered
            .iter()
            .find(|ordered| !self.histories.contains_key(ordered.key.as_slice()))
            .map(|ordered| {
                let key = &ordered.key;
                format!("{key:?} is sorted in the index but not found by hash")
            })
    }
}

/// Whether a key-value passes the request's min/max revision filters.
fn keep(request: &RangeRequest, kv: &KeyValue) -> bool {
    let below = |bound: Revision, value: Revision| bound != 0 && value < bound;
    let above = |bound: Revision, value: Revision| bound != 0 && value > bound;
    !(below(request.min_mod_revision, kv.mod_revision)
        || above(request.max_mod_revision, kv.mod_revision)
        || below(request.min_create_revision, kv.create_revision)
        || above(request.max_create_revision, kv.create_revision))
}

/// Sorts key-ordered results; ties keep key order (stable sort).
fn sort(kvs: &mut [KeyValue], order: SortOrder, target: SortTarget) {
    match (order, target) {
        (SortOrder::None, _) | (SortOrder::Ascend, SortTarget::Key) => {}
        (SortOrder::Descend, SortTarget::Key) => kvs.reverse(),
        (order, target) => {
            let field = |kv: &KeyValue| -> (i64, Vec<u8>) {
                match target {
                    SortTarget::Key => (0, kv.key.clone()),
                    SortTarget::Version => (kv.version, Vec::new()),
                    SortTarget::Create => (kv.create_revision, Vec::new()),
                    SortTarget::Mod => (kv.mod_revision, Vec::new()),
                    SortTarget::Value => (0, kv.value.clone()),
                }
            };
            if order == SortOrder::Descend {
                kvs.sort_by_cached_key(|kv| std::cmp::Reverse(field(kv)));
            } else {
                kvs.sort_by_cached_key(field);
            }
        }
    }
}

/// One write transaction: all its writes share the main revision `main`, with sub-revisions
/// 0, 1, … in order. Reads through [`WriteTxn::read_revision`] see the writes made so far.
#[derive(Debug)]
pub(crate) struct WriteTxn<'a> {
    store: &'a mut Mvcc,
    main: Revision,
    next_sub: i64,
}

impl WriteTxn<'_> {
    /// The store (for reads).
    pub(crate) fn store(&self) -> &Mvcc {
        self.store
    }

    /// The revision reads inside the transaction use: the one being written once something
    /// was written, the current one before.
    pub(crate) fn read_revision(&self) -> Revision {
        if self.next_sub > 0 {
            self.main
        } else {
            self.store.revision
        }
    }

    fn append(&mut self, record: Record) {
        let at = SubRevision {
            main: self.main,
            sub: self.next_sub,
        };
        self.next_sub += 1;
        self.store.index.push(&record.kv.key, at, record.version());
        self.store.encoded.push(&at, &record);
        self.store.log.insert(at, record);
    }

    /// Writes `value` at `key` attached to `lease`. `previous` describes the key's live
    /// version, which the caller has looked up (`store().latest_version(key)`).
    pub(crate) fn put(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        lease: LeaseId,
        previous: Option<PreviousVersion>,
    ) {
        let (create_revision, version) = match previous {
            Some(previous) => (previous.create_revision, previous.version.saturating_add(1)),
            None => {
                self.store.live_keys += 1;
                (self.main, 1)
            }
        };
        self.append(Record {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.to_vec(),
                create_revision,
                mod_revision: self.main,
                version,
                value,
                lease,
            },
        });
    }

    /// Deletes `key` if it is live; returns the deleted key-value.
    pub(crate) fn delete(&mut self, key: &[u8]) -> Option<KeyValue> {
        let previous = self.store.latest(key).cloned()?;
        self.store.live_keys -= 1;
        self.append(Record {
            kind: EventKind::Delete,
            kv: KeyValue::tombstone(key.to_vec(), self.main),
        });
        Some(previous)
    }

    /// The revision after the writes so far: `main` once something was written.
    pub(crate) fn revision_after(&self) -> Revision {
        self.read_revision()
    }

    /// Ends the transaction; the store's revision moves to `main` if anything was written.
    pub(crate) fn finish(self) -> Revision {
        if self.next_sub > 0 {
            self.store.revision = self.main;
        }
        self.store.revision
    }
}

#[cfg(test)]
mod tests {
    use super::{Index, OrderedKey, PreviousVersion, SubRevision};
    use proptest::prelude::*;
    use std::ops::Bound;

    /// Keys on both sides of the map's inline size (24 bytes), and keys that share their first
    /// 24 bytes, are found, told apart and walked in order.
    #[test]
    fn keys_longer_than_the_inline_size_are_found_and_told_apart() {
        let keys: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"k1".to_vec(),
            vec![b'a'; 24],
            vec![b'a'; 25],
            [vec![b'a'; 24], b"b".to_vec()].concat(),
            vec![b'a'; 100],
        ];
        let mut index = Index::default();
        for (i, key) in keys.iter().enumerate() {
            let main = i as i64 + 2;
            let version = PreviousVersion {
                create_revision: main,
                version: 1,
                lease: 0,
            };
            index.push(key, SubRevision { main, sub: 0 }, Some(version));
        }
        assert_eq!(index.check(), None);
        for (i, key) in keys.iter().enumerate() {
            let main = i as i64 + 2;
            assert_eq!(index.get(key), Some(&vec![SubRevision { main, sub: 0 }]));
            assert_eq!(
                index.latest_version(key).map(|v| v.create_revision),
                Some(main)
            );
        }
        assert_eq!(index.get(&[b'a'; 26]), None);
        let mut sorted = keys.clone();
        sorted.sort();
        let walked: Vec<&[u8]> = index.iter().map(|(key, _)| key).collect();
        assert_eq!(walked, sorted.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let from_24: Vec<&[u8]> = index
            .range((Bound::Included(&[b'a'; 24][..]), Bound::Unbounded))
            .map(|(key, _)| key)
            .collect();
        let expected: Vec<&[u8]> = sorted
            .iter()
            .map(Vec::as_slice)
            .filter(|key| *key >= &[b'a'; 24][..])
            .collect();
        assert_eq!(from_24, expected);
        assert_eq!(from_24.len(), 5);
        index.remove(&[b'a'; 25]);
        assert_eq!(index.get(&[b'a'; 25]), None);
        assert!(index.get(&[b'a'; 24]).is_some());
        assert_eq!(index.check(), None);
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        // Short alphabets and shared prefixes, so heads tie and zero bytes meet zero pads.
        prop_oneof![
            proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(b'a')], 0..20),
            proptest::collection::vec(any::<u8>(), 0..40),
            (0usize..4, proptest::collection::vec(any::<u8>(), 0..8)).prop_map(|(n, tail)| {
                let mut key = b"/registry/pods/default/".repeat(n);
                key.extend(tail);
                key
            }),
        ]
    }

    proptest! {
        /// The sorted set's order is the byte order, so ranges looked up by byte strings
        /// (`Borrow<[u8]>`) find what inserts put there.
        #[test]
        fn ordered_keys_sort_as_their_bytes(a in key(), b in key()) {
            prop_assert_eq!(OrderedKey::new(&a).cmp(&OrderedKey::new(&b)), a.cmp(&b));
        }
    }
}
