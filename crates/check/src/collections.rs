//! Models of collections: a grow-only set, a FIFO queue and a counter, in the shape of Jepsen's
//! `set`, `queue` and `counter` workloads. Value encodings are in `docs/history-format.md`.

use std::collections::{BTreeSet, VecDeque};

use serde_json::Value as Json;

use crate::model::Model;

/// A set with `add` (the element) and `read` (the whole set, as a JSON array in any order;
/// `null` reads as the empty set). Elements are compared by their JSON text.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetModel;

/// The canonical text of a JSON value (object keys are sorted by `serde_json`'s map).
fn canonical(value: &Json) -> String {
    value.to_string()
}

impl Model for SetModel {
    type State = BTreeSet<String>;

    fn init(&self) -> BTreeSet<String> {
        BTreeSet::new()
    }

    fn step(
        &self,
        state: &BTreeSet<String>,
        f: &str,
        input: &Json,
        output: Option<&Json>,
    ) -> Option<BTreeSet<String>> {
        match f {
            "add" => {
                let mut next = state.clone();
                next.insert(canonical(input));
                Some(next)
            }
            "read" => {
                let observed: BTreeSet<String> = match output {
                    None => return Some(state.clone()),
                    Some(Json::Null) => BTreeSet::new(),
                    Some(Json::Array(items)) => items.iter().map(canonical).collect(),
                    Some(_) => return None,
                };
                (observed == *state).then(|| state.clone())
            }
            _ => None,
        }
    }
}

/// A FIFO queue with `enqueue` (the element) and `dequeue` (returns the head, or `null` when
/// the queue is empty). Enqueuing `null` is not allowed: it could not be told from "empty".
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueModel;

impl Model for QueueModel {
    type State = VecDeque<Json>;

    fn init(&self) -> VecDeque<Json> {
        VecDeque::new()
    }

    fn step(
        &self,
        state: &VecDeque<Json>,
        f: &str,
        input: &Json,
        output: Option<&Json>,
    ) -> Option<VecDeque<Json>> {
        match f {
            "enqueue" if !input.is_null() => {
                let mut next = state.clone();
                next.push_back(input.clone());
                Some(next)
            }
            "dequeue" => {
                let mut next = state.clone();
                let head = next.pop_front();
                match (output, head) {
                    (None, _) => Some(next),
                    (Some(Json::Null), None) => Some(next),
                    (Some(observed), Some(head)) if *observed == head => Some(next),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// A counter with `add` (a signed integer, which may be negative) and `read` (the integer
/// total). It starts at 0; a sum that would overflow an `i64` is impossible.
#[derive(Clone, Copy, Debug, Default)]
pub struct CounterModel;

impl Model for CounterModel {
    type State = i64;

    fn init(&self) -> i64 {
        0
    }

    fn step(&self, state: &i64, f: &str, input: &Json, output: Option<&Json>) -> Option<i64> {
        match f {
            "add" => state.checked_add(input.as_i64()?),
            "read" => match output {
                None => Some(*state),
                Some(value) if value.as_i64() == Some(*state) => Some(*state),
                Some(_) => None,
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{EventType, History, Op};
    use crate::linearizability::{check, Verdict};
    use serde_json::json;

    fn run<M: Model>(model: &M, steps: &[(&str, Json, Option<Json>)]) -> Option<M::State> {
        let mut state = model.init();
        for (f, input, output) in steps {
            state = model.step(&state, f, input, output.as_ref())?;
        }
        Some(state)
    }

    #[test]
    fn set_reads_must_show_exactly_the_added_elements() {
        let m = SetModel;
        assert!(run(&m, &[("read", Json::Null, Some(Json::Null))]).is_some());
        assert!(run(&m, &[("read", Json::Null, Some(json!([])))]).is_some());
        let added = [
            ("add", json!(1), Some(json!(1))),
            ("add", json!(2), Some(json!(2))),
        ];
        let mut legal = added.to_vec();
        legal.push(("read", Json::Null, Some(json!([2, 1]))));
        assert!(run(&m, &legal).is_some());
        let mut missing = added.to_vec();
        missing.push(("read", Json::Null, Some(json!([1]))));
        assert!(run(&m, &missing).is_none());
        let mut extra = added.to_vec();
        extra.push(("read", Json::Null, Some(json!([1, 2, 3]))));
        assert!(run(&m, &extra).is_none());
        assert!(run(&m, &[("read", Json::Null, Some(json!(7)))]).is_none());
        assert!(run(&m, &[("remove", json!(1), None)]).is_none());
    }

    #[test]
    fn queue_is_first_in_first_out_and_empty_dequeues_return_null() {
        let m = QueueModel;
        assert!(run(&m, &[("dequeue", Json::Null, Some(Json::Null))]).is_some());
        let legal = [
            ("enqueue", json!(1), Some(json!(1))),
            ("enqueue", json!(2), Some(json!(2))),
            ("dequeue", Json::Null, Some(json!(1))),
            ("dequeue", Json::Null, None),
            ("dequeue", Json::Null, Some(Json::Null)),
        ];
        assert_eq!(run(&m, &legal), Some(VecDeque::new()));
        let out_of_order = [
            ("enqueue", json!(1), None),
            ("enqueue", json!(2), None),
            ("dequeue", Json::Null, Some(json!(2))),
        ];
        assert!(run(&m, &out_of_order).is_none());
        let null_from_full = [
            ("enqueue", json!(1), None),
            ("dequeue", Json::Null, Some(Json::Null)),
        ];
        assert!(run(&m, &null_from_full).is_none());
        assert!(run(&m, &[("dequeue", Json::Null, Some(json!(1)))]).is_none());
        assert!(run(&m, &[("enqueue", Json::Null, None)]).is_none());
    }

    #[test]
    fn counter_reads_the_sum_of_adds() {
        let m = CounterModel;
        let legal = [
            ("add", json!(5), Some(json!(5))),
            ("add", json!(-2), Some(json!(-2))),
            ("read", Json::Null, Some(json!(3))),
        ];
        assert_eq!(run(&m, &legal), Some(3));
        assert!(run(&m, &[("read", Json::Null, Some(json!(1)))]).is_none());
        assert!(run(&m, &[("add", json!("one"), None)]).is_none());
        assert!(run(
            &m,
            &[("add", json!(i64::MAX), None), ("add", json!(1), None)]
        )
        .is_none());
    }

    fn history(events: &[(u64, EventType, &str, Json, u64)]) -> History {
        History {
            events: events
                .iter()
                .map(|(process, kind, f, value, time)| Op {
                    process: *process,
                    kind: *kind,
                    f: (*f).into(),
                    key: None,
                    value: value.clone(),
                    time: *time,
                })
                .collect(),
        }
    }

    use EventType::{Info, Invoke, Ok as Done};

    fn verdict<M: Model>(model: &M, events: &[(u64, EventType, &str, Json, u64)]) -> Verdict {
        check(&history(events), model, None).unwrap().verdict
    }

    #[test]
    fn set_histories_through_the_linearizability_search() {
        // A read concurrent with an add may or may not see it.
        let concurrent = [
            (0, Invoke, "add", json!(1), 0),
            (1, Invoke, "read", Json::Null, 1),
            (1, Done, "read", json!([]), 2),
            (0, Done, "add", json!(1), 3),
            (1, Invoke, "read", Json::Null, 4),
            (1, Done, "read", json!([1]), 5),
        ];
        assert_eq!(verdict(&SetModel, &concurrent), Verdict::Linearizable);
        // An element that vanishes after it was read is not.
        let lost = [
            (0, Invoke, "add", json!(1), 0),
            (0, Done, "add", json!(1), 1),
            (1, Invoke, "read", Json::Null, 2),
            (1, Done, "read", json!([1]), 3),
            (1, Invoke, "read", Json::Null, 4),
            (1, Done, "read", json!([]), 5),
        ];
        assert!(matches!(
            verdict(&SetModel, &lost),
            Verdict::NotLinearizable(_)
        ));
    }

    #[test]
    fn queue_histories_through_the_linearizability_search() {
        // Concurrent enqueues may be dequeued in either order; an unknown enqueue may land late.
        let legal = [
            (0, Invoke, "enqueue", json!(1), 0),
            (1, Invoke, "enqueue", json!(2), 0),
            (0, Done, "enqueue", json!(1), 5),
            (1, Done, "enqueue", json!(2), 5),
            (2, Invoke, "enqueue", json!(3), 6),
            (2, Info, "enqueue", json!(3), 7),
            (3, Invoke, "dequeue", Json::Null, 8),
            (3, Done, "dequeue", json!(2), 9),
            (3, Invoke, "dequeue", Json::Null, 10),
            (3, Done, "dequeue", json!(1), 11),
        ];
        assert_eq!(verdict(&QueueModel, &legal), Verdict::Linearizable);
        // Enqueues ordered in real time must leave in that order.
        let reordered = [
            (0, Invoke, "enqueue", json!(1), 0),
            (0, Done, "enqueue", json!(1), 1),
            (0, Invoke, "enqueue", json!(2), 2),
            (0, Done, "enqueue", json!(2), 3),
            (1, Invoke, "dequeue", Json::Null, 4),
            (1, Done, "dequeue", json!(2), 5),
        ];
        assert!(matches!(
            verdict(&QueueModel, &reordered),
            Verdict::NotLinearizable(_)
        ));
    }

    #[test]
    fn counter_histories_through_the_linearizability_search() {
        let legal = [
            (0, Invoke, "add", json!(1), 0),
            (1, Invoke, "add", json!(10), 0),
            (2, Invoke, "read", Json::Null, 1),
            (2, Done, "read", json!(10), 2),
            (0, Done, "add", json!(1), 3),
            (1, Done, "add", json!(10), 3),
            (2, Invoke, "read", Json::Null, 4),
            (2, Done, "read", json!(11), 5),
        ];
        assert_eq!(verdict(&CounterModel, &legal), Verdict::Linearizable);
        // A read that goes backwards after both adds completed is not.
        let backwards = [
            (0, Invoke, "add", json!(1), 0),
            (0, Done, "add", json!(1), 1),
            (0, Invoke, "add", json!(10), 2),
            (0, Done, "add", json!(10), 3),
            (1, Invoke, "read", Json::Null, 4),
            (1, Done, "read", json!(1), 5),
        ];
        assert!(matches!(
            verdict(&CounterModel, &backwards),
            Verdict::NotLinearizable(_)
        ));
    }
}
