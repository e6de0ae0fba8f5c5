//! The key-value workload on Raft: reads go through ReadIndex (or a lease), writes, CASes and
//! appends are proposals.

use concord_core::{KvOperation, KvOutcome, KvService, KvStateMachine};

use crate::{RaftError, RaftNode, Request, Response};

impl KvService for RaftNode<KvStateMachine> {
    fn kv_request(operation: &KvOperation) -> Self::Request {
        if operation.is_read() {
            Request::Read(operation.clone())
        } else {
            Request::Propose(operation.clone())
        }
    }

    fn kv_outcome(response: &Self::Response) -> KvOutcome {
        match response {
            Response::Applied { output, .. } | Response::Read { output, .. } => {
                KvOutcome::Ok(output.clone())
            }
            Response::Failed(RaftError::NotLeader { leader }) => {
                KvOutcome::NotLeader { leader: *leader }
            }
            // The client may reach the leader this node cannot.
            Response::Failed(RaftError::LeaderUnreachable { leader }) => KvOutcome::NotLeader {
                leader: Some(*leader),
            },
            Response::Failed(
                RaftError::OutcomeUnknown { .. } | RaftError::ForwardedOutcomeUnknown { .. },
            ) => KvOutcome::Unknown,
            Response::Failed(error) => KvOutcome::Rejected(error.to_string()),
            Response::TransferStarted { .. } | Response::MembershipChanged { .. } => {
                KvOutcome::Rejected("an administrative response to a key-value request".into())
            }
        }
    }
}
