//! Static configuration of a Raft node: timeouts (Raft paper §5.2, §9.3 of the thesis) and the
//! bounds on every queue and batch (STYLE.md "bound everything"), checked by [`Config::validate`].

use concord_core::time::MILLISECOND;
use concord_core::Duration;

/// Timeouts and limits of a Raft node. All durations are in nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Lower bound of the randomized election timeout (paper §5.2).
    pub election_timeout_min: Duration,
    /// Upper bound (exclusive) of the randomized election timeout.
    pub election_timeout_max: Duration,
    /// How often a leader sends heartbeats (empty AppendEntries).
    pub heartbeat_interval: Duration,
    /// Most AppendEntries messages in flight to one follower in the replicate state (pipelining).
    pub max_inflight_appends: usize,
    /// Most entries in one AppendEntries message.
    pub max_entries_per_message: usize,
    /// Most bytes of entries in one AppendEntries message, estimated from the shallow in-memory
    /// size of each entry. At least one entry is always sent.
    pub max_bytes_per_message: usize,
    /// Take a snapshot once this many entries were applied since the last one (thesis §5.1).
    pub snapshot_threshold: u64,
    /// Bytes of snapshot data per InstallSnapshot chunk (paper §7).
    pub snapshot_chunk_size: usize,
    /// Run a pre-vote round before bumping the term (thesis §9.6).
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum within an election timeout, and
    /// followers that heard from a live leader within the minimum election timeout ignore vote
    /// requests (leader stickiness, thesis §4.2.3 and §6.4.1).
    pub check_quorum: bool,
    /// Serve reads under a leader lease (thesis §6.4.1) instead of a ReadIndex round.
    /// Requires `check_quorum`.
    pub lease_reads: bool,
    /// The most two nodes' clocks may drift apart during one election timeout; the lease is
    /// shortened by it.
    pub max_clock_drift: Duration,
    /// Most client requests (proposals and reads) a node keeps waiting at once.
    pub max_pending_requests: usize,
    /// A leader holds new entries' AppendEntries and its `Commit` notices back until the
    /// driver has handed it every input already waiting, while those inputs come in bursts
    /// (proposals, followers' `Propose` and AppendEntriesResponse messages): it asks for a tick
    /// at once (`next_deadline` = now), and any other input sends them. A burst then leaves as
    /// one message per follower instead of one each. A follower holds the proposals it
    /// forwards alike. A driver that drains its queued inputs before timers (as the runtime
    /// does) loses no time to it.
    pub batch_proposals: bool,
    /// A follower forwards the proposals it gets to the leader (`Message::Propose`, one
    /// message for all that arrived together) and answers them when it applies their entries,
    /// instead of failing them with `RaftError::NotLeader` (etcd's default; openraft's is
    /// not to). A forwarded proposal waits for its outcome across leader changes; one whose
    /// connection is lost, or that is not applied within `outcome_timeout`, fails with
    /// `RaftError::ForwardedOutcomeUnknown`: it may still take effect (module `forward`).
    pub forward_proposals: bool,
    /// How long a proposal that no longer waits at its own leader waits for its outcome
    /// before it fails with an unknown one: a follower's forwarded proposal from when it left,
    /// a deposed leader's from the step-down (a driver that times its clients' requests out
    /// sets it to that timeout; etcd's is 5 s).
    pub outcome_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            election_timeout_min: 500 * MILLISECOND,
            election_timeout_max: 1000 * MILLISECOND,
            heartbeat_interval: 50 * MILLISECOND,
            max_inflight_appends: 64,
            max_entries_per_message: 64,
            max_bytes_per_message: 1 << 20,
            snapshot_threshold: 10_000,
            snapshot_chunk_size: 64 * 1024,
            pre_vote: true,
            check_quorum: true,
            lease_reads: false,
            max_clock_drift: 50 * MILLISECOND,
            max_pending_requests: 100_000,
            batch_proposals: true,
            forward_proposals: false,
            outcome_timeout: 5000 * MILLISECOND,
        }
    }
}

/// Why a [`Config`] cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The election timeout range is empty or zero.
    #[error("election timeout range {min}..{max} ns is empty: the minimum must be positive and below the maximum")]
    EmptyElectionTimeout {
        /// The configured minimum.
        min: Duration,
        /// The configured maximum.
        max: Duration,
    },
    /// Heartbeats would not keep followers from timing out.
    #[error("heartbeat interval {heartbeat} ns must be positive and below the minimum election timeout {election_min} ns")]
    HeartbeatTooSlow {
        /// The configured heartbeat interval.
        heartbeat: Duration,
        /// The configured minimum election timeout.
        election_min: Duration,
    },
    /// A limit that must be at least one is zero.
    #[error("'{field}' must be at least 1")]
    ZeroLimit {
        /// The field's name.
        field: &'static str,
    },
    /// Lease reads are only safe with leader stickiness, which comes with check-quorum.
    #[error("lease reads need check_quorum (leader stickiness) to be safe")]
    LeaseWithoutCheckQuorum,
    /// The clock drift bound swallows the whole lease.
    #[error("max clock drift {drift} ns must be below the minimum election timeout {election_min} ns for lease reads")]
    DriftTooLarge {
        /// The configured drift bound.
        drift: Duration,
        /// The configured minimum election timeout.
        election_min: Duration,
    },
}

impl Config {
    /// Checks that the configuration is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.election_timeout_min == 0 || self.election_timeout_min >= self.election_timeout_max
        {
            return Err(ConfigError::EmptyElectionTimeout {
                min: self.election_timeout_min,
                max: self.election_timeout_max,
            });
        }
        if self.heartbeat_interval == 0 || self.heartbeat_interval >= self.election_timeout_min {
            return Err(ConfigError::HeartbeatTooSlow {
                heartbeat: self.heartbeat_interval,
                election_min: self.election_timeout_min,
            });
        }
        let limits = [
            ("max_inflight_appends", self.max_inflight_appends as u64),
            (
                "max_entries_per_message",
                self.max_entries_per_message as u64,
            ),
            ("max_bytes_per_message", self.max_bytes_per_message as u64),
            ("snapshot_threshold", self.snapshot_threshold),
            ("snapshot_chunk_size", self.snapshot_chunk_size as u64),
            ("max_pending_requests", self.max_pending_requests as u64),
            ("outcome_timeout", self.outcome_timeout),
        ];
        if let Some((field, _)) = limits.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::ZeroLimit { field });
        }
        if self.lease_reads && !self.check_quorum {
            return Err(ConfigError::LeaseWithoutCheckQuorum);
        }
        if self.lease_reads && self.max_clock_drift >= self.election_timeout_min {
            return Err(ConfigError::DriftTooLarge {
                drift: self.max_clock_drift,
                election_min: self.election_timeout_min,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn validate_rejects_bad_values() {
        let mut config = Config {
            election_timeout_max: 100,
            election_timeout_min: 100,
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::EmptyElectionTimeout { .. })
        ));
        config = Config {
            heartbeat_interval: 600 * MILLISECOND,
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::HeartbeatTooSlow { .. })
        ));
        config = Config {
            snapshot_chunk_size: 0,
            ..Config::default()
        };
        assert_eq!(
            config.validate(),
            Err(ConfigError::ZeroLimit {
                field: "snapshot_chunk_size"
            })
        );
        config = Config {
            lease_reads: true,
            check_quorum: false,
            ..Config::default()
        };
        assert_eq!(config.validate(), Err(ConfigError::LeaseWithoutCheckQuorum));
        config = Config {
            lease_reads: true,
            max_clock_drift: 500 * MILLISECOND,
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::DriftTooLarge { .. })
        ));
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("max clock drift"), "{message}");
    }
}
