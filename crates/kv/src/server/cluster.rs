//! etcd's Cluster and Maintenance services, Concord's node-status service, and the task that
//! publishes this member's URLs and keeps the transport's peer addresses current.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use concord_core::Role;
use concord_raft::{Membership, RaftError};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::convert::{member_to_pb, status_of};
use super::{forwarded, host_status, raft_status, DbNode, Route, Shared};
use crate::pb::concordpb;
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::cluster_client::ClusterClient;
use crate::{Alarm, Command, MemberAttrs, Output, Query};

/// The version reported by `Status` (the etcd API level Concord DB speaks).
pub(crate) const API_VERSION: &str = "3.4.0";

/// Parses a peer URL (`http://host:port` or `host:port`).
pub(crate) fn peer_address(url: &str) -> Option<SocketAddr> {
    let bare = url
        .trim()
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    bare.parse().ok()
}

fn own_attrs(shared: &Shared) -> MemberAttrs {
    MemberAttrs {
        id: shared.config.id,
        name: shared.config.name.clone(),
        peer_urls: vec![format!("http://{}", shared.config.listen_peer)],
        client_urls: vec![shared.config.advertise_client.clone()],
        is_learner: false,
    }
}

/// Publishes this member's name and URLs through Raft once there is a leader (a follower's
/// proposal is forwarded to it), and points the transport at every member's current peer
/// address.
pub(crate) async fn publish_and_track_members(shared: Arc<Shared>) {
    let mut known: BTreeMap<u64, SocketAddr> = shared.config.initial_cluster.clone();
    let mut leadership = shared.handle.watch_leadership();
    loop {
        // Wake on a role, term or leader change (to publish at once after an election), or
        // every 250 ms (to follow other members' published addresses).
        leadership.borrow_and_update();
        let _ = tokio::time::timeout(Duration::from_millis(250), leadership.changed()).await;
        if shared.handle.stopped().is_some() {
            return;
        }
        let Ok(members) = shared.with_store(|store| store.members()).await else {
            continue;
        };
        for member in &members {
            if member.id == shared.config.id {
                continue;
            }
            let Some(address) = member.peer_urls.first().and_then(|u| peer_address(u)) else {
                continue;
            };
            if known.get(&member.id) != Some(&address)
                && shared.handle.set_peer(member.id, address).is_ok()
            {
                known.insert(member.id, address);
            }
        }
        let mine = own_attrs(&shared);
        let published = members.iter().find(|m| m.id == mine.id);
        let current = published.is_some_and(|m| {
            m.name == mine.name
                && m.client_urls == mine.client_urls
                && m.peer_urls == mine.peer_urls
        });
        if current {
            continue;
        }
        // A follower's Raft forwards it to the leader; a failure is retried at the next wake.
        if shared.handle.with_status(|status| status.leader.is_some()) {
            let _ = shared.propose(Command::SetMember(mine)).await;
        }
    }
}

/// The member list: the Raft configuration, with each member's published attributes.
async fn member_list(shared: &Shared) -> Result<(i64, Vec<pb::Member>), Status> {
    let (membership, revision, attrs) = shared
        .handle
        .inspect(|node: &DbNode| {
            let store = node.state_machine();
            (node.membership().clone(), store.revision(), store.members())
        })
        .await
        .map_err(host_status)?;
    let attrs: BTreeMap<u64, MemberAttrs> = attrs.into_iter().map(|m| (m.id, m)).collect();
    let members = membership
        .members()
        .into_iter()
        .map(|id| {
            let mut member = attrs.get(&id).cloned().unwrap_or_else(|| MemberAttrs {
                id,
                name: String::new(),
                peer_urls: shared
                    .config
                    .initial_cluster
                    .get(&id)
                    .map(|a| vec![format!("http://{a}")])
                    .unwrap_or_default(),
                client_urls: Vec::new(),
                is_learner: false,
            });
            member.is_learner = membership.learners.contains(&id);
            member_to_pb(&member)
        })
        .collect();
    Ok((revision, members))
}

/// The Cluster service of one node.
pub(crate) struct ClusterService(pub(crate) Arc<Shared>);

impl ClusterService {
    async fn leader_route<T>(&self, request: &Request<T>) -> Result<Route, Status> {
        let status = self.0.handle.status();
        if status.role == Role::Leader {
            return Ok(Route::Local);
        }
        self.0.route_to_leader(request, status.leader).await
    }

    /// Moves to the configuration `change` makes of the current one.
    async fn change(
        &self,
        change: impl FnOnce(&Membership) -> Result<(BTreeSet<u64>, BTreeSet<u64>), Status>,
    ) -> Result<(), Status> {
        let shared = &self.0;
        let current = shared
            .handle
            .inspect(|node: &DbNode| node.membership().clone())
            .await
            .map_err(host_status)?;
        if current.is_joint() {
            return Err(raft_status(&RaftError::MembershipChangeInProgress));
        }
        let (voters, learners) = change(&current)?;
        let request = concord_raft::Request::ChangeMembership { voters, learners };
        let response = tokio::time::timeout(shared.request_timeout, shared.handle.request(request))
            .await
            .map_err(|_| Status::unavailable("etcdserver: request timed out"))?
            .map_err(host_status)?;
        match response {
            concord_raft::Response::MembershipChanged { .. } => Ok(()),
            concord_raft::Response::Failed(error) => Err(raft_status(&error)),
            other => Err(Status::internal(format!("unexpected answer {other:?}"))),
        }
    }

    async fn members_response(
        &self,
    ) -> Result<(Option<pb::ResponseHeader>, Vec<pb::Member>), Status> {
        let (revision, members) = member_list(&self.0).await?;
        Ok((self.0.header_info().header(revision), members))
    }
}

fn member_not_found() -> Status {
    Status::not_found("etcdserver: member not found")
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        if let Route::Leader(channel) = self.leader_route(&request).await? {
            return ClusterClient::new(channel)
                .member_add(forwarded(request.into_inner()))
                .await;
        }
        let shared = &self.0;
        let message = request.into_inner();
        if message.peer_ur_ls.is_empty() {
            return Err(Status::invalid_argument("etcdserver: no peer URL given"));
        }
        for url in &message.peer_ur_ls {
            if peer_address(url).is_none() {
                return Err(Status::invalid_argument(format!(
                    "etcdserver: invalid peer URL '{url}' (expected http://ip:port)"
                )));
            }
        }
        let (_, existing) = member_list(shared).await?;
        if existing
            .iter()
            .any(|m| m.peer_ur_ls.iter().any(|u| message.peer_ur_ls.contains(u)))
        {
            return Err(Status::failed_precondition(
                "etcdserver: Peer URLs already exists",
            ));
        }
        // IDs are never reused: a removed member that comes back must not pass for a new one.
        let highest = shared.with_store(|store| store.highest_member_id()).await?;
        let id = existing
            .iter()
            .map(|m| m.id)
            .max()
            .unwrap_or(0)
            .max(highest)
            + 1;
        let attrs = MemberAttrs {
            id,
            name: String::new(),
            peer_urls: message.peer_ur_ls.clone(),
            client_urls: Vec::new(),
            is_learner: message.is_learner,
        };
        match shared.propose(Command::SetMember(attrs.clone())).await? {
            Ok(Output::Error(error)) => return Err(status_of(&error)),
            Ok(_) => {}
            Err(error) => return Err(raft_status(&error)),
        }
        if let Some(address) = peer_address(&message.peer_ur_ls[0]) {
            let _ = shared.handle.set_peer(id, address);
        }
        let learner = message.is_learner;
        self.change(|current| {
            let mut voters = current.voters.clone();
            let mut learners = current.learners.clone();
            if learner {
                learners.insert(id);
            } else {
                voters.insert(id);
            }
            Ok((voters, learners))
        })
        .await?;
        let (header, members) = self.members_response().await?;
        Ok(Response::new(pb::MemberAddResponse {
            header,
            member: Some(member_to_pb(&attrs)),
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        if let Route::Leader(channel) = self.leader_route(&request).await? {
            return ClusterClient::new(channel)
                .member_remove(forwarded(request.into_inner()))
                .await;
        }
        let id = request.get_ref().id;
        self.change(|current| {
            if !current.contains(id) {
                return Err(member_not_found());
            }
            let mut voters = current.voters.clone();
            let mut learners = current.learners.clone();
            voters.remove(&id);
            learners.remove(&id);
            if voters.is_empty() {
                return Err(Status::failed_precondition(
                    "etcdserver: cannot remove the last voting member",
                ));
            }
            Ok((voters, learners))
        })
        .await?;
        let _ = self.0.propose(Command::RemoveMember { id }).await;
        let (header, members) = self.members_response().await?;
        Ok(Response::new(pb::MemberRemoveResponse { header, members }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        if let Route::Leader(channel) = self.leader_route(&request).await? {
            return ClusterClient::new(channel)
                .member_update(forwarded(request.into_inner()))
                .await;
        }
        let shared = &self.0;
        let message = request.into_inner();
        for url in &message.peer_ur_ls {
            if peer_address(url).is_none() {
                return Err(Status::invalid_argument(format!(
                    "etcdserver: invalid peer URL '{url}' (expected http://ip:port)"
                )));
            }
        }
        let (_, members) = member_list(shared).await?;
        let Some(member) = members.iter().find(|m| m.id == message.id) else {
            return Err(member_not_found());
        };
        let attrs = MemberAttrs {
            id: member.id,
            name: member.name.clone(),
            peer_urls: message.peer_ur_ls,
            client_urls: member.client_ur_ls.clone(),
            is_learner: member.is_learner,
        };
        match shared.propose(Command::SetMember(attrs)).await? {
            Ok(Output::Error(error)) => return Err(status_of(&error)),
            Ok(_) => {}
            Err(error) => return Err(raft_status(&error)),
        }
        let (header, members) = self.members_response().await?;
        Ok(Response::new(pb::MemberUpdateResponse { header, members }))
    }

    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let (header, members) = self.members_response().await?;
        Ok(Response::new(pb::MemberListResponse { header, members }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        if let Route::Leader(channel) = self.leader_route(&request).await? {
            return ClusterClient::new(channel)
                .member_promote(forwarded(request.into_inner()))
                .await;
        }
        let id = request.get_ref().id;
        self.change(|current| {
            if !current.contains(id) {
                return Err(member_not_found());
            }
            if !current.learners.contains(&id) {
                return Err(Status::failed_precondition(
                    "etcdserver: can only promote a learner member",
                ));
            }
            let mut voters = current.voters.clone();
            let mut learners = current.learners.clone();
            learners.remove(&id);
            voters.insert(id);
            Ok((voters, learners))
        })
        .await?;
        let (header, members) = self.members_response().await?;
        Ok(Response::new(pb::MemberPromoteResponse { header, members }))
    }
}

/// The Maintenance service of one node.
pub(crate) struct MaintenanceService(pub(crate) Arc<Shared>);

type SnapshotStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

/// An alarm as etcd's API names it.
pub(crate) fn alarm_to_pb(alarm: Alarm) -> pb::AlarmType {
    match alarm {
        Alarm::NoSpace => pb::AlarmType::Nospace,
        Alarm::Corrupt => pb::AlarmType::Corrupt,
    }
}

/// Bytes per message of the Snapshot stream (a backup: see [`super::backup`]).
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let shared = &self.0;
        let request = request.into_inner();
        let alarm = match pb::AlarmType::try_from(request.alarm) {
            Ok(pb::AlarmType::None) => None,
            Ok(pb::AlarmType::Nospace) => Some(Alarm::NoSpace),
            Ok(pb::AlarmType::Corrupt) => Some(Alarm::Corrupt),
            Err(_) => return Err(Status::invalid_argument("etcdserver: unknown alarm type")),
        };
        let active = match pb::alarm_request::AlarmAction::try_from(request.action) {
            Ok(pb::alarm_request::AlarmAction::Get) => None,
            Ok(pb::alarm_request::AlarmAction::Activate) => Some(true),
            Ok(pb::alarm_request::AlarmAction::Deactivate) => Some(false),
            Err(_) => return Err(Status::invalid_argument("etcdserver: unknown alarm action")),
        };
        let alarms = match (active, alarm) {
            (Some(active), Some(alarm)) => {
                let command = Command::Alarm {
                    active,
                    member: request.member_id,
                    alarm,
                };
                let output = shared.propose(command).await?;
                expect_output!(output.map_err(|e| raft_status(&e))?, Alarms)
            }
            // Raising or clearing no alarm changes nothing (as etcd).
            (Some(_), None) => Vec::new(),
            // Linearizable, as etcd's (which goes through the log): a member that is still
            // catching up must not hide an alarm from `alarm disarm`.
            (None, _) => {
                let output = shared.read(Query::Alarms).await?;
                expect_output!(output.map_err(|e| raft_status(&e))?, Alarms)
            }
        };
        let revision = shared.with_store(|store| store.revision()).await?;
        Ok(Response::new(pb::AlarmResponse {
            header: shared.header_info().header(revision),
            alarms: alarms
                .into_iter()
                .map(|(member_id, alarm)| pb::AlarmMember {
                    member_id,
                    alarm: alarm_to_pb(alarm) as i32,
                })
                .collect(),
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let shared = &self.0;
        let status = shared.handle.status();
        let (revision, learner, alarms) = {
            let id = shared.config.id;
            shared
                .handle
                .inspect(move |node: &DbNode| {
                    let store = node.state_machine();
                    let alarms: Vec<(u64, Alarm)> = store.alarms().collect();
                    (
                        store.revision(),
                        node.membership().learners.contains(&id),
                        alarms,
                    )
                })
                .await
                .map_err(host_status)?
        };
        let wal_bytes = shared.handle.metrics().wal_bytes.get();
        Ok(Response::new(pb::StatusResponse {
            header: shared.header_info().header(revision),
            version: API_VERSION.to_string(),
            db_size: wal_bytes,
            leader: status.leader.unwrap_or(0),
            raft_index: status.commit_index,
            raft_term: status.term,
            raft_applied_index: status.applied_index,
            // As etcd words them (its `AlarmMember` in protobuf text form).
            errors: alarms
                .into_iter()
                .map(|(member, alarm)| {
                    format!(
                        "memberID:{member} alarm:{} ",
                        alarm_to_pb(alarm).as_str_name()
                    )
                })
                .collect(),
            db_size_in_use: wal_bytes,
            is_learner: learner,
        }))
    }

    async fn defragment(
        &self,
        _request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        // The write-ahead log compacts itself after snapshots; there is nothing to defragment.
        let revision = self.0.with_store(|store| store.revision()).await?;
        Ok(Response::new(pb::DefragmentResponse {
            header: self.0.header_info().header(revision),
        }))
    }

    async fn hash(
        &self,
        _request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let (revision, digest) = self
            .0
            .with_store(|store| (store.revision(), store.digest()))
            .await?;
        Ok(Response::new(pb::HashResponse {
            header: self.0.header_info().header(revision),
            hash: (digest ^ (digest >> 32)) as u32,
        }))
    }

    async fn hash_kv(
        &self,
        _request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let (revision, compact, digest) = self
            .0
            .with_store(|store| (store.revision(), store.compact_revision(), store.digest()))
            .await?;
        Ok(Response::new(pb::HashKvResponse {
            header: self.0.header_info().header(revision),
            hash: (digest ^ (digest >> 32)) as u32,
            compact_revision: compact,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        // A consistent copy of the state this node has applied (encoding copies the store's
        // running encoding; the node waits only for that), as a bbolt file in etcd's layout
        // followed by its checksum, in chunks.
        let shared = &self.0;
        shared.check_member().await?;
        let (revision, encoding) = shared
            .with_store(|store| (store.revision(), store.encode()))
            .await?;
        // Laid out in etcd's format off the node's task and off the async workers.
        let failed = |e: &dyn std::fmt::Display| {
            Status::internal(format!("writing the snapshot failed: {e}"))
        };
        let bytes =
            tokio::task::spawn_blocking(move || super::backup::backup_of_encoding(encoding))
                .await
                .map_err(|e| failed(&e))?
                .map_err(|e| failed(&e))?;
        let header = shared.header_info().header(revision);
        // Each message is cut from the file when the stream is polled for it, so the file is
        // held once, not twice.
        let total = bytes.len();
        let chunks = (0..total.div_ceil(SNAPSHOT_CHUNK_BYTES)).map(move |index| {
            let start = index * SNAPSHOT_CHUNK_BYTES;
            let end = (start + SNAPSHOT_CHUNK_BYTES).min(total);
            Ok(pb::SnapshotResponse {
                header,
                remaining_bytes: (total - end) as u64,
                blob: bytes[start..end].to_vec(),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let shared = &self.0;
        if shared.handle.status().role != Role::Leader {
            return Err(Status::failed_precondition("etcdserver: not leader"));
        }
        let to = request.into_inner().target_id;
        let response = shared
            .handle
            .request(concord_raft::Request::TransferLeadership { to })
            .await
            .map_err(host_status)?;
        match response {
            concord_raft::Response::TransferStarted { .. } => {
                let revision = shared.with_store(|store| store.revision()).await?;
                Ok(Response::new(pb::MoveLeaderResponse {
                    header: shared.header_info().header(revision),
                }))
            }
            concord_raft::Response::Failed(error) => Err(raft_status(&error)),
            other => Err(Status::internal(format!("unexpected answer {other:?}"))),
        }
    }
}

/// Concord's node-status service.
pub(crate) struct NodeService(pub(crate) Arc<Shared>);

#[tonic::async_trait]
impl concordpb::node_server::Node for NodeService {
    async fn status(
        &self,
        _request: Request<concordpb::NodeStatusRequest>,
    ) -> Result<Response<concordpb::NodeStatusResponse>, Status> {
        let shared = &self.0;
        let status = shared.handle.status();
        let (membership, revision, snapshot_index) = shared
            .handle
            .inspect(|node: &DbNode| {
                (
                    node.membership().clone(),
                    node.state_machine().revision(),
                    node.log().snapshot_index(),
                )
            })
            .await
            .map_err(host_status)?;
        Ok(Response::new(concordpb::NodeStatusResponse {
            id: status.id,
            role: status.role.name().to_string(),
            leader: status.leader.unwrap_or(0),
            term: status.term,
            log_length: status.log_length,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
            peers: status
                .peers
                .iter()
                .map(|p| concordpb::PeerProgress {
                    id: p.id,
                    match_index: p.match_index,
                    next_index: p.next_index,
                    voter: p.voter,
                })
                .collect(),
            voters: membership.voters.iter().copied().collect(),
            learners: membership.learners.iter().copied().collect(),
            revision,
            snapshot_index,
        }))
    }
}
