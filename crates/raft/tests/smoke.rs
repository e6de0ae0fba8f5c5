//! End-to-end smoke tests: a cluster elects, replicates, applies and answers.

use concord_core::time::MILLISECOND;
use concord_core::{KvResult, Value};
use concord_raft::testing::Cluster;
use concord_raft::{Config, Response};

#[test]
fn three_nodes_elect_a_leader_and_commit_a_write() {
    let mut cluster = Cluster::new(3, Config::default());
    cluster.run_for(3_000 * MILLISECOND);
    let leader = cluster.leader().expect("a leader is elected");
    let id = cluster.propose(leader, "x", 7);
    cluster.run_for(200 * MILLISECOND);
    assert!(matches!(cluster.reply(id), Some(Response::Applied { .. })));
    let read = cluster.read(leader, "x");
    cluster.run_for(200 * MILLISECOND);
    assert_eq!(
        cluster.reply(read),
        Some(&Response::Read {
            read_index: 2,
            output: KvResult::Read(Some(Value::Int(7)))
        })
    );
    for node in 0..3 {
        assert_eq!(cluster.node(node).commit_index(), 2);
        assert_eq!(cluster.applied[node as usize].len(), 1);
    }
}
