//! Log entries (Raft paper §5.3): a term, an index and a payload. Commands sit behind an [`Arc`]
//! so that sending and persisting entries never copies them.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use concord_core::NodeId;

use crate::Membership;

/// A term number (paper §5.1).
pub type Term = u64;

/// A log index; the first entry has index 1, and 0 means "before the log".
pub type LogIndex = u64;

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload<C> {
    /// The empty entry a new leader appends to commit entries of earlier terms (paper §8).
    Noop,
    /// A client command for the state machine.
    Command(Arc<C>),
    /// A client command a follower forwarded to the leader (`Config::forward_proposals`):
    /// the follower answers its client when it applies this entry itself.
    Forwarded {
        /// The command.
        command: Arc<C>,
        /// Who forwarded it, and under which id.
        origin: ProposalOrigin,
    },
    /// A cluster configuration (thesis §4.3); takes effect as soon as it is appended.
    Membership(Arc<Membership>),
}

/// The follower that forwarded a proposal, and its id for it (unique per incarnation: each
/// starts its ids at a random number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProposalOrigin {
    /// The follower.
    pub node: NodeId,
    /// Its id for the proposal.
    pub id: u64,
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<C> {
    /// The entry's position in the log.
    pub index: LogIndex,
    /// The term of the leader that created it.
    pub term: Term,
    /// What it carries.
    pub payload: Payload<C>,
}

impl<C> Entry<C> {
    /// The command, if this entry carries one.
    pub fn command(&self) -> Option<&C> {
        match &self.payload {
            Payload::Command(command) | Payload::Forwarded { command, .. } => Some(command),
            _ => None,
        }
    }

    /// The configuration, if this entry carries one.
    pub fn membership(&self) -> Option<&Membership> {
        match &self.payload {
            Payload::Membership(membership) => Some(membership),
            _ => None,
        }
    }

    /// A rough size in bytes, for batching: the shallow in-memory size.
    pub fn estimated_size(&self) -> usize {
        std::mem::size_of::<Self>() + std::mem::size_of::<C>()
    }
}
