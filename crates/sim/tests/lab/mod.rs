//! A test harness in the shape of the well-known Raft lab suite's `config`: connect and
//! disconnect servers, crash and restart them from their durable state, submit commands,
//! and wait for agreement — over Concord's simulator, with the protocol's cluster invariants
//! checked after every step. Generic over the protocol ([`LabNode`]): Raft (`Lab::new`) and
//! Multi-Paxos (`Lab::paxos`).

#![allow(dead_code)]

pub mod scenarios;

use std::fmt::Debug;

use concord_core::time::MILLISECOND;
use concord_core::{
    seeded_rng, ClusterInvariant, Duration, KvOperation, KvStateMachine, Node, NodeId, Rng,
};
use concord_paxos::multi::{Entry, MultiPaxos};
use concord_paxos::Ballot;
use concord_raft::{Config, LogIndex, RaftNode, Request, Term};
use concord_sim::{SimConfig, Simulation};
use rand::Rng as _;

/// The Raft node type under test.
pub type Kv = RaftNode<KvStateMachine>;

/// The Multi-Paxos node type under test.
pub type PaxosKv = MultiPaxos<KvStateMachine>;

/// What the lab needs to know about a protocol's node.
pub trait LabNode: Node<Command = KvOperation> + 'static {
    /// What orders leaderships: Raft's term, Paxos's ballot. Two leaders never share one.
    type Term: Copy + Ord + Debug + std::fmt::Display;
    /// The protocol's safety checkers.
    fn lab_invariants() -> Vec<Box<dyn ClusterInvariant<Self>>>;
    /// The longest time an election may take in a healthy network.
    fn lab_election_timeout(config: &Self::Config) -> Duration;
    /// The request that proposes `command`.
    fn propose(command: KvOperation) -> Self::Request;
    /// Whether the node believes it leads.
    fn leads(&self) -> bool;
    /// The node's term or ballot.
    fn term(&self) -> Self::Term;
    /// The highest index applied.
    fn applied(&self) -> LogIndex;
    /// The command at `index` if the node still holds that entry (`Some(None)`: a no-op).
    fn command_at(&self, index: LogIndex) -> Option<Option<KvOperation>>;
    /// The newest index holding `command`.
    fn index_of(&self, command: &KvOperation) -> Option<LogIndex>;
    /// Where a proposal's reply says it was applied, if it does.
    fn applied_at(response: &Self::Response) -> Option<LogIndex>;
    /// Entries the node still keeps in memory (its snapshot replaced the rest).
    fn retained(&self) -> usize;
    /// The index its latest snapshot covers (0 without one).
    fn compacted(&self) -> LogIndex;
    /// The index the durable snapshot covers.
    fn durable_compacted(storage: &Self::Storage) -> LogIndex;
    /// The last index durably held.
    fn durable_last(storage: &Self::Storage) -> LogIndex;
    /// The state machine.
    fn lab_state(&self) -> &KvStateMachine;
}

impl LabNode for Kv {
    type Term = Term;

    fn lab_invariants() -> Vec<Box<dyn ClusterInvariant<Self>>> {
        concord_raft::invariants()
    }

    fn lab_election_timeout(config: &Config) -> Duration {
        config.election_timeout_max
    }

    fn propose(command: KvOperation) -> Self::Request {
        Request::Propose(command)
    }

    fn leads(&self) -> bool {
        self.is_leader()
    }

    fn term(&self) -> Term {
        self.current_term()
    }

    fn applied(&self) -> LogIndex {
        self.applied_index()
    }

    fn command_at(&self, index: LogIndex) -> Option<Option<KvOperation>> {
        self.log().entry(index).map(|e| e.command().cloned())
    }

    fn index_of(&self, command: &KvOperation) -> Option<LogIndex> {
        self.log()
            .entries()
            .iter()
            .rev()
            .find(|e| e.command() == Some(command))
            .map(|e| e.index)
    }

    fn applied_at(response: &Self::Response) -> Option<LogIndex> {
        match response {
            concord_raft::Response::Applied { index, .. } => Some(*index),
            _ => None,
        }
    }

    fn retained(&self) -> usize {
        self.log().entries().len()
    }

    fn compacted(&self) -> LogIndex {
        self.log().snapshot_index()
    }

    fn durable_compacted(storage: &Self::Storage) -> LogIndex {
        storage.snapshot_index()
    }

    fn durable_last(storage: &Self::Storage) -> LogIndex {
        storage.last_index()
    }

    fn lab_state(&self) -> &KvStateMachine {
        self.state_machine()
    }
}

impl LabNode for PaxosKv {
    type Term = Ballot;

    fn lab_invariants() -> Vec<Box<dyn ClusterInvariant<Self>>> {
        concord_paxos::multi::invariants()
    }

    fn lab_election_timeout(config: &concord_paxos::multi::Config) -> Duration {
        <PaxosKv as Node>::election_timeout(config)
    }

    fn propose(command: KvOperation) -> Self::Request {
        concord_paxos::multi::Request::Propose(command)
    }

    fn leads(&self) -> bool {
        self.is_leader()
    }

    fn term(&self) -> Ballot {
        self.ballot().unwrap_or_default()
    }

    fn applied(&self) -> LogIndex {
        MultiPaxos::applied(self)
    }

    fn command_at(&self, index: LogIndex) -> Option<Option<KvOperation>> {
        self.entry(index).map(|accepted| match &accepted.entry {
            Entry::Command(command) => Some(command.clone()),
            Entry::Noop | Entry::Read(_) | Entry::StopSign(_) => None,
        })
    }

    fn index_of(&self, command: &KvOperation) -> Option<LogIndex> {
        let last = self.status().log_length;
        (1..=last).rev().find(|&slot| {
            self.entry(slot)
                .is_some_and(|a| a.entry == Entry::Command(command.clone()))
        })
    }

    fn applied_at(response: &Self::Response) -> Option<LogIndex> {
        match response {
            concord_paxos::multi::Response::Applied { slot, .. } => Some(*slot),
            _ => None,
        }
    }

    fn retained(&self) -> usize {
        self.log_len()
    }

    fn compacted(&self) -> LogIndex {
        MultiPaxos::compacted(self)
    }

    fn durable_compacted(storage: &Self::Storage) -> LogIndex {
        storage.compacted()
    }

    fn durable_last(storage: &Self::Storage) -> LogIndex {
        storage.decided
    }

    fn lab_state(&self) -> &KvStateMachine {
        self.state()
    }
}

/// One second of simulated time.
pub const SECOND: Duration = 1_000 * MILLISECOND;

/// The key every lab command writes.
const KEY: &str = "lab";

/// A simulated cluster with the lab suite's helpers.
pub struct Lab<N: LabNode = Kv> {
    /// The simulation.
    pub sim: Simulation<N>,
    /// Which servers are connected to the network (the lab's `connected`).
    connected: Vec<bool>,
    /// The test's own randomness.
    pub rng: Rng,
    /// Round-robin start for submissions.
    rotor: usize,
}

impl Lab<Kv> {
    /// A Raft cluster of `nodes` with the default configuration.
    pub fn new(nodes: usize, seed: u64) -> Lab<Kv> {
        Lab::with_config(nodes, seed, Config::default())
    }

    /// A Raft cluster of `nodes` with `config`.
    pub fn with_config(nodes: usize, seed: u64, config: Config) -> Lab<Kv> {
        config.validate().expect("valid lab configuration");
        Lab::build(nodes, seed, config, "raft_lab")
    }

    /// The command that writes `value`.
    pub fn command(value: i64) -> KvOperation {
        command(value)
    }
}

impl Lab<PaxosKv> {
    /// A Multi-Paxos cluster of `nodes` with the default configuration.
    pub fn paxos(nodes: usize, seed: u64) -> Lab<PaxosKv> {
        Lab::paxos_with_config(nodes, seed, concord_paxos::multi::Config::default())
    }

    /// A Multi-Paxos cluster of `nodes` with `config`.
    pub fn paxos_with_config(
        nodes: usize,
        seed: u64,
        config: concord_paxos::multi::Config,
    ) -> Lab<PaxosKv> {
        Lab::paxos_for(nodes, seed, config, "paxos_partial_connectivity")
    }

    /// A Multi-Paxos cluster of `nodes` with `config`, for the test binary `test` (named in
    /// replay commands).
    pub fn paxos_for(
        nodes: usize,
        seed: u64,
        config: concord_paxos::multi::Config,
        test: &str,
    ) -> Lab<PaxosKv> {
        config.validate(nodes).expect("valid lab configuration");
        Lab::build(nodes, seed, config, test)
    }
}

/// The command that writes `value`.
pub fn command(value: i64) -> KvOperation {
    KvOperation::Write {
        key: KEY.into(),
        value,
    }
}

impl<N: LabNode> Lab<N> {
    /// A cluster of `nodes` running `config`; `test` names the test binary for replays.
    pub fn build(nodes: usize, seed: u64, config: N::Config, test: &str) -> Lab<N> {
        let mut sim_config = SimConfig::new(nodes, seed);
        sim_config.replay = format!("cargo test -p concord-sim --test {test} (seed {seed})");
        let mut sim = Simulation::new(sim_config, config).expect("valid simulation");
        for invariant in N::lab_invariants() {
            sim.add_invariant(invariant);
        }
        Lab {
            sim,
            connected: vec![true; nodes],
            rng: seeded_rng(seed, 0x1ab),
            rotor: 0,
        }
    }

    /// Cluster size.
    pub fn n(&self) -> usize {
        self.connected.len()
    }

    /// The largest election timeout.
    pub fn election_timeout(&self) -> Duration {
        N::lab_election_timeout(self.sim.node_config())
    }

    /// Runs for `duration`, failing the test on any invariant violation.
    pub fn run(&mut self, duration: Duration) {
        if let Err(failure) = self.sim.run_for(duration) {
            panic!("{failure}\nreplay: {}", failure.replay);
        }
        self.sim.take_replies();
    }

    /// Cuts server `i` off from every other server.
    pub fn disconnect(&mut self, i: NodeId) {
        self.connected[i as usize] = false;
        for j in 0..self.n() as NodeId {
            if j != i {
                self.sim.network_mut().set_connected(i, j, false);
                self.sim.network_mut().set_connected(j, i, false);
            }
        }
    }

    /// Reconnects server `i` to every connected server.
    pub fn connect(&mut self, i: NodeId) {
        self.connected[i as usize] = true;
        for j in 0..self.n() as NodeId {
            if j != i && self.connected[j as usize] {
                self.sim.network_mut().set_connected(i, j, true);
                self.sim.network_mut().set_connected(j, i, true);
            }
        }
    }

    /// Whether server `i` is connected and up.
    pub fn live(&self, i: NodeId) -> bool {
        self.connected[i as usize] && self.sim.is_up(i)
    }

    /// Crashes server `i`: it loses everything not yet durable.
    pub fn crash(&mut self, i: NodeId) {
        if self.sim.is_up(i) {
            self.sim.crash(i).expect("crash");
        }
    }

    /// Restarts server `i` from its durable state (crashing it first if it is up).
    pub fn restart(&mut self, i: NodeId) {
        self.crash(i);
        self.sim.restart(i).expect("restart");
    }

    /// A server's node, if up.
    pub fn node(&self, i: NodeId) -> Option<&N> {
        self.sim.node(i)
    }

    /// Connected, up servers that believe they lead, with their terms.
    pub fn leaders(&self) -> Vec<(N::Term, NodeId)> {
        (0..self.n() as NodeId)
            .filter(|&i| self.live(i))
            .filter_map(|i| self.node(i).filter(|n| n.leads()).map(|n| (n.term(), i)))
            .collect()
    }

    /// Waits (up to ten rounds of half an election timeout) for exactly one leader among the
    /// connected servers of the newest term, and returns it. Two leaders in one term fail.
    pub fn check_one_leader(&mut self) -> NodeId {
        for _ in 0..10 {
            let pause = self.election_timeout() / 2 + self.rng.gen_range(0..50 * MILLISECOND);
            self.run(pause);
            let mut leaders = self.leaders();
            leaders.sort_unstable();
            for pair in leaders.windows(2) {
                assert_ne!(
                    pair[0].0, pair[1].0,
                    "two leaders in term {}: {leaders:?}",
                    pair[0].0
                );
            }
            if let Some(&(_, leader)) = leaders.last() {
                return leader;
            }
        }
        panic!("expected one leader, got none");
    }

    /// All connected servers agree on the term; returns it.
    pub fn check_terms(&self) -> N::Term {
        let terms: Vec<N::Term> = (0..self.n() as NodeId)
            .filter(|&i| self.live(i))
            .map(|i| self.node(i).unwrap().term())
            .collect();
        assert!(
            terms.windows(2).all(|w| w[0] == w[1]),
            "servers disagree on the term: {terms:?}"
        );
        terms[0]
    }

    /// No connected server believes it leads.
    pub fn check_no_leader(&self) {
        let leaders = self.leaders();
        assert!(
            leaders.is_empty(),
            "expected no leader among connected servers, got {leaders:?}"
        );
    }

    /// How many servers have applied `index`, and the command there (all must agree).
    pub fn n_committed(&self, index: LogIndex) -> (usize, Option<KvOperation>) {
        let mut count = 0;
        let mut command: Option<KvOperation> =
            self.sim.applied().get(&index).map(|(_, c)| c.clone());
        for i in 0..self.n() as NodeId {
            let Some(node) = self.node(i) else { continue };
            if node.applied() < index {
                continue;
            }
            if let Some(here) = node.command_at(index) {
                match (&command, &here) {
                    (Some(a), Some(b)) => assert_eq!(a, b, "servers disagree at index {index}"),
                    (None, Some(_)) => command = here,
                    _ => {}
                }
            }
            count += 1;
        }
        (count, command)
    }

    /// Submits a proposal of `value` to server `i` (the lab's `Start`).
    pub fn start(&mut self, i: NodeId, value: i64) {
        if self.sim.is_up(i) {
            let _ = self.sim.submit(i, N::propose(command(value)));
        }
    }

    /// Where `value` sits in server `i`'s log, if it does.
    pub fn index_of(&self, i: NodeId, value: i64) -> Option<LogIndex> {
        self.node(i)?.index_of(&command(value))
    }

    /// The lab's `one`: gets `value` committed on at least `expected` servers, retrying with
    /// other servers if a leader fails (when `retry`); returns its index.
    pub fn one(&mut self, value: i64, expected: usize, retry: bool) -> LogIndex {
        let started = self.sim.now();
        while self.sim.now() - started < 10 * SECOND {
            let mut index = None;
            for k in 0..self.n() {
                let i = ((self.rotor + k) % self.n()) as NodeId;
                if !self.live(i) || !self.node(i).is_some_and(|n| n.leads()) {
                    continue;
                }
                self.start(i, value);
                self.run(20 * MILLISECOND);
                if let Some(found) = self.index_of(i, value) {
                    self.rotor = i as usize;
                    index = Some(found);
                    break;
                }
            }
            if let Some(index) = index {
                let waited = self.sim.now();
                while self.sim.now() - waited < 2 * SECOND {
                    let (count, command) = self.n_committed(index);
                    if count >= expected && command == Some(self::command(value)) {
                        return index;
                    }
                    self.run(20 * MILLISECOND);
                }
                assert!(
                    retry,
                    "one({value}) failed to reach agreement on {expected} servers"
                );
            } else {
                self.run(50 * MILLISECOND);
            }
        }
        panic!("one({value}) failed to reach agreement on {expected} servers within 10s");
    }

    /// Like [`Lab::one`] but never panics: proposes `value` to whoever leads (again if a new
    /// leader does not hold it) until `expected` servers applied it; returns how long that
    /// took, or `None` if it did not happen within `within`.
    pub fn try_one(&mut self, value: i64, expected: usize, within: Duration) -> Option<Duration> {
        let started = self.sim.now();
        let wanted = command(value);
        while self.sim.now() - started < within {
            for (_, leader) in self.leaders() {
                if self.index_of(leader, value).is_none() {
                    self.start(leader, value);
                }
            }
            self.run(20 * MILLISECOND);
            for i in 0..self.n() as NodeId {
                let Some(index) = self.index_of(i, value) else {
                    continue;
                };
                let (count, command) = self.n_committed(index);
                if count >= expected && command.as_ref() == Some(&wanted) {
                    return Some(self.sim.now() - started);
                }
            }
        }
        None
    }

    /// Waits until at least `n` servers have applied `index` (lab's `wait`); returns the command.
    pub fn wait(
        &mut self,
        index: LogIndex,
        n: usize,
        start_term: Option<N::Term>,
    ) -> Option<KvOperation> {
        let mut pause = 10 * MILLISECOND;
        for _ in 0..30 {
            let (count, command) = self.n_committed(index);
            if count >= n {
                return command;
            }
            self.run(pause);
            pause = (pause * 2).min(SECOND);
            if let Some(term) = start_term {
                if (0..self.n() as NodeId).any(|i| self.node(i).is_some_and(|x| x.term() > term)) {
                    return None;
                }
            }
        }
        let (count, _) = self.n_committed(index);
        panic!("only {count} servers applied index {index}, wanted {n}");
    }

    /// Marks every network link unreliable: loss, long delays and reordering (lab's
    /// `setunreliable` and `setlongreordering`).
    pub fn set_unreliable(&mut self, drop: f64, long_reordering: bool) {
        self.sim.network_mut().update_links(|link| {
            link.drop_probability = drop;
            link.latency_max = link.latency_max.max(27 * MILLISECOND);
            link.reorder_probability = if long_reordering { 0.5 } else { 0.1 };
            link.reorder_delay_max = if long_reordering {
                2 * SECOND
            } else {
                100 * MILLISECOND
            };
        });
    }

    /// Back to a reliable network.
    pub fn set_reliable(&mut self) {
        self.sim.network_mut().update_links(|link| {
            link.drop_probability = 0.0;
            link.reorder_probability = 0.0;
            link.duplicate_probability = 0.0;
        });
    }

    /// Messages sent so far (requests and responses alike).
    pub fn messages(&self) -> u64 {
        self.sim.stats().messages_sent
    }

    /// A fresh random command value.
    pub fn value(&mut self) -> i64 {
        self.rng.gen_range(0..i64::MAX)
    }
}
