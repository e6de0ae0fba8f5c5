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

/// `GET /metrics` on a node's client port, over plain HTTP/1.1.
fn metrics(client: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(client).expect("connect to the client port");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {client}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    response
}

#[test]
fn every_node_serves_prometheus_metrics() {
    let cluster = DbCluster::start(3, &[]);
    let endpoints = cluster.endpoints();
    etcdctl_ok(&endpoints, &["put", "k", "v"]);
    let leader = cluster.wait_for_leader(std::time::Duration::from_secs(10));
    let text = metrics(&cluster.nodes[(leader - 1) as usize].client);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for name in [
        "concord_term",
        "concord_commit_index",
        "concord_wal_fsync_seconds_count",
        "concord_wal_bytes",
        "concord_proposals_committed_total",
        "concord_proposals_failed_total",
        "concord_leader_changes_total",
        "concord_apply_lag",
    ] {
        assert!(
            text.lines().any(|line| line.starts_with(name)),
            "metric {name} missing:\n{text}"
        );
    }
    let committed: f64 = text
        .lines()
        .find_map(|line| line.strip_prefix("concord_proposals_committed_total "))
        .and_then(|value| value.trim().parse().ok())
        .expect("a committed-proposals counter");
    assert!(committed >= 1.0, "the put was counted: {committed}");
}

/// A write to a follower is answered once that follower applied it (it forwards the write to
/// the leader through Raft and answers from its own apply, as etcd's followers do), so a
/// serializable read there right after sees it: read-your-writes on the member written to.
#[test]
fn a_follower_answers_a_write_once_its_own_serializable_reads_see_it() {
    use concord_kv::pb::etcdserverpb::kv_client::KvClient;
    use concord_kv::pb::etcdserverpb::{PutRequest, RangeRequest};

    let cluster = DbCluster::start(3, &[]);
    let leader = cluster.wait_for_leader(std::time::Duration::from_secs(20));
    let follower = cluster
        .nodes
        .iter()
        .find(|n| n.id != leader)
        .expect("a follower");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut client = KvClient::connect(format!("http://{}", follower.client))
            .await
            .expect("the follower answers");
        for i in 0..50 {
            let value = format!("v{i}").into_bytes();
            let put = PutRequest {
                key: b"ryw".to_vec(),
                value: value.clone(),
                ..Default::default()
            };
            let revision = client
                .put(put)
                .await
                .expect("the write")
                .into_inner()
                .header
                .expect("a header")
                .revision;
            let read = RangeRequest {
                key: b"ryw".to_vec(),
                serializable: true,
                ..Default::default()
            };
            let range = client.range(read).await.expect("the read").into_inner();
            assert_eq!(range.kvs.len(), 1, "write {i}");
            assert_eq!(range.kvs[0].value, value, "write {i}");
            assert_eq!(range.kvs[0].mod_revision, revision, "write {i}");
        }
    });
}
