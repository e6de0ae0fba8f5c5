//! The lab suite's scenarios, written once for any protocol the lab drives ([`LabNode`]):
//! `raft_lab.rs` runs them on Raft, `paxos_lab.rs` on Multi-Paxos, each with its own seeds.
//! Each takes the constructor of a default cluster (`make`); the snapshot scenarios take one
//! that snapshots every few entries.

use std::collections::BTreeMap;

use concord_core::time::MILLISECOND;
use concord_core::NodeId;
use rand::Rng as _;

use super::{command, Lab, LabNode, SECOND};

/// A cluster of `nodes` for `seed`.
pub type Make<N> = fn(usize, u64) -> Lab<N>;

// ---------------------------------------------------------------- leader election

pub fn initial_election<N: LabNode>(make: Make<N>) {
    for seed in 0..5 {
        let mut lab = make(3, seed);
        lab.check_one_leader();
        let term = lab.check_terms();
        // With no failures, the term (ballot) and the leader stay.
        lab.run(2 * lab.election_timeout());
        assert_eq!(
            lab.check_terms(),
            term,
            "seed {seed}: term changed without failures"
        );
        lab.check_one_leader();
    }
}

pub fn re_election<N: LabNode>(make: Make<N>) {
    for seed in 0..5 {
        let mut lab = make(3, seed);
        let leader1 = lab.check_one_leader();
        lab.disconnect(leader1);
        lab.check_one_leader();
        // The old leader rejoins: it must not disturb the new one.
        lab.connect(leader1);
        let leader2 = lab.check_one_leader();
        // Without a quorum no leader is elected.
        lab.disconnect(leader2);
        lab.disconnect((leader2 + 1) % 3);
        lab.run(2 * lab.election_timeout());
        lab.check_no_leader();
        // With a quorum again, a leader is elected.
        lab.connect((leader2 + 1) % 3);
        lab.check_one_leader();
        lab.connect(leader2);
        lab.check_one_leader();
    }
}

pub fn many_elections<N: LabNode>(make: Make<N>) {
    let mut lab = make(7, 3);
    lab.check_one_leader();
    for _ in 0..10 {
        let picks: Vec<NodeId> = (0..3).map(|_| lab.rng.gen_range(0..7)).collect();
        for &i in &picks {
            lab.disconnect(i);
        }
        // Either the old leader still has a quorum, or a new one is elected.
        lab.check_one_leader();
        for &i in &picks {
            lab.connect(i);
        }
    }
    lab.check_one_leader();
}

// ---------------------------------------------------------------- agreement

pub fn basic_agree<N: LabNode>(make: Make<N>) {
    let mut lab = make(3, 1);
    let mut last = 0;
    for value in 1..=3 {
        let index = lab.one(value * 100, 3, false);
        assert!(index > last, "index {index} after {last}");
        last = index;
    }
}

pub fn follower_failure<N: LabNode>(make: Make<N>) {
    let mut lab = make(3, 4);
    lab.one(101, 3, false);
    let leader1 = lab.check_one_leader();
    lab.disconnect((leader1 + 1) % 3);
    // The leader and the remaining follower still agree.
    lab.one(102, 2, false);
    lab.run(lab.election_timeout());
    lab.one(103, 2, false);
    // Disconnect the remaining follower: nothing commits. (A Raft leader appends 104 and
    // cannot commit it; a Multi-Paxos leader that lost quorum connectivity steps down and may
    // not even take it.)
    let leader2 = lab.check_one_leader();
    lab.disconnect((leader2 + 1) % 3);
    lab.disconnect((leader2 + 2) % 3);
    lab.start(leader2, 104);
    lab.run(2 * lab.election_timeout());
    if let Some(index) = lab.index_of(leader2, 104) {
        assert_eq!(
            lab.n_committed(index).0,
            0,
            "104 committed without a quorum"
        );
    }
}

pub fn leader_failure<N: LabNode>(make: Make<N>) {
    let mut lab = make(3, 5);
    lab.one(101, 3, false);
    let leader1 = lab.check_one_leader();
    lab.disconnect(leader1);
    // The remaining followers elect a new leader.
    lab.one(102, 2, false);
    lab.run(lab.election_timeout());
    lab.one(103, 2, false);
    let leader2 = lab.check_one_leader();
    lab.disconnect(leader2);
    for i in 0..3 {
        lab.start(i, 104);
    }
    lab.run(2 * lab.election_timeout());
    for i in 0..3 {
        if let Some(index) = lab.index_of(i, 104) {
            assert_eq!(
                lab.n_committed(index).0,
                0,
                "104 committed without a quorum"
            );
        }
    }
}

pub fn fail_agree<N: LabNode>(make: Make<N>) {
    let mut lab = make(3, 6);
    lab.one(101, 3, false);
    let leader = lab.check_one_leader();
    lab.disconnect((leader + 1) % 3);
    for value in 102..=105 {
        lab.one(value, 2, false);
    }
    lab.run(lab.election_timeout());
    // The follower rejoins and catches up.
    lab.connect((leader + 1) % 3);
    lab.one(106, 3, true);
    lab.run(lab.election_timeout());
    lab.one(107, 3, true);
}

pub fn fail_no_agree<N: LabNode>(make: Make<N>) {
    let mut lab = make(5, 7);
    lab.one(10, 5, false);
    let leader = lab.check_one_leader();
    for k in 1..=3 {
        lab.disconnect((leader + k) % 5);
    }
    lab.start(leader, 20);
    lab.run(2 * lab.election_timeout());
    if let Some(index) = lab.index_of(leader, 20) {
        assert_eq!(lab.n_committed(index).0, 0, "committed with only 2 of 5");
    }
    for k in 1..=3 {
        lab.connect((leader + k) % 5);
    }
    // The disconnected majority may have elected its own leader; either way the cluster
    // recovers and agrees.
    lab.check_one_leader();
    lab.one(1000, 5, true);
}

pub fn concurrent_starts<N: LabNode>(make: Make<N>) {
    let mut lab = make(3, 8);
    lab.one(1, 3, false);
    let leader = lab.check_one_leader();
    let term = lab.node(leader).unwrap().term();
    let values: Vec<i64> = (100..105).collect();
    for &value in &values {
        lab.start(leader, value);
    }
    lab.run(SECOND);
    assert_eq!(
        lab.node(leader).unwrap().term(),
        term,
        "term changed under no faults"
    );
    let mut indices: Vec<u64> = values
        .iter()
        .map(|&v| lab.index_of(leader, v).unwrap())
        .collect();
    for &index in &indices {
        lab.wait(index, 3, Some(term)).expect("committed");
    }
    indices.sort_unstable();
    assert!(
        indices.windows(2).all(|w| w[1] == w[0] + 1),
        "not consecutive: {indices:?}"
    );
}

pub fn rejoin<N: LabNode>(make: Make<N>) {
    let mut lab = make(3, 9);
    lab.one(101, 3, true);
    // The leader is partitioned and takes proposals it cannot commit.
    let leader1 = lab.check_one_leader();
    lab.disconnect(leader1);
    for value in [102, 103, 104] {
        lab.start(leader1, value);
    }
    // A new leader commits 103 on the other side.
    lab.one(103, 2, true);
    let leader2 = lab.check_one_leader();
    lab.disconnect(leader2);
    // The old leader comes back: its uncommitted entries must give way.
    lab.connect(leader1);
    lab.one(104, 2, true);
    lab.connect(leader2);
    lab.one(105, 3, true);
}

pub fn backup<N: LabNode>(make: Make<N>) {
    let mut lab = make(5, 10);
    let first = lab.value();
    lab.one(first, 5, true);
    // The leader and one follower get partitioned; they take 50 proposals that never commit.
    let leader1 = lab.check_one_leader();
    for k in 2..=4 {
        lab.disconnect((leader1 + k) % 5);
    }
    for _ in 0..50 {
        let value = lab.value();
        lab.start(leader1, value);
    }
    lab.run(lab.election_timeout() / 2);
    lab.disconnect(leader1);
    lab.disconnect((leader1 + 1) % 5);
    // The other three commit 50 of their own.
    for k in 2..=4 {
        lab.connect((leader1 + k) % 5);
    }
    for _ in 0..50 {
        let value = lab.value();
        lab.one(value, 3, true);
    }
    // Now another partitioned leader and one follower.
    let leader2 = lab.check_one_leader();
    let mut other = (leader1 + 2) % 5;
    if leader2 == other {
        other = (leader2 + 1) % 5;
    }
    lab.disconnect(other);
    for _ in 0..50 {
        let value = lab.value();
        lab.start(leader2, value);
    }
    lab.run(lab.election_timeout() / 2);
    // Bring the original leader back, with its stale, divergent log.
    for i in 0..5 {
        lab.disconnect(i);
    }
    lab.connect(leader1);
    lab.connect((leader1 + 1) % 5);
    lab.connect(other);
    for _ in 0..50 {
        let value = lab.value();
        lab.one(value, 3, true);
    }
    // Everyone back: all logs are repaired.
    for i in 0..5 {
        lab.connect(i);
    }
    let last = lab.value();
    lab.one(last, 5, true);
}

// ---------------------------------------------------------------- persistence

pub fn persist1<N: LabNode>(make: Make<N>) {
    let mut lab = make(3, 12);
    lab.one(11, 3, true);
    for i in 0..3 {
        lab.restart(i);
    }
    lab.one(12, 3, true);
    let leader1 = lab.check_one_leader();
    lab.restart(leader1);
    lab.one(13, 3, true);
    let leader2 = lab.check_one_leader();
    lab.crash(leader2);
    let index = lab.one(14, 2, true);
    lab.restart(leader2);
    // The restarted server catches up.
    lab.wait(index, 3, None);
    let i3 = (lab.check_one_leader() + 1) % 3;
    lab.crash(i3);
    lab.one(15, 2, true);
    lab.restart(i3);
    lab.one(16, 3, true);
}

pub fn persist2<N: LabNode>(make: Make<N>) {
    let mut lab = make(5, 13);
    let mut value = 10;
    for _ in 0..5 {
        value += 1;
        lab.one(value, 5, true);
        let leader1 = lab.check_one_leader();
        lab.crash((leader1 + 1) % 5);
        lab.crash((leader1 + 2) % 5);
        value += 1;
        lab.one(value, 3, true);
        lab.crash(leader1);
        lab.crash((leader1 + 3) % 5);
        lab.crash((leader1 + 4) % 5);
        lab.restart((leader1 + 1) % 5);
        lab.restart((leader1 + 2) % 5);
        lab.run(lab.election_timeout());
        lab.restart((leader1 + 3) % 5);
        value += 1;
        lab.one(value, 3, true);
        lab.restart((leader1 + 4) % 5);
        lab.restart(leader1);
    }
    lab.one(1000, 5, true);
}

pub fn persist3<N: LabNode>(make: Make<N>) {
    let mut lab = make(3, 14);
    lab.one(101, 3, true);
    let leader = lab.check_one_leader();
    lab.disconnect((leader + 2) % 3);
    lab.one(102, 2, true);
    lab.crash(leader);
    lab.crash((leader + 1) % 3);
    lab.connect((leader + 2) % 3);
    lab.restart(leader);
    lab.one(103, 2, true);
    lab.restart((leader + 1) % 3);
    lab.one(104, 3, true);
}

/// Raft's figure 8 schedule: leaders crash at random moments with entries of their terms
/// partly replicated; no later leader may overwrite a committed entry (the cluster checkers,
/// after every step), and the cluster ends in agreement.
pub fn leader_crash_storm<N: LabNode>(make: Make<N>, seed: u64) {
    let mut lab = make(5, seed);
    let first = lab.value();
    lab.one(first, 1, true);
    let mut up = 5;
    for _ in 0..200 {
        let mut leader = None;
        for i in 0..5 {
            if lab.sim.is_up(i) {
                let value = lab.value();
                lab.start(i, value);
                if lab.node(i).unwrap().leads() {
                    leader = Some(i);
                }
            }
        }
        let pause = if lab.rng.gen_bool(0.1) {
            lab.rng.gen_range(0..lab.election_timeout() / 2)
        } else {
            lab.rng.gen_range(0..13 * MILLISECOND)
        };
        lab.run(pause);
        if let Some(leader) = leader {
            lab.crash(leader);
            up -= 1;
        }
        if up < 3 {
            let s = lab.rng.gen_range(0..5);
            if !lab.sim.is_up(s) {
                lab.restart(s);
                up += 1;
            }
        }
    }
    for i in 0..5 {
        if !lab.sim.is_up(i) {
            lab.restart(i);
        }
    }
    let last = lab.value();
    lab.one(last, 5, true);
}

pub fn unreliable_agree<N: LabNode>(make: Make<N>) {
    let mut lab = make(5, 15);
    lab.set_unreliable(0.1, false);
    for iteration in 1..50 {
        for j in 0..4 {
            let value = 100 * iteration + j;
            let i = lab.rng.gen_range(0..5);
            lab.start(i, value);
        }
        lab.one(iteration, 1, true);
    }
    lab.set_reliable();
    lab.one(100, 5, true);
}

/// Raft's figure 8 (unreliable) schedule: leaders cut off at random moments over a lossy,
/// long-reordering network.
pub fn leader_partition_storm<N: LabNode>(make: Make<N>) {
    let mut lab = make(5, 16);
    lab.set_unreliable(0.1, true);
    let first = lab.value();
    lab.one(first, 1, true);
    let mut connected = 5;
    for iteration in 0..300 {
        if iteration == 200 {
            lab.set_unreliable(0.1, false);
        }
        let mut leader = None;
        for i in 0..5 {
            if lab.live(i) && lab.node(i).unwrap().leads() {
                leader = Some(i);
            }
            let value = lab.value();
            lab.start(i, value);
        }
        let pause = if lab.rng.gen_bool(0.1) {
            lab.rng.gen_range(0..lab.election_timeout() / 2)
        } else {
            lab.rng.gen_range(0..13 * MILLISECOND)
        };
        lab.run(pause);
        if let Some(leader) = leader {
            if lab.rng.gen_bool(0.5) {
                lab.disconnect(leader);
                connected -= 1;
            }
        }
        if connected < 3 {
            let s = lab.rng.gen_range(0..5);
            if !lab.live(s) {
                lab.connect(s);
                connected += 1;
            }
        }
    }
    for i in 0..5 {
        lab.connect(i);
    }
    lab.set_reliable();
    let last = lab.value();
    lab.one(last, 5, true);
}

/// Churn: proposals keep arriving at random servers while servers crash, restart,
/// disconnect and reconnect; every proposal a client saw applied must sit, with the value the
/// client proposed, at the index it was told, in the final log (no snapshots here).
pub fn churn<N: LabNode>(make: Make<N>, unreliable: bool, seed: u64) {
    let mut lab = make(5, seed);
    if unreliable {
        lab.set_unreliable(0.1, false);
    }
    let mut proposed = BTreeMap::new();
    for _ in 0..20 {
        for _ in 0..35 {
            let i = lab.rng.gen_range(0..5);
            let value = lab.value();
            if lab.sim.is_up(i) {
                let request = N::propose(command(value));
                proposed.insert(lab.sim.submit(i, request).unwrap(), value);
            }
            let pause = lab.rng.gen_range(0..20 * MILLISECOND);
            if let Err(failure) = lab.sim.run_for(pause) {
                panic!("{failure}");
            }
        }
        let victim = lab.rng.gen_range(0..5);
        match lab.rng.gen_range(0..4) {
            0 => lab.disconnect(victim),
            1 => lab.connect(victim),
            2 => lab.crash(victim),
            _ => {
                if !lab.sim.is_up(victim) {
                    lab.restart(victim);
                }
            }
        }
    }
    let acknowledged: Vec<(u64, i64)> = lab
        .sim
        .take_replies()
        .into_iter()
        .filter_map(|reply| Some((N::applied_at(&reply.response)?, proposed[&reply.id])))
        .collect();
    assert!(
        acknowledged.len() > 20,
        "only {} proposals acknowledged",
        acknowledged.len()
    );
    lab.set_reliable();
    for i in 0..5 {
        if !lab.sim.is_up(i) {
            lab.restart(i);
        }
        lab.connect(i);
    }
    lab.run(lab.election_timeout());
    let last = lab.value();
    let final_index = lab.one(last, 5, true);
    let leader = lab.check_one_leader();
    let node = lab.node(leader).unwrap();
    for (index, value) in acknowledged {
        assert!(index <= final_index);
        assert_eq!(
            node.command_at(index),
            Some(Some(command(value))),
            "acknowledged entry {index} lost"
        );
    }
}

// ---------------------------------------------------------------- snapshots

/// Every running node keeps a bounded log (its snapshots compact it).
pub fn assert_logs_compacted<N: LabNode>(lab: &Lab<N>) {
    for i in 0..lab.n() as NodeId {
        if let Some(node) = lab.node(i) {
            let retained = node.retained();
            assert!(
                retained <= 40,
                "node {i} keeps {retained} entries despite snapshots"
            );
        }
    }
}

/// The lab's `snapcommon`: repeatedly cut a follower off (by disconnect or crash), commit
/// enough to compact the log past it, then bring it back: it must catch up by snapshot.
pub fn snap_common<N: LabNode>(
    make: Make<N>,
    disconnect: bool,
    crash: bool,
    unreliable: bool,
    seed: u64,
) {
    let mut lab = make(3, seed);
    if unreliable {
        lab.set_unreliable(0.1, false);
    }
    let first = lab.value();
    lab.one(first, 3, true);
    let mut leader = lab.check_one_leader();
    let mut installs = 0;
    for _ in 0..10 {
        let victim = (leader + 1) % 3;
        let mut sender = leader;
        if lab.rng.gen_bool(0.5) {
            sender = (leader + 1) % 3;
        }
        if disconnect {
            lab.disconnect(victim);
            let value = lab.value();
            lab.one(value, 2, true);
        }
        if crash {
            lab.crash(victim);
            let value = lab.value();
            lab.one(value, 2, true);
        }
        let behind = lab.sim.storage(victim).map_or(0, N::durable_last);
        for _ in 0..15 {
            let value = lab.value();
            lab.start(sender, value);
        }
        let value = lab.value();
        lab.one(value, 2, true);
        assert_logs_compacted(&lab);
        let compacted_past_victim = (0..3)
            .filter(|&i| i != victim)
            .filter_map(|i| lab.node(i))
            .any(|n| n.compacted() > behind);
        if disconnect {
            lab.connect(victim);
        }
        if crash {
            lab.restart(victim);
        }
        let value = lab.value();
        let index = lab.one(value, 3, true);
        if compacted_past_victim {
            installs += 1;
            let node = lab.node(victim).unwrap();
            assert!(node.applied() >= index, "victim did not catch up");
        }
        leader = lab.check_one_leader();
    }
    assert!(
        installs > 0,
        "no round compacted past the victim: snapshot transfer untested"
    );
}

pub fn snapshot_basic<N: LabNode>(make: Make<N>) {
    let mut lab = make(3, 19);
    for value in 0..60 {
        lab.one(value, 3, true);
    }
    assert_logs_compacted(&lab);
    for i in 0..3 {
        let snapshot = N::durable_compacted(lab.sim.storage(i).unwrap());
        assert!(snapshot >= 40, "node {i}: durable snapshot at {snapshot}");
    }
}

/// Crash every server at once after snapshots; they restart from snapshot plus log.
pub fn snapshot_all_crash<N: LabNode>(make: Make<N>) {
    let mut lab = make(3, 24);
    let first = lab.value();
    lab.one(first, 3, true);
    for _ in 0..5 {
        for _ in 0..15 {
            let value = lab.value();
            lab.one(value, 3, true);
        }
        let value = lab.value();
        let index1 = lab.one(value, 3, true);
        for i in 0..3 {
            lab.crash(i);
        }
        for i in 0..3 {
            lab.restart(i);
        }
        let value = lab.value();
        let index2 = lab.one(value, 3, true);
        assert!(
            index2 > index1,
            "index went backwards after a crash: {index2} <= {index1}"
        );
    }
}

/// Servers restart from a snapshot and must serve the state it holds (the lab's SnapshotInit:
/// a restarted server must not apply entries below its snapshot again).
pub fn snapshot_init<N: LabNode>(make: Make<N>) {
    let mut lab = make(3, 25);
    for value in 0..25 {
        lab.one(value, 3, true);
    }
    for i in 0..3 {
        lab.restart(i);
    }
    lab.one(1000, 3, true);
    for i in 0..3 {
        lab.restart(i);
    }
    lab.one(1001, 3, true);
    let leader = lab.check_one_leader();
    let leader_node = lab.node(leader).unwrap();
    let state = leader_node.lab_state().clone();
    for i in 0..3 {
        let node = lab.node(i).unwrap();
        if node.applied() == leader_node.applied() {
            assert_eq!(
                node.lab_state().get("lab"),
                state.get("lab"),
                "node {i} diverged"
            );
        }
    }
    assert_eq!(state.get("lab"), Some(&concord_core::Value::Int(1001)));
}
