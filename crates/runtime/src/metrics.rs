//! The host's Prometheus metrics (`prometheus-client`).
//!
//! Every metric is a cheap shared handle: the host updates them, and
//! [`HostMetrics::register`] adds them to any [`Registry`] (use a sub-registry to prefix or
//! label them per node).

use concord_core::{NodeId, NodeStatus};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels naming a peer.
pub type PeerLabels = Vec<(String, String)>;

/// The host's metrics.
#[derive(Clone, Debug)]
pub struct HostMetrics {
    /// Seconds per WAL fsync.
    pub fsync_seconds: Histogram,
    /// Writes made durable by one fsync (group commit batch size).
    pub persist_batch_writes: Histogram,
    /// Bytes in the live WAL segments.
    pub wal_bytes: Gauge,
    /// Live WAL segments.
    pub wal_segments: Gauge,
    /// Compactions (WAL rewrites) done.
    pub wal_compactions: Counter,
    /// Messages handed to the transport for a peer and written to its connection.
    pub messages_sent: Family<PeerLabels, Counter>,
    /// Messages received from a peer.
    pub messages_received: Family<PeerLabels, Counter>,
    /// Messages to a peer dropped (queue full, disconnected, undecodable on receipt, blocked).
    pub messages_dropped: Family<PeerLabels, Counter>,
    /// Requests refused because too many were in flight.
    pub requests_overloaded: Counter,
    /// The node's term (ballot, view).
    pub term: Gauge,
    /// The node's commit index.
    pub commit_index: Gauge,
    /// The node's applied index.
    pub applied_index: Gauge,
}

impl Default for HostMetrics {
    fn default() -> Self {
        HostMetrics {
            fsync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            persist_batch_writes: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            wal_bytes: Gauge::default(),
            wal_segments: Gauge::default(),
            wal_compactions: Counter::default(),
            messages_sent: Family::default(),
            messages_received: Family::default(),
            messages_dropped: Family::default(),
            requests_overloaded: Counter::default(),
            term: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
        }
    }
}

/// The labels of peer `id`.
pub fn peer_labels(id: NodeId) -> PeerLabels {
    vec![("peer".to_string(), id.to_string())]
}

impl HostMetrics {
    /// Registers every metric in `registry` (names prefixed `concord_`).
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("concord");
        registry.register(
            "wal_fsync_seconds",
            "Seconds per WAL fsync",
            self.fsync_seconds.clone(),
        );
        registry.register(
            "wal_persist_batch_writes",
            "Writes made durable by one fsync",
            self.persist_batch_writes.clone(),
        );
        registry.register(
            "wal_bytes",
            "Bytes in live WAL segments",
            self.wal_bytes.clone(),
        );
        registry.register(
            "wal_segments",
            "Live WAL segments",
            self.wal_segments.clone(),
        );
        registry.register(
            "wal_compactions",
            "WAL rewrites done",
            self.wal_compactions.clone(),
        );
        registry.register(
            "messages_sent",
            "Messages sent per peer",
            self.messages_sent.clone(),
        );
        registry.register(
            "messages_received",
            "Messages received per peer",
            self.messages_received.clone(),
        );
        registry.register(
            "messages_dropped",
            "Messages dropped per peer (queue full, disconnected, undecodable, blocked)",
            self.messages_dropped.clone(),
        );
        registry.register(
            "requests_overloaded",
            "Requests refused because too many were in flight",
            self.requests_overloaded.clone(),
        );
        registry.register("term", "Current term, ballot or view", self.term.clone());
        registry.register("commit_index", "Commit index", self.commit_index.clone());
        registry.register("applied_index", "Applied index", self.applied_index.clone());
    }

    /// The metrics in the Prometheus text format (a fresh registry holding only these).
    pub fn encode_text(&self) -> String {
        let mut registry = Registry::default();
        self.register(&mut registry);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &registry);
        text
    }

    /// Updates the node gauges from its status.
    pub(crate) fn observe_status(&self, status: &NodeStatus) {
        self.term.set(status.term as i64);
        self.commit_index.set(status.commit_index as i64);
        self.applied_index.set(status.applied_index as i64);
    }

    /// Counts a dropped message to or from `peer`.
    pub(crate) fn dropped(&self, peer: NodeId) {
        self.messages_dropped
            .get_or_create(&peer_labels(peer))
            .inc();
    }
}
