//! Nemesis plans: timed fault injection, read from TOML or JSON.
//!
//! ```toml
//! [[steps]]
//! at = "5s"
//! action = "partition"
//! groups = [[0, 1], [2, 3, 4]]
//!
//! [[steps]]
//! at = "12s"
//! action = "heal"
//! ```
//!
//! JSON plans are `{"steps": [...]}` or a bare array of steps. `at` is simulated time since the
//! start of the run (`"250ms"`, `"5s"`, or integer nanoseconds). Every action is a variant of
//! [`NemesisAction`]; the partition shapes are documented in [`crate::topology`].

use std::path::Path;

use concord_core::time::{parse_duration, MILLISECOND, SECOND};
use concord_core::{Duration, NodeId};
use serde::{Deserialize, Serialize};

use crate::byzantine::ByzantineKind;
use crate::topology::{check_nodes, Connectivity};

/// One fault-injection action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum NemesisAction {
    /// Split into groups that talk only within themselves; unnamed nodes are alone.
    Partition {
        /// The groups, e.g. `[[0,1],[2,3,4]]`.
        groups: Vec<Vec<NodeId>>,
    },
    /// Cut `nodes` (as one group) off from the rest.
    Isolate {
        /// The isolated set.
        nodes: Vec<NodeId>,
    },
    /// One-way cut: messages from each of `from` to each of `to` are lost; replies still flow.
    Cut {
        /// Senders.
        from: Vec<NodeId>,
        /// Receivers.
        to: Vec<NodeId>,
    },
    /// Quorum loss: only `center` keeps links to everyone. Default center: the lowest-id node
    /// that is not the current leader.
    QuorumLoss {
        /// The node that stays connected to all.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        center: Option<NodeId>,
    },
    /// Constrained election: `leader` is cut off, only `center` reaches a quorum. Defaults:
    /// `leader` is the current leader (else the node with the longest log), `center` the node
    /// with the shortest log among the others.
    ConstrainedElection {
        /// The only node that can reach a quorum.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        center: Option<NodeId>,
        /// The old leader, cut off from everyone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        leader: Option<NodeId>,
    },
    /// Chained: consecutive nodes of `chain` are linked, nothing else. Default chain: the
    /// current leader first, then the other nodes in id order.
    Chained {
        /// The chain, at least 3 nodes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chain: Option<Vec<NodeId>>,
    },
    /// Restore every link (latency and loss settings stay).
    Heal {},
    /// Crash nodes: they lose every write not yet confirmed durable and every queued message.
    Crash {
        /// The nodes.
        nodes: Vec<NodeId>,
    },
    /// Restart crashed nodes from their durable storage. No list: every crashed node.
    Restart {
        /// The nodes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nodes: Option<Vec<NodeId>>,
    },
    /// Pause nodes: they process nothing; their inbox waits.
    Pause {
        /// The nodes.
        nodes: Vec<NodeId>,
    },
    /// Resume paused nodes. No list: every paused node.
    Resume {
        /// The nodes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nodes: Option<Vec<NodeId>>,
    },
    /// Set the drop probability of every link (or of the links `from → to`).
    Loss {
        /// Probability in `[0, 1]`.
        probability: f64,
        /// Only links from these nodes (default: all).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<Vec<NodeId>>,
        /// Only links to these nodes (default: all).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<Vec<NodeId>>,
    },
    /// Set the duplication probability of every link (or of the links `from → to`).
    Duplicate {
        /// Probability in `[0, 1]`.
        probability: f64,
        /// Only links from these nodes (default: all).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<Vec<NodeId>>,
        /// Only links to these nodes (default: all).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<Vec<NodeId>>,
    },
    /// Set the reordering probability (and optionally the largest extra delay) of every link
    /// (or of the links `from → to`).
    Reorder {
        /// Probability in `[0, 1]`.
        probability: f64,
        /// Largest extra delay.
        #[serde(
            default,
            with = "optional_duration",
            skip_serializing_if = "Option::is_none"
        )]
        max_delay: Option<Duration>,
        /// Only links from these nodes (default: all).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<Vec<NodeId>>,
        /// Only links to these nodes (default: all).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<Vec<NodeId>>,
    },
    /// Set the latency range of every link (or of the links `from → to`).
    Latency {
        /// Smallest latency.
        #[serde(with = "duration")]
        min: Duration,
        /// Largest latency.
        #[serde(with = "duration")]
        max: Duration,
        /// Only links from these nodes (default: all).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<Vec<NodeId>>,
        /// Only links to these nodes (default: all).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<Vec<NodeId>>,
    },
    /// Set the clock rate of nodes (1.0 is true time; 1.1 runs 10% fast).
    Drift {
        /// The nodes.
        nodes: Vec<NodeId>,
        /// Local seconds per simulated second, in `[0.1, 10]`.
        rate: f64,
    },
    /// Make nodes Byzantine: their outgoing messages are rewritten by `behavior`.
    Byzantine {
        /// The nodes (at most the configured Byzantine budget in total).
        nodes: Vec<NodeId>,
        /// What to do to their messages.
        behavior: ByzantineKind,
    },
    /// Make nodes honest again. No list: every node.
    ByzantineOff {
        /// The nodes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nodes: Option<Vec<NodeId>>,
    },
    /// Heal, clear loss, duplication and reordering, restore clock rates, make every node
    /// honest, resume paused nodes and restart crashed ones.
    Reset {},
}

/// Why an action does not fit a cluster.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// A node id or partition shape that does not fit.
    #[error(transparent)]
    Topology(#[from] crate::topology::TopologyError),
    /// A value out of range.
    #[error("{0}")]
    Invalid(String),
}

/// One timed step of a plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NemesisStep {
    /// Simulated time since the start of the run.
    #[serde(with = "duration")]
    pub at: Duration,
    /// What happens then.
    #[serde(flatten)]
    pub action: NemesisAction,
}

/// A fault-injection plan: steps in time order.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NemesisPlan {
    /// The steps.
    pub steps: Vec<NemesisStep>,
}

/// A plan that cannot be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum NemesisError {
    /// The plan file cannot be read.
    #[error("cannot read nemesis plan {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's reason.
        message: String,
    },
    /// The file is not valid TOML or JSON.
    #[error("nemesis plan is not valid {format}: {message}")]
    Syntax {
        /// `TOML` or `JSON`.
        format: &'static str,
        /// The parser's message.
        message: String,
    },
    /// The document has no list of steps.
    #[error("nemesis plan must be a list of steps (a `steps` array, or a bare JSON array)")]
    NotAList,
    /// One step is malformed or does not fit the cluster.
    #[error("nemesis plan step {number}{}: {message}", at.as_ref().map(|a| format!(" (at {a})")).unwrap_or_default())]
    Step {
        /// 1-based step number.
        number: usize,
        /// The step's time, when it could be read.
        at: Option<String>,
        /// What is wrong.
        message: String,
    },
}

impl NemesisPlan {
    /// Reads a plan file: `.json` files as JSON, everything else as TOML.
    pub fn load(path: &Path) -> Result<Self, NemesisError> {
        let text = std::fs::read_to_string(path).map_err(|e| NemesisError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            NemesisPlan::from_json(&text)
        } else {
            NemesisPlan::from_toml(&text)
        }
    }

    /// Parses a TOML plan (`[[steps]]` tables).
    pub fn from_toml(text: &str) -> Result<Self, NemesisError> {
        let value: toml::Value = toml::from_str(text).map_err(|e| NemesisError::Syntax {
            format: "TOML",
            message: e.to_string(),
        })?;
        let value = serde_json::to_value(value).map_err(|e| NemesisError::Syntax {
            format: "TOML",
            message: e.to_string(),
        })?;
        NemesisPlan::from_value(value)
    }

    /// Parses a JSON plan (`{"steps": [...]}` or a bare array).
    pub fn from_json(text: &str) -> Result<Self, NemesisError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| NemesisError::Syntax {
                format: "JSON",
                message: e.to_string(),
            })?;
        NemesisPlan::from_value(value)
    }

    fn from_value(value: serde_json::Value) -> Result<Self, NemesisError> {
        let steps = match value {
            serde_json::Value::Array(steps) => steps,
            serde_json::Value::Object(mut object) => match object.remove("steps") {
                Some(serde_json::Value::Array(steps)) => steps,
                _ => return Err(NemesisError::NotAList),
            },
            _ => return Err(NemesisError::NotAList),
        };
        let mut plan = NemesisPlan::default();
        for (index, step) in steps.into_iter().enumerate() {
            plan.steps.push(parse_step(index + 1, step)?);
        }
        Ok(plan)
    }

    /// Serializes the plan as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Checks every step against a cluster of `nodes` nodes.
    pub fn validate(&self, nodes: usize) -> Result<(), NemesisError> {
        for (index, step) in self.steps.iter().enumerate() {
            step.action
                .validate(nodes)
                .map_err(|error| NemesisError::Step {
                    number: index + 1,
                    at: Some(duration_text(step.at)),
                    message: error.to_string(),
                })?;
        }
        Ok(())
    }
}

fn parse_step(number: usize, step: serde_json::Value) -> Result<NemesisStep, NemesisError> {
    let error = |at: Option<String>, message: String| NemesisError::Step {
        number,
        at,
        message,
    };
    let serde_json::Value::Object(mut object) = step else {
        return Err(error(None, "a step must be a table/object".into()));
    };
    let at = match object.remove("at") {
        Some(serde_json::Value::String(text)) => {
            parse_duration(&text).map_err(|message| error(None, format!("bad `at`: {message}")))?
        }
        Some(serde_json::Value::Number(number)) => number
            .as_u64()
            .ok_or_else(|| error(None, "bad `at`: expected a non-negative integer".into()))?,
        Some(_) => {
            return Err(error(
                None,
                "bad `at`: expected a duration like \"5s\"".into(),
            ))
        }
        None => return Err(error(None, "missing `at` (when the step happens)".into())),
    };
    let at_text = Some(duration_text(at));
    if !object.contains_key("action") {
        return Err(error(at_text, "missing `action`".into()));
    }
    let action: NemesisAction = serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|e| error(at_text.clone(), e.to_string()))?;
    Ok(NemesisStep { at, action })
}

fn check_probability(name: &str, value: f64) -> Result<(), ActionError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(ActionError::Invalid(format!(
            "{name} must be between 0 and 1, got {value}"
        )))
    }
}

impl NemesisAction {
    /// The action's name as written in plan files.
    pub fn name(&self) -> &'static str {
        match self {
            NemesisAction::Partition { .. } => "partition",
            NemesisAction::Isolate { .. } => "isolate",
            NemesisAction::Cut { .. } => "cut",
            NemesisAction::QuorumLoss { .. } => "quorum-loss",
            NemesisAction::ConstrainedElection { .. } => "constrained-election",
            NemesisAction::Chained { .. } => "chained",
            NemesisAction::Heal {} => "heal",
            NemesisAction::Crash { .. } => "crash",
            NemesisAction::Restart { .. } => "restart",
            NemesisAction::Pause { .. } => "pause",
            NemesisAction::Resume { .. } => "resume",
            NemesisAction::Loss { .. } => "loss",
            NemesisAction::Duplicate { .. } => "duplicate",
            NemesisAction::Reorder { .. } => "reorder",
            NemesisAction::Latency { .. } => "latency",
            NemesisAction::Drift { .. } => "drift",
            NemesisAction::Byzantine { .. } => "byzantine",
            NemesisAction::ByzantineOff { .. } => "byzantine-off",
            NemesisAction::Reset {} => "reset",
        }
    }

    /// Checks node ids, probabilities and ranges against a cluster of `nodes` nodes.
    pub fn validate(&self, nodes: usize) -> Result<(), ActionError> {
        match self {
            NemesisAction::Partition { groups } => {
                Connectivity::groups(nodes, groups)?;
            }
            NemesisAction::Isolate { nodes: set } => {
                Connectivity::isolate(nodes, set)?;
            }
            NemesisAction::Cut { from, to } => {
                check_nodes(nodes, from)?;
                check_nodes(nodes, to)?;
            }
            NemesisAction::QuorumLoss { center } => {
                Connectivity::quorum_loss(nodes, center.unwrap_or(0))?;
            }
            NemesisAction::ConstrainedElection { center, leader } => {
                if nodes < 3 {
                    return Err(ActionError::Invalid(format!(
                        "constrained-election needs at least 3 nodes, got {nodes}"
                    )));
                }
                check_nodes(nodes, center.as_slice())?;
                check_nodes(nodes, leader.as_slice())?;
                if center.is_some() && center == leader {
                    return Err(ActionError::Invalid(
                        "constrained-election: center and leader must differ".into(),
                    ));
                }
            }
            NemesisAction::Chained { chain } => match chain {
                Some(chain) => {
                    Connectivity::chained(nodes, chain)?;
                }
                None if nodes < 3 => {
                    return Err(ActionError::Invalid(format!(
                        "chained needs at least 3 nodes, got {nodes}"
                    )));
                }
                None => {}
            },
            NemesisAction::Crash { nodes: set }
            | NemesisAction::Pause { nodes: set }
            | NemesisAction::Byzantine { nodes: set, .. } => {
                check_nodes(nodes, set)?;
            }
            NemesisAction::Restart { nodes: set }
            | NemesisAction::Resume { nodes: set }
            | NemesisAction::ByzantineOff { nodes: set } => {
                check_nodes(nodes, set.as_deref().unwrap_or(&[]))?;
            }
            NemesisAction::Loss {
                probability,
                from,
                to,
            }
            | NemesisAction::Duplicate {
                probability,
                from,
                to,
            }
            | NemesisAction::Reorder {
                probability,
                from,
                to,
                ..
            } => {
                check_probability("probability", *probability)?;
                check_nodes(nodes, from.as_deref().unwrap_or(&[]))?;
                check_nodes(nodes, to.as_deref().unwrap_or(&[]))?;
            }
            NemesisAction::Latency { min, max, from, to } => {
                check_nodes(nodes, from.as_deref().unwrap_or(&[]))?;
                check_nodes(nodes, to.as_deref().unwrap_or(&[]))?;
                if min > max {
                    return Err(ActionError::Invalid(format!(
                        "latency min ({}) is larger than max ({})",
                        duration_text(*min),
                        duration_text(*max)
                    )));
                }
            }
            NemesisAction::Drift { nodes: set, rate } => {
                check_nodes(nodes, set)?;
                if !(rate.is_finite() && (0.1..=10.0).contains(rate)) {
                    return Err(ActionError::Invalid(format!(
                        "drift rate must be between 0.1 and 10, got {rate}"
                    )));
                }
            }
            NemesisAction::Heal {} | NemesisAction::Reset {} => {}
        }
        Ok(())
    }
}

/// Writes nanoseconds in the largest exact unit: `5s`, `250ms`, `30us`, `7ns`.
pub fn duration_text(nanos: Duration) -> String {
    if nanos == 0 {
        "0s".into()
    } else if nanos % SECOND == 0 {
        format!("{}s", nanos / SECOND)
    } else if nanos % MILLISECOND == 0 {
        format!("{}ms", nanos / MILLISECOND)
    } else if nanos % 1_000 == 0 {
        format!("{}us", nanos / 1_000)
    } else {
        format!("{nanos}ns")
    }
}

/// Serde for durations written as `"5s"` or integer nanoseconds.
pub mod duration {
    use super::*;

    /// Writes `"5s"`-style text.
    pub fn serialize<S: serde::Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&duration_text(*value))
    }

    /// Reads `"5s"`-style text or integer nanoseconds.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Nanos(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Nanos(nanos) => Ok(nanos),
            Raw::Text(text) => parse_duration(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// Serde for optional durations.
pub mod optional_duration {
    use super::*;

    /// Writes `"5s"`-style text.
    pub fn serialize<S: serde::Serializer>(
        value: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => s.serialize_str(&duration_text(*value)),
            None => s.serialize_none(),
        }
    }

    /// Reads `"5s"`-style text or integer nanoseconds.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_toml_and_names_the_bad_step() {
        let plan = NemesisPlan::from_toml(
            "[[steps]]\nat = \"5s\"\naction = \"partition\"\ngroups = [[0,1],[2,3,4]]\n",
        )
        .unwrap();
        assert_eq!(plan.steps[0].at, 5 * SECOND);
        let bad = NemesisPlan::from_toml(
            "[[steps]]\nat = \"1s\"\naction = \"heal\"\n[[steps]]\nat = \"2s\"\naction = \"partiton\"\n",
        )
        .unwrap_err();
        assert!(bad.to_string().contains("step 2 (at 2s)"), "{bad}");
        let plan = NemesisPlan::from_json(r#"[{"at":"1s","action":"crash","nodes":[9]}]"#).unwrap();
        let bad = plan.validate(5).unwrap_err();
        assert!(bad.to_string().contains("node 9 does not exist"), "{bad}");
    }
}
