//! Paper-claim tests for log replication and safety (Raft paper §5.3, §5.4), in the style of
//! etcd raft's `raft_paper_test.go`.

mod common;

use common::{entry, kinds, log_terms, paper_config, sends, storage};
use concord_core::{Input, KvCommand};
use concord_raft::testing::Cluster;
use concord_raft::{Message, Response};

fn append(
    term: u64,
    prev_log_index: u64,
    prev_log_term: u64,
    entries: &[(u64, u64)],
    leader_commit: u64,
) -> Message<KvCommand> {
    Message::AppendEntries {
        term,
        prev_log_index,
        prev_log_term,
        entries: entries
            .iter()
            .map(|&(i, t)| entry(i, t))
            .collect::<Vec<_>>()
            .into(),
        leader_commit,
        round: 0,
    }
}

fn ack(term: u64, index: u64) -> Message<KvCommand> {
    Message::AppendEntriesResponse {
        term,
        success: true,
        index,
        conflict_term: None,
        conflict_index: 0,
        round: 0,
    }
}

/// §5.3: "The leader appends the command to its log as a new entry, then issues AppendEntries
/// RPCs in parallel to each of the other servers to replicate the entry. When the entry has
/// been safely replicated, the leader applies the entry to its state machine and returns the
/// result of that execution to the client."
#[test]
fn the_leader_replicates_commits_applies_and_acknowledges_a_proposal() {
    let mut cluster = Cluster::new(3, paper_config());
    cluster.elect(0);
    assert_eq!(
        cluster.node(0).commit_index(),
        1,
        "the no-op of term 1 commits"
    );
    let id = cluster.propose(0, "x", 5);
    let in_flight = cluster.take_messages();
    let carried: Vec<u64> = in_flight
        .iter()
        .filter_map(|envelope| match &envelope.message {
            Message::AppendEntries { entries, .. } if entries.len() == 1 => Some(envelope.to),
            _ => None,
        })
        .collect();
    assert_eq!(carried, vec![1, 2]);
    assert_eq!(cluster.reply(id), None);
    cluster.network.extend(in_flight);
    cluster.deliver_all();
    assert_eq!(cluster.node(0).commit_index(), 2);
    assert!(matches!(
        cluster.reply(id),
        Some(Response::Applied { index: 2, .. })
    ));
    assert_eq!(cluster.applied[0].last().map(|(index, _)| *index), Some(2));
}

/// §5.3: "a log entry is committed once the leader that created the entry has replicated it on
/// a majority of the servers" — and the leader counts itself only once its own copy is durable.
#[test]
fn an_entry_commits_on_a_majority_with_the_leaders_copy_durable() {
    let mut cluster = Cluster::new(5, paper_config());
    cluster.elect(0);
    cluster.check_cluster_invariants = false; // the acknowledgements below are forged
    cluster.auto_persist = false;
    cluster.propose(0, "x", 1);
    cluster.drop_messages();
    for follower in [1, 2] {
        cluster.step(
            0,
            Input::Message {
                from: follower,
                message: ack(1, 2),
            },
        );
    }
    assert_eq!(
        cluster.node(0).commit_index(),
        1,
        "own copy not durable yet"
    );
    cluster.confirm_persists(0);
    assert_eq!(cluster.node(0).commit_index(), 2);
}

/// §5.3: "Once a follower learns that a log entry is committed, it applies the entry to its
/// local state machine"; and "This also commits all preceding entries in the leader's log".
#[test]
fn committing_an_entry_commits_all_preceding_entries() {
    let mut cluster = Cluster::new(3, paper_config());
    cluster.elect(0);
    cluster.cut(0, 2);
    for value in 0..3 {
        cluster.propose(0, "x", value);
    }
    cluster.deliver_all();
    assert_eq!(cluster.node(0).commit_index(), 4);
    assert_eq!(cluster.node(2).commit_index(), 0);
    cluster.heal();
    cluster.now += cluster.config.heartbeat_interval;
    cluster.tick(0);
    cluster.deliver_all();
    cluster.now += cluster.config.heartbeat_interval;
    cluster.tick(0);
    cluster.deliver_all();
    assert_eq!(cluster.node(2).commit_index(), 4);
    let applied: Vec<u64> = cluster.applied[2].iter().map(|(i, _)| *i).collect();
    assert_eq!(applied, vec![2, 3, 4]);
}

/// §5.3: "If the follower does not find an entry in its log with the same index and term, then
/// it refuses the new entries" (the consistency check), hinting where the logs diverge.
#[test]
fn a_follower_checks_the_previous_entry_before_appending() {
    // Follower log terms [1, 1, 2]; (prev index, prev term, accepted).
    let cases = [
        (3, 2, true),
        (2, 1, true),
        (3, 3, false),
        (4, 2, false),
        (0, 0, true),
    ];
    for (prev_index, prev_term, accepted) in cases {
        let mut cluster = Cluster::with_storage(
            vec![storage(&[1, 1, 2], 3), storage(&[], 3)],
            paper_config(),
        );
        let message = append(3, prev_index, prev_term, &[], 0);
        let effects = cluster.step(0, Input::Message { from: 1, message });
        let answer = sends(&effects);
        assert!(
            matches!(answer.as_slice(), [(1, Message::AppendEntriesResponse { success, .. })] if *success == accepted),
            "prev ({prev_index}, {prev_term}): {answer:?}"
        );
    }
}

/// §5.3: "If an existing entry conflicts with a new one (same index but different terms), delete
/// the existing entry and all that follow it"; append any new entries not already in the log;
/// entries already present are not rewritten.
#[test]
fn a_follower_truncates_a_conflicting_suffix_and_appends() {
    // (entries sent after (1, 1), expected log terms afterwards)
    type Case = (&'static [(u64, u64)], &'static [u64]);
    let cases: [Case; 4] = [
        (&[(2, 2), (3, 2)], &[1, 2, 2]),
        (&[(2, 3)], &[1, 3]),
        (&[(2, 2)], &[1, 2, 3]),
        (&[(2, 2), (3, 3), (4, 3)], &[1, 2, 3, 3]),
    ];
    for (entries, expected) in cases {
        let mut cluster = Cluster::with_storage(
            vec![storage(&[1, 2, 3], 3), storage(&[], 3)],
            paper_config(),
        );
        let message = append(3, 1, 1, entries, 0);
        cluster.step(0, Input::Message { from: 1, message });
        assert_eq!(log_terms(cluster.node(0)), expected, "entries {entries:?}");
        let stored: Vec<u64> = cluster.storage[0].entries.iter().map(|e| e.term).collect();
        assert_eq!(stored, expected, "storage after {entries:?}");
    }
}

/// §5.3: a follower acknowledges appended entries only after they are durable: the Persist
/// comes first, then the response.
#[test]
fn a_follower_persists_entries_before_acknowledging_them() {
    let mut cluster = Cluster::with_storage(vec![storage(&[], 0), storage(&[], 0)], paper_config());
    cluster.auto_persist = false;
    let message = append(1, 0, 0, &[(1, 1), (2, 1)], 0);
    let effects = cluster.step(0, Input::Message { from: 1, message });
    assert_eq!(
        kinds(&effects),
        ["persist-hard-state", "persist-append", "send"]
    );
    assert!(
        cluster.network.is_empty(),
        "the acknowledgement waits for the writes"
    );
    cluster.confirm_persists(0);
    assert!(matches!(
        cluster.network.front().map(|e| &e.message),
        Some(Message::AppendEntriesResponse {
            success: true,
            index: 2,
            ..
        })
    ));
}

/// §5.3, Figure 7: "the leader handles inconsistencies by forcing the followers' logs to
/// duplicate its own": followers (a)–(f) missing entries, holding extra uncommitted entries, or
/// both, all end with the leader's log.
#[test]
fn the_leader_repairs_divergent_follower_logs_figure_7() {
    let leader = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: [&[u64]; 6] = [
        &[1, 1, 1, 4, 4, 5, 5, 6, 6],
        &[1, 1, 1, 4],
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
        &[1, 1, 1, 4, 4, 4, 4],
        &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
    ];
    let mut logs = vec![storage(&leader, 7)];
    logs.extend(followers.iter().map(|terms| storage(terms, 7)));
    let mut cluster = Cluster::with_storage(logs, paper_config());
    cluster.elect(0);
    assert!(
        cluster.node(0).is_leader(),
        "a, b, e and f vote for the leader"
    );
    cluster.propose(0, "x", 1);
    for _ in 0..20 {
        cluster.now += cluster.config.heartbeat_interval;
        cluster.tick(0);
        cluster.deliver_all();
    }
    let expected = log_terms(cluster.node(0));
    assert_eq!(expected.len(), 12);
    for follower in 1..7 {
        assert_eq!(
            log_terms(cluster.node(follower)),
            expected,
            "follower {follower}"
        );
        assert_eq!(cluster.node(follower).commit_index(), 12);
    }
}

/// §5.3: with conflict hints, the leader backs up a whole term per rejection instead of one
/// entry (the optimization at the end of §5.3).
#[test]
fn fast_backtracking_skips_a_term_per_rejection() {
    let follower = [1, 2, 2, 2, 2, 2, 2, 2, 2, 2];
    let leader = [1, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3];
    let mut cluster = Cluster::with_storage(
        vec![
            storage(&leader, 3),
            storage(&follower, 3),
            storage(&leader, 3),
        ],
        paper_config(),
    );
    cluster.elect(0);
    cluster.deliver_all();
    let rejections = cluster.replies.len();
    assert_eq!(rejections, 0);
    assert_eq!(log_terms(cluster.node(1)), log_terms(cluster.node(0)));
}

/// §5.4.2, Figure 8: "Raft never commits log entries from previous terms by counting
/// replicas. Only log entries from the leader's current term are committed by counting
/// replicas; once an entry from the current term has been committed in this way, then all
/// prior entries are committed indirectly."
#[test]
fn the_leader_commits_only_entries_of_its_term_by_counting_figure_8() {
    // (c) in Figure 8: S1 leads term 4 holding (2, 2), replicated on S2 and now S3 as well.
    let mut cluster = Cluster::with_storage(
        vec![
            storage(&[1, 2], 3),
            storage(&[1, 2], 3),
            storage(&[1], 3),
            storage(&[1], 3),
            storage(&[1, 3], 3),
        ],
        paper_config(),
    );
    cluster.tick_at_deadline(0);
    cluster.drop_messages();
    for voter in [1, 2] {
        let message = Message::RequestVoteResponse {
            term: 4,
            granted: true,
            pre_vote: false,
        };
        cluster.step(
            0,
            Input::Message {
                from: voter,
                message,
            },
        );
    }
    assert!(cluster.node(0).is_leader());
    cluster.drop_messages();
    cluster.check_cluster_invariants = false; // the acknowledgements below are forged
    for follower in [1, 2] {
        cluster.step(
            0,
            Input::Message {
                from: follower,
                message: ack(4, 2),
            },
        );
    }
    assert_eq!(
        cluster.node(0).commit_index(),
        0,
        "(2, 2) is on a majority but not of term 4"
    );
    for follower in [1, 2] {
        cluster.step(
            0,
            Input::Message {
                from: follower,
                message: ack(4, 3),
            },
        );
    }
    assert_eq!(
        cluster.node(0).commit_index(),
        3,
        "the no-op of term 4 commits, and (2, 2) with it"
    );
}

/// §5.4.3 / Figure 2: a leader never overwrites or deletes entries in its own log; followers
/// learn the commit index only up to what they hold (min(leaderCommit, last new entry)).
#[test]
fn a_follower_commits_only_up_to_its_last_new_entry() {
    let mut cluster = Cluster::with_storage(vec![storage(&[], 1), storage(&[], 1)], paper_config());
    let message = append(1, 0, 0, &[(1, 1), (2, 1)], 5);
    cluster.step(0, Input::Message { from: 1, message });
    assert_eq!(cluster.node(0).commit_index(), 2);
    let applied: Vec<u64> = cluster.applied[0].iter().map(|(i, _)| *i).collect();
    assert_eq!(applied, vec![1, 2]);
    assert!(cluster.applied[0]
        .iter()
        .all(|(index, command)| *command == common::command(*index, 1)));
}

/// The committed-durable checker catches a leader that commits on forged acknowledgements
/// (entries a quorum never persisted): the harness turns such a bug into a panic.
#[test]
#[should_panic(expected = "committed-durable-on-quorum")]
fn forged_acknowledgements_trip_the_committed_durable_invariant() {
    let mut cluster = Cluster::new(3, paper_config());
    cluster.elect(0);
    cluster.propose(0, "x", 1);
    cluster.drop_messages();
    cluster.step(
        0,
        Input::Message {
            from: 1,
            message: ack(1, 2),
        },
    );
}
