//! Prometheus metrics at `/metrics`: the runtime's (fsync latency, WAL size, messages) and the
//! database's (term, leader changes, proposals, apply lag).

use std::sync::Arc;
use std::time::Duration;

use concord_core::Role;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Shared;

/// The database's own metrics.
#[derive(Debug, Default)]
pub(crate) struct DbMetrics {
    /// Proposals committed and applied.
    pub(crate) proposals_committed: Counter,
    /// Proposals that failed (not leader, leadership lost, overloaded).
    pub(crate) proposals_failed: Counter,
    /// Times this node saw the leader change.
    pub(crate) leader_changes: Counter,
    /// 1 when this node leads.
    pub(crate) is_leader: Gauge,
    /// Commit index minus applied index.
    pub(crate) apply_lag: Gauge,
}

/// Follows the node's status to count leader changes and the apply lag.
pub(crate) async fn track(shared: Arc<Shared>) {
    let mut status = shared.handle.watch_status();
    let mut leader = status.borrow().leader;
    loop {
        if status.changed().await.is_err() {
            return;
        }
        let now = status.borrow_and_update().clone();
        if now.leader != leader {
            leader = now.leader;
            if leader.is_some() {
                shared.metrics.leader_changes.inc();
            }
        }
        shared
            .metrics
            .is_leader
            .set(i64::from(now.role == Role::Leader));
        shared.metrics.apply_lag.set(
            i64::try_from(now.commit_index.saturating_sub(now.applied_index)).unwrap_or(i64::MAX),
        );
        // Status changes with every step; sampling is enough for metrics.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Prometheus text exposition of every metric.
pub(crate) fn render(shared: &Shared) -> String {
    let mut registry = Registry::default();
    shared.handle.metrics().register(&mut registry);
    let db = &shared.metrics;
    let registry_db = registry.sub_registry_with_prefix("concord");
    registry_db.register(
        "proposals_committed",
        "Proposals committed and applied",
        db.proposals_committed.clone(),
    );
    registry_db.register(
        "proposals_failed",
        "Proposals that failed (not leader, leadership lost, overloaded)",
        db.proposals_failed.clone(),
    );
    registry_db.register(
        "leader_changes",
        "Leader changes seen by this node",
        db.leader_changes.clone(),
    );
    registry_db.register("is_leader", "1 when this node leads", db.is_leader.clone());
    registry_db.register(
        "apply_lag",
        "Committed entries not yet applied",
        db.apply_lag.clone(),
    );
    let mut text = String::new();
    if encode(&mut text, &registry).is_err() {
        text = "# metrics could not be encoded\n".to_string();
    }
    text
}
