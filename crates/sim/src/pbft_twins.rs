//! Twins in the simulator: a node that runs two PBFT replica instances under one identity
//! (one id, one set of keys), the `twins` attack of [`crate::pbft::PbftAttack`].
//!
//! The simulator has one slot per node, so the twins live inside one node, [`Replica`]:
//!
//! - **Inputs.** The twins sit on the two sides of a network split, as in the Twins
//!   methodology (Bano et al. 2022): when the node restores as twins it draws (from the run's
//!   seed) a nonempty proper subset of its peers that only the second instance hears; every
//!   other peer is heard only by the first. Ticks go to both, the first, then the second.
//!   Client requests go to the first instance only: the node's clients live there, so every
//!   history the simulator checks is a correct client's. The twins diverge because each sees
//!   a different part of the cluster — backups' twins prepare and commit different things —
//!   and, for a primary, because only the first knows its own clients' requests before they
//!   are retransmitted. (A message a replica sends to itself stays inside that instance: the
//!   twins never hear each other directly.)
//! - **Outputs.** Both instances' sends leave under the shared identity, through the node's
//!   Byzantine hook like any other node's. The second instance's `Apply` and `Reply` effects
//!   are dropped (it has no requests of its own; what it executes is a Byzantine node's
//!   business).
//! - **Durability.** Each instance has its own storage ([`ReplicaStorage`]); writes are tagged
//!   with the instance ([`ReplicaWrite`]) and persist tokens are remapped (the first's token
//!   `t` becomes `2t`, the second's `2t + 1`), so each `Persisted` confirmation reaches the
//!   instance that asked for it with its own token. Both share the node's disk queue, so a
//!   write of either holds back later sends of both (stricter than needed, never looser).
//! - **Views.** The node's status, state digest, and what the cluster checkers see
//!   ([`FirstTwinView`]) are the first instance's; local invariants are checked on both.
//!
//! A node is twins from the start when its [`ReplicaConfig`] says so, and stays twins while
//! its [`TwinsSwitch`] is installed as its Byzantine behaviour (counted against the `f`
//! Byzantine nodes). When the switch is removed — the swarm plan's final reset, which also
//! restarts every node — the second instance is dropped and the node is a correct replica
//! again from its first instance's storage.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use concord_core::{
    ClusterInvariant, Duration, Effect, EffectOf, Env, Input, KvOperation, KvOutcome, KvService,
    Node, NodeId, NodeStatus, Rng, Time, Violation,
};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::byzantine::{ByzantineBehavior, Outgoing};
use crate::pbft::Pbft;

type PbftWrite = <Pbft as Node>::Write;
type PbftStorage = <Pbft as Node>::Storage;

/// Which of a node's instances a write belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Twin {
    /// The instance every node has: its status and checks are the node's.
    First,
    /// The twin's second instance.
    Second,
}

/// A write of one of the node's instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaWrite {
    /// The instance that wrote it.
    pub twin: Twin,
    /// The write.
    pub write: PbftWrite,
}

/// The durable state of a node: one storage per instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStorage {
    /// The first instance's storage.
    pub first: PbftStorage,
    /// The second instance's storage (empty unless the node is twins).
    pub second: PbftStorage,
}

/// PBFT's settings, and which nodes run twins (each with the switch that keeps them twins).
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// Every instance's PBFT settings.
    pub pbft: concord_pbft::Config,
    twins: BTreeMap<NodeId, Arc<AtomicBool>>,
}

impl ReplicaConfig {
    /// `pbft`, with twins at `twins`.
    pub fn new(pbft: concord_pbft::Config, twins: impl IntoIterator<Item = NodeId>) -> Self {
        ReplicaConfig {
            pbft,
            twins: twins
                .into_iter()
                .map(|node| (node, Arc::new(AtomicBool::new(true))))
                .collect(),
        }
    }

    /// The nodes configured to run twins.
    pub fn twin_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.twins.keys().copied()
    }

    /// The Byzantine behaviour that keeps `node`'s twins running while installed (`None` if
    /// `node` is not configured as twins).
    pub fn switch(&self, node: NodeId) -> Option<TwinsSwitch> {
        self.twins.get(&node).map(|on| TwinsSwitch {
            node,
            on: Arc::clone(on),
        })
    }

    fn twins_on(&self, node: NodeId) -> Option<Arc<AtomicBool>> {
        self.twins
            .get(&node)
            .filter(|on| on.load(Ordering::Relaxed))
            .cloned()
    }
}

impl From<concord_pbft::Config> for ReplicaConfig {
    fn from(pbft: concord_pbft::Config) -> Self {
        ReplicaConfig::new(pbft, [])
    }
}

/// The `twins` attack's Byzantine behaviour: messages pass unchanged (both instances' sends
/// already leave under the node's identity); removing it (dropping it) retires the second
/// instance.
#[derive(Debug)]
pub struct TwinsSwitch {
    node: NodeId,
    on: Arc<AtomicBool>,
}

impl TwinsSwitch {
    /// The node whose twins this switch keeps running.
    pub fn node(&self) -> NodeId {
        self.node
    }
}

impl Drop for TwinsSwitch {
    fn drop(&mut self) {
        self.on.store(false, Ordering::Relaxed);
    }
}

impl ByzantineBehavior<Replica> for TwinsSwitch {
    fn name(&self) -> &'static str {
        "twins"
    }

    fn on_send(
        &mut self,
        from: NodeId,
        to: NodeId,
        message: <Replica as Node>::Message,
        _nodes: usize,
        _rng: &mut Rng,
    ) -> Vec<Outgoing<<Replica as Node>::Message>> {
        vec![Outgoing {
            to,
            claimed_from: from,
            message,
        }]
    }
}

/// A simulated PBFT node: one replica, or twins (two instances under one identity).
#[derive(Debug)]
pub struct Replica {
    first: Pbft,
    second: Option<Pbft>,
    /// The peers only the second instance hears (while it runs); the first hears the others.
    second_hears: BTreeSet<NodeId>,
    /// While set, the second instance runs.
    switch: Option<Arc<AtomicBool>>,
    scratch: Vec<EffectOf<Pbft>>,
}

impl Replica {
    /// The first instance: the node's status, state and checked history.
    pub fn first(&self) -> &Pbft {
        &self.first
    }

    /// The second instance, while the node runs twins.
    pub fn second(&self) -> Option<&Pbft> {
        self.second.as_ref()
    }

    /// Whether the node runs twins.
    pub fn is_twins(&self) -> bool {
        self.second.is_some()
    }

    /// The peers only the second instance hears, while the node runs twins.
    pub fn second_hears(&self) -> &BTreeSet<NodeId> {
        &self.second_hears
    }

    fn retire_if_switched_off(&mut self) {
        if self
            .switch
            .as_ref()
            .is_some_and(|on| !on.load(Ordering::Relaxed))
        {
            self.second = None;
            self.switch = None;
            self.second_hears.clear();
        }
    }
}

impl std::ops::Deref for Replica {
    type Target = Pbft;

    fn deref(&self) -> &Pbft {
        &self.first
    }
}

impl Node for Replica {
    type Message = <Pbft as Node>::Message;
    type Request = <Pbft as Node>::Request;
    type Response = <Pbft as Node>::Response;
    type Write = ReplicaWrite;
    type Storage = ReplicaStorage;
    type Command = <Pbft as Node>::Command;
    type Config = ReplicaConfig;

    fn restore(
        id: NodeId,
        members: &[NodeId],
        config: &ReplicaConfig,
        storage: &ReplicaStorage,
        now: Time,
        rng: &mut Rng,
    ) -> Self {
        let first = Pbft::restore(id, members, &config.pbft, &storage.first, now, rng);
        let switch = config.twins_on(id);
        let second = switch
            .as_ref()
            .map(|_| Pbft::restore(id, members, &config.pbft, &storage.second, now, rng));
        let mut second_hears = BTreeSet::new();
        if second.is_some() {
            let mut peers: Vec<NodeId> = members.iter().copied().filter(|&p| p != id).collect();
            if peers.len() >= 2 {
                let count = rng.gen_range(1..peers.len());
                for _ in 0..count {
                    let pick = rng.gen_range(0..peers.len());
                    second_hears.insert(peers.swap_remove(pick));
                }
            }
        }
        Replica {
            first,
            second,
            second_hears,
            switch,
            scratch: Vec::new(),
        }
    }

    fn apply_write(storage: &mut ReplicaStorage, write: &ReplicaWrite) {
        let storage = match write.twin {
            Twin::First => &mut storage.first,
            Twin::Second => &mut storage.second,
        };
        Pbft::apply_write(storage, &write.write);
    }

    fn is_barrier(write: &ReplicaWrite) -> bool {
        Pbft::is_barrier(&write.write)
    }

    fn step(
        &mut self,
        env: &mut Env<'_>,
        input: Input<Self::Message, Self::Request>,
        effects: &mut Vec<EffectOf<Self>>,
    ) {
        self.retire_if_switched_off();
        let (to_first, to_second) = match input {
            Input::Persisted { token } if token % 2 == 0 => {
                (Some(Input::Persisted { token: token / 2 }), None)
            }
            Input::Persisted { token } => (None, Some(Input::Persisted { token: token / 2 })),
            Input::Request { .. } | Input::PeerLost { .. } => (Some(input), None),
            Input::Message { from, .. } if self.second_hears.contains(&from) => (None, Some(input)),
            Input::Message { .. } => (Some(input), None),
            Input::Tick => (Some(input.clone()), Some(input)),
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        if let Some(input) = to_first {
            scratch.clear();
            self.first.step(env, input, &mut scratch);
            effects.extend(scratch.drain(..).map(|effect| match effect {
                Effect::Persist { token, write } => Effect::Persist {
                    token: 2 * token,
                    write: ReplicaWrite {
                        twin: Twin::First,
                        write,
                    },
                },
                Effect::Send { to, message } => Effect::Send { to, message },
                Effect::Apply { index, command } => Effect::Apply { index, command },
                Effect::Reply { id, response } => Effect::Reply { id, response },
            }));
        }
        if let (Some(input), Some(second)) = (to_second, self.second.as_mut()) {
            scratch.clear();
            second.step(env, input, &mut scratch);
            effects.extend(scratch.drain(..).filter_map(|effect| match effect {
                Effect::Persist { token, write } => Some(Effect::Persist {
                    token: 2 * token + 1,
                    write: ReplicaWrite {
                        twin: Twin::Second,
                        write,
                    },
                }),
                Effect::Send { to, message } => Some(Effect::Send { to, message }),
                Effect::Apply { .. } | Effect::Reply { .. } => None,
            }));
        }
        self.scratch = scratch;
    }

    fn next_deadline(&self) -> Option<Time> {
        let first = self.first.next_deadline();
        match self.second.as_ref().and_then(Node::next_deadline) {
            Some(second) => Some(first.map_or(second, |first| first.min(second))),
            None => first,
        }
    }

    fn status(&self) -> NodeStatus {
        self.first.status()
    }

    fn check_invariants(&self) -> Result<(), Violation> {
        self.first.check_invariants()?;
        match &self.second {
            Some(second) => second.check_invariants(),
            None => Ok(()),
        }
    }

    fn id(&self) -> NodeId {
        Node::id(&self.first)
    }

    fn election_timeout(config: &ReplicaConfig) -> Duration {
        Pbft::election_timeout(&config.pbft)
    }

    fn state_digest(&self) -> Option<u64> {
        self.first.state_digest()
    }
}

impl KvService for Replica {
    fn kv_request(operation: &KvOperation) -> Self::Request {
        Pbft::kv_request(operation)
    }

    fn kv_outcome(response: &Self::Response) -> KvOutcome {
        Pbft::kv_outcome(response)
    }
}

/// PBFT's cluster checkers on the first instance of every node: its state, and its effects
/// (the second instance's writes are left out; it applies and replies nothing).
#[derive(Debug)]
pub struct FirstTwinView {
    invariants: Vec<Box<dyn ClusterInvariant<Pbft>>>,
    effects: Vec<EffectOf<Pbft>>,
}

impl FirstTwinView {
    /// `invariants`, seeing first instances.
    pub fn new(invariants: Vec<Box<dyn ClusterInvariant<Pbft>>>) -> Self {
        FirstTwinView {
            invariants,
            effects: Vec::new(),
        }
    }
}

/// Every PBFT checker, on first instances.
pub fn invariants() -> Vec<Box<dyn ClusterInvariant<Replica>>> {
    vec![Box::new(FirstTwinView::new(concord_pbft::invariants()))]
}

impl ClusterInvariant<Replica> for FirstTwinView {
    fn name(&self) -> &'static str {
        "pbft-checkers"
    }

    fn check(
        &mut self,
        nodes: &[Option<&Replica>],
        stepped: NodeId,
        effects: &[EffectOf<Replica>],
    ) -> Result<(), Violation> {
        let firsts: Vec<Option<&Pbft>> = nodes.iter().map(|n| n.map(|r| &r.first)).collect();
        self.effects.clear();
        // Sends are of no interest to the checkers; the rest is the first instance's.
        self.effects
            .extend(effects.iter().filter_map(|effect| match effect {
                Effect::Persist { token, write } if write.twin == Twin::First => {
                    Some(Effect::Persist {
                        token: token / 2,
                        write: write.write.clone(),
                    })
                }
                Effect::Apply { index, command } => Some(Effect::Apply {
                    index: *index,
                    command: command.clone(),
                }),
                Effect::Reply { id, response } => Some(Effect::Reply {
                    id: *id,
                    response: response.clone(),
                }),
                _ => None,
            }));
        for invariant in &mut self.invariants {
            invariant.check(&firsts, stepped, &self.effects)?;
        }
        Ok(())
    }

    fn observe_request(&mut self, node: NodeId, request: &<Replica as Node>::Request) {
        for invariant in &mut self.invariants {
            invariant.observe_request(node, request);
        }
    }
}
