//! The simulator's event queue: a min-heap keyed by `(time, sequence number)`.
//!
//! Two events at the same virtual time run in the order they were scheduled, so one seed always
//! gives the same interleaving.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

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

struct Scheduled<E> {
    time: Time,
    sequence: u64,
    event: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.sequence) == (other.time, other.sequence)
    }
}

impl<E> Eq for Scheduled<E> {}

impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Scheduled<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and the earliest event must come out first.
        (other.time, other.sequence).cmp(&(self.time, self.sequence))
    }
}

/// Events ordered by `(time, sequence)`.
pub(crate) struct EventQueue<E> {
    heap: BinaryHeap<Scheduled<E>>,
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
            next_sequence: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// Schedules `event` at `time`.
    pub(crate) fn push(&mut self, time: Time, event: E) {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.heap.push(Scheduled {
            time,
            sequence,
            event,
        });
    }

    /// The time of the earliest event.
    pub(crate) fn peek_time(&self) -> Option<Time> {
        self.heap.peek().map(|s| s.time)
    }

    /// Removes the earliest event.
    pub(crate) fn pop(&mut self) -> Option<(Time, E)> {
        self.heap.pop().map(|s| (s.time, s.event))
    }

    /// How many events are waiting.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
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
}
