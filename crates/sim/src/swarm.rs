//! Swarm testing: the seed alone decides which fault kinds are on, how often they strike, and
//! the whole nemesis schedule (Groce et al., "Swarm Testing", ISSTA 2012; the FoundationDB and
//! TigerBeetle simulators do the same).
//!
//! A generated plan always ends with a `reset` (heal, clear link faults, restore clocks, resume
//! and restart every node) followed by a quiet period, so liveness can be observed.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use concord_core::time::{MILLISECOND, SECOND};
use concord_core::{seeded_rng, Duration, NodeId, Rng, Time};
use rand::seq::SliceRandom;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::byzantine::ByzantineKind;
use crate::engine::streams;
use crate::nemesis::{NemesisAction, NemesisPlan, NemesisStep};

/// A kind of fault the swarm generator can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Partitions of every shape (groups, isolation, one-way cuts, quorum-loss,
    /// constrained-election, chained).
    Partition,
    /// Crash and restart.
    Crash,
    /// Message loss.
    Loss,
    /// Message duplication.
    Duplicate,
    /// Message reordering.
    Reorder,
    /// Pause and resume.
    Pause,
    /// Clock drift.
    Drift,
    /// Byzantine senders (never part of `all`: crash-fault protocols do not tolerate them).
    Byzantine,
}

impl FaultKind {
    /// The kinds `all` selects.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Partition,
        FaultKind::Crash,
        FaultKind::Loss,
        FaultKind::Duplicate,
        FaultKind::Reorder,
        FaultKind::Pause,
        FaultKind::Drift,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::Crash => "crash",
            FaultKind::Loss => "loss",
            FaultKind::Duplicate => "duplicate",
            FaultKind::Reorder => "reorder",
            FaultKind::Pause => "pause",
            FaultKind::Drift => "drift",
            FaultKind::Byzantine => "byzantine",
        }
    }
}

/// Which faults a run may inject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultSelection {
    /// Every crash-fault kind ([`FaultKind::ALL`]).
    All,
    /// No faults.
    None,
    /// Exactly these.
    Only(BTreeSet<FaultKind>),
}

/// A fault list that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault kind '{0}'; known: all, none, partition, crash, loss, duplicate, reorder, pause, drift, byzantine")]
pub struct UnknownFault(pub String);

impl FromStr for FaultSelection {
    type Err = UnknownFault;

    /// Reads `all`, `none` or a comma-separated list like `partition,crash,loss`.
    fn from_str(text: &str) -> Result<Self, UnknownFault> {
        match text.trim() {
            "all" => return Ok(FaultSelection::All),
            "none" | "" => return Ok(FaultSelection::None),
            _ => {}
        }
        let mut kinds = BTreeSet::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "all" {
                // `all,byzantine`: every crash fault and the Byzantine ones.
                kinds.extend(FaultKind::ALL);
                continue;
            }
            let kind = [FaultKind::Byzantine]
                .into_iter()
                .chain(FaultKind::ALL)
                .find(|k| k.name() == name)
                .ok_or_else(|| UnknownFault(name.to_string()))?;
            kinds.insert(kind);
        }
        Ok(FaultSelection::Only(kinds))
    }
}

impl fmt::Display for FaultSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultSelection::All => f.write_str("all"),
            FaultSelection::None => f.write_str("none"),
            FaultSelection::Only(kinds) => {
                let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

impl FaultSelection {
    /// The selected kinds.
    pub fn kinds(&self) -> BTreeSet<FaultKind> {
        match self {
            FaultSelection::All => FaultKind::ALL.into_iter().collect(),
            FaultSelection::None => BTreeSet::new(),
            FaultSelection::Only(kinds) => kinds.clone(),
        }
    }
}

/// The shape of one swarm run, decided by the seed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SwarmProfile {
    /// The fault kinds switched on for this seed.
    pub enabled: Vec<FaultKind>,
    /// Mean time between two faults, ns.
    pub mean_interval: Duration,
}

/// Generates the nemesis plan of a swarm run.
///
/// Faults strike in `[start, end)`; at `end` a `reset` restores everything. `nodes` is the
/// cluster size.
pub fn swarm_plan(
    seed: u64,
    nodes: usize,
    selection: &FaultSelection,
    start: Time,
    end: Time,
) -> (SwarmProfile, NemesisPlan) {
    let mut rng = seeded_rng(seed, streams::SWARM);
    // Byzantine nodes need a budget: f >= 1 takes at least 4 nodes (n >= 3f + 1).
    let selected: Vec<FaultKind> = selection
        .kinds()
        .into_iter()
        .filter(|&k| k != FaultKind::Byzantine || nodes >= 4)
        .collect();
    let mut enabled: Vec<FaultKind> = selected
        .iter()
        .copied()
        .filter(|_| rng.gen_bool(0.6))
        .collect();
    if enabled.is_empty() && !selected.is_empty() {
        enabled.push(selected[rng.gen_range(0..selected.len())]);
    }
    let mean_interval = [100, 250, 500, 1_000, 2_000][rng.gen_range(0..5)] * MILLISECOND;
    let profile = SwarmProfile {
        enabled: enabled.clone(),
        mean_interval,
    };
    let mut steps = Vec::new();
    let mut time = start;
    if !enabled.is_empty() && nodes > 0 {
        loop {
            time += rng.gen_range(mean_interval / 2..=mean_interval * 3 / 2);
            if time >= end {
                break;
            }
            let kind = enabled[rng.gen_range(0..enabled.len())];
            let generator = Generator {
                rng: &mut rng,
                nodes,
                end,
            };
            generator.fault(kind, time, &mut steps);
        }
    }
    steps.push(NemesisStep {
        at: end,
        action: NemesisAction::Reset {},
    });
    steps.sort_by_key(|s| s.at);
    (profile, NemesisPlan { steps })
}

struct Generator<'a> {
    rng: &'a mut Rng,
    nodes: usize,
    end: Time,
}

impl Generator<'_> {
    fn node(&mut self) -> NodeId {
        self.rng.gen_range(0..self.nodes as NodeId)
    }

    fn later(&mut self, time: Time, min: Duration, max: Duration) -> Time {
        (time + self.rng.gen_range(min..=max)).min(self.end)
    }

    fn fault(self, kind: FaultKind, time: Time, steps: &mut Vec<NemesisStep>) {
        let mut this = self;
        let mut push = |at: Time, action: NemesisAction| steps.push(NemesisStep { at, action });
        match kind {
            FaultKind::Partition => {
                let until = this.later(time, 200 * MILLISECOND, 3 * SECOND);
                for (offset, action) in this.partition() {
                    push((time + offset).min(until), action);
                }
                push(until, NemesisAction::Heal {});
            }
            FaultKind::Crash => {
                let nodes = vec![this.node()];
                let until = this.later(time, 50 * MILLISECOND, 3 * SECOND);
                push(
                    time,
                    NemesisAction::Crash {
                        nodes: nodes.clone(),
                    },
                );
                push(until, NemesisAction::Restart { nodes: Some(nodes) });
            }
            FaultKind::Pause => {
                let nodes = vec![this.node()];
                let until = this.later(time, 50 * MILLISECOND, 2 * SECOND);
                push(
                    time,
                    NemesisAction::Pause {
                        nodes: nodes.clone(),
                    },
                );
                push(until, NemesisAction::Resume { nodes: Some(nodes) });
            }
            FaultKind::Loss => {
                let probability = this.rng.gen_range(0.01..0.3);
                let until = this.later(time, 200 * MILLISECOND, 3 * SECOND);
                push(
                    time,
                    NemesisAction::Loss {
                        probability,
                        from: None,
                        to: None,
                    },
                );
                push(
                    until,
                    NemesisAction::Loss {
                        probability: 0.0,
                        from: None,
                        to: None,
                    },
                );
            }
            FaultKind::Duplicate => {
                let probability = this.rng.gen_range(0.01..0.3);
                let until = this.later(time, 200 * MILLISECOND, 3 * SECOND);
                push(
                    time,
                    NemesisAction::Duplicate {
                        probability,
                        from: None,
                        to: None,
                    },
                );
                push(
                    until,
                    NemesisAction::Duplicate {
                        probability: 0.0,
                        from: None,
                        to: None,
                    },
                );
            }
            FaultKind::Reorder => {
                let probability = this.rng.gen_range(0.05..0.5);
                let max_delay = Some(this.rng.gen_range(5..=50) * MILLISECOND);
                let until = this.later(time, 200 * MILLISECOND, 3 * SECOND);
                push(
                    time,
                    NemesisAction::Reorder {
                        probability,
                        max_delay,
                        from: None,
                        to: None,
                    },
                );
                push(
                    until,
                    NemesisAction::Reorder {
                        probability: 0.0,
                        max_delay: None,
                        from: None,
                        to: None,
                    },
                );
            }
            FaultKind::Drift => {
                let nodes = vec![this.node()];
                let rate = (this.rng.gen_range(0.9..1.1f64) * 1000.0).round() / 1000.0;
                push(time, NemesisAction::Drift { nodes, rate });
            }
            FaultKind::Byzantine => {
                let nodes = vec![this.node()];
                let kinds = [
                    ByzantineKind::Drop,
                    ByzantineKind::Duplicate,
                    ByzantineKind::Replay,
                    ByzantineKind::Forge,
                ];
                let behavior = kinds[this.rng.gen_range(0..kinds.len())];
                let until = this.later(time, 200 * MILLISECOND, 3 * SECOND);
                push(
                    time,
                    NemesisAction::Byzantine {
                        nodes: nodes.clone(),
                        behavior,
                    },
                );
                push(until, NemesisAction::ByzantineOff { nodes: Some(nodes) });
            }
        }
    }

    /// One partition of a random shape, as `(offset from start, action)` steps.
    fn partition(&mut self) -> Vec<(Duration, NemesisAction)> {
        let mut order: Vec<NodeId> = (0..self.nodes as NodeId).collect();
        order.shuffle(self.rng);
        let shapes = if self.nodes >= 3 { 6 } else { 3 };
        match self.rng.gen_range(0..shapes) {
            0 => {
                let split = self.rng.gen_range(1..self.nodes.max(2));
                let (a, b) = order.split_at(split.min(order.len()));
                vec![(
                    0,
                    NemesisAction::Partition {
                        groups: vec![a.to_vec(), b.to_vec()],
                    },
                )]
            }
            1 => {
                let size = self.rng.gen_range(1..=self.nodes.div_ceil(2).max(1));
                vec![(
                    0,
                    NemesisAction::Isolate {
                        nodes: order[..size].to_vec(),
                    },
                )]
            }
            2 => {
                let from = vec![order[0]];
                let to = order[1..]
                    .iter()
                    .copied()
                    .filter(|_| self.rng.gen_bool(0.5))
                    .collect();
                vec![(0, NemesisAction::Cut { from, to })]
            }
            3 => vec![(0, NemesisAction::QuorumLoss { center: None })],
            4 => {
                // Make the center's log outdated first, then constrain the election.
                let center = order[0];
                let lag = self.rng.gen_range(100..=1_000) * MILLISECOND;
                vec![
                    (
                        0,
                        NemesisAction::Isolate {
                            nodes: vec![center],
                        },
                    ),
                    (
                        lag,
                        NemesisAction::ConstrainedElection {
                            center: Some(center),
                            leader: None,
                        },
                    ),
                ]
            }
            _ => {
                let length = self.rng.gen_range(3..=self.nodes);
                vec![(
                    0,
                    NemesisAction::Chained {
                        chain: Some(order[..length].to_vec()),
                    },
                )]
            }
        }
    }
}
