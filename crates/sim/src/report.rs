//! What a run produces: the failure report, counters, the run report and the sweep report.
//!
//! Everything here is deterministic (no wall-clock values), so one seed gives byte-identical
//! JSON.

use concord_check::History;
use concord_core::{NodeId, Time};
use serde::Serialize;

use crate::nemesis::NemesisPlan;
use crate::toolkit::{ClusterHealth, PartitionEffects};

/// A broken invariant, with everything needed to reproduce it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("seed {seed}: invariant '{invariant}' violated{} at step {step} (t={time}ns): {detail}\n  replay: {replay}", node.map(|n| format!(" on node {n}")).unwrap_or_default())]
pub struct Failure {
    /// The run's seed.
    pub seed: u64,
    /// How many node steps had run, counting the failing one.
    pub step: u64,
    /// Simulated time, ns.
    pub time: Time,
    /// The invariant's name.
    pub invariant: String,
    /// The node whose state breaks it, if one.
    pub node: Option<NodeId>,
    /// What was seen.
    pub detail: String,
    /// The command that replays this run.
    pub replay: String,
    /// The last trace lines before the failure (only when tracing).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trace_tail: Vec<String>,
}

/// Counters of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Events taken off the queue.
    pub events: u64,
    /// Node steps (inputs handled).
    pub steps: u64,
    /// Messages nodes sent (before Byzantine rewriting).
    pub messages_sent: u64,
    /// Messages handed to a node.
    pub messages_delivered: u64,
    /// Messages that never arrived: cut, lost, or to or from a crashed incarnation.
    pub messages_dropped: u64,
    /// Of those, lost at random.
    pub messages_lost: u64,
    /// Of those, blocked by a cut link (at send or delivery time).
    pub messages_cut: u64,
    /// Messages delivered twice.
    pub messages_duplicated: u64,
    /// Messages given an extra reordering delay.
    pub messages_reordered: u64,
    /// Writes nodes asked to persist.
    pub persists: u64,
    /// Writes that became durable.
    pub persists_completed: u64,
    /// Writes lost to a crash before becoming durable.
    pub persists_lost: u64,
    /// Crashes that lost confirmed checkpoints not yet settled ([`concord_core::Node::is_checkpoint`]).
    pub checkpoints_lost: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Node restarts.
    pub restarts: u64,
    /// Nemesis actions carried out.
    pub nemesis_actions: u64,
    /// Client requests that reached a node.
    pub client_requests: u64,
    /// Simulated time reached, ns.
    pub simulated_time: Time,
}

/// Counts of a history's events by type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HistorySummary {
    /// Invocations.
    pub invoke: u64,
    /// Completed and took effect.
    pub ok: u64,
    /// Definitely did not take effect.
    pub fail: u64,
    /// Unknown outcome.
    pub info: u64,
}

impl HistorySummary {
    /// Counts `history`.
    pub fn of(history: &History) -> Self {
        let mut summary = HistorySummary::default();
        for op in &history.events {
            match op.kind {
                concord_check::EventType::Invoke => summary.invoke += 1,
                concord_check::EventType::Ok => summary.ok += 1,
                concord_check::EventType::Fail => summary.fail += 1,
                concord_check::EventType::Info => summary.info += 1,
            }
        }
        summary
    }
}

/// The attack whose run's client history cannot be checked for linearizability: a Byzantine
/// client's own requests — executed, but not in the recorded history — may be what later reads
/// return.
pub const BYZANTINE_CLIENT: &str = "byzantine-client";

/// Everything one run produced.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunReport {
    /// The algorithm.
    pub algorithm: String,
    /// Cluster size.
    pub nodes: usize,
    /// The seed.
    pub seed: u64,
    /// The simulated duration asked for, ns.
    pub duration: Time,
    /// The fault kinds that were on.
    pub faults: Vec<String>,
    /// The nemesis plan that ran (given, or generated from the seed in swarm mode).
    pub nemesis: NemesisPlan,
    /// Health after the cluster started up.
    pub health_before: ClusterHealth,
    /// Health at the end.
    pub health_after: ClusterHealth,
    /// What the requested partition did, when one was requested.
    pub partition: Option<PartitionEffects>,
    /// Counters.
    pub stats: Stats,
    /// History counts.
    pub history_summary: HistorySummary,
    /// The client history.
    pub history: History,
    /// Whether every node was up and had applied the same prefix at the end.
    pub converged: bool,
    /// The broken invariant, if any.
    pub failure: Option<Failure>,
    /// The command that replays this run.
    pub replay: String,
    /// The Byzantine nodes of the run and their attacks (`"n0: equivocate"`), when a protocol
    /// that tolerates them ran with `byzantine` among the faults.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub byzantine: Vec<String>,
    /// Trace lines, when asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<String>,
}

impl RunReport {
    /// Whether the client history is the whole story: false when a Byzantine client also wrote
    /// ([`BYZANTINE_CLIENT`]), so the run is checked for safety only, not for linearizability.
    pub fn history_checkable(&self) -> bool {
        !self
            .byzantine
            .iter()
            .any(|attack| attack.ends_with(BYZANTINE_CLIENT))
    }
}

/// One failing seed of a sweep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SweepFailure {
    /// The seed.
    pub seed: u64,
    /// What broke: the invariant failure, or why the run did not converge.
    pub reason: String,
    /// The command that replays it.
    pub replay: String,
}

/// The outcome of running many seeds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SweepReport {
    /// The algorithm.
    pub algorithm: String,
    /// Seeds run.
    pub seeds_run: u64,
    /// First seed.
    pub first_seed: u64,
    /// Seeds whose invariants broke.
    pub failures: Vec<SweepFailure>,
    /// Seeds that ended without converging (not a safety failure; a liveness hint).
    pub not_converged: Vec<u64>,
    /// Total events over all seeds.
    pub events: u64,
    /// Total simulated time over all seeds, ns.
    pub simulated_time: Time,
    /// Client operations completed `ok` over all seeds.
    pub operations_ok: u64,
}
