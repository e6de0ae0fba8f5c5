//! Concord DB's replicated state machine: an etcd-compatible multi-version key-value store,
//! sans-IO and deterministic.
//!
//! [`KvStore`] implements [`concord_core::StateMachine`], so `concord_raft::RaftNode<KvStore>`
//! replicates it. It mirrors etcd v3's data model and semantics (etcd's `mvcc`, `lease` and
//! `etcdserver/apply` packages) in plain Rust types; the gRPC API layer translates etcd's
//! protobuf messages to [`Command`]s and [`Query`]s and back.
//!
//! * [`mvcc`]: keys, revisions, versions, tombstones, compaction and watch [`Event`]s;
//! * [`request`]: Range, Put, DeleteRange, Txn (with etcd's duplicate-key rule) and Compact;
//! * [`lease`]: the [`Lessor`], which decides expiry from a time the driver passes in (the
//!   state machine never reads a clock); the replicated lease table lives in [`KvStore`];
//! * [`members`]: cluster member attributes;
//! * [`KvError`]: errors whose texts are etcd's.
//!
//! ```
//! use concord_core::StateMachine;
//! use concord_kv::{Command, KvStore, Output, PutRequest, Query, RangeRequest};
//!
//! let mut store = KvStore::default();
//! store.apply(&Command::Put(PutRequest::new("foo", "bar")));
//! let Output::Range(response) = store.query(&Query::Range(RangeRequest::key("foo"))) else {
//!     panic!("a range answers with a range response");
//! };
//! assert_eq!(response.kvs[0].value, b"bar");
//! // An empty store is at revision 1, as etcd's: the first write makes revision 2.
//! assert_eq!(response.kvs[0].mod_revision, 2);
//! assert_eq!(response.header.revision, 2);
//! ```
//!
//! `crates/kv/README.md` describes the data model, revision rules, leases, watch events and
//! error texts.
#![deny(missing_docs)]

pub mod bolt;
pub mod error;
pub mod lease;
pub mod loadgen;
pub mod members;
pub mod mvcc;
pub mod pb;
pub mod request;
pub mod server;
mod snapshot;
mod store;
pub mod types;
pub mod workload;

pub use error::KvError;
pub use lease::{LeaseState, Lessor, LessorConfig, TimeToLive, DEFAULT_MIN_TTL, MAX_LEASE_TTL};
pub use members::MemberAttrs;
pub use mvcc::{Event, EventKind};
pub use request::{
    CompactRequest, CompactResponse, Compare, CompareResult, CompareTarget, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseOp, SortOrder, SortTarget, TxnRequest, TxnResponse, MAX_TXN_DEPTH, MAX_TXN_OPS,
};
pub use snapshot::SnapshotError;
pub use store::{
    Alarm, Command, KvStore, LeaseGrantResponse, LeaseInfo, Output, Query, StoreStatus,
};
pub use types::{
    prefix_end, KeyRange, KeyValue, LeaseId, ResponseHeader, Revision, SubRevision, NO_LEASE,
};
