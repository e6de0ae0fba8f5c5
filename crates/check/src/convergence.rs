//! Convergence, the safety half of eventual consistency (Terry et al. 1994; Vogels 2009,
//! "Eventually consistent"): once updates stop and every message is delivered, all replicas
//! hold the same state.
//!
//! The input is each replica's final state after quiescence, in either shape (see
//! `docs/history-format.md`):
//!
//! ```text
//! {"replicas": {"n1": {"x": 1, "y": 2}, "n2": {"x": 1, "y": 3}}}
//! ```
//!
//! or JSON lines, one replica a line:
//!
//! ```text
//! {"replica": "n1", "state": {"x": 1, "y": 2}}
//! {"replica": "n2", "state": {"x": 1, "y": 3}}
//! ```
//!
//! When every state is a JSON object (a map), replicas are compared key by key and a key one
//! replica lacks differs from a key another has. Otherwise whole states are compared. Values are
//! compared as JSON (object member order does not matter).

use std::collections::BTreeMap;
use std::io::Read;

use serde::Serialize;
use serde_json::Value as Json;

/// Each replica's final state, by replica name.
pub type Replicas = BTreeMap<String, Json>;

/// Replica states that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConvergenceError {
    /// The input is neither a `{"replicas": {...}}` document nor JSON lines of
    /// `{"replica": ..., "state": ...}`.
    #[error("line {line}: {message}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A replica appears twice.
    #[error("line {line}: replica '{replica}' appears twice")]
    Duplicate {
        /// 1-based line number of the second appearance.
        line: usize,
        /// The replica.
        replica: String,
    },
    /// No replica at all.
    #[error("no replicas: expected {{\"replicas\": {{...}}}} or lines of {{\"replica\": ..., \"state\": ...}}")]
    Empty,
    /// The input could not be read.
    #[error("cannot read replica states: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads replica states in either shape.
pub fn read(mut reader: impl Read) -> Result<Replicas, ConvergenceError> {
    let mut text = String::new();
    reader.read_to_string(&mut text)?;
    let replicas = match serde_json::from_str::<Json>(&text) {
        Ok(Json::Object(document)) if document.contains_key("replicas") => {
            match document.get("replicas") {
                Some(Json::Object(replicas)) if document.len() == 1 => replicas
                    .iter()
                    .map(|(name, state)| (name.clone(), state.clone()))
                    .collect(),
                _ => {
                    return Err(ConvergenceError::Malformed {
                        line: 1,
                        message: "expected exactly {\"replicas\": {name: state, ...}}".into(),
                    })
                }
            }
        }
        _ => read_lines(&text)?,
    };
    if replicas.is_empty() {
        return Err(ConvergenceError::Empty);
    }
    Ok(replicas)
}

/// JSON lines of `{"replica": name, "state": value}`; blank lines are skipped.
fn read_lines(text: &str) -> Result<Replicas, ConvergenceError> {
    let mut replicas = Replicas::new();
    for (number, line) in text.lines().enumerate() {
        let line_number = number + 1;
        if line.trim().is_empty() {
            continue;
        }
        let malformed = |message: String| ConvergenceError::Malformed {
            line: line_number,
            message,
        };
        let value: Json = serde_json::from_str(line).map_err(|e| malformed(e.to_string()))?;
        let (Some(Json::String(name)), Some(state), 2) = (
            value.get("replica"),
            value.get("state"),
            value.as_object().map_or(0, |o| o.len()),
        ) else {
            return Err(malformed(
                "expected {\"replica\": \"name\", \"state\": value}".into(),
            ));
        };
        if replicas.insert(name.clone(), state.clone()).is_some() {
            return Err(ConvergenceError::Duplicate {
                line: line_number,
                replica: name.clone(),
            });
        }
    }
    Ok(replicas)
}

/// Converged or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every replica holds the same state.
    Converged,
    /// Some replicas differ.
    Diverged,
}

/// Replicas that hold one value of a key (or one whole state).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Group {
    /// The value; `None` when these replicas lack the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Json>,
    /// The replicas holding it, by name.
    pub replicas: Vec<String>,
}

/// One key on which the replicas differ (or the whole state, when states are not maps).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Difference {
    /// The key; `None` when whole states are compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The values found, the most widely held first (ties: by the first replica's name).
    pub groups: Vec<Group>,
}

/// The result of a convergence check.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The verdict.
    pub verdict: Verdict,
    /// How many replicas were compared.
    pub replicas: usize,
    /// How many keys were compared (the union over replicas); `None` when whole states were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<usize>,
    /// Where they differ, by key.
    pub differences: Vec<Difference>,
}

/// Compares the replicas' states.
pub fn check(replicas: &Replicas) -> Report {
    let maps: Option<Vec<(&String, &serde_json::Map<String, Json>)>> = replicas
        .iter()
        .map(|(name, state)| state.as_object().map(|map| (name, map)))
        .collect();
    let (keys, differences) = match maps {
        Some(maps) => {
            let keys: std::collections::BTreeSet<&String> =
                maps.iter().flat_map(|(_, map)| map.keys()).collect();
            let differences: Vec<Difference> = keys
                .iter()
                .filter_map(|key| {
                    let values = maps.iter().map(|(name, map)| (*name, map.get(*key)));
                    differ(Some(key.to_string()), values)
                })
                .collect();
            (Some(keys.len()), differences)
        }
        None => {
            let values = replicas.iter().map(|(name, state)| (name, Some(state)));
            (None, differ(None, values).into_iter().collect())
        }
    };
    Report {
        verdict: if differences.is_empty() {
            Verdict::Converged
        } else {
            Verdict::Diverged
        },
        replicas: replicas.len(),
        keys,
        differences,
    }
}

/// Groups the replicas by value; `None` when they all agree.
fn differ<'a>(
    key: Option<String>,
    values: impl Iterator<Item = (&'a String, Option<&'a Json>)>,
) -> Option<Difference> {
    let mut groups: Vec<Group> = Vec::new();
    for (name, value) in values {
        match groups.iter_mut().find(|g| g.value.as_ref() == value) {
            Some(group) => group.replicas.push(name.clone()),
            None => groups.push(Group {
                value: value.cloned(),
                replicas: vec![name.clone()],
            }),
        }
    }
    if groups.len() <= 1 {
        return None;
    }
    // Stable: equal sizes keep the order of their first replica's name.
    groups.sort_by_key(|g| std::cmp::Reverse(g.replicas.len()));
    Some(Difference { key, groups })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn replicas(text: &str) -> Replicas {
        read(text.as_bytes()).unwrap()
    }

    #[test]
    fn equal_maps_have_converged_whatever_their_member_order() {
        let report = check(&replicas(
            r#"{"replicas": {"n1": {"x": 1, "y": [1, 2]}, "n2": {"y": [1, 2], "x": 1}}}"#,
        ));
        assert_eq!(report.verdict, Verdict::Converged);
        assert_eq!(report.keys, Some(2));
        assert!(report.differences.is_empty());
    }

    #[test]
    fn differing_maps_name_the_keys_and_which_replicas_hold_what() {
        let report = check(&replicas(
            "{\"replica\": \"n1\", \"state\": {\"x\": 1, \"y\": 2}}\n\
             {\"replica\": \"n2\", \"state\": {\"x\": 1, \"y\": 3}}\n\
             \n\
             {\"replica\": \"n3\", \"state\": {\"y\": 2}}\n",
        ));
        assert_eq!(report.verdict, Verdict::Diverged);
        assert_eq!(report.replicas, 3);
        assert_eq!(report.differences.len(), 2);
        let x = &report.differences[0];
        assert_eq!(x.key.as_deref(), Some("x"));
        assert_eq!(x.groups[0].value, Some(json!(1)));
        assert_eq!(x.groups[0].replicas, ["n1", "n2"]);
        assert_eq!(x.groups[1].value, None, "n3 lacks x");
        assert_eq!(x.groups[1].replicas, ["n3"]);
        let y = &report.differences[1];
        assert_eq!(y.groups[0].replicas, ["n1", "n3"]);
        assert_eq!(y.groups[1].replicas, ["n2"]);
    }

    #[test]
    fn states_that_are_not_maps_are_compared_whole() {
        let report = check(&replicas(
            r#"{"replicas": {"a": [1, 2], "b": [2, 1], "c": [1, 2]}}"#,
        ));
        assert_eq!(report.verdict, Verdict::Diverged);
        assert_eq!(report.keys, None);
        let whole = &report.differences[0];
        assert_eq!(whole.key, None);
        assert_eq!(whole.groups[0].replicas, ["a", "c"]);
        assert_eq!(whole.groups[1].value, Some(json!([2, 1])));
        let one = check(&replicas(r#"{"replicas": {"only": 5}}"#));
        assert_eq!(one.verdict, Verdict::Converged);
    }

    #[test]
    fn bad_input_is_rejected_with_its_line() {
        let error = |text: &str| read(text.as_bytes()).unwrap_err().to_string();
        assert!(error("").starts_with("no replicas"));
        assert!(error(r#"{"replicas": {}}"#).starts_with("no replicas"));
        assert!(error(r#"{"replicas": [1]}"#).starts_with("line 1:"));
        assert!(error("{\"replica\": \"n1\", \"state\": 1}\nnot json\n").starts_with("line 2:"));
        assert!(error("{\"replica\": 1, \"state\": 1}\n").starts_with("line 1:"));
        assert!(error("{\"replica\": \"n1\", \"state\": 1, \"extra\": 2}\n").starts_with("line 1:"));
        assert_eq!(
            error("{\"replica\": \"n1\", \"state\": 1}\n{\"replica\": \"n1\", \"state\": 2}\n"),
            "line 2: replica 'n1' appears twice"
        );
    }
}
