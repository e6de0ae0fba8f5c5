//! Three Multi-Paxos hosts on 127.0.0.1: ballot leader election, commits, reads, a follower
//! restart, a leader stopped and replaced, a full-cluster restart, and followers that
//! acknowledge only durable entries.

mod common;

use std::time::Duration;

use common::{local_read, paxos_config, wait_applied, Paxos, PaxosCluster, PATIENCE};
use concord_core::{KvOperation, KvResult, NodeId, Role, Value};
use concord_paxos::multi::{Config, PaxosError, ReadMode, Request, Response};

fn read(key: &str) -> Request<KvOperation, KvOperation> {
    Request::Read(KvOperation::Read { key: key.into() })
}

async fn assert_every_key(cluster: &PaxosCluster, keys: std::ops::Range<i64>, when: &str) {
    for i in keys {
        assert_eq!(
            cluster.read(&format!("k{i}")).await,
            Some(Value::Int(i)),
            "k{i} {when}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paxos_cluster_elects_commits_survives_restarts_and_keeps_every_acknowledged_write() {
    let mut cluster = PaxosCluster::start(3, paxos_config()).await;
    let leader = cluster.leader().await;

    // Proposals are decided and their replies arrive; a read sees them, without a slot of its
    // own (read index, the default).
    for i in 0..10 {
        cluster.write(&format!("k{i}"), i).await;
    }
    assert_eq!(cluster.read("k3").await, Some(Value::Int(3)));
    let answer = cluster.request(read("k3")).await;
    assert!(
        matches!(
            answer,
            Response::Read {
                output: KvResult::Read(Some(Value::Int(3))),
                ..
            }
        ),
        "{answer:?}"
    );

    // Stop one follower; the other two keep deciding without it.
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
        recovered.log_length >= before.log_length && recovered.commit_index >= before.commit_index,
        "the restarted node lost log entries: before {before:?}, after {recovered:?}"
    );
    assert!(recovered.term >= before.term);
    let leader = cluster.leader().await;
    let decided = cluster.node(leader).status().commit_index;
    wait_applied(cluster.node(follower), decided).await;
    for i in 0..20 {
        assert_eq!(
            local_read(cluster.node(follower), &format!("k{i}")).await,
            Some(Value::Int(i)),
            "k{i} on the restarted node"
        );
    }

    // Stop the leader: the other two elect a new one (a higher ballot) and go on deciding.
    let old_term = cluster.node(leader).status().term;
    cluster.stop(leader).await;
    let successor = cluster.leader().await;
    assert_ne!(successor, leader);
    assert!(cluster.node(successor).status().term > old_term);
    for i in 20..30 {
        cluster.write(&format!("k{i}"), i).await;
    }
    assert_every_key(&cluster, 0..30, "under the new leader").await;
    // The old leader comes back as a follower of the new one and catches up.
    cluster.restart(leader).await;
    let current = cluster.leader().await;
    let decided = cluster.node(current).status().commit_index;
    wait_applied(cluster.node(leader), decided).await;
    assert_eq!(
        local_read(cluster.node(leader), "k29").await,
        Some(Value::Int(29))
    );

    // Stop every node, restart every node: every acknowledged write is still there.
    for id in 0..3 {
        cluster.stop(id).await;
    }
    for id in 0..3 {
        cluster.restart(id).await;
    }
    cluster.leader().await;
    assert_every_key(&cluster, 0..30, "after a full restart").await;
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
async fn paxos_followers_acknowledge_only_durable_entries() {
    // Long heartbeat rounds: the leader notices the silence of its gated followers (their
    // replies wait behind their writes) only after a round or two, and then steps down.
    let config = Config {
        election_round: 500 * concord_core::time::MILLISECOND,
        ..paxos_config()
    };
    let cluster = PaxosCluster::start(3, config).await;
    let warm = cluster.write("warm", 1).await;
    let leader = cluster.leader().await;
    wait_applied(cluster.node(leader), warm).await;
    let followers: Vec<NodeId> = (0..3).filter(|&id| id != leader).collect();
    for &id in &followers {
        cluster.gates[id as usize].close();
    }
    let decided_before = cluster.node(leader).status().commit_index;
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
    // Nothing was decided: no node's decided prefix passed the leader's from before, and the
    // write was not answered as applied (the leader may have stepped down, answering that the
    // outcome is unknown).
    let statuses: Vec<_> = cluster.running().map(|n| n.status()).collect();
    assert!(
        statuses.iter().all(|s| s.commit_index <= decided_before),
        "decided past {decided_before}: {statuses:#?}"
    );
    if pending.is_finished() {
        let reply = pending.await.unwrap().unwrap();
        assert!(
            matches!(reply, Response::Failed(PaxosError::OutcomeUnknown { .. })),
            "the leader decided with acks from followers whose writes were not durable: {reply:?}"
        );
        for &id in &followers {
            cluster.gates[id as usize].open();
        }
    } else {
        for &id in &followers {
            cluster.gates[id as usize].open();
        }
        let reply = tokio::time::timeout(PATIENCE, pending)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            matches!(
                reply,
                Response::Applied {
                    output: KvResult::Written,
                    ..
                } | Response::Failed(
                    PaxosError::OutcomeUnknown { .. } | PaxosError::NotLeader { .. }
                )
            ),
            "{reply:?}"
        );
    }
    // Once the writes are durable the cluster decides again.
    cluster.write("k", 8).await;
    assert_eq!(cluster.read("k").await, Some(Value::Int(8)));
    for id in 0..3 {
        cluster.node(id).shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paxos_follower_forwards_to_the_leader_and_gets_its_answer() {
    let cluster = PaxosCluster::start(3, paxos_config()).await;
    let leader = cluster.leader().await;
    let follower = (0..3).find(|&id| id != leader).unwrap();
    let write = Request::Propose(KvOperation::Write {
        key: "k".into(),
        value: 7,
    });
    let answer = cluster
        .node(follower)
        .forward(leader, write.clone(), Duration::from_secs(10))
        .await
        .expect("the leader answers");
    assert!(
        matches!(
            answer,
            Response::Applied {
                output: KvResult::Written,
                ..
            }
        ),
        "{answer:?}"
    );
    // A follower answers a request as it would locally: not the leader, and who is.
    let answer = cluster.node(follower).request(write).await.unwrap();
    assert_eq!(
        answer,
        Response::Failed(PaxosError::NotLeader {
            leader: Some(leader)
        })
    );
    assert_eq!(cluster.read("k").await, Some(Value::Int(7)));
}

/// Reads under leader leases (each host's clock is its own monotonic clock: a lease compares
/// only durations on one node) and reads through the log, on real hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paxos_reads_under_leases_and_through_the_log() {
    for read_mode in [ReadMode::Lease, ReadMode::Log] {
        let config = Config {
            read_mode,
            ..paxos_config()
        };
        let mut cluster = PaxosCluster::start(3, config).await;
        cluster.write("k", 1).await;
        let answer = cluster.request(read("k")).await;
        let served = match (&answer, read_mode) {
            (Response::Read { output, .. }, ReadMode::Lease)
            | (Response::Applied { output, .. }, ReadMode::Log) => output.clone(),
            _ => panic!("{read_mode:?}: {answer:?}"),
        };
        assert_eq!(served, KvResult::Read(Some(Value::Int(1))), "{read_mode:?}");
        let leader = cluster.leader().await;
        let lease = cluster
            .node(leader)
            .inspect(|node: &Paxos| node.lease_until())
            .await
            .unwrap();
        assert_eq!(lease > 0, read_mode == ReadMode::Lease, "{read_mode:?}");
        // A new leader serves reads too (under leases, once the old leader's lease ran out at
        // the acceptors).
        cluster.stop(leader).await;
        cluster.write("k", 2).await;
        assert_eq!(
            cluster.read("k").await,
            Some(Value::Int(2)),
            "{read_mode:?}"
        );
        for id in (0..3).filter(|&id| id != leader) {
            cluster.stop(id).await;
        }
    }
}
