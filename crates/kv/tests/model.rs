//! The store against a reference model that keeps a full copy of the key space per revision:
//! random puts, deletes, transactions, leases and compactions; after every step, every range
//! at every retained revision, the compaction errors, the watch events from every revision,
//! and the invariants. At the end, a snapshot round trip.

use std::collections::{BTreeMap, BTreeSet};

use concord_core::StateMachine;
use concord_kv::{
    Command, CompactRequest, Compare, CompareResult, CompareTarget, DeleteRangeRequest, Event,
    EventKind, KeyRange, KeyValue, KvError, KvStore, Output, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
use proptest::prelude::*;

const KEYS: [&[u8]; 5] = [b"a", b"b", b"c", b"d", b"e"];

#[derive(Clone, Debug)]
enum Write {
    Put { key: usize, value: u8, lease: i64 },
    Delete { key: usize, end: End },
}

#[derive(Clone, Debug)]
enum End {
    Single,
    To(usize),
    FromKey,
}

#[derive(Clone, Debug)]
enum Op {
    Write(Write),
    Txn {
        key: usize,
        version: i64,
        success: Vec<Write>,
        failure: Vec<Write>,
    },
    Compact(i64),
    Grant(i64),
    Revoke(i64),
}

fn write_strategy() -> impl Strategy<Value = Write> {
    prop_oneof![
        3 => (0..KEYS.len(), 0u8..4, prop_oneof![3 => Just(0i64), 1 => 1i64..3])
            .prop_map(|(key, value, lease)| Write::Put { key, value, lease }),
        1 => (0..KEYS.len(), prop_oneof![
                Just(End::Single),
                (0..=KEYS.len()).prop_map(End::To),
                Just(End::FromKey)
            ])
            .prop_map(|(key, end)| Write::Delete { key, end }),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => write_strategy().prop_map(Op::Write),
        2 => (
            0..KEYS.len(),
            0i64..3,
            prop::collection::vec(write_strategy(), 0..3),
            prop::collection::vec(write_strategy(), 0..3)
        )
            .prop_map(|(key, version, success, failure)| Op::Txn {
                key,
                version,
                success,
                failure
            }),
        1 => (0i64..9).prop_map(Op::Compact),
        1 => (1i64..3).prop_map(Op::Grant),
        1 => (1i64..3).prop_map(Op::Revoke),
    ]
}

fn end_bytes(end: &End) -> Vec<u8> {
    match end {
        End::Single => Vec::new(),
        End::To(index) => KEYS.get(*index).map_or(b"z".to_vec(), |k| k.to_vec()),
        End::FromKey => vec![0],
    }
}

fn to_request(write: &Write) -> RequestOp {
    match write {
        Write::Put { key, value, lease } => RequestOp::Put(PutRequest {
            lease: *lease,
            ..PutRequest::new(KEYS[*key], vec![*value])
        }),
        Write::Delete { key, end } => {
            RequestOp::DeleteRange(DeleteRangeRequest::new(KEYS[*key], end_bytes(end)))
        }
    }
}

type Space = BTreeMap<Vec<u8>, KeyValue>;

/// One full copy of the key space per revision, and the events of each revision, indexed by
/// revision. An empty store is at revision 1, as etcd's, so `spaces[0]` and `spaces[1]` are
/// both empty and revisions 0 and 1 have no events.
#[derive(Debug)]
struct Model {
    spaces: Vec<Space>,
    events: Vec<Vec<(EventKind, KeyValue)>>,
    compacted: i64,
    leases: BTreeSet<i64>,
}

/// The writes of one transaction in progress.
struct Pending {
    space: Space,
    events: Vec<(EventKind, KeyValue)>,
    revision: i64,
}

impl Pending {
    fn apply(&mut self, write: &Write) {
        match write {
            Write::Put { key, value, lease } => {
                let key = KEYS[*key].to_vec();
                let previous = self.space.get(&key);
                let kv = KeyValue {
                    key: key.clone(),
                    create_revision: previous.map_or(self.revision, |p| p.create_revision),
                    mod_revision: self.revision,
                    version: previous.map_or(1, |p| p.version + 1),
                    value: vec![*value],
                    lease: *lease,
                };
                self.events.push((EventKind::Put, kv.clone()));
                self.space.insert(key, kv);
            }
            Write::Delete { key, end } => {
                let end = end_bytes(end);
                let range = KeyRange::new(KEYS[*key], &end);
                let doomed: Vec<Vec<u8>> = self
                    .space
                    .keys()
                    .filter(|k| range.contains(k))
                    .cloned()
                    .collect();
                self.delete(doomed);
            }
        }
    }

    fn delete(&mut self, keys: Vec<Vec<u8>>) {
        for key in keys {
            self.space.remove(&key);
            self.events
                .push((EventKind::Delete, KeyValue::tombstone(key, self.revision)));
        }
    }
}

impl Model {
    /// An empty store: at revision 1.
    fn new() -> Self {
        Model {
            spaces: vec![Space::new(), Space::new()],
            events: vec![Vec::new(), Vec::new()],
            compacted: 0,
            leases: BTreeSet::new(),
        }
    }

    fn current(&self) -> i64 {
        self.spaces.len() as i64 - 1
    }

    fn begin(&self) -> Pending {
        Pending {
            space: self.spaces.last().unwrap().clone(),
            events: Vec::new(),
            revision: self.current() + 1,
        }
    }

    fn commit(&mut self, pending: Pending) {
        if !pending.events.is_empty() {
            self.spaces.push(pending.space);
            self.events.push(pending.events);
        }
    }

    /// What the store should answer: an error, or the txn's branch (`None` for non-txns).
    fn apply(&mut self, op: &Op) -> Result<Option<bool>, KvError> {
        match op {
            Op::Write(write) => {
                self.check_leases(std::slice::from_ref(write))?;
                let mut pending = self.begin();
                pending.apply(write);
                self.commit(pending);
                Ok(None)
            }
            Op::Txn {
                key,
                version,
                success,
                failure,
            } => {
                let current = self.spaces.last().unwrap();
                let actual = current.get(KEYS[*key]).map_or(0, |kv| kv.version);
                let succeeded = actual == *version;
                let branch = if succeeded { success } else { failure };
                for writes in [success, failure] {
                    duplicates(writes)?;
                }
                self.check_leases(branch)?;
                let mut pending = self.begin();
                for write in branch {
                    pending.apply(write);
                }
                self.commit(pending);
                Ok(Some(succeeded))
            }
            Op::Compact(revision) => {
                if *revision <= self.compacted {
                    return Err(KvError::Compacted {
                        compact_revision: self.compacted,
                    });
                }
                if *revision > self.current() {
                    return Err(KvError::FutureRevision);
                }
                self.compacted = *revision;
                Ok(None)
            }
            Op::Grant(id) => {
                if !self.leases.insert(*id) {
                    return Err(KvError::LeaseExists);
                }
                Ok(None)
            }
            Op::Revoke(id) => {
                if !self.leases.remove(id) {
                    return Err(KvError::LeaseNotFound);
                }
                let mut pending = self.begin();
                let attached: Vec<Vec<u8>> = pending
                    .space
                    .values()
                    .filter(|kv| kv.lease == *id)
                    .map(|kv| kv.key.clone())
                    .collect();
                pending.delete(attached);
                self.commit(pending);
                Ok(None)
            }
        }
    }

    fn check_leases(&self, writes: &[Write]) -> Result<(), KvError> {
        for write in writes {
            if let Write::Put { lease, .. } = write {
                if *lease != 0 && !self.leases.contains(lease) {
                    return Err(KvError::LeaseNotFound);
                }
            }
        }
        Ok(())
    }
}

/// The duplicate-key rule for a flat branch, written out naively.
fn duplicates(writes: &[Write]) -> Result<(), KvError> {
    let mut puts = BTreeSet::new();
    for write in writes {
        if let Write::Put { key, .. } = write {
            if !puts.insert(*key) {
                return Err(KvError::DuplicateKey);
            }
        }
    }
    for write in writes {
        if let Write::Delete { key, end } = write {
            let end = end_bytes(end);
            let range = KeyRange::new(KEYS[*key], &end);
            if puts.iter().any(|put| range.contains(KEYS[*put])) {
                return Err(KvError::DuplicateKey);
            }
        }
    }
    Ok(())
}

fn to_command(op: &Op) -> Command {
    match op {
        Op::Write(Write::Put { key, value, lease }) => Command::Put(PutRequest {
            lease: *lease,
            ..PutRequest::new(KEYS[*key], vec![*value])
        }),
        Op::Write(delete) => match to_request(delete) {
            RequestOp::DeleteRange(request) => Command::DeleteRange(request),
            _ => unreachable!(),
        },
        Op::Txn {
            key,
            version,
            success,
            failure,
        } => Command::Txn(TxnRequest {
            compare: vec![Compare::new(
                KEYS[*key],
                CompareResult::Equal,
                CompareTarget::Version(*version),
            )],
            success: success.iter().map(to_request).collect(),
            failure: failure.iter().map(to_request).collect(),
        }),
        Op::Compact(revision) => Command::Compact(CompactRequest {
            revision: *revision,
            physical: true,
        }),
        Op::Grant(id) => Command::LeaseGrant { id: *id, ttl: 10 },
        Op::Revoke(id) => Command::LeaseRevoke { id: *id },
    }
}

fn check_reads(store: &KvStore, model: &Model) -> Result<(), TestCaseError> {
    let current = model.current();
    prop_assert_eq!(store.revision(), current);
    prop_assert_eq!(store.compact_revision(), model.compacted);
    for revision in 1..=current {
        let all = store.range(&RangeRequest {
            revision,
            ..RangeRequest::range("\0", "\0")
        });
        if revision < model.compacted {
            prop_assert_eq!(
                all,
                Err(KvError::Compacted {
                    compact_revision: model.compacted
                })
            );
            continue;
        }
        let all = all.unwrap();
        let expected: Vec<KeyValue> = model.spaces[revision as usize].values().cloned().collect();
        prop_assert_eq!(&all.kvs, &expected, "revision {}", revision);
        prop_assert_eq!(all.count, expected.len() as i64);
        prop_assert_eq!(all.header.revision, revision);
        // A sub-range and a limit.
        let part = store
            .range(&RangeRequest {
                revision,
                limit: 1,
                ..RangeRequest::range("b", "d")
            })
            .unwrap();
        let in_part: Vec<&KeyValue> = expected
            .iter()
            .filter(|kv| {
                kv.key.as_slice() >= b"b".as_slice() && kv.key.as_slice() < b"d".as_slice()
            })
            .collect();
        prop_assert_eq!(part.count, in_part.len() as i64);
        prop_assert_eq!(part.more, in_part.len() > 1);
        prop_assert_eq!(part.kvs.first(), in_part.first().copied());
    }
    prop_assert_eq!(
        store.range(&RangeRequest {
            revision: current + 1,
            ..RangeRequest::key("a")
        }),
        Err(KvError::FutureRevision)
    );
    Ok(())
}

fn check_events(store: &KvStore, model: &Model) -> Result<(), TestCaseError> {
    let current = model.current();
    for from in 1..=current + 1 {
        let events = store.events(from, b"\0", b"\0", true);
        if model.compacted > 0 && from <= model.compacted {
            prop_assert!(events.is_err());
            continue;
        }
        let mut expected = Vec::new();
        for revision in from..=current {
            for (kind, kv) in &model.events[revision as usize] {
                expected.push(Event {
                    kind: *kind,
                    kv: kv.clone(),
                    prev_kv: model.spaces[revision as usize - 1].get(&kv.key).cloned(),
                });
            }
        }
        prop_assert_eq!(events.unwrap(), expected, "events from {}", from);
        // One key only.
        let only_c = store.events(from, b"c", b"", false).unwrap();
        prop_assert!(only_c.iter().all(|event| event.kv.key == b"c"));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_store_matches_the_model(ops in prop::collection::vec(op_strategy(), 1..40)) {
        let mut store = KvStore::default();
        let mut model = Model::new();
        prop_assert_eq!(store.revision(), model.current());
        prop_assert_eq!(model.current(), 1);
        for op in &ops {
            let expected = model.apply(op);
            let output = store.apply(&to_command(op));
            match (&expected, &output) {
                (Err(error), Output::Error(actual)) => prop_assert_eq!(error, actual),
                (Err(error), other) => prop_assert!(false, "{:?}: expected {}, got {:?}", op, error, other),
                (Ok(_), Output::Error(actual)) => prop_assert!(false, "{:?}: unexpected {}", op, actual),
                (Ok(Some(succeeded)), Output::Txn(response)) => {
                    prop_assert_eq!(response.succeeded, *succeeded);
                    prop_assert_eq!(response.header.revision, model.current());
                }
                (Ok(_), Output::Put(response)) => prop_assert_eq!(response.header.revision, model.current()),
                (Ok(_), Output::DeleteRange(response)) => prop_assert_eq!(response.header.revision, model.current()),
                (Ok(_), _) => {}
            }
            prop_assert_eq!(store.check_invariants(), Ok(()));
            check_reads(&store, &model)?;
            check_events(&store, &model)?;
        }
        let mut copy = KvStore::default();
        copy.restore(&store.snapshot()).unwrap();
        prop_assert_eq!(copy.digest(), store.digest());
        prop_assert_eq!(&copy, &store);
    }
}
