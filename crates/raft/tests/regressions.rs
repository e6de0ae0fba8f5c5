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
