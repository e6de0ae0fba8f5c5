//! Each atomic commitment protocol in `concord-sim`, with faults drawn from a seed or a named
//! scenario, and the checkers' verdict: what `concord txn 2pc|3pc` prints.
//!
//! A run submits transfers between the participants' accounts (some too large, some on the
//! same account, so some abort), injects the faults, then *settles*: heals the network,
//! restarts every crashed node and runs on. [`Atomicity`] runs after every step. At the end the
//! report says what clients heard, what participants decided, who was still in doubt before
//! and after settling (blocking), and whether money was created or lost.
//!
//! Named scenarios ([`ScenarioKind`]):
//!
//! * `coordinator-crash`: one transaction; the coordinator crashes as soon as every
//!   participant has voted and stays down for 5 s. 2PC participants block (all in doubt);
//!   3PC participants run the termination protocol and decide without it.
//! * `partition`: one transaction; the moment one participant has heard the coordinator's
//!   pre-commit (3PC) or commit (2PC) while another has not, the network splits into the
//!   coordinator with the participants that heard it, and the others, for 5 s. 3PC commits on
//!   one side and aborts on the other (the atomicity checker reports it); 2PC's in-doubt side
//!   blocks and, after the heal, commits.

use std::collections::BTreeMap;

use rand::Rng as _;
use serde::Serialize;

use concord_core::time::{MILLISECOND, SECOND};
use concord_core::{seeded_rng, ClusterInvariant, Duration, NodeId, Time};
use concord_sim::{SimConfig, Simulation};

use crate::types::{Change, Outcome, TxnId};
use crate::{Atomicity, Stage, TxnNode};

/// An atomic commitment protocol the scenarios can run.
pub trait CommitProtocol: TxnNode {
    /// The protocol's name in reports (`2pc`, `3pc`).
    const NAME: &'static str;
    /// The configuration scenarios run it with.
    fn scenario_config() -> Self::Config;
    /// The client request for one transaction.
    fn transaction(changes: BTreeMap<NodeId, Vec<Change>>) -> Self::Request;
    /// What a client reply says was decided; `None` if the request was rejected.
    fn reply_outcome(response: &Self::Response) -> Option<Outcome>;
}

/// Which faults a random scenario draws.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Faults {
    /// Crash nodes (coordinator included) and restart them later.
    pub crash: bool,
    /// Split the network in two, then heal it.
    pub partition: bool,
    /// Lose messages.
    pub loss: bool,
}

impl Faults {
    /// Every kind of fault.
    pub const ALL: Faults = Faults {
        crash: true,
        partition: true,
        loss: true,
    };

    /// Crashes only (3PC's model: fail-stop sites, a network that neither loses nor splits).
    pub const CRASH: Faults = Faults {
        crash: true,
        partition: false,
        loss: false,
    };

    /// Parses `all`, `none` or a comma-separated list of `crash`, `partition`, `loss`.
    pub fn parse(text: &str) -> Result<Faults, String> {
        let mut faults = Faults::default();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "all" => faults = Faults::ALL,
                "none" => {}
                "crash" => faults.crash = true,
                "partition" => faults.partition = true,
                "loss" => faults.loss = true,
                other => {
                    return Err(format!(
                        "unknown fault '{other}' (use all, none, crash, partition, loss)"
                    ))
                }
            }
        }
        Ok(faults)
    }

    /// The faults' names, comma-separated, or `none`.
    pub fn describe(self) -> String {
        let names: Vec<&str> = [
            (self.crash, "crash"),
            (self.partition, "partition"),
            (self.loss, "loss"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(",")
        }
    }
}

/// What a scenario does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioKind {
    /// Transfers with the faults drawn from the seed.
    Random(Faults),
    /// The coordinator crashes once every participant voted (see the module docs).
    CoordinatorCrash,
    /// The network splits between participants that heard the coordinator's second phase and
    /// those that did not (see the module docs).
    Partition,
}

impl ScenarioKind {
    /// Parses a scenario name: `random`, `coordinator-crash` or `partition`.
    pub fn parse(name: &str, faults: Faults) -> Result<ScenarioKind, String> {
        match name {
            "random" => Ok(ScenarioKind::Random(faults)),
            "coordinator-crash" => Ok(ScenarioKind::CoordinatorCrash),
            "partition" => Ok(ScenarioKind::Partition),
            other => Err(format!(
                "unknown scenario '{other}' (use random, coordinator-crash, partition)"
            )),
        }
    }

    fn name(self) -> String {
        match self {
            ScenarioKind::Random(faults) => format!("random ({})", faults.describe()),
            ScenarioKind::CoordinatorCrash => "coordinator-crash".into(),
            ScenarioKind::Partition => "partition".into(),
        }
    }
}

/// Settings of one scenario run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScenarioOptions {
    /// The seed: latencies, the workload and random faults all follow from it.
    pub seed: u64,
    /// Participants (the coordinator is one more node, node 0).
    pub participants: usize,
    /// Transactions submitted (random scenarios; the named ones run one).
    pub transactions: u64,
    /// What happens.
    pub kind: ScenarioKind,
}

impl Default for ScenarioOptions {
    fn default() -> Self {
        ScenarioOptions {
            seed: 0,
            participants: 3,
            transactions: 20,
            kind: ScenarioKind::Random(Faults::ALL),
        }
    }
}

/// The most participants a scenario runs.
pub const MAX_PARTICIPANTS: usize = 15;

/// A participant still in doubt about a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct InDoubt {
    /// The participant.
    pub node: NodeId,
    /// The transaction.
    pub txn: TxnId,
}

/// A broken invariant, as the report shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ViolationReport {
    /// The invariant's name, e.g. `atomicity`.
    pub invariant: String,
    /// The node, when it is one node's.
    pub node: Option<NodeId>,
    /// What was seen.
    pub detail: String,
    /// Simulated time of the step that broke it, in milliseconds.
    pub at_ms: u64,
}

/// What one run came to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScenarioReport {
    /// `2pc`, `3pc`.
    pub protocol: &'static str,
    /// The scenario's name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// Transactions submitted.
    pub submitted: u64,
    /// Replies saying committed.
    pub replied_commit: u64,
    /// Replies saying aborted (or rejected).
    pub replied_abort: u64,
    /// Transactions whose participants decided commit (all that decided).
    pub decided_commit: u64,
    /// Transactions whose participants decided abort.
    pub decided_abort: u64,
    /// Transactions some participants committed and others aborted (atomicity broken).
    pub decided_split: u64,
    /// Whether a named scenario's trigger fired (always true for random ones).
    pub triggered: bool,
    /// The faults injected, with their times.
    pub faults: Vec<String>,
    /// Participants in doubt just before the settling heal and restarts: blocked.
    pub blocked: Vec<InDoubt>,
    /// Participants still in doubt at the end.
    pub in_doubt: Vec<InDoubt>,
    /// The sum of every participant's balance changes: zero unless money was created or lost.
    pub net_money: i64,
    /// The first broken invariant, if any.
    pub violation: Option<ViolationReport>,
}

impl ScenarioReport {
    /// Whether every checker passed.
    pub fn is_safe(&self) -> bool {
        self.violation.is_none() && (self.net_money == 0 || !self.in_doubt.is_empty())
    }
}

/// How long the faults last in a random scenario.
pub(crate) const ACTIVE: Duration = 2 * SECOND;
/// How long a named scenario holds its fault.
const HOLD: Duration = 5 * SECOND;
/// How long the run goes on after the settling heal and restarts.
pub(crate) const SETTLE: Duration = 10 * SECOND;
/// Accounts per participant the workload touches (few, so transactions contend).
const ACCOUNTS: u64 = 4;

/// The simulator settings for a run: the defaults, 1 + `participants` nodes.
fn sim_config(options: &ScenarioOptions) -> SimConfig {
    let mut config = SimConfig::new(options.participants + 1, options.seed);
    config.replay = format!("concord txn --seed {}", options.seed);
    config
}

/// Runs one scenario of protocol `N`.
pub fn run<N: CommitProtocol>(options: &ScenarioOptions) -> Result<ScenarioReport, String> {
    if options.participants < 2 || options.participants > MAX_PARTICIPANTS {
        return Err(format!(
            "--participants must be between 2 and {MAX_PARTICIPANTS}, not {}",
            options.participants
        ));
    }
    let mut sim: Simulation<N> = Simulation::new(sim_config(options), N::scenario_config())
        .map_err(|error| error.to_string())?;
    let invariant: Box<dyn ClusterInvariant<N>> = Box::new(Atomicity::new());
    sim.add_invariant(invariant);
    let mut run = Run {
        sim,
        options: options.clone(),
        report: ScenarioReport {
            protocol: N::NAME,
            scenario: options.kind.name(),
            seed: options.seed,
            submitted: 0,
            replied_commit: 0,
            replied_abort: 0,
            decided_commit: 0,
            decided_abort: 0,
            decided_split: 0,
            triggered: true,
            faults: Vec::new(),
            blocked: Vec::new(),
            in_doubt: Vec::new(),
            net_money: 0,
            violation: None,
        },
    };
    let outcome = match options.kind {
        ScenarioKind::Random(faults) => run.random(faults),
        ScenarioKind::CoordinatorCrash => run.coordinator_crash(),
        ScenarioKind::Partition => run.partition(),
    };
    if let Err(failure) = outcome {
        run.report.violation = Some(failure);
    }
    run.finish();
    Ok(run.report)
}

/// A fault at a time.
#[derive(Clone, Debug)]
pub(crate) enum Fault {
    Crash(NodeId),
    Restart(NodeId),
    Split(Vec<NodeId>),
    Heal,
    Loss(f64),
}

/// A fault or a submission at a time.
#[derive(Clone, Debug)]
enum Action {
    Submit(BTreeMap<NodeId, Vec<Change>>),
    Fault(Fault),
}

/// Injects `fault` into `sim`, noting it (with the time) in `log` when it changes anything.
pub(crate) fn apply_fault<N: concord_core::Node>(
    sim: &mut Simulation<N>,
    fault: Fault,
    log: &mut Vec<String>,
) {
    let at = sim.now() as f64 / MILLISECOND as f64;
    let nodes = sim.nodes() as NodeId;
    let text = match fault {
        Fault::Crash(node) => {
            if !sim.is_up(node) {
                return;
            }
            let _ = sim.crash(node);
            format!("crash n{node}")
        }
        Fault::Restart(node) => {
            if sim.is_up(node) {
                return;
            }
            let _ = sim.restart(node);
            format!("restart n{node}")
        }
        Fault::Split(side) => {
            for a in 0..nodes {
                for b in 0..nodes {
                    if side.contains(&a) != side.contains(&b) {
                        sim.network_mut().set_connected(a, b, false);
                    }
                }
            }
            format!("partition {side:?} | rest")
        }
        Fault::Heal => {
            sim.network_mut().heal();
            "heal".into()
        }
        Fault::Loss(probability) => {
            // A lossy network also duplicates and delays: a late copy of a message can arrive
            // long after its sender gave up on it (a saga's hanging action).
            sim.network_mut().update_links(|link| {
                link.drop_probability = probability;
                link.duplicate_probability = probability / 2.0;
                link.reorder_probability = probability / 2.0;
                link.reorder_delay_max = 800 * MILLISECOND;
            });
            if probability == 0.0 {
                "network reliable again".into()
            } else {
                format!("loss {probability:.2} (with duplicates and delays)")
            }
        }
    };
    log.push(format!("{at:.1}ms {text}"));
}

/// The faults a random scenario of `nodes` nodes draws from `rng` within `ACTIVE`.
pub(crate) fn fault_plan(
    rng: &mut concord_core::Rng,
    faults: Faults,
    nodes: usize,
) -> Vec<(Time, Fault)> {
    let mut plan = Vec::new();
    if faults.crash {
        for _ in 0..rng.gen_range(1..=3) {
            let node = rng.gen_range(0..nodes as NodeId);
            let at = rng.gen_range(0..ACTIVE);
            let down = rng.gen_range(5 * MILLISECOND..600 * MILLISECOND);
            plan.push((at, Fault::Crash(node)));
            plan.push((at + down, Fault::Restart(node)));
        }
    }
    if faults.partition {
        for _ in 0..rng.gen_range(1..=2) {
            let side: Vec<NodeId> = (0..nodes as NodeId).filter(|_| rng.gen_bool(0.5)).collect();
            let at = rng.gen_range(0..ACTIVE);
            let held = rng.gen_range(20 * MILLISECOND..800 * MILLISECOND);
            plan.push((at, Fault::Split(side)));
            plan.push((at + held, Fault::Heal));
        }
    }
    if faults.loss {
        let probability = rng.gen_range(0.02..0.25);
        plan.push((0, Fault::Loss(probability)));
    }
    plan
}

/// Heals the network, stops the loss and restarts every crashed node.
pub(crate) fn settle_faults<N: concord_core::Node>(sim: &mut Simulation<N>, log: &mut Vec<String>) {
    apply_fault(sim, Fault::Heal, log);
    apply_fault(sim, Fault::Loss(0.0), log);
    for node in 0..sim.nodes() as NodeId {
        apply_fault(sim, Fault::Restart(node), log);
    }
}

struct Run<N: CommitProtocol> {
    sim: Simulation<N>,
    options: ScenarioOptions,
    report: ScenarioReport,
}

impl<N: CommitProtocol> Run<N> {
    fn advance(&mut self, until: Time) -> Result<(), ViolationReport> {
        self.sim
            .run_until(until)
            .map_err(|failure| ViolationReport {
                invariant: failure.invariant.to_string(),
                node: failure.node,
                detail: failure.detail.clone(),
                at_ms: failure.time / MILLISECOND,
            })
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Submit(changes) => {
                self.report.submitted += 1;
                let _ = self.sim.submit(0, N::transaction(changes));
            }
            Action::Fault(fault) => apply_fault(&mut self.sim, fault, &mut self.report.faults),
        }
    }

    /// A transfer between two random participants' random account, sometimes too large.
    fn random_transfer(
        rng: &mut concord_core::Rng,
        participants: usize,
    ) -> BTreeMap<NodeId, Vec<Change>> {
        let from = rng.gen_range(1..=participants as NodeId);
        let mut to = rng.gen_range(1..=participants as NodeId);
        if to == from {
            to = from % participants as NodeId + 1;
        }
        let account = rng.gen_range(0..ACCOUNTS);
        let amount = if rng.gen_bool(0.1) {
            5_000
        } else {
            rng.gen_range(1..200)
        };
        let mut changes = BTreeMap::new();
        changes.insert(
            from,
            vec![Change {
                account,
                delta: -amount,
            }],
        );
        changes.insert(
            to,
            vec![Change {
                account,
                delta: amount,
            }],
        );
        changes
    }

    fn random(&mut self, faults: Faults) -> Result<(), ViolationReport> {
        let mut rng = seeded_rng(self.options.seed, 1 << 40);
        let participants = self.options.participants;
        let mut plan: Vec<(Time, Action)> = Vec::new();
        for _ in 0..self.options.transactions {
            let at = rng.gen_range(0..ACTIVE);
            plan.push((
                at,
                Action::Submit(Self::random_transfer(&mut rng, participants)),
            ));
        }
        let nodes = participants + 1;
        let faults = fault_plan(&mut rng, faults, nodes);
        plan.extend(faults.into_iter().map(|(at, f)| (at, Action::Fault(f))));
        // Stable: equal times keep their order of drawing.
        plan.sort_by_key(|(at, _)| *at);
        for (at, action) in plan {
            self.advance(at)?;
            self.apply(action);
        }
        self.advance(ACTIVE + 200 * MILLISECOND)?;
        self.settle()
    }

    /// The single transaction of a named scenario: 100 from participant 1's account 0 to
    /// participant 2's, every other participant touching its account 0 by nothing.
    fn single_transfer(&self) -> BTreeMap<NodeId, Vec<Change>> {
        (1..=self.options.participants as NodeId)
            .map(|node| {
                let delta = match node {
                    1 => -100,
                    2 => 100,
                    _ => 0,
                };
                (node, vec![Change { account: 0, delta }])
            })
            .collect()
    }

    fn stages(&self, txn: TxnId) -> Vec<Stage> {
        (1..=self.options.participants as NodeId)
            .map(|node| self.sim.node(node).map_or(Stage::Unknown, |n| n.stage(txn)))
            .collect()
    }

    /// Runs in small steps until `trigger` holds (or a second passed); returns whether it did.
    fn run_until_trigger(
        &mut self,
        mut trigger: impl FnMut(&Self) -> bool,
    ) -> Result<bool, ViolationReport> {
        const POLL: Duration = 10_000;
        let end = self.sim.now() + SECOND;
        while self.sim.now() < end {
            if trigger(self) {
                return Ok(true);
            }
            let next = self.sim.now() + POLL;
            self.advance(next)?;
        }
        Ok(trigger(self))
    }

    fn coordinator_crash(&mut self) -> Result<(), ViolationReport> {
        let txn = FIRST_TXN;
        self.apply(Action::Submit(self.single_transfer()));
        self.report.triggered =
            self.run_until_trigger(|run| run.stages(txn).iter().all(|&s| s >= Stage::Voted))?;
        self.apply(Action::Fault(Fault::Crash(0)));
        let end = self.sim.now() + HOLD;
        self.advance(end)?;
        self.settle()
    }

    fn partition(&mut self) -> Result<(), ViolationReport> {
        let txn = FIRST_TXN;
        self.apply(Action::Submit(self.single_transfer()));
        self.report.triggered = self.run_until_trigger(|run| {
            let stages = run.stages(txn);
            stages.iter().any(|&s| s > Stage::Voted) && stages.contains(&Stage::Voted)
        })?;
        if self.report.triggered {
            let stages = self.stages(txn);
            let side: Vec<NodeId> = std::iter::once(0)
                .chain(
                    stages
                        .iter()
                        .enumerate()
                        .filter(|(_, &s)| s > Stage::Voted)
                        .map(|(index, _)| index as NodeId + 1),
                )
                .collect();
            self.apply(Action::Fault(Fault::Split(side)));
        }
        let end = self.sim.now() + HOLD;
        self.advance(end)?;
        self.settle()
    }

    /// Records who is blocked, heals, restarts every crashed node and runs on.
    fn settle(&mut self) -> Result<(), ViolationReport> {
        self.report.blocked = self.in_doubt();
        settle_faults(&mut self.sim, &mut self.report.faults);
        let end = self.sim.now() + SETTLE;
        self.advance(end)
    }

    fn in_doubt(&self) -> Vec<InDoubt> {
        let mut in_doubt = Vec::new();
        for node in 1..=self.options.participants as NodeId {
            let txns = match self.sim.node(node) {
                Some(n) => n.in_doubt(),
                // A crashed participant's doubt is in its durable state; it asks on restart.
                None => Vec::new(),
            };
            in_doubt.extend(txns.into_iter().map(|txn| InDoubt { node, txn }));
        }
        in_doubt
    }

    /// Fills in what clients heard, what participants decided, doubt and money.
    fn finish(&mut self) {
        for reply in self.sim.take_replies() {
            match N::reply_outcome(&reply.response) {
                Some(Outcome::Commit) => self.report.replied_commit += 1,
                _ => self.report.replied_abort += 1,
            }
        }
        let mut outcomes: BTreeMap<TxnId, (bool, bool)> = BTreeMap::new();
        let mut net = 0;
        for node in 1..=self.options.participants as NodeId {
            let Some(n) = self.sim.node(node) else {
                continue;
            };
            if let Some(decided) = n.decided() {
                for (&txn, &outcome) in decided {
                    let seen = outcomes.entry(txn).or_default();
                    match outcome {
                        Outcome::Commit => seen.0 = true,
                        Outcome::Abort => seen.1 = true,
                    }
                }
            }
            net += n.ledger().map_or(0, |l| l.net_change());
        }
        for &(commit, abort) in outcomes.values() {
            match (commit, abort) {
                (true, true) => self.report.decided_split += 1,
                (true, false) => self.report.decided_commit += 1,
                _ => self.report.decided_abort += 1,
            }
        }
        self.report.net_money = net;
        self.report.in_doubt = self.in_doubt();
    }
}

/// The first transaction's id in every scenario (the coordinator's first epoch).
const FIRST_TXN: TxnId = TxnId {
    epoch: 1,
    sequence: 1,
};

/// The outcome of many seeds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Runs made.
    pub runs: u64,
    /// Runs with a broken invariant (or money created or lost): seed and report.
    pub violations: Vec<ScenarioReport>,
    /// Runs that ended with a participant still in doubt.
    pub blocked_runs: u64,
    /// Transactions committed, over all runs.
    pub committed: u64,
    /// Transactions aborted, over all runs.
    pub aborted: u64,
}

/// Runs `seeds` with `options` (its seed replaced by each one).
pub fn sweep<N: CommitProtocol>(
    options: &ScenarioOptions,
    seeds: std::ops::Range<u64>,
) -> Result<SweepReport, String> {
    let mut sweep = SweepReport::default();
    for seed in seeds {
        let report = run::<N>(&ScenarioOptions {
            seed,
            ..options.clone()
        })?;
        sweep.runs += 1;
        sweep.committed += report.decided_commit;
        sweep.aborted += report.decided_abort;
        if !report.in_doubt.is_empty() {
            sweep.blocked_runs += 1;
        }
        if !report.is_safe() {
            sweep.violations.push(report);
        }
    }
    Ok(sweep)
}
