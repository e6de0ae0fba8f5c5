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

/// Events ordered by `(time, sequence)`.
///
/// Events whose times are pushed in non-decreasing order (client timeouts, all of one length)
/// can go to a FIFO lane instead of the heap; `pop` takes the earlier of the two heads, so the
/// order is exactly the same as if everything were in the heap.
pub(crate) struct EventQueue<E> {
    heap: BinaryHeap<Key>,
    fifo: VecDeque<Key>,
    /// Event storage; `None` marks a free slot.
    events: Vec<Option<E>>,
    /// Free slots of `events`, reused last-in first-out.
    free: Vec<usize>,
    next_sequence: u64,
}

impl<E> std::fmt::Debug for EventQueue<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventQueue")
            .field("pending", &self.heap.len())
            .field("next_sequence", &self.next_sequence)
            .finish()
    }
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
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
        self.heap.push(key);
    }

    /// Schedules `event` at `time`, in the FIFO lane when `time` is not earlier than the last
    /// event there (otherwise in the heap).
    pub(crate) fn push_fifo(&mut self, time: Time, event: E) {
        let key = self.store(time, event);
        if self.fifo.back().map_or(true, |last| last.time <= time) {
            self.fifo.push_back(key);
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

    /// Whether the FIFO lane's head comes before the heap's.
    fn fifo_first(&self) -> Option<bool> {
        match (self.fifo.front(), self.heap.peek()) {
            (None, None) => None,
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (Some(f), Some(h)) => Some(f.order() < h.order()),
        }
    }

    /// Removes the earliest event if it is due at or before `until`.
    pub(crate) fn pop_due(&mut self, until: Time) -> Option<(Time, E)> {
        let fifo_first = self.fifo_first()?;
        let head = if fifo_first {
            self.fifo.front()
        } else {
            self.heap.peek()
        };
        if head?.time > until {
            return None;
        }
        let key = if fifo_first {
            self.fifo.pop_front()?
        } else {
            self.heap.pop()?
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
        self.heap.len() + self.fifo.len()
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
}
