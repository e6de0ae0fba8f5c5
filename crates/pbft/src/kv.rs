//! The key-value workload on PBFT: writes and reads are ordered (reads go read-only when
//! `Config::read_only` is on).

use concord_core::{KvOperation, KvOutcome, KvService, KvStateMachine};

use crate::message::{PbftError, Request, Response};
use crate::replica::Pbft;

impl KvService for Pbft<KvStateMachine> {
    fn kv_request(operation: &KvOperation) -> Self::Request {
        if operation.is_read() {
            Request::Read(operation.clone())
        } else {
            Request::Propose(operation.clone())
        }
    }

    fn kv_outcome(response: &Self::Response) -> KvOutcome {
        match response {
            Response::Done { result, .. } => KvOutcome::Ok(result.clone()),
            Response::Failed(PbftError::Overloaded) => KvOutcome::Rejected("overloaded".into()),
            Response::Unknown { .. } => KvOutcome::Unknown,
        }
    }
}
