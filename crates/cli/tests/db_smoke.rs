//! Concord DB starts as three processes, elects a leader and serves etcdctl.

mod db;

use db::{etcdctl_ok, DbCluster};

#[test]
fn three_processes_elect_a_leader_and_serve_etcdctl() {
    let cluster = DbCluster::start(3, &[]);
    let endpoints = cluster.endpoints();
    assert_eq!(
        etcdctl_ok(&endpoints, &["put", "greeting", "hello"]).trim(),
        "OK"
    );
    // Every node answers, followers included (they ask the leader for a read index).
    for node in &cluster.nodes {
        let value = etcdctl_ok(&node.client, &["get", "greeting", "--print-value-only"]);
        assert_eq!(value.trim(), "hello", "node {}", node.id);
    }
}
