//! Leadership transfer (thesis §3.10): the leader stops accepting proposals, brings the target
//! up to date, then sends it `TimeoutNow`; the target starts an election at once (skipping
//! pre-vote, and flagged so that leader stickiness does not stop it).

use concord_core::{NodeId, RequestId, StateMachine};

use crate::leader::Transfer;
use crate::node::{RaftNode, RaftRole};
use crate::{Message, RaftError, Response, Term};

impl<S: StateMachine> RaftNode<S> {
    /// An administrator asks the leader to hand over to `to`.
    pub(crate) fn on_transfer_leadership(&mut self, id: RequestId, to: NodeId) {
        let deadline = self.now + self.config.election_timeout_max;
        let is_target_voter = self.log.membership().is_voter(to) && to != self.id;
        let Some(leader) = self.leader.as_mut() else {
            let leader = self.leader_id;
            self.reply(id, Response::Failed(RaftError::NotLeader { leader }));
            return;
        };
        if !is_target_voter {
            self.reply(
                id,
                Response::Failed(RaftError::InvalidTransferTarget { to }),
            );
            return;
        }
        if leader.transfer.is_some() {
            self.reply(id, Response::Failed(RaftError::TransferInProgress));
            return;
        }
        leader.transfer = Some(Transfer {
            to,
            request: id,
            deadline,
            timeout_now_sent: false,
        });
        self.maybe_send_timeout_now(to);
        self.send_append(to, false);
    }

    /// Sends `TimeoutNow` once the transfer target's log matches the leader's.
    pub(crate) fn maybe_send_timeout_now(&mut self, peer: NodeId) {
        let last_index = self.log.last_index();
        let term = self.current_term;
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let Some(transfer) = leader.transfer.as_mut() else {
            return;
        };
        let caught_up = leader
            .progress
            .get(&peer)
            .is_some_and(|progress| progress.match_index == last_index);
        if transfer.to != peer || transfer.timeout_now_sent || !caught_up {
            return;
        }
        transfer.timeout_now_sent = true;
        let request = transfer.request;
        leader.lease_revoked = true;
        self.send(peer, Message::TimeoutNow { term });
        self.reply(request, Response::TransferStarted { to: peer });
    }

    /// Gives up a transfer that did not finish within an election timeout.
    pub(crate) fn expire_transfer(&mut self) {
        let now = self.now;
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let Some(transfer) = leader.transfer.take_if(|t| t.deadline <= now) else {
            return;
        };
        if !transfer.timeout_now_sent {
            let to = transfer.to;
            self.reply(
                transfer.request,
                Response::Failed(RaftError::TransferTimedOut { to }),
            );
        }
    }

    /// The leader asks this node to campaign now.
    pub(crate) fn on_timeout_now(&mut self, from: NodeId, term: Term) {
        let from_leader = self.leader_id == Some(from) || self.leader_id.is_none();
        if term != self.current_term || self.role == RaftRole::Leader || !from_leader {
            return;
        }
        if self.is_promotable() {
            self.campaign(true);
        }
    }
}
