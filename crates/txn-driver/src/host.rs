//! The 2PC coordinator on tokio: the sans-IO `TwoPhaseCommit` coordinator, an fsync'd decision
//! log, and a [`Backend`] that carries out each participant's part.
//!
//! One task owns the coordinator. It takes a batch of inputs (client transactions, votes and
//! acknowledgements the backend reports, timer ticks), steps the coordinator for each,
//! appends the writes to the log, fsyncs once for the batch, confirms them to the coordinator,
//! and only then lets the messages that followed a barrier write go to the backend. Replies
//! reach clients the same way: a client told "committed" holds a durable commit record.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use concord_core::{seeded_rng, Effect, Env, Input, Node, NodeId, RequestId, Time};
use concord_txn::twopc::{Config, Message, Request, Response, TwoPcEffect, TwoPhaseCommit, Write};
use concord_txn::{Change, Outcome, Refusal, TxnId};
use tokio::sync::{mpsc, oneshot};

use crate::log::{DurableLog, LogError};

/// What carries out the participants' parts of a transaction.
pub trait Backend: Send + Sync + 'static {
    /// Phase 1 at `participant`: make `changes` ready to commit, durably, or refuse.
    fn prepare(
        &self,
        participant: NodeId,
        txn: TxnId,
        changes: Vec<Change>,
    ) -> impl Future<Output = Result<(), Refusal>> + Send;

    /// Phase 2: commit the prepared `txn` at `participant`. `Ok` also when it was already
    /// committed.
    fn commit(
        &self,
        participant: NodeId,
        txn: TxnId,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Phase 2: roll back `txn` at `participant`, prepared or not (a no-op if unknown).
    fn abort(
        &self,
        participant: NodeId,
        txn: TxnId,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Transactions prepared at `participant` and not yet committed or rolled back.
    fn in_doubt(
        &self,
        participant: NodeId,
    ) -> impl Future<Output = anyhow::Result<Vec<TxnId>>> + Send;
}

/// Where a coordinator can be made to stop dead, as a killed process would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// The first participant has voted yes (its transaction is prepared), the others maybe
    /// not.
    AfterFirstVote,
    /// Every vote is in; the commit record is not yet written.
    BeforeDecision,
    /// The commit record is durable; no participant has been told.
    AfterDecision,
    /// One participant committed, the others not yet.
    AfterFirstCommit,
    /// Every participant committed; the end record is not written.
    BeforeEnd,
}

impl CrashPoint {
    /// Every crash point, in protocol order.
    pub const ALL: [CrashPoint; 5] = [
        CrashPoint::AfterFirstVote,
        CrashPoint::BeforeDecision,
        CrashPoint::AfterDecision,
        CrashPoint::AfterFirstCommit,
        CrashPoint::BeforeEnd,
    ];

    /// The point's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::AfterFirstVote => "after-first-vote",
            CrashPoint::BeforeDecision => "before-decision",
            CrashPoint::AfterDecision => "after-decision",
            CrashPoint::AfterFirstCommit => "after-first-commit",
            CrashPoint::BeforeEnd => "before-end",
        }
    }

    /// Parses a name of [`CrashPoint::name`].
    pub fn parse(name: &str) -> Option<CrashPoint> {
        CrashPoint::ALL
            .into_iter()
            .find(|point| point.name() == name)
    }
}

/// Stop the process at `point` of the transaction numbered `sequence` (in this incarnation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashPlan {
    /// Where.
    pub point: CrashPoint,
    /// Which transaction of this incarnation (1 for the first).
    pub sequence: u64,
}

/// The exit code of a planned crash.
pub const CRASH_EXIT_CODE: i32 = 86;

/// The most inputs handled between two fsyncs.
const MAX_BATCH: usize = 1_024;

enum Command {
    Transact(BTreeMap<NodeId, Vec<Change>>, oneshot::Sender<Response>),
    Input(Input<Message, Request>),
    /// A backend task ended.
    Finished,
}

/// A handle to a running coordinator.
#[derive(Clone, Debug)]
pub struct DriverHandle {
    commands: mpsc::UnboundedSender<CommandBox>,
}

/// A command in a box the handle can be `Debug` about.
struct CommandBox(Command);

impl std::fmt::Debug for CommandBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl DriverHandle {
    /// Runs one transaction; returns the coordinator's reply (`None` if it stopped).
    pub async fn transact(&self, changes: BTreeMap<NodeId, Vec<Change>>) -> Option<Response> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(CommandBox(Command::Transact(changes, reply)))
            .ok()?;
        answer.await.ok()
    }
}

/// The coordinator's task.
pub struct Driver<B: Backend> {
    node: TwoPhaseCommit,
    log: DurableLog,
    backend: Arc<B>,
    participants: Vec<NodeId>,
    rng: concord_core::Rng,
    /// Client transactions; closed once every handle is dropped.
    commands: mpsc::UnboundedReceiver<CommandBox>,
    /// What the backend reports back (votes, acknowledgements).
    answers: mpsc::UnboundedReceiver<CommandBox>,
    sender: mpsc::UnboundedSender<CommandBox>,
    commands_open: bool,
    /// Backend tasks running.
    in_flight: usize,
    waiting: BTreeMap<RequestId, oneshot::Sender<Response>>,
    next_request: RequestId,
    held: VecDeque<TwoPcEffect>,
    barrier_unsynced: bool,
    crash: Option<CrashPlan>,
    /// The planned transaction's commit record is in this batch: crash once it is durable.
    decision_pending_crash: bool,
    epoch: u64,
    clock: Clock,
}

impl<B: Backend> std::fmt::Debug for Driver<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("node", &self.node).finish()
    }
}

/// The one place the driver reads the clock.
#[derive(Clone, Copy, Debug)]
struct Clock(tokio::time::Instant);

impl Clock {
    #[allow(clippy::disallowed_methods)] // The driver, not the sans-IO core, reads the clock.
    fn start() -> Self {
        Clock(tokio::time::Instant::now())
    }

    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> Time {
        tokio::time::Instant::now()
            .saturating_duration_since(self.0)
            .as_nanos() as Time
    }

    fn instant_at(&self, time: Time) -> tokio::time::Instant {
        self.0 + std::time::Duration::from_nanos(time)
    }
}

impl<B: Backend> Driver<B> {
    /// Opens the decision log in `dir` (recovering it), restores the coordinator of
    /// `participants` (node ids 1..) from it, and returns the driver with its handle.
    pub fn open(
        dir: &Path,
        backend: Arc<B>,
        participants: usize,
        config: Config,
        crash: Option<CrashPlan>,
    ) -> Result<(Driver<B>, DriverHandle), LogError> {
        let (log, storage) = DurableLog::open::<TwoPhaseCommit>(dir)?;
        let members: Vec<NodeId> = (0..=participants as NodeId).collect();
        let mut rng = seeded_rng(0, 0);
        let clock = Clock::start();
        let node = TwoPhaseCommit::restore(0, &members, &config, &storage, 0, &mut rng);
        let (client_sender, commands) = mpsc::unbounded_channel();
        let (sender, answers) = mpsc::unbounded_channel();
        let handle = DriverHandle {
            commands: client_sender,
        };
        let driver = Driver {
            node,
            log,
            backend,
            participants: members[1..].to_vec(),
            rng,
            commands,
            answers,
            sender,
            commands_open: true,
            in_flight: 0,
            waiting: BTreeMap::new(),
            next_request: 1,
            held: VecDeque::new(),
            barrier_unsynced: false,
            crash,
            decision_pending_crash: false,
            epoch: storage.epoch + 1,
            clock,
        };
        Ok((driver, handle))
    }

    /// Recovery: asks every participant for its in-doubt transactions and has the
    /// coordinator resolve each (commit if its log holds the commit, abort otherwise), then
    /// runs until nothing is left to finish. Returns how many transactions it resolved.
    pub async fn recover(&mut self) -> anyhow::Result<usize> {
        let mut resolved = 0;
        for &participant in &self.participants.clone() {
            for txn in self.backend.in_doubt(participant).await? {
                resolved += 1;
                self.handle(Input::Message {
                    from: participant,
                    message: Message::Query { txn },
                })?;
            }
        }
        self.flush()?;
        // Finish what the log says is committed but not ended, and what the queries started.
        while self.busy() {
            self.turn().await?;
        }
        Ok(resolved)
    }

    fn busy(&self) -> bool {
        let coordinator = self.node.as_coordinator().expect("a coordinator");
        coordinator.voting() + coordinator.committing() > 0
            || !self.waiting.is_empty()
            || self.in_flight > 0
            || self.node.next_deadline().is_some()
    }

    /// Serves transactions until every handle is dropped and nothing is in flight.
    pub async fn run(mut self) -> anyhow::Result<()> {
        while self.commands_open || self.busy() {
            self.turn().await?;
        }
        Ok(())
    }

    /// Waits for a command, an answer or the next deadline; handles a batch, fsyncs, and
    /// releases what waited for the fsync.
    async fn turn(&mut self) -> anyhow::Result<()> {
        let sleep = match self.node.next_deadline() {
            Some(at) => tokio::time::sleep_until(self.clock.instant_at(at)),
            None => tokio::time::sleep(std::time::Duration::from_secs(3_600)),
        };
        tokio::select! {
            command = self.commands.recv(), if self.commands_open => match command {
                Some(command) => self.command(command.0)?,
                None => self.commands_open = false,
            },
            answer = self.answers.recv() => {
                if let Some(answer) = answer {
                    self.command(answer.0)?;
                }
            }
            () = sleep => self.handle(Input::Tick)?,
        }
        for _ in 1..MAX_BATCH {
            let next = match self.answers.try_recv() {
                Ok(answer) => answer,
                Err(_) => match self.commands.try_recv() {
                    Ok(command) => command,
                    Err(_) => break,
                },
            };
            self.command(next.0)?;
        }
        if self
            .node
            .next_deadline()
            .is_some_and(|at| at <= self.clock.now())
        {
            self.handle(Input::Tick)?;
        }
        self.flush()
    }

    fn command(&mut self, command: Command) -> anyhow::Result<()> {
        match command {
            Command::Transact(changes, reply) => {
                let id = self.next_request;
                self.next_request += 1;
                self.waiting.insert(id, reply);
                self.handle(Input::Request {
                    id,
                    request: Request::Transaction(changes),
                })
            }
            Command::Input(input) => {
                self.check_crash_on_input(&input);
                self.handle(input)
            }
            Command::Finished => {
                self.in_flight -= 1;
                Ok(())
            }
        }
    }

    /// Steps the coordinator and performs its effects: writes go to the log; sends and
    /// replies behind an unsynced barrier write wait for the fsync.
    fn handle(&mut self, input: Input<Message, Request>) -> anyhow::Result<()> {
        let mut effects = Vec::new();
        let mut env = Env {
            now: self.clock.now(),
            rng: &mut self.rng,
        };
        self.node.step(&mut env, input, &mut effects);
        if let Err(violation) = self.node.check_invariants() {
            panic!("{violation}");
        }
        for effect in effects {
            match effect {
                Effect::Persist { write, .. } => {
                    self.check_crash_on_write(&write);
                    if TwoPhaseCommit::is_barrier(&write) {
                        self.barrier_unsynced = true;
                    }
                    self.log.append(&write)?;
                }
                Effect::Apply { .. } => {}
                send_or_reply if self.barrier_unsynced || !self.held.is_empty() => {
                    self.held.push_back(send_or_reply)
                }
                send_or_reply => self.perform(send_or_reply),
            }
        }
        Ok(())
    }

    /// One fsync for everything appended; then confirm and release what waited.
    fn flush(&mut self) -> anyhow::Result<()> {
        if self.log.unsynced() > 0 {
            self.log.sync()?;
            self.barrier_unsynced = false;
            self.check_crash_after_sync();
            // The coordinator ignores the token; confirming is for the contract's sake.
            self.handle(Input::Persisted { token: 0 })?;
        }
        self.barrier_unsynced = false;
        while let Some(effect) = self.held.pop_front() {
            self.perform(effect);
        }
        Ok(())
    }

    fn perform(&mut self, effect: TwoPcEffect) {
        match effect {
            Effect::Send { to, message } => self.send(to, message),
            Effect::Reply { id, response } => {
                if let Some(reply) = self.waiting.remove(&id) {
                    let _ = reply.send(response);
                }
            }
            Effect::Persist { .. } | Effect::Apply { .. } => {}
        }
    }

    /// Carries a message to a participant through the backend; its answer comes back as an
    /// input.
    fn send(&mut self, to: NodeId, message: Message) {
        let backend = Arc::clone(&self.backend);
        let inbox = self.sender.clone();
        let answer = move |message: Option<Message>| {
            if let Some(message) = message {
                let input = Input::Message { from: to, message };
                let _ = inbox.send(CommandBox(Command::Input(input)));
            }
            let _ = inbox.send(CommandBox(Command::Finished));
        };
        self.in_flight += 1;
        match message {
            Message::Prepare { txn, changes, .. } => {
                tokio::spawn(async move {
                    let vote = backend.prepare(to, txn, changes).await;
                    answer(Some(Message::Vote { txn, vote }));
                });
            }
            Message::Commit { txn }
            | Message::Decision {
                txn,
                outcome: Outcome::Commit,
            } => {
                tokio::spawn(async move {
                    let done = backend.commit(to, txn).await.is_ok();
                    answer(done.then_some(Message::Ack { txn }));
                });
            }
            Message::Abort { txn }
            | Message::Decision {
                txn,
                outcome: Outcome::Abort,
            } => {
                tokio::spawn(async move {
                    let _ = backend.abort(to, txn).await;
                    answer(None);
                });
            }
            Message::Vote { .. } | Message::Ack { .. } | Message::Query { .. } => {
                self.in_flight -= 1;
            }
        }
    }

    fn planned(&self, point: CrashPoint, txn: TxnId) -> bool {
        self.crash.is_some_and(|plan| {
            plan.point == point && txn.epoch == self.epoch && txn.sequence == plan.sequence
        })
    }

    fn crash_now(&self, point: CrashPoint) -> ! {
        eprintln!("coordinator: planned crash at {}", point.name());
        std::process::exit(CRASH_EXIT_CODE);
    }

    fn check_crash_on_input(&mut self, input: &Input<Message, Request>) {
        let Input::Message { message, .. } = input else {
            return;
        };
        match message {
            Message::Vote { txn, vote: Ok(()) }
                if self.planned(CrashPoint::AfterFirstVote, *txn) =>
            {
                self.crash_now(CrashPoint::AfterFirstVote)
            }
            Message::Ack { txn } if self.planned(CrashPoint::AfterFirstCommit, *txn) => {
                self.crash_now(CrashPoint::AfterFirstCommit)
            }
            _ => {}
        }
    }

    fn check_crash_on_write(&mut self, write: &Write) {
        match write {
            Write::CommitDecided { txn, .. } if self.planned(CrashPoint::BeforeDecision, *txn) => {
                self.crash_now(CrashPoint::BeforeDecision)
            }
            Write::CommitDecided { txn, .. } if self.planned(CrashPoint::AfterDecision, *txn) => {
                self.decision_pending_crash = true;
            }
            Write::Ended { txn } if self.planned(CrashPoint::BeforeEnd, *txn) => {
                self.crash_now(CrashPoint::BeforeEnd)
            }
            _ => {}
        }
    }

    fn check_crash_after_sync(&mut self) {
        if self.decision_pending_crash {
            self.crash_now(CrashPoint::AfterDecision);
        }
    }
}
