//! PreVote (thesis §9.6), CheckQuorum (§6.2), leader stickiness (§4.2.3), and persistence
//! ordering and restart (paper Figure 2 "persistent state", §5.1).

mod common;

use common::{kinds, sends};
use concord_core::time::MILLISECOND;
use concord_core::{Effect, Input, KvCommand, Role};
use concord_raft::testing::Cluster;
use concord_raft::{Config, HardState, Message, Write};

fn vote_request(term: u64, pre_vote: bool, transfer: bool) -> Message<KvCommand> {
    Message::RequestVote {
        term,
        last_log_index: 100,
        last_log_term: 100,
        pre_vote,
        transfer,
    }
}

/// Thesis §9.6: a pre-candidate asks whether it could win before bumping its term, and
/// changes no durable state while asking; with a quorum of pre-votes it campaigns for real.
#[test]
fn a_pre_candidate_campaigns_only_after_a_pre_vote_quorum() {
    let mut cluster = Cluster::new(3, Config::default());
    let effects = cluster.tick_at_deadline(0);
    assert_eq!(cluster.node(0).role(), Role::PreCandidate);
    assert_eq!(cluster.node(0).current_term(), 0);
    assert_eq!(kinds(&effects), ["send", "send"], "no write for a pre-vote");
    assert!(sends(&effects).iter().all(|(_, m)| matches!(
        m,
        Message::RequestVote {
            term: 1,
            pre_vote: true,
            ..
        }
    )));
    cluster.deliver_all();
    assert!(cluster.node(0).is_leader());
    assert_eq!(cluster.node(0).current_term(), 1);
}

/// Thesis §9.6: a node partitioned away keeps failing its pre-vote and does not inflate its
/// term, so when it rejoins it does not depose the leader.
#[test]
fn pre_vote_keeps_a_partitioned_node_from_disrupting_the_cluster() {
    let mut cluster = Cluster::new(3, Config::default());
    cluster.run_for(3_000 * MILLISECOND);
    let leader = cluster.leader().expect("a leader");
    let term = cluster.node(leader).current_term();
    let outsider = (leader + 1) % 3;
    cluster.isolate(outsider);
    cluster.run_for(10_000 * MILLISECOND);
    assert_eq!(cluster.node(outsider).current_term(), term);
    assert_eq!(cluster.node(outsider).role(), Role::PreCandidate);
    cluster.heal();
    cluster.run_for(3_000 * MILLISECOND);
    assert_eq!(cluster.leader(), Some(leader));
    assert_eq!(cluster.node(leader).current_term(), term);
}

/// Without pre-vote, the same partitioned node does raise its term and forces an election
/// when it returns (the problem §9.6 solves).
#[test]
fn without_pre_vote_a_returning_node_forces_a_new_term() {
    let config = Config {
        pre_vote: false,
        check_quorum: false,
        ..Config::default()
    };
    let mut cluster = Cluster::new(3, config);
    cluster.run_for(3_000 * MILLISECOND);
    let leader = cluster.leader().expect("a leader");
    let term = cluster.node(leader).current_term();
    let outsider = (leader + 1) % 3;
    cluster.isolate(outsider);
    cluster.run_for(10_000 * MILLISECOND);
    assert!(cluster.node(outsider).current_term() > term);
    cluster.heal();
    cluster.run_for(3_000 * MILLISECOND);
    let new_leader = cluster.leader().expect("a leader");
    assert!(cluster.node(new_leader).current_term() > term);
}

/// Thesis §6.2 (CheckQuorum): a leader that has not heard from a quorum within an election
/// timeout steps down, so clients stop waiting on it.
#[test]
fn a_leader_that_loses_its_quorum_steps_down() {
    let mut cluster = Cluster::new(3, Config::default());
    cluster.run_for(3_000 * MILLISECOND);
    let leader = cluster.leader().expect("a leader");
    cluster.isolate(leader);
    cluster.run_for(2 * cluster.config.election_timeout_max + MILLISECOND);
    assert!(!cluster.node(leader).is_leader());
    assert_eq!(cluster.node(leader).role(), Role::Follower);
}

/// Without CheckQuorum an isolated leader believes it leads forever.
#[test]
fn without_check_quorum_an_isolated_leader_keeps_its_role() {
    let config = Config {
        check_quorum: false,
        ..Config::default()
    };
    let mut cluster = Cluster::new(3, config);
    cluster.run_for(3_000 * MILLISECOND);
    let leader = cluster.leader().expect("a leader");
    cluster.isolate(leader);
    cluster.run_for(5_000 * MILLISECOND);
    assert!(cluster.node(leader).is_leader());
}

/// Thesis §4.2.3 (leader stickiness): a follower that heard from its leader within the minimum
/// election timeout ignores (pre-)vote requests — unless they come from a leadership transfer.
#[test]
fn a_follower_hearing_from_its_leader_ignores_vote_requests() {
    let mut cluster = Cluster::new(3, Config::default());
    cluster.elect(0);
    assert!(cluster.node(0).is_leader());
    for pre_vote in [false, true] {
        let message = vote_request(5, pre_vote, false);
        let effects = cluster.step(1, Input::Message { from: 2, message });
        let granted = sends(&effects)
            .iter()
            .any(|(_, m)| matches!(m, Message::RequestVoteResponse { granted: true, .. }));
        assert!(!granted, "pre_vote={pre_vote}");
        assert_eq!(cluster.node(1).current_term(), 1);
        assert_eq!(cluster.node(1).leader_id(), Some(0));
    }
    let message = vote_request(5, false, true);
    let effects = cluster.step(1, Input::Message { from: 2, message });
    assert!(matches!(
        sends(&effects).as_slice(),
        [(
            2,
            Message::RequestVoteResponse {
                term: 5,
                granted: true,
                ..
            }
        )]
    ));
    // Once the leader has been silent for the minimum election timeout, votes are heard again.
    let mut cluster = Cluster::new(3, Config::default());
    cluster.elect(0);
    cluster.now += cluster.config.election_timeout_min;
    let effects = cluster.step(
        1,
        Input::Message {
            from: 2,
            message: vote_request(5, false, false),
        },
    );
    assert!(matches!(
        sends(&effects).as_slice(),
        [(2, Message::RequestVoteResponse { granted: true, .. })]
    ));
}

/// Paper §5.1/Figure 2 and the Concord contract: the vote is persisted before the response,
/// and the response is released only once that write is confirmed.
#[test]
fn a_vote_is_released_only_after_its_hard_state_is_durable() {
    let mut cluster = Cluster::new(3, Config::default());
    cluster.auto_persist = false;
    let message = vote_request(1, false, false);
    let effects = cluster.step(1, Input::Message { from: 2, message });
    assert!(matches!(
        effects.as_slice(),
        [
            Effect::Persist {
                write: Write::HardState(HardState {
                    current_term: 1,
                    voted_for: Some(2)
                }),
                ..
            },
            Effect::Send {
                to: 2,
                message: Message::RequestVoteResponse {
                    term: 1,
                    granted: true,
                    pre_vote: false
                },
            },
        ]
    ));
    assert!(cluster.network.is_empty(), "held behind the persist");
    cluster.confirm_persists(1);
    assert_eq!(cluster.network.len(), 1);
}

/// A crash before the vote is durable loses it — and since the response was never released,
/// nothing was promised: the restarted node may vote again in that term.
#[test]
fn a_crash_before_the_vote_is_durable_loses_only_an_unpromised_vote() {
    let mut cluster = Cluster::new(3, Config::default());
    cluster.auto_persist = false;
    cluster.step(
        1,
        Input::Message {
            from: 2,
            message: vote_request(1, false, false),
        },
    );
    cluster.crash(1);
    assert!(cluster.network.is_empty());
    cluster.restart(1);
    assert_eq!(cluster.node(1).current_term(), 0);
    assert_eq!(cluster.node(1).voted_for(), None);
}

/// Figure 2: term, vote and log survive a crash; the state machine is rebuilt by re-applying
/// committed entries once the commit index is learned again.
#[test]
fn a_restarted_node_recovers_term_vote_log_and_state() {
    let mut cluster = Cluster::new(3, Config::default());
    cluster.run_for(3_000 * MILLISECOND);
    let leader = cluster.leader().expect("a leader");
    for value in 0..5 {
        cluster.propose(leader, "x", value);
    }
    cluster.run_for(500 * MILLISECOND);
    let follower = (leader + 1) % 3;
    let before = cluster.node(follower).clone();
    cluster.crash(follower);
    cluster.restart(follower);
    let after = cluster.node(follower);
    assert_eq!(after.current_term(), before.current_term());
    assert_eq!(after.voted_for(), before.voted_for());
    assert_eq!(after.log().last_index(), before.log().last_index());
    assert_eq!(after.commit_index(), 0, "the commit index is volatile");
    cluster.run_for(500 * MILLISECOND);
    let after = cluster.node(follower);
    assert_eq!(after.commit_index(), before.commit_index());
    assert_eq!(after.state_machine(), before.state_machine());
    // A voter that restarts still refuses a second vote in the same term.
    let mut cluster = Cluster::new(3, Config::default());
    cluster.step(
        1,
        Input::Message {
            from: 2,
            message: vote_request(1, false, false),
        },
    );
    cluster.crash(1);
    cluster.restart(1);
    let effects = cluster.step(
        1,
        Input::Message {
            from: 0,
            message: vote_request(1, false, false),
        },
    );
    assert!(matches!(
        sends(&effects).as_slice(),
        [(0, Message::RequestVoteResponse { granted: false, .. })]
    ));
}

/// Thesis §6.4.1: with leases, a restarted node cannot know whether it recently heard from a
/// leader, so it refuses votes for a minimum election timeout after starting — otherwise a
/// crash could shorten a lease that the old leader still relies on.
#[test]
fn with_leases_a_restarted_node_waits_before_voting() {
    let config = Config {
        lease_reads: true,
        ..Config::default()
    };
    let mut cluster = Cluster::new(3, config);
    cluster.now = 10_000 * MILLISECOND;
    cluster.crash(1);
    cluster.restart(1);
    let effects = cluster.step(
        1,
        Input::Message {
            from: 2,
            message: vote_request(5, false, false),
        },
    );
    assert!(
        sends(&effects).is_empty(),
        "ignored right after the restart"
    );
    assert_eq!(cluster.node(1).current_term(), 0);
    cluster.now += cluster.config.election_timeout_min;
    let effects = cluster.step(
        1,
        Input::Message {
            from: 2,
            message: vote_request(5, false, false),
        },
    );
    assert!(matches!(
        sends(&effects).as_slice(),
        [(2, Message::RequestVoteResponse { granted: true, .. })]
    ));
}

/// A crashed leader's connections break. Its followers, told so by their drivers, elect a
/// successor within a quarter of the minimum election timeout instead of a whole one.
#[test]
fn followers_that_lose_the_leaders_connection_elect_a_successor_soon() {
    let config = Config::default();
    let soon = config.election_timeout_min / 4;
    let mut cluster = Cluster::new(3, config);
    cluster.run_for(3_000 * MILLISECOND);
    let leader = cluster.leader().expect("a leader");
    let term = cluster.node(leader).current_term();
    cluster.crash(leader);
    for id in (0..3).filter(|&id| id != leader) {
        cluster.step(id, Input::PeerLost { peer: leader });
    }
    cluster.run_for(soon + MILLISECOND);
    let successor = cluster
        .leader()
        .expect("a successor, well within the election timeout");
    assert_ne!(successor, leader);
    assert_eq!(cluster.node(successor).current_term(), term + 1);
}

/// One follower's connection to a live leader breaks: it campaigns early, but the other
/// follower still hears from the leader and refuses its pre-vote, so no term changes and the
/// leader keeps leading.
#[test]
fn a_false_alarm_about_a_live_leader_disrupts_nothing() {
    let mut cluster = Cluster::new(3, Config::default());
    cluster.run_for(3_000 * MILLISECOND);
    let leader = cluster.leader().expect("a leader");
    let term = cluster.node(leader).current_term();
    let follower = (leader + 1) % 3;
    cluster.step(follower, Input::PeerLost { peer: leader });
    cluster.run_for(10_000 * MILLISECOND);
    assert_eq!(cluster.leader(), Some(leader));
    for id in 0..3 {
        assert_eq!(cluster.node(id).current_term(), term, "node {id}");
    }
}

/// With lease reads the leader counts on every follower refusing votes for a whole minimum
/// election timeout after hearing from it, so the hint is ignored; so it is for a peer that
/// is not the leader.
#[test]
fn the_hint_is_ignored_with_lease_reads_and_for_peers_that_do_not_lead() {
    let lease = Config {
        lease_reads: true,
        check_quorum: true,
        ..Config::default()
    };
    for (config, lease_reads) in [(lease, true), (Config::default(), false)] {
        let mut cluster = Cluster::new(3, config);
        cluster.run_for(3_000 * MILLISECOND);
        let leader = cluster.leader().expect("a leader");
        let follower = (leader + 1) % 3;
        let other = (leader + 2) % 3;
        let before = concord_core::Node::next_deadline(cluster.node(follower));
        let lost = if lease_reads { leader } else { other };
        cluster.step(follower, Input::PeerLost { peer: lost });
        assert_eq!(
            concord_core::Node::next_deadline(cluster.node(follower)),
            before,
            "lease reads {lease_reads}, lost {lost}"
        );
    }
}
