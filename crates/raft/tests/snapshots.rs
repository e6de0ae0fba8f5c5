//! Snapshots and log compaction (paper §7, thesis chapter 5): taking snapshots at a
//! threshold, chunked InstallSnapshot to a lagging follower, restart from a snapshot.

use concord_core::time::MILLISECOND;
use concord_core::Node;
use concord_raft::testing::Cluster;
use concord_raft::{Config, Message};

fn snapshot_config() -> Config {
    Config {
        snapshot_threshold: 5,
        snapshot_chunk_size: 16,
        ..Config::default()
    }
}

fn settled(config: Config) -> (Cluster, u64) {
    let mut cluster = Cluster::new(3, config);
    cluster.elect(0);
    (cluster, 0)
}

/// Thesis §5.1: once `snapshot_threshold` entries were applied since the last snapshot, the
/// node snapshots its state machine, persists the snapshot and discards the log prefix.
#[test]
fn a_node_snapshots_and_compacts_its_log_at_the_threshold() {
    let (mut cluster, leader) = settled(snapshot_config());
    for value in 0..8 {
        cluster.propose(leader, "x", value);
        cluster.deliver_all();
    }
    for id in 0..3 {
        let node = cluster.node(id);
        assert!(node.log().snapshot_index() >= 5, "node {id}");
        assert!(node.log().entries().len() < 5, "node {id}");
        let stored = cluster.storage[id as usize]
            .snapshot
            .as_ref()
            .expect("snapshot stored");
        assert_eq!(stored.meta.last_index, node.log().snapshot_index());
        assert_eq!(
            cluster.storage[id as usize].last_index(),
            node.log().last_index()
        );
    }
}

/// Paper §7: a follower whose next entry the leader has compacted receives the snapshot in
/// chunks (`snapshot_chunk_size`), installs it, and continues from the log after it.
#[test]
fn a_lagging_follower_installs_a_chunked_snapshot() {
    let (mut cluster, leader) = settled(snapshot_config());
    cluster.deliver_all();
    cluster.isolate(2);
    for value in 0..12 {
        cluster.propose(leader, "x", value);
        cluster.deliver_all();
    }
    assert!(cluster.node(leader).log().snapshot_index() > cluster.node(2).log().last_index());
    cluster.heal();
    let mut chunks = 0;
    for _ in 0..20 {
        cluster.now += cluster.config.heartbeat_interval;
        cluster.tick(leader);
        while let Some(envelope) = cluster.network.front() {
            if matches!(envelope.message, Message::InstallSnapshot { .. }) {
                chunks += 1;
            }
            cluster.deliver_one();
        }
    }
    assert!(chunks > 1, "the snapshot came in {chunks} chunk(s)");
    let follower = cluster.node(2);
    assert!(follower.log().snapshot_index() > 0);
    assert_eq!(follower.commit_index(), cluster.node(leader).commit_index());
    assert_eq!(
        follower.state_machine(),
        cluster.node(leader).state_machine()
    );
    assert!(
        cluster.storage[2].snapshot.is_some(),
        "installed snapshot is durable"
    );
}

/// Paper §7: a node restarting from a snapshot restores its state machine from it, then
/// re-applies only the committed entries after it.
#[test]
fn a_node_restarts_from_its_snapshot() {
    let (mut cluster, leader) = settled(snapshot_config());
    for value in 0..8 {
        cluster.propose(leader, "x", value);
        cluster.deliver_all();
    }
    let snapshot_index = cluster.node(1).log().snapshot_index();
    cluster.crash(1);
    cluster.restart(1);
    let node = cluster.node(1);
    assert_eq!(node.log().snapshot_index(), snapshot_index);
    assert_eq!(node.applied_index(), snapshot_index);
    assert_eq!(node.status().commit_index, snapshot_index);
    cluster.run_for(200 * MILLISECOND);
    assert_eq!(
        cluster.node(1).state_machine(),
        cluster.node(leader).state_machine()
    );
    assert_eq!(cluster.node(1).state_machine().applied_commands(), 8);
}

/// A snapshot a node takes of its own state is no barrier (`Write::Compact`): it covers only
/// entries already durable and applied, so the messages and replies emitted after it need not
/// wait for the write of the whole state. One installed from the leader stays a barrier.
#[test]
fn an_own_snapshot_is_no_barrier_an_installed_one_is() {
    let (mut cluster, leader) = settled(snapshot_config());
    cluster.auto_persist = false;
    let mut own_snapshots = 0;
    for value in 0..8 {
        cluster.propose(leader, "x", value);
        loop {
            for id in 0..3 {
                own_snapshots += cluster
                    .pending_writes(id)
                    .filter(|w| matches!(w, concord_raft::Write::Compact(_)))
                    .count();
                assert!(
                    !cluster
                        .pending_writes(id)
                        .any(|w| matches!(w, concord_raft::Write::Snapshot(_))),
                    "node {id}: a snapshot of its own state written as an installed one"
                );
                cluster.confirm_persists(id);
            }
            if !cluster.deliver_one() {
                break;
            }
        }
    }
    assert!(
        own_snapshots >= 3,
        "every node snapshotted: {own_snapshots}"
    );
    let snapshot = cluster.storage[leader as usize].snapshot.clone().unwrap();
    let own = concord_raft::Write::<concord_core::KvCommand>::Compact(snapshot.clone());
    let installed = concord_raft::Write::<concord_core::KvCommand>::Snapshot(snapshot);
    assert!(!concord_raft::testing::KvNode::is_barrier(&own));
    assert!(concord_raft::testing::KvNode::is_barrier(&installed));
}
