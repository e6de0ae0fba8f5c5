//! TLS, as etcd deployments run it: a three-node cluster with TLS on the client port (client
//! certificates required) and mutual TLS between members. etcdctl with a client certificate
//! reads and writes through every member (followers forward writes to the leader over peer
//! TLS, lease requests over the leader's TLS client port); without a certificate, or in plain
//! text, it gets nothing; `/metrics` answers over HTTP/1.1 and TLS, on the client port and on an
//! `https://` metrics URL; `concord db status` and
//! `concord db bench` speak TLS too.
// Real processes on a real clock: waiting for them needs wall-clock deadlines.
#![allow(clippy::disallowed_methods)]

mod db;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use concord_runtime::tls::test_pki::TestCa;
use db::{concord, etcdctl, free_port, DbCluster};

fn path(p: &Path) -> String {
    p.to_str().expect("a UTF-8 path").to_string()
}

#[test]
fn a_cluster_with_tls_on_both_ports_serves_only_clients_with_a_certificate() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "concord");
    let (server_cert, server_key) = ca.leaf("server");
    let (client_cert, client_key) = ca.leaf("client");
    let ca_file = path(&ca.ca_file());
    let (server_cert, server_key) = (path(&server_cert), path(&server_key));
    let flags = [
        "--cert-file",
        &server_cert,
        "--key-file",
        &server_key,
        "--trusted-ca-file",
        &ca_file,
        "--client-cert-auth",
        "--peer-cert-file",
        &server_cert,
        "--peer-key-file",
        &server_key,
        "--peer-trusted-ca-file",
        &ca_file,
        "--peer-client-cert-auth",
    ];
    let client_flags = vec![
        "--cacert".to_string(),
        ca_file.clone(),
        "--cert".to_string(),
        path(&client_cert),
        "--key".to_string(),
        path(&client_key),
    ];
    let mut cluster = DbCluster::prepare(3, &flags);
    cluster.client_tls = Some(client_flags.clone());
    // Node 1 also serves /metrics on a port of its own, over TLS.
    let metrics_port = free_port();
    cluster.nodes[0].extra.extend([
        "--listen-metrics-urls".to_string(),
        format!("https://127.0.0.1:{metrics_port}"),
    ]);
    for id in 1..=3 {
        cluster.spawn(id);
    }
    // The harness asks every node over https:// with the client certificate.
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    cluster.wait_all_serving(Duration::from_secs(20));

    let tls_args: Vec<&str> = client_flags.iter().map(String::as_str).collect();
    let run = |endpoint: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(&tls_args);
        etcdctl(&format!("https://{endpoint}"), &all)
    };
    let ok = |endpoint: &str, args: &[&str]| {
        let output = run(endpoint, args);
        assert!(
            output.status.success(),
            "etcdctl {args:?} at {endpoint}: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            cluster.logs()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // Writes through every member: the followers' go to the leader over peer TLS.
    for node in &cluster.nodes {
        ok(&node.client, &["put", &format!("via{}", node.id), "v"]);
    }
    let follower = cluster
        .nodes
        .iter()
        .find(|n| n.id != leader)
        .expect("a follower");
    let keys = ok(&follower.client, &["get", "via", "--prefix", "--keys-only"]);
    assert_eq!(keys.split_whitespace().count(), 3, "{keys}");
    // Lease requests at a follower go to the leader's client port, over TLS.
    let granted = ok(&follower.client, &["lease", "grant", "60"]);
    let lease = granted.split_whitespace().nth(1).expect("a lease ID");
    let kept = ok(&follower.client, &["lease", "keep-alive", "--once", lease]);
    assert!(kept.contains("keepalived with TTL"), "{kept}");
    let members = ok(&follower.client, &["member", "list"]);
    assert!(
        members.contains(&format!("https://{}", cluster.nodes[0].client)),
        "{members}"
    );

    // No client certificate, or no TLS at all: refused.
    let endpoint = &cluster.nodes[0].client;
    let without_cert = etcdctl(
        &format!("https://{endpoint}"),
        &[
            "get",
            "via1",
            "--cacert",
            &ca_file,
            "--command-timeout",
            "2s",
        ],
    );
    assert!(!without_cert.status.success());
    let plain = etcdctl(endpoint, &["get", "via1", "--command-timeout", "2s"]);
    assert!(!plain.status.success());

    // The peer port speaks only TLS: a plain-text hello gets a TLS alert or a closed
    // connection, never the transport's one-byte answer.
    {
        use std::io::{Read, Write};
        let mut peer = std::net::TcpStream::connect(&cluster.nodes[0].peer).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut hello = b"CNCDPEER".to_vec();
        hello.resize(28, 0);
        peer.write_all(&hello).unwrap();
        let mut answer = [0u8; 1];
        match peer.read(&mut answer) {
            Ok(0) | Err(_) => {}
            Ok(_) => assert_eq!(answer[0], 0x15, "a TLS alert record"),
        }
    }

    // /metrics over TLS, asked for with HTTP/1.1, on the client port and on node 1's https://
    // metrics URL; the latter refuses plain HTTP.
    let curl = |url: &str| {
        Command::new("curl")
            .args(["--silent", "--show-error", "--fail", "--http1.1"])
            .args(["--cacert", &ca_file, "--cert"])
            .arg(&client_cert)
            .arg("--key")
            .arg(&client_key)
            .arg(url)
            .output()
            .expect("curl runs (.ci/run installs it)")
    };
    for url in [
        format!("https://{endpoint}/metrics"),
        format!("https://127.0.0.1:{metrics_port}/metrics"),
    ] {
        let metrics = curl(&url);
        let text = String::from_utf8_lossy(&metrics.stdout);
        assert!(
            text.contains("concord_term"),
            "{url}: {text}{}",
            String::from_utf8_lossy(&metrics.stderr)
        );
    }
    let plain = curl(&format!("http://127.0.0.1:{metrics_port}/metrics"));
    assert!(!plain.status.success(), "plain HTTP on a TLS metrics port");

    // The load generator speaks TLS.
    let bench = concord()
        .args([
            "db",
            "bench",
            "--op",
            "put",
            "--clients",
            "2",
            "--duration",
            "300ms",
        ])
        .args(["--json", "--endpoints"])
        .arg(
            cluster
                .nodes
                .iter()
                .map(|n| format!("https://{}", n.client))
                .collect::<Vec<_>>()
                .join(","),
        )
        .args(&client_flags)
        .output()
        .expect("concord db bench runs");
    let report: serde_json::Value = serde_json::from_slice(&bench.stdout).expect("a JSON report");
    assert!(report["ok"].as_u64().unwrap_or(0) > 0, "{report}");
    // The load generator reports what driving the load cost it (whole 10 ms ticks of CPU, so
    // possibly none in so short a run).
    assert!(
        report["client_cpu_us_per_op"]
            .as_f64()
            .is_some_and(|us| us >= 0.0),
        "{report}"
    );
}

#[test]
fn bad_tls_files_stop_the_node_at_start_with_a_clear_error() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "concord");
    let (cert, _) = ca.leaf("server");
    let (_, other_key) = ca.leaf("other");
    let dir = tempfile::tempdir().unwrap();
    let serve = |extra: &[&str]| {
        concord()
            .args([
                "db",
                "serve",
                "--id",
                "1",
                "--initial-cluster",
                "1=127.0.0.1:1",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("n1"))
            .args(["--listen-client", "127.0.0.1:0"])
            .args(extra)
            .output()
            .expect("concord runs")
    };
    let cert = path(&cert);
    let other_key = path(&other_key);
    let missing = serve(&["--cert-file", "/nonexistent.pem", "--key-file", &other_key]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("/nonexistent.pem"), "{stderr}");
    // A key that is not the certificate's.
    let mismatched = serve(&[
        "--cert-file",
        &cert,
        "--key-file",
        &other_key,
        "--trusted-ca-file",
        &path(&ca.ca_file()),
    ]);
    assert!(!mismatched.status.success());
    let stderr = String::from_utf8_lossy(&mismatched.stderr);
    assert!(stderr.contains("TLS"), "{stderr}");
    // Client certificate authentication without a CA to check them against.
    let no_ca = serve(&[
        "--cert-file",
        &cert,
        "--key-file",
        &other_key,
        "--client-cert-auth",
    ]);
    assert!(!no_ca.status.success());
    let stderr = String::from_utf8_lossy(&no_ca.stderr);
    assert!(stderr.contains("trusted-ca-file"), "{stderr}");
    // An https:// metrics URL without a certificate to serve it with; a URL of no scheme.
    let no_cert = serve(&["--listen-metrics-urls", "https://127.0.0.1:0"]);
    assert!(!no_cert.status.success());
    let stderr = String::from_utf8_lossy(&no_cert.stderr);
    assert!(stderr.contains("--cert-file"), "{stderr}");
    let no_scheme = serve(&["--listen-metrics-urls", "127.0.0.1:2381"]);
    assert!(!no_scheme.status.success());
    let stderr = String::from_utf8_lossy(&no_scheme.stderr);
    assert!(
        stderr.contains("not an http:// or https:// URL"),
        "{stderr}"
    );
}
