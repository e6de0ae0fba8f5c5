//! Multi-Paxos scenarios: election, streaming, hole filling, durability, faults.

use concord_core::{Input, KvOperation, KvOutcome, KvService, KvStateMachine, Node, Role};

use super::test_support::{leader, settle, Kv};
use super::{
    invariants, Config, Configuration, Entry, Message, ReadMode, Request, Response, Snapshot,
};
use crate::testing::Harness;
use crate::Ballot;

fn cluster(size: u64, seed: u64) -> Harness<Kv> {
    Harness::new(
        size,
        Config::default(),
        seed,
        invariants::<KvStateMachine>(),
    )
}

fn write(key: &str, value: i64) -> KvOperation {
    KvOperation::Write {
        key: key.into(),
        value,
    }
}

fn elect(harness: &mut Harness<Kv>) -> u64 {
    assert!(harness.run_random(100_000, |h| leader(h).is_some_and(|l| {
        h.network.is_empty() && h.node(l).status().role == Role::Leader
    })));
    leader(harness).unwrap()
}

/// Makes node `id` campaign: a heartbeat round in which only `peer` answers (not
/// quorum-connected itself, so `id`'s ballot is the highest among quorum-connected nodes).
pub(super) fn campaign(harness: &mut Harness<Kv>, id: u64, peer: u64) {
    harness.network.clear();
    harness.now = harness.node(id).next_deadline().unwrap();
    harness.step(id, Input::Tick);
    let round = harness
        .network
        .iter()
        .find_map(|e| match e.message {
            Message::HeartbeatRequest { round } if e.to == peer => Some(round),
            _ => None,
        })
        .expect("a heartbeat request to the peer");
    harness.network.clear();
    let reply = Message::HeartbeatReply {
        round,
        ballot: Ballot::new(0, peer),
        quorum_connected: false,
        follows: None,
    };
    harness.step(
        id,
        Input::Message {
            from: peer,
            message: reply,
        },
    );
    harness.now = harness.node(id).next_deadline().unwrap();
    harness.step(id, Input::Tick);
    assert_eq!(harness.node(id).status().role, Role::Candidate);
}

#[test]
fn a_leader_is_elected_and_commands_apply_in_slot_order_everywhere() {
    let mut harness = cluster(3, 1);
    let chief = elect(&mut harness);
    for i in 0..20 {
        harness.request(chief, i, Request::Propose(write("x", i as i64)));
    }
    let all_applied = |h: &Harness<Kv>| h.applied.iter().all(|a| a.len() == 20);
    assert!(harness.run_random(100_000, all_applied));
    for applied in &harness.applied {
        let values: Vec<_> = applied.iter().map(|(_, c)| c.clone()).collect();
        assert_eq!(values, (0..20).map(|i| write("x", i)).collect::<Vec<_>>());
        assert!(applied.windows(2).all(|w| w[0].0 < w[1].0), "slot order");
    }
    assert!(harness.run_random(100_000, |h| h.replies.len() == 20));
    let status = harness.node(chief).status();
    assert_eq!(status.role, Role::Leader);
    assert_eq!(status.leader, Some(chief));
    assert!(status.commit_index >= 20);
    assert_eq!(status.peers.len(), 2);
}

#[test]
fn reads_go_through_the_log_in_log_mode() {
    let config = Config {
        read_mode: ReadMode::Log,
        ..Config::default()
    };
    let mut harness = Harness::new(3, config, 2, invariants::<KvStateMachine>());
    let chief = elect(&mut harness);
    harness.request(chief, 1, Request::Propose(write("k", 5)));
    harness.request(
        chief,
        2,
        Request::Read(KvOperation::Read { key: "k".into() }),
    );
    assert!(harness.run_random(100_000, |h| h.replies.len() == 2));
    let (_, _, response) = &harness.replies[1];
    assert_eq!(
        Kv::kv_outcome(response),
        KvOutcome::Ok(concord_core::KvResult::Read(Some(
            concord_core::Value::Int(5)
        )))
    );
    let Response::Applied { slot, .. } = response else {
        panic!("not applied through the log: {response:?}");
    };
    let entry = &harness.node(chief).entry(*slot).unwrap().entry;
    assert!(matches!(entry, Entry::Read(_)), "{entry:?}");
}

#[test]
fn a_follower_asks_to_go_to_the_leader() {
    let mut harness = cluster(3, 3);
    let chief = elect(&mut harness);
    let other = (chief + 1) % 3;
    harness.confirm(other);
    harness.request(other, 9, Request::Propose(write("x", 1)));
    harness.confirm(other);
    let reply = harness.replies.iter().find(|(_, id, _)| *id == 9).unwrap();
    assert_eq!(
        Kv::kv_outcome(&reply.2),
        KvOutcome::NotLeader {
            leader: Some(chief)
        }
    );
}

/// A follower persists accepted entries before it acknowledges them.
#[test]
fn followers_persist_accepted_entries_before_acknowledging() {
    let mut harness = cluster(3, 4);
    let ballot = Ballot::new(1, 0);
    harness.step(
        1,
        Input::Message {
            from: 0,
            message: Message::Accept {
                ballot,
                prev: 0,
                entries: vec![Entry::Command(write("a", 1))],
                decided: 0,
                read_round: 0,
            },
        },
    );
    assert!(
        harness.network.is_empty(),
        "the acknowledgement waits for the write"
    );
    harness.confirm(1);
    assert_eq!(
        harness.network[0].message,
        Message::Accepted {
            ballot,
            prefix: 1,
            gap: false,
            read_round: 0
        }
    );
    assert_eq!(harness.storage[1].log.len(), 1);
}

/// PMMC: a new leader adopts the highest-ballot value of every slot and fills holes with no-ops.
#[test]
fn a_new_leader_adopts_accepted_values_and_fills_holes_with_noops() {
    let mut harness = cluster(3, 5);
    // Node 0 campaigns; node 1 reports slot 2 accepted at an old ballot and nothing at slot 1,
    // and node 0 itself accepted slot 2 at an even older ballot.
    harness.step(
        0,
        Input::Message {
            from: 2,
            message: Message::Accept {
                ballot: Ballot::new(1, 2),
                prev: 0,
                entries: vec![
                    Entry::Command(write("y", 1)),
                    Entry::Command(write("old", 0)),
                ],
                decided: 0,
                read_round: 0,
            },
        },
    );
    harness.confirm(0);
    campaign(&mut harness, 0, 1);
    let ballot = harness.node(0).ballot().unwrap();
    let newer = super::Accepted {
        ballot: Ballot::new(2, 1),
        entry: Entry::Command(write("z", 9)),
    };
    let later = super::Accepted {
        ballot: Ballot::new(2, 1),
        entry: Entry::Command(write("w", 3)),
    };
    harness.step(
        0,
        Input::Message {
            from: 1,
            message: Message::Promise {
                ballot,
                snapshot: None,
                accepted: vec![(2, newer), (4, later)],
            },
        },
    );
    let node = harness.node(0);
    assert!(node.is_leader());
    assert_eq!(node.entry(1).unwrap().entry, Entry::Command(write("y", 1)));
    assert_eq!(node.entry(2).unwrap().entry, Entry::Command(write("z", 9)));
    assert_eq!(node.entry(3).unwrap().entry, Entry::Noop);
    assert_eq!(node.entry(4).unwrap().entry, Entry::Command(write("w", 3)));
    assert!((1..=4).all(|slot| node.entry(slot).unwrap().ballot == ballot));
}

/// Random delivery order, message loss, crashes and restarts: the invariants hold after every
/// step and the cluster keeps making progress.
#[test]
fn random_faults_keep_every_invariant() {
    for seed in 0..12 {
        let mut harness = cluster(5, seed);
        harness.loss_per_mille = 30;
        let mut request = 0;
        for round in 0..30u64 {
            if let Some(chief) = leader(&harness) {
                for _ in 0..3 {
                    request += 1;
                    harness.request(chief, request, Request::Propose(write("k", request as i64)));
                }
            }
            if round % 7 == 3 {
                let victim = round % 5;
                harness.crash(victim);
                harness.run_random(300, |_| false);
                harness.restart(victim);
            }
            harness.run_random(500, |_| false);
        }
        harness.loss_per_mille = 0;
        let progressed =
            |h: &Harness<Kv>| h.nodes.iter().flatten().filter(|n| n.decided() > 0).count() >= 3;
        assert!(
            harness.run_random(200_000, progressed),
            "seed {seed}: no progress"
        );
    }
}

#[test]
fn malformed_messages_do_not_panic() {
    let mut harness = cluster(3, 6);
    let huge = Ballot::new(u64::MAX, 1);
    let odd = vec![
        Message::Accept {
            ballot: huge,
            prev: u64::MAX,
            entries: vec![Entry::Noop],
            decided: u64::MAX,
            read_round: u64::MAX,
        },
        Message::Accept {
            ballot: Ballot::new(3, 2),
            prev: 0,
            entries: vec![],
            decided: u64::MAX,
            read_round: u64::MAX,
        },
        Message::Prepare {
            ballot: Ballot::new(5, 7),
            first_slot: u64::MAX,
        },
        Message::Accepted {
            ballot: huge,
            prefix: u64::MAX,
            gap: true,
            read_round: u64::MAX,
        },
        Message::Promise {
            ballot: huge,
            snapshot: None,
            accepted: vec![],
        },
        Message::Rejected {
            ballot: huge,
            promised: Ballot::default(),
        },
        Message::InstallSnapshot {
            ballot: huge,
            read_round: 0,
            snapshot: Snapshot {
                slot: u64::MAX,
                configuration: Configuration::new(0, &[0, 1, 2]),
                data: b"{}".to_vec(),
            },
        },
        Message::InstallSnapshot {
            ballot: Ballot::new(7, 2),
            read_round: 0,
            snapshot: Snapshot {
                slot: 5,
                configuration: Configuration::new(0, &[0, 1, 2]),
                data: b"not a snapshot".to_vec(),
            },
        },
        Message::HeartbeatReply {
            round: u64::MAX,
            ballot: huge,
            quorum_connected: true,
            follows: Some(huge),
        },
    ];
    for message in odd {
        for from in [1, 2, 9] {
            harness.step(
                0,
                Input::Message {
                    from,
                    message: message.clone(),
                },
            );
        }
    }
    harness.request(0, 1, Request::Propose(write("x", 1)));
    harness.confirm(0);
    assert!(matches!(
        harness.replies.last(),
        Some((0, 1, Response::Failed(_)))
    ));
}

/// Proposes at the leader and lets exactly one follower acknowledge; returns whether the slot
/// was decided.
fn decided_with_one_acknowledgement(config: Config) -> bool {
    let mut harness = Harness::new(5, config, 8, invariants::<KvStateMachine>());
    let chief = settle(&mut harness);
    let follower = (chief + 1) % 5;
    let before = harness.node(chief).decided();
    harness.request(chief, 1, Request::Propose(write("x", 1)));
    harness.confirm(chief);
    let accept = harness
        .network
        .iter()
        .position(|e| e.to == follower && matches!(e.message, Message::Accept { .. }))
        .expect("an Accept to the follower");
    harness.deliver(accept);
    harness.confirm(follower);
    let acknowledgement = harness
        .network
        .iter()
        .position(|e| e.from == follower && matches!(e.message, Message::Accepted { .. }))
        .expect("the follower's Accepted");
    harness.deliver(acknowledgement);
    harness.node(chief).decided() > before
}

/// Flexible Paxos: with a phase-2 quorum of 2 out of 5, the leader and one follower decide a
/// slot; with majorities they do not.
#[test]
fn a_phase2_quorum_of_two_decides_with_one_acknowledgement() {
    assert!(decided_with_one_acknowledgement(
        Config::with_quorums(5, 4, 2).unwrap()
    ));
    assert!(!decided_with_one_acknowledgement(Config::default()));
}

/// Makes node 0 of five campaign (every peer answers its heartbeats) and feeds it promises one
/// at a time; returns how many, its own included, made it leader.
fn promises_to_lead(config: Config) -> usize {
    let mut harness = Harness::new(5, config, 9, invariants::<KvStateMachine>());
    let id = 0;
    harness.now = harness.node(id).next_deadline().unwrap();
    harness.step(id, Input::Tick);
    let requests: Vec<_> = std::mem::take(&mut harness.network);
    for envelope in requests {
        let Message::HeartbeatRequest { round } = envelope.message else {
            continue;
        };
        let reply = Message::HeartbeatReply {
            round,
            ballot: Ballot::new(0, envelope.to),
            quorum_connected: false,
            follows: None,
        };
        harness.step(
            id,
            Input::Message {
                from: envelope.to,
                message: reply,
            },
        );
    }
    harness.now = harness.node(id).next_deadline().unwrap();
    harness.step(id, Input::Tick);
    harness.confirm(id);
    let ballot = harness.node(id).ballot().unwrap();
    let mut promises = 1;
    for from in 1..5 {
        if harness.node(id).is_leader() {
            break;
        }
        harness.step(
            id,
            Input::Message {
                from,
                message: Message::Promise {
                    ballot,
                    snapshot: None,
                    accepted: vec![],
                },
            },
        );
        promises += 1;
    }
    assert!(harness.node(id).is_leader());
    promises
}

/// Flexible Paxos: with a phase-1 quorum of 4 out of 5 a candidate needs three promises besides
/// its own; with majorities two.
#[test]
fn a_phase1_quorum_of_four_needs_four_promises() {
    assert_eq!(promises_to_lead(Config::with_quorums(5, 4, 2).unwrap()), 4);
    assert_eq!(promises_to_lead(Config::default()), 3);
}

/// The nontriviality checker fails when a command is decided that no client was seen proposing
/// (here: a request handed to the leader behind the checker's back).
#[test]
#[should_panic(expected = "which no client proposed")]
fn the_checker_catches_a_chosen_command_nobody_proposed() {
    let mut harness = cluster(3, 9);
    let chief = elect(&mut harness);
    harness.request(chief, 1, Request::Propose(write("seen", 1)));
    harness.step(
        chief,
        Input::Request {
            id: 2,
            request: Request::Propose(write("unseen", 2)),
        },
    );
    harness.run_random(100_000, |h| h.replies.len() == 2);
}
