//! Raft under the partial-connectivity shapes of the OmniPaxos paper (Ng, Haridi, Carbone,
//! EuroSys 2023, §2): quorum-loss, constrained-election and chained. With PreVote and
//! CheckQuorum, Concord's Raft settles on a stable leader and serves writes within a bounded
//! number of election timeouts in the shapes where Raft can; in constrained-election no
//! Raft can elect a leader, and the test shows it (and that healing recovers).

mod lab;

use concord_sim::topology::Connectivity;
use lab::Lab;

/// Election timeouts a shape may take to settle.
const SETTLE_TIMEOUTS: u64 = 10;

/// Quorum-loss: only `center` still reaches everyone; the old leader reaches only `center`.
/// CheckQuorum makes the old leader step down; PreVote lets `center` (up to date, reaching a
/// quorum) win; its followers keep hearing it, so the new leadership is stable.
#[test]
fn quorum_loss_settles_on_the_connected_node_and_serves_writes() {
    for seed in 0..5 {
        let mut lab = Lab::new(5, 200 + seed);
        lab.one(1, 5, true);
        let old = lab.check_one_leader();
        let center = (old + 1) % 5;
        lab.sim
            .network_mut()
            .set_connectivity(Connectivity::quorum_loss(5, center).unwrap());
        lab.run(SETTLE_TIMEOUTS * lab.election_timeout());
        let leaders: Vec<_> = lab.leaders();
        assert_eq!(leaders.len(), 1, "seed {seed}: leaders {leaders:?}");
        assert_eq!(
            leaders[0].1, center,
            "seed {seed}: the leader must be the connected node"
        );
        let term = leaders[0].0;
        // Stable: no further elections for a long while, and writes commit.
        lab.one(2, 3, false);
        lab.run(SETTLE_TIMEOUTS * lab.election_timeout());
        assert_eq!(
            lab.leaders(),
            vec![(term, center)],
            "seed {seed}: leadership not stable"
        );
        lab.one(3, 3, false);
    }
}

/// Constrained election: the old leader is gone and the only node reaching a quorum
/// (`center`) has an outdated log, so the up-to-date nodes refuse it their votes, and they
/// cannot reach a quorum themselves. Raft cannot elect a leader here (OmniPaxos can); the
/// cluster stays unavailable — but safe — until connectivity improves, then recovers.
#[test]
fn constrained_election_leaves_raft_without_a_leader_until_healed() {
    for seed in 0..3 {
        let mut lab = Lab::new(5, 300 + seed);
        lab.one(1, 5, true);
        let old = lab.check_one_leader();
        let center = (old + 1) % 5;
        // Make the center's log outdated: isolate it while the others commit.
        lab.disconnect(center);
        for value in 2..6 {
            lab.one(value, 4, true);
        }
        lab.connect(center);
        lab.sim
            .network_mut()
            .set_connectivity(Connectivity::constrained_election(5, center, old).unwrap());
        let outdated = lab.node(center).unwrap().log().last_index();
        let current = lab.node((center + 1) % 5).unwrap().log().last_index();
        assert!(outdated < current, "seed {seed}: the center must be behind");
        lab.run(2 * SETTLE_TIMEOUTS * lab.election_timeout());
        let leaders: Vec<_> = lab
            .leaders()
            .into_iter()
            .filter(|&(_, node)| node != old)
            .collect();
        assert!(
            leaders.is_empty(),
            "seed {seed}: Raft elected {leaders:?} in constrained-election"
        );
        lab.sim.network_mut().heal();
        lab.check_one_leader();
        lab.one(100, 5, true);
    }
}

/// Chained: `a – b – c` with the leader at `a`. Plain Raft livelocks: `c` never hears `a`,
/// times out, and its higher term unseats `a` through `b`, over and over. With PreVote, `b`
/// (which hears `a`) refuses `c`'s pre-votes, so `a` keeps leading with `b` and writes commit.
#[test]
fn chained_keeps_the_leader_and_serves_writes() {
    for seed in 0..5 {
        let mut lab = Lab::new(3, 400 + seed);
        lab.one(1, 3, true);
        let a = lab.check_one_leader();
        let (b, c) = ((a + 1) % 3, (a + 2) % 3);
        lab.sim
            .network_mut()
            .set_connectivity(Connectivity::chained(3, &[a, b, c]).unwrap());
        let term = lab.node(a).unwrap().current_term();
        lab.run(SETTLE_TIMEOUTS * lab.election_timeout());
        assert_eq!(
            lab.leaders(),
            vec![(term, a)],
            "seed {seed}: the chain unseated the leader"
        );
        assert_eq!(
            lab.node(b).unwrap().current_term(),
            term,
            "seed {seed}: disrupted term"
        );
        lab.one(2, 2, false);
        lab.run(SETTLE_TIMEOUTS * lab.election_timeout());
        assert_eq!(
            lab.leaders(),
            vec![(term, a)],
            "seed {seed}: leadership not stable"
        );
    }
}

/// The same chain without PreVote and CheckQuorum: the far end's elections keep disrupting
/// the leader — the livelock the OmniPaxos paper describes, shown so the difference is visible.
#[test]
fn chained_without_pre_vote_keeps_changing_terms() {
    let config = concord_raft::Config {
        pre_vote: false,
        check_quorum: false,
        ..concord_raft::Config::default()
    };
    let mut lab = Lab::with_config(3, 500, config);
    lab.one(1, 3, true);
    let a = lab.check_one_leader();
    let (b, c) = ((a + 1) % 3, (a + 2) % 3);
    lab.sim
        .network_mut()
        .set_connectivity(Connectivity::chained(3, &[a, b, c]).unwrap());
    let term = lab.node(b).unwrap().current_term();
    lab.run(SETTLE_TIMEOUTS * lab.election_timeout());
    let later = lab.node(b).unwrap().current_term();
    assert!(
        later >= term + 3,
        "expected repeated disruptive elections, term {term} -> {later}"
    );
}
