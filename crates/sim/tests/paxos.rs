//! Multi-Paxos in the simulator: a 5-node `MultiPaxos<KvStateMachine>` cluster under the
//! simulator's key-value workload and faults, with the Paxos safety checkers run after every
//! step and every client history checked for linearizability. Reads take the read-index path
//! unless a test picks another `ReadMode`; an observer counts which path served them.

use std::sync::{Arc, Mutex};

use concord_check::{check_linearizability, RegisterModel, Verdict};
use concord_core::time::SECOND;
use concord_core::{ClusterInvariant, Effect, EffectOf, KvStateMachine, NodeId, Violation};
use concord_paxos::multi::{invariants, Config, Entry, MultiPaxos, ReadMode, Response, Write};
use concord_sim::{run_protocol, FaultSelection, SimOptions};

type Paxos = MultiPaxos<KvStateMachine>;

/// How a run's reads were served.
#[derive(Clone, Copy, Debug, Default)]
struct ReadCounts {
    /// Answered with `Response::Read`: no slot taken.
    unlogged: u64,
    /// `Entry::Read`s persisted (by leader and followers alike).
    logged: u64,
    /// Steps after which the stepped node held a lease.
    leased: u64,
}

/// Not a safety property: an observer, run beside the checkers, counting how reads were served.
#[derive(Debug, Default)]
struct ReadPaths {
    counts: Arc<Mutex<ReadCounts>>,
}

impl ClusterInvariant<Paxos> for ReadPaths {
    fn name(&self) -> &'static str {
        "read-paths"
    }

    fn check(
        &mut self,
        nodes: &[Option<&Paxos>],
        stepped: NodeId,
        effects: &[EffectOf<Paxos>],
    ) -> Result<(), Violation> {
        let mut counts = self.counts.lock().unwrap();
        for effect in effects {
            match effect {
                Effect::Reply {
                    response: Response::Read { .. },
                    ..
                } => counts.unlogged += 1,
                Effect::Persist {
                    write: Write::Accept { entries, .. },
                    ..
                } => {
                    let reads = entries.iter().filter(|e| matches!(e, Entry::Read(_)));
                    counts.logged += reads.count() as u64;
                }
                _ => {}
            }
        }
        let node = nodes.get(stepped as usize).copied().flatten();
        if node.is_some_and(|node| node.lease_until() > 0) {
            counts.leased += 1;
        }
        Ok(())
    }
}

fn check_seed(seed: u64, faults: FaultSelection) {
    check_seed_with(seed, faults, Config::default());
}

fn check_seed_with(seed: u64, faults: FaultSelection, config: Config) -> ReadCounts {
    let options = SimOptions {
        seed,
        duration: 8 * SECOND,
        ops: 100,
        faults,
        ..SimOptions::default()
    };
    let observer = ReadPaths::default();
    let counts = Arc::clone(&observer.counts);
    let mut checkers = invariants::<KvStateMachine>();
    checkers.push(Box::new(observer));
    let report = run_protocol::<Paxos>(&options, config, checkers).unwrap();
    if let Some(failure) = &report.failure {
        panic!(
            "seed {seed}: invariant '{}' violated at step {}: {}",
            failure.invariant, failure.step, failure.detail
        );
    }
    let verdict = check_linearizability(&report.history, &RegisterModel, None).unwrap();
    assert!(
        verdict.verdict == Verdict::Linearizable,
        "seed {seed}: history not linearizable: {:?}",
        verdict.verdict
    );
    assert!(report.converged, "seed {seed} did not converge");
    assert!(
        report.history_summary.ok > 0,
        "seed {seed}: no operation succeeded"
    );
    let counts = *counts.lock().unwrap();
    counts
}

fn sweep(seeds: std::ops::Range<u64>, faults: FaultSelection, config: &Config) -> ReadCounts {
    let mut total = ReadCounts::default();
    for seed in seeds {
        let counts = check_seed_with(seed, faults.clone(), config.clone());
        total.unlogged += counts.unlogged;
        total.logged += counts.logged;
        total.leased += counts.leased;
    }
    total
}

#[test]
fn multi_paxos_without_faults_is_safe_and_linearizable() {
    for seed in 0..5 {
        check_seed(seed, FaultSelection::None);
    }
}

/// 500 seeds, every fault the simulator injects (larger sweeps: `concord sweep --algorithm paxos`).
#[test]
fn multi_paxos_with_all_faults_is_safe_and_linearizable() {
    for seed in 0..500 {
        check_seed(seed, FaultSelection::All);
    }
}

/// Flexible Paxos (Howard et al. 2016): phase-1 quorums of 4 and phase-2 quorums of 2 out of 5
/// intersect, so the cluster stays safe and linearizable under every fault, and decides.
#[test]
fn multi_paxos_with_flexible_quorums_is_safe_and_linearizable() {
    let config = Config::with_quorums(5, 4, 2).unwrap();
    for seed in 0..100 {
        check_seed_with(seed, FaultSelection::All, config.clone());
    }
}

/// Snapshots every 8 slots under every fault: compaction, snapshot transfer and snapshots in
/// promises keep every checker (including `snapshots-agree`) and linearizability.
#[test]
fn multi_paxos_with_frequent_snapshots_is_safe_and_linearizable() {
    let config = Config {
        snapshot_threshold: 8,
        ..Config::default()
    };
    for seed in 0..200 {
        check_seed_with(seed, FaultSelection::All, config.clone());
    }
}

/// The workload's reads (`Request::Read`, from `KvService::kv_request`) take the read-index
/// path by default: answered without a slot, none persisted.
#[test]
fn the_workload_reads_skip_the_log_by_default() {
    let counts = sweep(0..5, FaultSelection::None, &Config::default());
    assert!(counts.unlogged > 0, "{counts:?}");
    assert_eq!(counts.logged, 0, "{counts:?}");
    assert_eq!(counts.leased, 0, "{counts:?}");
}

/// `ReadMode::Log` keeps the old path: every read takes a slot; safe and linearizable under
/// every fault.
#[test]
fn multi_paxos_with_reads_through_the_log_is_safe_and_linearizable() {
    let config = Config {
        read_mode: ReadMode::Log,
        ..Config::default()
    };
    let counts = sweep(0..50, FaultSelection::All, &config);
    assert!(counts.logged > 0, "{counts:?}");
    assert_eq!(counts.unlogged, 0, "{counts:?}");
}

/// Leader leases under every fault, clock drift (rates of 0.9 to 1.1) included: the default
/// drift bound of 50 ms covers it over a 200 ms lease. Also with flexible quorums (4 and 2 of
/// 5), where a lease rests on a phase-2 quorum.
#[test]
fn multi_paxos_with_lease_reads_is_safe_and_linearizable() {
    let config = Config {
        read_mode: ReadMode::Lease,
        ..Config::default()
    };
    let counts = sweep(0..200, FaultSelection::All, &config);
    assert!(counts.unlogged > 0 && counts.leased > 0, "{counts:?}");
    assert_eq!(counts.logged, 0, "{counts:?}");
    let flexible = Config {
        read_mode: ReadMode::Lease,
        ..Config::with_quorums(5, 4, 2).unwrap()
    };
    let counts = sweep(0..50, FaultSelection::All, &flexible);
    assert!(counts.unlogged > 0 && counts.leased > 0, "{counts:?}");
}

/// Leases far longer than an election (1 s, against about 0.4 s for ballot leader election to
/// replace a leader): elections wait for the acceptors' promises to run out. (These sweeps
/// pass even without that promise — the faults rarely let a frozen leader come back inside its
/// lease — so `multi::read_tests::a_frozen_leader_resumes_inside_its_lease_and_nothing_was_decided_meanwhile`
/// pins it.)
#[test]
fn long_leases_are_safe_because_acceptors_keep_their_promise() {
    let config = Config {
        read_mode: ReadMode::Lease,
        lease_duration: SECOND,
        max_clock_drift: SECOND / 4,
        ..Config::default()
    };
    let counts = sweep(0..50, FaultSelection::All, &config);
    assert!(counts.unlogged > 0 && counts.leased > 0, "{counts:?}");
}
