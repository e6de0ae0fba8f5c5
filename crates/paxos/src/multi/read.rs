//! Linearizable reads without log writes: read index and leader leases (Ongaro's thesis §6.4
//! on Raft terms, here on Paxos ballots; the acceptor-side promise of a lease as in Chandra,
//! Griesemer, Redstone, "Paxos Made Live", 2007, §5.2 "master leases").
//!
//! **Read index** ([`ReadMode::ReadIndex`]). A read arriving at the leader of ballot `b`:
//!
//! 1. takes as its *read index* the leader's decided prefix, and at least the highest slot the
//!    leader adopted in phase 1 (a value chosen under an earlier ballot may sit there, not yet
//!    decided by this leader);
//! 2. waits for a *read round* begun after it arrived. Every `Accept` carries the leader's
//!    current read round and every `Accepted` echoes it. Once followers that make a phase-2
//!    quorum with the leader have echoed round `r` at ballot `b`, each of them still held `b`
//!    after round `r` began. So no higher ballot had finished phase 1 by then: a phase-2
//!    quorum meets every phase-1 quorum (`q1 + q2 > n`), and an acceptor that promised a higher
//!    ballot never acknowledges `b`. Every write acknowledged before the read arrived is
//!    therefore at or below the read index;
//! 3. is answered ([`Response::Read`]) once the leader has applied its read index.
//!
//! Every heartbeat begins a round. A read that finds a round in flight asks for the next one,
//! begun with an empty `Accept` to each follower as soon as the one in flight is confirmed: one
//! round at a time, shared by every read waiting.
//!
//! **Leases** ([`ReadMode::Lease`]). An acceptor that acknowledges a leader promises, by its
//! own clock, to promise no new ballot for `Config::lease_duration`: it ignores `Prepare`s for
//! higher ballots and does not campaign. So does a node that has just started (it may have
//! acknowledged a leader just before it crashed), and the leader itself from the start of each
//! round. A leader whose round begun at `t` (its clock) is confirmed by a phase-2 quorum knows
//! that no other ballot can finish phase 1 before each of those acceptors' clocks has run
//! `lease_duration` past the moment it acknowledged, which came after `t`; it answers reads
//! without a round until `t + lease_duration - max_clock_drift` by its own clock. The price: a
//! failed leader is replaced up to `lease_duration` later.
//!
//! **Reconfiguration.** A new configuration starts only once its members apply the stop-sign,
//! so only after a leader of the old configuration decided it: the lease holder itself, which
//! steps down (failing its reads) in the step that decides and applies it; or a later leader
//! of the old configuration, whose phase 1 had to get past the old acceptors' promises.
//!
//! A read is linearized when the round (or the lease check) confirms it: a reply held back
//! behind a persist barrier, or served after more slots were applied, stays correct.
//!
//! A leader that steps down fails the reads it holds with [`PaxosError::NotLeader`]: a read
//! changes nothing, so the failure is definite.

use std::collections::{BTreeMap, VecDeque};

use concord_core::{Effect, NodeId, RequestId, StateMachine, Time};

use super::node::{MultiEffect, Phase, Qry};
use super::{Message, MultiPaxos, PaxosError, ReadMode, Response, Slot};

/// The most read rounds whose start a lease holder remembers while they are unconfirmed
/// (heartbeats begin one per `heartbeat_interval`; rounds older than a lease are dropped first).
const MAX_UNCONFIRMED_ROUNDS: usize = 64;

/// A read waiting for its read round to be confirmed.
#[derive(Clone, Debug)]
struct WaitingRead<Q> {
    /// The first round that confirms it (begun after it arrived).
    round: u64,
    read_index: Slot,
    id: RequestId,
    query: Q,
}

/// The state of reads served without the log.
#[derive(Clone, Debug)]
pub(super) struct Reads<Q> {
    /// Leader: the current read round (one more per round begun; never reset while up).
    pub(super) round: u64,
    /// Leader: the highest round each follower echoed at the current ballot. Invariant: no
    /// entry above `round`.
    acked: BTreeMap<NodeId, u64>,
    /// Leader: a waiting read needs a round not begun yet (begun once the one in flight is
    /// confirmed).
    round_wanted: bool,
    /// Leader: the highest slot adopted in phase 1; no read index is below it.
    floor: Slot,
    /// Leader, leases: when each unconfirmed round began (local time), oldest first.
    started: VecDeque<(u64, Time)>,
    /// Leader, leases: reads are answered without a round until here (local time).
    lease_until: Time,
    /// Leader: reads waiting for a round, in arrival (so round) order.
    awaiting_round: VecDeque<WaitingRead<Q>>,
    /// Leader: confirmed reads waiting for their read index to be applied, by (read index,
    /// arrival).
    awaiting_apply: BTreeMap<(Slot, u64), (RequestId, Q)>,
    arrivals: u64,
    /// Acceptor, leases: no new ballot is promised before here (local time).
    guard_until: Time,
}

impl<Q> Reads<Q> {
    /// No reads, no lease; under leases, a node that starts at `now` promises nothing new
    /// until `guard_until` (it may have acknowledged a leader just before it stopped).
    pub(super) fn new(guard_until: Time) -> Self {
        Reads {
            round: 0,
            acked: BTreeMap::new(),
            round_wanted: false,
            floor: 0,
            started: VecDeque::new(),
            lease_until: 0,
            awaiting_round: VecDeque::new(),
            awaiting_apply: BTreeMap::new(),
            arrivals: 0,
            guard_until,
        }
    }

    /// Reads held (waiting for a round or for their read index).
    pub(super) fn held(&self) -> usize {
        self.awaiting_round.len() + self.awaiting_apply.len()
    }

    /// Whether this node holds a lease (as leader).
    pub(super) fn has_lease(&self) -> bool {
        self.lease_until > 0
    }

    /// Whether some follower echoed a round not begun yet.
    pub(super) fn acked_beyond_round(&self) -> bool {
        self.acked.values().any(|&acked| acked > self.round)
    }
}

impl<S: StateMachine + Default> MultiPaxos<S> {
    /// Reads served locally, without a round, until here (0: no lease).
    pub fn lease_until(&self) -> Time {
        self.reads.lease_until
    }

    /// Whether a lease this node acknowledged (or may have, before it restarted) still forbids
    /// it to promise a new ballot.
    pub(super) fn lease_guarded(&self, now: Time) -> bool {
        self.config.read_mode == ReadMode::Lease && now < self.reads.guard_until
    }

    fn extend_guard(&mut self, now: Time) {
        if self.config.read_mode == ReadMode::Lease {
            let until = now.saturating_add(self.config.lease_duration);
            self.reads.guard_until = self.reads.guard_until.max(until);
        }
    }

    /// A follower's phase-2b answer to the leader `to`, echoing its read round; under leases,
    /// also a promise to promise no other ballot for a lease.
    pub(super) fn acknowledge(
        &mut self,
        now: Time,
        to: NodeId,
        accepted: Message<S::Command, S::Query>,
        effects: &mut Vec<MultiEffect<S>>,
    ) {
        debug_assert!(matches!(accepted, Message::Accepted { .. }));
        self.extend_guard(now);
        Self::send(to, accepted, effects);
    }

    /// A new leader: reads start afresh at `floor` (the last slot it adopted), with a round.
    pub(super) fn lead_reads(&mut self, now: Time, floor: Slot) {
        debug_assert_eq!(self.reads.held(), 0);
        self.reads.floor = floor;
        self.reads.acked.clear();
        self.reads.started.clear();
        self.reads.lease_until = 0;
        self.begin_read_round(now);
    }

    /// Begins a read round: every `Accept` sent from now on carries it.
    pub(super) fn begin_read_round(&mut self, now: Time) {
        self.reads.round += 1;
        // Every waiting read is confirmed by this round.
        self.reads.round_wanted = false;
        if self.config.read_mode == ReadMode::Lease {
            let span = self.lease_span();
            self.reads
                .started
                .retain(|&(_, began)| began.saturating_add(span) > now);
            if self.reads.started.len() >= MAX_UNCONFIRMED_ROUNDS {
                self.reads.started.pop_front();
            }
            self.reads.started.push_back((self.reads.round, now));
            self.extend_guard(now);
        }
    }

    /// How long after a confirmed round began the leader may serve reads locally.
    fn lease_span(&self) -> Time {
        self.config
            .lease_duration
            .saturating_sub(self.config.max_clock_drift)
    }

    /// A client read arrives.
    pub(super) fn on_read(
        &mut self,
        now: Time,
        id: RequestId,
        query: Qry<S>,
        effects: &mut Vec<MultiEffect<S>>,
    ) {
        if self.phase != Phase::Leader {
            self.refuse_not_leader(id, effects);
            return;
        }
        if self.reads.held() >= self.config.max_pending {
            let response = Response::Failed(PaxosError::Overloaded);
            effects.push(Effect::Reply { id, response });
            return;
        }
        let read_index = self.decided.max(self.reads.floor);
        if self.config.read_mode == ReadMode::Lease && now < self.reads.lease_until {
            self.await_apply(read_index, id, query, effects);
            return;
        }
        self.reads.awaiting_round.push_back(WaitingRead {
            round: self.reads.round + 1,
            read_index,
            id,
            query,
        });
        if self.confirmed_round() >= self.reads.round {
            self.probe(now, effects);
        } else {
            self.reads.round_wanted = true;
        }
        self.confirm_reads(now, effects);
    }

    /// Begins a round with an empty `Accept` to every follower, from the slot it surely holds
    /// (so no entries are resent).
    fn probe(&mut self, now: Time, effects: &mut Vec<MultiEffect<S>>) {
        let Some(ballot) = self.ballot else { return };
        self.begin_read_round(now);
        for to in self.followers() {
            let message = Message::Accept {
                ballot,
                prev: self.matched.get(&to).copied().unwrap_or(0),
                entries: Vec::new(),
                decided: self.decided,
                read_round: self.reads.round,
            };
            Self::send(to, message, effects);
        }
    }

    /// The highest round a phase-2 quorum (the leader included) has confirmed.
    fn confirmed_round(&self) -> u64 {
        let mut rounds: Vec<u64> = self
            .followers()
            .iter()
            .map(|to| self.reads.acked.get(to).copied().unwrap_or(0))
            .collect();
        rounds.push(self.reads.round);
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        rounds.get(self.phase2_quorum() - 1).copied().unwrap_or(0)
    }

    /// Follower `from` echoed `round` at the leader's ballot.
    pub(super) fn on_read_round_acknowledged(
        &mut self,
        now: Time,
        from: NodeId,
        round: u64,
        effects: &mut Vec<MultiEffect<S>>,
    ) {
        if round > self.reads.round {
            return; // malformed: never sent
        }
        let acked = self.reads.acked.entry(from).or_insert(0);
        if round > *acked {
            *acked = round;
            self.confirm_reads(now, effects);
        }
    }

    /// Releases the reads a quorum has confirmed, extends the lease, and begins the round a
    /// read asked for once the one in flight is confirmed.
    fn confirm_reads(&mut self, now: Time, effects: &mut Vec<MultiEffect<S>>) {
        let confirmed = self.confirmed_round();
        if self.config.read_mode == ReadMode::Lease {
            self.extend_lease(confirmed);
        }
        while self
            .reads
            .awaiting_round
            .front()
            .is_some_and(|read| read.round <= confirmed)
        {
            let Some(read) = self.reads.awaiting_round.pop_front() else {
                break;
            };
            self.await_apply(read.read_index, read.id, read.query, effects);
        }
        if self.reads.round_wanted && confirmed >= self.reads.round {
            self.probe(now, effects);
        }
    }

    /// The latest round a quorum confirmed began at `t`: reads are served locally until
    /// `t + lease_duration - max_clock_drift`.
    fn extend_lease(&mut self, confirmed: u64) {
        let mut began = None;
        while let Some(&(round, at)) = self.reads.started.front() {
            if round > confirmed {
                break;
            }
            began = Some(at);
            self.reads.started.pop_front();
        }
        if let Some(at) = began {
            let until = at.saturating_add(self.lease_span());
            self.reads.lease_until = self.reads.lease_until.max(until);
        }
    }

    fn await_apply(
        &mut self,
        read_index: Slot,
        id: RequestId,
        query: Qry<S>,
        effects: &mut Vec<MultiEffect<S>>,
    ) {
        self.reads.arrivals += 1;
        let key = (read_index, self.reads.arrivals);
        self.reads.awaiting_apply.insert(key, (id, query));
        self.serve_applied_reads(effects);
    }

    /// Answers every confirmed read whose read index has been applied.
    pub(super) fn serve_applied_reads(&mut self, effects: &mut Vec<MultiEffect<S>>) {
        while let Some(entry) = self.reads.awaiting_apply.first_entry() {
            let slot = entry.key().0;
            if slot > self.applied {
                break;
            }
            let (id, query) = entry.remove();
            let output = self.state.query(&query);
            let response = Response::Read { slot, output };
            effects.push(Effect::Reply { id, response });
        }
    }

    /// Leadership is over: every read held fails, and the lease is gone.
    pub(super) fn fail_reads(&mut self, effects: &mut Vec<MultiEffect<S>>) {
        let waiting = std::mem::take(&mut self.reads.awaiting_round);
        let confirmed = std::mem::take(&mut self.reads.awaiting_apply);
        let ids = waiting
            .into_iter()
            .map(|read| read.id)
            .chain(confirmed.into_values().map(|(id, _)| id));
        for id in ids {
            let response = Response::Failed(PaxosError::NotLeader { leader: None });
            effects.push(Effect::Reply { id, response });
        }
        self.reads.round_wanted = false;
        self.reads.acked.clear();
        self.reads.started.clear();
        self.reads.lease_until = 0;
    }
}
