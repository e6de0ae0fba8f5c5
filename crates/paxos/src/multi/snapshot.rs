//! Snapshots and log compaction ("Paxos Made Live" §5.5; the Raft crate's thesis §5.1 shape).
//!
//! * **Taking.** Once `Config::snapshot_threshold` slots were applied since the last snapshot,
//!   a node serializes its state machine ([`concord_core::StateMachine::snapshot`]) at its
//!   applied slot, persists it ([`Write::Snapshot`]) and drops the log entries it covers: they
//!   are decided, so no ballot can change them.
//! * **Catching up.** A leader whose follower needs a slot it has compacted sends its snapshot
//!   ([`Message::InstallSnapshot`]); the follower restores its state machine from it, persists
//!   it, and only then (the write is a barrier) acknowledges as for an `Accept`.
//! * **Phase 1.** An acceptor whose compaction point is at or above a candidate's first slot
//!   adds its snapshot to the promise, and sends only the entries above the compaction point.
//!   A candidate installs the newest snapshot offered before it adopts entries.
//! * **Restart.** A node restores its state machine from the persisted snapshot, then applies
//!   the decided entries after it.
//!
//! Entries covered by a snapshot are never reported by `Effect::Apply` on the node that
//! installs it (it never applies them one by one); the `SnapshotsAgree` checker compares the
//! snapshots themselves.

use concord_core::{NodeId, StateMachine, Time};

use super::node::{MultiEffect, Phase};
use super::{Message, MultiPaxos, Slot, Snapshot, Write};
use crate::Ballot;

/// Snapshots claiming slots beyond this are malformed and ignored (slot arithmetic stays far
/// from overflow).
const MAX_SNAPSHOT_SLOT: Slot = 1 << 62;

impl<S: StateMachine + Default> MultiPaxos<S> {
    /// Every slot up to here is covered by the snapshot and gone from the log.
    pub fn compacted(&self) -> Slot {
        self.compacted
    }

    /// The latest snapshot, if any.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// How many entries the log holds in memory.
    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// Takes a snapshot at the applied slot once enough slots were applied since the last.
    pub(super) fn maybe_take_snapshot(&mut self, effects: &mut Vec<MultiEffect<S>>) {
        if self.applied - self.compacted < self.config.snapshot_threshold {
            return;
        }
        let snapshot = Snapshot {
            slot: self.applied,
            configuration: self.configuration.clone(),
            data: self.state.snapshot(),
        };
        self.compact(snapshot, effects);
    }

    /// Replaces the log up to `snapshot.slot` with `snapshot` and persists it.
    fn compact(&mut self, snapshot: Snapshot, effects: &mut Vec<MultiEffect<S>>) {
        debug_assert!(snapshot.slot <= self.applied && snapshot.slot > self.compacted);
        self.log = self.log.split_off(&(snapshot.slot + 1));
        self.compacted = snapshot.slot;
        self.snapshot = Some(snapshot.clone());
        self.persist(Write::Snapshot(snapshot), effects);
    }

    /// Restores the state machine from a snapshot newer than the decided prefix. Returns false
    /// (changing nothing) if it is not newer or its bytes do not restore.
    pub(super) fn install_snapshot(
        &mut self,
        snapshot: Snapshot,
        effects: &mut Vec<MultiEffect<S>>,
    ) -> bool {
        if snapshot.slot <= self.decided || snapshot.slot > MAX_SNAPSHOT_SLOT {
            return false;
        }
        let mut state = S::default();
        if state.restore(&snapshot.data).is_err() {
            return false;
        }
        self.state = state;
        self.decided = snapshot.slot;
        self.applied = snapshot.slot;
        self.prefix = self.prefix.max(snapshot.slot);
        let (slot, configuration) = (snapshot.slot, snapshot.configuration.clone());
        self.compact(snapshot, effects);
        // A snapshot taken after a stop-sign carries the configuration it started.
        self.adopt_configuration(configuration, slot, effects);
        true
    }

    /// Phase 2a for a follower that needs compacted slots: the snapshot instead.
    pub(super) fn send_snapshot(&mut self, to: NodeId, effects: &mut Vec<MultiEffect<S>>) {
        let (Some(ballot), Some(snapshot)) = (self.ballot, self.snapshot.clone()) else {
            return;
        };
        self.next.insert(to, snapshot.slot + 1);
        let read_round = self.reads.round;
        let message = Message::InstallSnapshot {
            ballot,
            snapshot,
            read_round,
        };
        Self::send(to, message, effects);
    }

    /// A follower installs the leader's snapshot (if newer than what it decided) and answers
    /// as for an `Accept`, once the snapshot is durable.
    pub(super) fn on_install_snapshot(
        &mut self,
        now: Time,
        from: NodeId,
        ballot: Ballot,
        snapshot: Snapshot,
        read_round: u64,
        effects: &mut Vec<MultiEffect<S>>,
    ) {
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
        self.install_snapshot(snapshot, effects);
        let accepted = Message::Accepted {
            ballot,
            prefix: self.prefix,
            gap: false,
            read_round,
        };
        self.acknowledge(now, from, accepted, effects);
    }

    /// The snapshot a promise carries: the acceptor's, if the candidate needs compacted slots.
    pub(super) fn snapshot_for(&self, first_slot: Slot) -> Option<Snapshot> {
        self.snapshot
            .clone()
            .filter(|snapshot| first_slot <= snapshot.slot)
    }

    /// A candidate keeps the newest snapshot promises offered.
    pub(super) fn offer_snapshot(&mut self, snapshot: Option<Snapshot>) {
        if self.phase != Phase::Candidate {
            return;
        }
        if let Some(snapshot) = snapshot {
            let newer = self
                .offered
                .as_ref()
                .is_none_or(|known| known.slot < snapshot.slot);
            if newer {
                self.offered = Some(snapshot);
            }
        }
    }
}
