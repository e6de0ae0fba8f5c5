//! The CI seed sweep: 1000 seeds of a 5-node Raft cluster with every fault the simulator can
//! inject drawn from each seed (partitions of every shape, crashes, loss, duplication,
//! reordering, pauses, clock drift), invariants checked after every step, every client
//! history checked for linearizability, and every run required to converge once faults stop.
//!
//! A failure prints its seed and replay command. Larger sweeps run from the CLI:
//! `concord sweep --algorithm raft --seeds 100000 --check`.

use concord_check::{check_linearizability, RegisterModel, Verdict};
use concord_core::time::SECOND;
use std::sync::{Arc, Mutex};

use concord_core::{ClusterInvariant, Effect, EffectOf, KvStateMachine, NodeId, Violation};
use concord_raft::RaftNode;
use concord_sim::{run, run_protocol, FaultSelection, RunReport, SimOptions};

const SEEDS: u64 = 1000;

/// Fails the test, naming the seed and the replay command, unless run `report` kept every
/// invariant, converged and has a linearizable history.
fn check(seed: u64, report: &RunReport) {
    if let Some(failure) = &report.failure {
        panic!(
            "seed {seed}: invariant '{}' violated at step {}: {}\nreplay: {}",
            failure.invariant, failure.step, failure.detail, report.replay
        );
    }
    assert!(
        report.converged,
        "seed {seed} did not converge\nreplay: {}",
        report.replay
    );
    let verdict = check_linearizability(&report.history, &RegisterModel, None).unwrap();
    assert!(
        verdict.verdict == Verdict::Linearizable,
        "seed {seed}: history not linearizable: {:?}\nreplay: {}",
        verdict.verdict,
        report.replay
    );
}

#[test]
fn a_thousand_seeds_with_all_faults_have_no_violation() {
    let mut faults_seen = std::collections::BTreeMap::<String, u64>::new();
    let mut operations_ok = 0;
    let deposed = Arc::new(Mutex::new(ProposalCounts::default()));
    for seed in 0..SEEDS {
        let options = SimOptions {
            seed,
            duration: 8 * SECOND,
            ops: 150,
            faults: FaultSelection::All,
            ..SimOptions::default()
        };
        assert_eq!(options.raft_config(), concord_raft::Config::default());
        let mut checkers = concord_raft::invariants::<KvStateMachine>();
        checkers.push(Box::new(ProposalActivity(Arc::clone(&deposed))));
        let report =
            run_protocol::<RaftNode<KvStateMachine>>(&options, options.raft_config(), checkers)
                .unwrap();
        if seed < 20 {
            // The same run as the CLI's (`concord sweep`), which adds no checker.
            assert_eq!(
                run(&options).unwrap().history,
                report.history,
                "seed {seed}"
            );
        }
        check(seed, &report);
        for fault in &report.faults {
            *faults_seen.entry(fault.clone()).or_default() += 1;
        }
        operations_ok += report.history_summary.ok;
    }
    for kind in [
        "partition",
        "crash",
        "loss",
        "duplicate",
        "reorder",
        "pause",
        "drift",
    ] {
        let runs = faults_seen.get(kind).copied().unwrap_or(0);
        assert!(
            runs >= SEEDS / 10,
            "fault '{kind}' was on in only {runs} of {SEEDS} runs"
        );
    }
    assert!(
        operations_ok > SEEDS * 20,
        "only {operations_ok} operations succeeded"
    );
    // Deposed leaders' proposals met every outcome (crate `concord-raft`, module `deposed`):
    // without forwarding, every proposal a node answers when not leading it took as leader.
    let deposed = *deposed.lock().unwrap();
    eprintln!("{deposed:?}");
    assert!(deposed.answered_not_leading > 10, "{deposed:?}");
    assert!(deposed.superseded > 10, "{deposed:?}");
    assert!(deposed.unknown > 0, "{deposed:?}");
}

/// Snapshots under every fault: the same sweep with a snapshot every 8 applied entries (sent
/// in 64-byte chunks), so compaction, InstallSnapshot to lagging or restarted followers, and
/// restarts from a snapshot happen under partitions, crashes, loss and the rest — and crashes
/// that lose a confirmed snapshot not yet settled (a checkpoint, `Node::is_checkpoint`).
#[test]
fn snapshots_under_all_faults_keep_every_invariant() {
    let activity = Arc::new(Mutex::new((0u64, 0u64)));
    let mut checkpoints_lost = 0;
    for seed in 0..300 {
        let options = SimOptions {
            seed,
            duration: 8 * SECOND,
            ops: 150,
            faults: FaultSelection::All,
            snapshot_every: Some(8),
            ..SimOptions::default()
        };
        let mut checkers = concord_raft::invariants::<KvStateMachine>();
        checkers.push(Box::new(SnapshotActivity(Arc::clone(&activity))));
        let report =
            run_protocol::<RaftNode<KvStateMachine>>(&options, options.raft_config(), checkers)
                .unwrap();
        check(seed, &report);
        checkpoints_lost += report.stats.checkpoints_lost;
    }
    let (compactions, installs) = *activity.lock().unwrap();
    eprintln!(
        "{compactions} snapshots taken, {installs} InstallSnapshot messages, \
         {checkpoints_lost} crashes lost unsettled snapshots"
    );
    assert!(
        checkpoints_lost > 20,
        "only {checkpoints_lost} crashes lost an unsettled snapshot"
    );
    assert!(compactions > 1000, "only {compactions} snapshots taken");
    assert!(
        installs > 10,
        "only {installs} InstallSnapshot messages sent"
    );
}

/// Proposal forwarding under every fault: followers forward what clients send them and answer
/// from their own apply, so forwarded proposals meet partitions, crashes (of the follower, of
/// the leader, between the two), loss, duplication and reordering of `Propose` and `Commit`,
/// and leader changes; half of the runs also snapshot every 8 entries, so installed snapshots
/// swallow forwarded entries.
#[test]
fn forwarded_proposals_under_all_faults_keep_every_invariant() {
    let activity = Arc::new(Mutex::new(ProposalCounts::default()));
    for seed in 0..300 {
        let options = SimOptions {
            seed,
            duration: 8 * SECOND,
            ops: 150,
            faults: FaultSelection::All,
            forward_proposals: true,
            snapshot_every: (seed % 2 == 1).then_some(8),
            ..SimOptions::default()
        };
        assert!(options.replay_command().contains("--forward-proposals"));
        let mut checkers = concord_raft::invariants::<KvStateMachine>();
        checkers.push(Box::new(ProposalActivity(Arc::clone(&activity))));
        let report =
            run_protocol::<RaftNode<KvStateMachine>>(&options, options.raft_config(), checkers)
                .unwrap();
        check(seed, &report);
    }
    let counts = *activity.lock().unwrap();
    eprintln!("{counts:?}");
    assert!(counts.proposes > 1000, "{counts:?}");
    assert!(counts.commits > 1000, "{counts:?}");
    assert!(counts.answered_not_leading > 1000, "{counts:?}");
    assert!(counts.rejected > 0, "{counts:?}");
    assert!(counts.forwarded_unknown > 10, "{counts:?}");
    assert!(counts.superseded > 10, "{counts:?}");
}

/// What became of client proposals, and the forwarding messages sent, in a sweep.
#[derive(Clone, Copy, Debug, Default)]
struct ProposalCounts {
    /// `Propose` messages sent.
    proposes: u64,
    /// `Commit` messages sent.
    commits: u64,
    /// Forwarded proposals refused by a node that could not take them.
    rejected: u64,
    /// Of those, refused by the leader of their term with a reason (the follower fails them).
    refused_surely: u64,
    /// Proposals answered as applied by a node that does not lead: ones it forwarded, or
    /// took as a leader since deposed.
    answered_not_leading: u64,
    /// Proposals failed surely, because another entry took their place (`LeaderChanged`).
    superseded: u64,
    /// A deposed leader's proposals failed with an unknown outcome.
    unknown: u64,
    /// Forwarded proposals failed with an unknown outcome.
    forwarded_unknown: u64,
}

/// Not a safety property: counts forwarding's messages and what proposals were told, so a
/// sweep shows it exercised them.
#[derive(Debug)]
struct ProposalActivity(Arc<Mutex<ProposalCounts>>);

impl ClusterInvariant<RaftNode<KvStateMachine>> for ProposalActivity {
    fn name(&self) -> &'static str {
        "proposal-activity"
    }

    fn check(
        &mut self,
        nodes: &[Option<&RaftNode<KvStateMachine>>],
        stepped: NodeId,
        effects: &[EffectOf<RaftNode<KvStateMachine>>],
    ) -> Result<(), Violation> {
        use concord_raft::{Message, RaftError, Response};
        let mut counts = self.0.lock().unwrap();
        let leading = nodes[stepped as usize].is_some_and(|node| node.is_leader());
        for effect in effects {
            match effect {
                Effect::Send { message, .. } => match message {
                    Message::Propose { .. } => counts.proposes += 1,
                    Message::Commit { .. } => counts.commits += 1,
                    Message::ProposeRejected { count, refusal, .. } => {
                        counts.rejected += count;
                        if refusal.is_some() {
                            counts.refused_surely += count;
                        }
                    }
                    _ => {}
                },
                Effect::Reply { response, .. } => match response {
                    Response::Applied { .. } if !leading => counts.answered_not_leading += 1,
                    Response::Failed(RaftError::LeaderChanged { .. }) => counts.superseded += 1,
                    Response::Failed(RaftError::OutcomeUnknown { .. }) => counts.unknown += 1,
                    Response::Failed(RaftError::ForwardedOutcomeUnknown { .. }) => {
                        counts.forwarded_unknown += 1
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        Ok(())
    }
}

/// Not a safety property: counts snapshots taken (`Write::Compact`) and InstallSnapshot
/// messages sent, so the sweep shows it exercised them.
#[derive(Debug)]
struct SnapshotActivity(Arc<Mutex<(u64, u64)>>);

impl ClusterInvariant<RaftNode<KvStateMachine>> for SnapshotActivity {
    fn name(&self) -> &'static str {
        "snapshot-activity"
    }

    fn check(
        &mut self,
        _nodes: &[Option<&RaftNode<KvStateMachine>>],
        _stepped: NodeId,
        effects: &[EffectOf<RaftNode<KvStateMachine>>],
    ) -> Result<(), Violation> {
        let mut counts = self.0.lock().unwrap();
        for effect in effects {
            match effect {
                Effect::Persist {
                    write: concord_raft::Write::Compact(_),
                    ..
                } => counts.0 += 1,
                Effect::Send {
                    message: concord_raft::Message::InstallSnapshot { .. },
                    ..
                } => counts.1 += 1,
                _ => {}
            }
        }
        Ok(())
    }
}
