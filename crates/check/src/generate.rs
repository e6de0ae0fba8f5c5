//! Seeded generators of linearizable histories, for benchmarks and tests.
//!
//! [`register_history`] runs concurrent clients against an in-memory key-value register
//! (`read`, `write`, `cas`, the [`RegisterModel`](crate::model::RegisterModel) operations): every
//! operation takes effect at one instant between its invocation and its completion, so the
//! history is linearizable by construction. One seed always gives the same history.
//! [`unique_register_history`] does the same with every written value new.
//! [`serial_txn_history`] runs transactions one at a time against a list or register store.

use std::collections::BTreeMap;

use serde_json::{json, Value as Json};

use crate::history::{EventType, History, Op};
use crate::txn::Workload;

/// The shape of a generated register history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterWorkload {
    /// How many operations to invoke (all complete `ok`, or `fail` for a cas that did not match).
    pub operations: usize,
    /// How many keys they spread over, uniformly (`key` is omitted when there is one).
    pub keys: usize,
    /// How many client processes run concurrently, each one operation at a time.
    pub processes: usize,
    /// Written values are drawn from `0..values`: fewer values, more equal states.
    pub values: u64,
    /// The seed.
    pub seed: u64,
}

/// SplitMix64 (Steele, Lea & Flood 2014): a small, fast, seeded generator.
#[derive(Debug)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// Where a process is in its current operation.
#[derive(Debug)]
enum Phase {
    Idle,
    /// Invoked, not yet taken effect: the invocation event's index.
    Invoked(usize),
    /// Taken effect: the invocation event's index, the completion type and value.
    Applied(usize, EventType, Json),
}

/// A linearizable history of `workload.operations` register operations.
///
/// At each step one random process moves: an idle process invokes a random operation on a
/// random key, an invoked one takes effect, an applied one completes. Reads are 50 % of the
/// operations, writes 30 %, cas 20 %; a cas whose expected value does not match completes
/// `fail`. Times are 1, 2, 3, … (one per step).
pub fn register_history(workload: &RegisterWorkload) -> History {
    run(workload, false)
}

/// Like [`register_history`], but every written value is new: a `write` writes the number of
/// operations invoked before it plus one, and a `cas` sets that number from the key's value at
/// invocation (half the time; otherwise from a random earlier number, so it most likely fails).
/// `workload.values` is not used. Such histories suit the checks that need unique values
/// ([`crate::session`], [`crate::causal`]).
pub fn unique_register_history(workload: &RegisterWorkload) -> History {
    run(workload, true)
}

fn run(workload: &RegisterWorkload, unique: bool) -> History {
    let mut random = SplitMix(workload.seed);
    let keys: Vec<String> = (0..workload.keys).map(|k| k.to_string()).collect();
    let values = workload.values.max(1);
    let mut registers: BTreeMap<usize, Json> = BTreeMap::new();
    let mut phases: Vec<Phase> = (0..workload.processes).map(|_| Phase::Idle).collect();
    let mut busy = 0;
    let mut invoked = 0;
    let mut history = History::default();
    history.events.reserve(workload.operations * 2);
    let mut time = 0;
    while invoked < workload.operations || busy > 0 {
        time += 1;
        let process = random.below(phases.len() as u64) as usize;
        phases[process] = match std::mem::replace(&mut phases[process], Phase::Idle) {
            Phase::Idle if invoked < workload.operations => {
                let key = (!keys.is_empty()).then(|| random.below(keys.len() as u64) as usize);
                let fresh = invoked as u64 + 1;
                let (f, value) = match random.below(10) {
                    0..=4 => ("read", Json::Null),
                    5..=7 if unique => ("write", json!(fresh)),
                    5..=7 => ("write", json!(random.below(values))),
                    _ if unique => {
                        let from = match random.below(2) {
                            0 => registers
                                .get(&key.unwrap_or(0))
                                .cloned()
                                .unwrap_or(Json::Null),
                            _ => json!(random.below(fresh)),
                        };
                        ("cas", json!([from, fresh]))
                    }
                    _ => ("cas", json!([random.below(values), random.below(values)])),
                };
                invoked += 1;
                busy += 1;
                history.push(Op {
                    process: process as u64,
                    kind: EventType::Invoke,
                    f: f.into(),
                    key: key.filter(|_| keys.len() > 1).map(|k| keys[k].clone()),
                    value,
                    time,
                });
                Phase::Invoked(history.events.len() - 1)
            }
            Phase::Idle => Phase::Idle,
            Phase::Invoked(at) => {
                let event = &history.events[at];
                let key = event.key.as_ref().and_then(|k| k.parse().ok()).unwrap_or(0);
                let register = registers.entry(key).or_insert(Json::Null);
                let (kind, output) = match event.f.as_str() {
                    "read" => (EventType::Ok, register.clone()),
                    "write" => {
                        *register = event.value.clone();
                        (EventType::Ok, event.value.clone())
                    }
                    _ if *register == event.value[0] => {
                        *register = event.value[1].clone();
                        (EventType::Ok, event.value.clone())
                    }
                    _ => (EventType::Fail, event.value.clone()),
                };
                Phase::Applied(at, kind, output)
            }
            Phase::Applied(at, kind, value) => {
                busy -= 1;
                let invocation = &history.events[at];
                let completion = Op {
                    kind,
                    value,
                    time,
                    ..invocation.clone()
                };
                history.push(completion);
                Phase::Idle
            }
        };
    }
    history
}

/// A random serial execution of `txns` transactions of `workload` against a real store: each
/// transaction runs alone, so a transactional check must report no anomaly. Some transactions
/// fail (and change nothing) and some end unknown (and may or may not have taken effect).
/// Keys rotate as in Jepsen's workloads. One seed always gives the same history.
pub fn serial_txn_history(workload: Workload, seed: u64, txns: usize) -> History {
    let mut rng = SplitMix(seed);
    let mut lists: Vec<Vec<i64>> = vec![Vec::new(); 6];
    let mut registers: Vec<Option<i64>> = vec![None; 6];
    let mut next = 1i64;
    let mut next_process = 8u64;
    let mut h = TxnBuilder::default();
    for index in 0..txns {
        // Keys rotate as in Jepsen's workloads: each is used by about 60 transactions.
        if index % 10 == 9 {
            lists.push(Vec::new());
            registers.push(None);
        }
        // The transaction's writes, applied to the store only if it commits.
        let mut writes: Vec<(usize, i64)> = Vec::new();
        let ops: Vec<Json> = (0..1 + rng.below(4))
            .map(|_| {
                let key = lists.len() - 6 + rng.below(6) as usize;
                let mut own = writes.iter().filter(|(k, _)| *k == key).map(|(_, v)| *v);
                if rng.below(2) == 0 {
                    next += 1;
                    writes.push((key, next));
                    match workload {
                        Workload::ListAppend => json!(["append", key, next]),
                        Workload::RwRegister => json!(["w", key, next]),
                    }
                } else {
                    match workload {
                        Workload::ListAppend => {
                            let list: Vec<i64> = lists[key].iter().copied().chain(own).collect();
                            json!(["r", key, list])
                        }
                        Workload::RwRegister => {
                            json!(["r", key, own.next_back().or(registers[key])])
                        }
                    }
                }
            })
            .collect();
        let ops = Json::Array(ops);
        let process = rng.below(4);
        let fate = rng.below(100);
        let commit = if fate < 10 {
            h.invoke(process, ops.clone()).fail(process, ops);
            false
        } else if fate < 15 {
            // unknown outcome: a fresh process, as Jepsen's clients do
            next_process += 1;
            h.invoke(next_process, ops.clone())
                .event(next_process, EventType::Info, ops);
            rng.below(2) == 0
        } else {
            h.txn(process, ops);
            true
        };
        if commit {
            for (key, value) in writes {
                lists[key].push(value);
                registers[key] = Some(value);
            }
        }
    }
    h.history
}

/// Builds transactional histories (`f` = `txn`), an event at a time, each at the next instant.
#[derive(Debug, Default)]
pub struct TxnBuilder {
    /// The history built so far.
    pub history: History,
}

impl TxnBuilder {
    /// Appends an event of `process` with `value` (its micro-operations).
    pub fn event(&mut self, process: u64, kind: EventType, value: Json) -> &mut Self {
        let time = self.history.events.len() as u64 + 1;
        self.history.push(Op {
            process,
            kind,
            f: "txn".into(),
            key: None,
            value,
            time,
        });
        self
    }

    /// The invocation of `ops`: the same micro-operations with reads blanked.
    pub fn invoke(&mut self, process: u64, ops: Json) -> &mut Self {
        let blank: Vec<Json> = ops
            .as_array()
            .map(|ops| {
                ops.iter()
                    .map(|op| match op.as_array().map(Vec::as_slice) {
                        Some([f, k, _]) if f == "r" => json!([f, k, null]),
                        _ => op.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.event(process, EventType::Invoke, Json::Array(blank))
    }

    /// A completion: `ops` with what the reads returned.
    pub fn ok(&mut self, process: u64, ops: Json) -> &mut Self {
        self.event(process, EventType::Ok, ops)
    }

    /// A failed completion: the transaction did not happen.
    pub fn fail(&mut self, process: u64, ops: Json) -> &mut Self {
        self.event(process, EventType::Fail, ops)
    }

    /// A whole transaction that commits, invoked and completed at once.
    pub fn txn(&mut self, process: u64, ops: Json) -> &mut Self {
        self.invoke(process, ops.clone()).ok(process, ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linearizability::{check, Verdict};
    use crate::model::RegisterModel;

    #[test]
    fn generated_histories_are_linearizable_and_seeded() {
        let workload = RegisterWorkload {
            operations: 2_000,
            keys: 20,
            processes: 16,
            values: 5,
            seed: 3,
        };
        let history = register_history(&workload);
        assert_eq!(history, register_history(&workload));
        let invocations = history
            .events
            .iter()
            .filter(|e| e.kind == EventType::Invoke)
            .count();
        assert_eq!(invocations, 2_000);
        assert_eq!(history.events.len(), 4_000);
        let report = check(&history, &RegisterModel, None).unwrap();
        assert_eq!(report.verdict, Verdict::Linearizable);
        assert_eq!(report.parts, 20);
    }

    #[test]
    fn unique_histories_write_every_value_once_and_are_causally_consistent() {
        let workload = RegisterWorkload {
            operations: 3_000,
            keys: 10,
            processes: 12,
            values: 0,
            seed: 5,
        };
        let history = unique_register_history(&workload);
        let report = check(&history, &RegisterModel, None).unwrap();
        assert_eq!(report.verdict, Verdict::Linearizable);
        let mut written = std::collections::HashSet::new();
        let mut cas_ok = 0;
        for event in history.events.iter().filter(|e| e.kind == EventType::Ok) {
            match event.f.as_str() {
                "write" => assert!(written.insert(event.value.clone())),
                "cas" => {
                    cas_ok += 1;
                    assert!(written.insert(event.value[1].clone()));
                }
                _ => {}
            }
        }
        assert!(cas_ok > 50, "{cas_ok} cas succeeded");
        let causal = crate::causal::check(&history).unwrap();
        assert_eq!(causal.verdict, crate::causal::Verdict::Consistent);
        assert_eq!(causal.convergence, crate::causal::Verdict::Consistent);
        assert_eq!(causal.reads_ambiguous, 0);
        assert!(causal.reads_checked > 1_000);
    }
}
