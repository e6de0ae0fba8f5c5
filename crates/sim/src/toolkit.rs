//! The cluster toolkit: create a simulated cluster, watch its health, partition it, and
//! observe what the partition does.
//!
//! ```no_run
//! use concord_sim::{create_cluster, ClusterOptions};
//! use concord_core::time::SECOND;
//!
//! let mut cluster = create_cluster("raft", 5, 42, &ClusterOptions::default()).unwrap();
//! cluster.run_for(2 * SECOND).unwrap();
//! println!("{:?}", cluster.health().leader);
//! cluster.isolate(&[0, 1]).unwrap();
//! let effects = cluster.observe(5 * SECOND).unwrap();
//! cluster.heal();
//! ```

use std::collections::BTreeMap;

use concord_check::{EventType, History};
use concord_core::time::SECOND;
use concord_core::{
    seeded_rng, ClusterInvariant, Duration, KvService, Node, NodeId, NodeStatus, Role, Time,
};
use serde::Serialize;

use crate::engine::{streams, Observation, SimConfig, Simulation};
use crate::error::SimError;
use crate::nemesis::{ActionError, NemesisAction, NemesisPlan};
use crate::network::LinkConfig;
use crate::report::{Failure, Stats};
use crate::topology::TopologyError;
use crate::workload::{Workload, WorkloadConfig};

/// What went wrong creating or driving a cluster.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ToolkitError {
    /// No such algorithm.
    #[error("unknown algorithm '{name}'; supported: {supported}")]
    UnknownAlgorithm {
        /// The name given.
        name: String,
        /// The supported names, comma-separated.
        supported: String,
    },
    /// A known algorithm without an implementation yet.
    #[error("algorithm '{name}' is not supported yet; supported: {supported}")]
    NotSupportedYet {
        /// The name given.
        name: String,
        /// The supported names, comma-separated.
        supported: String,
    },
    /// A cluster of zero nodes.
    #[error("a cluster needs at least one node")]
    NoNodes,
    /// More nodes than the simulator allows.
    #[error("a cluster may have at most {max} nodes, got {nodes}")]
    TooManyNodes {
        /// The size asked for.
        nodes: usize,
        /// The limit.
        max: usize,
    },
    /// A node id or partition shape that does not fit the cluster.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// The simulation refused a setting or an action.
    #[error("{0}")]
    Simulation(Box<SimError>),
}

impl From<SimError> for ToolkitError {
    fn from(error: SimError) -> Self {
        match error {
            SimError::Topology(error) | SimError::Action(ActionError::Topology(error)) => {
                ToolkitError::Topology(error)
            }
            SimError::NoNodes => ToolkitError::NoNodes,
            SimError::Toolkit(error) => error,
            SimError::NoSuchNode { node, nodes } => {
                ToolkitError::Topology(TopologyError::NoSuchNode { node, nodes })
            }
            other => ToolkitError::Simulation(Box::new(other)),
        }
    }
}

/// The largest cluster the toolkit builds.
pub const MAX_NODES: usize = 255;

/// The algorithms [`create_cluster`] builds.
pub fn supported_algorithms() -> &'static [&'static str] {
    crate::algorithms::SUPPORTED
}

/// A cluster's health: the seed's `monitor_consensus_health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterHealth {
    /// Simulated time, ns.
    pub time: Time,
    /// The leader, if exactly one node believes itself leader in the highest term any node
    /// claims leadership of.
    pub leader: Option<NodeId>,
    /// Nodes in the follower role.
    pub followers: Vec<NodeId>,
    /// The highest term (ballot, view) of any node.
    pub term: u64,
    /// The leader's log length (the longest log when there is no leader).
    pub log_length: u64,
    /// The highest commit index of any node.
    pub commit_index: u64,
    /// Nodes up and running.
    pub nodes_up: usize,
    /// Per-node rows.
    pub nodes: Vec<NodeStatus>,
}

/// The node that believes itself leader in the highest term claimed by any leader, when it is
/// the only one claiming that term.
pub fn unique_leader(statuses: &[NodeStatus]) -> Option<NodeId> {
    let term = statuses
        .iter()
        .filter(|s| s.role == Role::Leader)
        .map(|s| s.term)
        .max()?;
    let mut leaders = statuses
        .iter()
        .filter(|s| s.role == Role::Leader && s.term == term);
    let leader = leaders.next()?;
    leaders.next().is_none().then_some(leader.id)
}

impl ClusterHealth {
    /// Summarizes per-node statuses at `time`.
    pub fn from_statuses(time: Time, statuses: Vec<NodeStatus>) -> Self {
        let leader = unique_leader(&statuses);
        let log_length = match leader {
            Some(leader) => statuses[leader as usize].log_length,
            None => statuses.iter().map(|s| s.log_length).max().unwrap_or(0),
        };
        ClusterHealth {
            time,
            leader,
            followers: statuses
                .iter()
                .filter(|s| s.role == Role::Follower)
                .map(|s| s.id)
                .collect(),
            term: statuses.iter().map(|s| s.term).max().unwrap_or(0),
            log_length,
            commit_index: statuses.iter().map(|s| s.commit_index).max().unwrap_or(0),
            nodes_up: statuses.iter().filter(|s| s.role != Role::Down).count(),
            nodes: statuses,
        }
    }
}

/// A leader seen during an observation window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeaderSeen {
    /// The node.
    pub node: NodeId,
    /// Its term.
    pub term: u64,
}

/// What one side of a partition did during an observation window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionSide {
    /// The side's nodes.
    pub nodes: Vec<NodeId>,
    /// Whether a node of this side became leader in a term higher than any this side had
    /// when the window opened.
    pub leader_elected: bool,
    /// Every (node, term) of this side seen acting as leader during the window.
    pub leaders: Vec<LeaderSeen>,
    /// The highest commit index on this side when the window opened.
    pub commit_index_before: u64,
    /// The highest commit index on this side when it closed.
    pub commit_index_after: u64,
    /// Whether the log replicated: the commit index advanced on this side.
    pub log_replicated: bool,
    /// Operations of this side's clients (clients whose home node is on this side), invoked
    /// during the window, that completed `ok` before it closed.
    pub requests_ok: u64,
    /// Operations of this side's clients invoked during the window that definitely failed
    /// (no leader reachable, or a compare-and-set that did not match).
    pub requests_failed: u64,
    /// Operations of this side's clients invoked during the window with an unknown outcome.
    pub requests_unknown: u64,
}

/// What a partition did: the seed's `observe_partition_effects`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionEffects {
    /// When the window opened, ns.
    pub window_start: Time,
    /// When it closed, ns.
    pub window_end: Time,
    /// The sides (connected components of two-way links), ordered by smallest node id.
    pub sides: Vec<PartitionSide>,
    /// Operations invoked and completed `ok` during the window.
    pub total_ok: u64,
    /// Operations invoked and completed `fail` during the window.
    pub total_failed: u64,
    /// Operations invoked and completed `info` during the window.
    pub total_unknown: u64,
}

/// A simulated cluster, whatever its protocol. Object-safe: the CLI holds a `Box<dyn Cluster>`.
pub trait Cluster {
    /// The algorithm's name.
    fn algorithm(&self) -> &str;
    /// Cluster size.
    fn size(&self) -> usize;
    /// The seed.
    fn seed(&self) -> u64;
    /// Simulated time, ns.
    fn now(&self) -> Time;
    /// Health now.
    fn health(&self) -> ClusterHealth;
    /// Splits the cluster into groups (unnamed nodes are alone).
    fn partition(&mut self, groups: &[Vec<NodeId>]) -> Result<(), ToolkitError>;
    /// Cuts `nodes` (as one group) off from the rest.
    fn isolate(&mut self, nodes: &[NodeId]) -> Result<(), ToolkitError>;
    /// Carries out any nemesis action now.
    fn apply(&mut self, action: &NemesisAction) -> Result<(), ToolkitError>;
    /// Schedules a nemesis plan; its times are absolute simulated times (steps already in the
    /// past happen at once).
    fn install_plan(&mut self, plan: &NemesisPlan) -> Result<(), ToolkitError>;
    /// Restores every link.
    fn heal(&mut self);
    /// Crashes a node.
    fn crash(&mut self, node: NodeId) -> Result<(), ToolkitError>;
    /// Restarts a crashed node.
    fn restart(&mut self, node: NodeId) -> Result<(), ToolkitError>;
    /// Runs for `duration` of simulated time.
    fn run_for(&mut self, duration: Duration) -> Result<(), Failure>;
    /// Runs until a unique leader exists or `timeout` passes; returns the leader.
    fn wait_for_leader(&mut self, timeout: Duration) -> Result<Option<NodeId>, Failure>;
    /// Runs for `window` and reports what each side of the current partition did.
    fn observe(&mut self, window: Duration) -> Result<PartitionEffects, Failure>;
    /// The client history so far.
    fn history(&self) -> &History;
    /// Counters so far.
    fn stats(&self) -> Stats;
    /// Whether all nodes are up and agree on commit and applied index. Under continuous client
    /// load this is rarely true: stop the clients and let the cluster settle first.
    fn converged(&self) -> bool;
    /// Stops the clients from invoking new operations (pending ones still complete).
    fn stop_clients(&mut self);
    /// The protocol's election timeout (sizes observation windows).
    fn election_timeout(&self) -> Duration;
    /// Trace lines (empty unless tracing).
    fn trace(&self) -> Vec<String>;
}

/// How [`create_cluster`] sets up the simulation and its clients.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterOptions {
    /// Client settings; by default three clients issuing operations without end.
    pub workload: WorkloadConfig,
    /// How every link starts out.
    pub link: LinkConfig,
    /// Keep a trace.
    pub trace: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            workload: WorkloadConfig {
                operations: u64::MAX,
                ..WorkloadConfig::default()
            },
            link: LinkConfig::default(),
            trace: false,
        }
    }
}

/// Builds a simulated cluster of `nodes` nodes running `algorithm` from `seed`.
pub fn create_cluster(
    algorithm: &str,
    nodes: usize,
    seed: u64,
    options: &ClusterOptions,
) -> Result<Box<dyn Cluster>, ToolkitError> {
    crate::algorithms::check(algorithm)?;
    if nodes == 0 {
        return Err(ToolkitError::NoNodes);
    }
    if nodes > MAX_NODES {
        return Err(ToolkitError::TooManyNodes {
            nodes,
            max: MAX_NODES,
        });
    }
    let mut config = SimConfig::new(nodes, seed);
    config.link = options.link.clone();
    config.trace = options.trace;
    crate::algorithms::cluster(algorithm, config, options.workload.clone())
}

/// A [`Cluster`] over a [`Simulation`] of key-value nodes.
pub struct SimCluster<N: KvService> {
    algorithm: String,
    simulation: Simulation<N>,
}

impl<N: KvService> std::fmt::Debug for SimCluster<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCluster")
            .field("algorithm", &self.algorithm)
            .field("simulation", &self.simulation)
            .finish()
    }
}

impl<N: KvService> SimCluster<N> {
    /// A cluster of `N` nodes with clients and the given invariants.
    pub fn new(
        algorithm: &str,
        config: SimConfig,
        node_config: N::Config,
        workload: WorkloadConfig,
        invariants: Vec<Box<dyn ClusterInvariant<N>>>,
    ) -> Result<Self, SimError> {
        let seed = config.seed;
        let nodes = config.nodes;
        let mut simulation = Simulation::new(config, node_config)?;
        for invariant in invariants {
            simulation.add_invariant(invariant);
        }
        if workload.clients > 0 && workload.operations > 0 {
            let workload = Workload::new(workload, nodes, seeded_rng(seed, streams::WORKLOAD))?;
            simulation.attach_workload(workload);
        }
        Ok(SimCluster {
            algorithm: algorithm.to_string(),
            simulation,
        })
    }

    /// The simulation underneath.
    pub fn simulation(&self) -> &Simulation<N> {
        &self.simulation
    }

    /// The simulation underneath, to drive directly.
    pub fn simulation_mut(&mut self) -> &mut Simulation<N> {
        &mut self.simulation
    }
}

impl<N: KvService> Cluster for SimCluster<N> {
    fn algorithm(&self) -> &str {
        &self.algorithm
    }

    fn size(&self) -> usize {
        self.simulation.nodes()
    }

    fn seed(&self) -> u64 {
        self.simulation.config().seed
    }

    fn now(&self) -> Time {
        self.simulation.now()
    }

    fn health(&self) -> ClusterHealth {
        ClusterHealth::from_statuses(self.simulation.now(), self.simulation.statuses())
    }

    fn partition(&mut self, groups: &[Vec<NodeId>]) -> Result<(), ToolkitError> {
        let action = NemesisAction::Partition {
            groups: groups.to_vec(),
        };
        self.apply(&action)
    }

    fn isolate(&mut self, nodes: &[NodeId]) -> Result<(), ToolkitError> {
        let action = NemesisAction::Isolate {
            nodes: nodes.to_vec(),
        };
        self.apply(&action)
    }

    fn apply(&mut self, action: &NemesisAction) -> Result<(), ToolkitError> {
        Ok(self.simulation.apply_action(action)?)
    }

    fn install_plan(&mut self, plan: &NemesisPlan) -> Result<(), ToolkitError> {
        Ok(self.simulation.install_plan(plan)?)
    }

    fn heal(&mut self) {
        self.simulation.network_mut().heal();
    }

    fn crash(&mut self, node: NodeId) -> Result<(), ToolkitError> {
        Ok(self.simulation.crash(node)?)
    }

    fn restart(&mut self, node: NodeId) -> Result<(), ToolkitError> {
        Ok(self.simulation.restart(node)?)
    }

    fn run_for(&mut self, duration: Duration) -> Result<(), Failure> {
        self.simulation.run_for(duration)
    }

    fn wait_for_leader(&mut self, timeout: Duration) -> Result<Option<NodeId>, Failure> {
        let deadline = self.simulation.now().saturating_add(timeout);
        let poll = (N::election_timeout(self.simulation.node_config()) / 10).max(1_000_000);
        loop {
            if let Some(leader) = self.simulation.leader() {
                return Ok(Some(leader));
            }
            if self.simulation.now() >= deadline {
                return Ok(None);
            }
            let next = (self.simulation.now() + poll).min(deadline);
            self.simulation.run_until(next)?;
        }
    }

    fn observe(&mut self, window: Duration) -> Result<PartitionEffects, Failure> {
        observe(&mut self.simulation, window)
    }

    fn history(&self) -> &History {
        self.simulation.history()
    }

    fn stats(&self) -> Stats {
        self.simulation.stats()
    }

    fn converged(&self) -> bool {
        self.simulation.converged()
    }

    fn stop_clients(&mut self) {
        if let Some(workload) = self.simulation.workload.as_mut() {
            workload.stop();
        }
    }

    fn election_timeout(&self) -> Duration {
        N::election_timeout(self.simulation.node_config())
    }

    fn trace(&self) -> Vec<String> {
        self.simulation.trace()
    }
}

/// Runs `simulation` for `window` and reports what each side of its current partition did.
pub fn observe<N: Node>(
    simulation: &mut Simulation<N>,
    window: Duration,
) -> Result<PartitionEffects, Failure> {
    let sides = simulation.network().connectivity().sides();
    let start = simulation.now();
    let before = simulation.statuses();
    let completions_before = simulation.workload().map_or(0, |w| w.completions().len());
    simulation.observation = Some(Observation::default());
    let result = simulation.run_for(window);
    let observation = simulation.observation.take().unwrap_or_default();
    result?;
    let after = simulation.statuses();
    let mut counts: BTreeMap<NodeId, [u64; 3]> = BTreeMap::new();
    if let Some(workload) = simulation.workload() {
        // Only operations invoked while the window was open count: what was already under way
        // when it opened belongs to the topology before. An operation counts for the side its
        // client is on (its home node), wherever it was redirected.
        let completions = &workload.completions()[completions_before..];
        for completion in completions.iter().filter(|c| c.invoked >= start) {
            let entry = counts.entry(completion.home).or_default();
            match completion.kind {
                EventType::Ok => entry[0] += 1,
                EventType::Fail => entry[1] += 1,
                _ => entry[2] += 1,
            }
        }
    }
    let sides: Vec<PartitionSide> = sides
        .into_iter()
        .map(|nodes| {
            let max_of = |statuses: &[NodeStatus], f: fn(&NodeStatus) -> u64| {
                nodes
                    .iter()
                    .map(|&n| f(&statuses[n as usize]))
                    .max()
                    .unwrap_or(0)
            };
            let term_before = max_of(&before, |s| s.term);
            let leaders: Vec<LeaderSeen> = observation
                .leaders
                .iter()
                .filter(|(_, node)| nodes.contains(node))
                .map(|&(term, node)| LeaderSeen { node, term })
                .collect();
            let commit_index_before = max_of(&before, |s| s.commit_index);
            let commit_index_after = max_of(&after, |s| s.commit_index);
            let mut side_counts = [0u64; 3];
            for node in &nodes {
                if let Some(c) = counts.get(node) {
                    for (total, value) in side_counts.iter_mut().zip(c) {
                        *total += value;
                    }
                }
            }
            PartitionSide {
                leader_elected: leaders.iter().any(|l| l.term > term_before),
                leaders,
                commit_index_before,
                commit_index_after,
                log_replicated: commit_index_after > commit_index_before,
                requests_ok: side_counts[0],
                requests_failed: side_counts[1],
                requests_unknown: side_counts[2],
                nodes,
            }
        })
        .collect();
    Ok(PartitionEffects {
        window_start: start,
        window_end: simulation.now(),
        total_ok: sides.iter().map(|s| s.requests_ok).sum(),
        total_failed: sides.iter().map(|s| s.requests_failed).sum(),
        total_unknown: sides.iter().map(|s| s.requests_unknown).sum(),
        sides,
    })
}

/// A sensible observation window for a protocol: several election timeouts, at least 1 s.
pub fn default_window(election_timeout: Duration) -> Duration {
    (10 * election_timeout).max(SECOND)
}
