//! Seeded randomized runs: reordered, dropped and duplicated messages, delayed write
//! confirmations, crashes and restarts, partitions, transfers and membership changes, with
//! every local and cluster invariant checked after each step. A failing seed prints itself.

use std::collections::{BTreeMap, BTreeSet};

use concord_core::time::MILLISECOND;
use concord_core::{seeded_rng, KvOperation, KvResult, Rng, Value};
use concord_raft::testing::Cluster;
use concord_raft::{Config, RaftError, Request, Response};
use rand::Rng as _;

fn fuzz_config(rng: &mut Rng) -> Config {
    let check_quorum = rng.gen_bool(0.5);
    Config {
        check_quorum,
        lease_reads: check_quorum && rng.gen_bool(0.5),
        max_inflight_appends: rng.gen_range(1..5),
        max_entries_per_message: rng.gen_range(1..5),
        snapshot_threshold: rng.gen_range(5..40),
        snapshot_chunk_size: rng.gen_range(16..256),
        pre_vote: rng.gen_bool(0.5),
        forward_proposals: rng.gen_bool(0.5),
        ..Config::default()
    }
}

/// Checks that reads are not stale (thesis §6.4): a read must reflect every write whose
/// success was reported before the read was issued. Writes carry unique values, so the value a
/// read returns names the index of the write it saw. Also checks what proposals are told: one
/// answered `Applied { index }` was applied at `index`, and one failed surely (anything but
/// an unknown outcome) is never applied anywhere.
#[derive(Default)]
struct ReadChecker {
    next_value: i64,
    /// Highest index of a write to "k" whose success was reported so far.
    acknowledged: u64,
    /// Per read request: `acknowledged` when it was issued.
    reads: BTreeMap<u64, u64>,
    /// The index each value was written at.
    written_at: BTreeMap<i64, u64>,
    replies_seen: usize,
    applied_seen: Vec<usize>,
    /// Per proposal request: the value it writes.
    proposed: BTreeMap<u64, i64>,
    /// Values of proposals that failed surely.
    refused: BTreeSet<i64>,
}

impl ReadChecker {
    fn observe(&mut self, cluster: &Cluster, seed: u64) {
        self.applied_seen.resize(cluster.applied.len(), 0);
        for (node, applied) in cluster.applied.iter().enumerate() {
            for (index, command) in &applied[self.applied_seen[node]..] {
                match command {
                    KvOperation::Write { key, value } if key == "k" => {
                        self.written_at.insert(*value, *index);
                    }
                    _ => {}
                }
            }
            self.applied_seen[node] = applied.len();
        }
        for (replier, id, response) in &cluster.replies[self.replies_seen..] {
            match response {
                Response::Applied { index, .. } => {
                    self.acknowledged = self.acknowledged.max(*index);
                    if let Some(value) = self.proposed.get(id) {
                        assert_eq!(
                            self.written_at.get(value),
                            Some(index),
                            "seed={seed}: proposal {id} (value {value}) answered by node {replier} as applied at {index}"
                        );
                    }
                }
                Response::Failed(
                    RaftError::OutcomeUnknown { .. } | RaftError::ForwardedOutcomeUnknown { .. },
                ) => {}
                Response::Failed(_) => {
                    if let Some(&value) = self.proposed.get(id) {
                        self.refused.insert(value);
                    }
                }
                Response::Read { output, .. } => {
                    let Some(floor) = self.reads.remove(id) else {
                        continue;
                    };
                    let seen = match output {
                        KvResult::Read(Some(Value::Int(value))) => self.written_at[value],
                        _ => 0,
                    };
                    assert!(
                        seen >= floor,
                        "seed={seed}: read {id} answered by node {replier} ({response:?}) saw the write at index {seen}, but the write at {floor} was acknowledged before it began; config {:?}; nodes {:?}",
                        cluster.config,
                        describe(cluster)
                    );
                }
                _ => {}
            }
        }
        self.replies_seen = cluster.replies.len();
        if let Some(value) = self
            .refused
            .iter()
            .find(|v| self.written_at.contains_key(v))
        {
            panic!(
                "seed={seed}: the proposal of value {value} failed surely, yet was applied at index {}; config {:?}; nodes {:?}",
                self.written_at[value],
                cluster.config,
                describe(cluster)
            );
        }
    }
}

fn random_action(cluster: &mut Cluster, rng: &mut Rng, size: u64, reads: &mut ReadChecker) {
    let node = rng.gen_range(0..size);
    match rng.gen_range(0..100) {
        0..=49 => {
            if cluster.network.is_empty() {
                return;
            }
            let n = rng.gen_range(0..cluster.network.len().min(8));
            match rng.gen_range(0..20) {
                0 => {
                    cluster.network.remove(n);
                }
                1 => {
                    let copy = cluster.network[n].clone();
                    cluster.network.push_back(copy);
                    cluster.deliver_nth(n);
                }
                _ => {
                    cluster.deliver_nth(n);
                }
            }
        }
        50..=64 => {
            cluster.now += rng.gen_range(0..120) * MILLISECOND;
            cluster.tick_due();
        }
        65..=79 => {
            reads.next_value += 1;
            let value = reads.next_value;
            let target = cluster
                .leader()
                .filter(|_| rng.gen_bool(0.8))
                .unwrap_or(node);
            if cluster.nodes[target as usize].is_some() {
                let id = cluster.propose(target, "k", value);
                reads.proposed.insert(id, value);
            }
        }
        80..=84 => {
            if cluster.nodes[node as usize].is_some() {
                let id = cluster.read(node, "k");
                reads.reads.insert(id, reads.acknowledged);
            }
        }
        85..=89 => {
            if cluster.nodes[node as usize].is_some() {
                cluster.confirm_persists(node);
            }
        }
        90..=91 => {
            let down = cluster.nodes.iter().filter(|n| n.is_none()).count() as u64;
            if down < (size - 1) / 2 {
                cluster.crash(node);
            }
        }
        92..=94 => {
            if cluster.nodes[node as usize].is_none() {
                cluster.restart(node);
            }
        }
        95 => cluster.isolate(node),
        96 => cluster.heal(),
        97 => {
            if let Some(leader) = cluster.leader() {
                cluster.request(leader, Request::TransferLeadership { to: node });
            }
        }
        _ => {
            if let Some(leader) = cluster.leader() {
                let voters: BTreeSet<u64> = (0..size).filter(|_| rng.gen_bool(0.7)).collect();
                let learners: BTreeSet<u64> = (0..size).filter(|id| !voters.contains(id)).collect();
                cluster.request(leader, Request::ChangeMembership { voters, learners });
            }
        }
    }
}

fn describe(cluster: &Cluster) -> Vec<String> {
    cluster
        .nodes
        .iter()
        .flatten()
        .map(|node| {
            use concord_core::Node;
            format!(
                "{:?} membership={:?} last_term={} durable={} next_deadline={:?} now={}",
                node.status(),
                node.membership(),
                node.log().last_term(),
                node.durable_index(),
                node.next_deadline(),
                cluster.now
            )
        })
        .collect()
}

fn run_seed(seed: u64) {
    let mut rng = seeded_rng(seed, 1000);
    let size = rng.gen_range(1..=5);
    let config = fuzz_config(&mut rng);
    let mut cluster = Cluster::new(size, config);
    cluster.auto_persist = rng.gen_bool(0.5);
    // Clock rates within 5% of true time: two clocks' rates differ by a factor of at most
    // 1050/950 < 500/450, what the default lease (minimum election timeout 500ms shortened by
    // `max_clock_drift` 50ms) tolerates.
    for rate in &mut cluster.clock_rate {
        *rate = rng.gen_range(950..=1050);
    }
    let mut reads = ReadChecker::default();
    let steps: usize = std::env::var("RAFT_FUZZ_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3_000);
    for _ in 0..steps {
        reads.observe(&cluster, seed);
        random_action(&mut cluster, &mut rng, size, &mut reads);
    }
    reads.observe(&cluster, seed);
    // Heal everything and check that the cluster recovers and makes progress.
    cluster.heal();
    cluster.trace = std::env::var("RAFT_FUZZ_TRACE").is_ok();
    cluster.auto_persist = true;
    for id in 0..size {
        if cluster.nodes[id as usize].is_none() {
            cluster.restart(id);
        } else {
            cluster.confirm_persists(id);
        }
    }
    let all: BTreeSet<u64> = (0..size).collect();
    cluster.run_for(5_000 * MILLISECOND);
    if let Some(leader) = cluster.leader() {
        cluster.request(
            leader,
            Request::ChangeMembership {
                voters: all.clone(),
                learners: BTreeSet::new(),
            },
        );
    }
    cluster.run_for(5_000 * MILLISECOND);
    let leader = cluster.leader().unwrap_or_else(|| {
        panic!(
            "seed={seed}: no leader after healing: {:#?}",
            describe(&cluster)
        )
    });
    let id = cluster.request(
        leader,
        Request::Propose(KvOperation::Write {
            key: "final".into(),
            value: 1,
        }),
    );
    cluster.run_for(5_000 * MILLISECOND);
    assert!(
        matches!(cluster.reply(id), Some(Response::Applied { .. })),
        "seed={seed}: the final proposal was not applied: {:?}",
        cluster.reply(id)
    );
}

#[test]
fn randomized_runs_keep_every_invariant_and_recover() {
    let seeds: u64 = std::env::var("RAFT_FUZZ_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    for seed in 0..seeds {
        let result = std::panic::catch_unwind(|| run_seed(seed));
        if let Err(panic) = result {
            eprintln!("seed={seed} failed; replay with RAFT_FUZZ_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn replay_one_seed() {
    if let Some(seed) = std::env::var("RAFT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        run_seed(seed);
    }
}
