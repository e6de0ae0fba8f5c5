//! The client (OSDI 1999 §4.1), as a proxy hosted by each replica's node: the simulator's
//! clients hand it operations, it sends authenticated `<REQUEST>`s and answers once `f + 1`
//! replicas sent matching replies (a quorum of them for read-only requests, §5.1.3).
//!
//! A PBFT client has one request outstanding at a time; the proxy runs
//! `Config::client_lanes` client identities (`host × lanes + lane`) so several operations can
//! be under way at once. Timestamps are the host's clock, made strictly increasing per
//! identity, so they keep increasing across a restart as long as the host's clock does (the
//! simulator's does; the real runtime's with `TimeOrigin::UnixEpoch`).

use std::collections::{BTreeMap, VecDeque};

use concord_core::{Effect, NodeId, RequestId, Time};

use crate::auth::encode;
use crate::config::Config;
use crate::message::{
    AuthenticatedRequest, Body, ClientId, ClientRequest, Operation, PbftError, Request, Response,
    Timestamp, View,
};
use crate::replica::{Authenticated, Out, Pbft, Service};

/// An operation of service `S`.
type ServiceOperation<S> =
    Operation<<S as concord_core::StateMachine>::Command, <S as concord_core::StateMachine>::Query>;

/// One request under way.
#[derive(Clone, Debug)]
struct Outstanding<S: Service> {
    id: RequestId,
    request: Authenticated<S>,
    replies: BTreeMap<NodeId, S::Output>,
    retry_at: Time,
    give_up_at: Time,
    retries: u32,
}

/// One client identity.
#[derive(Clone, Debug)]
struct Lane<S: Service> {
    client: ClientId,
    last_timestamp: Timestamp,
    current: Option<Outstanding<S>>,
}

/// The client proxy of one node.
#[derive(Clone, Debug)]
pub(crate) struct ClientProxy<S: Service> {
    lanes: Vec<Lane<S>>,
    queue: VecDeque<(RequestId, ServiceOperation<S>)>,
    /// Requests answered (for tests and monitoring).
    pub completed: u64,
}

impl<S: Service> ClientProxy<S> {
    pub(crate) fn new(host: NodeId, config: &Config) -> Self {
        let lanes = config.client_lanes.max(1);
        ClientProxy {
            lanes: (0..lanes)
                .map(|lane| Lane {
                    client: host * lanes + lane,
                    last_timestamp: 0,
                    current: None,
                })
                .collect(),
            queue: VecDeque::new(),
            completed: 0,
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Time> {
        self.lanes
            .iter()
            .filter_map(|lane| lane.current.as_ref())
            .map(|o| o.retry_at.min(o.give_up_at))
            .min()
    }

    /// Requests under way or queued.
    pub(crate) fn outstanding(&self) -> usize {
        self.queue.len() + self.lanes.iter().filter(|l| l.current.is_some()).count()
    }
}

impl<S: Service> Pbft<S> {
    /// A client operation handed to this node's proxy.
    pub(crate) fn on_client_request(
        &mut self,
        now: Time,
        id: RequestId,
        request: Request<S::Command, S::Query>,
        out: &mut Out<S>,
    ) {
        let operation = match request {
            Request::Propose(command) => Operation::Command(command),
            Request::Read(query) => Operation::Read(query),
        };
        if let Some(lane) = self.client.lanes.iter().position(|l| l.current.is_none()) {
            self.start_request(now, lane, id, operation, out);
        } else if self.client.queue.len() < self.config.max_pending_requests {
            self.client.queue.push_back((id, operation));
        } else {
            out.push(Effect::Reply {
                id,
                response: Response::Failed(PbftError::Overloaded),
            });
        }
    }

    fn authenticate(&self, request: ClientRequest<S::Command, S::Query>) -> Authenticated<S> {
        let bytes = encode(&request);
        let authenticator = (0..self.quorums.replicas as NodeId)
            .map(|replica| self.keys.client_mac(request.client, replica, &bytes))
            .collect();
        AuthenticatedRequest {
            request,
            authenticator,
        }
    }

    fn start_request(
        &mut self,
        now: Time,
        lane: usize,
        id: RequestId,
        operation: Operation<S::Command, S::Query>,
        out: &mut Out<S>,
    ) {
        let read_only = self.config.read_only && matches!(operation, Operation::Read(_));
        let state = &mut self.client.lanes[lane];
        state.last_timestamp = (state.last_timestamp + 1).max(now);
        let request = ClientRequest {
            client: state.client,
            timestamp: state.last_timestamp,
            operation,
            read_only,
        };
        let request = self.authenticate(request);
        self.client.lanes[lane].current = Some(Outstanding {
            id,
            request: request.clone(),
            replies: BTreeMap::new(),
            retry_at: now + self.config.client_retry,
            give_up_at: now + self.config.client_give_up,
            retries: 0,
        });
        if read_only {
            self.send_to_all(request, out);
        } else {
            let primary = self.primary_of(self.view);
            self.send(primary, Body::Request(request), out);
        }
    }

    fn send_to_all(&mut self, request: Authenticated<S>, out: &mut Out<S>) {
        for replica in 0..self.quorums.replicas as NodeId {
            self.send(replica, Body::Request(request.clone()), out);
        }
    }

    /// `<REPLY, v, t, c, i, r>` from replica `from` to one of this proxy's clients.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_reply(
        &mut self,
        now: Time,
        from: NodeId,
        _view: View,
        client: ClientId,
        timestamp: Timestamp,
        result: S::Output,
        out: &mut Out<S>,
    ) {
        let quorum = self.quorums.quorum();
        let weak = self.quorums.weak();
        let replicas = self.quorums.replicas;
        let Some(lane) = self.client.lanes.iter().position(|l| l.client == client) else {
            return;
        };
        let Some(outstanding) = self.client.lanes[lane].current.as_mut() else {
            return;
        };
        if outstanding.request.request.timestamp != timestamp {
            return;
        }
        outstanding.replies.insert(from, result.clone());
        let read_only = outstanding.request.request.read_only;
        let needed = if read_only { quorum } else { weak };
        let matching = outstanding
            .replies
            .values()
            .filter(|r| **r == result)
            .count();
        if matching >= needed {
            let id = outstanding.id;
            self.client.lanes[lane].current = None;
            self.client.completed += 1;
            out.push(Effect::Reply {
                id,
                response: Response::Done {
                    client,
                    timestamp,
                    result,
                    read_only,
                },
            });
            self.next_queued(now, lane, out);
        } else if read_only && outstanding.replies.len() == replicas {
            // Replicas disagree (a write is under way): order the read instead (§5.1.3).
            self.order_read(lane, out);
        }
    }

    /// Turns a read-only request that got no quorum of matching replies into an ordered one.
    fn order_read(&mut self, lane: usize, out: &mut Out<S>) {
        let Some(outstanding) = self.client.lanes[lane].current.as_mut() else {
            return;
        };
        let mut request = outstanding.request.request.clone();
        request.read_only = false;
        // A new timestamp: read-only replies still on their way must not count for it.
        let state = &mut self.client.lanes[lane];
        state.last_timestamp += 1;
        request.timestamp = state.last_timestamp;
        let request = self.authenticate(request);
        let outstanding = self.client.lanes[lane]
            .current
            .as_mut()
            .expect("checked above");
        outstanding.request = request.clone();
        outstanding.replies.clear();
        self.send_to_all(request, out);
    }

    fn next_queued(&mut self, now: Time, lane: usize, out: &mut Out<S>) {
        if let Some((id, operation)) = self.client.queue.pop_front() {
            self.start_request(now, lane, id, operation, out);
        }
    }

    /// Retransmits unanswered requests to every replica (§4.1), gives up on old ones.
    pub(crate) fn client_tick(&mut self, now: Time, out: &mut Out<S>) {
        for lane in 0..self.client.lanes.len() {
            let Some(outstanding) = self.client.lanes[lane].current.as_mut() else {
                continue;
            };
            if now >= outstanding.give_up_at {
                let id = outstanding.id;
                let (client, timestamp) = (
                    outstanding.request.request.client,
                    outstanding.request.request.timestamp,
                );
                self.client.lanes[lane].current = None;
                // The caller learns that the outcome is unknown instead of waiting forever.
                out.push(Effect::Reply {
                    id,
                    response: Response::Unknown { client, timestamp },
                });
                self.next_queued(now, lane, out);
                continue;
            }
            if now < outstanding.retry_at {
                continue;
            }
            outstanding.retries += 1;
            let backoff = 1u64 << outstanding.retries.min(3);
            outstanding.retry_at = now + self.config.client_retry * backoff;
            if outstanding.request.request.read_only {
                self.order_read(lane, out);
            } else {
                let request = outstanding.request.clone();
                self.send_to_all(request, out);
            }
        }
    }
}
