//! Proposal forwarding (`Config::forward_proposals`, etcd's MsgProp).
//!
//! **Follower.** A proposal to a follower waits in `proposals_to_forward` until the first step
//! that is not itself a proposal (as `batch_proposals` holds a leader's broadcast back), and
//! then leaves with every other waiting one in a single `Message::Propose`. The leader appends
//! each as a `Payload::Forwarded` entry tagged with the follower's id for it. The follower
//! answers its client when it applies that entry itself: the leader sends no answer, and a
//! client of a follower reads its own writes there.
//!
//! **Once each.** A `Propose` names the term of the leader it is for, and only that leader
//! appends it (the term rules of §5.1 turn it away anywhere else). Proposals are numbered per
//! follower incarnation, in order, and the leader remembers, per follower incarnation, the
//! number after the last one it appended: a copy of the message (the network may duplicate
//! one) appends nothing again. So a proposal enters the log at most once.
//!
//! **Outcomes.** A forwarded proposal waits for its entry to be applied here, across leader
//! changes: entries a deposed leader appended often commit under the next one. It fails:
//! - with `RaftError::LeaderChanged`, surely not applied, once an entry of a later term than
//!   its leader's is applied here: the entry it became (if any) has its leader's term, and log
//!   terms only grow, so it is not in the committed prefix and never will be;
//! - with the leader's reason, surely not applied, when the leader of its term refuses it
//!   (`Message::ProposeRejected` with a reason: a transfer under way, overloaded, the sender
//!   no member) — that leader then never appends a copy of it either;
//! - with `RaftError::ForwardedOutcomeUnknown`, when the connection to its leader is lost,
//!   when it is not applied within `Config::outcome_timeout`, and when an installed snapshot
//!   may hold its entry.
//!
//! A refusal from a node that no longer leads proves nothing (it may answer a copy of a
//! message the node took while it led), so the proposal keeps waiting. After the connection
//! to the leader is lost, the follower forwards nothing more until it hears from a leader
//! again: it refuses proposals with `RaftError::LeaderUnreachable`. (Reads it forwards are
//! asked again of the next leader, as they are safe to repeat.)
//!
//! **Commitment.** A follower learns the commit index from AppendEntries, which may come only
//! with the next heartbeat when no new entries flow. So when a leader commits entries a
//! follower forwarded, it sends that follower a `Message::Commit` at once, unless an
//! AppendEntries of the same step carries the new commit index. A follower adopts a commit
//! index only up to `leader_match`, the prefix its log shares with this leader's log (Log
//! Matching, paper §5.3): what this leader's AppendEntries established in its term.

use std::sync::Arc;

use concord_core::{NodeId, RequestId, StateMachine, Time};

use crate::node::{RaftNode, RaftRole};
use crate::{LogIndex, Message, Payload, ProposalOrigin, RaftError, Response, Term};

/// Most incarnations of one follower whose forwarded proposals a leader tracks in its term (a
/// follower restarts a few times at most within one leader's term). None is ever forgotten
/// within the term, since a copy of a forgotten one's message would append its proposals
/// again: proposals of an incarnation beyond these are refused instead.
const MAX_INCARNATIONS: usize = 64;

/// A proposal this node forwarded to the leader, waiting to be applied here.
#[derive(Clone, Debug)]
pub(crate) struct ForwardedProposal {
    /// The client's request.
    pub(crate) request: RequestId,
    /// The leader it went to.
    pub(crate) to: NodeId,
    /// That leader's term: the term of the entry it becomes, if any.
    pub(crate) term: Term,
    /// When it left; it fails `Config::outcome_timeout` later.
    pub(crate) sent: Time,
}

impl<S: StateMachine> RaftNode<S> {
    /// A follower takes a client proposal to forward at the end of the step.
    pub(crate) fn queue_forward(&mut self, id: RequestId, command: Arc<S::Command>) {
        if let Some(leader) = self
            .unreachable_leader
            .filter(|l| self.leader_id == Some(*l))
        {
            self.reply(
                id,
                Response::Failed(RaftError::LeaderUnreachable { leader }),
            );
            return;
        }
        if self.follower_admits(id) {
            self.proposals_to_forward.push((id, command));
        }
    }

    /// Whether a follower takes client request `id` to pass on to the leader: not when it
    /// knows no leader, nor when `Config::max_pending_requests` requests already wait (it
    /// answers the request then).
    pub(crate) fn follower_admits(&mut self, id: RequestId) -> bool {
        if self.leader_id.is_none() {
            self.reply(id, Response::Failed(RaftError::NotLeader { leader: None }));
            return false;
        }
        let pending = self.waiting_requests();
        if pending >= self.config.max_pending_requests {
            self.reply(id, Response::Failed(RaftError::Overloaded { pending }));
            return false;
        }
        true
    }

    /// The client requests a follower keeps waiting: reads and proposals, forwarded or about
    /// to be (bounded by `Config::max_pending_requests`, as a leader's are).
    pub(crate) fn waiting_requests(&self) -> usize {
        self.reads_to_forward.len()
            + self
                .forwarded_reads
                .as_ref()
                .map_or(0, |(_, batch)| batch.reads.len())
            + self.reads_awaiting_apply.len()
            + self.proposals_to_forward.len()
            + self.forwarded_proposals.len()
            + self.deposed_proposals.len()
    }

    /// Run at the end of every step, before anything is emitted: forwards the waiting
    /// proposals in one message — unless this step is a proposal and `batch_proposals` holds
    /// them back for the next.
    pub(crate) fn forward_proposals(&mut self) {
        if self.hold_broadcast || self.proposals_to_forward.is_empty() {
            return;
        }
        let proposals = std::mem::take(&mut self.proposals_to_forward);
        if self.leader.is_some() {
            for (id, command) in proposals {
                self.on_propose(id, command);
            }
            return;
        }
        let Some(to) = self.leader_id else {
            for (id, _) in proposals {
                self.reply(id, Response::Failed(RaftError::NotLeader { leader: None }));
            }
            return;
        };
        let mut proposals = proposals.into_iter().peekable();
        while proposals.peek().is_some() {
            let first = self.next_proposal;
            let mut commands = Vec::new();
            for (request, command) in proposals.by_ref().take(self.config.max_entries_per_message) {
                let proposal = ForwardedProposal {
                    request,
                    to,
                    term: self.current_term,
                    sent: self.now,
                };
                self.forwarded_proposals
                    .insert(self.next_proposal, proposal);
                self.next_proposal += 1;
                commands.push(command);
            }
            let message = Message::Propose {
                term: self.current_term,
                incarnation: self.incarnation,
                first,
                commands,
            };
            self.send(to, message);
        }
    }

    /// Fails, with an unknown outcome, the forwarded proposals `which` selects.
    pub(crate) fn fail_forwarded_proposals(&mut self, which: impl Fn(&ForwardedProposal) -> bool) {
        let failed: Vec<u64> = self
            .forwarded_proposals
            .iter()
            .filter(|(_, proposal)| which(proposal))
            .map(|(&sequence, _)| sequence)
            .collect();
        for sequence in failed {
            self.fail_forwarded(sequence, unknown_outcome);
        }
    }

    /// Fails forwarded proposal `sequence`, if still waiting, with the error `why` gives.
    fn fail_forwarded(&mut self, sequence: u64, why: impl FnOnce(&ForwardedProposal) -> RaftError) {
        if let Some(proposal) = self.forwarded_proposals.remove(&sequence) {
            let error = why(&proposal);
            self.reply(proposal.request, Response::Failed(error));
        }
    }

    /// Fails the oldest forwarded proposals, as long as `ended` says one's wait is over, with
    /// the error it gives. Proposals are numbered in the order they left, so both their send
    /// times and their terms grow with the number.
    fn fail_oldest_forwarded(&mut self, ended: impl Fn(&ForwardedProposal) -> Option<RaftError>) {
        while let Some((&sequence, oldest)) = self.forwarded_proposals.first_key_value() {
            let Some(error) = ended(oldest) else {
                return;
            };
            self.fail_forwarded(sequence, |_| error);
        }
    }

    /// An entry of term `applied` was applied: the forwarded proposals of earlier terms still
    /// waiting were not committed, and never will be (their entries would have the earlier
    /// term, and the committed prefix, whose terms only grow, is final up to here).
    pub(crate) fn drop_superseded_forwards(&mut self, applied: Term) {
        self.fail_oldest_forwarded(|proposal| {
            (proposal.term < applied).then_some(RaftError::LeaderChanged {
                term: proposal.term,
            })
        });
    }

    /// Forwarded proposals not applied within `Config::outcome_timeout` fail.
    pub(crate) fn expire_forwarded_proposals(&mut self) {
        let (now, timeout) = (self.now, self.config.outcome_timeout);
        self.fail_oldest_forwarded(|proposal| {
            (proposal.sent + timeout <= now).then(|| unknown_outcome(proposal))
        });
    }

    /// The leader side: a follower's proposals become entries of this term (those not
    /// appended before), unless this node cannot take them. The term rules already turned
    /// away a message for another term.
    pub(crate) fn on_forwarded_proposals(
        &mut self,
        from: NodeId,
        incarnation: u64,
        first: u64,
        commands: Vec<Arc<S::Command>>,
    ) {
        let count = commands.len() as u64;
        let term = self.current_term;
        let Some(leader) = self.leader.as_mut() else {
            // Not the leader of the message's term: whether it took a copy when it led, it
            // cannot tell, so it gives no reason.
            self.refuse_forwarded(from, incarnation, first, count, None);
            return;
        };
        let pending = leader.pending_requests();
        let refusal = if !self.log.membership().contains(from) {
            // A removed node learns nothing more of the cluster.
            Some(RaftError::NotMember)
        } else if leader.transfer.is_some() {
            Some(RaftError::TransferInProgress)
        } else {
            (pending + commands.len() > self.config.max_pending_requests)
                .then_some(RaftError::Overloaded { pending })
        };
        let incarnations = leader.forwarded.entry(from).or_default();
        let position = incarnations.iter().position(|(i, _)| *i == incarnation);
        let (skip, refusal) = match position {
            // Untracked, so refused surely: nothing of this incarnation is ever appended in
            // this term (the list only grows until the term ends).
            None if incarnations.len() == MAX_INCARNATIONS => {
                (0, Some(RaftError::Overloaded { pending }))
            }
            _ => {
                let position = position.unwrap_or_else(|| {
                    incarnations.push((incarnation, first));
                    incarnations.len() - 1
                });
                let next = &mut incarnations[position].1;
                // Proposals before `next` were appended already, refused, or overtaken by
                // later ones (and left to fail at the follower).
                let skip = next.saturating_sub(first).min(count);
                *next = (*next).max(first.saturating_add(count));
                (skip, refusal)
            }
        };
        if let Some(refusal) = refusal {
            // Refused surely: `next` moved past them (or tracks none of their incarnation),
            // so no copy is appended later.
            if skip < count {
                self.refuse_forwarded(from, incarnation, first + skip, count - skip, Some(refusal));
            }
            return;
        }
        for (offset, command) in (0..count).zip(commands).skip(skip as usize) {
            let origin = ProposalOrigin {
                node: from,
                id: incarnation.wrapping_add(first.wrapping_add(offset)),
            };
            self.append_to_log(term, Payload::Forwarded { command, origin });
            self.needs_broadcast = true;
        }
    }

    /// Tells follower `to` that this node did not take `count` of its proposals from
    /// `first` on, with the reason when the refusal is final.
    fn refuse_forwarded(
        &mut self,
        to: NodeId,
        incarnation: u64,
        first: u64,
        count: u64,
        refusal: Option<RaftError>,
    ) {
        let message = Message::ProposeRejected {
            incarnation,
            first,
            count,
            refusal,
        };
        self.send(to, message);
    }

    /// A node refused proposals this node forwarded to it. With a reason, the leader of their
    /// term appended none of them (and never will): they fail with it. Without one, the node
    /// no longer leads and may have taken a copy when it did: they keep waiting.
    pub(crate) fn on_proposals_rejected(
        &mut self,
        from: NodeId,
        incarnation: u64,
        first: u64,
        count: u64,
        refusal: Option<RaftError>,
    ) {
        let Some(refusal) = refusal else {
            return;
        };
        if incarnation != self.incarnation {
            return;
        }
        let refused: Vec<u64> = self
            .forwarded_proposals
            .range(first..first.saturating_add(count))
            .filter(|(_, proposal)| proposal.to == from)
            .map(|(&sequence, _)| sequence)
            .collect();
        for sequence in refused {
            self.fail_forwarded(sequence, |_| refusal.clone());
        }
    }

    /// Applying an entry this node forwarded answers its client.
    pub(crate) fn take_forwarded(&mut self, origin: &ProposalOrigin) -> Option<RequestId> {
        if origin.node != self.id {
            return None;
        }
        let sequence = origin.id.wrapping_sub(self.incarnation);
        self.forwarded_proposals
            .remove(&sequence)
            .map(|proposal| proposal.request)
    }

    /// The leader's commit index, sent because it committed entries this node forwarded.
    pub(crate) fn on_commit(&mut self, from: NodeId, commit_index: LogIndex) {
        if self.role == RaftRole::Follower && self.leader_id == Some(from) {
            self.adopt_leader_commit(commit_index);
        }
    }

    /// A follower takes its leader's commit index, as far as its log shares the leader's
    /// (`leader_match`), and applies what that commits.
    pub(crate) fn adopt_leader_commit(&mut self, leader_commit: LogIndex) {
        if leader_commit > self.commit_index {
            self.commit_index = self.commit_index.max(leader_commit.min(self.leader_match));
            self.apply_committed();
        }
    }

    /// The leader committed `(from, to]`: the followers that forwarded any of it are told.
    pub(crate) fn note_forwarded_commits(&mut self, from: LogIndex, to: LogIndex) {
        for index in from + 1..=to {
            if let Some(Payload::Forwarded { origin, .. }) =
                self.log.entry(index).map(|entry| &entry.payload)
            {
                if origin.node != self.id && !self.commit_notify.contains(&origin.node) {
                    self.commit_notify.push(origin.node);
                }
            }
        }
    }

    /// Sends the commit index to the followers `note_forwarded_commits` noted, unless an
    /// AppendEntries of this step already carries it to them, or `batch_proposals` holds
    /// this step's sends back (they leave with the next step's).
    pub(crate) fn send_commit_notices(&mut self) {
        if self.hold_broadcast || self.commit_notify.is_empty() {
            return;
        }
        let (term, commit_index) = (self.current_term, self.commit_index);
        let notify = std::mem::take(&mut self.commit_notify);
        for &peer in &notify {
            let carried = self.outbox.iter().any(|(to, message)| {
                *to == peer
                    && matches!(message, Message::AppendEntries { leader_commit, .. }
                        if *leader_commit >= commit_index)
            });
            let follower = self
                .leader
                .as_ref()
                .is_some_and(|leader| leader.progress.contains_key(&peer));
            if follower && !carried {
                self.send(peer, Message::Commit { term, commit_index });
            }
        }
        self.commit_notify = notify;
        self.commit_notify.clear();
    }
}

/// The failure of a forwarded proposal whose outcome is not known.
fn unknown_outcome(proposal: &ForwardedProposal) -> RaftError {
    RaftError::ForwardedOutcomeUnknown { to: proposal.to }
}
