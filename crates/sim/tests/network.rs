//! The network: partitions of each shape block exactly the right links; loss, duplication and
//! reordering happen at the configured rates.

mod common;

use std::collections::BTreeSet;

use common::{ToyConfig, ToyMessage, ToyNode};
use concord_core::time::{MILLISECOND, SECOND};
use concord_core::{seeded_rng, NodeId};
use concord_sim::{
    Connectivity, LinkConfig, NemesisAction, Network, Route, SimConfig, Simulation, TopologyError,
};

/// A toy cluster without background traffic.
fn quiet_cluster(nodes: usize) -> Simulation<ToyNode> {
    let config = ToyConfig {
        heartbeat: 1_000 * SECOND,
    };
    Simulation::new(SimConfig::new(nodes, 11), config).unwrap()
}

/// Every ordered pair `(from, to)` whose messages get through, probed with real messages.
fn reachable(sim: &mut Simulation<ToyNode>) -> BTreeSet<(NodeId, NodeId)> {
    let n = sim.nodes() as NodeId;
    let mut links = BTreeSet::new();
    for from in 0..n {
        for to in (0..n).filter(|&to| to != from) {
            let before = sim.node(to).unwrap().received;
            sim.inject_message(from, to, ToyMessage::Ack { index: 0 })
                .unwrap();
            sim.run_for(10 * MILLISECOND).unwrap();
            if sim.node(to).unwrap().received > before {
                links.insert((from, to));
            }
        }
    }
    links
}

fn both_ways(pairs: &[(NodeId, NodeId)]) -> BTreeSet<(NodeId, NodeId)> {
    pairs.iter().flat_map(|&(a, b)| [(a, b), (b, a)]).collect()
}

fn apply(sim: &mut Simulation<ToyNode>, action: NemesisAction) -> BTreeSet<(NodeId, NodeId)> {
    sim.network_mut().heal();
    sim.apply_action(&action).unwrap();
    reachable(sim)
}

#[test]
fn groups_isolate_and_one_way_cuts() {
    let mut sim = quiet_cluster(5);
    assert_eq!(reachable(&mut sim).len(), 20);
    let groups = vec![vec![0, 1], vec![2, 3, 4]];
    assert_eq!(
        apply(&mut sim, NemesisAction::Partition { groups }),
        both_ways(&[(0, 1), (2, 3), (2, 4), (3, 4)])
    );
    // Node 4, named in no group, is alone.
    let groups = vec![vec![0, 1], vec![2, 3]];
    assert_eq!(
        apply(&mut sim, NemesisAction::Partition { groups }),
        both_ways(&[(0, 1), (2, 3)])
    );
    assert_eq!(
        apply(&mut sim, NemesisAction::Isolate { nodes: vec![4] }),
        both_ways(&[(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)])
    );
    let cut = apply(
        &mut sim,
        NemesisAction::Cut {
            from: vec![0],
            to: vec![1, 2],
        },
    );
    assert_eq!(cut.len(), 18);
    assert!(!cut.contains(&(0, 1)) && !cut.contains(&(0, 2)));
    assert!(
        cut.contains(&(1, 0)) && cut.contains(&(2, 0)),
        "one-way only"
    );
}

#[test]
fn quorum_loss_keeps_only_the_center_connected() {
    let mut sim = quiet_cluster(5);
    let links = apply(&mut sim, NemesisAction::QuorumLoss { center: Some(2) });
    assert_eq!(links, both_ways(&[(2, 0), (2, 1), (2, 3), (2, 4)]));
    // Default center: the lowest-id node that is not the leader (the toy's leader is 0).
    let links = apply(&mut sim, NemesisAction::QuorumLoss { center: None });
    assert_eq!(links, both_ways(&[(1, 0), (1, 2), (1, 3), (1, 4)]));
}

#[test]
fn constrained_election_cuts_the_leader_and_leaves_the_center_as_the_only_quorum() {
    let mut sim = quiet_cluster(5);
    let action = NemesisAction::ConstrainedElection {
        center: Some(3),
        leader: Some(0),
    };
    let links = apply(&mut sim, action);
    assert_eq!(links, both_ways(&[(3, 1), (3, 2), (3, 4)]));
    // Defaults: the leader is the toy's primary (0); the center the node with the shortest log.
    let links = apply(
        &mut sim,
        NemesisAction::ConstrainedElection {
            center: None,
            leader: None,
        },
    );
    assert_eq!(links, both_ways(&[(1, 2), (1, 3), (1, 4)]));
}

#[test]
fn chained_links_consecutive_nodes_only() {
    let mut sim = quiet_cluster(4);
    let links = apply(
        &mut sim,
        NemesisAction::Chained {
            chain: Some(vec![2, 0, 3]),
        },
    );
    assert_eq!(links, both_ways(&[(2, 0), (0, 3)]));
    let links = apply(&mut sim, NemesisAction::Chained { chain: None });
    assert_eq!(links, both_ways(&[(0, 1), (1, 2), (2, 3)]));
}

#[test]
fn heal_restores_every_link_and_partitions_swallow_messages_in_flight() {
    let mut sim = quiet_cluster(3);
    sim.inject_message(0, 1, ToyMessage::Ack { index: 0 })
        .unwrap();
    sim.apply_action(&NemesisAction::Isolate { nodes: vec![1] })
        .unwrap();
    sim.run_for(10 * MILLISECOND).unwrap();
    assert_eq!(sim.node(1).unwrap().received, 0);
    assert_eq!(sim.stats().messages_cut, 1);
    sim.apply_action(&NemesisAction::Heal {}).unwrap();
    assert_eq!(reachable(&mut sim).len(), 6);
}

#[test]
fn shapes_reject_bad_node_ids() {
    assert_eq!(
        Connectivity::quorum_loss(5, 5),
        Err(TopologyError::NoSuchNode { node: 5, nodes: 5 })
    );
    assert!(Connectivity::chained(5, &[0, 1]).is_err());
    assert!(Connectivity::chained(5, &[0, 1, 0]).is_err());
    let mut sim = quiet_cluster(3);
    assert!(sim
        .apply_action(&NemesisAction::Isolate { nodes: vec![3] })
        .is_err());
}

fn sample(link: LinkConfig, messages: u64) -> (u64, u64, u64, u64) {
    let mut network = Network::new(2, link, seeded_rng(5, 1));
    let (mut lost, mut duplicated, mut late) = (0, 0, 0);
    for _ in 0..messages {
        match network.route(0, 1) {
            Route::Lost => lost += 1,
            Route::Cut => unreachable!("the link is up"),
            Route::Deliver { delay, duplicate } => {
                duplicated += duplicate.is_some() as u64;
                let delays = std::iter::once(delay).chain(duplicate);
                late += delays.filter(|&d| d > 2 * MILLISECOND).count() as u64;
            }
        }
    }
    (lost, duplicated, late, network.counters().reordered)
}

fn near(count: u64, total: u64, rate: f64) -> bool {
    let observed = count as f64 / total as f64;
    (observed - rate).abs() < 0.015
}

#[test]
fn loss_duplication_and_reordering_follow_their_rates() {
    let total = 20_000;
    let link = LinkConfig {
        drop_probability: 0.2,
        duplicate_probability: 0.1,
        reorder_probability: 0.3,
        ..LinkConfig::default()
    };
    let (lost, duplicated, late, reordered) = sample(link, total);
    assert!(near(lost, total, 0.2), "lost {lost}");
    let delivered = total - lost;
    assert!(near(duplicated, delivered, 0.1), "duplicated {duplicated}");
    let copies = delivered + duplicated;
    assert!(near(reordered, copies, 0.3), "reordered {reordered}");
    // Reordered copies get up to 20ms extra, so most arrive after the 2ms latency ceiling.
    assert!(
        late > reordered * 8 / 10 && late <= reordered,
        "late {late}"
    );
    let (lost, duplicated, late, _) = sample(LinkConfig::default(), total);
    assert_eq!((lost, duplicated, late), (0, 0, 0));
}

#[test]
fn loss_in_a_simulation_shows_in_the_stats() {
    let mut sim = common::toy(3, 8);
    sim.apply_action(&NemesisAction::Loss {
        probability: 0.25,
        from: None,
        to: None,
    })
    .unwrap();
    sim.run_for(100 * SECOND + 50 * MILLISECOND).unwrap();
    let stats = sim.stats();
    assert_eq!(stats.messages_sent, 2_000);
    let rate = stats.messages_lost as f64 / stats.messages_sent as f64;
    assert!((rate - 0.25).abs() < 0.03, "{stats:?}");
    assert_eq!(
        stats.messages_delivered + stats.messages_dropped,
        stats.messages_sent
    );
}
