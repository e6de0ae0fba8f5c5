//! A leader's duties besides replication itself: turning client commands into log entries
//! (paper §8), its timers — heartbeats (§5.2), CheckQuorum (thesis §6.2), a transfer's deadline
//! (§3.10) — and stepping down, which fails every request it holds.

use std::sync::Arc;

use concord_core::{NodeId, RequestId, StateMachine};

use crate::leader::ReadOrigin;
use crate::node::RaftNode;
use crate::{Message, Payload, RaftError, Response};

/// Most heartbeat rounds whose send time a leader remembers (for leases).
const MAX_REMEMBERED_ROUNDS: usize = 1024;

impl<S: StateMachine> RaftNode<S> {
    /// §8: a client command becomes a log entry of the leader's term.
    pub(crate) fn on_propose(&mut self, id: RequestId, command: Arc<S::Command>) {
        let Some(leader) = &self.leader else {
            if self.config.forward_proposals {
                self.queue_forward(id, command);
                return;
            }
            let leader = self.leader_id;
            self.reply(id, Response::Failed(RaftError::NotLeader { leader }));
            return;
        };
        if leader.transfer.is_some() {
            self.reply(id, Response::Failed(RaftError::TransferInProgress));
            return;
        }
        let pending = leader.pending_requests();
        if pending >= self.config.max_pending_requests {
            self.reply(id, Response::Failed(RaftError::Overloaded { pending }));
            return;
        }
        let index = self.append_to_log(self.current_term, Payload::Command(command));
        if let Some(leader) = self.leader.as_mut() {
            leader.proposals.push_back((index, id));
        }
        self.needs_broadcast = true;
    }

    /// The leader's timers: CheckQuorum, heartbeats, a transfer's deadline.
    pub(crate) fn on_leader_tick(&mut self) {
        let now = self.now;
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        if self.config.check_quorum && now >= leader.check_quorum_deadline {
            leader.check_quorum_deadline = now + self.config.election_timeout_max;
            if !self.quorum_active() {
                self.become_follower(self.current_term, None);
                return;
            }
        }
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        if now >= leader.heartbeat_deadline {
            self.needs_round = true;
        }
        self.expire_transfer();
    }

    /// Starts a new heartbeat round: every follower gets an AppendEntries (§5.2), presumed-lost
    /// pipelines fall back to probing.
    pub(crate) fn broadcast_heartbeat(&mut self) {
        let now = self.now;
        // An append unanswered for two heartbeat intervals is presumed lost.
        let stale_before = now.checked_sub(2 * self.config.heartbeat_interval);
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        leader.round += 1;
        leader.round_wanted = false;
        leader.round_sent_at.push_back((leader.round, now));
        if leader.round_sent_at.len() > MAX_REMEMBERED_ROUNDS {
            leader.round_sent_at.pop_front();
        }
        leader.heartbeat_deadline = now + self.config.heartbeat_interval;
        if let Some(stale_before) = stale_before {
            for progress in leader.progress.values_mut() {
                if progress.has_stale_inflight(stale_before) {
                    progress.become_probe(progress.match_index + 1);
                }
            }
        }
        self.for_each_peer(|node, peer| node.send_append(peer, true));
    }

    /// Sends new entries to every follower that flow control allows.
    pub(crate) fn broadcast_append(&mut self) {
        self.for_each_peer(|node, peer| node.send_append(peer, false));
    }

    fn for_each_peer(&mut self, mut action: impl FnMut(&mut Self, NodeId)) {
        let mut peers = std::mem::take(&mut self.peer_scratch);
        peers.clear();
        if let Some(leader) = &self.leader {
            peers.extend(leader.progress.keys());
        }
        for &peer in &peers {
            action(self, peer);
        }
        self.peer_scratch = peers;
    }

    /// Steps down from leadership: every request the leader holds fails, except proposals,
    /// which wait for the entry applied at their index (module `deposed`).
    pub(crate) fn abandon_leadership(&mut self) {
        let Some(leader) = self.leader.take() else {
            return;
        };
        let leader = *leader;
        for (index, id) in leader.proposals {
            self.keep_deposed(index, id);
        }
        for read in leader.reads_awaiting_quorum {
            self.fail_read(read.origin);
        }
        for origin in leader.reads_awaiting_term_commit {
            self.fail_read(origin);
        }
        if let Some(transfer) = leader.transfer {
            if !transfer.timeout_now_sent {
                let failure = RaftError::NotLeader { leader: None };
                self.reply(transfer.request, Response::Failed(failure));
            }
        }
        if let Some(change) = leader.membership_request {
            let index = change.awaited_index;
            self.reply(
                change.request,
                Response::Failed(RaftError::OutcomeUnknown { index }),
            );
        }
    }

    /// Answers a read that cannot be served because leadership was lost.
    pub(crate) fn fail_read(&mut self, origin: ReadOrigin<S::Query>) {
        match origin {
            ReadOrigin::Local { id, .. } => {
                self.reply(id, Response::Failed(RaftError::NotLeader { leader: None }))
            }
            ReadOrigin::Remote { from, read_id } => self.send(
                from,
                Message::ReadIndexResponse {
                    read_id,
                    read_index: None,
                    leader: None,
                },
            ),
        }
    }
}
