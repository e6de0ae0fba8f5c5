//! A deposed leader's proposals wait for their outcome.
//!
//! A leader that steps down holds proposals it appended but did not see commit. Each is the
//! entry at `(index, term)` of its log, and the entry the cluster commits at `index` is final
//! (State Machine Safety, paper §5.4.3): when this node applies `index`, the proposal was
//! applied if that entry has its term — a leader appends one entry per index in its term — and
//! surely not otherwise (`RaftError::LeaderChanged`). So entries the next leader commits are
//! answered as applied, as etcd answers them, instead of failing with an unknown outcome at the
//! step-down.
//!
//! A proposal still waiting `Config::outcome_timeout` after the step-down fails with
//! `RaftError::OutcomeUnknown` (a deposed leader cut off from the rest learns nothing), and so
//! does one whose index an installed snapshot covers, unless the snapshot's last term is below
//! the proposal's: then the committed entry at its index has an older term, so it is not ours.

use concord_core::{RequestId, StateMachine, Time};

use crate::node::RaftNode;
use crate::{LogIndex, RaftError, Response, Term};

/// A proposal this node appended as leader, waiting, after it stepped down, for its index to
/// be applied.
#[derive(Clone, Debug)]
pub(crate) struct DeposedProposal {
    /// Where it was appended.
    pub(crate) index: LogIndex,
    /// The term it was appended in.
    pub(crate) term: Term,
    /// The client's request.
    pub(crate) request: RequestId,
    /// When the leader stepped down; it fails `Config::outcome_timeout` later.
    pub(crate) since: Time,
}

impl<S: StateMachine> RaftNode<S> {
    /// A leader stepping down keeps its proposal `request`, at `index`, waiting for its
    /// outcome.
    pub(crate) fn keep_deposed(&mut self, index: LogIndex, request: RequestId) {
        match self.log.term_at(index) {
            Some(term) => self.deposed_proposals.push_back(DeposedProposal {
                index,
                term,
                request,
                since: self.now,
            }),
            None => self.reply(
                request,
                Response::Failed(RaftError::OutcomeUnknown { index }),
            ),
        }
    }

    /// Leading again, this node commits its whole log: its deposed proposals still in it
    /// become the new leader's to answer (they come before anything it appends now, so the
    /// proposals stay in index order). Those its log no longer holds may yet commit elsewhere
    /// if it is deposed again: their outcome is unknown.
    pub(crate) fn adopt_deposed(&mut self) {
        for proposal in std::mem::take(&mut self.deposed_proposals) {
            let held = self.log.term_at(proposal.index) == Some(proposal.term);
            match self.leader.as_mut() {
                Some(leader) if held => leader
                    .proposals
                    .push_back((proposal.index, proposal.request)),
                _ => {
                    let error = RaftError::OutcomeUnknown {
                        index: proposal.index,
                    };
                    self.reply(proposal.request, Response::Failed(error));
                }
            }
        }
    }

    /// Answers the oldest deposed proposals, as long as `ended` gives one an answer.
    /// They are in index order, and in order of step-down too.
    fn settle_oldest_deposed(
        &mut self,
        ended: impl Fn(&DeposedProposal) -> Option<Response<S::Output>>,
    ) {
        while let Some(oldest) = self.deposed_proposals.front() {
            let Some(response) = ended(oldest) else {
                return;
            };
            let request = oldest.request;
            self.deposed_proposals.pop_front();
            self.reply(request, response);
        }
    }

    /// The entry at `index`, of `term`, was applied: the deposed proposal there, if any, was
    /// it (and is answered with `output`) or was not (and never will be).
    pub(crate) fn settle_deposed(
        &mut self,
        index: LogIndex,
        term: Term,
        output: Option<S::Output>,
    ) {
        self.settle_oldest_deposed(|proposal| {
            Some(match &output {
                _ if proposal.index > index => return None,
                Some(output) if proposal.index == index && proposal.term == term => {
                    Response::Applied {
                        index,
                        output: output.clone(),
                    }
                }
                // An index below this one was skipped by a snapshot install, which settles
                // what it covers itself; this is only a guard.
                _ if proposal.index < index => Response::Failed(unknown_outcome(proposal)),
                _ => Response::Failed(RaftError::LeaderChanged {
                    term: proposal.term,
                }),
            })
        });
    }

    /// A snapshot through `last_index`, whose last entry has `last_term`, was installed.
    pub(crate) fn settle_deposed_by_snapshot(&mut self, last_index: LogIndex, last_term: Term) {
        self.settle_oldest_deposed(|proposal| {
            if proposal.index > last_index {
                return None;
            }
            // Every entry the snapshot holds has a term up to `last_term`.
            let error = if proposal.term > last_term {
                RaftError::LeaderChanged {
                    term: proposal.term,
                }
            } else {
                unknown_outcome(proposal)
            };
            Some(Response::Failed(error))
        });
    }

    /// Deposed proposals still waiting `Config::outcome_timeout` after the step-down fail.
    pub(crate) fn expire_deposed(&mut self) {
        let (now, timeout) = (self.now, self.config.outcome_timeout);
        self.settle_oldest_deposed(|proposal| {
            (proposal.since + timeout <= now).then(|| Response::Failed(unknown_outcome(proposal)))
        });
    }
}

/// The failure of a deposed proposal whose outcome is not known.
fn unknown_outcome(proposal: &DeposedProposal) -> RaftError {
    RaftError::OutcomeUnknown {
        index: proposal.index,
    }
}
