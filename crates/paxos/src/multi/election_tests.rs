//! Ballot leader election (OmniPaxos BLE, EuroSys 2023 §4): who may campaign, who is kept,
//! who is replaced — on the hand-driven harness with cut links.

use concord_core::time::{MILLISECOND, SECOND};
use concord_core::{KvOperation, KvStateMachine, Node, NodeId, Role};

use super::{invariants, Config, MultiPaxos, Request};
use crate::testing::Harness;
use crate::Ballot;

type Kv = MultiPaxos<KvStateMachine>;

fn cluster(size: u64, seed: u64) -> Harness<Kv> {
    Harness::new(
        size,
        Config::default(),
        seed,
        invariants::<KvStateMachine>(),
    )
}

/// The live nodes that lead, with their ballots.
fn leaders(harness: &Harness<Kv>) -> Vec<(Ballot, NodeId)> {
    harness
        .nodes
        .iter()
        .flatten()
        .filter(|n| n.is_leader())
        .map(|n| (n.ballot().unwrap(), n.id()))
        .collect()
}

/// Runs until exactly one node leads; returns it and its ballot.
fn settle(harness: &mut Harness<Kv>) -> (Ballot, NodeId) {
    for _ in 0..40 {
        harness.run_for(100 * MILLISECOND);
        if let [only] = leaders(harness)[..] {
            return only;
        }
    }
    panic!("no single leader: {:?}", leaders(harness));
}

fn write(value: i64) -> Request<KvOperation, KvOperation> {
    Request::Propose(KvOperation::Write {
        key: "x".into(),
        value,
    })
}

/// The highest ballot any live node promised.
fn highest_promise(harness: &Harness<Kv>) -> Option<Ballot> {
    harness
        .nodes
        .iter()
        .flatten()
        .filter_map(|n| n.ballot())
        .max()
}

fn cut_both(harness: &mut Harness<Kv>, a: NodeId, b: NodeId) {
    harness.cut.insert((a, b));
    harness.cut.insert((b, a));
}

/// With every node starting at round 0, ties break by node id: the highest id among
/// quorum-connected nodes campaigns, and every node learns it is connected to all others.
#[test]
fn the_highest_quorum_connected_ballot_is_elected() {
    let mut harness = cluster(5, 1);
    let (ballot, leader) = settle(&mut harness);
    assert_eq!(leader, 4);
    harness.run_for(SECOND);
    assert_eq!(leaders(&harness), vec![(ballot, leader)], "stable");
    for node in harness.nodes.iter().flatten() {
        assert!(node.is_quorum_connected());
        assert_eq!(node.connected().len(), 4);
        assert_eq!(node.elected(), Some(ballot));
    }
}

/// A node cut off from everyone is not quorum-connected: it never raises its ballot, never
/// campaigns, and the leader is untouched.
#[test]
fn a_partitioned_node_neither_raises_its_ballot_nor_campaigns() {
    let mut harness = cluster(5, 2);
    let (ballot, leader) = settle(&mut harness);
    let loner = (leader + 1) % 5;
    let candidacy = harness.node(loner).candidacy();
    harness.isolate(loner);
    harness.run_for(3 * SECOND);
    let node = harness.node(loner);
    assert!(!node.is_quorum_connected());
    assert!(node.connected().is_empty());
    assert_eq!(node.candidacy(), candidacy);
    assert_eq!(node.status().role, Role::Follower);
    assert_eq!(leaders(&harness), vec![(ballot, leader)]);
    assert_eq!(highest_promise(&harness), Some(ballot));
    harness.request(leader, 1, write(1));
    harness.run_for(SECOND);
    assert_eq!(harness.replies.len(), 1, "the majority side serves writes");
}

/// "A leader that is still heard by a quorum is not deposed by a node with a higher ballot":
/// a node returns from a partition standing with a ballot far above the leader's; it finds the
/// leader alive and follows it.
#[test]
fn a_returning_node_with_a_higher_ballot_does_not_depose_a_live_leader() {
    let mut harness = cluster(5, 3);
    let (ballot, leader) = settle(&mut harness);
    let returning = (leader + 2) % 5;
    harness.isolate(returning);
    harness.run_for(SECOND);
    let higher = Ballot::new(ballot.round + 10, returning);
    harness.nodes[returning as usize]
        .as_mut()
        .unwrap()
        .stand_with(higher);
    harness.heal();
    harness.run_for(3 * SECOND);
    assert_eq!(leaders(&harness), vec![(ballot, leader)]);
    assert_eq!(highest_promise(&harness), Some(ballot), "no one campaigned");
    let node = harness.node(returning);
    assert!(node.is_quorum_connected());
    assert_eq!(node.elected(), Some(ballot));
    assert_eq!(node.candidacy(), higher);
}

/// A leader cut off from everyone loses quorum connectivity and steps down; the others elect
/// a new leader at a higher ballot, which keeps leading once the old one is back.
#[test]
fn a_leader_that_loses_quorum_connectivity_steps_down_and_is_replaced() {
    let mut harness = cluster(5, 4);
    let (old_ballot, old) = settle(&mut harness);
    harness.isolate(old);
    harness.run_for(2 * SECOND);
    assert!(
        !harness.node(old).is_leader(),
        "the old leader stepped down"
    );
    let [(ballot, leader)] = leaders(&harness)[..] else {
        panic!("one new leader: {:?}", leaders(&harness));
    };
    assert_ne!(leader, old);
    assert!(ballot > old_ballot);
    harness.request(leader, 1, write(1));
    harness.run_for(SECOND);
    assert_eq!(harness.replies.len(), 1);
    harness.heal();
    harness.run_for(3 * SECOND);
    assert_eq!(
        leaders(&harness),
        vec![(ballot, leader)],
        "the new leader stays"
    );
}

/// A restarted node hears the live leader before it may raise anything: no election.
#[test]
fn a_restarted_node_follows_the_live_leader_without_an_election() {
    let mut harness = cluster(3, 5);
    let (ballot, leader) = settle(&mut harness);
    for victim in [(leader + 1) % 3, (leader + 2) % 3] {
        harness.crash(victim);
        harness.run_for(500 * MILLISECOND);
        harness.restart(victim);
        harness.run_for(SECOND);
        assert_eq!(leaders(&harness), vec![(ballot, leader)]);
        assert_eq!(harness.node(victim).elected(), Some(ballot));
    }
}

/// Chained `a – b – c` with the leader at `a`: `c` never hears `a`, but `b` tells it `a` is
/// alive (one relayed hop), so `c` does not depose it; `a` and `b` keep serving.
#[test]
fn a_chain_keeps_its_leader_through_the_middle_node() {
    let mut harness = cluster(3, 6);
    let (ballot, a) = settle(&mut harness);
    let (b, c) = ((a + 1) % 3, (a + 2) % 3);
    cut_both(&mut harness, a, c);
    harness.run_for(3 * SECOND);
    assert_eq!(leaders(&harness), vec![(ballot, a)]);
    assert_eq!(highest_promise(&harness), Some(ballot));
    assert!(harness.node(c).is_quorum_connected(), "c hears b: 2 of 3");
    assert_eq!(harness.node(c).elected(), Some(ballot));
    assert_eq!(harness.node(b).connected().len(), 2);
    harness.request(a, 1, write(1));
    harness.run_for(SECOND);
    assert_eq!(harness.replies.len(), 1);
}

/// Quorum loss: only `center` reaches everyone. The leader is no longer quorum-connected and
/// steps down; `center`, the only quorum-connected node, takes over and serves everyone.
#[test]
fn quorum_loss_elects_the_only_quorum_connected_node() {
    let mut harness = cluster(5, 7);
    let (old_ballot, old) = settle(&mut harness);
    let center = (old + 1) % 5;
    for x in 0..5 {
        for y in 0..5 {
            if x != y && x != center && y != center {
                harness.cut.insert((x, y));
            }
        }
    }
    harness.run_for(3 * SECOND);
    let [(ballot, leader)] = leaders(&harness)[..] else {
        panic!("one leader: {:?}", leaders(&harness));
    };
    assert_eq!(leader, center);
    assert!(ballot > old_ballot);
    harness.run_for(3 * SECOND);
    assert_eq!(leaders(&harness), vec![(ballot, center)], "stable");
    harness.request(center, 1, write(1));
    harness.run_for(SECOND);
    assert_eq!(harness.replies.len(), 1);
}
