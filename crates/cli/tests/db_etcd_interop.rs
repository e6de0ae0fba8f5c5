//! Backups cross between Concord DB and etcd: a snapshot saved from Concord DB is read by
//! `etcdctl snapshot status` and restored by `etcdctl snapshot restore` into an etcd that
//! serves the same keys, revisions and history; one saved from etcd restores a Concord DB
//! cluster. The tests that run etcd itself need Debian's `etcd-server`; without it they say so
//! and pass, except under CI (`CI` set), where `.ci/run` installs it and its absence fails.
// Real processes on a real clock: waiting for them needs wall-clock deadlines.
#![allow(clippy::disallowed_methods)]

mod db;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use db::{etcdctl, etcdctl_ok, eventually, free_port, DbCluster};

/// One etcd member on free ports, killed on drop.
struct Etcd {
    child: Child,
    client: String,
}

impl Etcd {
    /// Whether `etcd` can run here; under CI its absence is a failure.
    fn available() -> bool {
        let found = Command::new("etcd")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(
                std::env::var_os("CI").is_none(),
                "etcd is required under CI (Debian package etcd-server; .ci/run installs it)"
            );
            eprintln!("etcd is not installed (apt-get install etcd-server): skipping");
        }
        found
    }

    /// The flags naming a one-member cluster whose peer URL is `peer`.
    fn cluster_flags(peer: &str) -> Vec<String> {
        vec![
            "--name".into(),
            "e".into(),
            "--initial-cluster".into(),
            format!("e={peer}"),
            "--initial-advertise-peer-urls".into(),
            peer.into(),
        ]
    }

    /// Starts a member on `data_dir` (new, or restored by `etcdctl snapshot restore` with the
    /// same `peer`) and waits until it serves.
    fn start(data_dir: &Path, peer: &str) -> Etcd {
        let client = format!("127.0.0.1:{}", free_port());
        let child = Command::new("etcd")
            .args(Self::cluster_flags(peer))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen-peer-urls", peer])
            .args(["--listen-client-urls", &format!("http://{client}")])
            .args(["--advertise-client-urls", &format!("http://{client}")])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        let etcd = Etcd { child, client };
        eventually("etcd serves", Duration::from_secs(20), || {
            etcdctl(&etcd.client, &["get", "probe"])
                .status
                .success()
                .then_some(())
        });
        etcd
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// (value, create revision, mod revision, version) of `key`, at `revision` if given.
fn get(endpoints: &str, key: &str, revision: Option<i64>) -> (String, i64, i64, i64) {
    let mut args = vec!["get", key, "-w", "json"];
    let at = revision.map(|r| r.to_string());
    if let Some(at) = &at {
        args.extend(["--rev", at]);
    }
    let doc = json(&etcdctl_ok(endpoints, &args));
    let kv = &doc["kvs"][0];
    let value = kv["value"].as_str().unwrap_or_default();
    // etcdctl's JSON carries bytes in standard base64.
    let value =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, value).expect("base64");
    let value = String::from_utf8(value).expect("utf-8 value");
    let field = |name: &str| kv[name].as_i64().unwrap_or(0);
    (
        value,
        field("create_revision"),
        field("mod_revision"),
        field("version"),
    )
}

/// Writes the same small history to any etcd API: puts, an overwrite, a delete, a lease with a
/// key, a transaction and a compaction. Returns the revision after it.
fn write_history(endpoints: &str) -> i64 {
    for i in 0..10 {
        etcdctl_ok(endpoints, &["put", &format!("k{i}"), &format!("v{i}")]);
    }
    etcdctl_ok(endpoints, &["put", "k3", "again"]);
    etcdctl_ok(endpoints, &["del", "k5"]);
    let granted = etcdctl_ok(endpoints, &["lease", "grant", "3600"]);
    let lease = granted.split_whitespace().nth(1).expect("a lease ID");
    etcdctl_ok(endpoints, &["put", "leased", "x", "--lease", lease]);
    let txn = db::etcdctl_with_input(endpoints, &["txn"], Some("\nput t1 a\nput t2 b\n\n\n"));
    assert!(
        txn.status.success(),
        "{}",
        String::from_utf8_lossy(&txn.stderr)
    );
    etcdctl_ok(endpoints, &["compact", "4"]);
    json(&etcdctl_ok(endpoints, &["get", "k0", "-w", "json"]))["header"]["revision"]
        .as_i64()
        .expect("a revision")
}

/// What the history above left, as read through `endpoints`.
fn check_history(endpoints: &str, revision: i64) {
    // k0..k9 at 2..11, k3 again at 12, k5 deleted at 13, `leased` at 14, the transaction at 15.
    assert_eq!(revision, 15);
    assert_eq!(get(endpoints, "k3", None), ("again".into(), 5, 12, 2));
    assert_eq!(get(endpoints, "k3", Some(11)), ("v3".into(), 5, 5, 1));
    assert_eq!(get(endpoints, "t2", None), ("b".into(), 15, 15, 1));
    assert_eq!(get(endpoints, "k5", None).0, "");
    assert_eq!(get(endpoints, "k5", Some(12)).0, "v5");
    let compacted = etcdctl(endpoints, &["get", "k0", "--rev", "3"]);
    assert!(
        String::from_utf8_lossy(&compacted.stderr).contains("compacted"),
        "{}",
        String::from_utf8_lossy(&compacted.stderr)
    );
    let leases = etcdctl_ok(endpoints, &["lease", "list"]);
    let lease = leases.lines().nth(1).expect("one lease").trim().to_string();
    let ttl = etcdctl_ok(endpoints, &["lease", "timetolive", &lease, "--keys"]);
    assert!(ttl.contains("granted with TTL(3600s)"), "{ttl}");
    assert!(ttl.contains("leased"), "{ttl}");
    let next = json(&etcdctl_ok(endpoints, &["put", "after", "1", "-w", "json"]));
    assert_eq!(next["header"]["revision"].as_i64(), Some(16));
}

/// Saves a snapshot of `endpoints` to `dir/name` with etcdctl and reads it back with
/// `etcdctl snapshot status`, which opens the bbolt file and checks its integrity.
fn save_and_status(endpoints: &str, dir: &Path, name: &str) -> serde_json::Value {
    let backup = dir.join(name);
    let path = backup.to_str().expect("a UTF-8 path");
    etcdctl_ok(endpoints, &["snapshot", "save", path]);
    json(&etcdctl_ok(
        endpoints,
        &["snapshot", "status", path, "-w", "json"],
    ))
}

#[test]
fn etcdctl_snapshot_status_reads_a_concord_backup() {
    let cluster = DbCluster::start(1, &[]);
    let endpoints = cluster.endpoints();
    let revision = write_history(&endpoints);
    let files = tempfile::tempdir().unwrap();
    let status = save_and_status(&endpoints, files.path(), "concord.db");
    assert_eq!(status["revision"].as_i64(), Some(revision));
    // Entries of every bucket: 15 retained writes in `key` (the compaction at 4 removes none:
    // k0..k2 keep their only versions; then the 10 first puts, k3's second, k5's tombstone,
    // `leased`, t1 and t2), the lease, the member, and the compaction's two marks in `meta`.
    assert_eq!(
        status["totalKey"].as_i64(),
        Some(15 + 1 + 1 + 2),
        "{status}"
    );
}

#[test]
fn a_concord_backup_restores_into_etcd() {
    if !Etcd::available() {
        return;
    }
    let cluster = DbCluster::start(1, &[]);
    let endpoints = cluster.endpoints();
    let revision = write_history(&endpoints);
    let files = tempfile::tempdir().unwrap();
    let backup = files.path().join("concord.db");
    etcdctl_ok(&endpoints, &["snapshot", "save", backup.to_str().unwrap()]);
    drop(cluster);

    let peer = format!("http://127.0.0.1:{}", free_port());
    let data_dir = files.path().join("etcd");
    let restored = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(&backup)
        .arg("--data-dir")
        .arg(&data_dir)
        .args(Etcd::cluster_flags(&peer))
        .output()
        .expect("etcdctl runs");
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    let etcd = Etcd::start(&data_dir, &peer);
    check_history(&etcd.client, revision);
}

#[test]
fn an_etcd_snapshot_restores_a_concord_cluster() {
    if !Etcd::available() {
        return;
    }
    let files = tempfile::tempdir().unwrap();
    let peer = format!("http://127.0.0.1:{}", free_port());
    let etcd = Etcd::start(&files.path().join("etcd"), &peer);
    let revision = write_history(&etcd.client);
    let backup = files.path().join("etcd.db");
    etcdctl_ok(
        &etcd.client,
        &["snapshot", "save", backup.to_str().unwrap()],
    );
    drop(etcd);

    let mut cluster = DbCluster::prepare(1, &[]);
    let output = cluster.restore(&backup, 1);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    cluster.spawn(1);
    cluster.wait_for_leader(Duration::from_secs(20));
    check_history(&cluster.endpoints(), revision);
}

#[test]
fn a_backup_larger_than_one_stream_message_arrives_whole() {
    let cluster = DbCluster::start(1, &[]);
    let endpoints = cluster.endpoints();
    // Three values of 1 MiB: the snapshot stream carries 1 MiB per message.
    let value = "v".repeat(1 << 20);
    for i in 0..3 {
        // The value comes on standard input: it is too long for an argument.
        let key = format!("big{i}");
        let put = db::etcdctl_with_input(&endpoints, &["put", &key], Some(&value));
        assert!(
            put.status.success(),
            "{}",
            String::from_utf8_lossy(&put.stderr)
        );
    }
    let files = tempfile::tempdir().unwrap();
    let status = save_and_status(&endpoints, files.path(), "big.db");
    assert_eq!(status["totalKey"].as_i64(), Some(3 + 1), "{status}");
    assert!(
        status["totalSize"].as_i64().unwrap_or(0) > 3 << 20,
        "{status}"
    );
}
