//! Linearizability checking (Herlihy & Wing 1990) by the Wing–Gong search with Lowe's
//! memoization (Lowe 2017, "Testing for linearizability"), as Porcupine does it:
//!
//! * the history is split per key and each key is checked alone (P-compositionality:
//!   a history is linearizable iff each object's sub-history is), in parallel;
//! * the search linearizes one pending call at a time, backtracking on a dead end, and
//!   caches every (set of linearized operations, model state) it has reached so no
//!   configuration is explored twice;
//! * operations whose outcome is unknown (`info`, or never completed) stay open to the end
//!   of the history and may take effect at any point after their invocation;
//! * a time budget turns an unfinished search into [`Verdict::Unknown`], never a wrong answer.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value as Json;

use crate::history::{EventType, History, Op};
use crate::model::Model;

/// One operation: an invocation matched with its completion.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Operation {
    /// Position of the invocation in the history.
    pub index: usize,
    /// The process that ran it.
    pub process: u64,
    /// The function.
    pub f: String,
    /// The key (`None` for single-object histories).
    pub key: Option<String>,
    /// The argument.
    pub input: Json,
    /// The observed result; `None` when the outcome is unknown.
    pub output: Option<Json>,
    /// Invocation time.
    pub call: u64,
    /// Completion time; `u64::MAX` when the outcome is unknown.
    pub ret: u64,
}

/// The answer of a check.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// Some total order of the operations respects real time and the model.
    Linearizable,
    /// No such order exists.
    NotLinearizable(Counterexample),
    /// The budget ran out before an answer.
    Unknown {
        /// Why.
        reason: String,
    },
}

/// Why a history is not linearizable: the smallest failing part and where the search stuck.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Counterexample {
    /// The key whose sub-history fails (`None` for single-object histories).
    pub key: Option<String>,
    /// The operations of that key, in invocation order.
    pub operations: Vec<Operation>,
    /// The longest linearizable prefix found: operations in the order they were linearized.
    pub longest_prefix: Vec<Operation>,
    /// Operations that could not be placed after that prefix (the ones pending then).
    pub stuck: Vec<Operation>,
}

/// The result of checking a whole history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// How many keys (independent parts) were checked.
    pub parts: usize,
    /// How many operations were considered (failed ones are left out).
    pub operations: usize,
    /// When the verdict is [`Verdict::Linearizable`]: every operation, as the history index of
    /// its invocation ([`Operation::index`]), in the order the search linearized it, key by key
    /// (keys in order). Empty otherwise. Not serialized.
    #[serde(skip)]
    pub linearization: Vec<usize>,
}

/// A history that does not form well-nested per-process operations.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MalformedHistory {
    /// A process invoked an operation while another of its operations was still open.
    #[error("event {index}: process {process} invokes while its operation from event {open} is still open")]
    OverlappingInvoke {
        /// The event.
        index: usize,
        /// The process.
        process: u64,
        /// The open invocation.
        open: usize,
    },
    /// A completion with no open invocation.
    #[error("event {index}: process {process} completes an operation it never invoked")]
    UnmatchedCompletion {
        /// The event.
        index: usize,
        /// The process.
        process: u64,
    },
}

/// Pairs invocations with completions. `fail` operations are dropped (they did not happen).
pub fn operations(history: &History) -> Result<Vec<Operation>, MalformedHistory> {
    let mut open: BTreeMap<u64, usize> = BTreeMap::new();
    let mut operations: Vec<Option<Operation>> = Vec::new();
    let mut slot_of: BTreeMap<usize, usize> = BTreeMap::new();
    for (index, event) in history.events.iter().enumerate() {
        match event.kind {
            EventType::Invoke => {
                if let Some(&previous) = open.get(&event.process) {
                    return Err(MalformedHistory::OverlappingInvoke {
                        index,
                        process: event.process,
                        open: previous,
                    });
                }
                open.insert(event.process, index);
                slot_of.insert(index, operations.len());
                operations.push(Some(pending(index, event)));
            }
            EventType::Ok | EventType::Fail | EventType::Info => {
                let Some(invoke) = open.remove(&event.process) else {
                    return Err(MalformedHistory::UnmatchedCompletion {
                        index,
                        process: event.process,
                    });
                };
                let slot = slot_of[&invoke];
                match event.kind {
                    EventType::Ok => {
                        let op = operations[slot]
                            .as_mut()
                            .expect("open operations are present");
                        op.output = Some(event.value.clone());
                        op.ret = event.time.max(op.call);
                    }
                    EventType::Fail => operations[slot] = None,
                    _ => {}
                }
            }
        }
    }
    Ok(operations.into_iter().flatten().collect())
}

fn pending(index: usize, event: &Op) -> Operation {
    Operation {
        index,
        process: event.process,
        f: event.f.clone(),
        key: event.key.clone(),
        input: event.value.clone(),
        output: None,
        call: event.time,
        ret: u64::MAX,
    }
}

/// Checks `history` against `model`, per key, giving up after `budget`. A linearizable
/// history's report carries the order found ([`Report::linearization`]).
pub fn check<M: Model>(
    history: &History,
    model: &M,
    budget: Option<Duration>,
) -> Result<Report, MalformedHistory> {
    let operations = operations(history)?;
    let count = operations.len();
    let mut parts: BTreeMap<Option<String>, Vec<Operation>> = BTreeMap::new();
    for op in operations {
        parts.entry(op.key.clone()).or_default().push(op);
    }
    #[allow(clippy::disallowed_methods)] // the checker is not a sans-IO core; budgets are wall time
    let deadline = budget.map(|b| Instant::now() + b);
    let parts: Vec<(Option<String>, Vec<Operation>)> = parts.into_iter().collect();
    // Workers take parts one at a time; the first part found not linearizable stops the rest
    // (its verdict decides the whole history), as Porcupine does.
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(parts.len().max(1));
    let mut checked: Vec<(usize, Verdict, Vec<usize>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (parts, next, stop) = (&parts, &next, &stop);
                scope.spawn(move || {
                    let mut verdicts = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let part = next.fetch_add(1, Ordering::Relaxed);
                        let Some((key, ops)) = parts.get(part) else {
                            break;
                        };
                        let (verdict, order) = check_part(model, key.clone(), ops, deadline, stop);
                        if matches!(verdict, Verdict::NotLinearizable(_)) {
                            stop.store(true, Ordering::Relaxed);
                        }
                        let order: Vec<usize> = order.iter().map(|&i| ops[i].index).collect();
                        verdicts.push((part, verdict, order));
                    }
                    verdicts
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("checker threads do not panic"))
            .collect()
    });
    checked.sort_by_key(|(part, _, _)| *part);
    let mut linearization = Vec::new();
    let mut verdicts = Vec::new();
    for (_, verdict, order) in checked {
        linearization.extend(order);
        verdicts.push(verdict);
    }
    // Among several failing parts, report the one with the fewest operations.
    verdicts.sort_by_key(|v| match v {
        Verdict::NotLinearizable(c) => c.operations.len(),
        _ => usize::MAX,
    });
    let verdict = verdicts
        .iter()
        .find(|v| matches!(v, Verdict::NotLinearizable(_)))
        .or_else(|| {
            verdicts
                .iter()
                .find(|v| matches!(v, Verdict::Unknown { .. }))
        })
        .cloned()
        .unwrap_or(Verdict::Linearizable);
    if verdict != Verdict::Linearizable {
        linearization.clear();
    }
    Ok(Report {
        verdict,
        parts: parts.len(),
        operations: count,
        linearization,
    })
}

/// One node of the doubly linked list of call and return events.
#[derive(Clone, Copy, Debug)]
struct Entry {
    operation: usize,
    is_call: bool,
    /// For a call: the index of its return entry.
    matching: usize,
    previous: usize,
    next: usize,
}

const NONE: usize = usize::MAX;

/// The linked event list the search lifts operations out of and puts back into.
struct Events {
    entries: Vec<Entry>,
    head: usize,
}

impl Events {
    fn new(ops: &[Operation]) -> Events {
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            order.push((op.call, false, i));
            order.push((op.ret, true, i));
        }
        // Calls before returns at equal times: operations that touch are concurrent.
        order.sort_unstable();
        let mut entries = Vec::with_capacity(order.len());
        let mut call_at = vec![NONE; ops.len()];
        for (position, &(_, is_return, operation)) in order.iter().enumerate() {
            entries.push(Entry {
                operation,
                is_call: !is_return,
                matching: NONE,
                previous: if position == 0 { NONE } else { position - 1 },
                next: if position + 1 == order.len() {
                    NONE
                } else {
                    position + 1
                },
            });
            if is_return {
                entries[call_at[operation]].matching = position;
            } else {
                call_at[operation] = position;
            }
        }
        Events {
            head: if entries.is_empty() { NONE } else { 0 },
            entries,
        }
    }

    fn unlink(&mut self, at: usize) {
        let Entry { previous, next, .. } = self.entries[at];
        if previous == NONE {
            self.head = next;
        } else {
            self.entries[previous].next = next;
        }
        if next != NONE {
            self.entries[next].previous = previous;
        }
    }

    fn relink(&mut self, at: usize) {
        let Entry { previous, next, .. } = self.entries[at];
        if previous == NONE {
            self.head = at;
        } else {
            self.entries[previous].next = at;
        }
        if next != NONE {
            self.entries[next].previous = at;
        }
    }

    /// Removes a call and its return (the operation is linearized).
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.entries[call].matching);
    }

    /// Undoes [`Events::lift`].
    fn unlift(&mut self, call: usize) {
        self.relink(self.entries[call].matching);
        self.relink(call);
    }
}

/// The search's memo of (linearized operations, model state) pairs already explored. Lookups
/// borrow the search's own bitset and state, so a pair is copied only when it is new; the
/// hasher is foldhash (the cache is the search's hot path; SipHash's flooding resistance buys
/// nothing here).
struct Cache<S> {
    seen: hashbrown::HashSet<(Bits, S), foldhash::fast::FixedState>,
}

/// A set of linearized operations. Up to 128 operations it lives inside the cache's table, so
/// a probe that finds a candidate compares it without following a pointer (the probe's cache
/// miss is the search's main cost).
type Bits = smallvec::SmallVec<[u64; 2]>;

impl<S> Default for Cache<S> {
    fn default() -> Self {
        Cache {
            seen: hashbrown::HashSet::with_hasher(foldhash::fast::FixedState::default()),
        }
    }
}

/// A borrowed cache key, hashed exactly as the owned `(Bits, S)` is (both hash as a slice).
#[derive(Hash)]
struct KeyRef<'a, S>(&'a [u64], &'a S);

impl<S: Eq> hashbrown::Equivalent<(Bits, S)> for KeyRef<'_, S> {
    fn equivalent(&self, key: &(Bits, S)) -> bool {
        // Word by word: the bitsets are short, and a call into memcmp costs more than the loop.
        self.0.len() == key.0.len()
            && self.0.iter().zip(key.0.iter()).all(|(a, b)| a == b)
            && *self.1 == key.1
    }
}

impl<S: Clone + Eq + std::hash::Hash> Cache<S> {
    /// Records the pair; false when it was already there.
    fn insert(&mut self, linearized: &[u64], state: &S) -> bool {
        let key = KeyRef(linearized, state);
        if self.seen.contains(&key) {
            return false;
        }
        self.seen
            .insert((Bits::from_slice(linearized), state.clone()));
        true
    }
}

fn check_part<M: Model>(
    model: &M,
    key: Option<String>,
    ops: &[Operation],
    deadline: Option<Instant>,
    stop: &AtomicBool,
) -> (Verdict, Vec<usize>) {
    let mut events = Events::new(ops);
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: Cache<M::State> = Cache::default();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut state = model.init();
    let mut entry = events.head;
    let mut longest: Vec<usize> = Vec::new();
    let mut steps: u64 = 0;
    while events.head != NONE {
        steps += 1;
        #[allow(clippy::disallowed_methods)]
        if steps.is_multiple_of(4096) {
            if deadline.is_some_and(|d| Instant::now() > d) {
                let reason = format!("time budget exhausted on key {key:?}");
                return (Verdict::Unknown { reason }, Vec::new());
            }
            if stop.load(Ordering::Relaxed) {
                let reason = "another part is not linearizable".into();
                return (Verdict::Unknown { reason }, Vec::new());
            }
        }
        let current = events.entries[entry];
        if current.is_call {
            let op = &ops[current.operation];
            if let Some(next) = model.step(&state, &op.f, &op.input, op.output.as_ref()) {
                let (word, bit) = (current.operation / 64, 1 << (current.operation % 64));
                linearized[word] |= bit;
                let fresh = cache.insert(&linearized, &next);
                if !fresh {
                    linearized[word] &= !bit;
                } else {
                    stack.push((entry, state));
                    state = next;
                    events.lift(entry);
                    entry = events.head;
                    continue;
                }
            }
            entry = current.next;
        } else {
            // A return reached with its call not linearized: backtrack. The stack is longest
            // just before its first pop after growing, so the longest prefix is taken here
            // (taking it at every push made linearizable parts quadratic).
            if stack.len() > longest.len() {
                longest = stack
                    .iter()
                    .map(|(e, _)| events.entries[*e].operation)
                    .collect();
            }
            let Some((call, previous_state)) = stack.pop() else {
                let counterexample = counterexample(key, ops, &longest);
                return (Verdict::NotLinearizable(counterexample), Vec::new());
            };
            state = previous_state;
            let operation = events.entries[call].operation;
            linearized[operation / 64] &= !(1 << (operation % 64));
            events.unlift(call);
            entry = events.entries[call].next;
        }
    }
    let order = stack
        .iter()
        .map(|(e, _)| events.entries[*e].operation)
        .collect();
    (Verdict::Linearizable, order)
}

fn counterexample(key: Option<String>, ops: &[Operation], longest: &[usize]) -> Counterexample {
    let placed: HashSet<usize> = longest.iter().copied().collect();
    // The operations that could come next: not placed, and invoked before the earliest
    // return among the unplaced ones.
    let earliest_return = ops
        .iter()
        .enumerate()
        .filter(|(i, _)| !placed.contains(i))
        .map(|(_, o)| o.ret)
        .min();
    let stuck = ops
        .iter()
        .enumerate()
        .filter(|(i, o)| !placed.contains(i) && Some(o.call) <= earliest_return)
        .map(|(_, o)| o.clone())
        .collect();
    Counterexample {
        key,
        operations: ops.to_vec(),
        longest_prefix: longest.iter().map(|&i| ops[i].clone()).collect(),
        stuck,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RegisterModel;
    use serde_json::json;

    fn event(process: u64, kind: EventType, f: &str, value: Json, time: u64) -> Op {
        Op {
            process,
            kind,
            f: f.into(),
            key: Some("x".into()),
            value,
            time,
        }
    }

    fn history(events: Vec<Op>) -> History {
        History { events }
    }

    use EventType::{Info, Invoke, Ok as Done};

    #[test]
    fn sequential_history_is_linearizable() {
        let h = history(vec![
            event(0, Invoke, "write", json!(1), 0),
            event(0, Done, "write", json!(1), 10),
            event(1, Invoke, "read", Json::Null, 20),
            event(1, Done, "read", json!(1), 30),
        ]);
        assert_eq!(
            check(&h, &RegisterModel, None).unwrap().verdict,
            Verdict::Linearizable
        );
    }

    #[test]
    fn stale_read_after_write_completes_is_not_linearizable() {
        let h = history(vec![
            event(0, Invoke, "write", json!(1), 0),
            event(0, Done, "write", json!(1), 10),
            event(0, Invoke, "write", json!(2), 20),
            event(0, Done, "write", json!(2), 30),
            event(1, Invoke, "read", Json::Null, 40),
            event(1, Done, "read", json!(1), 50),
        ]);
        let Verdict::NotLinearizable(cx) = check(&h, &RegisterModel, None).unwrap().verdict else {
            panic!("a stale read must be caught");
        };
        assert_eq!(cx.key.as_deref(), Some("x"));
        assert_eq!(cx.longest_prefix.len(), 2);
        assert_eq!(cx.stuck[0].f, "read");
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        let h = history(vec![
            event(0, Invoke, "write", json!(1), 0),
            event(1, Invoke, "read", Json::Null, 1),
            event(1, Done, "read", json!(1), 5),
            event(0, Done, "write", json!(1), 10),
            event(2, Invoke, "read", Json::Null, 11),
            event(2, Done, "read", json!(1), 12),
        ]);
        assert_eq!(
            check(&h, &RegisterModel, None).unwrap().verdict,
            Verdict::Linearizable
        );
    }

    #[test]
    fn unknown_writes_may_take_effect_late() {
        let h = history(vec![
            event(0, Invoke, "write", json!(7), 0),
            event(0, Info, "write", json!(7), 5),
            event(1, Invoke, "read", Json::Null, 100),
            event(1, Done, "read", Json::Null, 110),
            event(1, Invoke, "read", Json::Null, 200),
            event(1, Done, "read", json!(7), 210),
        ]);
        assert_eq!(
            check(&h, &RegisterModel, None).unwrap().verdict,
            Verdict::Linearizable
        );
    }

    #[test]
    fn overlapping_invocations_are_malformed() {
        let h = history(vec![
            event(0, Invoke, "write", json!(1), 0),
            event(0, Invoke, "write", json!(2), 1),
        ]);
        assert!(matches!(
            check(&h, &RegisterModel, None),
            Err(MalformedHistory::OverlappingInvoke { .. })
        ));
    }
}
