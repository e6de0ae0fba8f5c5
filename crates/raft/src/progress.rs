//! A leader's view of one follower's replication (paper §5.3 `nextIndex`/`matchIndex`, with the
//! probe/replicate/snapshot flow control of thesis §10.2.1 as in etcd raft).
//!
//! * **Probe**: the leader does not know where the follower's log matches; it sends one
//!   AppendEntries and waits for the answer (or the next heartbeat) before sending another.
//! * **Replicate**: the logs match up to `match_index`; the leader pipelines AppendEntries
//!   optimistically, at most `Config::max_inflight_appends` at once.
//! * **Snapshot**: the follower needs entries the leader has compacted; the leader streams a
//!   snapshot one chunk at a time.

use std::collections::VecDeque;

use concord_core::Time;

use crate::{LogIndex, Snapshot};

/// The flow-control state of one follower.
#[derive(Clone, Debug)]
pub(crate) enum ProgressState {
    /// Looking for the match point; `paused` after one AppendEntries is in flight.
    Probe {
        /// Whether an AppendEntries is in flight.
        paused: bool,
    },
    /// Pipelining: the last index and send time of every AppendEntries in flight.
    Replicate {
        /// In-flight messages, oldest first.
        inflight: VecDeque<(LogIndex, Time)>,
    },
    /// Sending `snapshot`, next chunk at `offset`.
    Snapshot {
        /// The snapshot being sent (shared, never copied).
        snapshot: Snapshot,
        /// The byte offset of the next chunk.
        offset: u64,
    },
}

/// A leader's replication state for one follower.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// Highest index known to be replicated (and durable) on the follower.
    pub match_index: LogIndex,
    /// Next index to send. Invariant: `match_index < next_index`.
    pub next_index: LogIndex,
    /// Flow control.
    pub state: ProgressState,
    /// When the leader last heard from the follower (for CheckQuorum).
    pub last_heard: Time,
    /// Highest heartbeat round the follower acknowledged (for ReadIndex and leases).
    pub acked_round: u64,
}

impl Progress {
    /// A follower about which nothing is known yet: probe from the leader's next index.
    pub fn new(next_index: LogIndex, now: Time) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe { paused: false },
            last_heard: now,
            acked_round: 0,
        }
    }

    /// Goes back to probing at `next_index`.
    pub fn become_probe(&mut self, next_index: LogIndex) {
        self.next_index = next_index.max(self.match_index + 1);
        self.state = ProgressState::Probe { paused: false };
    }

    /// Starts pipelining after `match_index`.
    pub fn become_replicate(&mut self) {
        self.next_index = self.next_index.max(self.match_index + 1);
        self.state = ProgressState::Replicate {
            inflight: VecDeque::new(),
        };
    }

    /// Records that the follower holds everything through `index`; returns whether that is news.
    pub fn acknowledge(&mut self, index: LogIndex) -> bool {
        let news = index > self.match_index;
        if news {
            self.match_index = index;
            self.next_index = self.next_index.max(index + 1);
        }
        match &mut self.state {
            ProgressState::Probe { .. } => self.become_replicate(),
            ProgressState::Replicate { inflight } => {
                while inflight.front().is_some_and(|(last, _)| *last <= index) {
                    inflight.pop_front();
                }
            }
            ProgressState::Snapshot { .. } => {}
        }
        news
    }

    /// Whether the leader may send another AppendEntries with new entries now.
    pub fn can_send(&self, max_inflight: usize) -> bool {
        match &self.state {
            ProgressState::Probe { paused } => !paused,
            ProgressState::Replicate { inflight } => inflight.len() < max_inflight,
            ProgressState::Snapshot { .. } => false,
        }
    }

    /// Whether the oldest in-flight message was sent at or before `stale_before` (presumed lost).
    pub fn has_stale_inflight(&self, stale_before: Time) -> bool {
        match &self.state {
            ProgressState::Replicate { inflight } => inflight
                .front()
                .is_some_and(|(_, sent)| *sent <= stale_before),
            _ => false,
        }
    }
}
