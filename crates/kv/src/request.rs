//! Requests and responses of the KV service, mirroring etcd's `etcdserverpb` messages field by
//! field in plain Rust types (the API layer translates protobuf to and from these).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::KvError;
use crate::types::{KeyRange, KeyValue, LeaseId, ResponseHeader, Revision};

/// The most compares, and the most operations in each branch, of one transaction (etcd's
/// `--max-txn-ops` default).
pub const MAX_TXN_OPS: usize = 128;

/// The deepest nesting of transactions inside transactions. etcd bounds it only by the message
/// size; Concord bounds it so that checking and applying never recurse without limit.
pub const MAX_TXN_DEPTH: usize = 16;

/// How a range's results are ordered (etcd's `RangeRequest.SortOrder`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SortOrder {
    /// No sorting: key order, unless `sort_target` is not `Key`, which then sorts ascending.
    #[default]
    None,
    /// Lowest first.
    Ascend,
    /// Highest first.
    Descend,
}

/// What a range's results are sorted by (etcd's `RangeRequest.SortTarget`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SortTarget {
    /// The key.
    #[default]
    Key,
    /// The version.
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    Mod,
    /// The value.
    Value,
}

/// Reads keys (etcd's `RangeRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RangeRequest {
    /// The first key (must not be empty).
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The end of the range; see [`KeyRange`] for the conventions.
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    /// At most this many key-values (0 or negative: no limit).
    pub limit: i64,
    /// The revision to read at (0 or negative: the current one).
    pub revision: Revision,
    /// The order of the results.
    pub sort_order: SortOrder,
    /// What the results are sorted by.
    pub sort_target: SortTarget,
    /// Accepted for compatibility; the store always serves reads from its applied state.
    pub serializable: bool,
    /// Return keys and metadata without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Keep only keys with `mod_revision >=` this (0: no bound).
    pub min_mod_revision: Revision,
    /// Keep only keys with `mod_revision <=` this (0: no bound).
    pub max_mod_revision: Revision,
    /// Keep only keys with `create_revision >=` this (0: no bound).
    pub min_create_revision: Revision,
    /// Keep only keys with `create_revision <=` this (0: no bound).
    pub max_create_revision: Revision,
}

impl RangeRequest {
    /// A read of one key at the current revision.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            ..Self::default()
        }
    }

    /// A read of `[key, range_end)` at the current revision.
    pub fn range(key: impl Into<Vec<u8>>, range_end: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            range_end: range_end.into(),
            ..Self::default()
        }
    }
}

/// The result of a [`RangeRequest`] (etcd's `RangeResponse`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RangeResponse {
    /// The revision read at.
    pub header: ResponseHeader,
    /// The key-values (none when `count_only`).
    pub kvs: Vec<KeyValue>,
    /// Whether more key-values matched than `limit` allowed.
    pub more: bool,
    /// How many keys are in the range at that revision (before the min/max filters and the
    /// limit, as etcd counts).
    pub count: i64,
}

/// Writes a key (etcd's `PutRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PutRequest {
    /// The key (must not be empty).
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// The lease to attach the key to ([`crate::NO_LEASE`]: none, detaching it).
    pub lease: LeaseId,
    /// Return the key-value as it was before the put.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist; `value` must be empty).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist; `lease` must be 0).
    pub ignore_lease: bool,
}

impl PutRequest {
    /// A plain put of `value` at `key`.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            ..Self::default()
        }
    }
}

/// The result of a [`PutRequest`] (etcd's `PutResponse`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PutResponse {
    /// The revision the put created.
    pub header: ResponseHeader,
    /// The previous key-value, when asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// Deletes keys (etcd's `DeleteRangeRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeleteRangeRequest {
    /// The first key (must not be empty).
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The end of the range; see [`KeyRange`] for the conventions.
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

impl DeleteRangeRequest {
    /// A delete of `[key, range_end)` (one key when `range_end` is empty).
    pub fn new(key: impl Into<Vec<u8>>, range_end: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            range_end: range_end.into(),
            prev_kv: false,
        }
    }
}

/// The result of a [`DeleteRangeRequest`] (etcd's `DeleteRangeResponse`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeleteRangeResponse {
    /// The revision the delete created (unchanged when it deleted nothing).
    pub header: ResponseHeader,
    /// How many keys were deleted.
    pub deleted: i64,
    /// The deleted key-values, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// How a compare relates the key's field to the given value (etcd's `Compare.CompareResult`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompareResult {
    /// The field equals the value.
    Equal,
    /// The field is greater than the value.
    Greater,
    /// The field is less than the value.
    Less,
    /// The field differs from the value.
    NotEqual,
}

/// Which field a compare looks at, with the value to compare it to (etcd's `Compare.target`
/// and `target_union` in one).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompareTarget {
    /// The key's version (0 for a missing key).
    Version(i64),
    /// The key's create revision (0 for a missing key).
    Create(Revision),
    /// The key's mod revision (0 for a missing key).
    Mod(Revision),
    /// The key's value, compared bytewise (a compare on a missing key's value is false).
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The key's lease (0 for a missing key or a key without a lease).
    Lease(LeaseId),
}

/// A condition of a transaction (etcd's `Compare`). Over a range, every key in it must satisfy
/// the condition; an empty range behaves like one missing key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Compare {
    /// The relation.
    pub result: CompareResult,
    /// The field and the value.
    pub target: CompareTarget,
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The end of the range (empty: only `key`).
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
}

impl Compare {
    /// A compare on one key.
    pub fn new(key: impl Into<Vec<u8>>, result: CompareResult, target: CompareTarget) -> Self {
        Self {
            result,
            target,
            key: key.into(),
            range_end: Vec::new(),
        }
    }
}

/// One operation of a transaction branch (etcd's `RequestOp`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequestOp {
    /// A read.
    Range(RangeRequest),
    /// A write.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested transaction.
    Txn(TxnRequest),
}

/// The result of one [`RequestOp`] (etcd's `ResponseOp`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResponseOp {
    /// A read's result.
    Range(RangeResponse),
    /// A write's result.
    Put(PutResponse),
    /// A delete's result.
    DeleteRange(DeleteRangeResponse),
    /// A nested transaction's result.
    Txn(TxnResponse),
}

/// An atomic if/then/else (etcd's `TxnRequest`): if every compare holds, run `success`, else
/// run `failure`. All compares, nested ones included, are evaluated against the state before
/// the transaction; the operations then run in order, each seeing the writes before it. All
/// writes share one new revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnRequest {
    /// The conditions.
    pub compare: Vec<Compare>,
    /// The operations when every condition holds.
    pub success: Vec<RequestOp>,
    /// The operations otherwise.
    pub failure: Vec<RequestOp>,
}

/// The result of a [`TxnRequest`] (etcd's `TxnResponse`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnResponse {
    /// The revision after the transaction.
    pub header: ResponseHeader,
    /// Whether the compares held (and `success` ran).
    pub succeeded: bool,
    /// The results of the branch that ran, in order.
    pub responses: Vec<ResponseOp>,
}

/// Removes history up to a revision (etcd's `CompactionRequest`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CompactRequest {
    /// Versions older than this become unreadable.
    pub revision: Revision,
    /// Accepted for compatibility: the in-memory store always compacts at once.
    pub physical: bool,
}

/// The result of a [`CompactRequest`] (etcd's `CompactionResponse`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CompactResponse {
    /// The current revision (a compaction creates none).
    pub header: ResponseHeader,
}

impl RequestOp {
    fn check_key(key: &[u8]) -> Result<(), KvError> {
        if key.is_empty() {
            Err(KvError::EmptyKey)
        } else {
            Ok(())
        }
    }
}

impl TxnRequest {
    /// Every operation of both branches at any depth, in order (a nested transaction's own
    /// operations where it stands, not the transaction itself): `success`, then `failure`.
    pub fn leaf_ops(&self) -> impl Iterator<Item = &RequestOp> {
        // The branches still to visit; the top one is the next.
        let mut stack = vec![self.failure.iter(), self.success.iter()];
        std::iter::from_fn(move || loop {
            match stack.last_mut()?.next() {
                Some(RequestOp::Txn(txn)) => {
                    stack.push(txn.failure.iter());
                    stack.push(txn.success.iter());
                }
                Some(op) => return Some(op),
                None => {
                    stack.pop();
                }
            }
        })
    }

    /// Checks the request as etcd's API layer does before proposing it (`checkTxnRequest` and
    /// `checkIntervals`): op counts, empty keys, nesting depth, and no key written twice or
    /// both written and deleted in one branch. The store runs the same check when applying.
    pub fn validate(&self) -> Result<(), KvError> {
        self.validate_at_depth(1)?;
        check_intervals(&self.success, 1)?;
        check_intervals(&self.failure, 1)?;
        Ok(())
    }

    fn validate_at_depth(&self, depth: usize) -> Result<(), KvError> {
        if depth > MAX_TXN_DEPTH
            || self.compare.len() > MAX_TXN_OPS
            || self.success.len() > MAX_TXN_OPS
            || self.failure.len() > MAX_TXN_OPS
        {
            return Err(KvError::TooManyOps);
        }
        for op in self.success.iter().chain(&self.failure) {
            match op {
                RequestOp::Range(range) => RequestOp::check_key(&range.key)?,
                RequestOp::Put(put) => RequestOp::check_key(&put.key)?,
                RequestOp::DeleteRange(delete) => RequestOp::check_key(&delete.key)?,
                RequestOp::Txn(txn) => txn.validate_at_depth(depth + 1)?,
            }
        }
        Ok(())
    }
}

/// The keys a branch puts and the ranges it deletes, its nested transactions' included.
type Intervals<'a> = (BTreeSet<&'a [u8]>, Vec<KeyRange<'a>>);

/// etcd's `checkIntervals`: within one branch, a key may be put only once and may not be put
/// where the branch (or a nested transaction in it) deletes. A nested transaction's `success`
/// and `failure` may put the same key, since only one of them runs. Deletes may overlap.
fn check_intervals(ops: &[RequestOp], depth: usize) -> Result<Intervals<'_>, KvError> {
    if depth > MAX_TXN_DEPTH {
        return Err(KvError::TooManyOps);
    }
    let mut deletes: Vec<KeyRange<'_>> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(delete) => Some(KeyRange::new(&delete.key, &delete.range_end)),
            _ => None,
        })
        .collect();
    let deleted = |deletes: &[KeyRange<'_>], key: &[u8]| {
        deletes
            .iter()
            .any(|range| range.intersects(&KeyRange::Single(key)))
    };
    let mut puts: BTreeSet<&[u8]> = BTreeSet::new();
    for op in ops {
        let RequestOp::Txn(txn) = op else { continue };
        let (puts_then, deletes_then) = check_intervals(&txn.success, depth + 1)?;
        let (puts_else, deletes_else) = check_intervals(&txn.failure, depth + 1)?;
        for key in &puts_then {
            if puts.contains(key) || deleted(&deletes, key) {
                return Err(KvError::DuplicateKey);
            }
            puts.insert(key);
        }
        for key in &puts_else {
            if (puts.contains(key) && !puts_then.contains(key)) || deleted(&deletes, key) {
                return Err(KvError::DuplicateKey);
            }
            puts.insert(key);
        }
        deletes.extend(deletes_then);
        deletes.extend(deletes_else);
    }
    for op in ops {
        let RequestOp::Put(put) = op else { continue };
        let key = put.key.as_slice();
        if puts.contains(key) || deleted(&deletes, key) {
            return Err(KvError::DuplicateKey);
        }
        puts.insert(key);
    }
    Ok((puts, deletes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> RequestOp {
        RequestOp::Put(PutRequest::new(key, "v"))
    }

    fn delete(key: &str, end: &str) -> RequestOp {
        RequestOp::DeleteRange(DeleteRangeRequest::new(key, end))
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: Vec::new(),
            success,
            failure,
        }
    }

    #[test]
    fn duplicate_puts_are_rejected() {
        assert_eq!(
            txn(vec![put("a"), put("a")], vec![]).validate(),
            Err(KvError::DuplicateKey)
        );
        assert_eq!(txn(vec![put("a")], vec![put("a")]).validate(), Ok(()));
    }

    #[test]
    fn a_put_inside_a_deleted_range_is_a_duplicate() {
        assert_eq!(
            txn(vec![delete("a", "c"), put("b")], vec![]).validate(),
            Err(KvError::DuplicateKey)
        );
        assert_eq!(
            txn(vec![put("a"), delete("a", "")], vec![]).validate(),
            Err(KvError::DuplicateKey)
        );
        assert_eq!(
            txn(vec![put("c"), delete("a", "c")], vec![]).validate(),
            Ok(())
        );
        assert_eq!(
            txn(vec![delete("a", "c"), delete("b", "d")], vec![]).validate(),
            Ok(()),
            "deletes may overlap"
        );
    }

    #[test]
    fn nested_branches_may_share_keys_but_not_with_the_outer_branch() {
        let nested = RequestOp::Txn(txn(vec![put("a")], vec![put("a")]));
        assert_eq!(txn(vec![nested.clone()], vec![]).validate(), Ok(()));
        assert_eq!(
            txn(vec![nested.clone(), put("a")], vec![]).validate(),
            Err(KvError::DuplicateKey)
        );
        let nested_delete = RequestOp::Txn(txn(vec![delete("a", "b")], vec![]));
        assert_eq!(
            txn(vec![nested_delete, put("a")], vec![]).validate(),
            Err(KvError::DuplicateKey)
        );
    }

    #[test]
    fn limits_and_empty_keys() {
        assert_eq!(
            txn(vec![put("")], vec![]).validate(),
            Err(KvError::EmptyKey)
        );
        let many: Vec<RequestOp> = (0..=MAX_TXN_OPS).map(|i| put(&i.to_string())).collect();
        assert_eq!(txn(many, vec![]).validate(), Err(KvError::TooManyOps));
        let mut deep = txn(vec![], vec![]);
        for _ in 0..MAX_TXN_DEPTH {
            deep = txn(vec![RequestOp::Txn(deep)], vec![]);
        }
        assert_eq!(deep.validate(), Err(KvError::TooManyOps));
    }
}
