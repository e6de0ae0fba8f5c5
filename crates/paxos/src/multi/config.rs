//! Timing and limits of a Multi-Paxos node, checked by [`Config::validate`] (STYLE.md: "bound
//! everything").

use serde::{Deserialize, Serialize};

use concord_core::time::MILLISECOND;
use concord_core::Duration;

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat_interval: 50 * MILLISECOND,
            election_round: 100 * MILLISECOND,
            max_batch: 64,
            max_pending: 1024,
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
}

impl Config {
    /// Checks that the configuration is usable by a cluster of `members` nodes.
    pub fn validate(&self, members: usize) -> Result<(), ConfigError> {
        if members == 0 {
            return Err(ConfigError::NoMembers);
        }
        let limits = [
            ("heartbeat_interval", self.heartbeat_interval),
            ("election_round", self.election_round),
            ("max_batch", self.max_batch as u64),
            ("max_pending", self.max_pending as u64),
        ];
        if let Some((field, _)) = limits.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::Zero { field });
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
}
