//! Requests forwarded between hosts over the peer transport (`NodeHandle::forward`).

mod common;

use std::time::Duration;

use common::{raft_config, Cluster};
use concord_core::{KvOperation, KvResult, Value};
use concord_raft::{RaftError, Request, Response};
use concord_runtime::HostError;

fn write(key: &str, value: i64) -> Request<KvOperation, KvOperation> {
    Request::Propose(KvOperation::Write {
        key: key.into(),
        value,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_to_the_leader_and_gets_its_answer() {
    let cluster = Cluster::start(3, raft_config()).await;
    let leader = cluster.leader().await;
    let mut followers = (0..3).filter(|&id| id != leader);
    let (follower, other) = (followers.next().unwrap(), followers.next().unwrap());

    // The leader applies the forwarded proposal and its answer comes back.
    let answer = cluster
        .node(follower)
        .forward(leader, write("k", 7), Duration::from_secs(10))
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
    assert_eq!(cluster.read("k").await, Some(Value::Int(7)));

    // A node that does not lead answers as it would locally: not the leader, and who is.
    let answer = cluster
        .node(follower)
        .forward(other, write("k", 8), Duration::from_secs(10))
        .await
        .expect("the follower answers");
    assert_eq!(
        answer,
        Response::Failed(RaftError::NotLeader {
            leader: Some(leader)
        })
    );

    // A node that is alive but never answers: the outcome is unknown once the wait is over.
    cluster.node(other).set_blocked_peers([follower]);
    let timeout = Duration::from_millis(300);
    let error = cluster
        .node(follower)
        .forward(other, write("k", 9), timeout)
        .await
        .expect_err("a node that drops the request cannot answer");
    assert!(
        matches!(error, HostError::ForwardTimedOut { to, .. } if to == other),
        "{error:?}"
    );
    assert_eq!(cluster.read("k").await, Some(Value::Int(7)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_fails_at_once_when_the_connection_to_its_target_fails() {
    let mut cluster = Cluster::start(3, raft_config()).await;
    let leader = cluster.leader().await;
    let follower = (0..3).find(|&id| id != leader).unwrap();
    // The leader drops what the follower sends, over a connection that stays up: a forward
    // gets no answer.
    cluster.node(leader).set_blocked_peers([follower]);
    let patient = Duration::from_secs(600);
    let pending = tokio::spawn({
        let node = cluster.node(follower).clone();
        async move { node.forward(leader, write("k", 1), patient).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished(), "answered: {pending:?}");

    // The leader crashes. The answer will never come, and the caller hears so as soon as the
    // connection fails, not at the end of its wait: the outcome is unknown.
    cluster.stop(leader).await;
    let error = tokio::time::timeout(patient / 2, pending)
        .await
        .expect("the forward fails with the connection")
        .unwrap()
        .expect_err("no answer");
    assert!(
        matches!(error, HostError::ForwardConnectionLost { to } if to == leader),
        "{error:?}"
    );

    // With the connection down, a forward is not sent at all: it fails at once, having taken
    // no effect, and the caller can retry elsewhere.
    let error = tokio::time::timeout(
        patient / 2,
        cluster
            .node(follower)
            .forward(leader, write("k", 2), patient),
    )
    .await
    .expect("an unreachable node fails the forward at once")
    .expect_err("no connection");
    assert!(
        matches!(error, HostError::PeerUnreachable { to } if to == leader),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_refuses_forwards_its_filter_rejects() {
    // Every host refuses what node 0 forwards, and takes what the others forward.
    let cluster = Cluster::start_with(3, raft_config(), |_, from| from != 0).await;
    let leader = cluster.leader().await;
    let target = if leader == 0 { 1 } else { leader };
    let error = cluster
        .node(0)
        .forward(target, write("k", 1), Duration::from_secs(10))
        .await
        .expect_err("refused");
    assert!(
        matches!(error, HostError::ForwardRefused { to } if to == target),
        "{error:?}"
    );
    if leader != 0 {
        let sender = if leader == 1 { 2 } else { 1 };
        let answer = cluster
            .node(sender)
            .forward(leader, write("k", 2), Duration::from_secs(10))
            .await
            .expect("accepted");
        assert!(matches!(answer, Response::Applied { .. }), "{answer:?}");
    }
    assert_ne!(cluster.read("k").await, Some(Value::Int(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_while_it_was_down_is_told_so() {
    let mut cluster = Cluster::start(3, raft_config()).await;
    cluster.leader().await;
    cluster.write("before", 1).await;
    // Node 0 goes down; the others learn (here: are configured) that it was removed.
    cluster.stop(0).await;
    cluster.removed_peer = |_, from| from == 0;
    for id in [1, 2] {
        cluster.stop(id).await;
        cluster.restart(id).await;
    }
    // Back up, node 0 talks to its old peers; they drop its messages and tell it why.
    cluster.restart(0).await;
    assert_eq!(cluster.node(0).removed_by(), None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let told_by = loop {
        if let Some(peer) = cluster.node(0).removed_by() {
            break peer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 0 is never told"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!([1, 2].contains(&told_by), "{told_by}");
    // It keeps running (the application decides what it answers); the others never hear it.
    assert!(cluster.node(0).stopped().is_none());
    assert_eq!(cluster.node(1).removed_by(), None);
    let stopped = cluster.nodes[0].take().expect("node 0's handle");
    stopped.shutdown().await.expect("a clean shutdown");
    // The others go on without it.
    cluster.write("after", 2).await;
    assert_eq!(cluster.read("after").await, Some(Value::Int(2)));
}
