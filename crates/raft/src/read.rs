//! Linearizable reads without log writes (thesis §6.4).
//!
//! **ReadIndex**: the leader (1) must have committed an entry of its term; (2) records its
//! commit index as the read index; (3) confirms it is still leader by a heartbeat round that a
//! quorum acknowledges; (4) answers once its applied index reaches the read index.
//!
//! **Follower reads** (§6.4): a follower asks the leader for a read index
//! (`ReadIndexRequest`), waits until it has applied that far, and answers locally. One request
//! is in flight at a time: the reads that arrive meanwhile wait, and the next request asks for
//! all of them (as etcd's read loop does), so follower reads cost O(round trips) messages, not
//! O(reads).
//!
//! **Lease reads** (§6.4.1, opt-in): a leader whose quorum round sent at `t` was acknowledged
//! knows no other leader can be elected before `t + election_timeout_min` (followers ignore
//! votes that long, by stickiness); it serves reads locally until then, minus the clock drift
//! bound.

use concord_core::{NodeId, RequestId, StateMachine, Time};

use crate::leader::{PendingRead, ReadOrigin};
use crate::node::RaftNode;
use crate::{LogIndex, Message, RaftError, Response};

/// Reads a follower asked the leader a read index for, in one ReadIndexRequest.
#[derive(Clone, Debug)]
pub(crate) struct ForwardedReads<Q> {
    /// The leader asked.
    pub(crate) to: NodeId,
    /// When the request left; the batch fails an election timeout later.
    pub(crate) sent: Time,
    /// The reads, in arrival order.
    pub(crate) reads: Vec<(RequestId, Q)>,
}

impl<S: StateMachine> RaftNode<S> {
    /// A client read arrives.
    pub(crate) fn on_read(&mut self, id: RequestId, query: S::Query) {
        if self.leader.is_some() {
            self.start_read(ReadOrigin::Local { id, query });
            return;
        }
        if self.follower_admits(id) {
            // Forwarded at the end of the step (`forward_reads`), with every other read waiting.
            self.reads_to_forward.push((id, query));
        }
    }

    /// Sends the reads waiting to be forwarded, as one batch, unless a batch is in flight.
    /// Run at the end of every step, before anything is emitted.
    ///
    /// A batch in flight to a node that is no longer the leader is asked for again: a read has
    /// no effect, so asking twice is harmless, and the late answer to the old request matches
    /// nothing. A node that became leader serves its waiting reads itself; one that knows no
    /// leader fails them at once, as it fails a new read.
    pub(crate) fn forward_reads(&mut self) {
        if let Some(to) = self.forwarded_reads.as_ref().map(|(_, batch)| batch.to) {
            if self.leader.is_some() || Some(to) != self.leader_id {
                self.reask_reads_sent_to(to);
            }
        }
        if self.reads_to_forward.is_empty() || self.forwarded_reads.is_some() {
            return;
        }
        let reads = std::mem::take(&mut self.reads_to_forward);
        if self.leader.is_some() {
            for (id, query) in reads {
                self.start_read(ReadOrigin::Local { id, query });
            }
            return;
        }
        let Some(leader) = self.leader_id else {
            for (id, _) in reads {
                self.reply(id, Response::Failed(RaftError::NotLeader { leader: None }));
            }
            return;
        };
        self.next_read_id = self.next_read_id.wrapping_add(1);
        let read_id = self.next_read_id;
        self.send(leader, Message::ReadIndexRequest { read_id });
        let batch = ForwardedReads {
            to: leader,
            sent: self.now,
            reads,
        };
        self.forwarded_reads = Some((read_id, batch));
    }

    /// The connection to `peer` was lost: the request in flight to it, or its answer, may be
    /// lost with it, so its reads are asked for again at the end of the step.
    pub(crate) fn reask_reads_sent_to(&mut self, peer: NodeId) {
        if let Some((_, batch)) = self.forwarded_reads.take_if(|(_, batch)| batch.to == peer) {
            // Ahead of the reads that arrived after them.
            self.reads_to_forward.splice(0..0, batch.reads);
        }
    }

    /// A follower asks this node for a read index.
    pub(crate) fn on_read_index_request(&mut self, from: NodeId, read_id: u64) {
        if self.leader.is_some() {
            self.start_read(ReadOrigin::Remote { from, read_id });
        } else {
            let leader = self.leader_id;
            let answer = Message::ReadIndexResponse {
                read_id,
                read_index: None,
                leader,
            };
            self.send(from, answer);
        }
    }

    /// The leader's answer to a forwarded read.
    pub(crate) fn on_read_index_response(
        &mut self,
        read_id: u64,
        read_index: Option<LogIndex>,
        leader: Option<NodeId>,
    ) {
        let Some((_, batch)) = self.forwarded_reads.take_if(|(id, _)| *id == read_id) else {
            return;
        };
        for (id, query) in batch.reads {
            match read_index {
                Some(read_index) => self.await_apply(read_index, id, query),
                None => self.reply(id, Response::Failed(RaftError::NotLeader { leader })),
            }
        }
    }

    /// A forwarded batch unanswered for an election timeout fails (the leader may be gone); a
    /// read has no effect, so "not leader" is a definite answer.
    pub(crate) fn expire_forwarded_reads(&mut self) {
        let (now, timeout) = (self.now, self.config.election_timeout_max);
        if let Some((_, batch)) = self
            .forwarded_reads
            .take_if(|(_, batch)| batch.sent + timeout <= now)
        {
            let leader = self.leader_id;
            for (id, _) in batch.reads {
                self.reply(id, Response::Failed(RaftError::NotLeader { leader }));
            }
        }
    }

    fn start_read(&mut self, origin: ReadOrigin<S::Query>) {
        let commit_index = self.commit_index;
        let now = self.now;
        let lease_reads = self.config.lease_reads;
        let max_pending = self.config.max_pending_requests;
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let pending = leader.pending_requests();
        if pending >= max_pending {
            self.reject_read(origin, RaftError::Overloaded { pending });
            return;
        }
        let term_committed = commit_index >= leader.term_start_index;
        if !term_committed {
            leader.reads_awaiting_term_commit.push(origin);
            return;
        }
        if lease_reads && !leader.lease_revoked && now < leader.lease_until {
            self.deliver_read(commit_index, origin);
            return;
        }
        leader.reads_awaiting_quorum.push_back(PendingRead {
            read_index: commit_index,
            round: leader.round + 1,
            origin,
        });
        self.request_round();
    }

    fn reject_read(&mut self, origin: ReadOrigin<S::Query>, error: RaftError) {
        match origin {
            ReadOrigin::Local { id, .. } => self.reply(id, Response::Failed(error)),
            ReadOrigin::Remote { .. } => self.fail_read(origin),
        }
    }

    /// Once the leader has committed an entry of its term, the reads that waited for it get
    /// the commit index as their read index and a new round.
    pub(crate) fn release_reads_awaiting_term_commit(&mut self) {
        let commit_index = self.commit_index;
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let round = leader.round + 1;
        for origin in leader.reads_awaiting_term_commit.drain(..) {
            leader.reads_awaiting_quorum.push_back(PendingRead {
                read_index: commit_index,
                round,
                origin,
            });
        }
        self.request_round();
    }

    /// The highest heartbeat round a quorum has acknowledged (the leader counts its own).
    fn quorum_round(&mut self) -> u64 {
        let id = self.id;
        let Some(leader) = self.leader.as_ref() else {
            return 0;
        };
        let own_round = leader.round;
        let progress = &leader.progress;
        self.log
            .membership()
            .quorum_value(&mut self.scratch, |peer| {
                if peer == id {
                    own_round
                } else {
                    progress.get(&peer).map_or(0, |p| p.acked_round)
                }
            })
    }

    /// A read needs a round sent after it arrived: now if no round is unconfirmed, otherwise as
    /// soon as the unconfirmed one is (or at the next heartbeat, whichever comes first).
    fn request_round(&mut self) {
        let confirmed = self.quorum_round();
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        if confirmed >= leader.round {
            self.needs_round = true;
        } else {
            leader.round_wanted = true;
        }
    }

    /// Releases the reads whose round a quorum has acknowledged, and extends the lease.
    pub(crate) fn confirm_reads(&mut self) {
        let lease_span = self.config.election_timeout_min
            - self
                .config
                .max_clock_drift
                .min(self.config.election_timeout_min);
        let waiting = self
            .leader
            .as_ref()
            .is_some_and(|leader| !leader.reads_awaiting_quorum.is_empty());
        if !waiting && !self.config.lease_reads {
            return;
        }
        let confirmed = self.quorum_round();
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        if leader.round_wanted && confirmed >= leader.round {
            leader.round_wanted = false;
            self.needs_round = true;
        }
        if self.config.lease_reads {
            while leader
                .round_sent_at
                .front()
                .is_some_and(|(round, _)| *round < confirmed)
            {
                leader.round_sent_at.pop_front();
            }
            if let Some(&(round, sent)) = leader.round_sent_at.front() {
                if round == confirmed {
                    leader.lease_until = leader.lease_until.max(sent + lease_span);
                }
            }
        }
        let mut ready = Vec::new();
        while leader
            .reads_awaiting_quorum
            .front()
            .is_some_and(|read| read.round <= confirmed)
        {
            ready.extend(leader.reads_awaiting_quorum.pop_front());
        }
        for read in ready {
            self.deliver_read(read.read_index, read.origin);
        }
    }

    fn deliver_read(&mut self, read_index: LogIndex, origin: ReadOrigin<S::Query>) {
        match origin {
            ReadOrigin::Local { id, query } => self.await_apply(read_index, id, query),
            ReadOrigin::Remote { from, read_id } => {
                let answer = Message::ReadIndexResponse {
                    read_id,
                    read_index: Some(read_index),
                    leader: Some(self.id),
                };
                self.send(from, answer);
            }
        }
    }

    fn await_apply(&mut self, read_index: LogIndex, id: RequestId, query: S::Query) {
        self.next_read_sequence += 1;
        self.reads_awaiting_apply
            .insert((read_index, self.next_read_sequence), (id, query));
        self.serve_applied_reads();
    }

    /// Answers every read whose read index has been applied.
    pub(crate) fn serve_applied_reads(&mut self) {
        while let Some(entry) = self.reads_awaiting_apply.first_entry() {
            let read_index = entry.key().0;
            if read_index > self.last_applied {
                break;
            }
            let (id, query) = entry.remove();
            let output = self.state_machine.query(&query);
            self.reply(id, Response::Read { read_index, output });
        }
    }
}
