//! [`KvStore`]: the replicated state of Concord DB, and its commands, queries and outputs.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::KvError;
use crate::lease::MAX_LEASE_TTL;
use crate::members::MemberAttrs;
use crate::mvcc::{Event, Mvcc, WriteTxn};
use crate::request::{
    CompactRequest, CompactResponse, Compare, CompareResult, CompareTarget, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseOp, TxnRequest, TxnResponse,
};
use crate::types::{KeyRange, KeyValue, LeaseId, ResponseHeader, Revision, NO_LEASE};

/// A state change, written to the Raft log and the WAL.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Command {
    /// Write a key.
    Put(PutRequest),
    /// Delete keys.
    DeleteRange(DeleteRangeRequest),
    /// A transaction (it may also be read-only, though [`Query::Txn`] serves those cheaper).
    Txn(TxnRequest),
    /// Drop history up to a revision.
    Compact(CompactRequest),
    /// Create a lease. The proposer picks a non-zero `id` and clamps `ttl` to the minimum
    /// ([`crate::Lessor::clamp_ttl`]).
    LeaseGrant {
        /// The new lease's ID.
        id: LeaseId,
        /// Its TTL in seconds.
        ttl: i64,
    },
    /// Delete a lease and every key attached to it, in one revision. Proposed by a client or
    /// by the leader when its [`crate::Lessor`] finds the lease expired.
    LeaseRevoke {
        /// The lease.
        id: LeaseId,
    },
    /// Record how long a lease had left, so that a new leader does not restart it from its
    /// full TTL (etcd's `LeaseCheckpoint`; optional).
    LeaseCheckpoint {
        /// The lease.
        id: LeaseId,
        /// Seconds left when the leader checkpointed it.
        remaining_ttl: i64,
    },
    /// Add a member or replace its attributes.
    SetMember(MemberAttrs),
    /// Remove a member.
    RemoveMember {
        /// The member.
        id: u64,
    },
    /// Raise (`active`) or clear an alarm on a member (etcd's `AlarmRequest`). While any
    /// member has the [`Alarm::NoSpace`] alarm, writes that add data are refused
    /// ([`KvError::NoSpace`]): puts, transactions with a put, lease grants.
    Alarm {
        /// Raise or clear.
        active: bool,
        /// The member it is about.
        member: u64,
        /// Which alarm.
        alarm: Alarm,
    },
}

impl Command {
    /// Whether the command adds data to the store: what a store over its space quota refuses
    /// (etcd's capped applier: puts, transactions with a put in either branch, lease grants).
    pub fn adds_data(&self) -> bool {
        match self {
            Command::Put(_) | Command::LeaseGrant { .. } => true,
            Command::Txn(request) => request.leaf_ops().any(|op| matches!(op, RequestOp::Put(_))),
            _ => false,
        }
    }

    /// About how many bytes the command adds to the store: its puts' keys and values (what
    /// etcd's quota charges), a little for a lease.
    pub fn data_bytes(&self) -> u64 {
        let put_bytes = |put: &PutRequest| (put.key.len() + put.value.len()) as u64;
        match self {
            Command::Put(put) => put_bytes(put),
            Command::Txn(request) => request
                .leaf_ops()
                .map(|op| match op {
                    RequestOp::Put(put) => put_bytes(put),
                    _ => 0,
                })
                .sum(),
            Command::LeaseGrant { .. } => 64,
            _ => 0,
        }
    }
}

/// An alarm a member raises (etcd's `AlarmType`, without `NONE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Alarm {
    /// The member's store reached its space quota (`--quota-backend-bytes`).
    NoSpace,
    /// The member found its data corrupt.
    Corrupt,
}

/// A read, served from the applied state (after ReadIndex for linearizable reads).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Query {
    /// Read keys.
    Range(RangeRequest),
    /// A read-only transaction (compares and ranges only, as etcd serves without the log); a
    /// transaction with a write anywhere fails with [`KvError::TxnHasWrites`].
    Txn(TxnRequest),
    /// The lease table (IDs, TTLs, checkpoints); the lessor knows deadlines.
    Leases,
    /// The keys attached to a lease (for `LeaseTimeToLive` with `keys`).
    LeaseKeys {
        /// The lease.
        id: LeaseId,
    },
    /// The cluster members.
    Members,
    /// Revision, compaction and size figures.
    Status,
    /// The active alarms.
    Alarms,
}

/// A lease as the replicated state knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// The lease.
    pub id: LeaseId,
    /// Its granted TTL in seconds.
    pub ttl: i64,
    /// The last checkpointed remaining TTL in seconds (0: none).
    pub remaining_ttl: i64,
}

/// The answer to a [`Command::LeaseGrant`] (etcd's `LeaseGrantResponse`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseGrantResponse {
    /// The current revision (a grant creates none).
    pub header: ResponseHeader,
    /// The lease.
    pub id: LeaseId,
    /// Its TTL in seconds.
    pub ttl: i64,
}

/// Store figures (part of etcd's `StatusResponse`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoreStatus {
    /// The current revision.
    pub revision: Revision,
    /// The last compaction's revision.
    pub compact_revision: Revision,
    /// Live keys.
    pub keys: u64,
    /// Retained writes (versions and tombstones).
    pub records: u64,
    /// Leases.
    pub leases: u64,
    /// Members.
    pub members: u64,
}

/// The result of a command or query.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Output {
    /// A range's result.
    Range(RangeResponse),
    /// A put's result.
    Put(PutResponse),
    /// A delete's result.
    DeleteRange(DeleteRangeResponse),
    /// A transaction's result.
    Txn(TxnResponse),
    /// A compaction's result.
    Compact(CompactResponse),
    /// A grant's result.
    LeaseGrant(LeaseGrantResponse),
    /// A revoke's result: the revision after deleting the lease's keys.
    LeaseRevoke(ResponseHeader),
    /// A checkpoint's result.
    LeaseCheckpoint(ResponseHeader),
    /// The lease table.
    Leases(Vec<LeaseInfo>),
    /// A lease's keys, in key order.
    LeaseKeys(Vec<Vec<u8>>),
    /// The members after a change, or as listed, by ID.
    Members(Vec<MemberAttrs>),
    /// Store figures.
    Status(StoreStatus),
    /// Alarms, by member: those a change touched, or all active ones.
    Alarms(Vec<(u64, Alarm)>),
    /// The command or query was refused; nothing changed.
    Error(KvError),
}

impl Output {
    /// The error, if this is one.
    pub fn error(&self) -> Option<&KvError> {
        match self {
            Output::Error(error) => Some(error),
            _ => None,
        }
    }
}

/// A lease in the replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) ttl: i64,
    pub(crate) remaining_ttl: i64,
    /// The keys attached to it (whose latest version carries this lease).
    pub(crate) keys: BTreeSet<Vec<u8>>,
}

impl Lease {
    fn info(&self, id: LeaseId) -> LeaseInfo {
        LeaseInfo {
            id,
            ttl: self.ttl,
            remaining_ttl: self.remaining_ttl,
        }
    }
}

/// The lease table.
pub(crate) type Leases = BTreeMap<LeaseId, Lease>;

/// Concord DB's replicated state: the MVCC key space, the lease table and the members.
///
/// Deterministic: the same commands in the same order give the same state, outputs,
/// snapshots and digest on every node. `Clone` copies everything (the whole history): cheap
/// for tests and the simulator, expensive for a large database.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    pub(crate) mvcc: Mvcc,
    pub(crate) leases: Leases,
    pub(crate) members: BTreeMap<u64, MemberAttrs>,
    /// The IDs of members removed from the cluster: never reused, and a removed member that
    /// comes back is told it was removed.
    pub(crate) removed: BTreeSet<u64>,
    /// Active alarms, by member.
    pub(crate) alarms: BTreeSet<(u64, Alarm)>,
}

/// The branch each transaction takes, decided before any of its writes: `succeeded` for this
/// one, then one entry per nested transaction of the branch taken, in order (etcd's
/// `compareToPath`).
#[derive(Debug)]
struct Path {
    succeeded: bool,
    nested: Vec<Path>,
}

impl KvStore {
    /// An empty store at revision 1 (etcd's: the first write makes revision 2).
    pub fn new() -> Self {
        Self::default()
    }

    /// The current revision.
    pub fn revision(&self) -> Revision {
        self.mvcc.revision()
    }

    /// The last compaction's revision (0: never compacted).
    pub fn compact_revision(&self) -> Revision {
        self.mvcc.compact_revision()
    }

    /// The active alarms, by member.
    pub fn alarms(&self) -> impl Iterator<Item = (u64, Alarm)> + '_ {
        self.alarms.iter().copied()
    }

    /// Whether a member raised [`Alarm::NoSpace`]: writes that add data are refused.
    pub fn out_of_space(&self) -> bool {
        self.alarms
            .iter()
            .any(|&(_, alarm)| alarm == Alarm::NoSpace)
    }

    /// The bytes of the key space with its retained history, as a snapshot encodes it: what
    /// `--quota-backend-bytes` limits.
    pub fn size_bytes(&self) -> u64 {
        self.mvcc.encoded().len() as u64
    }

    /// Raises or clears an alarm. Answers with the alarm raised, or the one cleared; clearing
    /// an alarm that is not raised answers with none (as etcd).
    fn set_alarm(&mut self, active: bool, member: u64, alarm: Alarm) -> Vec<(u64, Alarm)> {
        if active {
            self.alarms.insert((member, alarm));
        } else if !self.alarms.remove(&(member, alarm)) {
            return Vec::new();
        }
        vec![(member, alarm)]
    }

    /// The live key-value at `key`, at the current revision.
    pub fn get(&self, key: &[u8]) -> Option<&KeyValue> {
        self.mvcc.latest(key)
    }

    /// Serves a range read (the same as [`Query::Range`]).
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, KvError> {
        self.mvcc.range(request, self.revision())
    }

    /// The changes to keys in `key`/`range_end` (see [`KeyRange`]) from `from_revision` on,
    /// inclusive, in revision order (and in write order inside one revision), with each
    /// change's previous key-value when `prev_kv`. Cost: the number of retained writes after
    /// `from_revision`, not the number of keys.
    ///
    /// Fails with [`KvError::Compacted`] when `from_revision` is at or before the last
    /// compaction: deletes at that revision are gone, so the events would be incomplete
    /// (etcd accepts `from_revision` equal to the compaction and may miss them; Concord is
    /// stricter).
    pub fn events(
        &self,
        from_revision: Revision,
        key: &[u8],
        range_end: &[u8],
        prev_kv: bool,
    ) -> Result<Vec<Event>, KvError> {
        self.mvcc
            .events(from_revision, KeyRange::new(key, range_end), prev_kv)
    }

    /// Every lease, by ID (for [`crate::Lessor::restore`] use `(id, ttl)`).
    pub fn leases(&self) -> Vec<LeaseInfo> {
        self.leases
            .iter()
            .map(|(&id, lease)| lease.info(id))
            .collect()
    }

    /// One lease, if the table holds it.
    pub fn lease(&self, id: LeaseId) -> Option<LeaseInfo> {
        self.leases.get(&id).map(|lease| lease.info(id))
    }

    /// The keys attached to a lease, in key order.
    pub fn lease_keys(&self, id: LeaseId) -> Result<Vec<Vec<u8>>, KvError> {
        let lease = self.leases.get(&id).ok_or(KvError::LeaseNotFound)?;
        Ok(lease.keys.iter().cloned().collect())
    }

    /// The members, by ID.
    pub fn members(&self) -> Vec<MemberAttrs> {
        self.members.values().cloned().collect()
    }

    /// Whether `id` is the ID of a member that was removed.
    pub fn is_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }

    /// The highest member ID ever used, removed members included (0 if none).
    pub fn highest_member_id(&self) -> u64 {
        let present = self.members.keys().next_back().copied().unwrap_or(0);
        let removed = self.removed.last().copied().unwrap_or(0);
        present.max(removed)
    }

    /// Store figures.
    pub fn status(&self) -> StoreStatus {
        StoreStatus {
            revision: self.revision(),
            compact_revision: self.compact_revision(),
            keys: self.mvcc.live_keys(),
            records: self.mvcc.record_count() as u64,
            leases: self.leases.len() as u64,
            members: self.members.len() as u64,
        }
    }

    fn header(&self) -> ResponseHeader {
        ResponseHeader {
            revision: self.revision(),
        }
    }

    /// Checks the store's invariants: the MVCC ones, and that leases and keys agree (a live
    /// key with lease `L` is in `L`'s key set, and every key in a lease's set is live with it).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.mvcc.check_invariants()?;
        if let Some(id) = self.removed.iter().find(|id| self.members.contains_key(id)) {
            return Err(format!("member {id} is both present and removed"));
        }
        for (id, lease) in &self.leases {
            for key in &lease.keys {
                if self.get(key).map(|kv| kv.lease) != Some(*id) {
                    return Err(format!("lease {id} lists {key:?}, not live with it"));
                }
            }
        }
        let current = self.revision();
        for kv in self.mvcc.range_at(KeyRange::new(&[0], &[0]), current) {
            if kv.lease != NO_LEASE
                && !self
                    .leases
                    .get(&kv.lease)
                    .is_some_and(|lease| lease.keys.contains(&kv.key))
            {
                return Err(format!(
                    "{:?} has lease {} that misses it",
                    kv.key, kv.lease
                ));
            }
        }
        Ok(())
    }

    // ---- commands ----

    fn put(&mut self, request: &PutRequest) -> Result<PutResponse, KvError> {
        check_put_request(request)?;
        self.check_put(request)?;
        let mut write = self.mvcc.begin_write();
        let mut response = execute_put(&mut write, &mut self.leases, request);
        response.header.revision = write.finish();
        Ok(response)
    }

    fn delete_range(
        &mut self,
        request: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, KvError> {
        if request.key.is_empty() {
            return Err(KvError::EmptyKey);
        }
        let mut write = self.mvcc.begin_write();
        let mut response = execute_delete(&mut write, &mut self.leases, request);
        response.header.revision = write.finish();
        Ok(response)
    }

    fn txn(&mut self, request: &TxnRequest) -> Result<TxnResponse, KvError> {
        request.validate()?;
        validate_puts(request)?;
        let path = self.decide(request);
        self.check_txn(request, &path)?;
        let mut write = self.mvcc.begin_write();
        let mut response = execute_txn(&mut write, &mut self.leases, request, &path);
        response.header.revision = write.finish();
        Ok(response)
    }

    fn lease_grant(&mut self, id: LeaseId, ttl: i64) -> Result<LeaseGrantResponse, KvError> {
        if id == NO_LEASE {
            return Err(KvError::LeaseIdZero);
        }
        if ttl > MAX_LEASE_TTL {
            return Err(KvError::LeaseTtlTooLarge);
        }
        if self.leases.contains_key(&id) {
            return Err(KvError::LeaseExists);
        }
        self.leases.insert(
            id,
            Lease {
                ttl,
                ..Lease::default()
            },
        );
        Ok(LeaseGrantResponse {
            header: self.header(),
            id,
            ttl,
        })
    }

    fn lease_revoke(&mut self, id: LeaseId) -> Result<ResponseHeader, KvError> {
        let lease = self.leases.remove(&id).ok_or(KvError::LeaseNotFound)?;
        let mut write = self.mvcc.begin_write();
        for key in &lease.keys {
            write.delete(key);
        }
        Ok(ResponseHeader {
            revision: write.finish(),
        })
    }

    fn lease_checkpoint(
        &mut self,
        id: LeaseId,
        remaining_ttl: i64,
    ) -> Result<ResponseHeader, KvError> {
        let lease = self.leases.get_mut(&id).ok_or(KvError::LeaseNotFound)?;
        lease.remaining_ttl = remaining_ttl;
        Ok(self.header())
    }

    fn set_member(&mut self, member: &MemberAttrs) -> Result<Vec<MemberAttrs>, KvError> {
        if member.id == 0 {
            return Err(KvError::MemberIdZero);
        }
        if self.removed.contains(&member.id) {
            return Err(KvError::MemberIdRemoved);
        }
        self.members.insert(member.id, member.clone());
        Ok(self.members())
    }

    fn remove_member(&mut self, id: u64) -> Result<Vec<MemberAttrs>, KvError> {
        // The cluster's membership already dropped `id` (the API layer changes it first), so
        // the ID is retired even if the member never published its attributes.
        let present = self.members.remove(&id);
        self.removed.insert(id);
        present.ok_or(KvError::MemberNotFound)?;
        Ok(self.members())
    }

    // ---- transactions ----

    /// Whether `compare` holds at the current revision (etcd's `applyCompare`).
    fn compare(&self, compare: &Compare) -> bool {
        let range = KeyRange::new(&compare.key, &compare.range_end);
        let mut kvs = self.mvcc.range_at(range, self.revision()).peekable();
        if kvs.peek().is_none() {
            return match compare.target {
                CompareTarget::Value(_) => false,
                _ => compare_kv(compare, &KeyValue::default()),
            };
        }
        kvs.all(|kv| compare_kv(compare, kv))
    }

    fn decide(&self, request: &TxnRequest) -> Path {
        let succeeded = request.compare.iter().all(|compare| self.compare(compare));
        let ops = if succeeded {
            &request.success
        } else {
            &request.failure
        };
        let nested = ops
            .iter()
            .filter_map(|op| match op {
                RequestOp::Txn(txn) => Some(self.decide(txn)),
                _ => None,
            })
            .collect();
        Path { succeeded, nested }
    }

    /// Checks every operation on the path before anything is written (etcd's
    /// `checkRequests`), so a transaction either fails whole or applies whole.
    fn check_txn(&self, request: &TxnRequest, path: &Path) -> Result<(), KvError> {
        let mut nested = path.nested.iter();
        for op in branch(request, path) {
            match op {
                RequestOp::Range(range) if range.revision > 0 => {
                    self.mvcc.read_revision(range.revision)?;
                }
                RequestOp::Range(_) | RequestOp::DeleteRange(_) => {}
                RequestOp::Put(put) => self.check_put(put)?,
                RequestOp::Txn(txn) => {
                    let path = nested.next().ok_or(KvError::TooManyOps)?;
                    self.check_txn(txn, path)?;
                }
            }
        }
        Ok(())
    }

    /// etcd's `checkPut`: `ignore_*` needs an existing key; a lease must exist.
    fn check_put(&self, request: &PutRequest) -> Result<(), KvError> {
        if (request.ignore_value || request.ignore_lease) && self.get(&request.key).is_none() {
            return Err(KvError::KeyNotFound);
        }
        if request.lease != NO_LEASE && !self.leases.contains_key(&request.lease) {
            return Err(KvError::LeaseNotFound);
        }
        Ok(())
    }

    fn read_only_txn(&self, request: &TxnRequest) -> Result<TxnResponse, KvError> {
        request.validate()?;
        if !is_read_only(request) {
            return Err(KvError::TxnHasWrites);
        }
        let path = self.decide(request);
        self.check_txn(request, &path)?;
        self.execute_read_only(request, &path)
    }

    fn execute_read_only(&self, request: &TxnRequest, path: &Path) -> Result<TxnResponse, KvError> {
        let mut nested = path.nested.iter();
        let mut responses = Vec::new();
        for op in branch(request, path) {
            responses.push(match op {
                RequestOp::Range(range) => ResponseOp::Range(self.range(range)?),
                RequestOp::Txn(txn) => {
                    let path = nested.next().ok_or(KvError::TooManyOps)?;
                    ResponseOp::Txn(self.execute_read_only(txn, path)?)
                }
                RequestOp::Put(_) | RequestOp::DeleteRange(_) => return Err(KvError::TxnHasWrites),
            });
        }
        Ok(TxnResponse {
            header: self.header(),
            succeeded: path.succeeded,
            responses,
        })
    }
}

/// The operations of the branch `path` takes.
fn branch<'a>(request: &'a TxnRequest, path: &Path) -> &'a [RequestOp] {
    if path.succeeded {
        &request.success
    } else {
        &request.failure
    }
}

/// Whether no branch of the transaction, at any depth, writes (etcd's `isTxnReadonly`).
fn is_read_only(request: &TxnRequest) -> bool {
    request
        .leaf_ops()
        .all(|op| matches!(op, RequestOp::Range(_)))
}

/// etcd's `checkPutRequest`: a key, and no value or lease alongside the matching `ignore_*`.
fn check_put_request(request: &PutRequest) -> Result<(), KvError> {
    if request.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if request.ignore_value && !request.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if request.ignore_lease && request.lease != NO_LEASE {
        return Err(KvError::LeaseProvided);
    }
    Ok(())
}

/// [`check_put_request`] for every put of the transaction, in both branches at any depth.
fn validate_puts(request: &TxnRequest) -> Result<(), KvError> {
    for op in request.leaf_ops() {
        if let RequestOp::Put(put) = op {
            check_put_request(put)?;
        }
    }
    Ok(())
}

/// Whether `kv` satisfies `compare` (etcd's `compareKV`).
fn compare_kv(compare: &Compare, kv: &KeyValue) -> bool {
    let ordering = match &compare.target {
        CompareTarget::Version(version) => kv.version.cmp(version),
        CompareTarget::Create(revision) => kv.create_revision.cmp(revision),
        CompareTarget::Mod(revision) => kv.mod_revision.cmp(revision),
        CompareTarget::Value(value) => kv.value.as_slice().cmp(value.as_slice()),
        CompareTarget::Lease(lease) => kv.lease.cmp(lease),
    };
    match compare.result {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
    }
}

/// Runs the branch `path` chose; every check already passed, so nothing here fails.
fn execute_txn(
    write: &mut WriteTxn<'_>,
    leases: &mut Leases,
    request: &TxnRequest,
    path: &Path,
) -> TxnResponse {
    let mut nested = path.nested.iter();
    let mut responses = Vec::new();
    for op in branch(request, path) {
        let response = match op {
            RequestOp::Range(range) => ResponseOp::Range(
                write
                    .store()
                    .range(range, write.read_revision())
                    .unwrap_or_default(),
            ),
            RequestOp::Put(put) => ResponseOp::Put(execute_put(write, leases, put)),
            RequestOp::DeleteRange(delete) => {
                ResponseOp::DeleteRange(execute_delete(write, leases, delete))
            }
            RequestOp::Txn(txn) => match nested.next() {
                Some(path) => ResponseOp::Txn(execute_txn(write, leases, txn, path)),
                None => ResponseOp::Txn(TxnResponse::default()),
            },
        };
        responses.push(response);
    }
    TxnResponse {
        header: ResponseHeader {
            revision: write.revision_after(),
        },
        succeeded: path.succeeded,
        responses,
    }
}

/// Writes one key (checked), moving it between leases as needed.
fn execute_put(write: &mut WriteTxn<'_>, leases: &mut Leases, request: &PutRequest) -> PutResponse {
    // The previous version itself is read only when the request needs its value or returns
    // it; a plain put needs only what the index keeps of it.
    let previous = write.store().latest_version(&request.key);
    let previous_kv = if request.ignore_value || request.prev_kv {
        write.store().latest(&request.key)
    } else {
        None
    };
    let value = match (previous_kv, request.ignore_value) {
        (Some(previous), true) => previous.value.clone(),
        _ => request.value.clone(),
    };
    let lease = match (previous, request.ignore_lease) {
        (Some(previous), true) => previous.lease,
        _ => request.lease,
    };
    let prev_kv = previous_kv.filter(|_| request.prev_kv).cloned();
    write.put(&request.key, value, lease, previous);
    if let Some(previous) = previous {
        detach(leases, previous.lease, &request.key);
    }
    if let Some(attached) = leases.get_mut(&lease) {
        attached.keys.insert(request.key.clone());
    }
    PutResponse {
        header: ResponseHeader {
            revision: write.revision_after(),
        },
        prev_kv,
    }
}

/// Deletes the live keys in the range, detaching them from their leases.
fn execute_delete(
    write: &mut WriteTxn<'_>,
    leases: &mut Leases,
    request: &DeleteRangeRequest,
) -> DeleteRangeResponse {
    let range = KeyRange::new(&request.key, &request.range_end);
    let keys: Vec<Vec<u8>> = write
        .store()
        .range_at(range, write.read_revision())
        .map(|kv| kv.key.clone())
        .collect();
    let mut prev_kvs = Vec::new();
    for key in &keys {
        if let Some(previous) = write.delete(key) {
            detach(leases, previous.lease, &previous.key);
            if request.prev_kv {
                prev_kvs.push(previous);
            }
        }
    }
    DeleteRangeResponse {
        header: ResponseHeader {
            revision: write.revision_after(),
        },
        deleted: keys.len() as i64,
        prev_kvs,
    }
}

fn detach(leases: &mut Leases, lease: LeaseId, key: &[u8]) {
    if let Some(lease) = leases.get_mut(&lease) {
        lease.keys.remove(key);
    }
}

impl concord_core::StateMachine for KvStore {
    type Command = Command;
    type Query = Query;
    type Output = Output;

    fn apply(&mut self, command: &Command) -> Output {
        if self.out_of_space() && command.adds_data() {
            return Output::Error(KvError::NoSpace);
        }
        let result = match command {
            Command::Put(request) => self.put(request).map(Output::Put),
            Command::DeleteRange(request) => self.delete_range(request).map(Output::DeleteRange),
            Command::Txn(request) => self.txn(request).map(Output::Txn),
            Command::Compact(request) => self.mvcc.compact(request.revision).map(|()| {
                Output::Compact(CompactResponse {
                    header: self.header(),
                })
            }),
            Command::LeaseGrant { id, ttl } => self.lease_grant(*id, *ttl).map(Output::LeaseGrant),
            Command::LeaseRevoke { id } => self.lease_revoke(*id).map(Output::LeaseRevoke),
            Command::LeaseCheckpoint { id, remaining_ttl } => self
                .lease_checkpoint(*id, *remaining_ttl)
                .map(Output::LeaseCheckpoint),
            Command::SetMember(member) => self.set_member(member).map(Output::Members),
            Command::RemoveMember { id } => self.remove_member(*id).map(Output::Members),
            Command::Alarm {
                active,
                member,
                alarm,
            } => Ok(Output::Alarms(self.set_alarm(*active, *member, *alarm))),
        };
        result.unwrap_or_else(Output::Error)
    }

    fn query(&self, query: &Query) -> Output {
        let result = match query {
            Query::Range(request) => self.range(request).map(Output::Range),
            Query::Txn(request) => self.read_only_txn(request).map(Output::Txn),
            Query::Leases => Ok(Output::Leases(self.leases())),
            Query::LeaseKeys { id } => self.lease_keys(*id).map(Output::LeaseKeys),
            Query::Members => Ok(Output::Members(self.members())),
            Query::Status => Ok(Output::Status(self.status())),
            Query::Alarms => Ok(Output::Alarms(self.alarms().collect())),
        };
        result.unwrap_or_else(Output::Error)
    }

    fn snapshot(&self) -> Vec<u8> {
        self.encode()
    }

    fn snapshot_parts(&self) -> concord_core::StateBytes {
        self.encode_parts()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        *self = Self::decode(snapshot).map_err(|error| error.to_string())?;
        Ok(())
    }
}
