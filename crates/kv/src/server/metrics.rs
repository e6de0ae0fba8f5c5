//! Prometheus metrics at `/metrics`: the runtime's (fsync latency, WAL size, messages), the
//! database's (term, leader changes, proposals, apply lag, store size and quota), and the
//! standard process metrics every Prometheus client exports (`process_resident_memory_bytes`,
//! `process_cpu_seconds_total`, …; dashboards and `etcdctl check datascale` read them).

use std::sync::atomic::Ordering;
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

/// How often the apply lag and the store's size are read.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Follows the node's role and leader to count leader changes, and samples the apply lag.
pub(crate) async fn track(shared: Arc<Shared>) {
    let mut leadership = shared.handle.watch_leadership();
    let mut leader = leadership.borrow().leader;
    loop {
        // Every change of leader is counted; the rest is sampled (the status changes with
        // every step, and watching it would wake this task for each).
        let changed = tokio::time::timeout(SAMPLE_EVERY, leadership.changed()).await;
        if matches!(changed, Ok(Err(_))) {
            return;
        }
        let now = *leadership.borrow_and_update();
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
        let lag = shared
            .handle
            .with_status(|status| status.commit_index.saturating_sub(status.applied_index));
        shared
            .metrics
            .apply_lag
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
        // The quota check reads the store's size from here.
        if let Ok(size) = shared.with_store(crate::KvStore::size_bytes).await {
            shared.store_bytes.store(size, Ordering::Relaxed);
        }
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
    // Beside each other, for an alert well before the NOSPACE alarm (etcd's
    // `etcd_mvcc_db_total_size_in_bytes` and `etcd_server_quota_backend_bytes`).
    let store_bytes = Gauge::<i64>::default();
    store_bytes.set(i64::try_from(shared.store_bytes.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
    registry_db.register(
        "store_bytes",
        "Bytes of the key space with its retained history, as a snapshot encodes it",
        store_bytes,
    );
    let quota_bytes = Gauge::<i64>::default();
    quota_bytes.set(i64::try_from(shared.config.quota_bytes).unwrap_or(i64::MAX));
    registry_db.register(
        "quota_bytes",
        "The space quota (--quota-backend-bytes)",
        quota_bytes,
    );
    register_process_metrics(&mut registry);
    let mut text = String::new();
    if encode(&mut text, &registry).is_err() {
        text = "# metrics could not be encoded\n".to_string();
    }
    text
}

/// The process's own figures, read from `/proc/self` when rendered (Linux; elsewhere none).
fn register_process_metrics(registry: &mut Registry) {
    let Some(process) = ProcessFigures::read() else {
        return;
    };
    let gauge = |value: f64| {
        let gauge = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        gauge.set(value);
        gauge
    };
    let cpu = Counter::<f64, std::sync::atomic::AtomicU64>::default();
    cpu.inc_by(process.cpu_seconds);
    registry.register(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds",
        cpu,
    );
    let figures = [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            process.resident_bytes,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            process.virtual_bytes,
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            process.start_time_seconds,
        ),
        (
            "process_open_fds",
            "Number of open file descriptors",
            process.open_fds,
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors",
            process.max_fds,
        ),
    ];
    for (name, help, value) in figures {
        registry.register(name, help, gauge(value));
    }
}

/// What `/proc/self` says about this process.
#[derive(Debug)]
struct ProcessFigures {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    start_time_seconds: f64,
    open_fds: f64,
    max_fds: f64,
}

impl ProcessFigures {
    fn read() -> Option<ProcessFigures> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces), from field 3 (state) on.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let boot_time: f64 = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
        let max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .map_or(f64::INFINITY, |limit| limit as f64);
        Some(ProcessFigures {
            cpu_seconds: (field(14)? + field(15)?) / ticks,
            resident_bytes: field(24)? * rustix::param::page_size() as f64,
            virtual_bytes: field(23)?,
            start_time_seconds: boot_time + field(22)? / ticks,
            open_fds,
            max_fds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_figures_are_plausible() {
        let figures = ProcessFigures::read().expect("/proc/self is readable on Linux");
        assert!(figures.resident_bytes > 1e6, "{figures:?}");
        assert!(
            figures.virtual_bytes >= figures.resident_bytes,
            "{figures:?}"
        );
        assert!(
            figures.open_fds >= 3.0 && figures.open_fds <= figures.max_fds,
            "{figures:?}"
        );
        assert!(figures.start_time_seconds > 1.6e9, "{figures:?}");
        let mut registry = Registry::default();
        register_process_metrics(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for name in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
        ] {
            assert!(text.contains(name), "{text}");
        }
    }
}
