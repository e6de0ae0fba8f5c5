//! PBFT in the simulator: its configuration (keys derived from the run's seed), and the
//! Byzantine replicas a seed picks — up to `f` of them, each with one of the attacks PBFT is
//! built to survive.
//!
//! The simulator's Byzantine hook rewrites what a node sends; the node's own state machine
//! stays correct. An attack that changes a message's content re-authenticates it with the
//! Byzantine node's own keys (HMACs, signatures, its clients' authenticators): what it cannot
//! do is speak for another replica, so a forged sender fails authentication and is counted.
//!
//! | attack | what the Byzantine replica sends |
//! |---|---|
//! | `corrupt-values` | wrong results in replies, wrong state digests in (re-signed) checkpoints, damaged state in state transfers |
//! | `equivocate` | to some replicas, the null batch where it tells the others a batch: different pre-prepares for one sequence number (as primary), conflicting prepares and commits |
//! | `silent` | nothing (a silent primary is replaced) |
//! | `slow` | its pre-prepares, late: held back and released in bursts (a slow primary) |
//! | `replay` | old messages of its own instead of new ones |
//! | `forge` | its messages claiming another sender |
//! | `wrong-digest` | prepares and commits for digests nobody proposed |
//! | `lying-view-change` | view changes claiming batches prepared that never were (re-signed); as new primary, new views whose pre-prepares do not follow from their view changes |
//! | `byzantine-client` | its clients' requests with a different operation for half the replicas, under one timestamp, each validly authenticated |
//! | `twins` | what two correct instances sharing its identity and keys send, each on its own (see [`crate::pbft_twins`]) |
//!
//! Swarm runs ([`run`]) simulate [`Replica`] nodes: a replica, or twins of one. The rewriting
//! attacks above are [`PbftAdversary`]; `twins` is a node configured with a second instance
//! ([`ReplicaConfig`]) and kept so by its [`TwinsSwitch`] behaviour.

use std::collections::{BTreeSet, VecDeque};

use concord_core::{seeded_rng, KvOperation, KvResult, KvStateMachine, NodeId, Rng, Value};
use concord_pbft::auth::encode;
use concord_pbft::{
    batch_digest, checkpoint_bytes, seal_with, AuthenticatedRequest, Body, ClientRequest, Config,
    Keys, Operation,
};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::byzantine::{BuiltIn, ByzantineBehavior, ByzantineKind, Corruptor, Outgoing};
use crate::engine::Simulation;
use crate::error::SimError;
pub use crate::pbft_twins::{Replica, ReplicaConfig, TwinsSwitch};
use crate::report::RunReport;
use crate::runner::{run_protocol_with, SimOptions};
use crate::swarm::FaultKind;

/// The PBFT replica the simulator runs: a replicated key-value map.
pub type Pbft = concord_pbft::Pbft<KvStateMachine>;

type Message = concord_pbft::PbftMessage<KvStateMachine>;

/// How many later sends a slow replica's pre-prepare waits for.
const SLOW_DELAY: u64 = 120;

/// The random stream the adversary is drawn from.
const ADVERSARY_STREAM: u64 = (1 << 32) + 16;

/// PBFT's settings in the simulator: the defaults, with keys derived from `seed`.
pub fn config(seed: u64) -> Config {
    Config {
        key_seed: seed,
        ..Config::default()
    }
}

/// Runs PBFT with `options`: the simulator's faults, and with `byzantine` among them (swarm
/// mode), up to `f` replicas attacking for the whole faulty part of the run (twins among
/// them: the nodes are [`Replica`]s).
pub fn run(options: &SimOptions, config: Config) -> Result<RunReport, SimError> {
    let byzantine = options.nemesis.is_none()
        && options.partition.is_none()
        && options.faults.kinds().contains(&FaultKind::Byzantine);
    let attacks = if byzantine {
        adversaries(
            options.seed,
            options.nodes,
            options.nodes.saturating_sub(1) / 3,
        )
    } else {
        Vec::new()
    };
    let replica_config = replica_config(config, &attacks);
    let mut report = run_protocol_with::<Replica>(
        options,
        replica_config,
        crate::pbft_twins::invariants(),
        |sim| {
            sim.set_corruptor(corruptor());
            install_attacks(sim, &attacks)
        },
    )?;
    report.byzantine = attacks
        .iter()
        .map(|(node, attack)| format!("n{node}: {}", attack.name()))
        .collect();
    Ok(report)
}

/// The nodes' settings for `attacks`: `config` for every instance, a second instance at the
/// nodes whose attack is `twins`.
pub fn replica_config(config: Config, attacks: &[(NodeId, PbftAttack)]) -> ReplicaConfig {
    let twins = attacks
        .iter()
        .filter(|(_, attack)| *attack == PbftAttack::Twins)
        .map(|(node, _)| *node);
    ReplicaConfig::new(config, twins)
}

/// Makes the nodes of `attacks` Byzantine: a [`PbftAdversary`] for a rewriting attack, the
/// [`TwinsSwitch`] for `twins` (the simulation's config must have made them twins:
/// [`replica_config`]). Each counts against the simulation's Byzantine budget.
pub fn install_attacks(
    sim: &mut Simulation<Replica>,
    attacks: &[(NodeId, PbftAttack)],
) -> Result<(), SimError> {
    let config = sim.node_config().clone();
    for &(node, attack) in attacks {
        let behavior: Box<dyn ByzantineBehavior<Replica>> = match attack {
            PbftAttack::Twins => {
                Box::new(config.switch(node).ok_or_else(|| SimError::InvalidOption {
                    name: "twins",
                    message: format!("node {node} is not configured as twins"),
                })?)
            }
            _ => Box::new(PbftAdversary::new(attack, node, sim.nodes(), &config.pbft)),
        };
        sim.set_byzantine(node, Some(behavior))?;
    }
    Ok(())
}

/// The corruptor for the built-in `corrupt` behaviour: damages the MAC, so receivers drop the
/// message and count it.
pub fn corruptor() -> Corruptor<Message> {
    Corruptor(std::sync::Arc::new(
        |message: &mut Message, rng: &mut Rng| {
            let byte = rng.gen_range(0..message.mac.len());
            message.mac[byte] ^= 1 << rng.gen_range(0..8);
        },
    ))
}

/// An attack a Byzantine PBFT replica carries out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PbftAttack {
    /// Wrong results, checkpoint digests and states.
    CorruptValues,
    /// Different batches for one sequence number to different replicas.
    Equivocate,
    /// Sends nothing.
    Silent,
    /// Sends late.
    Slow,
    /// Sends old messages again.
    Replay,
    /// Claims another sender.
    Forge,
    /// Prepares and commits for digests nobody proposed.
    WrongDigest,
    /// Lies in view changes and new views.
    LyingViewChange,
    /// Its clients send different requests to different replicas.
    ByzantineClient,
    /// Two correct instances share its identity (`crate::pbft_twins`).
    Twins,
}

impl PbftAttack {
    /// Every attack.
    pub const ALL: [PbftAttack; 10] = [
        PbftAttack::CorruptValues,
        PbftAttack::Equivocate,
        PbftAttack::Silent,
        PbftAttack::Slow,
        PbftAttack::Replay,
        PbftAttack::Forge,
        PbftAttack::WrongDigest,
        PbftAttack::LyingViewChange,
        PbftAttack::ByzantineClient,
        PbftAttack::Twins,
    ];

    /// The attacks that rewrite what a node sends ([`PbftAdversary`]): all but `twins`.
    pub const REWRITING: [PbftAttack; 9] = [
        PbftAttack::CorruptValues,
        PbftAttack::Equivocate,
        PbftAttack::Silent,
        PbftAttack::Slow,
        PbftAttack::Replay,
        PbftAttack::Forge,
        PbftAttack::WrongDigest,
        PbftAttack::LyingViewChange,
        PbftAttack::ByzantineClient,
    ];

    /// The attack's name.
    pub fn name(self) -> &'static str {
        match self {
            PbftAttack::CorruptValues => "corrupt-values",
            PbftAttack::Equivocate => "equivocate",
            PbftAttack::Silent => "silent",
            PbftAttack::Slow => "slow",
            PbftAttack::Replay => "replay",
            PbftAttack::Forge => "forge",
            PbftAttack::WrongDigest => "wrong-digest",
            PbftAttack::LyingViewChange => "lying-view-change",
            PbftAttack::ByzantineClient => crate::report::BYZANTINE_CLIENT,
            PbftAttack::Twins => "twins",
        }
    }
}

/// The Byzantine replicas of a seed: between 1 and `budget` of them (none for a zero budget),
/// the initial primary (node 0) among them half the time, each with an attack.
pub fn adversaries(seed: u64, nodes: usize, budget: usize) -> Vec<(NodeId, PbftAttack)> {
    let mut rng = seeded_rng(seed, ADVERSARY_STREAM);
    if budget == 0 || nodes == 0 {
        return Vec::new();
    }
    let count = rng.gen_range(1..=budget.min(nodes));
    let mut chosen = BTreeSet::new();
    if rng.gen_bool(0.5) {
        chosen.insert(0);
    }
    while chosen.len() < count {
        chosen.insert(rng.gen_range(0..nodes as NodeId));
    }
    chosen
        .into_iter()
        .map(|node| {
            let attack = PbftAttack::ALL[rng.gen_range(0..PbftAttack::ALL.len())];
            (node, attack)
        })
        .collect()
}

/// A Byzantine PBFT replica's sending side.
pub struct PbftAdversary {
    attack: PbftAttack,
    keys: Keys,
    replicas: usize,
    client_lanes: u64,
    /// The replicas `equivocate` and `byzantine-client` tell the other story.
    victims: BTreeSet<NodeId>,
    /// Messages `slow` holds back, with the send count at which each goes out.
    held: VecDeque<(u64, NodeId, Message)>,
    /// Messages this replica tried to send so far.
    sent: u64,
    built_in: Option<BuiltIn<Message>>,
}

impl std::fmt::Debug for PbftAdversary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PbftAdversary")
            .field("attack", &self.attack)
            .field("node", &self.keys.id())
            .finish()
    }
}

impl PbftAdversary {
    /// Replica `node` of `replicas` (its keys from `config`'s cluster secret) carrying out
    /// `attack`. For `twins`, which needs a second instance rather than rewriting, it sends
    /// everything unchanged ([`install_attacks`] installs twins).
    pub fn new(attack: PbftAttack, node: NodeId, replicas: usize, config: &Config) -> Self {
        let others: Vec<NodeId> = (0..replicas as NodeId).filter(|&n| n != node).collect();
        let victims = others.iter().copied().skip(others.len() / 2).collect();
        let built_in = match attack {
            PbftAttack::Replay => BuiltIn::new(ByzantineKind::Replay, None),
            PbftAttack::Forge => BuiltIn::new(ByzantineKind::Forge, None),
            _ => None,
        };
        PbftAdversary {
            attack,
            keys: Keys::new(config.key_seed, node, replicas),
            replicas,
            client_lanes: config.client_lanes.max(1),
            victims,
            held: VecDeque::new(),
            sent: 0,
            built_in,
        }
    }

    /// Tells `victims` the other story (`equivocate`, `byzantine-client`); by default the
    /// upper half of the other replicas.
    pub fn with_victims(mut self, victims: &[NodeId]) -> Self {
        self.victims = victims.iter().copied().collect();
        self
    }

    fn reseal(&self, to: NodeId, mut message: Message) -> Message {
        let bytes = encode(&message.body);
        message.mac = seal_with(&self.keys, to, &message.body, &bytes);
        message
    }

    fn null_digest() -> concord_pbft::Digest {
        batch_digest::<KvOperation, KvOperation>(&[])
    }

    fn rewrite(&mut self, to: NodeId, mut message: Message, rng: &mut Rng) -> Option<Message> {
        let id = self.keys.id();
        let changed = match (&self.attack, &mut message.body) {
            (PbftAttack::CorruptValues, Body::Reply { result, .. }) => {
                *result = KvResult::Read(Some(Value::Int(-1 - rng.gen_range(0..3))));
                true
            }
            (PbftAttack::CorruptValues, Body::Checkpoint(checkpoint)) => {
                checkpoint.digest = rng.gen();
                let bytes = checkpoint_bytes(checkpoint.sequence, &checkpoint.digest, id);
                checkpoint.signature = self.keys.sign(&bytes);
                true
            }
            (PbftAttack::CorruptValues, Body::State { snapshot, .. }) => {
                if let Some(byte) = snapshot.last_mut() {
                    *byte ^= 1;
                }
                true
            }
            (PbftAttack::Equivocate, Body::PrePrepare { digest, batch, .. })
                if self.victims.contains(&to) =>
            {
                *digest = Self::null_digest();
                batch.clear();
                true
            }
            (
                PbftAttack::Equivocate,
                Body::Prepare { digest, .. } | Body::Commit { digest, .. },
            ) if self.victims.contains(&to) => {
                *digest = Self::null_digest();
                true
            }
            (
                PbftAttack::WrongDigest,
                Body::Prepare { digest, .. } | Body::Commit { digest, .. },
            ) => {
                *digest = rng.gen();
                true
            }
            (PbftAttack::LyingViewChange, Body::ViewChange(signed)) => {
                let view_change = &mut signed.view_change;
                if view_change.view > 0 {
                    let lie = self.fake_batch(rng);
                    let digest = batch_digest(&lie);
                    let sequence = view_change.checkpoint.sequence + 1;
                    view_change.prepared.retain(|p| p.sequence != sequence);
                    view_change.prepared.insert(
                        0,
                        concord_pbft::message::PreparedEntry {
                            sequence,
                            view: view_change.view - 1,
                            digest,
                            batch: lie,
                        },
                    );
                    view_change
                        .pre_prepared
                        .push(concord_pbft::message::PrePreparedEntry {
                            sequence,
                            view: view_change.view - 1,
                            digest,
                        });
                    signed.signature = self.keys.sign(&encode(&signed.view_change));
                }
                true
            }
            (PbftAttack::LyingViewChange, Body::NewView(signed)) => {
                if let Some(first) = signed.new_view.pre_prepares.first_mut() {
                    first.1 = rng.gen();
                } else {
                    signed.new_view.pre_prepares.push((1, rng.gen()));
                }
                signed.signature = self.keys.sign(&encode(&signed.new_view));
                true
            }
            (PbftAttack::ByzantineClient, Body::Request(request))
                if request.request.client / self.client_lanes == id
                    && self.victims.contains(&to) =>
            {
                let changed = match &mut request.request.operation {
                    Operation::Command(
                        KvOperation::Write { value, .. } | KvOperation::Append { value, .. },
                    ) => {
                        *value += 100;
                        true
                    }
                    Operation::Command(KvOperation::Cas { to, .. }) => {
                        *to += 100;
                        true
                    }
                    _ => false,
                };
                if changed {
                    let bytes = encode(&request.request);
                    request.authenticator = (0..self.replicas as NodeId)
                        .map(|replica| {
                            self.keys
                                .client_mac(request.request.client, replica, &bytes)
                        })
                        .collect();
                }
                changed
            }
            _ => false,
        };
        Some(if changed {
            self.reseal(to, message)
        } else {
            message
        })
    }

    /// A batch with one request nobody sent (its authenticator is empty: no replica would
    /// accept it in a pre-prepare).
    fn fake_batch(&self, rng: &mut Rng) -> Vec<AuthenticatedRequest<KvOperation, KvOperation>> {
        vec![AuthenticatedRequest {
            request: ClientRequest {
                client: self.keys.id() * self.client_lanes,
                timestamp: u64::MAX - rng.gen_range(0..1_000),
                operation: Operation::Command(KvOperation::Write {
                    key: "k0".into(),
                    value: 666,
                }),
                read_only: false,
            },
            authenticator: Vec::new(),
        }]
    }
}

impl<N: concord_core::Node<Message = Message>> ByzantineBehavior<N> for PbftAdversary {
    fn name(&self) -> &'static str {
        self.attack.name()
    }

    fn on_send(
        &mut self,
        from: NodeId,
        to: NodeId,
        message: Message,
        nodes: usize,
        rng: &mut Rng,
    ) -> Vec<Outgoing<Message>> {
        let plain = |to, message| Outgoing {
            to,
            claimed_from: from,
            message,
        };
        match self.attack {
            PbftAttack::Silent => Vec::new(),
            PbftAttack::Replay | PbftAttack::Forge => match self.built_in.as_mut() {
                Some(built_in) => {
                    ByzantineBehavior::<Pbft>::on_send(built_in, from, to, message, nodes, rng)
                }
                None => vec![plain(to, message)],
            },
            PbftAttack::Slow => {
                // Its pre-prepares go out late: each waits until the replica has sent
                // `SLOW_DELAY` more messages (its status messages alone take well over the
                // view-change timeout for that). Everything else goes out on time, so the
                // replica looks alive.
                self.sent += 1;
                let mut out = Vec::new();
                while self
                    .held
                    .front()
                    .is_some_and(|(due, _, _)| *due <= self.sent)
                {
                    let (_, to, message) = self.held.pop_front().expect("not empty");
                    out.push(plain(to, message));
                }
                if matches!(message.body, Body::PrePrepare { .. }) {
                    self.held.push_back((self.sent + SLOW_DELAY, to, message));
                } else {
                    out.push(plain(to, message));
                }
                out
            }
            _ => self
                .rewrite(to, message, rng)
                .map(|message| vec![plain(to, message)])
                .unwrap_or_default(),
        }
    }
}
