//! Multi-Paxos reconfiguration in the simulator: a node added, then another removed, through
//! stop-signs in the log — with network and disk latencies, crashes and an unreliable network,
//! and every checker after every step.

mod lab;

use concord_core::time::MILLISECOND;
use concord_core::NodeId;
use concord_paxos::multi::{Config, Configuration, Request};
use lab::{Lab, PaxosKv, SECOND};

/// Four nodes started; the first configuration is `{0, 1, 2}` and node 3 waits to be added.
fn lab(seed: u64) -> Lab<PaxosKv> {
    let config = Config {
        initial_members: Some(vec![0, 1, 2]),
        snapshot_threshold: 16,
        ..Config::default()
    };
    Lab::paxos_with_config(4, seed, config)
}

/// Asks whoever leads to move to `members` until every one of them that is up runs the new
/// configuration (retrying if a leader fails or the request is lost).
fn reconfigure(lab: &mut Lab<PaxosKv>, members: &[NodeId], epoch: u64) {
    let wanted = Configuration::new(epoch, members);
    let started = lab.sim.now();
    while lab.sim.now() - started < 20 * SECOND {
        let reached = members
            .iter()
            .all(|&m| lab.node(m).map_or(true, |n| n.configuration() == &wanted));
        if reached {
            return;
        }
        let leaders = lab.leaders();
        for (_, leader) in leaders {
            if lab.node(leader).unwrap().configuration().epoch + 1 == epoch {
                let request = Request::Reconfigure(members.to_vec());
                lab.sim.submit(leader, request).unwrap();
            }
        }
        lab.run(300 * MILLISECOND);
    }
    panic!("the members never reached {wanted:?}");
}

/// Add node 3 (`{0, 1, 2}` → `{0, 1, 2, 3}`), then remove node 0 (→ `{1, 2, 3}`): the new
/// node catches up from an empty log and applies every later write; the removed node applies
/// nothing after its last stop-sign and never leads again.
#[test]
fn a_node_is_added_then_another_removed() {
    for seed in 0..5 {
        let mut lab = lab(800 + seed);
        lab.one(1, 3, true);
        assert!(!lab.node(3).unwrap().is_member(), "seed {seed}");
        reconfigure(&mut lab, &[0, 1, 2, 3], 1);
        let index = lab.one(2, 4, true);
        assert!(
            lab.node(3).unwrap().applied() >= index,
            "seed {seed}: node 3 caught up"
        );
        reconfigure(&mut lab, &[1, 2, 3], 2);
        let removed_at = lab.node(0).map(|n| n.applied());
        for value in 3..40 {
            lab.one(value, 3, true);
        }
        lab.run(2 * SECOND);
        let leaders = lab.leaders();
        assert!(
            leaders
                .iter()
                .all(|&(ballot, node)| node != 0 && ballot.epoch == 2),
            "seed {seed}: leaders {leaders:?}"
        );
        let removed = lab.node(0).unwrap();
        assert!(!removed.is_member(), "seed {seed}");
        assert_eq!(
            Some(removed.applied()),
            removed_at,
            "seed {seed}: node 0 is idle"
        );
        let states: Vec<_> = (1..4)
            .map(|i| lab.node(i).unwrap().state().clone())
            .collect();
        assert!(states.windows(2).all(|w| w[0] == w[1]), "seed {seed}");
    }
}

/// The same changes with a lossy, reordering network and a member crashing in the middle of
/// each: the stop-signs still take, and the final configuration serves writes.
#[test]
fn reconfiguration_survives_crashes_and_an_unreliable_network() {
    for seed in 0..5 {
        let mut lab = lab(900 + seed);
        lab.one(1, 3, true);
        lab.set_unreliable(0.05, false);
        let leader = lab.check_one_leader();
        lab.crash((leader + 1) % 3);
        reconfigure(&mut lab, &[0, 1, 2, 3], 1);
        lab.restart((leader + 1) % 3);
        lab.one(2, 3, true);
        let leader = lab.check_one_leader();
        lab.crash(leader);
        let members: Vec<NodeId> = (0..4).filter(|&n| n != leader).collect();
        lab.restart(leader);
        reconfigure(&mut lab, &members, 2);
        lab.set_reliable();
        for value in 3..10 {
            lab.one(value, 3, true);
        }
        let leaders = lab.leaders();
        assert!(
            leaders.iter().all(|&(b, n)| n != leader && b.epoch == 2),
            "seed {seed}: leaders {leaders:?}"
        );
    }
}
