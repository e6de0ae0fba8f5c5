//! The acceptor's side of Multi-Paxos ("Paxos Made Simple" §2.2; PMMC's acceptor): promising
//! a ballot with every proposal accepted from the candidate's first slot (phase 1b), and
//! accepting a leader's consecutive entries, persisted before they are acknowledged (phase 2b),
//! learning the leader's decided prefix on the way.

use concord_core::{NodeId, StateMachine, Time};

use super::node::{Cmd, MultiEffect, Qry, SlotEntries};
use super::{Accepted, Message, MultiPaxos, Slot, Write};
use crate::Ballot;

impl<S: StateMachine + Default> MultiPaxos<S> {
    /// Every proposal accepted at `first_slot` or above (still in the log).
    pub(super) fn accepted_from(&self, first_slot: Slot) -> SlotEntries<S> {
        self.log
            .range(first_slot..)
            .map(|(slot, accepted)| (*slot, accepted.clone()))
            .collect()
    }

    /// Phase 1a at an acceptor: promise `ballot` and report what was accepted, or refuse.
    pub(super) fn on_prepare(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        first_slot: Slot,
        effects: &mut Vec<MultiEffect<S>>,
    ) {
        if ballot.node != from {
            return;
        }
        if self.promise(ballot, effects) {
            self.leader = None;
            let first_slot = first_slot.max(1);
            let snapshot = self.snapshot_for(first_slot);
            let accepted = self.accepted_from(first_slot);
            let promise = Message::Promise {
                ballot,
                snapshot,
                accepted,
            };
            Self::send(from, promise, effects);
        } else if let Some(promised) = self.promised {
            Self::send(from, Message::Rejected { ballot, promised }, effects);
        }
    }

    /// Phase 2a at a follower (`accept` is a [`Message::Accept`]).
    pub(super) fn on_accept(
        &mut self,
        now: Time,
        from: NodeId,
        accept: Message<Cmd<S>, Qry<S>>,
        effects: &mut Vec<MultiEffect<S>>,
    ) {
        let Message::Accept {
            ballot,
            prev,
            entries,
            decided: leader_decided,
            read_round,
        } = accept
        else {
            return;
        };
        if ballot.node != from || self.ballot == Some(ballot) {
            return;
        }
        if !self.promise(ballot, effects) {
            if let Some(promised) = self.promised {
                Self::send(from, Message::Rejected { ballot, promised }, effects);
            }
            return;
        }
        self.leader = Some(from);
        let gap = prev > self.prefix;
        if !gap && !entries.is_empty() {
            let end = prev.saturating_add(entries.len() as u64);
            // Skip what is decided (possibly compacted) or already held at this ballot (a
            // retransmission).
            let skip = (prev + 1..=end)
                .take_while(|slot| {
                    *slot <= self.decided || self.log.get(slot).is_some_and(|a| a.ballot == ballot)
                })
                .count();
            let first = prev + 1 + skip as u64;
            let fresh: Vec<_> = entries.into_iter().skip(skip).collect();
            if !fresh.is_empty() {
                for (slot, entry) in (first..).zip(&fresh) {
                    self.log.insert(
                        slot,
                        Accepted {
                            ballot,
                            entry: entry.clone(),
                        },
                    );
                }
                self.persist(
                    Write::Accept {
                        ballot,
                        first,
                        entries: fresh,
                    },
                    effects,
                );
            }
            self.prefix = self.prefix.max(end);
        }
        let learned = leader_decided.min(self.prefix);
        self.advance_decided(learned, effects);
        let accepted = Message::Accepted {
            ballot,
            prefix: self.prefix,
            gap,
            read_round,
        };
        self.acknowledge(now, from, accepted, effects);
    }
}
