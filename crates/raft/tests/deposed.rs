//! A deposed leader's proposals wait for the entry applied at their index (module `deposed`):
//! answered as applied when the next leader commits them, failed surely when another entry
//! takes their index, and "unknown" only when nothing is learnt within `outcome_timeout`.

mod common;

use common::{depose_node_0, settled};
use concord_core::{KvResult, NodeId, RequestId};
use concord_raft::testing::Cluster;
use concord_raft::{Config, Message, RaftError, Response};

/// Leader 0 of `settled`'s cluster proposes entry 3 (which reaches `reaching` only, if any),
/// is cut off and deposed by CheckQuorum; the proposal still waits.
fn proposed_then_cut_off(reaching: Option<NodeId>) -> (Cluster, RequestId) {
    let mut cluster = settled(Config::default());
    let id = cluster.propose(0, "y", 1);
    cluster.tick(0); // The held AppendEntries leave.
    if let Some(peer) = reaching {
        let append = cluster
            .network
            .iter()
            .position(|e| e.to == peer && matches!(e.message, Message::AppendEntries { .. }))
            .expect("an AppendEntries to the peer");
        cluster.deliver_nth(append);
    }
    cluster.drop_messages();
    cluster.isolate(0);
    cluster.run_for(3 * cluster.config.election_timeout_max);
    assert!(!cluster.node(0).is_leader(), "CheckQuorum deposed it");
    assert_eq!(cluster.reply(id), None, "still waiting");
    (cluster, id)
}

/// Proposal `id` was answered once, as applied at entry 3.
fn answered_applied_at_3(cluster: &Cluster, id: RequestId) {
    assert_eq!(
        cluster.reply(id),
        Some(&Response::Applied {
            index: 3,
            output: KvResult::Written
        })
    );
    let answers = cluster.replies.iter().filter(|(_, r, _)| *r == id).count();
    assert_eq!(answers, 1);
}

#[test]
fn a_deposed_leader_answers_its_proposal_when_the_next_leader_commits_it() {
    let (mut cluster, id) = proposed_then_cut_off(Some(2));
    assert_eq!(cluster.leader(), Some(2), "only node 2 has entry 3");
    cluster.heal();
    cluster.run_for(3 * cluster.config.heartbeat_interval);
    // Node 2 committed it; node 0 answers once it applies it.
    answered_applied_at_3(&cluster, id);
}

#[test]
fn a_deposed_proposal_overwritten_by_the_next_leader_fails_surely() {
    let (mut cluster, id) = proposed_then_cut_off(None);
    let leader = cluster.leader().expect("a new leader");
    assert_ne!(leader, 0);
    cluster.heal();
    cluster.run_for(3 * cluster.config.heartbeat_interval);
    assert_eq!(
        cluster.reply(id),
        Some(&Response::Failed(RaftError::LeaderChanged { term: 1 })),
        "the new leader's no-op took index 3"
    );
    assert_eq!(cluster.node(0).log().entry(3).map(|e| e.term), Some(2));
}

#[test]
fn a_deposed_leader_elected_again_answers_the_proposals_its_log_still_holds() {
    let mut cluster = settled(Config::default());
    let id = cluster.propose(0, "y", 1);
    cluster.tick(0);
    cluster.drop_messages();
    depose_node_0(&mut cluster);
    cluster.drop_messages();
    assert_eq!(cluster.reply(id), None, "still waiting");
    cluster.elect(0);
    assert!(cluster.node(0).is_leader());
    cluster.run_for(3 * cluster.config.heartbeat_interval);
    // Committed with the new term's no-op.
    answered_applied_at_3(&cluster, id);
}

#[test]
fn a_deposed_leader_that_learns_nothing_fails_its_proposal_after_the_outcome_timeout() {
    let (mut cluster, id) = proposed_then_cut_off(None);
    cluster.run_for(cluster.config.outcome_timeout);
    assert_eq!(
        cluster.reply(id),
        Some(&Response::Failed(RaftError::OutcomeUnknown { index: 3 }))
    );
}
