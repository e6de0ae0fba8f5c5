//! The store's typed errors. Their `Display` texts are etcd's error messages, so the API layer
//! can map each to etcd's gRPC status code and message (`rpctypes` in etcd).

use serde::{Deserialize, Serialize};

use crate::types::Revision;

/// Why a command or query was refused. Nothing was changed when one is returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error, Serialize, Deserialize)]
pub enum KvError {
    /// The revision asked for was removed by a compaction (`codes.OutOfRange`).
    #[error("mvcc: required revision has been compacted")]
    Compacted {
        /// The store's compacted revision, which a watch cancel response reports.
        compact_revision: Revision,
    },
    /// The revision asked for is newer than the store's (`codes.OutOfRange`).
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// A request without a key (`codes.InvalidArgument`).
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// A put with `ignore_value` or `ignore_lease` on a key that does not exist
    /// (`codes.InvalidArgument`).
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A put with `ignore_value` that also carries a value (`codes.InvalidArgument`).
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// A put with `ignore_lease` that also carries a lease (`codes.InvalidArgument`).
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A transaction that writes one key twice, or writes a key it also deletes
    /// (`codes.InvalidArgument`).
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A transaction with more compares or operations than allowed in one branch, or nested
    /// deeper than [`crate::MAX_TXN_DEPTH`] (`codes.InvalidArgument`).
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// The lease does not exist (never granted, revoked or expired) (`codes.NotFound`).
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant of a lease ID that is already in use (`codes.FailedPrecondition`).
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A grant with a TTL above [`crate::MAX_LEASE_TTL`] (`codes.OutOfRange`).
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A grant of lease ID 0, which means "no lease". Concord-specific: the API layer picks a
    /// non-zero ID before proposing, as etcd's server does (`codes.InvalidArgument`).
    #[error("etcdserver: lease ID must not be 0")]
    LeaseIdZero,
    /// A lease operation on a node whose lessor is not the primary (the leader's)
    /// (`codes.FailedPrecondition`; etcd retries it on the leader).
    #[error("not a primary lessor")]
    NotPrimaryLessor,
    /// A write inside a transaction served as a read ([`crate::Query::Txn`]); such a
    /// transaction must be proposed as [`crate::Command::Txn`]. Concord-specific
    /// (`codes.InvalidArgument`).
    #[error("etcdserver: a transaction with writes must go through the log")]
    TxnHasWrites,
    /// The member does not exist (`codes.NotFound`).
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// A member with ID 0, which etcd never assigns (`codes.InvalidArgument`).
    #[error("etcdserver: member ID must not be 0")]
    MemberIdZero,
    /// The member ID belonged to a member that was removed; IDs are never reused
    /// (`codes.FailedPrecondition`).
    #[error("etcdserver: ID removed")]
    MemberIdRemoved,
    /// A write that adds data while a member's space alarm is raised (`codes.ResourceExhausted`).
    #[error("mvcc: database space exceeded")]
    NoSpace,
}
