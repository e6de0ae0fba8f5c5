//! Settings of a PBFT replica, with every bound checked by [`Config::validate`].

use concord_core::time::MILLISECOND;
use concord_core::Duration;
use serde::{Deserialize, Serialize};

/// How a replica runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `f`, the number of faulty replicas tolerated; `None`: the most `n` allows,
    /// `(n - 1) / 3`.
    pub faults: Option<usize>,
    /// `K`: a checkpoint is taken every this many sequence numbers (§4.3).
    pub checkpoint_interval: u64,
    /// `L = H - h`: how far above the stable checkpoint sequence numbers may go (§4.2). A
    /// multiple of the checkpoint interval, at least two intervals.
    pub log_window: u64,
    /// The most requests in one batch (§5.1.4).
    pub max_batch: usize,
    /// The primary starts a new batch only while fewer than this many are ordered and not yet
    /// executed; requests arriving meanwhile wait and go out together (§5.1.4).
    pub max_in_flight: u64,
    /// A backup starts a view change when a request it knows waits this long (§4.4). Doubles
    /// with every view change that brings no progress (§4.5.2).
    pub view_change_timeout: Duration,
    /// The view-change timeout never doubles past this.
    pub max_view_change_timeout: Duration,
    /// How often a replica tells its peers how far it got, so they resend what it lacks.
    pub status_interval: Duration,
    /// A client proxy retransmits an unanswered request to every replica after this long.
    pub client_retry: Duration,
    /// A client proxy gives up on a request (no reply) after this long.
    pub client_give_up: Duration,
    /// Client identities per proxy: at most this many requests of one proxy are outstanding
    /// at once (one per identity, as PBFT clients send one request at a time).
    pub client_lanes: u64,
    /// Requests a primary or proxy keeps waiting at most.
    pub max_pending_requests: usize,
    /// The read-only optimization (§5.1.3): reads go to every replica, are answered from the
    /// executed state without ordering, and complete with a quorum of matching replies.
    pub read_only: bool,
    /// The cluster secret every key is derived from (the simulator uses the run's seed).
    pub key_seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            faults: None,
            checkpoint_interval: 16,
            log_window: 64,
            max_batch: 16,
            max_in_flight: 2,
            view_change_timeout: 400 * MILLISECOND,
            max_view_change_timeout: 8_000 * MILLISECOND,
            status_interval: 100 * MILLISECOND,
            client_retry: 150 * MILLISECOND,
            client_give_up: 10_000 * MILLISECOND,
            client_lanes: 8,
            max_pending_requests: 1024,
            read_only: false,
            key_seed: 0,
        }
    }
}

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Fewer than `3f + 1` replicas.
    #[error("{replicas} replicas cannot tolerate {faults} Byzantine faults: n >= 3f + 1")]
    TooFewReplicas {
        /// `n`.
        replicas: usize,
        /// `f`.
        faults: usize,
    },
    /// A zero that must be positive.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// The log window is not a multiple of at least two checkpoint intervals.
    #[error("the log window ({window}) must be a multiple of the checkpoint interval ({interval}), at least twice it")]
    Window {
        /// `L`.
        window: u64,
        /// `K`.
        interval: u64,
    },
}

impl Config {
    /// `f` for a cluster of `replicas`.
    pub fn faults_for(&self, replicas: usize) -> usize {
        self.faults.unwrap_or(replicas.saturating_sub(1) / 3)
    }

    /// Checks the settings for a cluster of `replicas`.
    pub fn validate(&self, replicas: usize) -> Result<(), ConfigError> {
        let faults = self.faults_for(replicas);
        if replicas < 3 * faults + 1 {
            return Err(ConfigError::TooFewReplicas { replicas, faults });
        }
        for (name, value) in [
            ("checkpoint_interval", self.checkpoint_interval),
            ("max_batch", self.max_batch as u64),
            ("max_in_flight", self.max_in_flight),
            ("view_change_timeout", self.view_change_timeout),
            ("status_interval", self.status_interval),
            ("client_retry", self.client_retry),
            ("client_lanes", self.client_lanes),
            ("max_pending_requests", self.max_pending_requests as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if !self.log_window.is_multiple_of(self.checkpoint_interval)
            || self.log_window < 2 * self.checkpoint_interval
        {
            return Err(ConfigError::Window {
                window: self.log_window,
                interval: self.checkpoint_interval,
            });
        }
        Ok(())
    }
}

/// Quorum sizes of a cluster of `n` replicas tolerating `f` faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorums {
    /// `n`.
    pub replicas: usize,
    /// `f`.
    pub faults: usize,
}

impl Quorums {
    /// A quorum: any two share at least `f + 1` replicas, so at least one correct one
    /// (`2f + 1` when `n = 3f + 1`; `⌊(n + f) / 2⌋ + 1` in general).
    pub fn quorum(self) -> usize {
        (self.replicas + self.faults) / 2 + 1
    }

    /// A weak certificate: at least one correct replica among them (`f + 1`).
    pub fn weak(self) -> usize {
        self.faults + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorums_intersect_in_a_correct_replica() {
        for replicas in 1..=16 {
            let faults = (replicas - 1) / 3;
            let q = Quorums { replicas, faults };
            assert!(
                2 * q.quorum() > replicas + faults,
                "n={replicas}: two quorums share f + 1"
            );
            assert!(q.quorum() <= replicas - faults, "n={replicas}: live");
        }
        let four = Quorums {
            replicas: 4,
            faults: 1,
        };
        assert_eq!((four.quorum(), four.weak()), (3, 2));
    }

    #[test]
    fn validate_rejects_what_cannot_work() {
        assert!(Config::default().validate(4).is_ok());
        let two_faults = Config {
            faults: Some(2),
            ..Config::default()
        };
        assert_eq!(
            two_faults.validate(6),
            Err(ConfigError::TooFewReplicas {
                replicas: 6,
                faults: 2
            })
        );
        let bad_window = Config {
            log_window: 20,
            ..Config::default()
        };
        assert!(matches!(
            bad_window.validate(4),
            Err(ConfigError::Window { .. })
        ));
    }
}
