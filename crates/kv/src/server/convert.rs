//! Translation between etcd's wire messages and the store's Rust types, and from store errors
//! to the gRPC statuses etcd clients expect.

use tonic::{Code, Status};

use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;
use crate::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event,
    EventKind, KeyValue, KvError, MemberAttrs, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget, TxnRequest, TxnResponse,
};

/// What every response header carries besides the revision.
#[derive(Clone, Copy, Debug)]
pub struct HeaderInfo {
    /// The cluster's id.
    pub cluster_id: u64,
    /// The answering member.
    pub member_id: u64,
    /// The Raft term when the request was served.
    pub raft_term: u64,
}

impl HeaderInfo {
    /// A wire header at `revision`.
    pub fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft_term,
        })
    }
}

/// The gRPC status etcd returns for a store error (etcd's `rpctypes`).
pub fn status_of(error: &KvError) -> Status {
    let code = match error {
        KvError::Compacted { .. } | KvError::FutureRevision => Code::OutOfRange,
        KvError::EmptyKey
        | KvError::ValueProvided
        | KvError::LeaseProvided
        | KvError::DuplicateKey
        | KvError::TooManyOps
        | KvError::LeaseTtlTooLarge
        | KvError::LeaseIdZero
        | KvError::MemberIdZero
        | KvError::TxnHasWrites => Code::InvalidArgument,
        KvError::KeyNotFound => Code::InvalidArgument,
        KvError::LeaseNotFound | KvError::MemberNotFound => Code::NotFound,
        KvError::LeaseExists | KvError::MemberIdRemoved => Code::FailedPrecondition,
        KvError::NotPrimaryLessor => Code::FailedPrecondition,
        KvError::NoSpace => Code::ResourceExhausted,
    };
    let message = error.to_string();
    // etcd prefixes its mvcc errors with "etcdserver: " on the wire.
    let message = if message.starts_with("etcdserver: ") {
        message
    } else {
        format!("etcdserver: {message}")
    };
    Status::new(code, message)
}

fn bad(message: impl Into<String>) -> Status {
    Status::invalid_argument(message.into())
}

/// A wire key-value.
pub fn kv_to_pb(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// A key-value from the wire (or from etcd's backend, which stores the same message).
pub fn kv_from_pb(kv: mvccpb::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// A wire watch event.
pub fn event_to_pb(event: Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match event.kind {
            EventKind::Put => mvccpb::event::EventType::Put as i32,
            EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(kv_to_pb(event.kv)),
        prev_kv: event.prev_kv.map(kv_to_pb),
    }
}

/// A store range request.
pub fn range_from_pb(request: pb::RangeRequest) -> Result<RangeRequest, Status> {
    use pb::range_request::{SortOrder as O, SortTarget as T};
    let sort_order = match O::try_from(request.sort_order) {
        Ok(O::None) => SortOrder::None,
        Ok(O::Ascend) => SortOrder::Ascend,
        Ok(O::Descend) => SortOrder::Descend,
        Err(_) => return Err(bad("etcdserver: invalid sort option")),
    };
    let sort_target = match T::try_from(request.sort_target) {
        Ok(T::Key) => SortTarget::Key,
        Ok(T::Version) => SortTarget::Version,
        Ok(T::Create) => SortTarget::Create,
        Ok(T::Mod) => SortTarget::Mod,
        Ok(T::Value) => SortTarget::Value,
        Err(_) => return Err(bad("etcdserver: invalid sort option")),
    };
    if request.key.is_empty() {
        return Err(bad("etcdserver: key is not provided"));
    }
    Ok(RangeRequest {
        key: request.key,
        range_end: request.range_end,
        limit: request.limit,
        revision: request.revision,
        sort_order,
        sort_target,
        serializable: request.serializable,
        keys_only: request.keys_only,
        count_only: request.count_only,
        min_mod_revision: request.min_mod_revision,
        max_mod_revision: request.max_mod_revision,
        min_create_revision: request.min_create_revision,
        max_create_revision: request.max_create_revision,
    })
}

/// A wire range response.
pub fn range_to_pb(response: RangeResponse, info: &HeaderInfo) -> pb::RangeResponse {
    pb::RangeResponse {
        header: info.header(response.header.revision),
        kvs: response.kvs.into_iter().map(kv_to_pb).collect(),
        more: response.more,
        count: response.count,
    }
}

/// A store put request.
pub fn put_from_pb(request: pb::PutRequest) -> Result<PutRequest, Status> {
    if request.key.is_empty() {
        return Err(bad("etcdserver: key is not provided"));
    }
    Ok(PutRequest {
        key: request.key,
        value: request.value,
        lease: request.lease,
        prev_kv: request.prev_kv,
        ignore_value: request.ignore_value,
        ignore_lease: request.ignore_lease,
    })
}

/// A wire put response.
pub fn put_to_pb(response: PutResponse, info: &HeaderInfo) -> pb::PutResponse {
    pb::PutResponse {
        header: info.header(response.header.revision),
        prev_kv: response.prev_kv.map(kv_to_pb),
    }
}

/// A store delete request.
pub fn delete_from_pb(request: pb::DeleteRangeRequest) -> Result<DeleteRangeRequest, Status> {
    if request.key.is_empty() {
        return Err(bad("etcdserver: key is not provided"));
    }
    Ok(DeleteRangeRequest {
        key: request.key,
        range_end: request.range_end,
        prev_kv: request.prev_kv,
    })
}

/// A wire delete response.
pub fn delete_to_pb(response: DeleteRangeResponse, info: &HeaderInfo) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: info.header(response.header.revision),
        deleted: response.deleted,
        prev_kvs: response.prev_kvs.into_iter().map(kv_to_pb).collect(),
    }
}

fn compare_from_pb(compare: pb::Compare) -> Result<Compare, Status> {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match R::try_from(compare.result) {
        Ok(R::Equal) => CompareResult::Equal,
        Ok(R::Greater) => CompareResult::Greater,
        Ok(R::Less) => CompareResult::Less,
        Ok(R::NotEqual) => CompareResult::NotEqual,
        Err(_) => return Err(bad("etcdserver: invalid compare result")),
    };
    let union = compare.target_union;
    let target = match T::try_from(compare.target) {
        Ok(T::Version) => CompareTarget::Version(match union {
            Some(U::Version(v)) => v,
            None => 0,
            _ => return Err(bad("etcdserver: compare target does not match its value")),
        }),
        Ok(T::Create) => CompareTarget::Create(match union {
            Some(U::CreateRevision(v)) => v,
            None => 0,
            _ => return Err(bad("etcdserver: compare target does not match its value")),
        }),
        Ok(T::Mod) => CompareTarget::Mod(match union {
            Some(U::ModRevision(v)) => v,
            None => 0,
            _ => return Err(bad("etcdserver: compare target does not match its value")),
        }),
        Ok(T::Value) => CompareTarget::Value(match union {
            Some(U::Value(v)) => v,
            None => Vec::new(),
            _ => return Err(bad("etcdserver: compare target does not match its value")),
        }),
        Ok(T::Lease) => CompareTarget::Lease(match union {
            Some(U::Lease(v)) => v,
            None => 0,
            _ => return Err(bad("etcdserver: compare target does not match its value")),
        }),
        Err(_) => return Err(bad("etcdserver: invalid compare target")),
    };
    if compare.key.is_empty() {
        return Err(bad("etcdserver: key is not provided"));
    }
    Ok(Compare {
        result,
        target,
        key: compare.key,
        range_end: compare.range_end,
    })
}

fn op_from_pb(op: pb::RequestOp, depth: usize) -> Result<RequestOp, Status> {
    use pb::request_op::Request;
    match op.request {
        Some(Request::RequestRange(range)) => Ok(RequestOp::Range(range_from_pb(range)?)),
        Some(Request::RequestPut(put)) => Ok(RequestOp::Put(put_from_pb(put)?)),
        Some(Request::RequestDeleteRange(delete)) => {
            Ok(RequestOp::DeleteRange(delete_from_pb(delete)?))
        }
        Some(Request::RequestTxn(txn)) => Ok(RequestOp::Txn(txn_from_pb_at(txn, depth + 1)?)),
        None => Err(bad("etcdserver: a transaction operation is empty")),
    }
}

/// A store transaction (validated for depth; the store checks duplicates and size).
pub fn txn_from_pb(request: pb::TxnRequest) -> Result<TxnRequest, Status> {
    txn_from_pb_at(request, 0)
}

fn txn_from_pb_at(request: pb::TxnRequest, depth: usize) -> Result<TxnRequest, Status> {
    if depth > crate::MAX_TXN_DEPTH {
        return Err(bad("etcdserver: too many operations in txn request"));
    }
    Ok(TxnRequest {
        compare: request
            .compare
            .into_iter()
            .map(compare_from_pb)
            .collect::<Result<_, _>>()?,
        success: request
            .success
            .into_iter()
            .map(|op| op_from_pb(op, depth))
            .collect::<Result<_, _>>()?,
        failure: request
            .failure
            .into_iter()
            .map(|op| op_from_pb(op, depth))
            .collect::<Result<_, _>>()?,
    })
}

/// Whether a transaction writes anything (a read-only one is served as a read).
pub fn txn_writes(txn: &TxnRequest) -> bool {
    txn.success.iter().chain(&txn.failure).any(|op| match op {
        RequestOp::Range(_) => false,
        RequestOp::Put(_) | RequestOp::DeleteRange(_) => true,
        RequestOp::Txn(inner) => txn_writes(inner),
    })
}

/// A wire transaction response.
pub fn txn_to_pb(response: TxnResponse, info: &HeaderInfo) -> pb::TxnResponse {
    use pb::response_op::Response;
    pb::TxnResponse {
        header: info.header(response.header.revision),
        succeeded: response.succeeded,
        responses: response
            .responses
            .into_iter()
            .map(|op| pb::ResponseOp {
                response: Some(match op {
                    ResponseOp::Range(r) => Response::ResponseRange(range_to_pb(r, info)),
                    ResponseOp::Put(r) => Response::ResponsePut(put_to_pb(r, info)),
                    ResponseOp::DeleteRange(r) => {
                        Response::ResponseDeleteRange(delete_to_pb(r, info))
                    }
                    ResponseOp::Txn(r) => Response::ResponseTxn(txn_to_pb(r, info)),
                }),
            })
            .collect(),
    }
}

/// A wire member.
pub fn member_to_pb(member: &MemberAttrs) -> pb::Member {
    pb::Member {
        id: member.id,
        name: member.name.clone(),
        peer_ur_ls: member.peer_urls.clone(),
        client_ur_ls: member.client_urls.clone(),
        is_learner: member.is_learner,
    }
}

/// Checks `key` and `value` against the configured limits (etcd refuses oversized requests
/// with `InvalidArgument`).
pub fn check_sizes(key: &[u8], value_len: usize, limits: &Limits) -> Result<(), Status> {
    if key.len() > limits.max_key_bytes {
        return Err(bad(format!(
            "etcdserver: key is too large ({} bytes; the limit is {})",
            key.len(),
            limits.max_key_bytes
        )));
    }
    if key.len() + value_len > limits.max_request_bytes {
        return Err(bad("etcdserver: request is too large"));
    }
    Ok(())
}

/// Request size limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest request, in bytes.
    pub max_request_bytes: usize,
    /// The largest key, in bytes.
    pub max_key_bytes: usize,
}
