//! Linearizable reads without log writes (thesis §6.4): ReadIndex, forwarded follower reads,
//! and leases (§6.4.1).

mod common;

use common::{kinds, sends};
use concord_core::time::MILLISECOND;
use concord_core::{Input, KvResult, Value};
use concord_raft::testing::Cluster;
use concord_raft::{Config, Message, RaftError, Response};

fn settled(config: Config) -> (Cluster, u64) {
    let mut cluster = Cluster::new(3, config);
    cluster.elect(0);
    cluster.propose(0, "x", 1);
    cluster.deliver_all();
    assert_eq!(cluster.node(0).commit_index(), 2);
    (cluster, 0)
}

fn value(v: i64) -> KvResult {
    KvResult::Read(Some(Value::Int(v)))
}

/// Delivers what is in flight, lets leader 0 send its next heartbeat round, and checks that
/// read `id` of `settled`'s cluster is then answered at read index 2 with x = 1.
fn answer_at_the_leaders_next_round(cluster: &mut Cluster, id: u64) {
    cluster.deliver_all();
    cluster.now += cluster.config.heartbeat_interval;
    cluster.tick(0);
    cluster.deliver_all();
    assert_eq!(
        cluster.reply(id),
        Some(&Response::Read {
            read_index: 2,
            output: value(1)
        })
    );
}

/// §6.4 ReadIndex: the read writes nothing to the log; the leader confirms it is still leader
/// with a heartbeat round acknowledged by a quorum, then answers from its state machine at
/// (at least) the read index.
#[test]
fn read_index_answers_after_a_quorum_heartbeat_round_without_a_log_write() {
    let (mut cluster, leader) = settled(Config::default());
    let last_index = cluster.node(leader).log().last_index();
    let id = cluster.read(leader, "x");
    assert_eq!(
        cluster.node(leader).log().last_index(),
        last_index,
        "nothing logged"
    );
    let heartbeats: Vec<_> = cluster.network.iter().map(|e| e.to).collect();
    assert_eq!(heartbeats, vec![1, 2], "a heartbeat round is sent at once");
    assert_eq!(cluster.reply(id), None);
    cluster.deliver_one();
    cluster.deliver_one();
    assert_eq!(cluster.reply(id), None, "the leader alone is no quorum");
    cluster.deliver_one();
    assert_eq!(
        cluster.reply(id),
        Some(&Response::Read {
            read_index: 2,
            output: value(1)
        })
    );
}

/// §6.4 step 1: a new leader does not know the commit index until it has committed an entry
/// of its term, so reads wait for its no-op to commit.
#[test]
fn read_index_waits_until_the_leader_commits_an_entry_of_its_term() {
    let mut cluster = Cluster::new(3, Config::default());
    cluster.tick_at_deadline(0);
    while !cluster.node(0).is_leader() {
        assert!(cluster.deliver_one());
    }
    // Lose the leader's first AppendEntries: its no-op stays uncommitted for now.
    cluster.drop_messages();
    assert_eq!(cluster.node(0).commit_index(), 0);
    let id = cluster.read(0, "x");
    assert!(
        cluster.network.is_empty(),
        "no round before the term's first commit"
    );
    cluster.now += cluster.config.heartbeat_interval;
    cluster.tick(0);
    cluster.deliver_all();
    assert_eq!(cluster.node(0).commit_index(), 1);
    assert_eq!(
        cluster.reply(id),
        Some(&Response::Read {
            read_index: 1,
            output: KvResult::Read(None)
        })
    );
}

/// §6.4: a deposed leader cut off from the cluster cannot confirm a read; it answers "not
/// leader" once CheckQuorum makes it step down (a read has no effect, so that is definite).
#[test]
fn a_partitioned_leader_does_not_serve_reads() {
    let (mut cluster, leader) = settled(Config::default());
    cluster.isolate(leader);
    let id = cluster.read(leader, "x");
    cluster.run_for(200 * MILLISECOND);
    assert_eq!(cluster.reply(id), None);
    cluster.run_for(2 * cluster.config.election_timeout_max);
    assert_eq!(
        cluster.reply(id),
        Some(&Response::Failed(RaftError::NotLeader { leader: None }))
    );
}

/// §6.4: a follower serves a read by asking the leader for a read index and waiting until it
/// has applied that far.
#[test]
fn a_follower_read_gets_its_read_index_from_the_leader() {
    let (mut cluster, _) = settled(Config::default());
    let id = cluster.read(1, "x");
    assert!(matches!(
        cluster.network.back().map(|e| (e.to, &e.message)),
        Some((0, Message::ReadIndexRequest { .. }))
    ));
    answer_at_the_leaders_next_round(&mut cluster, id);
    let answered_by = cluster
        .replies
        .iter()
        .find(|(_, r, _)| *r == id)
        .map(|(node, _, _)| *node);
    assert_eq!(answered_by, Some(1), "answered by the follower");
}

/// The read id of `messages`, which must be exactly one ReadIndexRequest, to node 0.
fn the_read_index_request_to_0(messages: &[concord_raft::testing::Envelope]) -> u64 {
    match messages {
        [e] => match e.message {
            Message::ReadIndexRequest { read_id } if e.to == 0 => read_id,
            _ => panic!("expected a ReadIndexRequest to node 0, got {e:?}"),
        },
        other => panic!("expected one message, got {other:?}"),
    }
}

fn read_index_requests(cluster: &Cluster) -> usize {
    cluster
        .network
        .iter()
        .filter(|e| matches!(e.message, Message::ReadIndexRequest { .. }))
        .count()
}

/// §6.4, batched: a follower keeps one ReadIndexRequest in flight; the reads that arrive
/// meanwhile leave together in the next one, so reads cost messages per round trip, not per
/// read.
#[test]
fn a_follower_asks_for_one_read_index_per_batch_of_reads() {
    let (mut cluster, leader) = settled(Config::default());
    let first = cluster.read(1, "x");
    let rest: Vec<_> = (0..3).map(|_| cluster.read(1, "x")).collect();
    assert_eq!(read_index_requests(&cluster), 1, "one request in flight");
    let mut asked = 0;
    for _ in 0..200 {
        let Some(front) = cluster.network.front() else {
            cluster.now += cluster.config.heartbeat_interval;
            cluster.tick(leader);
            if cluster.network.is_empty() {
                break;
            }
            continue;
        };
        if matches!(front.message, Message::ReadIndexRequest { .. }) {
            asked += 1;
        }
        cluster.deliver_one();
    }
    for id in std::iter::once(first).chain(rest) {
        assert_eq!(
            cluster.reply(id),
            Some(&Response::Read {
                read_index: 2,
                output: value(1)
            }),
            "read {id}"
        );
    }
    assert_eq!(asked, 2, "the three later reads shared one request");
}

/// A batch in flight to a leader that lost its place is asked for again, of the new leader,
/// instead of waiting out an election timeout.
#[test]
fn a_follower_asks_the_new_leader_again_for_a_batch_in_flight() {
    let (mut cluster, _) = settled(Config::default());
    let id = cluster.read(2, "x");
    the_read_index_request_to_0(&cluster.take_messages());
    // Leadership moves to node 1 while node 2 is cut off; node 2 learns of it from the new
    // leader's first append.
    cluster.isolate(2);
    let transfer = cluster.request(0, concord_raft::Request::TransferLeadership { to: 1 });
    assert_eq!(
        cluster.reply(transfer),
        Some(&Response::TransferStarted { to: 1 })
    );
    cluster.deliver_all();
    assert_eq!(cluster.leader(), Some(1));
    cluster.heal();
    cluster.propose(1, "x", 2);
    for _ in 0..5 {
        cluster.deliver_all();
        cluster.now += cluster.config.heartbeat_interval;
        cluster.tick(1);
    }
    cluster.deliver_all();
    assert_eq!(
        cluster.reply(id),
        Some(&Response::Read {
            read_index: 4,
            output: value(2)
        }),
        "answered through the new leader"
    );
}

/// A lost connection to the leader may have lost the request in flight or its answer: the
/// follower asks again, with a new read id, instead of waiting out an election timeout.
#[test]
fn a_follower_asks_again_when_its_connection_to_the_leader_is_lost() {
    let (mut cluster, _) = settled(Config::default());
    let id = cluster.read(1, "x");
    let lost = the_read_index_request_to_0(&cluster.take_messages());
    cluster.step(1, Input::PeerLost { peer: 0 });
    let again = cluster.take_messages();
    assert_ne!(the_read_index_request_to_0(&again), lost, "a new request");
    cluster.network.extend(again);
    answer_at_the_leaders_next_round(&mut cluster, id);
}

/// A node that knows no leader refuses a read at once.
#[test]
fn a_node_without_a_leader_refuses_reads() {
    let mut cluster = Cluster::new(3, Config::default());
    let id = cluster.read(1, "x");
    assert_eq!(
        cluster.reply(id),
        Some(&Response::Failed(RaftError::NotLeader { leader: None }))
    );
}

/// §6.4.1: with leases on, a leader whose heartbeat round was acknowledged within the lease
/// answers a read immediately, sending nothing; once the lease runs out it falls back to a
/// quorum round.
#[test]
fn lease_reads_are_served_locally_while_the_lease_holds() {
    let config = Config {
        lease_reads: true,
        ..Config::default()
    };
    let (mut cluster, leader) = settled(config);
    cluster.now += cluster.config.heartbeat_interval;
    cluster.tick(leader);
    cluster.deliver_all();
    let effects = cluster.step(
        leader,
        Input::Request {
            id: 99,
            request: concord_raft::Request::Read(concord_core::KvOperation::Read {
                key: "x".into(),
            }),
        },
    );
    assert_eq!(kinds(&effects), ["reply"]);
    assert!(sends(&effects).is_empty());
    assert_eq!(
        cluster.reply(99),
        Some(&Response::Read {
            read_index: 2,
            output: value(1)
        })
    );
    cluster.isolate(leader);
    cluster.now += cluster.config.election_timeout_min;
    let id = cluster.read(leader, "x");
    assert_eq!(cluster.reply(id), None, "the lease expired");
}

/// Thesis §3.10 with §6.4.1: once a leader sends TimeoutNow, voters may elect the target
/// despite stickiness, so the old leader stops serving lease reads for the rest of its term.
#[test]
fn a_leader_gives_up_its_lease_when_it_sends_timeout_now() {
    let config = Config {
        lease_reads: true,
        ..Config::default()
    };
    let (mut cluster, leader) = settled(config);
    cluster.now += cluster.config.heartbeat_interval;
    cluster.tick(leader);
    cluster.deliver_all();
    let transfer = cluster.request(leader, concord_raft::Request::TransferLeadership { to: 1 });
    assert_eq!(
        cluster.reply(transfer),
        Some(&Response::TransferStarted { to: 1 })
    );
    cluster.drop_messages();
    let id = cluster.read(leader, "x");
    assert_eq!(cluster.reply(id), None, "no lease read after TimeoutNow");
}

/// §6.4 with batching: reads that arrive while a round is unconfirmed share the next round,
/// which starts as soon as the unconfirmed one is acknowledged — reads cost messages per
/// round, not per read.
#[test]
fn reads_arriving_during_an_unconfirmed_round_share_the_next_round() {
    let (mut cluster, leader) = settled(Config::default());
    let first = cluster.read(leader, "x");
    assert_eq!(cluster.network.len(), 2, "a round for the first read");
    let second = cluster.read(leader, "x");
    let third = cluster.read(leader, "x");
    assert_eq!(
        cluster.network.len(),
        2,
        "no new round while one is unconfirmed"
    );
    cluster.deliver_one();
    cluster.deliver_one();
    cluster.deliver_one();
    assert!(matches!(cluster.reply(first), Some(Response::Read { .. })));
    assert_eq!(
        cluster.reply(second),
        None,
        "needs a round sent after it arrived"
    );
    let next_round: Vec<u64> = cluster.network.iter().map(|e| e.to).collect();
    assert!(
        next_round.contains(&1) && next_round.contains(&2),
        "{next_round:?}"
    );
    cluster.deliver_all();
    assert!(matches!(cluster.reply(second), Some(Response::Read { .. })));
    assert!(matches!(cluster.reply(third), Some(Response::Read { .. })));
}
