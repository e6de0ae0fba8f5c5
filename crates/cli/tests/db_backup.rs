//! Backups: `etcdctl snapshot save` against a running Concord DB node, then
//! `concord db restore` seeds a new three-node cluster that serves the same keys, revisions
//! and history; a damaged backup and an occupied data directory are refused.
// Real processes on a real clock: waiting for them needs wall-clock deadlines.
#![allow(clippy::disallowed_methods)]

mod db;

use std::time::Duration;

use db::{etcdctl_ok, DbCluster};

fn revision_of(endpoints: &str, key: &str) -> (i64, i64) {
    let out = etcdctl_ok(endpoints, &["get", key, "-w", "json"]);
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    (
        json["header"]["revision"].as_i64().expect("a revision"),
        json["kvs"][0]["mod_revision"]
            .as_i64()
            .expect("a mod revision"),
    )
}

#[test]
fn a_backup_saved_with_etcdctl_restores_a_new_cluster_with_the_same_keys_and_revisions() {
    let old = DbCluster::start(3, &[]);
    let endpoints = old.endpoints();
    for i in 0..20 {
        etcdctl_ok(
            &endpoints,
            &["put", &format!("key{i:02}"), &format!("v{i}")],
        );
    }
    etcdctl_ok(&endpoints, &["put", "key03", "second"]);
    etcdctl_ok(&endpoints, &["del", "key05"]);
    let before = revision_of(&endpoints, "key03");
    // An empty store is at revision 1: key00's put made revision 2, key03's first one 5.
    let history = etcdctl_ok(
        &endpoints,
        &["get", "key03", "--rev", "5", "--print-value-only"],
    );
    assert_eq!(history.trim(), "v3");

    let files = tempfile::tempdir().unwrap();
    let backup = files.path().join("backup.snap");
    let saved = etcdctl_ok(
        &old.nodes[0].client,
        &["snapshot", "save", backup.to_str().unwrap()],
    );
    assert!(saved.contains("Snapshot saved"), "{saved}");

    // A new cluster on other ports, every node restored from the same file.
    let mut new = DbCluster::prepare(3, &[]);
    for id in 1..=3 {
        let output = new.restore(&backup, id);
        assert!(
            output.status.success(),
            "restore {id}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("restored 19 keys"));
    }
    // Restoring over a node's state is refused.
    let again = new.restore(&backup, 1);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds a node's state"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    drop(old);
    for id in 1..=3 {
        new.spawn(id);
    }
    new.wait_for_leader(Duration::from_secs(20));
    new.wait_all_serving(Duration::from_secs(20));
    let endpoints = new.endpoints();
    assert_eq!(revision_of(&endpoints, "key03"), before);
    let value = etcdctl_ok(&endpoints, &["get", "key03", "--print-value-only"]);
    assert_eq!(value.trim(), "second");
    let history = etcdctl_ok(
        &endpoints,
        &["get", "key03", "--rev", "5", "--print-value-only"],
    );
    assert_eq!(
        history.trim(),
        "v3",
        "the history before the backup is kept"
    );
    let deleted = etcdctl_ok(&endpoints, &["get", "key05"]);
    assert!(deleted.trim().is_empty(), "{deleted}");
    let keys = etcdctl_ok(&endpoints, &["get", "key", "--prefix", "--keys-only"]);
    assert_eq!(
        keys.lines().filter(|l| !l.trim().is_empty()).count(),
        19,
        "{keys}"
    );
    // The new cluster takes writes, after the backup's revision, and lists its own members.
    etcdctl_ok(&endpoints, &["put", "after", "1"]);
    assert_eq!(revision_of(&endpoints, "after").1, before.0 + 1);
    let members = etcdctl_ok(&endpoints, &["member", "list"]);
    for node in &new.nodes {
        assert!(members.contains(&node.peer), "{members}");
    }

    // A damaged backup is refused with a clear error, and nothing is written.
    let mut bytes = std::fs::read(&backup).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    let damaged = files.path().join("damaged.snap");
    std::fs::write(&damaged, &bytes).unwrap();
    let fresh = DbCluster::prepare(1, &[]);
    let output = fresh.restore(&damaged, 1);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SHA-256 does not match"), "{stderr}");
    assert!(!fresh.nodes[0].data_dir.exists(), "nothing written");
}
