//! Paper-claim tests for terms and leader election (Raft paper §5.1, §5.2, §5.4.1), in the
//! style of etcd raft's `raft_paper_test.go`.

mod common;

use common::{kinds, paper_config, sends, storage};
use concord_core::time::MILLISECOND;
use concord_core::{seeded_rng, Input, Node, Role};
use concord_raft::testing::{Cluster, KvNode};
use concord_raft::{Message, Storage};

fn request_vote(
    term: u64,
    last_log_index: u64,
    last_log_term: u64,
) -> Message<concord_core::KvCommand> {
    Message::RequestVote {
        term,
        last_log_index,
        last_log_term,
        pre_vote: false,
        transfer: false,
    }
}

fn heartbeat(term: u64) -> Message<concord_core::KvCommand> {
    Message::AppendEntries {
        term,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: Vec::new().into(),
        leader_commit: 0,
        round: 0,
    }
}

/// §5.2: "When servers start up, they begin as followers."
#[test]
fn a_node_starts_as_a_follower() {
    let cluster = Cluster::new(3, paper_config());
    for id in 0..3 {
        let status = cluster.node(id).status();
        assert_eq!(status.role, Role::Follower);
        assert_eq!(status.term, 0);
        assert_eq!(status.leader, None);
    }
}

/// §5.1: "If a server's current term is smaller than the other's, it updates its current term
/// to the larger value. If a candidate or leader discovers that its term is out of date, it
/// immediately reverts to follower state." Checked for each role.
#[test]
fn a_higher_term_in_any_message_updates_the_term_and_makes_a_follower() {
    for role in [Role::Follower, Role::Candidate, Role::Leader] {
        let mut cluster = Cluster::new(3, paper_config());
        match role {
            Role::Candidate => {
                cluster.tick_at_deadline(0);
                cluster.drop_messages();
            }
            Role::Leader => cluster.elect(0),
            _ => {}
        }
        assert_eq!(cluster.node(0).role(), role);
        let input = Input::Message {
            from: 1,
            message: heartbeat(10),
        };
        cluster.step(0, input);
        let node = cluster.node(0);
        assert_eq!(node.current_term(), 10, "{role:?}");
        assert_eq!(node.role(), Role::Follower, "{role:?}");
        assert_eq!(node.leader_id(), Some(1), "{role:?}");
        assert_eq!(cluster.storage[0].hard_state.current_term, 10);
    }
}

/// §5.1: "If a server receives a request with a stale term number, it rejects the request",
/// answering with its own term so that the sender steps down.
#[test]
fn a_request_with_a_stale_term_is_rejected() {
    let mut cluster = Cluster::with_storage(vec![storage(&[], 5), storage(&[], 5)], paper_config());
    let effects = cluster.step(
        0,
        Input::Message {
            from: 1,
            message: heartbeat(3),
        },
    );
    assert!(matches!(
        sends(&effects).as_slice(),
        [(
            1,
            Message::AppendEntriesResponse {
                term: 5,
                success: false,
                ..
            }
        )]
    ));
    let effects = cluster.step(
        0,
        Input::Message {
            from: 1,
            message: request_vote(4, 9, 4),
        },
    );
    assert!(matches!(
        sends(&effects).as_slice(),
        [(
            1,
            Message::RequestVoteResponse {
                term: 5,
                granted: false,
                ..
            }
        )]
    ));
    assert_eq!(cluster.node(0).current_term(), 5);
    assert_eq!(cluster.node(0).leader_id(), None);
}

/// §5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log entries) to
/// all followers in order to maintain their authority."
#[test]
fn the_leader_broadcasts_heartbeats() {
    let mut cluster = Cluster::new(3, paper_config());
    cluster.elect(0);
    assert!(cluster.node(0).is_leader());
    cluster.now += cluster.config.heartbeat_interval;
    let effects = cluster.tick(0);
    let heartbeats: Vec<u64> = sends(&effects)
        .into_iter()
        .filter_map(|(to, message)| match message {
            Message::AppendEntries {
                entries, term: 1, ..
            } if entries.is_empty() => Some(to),
            _ => None,
        })
        .collect();
    assert_eq!(heartbeats, vec![1, 2]);
}

/// §5.2: "If a follower receives no communication over a period of time called the election
/// timeout, then it ... begins an election": it increments its term, votes for itself, and
/// issues RequestVote RPCs to each of the other servers — after persisting the vote.
#[test]
fn a_follower_starts_an_election_after_the_timeout() {
    let mut cluster = Cluster::new(3, paper_config());
    let effects = cluster.tick_at_deadline(1);
    let node = cluster.node(1);
    assert_eq!(node.role(), Role::Candidate);
    assert_eq!(node.current_term(), 1);
    assert_eq!(node.voted_for(), Some(1));
    assert_eq!(kinds(&effects), ["persist-hard-state", "send", "send"]);
    let targets: Vec<u64> = sends(&effects)
        .into_iter()
        .map(|(to, message)| {
            assert_eq!(message, request_vote(1, 0, 0));
            to
        })
        .collect();
    assert_eq!(targets, vec![0, 2]);
}

/// §5.2: a candidate "wins an election if it receives votes from a majority of the servers";
/// a majority of rejections sends it back to follower; otherwise it waits.
#[test]
fn an_election_is_won_by_a_majority_and_lost_to_a_blocking_minority() {
    // (cluster size, granted votes from peers, rejections from peers, expected role)
    let cases = [
        (3, 1, 0, Role::Leader),
        (5, 2, 0, Role::Leader),
        (5, 1, 0, Role::Candidate),
        (5, 0, 3, Role::Follower),
        (5, 1, 2, Role::Candidate),
    ];
    for (size, granted, rejected, expected) in cases {
        let mut cluster = Cluster::new(size, paper_config());
        cluster.tick_at_deadline(0);
        cluster.drop_messages();
        let answers = (1..=granted)
            .map(|peer| (peer, true))
            .chain((granted + 1..=granted + rejected).map(|peer| (peer, false)));
        for (peer, granted) in answers {
            let message = Message::RequestVoteResponse {
                term: 1,
                granted,
                pre_vote: false,
            };
            cluster.step(
                0,
                Input::Message {
                    from: peer,
                    message,
                },
            );
        }
        assert_eq!(
            cluster.node(0).role(),
            expected,
            "case {size}/{granted}/{rejected}"
        );
    }
}

/// §5.2: "Each server will vote for at most one candidate in a given term, on a
/// first-come-first-served basis" (a repeated request from the same candidate is granted again).
#[test]
fn a_node_votes_at_most_once_per_term() {
    let mut cluster = Cluster::new(3, paper_config());
    let ask = |cluster: &mut Cluster, from| {
        let effects = cluster.step(
            0,
            Input::Message {
                from,
                message: request_vote(1, 0, 0),
            },
        );
        matches!(
            sends(&effects).as_slice(),
            [(_, Message::RequestVoteResponse { granted: true, .. })]
        )
    };
    assert!(ask(&mut cluster, 1));
    assert!(!ask(&mut cluster, 2));
    assert!(ask(&mut cluster, 1));
    assert_eq!(cluster.storage[0].hard_state.voted_for, Some(1));
}

/// §5.4.1: "the voter denies its vote if its own log is more up-to-date than that of the
/// candidate": compare last terms, then lengths.
#[test]
fn a_vote_is_denied_when_the_voters_log_is_more_up_to_date() {
    // The voter's log has terms [1, 2]; (candidate last index, last term, granted).
    let cases = [
        (2, 2, true),
        (3, 2, true),
        (1, 2, false),
        (5, 1, false),
        (1, 3, true),
    ];
    for (last_index, last_term, granted) in cases {
        let mut cluster =
            Cluster::with_storage(vec![storage(&[1, 2], 2), storage(&[], 2)], paper_config());
        let effects = cluster.step(
            0,
            Input::Message {
                from: 1,
                message: request_vote(3, last_index, last_term),
            },
        );
        let answer = sends(&effects);
        assert!(
            matches!(answer.as_slice(), [(1, Message::RequestVoteResponse { granted: g, term: 3, .. })] if *g == granted),
            "candidate ({last_index}, {last_term}): {answer:?}"
        );
    }
}

/// §5.2: "If the leader's term ... is at least as large as the candidate's current term, then
/// the candidate recognizes the leader as legitimate and returns to follower state."
#[test]
fn a_candidate_falls_back_to_follower_on_append_entries_of_its_term() {
    let mut cluster = Cluster::new(3, paper_config());
    cluster.tick_at_deadline(0);
    cluster.drop_messages();
    assert_eq!(cluster.node(0).role(), Role::Candidate);
    cluster.step(
        0,
        Input::Message {
            from: 2,
            message: heartbeat(1),
        },
    );
    assert_eq!(cluster.node(0).role(), Role::Follower);
    assert_eq!(cluster.node(0).leader_id(), Some(2));
    assert_eq!(cluster.node(0).current_term(), 1);
}

/// §5.2: "Raft uses randomized election timeouts to ensure that split votes are rare": each
/// timeout is drawn from [min, max), and two nodes rarely draw timeouts within a heartbeat's
/// length of each other.
#[test]
fn randomized_election_timeouts_rarely_collide() {
    let config = paper_config();
    let draw = |stream| {
        let node = KvNode::restore(
            0,
            &[0, 1],
            &config,
            &Storage::default(),
            0,
            &mut seeded_rng(1, stream),
        );
        node.next_deadline()
            .expect("a follower has an election deadline")
    };
    let mut collisions = 0;
    for trial in 0..1000 {
        let a = draw(2 * trial);
        let b = draw(2 * trial + 1);
        for timeout in [a, b] {
            assert!((config.election_timeout_min..config.election_timeout_max).contains(&timeout));
        }
        if a.abs_diff(b) < 10 * MILLISECOND {
            collisions += 1;
        }
    }
    // Uniform draws over 500ms collide within 10ms about 4% of the time.
    assert!(collisions < 80, "{collisions} collisions in 1000 trials");
}

/// §5.2: with split votes, "each candidate will time out and start a new election by
/// incrementing its term".
#[test]
fn a_candidate_without_a_majority_starts_a_new_election_on_timeout() {
    let mut cluster = Cluster::new(3, paper_config());
    cluster.tick_at_deadline(0);
    cluster.drop_messages();
    cluster.tick_at_deadline(0);
    assert_eq!(cluster.node(0).current_term(), 2);
    assert_eq!(cluster.node(0).role(), Role::Candidate);
    cluster.deliver_all();
    assert_eq!(cluster.node(0).role(), Role::Leader);
}

/// §5.2, §5.4.1: a whole cluster elects exactly one leader, and it holds every committed entry.
#[test]
fn a_cluster_elects_one_leader_holding_the_committed_entries() {
    let mut cluster = Cluster::new(5, paper_config());
    cluster.run_for(5_000 * MILLISECOND);
    let leader = cluster.leader().expect("a leader");
    let leaders = (0..5).filter(|&id| cluster.node(id).is_leader()).count();
    assert_eq!(leaders, 1);
    cluster.propose(leader, "x", 1);
    cluster.run_for(500 * MILLISECOND);
    cluster.crash(leader);
    cluster.run_for(5_000 * MILLISECOND);
    let next = cluster.leader().expect("a new leader");
    assert_ne!(next, leader);
    assert!(cluster.node(next).log().last_index() >= 2);
}
