//! The leader's side of Multi-Paxos: taking over after phase 1 (PMMC's `pmax` adoption),
//! streaming phase 2 to each follower, taking client requests into slots, and counting
//! acknowledgements into the decided prefix.

use std::collections::BTreeMap;

use concord_core::{Effect, Env, NodeId, RequestId, StateMachine};

use super::node::{Cmd, MultiEffect, Phase, Qry};
use super::{Accepted, Entry, Message, MultiPaxos, PaxosError, Response, Slot, Write};
use crate::Ballot;

/// The most slots above its decided prefix a new leader adopts from promises (a bound against
/// malformed promises naming absurd slots).
const MAX_ADOPTED_SPAN: Slot = 1 << 20;

impl<S: StateMachine + Default> MultiPaxos<S> {
    /// Phase 1 done: adopt the highest-ballot proposal of every slot (PMMC `pmax`), fill holes
    /// with no-ops and re-propose everything above the decided prefix at the new ballot.
    pub(super) fn become_leader(&mut self, env: &mut Env<'_>, effects: &mut Vec<MultiEffect<S>>) {
        let Some(ballot) = self.ballot else { return };
        if let Some(snapshot) = self.offered.take() {
            self.install_snapshot(snapshot, effects);
            if self.phase != Phase::Candidate {
                return; // the snapshot moved this node into a later configuration
            }
        }
        let first = self.decided + 1;
        let mut adopted: BTreeMap<Slot, Accepted<Cmd<S>, Qry<S>>> = BTreeMap::new();
        for (slot, accepted) in self.promises.values().flatten() {
            if *slot < first || *slot - first >= MAX_ADOPTED_SPAN {
                continue;
            }
            let better = adopted
                .get(slot)
                .is_none_or(|known| known.ballot < accepted.ballot);
            if better {
                adopted.insert(*slot, accepted.clone());
            }
        }
        // A stop-sign ends this configuration: nothing after it may be proposed here.
        self.stopped = self.stop_sign_in(adopted.iter().map(|(slot, a)| (*slot, &a.entry)));
        if let Some(stop) = self.stopped {
            adopted.retain(|&slot, _| slot <= stop);
        }
        let last = adopted.keys().next_back().copied().unwrap_or(self.decided);
        let entries: Vec<Entry<Cmd<S>, Qry<S>>> = (first..=last)
            .map(|slot| adopted.remove(&slot).map_or(Entry::Noop, |a| a.entry))
            .collect();
        for (slot, entry) in (first..).zip(&entries) {
            self.log.insert(
                slot,
                Accepted {
                    ballot,
                    entry: entry.clone(),
                },
            );
        }
        self.phase = Phase::Leader;
        self.leader = Some(self.id);
        self.promises.clear();
        self.last = last;
        self.durable_match = self.decided;
        self.prefix = last;
        if !entries.is_empty() {
            self.persist(
                Write::Accept {
                    ballot,
                    first,
                    entries,
                },
                effects,
            );
        }
        self.matched.clear();
        self.next.clear();
        self.acked.clear();
        self.lead_reads(env.now, last);
        self.heartbeat_deadline = env.now.saturating_add(self.config.heartbeat_interval);
        for to in self.followers() {
            self.matched.insert(to, 0);
            self.next.insert(to, first);
            self.send_entries(to, true, effects);
        }
    }

    /// Sends every follower the entries it has not been sent, or an empty heartbeat, in a new
    /// read round.
    pub(super) fn heartbeat(&mut self, env: &mut Env<'_>, effects: &mut Vec<MultiEffect<S>>) {
        self.heartbeat_deadline = env.now.saturating_add(self.config.heartbeat_interval);
        self.begin_read_round(env.now);
        for to in self.followers() {
            let matched = self.matched.get(&to).copied().unwrap_or(0);
            // A follower not heard from yet is probed above the compaction point; it answers
            // with its prefix, and gets the snapshot only if it needs it.
            let floor = if self.acked.contains(&to) {
                0
            } else {
                self.compacted + 1
            };
            self.next.insert(to, (matched + 1).max(floor));
            self.send_entries(to, true, effects);
        }
    }

    /// Phase 2a to one follower: up to `max_batch` consecutive slots from its `next`.
    pub(super) fn send_entries(
        &mut self,
        to: NodeId,
        even_if_empty: bool,
        effects: &mut Vec<MultiEffect<S>>,
    ) {
        let Some(ballot) = self.ballot else { return };
        let next = self.next.get(&to).copied().unwrap_or(self.last + 1).max(1);
        if next <= self.compacted {
            self.send_snapshot(to, effects);
            return;
        }
        let mut entries = Vec::new();
        let mut slot = next;
        while slot <= self.last && entries.len() < self.config.max_batch {
            let Some(accepted) = self.log.get(&slot) else {
                break;
            };
            entries.push(accepted.entry.clone());
            slot += 1;
        }
        if entries.is_empty() && !even_if_empty {
            return;
        }
        self.next.insert(to, slot);
        let message = Message::Accept {
            ballot,
            prev: next - 1,
            entries,
            decided: self.decided,
            read_round: self.reads.round,
        };
        Self::send(to, message, effects);
    }

    pub(super) fn on_request(
        &mut self,
        id: RequestId,
        entry: Entry<Cmd<S>, Qry<S>>,
        effects: &mut Vec<MultiEffect<S>>,
    ) {
        let Some(ballot) = self.ballot.filter(|_| self.phase == Phase::Leader) else {
            self.refuse_not_leader(id, effects);
            return;
        };
        let refusal = if self.stopped.is_some() {
            Some(PaxosError::Reconfiguring)
        } else if self.pending.len() >= self.config.max_pending {
            Some(PaxosError::Overloaded)
        } else {
            None
        };
        if let Some(error) = refusal {
            let response = Response::Failed(error);
            effects.push(Effect::Reply { id, response });
            return;
        }
        let slot = self.last + 1;
        if matches!(entry, Entry::StopSign(_)) {
            self.stopped = Some(slot);
        }
        self.last = slot;
        self.prefix = slot;
        self.log.insert(
            slot,
            Accepted {
                ballot,
                entry: entry.clone(),
            },
        );
        self.pending.insert(slot, id);
        self.persist(
            Write::Accept {
                ballot,
                first: slot,
                entries: vec![entry],
            },
            effects,
        );
        for to in self.followers() {
            if self.next.get(&to) == Some(&slot) {
                self.send_entries(to, false, effects);
            }
        }
    }

    /// Answers a request this node cannot take: not the leader, and who is, as far as it knows.
    pub(super) fn refuse_not_leader(&self, id: RequestId, effects: &mut Vec<MultiEffect<S>>) {
        let leader = self.leader.or(self.elected().map(|b| b.node));
        effects.push(Effect::Reply {
            id,
            response: Response::Failed(PaxosError::NotLeader { leader }),
        });
    }

    /// Phase 2b at the leader; returns whether it counted (from a follower, at its ballot).
    pub(super) fn on_accepted(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        prefix: Slot,
        gap: bool,
        effects: &mut Vec<MultiEffect<S>>,
    ) -> bool {
        if self.phase != Phase::Leader || self.ballot != Some(ballot) {
            return false;
        }
        let Some(matched) = self.matched.get_mut(&from) else {
            return false;
        };
        self.acked.insert(from);
        let prefix = prefix.min(self.last);
        *matched = (*matched).max(prefix);
        if gap {
            self.next.insert(from, prefix + 1);
        }
        self.send_entries(from, false, effects);
        self.leader_advance(effects);
        true
    }

    /// The leader's decided prefix: the highest slot a quorum holds durably at its ballot.
    pub(super) fn leader_advance(&mut self, effects: &mut Vec<MultiEffect<S>>) {
        let mut matches: Vec<Slot> = self.matched.values().copied().collect();
        matches.push(self.durable_match);
        matches.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(&slot) = matches.get(self.phase2_quorum() - 1) {
            self.advance_decided(slot.min(self.last), effects);
        }
    }
}
