//! The scenarios of the well-known Raft lab suite (parts A–D: election, agreement,
//! persistence, snapshots), by name, run against `concord-raft` in the deterministic simulator
//! with Raft's cluster invariants checked after every step.
//!
//! Where the lab counts RPCs, this suite counts messages (a request and its response are two)
//! and adjusts the bounds accordingly. Concord's leaders append a no-op entry when elected
//! (paper §8), so indices are checked for order rather than for exact values.

mod lab;

use concord_raft::Config;
use lab::{scenarios, Lab, SECOND};

// ---------------------------------------------------------------- part A: leader election

#[test]
fn initial_election() {
    scenarios::initial_election(Lab::new);
}

#[test]
fn re_election() {
    scenarios::re_election(Lab::new);
}

#[test]
fn many_elections() {
    scenarios::many_elections(Lab::new);
}

// ---------------------------------------------------------------- part B: agreement

#[test]
fn basic_agree() {
    scenarios::basic_agree(Lab::new);
}

#[test]
fn rpc_bytes() {
    // Each command travels to each follower about once: the lab bounds bytes sent; this
    // suite bounds the AppendEntries messages, which carry the commands, by counting all
    // messages against a budget of one round trip per command per follower plus heartbeats.
    let mut lab = Lab::new(3, 2);
    lab.one(99, 3, false);
    let before = lab.messages();
    let started = lab.sim.now();
    let commands = 10;
    for value in 0..commands {
        lab.one(1000 + value, 3, false);
    }
    let elapsed = lab.sim.now() - started;
    let heartbeats = 2 * 2 * (elapsed / lab.sim.node_config().heartbeat_interval + 1);
    let sent = lab.messages() - before;
    let budget = 2 * 2 * commands as u64 + heartbeats;
    assert!(
        sent <= budget,
        "{sent} messages for {commands} commands (budget {budget})"
    );
}

#[test]
fn follower_failure() {
    scenarios::follower_failure(Lab::new);
}

#[test]
fn leader_failure() {
    scenarios::leader_failure(Lab::new);
}

#[test]
fn fail_agree() {
    scenarios::fail_agree(Lab::new);
}

#[test]
fn fail_no_agree() {
    scenarios::fail_no_agree(Lab::new);
}

#[test]
fn concurrent_starts() {
    scenarios::concurrent_starts(Lab::new);
}

#[test]
fn rejoin() {
    scenarios::rejoin(Lab::new);
}

#[test]
fn backup() {
    scenarios::backup(Lab::new);
}

#[test]
fn count() {
    let mut lab = Lab::new(3, 11);
    lab.check_one_leader();
    // The lab allows 30 RPCs to elect among 3; a message here is half an RPC.
    let election = lab.messages();
    assert!(election <= 60, "{election} messages to elect a leader");

    let before = lab.messages();
    let commands = 10u64;
    for value in 0..commands as i64 {
        lab.one(value + 1, 3, false);
    }
    let sent = lab.messages() - before;
    // About one AppendEntries (and its response) per command per follower, plus heartbeats.
    let budget = 2 * (commands + 1 + 3) * 3 + 2 * 2 * 20;
    assert!(
        sent <= budget,
        "{sent} messages for {commands} commands (budget {budget})"
    );

    // Idle: the lab allows 3 * 20 RPCs per second.
    lab.run(SECOND);
    let idle_before = lab.messages();
    lab.run(SECOND);
    let idle = lab.messages() - idle_before;
    assert!(idle <= 2 * 60, "{idle} messages in an idle second");
}

// ---------------------------------------------------------------- part C: persistence

#[test]
fn persist1() {
    scenarios::persist1(Lab::new);
}

#[test]
fn persist2() {
    scenarios::persist2(Lab::new);
}

#[test]
fn persist3() {
    scenarios::persist3(Lab::new);
}

/// Figure 8 of the paper: leaders crash at random moments with entries of their terms
/// partially replicated; the commit rule must never let a later leader overwrite a committed
/// entry (checked by the leader-completeness and state-machine-safety invariants).
#[test]
fn figure8() {
    for seed in 100..103 {
        scenarios::leader_crash_storm(Lab::new, seed);
    }
}

#[test]
fn unreliable_agree() {
    scenarios::unreliable_agree(Lab::new);
}

#[test]
fn figure8_unreliable() {
    scenarios::leader_partition_storm(Lab::new);
}

#[test]
fn reliable_churn() {
    scenarios::churn(Lab::new, false, 17);
}

#[test]
fn unreliable_churn() {
    scenarios::churn(Lab::new, true, 18);
}

// ---------------------------------------------------------------- part D: snapshots

/// Snapshots every 10 applied entries, sent in 64-byte chunks.
fn snapshotting(nodes: usize, seed: u64) -> Lab {
    let config = Config {
        snapshot_threshold: 10,
        snapshot_chunk_size: 64,
        ..Config::default()
    };
    Lab::with_config(nodes, seed, config)
}

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
