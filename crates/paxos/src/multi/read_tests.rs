//! Reads without log writes (the `read` module): read index, and leader leases.

use concord_core::time::MILLISECOND;
use concord_core::{Input, KvOperation, KvResult, KvStateMachine, Node, NodeId, RequestId, Value};

use super::test_support::{leader, settle, Kv};
use super::tests::campaign;
use super::{
    invariants, Accepted, Config, Entry, Message, PaxosError, ReadMode, Request, Response,
};
use crate::testing::Harness;
use crate::Ballot;

fn cluster(size: u64, config: Config, seed: u64) -> Harness<Kv> {
    Harness::new(size, config, seed, invariants::<KvStateMachine>())
}

fn lease_config() -> Config {
    Config {
        read_mode: ReadMode::Lease,
        ..Config::default()
    }
}

fn write(key: &str, value: i64) -> Request<KvOperation, KvOperation> {
    Request::Propose(KvOperation::Write {
        key: key.into(),
        value,
    })
}

fn read(key: &str) -> Request<KvOperation, KvOperation> {
    Request::Read(KvOperation::Read { key: key.into() })
}

/// Delivers every message (those over cut links are lost) and confirms every write, without
/// letting time pass, until nothing is left.
fn quiesce(harness: &mut Harness<Kv>) {
    for _ in 0..100_000 {
        for id in 0..harness.nodes.len() as NodeId {
            harness.confirm(id);
        }
        if harness.network.is_empty() {
            return;
        }
        harness.deliver(0);
    }
    panic!("the network never quiets down");
}

fn reply(harness: &Harness<Kv>, id: RequestId) -> Option<&Response<KvResult>> {
    harness
        .replies
        .iter()
        .find(|(_, request, _)| *request == id)
        .map(|(_, _, response)| response)
}

/// The read rounds of the empty `Accept`s (probes) `from` has sent, by destination.
fn probes(harness: &Harness<Kv>, from: NodeId) -> Vec<(NodeId, u64)> {
    harness
        .network
        .iter()
        .filter(|e| e.from == from)
        .filter_map(|e| match &e.message {
            Message::Accept {
                entries,
                read_round,
                ..
            } if entries.is_empty() => Some((e.to, *read_round)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_read_takes_no_slot_and_sees_every_acknowledged_write() {
    let mut harness = cluster(3, Config::default(), 1);
    let chief = settle(&mut harness);
    harness.request(chief, 1, write("k", 5));
    quiesce(&mut harness);
    let Some(Response::Applied { slot: written, .. }) = reply(&harness, 1).cloned() else {
        panic!("the write was not applied: {:?}", harness.replies);
    };
    let last = harness.node(chief).status().log_length;
    harness.request(chief, 2, read("k"));
    quiesce(&mut harness);
    assert_eq!(
        reply(&harness, 2),
        Some(&Response::Read {
            slot: written,
            output: KvResult::Read(Some(Value::Int(5)))
        })
    );
    assert_eq!(
        harness.node(chief).status().log_length,
        last,
        "a slot taken"
    );
    assert!((1..=last).all(|slot| !matches!(
        harness.node(chief).entry(slot).unwrap().entry,
        Entry::Read(_)
    )));
}

#[test]
fn a_read_waits_for_a_quorum_round_begun_after_it_arrived() {
    let mut harness = cluster(3, Config::default(), 2);
    let chief = settle(&mut harness);
    let ballot = harness.node(chief).ballot().unwrap();
    let decided = harness.node(chief).decided();
    harness.request(chief, 1, read("k"));
    assert_eq!(reply(&harness, 1), None, "answered before any round");
    // The leader begins a round: an empty Accept to each follower.
    let sent = probes(&harness, chief);
    assert_eq!(sent.len(), 2, "{:?}", harness.network);
    let (follower, round) = sent[0];
    assert!(sent.iter().all(|&(_, r)| r == round));
    let echo = |read_round| Input::Message {
        from: follower,
        message: Message::Accepted {
            ballot,
            prefix: decided,
            gap: false,
            read_round,
        },
    };
    // An echo of an earlier round (sent before the read arrived) confirms nothing.
    harness.step(chief, echo(round - 1));
    assert_eq!(reply(&harness, 1), None, "confirmed by an earlier round");
    // One follower's echo of the new round makes a quorum with the leader.
    harness.step(chief, echo(round));
    assert_eq!(
        reply(&harness, 1),
        Some(&Response::Read {
            slot: decided,
            output: KvResult::Read(None)
        })
    );
}

/// The read index is no lower than the slots the leader adopted in phase 1: a value chosen
/// under an earlier ballot, not yet decided by the new leader, is read.
#[test]
fn a_new_leader_reads_at_or_above_every_slot_it_adopted() {
    let mut harness = cluster(3, Config::default(), 3);
    campaign(&mut harness, 0, 1);
    let ballot = harness.node(0).ballot().unwrap();
    let command = KvOperation::Write {
        key: "z".into(),
        value: 9,
    };
    // Node 1 led ballot (0, 1) with this client command; the promise is forged.
    harness.note_request(1, &Request::Propose(command.clone()));
    let chosen = Accepted {
        ballot: Ballot::new(0, 1),
        entry: Entry::Command(command),
    };
    let promise = Message::Promise {
        ballot,
        snapshot: None,
        accepted: vec![(2, chosen)],
    };
    harness.step(
        0,
        Input::Message {
            from: 1,
            message: promise,
        },
    );
    assert!(harness.node(0).is_leader());
    assert_eq!(harness.node(0).decided(), 0);
    harness.request(0, 1, read("z"));
    assert_eq!(reply(&harness, 1), None);
    quiesce(&mut harness);
    let Some(Response::Read { slot, output }) = reply(&harness, 1) else {
        panic!("not read: {:?}", harness.replies);
    };
    assert!(*slot >= 2);
    assert_eq!(*output, KvResult::Read(Some(Value::Int(9))));
}

/// A leader unaware that a higher ballot took over (and decided a write) never answers a read
/// from its stale state: its round is rejected, and the read fails.
#[test]
fn a_superseded_leader_never_serves_a_stale_read() {
    let mut harness = cluster(3, Config::default(), 4);
    let chief = settle(&mut harness);
    let old = harness.node(chief).ballot().unwrap();
    let others: Vec<NodeId> = (0..3).filter(|&id| id != chief).collect();
    let (usurper, voter) = (others[0], others[1]);
    // `usurper` takes over with `voter` while cut off from the old leader.
    for &other in &others {
        harness.cut.insert((chief, other));
        harness.cut.insert((other, chief));
    }
    let higher = Ballot::in_epoch(old.epoch, old.round + 5, usurper);
    harness.nodes[usurper as usize]
        .as_mut()
        .unwrap()
        .stand_with(higher);
    campaign(&mut harness, usurper, voter);
    quiesce(&mut harness);
    assert!(harness.node(usurper).is_leader());
    assert!(
        harness.node(chief).is_leader(),
        "the old leader knows nothing"
    );
    harness.request(usurper, 1, write("k", 7));
    quiesce(&mut harness);
    assert!(matches!(reply(&harness, 1), Some(Response::Applied { .. })));
    // The old leader's state misses the write; its read round is rejected.
    harness.heal();
    harness.request(chief, 2, read("k"));
    quiesce(&mut harness);
    assert_eq!(
        reply(&harness, 2),
        Some(&Response::Failed(PaxosError::NotLeader { leader: None }))
    );
    assert!(!harness.node(chief).is_leader());
}

#[test]
fn a_lone_node_serves_reads_at_once() {
    let mut harness = cluster(1, Config::default(), 5);
    let chief = settle(&mut harness);
    harness.request(chief, 1, write("k", 1));
    quiesce(&mut harness);
    harness.request(chief, 2, read("k"));
    assert!(matches!(
        reply(&harness, 2),
        Some(Response::Read {
            output: KvResult::Read(Some(Value::Int(1))),
            ..
        })
    ));
}

#[test]
fn reads_beyond_the_pending_limit_are_refused_and_followers_redirect() {
    let config = Config {
        max_pending: 1,
        ..Config::default()
    };
    let mut harness = cluster(3, config, 6);
    let chief = settle(&mut harness);
    harness.request(chief, 1, read("k"));
    harness.request(chief, 2, read("k"));
    assert_eq!(
        reply(&harness, 2),
        Some(&Response::Failed(PaxosError::Overloaded))
    );
    let follower = (chief + 1) % 3;
    harness.request(follower, 3, read("k"));
    assert_eq!(
        reply(&harness, 3),
        Some(&Response::Failed(PaxosError::NotLeader {
            leader: Some(chief)
        }))
    );
    quiesce(&mut harness);
    assert!(matches!(reply(&harness, 1), Some(Response::Read { .. })));
}

#[test]
fn under_a_lease_the_leader_answers_without_a_round() {
    let config = lease_config();
    let span = config.lease_duration - config.max_clock_drift;
    let mut harness = cluster(3, config, 7);
    let chief = settle(&mut harness);
    let lease = harness.node(chief).lease_until();
    assert!(
        harness.now < lease && lease <= harness.now + span,
        "now {} lease {lease}",
        harness.now
    );
    harness.request(chief, 1, read("k"));
    assert!(matches!(reply(&harness, 1), Some(Response::Read { .. })));
    assert!(harness.network.is_empty(), "a round for a leased read");
}

#[test]
fn once_the_lease_runs_out_a_read_needs_a_round_again() {
    let mut harness = cluster(3, lease_config(), 8);
    let chief = settle(&mut harness);
    harness.isolate(chief);
    harness.now = harness.node(chief).lease_until();
    harness.request(chief, 1, read("k"));
    assert_eq!(reply(&harness, 1), None);
    assert_eq!(probes(&harness, chief).len(), 2);
    quiesce(&mut harness);
    assert_eq!(reply(&harness, 1), None, "answered without a quorum");
}

/// The acceptor's half of a lease: having acknowledged the leader, it promises no higher
/// ballot for `lease_duration` (without leases it promises at once).
#[test]
fn an_acceptor_promises_no_new_ballot_while_its_lease_holds() {
    for mode in [ReadMode::ReadIndex, ReadMode::Lease] {
        let config = Config {
            read_mode: mode,
            ..Config::default()
        };
        let lease = config.lease_duration;
        let mut harness = cluster(3, config, 9);
        let chief = settle(&mut harness);
        let old = harness.node(chief).ballot().unwrap();
        let follower = (chief + 1) % 3;
        let rival = (chief + 2) % 3;
        let higher = Ballot::in_epoch(old.epoch, old.round + 1, rival);
        let prepare = Input::Message {
            from: rival,
            message: Message::Prepare {
                ballot: higher,
                first_slot: 1,
            },
        };
        harness.step(follower, prepare.clone());
        harness.confirm(follower);
        let promised = harness.node(follower).ballot() == Some(higher);
        assert_eq!(promised, mode == ReadMode::ReadIndex, "{mode:?}");
        if mode == ReadMode::Lease {
            assert!(harness.network.is_empty(), "answered under a lease");
            harness.now += lease;
            harness.step(follower, prepare);
            harness.confirm(follower);
            assert_eq!(harness.node(follower).ballot(), Some(higher));
            assert!(harness
                .network
                .iter()
                .any(|e| matches!(e.message, Message::Promise { .. })));
        }
    }
}

/// A node may have acknowledged a leader just before it crashed: restarted, it waits a lease
/// before promising a new ballot.
#[test]
fn a_restarted_acceptor_promises_no_new_ballot_for_a_lease() {
    let config = lease_config();
    let lease = config.lease_duration;
    let mut harness = cluster(3, config, 10);
    let chief = settle(&mut harness);
    let old = harness.node(chief).ballot().unwrap();
    let follower = (chief + 1) % 3;
    let rival = (chief + 2) % 3;
    harness.crash(follower);
    harness.now += lease;
    harness.restart(follower);
    let higher = Ballot::in_epoch(old.epoch, old.round + 1, rival);
    let prepare = Input::Message {
        from: rival,
        message: Message::Prepare {
            ballot: higher,
            first_slot: 1,
        },
    };
    harness.step(follower, prepare.clone());
    assert_ne!(harness.node(follower).ballot(), Some(higher));
    harness.now += lease;
    harness.step(follower, prepare);
    assert_eq!(harness.node(follower).ballot(), Some(higher));
}

/// Leases cost availability, not progress: after the leader fails, another is elected (once
/// the acceptors' promises run out) and reads and writes go on.
#[test]
fn after_a_leader_fails_under_leases_another_is_elected() {
    let mut harness = cluster(3, lease_config(), 11);
    let chief = settle(&mut harness);
    harness.request(chief, 1, write("k", 3));
    quiesce(&mut harness);
    harness.crash(chief);
    let successor = settle(&mut harness);
    assert_ne!(successor, chief);
    harness.request(successor, 2, read("k"));
    quiesce(&mut harness);
    harness.run_for(100 * MILLISECOND);
    assert!(matches!(
        reply(&harness, 2),
        Some(Response::Read {
            output: KvResult::Read(Some(Value::Int(3))),
            ..
        })
    ));
}

/// The classic lease hazard: a leader freezes (a long pause), the others carry on, and it
/// resumes believing its lease. Here the lease (1 s) outlasts the time ballot leader election
/// takes to replace a leader, so only the acceptors' promise stops the others from electing a
/// new leader and deciding writes the frozen one would not see.
#[test]
fn a_frozen_leader_resumes_inside_its_lease_and_nothing_was_decided_meanwhile() {
    let config = Config {
        read_mode: ReadMode::Lease,
        lease_duration: 1000 * MILLISECOND,
        max_clock_drift: 250 * MILLISECOND,
        ..Config::default()
    };
    let mut harness = cluster(3, config, 12);
    let chief = settle(&mut harness);
    harness.request(chief, 1, write("k", 1));
    quiesce(&mut harness);
    harness.run_for(10 * MILLISECOND);
    let lease = harness.node(chief).lease_until();
    let decided = harness.node(chief).decided();
    let frozen = harness.nodes[chief as usize].take();
    // The others go on without it for as long as its lease holds: nobody leads, nothing new is
    // decided (ballot leader election alone would have elected a leader by half-way).
    let mut write_id = 10;
    while harness.now + 20 * MILLISECOND < lease {
        harness.run_for(20 * MILLISECOND);
        if let Some(other) = leader(&harness) {
            panic!("node {other} leads at {} inside the lease", harness.now);
        }
        for id in (0..3).filter(|&id| id != chief) {
            write_id += 1;
            harness.request(id, write_id, write("k", 2));
            assert!(harness.node(id).decided() <= decided);
        }
    }
    // It resumes inside its lease and answers from its own state: still current.
    harness.nodes[chief as usize] = frozen;
    assert!(harness.now < harness.node(chief).lease_until());
    harness.request(chief, 2, read("k"));
    assert!(matches!(
        reply(&harness, 2),
        Some(Response::Read {
            output: KvResult::Read(Some(Value::Int(1))),
            ..
        })
    ));
    // Afterwards the cluster goes on deciding.
    let next = settle(&mut harness);
    harness.request(next, 3, write("k", 3));
    quiesce(&mut harness);
    assert!(matches!(reply(&harness, 3), Some(Response::Applied { .. })));
}
