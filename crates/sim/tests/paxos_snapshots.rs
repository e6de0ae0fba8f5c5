//! Multi-Paxos snapshots and log compaction in the simulator (network and disk latencies,
//! every checker after every step): logs stay bounded in a long run, and a node that restarts
//! far behind catches up by snapshot transfer.

mod lab;

use concord_core::time::MILLISECOND;
use concord_paxos::multi::Config;
use lab::Lab;

const THRESHOLD: u64 = 25;

fn config() -> Config {
    Config {
        snapshot_threshold: THRESHOLD,
        ..Config::default()
    }
}

/// 1 000 writes through a 3-node cluster that snapshots every 25 slots: no node's log, in
/// memory or on disk, ever holds more than the threshold plus one batch.
#[test]
fn a_long_run_keeps_every_log_bounded() {
    let bound = THRESHOLD as usize + config().max_batch;
    let mut lab = Lab::paxos_with_config(3, 700, config());
    for value in 0..1_000 {
        lab.one(value, 3, true);
        for i in 0..3 {
            let node = lab.node(i).unwrap();
            assert!(
                node.log_len() <= bound,
                "node {i}: {} entries",
                node.log_len()
            );
            let stored = lab.sim.storage(i).unwrap().log.len();
            assert!(stored <= bound, "node {i}: {stored} entries stored");
        }
    }
    for i in 0..3 {
        let node = lab.node(i).unwrap();
        assert!(node.compacted() + THRESHOLD >= node.applied() && node.compacted() > 900);
    }
}

/// A node is down while 300 writes commit and are compacted away; on restart it is far
/// behind every log, so the leader sends its snapshot; the node catches up and keeps up.
#[test]
fn a_node_restarted_far_behind_catches_up_by_snapshot() {
    for seed in 0..3 {
        let mut lab = Lab::paxos_with_config(3, 710 + seed, config());
        lab.one(0, 3, true);
        let leader = lab.check_one_leader();
        let lagging = (leader + 1) % 3;
        let before = lab.node(lagging).unwrap().applied();
        lab.crash(lagging);
        for value in 1..=300 {
            lab.one(value, 2, true);
        }
        let compacted = lab.node(leader).unwrap().compacted();
        assert!(compacted > before + THRESHOLD, "seed {seed}: {compacted}");
        lab.restart(lagging);
        let index = lab.one(1_000, 3, true);
        lab.run(100 * MILLISECOND);
        let node = lab.node(lagging).unwrap();
        assert!(node.applied() >= index, "seed {seed}: caught up");
        assert!(
            node.snapshot().is_some_and(|s| s.slot >= compacted),
            "seed {seed}: installed the leader's snapshot"
        );
        assert_eq!(
            node.state(),
            lab.node(leader).unwrap().state(),
            "seed {seed}: same state"
        );
    }
}
