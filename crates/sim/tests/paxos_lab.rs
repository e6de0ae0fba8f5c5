//! The scenarios of the Raft lab suite (`raft_lab.rs`: election, agreement, persistence,
//! churn, snapshots), run against Multi-Paxos on the same lab helper, with Multi-Paxos's
//! cluster invariants checked after every step. Where a scenario is Raft's own (figure 8 is
//! about Raft's commit rule; message budgets are Raft's), the Multi-Paxos version keeps the
//! faults and the checks and states its own budget.

mod lab;

use concord_paxos::multi::Config;
use lab::{scenarios, Lab, PaxosKv, SECOND};

fn lab(nodes: usize, seed: u64) -> Lab<PaxosKv> {
    Lab::paxos_for(nodes, seed, Config::default(), "paxos_lab")
}

/// Snapshots every 10 applied slots.
fn snapshotting(nodes: usize, seed: u64) -> Lab<PaxosKv> {
    let config = Config {
        snapshot_threshold: 10,
        ..Config::default()
    };
    Lab::paxos_for(nodes, seed, config, "paxos_lab")
}

// ---------------------------------------------------------------- leader election

#[test]
fn initial_election() {
    scenarios::initial_election(lab);
}

#[test]
fn re_election() {
    scenarios::re_election(lab);
}

#[test]
fn many_elections() {
    scenarios::many_elections(lab);
}

// ---------------------------------------------------------------- agreement

#[test]
fn basic_agree() {
    scenarios::basic_agree(lab);
}

#[test]
fn follower_failure() {
    scenarios::follower_failure(lab);
}

#[test]
fn leader_failure() {
    scenarios::leader_failure(lab);
}

#[test]
fn fail_agree() {
    scenarios::fail_agree(lab);
}

#[test]
fn fail_no_agree() {
    scenarios::fail_no_agree(lab);
}

#[test]
fn concurrent_starts() {
    scenarios::concurrent_starts(lab);
}

#[test]
fn rejoin() {
    scenarios::rejoin(lab);
}

#[test]
fn backup() {
    scenarios::backup(lab);
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
    scenarios::persist1(lab);
}

#[test]
fn persist2() {
    scenarios::persist2(lab);
}

#[test]
fn persist3() {
    scenarios::persist3(lab);
}

/// Raft's figure 8 schedule. Multi-Paxos has no commit rule to get wrong there (a slot is
/// decided by a phase-2 quorum at one ballot, and a new leader re-proposes what its phase 1
/// found); the same storm of leader crashes must still keep every invariant.
#[test]
fn leader_crash_storm() {
    for seed in 100..103 {
        scenarios::leader_crash_storm(lab, seed);
    }
}

#[test]
fn unreliable_agree() {
    scenarios::unreliable_agree(lab);
}

#[test]
fn leader_partition_storm_unreliable() {
    scenarios::leader_partition_storm(lab);
}

#[test]
fn reliable_churn() {
    scenarios::churn(lab, false, 17);
}

#[test]
fn unreliable_churn() {
    scenarios::churn(lab, true, 18);
}

// ---------------------------------------------------------------- snapshots

#[test]
fn snapshot_basic() {
    scenarios::snapshot_basic(snapshotting);
}

#[test]
fn snapshot_install() {
    scenarios::snap_common(snapshotting, true, false, false, 20);
}

#[test]
fn snapshot_install_unreliable() {
    scenarios::snap_common(snapshotting, true, false, true, 21);
}

#[test]
fn snapshot_install_crash() {
    scenarios::snap_common(snapshotting, false, true, false, 22);
}

#[test]
fn snapshot_install_uncrash() {
    scenarios::snap_common(snapshotting, false, true, true, 23);
}

#[test]
fn snapshot_all_crash() {
    scenarios::snapshot_all_crash(snapshotting);
}

#[test]
fn snapshot_init() {
    scenarios::snapshot_init(snapshotting);
}
