//! Sequential consistency (Lamport 1979, "How to make a multiprocessor computer that correctly
//! executes multiprocess programs"): is there one total order of the operations that keeps each
//! process's own order and obeys the model? Unlike linearizability, real time between
//! different processes does not constrain the order.
//!
//! Sequential consistency is not compositional (a history can be sequentially consistent per
//! key and not as a whole), so the whole history is searched as one object: the state is one
//! model state per key. The search is a depth-first search over configurations
//! (how many operations of each process are placed, which unknown operations are placed, the
//! model state of every key), memoized so no configuration is explored twice.
//!
//! Operations whose outcome is unknown (`info`, or never completed) may be placed anywhere
//! after their process's previous operation, or left out; `fail` operations never happened.
//! A time budget turns an unfinished search into [`Verdict::Unknown`].

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::history::History;
use crate::linearizability::{operations, MalformedHistory, Operation};
use crate::model::Model;

/// The answer of the sequential consistency check.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// Some total order keeps every process's order and obeys the model.
    SequentiallyConsistent,
    /// No such order exists.
    NotSequentiallyConsistent(Counterexample),
    /// The budget ran out before an answer.
    Unknown {
        /// Why.
        reason: String,
    },
}

/// Where the search got furthest before every order failed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Counterexample {
    /// The longest order found that keeps the processes' orders and the model.
    pub longest_prefix: Vec<Operation>,
    /// After that order: the next completed operation of every process that has one left;
    /// none of them can be placed.
    pub stuck: Vec<Operation>,
}

/// The result of checking a whole history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// How many processes the history has.
    pub processes: usize,
    /// How many keys (objects) it touches.
    pub keys: usize,
    /// How many operations were considered (failed ones are left out).
    pub operations: usize,
    /// How many distinct configurations the search reached.
    pub configurations: usize,
}

/// A search configuration: how far each process is, which unknown operations are placed, and
/// the model state of every key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Config<S> {
    positions: Vec<usize>,
    unknown_placed: Vec<u64>,
    states: Vec<S>,
}

/// An operation whose outcome is unknown, placeable once its process has placed `after`
/// completed operations.
#[derive(Clone, Copy, Debug)]
struct Unknown {
    operation: usize,
    process: usize,
    after: usize,
}

/// The history prepared for the search.
struct Problem<'a, M: Model> {
    model: &'a M,
    ops: Vec<Operation>,
    key_of: Vec<usize>,
    keys: usize,
    /// Per process: its completed operations, in its order.
    completed: Vec<Vec<usize>>,
    unknown: Vec<Unknown>,
}

impl<'a, M: Model> Problem<'a, M> {
    fn new(model: &'a M, ops: Vec<Operation>) -> Self {
        let mut keys: BTreeMap<Option<String>, usize> = BTreeMap::new();
        let mut processes: BTreeMap<u64, usize> = BTreeMap::new();
        let mut completed: Vec<Vec<usize>> = Vec::new();
        let mut unknown = Vec::new();
        let mut key_of = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let next_key = keys.len();
            key_of.push(*keys.entry(op.key.clone()).or_insert(next_key));
            let next_process = processes.len();
            let process = *processes.entry(op.process).or_insert(next_process);
            if process == completed.len() {
                completed.push(Vec::new());
            }
            if op.output.is_some() {
                completed[process].push(i);
            } else {
                let after = completed[process].len();
                unknown.push(Unknown {
                    operation: i,
                    process,
                    after,
                });
            }
        }
        Problem {
            model,
            ops,
            key_of,
            keys: keys.len(),
            completed,
            unknown,
        }
    }

    fn initial(&self) -> Config<M::State> {
        Config {
            positions: vec![0; self.completed.len()],
            unknown_placed: vec![0; self.unknown.len().div_ceil(64)],
            states: vec![self.model.init(); self.keys],
        }
    }

    fn is_complete(&self, config: &Config<M::State>) -> bool {
        config
            .positions
            .iter()
            .zip(&self.completed)
            .all(|(&at, ops)| at == ops.len())
    }

    /// The choices worth trying from `config`, best first: the next completed operation of
    /// each process by invocation time (an order that respects real time is the likeliest to
    /// work), then the unknown operations by invocation time (placed only when needed).
    fn candidates(&self, config: &Config<M::State>) -> Vec<usize> {
        let mut next: Vec<(u64, usize)> = config
            .positions
            .iter()
            .zip(&self.completed)
            .enumerate()
            .filter_map(|(process, (&at, ops))| ops.get(at).map(|&i| (self.ops[i].call, process)))
            .collect();
        next.sort_unstable();
        let processes = self.completed.len();
        let mut candidates: Vec<usize> = next.into_iter().map(|(_, process)| process).collect();
        // Unknown operations are listed in invocation order already.
        candidates.extend((0..self.unknown.len()).map(|u| processes + u));
        candidates
    }

    /// Places choice `choice` (a process's next completed operation, or an unknown
    /// operation) if it is available and the model allows it.
    fn place(&self, config: &Config<M::State>, choice: usize) -> Option<(usize, Config<M::State>)> {
        let processes = self.completed.len();
        let operation = if choice < processes {
            *self.completed[choice].get(config.positions[choice])?
        } else {
            let u = choice - processes;
            let unknown = self.unknown[u];
            let placed = config.unknown_placed[u / 64] & (1 << (u % 64)) != 0;
            if placed || config.positions[unknown.process] < unknown.after {
                return None;
            }
            unknown.operation
        };
        let op = &self.ops[operation];
        let key = self.key_of[operation];
        let state = self
            .model
            .step(&config.states[key], &op.f, &op.input, op.output.as_ref())?;
        let mut next = config.clone();
        next.states[key] = state;
        if choice < processes {
            next.positions[choice] += 1;
        } else {
            let u = choice - processes;
            next.unknown_placed[u / 64] |= 1 << (u % 64);
        }
        Some((operation, next))
    }

    fn stuck(&self, positions: &[usize]) -> Vec<Operation> {
        positions
            .iter()
            .zip(&self.completed)
            .filter_map(|(&at, ops)| ops.get(at).map(|&i| self.ops[i].clone()))
            .collect()
    }
}

/// One level of the depth-first search.
struct Frame<S> {
    config: Config<S>,
    /// The choices to try from this configuration, best first.
    candidates: Vec<usize>,
    /// How many of them have been tried.
    tried: usize,
    /// The operation placed to reach this configuration.
    placed: Option<usize>,
}

/// Checks `history` against `model` as one object, giving up after `budget`.
pub fn check<M: Model>(
    history: &History,
    model: &M,
    budget: Option<Duration>,
) -> Result<Report, MalformedHistory> {
    let ops = operations(history)?;
    let count = ops.len();
    let problem = Problem::new(model, ops);
    #[allow(clippy::disallowed_methods)] // the checker is not a sans-IO core; budgets are wall time
    let deadline = budget.map(|b| Instant::now() + b);
    let (verdict, configurations) = search(&problem, deadline);
    Ok(Report {
        verdict,
        processes: problem.completed.len(),
        keys: problem.keys,
        operations: count,
        configurations,
    })
}

/// The verdict and how many configurations were reached.
fn search<M: Model>(problem: &Problem<'_, M>, deadline: Option<Instant>) -> (Verdict, usize) {
    let initial = problem.initial();
    let mut visited: HashSet<Config<M::State>> = HashSet::new();
    visited.insert(initial.clone());
    let mut longest: (Vec<usize>, Vec<usize>) = (Vec::new(), initial.positions.clone());
    let mut stack = vec![Frame {
        candidates: problem.candidates(&initial),
        config: initial,
        tried: 0,
        placed: None,
    }];
    let mut steps: u64 = 0;
    while let Some(frame) = stack.last_mut() {
        steps += 1;
        #[allow(clippy::disallowed_methods)]
        if steps.is_multiple_of(1024) && deadline.is_some_and(|d| Instant::now() > d) {
            let reason = format!(
                "time budget exhausted after {} configurations",
                visited.len()
            );
            return (Verdict::Unknown { reason }, visited.len());
        }
        if problem.is_complete(&frame.config) {
            return (Verdict::SequentiallyConsistent, visited.len());
        }
        let mut advanced = None;
        while let Some(&choice) = frame.candidates.get(frame.tried) {
            frame.tried += 1;
            if let Some((operation, next)) = problem.place(&frame.config, choice) {
                if visited.insert(next.clone()) {
                    advanced = Some((operation, next));
                    break;
                }
            }
        }
        match advanced {
            Some((operation, config)) => {
                stack.push(Frame {
                    candidates: problem.candidates(&config),
                    config,
                    tried: 0,
                    placed: Some(operation),
                });
                if stack.len() > longest.0.len() + 1 {
                    let order = stack.iter().filter_map(|f| f.placed).collect();
                    let positions = stack
                        .last()
                        .map_or_else(Vec::new, |f| f.config.positions.clone());
                    longest = (order, positions);
                }
            }
            None => {
                stack.pop();
            }
        }
    }
    let counterexample = Counterexample {
        longest_prefix: longest.0.iter().map(|&i| problem.ops[i].clone()).collect(),
        stuck: problem.stuck(&longest.1),
    };
    (
        Verdict::NotSequentiallyConsistent(counterexample),
        visited.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{EventType, Op};
    use crate::linearizability;
    use crate::model::RegisterModel;
    use serde_json::{json, Value as Json};

    use EventType::{Info, Invoke, Ok as Done};

    fn event(process: u64, kind: EventType, f: &str, key: &str, value: Json, time: u64) -> Op {
        Op {
            process,
            kind,
            f: f.into(),
            key: Some(key.into()),
            value,
            time,
        }
    }

    /// One operation of `process` on `key`, invoked at `time` and completed at `time + 1`.
    fn op(process: u64, f: &str, key: &str, value: Json, time: u64) -> [Op; 2] {
        let input = if f == "read" {
            Json::Null
        } else {
            value.clone()
        };
        [
            event(process, Invoke, f, key, input, time),
            event(process, Done, f, key, value, time + 1),
        ]
    }

    fn history(ops: Vec<[Op; 2]>) -> History {
        let mut events: Vec<Op> = ops.into_iter().flatten().collect();
        events.sort_by_key(|e| e.time);
        History { events }
    }

    fn verdict(history: &History) -> Verdict {
        check(history, &RegisterModel, None).unwrap().verdict
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_sequentially_consistent_but_not_linearizable() {
        let h = history(vec![
            op(0, "write", "x", json!(1), 0),
            op(0, "write", "x", json!(2), 10),
            op(1, "read", "x", json!(1), 20),
        ]);
        assert_eq!(verdict(&h), Verdict::SequentiallyConsistent);
        assert!(matches!(
            linearizability::check(&h, &RegisterModel, None)
                .unwrap()
                .verdict,
            linearizability::Verdict::NotLinearizable(_)
        ));
    }

    #[test]
    fn two_readers_seeing_two_writes_in_opposite_orders_is_not_sequentially_consistent() {
        let h = history(vec![
            op(0, "write", "x", json!(1), 0),
            op(1, "write", "x", json!(2), 0),
            op(2, "read", "x", json!(1), 10),
            op(2, "read", "x", json!(2), 20),
            op(3, "read", "x", json!(2), 10),
            op(3, "read", "x", json!(1), 20),
        ]);
        let Verdict::NotSequentiallyConsistent(cx) = verdict(&h) else {
            panic!("opposite orders must be rejected");
        };
        assert!(!cx.stuck.is_empty());
        assert!(cx.longest_prefix.len() < 6);
    }

    #[test]
    fn a_process_never_reads_its_own_write_back_in_time() {
        let h = history(vec![
            op(0, "write", "x", json!(1), 0),
            op(0, "read", "x", Json::Null, 10),
        ]);
        assert!(matches!(verdict(&h), Verdict::NotSequentiallyConsistent(_)));
    }

    /// Dekker's pattern: each key alone is fine, the whole history is not. The search must
    /// treat the keys as one object.
    #[test]
    fn keys_are_not_checked_apart() {
        let h = history(vec![
            op(0, "write", "x", json!(1), 0),
            op(0, "read", "y", Json::Null, 10),
            op(1, "write", "y", json!(1), 0),
            op(1, "read", "x", Json::Null, 10),
        ]);
        assert!(matches!(verdict(&h), Verdict::NotSequentiallyConsistent(_)));
        let report = check(&h, &RegisterModel, None).unwrap();
        assert_eq!(
            (report.keys, report.processes, report.operations),
            (2, 2, 4)
        );
    }

    #[test]
    fn unknown_operations_may_take_effect_at_any_later_point_or_never() {
        let info_write = [
            event(0, Invoke, "write", "x", json!(7), 0),
            event(0, Info, "write", "x", json!(7), 5),
        ];
        let seen_late = history(vec![
            info_write.clone(),
            op(1, "read", "x", Json::Null, 10),
            op(1, "read", "x", json!(7), 20),
        ]);
        assert_eq!(verdict(&seen_late), Verdict::SequentiallyConsistent);
        let never = history(vec![info_write.clone(), op(1, "read", "x", Json::Null, 10)]);
        assert_eq!(verdict(&never), Verdict::SequentiallyConsistent);
        // Once seen, the unknown write cannot be undone.
        let flicker = history(vec![
            info_write,
            op(1, "read", "x", json!(7), 10),
            op(1, "read", "x", Json::Null, 20),
        ]);
        assert!(matches!(
            verdict(&flicker),
            Verdict::NotSequentiallyConsistent(_)
        ));
    }

    #[test]
    fn an_unknown_operation_comes_after_its_process_s_earlier_ones() {
        // Process 0 reads 1 and then writes 2 with an unknown outcome; process 1 reads 2 before
        // 1 was ever written: the unknown write cannot move before its process's read.
        let mut events: Vec<Op> = Vec::new();
        events.extend(op(1, "read", "x", json!(2), 0));
        events.extend(op(1, "write", "x", json!(1), 10));
        events.extend(op(0, "read", "x", json!(1), 20));
        events.push(event(0, Invoke, "write", "x", json!(2), 30));
        events.push(event(0, Info, "write", "x", json!(2), 31));
        assert!(matches!(
            verdict(&History { events }),
            Verdict::NotSequentiallyConsistent(_)
        ));
    }

    /// Regression: with the processes tried in index order, a linearizable simulator history
    /// (`concord sim --seed 2`, six unknown writes) exhausted a 20 s budget. Trying operations
    /// by invocation time, unknown ones last, walks straight to an order.
    #[test]
    fn unknown_writes_nobody_read_do_not_make_the_search_explode() {
        let mut events: Vec<Op> = Vec::new();
        for u in 0..12u64 {
            events.push(event(10 + u, Invoke, "write", "x", json!(100 + u), u));
            events.push(event(10 + u, Info, "write", "x", json!(100 + u), u + 1));
        }
        let mut ops = Vec::new();
        for i in 0..20u64 {
            for process in 0..3u64 {
                let time = 100 + (i * 3 + process) * 10;
                let value = json!(i * 3 + process);
                ops.push(if process == 0 {
                    op(process, "write", "x", value, time)
                } else {
                    op(process, "read", "x", json!(i * 3), time)
                });
            }
        }
        events.extend(ops.into_iter().flatten());
        let report = check(&History { events }, &RegisterModel, None).unwrap();
        assert_eq!(report.verdict, Verdict::SequentiallyConsistent);
        assert_eq!(
            report.configurations, 61,
            "one configuration per placed operation"
        );
    }

    #[test]
    fn an_exhausted_budget_gives_unknown() {
        // Eight writers and a read of a value nobody wrote: every interleaving must be tried.
        let mut ops: Vec<[Op; 2]> = (0..8)
            .flat_map(|p| (0..3).map(move |i| op(p, "write", "x", json!(p * 10 + i), i * 10)))
            .collect();
        ops.push(op(9, "read", "x", json!(-1), 100));
        let report = check(&history(ops), &RegisterModel, Some(Duration::ZERO)).unwrap();
        assert!(matches!(report.verdict, Verdict::Unknown { .. }));
    }
}
