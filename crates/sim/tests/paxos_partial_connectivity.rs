//! Multi-Paxos under the partial-connectivity shapes of the OmniPaxos paper (Ng, Haridi,
//! Carbone, EuroSys 2023, §2): quorum-loss, constrained-election and chained — the same three
//! scenarios as `raft_partial_connectivity.rs`, on the same lab helper.
//!
//! Ballot leader election lets only quorum-connected nodes campaign, keeps a live
//! quorum-connected leader, and needs no up-to-date log from the new leader (phase 1 brings it
//! up to date). So Multi-Paxos settles on a stable leader and serves writes in all three shapes,
//! including constrained-election, where no Raft can elect a leader. The last test runs Raft and
//! Multi-Paxos side by side through each shape and prints the comparison.

mod lab;

use concord_core::time::MILLISECOND;
use concord_core::{Duration, NodeId};
use concord_sim::topology::Connectivity;
use lab::{Lab, LabNode, PaxosKv, SECOND};

/// Election timeouts a shape may take to settle.
const SETTLE_TIMEOUTS: u64 = 10;

/// Quorum-loss: only `center` still reaches everyone; the old leader reaches only `center`.
/// The old leader is no longer quorum-connected and steps down; `center` is the only
/// quorum-connected node, so it alone may raise its ballot and take over. It reaches every
/// node, so every node keeps applying writes, and the leadership is stable.
#[test]
fn quorum_loss_settles_on_the_connected_node_and_serves_writes() {
    for seed in 0..5 {
        let mut lab = Lab::paxos(5, 200 + seed);
        lab.one(1, 5, true);
        let old = lab.check_one_leader();
        let center = (old + 1) % 5;
        lab.sim
            .network_mut()
            .set_connectivity(Connectivity::quorum_loss(5, center).unwrap());
        lab.run(SETTLE_TIMEOUTS * lab.election_timeout());
        let leaders = lab.leaders();
        assert_eq!(leaders.len(), 1, "seed {seed}: leaders {leaders:?}");
        assert_eq!(
            leaders[0].1, center,
            "seed {seed}: the leader must be the connected node"
        );
        let ballot = leaders[0].0;
        lab.one(2, 5, false);
        lab.run(SETTLE_TIMEOUTS * lab.election_timeout());
        assert_eq!(
            lab.leaders(),
            vec![(ballot, center)],
            "seed {seed}: leadership not stable"
        );
        lab.one(3, 5, false);
        assert!(
            (0..5).all(|i| lab.node(i).unwrap().is_quorum_connected() == (i == center)),
            "seed {seed}: only the center hears a quorum"
        );
    }
}

/// Constrained election: the old leader is gone and the only quorum-connected node (`center`)
/// has an outdated log. Raft cannot elect it (its log is not up to date) and nobody else reaches
/// a quorum; Multi-Paxos elects it anyway — its Prepare collects the accepted entries it lacks
/// from the others' promises — and it serves writes with the three nodes it reaches.
#[test]
fn constrained_election_elects_the_outdated_center_and_serves_writes() {
    for seed in 0..3 {
        let mut lab = Lab::paxos(5, 300 + seed);
        lab.one(1, 5, true);
        let old = lab.check_one_leader();
        let center = (old + 1) % 5;
        make_outdated(&mut lab, center);
        lab.sim
            .network_mut()
            .set_connectivity(Connectivity::constrained_election(5, center, old).unwrap());
        let outdated = lab.node(center).unwrap().decided();
        let current = lab.node((center + 1) % 5).unwrap().decided();
        assert!(outdated < current, "seed {seed}: the center must be behind");
        lab.run(SETTLE_TIMEOUTS * lab.election_timeout());
        let leaders = lab.leaders();
        assert_eq!(
            leaders.iter().map(|&(_, n)| n).collect::<Vec<_>>(),
            vec![center],
            "seed {seed}: leaders {leaders:?}"
        );
        let ballot = leaders[0].0;
        assert!(
            lab.node(center).unwrap().decided() >= current,
            "seed {seed}: the new leader caught up"
        );
        lab.one(100, 4, false);
        lab.run(SETTLE_TIMEOUTS * lab.election_timeout());
        assert_eq!(
            lab.leaders(),
            vec![(ballot, center)],
            "seed {seed}: leadership not stable"
        );
        lab.one(101, 4, false);
        lab.sim.network_mut().heal();
        lab.one(102, 5, true);
    }
}

/// Chained: `a – b – c` with the leader at `a`. `c` never hears `a`, but `b` (which hears both)
/// relays that `a` is alive, so `c` raises no ballot; `a` keeps leading with `b`.
#[test]
fn chained_keeps_the_leader_and_serves_writes() {
    for seed in 0..5 {
        let mut lab = Lab::paxos(3, 400 + seed);
        lab.one(1, 3, true);
        let a = lab.check_one_leader();
        let (b, c) = ((a + 1) % 3, (a + 2) % 3);
        lab.sim
            .network_mut()
            .set_connectivity(Connectivity::chained(3, &[a, b, c]).unwrap());
        let ballot = lab.node(a).unwrap().term();
        lab.run(SETTLE_TIMEOUTS * lab.election_timeout());
        assert_eq!(
            lab.leaders(),
            vec![(ballot, a)],
            "seed {seed}: the chain unseated the leader"
        );
        assert_eq!(
            lab.node(b).unwrap().term(),
            ballot,
            "seed {seed}: disrupted ballot"
        );
        assert_eq!(
            lab.node(c).unwrap().elected(),
            Some(ballot),
            "seed {seed}: c follows a through b"
        );
        lab.one(2, 2, false);
        lab.run(SETTLE_TIMEOUTS * lab.election_timeout());
        assert_eq!(
            lab.leaders(),
            vec![(ballot, a)],
            "seed {seed}: leadership not stable"
        );
    }
}

/// Isolates `center` while the others commit, so that its log is behind.
fn make_outdated<N: LabNode>(lab: &mut Lab<N>, center: NodeId) {
    lab.disconnect(center);
    for value in 2..6 {
        lab.one(value, 4, true);
    }
    lab.connect(center);
}

/// The three shapes, in the OmniPaxos paper's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    QuorumLoss,
    ConstrainedElection,
    Chained,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::QuorumLoss => "quorum-loss",
            Shape::ConstrainedElection => "constrained-election",
            Shape::Chained => "chained",
        }
    }

    fn nodes(self) -> usize {
        match self {
            Shape::Chained => 3,
            _ => 5,
        }
    }

    /// Nodes a write must reach: the ones the shape leaves on the leader's side.
    fn reach(self) -> usize {
        match self {
            Shape::QuorumLoss => 3,
            Shape::ConstrainedElection => 4,
            Shape::Chained => 2,
        }
    }
}

/// How one protocol fared in one shape.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outcome {
    /// Leaderships seen (sampled every 10 ms) from the cut to the end of the window.
    leaderships: usize,
    /// Whether a single leader was in place at the end, and it was the one before.
    leader_at_end: Option<NodeId>,
    /// How long the first write after the cut took to be applied on `reach` nodes.
    first_write: Option<Duration>,
    /// Whether a second write, after the window, was applied too.
    later_write: bool,
}

/// Drives `lab` through `shape` (the old leader's write first, then the cut), for `window`.
fn run_shape<N: LabNode>(mut lab: Lab<N>, shape: Shape, window: Duration) -> Outcome {
    let n = shape.nodes();
    lab.one(1, n, true);
    let old = lab.check_one_leader();
    let (center, next) = ((old + 1) % n as NodeId, (old + 2) % n as NodeId);
    let connectivity = match shape {
        Shape::QuorumLoss => Connectivity::quorum_loss(n, center),
        Shape::ConstrainedElection => {
            make_outdated(&mut lab, center);
            Connectivity::constrained_election(n, center, old)
        }
        Shape::Chained => Connectivity::chained(n, &[old, center, next]),
    };
    lab.sim
        .network_mut()
        .set_connectivity(connectivity.unwrap());
    let cut = lab.sim.now();
    let mut seen = std::collections::BTreeSet::new();
    let mut first_write = None;
    while lab.sim.now() - cut < window {
        if first_write.is_none() {
            if lab.try_one(10, shape.reach(), 10 * MILLISECOND).is_some() {
                first_write = Some(lab.sim.now() - cut);
            }
        } else {
            lab.run(10 * MILLISECOND);
        }
        seen.extend(lab.leaders());
    }
    let leaders = lab.leaders();
    let leader_at_end = match leaders[..] {
        [(_, only)] => Some(only),
        _ => None,
    };
    let later_write = lab.try_one(11, shape.reach(), window).is_some();
    Outcome {
        leaderships: seen.len(),
        leader_at_end,
        first_write,
        later_write,
    }
}

/// Side by side, same seeds: Raft (PreVote and CheckQuorum on) and Multi-Paxos (ballot leader
/// election) through the three shapes. Multi-Paxos recovers in constrained-election, where Raft
/// stays leaderless, and does at least as well in the other two (no more leaderships; writes
/// served). The table is printed (`--nocapture`). Its write times follow each protocol's
/// default timing (Raft's election timeout is 0.5–1 s, a Paxos heartbeat round 100 ms), so they
/// are shown, not compared.
#[test]
fn side_by_side_multi_paxos_recovers_where_raft_cannot() {
    let window = 10 * SECOND;
    let mut table = vec![format!(
        "{:<22} {:<6} {:>5} {:>12} {:>14} {:>13}",
        "shape", "proto", "seed", "leaderships", "leader at end", "first write"
    )];
    for shape in [
        Shape::QuorumLoss,
        Shape::ConstrainedElection,
        Shape::Chained,
    ] {
        for seed in 0..3 {
            let seed = 600 + seed;
            let raft = run_shape(Lab::new(shape.nodes(), seed), shape, window);
            let paxos = run_shape::<PaxosKv>(Lab::paxos(shape.nodes(), seed), shape, window);
            for (name, outcome) in [("raft", &raft), ("paxos", &paxos)] {
                table.push(format!(
                    "{:<22} {:<6} {:>5} {:>12} {:>14} {:>13}",
                    shape.name(),
                    name,
                    seed,
                    outcome.leaderships,
                    outcome
                        .leader_at_end
                        .map_or("none".to_string(), |l| l.to_string()),
                    outcome
                        .first_write
                        .map_or("never".to_string(), |d| format!("{} ms", d / MILLISECOND)),
                ));
            }
            let context = format!(
                "{} seed {seed}: raft {raft:?}, paxos {paxos:?}",
                shape.name()
            );
            assert!(paxos.leader_at_end.is_some(), "{context}");
            assert!(
                paxos.first_write.is_some() && paxos.later_write,
                "{context}"
            );
            if shape == Shape::ConstrainedElection {
                assert!(
                    raft.first_write.is_none() && !raft.later_write,
                    "{context}: Raft cannot elect here"
                );
            } else {
                assert!(raft.first_write.is_some(), "{context}");
                assert!(paxos.leaderships <= raft.leaderships, "{context}");
            }
        }
    }
    println!("{}", table.join("\n"));
}
