//! Leader election (paper §5.2, §5.4.1), PreVote (thesis §9.6), CheckQuorum and leader
//! stickiness (thesis §6.2 and §4.2.3), and the term rules every message obeys (§5.1).

use concord_core::{NodeId, StateMachine};

use crate::leader::LeaderState;
use crate::node::{RaftNode, RaftRole};
use crate::progress::Progress;
use crate::{LogIndex, Message, Payload, Term};

impl<S: StateMachine> RaftNode<S> {
    /// §5.1: a message with a higher term makes the node a follower of that term — except a
    /// pre-vote and its granted answer, which change no term (§9.6), and a vote request that
    /// leader stickiness ignores. Returns whether to go on handling the message.
    pub(crate) fn on_higher_term(
        &mut self,
        from: NodeId,
        message: &Message<S::Command>,
        term: Term,
    ) -> bool {
        match message {
            Message::RequestVote { pre_vote: true, .. } => true,
            Message::RequestVoteResponse {
                pre_vote: true,
                granted: true,
                ..
            } => true,
            Message::RequestVote { transfer, .. } => {
                if !transfer && self.in_leader_lease() {
                    return false;
                }
                self.become_follower(term, None);
                true
            }
            Message::AppendEntries { .. }
            | Message::InstallSnapshot { .. }
            | Message::Commit { .. } => {
                self.become_follower(term, Some(from));
                true
            }
            _ => {
                self.become_follower(term, None);
                true
            }
        }
    }

    /// §5.1: a request with a stale term is rejected, carrying the current term so that the
    /// sender steps down; stale answers are dropped.
    pub(crate) fn on_stale_message(&mut self, from: NodeId, message: &Message<S::Command>) {
        let term = self.current_term;
        let answer = match message {
            Message::AppendEntries { prev_log_index, .. } => Message::AppendEntriesResponse {
                term,
                success: false,
                index: *prev_log_index,
                conflict_term: None,
                conflict_index: 0,
                round: 0,
            },
            Message::InstallSnapshot { meta, .. } => Message::InstallSnapshotResponse {
                term,
                snapshot_index: meta.last_index,
                next_offset: 0,
                done: false,
                round: 0,
            },
            Message::RequestVote { pre_vote, .. } => Message::RequestVoteResponse {
                term,
                granted: false,
                pre_vote: *pre_vote,
            },
            Message::Propose {
                incarnation,
                first,
                commands,
                ..
            } => Message::ProposeRejected {
                incarnation: *incarnation,
                first: *first,
                count: commands.len() as u64,
                refusal: None,
            },
            _ => return,
        };
        self.send(from, answer);
    }

    /// Leader stickiness: the node heard from a live leader within the minimum election
    /// timeout (or is that leader), so it disregards vote requests.
    pub(crate) fn in_leader_lease(&self) -> bool {
        self.config.check_quorum
            && (self.role == RaftRole::Leader || self.now < self.vote_lease_until)
    }

    /// Records contact from the leader of the current term: resets the election timer and
    /// starts the stickiness window.
    pub(crate) fn note_leader_contact(&mut self, leader: NodeId) {
        self.leader_id = Some(leader);
        self.unreachable_leader = None;
        self.vote_lease_until = self.now + self.config.election_timeout_min;
        self.reset_election_timer();
    }

    /// The driver's connection to `peer` broke. When `peer` is the leader this follower
    /// follows, it may have crashed: the follower stops vouching for it (its stickiness window
    /// ends, so it grants votes again) and campaigns after a short random delay, up to a
    /// quarter of the minimum election timeout, instead of waiting out a whole timeout.
    ///
    /// A false alarm disrupts nothing: with PreVote a campaign goes on only once a majority
    /// has lost the leader too, since voters that still hear from it keep refusing, and no
    /// term changes before that. So this is done only with PreVote on — and not with lease
    /// reads, whose leader counts on every follower's stickiness window lasting.
    pub(crate) fn on_peer_lost(&mut self, peer: NodeId) {
        self.reask_reads_sent_to(peer);
        // The proposals forwarded to it may be lost with the connection, or may be in its log.
        self.fail_forwarded_proposals(|proposal| proposal.to == peer);
        if self.leader_id == Some(peer) {
            // Forwarding more to it until it is heard from again would only lose them too.
            self.unreachable_leader = Some(peer);
        }
        if self.role != RaftRole::Follower
            || self.leader_id != Some(peer)
            || !self.config.pre_vote
            || self.config.lease_reads
        {
            return;
        }
        self.vote_lease_until = self.now;
        self.hurry_election = true;
    }

    /// Whether this node may campaign: it votes in its latest configuration, or in one it may
    /// still be needed for: the configuration at its commit index or any later one, none of
    /// which it knows superseded by a committed one (thesis §4.2.2: a server not in its latest
    /// configuration still starts elections until that configuration commits). After a
    /// restart the commit index starts low, so a joint configuration this node votes in may
    /// be all that lets anyone be elected: its log may be the only one holding the final
    /// configuration that the remaining voters need.
    pub(crate) fn is_promotable(&self) -> bool {
        self.log.membership().is_voter(self.id)
            || (self.log.membership_index() > self.commit_index
                && self
                    .log
                    .memberships_from(self.commit_index)
                    .any(|membership| membership.is_voter(self.id)))
    }

    /// The election timer fired: a voter campaigns, anyone else just waits again.
    pub(crate) fn on_election_timeout(&mut self) {
        if self.is_promotable() {
            self.campaign(false);
        } else {
            self.reset_election_timer();
        }
    }

    /// Starts a pre-vote, or a real election when pre-vote is off or for a transfer.
    pub(crate) fn campaign(&mut self, transfer: bool) {
        if self.config.pre_vote && !transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate(transfer);
        }
    }

    fn become_pre_candidate(&mut self) {
        self.abandon_leadership();
        self.role = RaftRole::PreCandidate;
        self.leader_id = None;
        self.leader_match = 0;
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_timer();
        self.request_votes(self.current_term.saturating_add(1), true, false);
        self.tally_votes();
    }

    /// §5.2: increment the term, vote for itself, ask every voter.
    pub(crate) fn become_candidate(&mut self, transfer: bool) {
        self.abandon_leadership();
        self.current_term = self.current_term.saturating_add(1);
        self.voted_for = Some(self.id);
        self.role = RaftRole::Candidate;
        self.leader_id = None;
        self.leader_match = 0;
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_timer();
        self.request_votes(self.current_term, false, transfer);
        self.tally_votes();
    }

    fn request_votes(&mut self, term: Term, pre_vote: bool, transfer: bool) {
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term();
        let mut voters = std::mem::take(&mut self.peer_scratch);
        voters.clear();
        let membership = self.log.membership();
        voters.extend(membership.voters.iter().chain(&membership.outgoing_voters));
        voters.sort_unstable();
        voters.dedup();
        let id = self.id;
        for &voter in voters.iter().filter(|&&v| v != id) {
            self.send(
                voter,
                Message::RequestVote {
                    term,
                    last_log_index,
                    last_log_term,
                    pre_vote,
                    transfer,
                },
            );
        }
        self.peer_scratch = voters;
    }

    /// Becomes a follower of `term` (a new term clears the vote), believing in `leader`.
    ///
    /// The election timer keeps running (Figure 2: only AppendEntries from the current leader
    /// or granting a vote resets it): were it reset by every higher term, the one node whose
    /// log could win might never time out while others keep campaigning. A former leader gets
    /// a fresh deadline, having had none.
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.current_term || self.leader_id != leader {
            self.leader_match = 0;
        }
        if term > self.current_term {
            self.current_term = term;
            self.voted_for = None;
        }
        if self.role == RaftRole::Leader {
            self.reset_election_timer();
        }
        self.abandon_leadership();
        self.role = RaftRole::Follower;
        self.leader_id = leader;
        self.votes.clear();
    }

    /// §5.2, §8: take over, set up every follower's progress, append a no-op of this term.
    pub(crate) fn become_leader(&mut self) {
        self.role = RaftRole::Leader;
        self.leader_id = Some(self.id);
        self.votes.clear();
        let next_index = self.log.last_index() + 1;
        let mut leader = LeaderState::new(
            next_index,
            self.now,
            self.now + self.config.election_timeout_max,
        );
        for member in self.log.membership().members() {
            if member != self.id {
                leader
                    .progress
                    .insert(member, Progress::new(next_index, self.now));
            }
        }
        self.leader = Some(Box::new(leader));
        self.adopt_deposed();
        self.append_to_log(self.current_term, Payload::Noop);
        self.needs_broadcast = true;
        self.needs_round = true;
        self.maybe_commit();
    }

    /// §5.2 and §9.6: grant a (pre-)vote if the candidate's log is at least as up to date and
    /// (for a real vote) the node has not voted for someone else in this term.
    pub(crate) fn on_request_vote(
        &mut self,
        from: NodeId,
        term: Term,
        last_log_index: LogIndex,
        last_log_term: Term,
        pre_vote: bool,
        transfer: bool,
    ) {
        let up_to_date = self.log.is_up_to_date(last_log_index, last_log_term);
        let granted = if pre_vote {
            let sticky = !transfer && self.in_leader_lease();
            term > self.current_term && up_to_date && !sticky
        } else {
            let can_vote = self.voted_for == Some(from)
                || (self.voted_for.is_none() && self.leader_id.is_none());
            can_vote && up_to_date
        };
        if granted && !pre_vote {
            self.voted_for = Some(from);
            self.reset_election_timer();
        }
        let answer_term = if granted && pre_vote {
            term
        } else {
            self.current_term
        };
        self.send(
            from,
            Message::RequestVoteResponse {
                term: answer_term,
                granted,
                pre_vote,
            },
        );
    }

    /// Counts a (pre-)vote; a quorum elects (§5.2), a blocking minority ends the campaign.
    pub(crate) fn on_request_vote_response(
        &mut self,
        from: NodeId,
        term: Term,
        granted: bool,
        pre_vote: bool,
    ) {
        let counts = match (self.role, pre_vote) {
            (RaftRole::PreCandidate, true) => {
                (granted && term == self.current_term.saturating_add(1))
                    || (!granted && term <= self.current_term)
            }
            (RaftRole::Candidate, false) => term == self.current_term,
            _ => false,
        };
        if counts && self.log.membership().is_voter(from) {
            self.votes.insert(from, granted);
            self.tally_votes();
        }
    }

    fn tally_votes(&mut self) {
        let membership = self.log.membership();
        let won = membership.is_quorum(|id| self.votes.get(&id) == Some(&true));
        let lost = membership.is_quorum_impossible(|id| self.votes.get(&id) == Some(&false));
        match (won, lost, self.role) {
            (true, _, RaftRole::PreCandidate) => self.become_candidate(false),
            (true, _, RaftRole::Candidate) => self.become_leader(),
            (false, true, _) => self.become_follower(self.current_term, None),
            _ => {}
        }
    }

    /// CheckQuorum (thesis §6.2): whether a quorum was heard from within an election timeout.
    pub(crate) fn quorum_active(&self) -> bool {
        let Some(leader) = &self.leader else {
            return false;
        };
        let since = self.now.saturating_sub(self.config.election_timeout_max);
        self.log.membership().is_quorum(|id| {
            id == self.id
                || leader
                    .progress
                    .get(&id)
                    .is_some_and(|progress| progress.last_heard >= since)
        })
    }
}
