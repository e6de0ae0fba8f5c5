//! The simulator's typed errors. Bad user input never panics: it lands here.

use concord_core::NodeId;

use crate::nemesis::NemesisError;
use crate::network::LinkError;
use crate::topology::TopologyError;
use crate::workload::WorkloadError;

/// A simulation that cannot be set up or an action that cannot be carried out.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SimError {
    /// A cluster of zero nodes.
    #[error("a cluster needs at least one node")]
    NoNodes,
    /// A node id outside the cluster.
    #[error("node {node} does not exist (the cluster has nodes 0..{nodes})")]
    NoSuchNode {
        /// The id named.
        node: NodeId,
        /// The cluster size.
        nodes: usize,
    },
    /// A partition shape that does not fit.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// A link setting out of range.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// A bad nemesis plan.
    #[error(transparent)]
    Nemesis(#[from] NemesisError),
    /// A nemesis action that does not fit the cluster.
    #[error(transparent)]
    Action(#[from] crate::nemesis::ActionError),
    /// A bad workload setting.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// More Byzantine nodes than the budget allows.
    #[error("at most {max} Byzantine nodes are allowed, {requested} requested")]
    ByzantineBudget {
        /// The budget `f`.
        max: usize,
        /// How many would be Byzantine.
        requested: usize,
    },
    /// `corrupt` needs a protocol-supplied corruptor.
    #[error("byzantine behavior 'corrupt' needs a corruptor supplied by the protocol")]
    NoCorruptor,
    /// An option out of range.
    #[error("invalid option {name}: {message}")]
    InvalidOption {
        /// The option.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The algorithm cannot be simulated.
    #[error(transparent)]
    Toolkit(#[from] crate::toolkit::ToolkitError),
}
