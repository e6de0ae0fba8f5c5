//! Membership changes on a live Concord DB cluster: a learner joins, catches up from a snapshot
//! (the log is compacted), is promoted once in sync, and a member is removed; a member removed
//! while it was down learns it when it comes back and refuses requests, and its ID is never
//! reused.
// Real processes on a real clock: waiting for them needs wall-clock deadlines.
#![allow(clippy::disallowed_methods)]

mod db;

use std::time::Duration;

use concord_kv::pb::etcdserverpb::kv_client::KvClient;
use concord_kv::pb::etcdserverpb::PutRequest;
use db::{etcdctl, etcdctl_ok, free_port, wait_until, DbCluster};

const KEYS: usize = 200;

/// Writes `key0000…` through the gRPC API (faster than one etcdctl process per key).
fn put_keys(url: &str, range: std::ops::Range<usize>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut client = KvClient::connect(url.to_string())
            .await
            .expect("connect to the cluster");
        for i in range {
            client
                .put(PutRequest {
                    key: format!("key{i:04}").into_bytes(),
                    value: format!("value{i}").into_bytes(),
                    ..PutRequest::default()
                })
                .await
                .expect("put");
        }
    });
}

fn status_field(cluster: &DbCluster, id: u64, field: &str) -> Option<serde_json::Value> {
    let row = cluster.status(id)?;
    let value = row["status"][field].clone();
    (!value.is_null()).then_some(value)
}

fn status_u64(cluster: &DbCluster, id: u64, field: &str) -> u64 {
    status_field(cluster, id, field)
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

fn ids(value: Option<serde_json::Value>) -> Vec<u64> {
    value
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_u64())
        .collect()
}

#[test]
fn a_learner_joins_by_snapshot_is_promoted_and_a_member_is_removed() {
    let mut cluster = DbCluster::start(3, &["--snapshot-entries", "50"]);
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let leader_url = format!("http://{}", cluster.nodes[(leader - 1) as usize].client);
    put_keys(&leader_url, 0..KEYS);
    // The leader's log is compacted well past the start.
    wait_until(
        Duration::from_secs(20),
        || status_u64(&cluster, leader, "snapshot_index") > 100,
        || format!("leader status: {:?}", cluster.status(leader)),
    );

    // Add node 4 as a learner.
    let node4 = cluster.add_node(&["--snapshot-entries", "50"]);
    assert_eq!(node4, 4);
    let endpoints = cluster.endpoints_of(&[1, 2, 3]);
    let peer_url = format!("http://{}", cluster.nodes[3].peer);
    let added = etcdctl_ok(
        &endpoints,
        &[
            "member",
            "add",
            "node4",
            &format!("--peer-urls={peer_url}"),
            "--learner",
        ],
    );
    assert!(added.contains("Member"), "member add: {added}");
    let list = etcdctl_ok(&endpoints, &["member", "list"]);
    assert!(
        list.lines()
            .any(|l| l.contains(&peer_url) && l.contains("true")),
        "node 4 is listed as a learner:\n{list}"
    );

    // A learner that has not caught up cannot be promoted.
    let promote = etcdctl(&endpoints, &["member", "promote", "4"]);
    let stderr = String::from_utf8_lossy(&promote.stderr);
    assert!(!promote.status.success(), "promoting an empty learner");
    assert!(
        stderr.contains("can only promote a learner member which is in sync with leader"),
        "a clear error: {stderr}"
    );

    // Start it; it catches up from a snapshot, since the entries it lacks are compacted away.
    let initial = cluster.cluster_text(&[1, 2, 3, 4]);
    cluster.spawn_joining(node4, &initial);
    wait_until(
        Duration::from_secs(30),
        || {
            let revision = status_field(&cluster, leader, "revision");
            revision.is_some() && status_field(&cluster, node4, "revision") == revision
        },
        || {
            format!(
                "node 4: {:?}\nleader: {:?}\n{}",
                cluster.status(node4),
                cluster.status(leader),
                cluster.logs()
            )
        },
    );
    let status4 = cluster.status(node4).expect("node 4 answers");
    assert_eq!(status4["status"]["role"], "learner", "{status4}");
    assert!(
        status_u64(&cluster, node4, "snapshot_index") > 1,
        "node 4 was sent a snapshot: {status4}"
    );
    let value = etcdctl_ok(
        &cluster.nodes[3].client,
        &["get", "key0000", "--print-value-only", "--consistency=s"],
    );
    assert_eq!(value.trim(), "value0");

    // Now it can be promoted (retried: "in sync" means it holds every committed entry).
    let last = std::cell::RefCell::new(String::new());
    wait_until(
        Duration::from_secs(20),
        || {
            let output = etcdctl(&endpoints, &["member", "promote", "4"]);
            *last.borrow_mut() = String::from_utf8_lossy(&output.stderr).into_owned();
            output.status.success()
        },
        || format!("promote keeps failing: {}", last.borrow()),
    );
    wait_until(
        Duration::from_secs(20),
        || ids(status_field(&cluster, node4, "voters")) == vec![1, 2, 3, 4],
        || format!("node 4: {:?}", cluster.status(node4)),
    );
    let all = cluster.endpoints();
    assert_eq!(
        etcdctl_ok(&all, &["put", "after-promote", "1"]).trim(),
        "OK"
    );

    // Remove a follower of the first three.
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let removed = (1..=3).find(|&id| id != leader).expect("a follower");
    let remaining: Vec<u64> = (1..=4).filter(|&id| id != removed).collect();
    let remaining_endpoints = cluster.endpoints_of(&remaining);
    etcdctl_ok(
        &remaining_endpoints,
        &["member", "remove", &format!("{removed:x}")],
    );
    let list = etcdctl_ok(&remaining_endpoints, &["member", "list"]);
    assert_eq!(list.lines().count(), 3, "three members left:\n{list}");

    // The others keep serving, each of them.
    assert_eq!(
        etcdctl_ok(&remaining_endpoints, &["put", "after-remove", "2"]).trim(),
        "OK"
    );
    for &id in &remaining {
        let value = etcdctl_ok(
            &cluster.nodes[(id - 1) as usize].client,
            &["get", "after-remove", "--print-value-only"],
        );
        assert_eq!(value.trim(), "2", "node {id}");
    }
    // The removed node refuses requests.
    let client = cluster.nodes[(removed - 1) as usize].client.clone();
    let last = std::cell::RefCell::new(String::new());
    wait_until(
        Duration::from_secs(20),
        || {
            let output = etcdctl(&client, &["put", "from-removed", "3"]);
            *last.borrow_mut() = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            // If it applied its removal it refuses with etcd's message; if it did not (it
            // learned only of the joint configuration), its old peers tell it when it next
            // talks to them, and it stops, as etcd's removed members do.
            !output.status.success()
                && (last.borrow().contains("removed")
                    || cluster
                        .log(removed)
                        .contains("permanently removed from the cluster"))
        },
        || {
            format!(
                "the removed node {removed} still serves: {}\n{}",
                last.borrow(),
                cluster.logs()
            )
        },
    );
    let output = etcdctl(&client, &["get", "key0000"]);
    assert!(!output.status.success(), "the removed node serves reads");
    let absent = etcdctl_ok(&remaining_endpoints, &["get", "from-removed"]);
    assert!(
        absent.trim().is_empty(),
        "a write through the removed node: {absent}"
    );
}

#[test]
fn a_member_removed_while_down_refuses_requests_when_it_comes_back_and_its_id_is_never_reused() {
    let mut cluster = DbCluster::start(3, &[]);
    cluster.wait_for_leader(Duration::from_secs(20));
    let all = cluster.endpoints();
    assert_eq!(etcdctl_ok(&all, &["put", "before", "1"]).trim(), "OK");

    // Node 3 goes down (if it led, the other two elect a leader) and is removed meanwhile.
    cluster.stop(3);
    let remaining = cluster.endpoints_of(&[1, 2]);
    let last = std::cell::RefCell::new(String::new());
    wait_until(
        Duration::from_secs(30),
        || {
            let output = etcdctl(&remaining, &["member", "remove", "3"]);
            *last.borrow_mut() = String::from_utf8_lossy(&output.stderr).into_owned();
            output.status.success()
        },
        || format!("member remove keeps failing: {}", last.borrow()),
    );
    assert_eq!(etcdctl_ok(&remaining, &["put", "after", "2"]).trim(), "OK");

    // Back up, it neither serves stale data nor waits for a leader forever: its old peers tell
    // it that it was removed, and it refuses every request with etcd's message.
    cluster.spawn(3);
    let client = cluster.nodes[2].client.clone();
    const REMOVED: &str = "etcdserver: the member has been permanently removed from the cluster";
    let last = std::cell::RefCell::new(String::new());
    wait_until(
        Duration::from_secs(30),
        || {
            let output = etcdctl(&client, &["get", "before", "--consistency=s"]);
            *last.borrow_mut() = String::from_utf8_lossy(&output.stderr).into_owned();
            !output.status.success() && last.borrow().contains(REMOVED)
        },
        || {
            format!(
                "the removed node answers: {}\n{}",
                last.borrow(),
                cluster.logs()
            )
        },
    );
    for args in [
        &["put", "k", "v"][..],
        &["get", "before"],
        &["del", "before"],
    ] {
        let output = etcdctl(&client, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(REMOVED),
            "{args:?}: {stderr}"
        );
    }
    assert!(
        cluster
            .log(3)
            .contains("this member has been permanently removed from the cluster"),
        "{}",
        cluster.log(3)
    );

    // The two go on, and a new member gets a fresh ID rather than the removed one's.
    assert_eq!(etcdctl_ok(&remaining, &["put", "later", "3"]).trim(), "OK");
    let added = etcdctl_ok(
        &remaining,
        &[
            "member",
            "add",
            "newcomer",
            &format!("--peer-urls=http://127.0.0.1:{}", free_port()),
            "--learner",
        ],
    );
    assert!(added.contains(" 4 added to cluster"), "member add: {added}");
    let list = etcdctl_ok(&remaining, &["member", "list", "-w", "json"]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let mut ids: Vec<u64> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["ID"].as_u64())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 4]);
}

#[test]
fn a_replacement_joins_with_the_current_members_and_restarts_with_them_keep_the_cluster() {
    // etcd's procedure to replace a member: remove it, add the new one, and start the new one
    // with `--initial-cluster` listing the members as they are now (what `etcdctl member add`
    // prints), not as they were when the cluster began.
    let mut cluster = DbCluster::start(3, &[]);
    let survivors = cluster.endpoints_of(&[1, 2]);
    etcdctl_ok(&survivors, &["member", "remove", "3"]);
    cluster.kill(3);
    // Node 3 may have led: a leader that removes itself steps down, and the others elect one
    // of their own (as in etcd, requests fail with "no leader" meanwhile).
    cluster.wait_for_leader(Duration::from_secs(20));
    let node4 = cluster.add_node(&[]);
    let peer_url = format!("http://{}", cluster.nodes[3].peer);
    let added = etcdctl_ok(
        &survivors,
        &[
            "member",
            "add",
            "node4",
            &format!("--peer-urls={peer_url}"),
            "--learner",
        ],
    );
    assert!(added.contains("Member                4 added"), "{added}");
    let now = cluster.cluster_text(&[1, 2, 4]);
    cluster.spawn_joining(node4, &now);
    let last = std::cell::RefCell::new(String::new());
    wait_until(
        Duration::from_secs(30),
        || {
            let output = etcdctl(&survivors, &["member", "promote", "4"]);
            *last.borrow_mut() = String::from_utf8_lossy(&output.stderr).into_owned();
            output.status.success()
        },
        || {
            format!(
                "node 4 never catches up: {}\n{}",
                last.borrow(),
                cluster.logs()
            )
        },
    );
    assert_eq!(
        etcdctl_ok(&cluster.endpoints_of(&[4]), &["put", "via-4", "yes"]).trim(),
        "OK"
    );
    // Every member keeps the id the cluster got when it began, the new one included.
    let kept = |id: u64| {
        std::fs::read_to_string(cluster.data_dir(id).join("cluster-id")).unwrap_or_default()
    };
    assert!(!kept(1).is_empty());
    assert_eq!(kept(4), kept(1));

    // An original member restarted with the members as they are now still belongs.
    cluster.initial_cluster = now;
    cluster.stop(1);
    cluster.spawn(1);
    let value = std::cell::RefCell::new(String::new());
    wait_until(
        Duration::from_secs(30),
        || {
            let output = etcdctl(
                &cluster.endpoints_of(&[1]),
                &["get", "via-4", "--print-value-only"],
            );
            *value.borrow_mut() = String::from_utf8_lossy(&output.stdout).trim().to_string();
            *value.borrow() == "yes"
        },
        || {
            format!(
                "node 1 after its restart: {:?}\n{}",
                value.borrow(),
                cluster.logs()
            )
        },
    );
}
