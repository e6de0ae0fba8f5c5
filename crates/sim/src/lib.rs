//! Concord's deterministic simulator and cluster toolkit.
//!
//! [`Simulation`] drives any protocol implementing [`concord_core::Node`] in virtual time, with
//! a faulty [`Network`] (latency, loss, duplication, reordering, partitions of every shape
//! including the partial-connectivity scenarios of OmniPaxos), crashes that lose unconfirmed
//! writes, pauses, clock drift and a Byzantine hook. A [`NemesisPlan`] (TOML or JSON) or the
//! [`swarm`] generator schedules the faults; a [`Workload`] of clients records a Jepsen-style
//! [`concord_check::History`]; invariants run after every step, and a violation becomes a
//! [`Failure`] with a replay command.
//!
//! On top of it, the toolkit ([`Cluster`], [`create_cluster`]) and the runner ([`run`],
//! [`sweep`]) the CLI uses. One seed gives one run, bit for bit: no wall clock, no global random
//! generator, no hash-map iteration.
#![deny(missing_docs)]
// A `Failure` is the terminal outcome of a run, carried once: its size does not matter.
#![allow(clippy::result_large_err)]

mod agreement;
mod algorithms;
pub mod byzantine;
mod clients;
mod engine;
mod error;
mod event;
mod faults;
mod inspect;
pub mod nemesis;
pub mod network;
pub mod pbft;
pub mod report;
pub mod runner;
mod slot;
pub mod swarm;
pub mod toolkit;
pub mod topology;
pub mod workload;

pub use agreement::AppliedCommands;
pub use byzantine::{BuiltIn, ByzantineBehavior, ByzantineKind, Corruptor, Outgoing};
pub use engine::{NodeEffect, Reply, SimConfig, Simulation};
pub use error::SimError;
pub use nemesis::{ActionError, NemesisAction, NemesisError, NemesisPlan, NemesisStep};
pub use network::{LinkConfig, LinkError, Network, NetworkCounters, Route};
pub use report::{Failure, HistorySummary, RunReport, Stats, SweepFailure, SweepReport};
pub use runner::{
    run, run_protocol, run_protocol_with, sweep, sweep_runs, SimOptions, SweepProgress,
    MAX_DURATION,
};
pub use swarm::{swarm_plan, FaultKind, FaultSelection, SwarmProfile, UnknownFault};
pub use toolkit::{
    create_cluster, supported_algorithms, Cluster, ClusterHealth, ClusterOptions, LeaderSeen,
    PartitionEffects, PartitionSide, SimCluster, ToolkitError,
};
pub use topology::{Connectivity, TopologyError};
pub use workload::{Completion, OperationMix, Workload, WorkloadConfig, WorkloadError};
