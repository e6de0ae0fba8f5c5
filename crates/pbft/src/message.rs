//! PBFT's vocabulary: views, sequence numbers, client requests, the messages replicas exchange,
//! and what a replica makes durable (Castro and Liskov, OSDI 1999, §4; TOCS 2002, §4).

use std::collections::BTreeMap;

use concord_core::NodeId;
use serde::{Deserialize, Serialize};

use crate::auth::{Digest, Mac, Signature};

/// A view number: the primary of view `v` is replica `v mod n`.
pub type View = u64;

/// A sequence number the primary assigns to a batch of requests (1-based; 0 means "none").
pub type Sequence = u64;

/// Identifies a client. In the simulator a replica's node also hosts a client proxy with a few
/// client identities of its own (see `Config::client_lanes`).
pub type ClientId = u64;

/// A client's request timestamp: strictly increasing per client (§4.1: "timestamps for `c`'s
/// requests are totally ordered").
pub type Timestamp = u64;

/// What a client asks the replicated service to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation<C, Q> {
    /// A state-changing command.
    Command(C),
    /// A read, ordered through the protocol like a command (or, with `read_only`, answered
    /// straight from each replica's state: §5.1.3).
    Read(Q),
}

/// `<REQUEST, o, t, c>`: a client's request without its authenticator. What replicas order,
/// digest and execute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest<C, Q> {
    /// The client.
    pub client: ClientId,
    /// Its timestamp.
    pub timestamp: Timestamp,
    /// The operation.
    pub operation: Operation<C, Q>,
    /// Sent under the read-only optimization (§5.1.3): answered without ordering.
    pub read_only: bool,
}

/// A client request with its authenticator: one HMAC per replica, under the key that client
/// shares with that replica (§5.1: authenticators replace signatures on requests).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticatedRequest<C, Q> {
    /// The request.
    pub request: ClientRequest<C, Q>,
    /// `authenticator[r]` is the MAC for replica `r`.
    pub authenticator: Vec<Mac>,
}

/// `<CHECKPOINT, n, d, i>` signed by replica `i`: its state after executing sequence number
/// `n` has digest `d` (§4.3). Signed because 2f+1 of them are forwarded as a proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    /// The sequence number.
    pub sequence: Sequence,
    /// The state digest.
    pub digest: Digest,
    /// The replica.
    pub replica: NodeId,
    /// Its ed25519 signature.
    pub signature: Signature,
}

/// A stable checkpoint: a quorum of matching signed checkpoints (empty for the initial state
/// at sequence number 0, which needs no proof).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointProof {
    /// The sequence number.
    pub sequence: Sequence,
    /// The state digest.
    pub digest: Digest,
    /// The quorum of signed checkpoints.
    pub signatures: Vec<SignedCheckpoint>,
}

/// A prepared certificate as a VIEW-CHANGE reports it (the `P` set of TOCS §4.5): batch
/// `digest` prepared at `sequence` in `view`, with the batch so the new primary can re-propose it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedEntry<C, Q> {
    /// The sequence number.
    pub sequence: Sequence,
    /// The view it prepared in.
    pub view: View,
    /// The batch digest.
    pub digest: Digest,
    /// The batch.
    pub batch: Vec<AuthenticatedRequest<C, Q>>,
}

/// A pre-prepared batch as a VIEW-CHANGE reports it (the `Q` set of TOCS §4.5): the latest
/// view in which the replica accepted a pre-prepare of `digest` at `sequence`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrePreparedEntry {
    /// The sequence number.
    pub sequence: Sequence,
    /// The latest view.
    pub view: View,
    /// The batch digest.
    pub digest: Digest,
}

/// `<VIEW-CHANGE, v+1, C, P, Q, i>` signed by replica `i` (§4.4; TOCS §4.5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChange<C, Q> {
    /// The view being moved to.
    pub view: View,
    /// The sender's stable checkpoint.
    pub checkpoint: CheckpointProof,
    /// What prepared above the checkpoint (latest view per sequence number).
    pub prepared: Vec<PreparedEntry<C, Q>>,
    /// What was pre-prepared above the checkpoint (latest view per digest and sequence number).
    pub pre_prepared: Vec<PrePreparedEntry>,
    /// The sender.
    pub replica: NodeId,
}

/// A VIEW-CHANGE with its sender's ed25519 signature (forwarded inside NEW-VIEW).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedViewChange<C, Q> {
    /// The message.
    pub view_change: ViewChange<C, Q>,
    /// The signature of `view_change.replica`.
    pub signature: Signature,
}

/// `<NEW-VIEW, v+1, V, O>` signed by the new primary: the view changes it decided on and, per
/// sequence number above the chosen checkpoint, the batch digest re-proposed (the empty
/// batch's digest for a null request).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewView<C, Q> {
    /// The new view.
    pub view: View,
    /// The view changes the decision was made from (`V`).
    pub view_changes: Vec<SignedViewChange<C, Q>>,
    /// The pre-prepares of the new view (`O`): `(sequence, digest)` in sequence order.
    pub pre_prepares: Vec<(Sequence, Digest)>,
}

/// A NEW-VIEW with the new primary's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedNewView<C, Q> {
    /// The message.
    pub new_view: NewView<C, Q>,
    /// The signature of the new view's primary.
    pub signature: Signature,
}

/// What a message says, before authentication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body<C, Q, O> {
    /// `<REQUEST, o, t, c>`: client → replicas.
    Request(AuthenticatedRequest<C, Q>),
    /// `<PRE-PREPARE, v, n, d>, m`: primary → backups; assigns `sequence` to the batch.
    PrePrepare {
        /// The view.
        view: View,
        /// The sequence number.
        sequence: Sequence,
        /// The batch digest.
        digest: Digest,
        /// The batch (empty: a null request).
        batch: Vec<AuthenticatedRequest<C, Q>>,
    },
    /// `<PREPARE, v, n, d, i>`: backup → all.
    Prepare {
        /// The view.
        view: View,
        /// The sequence number.
        sequence: Sequence,
        /// The batch digest.
        digest: Digest,
    },
    /// `<COMMIT, v, n, d, i>`: replica → all, once prepared.
    Commit {
        /// The view.
        view: View,
        /// The sequence number.
        sequence: Sequence,
        /// The batch digest.
        digest: Digest,
    },
    /// `<REPLY, v, t, c, i, r>`: replica → client.
    Reply {
        /// The replica's view (tells the client who the primary is).
        view: View,
        /// The client.
        client: ClientId,
        /// The request's timestamp.
        timestamp: Timestamp,
        /// The result.
        result: O,
    },
    /// A signed checkpoint (§4.3).
    Checkpoint(SignedCheckpoint),
    /// A signed view change (§4.4).
    ViewChange(SignedViewChange<C, Q>),
    /// A signed new view (§4.4).
    NewView(SignedNewView<C, Q>),
    /// A replica's progress, sent periodically so peers retransmit what it lacks (the
    /// thesis's status messages, §5.2 of Castro's PhD thesis).
    Status {
        /// The sender's view.
        view: View,
        /// Whether it is active in that view (not changing views).
        active: bool,
        /// The last sequence number it executed.
        executed: Sequence,
    },
    /// A committed batch, for a replica that lacks it (it accepts it only under a quorum of
    /// matching commits for its digest).
    Batch {
        /// The sequence number.
        sequence: Sequence,
        /// The digest.
        digest: Digest,
        /// The batch.
        batch: Vec<AuthenticatedRequest<C, Q>>,
    },
    /// A stable checkpoint and the state it certifies (state transfer, §4.3: "a replica
    /// that fell behind fetches the state").
    State {
        /// The proof of the checkpoint.
        checkpoint: CheckpointProof,
        /// The state (`StateMachine::snapshot` and the last reply to every client).
        snapshot: Vec<u8>,
    },
}

/// A message on the wire: its body and the sender's MAC for the receiver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message<C, Q, O> {
    /// The content.
    pub body: Body<C, Q, O>,
    /// HMAC-SHA256 of the sender, the receiver and the body, under their shared key.
    pub mac: Mac,
}

/// A client's request to the node hosting its proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<C, Q> {
    /// Order and execute a command.
    Propose(C),
    /// Read (ordered, or read-only when the configuration allows it).
    Read(Q),
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PbftError {
    /// Too many requests are waiting at this client proxy.
    Overloaded,
}

/// What the client proxy answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response<O> {
    /// `f + 1` replicas (a quorum for read-only requests) sent this result.
    Done {
        /// The client identity the proxy used.
        client: ClientId,
        /// The request's timestamp.
        timestamp: Timestamp,
        /// The result.
        result: O,
        /// Answered under the read-only optimization (a quorum of matching replies).
        read_only: bool,
    },
    /// The request was refused before it was sent.
    Failed(PbftError),
    /// The proxy stopped waiting for `f + 1` matching replies ([`crate::Config::client_give_up`]):
    /// the request may or may not execute.
    Unknown {
        /// The client identity the proxy used.
        client: ClientId,
        /// The request's timestamp.
        timestamp: Timestamp,
    },
}

/// A durable mutation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write<C, Q> {
    /// Entered `view` (`active`) or started changing to it (`!active`). A barrier: no message
    /// of an older view may follow.
    View {
        /// The view.
        view: View,
        /// Whether the new view was entered.
        active: bool,
        /// The NEW-VIEW it was entered by (none for a view change started), kept so that a
        /// restarted replica can still bring a peer left in an older view along.
        new_view: Option<Box<SignedNewView<C, Q>>>,
    },
    /// Accepted a pre-prepare (or, as primary, assigned a sequence number). A barrier for the
    /// PREPARE (or PRE-PREPARE) that follows, so a restart never accepts another batch there.
    PrePrepared {
        /// The view.
        view: View,
        /// The sequence number.
        sequence: Sequence,
        /// The digest.
        digest: Digest,
        /// The batch.
        batch: Vec<AuthenticatedRequest<C, Q>>,
    },
    /// The batch prepared. A barrier for the COMMIT that follows.
    Prepared {
        /// The view.
        view: View,
        /// The sequence number.
        sequence: Sequence,
        /// The digest.
        digest: Digest,
    },
    /// The batch committed (so a restart re-executes it). A barrier for the replies of its
    /// execution.
    Committed {
        /// The sequence number.
        sequence: Sequence,
        /// The digest.
        digest: Digest,
        /// The batch.
        batch: Vec<AuthenticatedRequest<C, Q>>,
    },
    /// A stable checkpoint and its state; drops everything at or below it. No barrier.
    Checkpoint {
        /// The proof.
        proof: CheckpointProof,
        /// The state.
        snapshot: Vec<u8>,
    },
}

/// The durable state of a replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage<C, Q> {
    /// The latest view entered or being changed to.
    pub view: View,
    /// Whether `view` was entered.
    pub active: bool,
    /// The stable checkpoint and its state (none: the initial state).
    pub checkpoint: Option<(CheckpointProof, Vec<u8>)>,
    /// Batches by digest, above the checkpoint.
    pub batches: BTreeMap<Digest, Vec<AuthenticatedRequest<C, Q>>>,
    /// The `Q` set: per sequence number, the latest view each digest was pre-prepared in.
    pub pre_prepared: BTreeMap<Sequence, BTreeMap<Digest, View>>,
    /// The `P` set: per sequence number, the latest view and digest that prepared.
    pub prepared: BTreeMap<Sequence, (View, Digest)>,
    /// Committed digests by sequence number, above the checkpoint.
    pub committed: BTreeMap<Sequence, Digest>,
    /// The NEW-VIEW that entered `view`, if `view` was entered by one.
    pub new_view: Option<Box<SignedNewView<C, Q>>>,
}

impl<C, Q> Default for Storage<C, Q> {
    fn default() -> Self {
        Storage {
            view: 0,
            active: true,
            checkpoint: None,
            batches: BTreeMap::new(),
            pre_prepared: BTreeMap::new(),
            prepared: BTreeMap::new(),
            committed: BTreeMap::new(),
            new_view: None,
        }
    }
}

impl<C: Clone, Q: Clone> Storage<C, Q> {
    /// The stable checkpoint's sequence number (0 without one).
    pub fn stable(&self) -> Sequence {
        self.checkpoint
            .as_ref()
            .map_or(0, |(proof, _)| proof.sequence)
    }

    /// Adds one confirmed write.
    pub fn apply(&mut self, write: &Write<C, Q>) {
        match write {
            Write::View {
                view,
                active,
                new_view,
            } => {
                if (*view, *active) > (self.view, self.active) {
                    self.view = *view;
                    self.active = *active;
                    self.new_view = new_view.clone();
                }
            }
            Write::PrePrepared {
                view,
                sequence,
                digest,
                batch,
            } => {
                if *sequence <= self.stable() {
                    return;
                }
                self.batches.insert(*digest, batch.clone());
                let views = self.pre_prepared.entry(*sequence).or_default();
                let latest = views.entry(*digest).or_insert(*view);
                *latest = (*latest).max(*view);
            }
            Write::Prepared {
                view,
                sequence,
                digest,
            } => {
                if *sequence <= self.stable() {
                    return;
                }
                let entry = self.prepared.entry(*sequence).or_insert((*view, *digest));
                if *view >= entry.0 {
                    *entry = (*view, *digest);
                }
            }
            Write::Committed {
                sequence,
                digest,
                batch,
            } => {
                if *sequence > self.stable() {
                    self.committed.insert(*sequence, *digest);
                    self.batches.insert(*digest, batch.clone());
                }
            }
            Write::Checkpoint { proof, snapshot } => {
                if proof.sequence <= self.stable() {
                    return;
                }
                let above = proof.sequence + 1;
                self.pre_prepared = self.pre_prepared.split_off(&above);
                self.prepared = self.prepared.split_off(&above);
                self.committed = self.committed.split_off(&above);
                let live: std::collections::BTreeSet<Digest> = self
                    .pre_prepared
                    .values()
                    .flat_map(|views| views.keys().copied())
                    .chain(self.committed.values().copied())
                    .collect();
                self.batches.retain(|digest, _| live.contains(digest));
                self.checkpoint = Some((proof.clone(), snapshot.clone()));
            }
        }
    }
}
