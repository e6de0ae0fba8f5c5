//! Multi-Paxos with a stable leader (van Renesse and Altinbuken, "Paxos Made Moderately
//! Complex", 2015, "PMMC"; Lamport, "Paxos Made Simple" §3).
//!
//! [`MultiPaxos`] replicates a log of [`concord_core::StateMachine`] commands. Every node is an
//! acceptor and a learner; one at a time acts as the distinguished proposer (the leader):
//!
//! 1. Ballot leader election (OmniPaxos's BLE, see the `election` module) picks the node that
//!    campaigns: only a quorum-connected node, only when no live leader is heard of, and the
//!    highest ballot among the quorum-connected ones. It runs phase 1 **once for all slots**
//!    above its decided prefix ([`Message::Prepare`]). Acceptors promise and report every
//!    proposal they accepted in those slots ([`Message::Promise`]).
//! 2. With a quorum of promises the new leader adopts, per slot, the value of the
//!    highest-ballot proposal reported (PMMC's `pmax`), fills holes with no-ops, and re-proposes
//!    all of them at its own ballot.
//! 3. It then streams phase 2: [`Message::Accept`] carries consecutive slots (pipelined, with
//!    no wait between batches) and the leader's decided prefix; empty ones are heartbeats.
//!    Followers persist accepted entries before acknowledging ([`Message::Accepted`]).
//! 4. A slot is decided once a quorum holds it at the leader's ballot (the leader counts its
//!    own entries only once durable). Decided entries are applied in slot order; client
//!    requests are answered when applied.
//! 5. Reads ([`Request::Read`]) skip the log by default: the leader confirms with a quorum
//!    round of `Accept`s that its ballot still leads, then answers from its state machine once
//!    it has applied its read index (`read` module; [`ReadMode`]). They can also go through the
//!    log as [`Entry::Read`], or be served under a leader lease.
//!
//! | message | from → to | meaning |
//! |---|---|---|
//! | [`Message::Prepare`] | candidate → all | phase 1a for every slot from `first_slot` on |
//! | [`Message::Promise`] | acceptor → candidate | phase 1b: the promise and the accepted proposals from `first_slot` |
//! | [`Message::Accept`] | leader → follower | phase 2a for consecutive slots, plus the decided prefix and the read round; a heartbeat when empty |
//! | [`Message::Accepted`] | follower → leader | phase 2b: every slot up to `prefix` is held at `ballot` (or decided); echoes the read round |
//! | [`Message::InstallSnapshot`] | leader → follower | catch-up past the leader's compaction point |
//! | [`Message::Rejected`] | acceptor → proposer | preemption: a higher ballot was promised |
//! | [`Message::HeartbeatRequest`] | any → all | leader election: one per heartbeat round |
//! | [`Message::HeartbeatReply`] | peer → asker | the peer's ballot, quorum connectivity and the leader it heard |
//!
//! An acceptor's entry at the leader's ballot `b` for a slot at or below the leader's decided
//! prefix is the chosen value (a leader proposes one value per slot per ballot, and re-proposes
//! chosen values unchanged), which is how followers learn decisions without extra messages.
//!
//! Around that core: flexible quorums (`config`), snapshots and log compaction (`snapshot`),
//! reconfiguration through the log with a stop-sign ([`Entry::StopSign`],
//! `reconfiguration`), and reads without log writes (`read`).
//!
//! Safety is checked by the [`invariants`]: at most one value per slot is chosen (PMMC
//! invariant: "for any ballot and slot at most one proposal"; Paxos Made Simple P2), decided
//! prefixes only grow, no two nodes apply different commands at one slot, and snapshots of one
//! slot agree.

mod acceptor;
mod checks;
mod config;
mod election;
#[cfg(test)]
mod election_tests;
pub mod invariants;
mod kv;
mod leader;
mod node;
mod read;
#[cfg(test)]
mod read_tests;
mod reconfiguration;
#[cfg(test)]
mod reconfiguration_tests;
mod snapshot;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use concord_core::NodeId;

use crate::Ballot;

pub use config::{Config, ConfigError, Quorums, ReadMode};
pub use invariants::invariants;
pub use node::MultiPaxos;

/// A log slot (1-based; 0 means "none").
pub type Slot = u64;

/// What a slot holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry<C, Q> {
    /// A hole filled by a new leader.
    Noop,
    /// A state-machine command.
    Command(C),
    /// A read ordered through the log.
    Read(Q),
    /// A stop-sign: the last slot of the current configuration; every later slot belongs to
    /// `Configuration` (OmniPaxos's stop-sign, Vertical Paxos's configuration change).
    StopSign(Configuration),
}

/// Who the members are, numbered by epoch (ballots of a later epoch outrank every ballot of an
/// earlier one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configuration {
    /// The configuration's number: 0 for the first, one more for each stop-sign applied.
    pub epoch: u64,
    /// The members (acceptors, learners, possible leaders), sorted, without duplicates.
    pub members: Vec<NodeId>,
}

impl Configuration {
    /// Configuration `epoch` of `members` (sorted and deduplicated here).
    pub fn new(epoch: u64, members: &[NodeId]) -> Self {
        let mut members = members.to_vec();
        members.sort_unstable();
        members.dedup();
        Configuration { epoch, members }
    }

    /// Whether `node` is a member.
    pub fn contains(&self, node: NodeId) -> bool {
        self.members.binary_search(&node).is_ok()
    }
}

/// An entry accepted at a ballot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted<C, Q> {
    /// The ballot it was accepted at.
    pub ballot: Ballot,
    /// The entry.
    pub entry: Entry<C, Q>,
}

/// Messages between Multi-Paxos nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<C, Q> {
    /// Phase 1a for every slot from `first_slot` on.
    Prepare {
        /// The candidate's ballot.
        ballot: Ballot,
        /// The first slot the candidate does not know decided.
        first_slot: Slot,
    },
    /// Phase 1b.
    Promise {
        /// The ballot promised.
        ballot: Ballot,
        /// The acceptor's snapshot, when the candidate's `first_slot` is at or below the
        /// acceptor's compaction point (the slots it needs are no longer in the log).
        snapshot: Option<Snapshot>,
        /// Every proposal accepted at `first_slot` or above that is still in the log (above the
        /// compaction point): at most `Config::snapshot_threshold` decided entries plus the
        /// undecided tail.
        accepted: Vec<(Slot, Accepted<C, Q>)>,
    },
    /// Phase 2a for the consecutive slots `prev + 1 ..`; a heartbeat when empty.
    Accept {
        /// The leader's ballot.
        ballot: Ballot,
        /// The slot before the first entry.
        prev: Slot,
        /// The entries, in slot order.
        entries: Vec<Entry<C, Q>>,
        /// The leader's decided prefix.
        decided: Slot,
        /// The leader's read round when it sent this (the follower echoes it).
        read_round: u64,
    },
    /// Phase 2b.
    Accepted {
        /// The ballot accepted.
        ballot: Ballot,
        /// Every slot up to here is held at `ballot` or decided.
        prefix: Slot,
        /// The entries received did not follow on from `prefix`: send from `prefix + 1`.
        gap: bool,
        /// The read round of the `Accept` (or `InstallSnapshot`) answered: the follower held
        /// `ballot` after that round began.
        read_round: u64,
    },
    /// Catch-up for a follower whose next slot the leader has compacted: the leader's snapshot
    /// (every slot up to `snapshot.slot` is decided).
    InstallSnapshot {
        /// The leader's ballot.
        ballot: Ballot,
        /// The snapshot.
        snapshot: Snapshot,
        /// The leader's read round when it sent this (the follower echoes it).
        read_round: u64,
    },
    /// The acceptor promised a higher ballot.
    Rejected {
        /// The ballot refused.
        ballot: Ballot,
        /// The acceptor's promise.
        promised: Ballot,
    },
    /// Ballot leader election: "who are you following?", once per heartbeat round.
    HeartbeatRequest {
        /// The asker's round; the reply echoes it.
        round: u64,
    },
    /// Ballot leader election: the answer to a [`Message::HeartbeatRequest`].
    HeartbeatReply {
        /// The round asked about.
        round: u64,
        /// The ballot the replier stands with (its candidacy).
        ballot: Ballot,
        /// Whether the replier heard a quorum (itself included) in its last round.
        quorum_connected: bool,
        /// The leader the replier heard directly, alive and quorum-connected, in its last
        /// round (itself, if it leads).
        follows: Option<Ballot>,
    },
}

/// A client request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<C, Q> {
    /// Replicate and apply a command.
    Propose(C),
    /// A linearizable read (served as [`Config::read_mode`] says).
    Read(Q),
    /// Change the members to these (a stop-sign through the log). The new configuration must
    /// share at least one member with the current one.
    Reconfigure(Vec<NodeId>),
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaxosError {
    /// This node does not lead; `leader` is a hint.
    NotLeader {
        /// The leader this node believes in.
        leader: Option<NodeId>,
    },
    /// Leadership was lost after the request took slot `slot`: it may or may not be applied.
    OutcomeUnknown {
        /// The slot it took.
        slot: Slot,
    },
    /// Too many requests are waiting.
    Overloaded,
    /// The leader has proposed a stop-sign: the configuration takes no more requests; ask the
    /// next configuration's leader.
    Reconfiguring,
    /// The requested members cannot form a configuration: none, none shared with the current
    /// configuration, or too few for the configured quorum sizes.
    InvalidMembership {
        /// The members requested.
        members: Vec<NodeId>,
    },
}

/// A reply to a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response<O> {
    /// The request was applied at `slot`.
    Applied {
        /// Its slot.
        slot: Slot,
        /// The state machine's output.
        output: O,
    },
    /// A read was served from the state machine with at least every slot up to `slot` (its
    /// read index) applied, without a slot of its own (`ReadMode::ReadIndex` or `Lease`).
    Read {
        /// Its read index.
        slot: Slot,
        /// The state machine's answer.
        output: O,
    },
    /// A reconfiguration was applied at `slot`: `configuration` governs every later slot.
    Reconfigured {
        /// The stop-sign's slot.
        slot: Slot,
        /// The new configuration.
        configuration: Configuration,
    },
    /// The request failed.
    Failed(PaxosError),
}

/// The state machine after applying every slot up to `slot` (Lamport, "Paxos Made Simple" §3
/// and "Paxos Made Live" §5.5: a replica's snapshot replaces the log prefix it covers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The last slot it covers.
    pub slot: Slot,
    /// The configuration in effect after `slot`.
    pub configuration: Configuration,
    /// The state machine's serialized state (`StateMachine::snapshot`).
    pub data: Vec<u8>,
}

/// A durable mutation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write<C, Q> {
    /// Promise a ballot.
    Promise(Ballot),
    /// Accept consecutive entries from `first` at `ballot` (implies promising it).
    Accept {
        /// The ballot.
        ballot: Ballot,
        /// The first slot.
        first: Slot,
        /// The entries.
        entries: Vec<Entry<C, Q>>,
    },
    /// Every slot up to here is decided (no barrier: nothing sent depends on it).
    Decided(Slot),
    /// Store a snapshot and drop the log entries it covers (they are decided).
    Snapshot(Snapshot),
}

/// The durable state of an acceptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage<C, Q> {
    /// The highest ballot promised.
    pub promised: Option<Ballot>,
    /// The latest snapshot; the log holds only slots above it.
    pub snapshot: Option<Snapshot>,
    /// The accepted entries by slot, above the snapshot.
    pub log: BTreeMap<Slot, Accepted<C, Q>>,
    /// The decided prefix (at least the snapshot's slot).
    pub decided: Slot,
}

impl<C, Q> Default for Storage<C, Q> {
    fn default() -> Self {
        Storage {
            promised: None,
            snapshot: None,
            log: BTreeMap::new(),
            decided: 0,
        }
    }
}

impl<C, Q> Storage<C, Q> {
    /// The slot the snapshot covers up to (0 without one).
    pub fn compacted(&self) -> Slot {
        self.snapshot.as_ref().map_or(0, |s| s.slot)
    }
}

impl<C: Clone, Q: Clone> Storage<C, Q> {
    /// Adds one confirmed write.
    pub fn apply(&mut self, write: &Write<C, Q>) {
        match write {
            Write::Promise(ballot) => self.promised = self.promised.max(Some(*ballot)),
            Write::Accept {
                ballot,
                first,
                entries,
            } => {
                self.promised = self.promised.max(Some(*ballot));
                let compacted = self.compacted();
                for (slot, entry) in (*first..).zip(entries) {
                    if slot <= compacted {
                        continue;
                    }
                    self.log.insert(
                        slot,
                        Accepted {
                            ballot: *ballot,
                            entry: entry.clone(),
                        },
                    );
                }
            }
            Write::Decided(slot) => self.decided = self.decided.max(*slot),
            Write::Snapshot(snapshot) => {
                if snapshot.slot > self.compacted() {
                    self.log = self.log.split_off(&(snapshot.slot + 1));
                    self.decided = self.decided.max(snapshot.slot);
                    self.snapshot = Some(snapshot.clone());
                }
            }
        }
    }
}
