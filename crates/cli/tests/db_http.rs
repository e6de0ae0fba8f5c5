//! etcd's HTTP endpoints: `/health`, `/version` and `/metrics` on the client port and on the
//! plain-HTTP listeners of `--listen-metrics-urls`; `/health` turns 503 when the member has
//! no leader, with etcd's reason; and the standard gRPC health service.
// Real processes on a real clock: waiting for them needs wall-clock deadlines.
#![allow(clippy::disallowed_methods)]

mod db;

use std::process::Command;
use std::time::Duration;

use db::{eventually, free_port, DbCluster};

/// The status code and body of `GET url` (curl, which `.ci/run` installs).
fn get(url: &str) -> (u16, String) {
    let output = Command::new("curl")
        .args([
            "--silent",
            "--max-time",
            "10",
            "--write-out",
            "\n%{http_code}",
            url,
        ])
        .output()
        .expect("curl runs (.ci/run installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn health_version_and_metrics_answer_over_http_and_health_fails_without_a_leader() {
    let mut cluster = DbCluster::prepare(3, &[]);
    let metrics: Vec<String> = (0..3)
        .map(|_| format!("http://127.0.0.1:{}", free_port()))
        .collect();
    for (node, url) in cluster.nodes.iter_mut().zip(&metrics) {
        node.extra
            .extend(["--listen-metrics-urls".to_string(), url.clone()]);
    }
    for id in 1..=3 {
        cluster.spawn(id);
    }
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    cluster.wait_all_serving(Duration::from_secs(20));

    for (node, metrics) in cluster.nodes.iter().zip(&metrics) {
        for base in [format!("http://{}", node.client), metrics.clone()] {
            let (code, body) = get(&format!("{base}/health"));
            assert_eq!(code, 200, "{base}: {body}");
            assert_eq!(json(&body)["health"], "true", "{body}");
            let (code, body) = get(&format!("{base}/version"));
            assert_eq!(code, 200);
            assert_eq!(json(&body)["etcdserver"], "3.4.0", "{body}");
            let (code, body) = get(&format!("{base}/metrics"));
            assert_eq!(code, 200);
            assert!(body.contains("concord_term"), "{body}");
            assert!(
                body.contains("\nconcord_quota_bytes 2147483648\n"),
                "{body}"
            );
            assert!(body.contains("\nconcord_store_bytes "), "{body}");
        }
    }

    // The standard gRPC health service answers SERVING on every member.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for node in &cluster.nodes {
        let status = runtime.block_on(async {
            let channel =
                tonic::transport::Endpoint::from_shared(format!("http://{}", node.client))
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .status
        });
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }

    // With the other two members gone, the survivor soon has no leader: unhealthy, even for
    // the serializable probe, with etcd's reason.
    let survivor = if leader == 1 { 2 } else { 1 };
    for id in 1..=3 {
        if id != survivor {
            cluster.kill(id);
        }
    }
    let url = format!(
        "{}/health?serializable=true",
        metrics[(survivor - 1) as usize]
    );
    let body = eventually(
        "the survivor reports no leader",
        Duration::from_secs(20),
        || {
            let (code, body) = get(&url);
            (code == 503).then_some(body)
        },
    );
    let body = json(&body);
    assert_eq!(body["health"], "false");
    assert_eq!(body["reason"], "RAFT NO LEADER");
}
