//! The lessor: who decides that a lease expired (etcd's `lease.Lessor`), sans-IO.
//!
//! Applying a command never looks at a clock, so expiry cannot live in the replicated state.
//! Instead every node keeps a [`Lessor`] beside its [`crate::KvStore`], fed with the same
//! grants and revokes it applies (or rebuilt with [`Lessor::restore`] from
//! [`crate::KvStore::leases`] after a snapshot). Only the leader's lessor is the *primary*:
//!
//! * [`Lessor::promote`] on becoming leader gives every lease a fresh deadline `now + ttl`, as
//!   etcd does, so a leader change never expires a lease early (it may extend it);
//! * [`Lessor::keep_alive`] renews a lease (a client's `LeaseKeepAlive`);
//! * [`Lessor::expired`] lists the leases whose deadline passed; the leader proposes a
//!   `Command::LeaseRevoke` for each through Raft, and the revoke deletes the attached keys on
//!   every node when it is applied. A listed lease is listed again after
//!   [`LessorConfig::revoke_retry`] if its revoke has not been applied by then (a lost
//!   proposal).
//!
//! A follower's lessor answers nothing time-related ([`KvError::NotPrimaryLessor`]); the API
//! layer forwards those requests to the leader, as etcd does.
//!
//! TTLs are whole seconds, as in etcd. A TTL below [`LessorConfig::min_ttl`] is raised to it
//! ([`Lessor::clamp_ttl`]); the API layer clamps before proposing a grant, so every node
//! records the same TTL.

use std::collections::{BTreeMap, BTreeSet};

use concord_core::time::SECOND;
use concord_core::{Duration, Time};

use crate::error::KvError;
use crate::store::LeaseInfo;
use crate::types::LeaseId;

/// etcd's default minimum TTL in seconds: `ceil(1.5 × election timeout)` with etcd's default
/// 1 s election timeout, so that a lease outlives a leader election.
pub const DEFAULT_MIN_TTL: i64 = 2;

/// The largest TTL a grant accepts, in seconds (etcd's `MaxLeaseTTL`, about 285 years).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// The lessor's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LessorConfig {
    /// The smallest TTL, in seconds: smaller grants get this. Choose at least 1.5 × the
    /// election timeout, so that a lease survives the leader change its keep-alives wait for.
    pub min_ttl: i64,
    /// How long after listing an expired lease [`Lessor::expired`] lists it again if it is
    /// still there (its revoke proposal was lost). etcd uses 3 s.
    pub revoke_retry: Duration,
}

impl Default for LessorConfig {
    fn default() -> Self {
        Self {
            min_ttl: DEFAULT_MIN_TTL,
            revoke_retry: 3 * SECOND,
        }
    }
}

/// One lease as the lessor sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseState {
    /// The lease.
    pub id: LeaseId,
    /// Its granted TTL in seconds.
    pub ttl: i64,
    /// When it expires (meaningful on the primary only).
    pub deadline: Time,
    /// Whether [`Lessor::expired`] listed it and its revoke is pending.
    pub revoking: bool,
    /// Seconds left at the last checkpoint (0: none); the next [`Lessor::promote`] starts the
    /// lease from this instead of its full TTL. A keep-alive clears it.
    pub remaining_ttl: i64,
}

/// The answer to a time-to-live question (etcd's `LeaseTimeToLiveResponse` without the keys,
/// which [`crate::KvStore::lease_keys`] has).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeToLive {
    /// The lease.
    pub id: LeaseId,
    /// Seconds left, rounded up (0 once expired).
    pub remaining: i64,
    /// The granted TTL in seconds.
    pub granted: i64,
}

/// Lease deadlines, kept by every node, acted on by the leader's. Time is an input.
#[derive(Clone, Debug, Default)]
pub struct Lessor {
    config: LessorConfig,
    leases: BTreeMap<LeaseId, LeaseState>,
    /// (deadline, lease) for every lease, so the earliest deadline is found without a scan.
    deadlines: BTreeSet<(Time, LeaseId)>,
    primary: bool,
}

/// `seconds` as nanoseconds after `now`, saturating.
fn deadline(now: Time, seconds: i64) -> Time {
    let seconds = u64::try_from(seconds).unwrap_or(0);
    now.saturating_add(seconds.saturating_mul(SECOND))
}

impl Lessor {
    /// An empty lessor, not primary.
    pub fn new(config: LessorConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Rebuilds the lessor from the store's lease table ([`crate::KvStore::leases`]) after a
    /// restart or a snapshot; not primary until promoted.
    pub fn restore(config: LessorConfig, leases: impl IntoIterator<Item = LeaseInfo>) -> Self {
        let mut lessor = Self::new(config);
        for lease in leases {
            lessor.insert(lease.id, lease.ttl, 0);
            lessor.checkpoint(lease.id, lease.remaining_ttl);
        }
        lessor
    }

    /// Records a checkpoint the store applied (`Command::LeaseCheckpoint`): a later
    /// [`Lessor::promote`] gives the lease `remaining_ttl` seconds instead of its full TTL.
    pub fn checkpoint(&mut self, id: LeaseId, remaining_ttl: i64) {
        if let Some(state) = self.leases.get_mut(&id) {
            state.remaining_ttl = remaining_ttl.max(0);
        }
    }

    /// The settings.
    pub fn config(&self) -> &LessorConfig {
        &self.config
    }

    /// `ttl` raised to the minimum TTL (what a grant should propose and report).
    pub fn clamp_ttl(&self, ttl: i64) -> i64 {
        ttl.max(self.config.min_ttl)
    }

    /// Whether this lessor is the primary (its node leads).
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    fn insert(&mut self, id: LeaseId, ttl: i64, now: Time) {
        self.remove(id);
        let state = LeaseState {
            id,
            ttl,
            deadline: deadline(now, ttl),
            revoking: false,
            remaining_ttl: 0,
        };
        self.deadlines.insert((state.deadline, id));
        self.leases.insert(id, state);
    }

    fn remove(&mut self, id: LeaseId) -> Option<LeaseState> {
        let state = self.leases.remove(&id)?;
        self.deadlines.remove(&(state.deadline, id));
        Some(state)
    }

    fn set_deadline(&mut self, id: LeaseId, new_deadline: Time, revoking: bool) {
        if let Some(state) = self.leases.get_mut(&id) {
            self.deadlines.remove(&(state.deadline, id));
            state.deadline = new_deadline;
            state.revoking = revoking;
            self.deadlines.insert((new_deadline, id));
        }
    }

    /// Records a grant the store applied, with its deadline `now + ttl`. Returns the TTL
    /// (clamped). Call it on every node when a `LeaseGrant` applies successfully.
    pub fn grant(&mut self, id: LeaseId, ttl: i64, now: Time) -> i64 {
        let ttl = self.clamp_ttl(ttl);
        self.insert(id, ttl, now);
        ttl
    }

    /// Forgets a lease the store revoked. Call it on every node when a `LeaseRevoke` applies.
    pub fn revoke(&mut self, id: LeaseId) -> Result<(), KvError> {
        self.remove(id).map(|_| ()).ok_or(KvError::LeaseNotFound)
    }

    /// Makes this lessor primary (its node became leader): every lease's deadline becomes
    /// `now + ttl` (or `now + remaining_ttl` after a checkpoint), forgetting pending revokes
    /// (the new leader lists them again when due).
    pub fn promote(&mut self, now: Time) {
        self.primary = true;
        let leases: Vec<(LeaseId, i64)> = self
            .leases
            .values()
            .map(|l| {
                let seconds = if l.remaining_ttl > 0 {
                    l.remaining_ttl
                } else {
                    l.ttl
                };
                (l.id, seconds)
            })
            .collect();
        for (id, ttl) in leases {
            self.set_deadline(id, deadline(now, ttl), false);
        }
    }

    /// Stops being primary (the node lost leadership).
    pub fn demote(&mut self) {
        self.primary = false;
    }

    /// Renews a lease (a keep-alive): its deadline becomes `now + ttl`. Returns the TTL.
    /// Fails on a follower, for an unknown lease, and for one already expired (its revoke is
    /// on its way, as etcd answers).
    pub fn keep_alive(&mut self, id: LeaseId, now: Time) -> Result<i64, KvError> {
        if !self.primary {
            return Err(KvError::NotPrimaryLessor);
        }
        let state = *self.leases.get(&id).ok_or(KvError::LeaseNotFound)?;
        if state.revoking || state.deadline <= now {
            return Err(KvError::LeaseNotFound);
        }
        self.set_deadline(id, deadline(now, state.ttl), false);
        if let Some(state) = self.leases.get_mut(&id) {
            state.remaining_ttl = 0;
        }
        Ok(state.ttl)
    }

    /// Same as [`Lessor::keep_alive`] (etcd's name).
    pub fn renew(&mut self, id: LeaseId, now: Time) -> Result<i64, KvError> {
        self.keep_alive(id, now)
    }

    /// The leases whose deadline is at or before `now` and that were not listed in the last
    /// [`LessorConfig::revoke_retry`], in deadline order. The leader proposes a revoke for
    /// each. Empty on a follower.
    pub fn expired(&mut self, now: Time) -> Vec<LeaseId> {
        if !self.primary {
            return Vec::new();
        }
        let due: Vec<LeaseId> = self
            .deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|(_, id)| *id)
            .collect();
        let retry_at = now.saturating_add(self.config.revoke_retry);
        for id in &due {
            self.set_deadline(*id, retry_at, true);
        }
        due
    }

    /// The earliest deadline, when the driver should call [`Lessor::expired`] next (primary
    /// only).
    pub fn next_deadline(&self) -> Option<Time> {
        if !self.primary {
            return None;
        }
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }

    /// How long the lease has left (etcd's `LeaseTimeToLive`, keys aside).
    pub fn time_to_live(&self, id: LeaseId, now: Time) -> Result<TimeToLive, KvError> {
        if !self.primary {
            return Err(KvError::NotPrimaryLessor);
        }
        let state = self.leases.get(&id).ok_or(KvError::LeaseNotFound)?;
        let remaining = if state.revoking {
            0
        } else {
            let left = state.deadline.saturating_sub(now);
            i64::try_from(left.div_ceil(SECOND)).unwrap_or(i64::MAX)
        };
        Ok(TimeToLive {
            id,
            remaining,
            granted: state.ttl,
        })
    }

    /// Every lease, by ID (etcd's `LeaseLeases`).
    pub fn leases(&self) -> impl Iterator<Item = &LeaseState> {
        self.leases.values()
    }

    /// Whether the lease is known.
    pub fn contains(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }

    /// Brings the lessor in step with the replicated lease table, which has the last word:
    /// a lease the table holds and the lessor lacks (its grant applied a moment ago) gets its
    /// full TTL from `now`; one the table no longer holds (its revoke applied) is forgotten.
    pub fn sync(&mut self, table: &[LeaseInfo], now: Time) {
        let stored: BTreeMap<LeaseId, &LeaseInfo> = table.iter().map(|l| (l.id, l)).collect();
        let ids: BTreeSet<LeaseId> = stored.keys().chain(self.leases.keys()).copied().collect();
        for id in ids {
            self.sync_one(id, stored.get(&id).copied(), now);
        }
    }

    /// [`Lessor::sync`] for lease `id` alone, given what the table holds of it.
    pub fn sync_one(&mut self, id: LeaseId, stored: Option<&LeaseInfo>, now: Time) {
        match (stored, self.contains(id)) {
            (Some(lease), false) => {
                self.grant(lease.id, lease.ttl, now);
            }
            (None, true) => {
                self.remove(id);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Time = SECOND;

    fn primary() -> Lessor {
        let mut lessor = Lessor::new(LessorConfig::default());
        lessor.promote(0);
        lessor
    }

    #[test]
    fn sync_grants_what_the_table_adds_and_forgets_what_it_dropped() {
        let mut lessor = primary();
        lessor.grant(1, 10, 0);
        lessor.grant(2, 10, 0);
        let table = [
            LeaseInfo {
                id: 2,
                ttl: 10,
                remaining_ttl: 0,
            },
            LeaseInfo {
                id: 3,
                ttl: 20,
                remaining_ttl: 0,
            },
        ];
        lessor.sync(&table, 5 * SECOND);
        let ids: Vec<LeaseId> = lessor.leases().map(|l| l.id).collect();
        assert_eq!(ids, [2, 3]);
        assert_eq!(lessor.time_to_live(3, 5 * SECOND).unwrap().remaining, 20);
        assert_eq!(lessor.time_to_live(2, 5 * SECOND).unwrap().remaining, 5);
    }

    #[test]
    fn a_lease_expires_after_its_ttl_unless_kept_alive() {
        let mut lessor = primary();
        assert_eq!(lessor.grant(1, 10, 0), 10);
        assert_eq!(lessor.grant(2, 5, 0), 5);
        assert_eq!(lessor.next_deadline(), Some(5 * S));
        assert!(lessor.expired(5 * S - 1).is_empty());
        assert_eq!(lessor.keep_alive(2, 4 * S), Ok(5));
        assert!(lessor.expired(8 * S).is_empty(), "renewed until 9s");
        assert_eq!(lessor.expired(9 * S), vec![2]);
        assert_eq!(lessor.expired(10 * S), vec![1]);
    }

    #[test]
    fn an_expired_lease_is_listed_again_only_after_the_retry_interval() {
        let mut lessor = primary();
        lessor.grant(1, 5, 0);
        assert_eq!(lessor.expired(5 * S), vec![1]);
        assert!(lessor.expired(6 * S).is_empty());
        assert_eq!(lessor.keep_alive(1, 6 * S), Err(KvError::LeaseNotFound));
        assert_eq!(lessor.time_to_live(1, 6 * S).map(|t| t.remaining), Ok(0));
        assert_eq!(lessor.expired(8 * S), vec![1], "the revoke was lost: retry");
        assert_eq!(lessor.revoke(1), Ok(()));
        assert!(lessor.expired(100 * S).is_empty());
        assert_eq!(lessor.revoke(1), Err(KvError::LeaseNotFound));
    }

    #[test]
    fn ttls_are_clamped_to_the_minimum() {
        let mut lessor = primary();
        assert_eq!(lessor.clamp_ttl(1), DEFAULT_MIN_TTL);
        assert_eq!(lessor.grant(1, 0, 0), DEFAULT_MIN_TTL);
        assert_eq!(lessor.grant(2, -5, 0), DEFAULT_MIN_TTL);
        assert_eq!(lessor.time_to_live(1, 0).map(|t| t.granted), Ok(2));
    }

    #[test]
    fn promotion_restarts_every_deadline_and_followers_decide_nothing() {
        let info = |id, ttl| LeaseInfo {
            id,
            ttl,
            remaining_ttl: 0,
        };
        let mut lessor = Lessor::restore(LessorConfig::default(), [info(1, 10), info(2, 20)]);
        assert!(!lessor.is_primary());
        assert!(lessor.expired(u64::MAX).is_empty());
        assert_eq!(lessor.keep_alive(1, 0), Err(KvError::NotPrimaryLessor));
        assert_eq!(lessor.time_to_live(1, 0), Err(KvError::NotPrimaryLessor));
        lessor.promote(100 * S);
        assert_eq!(lessor.next_deadline(), Some(110 * S));
        assert_eq!(
            lessor.time_to_live(2, 101 * S),
            Ok(TimeToLive {
                id: 2,
                remaining: 19,
                granted: 20
            })
        );
        assert_eq!(lessor.expired(110 * S), vec![1]);
        lessor.demote();
        assert!(lessor.expired(200 * S).is_empty());
        lessor.promote(200 * S);
        assert!(
            lessor.expired(209 * S).is_empty(),
            "pending revoke forgotten"
        );
        assert_eq!(lessor.expired(210 * S), vec![1]);
    }

    #[test]
    fn time_to_live_rounds_up_and_unknown_leases_fail() {
        let mut lessor = primary();
        lessor.grant(7, 10, 0);
        assert_eq!(lessor.time_to_live(7, S / 2).map(|t| t.remaining), Ok(10));
        assert_eq!(lessor.time_to_live(7, 10 * S).map(|t| t.remaining), Ok(0));
        assert_eq!(lessor.time_to_live(8, 0), Err(KvError::LeaseNotFound));
        assert_eq!(lessor.keep_alive(8, 0), Err(KvError::LeaseNotFound));
        assert_eq!(lessor.leases().map(|l| l.id).collect::<Vec<_>>(), vec![7]);
    }

    #[test]
    fn a_checkpoint_shortens_the_next_promotion_until_a_keep_alive() {
        let mut lessor = Lessor::new(LessorConfig::default());
        lessor.grant(1, 60, 0);
        lessor.checkpoint(1, 7);
        lessor.promote(100 * S);
        assert_eq!(lessor.next_deadline(), Some(107 * S));
        assert_eq!(lessor.keep_alive(1, 101 * S), Ok(60));
        lessor.demote();
        lessor.promote(200 * S);
        assert_eq!(
            lessor.next_deadline(),
            Some(260 * S),
            "the keep-alive cleared it"
        );
    }
}
