//! Three Raft hosts on 127.0.0.1: election, replication, restart of one node and of all.

mod common;

use std::time::Duration;

use common::{local_read, raft_config, wait_applied, Cluster, PATIENCE};
use concord_core::{KvOperation, KvResult, NodeId, Role, Value};
use concord_raft::{Config, RaftError, Request, Response};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_elects_commits_survives_restarts_and_keeps_every_acknowledged_write() {
    let mut cluster = Cluster::start(3, raft_config()).await;
    let leader = cluster.leader().await;

    // Proposals commit and their replies arrive.
    for i in 0..10 {
        cluster.write(&format!("k{i}"), i).await;
    }
    assert_eq!(cluster.read("k3").await, Some(Value::Int(3)));

    // Stop one follower; the other two keep committing without it.
    let follower = (0..3).find(|&id| id != leader).unwrap();
    let before = cluster.node(follower).status();
    cluster.stop(follower).await;
    for i in 10..20 {
        cluster.write(&format!("k{i}"), i).await;
    }

    // Restarted from its data directory, it recovers its own log and catches up.
    cluster.restart(follower).await;
    let recovered = cluster.node(follower).status();
    assert_eq!(recovered.role, Role::Follower);
    assert!(
        recovered.log_length >= before.log_length,
        "the restarted node lost log entries: before {before:?}, after {recovered:?}"
    );
    assert!(recovered.term >= before.term);
    let leader = cluster.leader().await;
    let commit = cluster.node(leader).status().commit_index;
    wait_applied(cluster.node(follower), commit).await;
    for i in 0..20 {
        assert_eq!(
            local_read(cluster.node(follower), &format!("k{i}")).await,
            Some(Value::Int(i)),
            "k{i} on the restarted node"
        );
    }

    // Stop every node, restart every node: every acknowledged write is still there.
    for id in 0..3 {
        cluster.stop(id).await;
    }
    for id in 0..3 {
        cluster.restart(id).await;
    }
    cluster.leader().await;
    for i in 0..20 {
        assert_eq!(
            cluster.read(&format!("k{i}")).await,
            Some(Value::Int(i)),
            "k{i} after a full restart"
        );
    }
    cluster.write("after", 1).await;
    assert_eq!(cluster.read("after").await, Some(Value::Int(1)));

    // Metrics saw the traffic and the WAL.
    let text = cluster.node(0).metrics().encode_text();
    assert!(text.contains("concord_wal_fsync_seconds"), "{text}");
    assert!(text.contains("concord_messages_sent_total"), "{text}");
    for id in 0..3 {
        cluster.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_followers_acknowledge_only_durable_entries() {
    let (cluster, leader, warm) = started_for_gating().await;
    wait_applied(cluster.node(leader), warm).await;
    let followers: Vec<NodeId> = (0..3).filter(|&id| id != leader).collect();
    for &id in &followers {
        cluster.gates[id as usize].close();
    }
    let commit_before = cluster.node(leader).status().commit_index;
    let pending = tokio::spawn({
        let node = cluster.node(leader).clone();
        async move {
            node.request(Request::Propose(KvOperation::Write {
                key: "k".into(),
                value: 7,
            }))
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !pending.is_finished(),
        "the leader committed with acks from followers whose writes were not durable"
    );
    let statuses: Vec<_> = cluster.running().map(|n| n.status()).collect();
    assert_eq!(
        cluster.node(leader).status().commit_index,
        commit_before,
        "{statuses:#?}"
    );

    for &id in &followers {
        cluster.gates[id as usize].open();
    }
    let reply = tokio::time::timeout(PATIENCE, pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // Applied, unless a slow machine made the cluster change leaders meanwhile (never before
    // the gates opened: a gated follower cannot even send a pre-vote).
    assert!(
        matches!(
            reply,
            Response::Applied {
                output: KvResult::Written,
                ..
            } | Response::Failed(RaftError::OutcomeUnknown { .. } | RaftError::NotLeader { .. })
        ),
        "{reply:?}"
    );
    for id in 0..3 {
        cluster.node(id).shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_acknowledges_appends_made_durable_together_once() {
    let (cluster, leader, warm) = started_for_gating().await;
    let follower = (0..3).find(|&id| id != leader).unwrap();
    wait_applied(cluster.node(follower), warm).await;
    let sent = cluster
        .node(follower)
        .metrics()
        .messages_sent
        .get_or_create(&concord_runtime::metrics::peer_labels(leader))
        .clone();

    // Its syncs wait, while twelve writes commit one after the other with the third node:
    // each reaches it in an AppendEntries of its own, and each acknowledgement waits behind
    // the append it promises.
    // (`raft_followers_acknowledge_only_durable_entries` checks that none leaves before.)
    cluster.gates[follower as usize].close();
    let mut last = warm;
    for value in 0..12 {
        last = cluster.write("k", value).await;
    }
    wait_for(|| cluster.node(follower).status().log_length >= last).await;
    let before = sent.get();

    // Released together, the acknowledgements of the appends that one sync made durable go
    // as one (the first append's sync, blocked at the gate, was alone): two, and a few
    // heartbeats' answered meanwhile. Each went alone before.
    cluster.gates[follower as usize].open();
    wait_for(|| {
        cluster
            .node(leader)
            .status()
            .peers
            .iter()
            .any(|peer| peer.id == follower && peer.match_index >= last)
    })
    .await;
    let acknowledgements = sent.get() - before;
    assert!(
        acknowledgements <= 6,
        "{acknowledgements} messages acknowledged 12 appends made durable by two syncs"
    );
    for id in 0..3 {
        cluster.node(id).shutdown().await.unwrap();
    }
}

/// Three nodes without CheckQuorum, so that the leader keeps leading while followers' syncs
/// (and so their acknowledgements) are held at their gates; a first write committed. Returns
/// the cluster, the leader and that write's index.
async fn started_for_gating() -> (Cluster, NodeId, u64) {
    let raft = Config {
        check_quorum: false,
        ..raft_config()
    };
    let cluster = Cluster::start(3, raft).await;
    let warm = cluster.write("warm", 1).await;
    let leader = cluster.leader().await;
    (cluster, leader, warm)
}

/// Waits (up to `PATIENCE`) until `condition` holds.
async fn wait_for(condition: impl Fn() -> bool) {
    tokio::time::timeout(PATIENCE, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the condition held in time");
}
