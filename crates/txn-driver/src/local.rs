//! Two-phase commit with every node in one process, each with its own fsync'd log: the
//! coordinator and the participants are the sans-IO `TwoPhaseCommit` nodes, messages go
//! through in-memory queues, and each round fsyncs every log with appended writes (in
//! parallel, one thread per log, as separate machines would) before releasing the messages
//! that waited for them. For the throughput benchmark.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use concord_core::{seeded_rng, Effect, Env, Input, Node, NodeId, Rng, Time};
use concord_txn::twopc::{Config, Message, Request, Response, TwoPcEffect, TwoPhaseCommit};
use concord_txn::Change;

use crate::log::{DurableLog, LogError};

/// What a benchmark run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalReport {
    /// Transactions committed.
    pub committed: u64,
    /// Transactions aborted (or rejected).
    pub aborted: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// fsync calls, over every log.
    pub fsyncs: u64,
}

impl LocalReport {
    /// Committed transactions per second.
    pub fn per_second(&self) -> f64 {
        self.committed as f64 / self.seconds
    }
}

struct Host {
    node: TwoPhaseCommit,
    log: DurableLog,
    rng: Rng,
    inbox: VecDeque<Input<Message, Request>>,
    held: VecDeque<TwoPcEffect>,
    barrier_unsynced: bool,
}

/// The one place this module reads the clock.
#[allow(clippy::disallowed_methods)] // The driver, not the sans-IO core, reads the clock.
fn wall_clock() -> std::time::Instant {
    std::time::Instant::now()
}

/// Runs `transactions` transactions, each touching every one of `participants` participants,
/// with `concurrency` closed-loop clients; logs live under `dir`.
pub fn run(
    dir: &Path,
    participants: usize,
    transactions: u64,
    concurrency: usize,
) -> Result<LocalReport, LogError> {
    let config = Config {
        vote_timeout: 10_000_000_000,
        retry_interval: 1_000_000_000,
        decision_timeout: 10_000_000_000,
        // Committed transactions wait for acknowledgements after their client has moved on.
        max_active: 4 * concurrency + 16,
        ..Config::default()
    };
    let members: Vec<NodeId> = (0..=participants as NodeId).collect();
    let mut hosts = Vec::new();
    for &id in &members {
        let (log, storage) = DurableLog::open::<TwoPhaseCommit>(&dir.join(format!("node-{id}")))?;
        let mut rng = seeded_rng(1, id);
        let node = TwoPhaseCommit::restore(id, &members, &config, &storage, 0, &mut rng);
        hosts.push(Host {
            node,
            log,
            rng,
            inbox: VecDeque::new(),
            held: VecDeque::new(),
            barrier_unsynced: false,
        });
    }
    let started = wall_clock();
    let now = || wall_clock().duration_since(started).as_nanos() as Time;
    let mut report = LocalReport {
        committed: 0,
        aborted: 0,
        seconds: 0.0,
        fsyncs: 0,
    };
    let mut submitted = 0;
    let submit = |hosts: &mut Vec<Host>, number: u64| {
        hosts[0].inbox.push_back(Input::Request {
            id: number,
            request: Request::Transaction(transfer(number, participants)),
        });
    };
    while submitted < (concurrency as u64).min(transactions) {
        submitted += 1;
        submit(&mut hosts, submitted);
    }
    while report.committed + report.aborted < transactions {
        let mut outbox: Vec<(NodeId, Input<Message, Request>)> = Vec::new();
        let mut replies: Vec<Response> = Vec::new();
        for (id, host) in hosts.iter_mut().enumerate() {
            while let Some(input) = host.inbox.pop_front() {
                step(host, id as NodeId, now(), input, &mut outbox, &mut replies)?;
            }
            if host.node.next_deadline().is_some_and(|at| at <= now()) {
                step(
                    host,
                    id as NodeId,
                    now(),
                    Input::Tick,
                    &mut outbox,
                    &mut replies,
                )?;
            }
        }
        // One fsync per log with writes, in parallel; then confirm and release.
        let synced: Vec<bool> = std::thread::scope(|scope| {
            let handles: Vec<_> = hosts
                .iter_mut()
                .map(|host| scope.spawn(move || host.log.sync().map(|n| n > 0)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("fsync thread").unwrap_or(false))
                .collect()
        });
        for (id, was_synced) in synced.into_iter().enumerate() {
            let host = &mut hosts[id];
            if was_synced {
                report.fsyncs += 1;
                host.barrier_unsynced = false;
                step(
                    host,
                    id as NodeId,
                    now(),
                    Input::Persisted { token: 0 },
                    &mut outbox,
                    &mut replies,
                )?;
            }
            if !host.barrier_unsynced {
                while let Some(effect) = host.held.pop_front() {
                    release(id as NodeId, effect, &mut outbox, &mut replies);
                }
            }
        }
        for (to, input) in outbox {
            hosts[to as usize].inbox.push_back(input);
        }
        for reply in replies {
            match reply {
                Response::Committed(_) => report.committed += 1,
                _ => report.aborted += 1,
            }
            if submitted < transactions {
                submitted += 1;
                submit(&mut hosts, submitted);
            }
        }
    }
    report.seconds = wall_clock().duration_since(started).as_secs_f64();
    Ok(report)
}

/// Transaction `number`: 1 from an account at participant 1, split between the others; the
/// account changes with the number so concurrent transactions do not contend.
fn transfer(number: u64, participants: usize) -> BTreeMap<NodeId, Vec<Change>> {
    let account = number % 100_000;
    (1..=participants as NodeId)
        .map(|p| {
            let delta = if p == 1 {
                -(participants as i64 - 1)
            } else {
                1
            };
            (p, vec![Change { account, delta }])
        })
        .collect()
}

fn step(
    host: &mut Host,
    id: NodeId,
    now: Time,
    input: Input<Message, Request>,
    outbox: &mut Vec<(NodeId, Input<Message, Request>)>,
    replies: &mut Vec<Response>,
) -> Result<(), LogError> {
    let mut effects = Vec::new();
    let mut env = Env {
        now,
        rng: &mut host.rng,
    };
    host.node.step(&mut env, input, &mut effects);
    for effect in effects {
        match effect {
            Effect::Persist { write, .. } => {
                if TwoPhaseCommit::is_barrier(&write) {
                    host.barrier_unsynced = true;
                }
                host.log.append(&write)?;
            }
            Effect::Apply { .. } => {}
            other if host.barrier_unsynced || !host.held.is_empty() => host.held.push_back(other),
            other => release(id, other, outbox, replies),
        }
    }
    Ok(())
}

fn release(
    from: NodeId,
    effect: TwoPcEffect,
    outbox: &mut Vec<(NodeId, Input<Message, Request>)>,
    replies: &mut Vec<Response>,
) {
    match effect {
        Effect::Send { to, message } => outbox.push((to, Input::Message { from, message })),
        Effect::Reply { response, .. } => replies.push(response),
        Effect::Persist { .. } | Effect::Apply { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_transaction_commits_over_fsynced_logs() {
        let dir = tempfile::tempdir().unwrap();
        let report = super::run(dir.path(), 3, 200, 16).unwrap();
        assert_eq!(report.committed, 200, "{report:?}");
        assert!(report.fsyncs > 0);
    }
}
