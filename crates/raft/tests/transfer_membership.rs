//! Leadership transfer (thesis §3.10), membership changes by joint consensus (§4.3) and
//! learners (§4.2.1), and the key-value service mapping.

use std::collections::BTreeSet;

use concord_core::time::MILLISECOND;
use concord_core::{KvOperation, KvOutcome, KvResult, KvService, Role};
use concord_raft::testing::{Cluster, KvNode};
use concord_raft::{Config, Membership, RaftError, Request, Response};

fn set(ids: &[u64]) -> BTreeSet<u64> {
    ids.iter().copied().collect()
}

fn change(voters: &[u64], learners: &[u64]) -> Request<KvOperation, KvOperation> {
    Request::ChangeMembership {
        voters: set(voters),
        learners: set(learners),
    }
}

fn settled(size: u64, members: &[u64]) -> Cluster {
    let mut cluster = Cluster::with_members(size, members.to_vec(), Config::default());
    cluster.elect(0);
    assert!(cluster.node(0).is_leader());
    cluster
}

/// Thesis §3.10: the leader brings the target up to date, sends TimeoutNow, and the target
/// wins an election at once (bypassing stickiness), in the next term.
#[test]
fn leadership_transfer_hands_over_to_the_target() {
    let mut cluster = settled(3, &[0, 1, 2]);
    let term = cluster.node(0).current_term();
    let id = cluster.request(0, Request::TransferLeadership { to: 2 });
    assert_eq!(
        cluster.reply(id),
        Some(&Response::TransferStarted { to: 2 })
    );
    cluster.deliver_all();
    assert!(cluster.node(2).is_leader());
    assert_eq!(cluster.node(2).current_term(), term + 1);
    assert_eq!(cluster.node(0).role(), Role::Follower);
}

/// Thesis §3.10: a lagging target is first caught up; meanwhile the leader refuses proposals.
#[test]
fn a_transfer_to_a_lagging_target_catches_it_up_first() {
    let mut cluster = settled(3, &[0, 1, 2]);
    cluster.deliver_all();
    cluster.cut(0, 2);
    cluster.propose(0, "x", 1);
    cluster.deliver_all();
    let id = cluster.request(0, Request::TransferLeadership { to: 2 });
    assert_eq!(
        cluster.reply(id),
        None,
        "target is behind: no TimeoutNow yet"
    );
    let refused = cluster.propose(0, "x", 2);
    assert_eq!(
        cluster.reply(refused),
        Some(&Response::Failed(RaftError::TransferInProgress))
    );
    cluster.heal();
    cluster.run_for(300 * MILLISECOND);
    assert_eq!(
        cluster.reply(id),
        Some(&Response::TransferStarted { to: 2 })
    );
    assert_eq!(cluster.leader(), Some(2));
    assert!(cluster.node(2).log().last_index() >= 3);
}

/// A transfer to an unreachable target gives up after an election timeout, and the leader
/// accepts proposals again.
#[test]
fn a_transfer_to_an_unreachable_target_times_out() {
    let mut cluster = settled(3, &[0, 1, 2]);
    cluster.deliver_all();
    cluster.cut(0, 2);
    cluster.propose(0, "x", 1);
    cluster.deliver_all();
    let id = cluster.request(0, Request::TransferLeadership { to: 2 });
    cluster.run_for(cluster.config.election_timeout_max + MILLISECOND);
    assert_eq!(
        cluster.reply(id),
        Some(&Response::Failed(RaftError::TransferTimedOut { to: 2 }))
    );
    assert_eq!(cluster.leader(), Some(0));
    let accepted = cluster.propose(0, "x", 2);
    cluster.run_for(100 * MILLISECOND);
    assert!(matches!(
        cluster.reply(accepted),
        Some(Response::Applied { .. })
    ));
}

/// Thesis §4.3: adding several voters at once goes through C_old,new then C_new; the request
/// is answered when C_new commits, and every node ends in C_new.
#[test]
fn joint_consensus_adds_two_voters_at_once() {
    let mut cluster = settled(5, &[0, 1, 2]);
    cluster.deliver_all();
    let id = cluster.request(0, change(&[0, 1, 2, 3, 4], &[]));
    assert!(
        cluster.node(0).membership().is_joint(),
        "takes effect when appended"
    );
    cluster.run_for(500 * MILLISECOND);
    let expected = Membership::new([0, 1, 2, 3, 4]);
    assert!(matches!(
        cluster.reply(id),
        Some(Response::MembershipChanged { membership, .. }) if **membership == expected
    ));
    for node in 0..5 {
        assert_eq!(cluster.node(node).membership(), &expected, "node {node}");
    }
    let write = cluster.propose(0, "x", 1);
    cluster.run_for(100 * MILLISECOND);
    assert!(matches!(
        cluster.reply(write),
        Some(Response::Applied { .. })
    ));
}

/// Thesis §4.3: in C_old,new, "agreement requires separate majorities from both the old and
/// new configurations"; and §4.2.2: a leader not in C_new steps down once C_new commits.
#[test]
fn a_joint_configuration_needs_both_majorities_and_a_removed_leader_steps_down() {
    let mut cluster = settled(5, &[0, 1, 2]);
    cluster.deliver_all();
    cluster.crash(3);
    cluster.crash(4);
    let id = cluster.request(0, change(&[2, 3, 4], &[]));
    cluster.run_for(1_000 * MILLISECOND);
    assert_eq!(
        cluster.reply(id),
        None,
        "the new set {{2, 3, 4}} has no majority up"
    );
    assert!(cluster.node(0).membership().is_joint());
    let commit = cluster.node(0).commit_index();
    let stuck = cluster.propose(0, "x", 1);
    cluster.run_for(200 * MILLISECOND);
    assert_eq!(cluster.node(0).commit_index(), commit);
    assert_eq!(cluster.reply(stuck), None);
    cluster.restart(3);
    cluster.restart(4);
    cluster.run_for(1_000 * MILLISECOND);
    assert!(matches!(
        cluster.reply(id),
        Some(Response::MembershipChanged { .. })
    ));
    assert!(!cluster.node(0).is_leader(), "removed leader stepped down");
    cluster.run_for(3_000 * MILLISECOND);
    let leader = cluster.leader().expect("a new leader");
    assert!([2, 3, 4].contains(&leader));
}

/// Thesis §4.2.1: a learner receives the log but neither votes nor counts towards commitment;
/// promoting it makes it a voter.
#[test]
fn a_learner_catches_up_without_voting_then_is_promoted() {
    let mut cluster = settled(4, &[0, 1, 2]);
    cluster.deliver_all();
    let id = cluster.request(0, change(&[0, 1, 2], &[3]));
    cluster.run_for(200 * MILLISECOND);
    assert!(matches!(
        cluster.reply(id),
        Some(Response::MembershipChanged { .. })
    ));
    assert_eq!(cluster.node(3).role(), Role::Learner);
    assert!(
        !cluster.node(0).membership().is_joint(),
        "learners alone need no joint phase"
    );
    cluster.propose(0, "x", 1);
    cluster.run_for(200 * MILLISECOND);
    assert_eq!(
        cluster.node(3).applied_index(),
        cluster.node(0).applied_index()
    );
    // The learner's acknowledgement does not count: with 1 and 2 down nothing commits.
    cluster.crash(1);
    cluster.crash(2);
    let commit = cluster.node(0).commit_index();
    cluster.propose(0, "x", 2);
    cluster.run_for(200 * MILLISECOND);
    assert_eq!(cluster.node(0).commit_index(), commit);
    cluster.restart(1);
    cluster.restart(2);
    cluster.run_for(3_000 * MILLISECOND);
    let leader = cluster.leader().expect("a leader");
    let id = cluster.request(leader, change(&[0, 1, 2, 3], &[]));
    cluster.run_for(500 * MILLISECOND);
    assert!(matches!(
        cluster.reply(id),
        Some(Response::MembershipChanged { .. })
    ));
    assert_eq!(cluster.node(3).role(), Role::Follower);
    assert!(cluster.node(3).membership().is_voter(3));
}

/// The 2015 single-server-change fix: a leader must commit an entry of its term before it
/// appends a configuration; and only one change may be in flight.
#[test]
fn membership_changes_wait_for_a_term_commit_and_go_one_at_a_time() {
    let mut cluster = Cluster::new(3, Config::default());
    cluster.tick_at_deadline(0);
    while !cluster.node(0).is_leader() {
        assert!(cluster.deliver_one());
    }
    cluster.drop_messages();
    let early = cluster.request(0, change(&[0, 1], &[]));
    assert_eq!(
        cluster.reply(early),
        Some(&Response::Failed(RaftError::LeaderNotReady))
    );
    cluster.run_for(200 * MILLISECOND);
    let first = cluster.request(0, change(&[0, 1], &[2]));
    let second = cluster.request(0, change(&[0, 1, 2], &[]));
    assert_eq!(
        cluster.reply(second),
        Some(&Response::Failed(RaftError::MembershipChangeInProgress))
    );
    let invalid = Request::ChangeMembership {
        voters: set(&[]),
        learners: set(&[1]),
    };
    cluster.run_for(500 * MILLISECOND);
    assert!(matches!(
        cluster.reply(first),
        Some(Response::MembershipChanged { .. })
    ));
    let bad = cluster.request(0, invalid);
    assert!(matches!(
        cluster.reply(bad),
        Some(Response::Failed(RaftError::InvalidMembership(_)))
    ));
}

/// The key-value service: a follower refuses with a leader hint and nothing proposed; a
/// proposal whose leader is deposed before it commits fails surely once another entry is
/// applied at its index, and is "unknown" if its node learns nothing within the outcome
/// timeout; applied ones are Ok.
#[test]
fn kv_outcomes_distinguish_not_leader_unknown_and_ok() {
    let mut cluster = settled(3, &[0, 1, 2]);
    cluster.deliver_all();
    let write = KvOperation::Write {
        key: "x".into(),
        value: 1,
    };
    let refused = cluster.request(1, KvNode::kv_request(&write));
    assert_eq!(
        cluster.reply(refused).map(KvNode::kv_outcome),
        Some(KvOutcome::NotLeader { leader: Some(0) })
    );
    let ok = cluster.request(0, KvNode::kv_request(&write));
    cluster.deliver_all();
    assert_eq!(
        cluster.reply(ok).map(KvNode::kv_outcome),
        Some(KvOutcome::Ok(KvResult::Written))
    );
    cluster.isolate(0);
    let dropped = cluster.request(0, KvNode::kv_request(&write));
    cluster.run_for(3 * cluster.config.election_timeout_max);
    assert!(!cluster.node(0).is_leader());
    assert_eq!(cluster.reply(dropped), None, "deposed, it waits");
    cluster.heal();
    cluster.run_for(3 * cluster.config.election_timeout_max);
    assert!(
        matches!(
            cluster.reply(dropped).map(KvNode::kv_outcome),
            Some(KvOutcome::Rejected(ref why)) if why.contains("never will be")
        ),
        "{:?}",
        cluster.reply(dropped)
    );
    let leader = cluster.leader().expect("a leader");
    cluster.isolate(leader);
    let lost = cluster.request(leader, KvNode::kv_request(&write));
    cluster.run_for(cluster.config.outcome_timeout + 3 * cluster.config.election_timeout_max);
    assert_eq!(
        cluster.reply(lost).map(KvNode::kv_outcome),
        Some(KvOutcome::Unknown)
    );
    let read = KvOperation::Read { key: "x".into() };
    assert!(matches!(KvNode::kv_request(&read), Request::Read(_)));
}

/// As etcd: a learner is promoted to voter only once it holds every committed entry; a
/// promotion of a lagging learner is refused with how far behind it is, and succeeds once it
/// has caught up.
#[test]
fn a_lagging_learner_is_not_promoted_until_it_catches_up() {
    let mut cluster = settled(4, &[0, 1, 2]);
    cluster.deliver_all();
    let id = cluster.request(0, change(&[0, 1, 2], &[3]));
    cluster.run_for(200 * MILLISECOND);
    assert!(matches!(
        cluster.reply(id),
        Some(Response::MembershipChanged { .. })
    ));
    cluster.crash(3);
    for value in 0..5 {
        cluster.propose(0, "x", value);
    }
    cluster.run_for(200 * MILLISECOND);
    let id = cluster.request(0, change(&[0, 1, 2, 3], &[]));
    cluster.run_for(50 * MILLISECOND);
    match cluster.reply(id) {
        Some(Response::Failed(RaftError::LearnerBehind {
            learner: 3,
            match_index,
            commit_index,
        })) => {
            assert!(match_index < commit_index)
        }
        other => panic!("expected LearnerBehind, got {other:?}"),
    }
    assert!(!cluster.node(0).membership().is_voter(3));
    cluster.restart(3);
    cluster.run_for(500 * MILLISECOND);
    let id = cluster.request(0, change(&[0, 1, 2, 3], &[]));
    cluster.run_for(500 * MILLISECOND);
    assert!(matches!(
        cluster.reply(id),
        Some(Response::MembershipChanged { .. })
    ));
    assert!(cluster.node(0).membership().is_voter(3));
}
