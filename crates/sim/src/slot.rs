//! One node's place in the simulator: the node (while up), its durable storage, its clock, its
//! write queue and the sends held behind unconfirmed writes.

use std::collections::VecDeque;

use concord_core::{Node, NodeId, PersistToken, RequestId, Rng, Time};

use crate::byzantine::{BuiltIn, ByzantineBehavior, Outgoing};
use crate::event::Event;

/// An event for node type `N`.
pub(crate) type NodeEvent<N> =
    Event<<N as Node>::Message, <N as Node>::Request, <N as Node>::Response>;

/// Integers below this (2^53) are exact in an `f64`.
const EXACT_IN_F64: Time = 1 << 53;

/// A node's clock: local time runs at `rate` local nanoseconds per simulated nanosecond.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Clock {
    rate: f64,
    local_base: Time,
    global_base: Time,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            rate: 1.0,
            local_base: 0,
            global_base: 0,
        }
    }
}

impl Clock {
    /// The node's local time at simulated time `global`.
    pub(crate) fn local(&self, global: Time) -> Time {
        let elapsed = global.saturating_sub(self.global_base);
        if self.exact(elapsed) {
            return self.local_base + elapsed;
        }
        self.local_base + (elapsed as f64 * self.rate) as Time
    }

    /// Whether `span` nanoseconds convert at rate 1 with plain integer arithmetic: the float
    /// formula gives exactly the same result (`span` is representable, and multiplying or
    /// dividing by 1.0 and rounding changes nothing), only slower.
    fn exact(&self, span: Time) -> bool {
        self.rate == 1.0 && span < EXACT_IN_F64
    }

    /// The earliest simulated time at which local time reaches `local`.
    pub(crate) fn global_of(&self, local: Time) -> Time {
        if local <= self.local_base {
            return self.global_base;
        }
        let span = local - self.local_base;
        if self.exact(span) {
            return self.global_base.saturating_add(span);
        }
        let elapsed = (span as f64 / self.rate).ceil();
        self.global_base
            .saturating_add(elapsed.min(u64::MAX as f64 / 2.0) as Time)
    }

    /// The clock's rate.
    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    /// Changes the rate from simulated time `now` on; local time stays continuous.
    pub(crate) fn set_rate(&mut self, now: Time, rate: f64) {
        self.local_base = self.local(now);
        self.global_base = now;
        self.rate = rate;
    }
}

/// What rewrites a Byzantine node's messages: a built-in behaviour or the user's own.
pub(crate) enum Rewriter<N: Node> {
    BuiltIn(BuiltIn<N::Message>),
    Custom(Box<dyn ByzantineBehavior<N>>),
}

impl<N: Node> Rewriter<N> {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Rewriter::BuiltIn(b) => ByzantineBehavior::<N>::name(b),
            Rewriter::Custom(c) => c.name(),
        }
    }

    pub(crate) fn on_send(
        &mut self,
        from: NodeId,
        to: NodeId,
        message: N::Message,
        nodes: usize,
        rng: &mut Rng,
    ) -> Vec<Outgoing<N::Message>> {
        match self {
            Rewriter::BuiltIn(b) => {
                ByzantineBehavior::<N>::on_send(b, from, to, message, nodes, rng)
            }
            Rewriter::Custom(c) => c.on_send(from, to, message, nodes, rng),
        }
    }
}

/// An effect waiting for earlier writes to become durable.
#[derive(Clone, Debug)]
pub(crate) enum Held<M, O> {
    Send { to: NodeId, message: M },
    Reply { id: RequestId, response: O },
}

/// A held effect of node type `N`.
pub(crate) type HeldEffect<N> = Held<<N as Node>::Message, <N as Node>::Response>;

/// A write handed to the disk and not yet durable.
#[derive(Clone, Debug)]
pub(crate) struct InFlightWrite<W> {
    pub sequence: u64,
    pub token: PersistToken,
    pub write: W,
}

/// Confirmed checkpoint writes ([`Node::is_checkpoint`]) not yet settled: a crash now loses
/// them, as a real runtime loses a checkpoint whose log compaction is not in place yet.
pub(crate) struct Unsettled<N: Node> {
    /// The storage before the oldest of them.
    pub before: N::Storage,
    /// Every other write confirmed since, in order.
    pub since: Vec<N::Write>,
    /// They settle once the write with this sequence number is durable.
    pub settle_at: u64,
}

pub(crate) struct Slot<N: Node> {
    /// The running incarnation; `None` while crashed.
    pub node: Option<N>,
    /// What every confirmed write adds up to.
    pub storage: N::Storage,
    /// Bumped by every crash; events of older incarnations are discarded.
    pub incarnation: u64,
    pub paused: bool,
    /// Events that arrived while paused, in arrival order.
    pub parked: Vec<NodeEvent<N>>,
    pub clock: Clock,
    pub rng: Rng,
    /// Bumped whenever the pending timer event is superseded.
    pub timer_generation: u64,
    /// When the pending timer event fires (simulated time).
    pub timer_at: Option<Time>,
    /// Writes not yet durable, in emission order.
    pub writes: VecDeque<InFlightWrite<N::Write>>,
    /// When the last queued write completes (writes complete in order).
    pub disk_tail: Time,
    /// Sequence number of the last write emitted by this incarnation.
    pub emitted: u64,
    /// Sequence number of the last barrier write ([`Node::is_barrier`]) emitted by this
    /// incarnation: later sends and replies wait until it is durable.
    pub barrier: u64,
    /// Sequence number of the last durable write of this incarnation.
    pub durable: u64,
    /// Sends and replies behind unconfirmed writes: `(barrier, effect)`, barriers ascending.
    pub held: VecDeque<(u64, HeldEffect<N>)>,
    pub byzantine: Option<Rewriter<N>>,
    /// Confirmed checkpoints a crash would still lose.
    pub unsettled: Option<Unsettled<N>>,
}

impl<N: Node> std::fmt::Debug for Slot<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("up", &self.node.is_some())
            .field("incarnation", &self.incarnation)
            .field("paused", &self.paused)
            .field("writes", &self.writes.len())
            .field("held", &self.held.len())
            .finish()
    }
}

impl<N: Node> Slot<N> {
    pub(crate) fn new(rng: Rng) -> Self {
        Slot {
            node: None,
            storage: N::Storage::default(),
            incarnation: 0,
            paused: false,
            parked: Vec::new(),
            clock: Clock::default(),
            rng,
            timer_generation: 0,
            timer_at: None,
            writes: VecDeque::new(),
            disk_tail: 0,
            emitted: 0,
            barrier: 0,
            durable: 0,
            held: VecDeque::new(),
            byzantine: None,
            unsettled: None,
        }
    }

    /// Makes confirmed write `write` (sequence number `sequence`) durable: folds it into the
    /// storage, and keeps what a crash before its checkpoints settle must restore.
    pub(crate) fn store(&mut self, sequence: u64, write: &N::Write) {
        if N::is_checkpoint(write) {
            // Settles after 1 to 16 more writes, a fixed pseudo-random number per checkpoint
            // (drawing from a generator would shift every later draw of the run).
            let mut seed = self.incarnation.to_le_bytes().to_vec();
            seed.extend_from_slice(&sequence.to_le_bytes());
            let settle_at = sequence + 1 + concord_core::digest(&seed) % 16;
            match &mut self.unsettled {
                Some(unsettled) => unsettled.settle_at = settle_at,
                None => {
                    self.unsettled = Some(Unsettled {
                        before: self.storage.clone(),
                        since: Vec::new(),
                        settle_at,
                    })
                }
            }
        } else if let Some(unsettled) = &mut self.unsettled {
            if sequence >= unsettled.settle_at {
                self.unsettled = None;
            } else {
                unsettled.since.push(write.clone());
            }
        }
        N::apply_write(&mut self.storage, write);
    }

    /// Forgets everything volatile: the node, queued writes, held sends, parked events, and
    /// unsettled checkpoints. Returns how many writes were lost, and whether checkpoints were.
    pub(crate) fn crash(&mut self, now: Time) -> (usize, bool) {
        let lost = self.writes.len();
        let lost_checkpoints = self.unsettled.is_some();
        if let Some(unsettled) = self.unsettled.take() {
            self.storage = unsettled.before;
            for write in &unsettled.since {
                N::apply_write(&mut self.storage, write);
            }
        }
        self.node = None;
        self.incarnation += 1;
        self.paused = false;
        self.parked.clear();
        self.timer_generation += 1;
        self.timer_at = None;
        self.writes.clear();
        self.disk_tail = now;
        self.emitted = 0;
        self.barrier = 0;
        self.durable = 0;
        self.held.clear();
        (lost, lost_checkpoints)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drifting_clock_stays_continuous() {
        let mut clock = Clock::default();
        assert_eq!(clock.local(1_000), 1_000);
        clock.set_rate(1_000, 2.0);
        assert_eq!(clock.local(1_500), 2_000);
        assert_eq!(clock.global_of(3_000), 2_000);
        assert!(clock.local(clock.global_of(2_345)) >= 2_345);
    }
}
