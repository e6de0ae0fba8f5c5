//! Checkpoints, garbage collection and state transfer (OSDI 1999 §4.3), and the status
//! messages that make replicas resend what a peer lacks (Castro's thesis §5.2).
//!
//! Every `K` sequence numbers a replica signs `<CHECKPOINT, n, d, i>` with the digest of its
//! state. A quorum of matching checkpoints makes `n` *stable*: the proof of it becomes the low
//! watermark `h`, and the log, the certificates and the older checkpoints below it are
//! discarded. A replica that learns of a stable checkpoint it has not reached adopts the proof
//! and fetches the state from a peer (checking it against the digest the quorum signed).

use concord_core::NodeId;

use crate::auth::{digest_bytes, encode, Digest};
use crate::message::{Body, CheckpointProof, Sequence, SignedCheckpoint, View, Write};
use crate::replica::{Out, Pbft, Service};

/// How many sequence numbers a status answer resends at most.
const RETRANSMIT_MAX: usize = 16;

/// What a checkpoint signature covers.
pub fn checkpoint_bytes(sequence: Sequence, digest: &Digest, replica: NodeId) -> Vec<u8> {
    encode(&("checkpoint", sequence, digest, replica))
}

impl<S: Service> Pbft<S> {
    /// Takes the checkpoint of the state just executed and multicasts it, signed.
    pub(crate) fn take_checkpoint(&mut self, out: &mut Out<S>) {
        let sequence = self.executed;
        let snapshot = self.snapshot();
        let digest = digest_bytes(&snapshot);
        self.own_checkpoints.insert(sequence, (digest, snapshot));
        let signed = SignedCheckpoint {
            sequence,
            digest,
            replica: self.id,
            signature: self
                .keys
                .sign(&checkpoint_bytes(sequence, &digest, self.id)),
        };
        self.broadcast(Body::Checkpoint(signed.clone()), out);
        self.record_checkpoint(signed, out);
    }

    /// `<CHECKPOINT, n, d, j>` from replica `from`.
    pub(crate) fn on_checkpoint(
        &mut self,
        from: NodeId,
        checkpoint: SignedCheckpoint,
        out: &mut Out<S>,
    ) {
        let sequence = checkpoint.sequence;
        if sequence <= self.stable.sequence
            || sequence > self.stable.sequence + 4 * self.config.log_window
        {
            return;
        }
        if checkpoint.replica != from || !sequence.is_multiple_of(self.config.checkpoint_interval) {
            self.counters.invalid_messages += 1;
            return;
        }
        let bytes = checkpoint_bytes(sequence, &checkpoint.digest, from);
        if !self
            .keys
            .verify_signature(from, &bytes, &checkpoint.signature)
        {
            self.counters.authentication_failures += 1;
            return;
        }
        self.record_checkpoint(checkpoint, out);
    }

    fn record_checkpoint(&mut self, checkpoint: SignedCheckpoint, out: &mut Out<S>) {
        let sequence = checkpoint.sequence;
        let digest = checkpoint.digest;
        let votes = self.checkpoint_votes.entry(sequence).or_default();
        votes.insert(checkpoint.replica, checkpoint);
        let signatures: Vec<SignedCheckpoint> = votes
            .values()
            .filter(|vote| vote.digest == digest)
            .cloned()
            .collect();
        if signatures.len() >= self.quorums.quorum() && sequence > self.stable.sequence {
            let proof = CheckpointProof {
                sequence,
                digest,
                signatures,
            };
            self.adopt_checkpoint(proof, out);
        }
    }

    /// Whether `proof` shows a stable checkpoint: a quorum of distinct replicas signed it (or
    /// it is the initial state).
    pub(crate) fn verify_proof(&self, proof: &CheckpointProof) -> bool {
        if proof.sequence == 0 {
            return proof.signatures.is_empty() && proof.digest == [0; 32];
        }
        if !proof
            .sequence
            .is_multiple_of(self.config.checkpoint_interval)
        {
            return false;
        }
        if *proof == self.stable {
            return true;
        }
        let mut signers = std::collections::BTreeSet::new();
        for signed in &proof.signatures {
            let bytes = checkpoint_bytes(proof.sequence, &proof.digest, signed.replica);
            if signed.sequence == proof.sequence
                && signed.digest == proof.digest
                && self
                    .keys
                    .verify_signature(signed.replica, &bytes, &signed.signature)
            {
                signers.insert(signed.replica);
            }
        }
        signers.len() >= self.quorums.quorum()
    }

    /// Makes a (verified) checkpoint stable: moves the low watermark, discards what is below,
    /// persists it with its state when this replica has the state.
    pub(crate) fn adopt_checkpoint(&mut self, proof: CheckpointProof, out: &mut Out<S>) {
        let sequence = proof.sequence;
        if sequence <= self.stable.sequence {
            return;
        }
        let snapshot = match self.own_checkpoints.get(&sequence) {
            Some((digest, snapshot)) if *digest == proof.digest => Some(snapshot.clone()),
            Some(_) => {
                self.conflict = Some(format!(
                    "a quorum signed checkpoint {sequence} with a digest other than this replica's"
                ));
                None
            }
            None => None,
        };
        if let Some(snapshot) = &snapshot {
            self.persist(
                Write::Checkpoint {
                    proof: proof.clone(),
                    snapshot: snapshot.clone(),
                },
                out,
            );
        }
        self.stable = proof;
        self.stable_snapshot = snapshot;
        self.collect_garbage(sequence);
        self.next_sequence = self.next_sequence.max(sequence + 1);
    }

    /// Discards the log, certificates, votes and batches at or below `sequence`.
    pub(crate) fn collect_garbage(&mut self, sequence: Sequence) {
        let above = sequence + 1;
        self.log = self.log.split_off(&above);
        self.checkpoint_votes = self.checkpoint_votes.split_off(&above);
        self.own_checkpoints = self.own_checkpoints.split_off(&above);
        self.prepared_set = self.prepared_set.split_off(&above);
        self.pre_prepared_set = self.pre_prepared_set.split_off(&above);
        let mut live: std::collections::BTreeSet<Digest> = self
            .pre_prepared_set
            .values()
            .flat_map(|views| views.keys().copied())
            .collect();
        live.extend(
            self.log
                .values()
                .filter_map(|slot| slot.pre_prepare.as_ref().map(|pp| pp.digest)),
        );
        self.batches.retain(|digest, _| live.contains(digest));
    }

    /// A stable checkpoint and its state from a peer (state transfer).
    pub(crate) fn on_state(
        &mut self,
        now: concord_core::Time,
        checkpoint: CheckpointProof,
        snapshot: Vec<u8>,
        out: &mut Out<S>,
    ) {
        let sequence = checkpoint.sequence;
        if sequence <= self.executed {
            return;
        }
        if !self.verify_proof(&checkpoint)
            || digest_bytes(&snapshot) != checkpoint.digest
            || !self.install_snapshot(&snapshot)
        {
            self.counters.invalid_messages += 1;
            return;
        }
        self.executed = sequence;
        self.counters.states_installed += 1;
        if sequence >= self.stable.sequence {
            self.persist(
                Write::Checkpoint {
                    proof: checkpoint.clone(),
                    snapshot: snapshot.clone(),
                },
                out,
            );
            self.stable = checkpoint;
            self.stable_snapshot = Some(snapshot);
            self.collect_garbage(sequence);
            self.next_sequence = self.next_sequence.max(sequence + 1);
        } else {
            self.own_checkpoints
                .insert(sequence, (checkpoint.digest, snapshot));
        }
        self.update_request_timer(now);
    }

    /// `<STATUS>` from a peer: send it what it lacks — the stable state, the new view, this
    /// replica's view change, or the normal-case messages above what it executed.
    pub(crate) fn on_status(
        &mut self,
        from: NodeId,
        view: View,
        active: bool,
        executed: Sequence,
        out: &mut Out<S>,
    ) {
        if executed < self.stable.sequence {
            if let Some(snapshot) = &self.stable_snapshot {
                let body = Body::State {
                    checkpoint: self.stable.clone(),
                    snapshot: snapshot.clone(),
                };
                self.send(from, body, out);
            }
        }
        let behind = view < self.view || (view == self.view && !active);
        if behind && self.active {
            if let Some(new_view) = self
                .last_new_view
                .as_ref()
                .filter(|nv| nv.new_view.view == self.view)
            {
                self.send(from, Body::NewView(new_view.clone()), out);
            }
        } else if view <= self.view && !self.active {
            if let Some(own) = self
                .view_changes
                .get(&self.id)
                .filter(|vc| vc.view_change.view == self.view)
            {
                self.send(from, Body::ViewChange(own.clone()), out);
            }
        }
        if view == self.view && active && self.active {
            self.retransmit(from, executed, out);
        } else if executed < self.executed {
            self.retransmit_committed(from, executed, out);
        }
    }

    /// Resends, above `executed`, each committed batch and this replica's commit for it: a
    /// peer in another view executes them on a quorum of such commits.
    fn retransmit_committed(&mut self, to: NodeId, executed: Sequence, out: &mut Out<S>) {
        let mut bodies = Vec::new();
        for (&sequence, slot) in self.log.range(executed + 1..).take(RETRANSMIT_MAX) {
            let (Some(digest), Some(pp)) = (slot.committed, &slot.pre_prepare) else {
                continue;
            };

            let Some(&(view, voted)) = slot.commits.get(&self.id) else {
                continue;
            };
            if voted != digest {
                continue;
            }
            bodies.push(Body::Batch {
                sequence,
                digest,
                batch: pp.batch.clone(),
            });
            bodies.push(Body::Commit {
                view,
                sequence,
                digest,
            });
        }
        for body in bodies {
            self.send(to, body, out);
        }
    }

    /// Resends this replica's pre-prepares (as primary), prepares and commits of the current
    /// view above `executed`.
    fn retransmit(&mut self, to: NodeId, executed: Sequence, out: &mut Out<S>) {
        let primary = self.primary_of(self.view) == self.id;
        let mut bodies = Vec::new();
        for (&sequence, slot) in self.log.range(executed + 1..).take(RETRANSMIT_MAX) {
            let Some(pp) = slot.pre_prepare.as_ref().filter(|pp| pp.view == self.view) else {
                continue;
            };
            let (view, digest) = (pp.view, pp.digest);
            if primary {
                bodies.push(Body::PrePrepare {
                    view,
                    sequence,
                    digest,
                    batch: pp.batch.clone(),
                });
            } else {
                bodies.push(Body::Prepare {
                    view,
                    sequence,
                    digest,
                });
            }
            if slot.prepared {
                bodies.push(Body::Commit {
                    view,
                    sequence,
                    digest,
                });
            }
        }
        for body in bodies {
            self.send(to, body, out);
        }
    }
}
