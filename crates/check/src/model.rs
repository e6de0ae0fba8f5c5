//! Sequential specifications ("models") that histories are checked against.
//!
//! A model says, for a state and an operation with its observed output, whether the operation
//! could have happened and what the next state is. Outputs may be unknown (an `info`
//! completion): the model must then accept any output the operation could have produced.

use std::fmt::Debug;
use std::hash::Hash;

use serde_json::Value as Json;

/// A sequential specification.
pub trait Model: Debug + Sync {
    /// The state of the object.
    type State: Clone + Eq + Hash + Debug + Send;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Applies operation `f` with argument `input` and observed `output` (`None`: unknown).
    /// Returns the next state, or `None` if the output is impossible in `state`.
    fn step(
        &self,
        state: &Self::State,
        f: &str,
        input: &Json,
        output: Option<&Json>,
    ) -> Option<Self::State>;
}

/// A register that also supports compare-and-set and list append, per key: the model of
/// Concord's key-value workload (`read`, `write`, `cas`, `append`).
///
/// The state is the JSON value held (`null` when unset). A `cas` that completed `ok` took
/// effect; a `cas` that did not match is recorded as `fail` and never reaches the model.
#[derive(Clone, Copy, Debug, Default)]
pub struct RegisterModel;

impl Model for RegisterModel {
    type State = Json;

    fn init(&self) -> Json {
        Json::Null
    }

    fn step(&self, state: &Json, f: &str, input: &Json, output: Option<&Json>) -> Option<Json> {
        match f {
            "read" => match output {
                None => Some(state.clone()),
                Some(value) if value == state => Some(state.clone()),
                Some(_) => None,
            },
            "write" => Some(input.clone()),
            "cas" => {
                let (from, to) = match input.as_array().map(Vec::as_slice) {
                    Some([from, to]) => (from, to),
                    _ => return None,
                };
                if state == from {
                    Some(to.clone())
                } else if output.is_none() {
                    // Unknown outcome: the cas may have found another value and done nothing.
                    Some(state.clone())
                } else {
                    None
                }
            }
            "append" => {
                let mut list = match state {
                    Json::Null => Vec::new(),
                    Json::Array(items) => items.clone(),
                    other => vec![other.clone()],
                };
                list.push(input.clone());
                Some(Json::Array(list))
            }
            _ => None,
        }
    }
}

/// A map of string registers with `get`, `put` and `append` (string concatenation), checked per
/// key: the model of Porcupine's and etcd's key-value test histories. Unset keys read `""`.
#[derive(Clone, Copy, Debug, Default)]
pub struct StringKvModel;

impl Model for StringKvModel {
    type State = String;

    fn init(&self) -> String {
        String::new()
    }

    fn step(&self, state: &String, f: &str, input: &Json, output: Option<&Json>) -> Option<String> {
        match f {
            "get" | "read" => match output {
                None => Some(state.clone()),
                Some(Json::String(value)) if value == state => Some(state.clone()),
                Some(Json::Null) if state.is_empty() => Some(state.clone()),
                Some(_) => None,
            },
            "put" | "write" => Some(input.as_str()?.to_string()),
            "append" => Some(format!("{state}{}", input.as_str()?)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn register_semantics() {
        let m = RegisterModel;
        let s = m.init();
        assert_eq!(
            m.step(&s, "read", &Json::Null, Some(&Json::Null)),
            Some(Json::Null)
        );
        assert_eq!(m.step(&s, "read", &Json::Null, Some(&json!(1))), None);
        let s = m.step(&s, "write", &json!(1), Some(&json!(1))).unwrap();
        assert_eq!(
            m.step(&s, "cas", &json!([1, 2]), Some(&json!([1, 2]))),
            Some(json!(2))
        );
        assert_eq!(
            m.step(&s, "cas", &json!([3, 2]), Some(&json!([3, 2]))),
            None
        );
        assert_eq!(m.step(&s, "cas", &json!([3, 2]), None), Some(json!(1)));
        let l = m.step(&Json::Null, "append", &json!(5), None).unwrap();
        assert_eq!(m.step(&l, "append", &json!(6), None), Some(json!([5, 6])));
    }
}
