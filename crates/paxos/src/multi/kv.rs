//! The key-value workload on Multi-Paxos: writes go through the log; reads as
//! `Config::read_mode` says.

use concord_core::{KvOperation, KvOutcome, KvService, KvStateMachine};

use super::{MultiPaxos, PaxosError, Request, Response};

impl KvService for MultiPaxos<KvStateMachine> {
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
            Response::Failed(PaxosError::NotLeader { leader }) => {
                KvOutcome::NotLeader { leader: *leader }
            }
            Response::Failed(PaxosError::OutcomeUnknown { .. }) => KvOutcome::Unknown,
            Response::Failed(PaxosError::Overloaded) => KvOutcome::Rejected("overloaded".into()),
            // Refused before it took a slot: definitely not done; the next configuration's
            // leader will serve it.
            Response::Failed(PaxosError::Reconfiguring) => KvOutcome::NotLeader { leader: None },
            Response::Failed(PaxosError::InvalidMembership { .. })
            | Response::Reconfigured { .. } => {
                KvOutcome::Rejected("not a key-value operation".into())
            }
        }
    }
}
