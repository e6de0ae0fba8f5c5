//! Regression tests, named after the bug they pin.

mod common;

use common::paper_config;
use concord_raft::testing::{Cluster, Envelope};
use concord_raft::Message;

fn deliver(cluster: &mut Cluster, envelope: Envelope) {
    cluster.network.push_front(envelope);
    cluster.deliver_one();
}

/// Found by the simulator (seed 43): the leader-completeness checker demanded that a leader of
/// term 1, elected late by vote responses that were in flight, hold an entry committed in term
/// 2. Raft allows this (Leader Completeness only binds leaders of *later* terms); such a leader
/// cannot commit anything and steps down at its first contact.
#[test]
fn a_leader_of_an_older_term_elected_late_is_not_a_completeness_violation() {
    let mut cluster = Cluster::new(5, paper_config());
    cluster.tick_at_deadline(0);
    let requests = cluster.take_messages();
    for envelope in requests.into_iter().filter(|e| e.to == 1 || e.to == 2) {
        deliver(&mut cluster, envelope);
    }
    let held_votes = cluster.take_messages();
    assert!(held_votes.iter().all(|e| matches!(
        e.message,
        Message::RequestVoteResponse {
            term: 1,
            granted: true,
            ..
        }
    )));
    cluster.cut(3, 0);
    cluster.tick_at_deadline(3);
    cluster.drop_messages();
    cluster.tick_at_deadline(3);
    cluster.deliver_all();
    assert!(cluster.node(3).is_leader());
    assert_eq!(cluster.node(3).current_term(), 2);
    assert_eq!(
        cluster.node(3).commit_index(),
        1,
        "(1, 2) committed in term 2"
    );
    for envelope in held_votes {
        deliver(&mut cluster, envelope);
    }
    assert!(cluster.node(0).is_leader(), "node 0 leads term 1, late");
    assert_eq!(cluster.node(0).log().last_index(), 1);
    cluster.heal();
    cluster.deliver_all();
    assert!(!cluster.node(0).is_leader(), "deposed at its first contact");
    assert_eq!(cluster.node(0).current_term(), 2);
}

/// Found by the read checker in `tests/fuzz.rs` (seed 521): read ids restarted from zero after a
/// crash, so a late ReadIndexResponse to a read of the previous incarnation answered a new read
/// with a stale read index. Ids now start at a random value per incarnation.
#[test]
fn a_late_read_index_answer_from_before_a_restart_does_not_answer_a_new_read() {
    let mut cluster = Cluster::new(3, concord_raft::Config::default());
    cluster.elect(0);
    cluster.propose(0, "x", 1);
    cluster.deliver_all();
    cluster.read(1, "x");
    let old_request = cluster.take_messages();
    let old_read_id = match old_request.as_slice() {
        [Envelope {
            message: Message::ReadIndexRequest { read_id },
            ..
        }] => *read_id,
        other => panic!("expected one forwarded read, got {other:?}"),
    };
    cluster.crash(1);
    cluster.restart(1);
    cluster.now += cluster.config.heartbeat_interval;
    cluster.tick(0);
    cluster.deliver_all();
    let new_read = cluster.read(1, "x");
    cluster.drop_messages();
    let late_answer = Message::ReadIndexResponse {
        read_id: old_read_id,
        read_index: Some(0),
        leader: Some(0),
    };
    deliver(
        &mut cluster,
        Envelope {
            from: 0,
            to: 1,
            message: late_answer,
        },
    );
    assert_eq!(cluster.reply(new_read), None);
}

/// Found by `tests/fuzz.rs` (seed 7993): every higher-term vote request reset the election
/// timer, so the only node whose log could win (the others' requests it rightly rejected) never
/// timed out while the others kept campaigning. Figure 2: only the current leader's
/// AppendEntries or a granted vote resets the timer.
#[test]
fn a_rejected_vote_request_does_not_reset_the_election_timer() {
    let mut cluster = Cluster::with_storage(
        vec![common::storage(&[1, 1, 1], 1), common::storage(&[1], 1)],
        paper_config(),
    );
    let deadline = concord_core::Node::next_deadline(cluster.node(0));
    let request = Message::RequestVote {
        term: 2,
        last_log_index: 1,
        last_log_term: 1,
        pre_vote: false,
        transfer: false,
    };
    deliver(
        &mut cluster,
        Envelope {
            from: 1,
            to: 0,
            message: request,
        },
    );
    assert_eq!(cluster.node(0).current_term(), 2);
    assert_eq!(concord_core::Node::next_deadline(cluster.node(0)), deadline);
}

/// Found by Concord DB's WAL corruption test: a follower whose damaged log tail was truncated
/// on restart had lost entries it had acknowledged. The leader kept probing at its old match
/// index, judged every rejection stale, and the follower never caught up.
#[test]
fn a_follower_that_lost_acknowledged_entries_catches_up() {
    let mut cluster = Cluster::new(3, concord_raft::Config::default());
    // Losing acknowledged entries is outside Raft's fault model; only catching up is checked.
    cluster.check_cluster_invariants = false;
    cluster.elect(0);
    for value in 0..5 {
        cluster.propose(0, "x", value);
        cluster.deliver_all();
    }
    let before = cluster.node(0).log().last_index();
    cluster.run_for(cluster.config.heartbeat_interval * 3);
    assert_eq!(cluster.node(2).log().last_index(), before);
    cluster.crash(2);
    let entries = cluster.storage[2].entries.len();
    cluster.storage[2].entries.truncate(entries - 2);
    cluster.restart(2);
    cluster.propose(0, "x", 5);
    cluster.deliver_all();
    cluster.run_for(cluster.config.heartbeat_interval * 5);
    let last = cluster.node(0).log().last_index();
    assert_eq!(cluster.node(2).log().last_index(), last);
    assert_eq!(
        cluster.node(2).commit_index(),
        cluster.node(0).commit_index()
    );
}

/// Found by `tests/fuzz.rs` once followers forwarded proposals (seed 11756): voters {1, 2}
/// were moving to {1} (2 becoming a learner). Node 2 held the final configuration, node 1 only
/// the joint one, and both had restarted, so neither knew either was committed. Node 1 could
/// not win (the joint configuration needs node 2's vote, and node 2's log is longer); node 2
/// did not campaign, judging itself by the configuration at its commit index (where it is no
/// voter) and not by the joint one it may still be needed for (thesis §4.2.2). Nobody was ever
/// elected. A node now campaigns if it votes in any configuration from its commit index on.
#[test]
fn a_voter_of_an_uncommitted_joint_configuration_campaigns_after_a_restart() {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use concord_raft::{Entry, HardState, Membership, Payload, Storage};

    let set = |ids: &[u64]| ids.iter().copied().collect::<BTreeSet<u64>>();
    let joint = Membership {
        voters: set(&[1]),
        outgoing_voters: set(&[1, 2]),
        learners: set(&[0, 2]),
    };
    let last = Membership {
        voters: set(&[1]),
        outgoing_voters: BTreeSet::new(),
        learners: set(&[0, 2]),
    };
    let entry = |index, membership: &Membership| Entry {
        index,
        term: 1,
        payload: Payload::Membership(Arc::new(membership.clone())),
    };
    let storage = |entries: Vec<Entry<concord_core::KvCommand>>| Storage {
        hard_state: HardState {
            current_term: 1,
            voted_for: None,
        },
        snapshot: None,
        entries,
    };
    let mut cluster = Cluster::with_members(3, vec![1], concord_raft::Config::default());
    cluster.storage = vec![
        storage(vec![entry(1, &joint)]),
        storage(vec![entry(1, &joint)]),
        storage(vec![entry(1, &joint), entry(2, &last)]),
    ];
    for id in 0..3 {
        cluster.restart(id);
    }
    cluster.run_for(20 * cluster.config.election_timeout_max);
    assert_eq!(
        cluster.leader(),
        Some(1),
        "the one voter of the final configuration"
    );
    assert!(
        cluster.node(1).commit_index() >= 2,
        "the final configuration committed"
    );
    assert_eq!(cluster.node(1).log().membership(), &last);
}
