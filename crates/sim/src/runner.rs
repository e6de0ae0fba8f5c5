//! The high-level runner the CLI calls: one seeded run with clients and faults, or a sweep of
//! many seeds.
//!
//! A run's timeline, for `duration` D and the protocol's election timeout E:
//!
//! 1. `0 .. warmup` (`min(3E, D/5)`): the cluster starts; clients start at `E` and pace
//!    their operations to spread them over the rest of the run.
//!    `health_before` is taken at the end of the warm-up.
//! 2. With a `partition`: the listed nodes are isolated from `D/4` to `3D/4`; that window,
//!    less its first 100 ms (where what was replicated before the cut may still commit), is
//!    observed ([`crate::PartitionEffects`]), then healed. Otherwise, faults run from the warm-up until
//!    the start of the quiet period: the given nemesis plan, or a swarm plan drawn from the seed
//!    (ending with a `reset` at `D - quiet`, `quiet = max(D/4, 4E)` capped at `D/2`).
//! 3. At D the clients stop invoking; the run then settles for up to `max(2s, 10E)` until all
//!    nodes agree (`converged`). `health_after` is taken then.

use std::ops::Range;

use concord_core::time::{MILLISECOND, SECOND};
use concord_core::{seeded_rng, ClusterInvariant, Duration, KvService, NodeId, Time};
use serde::Serialize;

use crate::engine::{streams, SimConfig, Simulation};
use crate::error::SimError;
use crate::nemesis::{duration_text, NemesisPlan};
use crate::network::LinkConfig;
use crate::report::{HistorySummary, RunReport, SweepFailure, SweepReport};
use crate::swarm::{swarm_plan, FaultSelection};
use crate::toolkit::{observe, ClusterHealth, MAX_NODES};
use crate::topology::Connectivity;
use crate::workload::{OperationMix, Workload, WorkloadConfig};

/// How long after the cut a partition's observation window opens: writes already replicated
/// on a quorum before the cut may still commit (and be answered) in these first milliseconds.
const PARTITION_SETTLE: Duration = 100 * MILLISECOND;

/// The longest simulated run: a day.
pub const MAX_DURATION: Duration = 86_400 * SECOND;

/// Everything a run depends on. Same options and seed: same [`RunReport`], byte for byte.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimOptions {
    /// The algorithm (`raft`).
    pub algorithm: String,
    /// Cluster size.
    pub nodes: usize,
    /// The seed.
    pub seed: u64,
    /// Simulated duration of the faulty part of the run, ns.
    pub duration: Duration,
    /// Client operations to invoke.
    pub ops: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys the clients touch.
    pub keys: usize,
    /// The operation mix.
    pub mix: OperationMix,
    /// How long a client waits for a reply, ns.
    pub request_timeout: Duration,
    /// Which faults may strike (swarm mode when no plan is given).
    pub faults: FaultSelection,
    /// A fixed nemesis plan (replaces swarm mode).
    pub nemesis: Option<NemesisPlan>,
    /// Where the plan came from, for the replay command.
    pub nemesis_source: Option<String>,
    /// Isolate these nodes for the middle half of the run and observe the effects.
    pub partition: Option<Vec<NodeId>>,
    /// How every link starts out.
    pub link: LinkConfig,
    /// Raft and Multi-Paxos: take a snapshot every this many applied entries (Raft sends it in
    /// 64-byte chunks, so that installing one takes several messages); `None`: the protocol's
    /// default (10 000 and 1 000 entries).
    pub snapshot_every: Option<u64>,
    /// Raft: followers forward the proposals they get to the leader and answer them
    /// themselves (`concord_raft::Config::forward_proposals`) instead of redirecting clients.
    pub forward_proposals: bool,
    /// Keep a trace.
    pub trace: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            algorithm: "raft".into(),
            nodes: 5,
            seed: 0,
            duration: 10 * SECOND,
            ops: 200,
            clients: 3,
            keys: 3,
            mix: OperationMix::default(),
            request_timeout: SECOND,
            faults: FaultSelection::All,
            nemesis: None,
            nemesis_source: None,
            partition: None,
            link: LinkConfig::default(),
            snapshot_every: None,
            forward_proposals: false,
            trace: false,
        }
    }
}

impl SimOptions {
    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut command = format!(
            "concord replay --algorithm {} --seed {} --nodes {} --duration {} --ops {} --clients {} --faults {}",
            self.algorithm,
            self.seed,
            self.nodes,
            duration_text(self.duration),
            self.ops,
            self.clients,
            self.faults
        );
        let defaults = SimOptions::default();
        if self.keys != defaults.keys {
            command.push_str(&format!(" --keys {}", self.keys));
        }
        if self.mix != defaults.mix {
            let m = &self.mix;
            command.push_str(&format!(
                " --mix read={},write={},cas={},append={}",
                m.read, m.write, m.cas, m.append
            ));
        }
        if self.request_timeout != defaults.request_timeout {
            command.push_str(&format!(
                " --request-timeout {}",
                duration_text(self.request_timeout)
            ));
        }
        if let Some(source) = &self.nemesis_source {
            command.push_str(&format!(" --nemesis {source}"));
        }
        if let Some(partition) = &self.partition {
            let ids: Vec<String> = partition.iter().map(|n| n.to_string()).collect();
            command.push_str(&format!(" --partition {}", ids.join(",")));
        }
        if let Some(entries) = self.snapshot_every {
            command.push_str(&format!(" --snapshot-every {entries}"));
        }
        if self.forward_proposals {
            command.push_str(" --forward-proposals");
        }
        command
    }

    /// The Raft configuration these options ask for.
    pub fn raft_config(&self) -> concord_raft::Config {
        let mut config = concord_raft::Config::default();
        if let Some(entries) = self.snapshot_every {
            config.snapshot_threshold = entries;
            config.snapshot_chunk_size = 64;
        }
        config.forward_proposals = self.forward_proposals;
        config
    }

    /// The Multi-Paxos configuration these options ask for.
    pub fn paxos_config(&self) -> concord_paxos::multi::Config {
        let mut config = concord_paxos::multi::Config::default();
        if let Some(entries) = self.snapshot_every {
            config.snapshot_threshold = entries;
        }
        config
    }

    /// Checks what can be checked without the protocol.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.nodes == 0 {
            return Err(SimError::NoNodes);
        }
        if self.nodes > MAX_NODES {
            return Err(SimError::InvalidOption {
                name: "nodes",
                message: format!("at most {MAX_NODES}, got {}", self.nodes),
            });
        }
        if self.duration == 0 || self.duration > MAX_DURATION {
            return Err(SimError::InvalidOption {
                name: "duration",
                message: format!(
                    "must be positive and at most {}, got {}",
                    duration_text(MAX_DURATION),
                    duration_text(self.duration)
                ),
            });
        }
        if let Some(partition) = &self.partition {
            Connectivity::isolate(self.nodes, partition)?;
        }
        if let Some(plan) = &self.nemesis {
            plan.validate(self.nodes)?;
        }
        match self.snapshot_every {
            Some(0) => {
                return Err(SimError::InvalidOption {
                    name: "snapshot-every",
                    message: "must be at least 1 entry".into(),
                })
            }
            Some(_) if !matches!(self.algorithm.as_str(), "raft" | "paxos") => {
                return Err(SimError::InvalidOption {
                    name: "snapshot-every",
                    message: format!(
                        "applies to raft and paxos; {} checkpoints on its own schedule",
                        self.algorithm
                    ),
                })
            }
            _ => {}
        }
        if self.forward_proposals && self.algorithm != "raft" {
            return Err(SimError::InvalidOption {
                name: "forward-proposals",
                message: format!("applies to raft only, not {}", self.algorithm),
            });
        }
        self.link.validate()?;
        Ok(())
    }

    /// The clients: they start at `start_at` and pace themselves so the operations spread over
    /// most of the rest of the run (pauses up to `1.5 × span × clients / ops`, between 1 ms and
    /// 1 s).
    fn workload(&self, start_at: Time) -> WorkloadConfig {
        let span = self.duration.saturating_sub(start_at);
        let pace = (span as u128 * 3 * self.clients as u128 / (2 * self.ops.max(1) as u128))
            .clamp(MILLISECOND as u128, SECOND as u128) as Duration;
        WorkloadConfig {
            clients: self.clients,
            operations: self.ops,
            keys: self.keys,
            mix: self.mix.clone(),
            request_timeout: self.request_timeout,
            think_time_max: pace,
            start_at,
            ..WorkloadConfig::default()
        }
    }
}

/// Runs one seeded simulation of `options.algorithm`.
pub fn run(options: &SimOptions) -> Result<RunReport, SimError> {
    options.validate()?;
    crate::algorithms::run(options)
}

/// Runs one seeded simulation of any key-value protocol `N`.
pub fn run_protocol<N: KvService>(
    options: &SimOptions,
    node_config: N::Config,
    invariants: Vec<Box<dyn ClusterInvariant<N>>>,
) -> Result<RunReport, SimError> {
    run_protocol_with(options, node_config, invariants, |_| Ok(()))
}

/// [`run_protocol`], with `setup` run on the simulation before it starts (a protocol's own
/// Byzantine behaviours, its corruptor).
pub fn run_protocol_with<N: KvService>(
    options: &SimOptions,
    node_config: N::Config,
    invariants: Vec<Box<dyn ClusterInvariant<N>>>,
    setup: impl FnOnce(&mut Simulation<N>) -> Result<(), SimError>,
) -> Result<RunReport, SimError> {
    options.validate()?;
    let election_timeout = N::election_timeout(&node_config).max(MILLISECOND);
    let duration = options.duration;
    let warmup = (3 * election_timeout).min(duration / 5);
    let quiet = (duration / 4).max(4 * election_timeout).min(duration / 2);

    let mut config = SimConfig::new(options.nodes, options.seed);
    config.link = options.link.clone();
    config.trace = options.trace;
    config.replay = options.replay_command();
    let mut simulation: Simulation<N> = Simulation::new(config, node_config)?;
    for invariant in invariants {
        simulation.add_invariant(invariant);
    }
    if options.clients > 0 && options.ops > 0 {
        let rng = seeded_rng(options.seed, streams::WORKLOAD);
        let workload = Workload::new(options.workload(election_timeout), options.nodes, rng)?;
        simulation.attach_workload(workload);
    }

    let (plan, faults) = match (&options.nemesis, &options.partition) {
        (Some(plan), _) => (plan.clone(), vec!["plan".to_string()]),
        (None, Some(_)) => (NemesisPlan::default(), Vec::new()),
        (None, None) if options.faults == FaultSelection::None => {
            (NemesisPlan::default(), Vec::new())
        }
        (None, None) => {
            let (profile, plan) = swarm_plan(
                options.seed,
                options.nodes,
                &options.faults,
                warmup,
                duration - quiet,
            );
            let names = profile
                .enabled
                .iter()
                .map(|k| k.name().to_string())
                .collect();
            (plan, names)
        }
    };
    setup(&mut simulation)?;
    simulation.install_plan(&plan)?;

    let mut failure = simulation.run_until(warmup).err();
    let health_before = ClusterHealth::from_statuses(simulation.now(), simulation.statuses());
    let mut partition = None;
    if let (None, Some(set)) = (&failure, &options.partition) {
        failure = simulation.run_until(duration / 4).err();
        if failure.is_none() {
            simulation
                .network_mut()
                .set_connectivity(Connectivity::isolate(options.nodes, set)?);
            failure = simulation.run_for(PARTITION_SETTLE).err();
        }
        if failure.is_none() {
            match observe(
                &mut simulation,
                (duration / 2).saturating_sub(PARTITION_SETTLE),
            ) {
                Ok(effects) => partition = Some(effects),
                Err(f) => failure = Some(f),
            }
            simulation.network_mut().heal();
        }
    }
    if failure.is_none() {
        failure = simulation.run_until(duration).err();
    }
    if let Some(workload) = simulation.workload.as_mut() {
        workload.stop();
    }
    let mut converged = false;
    if failure.is_none() {
        let settle_until = duration + (10 * election_timeout).max(2 * SECOND);
        let step = (election_timeout / 2).max(10 * MILLISECOND);
        while failure.is_none() && simulation.now() < settle_until {
            failure = simulation.run_for(step).err();
            let idle = simulation.workload().map(|w| w.is_idle()).unwrap_or(true);
            if idle && simulation.converged() {
                converged = true;
                break;
            }
        }
    }
    let history = simulation.history().clone();
    Ok(RunReport {
        algorithm: options.algorithm.clone(),
        nodes: options.nodes,
        seed: options.seed,
        duration,
        faults,
        nemesis: plan,
        health_before,
        health_after: ClusterHealth::from_statuses(simulation.now(), simulation.statuses()),
        partition,
        stats: simulation.stats(),
        history_summary: HistorySummary::of(&history),
        history,
        converged: converged && failure.is_none(),
        failure,
        replay: options.replay_command(),
        byzantine: Vec::new(),
        trace: simulation.trace(),
    })
}

/// Progress of a sweep, handed to the callback after each seed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SweepProgress {
    /// The seed just run.
    pub seed: u64,
    /// Seeds done so far.
    pub done: u64,
    /// Seeds in the sweep.
    pub total: u64,
    /// Failures so far.
    pub failures: u64,
    /// Whether this seed failed.
    pub failed: bool,
}

/// Runs `options` once per seed in `seeds` (the seed in `options` is ignored) and collects the
/// failures with their replay commands.
pub fn sweep(
    options: &SimOptions,
    seeds: Range<u64>,
    mut on_progress: impl FnMut(&SweepProgress),
) -> Result<SweepReport, SimError> {
    sweep_runs(options, seeds, |progress, _| on_progress(progress))
}

/// [`sweep`], also handing each seed's whole [`RunReport`] to `on_run` (to check its history,
/// say) before it is dropped.
pub fn sweep_runs(
    options: &SimOptions,
    seeds: Range<u64>,
    mut on_run: impl FnMut(&SweepProgress, &RunReport),
) -> Result<SweepReport, SimError> {
    let mut report = SweepReport {
        algorithm: options.algorithm.clone(),
        first_seed: seeds.start,
        ..SweepReport::default()
    };
    let total = seeds.end.saturating_sub(seeds.start);
    for seed in seeds {
        let options = SimOptions {
            seed,
            trace: false,
            ..options.clone()
        };
        let run = run(&options)?;
        report.seeds_run += 1;
        report.events += run.stats.events;
        report.simulated_time += run.stats.simulated_time;
        report.operations_ok += run.history_summary.ok;
        if let Some(failure) = &run.failure {
            report.failures.push(SweepFailure {
                seed,
                reason: format!(
                    "invariant '{}' violated at step {}: {}",
                    failure.invariant, failure.step, failure.detail
                ),
                replay: run.replay.clone(),
            });
        } else if !run.converged {
            report.not_converged.push(seed);
        }
        let progress = SweepProgress {
            seed,
            done: report.seeds_run,
            total,
            failures: report.failures.len() as u64,
            failed: run.failure.is_some(),
        };
        on_run(&progress, &run);
    }
    Ok(report)
}
