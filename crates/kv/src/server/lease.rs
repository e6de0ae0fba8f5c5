//! etcd's Lease service, and the leader's lease clock.
//!
//! Grants and revokes go through Raft. Keep-alives and time-to-live are answered by the
//! leader's [`crate::Lessor`] (followers forward them), as in etcd: renewals are not logged.
//! The leader's lessor is rebuilt from the replicated lease table when the node becomes leader
//! (every lease then gets a full TTL), and a background task proposes a `LeaseRevoke` for each
//! lease whose deadline passed.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use concord_core::{Role, Time};
use concord_raft::RaftError;
use rand::Rng as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::convert::status_of;
use super::{forwarded, raft_status, Route, Shared};
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::lease_client::LeaseClient;
use crate::{Command, KvError, LeaseId, LeaseInfo, Lessor, Output};

/// How often the leader looks for expired leases and syncs its lessor with the store.
const LESSOR_TICK: Duration = Duration::from_millis(100);

/// The Lease service of one node.
pub(crate) struct LeaseService(pub(crate) Arc<Shared>);

fn is_leader(shared: &Shared) -> bool {
    shared.handle.with_status(|status| {
        status.role == Role::Leader && status.leader == Some(shared.config.id)
    })
}

/// Keeps the leader's lessor in step with the replicated lease table and revokes expired
/// leases through Raft.
pub(crate) async fn run_lessor(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(LESSOR_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if shared.handle.stopped().is_some() {
            return;
        }
        let leader = is_leader(&shared);
        let Ok(leases) = shared.with_store(|store| store.leases()).await else {
            continue;
        };
        let now = shared.now();
        let expired = {
            let mut lessor = shared.lessor.lock().unwrap_or_else(|e| e.into_inner());
            if leader && !lessor.is_primary() {
                *lessor = Lessor::restore(shared.lessor_config, leases.iter().copied());
                lessor.promote(now);
            } else if !leader && lessor.is_primary() {
                lessor.demote();
            }
            if leader {
                lessor.sync(&leases, now);
                lessor.expired(now)
            } else {
                Vec::new()
            }
        };
        for id in expired {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                match shared.propose_here(Command::LeaseRevoke { id }).await {
                    Ok(Ok(_)) => tracing::debug!(lease = id, "expired lease revoked"),
                    Ok(Err(error)) => tracing::debug!(lease = id, %error, "lease revoke failed"),
                    Err(status) => {
                        tracing::debug!(lease = id, error = %status.message(), "lease revoke failed")
                    }
                }
            });
        }
    }
}

impl LeaseService {
    /// The leader's channel when this node is not the leader.
    async fn leader<T>(&self, request: &Request<T>) -> Result<Route, Status> {
        let shared = &self.0;
        if is_leader(shared) {
            return Ok(Route::Local);
        }
        shared
            .route_to_leader(request, shared.handle.with_status(|status| status.leader))
            .await
    }

    /// Runs `f` on this leader's lessor once lease `id` there is in step with `stored`, what
    /// the replicated lease table held of it just before: the background sync runs only every
    /// tick, and a grant or revoke applied since must already count.
    fn synced_lessor<T>(
        &self,
        id: LeaseId,
        stored: Option<&LeaseInfo>,
        f: impl FnOnce(&mut Lessor, Time) -> T,
    ) -> T {
        let shared = &self.0;
        let now = shared.now();
        let mut lessor = shared.lessor.lock().unwrap_or_else(|e| e.into_inner());
        if lessor.is_primary() {
            lessor.sync_one(id, stored, now);
        }
        f(&mut lessor, now)
    }
}

pub(crate) type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::lease_server::Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let shared = &self.0;
        if let Route::Leader(channel) = self.leader(&request).await? {
            return LeaseClient::new(channel)
                .lease_grant(forwarded(request.into_inner()))
                .await;
        }
        let message = request.into_inner();
        let id = if message.id != 0 {
            message.id
        } else {
            let mut rng = shared.rng.lock().unwrap_or_else(|e| e.into_inner());
            rng.gen_range(1..i64::MAX)
        };
        let ttl = {
            let lessor = shared.lessor.lock().unwrap_or_else(|e| e.into_inner());
            lessor.clamp_ttl(message.ttl)
        };
        if ttl > crate::MAX_LEASE_TTL {
            return Err(status_of(&KvError::LeaseTtlTooLarge));
        }
        match shared.propose_here(Command::LeaseGrant { id, ttl }).await? {
            Ok(Output::LeaseGrant(granted)) => {
                let now = shared.now();
                shared
                    .lessor
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .grant(granted.id, granted.ttl, now);
                Ok(Response::new(pb::LeaseGrantResponse {
                    header: shared.header_info().header(granted.header.revision),
                    id: granted.id,
                    ttl: granted.ttl,
                    error: String::new(),
                }))
            }
            Ok(Output::Error(error)) => Err(status_of(&error)),
            Ok(other) => Err(Status::internal(format!("unexpected output {other:?}"))),
            Err(error) => Err(raft_status(&error)),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let shared = &self.0;
        let id = request.get_ref().id;
        match shared.propose_here(Command::LeaseRevoke { id }).await? {
            Ok(Output::LeaseRevoke(header)) => {
                let _ = shared
                    .lessor
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .revoke(id);
                Ok(Response::new(pb::LeaseRevokeResponse {
                    header: shared.header_info().header(header.revision),
                }))
            }
            Ok(Output::Error(error)) => Err(status_of(&error)),
            Ok(other) => Err(Status::internal(format!("unexpected output {other:?}"))),
            Err(RaftError::NotLeader { leader }) => {
                match shared.route_to_leader(&request, leader).await? {
                    Route::Local => Err(Status::unavailable("etcdserver: leader changed")),
                    Route::Leader(channel) => {
                        LeaseClient::new(channel)
                            .lease_revoke(forwarded(request.into_inner()))
                            .await
                    }
                }
            }
            Err(error) => Err(raft_status(&error)),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        self.keep_alive(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let shared = &self.0;
        if let Route::Leader(channel) = self.leader(&request).await? {
            return LeaseClient::new(channel)
                .lease_time_to_live(forwarded(request.into_inner()))
                .await;
        }
        let message = request.into_inner();
        let id = message.id;
        let (revision, stored, keys) = shared
            .with_store(move |store| (store.revision(), store.lease(id), store.lease_keys(id)))
            .await?;
        let answer = self.synced_lessor(id, stored.as_ref(), |lessor, now| {
            lessor.time_to_live(id, now)
        });
        let header = shared.header_info().header(revision);
        match answer {
            Ok(ttl) => {
                let keys = if message.keys {
                    keys.unwrap_or_default()
                } else {
                    Vec::new()
                };
                Ok(Response::new(pb::LeaseTimeToLiveResponse {
                    header,
                    id: ttl.id,
                    ttl: ttl.remaining,
                    granted_ttl: ttl.granted,
                    keys,
                }))
            }
            // etcd answers an unknown lease with TTL -1 rather than an error.
            Err(KvError::LeaseNotFound) => Ok(Response::new(pb::LeaseTimeToLiveResponse {
                header,
                id: message.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            })),
            Err(error) => Err(status_of(&error)),
        }
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let shared = &self.0;
        let (revision, leases) = shared
            .with_store(|store| (store.revision(), store.leases()))
            .await?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: shared.header_info().header(revision),
            leases: leases
                .into_iter()
                .map(|lease| pb::LeaseStatus { id: lease.id })
                .collect(),
        }))
    }
}

impl LeaseService {
    /// Answers each keep-alive of `inbound` (a gRPC stream, or the JSON gateway's) in turn,
    /// until it ends, one fails, or the answers are no longer read.
    pub(crate) async fn keep_alive(
        &self,
        mut inbound: impl Stream<Item = Result<pb::LeaseKeepAliveRequest, Status>>
            + Send
            + Unpin
            + 'static,
    ) -> Result<KeepAliveStream, Status> {
        self.0.check_member().await?;
        let (sender, receiver) = mpsc::channel(16);
        let service = LeaseService(Arc::clone(&self.0));
        tokio::spawn(async move {
            while let Some(message) = inbound.next().await {
                // A request that could not be read ends the stream, with why.
                let answer = match message {
                    Ok(message) => service.keep_alive_one(message.id).await,
                    Err(status) => Err(status),
                };
                let stop = answer.is_err();
                if sender.send(answer).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }

    /// Renews one lease here (leader) or at the leader.
    async fn keep_alive_one(&self, id: LeaseId) -> Result<pb::LeaseKeepAliveResponse, Status> {
        let shared = &self.0;
        if is_leader(shared) {
            let (revision, stored) = shared
                .with_store(move |store| (store.revision(), store.lease(id)))
                .await?;
            // Unknown or already expired: etcd answers TTL 0 and the client stops.
            let ttl = self
                .synced_lessor(id, stored.as_ref(), |lessor, now| {
                    lessor.keep_alive(id, now)
                })
                .unwrap_or(0);
            return Ok(pb::LeaseKeepAliveResponse {
                header: shared.header_info().header(revision),
                id,
                ttl,
            });
        }
        let probe = Request::new(());
        let Route::Leader(channel) = shared
            .route_to_leader(&probe, shared.handle.with_status(|status| status.leader))
            .await?
        else {
            return Err(Status::unavailable("etcdserver: leader changed"));
        };
        let outbound = tokio_stream::iter([pb::LeaseKeepAliveRequest { id }]);
        let mut responses = LeaseClient::new(channel)
            .lease_keep_alive(forwarded(outbound))
            .await?
            .into_inner();
        match responses.next().await {
            Some(answer) => answer,
            None => Err(Status::unavailable(
                "etcdserver: no keep-alive answer from the leader",
            )),
        }
    }
}
