//! Robustness: a node never panics on message content, however corrupt (random terms,
//! indexes, entries, snapshot chunks, read answers). Safety is not expected under such input —
//! Raft tolerates crashes, not lies — so only the node's own invariants are checked.

mod common;

use std::sync::Arc;

use concord_core::{seeded_rng, KvOperation, Rng};
use concord_raft::testing::{Cluster, Envelope, KvMessage};
use concord_raft::{Config, Entry, Membership, Message, Payload, Request, SnapshotMeta};
use rand::Rng as _;

fn small(rng: &mut Rng) -> u64 {
    match rng.gen_range(0..10) {
        0 => 0,
        1 => u64::MAX - rng.gen_range(0..3),
        _ => rng.gen_range(0..40),
    }
}

fn random_entries(rng: &mut Rng) -> Vec<Entry<KvOperation>> {
    let start = small(rng).min(1000);
    let count = rng.gen_range(0..5);
    (0..count)
        .map(|i| Entry {
            index: if rng.gen_bool(0.8) {
                start + i
            } else {
                small(rng)
            },
            term: small(rng),
            payload: match rng.gen_range(0..3) {
                0 => Payload::Noop,
                1 => Payload::Membership(Arc::new(Membership::new([rng.gen_range(0..4)]))),
                _ => Payload::Command(Arc::new(KvOperation::Write {
                    key: "k".into(),
                    value: 1,
                })),
            },
        })
        .collect()
}

fn corrupt(message: &mut KvMessage, rng: &mut Rng) {
    match message {
        Message::RequestVote {
            term,
            last_log_index,
            last_log_term,
            ..
        } => {
            *term = small(rng);
            *last_log_index = small(rng);
            *last_log_term = small(rng);
        }
        Message::RequestVoteResponse { term, granted, .. } => {
            *term = small(rng);
            *granted = rng.gen_bool(0.5);
        }
        Message::AppendEntries {
            term,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            round,
        } => {
            *prev_log_index = small(rng);
            *prev_log_term = small(rng);
            *leader_commit = small(rng);
            *round = small(rng);
            if rng.gen_bool(0.5) {
                *entries = random_entries(rng).into();
            }
            if rng.gen_bool(0.3) {
                *term = small(rng);
            }
        }
        Message::AppendEntriesResponse {
            success,
            index,
            conflict_term,
            conflict_index,
            round,
            ..
        } => {
            *success = rng.gen_bool(0.5);
            *index = small(rng);
            *conflict_term = rng.gen_bool(0.5).then(|| small(rng));
            *conflict_index = small(rng);
            *round = small(rng);
        }
        Message::InstallSnapshot {
            meta,
            offset,
            total,
            data,
            ..
        } => {
            *offset = small(rng);
            *total = small(rng);
            if rng.gen_bool(0.5) {
                *data = Arc::from(&b"garbage"[..]);
            }
            if rng.gen_bool(0.5) {
                *meta = Arc::new(SnapshotMeta {
                    last_index: small(rng),
                    last_term: small(rng),
                    membership: Membership::new([0, 1, 2]),
                });
            }
        }
        Message::InstallSnapshotResponse {
            snapshot_index,
            next_offset,
            done,
            ..
        } => {
            *snapshot_index = small(rng);
            *next_offset = small(rng);
            *done = rng.gen_bool(0.5);
        }
        Message::TimeoutNow { term } => *term = small(rng),
        Message::ReadIndexRequest { read_id } => *read_id = small(rng),
        Message::ReadIndexResponse {
            read_id,
            read_index,
            ..
        } => {
            *read_id = small(rng);
            *read_index = rng.gen_bool(0.5).then(|| small(rng));
        }
        Message::Propose {
            term,
            incarnation,
            first,
            commands,
        } => {
            *first = small(rng);
            if rng.gen_bool(0.3) {
                *term = small(rng);
            }
            if rng.gen_bool(0.3) {
                *incarnation = small(rng);
            }
            if rng.gen_bool(0.2) {
                commands.clear();
            }
        }
        Message::ProposeRejected {
            incarnation,
            first,
            count,
            refusal,
        } => {
            *first = small(rng);
            *count = small(rng);
            if rng.gen_bool(0.3) {
                *incarnation = small(rng);
            }
            if rng.gen_bool(0.3) {
                *refusal = Some(concord_raft::RaftError::Overloaded { pending: 0 });
            }
        }
        Message::Commit { term, commit_index } => {
            *commit_index = small(rng);
            if rng.gen_bool(0.3) {
                *term = small(rng);
            }
        }
    }
}

#[test]
fn corrupted_messages_never_panic_a_node() {
    let seeds: u64 = std::env::var("RAFT_CORRUPTION_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    for seed in 0..seeds {
        let mut rng = seeded_rng(seed, 77);
        let config = Config {
            snapshot_threshold: 5,
            snapshot_chunk_size: 8,
            forward_proposals: true,
            ..Config::default()
        };
        let mut cluster = Cluster::new(3, config);
        cluster.check_cluster_invariants = false;
        for step in 0..2_000 {
            if step % 13 == 0 {
                // To any node: followers forward it.
                cluster.propose(rng.gen_range(0..3), "k", step);
            }
            if let Some(leader) = cluster.leader() {
                if step % 7 == 0 {
                    cluster.propose(leader, "k", step);
                }
                if step % 11 == 0 {
                    cluster.read(leader, "k");
                }
            }
            if cluster.network.is_empty() || rng.gen_bool(0.1) {
                cluster.now += rng.gen_range(0..200_000_000);
                cluster.tick_due();
                continue;
            }
            if rng.gen_bool(0.02) {
                let node = rng.gen_range(0..3);
                let request = match rng.gen_range(0..3) {
                    0 => Request::TransferLeadership {
                        to: small(&mut rng),
                    },
                    1 => Request::ChangeMembership {
                        voters: (0..rng.gen_range(0..3)).map(|_| small(&mut rng)).collect(),
                        learners: (0..rng.gen_range(0..2)).map(|_| small(&mut rng)).collect(),
                    },
                    _ => Request::Read(KvOperation::Read { key: "k".into() }),
                };
                cluster.request(node, request);
            }
            let n = rng.gen_range(0..cluster.network.len());
            let mut envelope: Envelope = cluster.network.remove(n).expect("in range");
            if rng.gen_bool(0.3) {
                corrupt(&mut envelope.message, &mut rng);
            }
            if rng.gen_bool(0.05) {
                envelope.from = small(&mut rng); // a spoofed or unknown sender
            }
            cluster.network.push_front(envelope);
            cluster.deliver_one();
        }
    }
}
