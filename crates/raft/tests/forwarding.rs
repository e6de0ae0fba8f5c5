//! Proposal forwarding (`Config::forward_proposals`): a follower sends the proposals it gets
//! to the leader in one `Propose` message and answers each when it applies its entry; the
//! leader tells it the commit index at once; every way a forwarded proposal can be lost ends
//! in a clear failure.

mod common;

use common::{depose_node_0, settled};

use concord_core::{Input, KvOperation, KvResult};
use concord_raft::testing::Cluster;
use concord_raft::{Config, Message, Payload, ProposalOrigin, RaftError, Request, Response};

fn forwarding() -> Config {
    Config {
        forward_proposals: true,
        ..Config::default()
    }
}

fn kind(message: &Message<concord_core::KvCommand>) -> &'static str {
    match message {
        Message::Propose { .. } => "Propose",
        Message::ProposeRejected { .. } => "ProposeRejected",
        Message::Commit { .. } => "Commit",
        Message::AppendEntries { .. } => "AppendEntries",
        Message::AppendEntriesResponse { .. } => "AppendEntriesResponse",
        _ => "other",
    }
}

/// Delivers every message, at the current time, and returns their kinds in delivery order.
/// Whenever none is in flight, due nodes are ticked (as `Cluster::deliver_all` does).
fn deliver_all_kinds(cluster: &mut Cluster) -> Vec<&'static str> {
    let mut kinds = Vec::new();
    loop {
        while let Some(front) = cluster.network.front() {
            kinds.push(kind(&front.message));
            cluster.deliver_one();
        }
        cluster.tick_due();
        if cluster.network.is_empty() {
            return kinds;
        }
    }
}

/// The ids (as entries carry them) of the proposals in the one `Propose` message in flight,
/// from node 1 to node 0.
fn forwarded_ids(cluster: &Cluster) -> Vec<u64> {
    let proposes: Vec<_> = cluster
        .network
        .iter()
        .filter_map(|e| match &e.message {
            Message::Propose {
                incarnation,
                first,
                commands,
                ..
            } => Some((e.from, e.to, *incarnation, *first, commands.len() as u64)),
            _ => None,
        })
        .collect();
    assert_eq!(proposes.len(), 1, "one Propose message: {proposes:?}");
    let (from, to, incarnation, first, count) = proposes[0];
    assert_eq!((from, to), (1, 0));
    (first..first + count)
        .map(|sequence| incarnation.wrapping_add(sequence))
        .collect()
}

#[test]
fn a_follower_forwards_its_proposals_in_one_message_and_answers_them_from_its_own_apply() {
    let mut cluster = settled(forwarding());
    let ids: Vec<u64> = (0..3).map(|i| cluster.propose(1, "y", i)).collect();
    assert!(
        cluster.network.is_empty(),
        "proposals are held while more may come"
    );
    cluster.tick(1);
    let forwarded = forwarded_ids(&cluster);
    assert_eq!(forwarded.len(), 3, "all three in one message");
    // No time passes, so no heartbeat: the follower can learn that its entries committed only
    // from the leader's Commit.
    let kinds = deliver_all_kinds(&mut cluster);
    assert!(kinds.contains(&"Commit"), "{kinds:?}");
    for (i, id) in ids.iter().enumerate() {
        let answer = cluster
            .replies
            .iter()
            .find(|(_, request, _)| request == id)
            .unwrap_or_else(|| panic!("request {id} answered"));
        assert_eq!(answer.0, 1, "answered by the follower that got it");
        assert_eq!(
            answer.2,
            Response::Applied {
                index: 3 + i as u64,
                output: KvResult::Written
            }
        );
    }
    // The leader's log carries each one's origin.
    let log = cluster.node(0).log();
    for (i, id) in forwarded.iter().enumerate() {
        let entry = log.entry(3 + i as u64).expect("appended");
        assert!(matches!(
            &entry.payload,
            Payload::Forwarded { origin: ProposalOrigin { node: 1, id: got }, .. } if got == id
        ));
    }
    for id in &ids {
        let answers = cluster.replies.iter().filter(|(_, r, _)| r == id).count();
        assert_eq!(answers, 1, "request {id} answered once");
    }
}

#[test]
fn without_forwarding_a_follower_refuses_a_proposal_with_the_leaders_name() {
    let mut cluster = settled(Config::default());
    let id = cluster.propose(1, "y", 1);
    assert_eq!(
        cluster.reply(id),
        Some(&Response::Failed(RaftError::NotLeader { leader: Some(0) }))
    );
}

#[test]
fn a_duplicated_propose_message_appends_its_proposals_once() {
    let mut cluster = settled(forwarding());
    let ids: Vec<u64> = (0..2).map(|i| cluster.propose(1, "y", i)).collect();
    cluster.tick(1);
    let propose = cluster.network.front().expect("the Propose").clone();
    cluster.deliver_one();
    cluster.network.push_back(propose.clone());
    cluster.deliver_all();
    cluster.network.push_back(propose);
    cluster.deliver_all();
    let log = cluster.node(0).log();
    assert_eq!(log.last_index(), 4, "two entries, not four");
    for id in ids {
        let answers = cluster.replies.iter().filter(|(_, r, _)| *r == id).count();
        assert_eq!(answers, 1);
    }
    assert_eq!(
        cluster.applied[1].len(),
        cluster.applied[0].len(),
        "the follower applied what the leader did"
    );
}

#[test]
fn a_leader_never_forgets_an_incarnation_within_its_term_and_refuses_one_too_many() {
    let mut cluster = settled(forwarding());
    cluster.propose(1, "y", 1);
    cluster.tick(1);
    let original = cluster.network.front().expect("the Propose").clone();
    let with_incarnation = |incarnation: u64| {
        let mut copy = original.clone();
        let Message::Propose {
            incarnation: ref mut i,
            ..
        } = copy.message
        else {
            panic!("not a Propose: {:?}", copy.message)
        };
        *i = incarnation;
        copy
    };
    let Message::Propose { incarnation, .. } = original.message else {
        unreachable!()
    };
    let before = cluster.node(0).log().last_index();
    // The proposal as 64 incarnations of node 1 sent it (a follower restarting 63 times in
    // one term): each is appended once.
    for k in 0..64 {
        cluster
            .network
            .push_back(with_incarnation(incarnation.wrapping_add(k)));
        cluster.deliver_all();
    }
    let appended = cluster.node(0).log().last_index();
    assert_eq!(appended, before + 64);
    // A late copy of the first one's message appends nothing: it is still remembered.
    cluster.network.push_back(original.clone());
    cluster.deliver_all();
    assert_eq!(
        cluster.node(0).log().last_index(),
        appended,
        "appended twice"
    );
    // A 65th incarnation is refused with a reason, and a copy of its message later too.
    let extra = with_incarnation(incarnation.wrapping_add(1000));
    for _ in 0..2 {
        cluster.network.push_back(extra.clone());
        cluster.deliver_one();
        let refused = cluster.network.iter().any(|e| {
            matches!(
                e.message,
                Message::ProposeRejected {
                    refusal: Some(RaftError::Overloaded { .. }),
                    ..
                }
            ) && (e.from, e.to) == (0, 1)
        });
        assert!(refused, "no refusal with a reason: {:?}", cluster.network);
        cluster.deliver_all();
        assert_eq!(cluster.node(0).log().last_index(), appended);
    }
}

#[test]
fn a_propose_for_an_earlier_term_is_refused_by_the_next_leader() {
    let mut cluster = settled(forwarding());
    let old_term = cluster.node(0).current_term();
    let id = cluster.propose(1, "y", 1);
    cluster.tick(1);
    let propose = cluster.network.pop_front().expect("the Propose");
    cluster.drop_messages();
    // Node 0 steps down to a higher term, and wins it again.
    let term = depose_node_0(&mut cluster);
    cluster.drop_messages();
    cluster.elect(0);
    assert!(cluster.node(0).is_leader());
    assert!(cluster.node(0).current_term() >= term);
    let last = cluster.node(0).log().last_index();
    cluster.network.push_back(propose);
    cluster.deliver_one();
    assert_eq!(cluster.node(0).log().last_index(), last, "not appended");
    cluster.deliver_all();
    cluster.now += cluster.config.heartbeat_interval;
    cluster.tick(0);
    cluster.deliver_all();
    // The refusal came from a leader of a later term, which proves nothing; the new term's
    // no-op, applied at node 1, does: the proposal can no longer commit.
    assert_eq!(
        cluster.reply(id),
        Some(&Response::Failed(RaftError::LeaderChanged {
            term: old_term
        }))
    );
}

#[test]
fn a_refusal_from_a_deposed_leader_leaves_the_proposal_waiting_for_a_later_term() {
    let mut cluster = settled(forwarding());
    let id = cluster.propose(1, "y", 1);
    cluster.tick(1);
    let propose = cluster.network.pop_front().expect("the Propose");
    depose_node_0(&mut cluster);
    cluster.network.clear();
    cluster.network.push_back(propose);
    cluster.deliver_one();
    let rejection = cluster.network.front().map(|e| e.message.clone());
    assert!(
        matches!(
            rejection,
            Some(Message::ProposeRejected { refusal: None, .. })
        ),
        "{rejection:?}"
    );
    cluster.deliver_one();
    // A refusal without a reason may answer a copy of a message node 0 took while it led.
    assert_eq!(cluster.reply(id), None, "still waiting");
    assert_eq!(
        cluster.node(0).log().last_index(),
        2,
        "nothing was appended"
    );
    cluster.run_for(3 * cluster.config.election_timeout_max);
    assert!(cluster.leader().is_some());
    assert!(matches!(
        cluster.reply(id),
        Some(Response::Failed(RaftError::LeaderChanged { term: 1 }))
    ));
}

#[test]
fn a_leader_refusing_a_forwarded_proposal_says_why_and_never_appends_a_copy() {
    let mut cluster = settled(Config {
        max_pending_requests: 2,
        ..forwarding()
    });
    // The leader holds two proposals of its own, uncommitted: it is full.
    cluster.propose(0, "x", 2);
    cluster.propose(0, "x", 3);
    cluster.tick(0);
    cluster.drop_messages();
    let id = cluster.propose(1, "y", 1);
    cluster.tick(1);
    let propose = cluster.network.front().expect("the Propose").clone();
    cluster.deliver_all();
    assert_eq!(
        cluster.reply(id),
        Some(&Response::Failed(RaftError::Overloaded { pending: 2 })),
        "a refusal by the leader of the proposal's term is final"
    );
    let last = cluster.node(0).log().last_index();
    assert_eq!(last, 4, "the leader's two entries only");
    // Once the leader has room again, a late copy of the refused message appends nothing.
    cluster.run_for(4 * cluster.config.heartbeat_interval);
    assert_eq!(cluster.node(0).commit_index(), 4);
    cluster.network.push_back(propose);
    cluster.deliver_all();
    assert_eq!(cluster.node(0).log().last_index(), last, "no copy appended");
}

#[test]
fn a_forwarded_proposal_lost_with_its_leader_fails_surely_once_a_later_term_commits() {
    let mut cluster = settled(forwarding());
    let id = cluster.propose(1, "y", 1);
    cluster.tick(1);
    cluster.deliver_one(); // The Propose reaches node 0, which appends it...
    cluster.crash(0); // ...and crashes before anyone else has it.
    cluster.drop_messages();
    cluster.run_for(3 * cluster.config.election_timeout_max);
    let leader = cluster.leader().expect("a new leader");
    assert_ne!(leader, 0);
    assert_eq!(
        cluster.reply(id),
        Some(&Response::Failed(RaftError::LeaderChanged { term: 1 }))
    );
}

#[test]
fn a_forwarded_proposal_outlives_its_leader_when_the_next_leader_holds_it() {
    let mut cluster = settled(forwarding());
    let id = cluster.propose(1, "y", 1);
    cluster.tick(1);
    cluster.deliver_one(); // The Propose reaches node 0, which appends entry 3...
    let to_node_2 = cluster
        .network
        .iter()
        .position(|e| e.to == 2 && matches!(e.message, Message::AppendEntries { .. }))
        .expect("an AppendEntries to node 2");
    cluster.deliver_nth(to_node_2); // ...and replicates it to node 2 only...
    cluster.crash(0); // ...before crashing.
    cluster.drop_messages();
    assert_eq!(cluster.reply(id), None);
    cluster.run_for(3 * cluster.config.election_timeout_max);
    assert_eq!(cluster.leader(), Some(2), "only node 2 has the longer log");
    // The next leader commits it with its no-op; node 1 applies it and answers its client.
    assert_eq!(
        cluster.reply(id),
        Some(&Response::Applied {
            index: 3,
            output: KvResult::Written
        })
    );
}

#[test]
fn after_losing_its_leader_connection_a_follower_forwards_nothing_until_it_hears_from_it() {
    let mut cluster = settled(forwarding());
    let forwarded = cluster.propose(1, "y", 1);
    cluster.tick(1);
    cluster.drop_messages();
    cluster.step(1, Input::PeerLost { peer: 0 });
    assert_eq!(
        cluster.reply(forwarded),
        Some(&Response::Failed(RaftError::ForwardedOutcomeUnknown {
            to: 0
        })),
        "what went to it may be lost, or in its log"
    );
    let refused = cluster.propose(1, "y", 2);
    assert_eq!(
        cluster.reply(refused),
        Some(&Response::Failed(RaftError::LeaderUnreachable {
            leader: 0
        })),
        "nothing forwarded"
    );
    // The leader's next heartbeat shows the connection back.
    cluster.now += cluster.config.heartbeat_interval;
    cluster.tick(0);
    cluster.deliver_all();
    let later = cluster.propose(1, "y", 3);
    cluster.tick(1);
    cluster.deliver_all();
    assert!(
        matches!(cluster.reply(later), Some(Response::Applied { .. })),
        "{:?}",
        cluster.reply(later)
    );
}

#[test]
fn a_forwarded_proposal_that_is_lost_fails_after_the_outcome_timeout() {
    let mut cluster = settled(forwarding());
    let timeout = cluster.config.outcome_timeout;
    cluster.cut(1, 0); // Node 1 hears the leader, but the leader does not hear it.
    let id = cluster.propose(1, "y", 1);
    let sent = cluster.now;
    cluster.run_for(timeout / 2);
    assert_eq!(cluster.reply(id), None, "still waiting");
    assert_eq!(cluster.leader(), Some(0), "the leader stays");
    cluster.run_for(timeout);
    assert_eq!(
        cluster.reply(id),
        Some(&Response::Failed(RaftError::ForwardedOutcomeUnknown {
            to: 0
        }))
    );
    assert!(cluster.now >= sent + timeout);
}

#[test]
fn a_restarted_follower_is_not_answered_by_the_entries_of_its_earlier_incarnation() {
    let mut cluster = settled(forwarding());
    let old = cluster.propose(1, "y", 1);
    cluster.tick(1);
    // The leader appends the old incarnation's proposal; node 1 restarts before learning of it.
    cluster.deliver_one();
    cluster.crash(1);
    cluster.drop_messages();
    cluster.restart(1);
    cluster.now += cluster.config.heartbeat_interval;
    cluster.tick(0);
    cluster.deliver_all();
    let new = cluster.propose(1, "y", 2);
    cluster.tick(1);
    cluster.deliver_all();
    assert_eq!(cluster.reply(old), None, "the crash lost its client");
    // The first entry node 1's new incarnation forwarded has the same sequence number as the
    // old one's: only the incarnation tells them apart.
    assert_eq!(
        cluster.reply(new),
        Some(&Response::Applied {
            index: 4,
            output: KvResult::Written
        }),
        "answered by its own entry (4), not the old incarnation's (3)"
    );
    let first = cluster.node(0).log().entry(3).expect("the old proposal");
    assert!(matches!(&first.payload, Payload::Forwarded { origin, .. } if origin.node == 1));
}

#[test]
fn a_commit_notice_is_adopted_only_up_to_what_the_log_shares_with_the_leader() {
    let mut cluster = settled(forwarding());
    cluster.propose(0, "z", 1);
    cluster.take_messages(); // Entry 3 never reaches node 1.
    let term = cluster.node(0).current_term();
    let notice = Message::Commit {
        term,
        commit_index: 3,
    };
    cluster.step(
        1,
        Input::Message {
            from: 0,
            message: notice.clone(),
        },
    );
    assert_eq!(cluster.node(1).commit_index(), 2, "it lacks entry 3");
    // From anyone but its leader, a notice changes nothing.
    cluster.step(
        1,
        Input::Message {
            from: 2,
            message: notice,
        },
    );
    assert_eq!(cluster.node(1).commit_index(), 2);
}

#[test]
fn a_follower_with_too_many_proposals_waiting_refuses_more() {
    let mut cluster = settled(Config {
        max_pending_requests: 2,
        ..forwarding()
    });
    cluster.propose(1, "y", 1);
    cluster.propose(1, "y", 2);
    let third = cluster.propose(1, "y", 3);
    assert_eq!(
        cluster.reply(third),
        Some(&Response::Failed(RaftError::Overloaded { pending: 2 }))
    );
    let read = cluster.request(1, Request::Read(KvOperation::Read { key: "y".into() }));
    assert_eq!(
        cluster.reply(read),
        Some(&Response::Failed(RaftError::Overloaded { pending: 2 })),
        "reads and proposals share the bound"
    );
}
