//! The scenarios of the Raft lab suite (`raft_lab.rs`: election, agreement, persistence,
//! churn, snapshots), run against Multi-Paxos on the same lab helper, with Multi-Paxos's
//! cluster invariants checked after every step. Where a scenario is Raft's own (figure 8 is
//! about Raft's commit rule; message budgets are Raft's), the Multi-Paxos version keeps the
//! faults and the checks and states its own budget.

mod lab;

use std::collections::BTreeMap;

use concord_core::time::MILLISECOND;
use concord_core::NodeId;
use concord_paxos::multi::{Config, Response};
use lab::{Lab, LabNode, PaxosKv, SECOND};
use rand::Rng as _;

fn lab(nodes: usize, seed: u64) -> Lab<PaxosKv> {
    Lab::paxos_for(nodes, seed, Config::default(), "paxos_lab")
}

fn lab_with(nodes: usize, seed: u64, config: Config) -> Lab<PaxosKv> {
    Lab::paxos_for(nodes, seed, config, "paxos_lab")
}

fn command(value: i64) -> concord_core::KvOperation {
    Lab::command(value)
}

// ---------------------------------------------------------------- leader election

#[test]
fn initial_election() {
    for seed in 0..5 {
        let mut lab = lab(3, seed);
        lab.check_one_leader();
        let ballot = lab.check_terms();
        // With no failures, the ballot and the leader stay.
        lab.run(2 * lab.election_timeout());
        assert_eq!(
            lab.check_terms(),
            ballot,
            "seed {seed}: ballot changed without failures"
        );
        lab.check_one_leader();
    }
}

#[test]
fn re_election() {
    for seed in 0..5 {
        let mut lab = lab(3, seed);
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

#[test]
fn many_elections() {
    let mut lab = lab(7, 3);
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

#[test]
fn basic_agree() {
    let mut lab = lab(3, 1);
    let mut last = 0;
    for value in 1..=3 {
        let slot = lab.one(value * 100, 3, false);
        assert!(slot > last, "slot {slot} after {last}");
        last = slot;
    }
}

#[test]
fn follower_failure() {
    let mut lab = lab(3, 4);
    lab.one(101, 3, false);
    let leader1 = lab.check_one_leader();
    lab.disconnect((leader1 + 1) % 3);
    // The leader and the remaining follower still agree.
    lab.one(102, 2, false);
    lab.run(lab.election_timeout());
    lab.one(103, 2, false);
    // Disconnect the remaining follower: nothing is decided.
    let leader2 = lab.check_one_leader();
    lab.disconnect((leader2 + 1) % 3);
    lab.disconnect((leader2 + 2) % 3);
    lab.start(leader2, 104);
    lab.run(2 * lab.election_timeout());
    if let Some(slot) = lab.index_of(leader2, 104) {
        assert_eq!(lab.n_committed(slot).0, 0, "104 decided without a quorum");
    }
}

#[test]
fn leader_failure() {
    let mut lab = lab(3, 5);
    lab.one(101, 3, false);
    let leader1 = lab.check_one_leader();
    lab.disconnect(leader1);
    // The remaining acceptors elect a new leader.
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
        if let Some(slot) = lab.index_of(i, 104) {
            assert_eq!(lab.n_committed(slot).0, 0, "104 decided without a quorum");
        }
    }
}

#[test]
fn fail_agree() {
    let mut lab = lab(3, 6);
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

#[test]
fn fail_no_agree() {
    let mut lab = lab(5, 7);
    lab.one(10, 5, false);
    let leader = lab.check_one_leader();
    for k in 1..=3 {
        lab.disconnect((leader + k) % 5);
    }
    lab.start(leader, 20);
    lab.run(2 * lab.election_timeout());
    if let Some(slot) = lab.index_of(leader, 20) {
        assert_eq!(lab.n_committed(slot).0, 0, "decided with only 2 of 5");
    }
    for k in 1..=3 {
        lab.connect((leader + k) % 5);
    }
    lab.check_one_leader();
    lab.one(1000, 5, true);
}

#[test]
fn concurrent_starts() {
    let mut lab = lab(3, 8);
    lab.one(1, 3, false);
    let leader = lab.check_one_leader();
    let ballot = LabNode::term(lab.node(leader).unwrap());
    let values: Vec<i64> = (100..105).collect();
    for &value in &values {
        lab.start(leader, value);
    }
    lab.run(SECOND);
    assert_eq!(
        LabNode::term(lab.node(leader).unwrap()),
        ballot,
        "ballot changed under no faults"
    );
    let mut slots: Vec<u64> = values
        .iter()
        .map(|&v| lab.index_of(leader, v).unwrap())
        .collect();
    for &slot in &slots {
        lab.wait(slot, 3, Some(ballot)).expect("decided");
    }
    slots.sort_unstable();
    assert!(
        slots.windows(2).all(|w| w[1] == w[0] + 1),
        "not consecutive: {slots:?}"
    );
}

#[test]
fn rejoin() {
    let mut lab = lab(3, 9);
    lab.one(101, 3, true);
    // The leader is partitioned and takes proposals it cannot get decided.
    let leader1 = lab.check_one_leader();
    lab.disconnect(leader1);
    for value in [102, 103, 104] {
        lab.start(leader1, value);
    }
    // A new leader decides 103 on the other side.
    lab.one(103, 2, true);
    let leader2 = lab.check_one_leader();
    lab.disconnect(leader2);
    // The old leader comes back: its undecided entries must give way.
    lab.connect(leader1);
    lab.one(104, 2, true);
    lab.connect(leader2);
    lab.one(105, 3, true);
}

#[test]
fn backup() {
    let mut lab = lab(5, 10);
    let first = lab.value();
    lab.one(first, 5, true);
    // The leader and one follower get partitioned; they take 50 proposals never decided.
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
    // The other three decide 50 of their own.
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
    // Bring the original leader back, with its stale, divergent acceptances.
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
    // Everyone back: every log is repaired.
    for i in 0..5 {
        lab.connect(i);
    }
    let last = lab.value();
    lab.one(last, 5, true);
}

/// Message counts: an election, ten commands, and an idle second. Multi-Paxos has two steady
/// message streams Raft does not: ballot leader election's rounds (every node asks every peer
/// once per round) besides the leader's heartbeats; the budget counts both.
#[test]
fn count() {
    let mut lab = lab(3, 11);
    let config = lab.sim.node_config().clone();
    let n = 3u64;
    // One round of ballot leader election: a request and an answer per ordered pair.
    let per_round = 2 * n * (n - 1);
    let rounds_per_second = SECOND / config.election_round;
    let heartbeats_per_second = 2 * (n - 1) * (SECOND / config.heartbeat_interval);
    let steady = per_round * rounds_per_second + heartbeats_per_second;

    lab.check_one_leader();
    let election = lab.messages();
    let elapsed_seconds = lab.sim.now() / SECOND + 1;
    assert!(
        election <= steady * elapsed_seconds + 4 * n * n,
        "{election} messages to elect a leader in {elapsed_seconds} s"
    );

    let before = lab.messages();
    let started = lab.sim.now();
    let commands = 10u64;
    for value in 0..commands as i64 {
        lab.one(value + 1, 3, false);
    }
    let sent = lab.messages() - before;
    let seconds = (lab.sim.now() - started) / SECOND + 1;
    // About one Accept and its answer per command per follower, on top of the steady streams.
    let budget = 2 * (commands + 1) * (n - 1) * 2 + steady * seconds;
    assert!(
        sent <= budget,
        "{sent} messages for {commands} commands (budget {budget})"
    );

    // Idle: only the steady streams.
    lab.run(SECOND);
    let idle_before = lab.messages();
    lab.run(SECOND);
    let idle = lab.messages() - idle_before;
    assert!(
        idle <= steady + steady / 10,
        "{idle} messages in an idle second (steady rate {steady})"
    );
}

// ---------------------------------------------------------------- persistence

#[test]
fn persist1() {
    let mut lab = lab(3, 12);
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
    lab.one(14, 2, true);
    lab.restart(leader2);
    let slot = lab.one(15, 3, true);
    lab.wait(slot, 3, None);
    let i3 = (lab.check_one_leader() + 1) % 3;
    lab.crash(i3);
    lab.one(16, 2, true);
    lab.restart(i3);
    lab.one(17, 3, true);
}

#[test]
fn persist2() {
    let mut lab = lab(5, 13);
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

#[test]
fn persist3() {
    let mut lab = lab(3, 14);
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

/// Raft's figure 8 crashes leaders with entries of their terms partly replicated. Multi-Paxos
/// has no commit rule to get wrong there (a slot is decided by a phase-2 quorum at one
/// ballot, and a new leader re-proposes what its phase 1 found); the same storm of leader
/// crashes must still keep every invariant and end in agreement.
#[test]
fn leader_crash_storm() {
    for seed in 0..3 {
        let mut lab = lab(5, 100 + seed);
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
}

#[test]
fn unreliable_agree() {
    let mut lab = lab(5, 15);
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

/// Leaders cut off at random moments over an unreliable, reordering network.
#[test]
fn leader_partition_storm_unreliable() {
    let mut lab = lab(5, 16);
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
/// client proposed, at the slot it was told.
fn churn(unreliable: bool, seed: u64) {
    let mut lab = lab(5, seed);
    if unreliable {
        lab.set_unreliable(0.1, false);
    }
    let mut proposed = BTreeMap::new();
    for _ in 0..20 {
        for _ in 0..35 {
            let i = lab.rng.gen_range(0..5);
            let value = lab.value();
            if lab.sim.is_up(i) {
                let request = PaxosKv::propose(command(value));
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
        .filter_map(|reply| match reply.response {
            Response::Applied { slot, .. } => Some((slot, proposed[&reply.id])),
            _ => None,
        })
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
    let final_slot = lab.one(last, 5, true);
    let leader = lab.check_one_leader();
    let node = lab.node(leader).unwrap();
    for (slot, value) in acknowledged {
        assert!(slot <= final_slot);
        // The default snapshot threshold is far above this run's slots: every entry is kept.
        assert_eq!(
            node.command_at(slot),
            Some(Some(command(value))),
            "acknowledged slot {slot} lost"
        );
    }
}

#[test]
fn reliable_churn() {
    churn(false, 17);
}

#[test]
fn unreliable_churn() {
    churn(true, 18);
}

// ---------------------------------------------------------------- snapshots

/// Snapshots every 10 applied slots.
fn snapshot_config() -> Config {
    Config {
        snapshot_threshold: 10,
        ..Config::default()
    }
}

fn assert_logs_compacted(lab: &Lab<PaxosKv>) {
    for i in 0..lab.n() as NodeId {
        if let Some(node) = lab.node(i) {
            let retained = node.log_len() as u64;
            assert!(
                retained <= 40,
                "node {i} keeps {retained} entries despite snapshots"
            );
        }
    }
}

/// Repeatedly cut a follower off (by disconnect or crash), decide enough to compact the log
/// past it, then bring it back: it must catch up by snapshot.
fn snap_common(disconnect: bool, crash: bool, unreliable: bool, seed: u64) {
    let mut lab = lab_with(3, seed, snapshot_config());
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
        let behind = lab.sim.storage(victim).map_or(0, |s| s.decided);
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
        let slot = lab.one(value, 3, true);
        if compacted_past_victim {
            installs += 1;
            let node = lab.node(victim).unwrap();
            assert!(node.applied() >= slot, "victim did not catch up");
        }
        leader = lab.check_one_leader();
    }
    assert!(
        installs > 0,
        "no round compacted past the victim: snapshot transfer untested"
    );
}

#[test]
fn snapshot_basic() {
    let mut lab = lab_with(3, 19, snapshot_config());
    for value in 0..60 {
        lab.one(value, 3, true);
    }
    assert_logs_compacted(&lab);
    for i in 0..3 {
        let snapshot = lab.sim.storage(i).unwrap().compacted();
        assert!(snapshot >= 40, "node {i}: durable snapshot at {snapshot}");
    }
}

#[test]
fn snapshot_install() {
    snap_common(true, false, false, 20);
}

#[test]
fn snapshot_install_unreliable() {
    snap_common(true, false, true, 21);
}

#[test]
fn snapshot_install_crash() {
    snap_common(false, true, false, 22);
}

#[test]
fn snapshot_install_uncrash() {
    snap_common(false, true, true, 23);
}

/// Crash every server at once after snapshots; they restart from snapshot plus log.
#[test]
fn snapshot_all_crash() {
    let mut lab = lab_with(3, 24, snapshot_config());
    let first = lab.value();
    lab.one(first, 3, true);
    for _ in 0..5 {
        for _ in 0..15 {
            let value = lab.value();
            lab.one(value, 3, true);
        }
        let value = lab.value();
        let slot1 = lab.one(value, 3, true);
        for i in 0..3 {
            lab.crash(i);
        }
        for i in 0..3 {
            lab.restart(i);
        }
        let value = lab.value();
        let slot2 = lab.one(value, 3, true);
        assert!(
            slot2 > slot1,
            "slot went backwards after a crash: {slot2} <= {slot1}"
        );
    }
}

/// Servers restart from a snapshot and serve the state it holds (a restarted server must not
/// apply slots below its snapshot again).
#[test]
fn snapshot_init() {
    let mut lab = lab_with(3, 25, snapshot_config());
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
    let state = leader_node.state().clone();
    for i in 0..3 {
        let node = lab.node(i).unwrap();
        if node.applied() == leader_node.applied() {
            assert_eq!(
                node.state().get("lab"),
                state.get("lab"),
                "node {i} diverged"
            );
        }
    }
    assert_eq!(state.get("lab"), Some(&concord_core::Value::Int(1001)));
}
