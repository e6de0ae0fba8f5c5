//! Cluster-wide safety properties of PBFT, checked after every step. Each is incremental:
//! it looks only at the effects of the step.
//!
//! * [`CommittedAgreement`] — no two replicas commit different batches at one sequence number
//!   (OSDI 1999 §4.2: "if committed-local(m, v, n, i) is true for some non-faulty i then
//!   committed(m, v, n) is true", and the prepared certificates of two batches at one
//!   sequence number cannot both exist; across views, §4.4's new-view rules).
//! * [`StateMachineSafety`] — no two replicas execute different batches at one sequence
//!   number (the safety property of §4: "all non-faulty replicas agree on the sequence numbers
//!   of requests that commit locally"), checked on `Apply`.
//! * [`CheckpointsAgree`] — no two replicas make different states stable at one sequence
//!   number (§4.3).
//! * [`ClientsAcceptCorrectResults`] — every result a client accepts for an ordered request is
//!   the one a correct execution of the agreed order produces (§4.1: "the client waits for
//!   f + 1 replies with the same result"; §4's linearizability). A reference copy of the
//!   service replays every sequence number's batch once, in order.
//!
//! In the simulator a Byzantine node's own state machine stays correct (only what it sends is
//! rewritten), so every node's state is checked; with more than `f` Byzantine nodes these
//! checks are expected to fail, and a test shows they do.

use std::collections::BTreeMap;

use concord_core::{ClusterInvariant, Effect, EffectOf, NodeId, StateMachineSafety, Violation};

use crate::auth::{short, Digest};
use crate::message::{ClientId, Operation, Response, Sequence, Timestamp, Write};
use crate::replica::{Executed, Pbft, Service};

/// Every PBFT safety checker, fresh.
pub fn invariants<S: Service + 'static>() -> Vec<Box<dyn ClusterInvariant<Pbft<S>>>> {
    vec![
        Box::new(CommittedAgreement::default()),
        Box::new(StateMachineSafety::<Pbft<S>>::default()),
        Box::new(CheckpointsAgree::default()),
        Box::new(ClientsAcceptCorrectResults::<S>::default()),
    ]
}

/// The batch digest committed at each sequence number, by the first replica to commit it.
#[derive(Debug, Default)]
pub struct CommittedAgreement {
    committed: BTreeMap<Sequence, (NodeId, Digest)>,
}

impl<S: Service> ClusterInvariant<Pbft<S>> for CommittedAgreement {
    fn name(&self) -> &'static str {
        "committed-agreement"
    }

    fn check(
        &mut self,
        _nodes: &[Option<&Pbft<S>>],
        stepped: NodeId,
        effects: &[EffectOf<Pbft<S>>],
    ) -> Result<(), Violation> {
        for effect in effects {
            let Effect::Persist {
                write: Write::Committed {
                    sequence, digest, ..
                },
                ..
            } = effect
            else {
                continue;
            };
            match self.committed.get(sequence) {
                None => {
                    self.committed.insert(*sequence, (stepped, *digest));
                }
                Some((first, known)) if known != digest => {
                    return Err(Violation::on_node(
                        "committed-agreement",
                        stepped,
                        format!(
                            "committed batch {} at sequence number {sequence}, where replica {first} committed {}",
                            short(digest),
                            short(known)
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// The state digest made stable at each checkpoint.
#[derive(Debug, Default)]
pub struct CheckpointsAgree {
    stable: BTreeMap<Sequence, (NodeId, Digest)>,
}

impl<S: Service> ClusterInvariant<Pbft<S>> for CheckpointsAgree {
    fn name(&self) -> &'static str {
        "checkpoints-agree"
    }

    fn check(
        &mut self,
        _nodes: &[Option<&Pbft<S>>],
        stepped: NodeId,
        effects: &[EffectOf<Pbft<S>>],
    ) -> Result<(), Violation> {
        for effect in effects {
            let Effect::Persist {
                write: Write::Checkpoint { proof, .. },
                ..
            } = effect
            else {
                continue;
            };
            let known = *self
                .stable
                .entry(proof.sequence)
                .or_insert((stepped, proof.digest));
            if known.1 != proof.digest {
                return Err(Violation::on_node(
                    "checkpoints-agree",
                    stepped,
                    format!(
                        "stable checkpoint {} has state {}, replica {} made {} stable",
                        proof.sequence,
                        short(&proof.digest),
                        known.0,
                        short(&known.1)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A reference execution of the agreed order, and what each ordered request returned in it.
pub struct ClientsAcceptCorrectResults<S: Service> {
    service: S,
    last: BTreeMap<ClientId, Timestamp>,
    next: Sequence,
    waiting: BTreeMap<Sequence, Executed<S>>,
    results: BTreeMap<(ClientId, Timestamp), S::Output>,
}

impl<S: Service> Default for ClientsAcceptCorrectResults<S> {
    fn default() -> Self {
        ClientsAcceptCorrectResults {
            service: S::default(),
            last: BTreeMap::new(),
            next: 1,
            waiting: BTreeMap::new(),
            results: BTreeMap::new(),
        }
    }
}

impl<S: Service> std::fmt::Debug for ClientsAcceptCorrectResults<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientsAcceptCorrectResults")
            .field("next", &self.next)
            .field("results", &self.results.len())
            .finish()
    }
}

impl<S: Service> ClientsAcceptCorrectResults<S> {
    fn replay(&mut self) {
        while let Some(batch) = self.waiting.remove(&self.next) {
            for request in batch {
                let last = self.last.entry(request.client).or_insert(0);
                if *last >= request.timestamp {
                    continue;
                }
                *last = request.timestamp;
                let output = match &request.operation {
                    Operation::Command(command) => self.service.apply(command),
                    Operation::Read(query) => self.service.query(query),
                };
                self.results
                    .insert((request.client, request.timestamp), output);
            }
            self.next += 1;
        }
    }
}

impl<S: Service> ClusterInvariant<Pbft<S>> for ClientsAcceptCorrectResults<S> {
    fn name(&self) -> &'static str {
        "clients-accept-correct-results"
    }

    fn check(
        &mut self,
        _nodes: &[Option<&Pbft<S>>],
        stepped: NodeId,
        effects: &[EffectOf<Pbft<S>>],
    ) -> Result<(), Violation> {
        for effect in effects {
            match effect {
                Effect::Apply { index, command } if *index >= self.next => {
                    self.waiting.entry(*index).or_insert_with(|| command.clone());
                    self.replay();
                }
                Effect::Reply {
                    response:
                        Response::Done {
                            client,
                            timestamp,
                            result,
                            read_only: false,
                        },
                    ..
                } => match self.results.get(&(*client, *timestamp)) {
                    Some(correct) if correct == result => {}
                    correct => {
                        return Err(Violation::on_node(
                            "clients-accept-correct-results",
                            stepped,
                            format!(
                                "client {client} accepted {result:?} for its request {timestamp}; the agreed order gives {correct:?}"
                            ),
                        ))
                    }
                },
                _ => {}
            }
        }
        Ok(())
    }
}
