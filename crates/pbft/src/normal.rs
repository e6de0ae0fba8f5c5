//! The normal case (OSDI 1999 §4.2): the primary assigns a sequence number to a batch of
//! requests (PRE-PREPARE); backups that accept it say so (PREPARE); once a replica holds the
//! pre-prepare and `2f` matching prepares the batch is *prepared* and it says so (COMMIT);
//! with a quorum of matching commits it is *committed-local*, and executed in sequence order.

use concord_core::{Effect, NodeId, Time};

use crate::auth::{encode, Digest};
use crate::message::{Body, ClientRequest, Operation, Sequence, View, Write};
use crate::replica::{batch_digest, Accepted, Authenticated, Batch, Out, Pbft, Service};

/// Records `from`'s vote `(view, digest)` unless a vote of a later view is already there.
fn record_vote(
    votes: &mut std::collections::BTreeMap<NodeId, (View, Digest)>,
    from: NodeId,
    view: View,
    digest: Digest,
) {
    let vote = votes.entry(from).or_insert((view, digest));
    if view >= vote.0 {
        *vote = (view, digest);
    }
}

impl<S: Service> Pbft<S> {
    /// Whether `request`'s authenticator holds a valid MAC for this replica.
    pub(crate) fn request_authentic(&self, request: &Authenticated<S>) -> bool {
        let client = request.request.client;
        if self.host_of(client) as usize >= self.quorums.replicas {
            return false;
        }
        let bytes = encode(&request.request);
        request.authenticator.get(self.id as usize)
            == Some(&self.keys.client_mac(client, self.id, &bytes))
    }

    /// `<REQUEST>` from a client (through `from`: its proxy's node, or a backup relaying it).
    pub(crate) fn on_request(
        &mut self,
        now: Time,
        from: NodeId,
        request: Authenticated<S>,
        out: &mut Out<S>,
    ) {
        if !self.request_authentic(&request) {
            self.counters.authentication_failures += 1;
            return;
        }
        let client = request.request.client;
        let timestamp = request.request.timestamp;
        if request.request.read_only {
            self.answer_read_only(&request.request, out);
            return;
        }
        if let Some(last) = self.replies.get(&client) {
            if last.timestamp == timestamp {
                // Already executed: the reply may have been lost (§4.1).
                let reply = self.reply_body(client, timestamp, last.result.clone());
                self.send(self.host_of(client), reply, out);
                return;
            }
            if last.timestamp > timestamp {
                return;
            }
        }
        if self.is_primary() {
            self.enqueue(request);
            return;
        }
        let newer = self
            .waiting
            .get(&client)
            .is_none_or(|known| known.request.timestamp < timestamp);
        if newer {
            self.waiting.insert(client, request.clone());
        }
        if self.active {
            if self.request_timer.is_none() {
                self.request_timer = Some(now + self.view_change_timeout());
            }
            if from == self.host_of(client) {
                let primary = self.primary_of(self.view);
                self.send(primary, Body::Request(request), out);
            }
        }
    }

    /// Queues a request at the primary, once per client and timestamp.
    pub(crate) fn enqueue(&mut self, request: Authenticated<S>) {
        let key = (request.request.client, request.request.timestamp);
        let known = self
            .pending
            .iter()
            .any(|r| (r.request.client, r.request.timestamp) == key)
            || self.log.values().any(|slot| {
                slot.committed.is_none()
                    && slot.pre_prepare.as_ref().is_some_and(|pp| {
                        pp.view == self.view
                            && pp
                                .batch
                                .iter()
                                .any(|r| (r.request.client, r.request.timestamp) == key)
                    })
            });
        if !known && self.pending.len() < self.config.max_pending_requests {
            self.pending.push_back(request);
        }
    }

    /// The primary starts batches while few are in flight and the window has room (§5.1.4).
    pub(crate) fn try_propose(&mut self, out: &mut Out<S>) {
        if !self.is_primary() {
            return;
        }
        self.next_sequence = self.next_sequence.max(self.stable.sequence + 1);
        while !self.pending.is_empty()
            && self.next_sequence <= self.high_watermark()
            && (self.next_sequence - 1).saturating_sub(self.executed) < self.config.max_in_flight
        {
            let mut batch: Batch<S> = Vec::new();
            while batch.len() < self.config.max_batch {
                let Some(request) = self.pending.pop_front() else {
                    break;
                };
                let done = self
                    .replies
                    .get(&request.request.client)
                    .is_some_and(|last| last.timestamp >= request.request.timestamp);
                if !done {
                    batch.push(request);
                }
            }
            if batch.is_empty() {
                break;
            }
            // A sequence number this replica already knows committed (from another view's
            // commits) is not its to assign.
            while self
                .log
                .get(&self.next_sequence)
                .is_some_and(|slot| slot.committed.is_some())
            {
                self.next_sequence += 1;
            }
            if self.next_sequence > self.high_watermark() {
                self.pending.extend(batch);
                break;
            }
            let sequence = self.next_sequence;
            self.next_sequence += 1;
            let digest = batch_digest(&batch);
            self.accept_pre_prepare(self.view, sequence, digest, batch.clone(), out);
            let body = Body::PrePrepare {
                view: self.view,
                sequence,
                digest,
                batch,
            };
            self.broadcast(body, out);
        }
    }

    /// `<PRE-PREPARE, v, n, d>` from the primary.
    pub(crate) fn on_pre_prepare(
        &mut self,
        from: NodeId,
        view: View,
        sequence: Sequence,
        digest: Digest,
        batch: Batch<S>,
        out: &mut Out<S>,
    ) {
        if !self.active
            || view != self.view
            || from != self.primary_of(view)
            || from == self.id
            || sequence <= self.stable.sequence
            || sequence > self.high_watermark()
        {
            return;
        }
        if batch.len() > self.config.max_batch || batch_digest(&batch) != digest {
            self.counters.invalid_messages += 1;
            return;
        }
        if batch
            .iter()
            .any(|r| r.request.read_only || !self.request_authentic(r))
        {
            self.counters.authentication_failures += 1;
            return;
        }
        if let Some(slot) = self.log.get(&sequence) {
            if slot.pre_prepare.as_ref().is_some_and(|pp| pp.view == view) {
                // A duplicate, or the primary equivocating: the first one stands.
                return;
            }
            if slot.committed.is_some_and(|committed| committed != digest) {
                self.counters.invalid_messages += 1;
                return;
            }
        }
        self.accept_pre_prepare(view, sequence, digest, batch, out);
    }

    /// Accepts a pre-prepare (from the primary, from a new view, or as the primary): records it
    /// durably, then prepares it (backups).
    pub(crate) fn accept_pre_prepare(
        &mut self,
        view: View,
        sequence: Sequence,
        digest: Digest,
        batch: Batch<S>,
        out: &mut Out<S>,
    ) {
        let slot = self.log.entry(sequence).or_default();
        if slot.committed.is_some_and(|committed| committed != digest) {
            return;
        }
        slot.pre_prepare = Some(Accepted {
            view,
            digest,
            batch: batch.clone(),
        });
        slot.prepared = false;
        let views = self.pre_prepared_set.entry(sequence).or_default();
        let latest = views.entry(digest).or_insert(view);
        *latest = (*latest).max(view);
        self.batches.insert(digest, batch.clone());
        self.persist(
            Write::PrePrepared {
                view,
                sequence,
                digest,
                batch,
            },
            out,
        );
        if self.primary_of(view) != self.id {
            let id = self.id;
            if let Some(slot) = self.log.get_mut(&sequence) {
                record_vote(&mut slot.prepares, id, view, digest);
            }
            self.broadcast(
                Body::Prepare {
                    view,
                    sequence,
                    digest,
                },
                out,
            );
        }
        self.check_prepared(sequence, out);
    }

    /// Whether `sequence` is in the window of messages worth keeping: above the stable
    /// checkpoint, at most the high watermark.
    fn in_window(&self, sequence: Sequence) -> bool {
        sequence > self.stable.sequence && sequence <= self.high_watermark()
    }

    /// `<PREPARE, v, n, d, i>`.
    pub(crate) fn on_prepare(
        &mut self,
        from: NodeId,
        view: View,
        sequence: Sequence,
        digest: Digest,
        out: &mut Out<S>,
    ) {
        if from == self.primary_of(view) {
            self.counters.invalid_messages += 1;
            return;
        }
        if view < self.view || !self.in_window(sequence) {
            return;
        }
        let slot = self.log.entry(sequence).or_default();
        record_vote(&mut slot.prepares, from, view, digest);
        self.check_prepared(sequence, out);
    }

    /// `<COMMIT, v, n, d, i>`.
    pub(crate) fn on_commit(
        &mut self,
        from: NodeId,
        view: View,
        sequence: Sequence,
        digest: Digest,
        out: &mut Out<S>,
    ) {
        if !self.in_window(sequence) {
            return;
        }
        // Commits of any view count: a quorum of them for one view and digest proves the batch
        // committed, which lets a replica in another view execute it.
        let slot = self.log.entry(sequence).or_default();
        record_vote(&mut slot.commits, from, view, digest);
        self.check_committed(sequence, out);
    }

    /// prepared(m, v, n, i): the pre-prepare and `quorum - 1` matching prepares from backups.
    fn check_prepared(&mut self, sequence: Sequence, out: &mut Out<S>) {
        let needed = self.quorums.quorum() - 1;
        let active = self.active;
        let current = self.view;
        let primary_of = |view: View| view % self.quorums.replicas as u64;
        let Some(slot) = self.log.get_mut(&sequence) else {
            return;
        };
        let Some(pp) = &slot.pre_prepare else { return };
        if slot.prepared || !active || pp.view != current {
            return;
        }
        let (view, digest) = (pp.view, pp.digest);
        let primary = primary_of(view);
        let matching = slot
            .prepares
            .iter()
            .filter(|(node, vote)| **node != primary && **vote == (view, digest))
            .count();
        // A batch this replica knows committed (in an earlier view) is the only one that can
        // ever commit here: it vouches for it in the new view at once, so replicas that still
        // need a commit quorum in this view are not left waiting for prepares it never gets.
        if matching < needed && slot.committed != Some(digest) {
            return;
        }
        slot.prepared = true;
        record_vote(&mut slot.commits, self.id, view, digest);
        self.prepared_set.insert(sequence, (view, digest));
        self.persist(
            Write::Prepared {
                view,
                sequence,
                digest,
            },
            out,
        );
        self.broadcast(
            Body::Commit {
                view,
                sequence,
                digest,
            },
            out,
        );
        self.check_committed(sequence, out);
    }

    /// committed-local(m, v, n, i): prepared, and a quorum of matching commits. A replica
    /// that did not prepare (it was changing views, or missed the pre-prepare) takes a quorum
    /// of matching commits for one view as proof that the batch committed (each correct
    /// sender prepared it: `committed(m, v, n)` holds), once it has the batch.
    pub(crate) fn check_committed(&mut self, sequence: Sequence, out: &mut Out<S>) {
        let quorum = self.quorums.quorum();
        let Some(slot) = self.log.get(&sequence) else {
            return;
        };
        if slot.committed.is_some() {
            return;
        }
        let own = slot
            .pre_prepare
            .as_ref()
            .filter(|_| slot.prepared)
            .map(|pp| (pp.view, pp.digest));
        let certified = slot.commits.values().find(|vote| {
            Some(**vote) != own && slot.commits.values().filter(|v| v == vote).count() >= quorum
        });
        let vote = match (own, certified) {
            (Some(own), _) if slot.commits.values().filter(|v| **v == own).count() >= quorum => own,
            (_, Some(certified)) => *certified,
            _ => return,
        };
        let (view, digest) = vote;
        let batch = match &slot.pre_prepare {
            Some(pp) if pp.digest == digest => pp.batch.clone(),
            _ => match self.batches.get(&digest) {
                Some(batch) => batch.clone(),
                None => return, // Waiting for the batch.
            },
        };
        let slot = self.log.get_mut(&sequence).expect("looked up above");
        // It vouches for the batch from now on (its commit goes to replicas that lack it).
        slot.commits.entry(self.id).or_insert(vote);
        if slot
            .pre_prepare
            .as_ref()
            .is_none_or(|pp| pp.digest != digest)
        {
            slot.pre_prepare = Some(Accepted {
                view,
                digest,
                batch: batch.clone(),
            });
            slot.prepared = false;
        }
        slot.committed = Some(digest);
        self.persist(
            Write::Committed {
                sequence,
                digest,
                batch,
            },
            out,
        );
    }

    /// A committed batch from a peer, for a sequence number this replica has commits for.
    pub(crate) fn on_batch(
        &mut self,
        sequence: Sequence,
        digest: Digest,
        batch: Batch<S>,
        out: &mut Out<S>,
    ) {
        if !self.in_window(sequence) || sequence <= self.executed {
            return;
        }
        let wanted = self.log.get(&sequence).is_some_and(|slot| {
            slot.committed.is_none() && slot.commits.values().any(|(_, d)| *d == digest)
        });
        if !wanted || self.batches.contains_key(&digest) {
            return;
        }
        if batch.len() > self.config.max_batch || batch_digest(&batch) != digest {
            self.counters.invalid_messages += 1;
            return;
        }
        self.batches.insert(digest, batch);
        self.check_committed(sequence, out);
    }

    /// Executes committed batches in sequence order, replying to each client (§4.2).
    pub(crate) fn try_execute(&mut self, now: Time, out: &mut Out<S>) {
        let before = self.executed;
        loop {
            let next = self.executed + 1;
            if next <= self.stable.sequence {
                break; // Behind a stable checkpoint: waiting for its state.
            }
            let Some(slot) = self.log.get(&next) else {
                break;
            };
            let (Some(committed), Some(pp)) = (slot.committed, &slot.pre_prepare) else {
                break;
            };
            if pp.digest != committed {
                break;
            }
            let batch = pp.batch.clone();
            for request in &batch {
                if let Some(result) = self.execute_request(&request.request) {
                    let client = request.request.client;
                    let reply = self.reply_body(client, request.request.timestamp, result);
                    let host = self.host_of(client);
                    if (host as usize) < self.quorums.replicas {
                        self.send(host, reply, out);
                    }
                }
            }
            out.push(Effect::Apply {
                index: next,
                command: batch.into_iter().map(|r| r.request).collect(),
            });
            self.executed = next;
            if next.is_multiple_of(self.config.checkpoint_interval) {
                self.take_checkpoint(out);
            }
        }
        if self.executed > before {
            self.view_change_attempts = 0;
            self.update_request_timer(now);
        }
    }

    /// Drops waiting requests that were executed, and restarts the view-change timer for the
    /// rest (or stops it).
    pub(crate) fn update_request_timer(&mut self, now: Time) {
        let replies = &self.replies;
        self.waiting.retain(|client, request| {
            replies
                .get(client)
                .is_none_or(|last| last.timestamp < request.request.timestamp)
        });
        self.request_timer = if self.waiting.is_empty() || !self.active {
            None
        } else {
            Some(now + self.view_change_timeout())
        };
    }

    /// Executes one request unless its client already had a later or equal one executed;
    /// returns the result.
    pub(crate) fn execute_request(
        &mut self,
        request: &ClientRequest<S::Command, S::Query>,
    ) -> Option<S::Output> {
        if self
            .replies
            .get(&request.client)
            .is_some_and(|last| last.timestamp >= request.timestamp)
        {
            return None;
        }
        let result = match &request.operation {
            Operation::Command(command) => self.state.apply(command),
            Operation::Read(query) => self.state.query(query),
        };
        self.replies.insert(
            request.client,
            crate::replica::LastReply {
                timestamp: request.timestamp,
                result: result.clone(),
            },
        );
        Some(result)
    }

    pub(crate) fn reply_body(
        &self,
        client: u64,
        timestamp: u64,
        result: S::Output,
    ) -> crate::replica::PbftBody<S> {
        Body::Reply {
            view: self.view,
            client,
            timestamp,
            result,
        }
    }

    /// The read-only optimization (§5.1.3): answer from the executed state, unordered.
    fn answer_read_only(
        &mut self,
        request: &ClientRequest<S::Command, S::Query>,
        out: &mut Out<S>,
    ) {
        let Operation::Read(query) = &request.operation else {
            self.counters.invalid_messages += 1;
            return;
        };
        if !self.config.read_only {
            return;
        }
        let result = self.state.query(query);
        let reply = self.reply_body(request.client, request.timestamp, result);
        self.send(self.host_of(request.client), reply, out);
    }
}
