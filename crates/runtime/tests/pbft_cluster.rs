//! Four PBFT replicas (`n = 3f + 1`, `f = 1`) on 127.0.0.1, over TCP with fsync'd write-ahead
//! logs: requests through every replica's client proxy, checkpoints and garbage collection, a
//! backup stopped and brought back by state transfer, a stopped primary replaced by a view
//! change, and a full-cluster restart.

mod common;

use std::collections::BTreeMap;

use common::{pbft_config, Pbft, PbftCluster, PATIENCE};
use concord_core::{KvOperation, KvResult, NodeId, Role, Value};
use concord_pbft::{ClientId, Counters, Request, Response, Timestamp};
use concord_runtime::NodeHandle;

/// `n`.
const REPLICAS: u64 = 4;
/// `f`.
const FAULTS: usize = 1;

/// What a test checks of one replica, read inside its task.
#[derive(Clone, Debug, PartialEq)]
struct Replica {
    id: NodeId,
    view: u64,
    active: bool,
    primary: bool,
    executed: u64,
    /// The stable checkpoint (the low watermark `h`).
    stable: u64,
    /// Distinct replicas whose signed checkpoints prove it.
    stable_signers: usize,
    /// Sequence numbers in the log.
    log_len: usize,
    entries: BTreeMap<String, Value>,
    counters: Counters,
}

async fn replica(node: &NodeHandle<Pbft>) -> Replica {
    node.inspect(|pbft: &Pbft| {
        let proof = pbft.stable_checkpoint();
        let signers: std::collections::BTreeSet<NodeId> =
            proof.signatures.iter().map(|s| s.replica).collect();
        Replica {
            id: pbft.replica(),
            view: pbft.view(),
            active: pbft.is_active(),
            primary: pbft.is_primary(),
            executed: pbft.executed(),
            stable: proof.sequence,
            stable_signers: signers.len(),
            log_len: pbft.log_len(),
            entries: pbft.state().entries().clone(),
            counters: pbft.counters(),
        }
    })
    .await
    .expect("the replica is running")
}

/// Waits until every running replica is active in one view, has executed the same sequence
/// numbers to the same state, and has made the checkpoint at or below them stable; returns them.
async fn converged(cluster: &PbftCluster) -> Vec<Replica> {
    let interval = pbft_config().checkpoint_interval;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut replicas = Vec::new();
        for node in cluster.running() {
            replicas.push(replica(node).await);
        }
        let first = &replicas[0];
        let agreed = replicas.iter().all(|r| {
            r.active
                && r.view == first.view
                && r.executed == first.executed
                && r.entries == first.entries
                && r.stable == r.executed - r.executed % interval
        });
        if agreed {
            return replicas;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replicas did not converge: {replicas:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Submits `request` once through node `via`'s client proxy (which retransmits it to every
/// replica until `f + 1` of them reply alike) and waits for the answer.
async fn submit(
    node: &NodeHandle<Pbft>,
    request: Request<KvOperation, KvOperation>,
) -> Response<KvResult> {
    tokio::time::timeout(PATIENCE, node.request(request.clone()))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{request:?} through node {} not answered: {:?}",
                node.id(),
                node.status()
            )
        })
        .expect("the node is running")
}

/// Writes `k{i} = i` through node `via`; checks the proxy's answer (done with `f + 1` matching
/// replies, by one of `via`'s client identities) and returns who asked and when.
async fn write(cluster: &PbftCluster, via: NodeId, i: i64) -> (ClientId, Timestamp) {
    let request = Request::Propose(KvOperation::Write {
        key: format!("k{i}"),
        value: i,
    });
    match submit(cluster.node(via), request).await {
        Response::Done {
            client,
            timestamp,
            result: KvResult::Written,
            read_only: false,
        } => {
            assert_eq!(
                client / pbft_config().client_lanes,
                via,
                "answered for a client of another node"
            );
            (client, timestamp)
        }
        other => panic!("k{i} through node {via}: {other:?}"),
    }
}

/// Reads `key` through node `via` (ordered, like a write).
async fn read(cluster: &PbftCluster, via: NodeId, key: &str) -> Option<Value> {
    let request = Request::Read(KvOperation::Read { key: key.into() });
    match submit(cluster.node(via), request).await {
        Response::Done {
            result: KvResult::Read(value),
            read_only: false,
            ..
        } => value,
        other => panic!("read {key} through node {via}: {other:?}"),
    }
}

fn assert_keys(replica: &Replica, keys: std::ops::Range<i64>, when: &str) {
    for i in keys {
        assert_eq!(
            replica.entries.get(&format!("k{i}")),
            Some(&Value::Int(i)),
            "k{i} on replica {} {when}",
            replica.id
        );
    }
}

/// Checks what a stable checkpoint promises: a quorum signed it, and the log was cut below it
/// (it spans at most the window above the checkpoint, fewer sequence numbers than were
/// executed).
fn assert_garbage_collected(replica: &Replica) {
    let quorum = 2 * FAULTS + 1;
    let window = pbft_config().log_window;
    assert!(replica.stable > 0, "no stable checkpoint: {replica:?}");
    assert!(
        replica.stable_signers >= quorum,
        "checkpoint {} signed by {} replicas: {replica:?}",
        replica.stable,
        replica.stable_signers
    );
    assert!(
        replica.executed > window,
        "too few sequence numbers executed to show garbage collection: {replica:?}"
    );
    assert!(
        (replica.log_len as u64) <= window,
        "the log was not garbage-collected: {replica:?}"
    );
}

async fn stop_all(mut cluster: PbftCluster) {
    for id in 0..REPLICAS {
        if cluster.nodes[id as usize].is_some() {
            cluster.stop(id).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbft_replicas_answer_through_every_node_checkpoint_and_collect_garbage() {
    let cluster = PbftCluster::start(REPLICAS, pbft_config()).await;
    let primary = cluster.leader().await;
    assert_eq!(
        replica(cluster.node(primary)).await.view % REPLICAS,
        primary,
        "the primary of view v is replica v mod n"
    );

    // One request at a time through each replica's proxy in turn, then 16 at once (batched
    // by the primary, spread over the proxies' client identities).
    let mut asked: BTreeMap<ClientId, Timestamp> = BTreeMap::new();
    for i in 0..12 {
        let (client, timestamp) = write(&cluster, i as NodeId % REPLICAS, i).await;
        asked.insert(client, timestamp);
    }
    let mut concurrent = Vec::new();
    for i in 12..28 {
        let node = cluster.node(i as NodeId % REPLICAS).clone();
        concurrent.push(tokio::spawn(async move {
            let request = Request::Propose(KvOperation::Write {
                key: format!("k{i}"),
                value: i,
            });
            submit(&node, request).await
        }));
    }
    for task in concurrent {
        match task.await.unwrap() {
            Response::Done {
                client,
                timestamp,
                result: KvResult::Written,
                ..
            } => {
                let latest = asked.entry(client).or_default();
                *latest = (*latest).max(timestamp);
            }
            other => panic!("{other:?}"),
        }
    }

    // Every replica executed every write, and holds in its reply cache the reply it sent for
    // each client's latest request: what the proxies counted `f + 1` matching ones of.
    let replicas = converged(&cluster).await;
    for r in &replicas {
        assert_keys(r, 0..28, "after the writes");
        // At least one sequence number per request sent alone.
        assert!(r.executed >= 12, "{r:?}");
        assert_eq!(r.counters.authentication_failures, 0, "{r:?}");
        assert_eq!(r.counters.invalid_messages, 0, "{r:?}");
        assert_garbage_collected(r);
        let clients: Vec<ClientId> = asked.keys().copied().collect();
        let replies = cluster
            .node(r.id)
            .inspect(move |pbft: &Pbft| {
                clients
                    .into_iter()
                    .map(|c| (c, pbft.last_reply(c).cloned()))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap();
        for (client, reply) in replies {
            let reply =
                reply.unwrap_or_else(|| panic!("replica {} has no reply for {client}", r.id));
            assert_eq!(
                reply.timestamp, asked[&client],
                "client {client} on {}",
                r.id
            );
            assert_eq!(reply.result, KvResult::Written);
        }
        let status = cluster.node(r.id).status();
        assert_eq!(status.applied_index, r.executed);
        assert_eq!(status.term, r.view);
    }
    assert!(replicas[0].stable >= 12, "{:?}", replicas[0]);

    // Reads are ordered like writes, through any replica.
    for via in 0..REPLICAS {
        assert_eq!(
            read(&cluster, via, "k7").await,
            Some(Value::Int(7)),
            "read through {via}"
        );
    }
    let text = cluster.node(0).metrics().encode_text();
    assert!(text.contains("concord_wal_fsync_seconds"), "{text}");
    assert!(text.contains("concord_messages_sent_total"), "{text}");
    stop_all(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_pbft_backup_recovers_its_checkpoint_and_catches_up_by_state_transfer() {
    let mut cluster = PbftCluster::start(REPLICAS, pbft_config()).await;
    for i in 0..8 {
        write(&cluster, i as NodeId % REPLICAS, i).await;
    }
    let primary = cluster.leader().await;
    let backup = (primary + 1) % REPLICAS;
    converged(&cluster).await;
    let before = replica(cluster.node(backup)).await;
    assert!(before.stable >= 4, "{before:?}");

    // The other three (a quorum, 2f + 1) go on without it, past its log window.
    cluster.stop(backup).await;
    let running: Vec<NodeId> = (0..REPLICAS).filter(|&id| id != backup).collect();
    for i in 8..32 {
        write(&cluster, running[i as usize % running.len()], i).await;
    }
    let others = converged(&cluster).await;
    assert!(
        others[0].stable > before.executed,
        "the others' stable checkpoint is not past what the stopped backup executed: {:?} vs \
         {before:?}",
        others[0]
    );

    // Restarted from its data directory, it has at least its own checkpoint and log again,
    // then fetches the others' stable state and executes what follows it.
    cluster.restart(backup).await;
    let recovered = replica(cluster.node(backup)).await;
    assert!(
        recovered.stable >= before.stable && recovered.executed >= before.executed,
        "the restarted backup lost its checkpoint or log: before {before:?}, after {recovered:?}"
    );
    assert_keys(&recovered, 0..8, "right after the restart");
    write(&cluster, backup, 32).await;
    let replicas = converged(&cluster).await;
    let caught_up = replicas.iter().find(|r| r.id == backup).unwrap();
    assert!(
        caught_up.counters.states_installed >= 1,
        "caught up without a state transfer: {caught_up:?}"
    );
    for r in &replicas {
        assert_keys(r, 0..33, "after the backup caught up");
        assert_garbage_collected(r);
    }
    stop_all(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_pbft_primary_is_replaced_by_a_view_change_and_rejoins() {
    let mut cluster = PbftCluster::start(REPLICAS, pbft_config()).await;
    for i in 0..8 {
        write(&cluster, i as NodeId % REPLICAS, i).await;
    }
    let primary = cluster.leader().await;
    let old_view = converged(&cluster).await[0].view;

    // The backups' requests time out at the stopped primary; they change views, and the new
    // view's primary orders the writes.
    cluster.stop(primary).await;
    let backups: Vec<NodeId> = (0..REPLICAS).filter(|&id| id != primary).collect();
    for i in 8..16 {
        write(&cluster, backups[i as usize % backups.len()], i).await;
    }
    let replicas = converged(&cluster).await;
    let new_view = replicas[0].view;
    assert!(
        new_view > old_view,
        "still in view {old_view}: {replicas:#?}"
    );
    let successor = new_view % REPLICAS;
    assert_ne!(successor, primary);
    for r in &replicas {
        assert_eq!(r.primary, r.id == successor, "{r:?}");
        assert_keys(r, 0..16, "in the new view");
    }
    assert_eq!(cluster.leader().await, successor);
    for node in cluster.running() {
        assert_eq!(
            node.status().term,
            new_view,
            "the view in the node's status"
        );
    }
    assert!(
        replicas
            .iter()
            .any(|r| r.counters.view_changes_started >= 1),
        "{replicas:#?}"
    );

    // The old primary comes back in its old view, learns the new one, and catches up.
    cluster.restart(primary).await;
    write(&cluster, primary, 16).await;
    let replicas = converged(&cluster).await;
    assert_eq!(replicas.len(), REPLICAS as usize);
    let returned = replicas.iter().find(|r| r.id == primary).unwrap();
    assert!(returned.view >= new_view, "{returned:?}");
    for r in &replicas {
        assert_keys(r, 0..17, "after the old primary returned");
    }
    // It follows the current primary (a backup, unless further view changes came back round
    // to it).
    let current = cluster.leader().await;
    let status = cluster.node(primary).status();
    assert_eq!(status.leader, Some(current));
    assert_eq!(
        status.role == Role::Leader,
        current == primary,
        "{status:?}"
    );
    stop_all(cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_pbft_write_survives_a_full_cluster_restart() {
    let mut cluster = PbftCluster::start(REPLICAS, pbft_config()).await;
    for i in 0..18 {
        write(&cluster, i as NodeId % REPLICAS, i).await;
    }
    let before = converged(&cluster).await;
    for id in 0..REPLICAS {
        cluster.stop(id).await;
    }

    // Each replica, restarted alone (no peer to learn from), is exactly where it stopped: its
    // stable checkpoint, and what committed after it re-executed from its log.
    for b in &before {
        cluster.restart(b.id).await;
        let alone = replica(cluster.node(b.id)).await;
        assert_eq!(
            (alone.executed, alone.stable, &alone.entries),
            (b.executed, b.stable, &b.entries),
            "replica {} recovered a different state: before {b:?}, after {alone:?}",
            b.id
        );
        assert!(alone.view >= b.view, "{alone:?}");
        cluster.stop(b.id).await;
    }

    // All together again: every acknowledged write is read back through the protocol, and
    // every proxy's new requests (later timestamps than before the restart) complete.
    for id in 0..REPLICAS {
        cluster.restart(id).await;
    }
    cluster.leader().await;
    for i in 0..18 {
        assert_eq!(
            read(&cluster, i as NodeId % REPLICAS, &format!("k{i}")).await,
            Some(Value::Int(i)),
            "k{i} after a full restart"
        );
    }
    for via in 0..REPLICAS {
        write(&cluster, via, 100 + via as i64).await;
    }
    for r in &converged(&cluster).await {
        assert_keys(r, 0..18, "after a full restart");
        assert_keys(r, 100..104, "written after the restart");
    }
    stop_all(cluster).await;
}
