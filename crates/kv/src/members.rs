//! Cluster members as the store replicates them, for etcd's Cluster API (`MemberList`,
//! `MemberAdd`, `MemberUpdate`, `MemberRemove`, `MemberPromote`).
//!
//! These are the *attributes* etcd shows; which nodes vote is decided by Raft's membership
//! changes, which the API layer drives alongside these commands.

use serde::{Deserialize, Serialize};

/// One member (etcd's `Member` message).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberAttrs {
    /// The member ID (never 0).
    pub id: u64,
    /// Its human-readable name (empty until the member has started and published it).
    pub name: String,
    /// The URLs its peers reach it at.
    pub peer_urls: Vec<String>,
    /// The URLs clients reach it at.
    pub client_urls: Vec<String>,
    /// Whether it is a non-voting learner.
    pub is_learner: bool,
}
