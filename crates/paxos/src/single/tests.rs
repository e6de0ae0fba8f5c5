//! Scenarios from "Paxos Made Simple": one proposer, duelling proposers, acceptor recovery.

use concord_core::{ClusterInvariant, Effect, Input, Node};

use super::{AtMostOneChosen, Config, Message, OnlyProposedChosen, Request, Response, SinglePaxos};
use crate::testing::Harness;
use crate::Ballot;

type Single = SinglePaxos<u64>;

fn cluster(size: u64, seed: u64) -> Harness<Single> {
    Harness::new(size, Config::default(), seed, checkers())
}

fn checkers() -> Vec<Box<dyn ClusterInvariant<Single>>> {
    vec![
        Box::new(AtMostOneChosen::<u64>::default()),
        Box::new(OnlyProposedChosen::<u64>::default()),
    ]
}

fn all_decided(harness: &Harness<Single>) -> bool {
    harness
        .nodes
        .iter()
        .flatten()
        .all(|node| node.decided().is_some())
}

#[test]
fn one_proposer_decides_its_value() {
    let mut harness = cluster(3, 1);
    harness.request(0, 1, Request::Propose(7));
    assert!(harness.run_random(10_000, all_decided));
    for node in harness.nodes.iter().flatten() {
        assert_eq!(node.decided(), Some(&7));
    }
    assert_eq!(harness.replies, vec![(0, 1, Response::Decided(7))]);
    assert!(harness.applied.iter().all(|applied| applied == &[(1, 7)]));
}

#[test]
fn a_decided_node_answers_at_once_with_the_chosen_value() {
    let mut harness = cluster(3, 2);
    harness.request(0, 1, Request::Propose(7));
    assert!(harness.run_random(10_000, all_decided));
    harness.confirm(2);
    harness.request(2, 2, Request::Propose(9));
    assert_eq!(harness.replies.last(), Some(&(2, 2, Response::Decided(7))));
}

/// §2.4: two proposers can preempt each other forever; a random backoff makes one win.
#[test]
fn duelling_proposers_eventually_agree_with_backoff() {
    for seed in 0..40 {
        let mut harness = cluster(5, seed);
        harness.loss_per_mille = 50;
        harness.request(0, 1, Request::Propose(100));
        harness.request(1, 2, Request::Propose(200));
        let both_answered = |h: &Harness<Single>| h.replies.len() == 2;
        assert!(
            harness.run_random(200_000, both_answered),
            "seed {seed}: no decision after {} steps",
            harness.steps
        );
        let Response::Decided(first) = harness.replies[0].2;
        let Response::Decided(second) = harness.replies[1].2;
        assert_eq!(first, second, "seed {seed}");
        assert!(first == 100 || first == 200);
    }
}

/// The adversary of §2.4's duel: every write is durable at once, and phase-1 messages, their
/// answers and due timers always go before phase-2 messages. Runs until a node decides or
/// `max_steps` steps were taken; returns whether a node decided.
fn duel(harness: &mut Harness<Single>, max_steps: u64) -> bool {
    let rank = |message: &Message<u64>| match message {
        Message::Prepare { .. } => 0,
        Message::Promise { .. } => 1,
        Message::Rejected { .. } => 2,
        Message::Decided { .. } => 3,
        Message::Accept { .. } => 4,
        Message::Accepted { .. } => 5,
    };
    let decided = |h: &Harness<Single>| h.nodes.iter().flatten().any(|n| n.decided().is_some());
    while harness.steps < max_steps && !decided(harness) {
        for id in 0..3 {
            harness.confirm(id);
        }
        let now = harness.now;
        let due: Vec<u64> = (0..3)
            .filter(|&id| harness.node(id).next_deadline().is_some_and(|d| d <= now))
            .collect();
        if !due.is_empty() {
            for id in due {
                harness.step(id, Input::Tick);
            }
            continue;
        }
        let next = (0..harness.network.len()).min_by_key(|&i| rank(&harness.network[i].message));
        match next {
            Some(position) => harness.deliver(position),
            None => {
                if !harness.advance() {
                    break;
                }
            }
        }
    }
    decided(harness)
}

/// §2.4: "two proposers each keep issuing a sequence of proposals with increasing numbers,
/// none of which are ever chosen". Without backoff a preempted proposer retries at once, and
/// the duel schedule preempts every proposal before its phase 2 lands: nothing is ever chosen
/// while the ballots climb. With the randomized backoff, the same adversary cannot keep up: the
/// preempted proposer waits, the other's phase 2 lands, and a value is chosen.
#[test]
fn duelling_proposers_livelock_without_backoff_and_decide_with_it() {
    let no_backoff = Config {
        backoff_min: 0,
        backoff_max: 0,
        ..Config::default()
    };
    let mut harness = Harness::new(3, no_backoff, 7, checkers());
    harness.request(0, 1, Request::Propose(100));
    harness.request(1, 2, Request::Propose(200));
    assert!(
        !duel(&mut harness, 20_000),
        "a value was chosen despite the duel"
    );
    let promised = harness.node(2).promised().expect("promised a ballot");
    assert!(
        promised.round > 100,
        "the ballots kept climbing: round {}",
        promised.round
    );
    assert!(harness.replies.is_empty());

    for seed in 0..10 {
        let mut harness = cluster(3, seed);
        harness.request(0, 1, Request::Propose(100));
        harness.request(1, 2, Request::Propose(200));
        assert!(
            duel(&mut harness, 20_000),
            "seed {seed}: no decision with backoff"
        );
    }
}

/// §2.3: an acceptor "remembers" its promise across a failure: a restored acceptor rejects a
/// lower ballot, and a promise lost before it was durable was never sent.
#[test]
fn a_crashed_and_restored_acceptor_keeps_its_promise() {
    let mut harness = cluster(3, 3);
    let high = Ballot::new(5, 0);
    let low = Ballot::new(4, 2);
    harness.step(
        1,
        Input::Message {
            from: 0,
            message: Message::Prepare { ballot: high },
        },
    );
    assert!(
        harness.network.is_empty(),
        "the promise waits for its write"
    );
    harness.confirm(1);
    assert_eq!(harness.network.len(), 1);
    harness.network.clear();
    harness.crash(1);
    harness.restart(1);
    assert_eq!(harness.node(1).promised(), Some(high));
    harness.step(
        1,
        Input::Message {
            from: 2,
            message: Message::Prepare { ballot: low },
        },
    );
    assert_eq!(harness.network.len(), 1);
    assert_eq!(
        harness.network[0].message,
        Message::Rejected {
            ballot: low,
            promised: high
        }
    );

    // An unconfirmed promise is lost in a crash, and so is the message that depended on it.
    let higher = Ballot::new(9, 2);
    harness.network.clear();
    harness.step(
        1,
        Input::Message {
            from: 2,
            message: Message::Prepare { ballot: higher },
        },
    );
    harness.crash(1);
    harness.restart(1);
    assert!(harness.network.is_empty());
    assert_eq!(harness.node(1).promised(), Some(high));
}

/// A proposer that restarts picks a ballot above every ballot it used before.
#[test]
fn a_restarted_proposer_never_reuses_a_ballot() {
    let mut harness = cluster(3, 4);
    harness.request(0, 1, Request::Propose(1));
    harness.confirm(0);
    let first = harness.node(0).durable().promised.unwrap();
    harness.crash(0);
    harness.restart(0);
    harness.request(0, 2, Request::Propose(2));
    assert!(harness.node(0).promised().unwrap() > first);
}

/// A proposer adopts the highest-ballot value among its promises (§2.2, P2c).
#[test]
fn a_proposer_adopts_the_highest_accepted_value() {
    let mut harness = cluster(3, 5);
    // Node 2's client proposed 42; its Accept is forged below.
    harness.note_request(2, &Request::Propose(42));
    let old = super::Proposal {
        ballot: Ballot::new(1, 2),
        value: 42,
    };
    harness.step(
        1,
        Input::Message {
            from: 2,
            message: Message::Accept { proposal: old },
        },
    );
    harness.confirm(1);
    harness.network.clear();
    // With node 2 down, every quorum includes node 1.
    harness.crash(2);
    harness.request(0, 1, Request::Propose(7));
    assert!(harness.run_random(10_000, |h| !h.replies.is_empty()));
    assert_eq!(harness.replies[0].2, Response::Decided(42));
}

#[test]
fn the_checker_catches_two_chosen_values() {
    let mut checker = AtMostOneChosen::<u64>::default();
    let apply = |value| {
        vec![Effect::Apply {
            index: 1,
            command: value,
        }]
    };
    assert!(ClusterInvariant::<Single>::check(&mut checker, &[], 0, &apply(1)).is_ok());
    assert!(ClusterInvariant::<Single>::check(&mut checker, &[], 1, &apply(1)).is_ok());
    let violation = ClusterInvariant::<Single>::check(&mut checker, &[], 2, &apply(2));
    assert!(violation.is_err());
}

/// A value learned that no client proposed is caught (a forged `Decided` message, here).
#[test]
#[should_panic(expected = "which no client proposed")]
fn the_checker_catches_a_learned_value_nobody_proposed() {
    let mut harness = cluster(3, 8);
    harness.request(0, 1, Request::Propose(5));
    harness.step(
        2,
        Input::Message {
            from: 1,
            message: Message::Decided { value: 6 },
        },
    );
}

#[test]
fn malformed_messages_do_not_panic() {
    let mut harness = cluster(3, 6);
    // The forged `Decided` below carries 3: as if some client had proposed it.
    harness.note_request(1, &Request::Propose(3));
    let odd = [
        Message::Promise {
            ballot: Ballot::new(u64::MAX, 9),
            accepted: None,
        },
        Message::Accepted {
            ballot: Ballot::default(),
        },
        Message::Rejected {
            ballot: Ballot::default(),
            promised: Ballot::new(u64::MAX, 0),
        },
        Message::Prepare {
            ballot: Ballot::new(u64::MAX, u64::MAX),
        },
        Message::Decided { value: 3 },
    ];
    for message in odd {
        for from in [0, 1, 7, u64::MAX] {
            harness.step(
                0,
                Input::Message {
                    from,
                    message: message.clone(),
                },
            );
        }
    }
    harness.request(0, 1, Request::Propose(1));
    assert!(harness.node(0).next_deadline().is_none() || harness.node(0).decided().is_some());
}
