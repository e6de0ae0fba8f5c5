//! Timing, limits and quorum sizes of a Multi-Paxos node, checked by [`Config::validate`]
//! (STYLE.md: "bound everything").
//!
//! **Flexible quorums** (Howard, Malkhi, Spiegelman, "Flexible Paxos: Quorum intersection
//! revisited", 2016): Paxos is safe as long as every phase-1 quorum meets every phase-2 quorum,
//! i.e. `q1 + q2 > n` — the two phases need not both use majorities. A small phase-2 quorum
//! makes every decision cheaper (fewer acknowledgements); the price is a larger phase-1 quorum,
//! paid only when leadership changes.
//!
//! **Reads** ([`ReadMode`]): through the log, by read index (a quorum round confirms the ballot
//! still leads), or under a leader lease whose safety rests on [`Config::lease_duration`] and
//! [`Config::max_clock_drift`] (see the `read` module).

use serde::{Deserialize, Serialize};

use concord_core::time::MILLISECOND;
use concord_core::{Duration, NodeId};

/// Timing and limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// How often a leader sends heartbeats (and retransmits unacknowledged slots).
    pub heartbeat_interval: Duration,
    /// The length of one heartbeat round of ballot leader election: every node asks every
    /// peer for its ballot once per round, and decides at the end of the round whether it is
    /// quorum-connected and whether its leader is alive.
    pub election_round: Duration,
    /// The most entries in one `Accept`.
    pub max_batch: usize,
    /// The most client requests waiting at a leader.
    pub max_pending: usize,
    /// Take a snapshot (and compact the log below it) once this many slots were applied since
    /// the last one.
    pub snapshot_threshold: u64,
    /// Promises a candidate needs (phase 1); `None`: a majority.
    pub phase1_quorum: Option<usize>,
    /// Acceptances that decide a slot (phase 2); `None`: a majority.
    pub phase2_quorum: Option<usize>,
    /// The first configuration's members, when not every node the driver starts (the others
    /// wait, idle, to be added by a reconfiguration); `None`: every node.
    pub initial_members: Option<Vec<NodeId>>,
    /// How a leader serves `Request::Read`.
    pub read_mode: ReadMode,
    /// [`ReadMode::Lease`]: how long an acceptor that acknowledged a leader (or restarted)
    /// refuses to promise a new ballot, by its own clock; the leader serves reads locally for
    /// this long after a confirmed round began, less `max_clock_drift`. Also delays the first
    /// election after a leader fails by up to this much.
    pub lease_duration: Duration,
    /// [`ReadMode::Lease`]: the most two nodes' clocks may disagree about the length of one
    /// `lease_duration` (drift rate times the duration, both ways). Leases are unsafe if it is
    /// exceeded.
    pub max_clock_drift: Duration,
}

/// How a leader serves linearizable reads (`Request::Read`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadMode {
    /// Each read takes a slot ([`super::Entry::Read`]) and is answered when applied, like a
    /// command: a log write and a round trip to a quorum per read (batched with the others).
    Log,
    /// Read index: the leader notes its read index (its decided prefix, and at least the last
    /// slot it adopted in phase 1), confirms with a round of `Accept`s that a quorum still holds
    /// its ballot, and answers once it has applied the read index. No log write.
    #[default]
    ReadIndex,
    /// Leader lease: as [`ReadMode::ReadIndex`], but while a lease confirmed by a quorum holds,
    /// the leader answers without a round. Needs bounded clock drift
    /// ([`Config::max_clock_drift`]).
    Lease,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat_interval: 50 * MILLISECOND,
            election_round: 100 * MILLISECOND,
            max_batch: 64,
            max_pending: 1024,
            snapshot_threshold: 1000,
            phase1_quorum: None,
            phase2_quorum: None,
            initial_members: None,
            read_mode: ReadMode::ReadIndex,
            lease_duration: 200 * MILLISECOND,
            max_clock_drift: 50 * MILLISECOND,
        }
    }
}

/// Why a [`Config`] cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A duration or limit that must be at least one is zero.
    #[error("'{field}' must be at least 1")]
    Zero {
        /// The field's name.
        field: &'static str,
    },
    /// A cluster needs at least one member.
    #[error("a cluster needs at least one member")]
    NoMembers,
    /// `initial_members` names a node twice.
    #[error("the initial members name a node twice")]
    DuplicateMember,
    /// A quorum size is zero or larger than the cluster.
    #[error("the phase-{phase} quorum {size} must be between 1 and the cluster size {members}")]
    QuorumOutOfRange {
        /// 1 or 2.
        phase: u8,
        /// The size given.
        size: usize,
        /// The cluster size.
        members: usize,
    },
    /// Leases whose drift bound swallows the whole lease.
    #[error("the maximum clock drift {drift} ns must be below the lease duration {lease} ns for lease reads")]
    DriftSwallowsLease {
        /// `Config::max_clock_drift`.
        drift: Duration,
        /// `Config::lease_duration`.
        lease: Duration,
    },
    /// Some phase-1 quorum would miss some phase-2 quorum: two values could be chosen.
    #[error("the phase-1 quorum {phase1} and the phase-2 quorum {phase2} must add up to more than the cluster size {members}, or a new leader could miss a decided value")]
    QuorumsDoNotIntersect {
        /// The phase-1 quorum size.
        phase1: usize,
        /// The phase-2 quorum size.
        phase2: usize,
        /// The cluster size.
        members: usize,
    },
}

/// The quorum sizes a cluster of a given size runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorums {
    /// Promises a candidate needs (itself included).
    pub phase1: usize,
    /// Acceptances that decide a slot (the leader included).
    pub phase2: usize,
}

impl Quorums {
    /// Majorities for both phases.
    pub fn majority(members: usize) -> Self {
        Quorums {
            phase1: members / 2 + 1,
            phase2: members / 2 + 1,
        }
    }

    /// Peers (itself included) a node must hear in a heartbeat round to be quorum-connected:
    /// enough to run either phase. Since `phase1 + phase2 > n`, this is more than half, so two
    /// quorum-connected nodes always hear a common peer.
    pub fn connectivity(&self) -> usize {
        self.phase1.max(self.phase2)
    }
}

impl Config {
    /// The default timing with flexible quorums `phase1` and `phase2` for a cluster of
    /// `members` nodes, checked.
    pub fn with_quorums(
        members: usize,
        phase1: usize,
        phase2: usize,
    ) -> Result<Config, ConfigError> {
        let config = Config {
            phase1_quorum: Some(phase1),
            phase2_quorum: Some(phase2),
            ..Config::default()
        };
        config.validate(members)?;
        Ok(config)
    }

    /// The quorum sizes for a cluster of `members` nodes, checked: each in `1..=members`, and
    /// `phase1 + phase2 > members`.
    pub fn quorums(&self, members: usize) -> Result<Quorums, ConfigError> {
        if members == 0 {
            return Err(ConfigError::NoMembers);
        }
        let majority = Quorums::majority(members);
        let quorums = Quorums {
            phase1: self.phase1_quorum.unwrap_or(majority.phase1),
            phase2: self.phase2_quorum.unwrap_or(majority.phase2),
        };
        for (phase, size) in [(1, quorums.phase1), (2, quorums.phase2)] {
            if size == 0 || size > members {
                return Err(ConfigError::QuorumOutOfRange {
                    phase,
                    size,
                    members,
                });
            }
        }
        if quorums.phase1 + quorums.phase2 <= members {
            return Err(ConfigError::QuorumsDoNotIntersect {
                phase1: quorums.phase1,
                phase2: quorums.phase2,
                members,
            });
        }
        Ok(quorums)
    }

    /// Checks that the configuration is usable by a cluster of `members` nodes (the first
    /// configuration's size is `initial_members`' when set).
    pub fn validate(&self, members: usize) -> Result<(), ConfigError> {
        let members = match &self.initial_members {
            Some(initial) => {
                let mut sorted = initial.clone();
                sorted.sort_unstable();
                sorted.dedup();
                if sorted.len() != initial.len() {
                    return Err(ConfigError::DuplicateMember);
                }
                initial.len()
            }
            None => members,
        };
        self.quorums(members)?;
        let limits = [
            ("heartbeat_interval", self.heartbeat_interval),
            ("election_round", self.election_round),
            ("max_batch", self.max_batch as u64),
            ("max_pending", self.max_pending as u64),
            ("snapshot_threshold", self.snapshot_threshold),
        ];
        if let Some((field, _)) = limits.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::Zero { field });
        }
        if self.read_mode == ReadMode::Lease && self.max_clock_drift >= self.lease_duration {
            return Err(ConfigError::DriftSwallowsLease {
                drift: self.max_clock_drift,
                lease: self.lease_duration,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_configuration_is_valid() {
        assert_eq!(Config::default().validate(5), Ok(()));
    }

    #[test]
    fn zero_limits_are_rejected_by_name() {
        let config = Config {
            election_round: 0,
            ..Config::default()
        };
        let error = config.validate(3).unwrap_err();
        assert_eq!(
            error,
            ConfigError::Zero {
                field: "election_round"
            }
        );
        assert_eq!(error.to_string(), "'election_round' must be at least 1");
        assert_eq!(Config::default().validate(0), Err(ConfigError::NoMembers));
    }

    #[test]
    fn leases_need_a_drift_bound_below_the_lease() {
        let config = Config {
            read_mode: ReadMode::Lease,
            lease_duration: 100 * MILLISECOND,
            max_clock_drift: 100 * MILLISECOND,
            ..Config::default()
        };
        let error = config.validate(3).unwrap_err();
        assert!(matches!(error, ConfigError::DriftSwallowsLease { .. }));
        assert_eq!(
            error.to_string(),
            "the maximum clock drift 100000000 ns must be below the lease duration 100000000 ns \
             for lease reads"
        );
        let shorter = Config {
            max_clock_drift: 20 * MILLISECOND,
            ..config.clone()
        };
        assert_eq!(shorter.validate(3), Ok(()));
        // Without leases the drift bound is not used.
        let read_index = Config {
            read_mode: ReadMode::ReadIndex,
            ..config
        };
        assert_eq!(read_index.validate(3), Ok(()));
    }

    #[test]
    fn quorums_default_to_majorities() {
        for (members, majority) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)] {
            let quorums = Config::default().quorums(members).unwrap();
            assert_eq!(quorums, Quorums::majority(members));
            assert_eq!((quorums.phase1, quorums.phase2), (majority, majority));
        }
    }

    #[test]
    fn intersecting_flexible_quorums_are_accepted() {
        let config = Config::with_quorums(5, 4, 2).unwrap();
        let quorums = config.quorums(5).unwrap();
        assert_eq!((quorums.phase1, quorums.phase2), (4, 2));
        assert_eq!(quorums.connectivity(), 4);
        assert!(Config::with_quorums(5, 2, 4).is_ok());
        assert!(Config::with_quorums(5, 5, 1).is_ok());
        assert!(Config::with_quorums(4, 3, 2).is_ok());
    }

    #[test]
    fn quorums_that_may_miss_each_other_are_rejected() {
        let error = Config::with_quorums(5, 3, 2).unwrap_err();
        assert_eq!(
            error,
            ConfigError::QuorumsDoNotIntersect {
                phase1: 3,
                phase2: 2,
                members: 5
            }
        );
        assert_eq!(
            error.to_string(),
            "the phase-1 quorum 3 and the phase-2 quorum 2 must add up to more than the \
             cluster size 5, or a new leader could miss a decided value"
        );
        assert!(matches!(
            Config::with_quorums(4, 2, 2),
            Err(ConfigError::QuorumsDoNotIntersect { .. })
        ));
        // One explicit size against the other's default majority.
        let config = Config {
            phase2_quorum: Some(1),
            ..Config::default()
        };
        assert!(matches!(
            config.validate(5),
            Err(ConfigError::QuorumsDoNotIntersect {
                phase1: 3,
                phase2: 1,
                ..
            })
        ));
    }

    #[test]
    fn quorum_sizes_outside_the_cluster_are_rejected() {
        let zero = Config::with_quorums(5, 0, 5).unwrap_err();
        assert_eq!(
            zero,
            ConfigError::QuorumOutOfRange {
                phase: 1,
                size: 0,
                members: 5
            }
        );
        assert_eq!(
            zero.to_string(),
            "the phase-1 quorum 0 must be between 1 and the cluster size 5"
        );
        let large = Config::with_quorums(3, 2, 4).unwrap_err();
        assert_eq!(
            large.to_string(),
            "the phase-2 quorum 4 must be between 1 and the cluster size 3"
        );
    }
}
