//! Membership changes by joint consensus (thesis §4.3, paper §6) and learners (§4.2.1).
//!
//! * A change of voters goes through `C_old,new` (decisions need majorities of both sets), then
//!   `C_new` once the joint entry commits. Several voters may change at once.
//! * A change of learners only is a single entry: learners never count towards a quorum.
//! * A configuration takes effect as soon as it is appended (§4.1), on every node.
//! * A leader refuses a change until it has committed an entry of its own term (the fix to the
//!   single-server change bug announced on raft-dev in 2015) and while another is unfinished.
//! * A leader that is not a voter of the committed `C_new` steps down (§4.2.2).

use std::collections::BTreeSet;
use std::sync::Arc;

use concord_core::{NodeId, RequestId, StateMachine};

use crate::leader::MembershipRequest;
use crate::node::RaftNode;
use crate::progress::Progress;
use crate::{LogIndex, Membership, Payload, RaftError, Response};

impl<S: StateMachine> RaftNode<S> {
    /// An administrator asks for a new configuration.
    pub(crate) fn on_change_membership(
        &mut self,
        id: RequestId,
        voters: BTreeSet<NodeId>,
        learners: BTreeSet<NodeId>,
    ) {
        if let Err(error) = self.check_change_allowed() {
            self.reply(id, Response::Failed(error));
            return;
        }
        let target = Membership {
            voters,
            outgoing_voters: BTreeSet::new(),
            learners,
        };
        if let Err(error) = target.validate() {
            self.reply(id, Response::Failed(error.into()));
            return;
        }
        if let Err(error) = self.check_promotions_ready(&target) {
            self.reply(id, Response::Failed(error));
            return;
        }
        let current = self.log.membership();
        let entry = if target.voters == current.voters {
            target
        } else {
            Membership {
                outgoing_voters: current.voters.clone(),
                ..target
            }
        };
        let index = self.append_to_log(self.current_term, Payload::Membership(Arc::new(entry)));
        if let Some(leader) = self.leader.as_mut() {
            leader.membership_request = Some(MembershipRequest {
                request: id,
                awaited_index: index,
            });
        }
        self.sync_progress();
        self.needs_broadcast = true;
    }

    fn check_change_allowed(&self) -> Result<(), RaftError> {
        let Some(leader) = &self.leader else {
            return Err(RaftError::NotLeader {
                leader: self.leader_id,
            });
        };
        let unfinished = leader.membership_request.is_some()
            || self.log.membership().is_joint()
            || self.log.membership_index() > self.commit_index;
        if unfinished {
            return Err(RaftError::MembershipChangeInProgress);
        }
        if self.commit_index < leader.term_start_index {
            return Err(RaftError::LeaderNotReady);
        }
        Ok(())
    }

    /// A learner may become a voter only once it holds every committed entry (as etcd's
    /// "can only promote a learner member which is in sync with leader"): promoting a learner
    /// far behind would count a voter that cannot yet vote for the up-to-date log, and could
    /// stall commitment while it catches up.
    fn check_promotions_ready(&self, target: &Membership) -> Result<(), RaftError> {
        let current = self.log.membership();
        let Some(leader) = &self.leader else {
            return Ok(());
        };
        for &learner in target
            .voters
            .iter()
            .filter(|n| current.learners.contains(n))
        {
            let match_index = leader.progress.get(&learner).map_or(0, |p| p.match_index);
            if match_index < self.commit_index {
                return Err(RaftError::LearnerBehind {
                    learner,
                    match_index,
                    commit_index: self.commit_index,
                });
            }
        }
        Ok(())
    }

    /// Makes the leader's progress map match the configuration: new members are probed,
    /// removed ones forgotten.
    pub(crate) fn sync_progress(&mut self) {
        let members = self.log.membership().members();
        let next_index = self.log.last_index() + 1;
        let now = self.now;
        let id = self.id;
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        leader.progress.retain(|peer, _| members.contains(peer));
        for &member in members.iter().filter(|&&m| m != id) {
            leader
                .progress
                .entry(member)
                .or_insert_with(|| Progress::new(next_index, now));
        }
    }

    /// After commitment: a leader whose latest configuration is a committed joint one appends
    /// the final `C_new` (§4.3).
    pub(crate) fn maybe_leave_joint(&mut self) {
        let membership = self.log.membership();
        if self.leader.is_none()
            || !membership.is_joint()
            || self.log.membership_index() > self.commit_index
        {
            return;
        }
        let joint_index = self.log.membership_index();
        let final_membership = membership.leave_joint();
        let index = self.append_to_log(
            self.current_term,
            Payload::Membership(Arc::new(final_membership)),
        );
        if let Some(request) = self
            .leader
            .as_mut()
            .and_then(|leader| leader.membership_request.as_mut())
        {
            if request.awaited_index == joint_index {
                request.awaited_index = index;
            }
        }
        self.sync_progress();
        self.needs_broadcast = true;
    }

    /// A configuration entry was applied: answer the change it completes, and step down if
    /// this leader is no longer a voter (§4.2.2).
    pub(crate) fn on_membership_applied(&mut self, index: LogIndex) {
        let Some(membership) = self.log.entry(index).and_then(|e| e.membership()).cloned() else {
            return;
        };
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        if membership.is_joint() {
            return;
        }
        if let Some(request) = leader
            .membership_request
            .take_if(|request| request.awaited_index == index)
        {
            let response = Response::MembershipChanged {
                index,
                membership: Box::new(membership.clone()),
            };
            self.reply(request.request, response);
        }
        let latest = self.log.membership_index() == index;
        if latest && !membership.is_voter(self.id) {
            self.become_follower(self.current_term, None);
        }
    }
}
