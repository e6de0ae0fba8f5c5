//! Faults the simulator injects into nodes and links: crash, restart, pause, resume, clock drift,
//! Byzantine senders, and the nemesis actions that combine them.

use concord_core::{NodeId, NodeStatus, Role};

use crate::byzantine::{BuiltIn, ByzantineBehavior};
use crate::engine::Simulation;
use crate::error::SimError;
use crate::event::Event;
use crate::nemesis::NemesisAction;
use crate::slot::Rewriter;
use crate::topology::Connectivity;

impl<N: concord_core::Node> Simulation<N> {
    /// Crashes node `id`: it loses every write not yet durable, every held send, every queued
    /// message to or from it and its timers. Its durable storage survives. Every running node
    /// that can reach it gets `Input::PeerLost` after the link's smallest latency, as its
    /// connections reset. No-op if down.
    pub fn crash(&mut self, id: NodeId) -> Result<(), SimError> {
        self.check_node(id)?;
        let slot = &mut self.slots[id as usize];
        if slot.node.is_none() {
            return Ok(());
        }
        let (lost, lost_checkpoints) = slot.crash(self.now);
        self.stats.crashes += 1;
        self.stats.persists_lost += lost as u64;
        self.stats.checkpoints_lost += u64::from(lost_checkpoints);
        self.trace_line(|| {
            let checkpoints = if lost_checkpoints {
                ", and its unsettled checkpoints"
            } else {
                ""
            };
            format!("n{id} crashed ({lost} unconfirmed writes lost{checkpoints})")
        });
        // Its kernel closes its connections: every running node it can reach sees the reset
        // after the link's smallest latency (a partitioned one sees nothing).
        for other in 0..self.config.nodes as NodeId {
            let slot = &self.slots[other as usize];
            if other == id || slot.node.is_none() || !self.network.is_connected(id, other) {
                continue;
            }
            let delay = self
                .network
                .link(id, other)
                .map_or(0, |link| link.latency_min);
            let event = Event::PeerLost {
                node: other,
                incarnation: slot.incarnation,
                peer: id,
            };
            self.queue.push(self.now + delay, event);
        }
        Ok(())
    }

    /// Restarts crashed node `id` with [`concord_core::Node::restore`] from its durable storage.
    /// No-op if up.
    pub fn restart(&mut self, id: NodeId) -> Result<(), SimError> {
        self.check_node(id)?;
        if self.slots[id as usize].node.is_some() {
            return Ok(());
        }
        self.stats.restarts += 1;
        self.boot(id);
        self.trace_line(|| format!("n{id} restarted from durable storage"));
        Ok(())
    }

    /// Pauses node `id`: it handles nothing until resumed; its inbox waits.
    pub fn pause(&mut self, id: NodeId) -> Result<(), SimError> {
        self.check_node(id)?;
        let slot = &mut self.slots[id as usize];
        if slot.node.is_some() && !slot.paused {
            slot.paused = true;
            slot.timer_generation += 1;
            slot.timer_at = None;
            self.trace_line(|| format!("n{id} paused"));
        }
        Ok(())
    }

    /// Resumes node `id`: what waited in its inbox is handed over now, in arrival order.
    pub fn resume(&mut self, id: NodeId) -> Result<(), SimError> {
        self.check_node(id)?;
        let slot = &mut self.slots[id as usize];
        if !slot.paused {
            return Ok(());
        }
        slot.paused = false;
        let parked = std::mem::take(&mut slot.parked);
        let count = parked.len();
        for event in parked {
            self.queue.push(self.now, event);
        }
        self.schedule_timer(id);
        self.trace_line(|| format!("n{id} resumed ({count} waiting events)"));
        Ok(())
    }

    /// Sets node `id`'s clock rate (local ns per simulated ns; 1.0 is exact).
    pub fn set_clock_rate(&mut self, id: NodeId, rate: f64) -> Result<(), SimError> {
        self.check_node(id)?;
        if !(rate.is_finite() && (0.1..=10.0).contains(&rate)) {
            return Err(SimError::InvalidOption {
                name: "clock rate",
                message: format!("must be between 0.1 and 10, got {rate}"),
            });
        }
        let now = self.now;
        let slot = &mut self.slots[id as usize];
        slot.clock.set_rate(now, rate);
        slot.timer_at = None;
        self.schedule_timer(id);
        self.trace_line(|| format!("n{id} clock rate {rate}"));
        Ok(())
    }

    /// Makes node `id` Byzantine (its outgoing messages go through `behavior`) or, with `None`,
    /// honest again. At most `max_byzantine` nodes may be Byzantine at once.
    pub fn set_byzantine(
        &mut self,
        id: NodeId,
        behavior: Option<Box<dyn ByzantineBehavior<N>>>,
    ) -> Result<(), SimError> {
        self.set_rewriter(id, behavior.map(Rewriter::Custom))
    }

    fn set_rewriter(&mut self, id: NodeId, behavior: Option<Rewriter<N>>) -> Result<(), SimError> {
        self.check_node(id)?;
        if behavior.is_some() {
            let others = self
                .slots
                .iter()
                .enumerate()
                .filter(|(i, s)| *i != id as usize && s.byzantine.is_some())
                .count();
            if others + 1 > self.config.max_byzantine {
                return Err(SimError::ByzantineBudget {
                    max: self.config.max_byzantine,
                    requested: others + 1,
                });
            }
        }
        let name = behavior.as_ref().map(|b| b.name());
        self.slots[id as usize].byzantine = behavior;
        self.trace_line(|| format!("n{id} byzantine: {}", name.unwrap_or("off")));
        Ok(())
    }

    /// Whether node `id` is Byzantine.
    pub fn is_byzantine(&self, id: NodeId) -> bool {
        self.slots
            .get(id as usize)
            .is_some_and(|s| s.byzantine.is_some())
    }

    /// The ids of crashed nodes.
    pub fn crashed(&self) -> Vec<NodeId> {
        (0..self.nodes() as NodeId)
            .filter(|&id| !self.is_up(id))
            .collect()
    }

    /// Carries out one nemesis action now.
    pub fn apply_action(&mut self, action: &NemesisAction) -> Result<(), SimError> {
        let nodes = self.nodes();
        action.validate(nodes)?;
        let statuses = self.statuses();
        let all: Vec<NodeId> = (0..nodes as NodeId).collect();
        match action {
            NemesisAction::Partition { groups } => self
                .network
                .set_connectivity(Connectivity::groups(nodes, groups)?),
            NemesisAction::Isolate { nodes: set } => self
                .network
                .set_connectivity(Connectivity::isolate(nodes, set)?),
            NemesisAction::Cut { from, to } => {
                for &a in from {
                    for &b in to {
                        self.network.set_connected(a, b, false);
                    }
                }
            }
            NemesisAction::QuorumLoss { center } => {
                let leader = crate::toolkit::unique_leader(&statuses);
                let center = center
                    .or_else(|| all.iter().copied().find(|&n| Some(n) != leader))
                    .unwrap_or(0);
                self.network
                    .set_connectivity(Connectivity::quorum_loss(nodes, center)?);
            }
            NemesisAction::ConstrainedElection { center, leader } => {
                let (center, leader) = constrained_election_roles(&statuses, *center, *leader);
                self.network
                    .set_connectivity(Connectivity::constrained_election(nodes, center, leader)?);
            }
            NemesisAction::Chained { chain } => {
                let chain = chain.clone().unwrap_or_else(|| {
                    let leader = crate::toolkit::unique_leader(&statuses).unwrap_or(0);
                    std::iter::once(leader)
                        .chain(all.iter().copied().filter(|&n| n != leader))
                        .collect()
                });
                self.network
                    .set_connectivity(Connectivity::chained(nodes, &chain)?);
            }
            NemesisAction::Heal {} => self.network.heal(),
            NemesisAction::Crash { nodes: set } => {
                for &id in set {
                    self.crash(id)?;
                }
            }
            NemesisAction::Restart { nodes: set } => {
                for id in set.clone().unwrap_or_else(|| self.crashed()) {
                    self.restart(id)?;
                }
            }
            NemesisAction::Pause { nodes: set } => {
                for &id in set {
                    self.pause(id)?;
                }
            }
            NemesisAction::Resume { nodes: set } => {
                for id in set.clone().unwrap_or_else(|| all.clone()) {
                    self.resume(id)?;
                }
            }
            NemesisAction::Loss {
                probability,
                from,
                to,
            } => self.network.update_links_between(from, to, |l| {
                l.drop_probability = *probability;
            }),
            NemesisAction::Duplicate {
                probability,
                from,
                to,
            } => self.network.update_links_between(from, to, |l| {
                l.duplicate_probability = *probability;
            }),
            NemesisAction::Reorder {
                probability,
                max_delay,
                from,
                to,
            } => self.network.update_links_between(from, to, |l| {
                l.reorder_probability = *probability;
                if let Some(max_delay) = max_delay {
                    l.reorder_delay_max = *max_delay;
                }
            }),
            NemesisAction::Latency { min, max, from, to } => {
                self.network.update_links_between(from, to, |l| {
                    l.latency_min = *min;
                    l.latency_max = *max;
                })
            }
            NemesisAction::Drift { nodes: set, rate } => {
                for &id in set {
                    self.set_clock_rate(id, *rate)?;
                }
            }
            NemesisAction::Byzantine {
                nodes: set,
                behavior,
            } => {
                for &id in set {
                    let built = BuiltIn::new(*behavior, self.corruptor.clone())
                        .ok_or(SimError::NoCorruptor)?;
                    self.set_rewriter(id, Some(Rewriter::BuiltIn(built)))?;
                }
            }
            NemesisAction::ByzantineOff { nodes: set } => {
                for id in set.clone().unwrap_or_else(|| all.clone()) {
                    self.set_byzantine(id, None)?;
                }
            }
            NemesisAction::Reset {} => {
                self.network.heal();
                let link = self.config.link.clone();
                self.network.update_links(|l| *l = link.clone());
                for &id in &all {
                    self.set_byzantine(id, None)?;
                    self.set_clock_rate(id, 1.0)?;
                    self.resume(id)?;
                    self.restart(id)?;
                }
            }
        }
        self.trace_line(|| {
            format!(
                "nemesis {}",
                serde_json::to_string(action).unwrap_or_default()
            )
        });
        Ok(())
    }
}

/// Picks the roles of a constrained election: the leader (given, else the current leader, else
/// the node with the longest log) and the center (given, else the node with the shortest log
/// among the others: the most outdated one).
fn constrained_election_roles(
    statuses: &[NodeStatus],
    center: Option<NodeId>,
    leader: Option<NodeId>,
) -> (NodeId, NodeId) {
    let leader = leader
        .or_else(|| crate::toolkit::unique_leader(statuses).filter(|&l| Some(l) != center))
        .or_else(|| {
            statuses
                .iter()
                .filter(|s| Some(s.id) != center && s.role != Role::Down)
                .max_by_key(|s| (s.log_length, std::cmp::Reverse(s.id)))
                .map(|s| s.id)
        })
        .unwrap_or(if center == Some(0) { 1 } else { 0 });
    let center = center
        .or_else(|| {
            statuses
                .iter()
                .filter(|s| s.id != leader)
                .min_by_key(|s| (s.role == Role::Down, s.log_length, s.id))
                .map(|s| s.id)
        })
        .unwrap_or(if leader == 0 { 1 } else { 0 });
    (center, leader)
}
