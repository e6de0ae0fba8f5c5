//! A Multi-Paxos node's local invariants, checked after every step (`Node::check_invariants`):
//! the learner's order `compacted <= applied <= decided`, the log's shape around the compaction
//! point, the durable promise never ahead of memory, a leader's ballot being its promise and
//! never proposing after its stop-sign, a configuration its quorums can run, and reads and
//! leases held only by a leader.

use concord_core::{StateMachine, Violation};

use super::node::Phase;
use super::MultiPaxos;

impl<S: StateMachine + Default> MultiPaxos<S> {
    /// The node's local invariants (`Node::check_invariants`).
    pub(super) fn check_state(&self) -> Result<(), Violation> {
        let fail = |detail: String| Err(Violation::on_node("multi-paxos-state", self.id, detail));
        let members = self.configuration.members.len();
        if let Err(error) = self.config.validate(members) {
            return fail(format!("invalid configuration: {error}"));
        }
        if let Err(error) = self.config.quorums(members) {
            return fail(format!(
                "configuration {}: {error}",
                self.configuration.epoch
            ));
        }
        if self.phase != Phase::Follower && !self.is_member() {
            return fail("leads or campaigns without being a member".into());
        }
        if let Some(stop) = self.stopped {
            if self.last > stop {
                return fail(format!(
                    "proposed slot {} after its stop-sign at {stop}",
                    self.last
                ));
            }
        }
        if !(self.compacted <= self.applied && self.applied <= self.decided) {
            return fail(format!(
                "expected compacted {} <= applied {} <= decided {}",
                self.compacted, self.applied, self.decided
            ));
        }
        if self.decided > self.compacted && !self.log.contains_key(&self.decided) {
            return fail(format!(
                "decided slot {} missing from the log",
                self.decided
            ));
        }
        if let Some(&first) = self.log.keys().next() {
            if first <= self.compacted {
                return fail(format!(
                    "slot {first} is still in the log below the compaction point {}",
                    self.compacted
                ));
            }
        }
        if self.snapshot.as_ref().map_or(0, |s| s.slot) != self.compacted {
            return fail(format!(
                "the snapshot does not end at the compaction point {}",
                self.compacted
            ));
        }
        if self.durable.promised > self.promised {
            return fail("durable promise above the promise in memory".into());
        }
        if self.phase != Phase::Follower && self.ballot != self.promised {
            return fail(format!(
                "own ballot {:?} is not the promise {:?}",
                self.ballot, self.promised
            ));
        }
        if self.phase != Phase::Leader && (self.reads.held() > 0 || self.reads.has_lease()) {
            return fail(format!(
                "holds {} reads or a lease without leading",
                self.reads.held()
            ));
        }
        if self.reads.acked_beyond_round() {
            return fail(format!(
                "a follower echoed a read round above the current one, {}",
                self.reads.round
            ));
        }
        if self.phase == Phase::Leader && self.decided > self.last {
            return fail(format!(
                "leader decided {} beyond its last slot {}",
                self.decided, self.last
            ));
        }
        Ok(())
    }
}
