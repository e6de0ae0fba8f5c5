//! The simulator's event queue: a min-heap keyed by `(time, sequence number)`.
//!
//! Two events at the same virtual time run in the order they were scheduled, so one seed always
//! gives the same interleaving.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use concord_core::{NodeId, RequestId, Time};

/// One scheduled happening. `M`, `Q` and `O` are the node's message, request and response types.
#[derive(Clone, Debug)]
pub(crate) enum Event<M, Q, O> {
    /// A message reaches `to`.
    Deliver {
        /// The sender the receiver is told about (a Byzantine sender may forge it).
        claimed_from: NodeId,
        /// The node that really sent it.
        sender: NodeId,
        /// The sender's incarnation when it sent the message.
        sender_incarnation: u64,
        /// The receiver.
        to: NodeId,
        /// The receiver's incarnation when the message was sent.
        to_incarnation: u64,
        /// The message.
        message: M,
    },
    /// A node's timer fires.
    Timer {
        node: NodeId,
        incarnation: u64,
        generation: u64,
    },
    /// The oldest outstanding write of `node` becomes durable.
    PersistDone {
        node: NodeId,
        incarnation: u64,
        sequence: u64,
    },
    /// `node` learns that its connection to `peer` broke (`peer` crashed).
    PeerLost {
        node: NodeId,
        incarnation: u64,
        peer: NodeId,
    },
    /// A client request from a client at `home` reaches `node`.
    RequestArrive {
        home: NodeId,
        node: NodeId,
        id: RequestId,
        request: Q,
    },
    /// A node's reply reaches its client at `home`.
    ResponseArrive {
        home: NodeId,
        id: RequestId,
        from: NodeId,
        response: O,
    },
    /// A client gives up waiting for request `id`.
    RequestTimeout { id: RequestId },
    /// A client is ready to issue its next operation.
    ClientWake { client: usize },
    /// Step `index` of the installed nemesis plan is due.
    Nemesis { index: usize },
}

impl<M, Q, O> Event<M, Q, O> {
    /// The node whose inbox this event belongs to (it waits while that node is paused).
    pub(crate) fn inbox(&self) -> Option<NodeId> {
        match self {
            Event::Deliver { to, .. } => Some(*to),
            Event::Timer { node, .. }
            | Event::PersistDone { node, .. }
            | Event::PeerLost { node, .. }
            | Event::RequestArrive { node, .. } => Some(*node),
            _ => None,
        }
    }
}

/// A heap entry: when, in which order, and where the event itself is stored. Keeping events
/// out of the heap keeps sift operations cheap however large a protocol's messages are.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    time: Time,
    sequence: u64,
    slot: usize,
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and the earliest event must come out first.
        other.order().cmp(&self.order())
    }
}

impl Key {
    /// `(time, sequence)` as one number, compared without branches.
    fn order(&self) -> u128 {
        (u128::from(self.time) << 64) | u128::from(self.sequence)
    }
}

/// Events ordered by `(time, sequence)`, in three lanes; `pop_due` takes the earliest of
/// the three heads, so the order is exactly the same as if everything were in one heap:
///
/// * a short **sorted** lane (latest first, so the earliest is popped off the end): the few
///   dozen events a cluster usually has in flight. Popping costs nothing; inserting is a binary
///   search and a short move, cheaper than a heap's sift down on every pop.
/// * an overflow **heap** for events that find the sorted lane full (message storms);
/// * a **FIFO** lane for events whose times are pushed in non-decreasing order (client
///   timeouts, all of one length).
pub(crate) struct EventQueue<E> {
    sorted: Vec<Key>,
    heap: BinaryHeap<Key>,
    fifo: VecDeque<Key>,
    /// Event storage; `None` marks a free slot.
    events: Vec<Option<E>>,
    /// Free slots of `events`, reused last-in first-out.
    free: Vec<usize>,
    next_sequence: u64,
}

/// The sorted lane holds at most this many events; more go to the heap.
const SORTED_LANE_MAX: usize = 64;

/// One of the queue's lanes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lane {
    Sorted,
    Heap,
    Fifo,
}

impl<E> std::fmt::Debug for EventQueue<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventQueue")
            .field("pending", &self.len())
            .field("next_sequence", &self.next_sequence)
            .finish()
    }
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            sorted: Vec::with_capacity(SORTED_LANE_MAX),
            heap: BinaryHeap::new(),
            fifo: VecDeque::new(),
            events: Vec::new(),
            free: Vec::new(),
            next_sequence: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// Schedules `event` at `time`.
    pub(crate) fn push(&mut self, time: Time, event: E) {
        let key = self.store(time, event);
        self.push_key(key);
    }

    /// Schedules `event` at `time`, in the FIFO lane when `time` is not earlier than the last
    /// event there (otherwise like [`EventQueue::push`]).
    pub(crate) fn push_fifo(&mut self, time: Time, event: E) {
        let key = self.store(time, event);
        if self.fifo.back().map_or(true, |last| last.time <= time) {
            self.fifo.push_back(key);
        } else {
            self.push_key(key);
        }
    }

    /// Puts `key` in the sorted lane if it has room, in the heap otherwise.
    fn push_key(&mut self, key: Key) {
        if self.sorted.len() < SORTED_LANE_MAX {
            let order = key.order();
            let position = self.sorted.partition_point(|k| k.order() > order);
            self.sorted.insert(position, key);
        } else {
            self.heap.push(key);
        }
    }

    fn store(&mut self, time: Time, event: E) -> Key {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.events[slot] = Some(event);
                slot
            }
            None => {
                self.events.push(Some(event));
                self.events.len() - 1
            }
        };
        Key {
            time,
            sequence,
            slot,
        }
    }

    /// The lane whose head is the earliest event, and that head.
    fn earliest(&self) -> Option<(Lane, Key)> {
        let mut best = self.sorted.last().map(|&key| (Lane::Sorted, key));
        for candidate in [
            self.heap.peek().map(|&key| (Lane::Heap, key)),
            self.fifo.front().map(|&key| (Lane::Fifo, key)),
        ]
        .into_iter()
        .flatten()
        {
            if best.map_or(true, |(_, key)| candidate.1.order() < key.order()) {
                best = Some(candidate);
            }
        }
        best
    }

    /// Removes the earliest event if it is due at or before `until`.
    pub(crate) fn pop_due(&mut self, until: Time) -> Option<(Time, E)> {
        let (lane, key) = self.earliest()?;
        if key.time > until {
            return None;
        }
        match lane {
            Lane::Sorted => self.sorted.pop(),
            Lane::Heap => self.heap.pop(),
            Lane::Fifo => self.fifo.pop_front(),
        };
        let event = self.events[key.slot].take()?;
        self.free.push(key.slot);
        Some((key.time, event))
    }

    /// Removes the earliest event.
    #[cfg(test)]
    pub(crate) fn pop(&mut self) -> Option<(Time, E)> {
        self.pop_due(Time::MAX)
    }

    /// How many events are waiting.
    pub(crate) fn len(&self) -> usize {
        self.sorted.len() + self.heap.len() + self.fifo.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_time_events_keep_schedule_order() {
        let mut queue = EventQueue::default();
        queue.push(5, "b");
        queue.push(1, "a");
        queue.push(5, "c");
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(order, vec![(1, "a"), (5, "b"), (5, "c")]);
    }

    #[test]
    fn the_fifo_lane_interleaves_exactly_like_the_heap() {
        let mut queue = EventQueue::default();
        queue.push_fifo(3, "f1");
        queue.push(3, "h1");
        queue.push_fifo(4, "f2");
        queue.push(1, "h0");
        queue.push_fifo(2, "late: goes to the heap");
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).map(|(_, e)| e).collect();
        assert_eq!(
            order,
            vec!["h0", "late: goes to the heap", "f1", "h1", "f2"]
        );
    }

    #[test]
    fn the_three_lanes_pop_in_exactly_heap_order() {
        use rand::Rng;
        let mut rng = concord_core::seeded_rng(7, 0);
        let mut queue = EventQueue::default();
        let mut reference = std::collections::BTreeSet::new();
        let mut now = 0;
        let mut fifo_time = 0;
        for sequence in 0..20_000u64 {
            // Bursts fill the sorted lane and spill into the heap; pops drain them again.
            if rng.gen_bool(if (sequence / 500) % 2 == 0 { 0.7 } else { 0.3 }) {
                let time = if rng.gen_bool(0.2) {
                    fifo_time = fifo_time.max(now) + rng.gen_range(0..3);
                    queue.push_fifo(fifo_time, sequence);
                    fifo_time
                } else {
                    let time = now + rng.gen_range(0..50);
                    queue.push(time, sequence);
                    time
                };
                reference.insert((time, sequence));
            } else if let Some((time, event)) = queue.pop() {
                assert_eq!(reference.pop_first(), Some((time, event)));
                now = time;
            }
            assert_eq!(queue.len(), reference.len());
        }
        while let Some(popped) = queue.pop() {
            assert_eq!(reference.pop_first(), Some(popped));
        }
        assert!(reference.is_empty());
    }
}
