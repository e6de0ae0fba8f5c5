//! Flow control and batching (thesis §10.2): group commit of the leader's writes, a bounded
//! in-flight window per follower, and bounded batches per AppendEntries.

mod common;

use common::kinds;
use concord_core::Input;
use concord_raft::testing::Cluster;
use concord_raft::{Config, Message};

fn appends_to(cluster: &Cluster, to: u64) -> Vec<usize> {
    cluster
        .network
        .iter()
        .filter(|e| e.to == to)
        .filter_map(|e| match &e.message {
            Message::AppendEntries { entries, .. } if !entries.is_empty() => Some(entries.len()),
            _ => None,
        })
        .collect()
}

/// Thesis §10.2.1: the leader sends new entries before writing them (its messages do not
/// depend on its own log, and its log writes are no barrier for the driver); without
/// `batch_proposals`, proposals arriving while its write is in flight are sent to the
/// followers at once, and the leader's own write
/// of them is grouped into one Persist once the write in flight is confirmed.
#[test]
fn a_leader_groups_entries_proposed_while_a_write_is_in_flight() {
    let config = Config {
        batch_proposals: false,
        ..Config::default()
    };
    let mut cluster = Cluster::new(3, config);
    cluster.elect(0);
    cluster.auto_persist = false;
    let first = cluster.step(
        0,
        Input::Request {
            id: 1,
            request: propose(1),
        },
    );
    assert_eq!(kinds(&first), ["send", "send", "persist-append"]);
    assert_eq!(cluster.network.len(), 2, "sent while the leader writes");
    cluster.drop_messages();
    for value in 2..5 {
        let effects = cluster.step(
            0,
            Input::Request {
                id: value,
                request: propose(value as i64),
            },
        );
        assert_eq!(
            kinds(&effects),
            ["send", "send"],
            "sent at once, written later: {effects:?}"
        );
    }
    assert_eq!(
        appends_to(&cluster, 1),
        vec![1, 1, 1],
        "each proposal reached the follower while the leader's write was in flight"
    );
    cluster.confirm_persists(0);
    assert_eq!(
        cluster.storage[0].entries.len(),
        2,
        "the no-op and the first proposal"
    );
    assert!(
        cluster.has_pending_writes(0),
        "the grouped write leaves on confirmation"
    );
    cluster.confirm_persists(0);
    assert_eq!(
        cluster.storage[0].entries.len(),
        5,
        "plus the three grouped proposals"
    );
}

fn propose(value: i64) -> concord_raft::testing::KvRequest {
    concord_raft::Request::Propose(concord_core::KvOperation::Write {
        key: "x".into(),
        value,
    })
}

/// Thesis §10.2.2 pipelining: at most `max_inflight_appends` AppendEntries with entries are
/// outstanding per follower; the rest wait for acknowledgements.
#[test]
fn pipelining_is_bounded_by_the_in_flight_window() {
    let config = Config {
        max_inflight_appends: 2,
        ..Config::default()
    };
    let mut cluster = Cluster::new(3, config);
    cluster.elect(0);
    for value in 0..5 {
        cluster.propose(0, "x", value);
    }
    assert_eq!(appends_to(&cluster, 1), vec![1, 1]);
    cluster.deliver_all();
    assert_eq!(cluster.node(1).log().last_index(), 6);
}

/// An AppendEntries carries at most `max_entries_per_message` entries.
#[test]
fn batches_are_bounded_by_max_entries_per_message() {
    let config = Config {
        max_entries_per_message: 2,
        ..Config::default()
    };
    let mut cluster = Cluster::new(3, config);
    cluster.elect(0);
    cluster.cut(0, 2);
    for value in 0..7 {
        cluster.propose(0, "x", value);
    }
    cluster.deliver_all();
    cluster.heal();
    for _ in 0..3 {
        cluster.now += 2 * cluster.config.heartbeat_interval;
        cluster.tick(0);
        let sizes = appends_to(&cluster, 2);
        assert!(sizes.iter().all(|&n| n <= 2), "{sizes:?}");
        cluster.deliver_all();
    }
    assert_eq!(cluster.node(2).log().last_index(), 8);
}

/// `batch_proposals` (the default): a burst of proposals leaves as one AppendEntries per follower, sent by
/// the next input that is not a proposal (here the tick the leader asks for at once).
#[test]
fn batched_proposals_leave_together_at_the_next_input() {
    let mut cluster = Cluster::new(3, Config::default());
    assert!(cluster.config.batch_proposals, "the default");
    cluster.elect(0);
    cluster.drop_messages();
    // Write confirmations are inputs too (they would send the batch): hold them.
    cluster.auto_persist = false;
    for value in 1..=4 {
        let effects = cluster.step(
            0,
            Input::Request {
                id: value,
                request: propose(value as i64),
            },
        );
        assert!(
            !kinds(&effects).contains(&"send"),
            "a proposal's broadcast is held back: {effects:?}"
        );
    }
    assert!(cluster.network.is_empty());
    let now = cluster.node_time(0);
    assert_eq!(
        concord_core::Node::next_deadline(cluster.node(0)),
        Some(now),
        "the leader asks to be ticked at once"
    );
    cluster.tick(0);
    assert_eq!(
        appends_to(&cluster, 1),
        vec![4],
        "one message, four entries"
    );
    assert_eq!(appends_to(&cluster, 2), vec![4]);
    // Replication and commitment go on as usual.
    cluster.auto_persist = true;
    cluster.confirm_persists(0);
    cluster.confirm_persists(0);
    cluster.deliver_all();
    for value in 1..=4 {
        assert!(
            cluster
                .replies
                .iter()
                .any(|(node, id, _)| *node == 0 && *id == value),
            "proposal {value} answered"
        );
    }
}

/// The leader's own log append: the write of the Persist effect among `effects`.
fn leader_append(
    effects: &[concord_raft::testing::KvEffect],
) -> concord_raft::Write<concord_core::KvCommand> {
    effects
        .iter()
        .find_map(|effect| match effect {
            concord_core::Effect::Persist { write, .. } => Some(write.clone()),
            _ => None,
        })
        .expect("the leader writes the proposal")
}

/// Proposes two entries at leader 0 with no write confirmed, so that both await commitment;
/// returns the leader's write of the first. [`settle`] confirms and delivers what is left.
fn two_awaiting(cluster: &mut Cluster, first: u64) -> concord_raft::Write<concord_core::KvCommand> {
    cluster.auto_persist = false;
    let effects = cluster.step(
        0,
        Input::Request {
            id: first,
            request: propose(first as i64),
        },
    );
    cluster.step(
        0,
        Input::Request {
            id: first + 1,
            request: propose(first as i64 + 1),
        },
    );
    leader_append(&effects)
}

/// Confirms every node's writes, then delivers every message.
fn settle(cluster: &mut Cluster) {
    cluster.auto_persist = true;
    for id in 0..cluster.nodes.len() as u64 {
        cluster.confirm_persists(id);
    }
    cluster.deliver_all();
}

/// Lets `rounds` heartbeat intervals pass at leader 0, delivering what it sends.
fn heartbeats(cluster: &mut Cluster, rounds: u32) {
    for _ in 0..rounds {
        cluster.now += cluster.config.heartbeat_interval;
        cluster.tick(0);
        cluster.deliver_all();
    }
}

/// A leader lets the sync of its own log append wait (`Node::may_delay_sync`, which the
/// runtime turns into a short delay) only while followers it hears from make a quorum without
/// it, so that its copy decides no commit, and more than one entry awaits commitment, so that
/// other appends may share the sync. Not when one of two followers is silent, not for a lone
/// leader or a lone client's write, and never for a follower's write or the hard state.
#[test]
fn a_leader_delays_its_own_sync_only_while_its_followers_make_a_quorum() {
    use concord_core::Node as _;

    let mut cluster = Cluster::new(3, Config::default());
    cluster.elect(0);
    let effects = cluster.step(
        0,
        Input::Request {
            id: 1,
            request: propose(1),
        },
    );
    assert!(
        !cluster.node(0).may_delay_sync(&leader_append(&effects)),
        "one entry awaits commitment: nothing would share the sync"
    );
    cluster.deliver_all();

    let own = two_awaiting(&mut cluster, 2);
    assert!(
        cluster.node(0).may_delay_sync(&own),
        "both followers replicate"
    );
    assert!(
        !cluster.node(1).may_delay_sync(&own),
        "a follower never delays"
    );
    let hard_state = concord_raft::Write::HardState(concord_raft::HardState {
        current_term: cluster.node(0).current_term(),
        voted_for: Some(0),
    });
    assert!(!cluster.node(0).may_delay_sync(&hard_state));
    settle(&mut cluster);

    // Follower 2 goes silent: past two heartbeat intervals, follower 1 alone is no quorum.
    cluster.isolate(2);
    heartbeats(&mut cluster, 3);
    let own = two_awaiting(&mut cluster, 4);
    assert!(
        !cluster.node(0).may_delay_sync(&own),
        "its own copy is part of every quorum now"
    );
    cluster.heal();
    settle(&mut cluster);
    heartbeats(&mut cluster, 2);
    let own = two_awaiting(&mut cluster, 6);
    assert!(
        cluster.node(0).may_delay_sync(&own),
        "follower 2 is back and caught up"
    );

    let mut alone = Cluster::new(1, Config::default());
    alone.elect(0);
    let own = two_awaiting(&mut alone, 1);
    assert!(!alone.node(0).may_delay_sync(&own), "a lone leader");
}
