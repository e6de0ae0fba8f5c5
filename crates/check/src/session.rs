//! Causal consistency through the four session guarantees of Terry et al. 1994 ("Session
//! guarantees for weakly consistent replicated data"), for register and key-value histories
//! whose written values are unique per key:
//!
//! * read your writes: a process never reads a value older than its own last write of the key;
//! * monotonic reads: a process's successive reads of a key never go back to an older value;
//! * monotonic writes: a process that reads a write `w2` of another process never afterwards
//!   reads, on any key, a value older than a write that process made before `w2`;
//! * writes follow reads: a process that reads a write `w` of another process never afterwards
//!   reads, on any key, a value older than one that process had read before it wrote `w`.
//!
//! Because values are unique, a read names the write it observed. "Older" is the version order
//! of a key, known only in part: the initial value (`null`) is older than every write, and a
//! write that completed before another was invoked is older than it (real-time order of writes
//! that do not overlap). Writes that overlap are never called older, so the checker reports
//! only violations that hold whatever order the store chose for them. The exact rules and their
//! limits are in `docs/checkers.md`.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::history::History;
use crate::linearizability::{operations, MalformedHistory, Operation};
use crate::registers::{Index, Observed, Role, Version};

/// One of the four session guarantees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    /// A process sees its own writes.
    ReadYourWrites,
    /// A process's reads of a key never go back in time.
    MonotonicReads,
    /// A process's writes are seen in the order it made them.
    MonotonicWrites,
    /// A write is seen only with the writes its process had read before making it.
    WritesFollowReads,
}

impl Guarantee {
    /// The guarantee's name, as in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Guarantee::ReadYourWrites => "read-your-writes",
            Guarantee::MonotonicReads => "monotonic-reads",
            Guarantee::MonotonicWrites => "monotonic-writes",
            Guarantee::WritesFollowReads => "writes-follow-reads",
        }
    }
}

/// A read that returned a value older than a guarantee allows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Violation {
    /// The guarantee broken.
    pub guarantee: Guarantee,
    /// The process that read.
    pub process: u64,
    /// The read.
    pub read: Operation,
    /// The write whose value it returned; `None`: the initial value.
    pub observed: Option<Operation>,
    /// The write the read should not have gone behind.
    pub required: Operation,
    /// The operations, in order, that made `required` binding on this process: its own write
    /// (read your writes), its earlier read (monotonic reads), or the other process's earlier
    /// write (monotonic writes) or read (writes follow reads), that process's later write, and
    /// this process's read of it.
    pub because: Vec<Operation>,
}

/// The verdict of the session check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// No read breaks a guarantee, and every read returned a value some write wrote.
    Consistent,
    /// Some read breaks a guarantee, or returned a value nobody wrote.
    Violated,
}

/// The result of checking a whole history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The verdict.
    pub verdict: Verdict,
    /// Every violation, by process and then in the process's order.
    pub violations: Vec<Violation>,
    /// Reads that returned a value no write (completed or unknown) of their key wrote.
    pub unwritten_reads: Vec<Operation>,
    /// How many reads were checked.
    pub reads_checked: usize,
    /// Reads left out: their value was written more than once to the key, so the write they
    /// observed is not known.
    pub reads_ambiguous: usize,
    /// Reads left out: their key is also changed by an operation this check does not model
    /// (such as `append`), so their value need not be one write's.
    pub reads_unsupported: usize,
    /// Operations left out: not a `read`/`get`, `write`/`put` or `cas`.
    pub operations_ignored: usize,
    /// How many operations were considered (failed ones are left out).
    pub operations: usize,
}

/// A lower bound on what a process may read of a key, and why.
#[derive(Clone, Debug)]
struct Floor {
    write: usize,
    guarantee: Guarantee,
    because: Vec<usize>,
}

/// Is `version` known to be older than the write `write` of the same key?
fn older(index: &Index, version: Version, write: usize) -> bool {
    match version {
        Version::Initial => true,
        Version::Write(other) => index.ops[other].ret < index.ops[write].call,
    }
}

/// Adds `floor` unless one of the same guarantee already demands as much; drops those it
/// supersedes.
fn raise(floors: &mut Vec<Floor>, floor: Floor, index: &Index) {
    if floors.iter().any(|f| {
        f.guarantee == floor.guarantee
            && (f.write == floor.write || older(index, Version::Write(floor.write), f.write))
    }) {
        return;
    }
    floors.retain(|f| {
        f.guarantee != floor.guarantee || !older(index, Version::Write(f.write), floor.write)
    });
    floors.push(floor);
}

type Floors = BTreeMap<Option<String>, Vec<Floor>>;

/// Per write: what its process had written and read before it, as floors for whoever reads it.
fn dependencies(index: &Index, by_process: &BTreeMap<u64, Vec<usize>>) -> HashMap<usize, Floors> {
    let mut dependencies = HashMap::new();
    for ops in by_process.values() {
        let mut past: Floors = BTreeMap::new();
        for &i in ops {
            let key = index.ops[i].key.clone();
            match &index.roles[i] {
                Role::Write(_) => {
                    dependencies.insert(i, past.clone());
                    let floor = Floor {
                        write: i,
                        guarantee: Guarantee::MonotonicWrites,
                        because: vec![i],
                    };
                    raise(past.entry(key).or_default(), floor, index);
                }
                Role::Read(value) => {
                    if let Observed::Version(Version::Write(write)) = index.observed(i, value) {
                        let floor = Floor {
                            write,
                            guarantee: Guarantee::WritesFollowReads,
                            because: vec![i],
                        };
                        raise(past.entry(key).or_default(), floor, index);
                    }
                }
                Role::Ignored => {}
            }
        }
    }
    dependencies
}

/// Checks the session guarantees of a register or key-value history.
pub fn check(history: &History) -> Result<Report, MalformedHistory> {
    let index = Index::new(operations(history)?);
    let mut by_process: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, op) in index.ops.iter().enumerate() {
        by_process.entry(op.process).or_default().push(i);
    }
    let dependencies = dependencies(&index, &by_process);
    let mut report = Report {
        verdict: Verdict::Consistent,
        violations: Vec::new(),
        unwritten_reads: Vec::new(),
        reads_checked: 0,
        reads_ambiguous: 0,
        reads_unsupported: 0,
        operations_ignored: index.ignored(),
        operations: index.ops.len(),
    };
    for (&process, ops) in &by_process {
        let mut floors: Floors = BTreeMap::new();
        for &i in ops {
            let key = index.ops[i].key.clone();
            match &index.roles[i] {
                Role::Write(_) => {
                    let floor = Floor {
                        write: i,
                        guarantee: Guarantee::ReadYourWrites,
                        because: vec![i],
                    };
                    raise(floors.entry(key).or_default(), floor, &index);
                }
                Role::Read(value) => {
                    let version = match index.observed(i, value) {
                        Observed::Version(version) => version,
                        Observed::Unsupported => {
                            report.reads_unsupported += 1;
                            continue;
                        }
                        Observed::Ambiguous => {
                            report.reads_ambiguous += 1;
                            continue;
                        }
                        Observed::Unwritten => {
                            report.unwritten_reads.push(index.ops[i].clone());
                            continue;
                        }
                    };
                    report.reads_checked += 1;
                    check_read(&index, process, i, version, &floors, &mut report);
                    observe(&index, process, i, version, &dependencies, &mut floors);
                }
                Role::Ignored => {}
            }
        }
    }
    if !report.violations.is_empty() || !report.unwritten_reads.is_empty() {
        report.verdict = Verdict::Violated;
    }
    Ok(report)
}

/// Reports every guarantee the read `read`, which observed `version`, breaks (once each).
fn check_read(
    index: &Index,
    process: u64,
    read: usize,
    version: Version,
    floors: &Floors,
    report: &mut Report,
) {
    let Some(floors) = floors.get(&index.ops[read].key) else {
        return;
    };
    let mut reported: Vec<Guarantee> = Vec::new();
    for floor in floors {
        if reported.contains(&floor.guarantee) || !older(index, version, floor.write) {
            continue;
        }
        reported.push(floor.guarantee);
        report.violations.push(Violation {
            guarantee: floor.guarantee,
            process,
            read: index.ops[read].clone(),
            observed: match version {
                Version::Initial => None,
                Version::Write(w) => Some(index.ops[w].clone()),
            },
            required: index.ops[floor.write].clone(),
            because: floor
                .because
                .iter()
                .map(|&i| index.ops[i].clone())
                .collect(),
        });
    }
}

/// Raises the reader's floors after `read` observed `version`: monotonic reads on its key, and
/// the writer's dependencies when another process wrote it.
fn observe(
    index: &Index,
    process: u64,
    read: usize,
    version: Version,
    dependencies: &HashMap<usize, Floors>,
    floors: &mut Floors,
) {
    let Version::Write(write) = version else {
        return;
    };
    let key = index.ops[read].key.clone();
    let floor = Floor {
        write,
        guarantee: Guarantee::MonotonicReads,
        because: vec![read],
    };
    raise(floors.entry(key).or_default(), floor, index);
    if index.ops[write].process == process {
        return;
    }
    for (key, inherited) in dependencies.get(&write).into_iter().flatten() {
        for floor in inherited {
            let mut because = floor.because.clone();
            because.extend([write, read]);
            let floor = Floor {
                because,
                ..floor.clone()
            };
            raise(floors.entry(key.clone()).or_default(), floor, index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{EventType, Op};
    use serde_json::{json, Value as Json};

    use EventType::{Info, Invoke, Ok as Done};

    /// One operation: `(process, f, key, value, invoked at)`, completed one tick later.
    type Step = (u64, &'static str, &'static str, Json, u64);

    fn history(steps: &[Step]) -> History {
        let mut events: Vec<Op> = Vec::new();
        for (process, f, key, value, time) in steps {
            let input = if *f == "read" {
                Json::Null
            } else {
                value.clone()
            };
            for (kind, value, time) in [(Invoke, input, *time), (Done, value.clone(), time + 1)] {
                events.push(Op {
                    process: *process,
                    kind,
                    f: (*f).into(),
                    key: Some((*key).into()),
                    value,
                    time,
                });
            }
        }
        events.sort_by_key(|e| e.time);
        History { events }
    }

    fn violations(steps: &[Step]) -> Vec<(Guarantee, u64, Json)> {
        let report = check(&history(steps)).unwrap();
        assert_eq!(
            report.verdict == Verdict::Violated,
            !report.violations.is_empty() || !report.unwritten_reads.is_empty()
        );
        report
            .violations
            .iter()
            .map(|v| (v.guarantee, v.process, v.read.output.clone().unwrap()))
            .collect()
    }

    use Guarantee::*;

    #[test]
    fn reading_the_initial_value_after_ones_own_write_breaks_read_your_writes() {
        let found = violations(&[
            (0, "write", "x", json!(1), 0),
            (0, "read", "x", Json::Null, 10),
        ]);
        assert_eq!(found, vec![(ReadYourWrites, 0, Json::Null)]);
    }

    #[test]
    fn reading_an_overwritten_value_after_ones_own_write_breaks_read_your_writes() {
        let found = violations(&[
            (1, "write", "x", json!(1), 0),
            (0, "write", "x", json!(2), 10),
            (0, "read", "x", json!(1), 20),
        ]);
        assert_eq!(found, vec![(ReadYourWrites, 0, json!(1))]);
    }

    #[test]
    fn going_back_to_an_older_value_breaks_monotonic_reads() {
        let steps = [
            (1, "write", "x", json!(1), 0),
            (1, "write", "x", json!(2), 10),
            (0, "read", "x", json!(2), 20),
            (0, "read", "x", json!(1), 30),
        ];
        let report = check(&history(&steps)).unwrap();
        assert_eq!(report.violations.len(), 1);
        let violation = &report.violations[0];
        assert_eq!(
            (violation.guarantee, violation.process),
            (MonotonicReads, 0)
        );
        assert_eq!(violation.required.input, json!(2));
        assert_eq!(violation.observed.as_ref().unwrap().input, json!(1));
        assert_eq!(violation.because.len(), 1);
        assert_eq!(violation.because[0].output, Some(json!(2)));
    }

    #[test]
    fn seeing_a_later_write_without_an_earlier_one_breaks_monotonic_writes() {
        let steps = [
            (1, "write", "x", json!(1), 0),
            (1, "write", "y", json!(1), 10),
            (0, "read", "y", json!(1), 20),
            (0, "read", "x", Json::Null, 30),
        ];
        let report = check(&history(&steps)).unwrap();
        assert_eq!(report.violations.len(), 1);
        let violation = &report.violations[0];
        assert_eq!(
            (violation.guarantee, violation.process),
            (MonotonicWrites, 0)
        );
        assert_eq!(violation.required.key.as_deref(), Some("x"));
        let why: Vec<(&str, Option<&str>)> = violation
            .because
            .iter()
            .map(|o| (o.f.as_str(), o.key.as_deref()))
            .collect();
        assert_eq!(
            why,
            vec![
                ("write", Some("x")),
                ("write", Some("y")),
                ("read", Some("y"))
            ]
        );
    }

    #[test]
    fn seeing_a_write_without_what_its_writer_had_read_breaks_writes_follow_reads() {
        let found = violations(&[
            (2, "write", "x", json!(1), 0),
            (1, "read", "x", json!(1), 10),
            (1, "write", "y", json!(1), 20),
            (0, "read", "y", json!(1), 30),
            (0, "read", "x", Json::Null, 40),
        ]);
        assert_eq!(found, vec![(WritesFollowReads, 0, Json::Null)]);
    }

    #[test]
    fn a_stale_read_by_another_process_is_not_a_session_violation() {
        // Not linearizable, but no guarantee binds process 1 to the second write.
        let found = violations(&[
            (0, "write", "x", json!(1), 0),
            (0, "write", "x", json!(2), 10),
            (1, "read", "x", json!(1), 20),
            (1, "read", "x", json!(2), 30),
        ]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn overlapping_writes_may_be_seen_in_either_order() {
        let mut h = history(&[
            (2, "read", "x", json!(2), 20),
            (2, "read", "x", json!(1), 30),
            (3, "read", "x", json!(1), 20),
            (3, "read", "x", json!(2), 30),
        ]);
        // Two writes that overlap in time: neither is older.
        let write = |process, value: i64, kind, time| Op {
            process,
            kind,
            f: "write".into(),
            key: Some("x".into()),
            value: json!(value),
            time,
        };
        h.events.splice(
            0..0,
            [
                write(0, 1, Invoke, 0),
                write(1, 2, Invoke, 1),
                write(0, 1, Done, 5),
                write(1, 2, Info, 6),
            ],
        );
        let report = check(&h).unwrap();
        assert_eq!(report.verdict, Verdict::Consistent, "{report:?}");
        assert_eq!(report.reads_checked, 4);
    }

    #[test]
    fn a_clean_multi_key_history_is_consistent() {
        let steps = [
            (0, "write", "x", json!(1), 0),
            (0, "read", "x", json!(1), 10),
            (1, "read", "x", json!(1), 20),
            (1, "write", "y", json!(5), 30),
            (2, "read", "y", json!(5), 40),
            (2, "read", "x", json!(1), 50),
            (0, "write", "x", json!(2), 60),
            (2, "read", "x", json!(2), 70),
            (0, "cas", "x", json!([2, 3]), 80),
            (0, "read", "x", json!(3), 90),
        ];
        let report = check(&history(&steps)).unwrap();
        assert_eq!(report.verdict, Verdict::Consistent, "{report:?}");
        assert_eq!(report.reads_checked, 6);
        assert_eq!(report.operations, 10);
    }

    #[test]
    fn values_written_twice_are_left_out_and_values_never_written_are_reported() {
        let report = check(&history(&[
            (0, "write", "x", json!(1), 0),
            (1, "write", "x", json!(1), 10),
            (2, "read", "x", json!(1), 20),
            (2, "read", "x", json!(9), 30),
            (2, "append", "y", json!(4), 40),
            (2, "read", "y", json!([4]), 50),
        ]))
        .unwrap();
        assert_eq!(report.reads_ambiguous, 1);
        assert_eq!(report.unwritten_reads.len(), 1);
        assert_eq!(report.operations_ignored, 1);
        assert_eq!(report.reads_unsupported, 1);
        assert_eq!(report.verdict, Verdict::Violated);
    }
}
