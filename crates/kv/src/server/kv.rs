//! etcd's KV service: Range, Put, DeleteRange, Txn, Compact.

use std::sync::Arc;

use concord_raft::RaftError;
use tonic::{Request, Response, Status};

use super::convert::{self, check_sizes, status_of, txn_writes};
use super::{raft_status, Shared};
use crate::pb::etcdserverpb as pb;
use crate::{Command, CompactRequest, Output, Query, RequestOp, TxnRequest};

/// The KV service of one node.
pub(crate) struct KvService(pub(crate) Arc<Shared>);

/// Checks every key and value a transaction writes against the limits.
fn check_txn_sizes(txn: &TxnRequest, shared: &Shared) -> Result<(), Status> {
    let mut total = 0usize;
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            RequestOp::Put(put) => {
                check_sizes(&put.key, put.value.len(), &shared.limits)?;
                total += put.key.len() + put.value.len();
            }
            RequestOp::DeleteRange(delete) => {
                check_sizes(&delete.key, delete.range_end.len(), &shared.limits)?;
                total += delete.key.len() + delete.range_end.len();
            }
            RequestOp::Range(range) => {
                check_sizes(&range.key, range.range_end.len(), &shared.limits)?;
            }
            RequestOp::Txn(inner) => check_txn_sizes(inner, shared)?,
        }
    }
    if total > shared.limits.max_request_bytes {
        return Err(Status::invalid_argument("etcdserver: request is too large"));
    }
    Ok(())
}

impl KvService {
    /// Proposes `command` (a follower's Raft forwards it to the leader).
    async fn write(&self, command: Command) -> Result<Output, Status> {
        let shared = &self.0;
        match shared.propose(command).await? {
            Ok(output) => Ok(output),
            Err(error) => {
                if matches!(
                    error,
                    RaftError::NotLeader { leader: None }
                        | RaftError::ForwardedOutcomeUnknown { .. }
                ) {
                    // A removed member may know no leader, or lose what it forwarded: say it
                    // was removed (a leader's refusal, `NotMember`, says so by itself).
                    shared.check_member().await?;
                }
                Err(raft_status(&error))
            }
        }
    }

    /// A linearizable read, at a follower by asking the leader for a read index.
    async fn read(&self, query: Query) -> Result<Output, Status> {
        let shared = &self.0;
        match shared.read(query).await? {
            Ok(output) => Ok(output),
            Err(error) => {
                shared.check_member().await?;
                Err(raft_status(&error))
            }
        }
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let shared = &self.0;
        let message = request.into_inner();
        check_sizes(&message.key, message.range_end.len(), &shared.limits)?;
        let range = convert::range_from_pb(message)?;
        let serializable = range.serializable;
        let query = Query::Range(range);
        let output = if serializable {
            shared.local(query).await?
        } else {
            self.read(query).await?
        };
        let response = expect_output!(output, Range);
        Ok(Response::new(convert::range_to_pb(
            response,
            &shared.header_info(),
        )))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let shared = &self.0;
        check_sizes(
            &request.get_ref().key,
            request.get_ref().value.len(),
            &shared.limits,
        )?;
        let put = convert::put_from_pb(request.into_inner())?;
        let output = self.write(Command::Put(put)).await?;
        let response = expect_output!(output, Put);
        Ok(Response::new(convert::put_to_pb(
            response,
            &shared.header_info(),
        )))
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let shared = &self.0;
        check_sizes(
            &request.get_ref().key,
            request.get_ref().range_end.len(),
            &shared.limits,
        )?;
        let delete = convert::delete_from_pb(request.into_inner())?;
        let output = self.write(Command::DeleteRange(delete)).await?;
        let response = expect_output!(output, DeleteRange);
        Ok(Response::new(convert::delete_to_pb(
            response,
            &shared.header_info(),
        )))
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let shared = &self.0;
        let txn = convert::txn_from_pb(request.into_inner())?;
        check_txn_sizes(&txn, shared)?;
        txn.validate().map_err(|e| status_of(&e))?;
        if !txn_writes(&txn) {
            let output = self.read(Query::Txn(txn)).await?;
            let response = expect_output!(output, Txn);
            return Ok(Response::new(convert::txn_to_pb(
                response,
                &shared.header_info(),
            )));
        }
        let output = self.write(Command::Txn(txn)).await?;
        let response = expect_output!(output, Txn);
        Ok(Response::new(convert::txn_to_pb(
            response,
            &shared.header_info(),
        )))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let shared = &self.0;
        let message = *request.get_ref();
        let command = Command::Compact(CompactRequest {
            revision: message.revision,
            physical: message.physical,
        });
        let output = self.write(command).await?;
        let response = expect_output!(output, Compact);
        Ok(Response::new(pb::CompactionResponse {
            header: shared.header_info().header(response.header.revision),
        }))
    }
}
