//! The protocol contract: events in, an ordered list of effects out.
//!
//! ```text
//!            Input::Message / Tick / Request / Persisted
//!                         │
//!                 ┌───────▼────────┐
//!    Env{now,rng} │   Node::step   │ check_invariants()
//!                 └───────┬────────┘
//!                         │ Vec<Effect>, in order
//!       Send ─ Persist(token, write) ─ Apply ─ Reply ─ Send ...
//! ```
//!
//! **Ordering rule for drivers.** Effects are performed in the order emitted, and every
//! [`Effect::Persist`] is a barrier: a `Send` or `Reply` emitted after a `Persist` (in the same
//! step or any later one) is released only once that write, and every write before it, is
//! durable. Writes reach storage in emission order. When a write is durable the driver feeds
//! [`Input::Persisted`] back with its token. A crash loses exactly the writes not yet confirmed.
//! This is what lets a node say "persist my vote, then send it" as two effects in a row.
//!
//! A node may exempt a write from the barrier with [`Node::is_barrier`]: a write no later
//! message depends on (a Raft leader's own log appends) still reaches storage in order and is
//! still confirmed, but sends and replies after it need not wait for it.
//!
//! A node may also mark a write as a *checkpoint* with [`Node::is_checkpoint`]: one that only
//! restates what the writes before it add up to (a Raft snapshot of its own applied state). A
//! driver may confirm a checkpoint as soon as every write before it is durable, and make it
//! durable later (a real runtime folds it into its next log compaction instead of writing it
//! out while other writes wait), so a crash may lose a confirmed checkpoint, but never a write
//! before it nor a write after it that was confirmed.

use std::fmt::Debug;

use crate::{Duration, NodeStatus, Rng, Time};

/// Identifies a node in a cluster. Node ids are small integers, `0..n` in the simulator.
pub type NodeId = u64;

/// Identifies one client request, chosen by the driver; replies carry it back.
pub type RequestId = u64;

/// Names one persist effect; the driver hands it back in [`Input::Persisted`].
pub type PersistToken = u64;

/// What the driver lends a node for one step: the node's current time and its seeded generator.
#[derive(Debug)]
pub struct Env<'a> {
    /// The node's current time (its own clock: the simulator may make it drift).
    pub now: Time,
    /// The node's seeded random generator; the only randomness a node may use.
    pub rng: &'a mut Rng,
}

/// One input to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<M, R> {
    /// A message from a peer. `from` is what the network says; Byzantine peers may lie.
    Message {
        /// The sender, as the transport reports it.
        from: NodeId,
        /// The message.
        message: M,
    },
    /// A timer fired: the node's clock reached a deadline it asked for (see [`Node::next_deadline`]),
    /// or the driver's periodic tick.
    Tick,
    /// A client request.
    Request {
        /// The driver's id for this request; the reply carries it.
        id: RequestId,
        /// The request.
        request: R,
    },
    /// The write with this token, and every write before it, is durable.
    Persisted {
        /// The token of the confirmed write.
        token: PersistToken,
    },
    /// The driver's connection to `peer` broke: the peer's process may have crashed (its
    /// kernel closed its sockets). A hint, never a fact: it may come late, come while the peer
    /// is alive (a reset connection), or never come (a partition or a power cut closes
    /// nothing). A node must stay safe whatever it makes of it; most ignore it.
    PeerLost {
        /// The peer.
        peer: NodeId,
    },
}

/// One effect a node asks its driver to perform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect<M, W, C, O> {
    /// Send a message to a peer.
    Send {
        /// The destination.
        to: NodeId,
        /// The message.
        message: M,
    },
    /// Make `write` durable, then confirm with [`Input::Persisted`]. A barrier for later sends and replies.
    Persist {
        /// The token to confirm.
        token: PersistToken,
        /// The durable mutation (appended to the node's write-ahead log by a real driver).
        write: W,
    },
    /// A committed command was applied to the state machine at `index`. Drivers record these
    /// to check that no two nodes apply different commands at one index.
    Apply {
        /// The log index (slot, sequence number) of the command.
        index: u64,
        /// The command.
        command: C,
    },
    /// Answer a client request.
    Reply {
        /// The request being answered.
        id: RequestId,
        /// The answer.
        response: O,
    },
}

/// A broken invariant: which one, on which node (if one), and what was seen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invariant '{invariant}' violated{}: {detail}", node.map(|n| format!(" on node {n}")).unwrap_or_default())]
pub struct Violation {
    /// The invariant's short name, e.g. `election-safety`.
    pub invariant: &'static str,
    /// The node whose state breaks it, when it is a single node's.
    pub node: Option<NodeId>,
    /// What was observed.
    pub detail: String,
}

impl Violation {
    /// A violation of `invariant` by one node.
    pub fn on_node(invariant: &'static str, node: NodeId, detail: impl Into<String>) -> Self {
        Violation {
            invariant,
            node: Some(node),
            detail: detail.into(),
        }
    }

    /// A cluster-wide violation of `invariant`.
    pub fn cluster(invariant: &'static str, detail: impl Into<String>) -> Self {
        Violation {
            invariant,
            node: None,
            detail: detail.into(),
        }
    }
}

/// The effect type of node type `N`.
pub type EffectOf<N> =
    Effect<<N as Node>::Message, <N as Node>::Write, <N as Node>::Command, <N as Node>::Response>;

/// A protocol node: a deterministic state machine that turns inputs into effects.
pub trait Node: Sized {
    /// Messages between peers.
    type Message: Clone + Debug;
    /// Client requests.
    type Request: Clone + Debug;
    /// Replies to clients.
    type Response: Clone + Debug;
    /// A durable mutation, carried by [`Effect::Persist`].
    type Write: Clone + Debug;
    /// The durable state a node restarts from: what all confirmed writes add up to.
    type Storage: Clone + Debug + Default;
    /// A committed command, reported by [`Effect::Apply`].
    type Command: Clone + Debug + PartialEq;
    /// Static configuration (timeouts, limits).
    type Config: Clone + Debug;

    /// Starts (or restarts after a crash) node `id` of a cluster whose initial members are
    /// `members`, from its durable `storage`. Fresh nodes get `Storage::default()`.
    fn restore(
        id: NodeId,
        members: &[NodeId],
        config: &Self::Config,
        storage: &Self::Storage,
        now: Time,
        rng: &mut Rng,
    ) -> Self;

    /// Adds one confirmed write to durable storage. Drivers call this in emission order; a real
    /// runtime replays its write-ahead log through it on restart.
    fn apply_write(storage: &mut Self::Storage, write: &Self::Write);

    /// Whether sends and replies emitted after `write` must wait until it is durable (the
    /// ordering rule above). True unless the protocol knows that no later message depends on
    /// this write — a Raft leader's own log appends, which it counts towards commitment only
    /// once confirmed (Raft thesis §10.2.1: the leader writes its log in parallel with
    /// replication). A later barrier write still waits for every earlier write, and a crash
    /// still loses exactly the unconfirmed writes.
    fn is_barrier(write: &Self::Write) -> bool {
        let _ = write;
        true
    }

    /// Whether the driver may hold `write`'s sync back a little, to make later writes durable
    /// with it: nothing is expected to wait for it soon. A hint about timing only — the write
    /// keeps its place in the order, and is confirmed when it is durable as any other. A Raft
    /// leader's own log append, while its followers can commit without it (the leader counts
    /// its own copy only once confirmed) and more than one entry awaits commitment. False by
    /// default.
    fn may_delay_sync(&self, write: &Self::Write) -> bool {
        let _ = write;
        false
    }

    /// Whether `later`, a message to the same peer sent after `earlier`, makes `earlier`
    /// unnecessary: a driver that releases both at once (sends held behind the same write,
    /// the ordering rule above) may then drop `earlier`, as a network may. A hint about cost
    /// only; it must be transitive, so that dropping along a chain leaves the last message
    /// of it. A Raft follower's acknowledgements of the same leader's appends, each covering
    /// the ones before. False by default.
    fn supersedes(earlier: &Self::Message, later: &Self::Message) -> bool {
        let _ = (earlier, later);
        false
    }

    /// Whether `write` is a checkpoint (module docs): it changes nothing the writes before it
    /// do not already hold, so restarting without it, from those writes and the ones after it,
    /// gives an equivalent node. Its confirmation says only that the writes before it are
    /// durable, so nothing should wait for it ([`Node::is_barrier`] false). False by default.
    fn is_checkpoint(write: &Self::Write) -> bool {
        let _ = write;
        false
    }

    /// Handles one input, appending the effects it causes to `effects` in order.
    #[allow(clippy::type_complexity)]
    fn step(
        &mut self,
        env: &mut Env<'_>,
        input: Input<Self::Message, Self::Request>,
        effects: &mut Vec<Effect<Self::Message, Self::Write, Self::Command, Self::Response>>,
    );

    /// The next time this node wants an [`Input::Tick`], on its own clock. Drivers tick it then
    /// (and may tick it more often: a tick before the deadline is harmless).
    fn next_deadline(&self) -> Option<Time>;

    /// The node's health as the toolkit shows it.
    fn status(&self) -> NodeStatus;

    /// Checks this node's local invariants; the simulator calls it after every step.
    fn check_invariants(&self) -> Result<(), Violation>;

    /// The node's id.
    fn id(&self) -> NodeId;

    /// A short sanity bound on how long the protocol may go without electing a leader in a
    /// healthy network; used by the toolkit to size observation windows.
    fn election_timeout(config: &Self::Config) -> Duration;

    /// A digest of the replicated state (the state machine's contents), so drivers can check
    /// that replicas converged to the same state, not only to the same index. `None` when the
    /// protocol keeps no replicated state.
    fn state_digest(&self) -> Option<u64> {
        None
    }
}

/// A stable 64-bit FNV-1a digest of `bytes`: the same on every platform and release, unlike
/// `std`'s hashers.
pub fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A cluster-wide safety property, checked by the simulator after every step.
///
/// Each property lives in its own file in its protocol's crate and names its source
/// (paper section or TLA+ invariant).
pub trait ClusterInvariant<N: Node>: Debug {
    /// The property's short name, e.g. `election-safety`.
    fn name(&self) -> &'static str;

    /// Called after `stepped` handled an input and emitted `effects`. `nodes[i]` is node `i`,
    /// `None` while crashed.
    fn check(
        &mut self,
        nodes: &[Option<&N>],
        stepped: NodeId,
        effects: &[EffectOf<N>],
    ) -> Result<(), Violation>;

    /// Called before node `node` handles a client request: lets a property relate what is
    /// decided to what clients asked for (nontriviality: only proposed values are chosen).
    fn observe_request(&mut self, node: NodeId, request: &N::Request) {
        let _ = (node, request);
    }
}

/// A node that serves the key-value workload of [`crate::kv`]: the simulator's clients use this
/// to turn operations into requests and responses into outcomes.
pub trait KvService: Node {
    /// The request for one key-value operation.
    fn kv_request(operation: &crate::KvOperation) -> Self::Request;
    /// What a response means for the client that sent it.
    fn kv_outcome(response: &Self::Response) -> crate::KvOutcome;
}
