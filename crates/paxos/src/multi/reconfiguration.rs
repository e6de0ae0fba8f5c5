//! Reconfiguration through the log with a stop-sign (Lamport, Malkhi, Zhou, "Vertical Paxos and
//! Primary-Backup Replication", PODC 2009; Ng et al., "Omni-Paxos", EuroSys 2023, §5).
//!
//! A leader asked to change the members proposes [`Entry::StopSign`] with the next
//! configuration (epoch + 1) in the next slot `s`, and proposes nothing after it: `s` is the
//! last slot of the current configuration. A new leader of the current configuration that
//! adopts a stop-sign keeps to it too (it drops adopted slots after it), so once the stop-sign
//! is chosen no slot after `s` can be chosen in the old configuration.
//!
//! A node switches when it *applies* the stop-sign (or installs a snapshot taken after one):
//! from then on its members and quorums are the new configuration's, and it stands with ballots
//! of the new epoch, which outrank every ballot of the old one (ballots order by epoch first),
//! so no acceptor that promised in the new configuration answers the old one again. Entries
//! after `s` left over from the old epoch (never chosen) are dropped. Leadership starts afresh:
//! ballot leader election among the new members picks a leader, whose phase 1 brings every new
//! member up to date (a new member starts with an empty log and catches up by `Accept`s or a
//! snapshot). A node that is not a member of its configuration is idle: it acts as an acceptor
//! and learner for whoever leads, but never campaigns.
//!
//! Liveness needs a member of the new configuration that was also in the old one: it can
//! always (with ballot leader election among the old members) get the stop-sign decided, apply
//! it, and start the new configuration. Disjoint configurations are refused.

use concord_core::{Effect, NodeId, StateMachine};

use super::node::{MultiEffect, Phase};
use super::{Configuration, Entry, Message, MultiPaxos, PaxosError, Response, Slot};
use crate::Ballot;

impl<S: StateMachine + Default> MultiPaxos<S> {
    /// The configuration this node is in (as far as it has applied the log).
    pub fn configuration(&self) -> &Configuration {
        &self.configuration
    }

    /// Whether this node is a member of its configuration (not idle).
    pub fn is_member(&self) -> bool {
        self.configuration.contains(self.id)
    }

    /// The configuration a reconfiguration to `members` would install, if it can run.
    pub(super) fn next_configuration(
        &self,
        members: &[NodeId],
    ) -> Result<Configuration, PaxosError> {
        let next = Configuration::new(self.configuration.epoch + 1, members);
        let shares = next.members.iter().any(|&m| self.configuration.contains(m));
        let runs = self.config.quorums(next.members.len()).is_ok();
        if next.members.is_empty() || !shares || !runs {
            return Err(PaxosError::InvalidMembership {
                members: members.to_vec(),
            });
        }
        Ok(next)
    }

    /// The first adopted stop-sign into the next configuration, if any: the leader proposes
    /// nothing after it.
    pub(super) fn stop_sign_in<'a>(
        &self,
        entries: impl IntoIterator<Item = (Slot, &'a Entry<S::Command, S::Query>)>,
    ) -> Option<Slot>
    where
        S::Command: 'a,
        S::Query: 'a,
    {
        let next_epoch = self.configuration.epoch + 1;
        entries.into_iter().find_map(|(slot, entry)| match entry {
            Entry::StopSign(next) if next.epoch == next_epoch => Some(slot),
            _ => None,
        })
    }

    /// Applies a decided stop-sign at `slot`: answers its request and switches configuration.
    pub(super) fn apply_stop_sign(
        &mut self,
        slot: Slot,
        next: Configuration,
        effects: &mut Vec<MultiEffect<S>>,
    ) {
        if next.epoch != self.configuration.epoch + 1 {
            return; // a stale stop-sign, re-proposed in a later configuration: a no-op
        }
        if let Some(id) = self.pending.remove(&slot) {
            let response = Response::Reconfigured {
                slot,
                configuration: next.clone(),
            };
            effects.push(Effect::Reply { id, response });
        }
        if self.phase == Phase::Leader {
            self.announce_decided(effects);
        }
        self.adopt_configuration(next, slot, effects);
    }

    /// A leader about to step down for a new configuration tells its followers how far the log
    /// is decided (the stop-sign included), so they switch without another election.
    fn announce_decided(&mut self, effects: &mut Vec<MultiEffect<S>>) {
        let Some(ballot) = self.ballot else { return };
        for to in self.followers() {
            let prev = self.matched.get(&to).copied().unwrap_or(0);
            let message = Message::Accept {
                ballot,
                prev,
                entries: Vec::new(),
                decided: self.decided,
                read_round: self.reads.round,
            };
            Self::send(to, message, effects);
        }
    }

    /// Switches to `next`, which governs every slot after `slot`.
    pub(super) fn adopt_configuration(
        &mut self,
        next: Configuration,
        slot: Slot,
        effects: &mut Vec<MultiEffect<S>>,
    ) {
        if next.epoch <= self.configuration.epoch {
            return;
        }
        if self.phase != Phase::Follower {
            self.become_follower(effects);
        }
        // Entries after the stop-sign from an older epoch were never chosen.
        let floor = slot.max(self.decided);
        let epoch = next.epoch;
        let stale: Vec<Slot> = self
            .log
            .range(floor + 1..)
            .filter(|(_, accepted)| accepted.ballot.epoch < epoch)
            .map(|(slot, _)| *slot)
            .collect();
        for stale_slot in &stale {
            self.log.remove(stale_slot);
        }
        if let Some(&first) = stale.first() {
            self.prefix = self.prefix.min(first - 1).max(self.decided);
        }
        self.quorums = self
            .config
            .quorums(next.members.len())
            .unwrap_or_else(|_| super::Quorums::majority(next.members.len()));
        self.configuration = next;
        self.leader = None;
        self.election.restart(Ballot::in_epoch(epoch, 0, self.id));
    }
}
