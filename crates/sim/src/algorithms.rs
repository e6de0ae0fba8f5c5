//! The algorithm registry: which protocol a name builds, with its configuration and invariants.

use crate::error::SimError;
use crate::report::RunReport;
use crate::runner::SimOptions;
use crate::toolkit::{Cluster, ToolkitError};
use crate::workload::WorkloadConfig;
use crate::SimConfig;

/// Algorithms that can be simulated.
pub(crate) const SUPPORTED: &[&str] = &["raft", "paxos", "pbft"];

/// Algorithms Concord plans but does not implement yet.
const PLANNED: &[&str] = &[];

/// Checks that `name` is an algorithm that can be simulated.
pub(crate) fn check(name: &str) -> Result<(), ToolkitError> {
    let supported = SUPPORTED.join(", ");
    if SUPPORTED.contains(&name) {
        Ok(())
    } else if PLANNED.contains(&name) {
        Err(ToolkitError::NotSupportedYet {
            name: name.to_string(),
            supported,
        })
    } else {
        Err(ToolkitError::UnknownAlgorithm {
            name: name.to_string(),
            supported,
        })
    }
}

mod raft {
    use concord_core::KvStateMachine;
    use concord_raft::RaftNode;

    use super::*;
    use crate::toolkit::SimCluster;

    pub(super) type Raft = RaftNode<KvStateMachine>;

    pub(super) fn cluster(
        config: SimConfig,
        workload: WorkloadConfig,
    ) -> Result<Box<dyn Cluster>, ToolkitError> {
        let cluster = SimCluster::<Raft>::new(
            "raft",
            config,
            concord_raft::Config::default(),
            workload,
            concord_raft::invariants::<KvStateMachine>(),
        )?;
        Ok(Box::new(cluster))
    }

    pub(super) fn run(options: &SimOptions) -> Result<RunReport, SimError> {
        crate::runner::run_protocol::<Raft>(
            options,
            options.raft_config(),
            concord_raft::invariants::<KvStateMachine>(),
        )
    }
}

mod paxos {
    use concord_core::KvStateMachine;
    use concord_paxos::multi::MultiPaxos;

    use super::*;
    use crate::toolkit::SimCluster;

    /// `paxos` is Multi-Paxos with a stable leader (`concord_paxos::multi`).
    pub(super) type Paxos = MultiPaxos<KvStateMachine>;

    pub(super) fn cluster(
        config: SimConfig,
        workload: WorkloadConfig,
    ) -> Result<Box<dyn Cluster>, ToolkitError> {
        let cluster = SimCluster::<Paxos>::new(
            "paxos",
            config,
            concord_paxos::multi::Config::default(),
            workload,
            concord_paxos::multi::invariants::<KvStateMachine>(),
        )?;
        Ok(Box::new(cluster))
    }

    pub(super) fn run(options: &SimOptions) -> Result<RunReport, SimError> {
        crate::runner::run_protocol::<Paxos>(
            options,
            options.paxos_config(),
            concord_paxos::multi::invariants::<KvStateMachine>(),
        )
    }
}

mod pbft {
    use super::*;
    use crate::toolkit::SimCluster;

    /// `pbft` is Castro and Liskov's PBFT (`concord_pbft`); its keys come from the seed, and
    /// with `byzantine` faults up to `f` replicas run the PBFT adversaries of `crate::pbft`.
    pub(super) fn cluster(
        config: SimConfig,
        workload: WorkloadConfig,
    ) -> Result<Box<dyn Cluster>, ToolkitError> {
        let node_config = crate::pbft::config(config.seed);
        let cluster = SimCluster::<crate::pbft::Pbft>::new(
            "pbft",
            config,
            node_config,
            workload,
            concord_pbft::invariants(),
        )?;
        Ok(Box::new(cluster))
    }

    pub(super) fn run(options: &SimOptions) -> Result<RunReport, SimError> {
        crate::pbft::run(options, crate::pbft::config(options.seed))
    }
}

/// Builds a cluster of `name`.
pub(crate) fn cluster(
    name: &str,
    config: SimConfig,
    workload: WorkloadConfig,
) -> Result<Box<dyn Cluster>, ToolkitError> {
    check(name)?;
    match name {
        "raft" => raft::cluster(config, workload),
        "paxos" => paxos::cluster(config, workload),
        "pbft" => pbft::cluster(config, workload),
        _ => Err(ToolkitError::NotSupportedYet {
            name: name.to_string(),
            supported: SUPPORTED.join(", "),
        }),
    }
}

/// Runs `options.algorithm`.
pub(crate) fn run(options: &SimOptions) -> Result<RunReport, SimError> {
    check(&options.algorithm)?;
    match options.algorithm.as_str() {
        "raft" => raft::run(options),
        "paxos" => paxos::run(options),
        "pbft" => pbft::run(options),
        name => Err(ToolkitError::NotSupportedYet {
            name: name.to_string(),
            supported: SUPPORTED.join(", "),
        }
        .into()),
    }
}
