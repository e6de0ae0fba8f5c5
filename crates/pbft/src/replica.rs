//! The replica: its state, how it restarts from storage, and the `Node` contract.
//!
//! The handlers live beside it by concern: `normal` (requests, pre-prepare, prepare, commit,
//! execution), `checkpoint` (checkpoints, garbage collection, state transfer, status),
//! `view_change` (view changes and new views), `client` (the client proxy a node hosts).

use std::collections::{BTreeMap, VecDeque};

use concord_core::{
    Duration, Effect, EffectOf, Env, Input, Node, NodeId, NodeStatus, PersistToken, Rng, Role,
    StateMachine, Time, Violation,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::{digest_of, encode, Digest, Keys};
use crate::client::ClientProxy;
use crate::config::{Config, ConfigError, Quorums};
use crate::message::{
    AuthenticatedRequest, Body, CheckpointProof, ClientId, ClientRequest, Message, Request,
    Response, Sequence, SignedCheckpoint, SignedNewView, SignedViewChange, Storage, Timestamp,
    View, Write,
};

/// A state machine PBFT can replicate: its commands, queries and outputs travel in messages,
/// so they serialize (for digests, MACs and state transfer).
pub trait Service:
    StateMachine<
        Command: Serialize + DeserializeOwned + Eq,
        Query: Serialize + DeserializeOwned + Eq,
        Output: Serialize + DeserializeOwned + Eq,
    > + Default
{
}

impl<S> Service for S where
    S: StateMachine<
            Command: Serialize + DeserializeOwned + Eq,
            Query: Serialize + DeserializeOwned + Eq,
            Output: Serialize + DeserializeOwned + Eq,
        > + Default
{
}

/// A request with its authenticator, for state machine `S`.
pub type Authenticated<S> =
    AuthenticatedRequest<<S as StateMachine>::Command, <S as StateMachine>::Query>;
/// A batch of authenticated requests.
pub type Batch<S> = Vec<Authenticated<S>>;
/// What replicas execute at one sequence number (the `Apply` command): the batch's requests.
pub type Executed<S> = Vec<ClientRequest<<S as StateMachine>::Command, <S as StateMachine>::Query>>;
/// The message type of `Pbft<S>`.
pub type PbftMessage<S> =
    Message<<S as StateMachine>::Command, <S as StateMachine>::Query, <S as StateMachine>::Output>;
/// The message body type of `Pbft<S>`.
pub type PbftBody<S> =
    Body<<S as StateMachine>::Command, <S as StateMachine>::Query, <S as StateMachine>::Output>;
pub(crate) type Out<S> = Vec<EffectOf<Pbft<S>>>;

/// The digest of a batch: SHA-256 of its requests (authenticators excluded).
pub fn batch_digest<C: Serialize, Q: Serialize>(batch: &[AuthenticatedRequest<C, Q>]) -> Digest {
    let requests: Vec<&ClientRequest<C, Q>> = batch.iter().map(|r| &r.request).collect();
    digest_of(&requests)
}

/// The pre-prepare a replica accepted for one sequence number.
#[derive(Clone, Debug)]
pub(crate) struct Accepted<S: Service> {
    pub view: View,
    pub digest: Digest,
    pub batch: Batch<S>,
}

/// One sequence number in the log: the accepted pre-prepare and the prepares and commits
/// heard (each replica's latest).
#[derive(Clone, Debug)]
pub(crate) struct Slot<S: Service> {
    pub pre_prepare: Option<Accepted<S>>,
    pub prepares: BTreeMap<NodeId, (View, Digest)>,
    pub commits: BTreeMap<NodeId, (View, Digest)>,
    /// The accepted pre-prepare prepared (in its view).
    pub prepared: bool,
    /// Committed: final, whatever view comes next.
    pub committed: Option<Digest>,
}

impl<S: Service> Default for Slot<S> {
    fn default() -> Self {
        Slot {
            pre_prepare: None,
            prepares: BTreeMap::new(),
            commits: BTreeMap::new(),
            prepared: false,
            committed: None,
        }
    }
}

/// The last request of a client a replica executed, and its result (the reply cache, §4.1).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LastReply<O> {
    /// The request's timestamp.
    pub timestamp: Timestamp,
    /// Its result.
    pub result: O,
}

/// Counters of what a replica refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages dropped because a MAC, an authenticator entry or a signature did not verify.
    pub authentication_failures: u64,
    /// Authenticated messages dropped as malformed: a digest that does not match its batch, a
    /// checkpoint proof without a quorum, a new view whose decision does not follow from its
    /// view changes.
    pub invalid_messages: u64,
    /// View changes this replica started.
    pub view_changes_started: u64,
    /// States installed by state transfer.
    pub states_installed: u64,
}

/// A PBFT replica, with the client proxy its node hosts.
#[derive(Debug)]
pub struct Pbft<S: Service> {
    pub(crate) id: NodeId,
    pub(crate) quorums: Quorums,
    pub(crate) config: Config,
    pub(crate) config_error: Option<ConfigError>,
    pub(crate) keys: Keys,
    /// The current view (or the view being changed to, while `!active`).
    pub(crate) view: View,
    pub(crate) active: bool,
    /// Sequence numbers above the stable checkpoint.
    pub(crate) log: BTreeMap<Sequence, Slot<S>>,
    /// The primary's next sequence number.
    pub(crate) next_sequence: Sequence,
    /// The stable checkpoint: the low watermark `h`.
    pub(crate) stable: CheckpointProof,
    /// The state at the stable checkpoint, when this replica has it (not yet, right after
    /// adopting a newer checkpoint from its peers).
    pub(crate) stable_snapshot: Option<Vec<u8>>,
    /// Invariant: `executed >= stable.sequence` unless waiting for a state transfer.
    pub(crate) executed: Sequence,
    pub(crate) state: S,
    pub(crate) replies: BTreeMap<ClientId, LastReply<S::Output>>,
    /// Checkpoints this replica took and that are not yet stable: digest and state.
    pub(crate) own_checkpoints: BTreeMap<Sequence, (Digest, Vec<u8>)>,
    pub(crate) checkpoint_votes: BTreeMap<Sequence, BTreeMap<NodeId, SignedCheckpoint>>,
    /// The `P` set: latest view and digest prepared per sequence number.
    pub(crate) prepared_set: BTreeMap<Sequence, (View, Digest)>,
    /// The `Q` set: latest view each digest was pre-prepared in, per sequence number.
    pub(crate) pre_prepared_set: BTreeMap<Sequence, BTreeMap<Digest, View>>,
    /// Batches by digest, for the `P` set and re-execution.
    pub(crate) batches: BTreeMap<Digest, Batch<S>>,
    /// Requests waiting for the primary to order them.
    pub(crate) pending: VecDeque<Authenticated<S>>,
    /// Requests a backup knows of and has not executed: the latest per client. A backup that
    /// becomes primary orders them.
    pub(crate) waiting: BTreeMap<ClientId, Authenticated<S>>,
    /// When the view-change timer for waiting requests fires.
    pub(crate) request_timer: Option<Time>,
    /// The latest view change each replica sent (for views above the last one entered).
    pub(crate) view_changes: BTreeMap<NodeId, SignedViewChange<S::Command, S::Query>>,
    /// When to give up on the view being changed to: set once a quorum is changing to it or
    /// beyond (liveness rule 1 of §4.5.2, so a lone replica does not run through views).
    pub(crate) view_change_deadline: Option<Time>,
    /// View changes without progress in a row: the timeout is doubled this many times.
    pub(crate) view_change_attempts: u32,
    /// The NEW-VIEW that started the current view, for replicas that missed it.
    pub(crate) last_new_view: Option<SignedNewView<S::Command, S::Query>>,
    /// A committed batch a new view re-proposed differently (a broken invariant, reported by
    /// `check_invariants`).
    pub(crate) conflict: Option<String>,
    pub(crate) status_deadline: Time,
    pub(crate) client: ClientProxy<S>,
    pub(crate) loopback: VecDeque<PbftBody<S>>,
    pub(crate) next_token: PersistToken,
    pub(crate) counters: Counters,
}

/// The state snapshot of a checkpoint: the service's own, and the reply cache.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StateSnapshot<O> {
    pub service: Vec<u8>,
    pub replies: Vec<(ClientId, LastReply<O>)>,
}

impl<S: Service> Pbft<S> {
    /// This replica's id.
    pub fn replica(&self) -> NodeId {
        self.id
    }

    /// The current view (or the view being changed to).
    pub fn view(&self) -> View {
        self.view
    }

    /// Whether the replica is active in its view (not changing views).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The primary of view `view`.
    pub fn primary_of(&self, view: View) -> NodeId {
        view % self.quorums.replicas as u64
    }

    /// Whether this replica is the primary of its view, and active.
    pub fn is_primary(&self) -> bool {
        self.active && self.primary_of(self.view) == self.id
    }

    /// The last sequence number executed.
    pub fn executed(&self) -> Sequence {
        self.executed
    }

    /// The stable checkpoint's sequence number (the low watermark `h`).
    pub fn low_watermark(&self) -> Sequence {
        self.stable.sequence
    }

    /// The high watermark `H = h + L`.
    pub fn high_watermark(&self) -> Sequence {
        self.stable.sequence + self.config.log_window
    }

    /// The stable checkpoint's proof.
    pub fn stable_checkpoint(&self) -> &CheckpointProof {
        &self.stable
    }

    /// The replicated state.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The last request of `client` this replica executed, and its result (the reply cache).
    pub fn last_reply(&self, client: ClientId) -> Option<&LastReply<S::Output>> {
        self.replies.get(&client)
    }

    /// What this replica refused, and view changes it started.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The quorum sizes.
    pub fn quorums(&self) -> Quorums {
        self.quorums
    }

    /// The keys of this replica (the simulator's Byzantine behaviours re-authenticate what they
    /// rewrite with them).
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The batch digest committed at `sequence`, if this replica knows it committed.
    pub fn committed(&self, sequence: Sequence) -> Option<Digest> {
        self.log.get(&sequence).and_then(|slot| slot.committed)
    }

    /// The last sequence number with an accepted pre-prepare (the log's length), at least
    /// the last executed one.
    pub fn last_assigned(&self) -> Sequence {
        let logged = self
            .log
            .iter()
            .rev()
            .find(|(_, slot)| slot.pre_prepare.is_some())
            .map_or(0, |(sequence, _)| *sequence);
        logged
            .max(self.executed)
            .max(self.next_sequence.saturating_sub(1))
    }

    /// Sequence numbers in the log (for tests).
    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// The host node of client `client`'s proxy.
    pub(crate) fn host_of(&self, client: ClientId) -> NodeId {
        client / self.config.client_lanes
    }

    pub(crate) fn others(&self) -> impl Iterator<Item = NodeId> {
        let id = self.id;
        (0..self.quorums.replicas as NodeId).filter(move |&n| n != id)
    }

    /// The view-change timeout after `attempts` fruitless view changes (§4.5.2: doubled each
    /// time, so correct replicas eventually overlap long enough in one view).
    pub(crate) fn view_change_timeout(&self) -> Duration {
        let doubled = self
            .config
            .view_change_timeout
            .saturating_mul(1u64 << self.view_change_attempts.min(20));
        doubled.min(
            self.config
                .max_view_change_timeout
                .max(self.config.view_change_timeout),
        )
    }

    /// Sends `body` to `to`, authenticated; to itself, through the loopback queue.
    pub(crate) fn send(&mut self, to: NodeId, body: PbftBody<S>, out: &mut Out<S>) {
        if to == self.id {
            self.loopback.push_back(body);
            return;
        }
        let bytes = encode(&body);
        let mac = self.seal(to, &body, &bytes);
        out.push(Effect::Send {
            to,
            message: Message { body, mac },
        });
    }

    /// Sends `body` to every other replica.
    pub(crate) fn broadcast(&mut self, body: PbftBody<S>, out: &mut Out<S>) {
        let bytes = encode(&body);
        let others: Vec<NodeId> = self.others().collect();
        for to in others {
            let mac = self.seal(to, &body, &bytes);
            out.push(Effect::Send {
                to,
                message: Message {
                    body: body.clone(),
                    mac,
                },
            });
        }
    }

    fn seal(&self, to: NodeId, body: &PbftBody<S>, bytes: &[u8]) -> crate::auth::Mac {
        seal_with(&self.keys, to, body, bytes)
    }

    pub(crate) fn persist(&mut self, write: Write<S::Command, S::Query>, out: &mut Out<S>) {
        self.next_token += 1;
        out.push(Effect::Persist {
            token: self.next_token,
            write,
        });
    }

    /// The state snapshot: the service's state and the reply cache, as JSON (self-describing,
    /// so outputs with untagged enums decode).
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        let snapshot = StateSnapshot {
            service: self.state.snapshot(),
            replies: self
                .replies
                .iter()
                .map(|(client, reply)| (*client, reply.clone()))
                .collect(),
        };
        serde_json::to_vec(&snapshot).expect("a state snapshot always serializes")
    }

    /// Replaces the state with `snapshot`; false when it does not decode.
    pub(crate) fn install_snapshot(&mut self, snapshot: &[u8]) -> bool {
        let Ok(decoded) = serde_json::from_slice::<StateSnapshot<S::Output>>(snapshot) else {
            return false;
        };
        let mut state = S::default();
        if state.restore(&decoded.service).is_err() {
            return false;
        }
        self.state = state;
        self.replies = decoded.replies.into_iter().collect();
        true
    }

    fn authentic(&mut self, from: NodeId, message: &PbftMessage<S>) -> bool {
        if from as usize >= self.quorums.replicas {
            return false;
        }
        let bytes = encode(&message.body);
        match &message.body {
            Body::Reply { client, .. } => {
                self.host_of(*client) == self.id
                    && self.keys.client_mac(*client, from, &bytes) == message.mac
            }
            _ => self.keys.verify_from(from, &bytes, &message.mac),
        }
    }

    fn handle(&mut self, env: &mut Env<'_>, from: NodeId, body: PbftBody<S>, out: &mut Out<S>) {
        match body {
            Body::Request(request) => self.on_request(env.now, from, request, out),
            Body::PrePrepare {
                view,
                sequence,
                digest,
                batch,
            } => self.on_pre_prepare(from, view, sequence, digest, batch, out),
            Body::Prepare {
                view,
                sequence,
                digest,
            } => self.on_prepare(from, view, sequence, digest, out),
            Body::Commit {
                view,
                sequence,
                digest,
            } => self.on_commit(from, view, sequence, digest, out),
            Body::Reply {
                view,
                client,
                timestamp,
                result,
            } => self.on_reply(env.now, from, view, client, timestamp, result, out),
            Body::Checkpoint(checkpoint) => self.on_checkpoint(from, checkpoint, out),
            Body::ViewChange(view_change) => self.on_view_change(env.now, from, view_change, out),
            Body::NewView(new_view) => self.on_new_view(env.now, from, new_view, out),
            Body::Status {
                view,
                active,
                executed,
            } => self.on_status(from, view, active, executed, out),
            Body::Batch {
                sequence,
                digest,
                batch,
            } => self.on_batch(sequence, digest, batch, out),
            Body::State {
                checkpoint,
                snapshot,
            } => self.on_state(env.now, checkpoint, snapshot, out),
        }
    }

    fn on_tick(&mut self, now: Time, out: &mut Out<S>) {
        if now >= self.status_deadline {
            self.status_deadline = now + self.config.status_interval;
            let status = Body::Status {
                view: self.view,
                active: self.active,
                executed: self.executed,
            };
            self.broadcast(status, out);
        }
        if self.active && self.request_timer.is_some_and(|at| at <= now) {
            self.request_timer = None;
            self.start_view_change(now, self.view + 1, out);
        } else if !self.active && self.view_change_deadline.is_some_and(|at| at <= now) {
            self.start_view_change(now, self.view + 1, out);
        }
        self.client_tick(now, out);
    }

    /// Rebuilds the log from durable state, within the watermarks of the recovered stable
    /// checkpoint: a replica may have accepted (and even executed) sequence numbers under a
    /// later checkpoint that became stable without being made durable here. Those above the
    /// window stay out of the log (executed ones were re-executed from storage; the others come
    /// back from peers or a view change), and no sequence number accepted in the current view is
    /// assigned again ([`Replica::restore`] starts `next_sequence` above them).
    fn restore_log(&mut self, storage: &Storage<S::Command, S::Query>) {
        let high = self.high_watermark();
        for (&sequence, digests) in storage.pre_prepared.range(..=high) {
            let current = digests
                .iter()
                .filter(|(_, &view)| view == self.view)
                .map(|(digest, _)| *digest)
                .next();
            let Some(digest) = current else { continue };
            let Some(batch) = self.batches.get(&digest).cloned() else {
                continue;
            };
            let backup = self.view % self.quorums.replicas as u64 != self.id;
            let slot = self.log.entry(sequence).or_default();
            slot.prepared = storage.prepared.get(&sequence) == Some(&(self.view, digest));
            slot.pre_prepare = Some(Accepted {
                view: self.view,
                digest,
                batch,
            });
            // Its own votes count again: it sent them before the restart.
            if backup {
                slot.prepares.insert(self.id, (self.view, digest));
            }
            if slot.prepared {
                slot.commits.insert(self.id, (self.view, digest));
            }
        }
        // Executed ones too: the replica resends them, with its commit, to peers that lack them.
        for (&sequence, &digest) in storage.committed.range(..=high) {
            if sequence <= self.stable.sequence {
                continue;
            }
            let Some(batch) = self.batches.get(&digest).cloned() else {
                continue;
            };
            let view = storage
                .pre_prepared
                .get(&sequence)
                .and_then(|views| views.get(&digest))
                .copied()
                .unwrap_or(0);
            let slot = self.log.entry(sequence).or_default();
            if slot
                .pre_prepare
                .as_ref()
                .is_none_or(|pp| pp.digest != digest)
            {
                slot.pre_prepare = Some(Accepted {
                    view,
                    digest,
                    batch,
                });
                slot.prepared = false;
            }
            slot.committed = Some(digest);
            slot.commits.entry(self.id).or_insert((view, digest));
        }
    }
}

/// The MAC `keys`' owner puts on `body` (encoded as `bytes`) for `to`: a reply is
/// authenticated with the key its client shares with the replica, anything else with the two
/// replicas' pairwise key.
pub fn seal_with<C, Q, O>(
    keys: &Keys,
    to: NodeId,
    body: &Body<C, Q, O>,
    bytes: &[u8],
) -> crate::auth::Mac {
    match body {
        Body::Reply { client, .. } => keys.client_mac(*client, keys.id(), bytes),
        _ => keys.mac_to(to, bytes),
    }
}

impl<S: Service> Node for Pbft<S> {
    type Message = PbftMessage<S>;
    type Request = Request<S::Command, S::Query>;
    type Response = Response<S::Output>;
    type Write = Write<S::Command, S::Query>;
    type Storage = Storage<S::Command, S::Query>;
    type Command = Executed<S>;
    type Config = Config;

    fn restore(
        id: NodeId,
        members: &[NodeId],
        config: &Config,
        storage: &Self::Storage,
        now: Time,
        _rng: &mut Rng,
    ) -> Self {
        let replicas = members.len().max(1);
        let config_error = config.validate(replicas).err();
        let faults = if config_error.is_some() {
            replicas.saturating_sub(1) / 3
        } else {
            config.faults_for(replicas)
        };
        let genesis = CheckpointProof {
            sequence: 0,
            digest: [0; 32],
            signatures: Vec::new(),
        };
        let mut replica = Pbft {
            id,
            quorums: Quorums { replicas, faults },
            config: config.clone(),
            config_error,
            keys: Keys::with_clients(config.key_seed, id, replicas, config.client_lanes),
            view: storage.view,
            active: storage.active,
            log: BTreeMap::new(),
            next_sequence: 1,
            stable: genesis,
            stable_snapshot: None,
            executed: 0,
            state: S::default(),
            replies: BTreeMap::new(),
            own_checkpoints: BTreeMap::new(),
            checkpoint_votes: BTreeMap::new(),
            prepared_set: storage.prepared.clone(),
            pre_prepared_set: storage.pre_prepared.clone(),
            batches: storage.batches.clone(),
            pending: VecDeque::new(),
            waiting: BTreeMap::new(),
            request_timer: None,
            view_changes: BTreeMap::new(),
            view_change_deadline: None,
            view_change_attempts: 0,
            last_new_view: storage
                .new_view
                .as_deref()
                .filter(|nv| storage.active && nv.new_view.view == storage.view)
                .cloned(),
            conflict: None,
            status_deadline: now + config.status_interval,
            client: ClientProxy::new(id, config),
            loopback: VecDeque::new(),
            next_token: 0,
            counters: Counters::default(),
        };
        replica.stable_snapshot = Some(replica.snapshot());
        if let Some((proof, snapshot)) = &storage.checkpoint {
            if replica.install_snapshot(snapshot) {
                replica.stable = proof.clone();
                replica.stable_snapshot = Some(snapshot.clone());
                replica.executed = proof.sequence;
            }
        }
        // Re-execute what committed after the checkpoint, silently: its effects were seen.
        while let Some(digest) = storage.committed.get(&(replica.executed + 1)) {
            let Some(batch) = storage.batches.get(digest) else {
                break;
            };
            for request in batch.clone() {
                replica.execute_request(&request.request);
            }
            replica.executed += 1;
        }
        replica.restore_log(storage);
        let accepted_in_view = storage
            .pre_prepared
            .iter()
            .filter(|(_, digests)| digests.values().any(|&view| view == replica.view))
            .map(|(&sequence, _)| sequence)
            .next_back()
            .unwrap_or(0);
        replica.next_sequence = replica.last_assigned().max(accepted_in_view) + 1;
        if !replica.active {
            // Its view change, rebuilt from the durable P and Q sets, goes out again with its
            // status; the timer starts once a quorum is in this view change.
            let view_change = replica.make_view_change(replica.view);
            let signature = replica.keys.sign(&encode(&view_change));
            let signed = SignedViewChange {
                view_change,
                signature,
            };
            replica.view_changes.insert(id, signed);
        }
        replica
    }

    fn apply_write(storage: &mut Self::Storage, write: &Self::Write) {
        storage.apply(write);
    }

    /// A committed batch is a barrier too: the replies its execution sends wait until a
    /// restart would execute it again, so no client ever saw a state a replica can lose (the
    /// read-only optimization counts on it).
    fn is_barrier(write: &Self::Write) -> bool {
        !matches!(write, Write::Checkpoint { .. })
    }

    fn step(
        &mut self,
        env: &mut Env<'_>,
        input: Input<Self::Message, Self::Request>,
        out: &mut Out<S>,
    ) {
        match input {
            Input::Message { from, message } => {
                if self.authentic(from, &message) {
                    self.handle(env, from, message.body, out);
                } else {
                    self.counters.authentication_failures += 1;
                }
            }
            Input::Tick => self.on_tick(env.now, out),
            Input::Request { id, request } => self.on_client_request(env.now, id, request, out),
            // A hint any Byzantine peer could fake by resetting connections: ignored.
            Input::Persisted { .. } | Input::PeerLost { .. } => {}
        }
        // Messages to itself: a bounded number per step (each handler sends itself at most a
        // few), so this loop ends.
        let mut budget = 4 * self.quorums.replicas + 64;
        while let Some(body) = self.loopback.pop_front() {
            if budget == 0 {
                self.loopback.clear();
                break;
            }
            budget -= 1;
            self.handle(env, self.id, body, out);
        }
        self.try_execute(env.now, out);
        self.try_propose(out);
    }

    fn next_deadline(&self) -> Option<Time> {
        [
            Some(self.status_deadline),
            self.request_timer.filter(|_| self.active),
            self.view_change_deadline.filter(|_| !self.active),
            self.client.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn status(&self) -> NodeStatus {
        let role = if !self.active {
            Role::ViewChange
        } else if self.is_primary() {
            Role::Leader
        } else {
            Role::Follower
        };
        NodeStatus {
            id: self.id,
            role,
            leader: self.active.then(|| self.primary_of(self.view)),
            term: self.view,
            log_length: self.last_assigned(),
            commit_index: self.executed,
            applied_index: self.executed,
            peers: Vec::new(),
        }
    }

    fn check_invariants(&self) -> Result<(), Violation> {
        crate::checks::check(self)
    }

    fn id(&self) -> NodeId {
        self.id
    }

    fn election_timeout(config: &Config) -> Duration {
        config.view_change_timeout
    }

    fn state_digest(&self) -> Option<u64> {
        Some(concord_core::digest(&self.snapshot()))
    }
}
