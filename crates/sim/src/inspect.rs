//! Read-only views of a [`Simulation`]: time, nodes, storage, statuses, counters, history.

use concord_check::History;
use concord_core::{Node, NodeId, NodeStatus, Role, Time};

use crate::agreement::AppliedCommands;
use crate::engine::Simulation;
use crate::network::Network;
use crate::report::{Failure, Stats};
use crate::workload::Workload;
use crate::SimConfig;

impl<N: Node> Simulation<N> {
    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The protocol configuration.
    pub fn node_config(&self) -> &N::Config {
        &self.node_config
    }

    /// Current simulated time, ns.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Cluster size.
    pub fn nodes(&self) -> usize {
        self.config.nodes
    }

    /// Node `id`, while it is up (paused nodes are up).
    pub fn node(&self, id: NodeId) -> Option<&N> {
        self.slots.get(id as usize)?.node.as_ref()
    }

    /// The durable storage of node `id`: what its confirmed writes add up to.
    pub fn storage(&self, id: NodeId) -> Option<&N::Storage> {
        self.slots.get(id as usize).map(|s| &s.storage)
    }

    /// Whether node `id` is up (not crashed).
    pub fn is_up(&self, id: NodeId) -> bool {
        self.node(id).is_some()
    }

    /// Whether node `id` is paused.
    pub fn is_paused(&self, id: NodeId) -> bool {
        self.slots.get(id as usize).is_some_and(|s| s.paused)
    }

    /// Node `id`'s local time now.
    pub fn local_time(&self, id: NodeId) -> Option<Time> {
        self.slots.get(id as usize).map(|s| s.clock.local(self.now))
    }

    /// Node `id`'s clock rate.
    pub fn clock_rate(&self, id: NodeId) -> Option<f64> {
        self.slots.get(id as usize).map(|s| s.clock.rate())
    }

    /// Writes of node `id` handed to the disk and not yet durable.
    pub fn pending_writes(&self, id: NodeId) -> usize {
        self.slots.get(id as usize).map_or(0, |s| s.writes.len())
    }

    /// Every node's status; crashed and paused nodes show as [`Role::Down`].
    pub fn statuses(&self) -> Vec<NodeStatus> {
        self.slots
            .iter()
            .enumerate()
            .map(|(id, slot)| match &slot.node {
                Some(node) if !slot.paused => node.status(),
                _ => NodeStatus::down(id as NodeId),
            })
            .collect()
    }

    /// The node that believes itself leader in the highest term, when exactly one does.
    pub fn leader(&self) -> Option<NodeId> {
        crate::toolkit::unique_leader(&self.statuses())
    }

    /// The network (connectivity, link settings, counters).
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The network, to change.
    pub fn network_mut(&mut self) -> &mut Network {
        &mut self.network
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats.clone();
        let network = self.network.counters();
        stats.messages_lost = network.lost;
        stats.messages_cut = network.cut + self.cut_in_flight;
        stats.messages_duplicated = network.duplicated;
        stats.messages_reordered = network.reordered;
        stats.messages_dropped = network.lost + stats.messages_cut + self.stale_dropped;
        stats.simulated_time = self.now;
        stats
    }

    /// Every command applied so far, by index, with the first node that applied it. The
    /// built-in `apply-agreement` check makes sure every other node applied the same one.
    pub fn applied(&self) -> &AppliedCommands<N::Command> {
        &self.applied
    }

    /// The clients, when attached.
    pub fn workload(&self) -> Option<&Workload<N>> {
        self.workload.as_ref()
    }

    /// The client history (empty without clients).
    pub fn history(&self) -> &History {
        static EMPTY: History = History { events: Vec::new() };
        self.workload.as_ref().map_or(&EMPTY, |w| w.history())
    }

    /// The trace lines kept so far (empty unless tracing).
    pub fn trace(&self) -> Vec<String> {
        self.trace.iter().flatten().cloned().collect()
    }

    /// The failure that stopped the run, if any.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Whether every node is up, all agree on commit and applied index, and all hold the same
    /// replicated state (by `Node::state_digest`).
    pub fn converged(&self) -> bool {
        let statuses = self.statuses();
        let first = &statuses[0];
        let same_index = statuses.iter().all(|s| {
            s.role != Role::Down
                && s.applied_index == first.applied_index
                && s.commit_index == first.commit_index
        });
        // Same index is not enough: the replicas must hold the same state (eventual
        // consistency's convergence, checked by content).
        same_index && {
            let mut digests = self
                .slots
                .iter()
                .filter_map(|s| s.node.as_ref()?.state_digest());
            let first = digests.next();
            digests.all(|d| Some(d) == first)
        }
    }
}
