//! The simulated network: per directed link latency, loss, duplication and reordering, on top
//! of a [`Connectivity`] matrix that partitions and one-way cuts edit.
//!
//! A message is delivered only if its link is up both when it is sent and when it would
//! arrive (a partition also swallows what is in flight). Client traffic obeys connectivity but
//! not loss, duplication or reordering: clients talk over a reliable request channel with a
//! timeout; a request or reply whose link is cut before it arrives is lost, and the client
//! times out.

use concord_core::time::MILLISECOND;
use concord_core::{Duration, NodeId, Rng};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::topology::Connectivity;

/// The behaviour of one directed link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// Smallest one-way latency, ns.
    pub latency_min: Duration,
    /// Largest one-way latency, ns (latency is uniform in `[min, max]`).
    pub latency_max: Duration,
    /// Probability that a message is lost.
    pub drop_probability: f64,
    /// Probability that a message is delivered twice (each copy with its own latency).
    pub duplicate_probability: f64,
    /// Probability that a message gets an extra random delay, overtaking later ones.
    pub reorder_probability: f64,
    /// Largest extra delay for a reordered message, ns.
    pub reorder_delay_max: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            latency_min: MILLISECOND / 2,
            latency_max: 2 * MILLISECOND,
            drop_probability: 0.0,
            duplicate_probability: 0.0,
            reorder_probability: 0.0,
            reorder_delay_max: 20 * MILLISECOND,
        }
    }
}

/// A link setting outside its range.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LinkError {
    /// A probability outside `[0, 1]`.
    #[error("{field} must be between 0 and 1, got {value}")]
    Probability {
        /// Which setting.
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// `latency_min > latency_max`.
    #[error("latency_min ({min}ns) is larger than latency_max ({max}ns)")]
    LatencyRange {
        /// The minimum given.
        min: Duration,
        /// The maximum given.
        max: Duration,
    },
}

impl LinkConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), LinkError> {
        for (field, value) in [
            ("drop_probability", self.drop_probability),
            ("duplicate_probability", self.duplicate_probability),
            ("reorder_probability", self.reorder_probability),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(LinkError::Probability { field, value });
            }
        }
        if self.latency_min > self.latency_max {
            return Err(LinkError::LatencyRange {
                min: self.latency_min,
                max: self.latency_max,
            });
        }
        Ok(())
    }
}

/// A link's latency range, ends in order.
fn latency_range(link: &LinkConfig) -> std::ops::RangeInclusive<Duration> {
    let (a, b) = (link.latency_min, link.latency_max);
    a.min(b)..=a.max(b)
}

/// What happened to one message handed to the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// The link is cut.
    Cut,
    /// Lost at random.
    Lost,
    /// Delivered after `delay`, and a second time after `duplicate` when duplicated.
    Deliver {
        /// The delay of the first copy.
        delay: Duration,
        /// The delay of the duplicate, if any.
        duplicate: Option<Duration>,
    },
}

/// What the network did to the messages routed through it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NetworkCounters {
    /// Messages handed to the network.
    pub routed: u64,
    /// Lost to a cut link at send time.
    pub cut: u64,
    /// Lost at random.
    pub lost: u64,
    /// Delivered twice.
    pub duplicated: u64,
    /// Given an extra reordering delay (counted per copy).
    pub reordered: u64,
}

/// Links and connectivity of a simulated cluster.
#[derive(Clone, Debug)]
pub struct Network {
    nodes: usize,
    links: Vec<LinkConfig>,
    connectivity: Connectivity,
    rng: Rng,
    counters: NetworkCounters,
}

impl Network {
    /// A fully connected network of `nodes` nodes whose links all behave like `link`.
    pub fn new(nodes: usize, link: LinkConfig, rng: Rng) -> Self {
        Network {
            nodes,
            links: vec![link; nodes * nodes],
            connectivity: Connectivity::full(nodes),
            rng,
            counters: NetworkCounters::default(),
        }
    }

    /// The cluster size.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    fn index(&self, from: NodeId, to: NodeId) -> Option<usize> {
        let (from, to) = (usize::try_from(from).ok()?, usize::try_from(to).ok()?);
        (from < self.nodes && to < self.nodes).then_some(from * self.nodes + to)
    }

    /// The link `from → to` (`None` for ids outside the cluster).
    pub fn link(&self, from: NodeId, to: NodeId) -> Option<&LinkConfig> {
        self.index(from, to).map(|i| &self.links[i])
    }

    /// Changes the link `from → to` (`None` for ids outside the cluster). Out-of-range values
    /// do not panic: probabilities are clamped in effect, and a reversed latency range is
    /// read as its two ends in order.
    pub fn link_mut(&mut self, from: NodeId, to: NodeId) -> Option<&mut LinkConfig> {
        self.index(from, to).map(|i| &mut self.links[i])
    }

    /// Changes every link.
    pub fn update_links(&mut self, mut change: impl FnMut(&mut LinkConfig)) {
        self.links.iter_mut().for_each(&mut change);
    }

    /// Changes the links from each of `from` to each of `to` (`None`: every node). Unknown ids
    /// are skipped.
    pub fn update_links_between(
        &mut self,
        from: &Option<Vec<NodeId>>,
        to: &Option<Vec<NodeId>>,
        mut change: impl FnMut(&mut LinkConfig),
    ) {
        let all: Vec<NodeId> = (0..self.nodes as NodeId).collect();
        for &a in from.as_deref().unwrap_or(&all) {
            for &b in to.as_deref().unwrap_or(&all) {
                if let Some(link) = self.link_mut(a, b) {
                    change(link);
                }
            }
        }
    }

    /// The current connectivity.
    pub fn connectivity(&self) -> &Connectivity {
        &self.connectivity
    }

    /// Replaces the connectivity (a partition shape).
    pub fn set_connectivity(&mut self, connectivity: Connectivity) {
        debug_assert_eq!(connectivity.nodes(), self.nodes);
        self.connectivity = connectivity;
    }

    /// Cuts (or restores) the one-way link `from → to`.
    pub fn set_connected(&mut self, from: NodeId, to: NodeId, connected: bool) {
        self.connectivity.set(from, to, connected);
    }

    /// Whether `from → to` is up.
    pub fn is_connected(&self, from: NodeId, to: NodeId) -> bool {
        self.connectivity.allows(from, to)
    }

    /// Restores every link (leaves latency, loss and the rest as they are).
    pub fn heal(&mut self) {
        self.connectivity = Connectivity::full(self.nodes);
    }

    /// Decides the fate of one message on `from → to`.
    pub fn route(&mut self, from: NodeId, to: NodeId) -> Route {
        self.counters.routed += 1;
        if !self.connectivity.allows(from, to) {
            self.counters.cut += 1;
            return Route::Cut;
        }
        let Some(index) = self.index(from, to) else {
            self.counters.cut += 1;
            return Route::Cut;
        };
        let link = &self.links[index];
        if link.drop_probability > 0.0 && self.rng.gen::<f64>() < link.drop_probability {
            self.counters.lost += 1;
            return Route::Lost;
        }
        let duplicated =
            link.duplicate_probability > 0.0 && self.rng.gen::<f64>() < link.duplicate_probability;
        let delay = self.delay(index);
        let duplicate = duplicated.then(|| {
            self.counters.duplicated += 1;
            self.delay(index)
        });
        Route::Deliver { delay, duplicate }
    }

    /// One copy's delay on link `index`: latency, plus a reordering delay at random.
    fn delay(&mut self, index: usize) -> Duration {
        let link = &self.links[index];
        let mut delay = self.rng.gen_range(latency_range(link));
        if link.reorder_probability > 0.0 && self.rng.gen::<f64>() < link.reorder_probability {
            delay += self.rng.gen_range(0..=link.reorder_delay_max);
            self.counters.reordered += 1;
        }
        delay
    }

    /// What the network has done so far.
    pub fn counters(&self) -> &NetworkCounters {
        &self.counters
    }

    /// One latency sample for client traffic between `from` and `to` (connectivity only).
    pub fn client_latency(&mut self, from: NodeId, to: NodeId) -> Option<Duration> {
        if !self.connectivity.allows(from, to) {
            return None;
        }
        let link = &self.links[self.index(from, to)?];
        Some(self.rng.gen_range(latency_range(link)))
    }
}
