//! Scenario tests of the store against etcd's documented semantics
//! (etcd.io/docs/v3.4/learning/api and api_guarantees).

use concord_core::StateMachine;
use concord_kv::{
    prefix_end, Command, CompactRequest, Compare, CompareResult, CompareTarget, DeleteRangeRequest,
    EventKind, KeyValue, KvError, KvStore, MemberAttrs, Output, PutRequest, Query, RangeRequest,
    RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget, TxnRequest, TxnResponse,
};

fn put(store: &mut KvStore, key: &str, value: &str) -> Output {
    store.apply(&Command::Put(PutRequest::new(key, value)))
}

fn range(store: &KvStore, request: RangeRequest) -> Result<RangeResponse, KvError> {
    match store.query(&Query::Range(request)) {
        Output::Range(response) => Ok(response),
        Output::Error(error) => Err(error),
        other => panic!("unexpected {other:?}"),
    }
}

fn get(store: &KvStore, key: &str) -> Option<KeyValue> {
    range(store, RangeRequest::key(key)).unwrap().kvs.pop()
}

fn keys(response: &RangeResponse) -> Vec<String> {
    response
        .kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

fn txn(store: &mut KvStore, request: TxnRequest) -> Result<TxnResponse, KvError> {
    match store.apply(&Command::Txn(request)) {
        Output::Txn(response) => Ok(response),
        Output::Error(error) => Err(error),
        other => panic!("unexpected {other:?}"),
    }
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp::Put(PutRequest::new(key, value))
}

#[test]
fn revisions_versions_and_tombstones_follow_etcd() {
    let mut store = KvStore::default();
    assert_eq!(
        store.revision(),
        1,
        "an empty store is at revision 1, as etcd's"
    );
    put(&mut store, "foo", "a");
    put(&mut store, "foo", "b");
    let kv = get(&store, "foo").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    let deleted = store.apply(&Command::DeleteRange(DeleteRangeRequest::new("foo", "")));
    let Output::DeleteRange(deleted) = deleted else {
        panic!()
    };
    assert_eq!((deleted.deleted, deleted.header.revision), (1, 4));
    assert_eq!(get(&store, "foo"), None);
    put(&mut store, "foo", "c");
    let kv = get(&store, "foo").unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (5, 5, 1),
        "a delete resets version and create revision"
    );
    // The old generation is still readable at its revisions.
    let old = range(
        &store,
        RangeRequest {
            revision: 3,
            ..RangeRequest::key("foo")
        },
    )
    .unwrap();
    assert_eq!(old.kvs[0].value, b"b");
    assert_eq!(old.header.revision, 3);
    assert!(range(
        &store,
        RangeRequest {
            revision: 4,
            ..RangeRequest::key("foo")
        }
    )
    .unwrap()
    .kvs
    .is_empty());
    store.check_invariants().unwrap();
}

#[test]
fn deleting_nothing_creates_no_revision() {
    let mut store = KvStore::default();
    put(&mut store, "a", "1");
    let Output::DeleteRange(response) =
        store.apply(&Command::DeleteRange(DeleteRangeRequest::new("b", "z")))
    else {
        panic!()
    };
    assert_eq!((response.deleted, response.header.revision), (0, 2));
    assert_eq!(store.revision(), 2);
}

#[test]
fn range_end_conventions_limits_and_counts() {
    let mut store = KvStore::default();
    for key in ["a", "b", "c", "d", "foo/1", "foo/2", "fop"] {
        put(&mut store, key, key);
    }
    let all = range(&store, RangeRequest::range("\0", "\0")).unwrap();
    assert_eq!(all.count, 7);
    let from_c = range(&store, RangeRequest::range("c", "\0")).unwrap();
    assert_eq!(keys(&from_c), ["c", "d", "foo/1", "foo/2", "fop"]);
    let prefix = range(&store, RangeRequest::range("foo/", prefix_end(b"foo/"))).unwrap();
    assert_eq!(keys(&prefix), ["foo/1", "foo/2"]);
    let limited = range(
        &store,
        RangeRequest {
            limit: 2,
            ..RangeRequest::range("a", "e")
        },
    )
    .unwrap();
    assert_eq!(keys(&limited), ["a", "b"]);
    assert!(limited.more);
    assert_eq!(limited.count, 4, "count is the whole range, not the page");
    let exact = range(
        &store,
        RangeRequest {
            limit: 4,
            ..RangeRequest::range("a", "e")
        },
    )
    .unwrap();
    assert!(!exact.more);
    let inverted = range(&store, RangeRequest::range("z", "a")).unwrap();
    assert_eq!((inverted.count, inverted.kvs.len()), (0, 0));
    let count_only = range(
        &store,
        RangeRequest {
            count_only: true,
            ..RangeRequest::range("a", "\0")
        },
    )
    .unwrap();
    assert_eq!((count_only.count, count_only.kvs.len()), (7, 0));
    let keys_only = range(
        &store,
        RangeRequest {
            keys_only: true,
            ..RangeRequest::key("a")
        },
    )
    .unwrap();
    assert!(keys_only.kvs[0].value.is_empty());
    assert_eq!(keys_only.kvs[0].mod_revision, 2);
    assert_eq!(range(&store, RangeRequest::key("")), Err(KvError::EmptyKey));
}

#[test]
fn sorting_and_revision_filters() {
    let mut store = KvStore::default();
    put(&mut store, "a", "3"); // rev 2
    put(&mut store, "b", "1"); // rev 3
    put(&mut store, "c", "2"); // rev 4
    put(&mut store, "a", "4"); // rev 5: a has version 2
    let by = |order, target| {
        keys(
            &range(
                &store,
                RangeRequest {
                    sort_order: order,
                    sort_target: target,
                    ..RangeRequest::range("a", "\0")
                },
            )
            .unwrap(),
        )
    };
    assert_eq!(by(SortOrder::Descend, SortTarget::Key), ["c", "b", "a"]);
    assert_eq!(by(SortOrder::Ascend, SortTarget::Mod), ["b", "c", "a"]);
    assert_eq!(
        by(SortOrder::None, SortTarget::Value),
        ["b", "c", "a"],
        "NONE with a non-key target ascends"
    );
    assert_eq!(by(SortOrder::Descend, SortTarget::Create), ["c", "b", "a"]);
    assert_eq!(by(SortOrder::Descend, SortTarget::Version), ["a", "b", "c"]);
    let limited = range(
        &store,
        RangeRequest {
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Mod,
            limit: 1,
            ..RangeRequest::range("a", "\0")
        },
    )
    .unwrap();
    assert_eq!(keys(&limited), ["a"]);
    assert!(limited.more);
    let filtered = range(
        &store,
        RangeRequest {
            min_mod_revision: 3,
            max_mod_revision: 4,
            ..RangeRequest::range("a", "\0")
        },
    )
    .unwrap();
    assert_eq!(keys(&filtered), ["b", "c"]);
    assert_eq!(filtered.count, 3, "etcd counts before filtering");
    let created = range(
        &store,
        RangeRequest {
            max_create_revision: 3,
            min_create_revision: 3,
            ..RangeRequest::range("a", "\0")
        },
    )
    .unwrap();
    assert_eq!(keys(&created), ["b"]);
}

#[test]
fn compaction_keeps_the_latest_version_and_refuses_old_reads() {
    let mut store = KvStore::default();
    put(&mut store, "a", "1"); // 2
    put(&mut store, "a", "2"); // 3
    put(&mut store, "b", "1"); // 4
    store.apply(&Command::DeleteRange(DeleteRangeRequest::new("b", ""))); // 5
    put(&mut store, "a", "3"); // 6
    let compact = |store: &mut KvStore, revision| {
        store.apply(&Command::Compact(CompactRequest {
            revision,
            physical: true,
        }))
    };
    assert_eq!(
        compact(&mut store, 7),
        Output::Error(KvError::FutureRevision)
    );
    assert!(matches!(compact(&mut store, 5), Output::Compact(c) if c.header.revision == 6));
    store.check_invariants().unwrap();
    let at = |store: &KvStore, revision| {
        range(
            store,
            RangeRequest {
                revision,
                ..RangeRequest::range("a", "\0")
            },
        )
    };
    assert_eq!(
        at(&store, 4),
        Err(KvError::Compacted {
            compact_revision: 5
        })
    );
    assert_eq!(
        KvError::Compacted {
            compact_revision: 5
        }
        .to_string(),
        "mvcc: required revision has been compacted"
    );
    let at_compaction = at(&store, 5).unwrap();
    assert_eq!(keys(&at_compaction), ["a"]);
    assert_eq!(at_compaction.kvs[0].value, b"2");
    assert_eq!(at(&store, 10), Err(KvError::FutureRevision));
    assert_eq!(
        KvError::FutureRevision.to_string(),
        "mvcc: required revision is a future revision"
    );
    assert_eq!(
        store.status().records,
        2,
        "a@3 and a@6; b's tombstone is gone"
    );
    assert!(matches!(
        compact(&mut store, 5),
        Output::Error(KvError::Compacted { .. })
    ));
    assert!(matches!(compact(&mut store, 6), Output::Compact(_)));
    assert_eq!(store.status().records, 1);
    store.check_invariants().unwrap();
}

fn compare(key: &str, result: CompareResult, target: CompareTarget) -> Compare {
    Compare::new(key, result, target)
}

/// etcd's docs example: `Txn().If(Compare(Value(k1), ">", v1), Compare(Version(k1), "=", 2))
/// .Then(OpPut(k2,v2), OpPut(k3,v3)).Else(OpPut(k4,v4), OpPut(k5,v5))`.
#[test]
fn txn_compares_pick_the_branch() {
    let mut store = KvStore::default();
    put(&mut store, "k1", "v2");
    put(&mut store, "k1", "v2");
    let request = TxnRequest {
        compare: vec![
            compare(
                "k1",
                CompareResult::Greater,
                CompareTarget::Value(b"v1".to_vec()),
            ),
            compare("k1", CompareResult::Equal, CompareTarget::Version(2)),
        ],
        success: vec![put_op("k2", "v2"), put_op("k3", "v3")],
        failure: vec![put_op("k4", "v4"), put_op("k5", "v5")],
    };
    let response = txn(&mut store, request.clone()).unwrap();
    assert!(response.succeeded);
    assert_eq!(
        response.header.revision, 4,
        "one revision for the whole txn"
    );
    assert_eq!(get(&store, "k2").unwrap().mod_revision, 4);
    assert_eq!(get(&store, "k3").unwrap().mod_revision, 4);
    put(&mut store, "k1", "v2"); // rev 5: version 3
    let again = txn(&mut store, request).unwrap();
    assert!(!again.succeeded);
    assert_eq!(again.header.revision, 6);
    assert_eq!(get(&store, "k4").unwrap().mod_revision, 6);
    assert_eq!(get(&store, "k5").unwrap().value, b"v5");
    assert_eq!(get(&store, "k2").unwrap().mod_revision, 4);
}

#[test]
fn compare_table() {
    let mut store = KvStore::default();
    store.apply(&Command::LeaseGrant { id: 7, ttl: 60 });
    put(&mut store, "a", "m"); // rev 2, version 1
    store.apply(&Command::Put(PutRequest {
        lease: 7,
        ..PutRequest::new("a", "m")
    })); // rev 3, version 2, lease 7
    put(&mut store, "b", "z"); // rev 4
    use CompareResult::*;
    use CompareTarget::*;
    let cases: Vec<(Compare, bool)> = vec![
        (compare("a", Equal, Version(2)), true),
        (compare("a", Greater, Version(1)), true),
        (compare("a", Less, Version(2)), false),
        (compare("a", NotEqual, Version(2)), false),
        (compare("a", Equal, Create(2)), true),
        (compare("a", Equal, Mod(3)), true),
        (compare("a", Less, Mod(4)), true),
        (compare("a", Equal, Value(b"m".to_vec())), true),
        (compare("a", Greater, Value(b"l".to_vec())), true),
        (compare("a", Less, Value(b"ma".to_vec())), true),
        (compare("a", Equal, Lease(7)), true),
        (compare("b", Equal, Lease(0)), true),
        // A missing key compares as zeros, except its value, which never matches.
        (compare("x", Equal, Version(0)), true),
        (compare("x", Equal, Create(0)), true),
        (compare("x", Equal, Mod(0)), true),
        (compare("x", Equal, Lease(0)), true),
        (compare("x", Equal, Value(Vec::new())), false),
        (compare("x", NotEqual, Value(b"q".to_vec())), false),
        // Over a range every key must match.
        (
            Compare {
                range_end: b"c".to_vec(),
                ..compare("a", Greater, Mod(0))
            },
            true,
        ),
        (
            Compare {
                range_end: b"c".to_vec(),
                ..compare("a", Equal, Mod(3))
            },
            false,
        ),
        (
            Compare {
                range_end: b"\0".to_vec(),
                ..compare("a", Less, Create(5))
            },
            true,
        ),
    ];
    for (condition, expected) in cases {
        let response = txn(
            &mut store,
            TxnRequest {
                compare: vec![condition.clone()],
                ..TxnRequest::default()
            },
        )
        .unwrap();
        assert_eq!(response.succeeded, expected, "{condition:?}");
    }
    assert_eq!(store.revision(), 4, "read-only txns create no revision");
}

#[test]
fn txn_reads_see_earlier_writes_and_nested_compares_see_the_old_state() {
    let mut store = KvStore::default();
    put(&mut store, "a", "1"); // rev 2
    let response = txn(
        &mut store,
        TxnRequest {
            compare: vec![],
            success: vec![
                RequestOp::Range(RangeRequest::key("b")),
                put_op("b", "2"),
                RequestOp::Range(RangeRequest::key("b")),
                RequestOp::Txn(TxnRequest {
                    // b did not exist before the outer txn: its version compares as 0.
                    compare: vec![compare(
                        "b",
                        CompareResult::Equal,
                        CompareTarget::Version(0),
                    )],
                    success: vec![put_op("c", "nested")],
                    failure: vec![],
                }),
                RequestOp::DeleteRange(DeleteRangeRequest::new("a", "")),
            ],
            failure: vec![],
        },
    )
    .unwrap();
    let [ResponseOp::Range(before), ResponseOp::Put(_), ResponseOp::Range(after), ResponseOp::Txn(nested), ResponseOp::DeleteRange(deleted)] =
        response.responses.as_slice()
    else {
        panic!("{response:?}")
    };
    assert!(before.kvs.is_empty());
    assert_eq!(before.header.revision, 2);
    assert_eq!(after.kvs[0].value, b"2");
    assert_eq!(after.header.revision, 3);
    assert!(nested.succeeded);
    assert_eq!(deleted.deleted, 1);
    assert_eq!(response.header.revision, 3);
    let events = store.events(3, b"\0", b"\0", false).unwrap();
    let order: Vec<(EventKind, &[u8])> = events
        .iter()
        .map(|event| (event.kind, event.kv.key.as_slice()))
        .collect();
    assert_eq!(
        order,
        [
            (EventKind::Put, &b"b"[..]),
            (EventKind::Put, &b"c"[..]),
            (EventKind::Delete, &b"a"[..])
        ],
        "events of one revision come in write order"
    );
}

#[test]
fn a_failing_txn_changes_nothing() {
    let mut store = KvStore::default();
    put(&mut store, "a", "1");
    let before = store.digest();
    let bad = |ops: Vec<RequestOp>| TxnRequest {
        compare: vec![],
        success: ops,
        failure: vec![],
    };
    let unknown_lease = RequestOp::Put(PutRequest {
        lease: 99,
        ..PutRequest::new("b", "x")
    });
    assert_eq!(
        txn(&mut store, bad(vec![put_op("c", "1"), unknown_lease])),
        Err(KvError::LeaseNotFound)
    );
    assert_eq!(
        txn(&mut store, bad(vec![put_op("c", "1"), put_op("c", "2")])),
        Err(KvError::DuplicateKey)
    );
    assert_eq!(
        KvError::DuplicateKey.to_string(),
        "etcdserver: duplicate key given in txn request"
    );
    let future_read = RequestOp::Range(RangeRequest {
        revision: 3,
        ..RangeRequest::key("a")
    });
    assert_eq!(
        txn(&mut store, bad(vec![put_op("c", "1"), future_read])),
        Err(KvError::FutureRevision)
    );
    assert_eq!(store.digest(), before);
    assert_eq!(store.revision(), 2);
}

#[test]
fn put_options() {
    let mut store = KvStore::default();
    let apply = |store: &mut KvStore, request: PutRequest| store.apply(&Command::Put(request));
    assert_eq!(
        apply(
            &mut store,
            PutRequest {
                ignore_value: true,
                ..PutRequest::new("a", "")
            }
        ),
        Output::Error(KvError::KeyNotFound)
    );
    assert_eq!(
        apply(
            &mut store,
            PutRequest {
                ignore_value: true,
                ..PutRequest::new("a", "v")
            }
        ),
        Output::Error(KvError::ValueProvided)
    );
    assert_eq!(
        apply(
            &mut store,
            PutRequest {
                ignore_lease: true,
                lease: 3,
                ..PutRequest::new("a", "v")
            }
        ),
        Output::Error(KvError::LeaseProvided)
    );
    assert_eq!(
        apply(&mut store, PutRequest::new("", "v")),
        Output::Error(KvError::EmptyKey)
    );
    store.apply(&Command::LeaseGrant { id: 3, ttl: 10 });
    apply(
        &mut store,
        PutRequest {
            lease: 3,
            ..PutRequest::new("a", "v1")
        },
    );
    let Output::Put(response) = apply(
        &mut store,
        PutRequest {
            ignore_lease: true,
            prev_kv: true,
            ..PutRequest::new("a", "v2")
        },
    ) else {
        panic!()
    };
    assert_eq!(response.prev_kv.unwrap().value, b"v1");
    assert_eq!(response.header.revision, 3);
    assert_eq!(
        get(&store, "a").unwrap().lease,
        3,
        "ignore_lease keeps the lease"
    );
    apply(
        &mut store,
        PutRequest {
            ignore_value: true,
            ..PutRequest::new("a", "")
        },
    );
    let kv = get(&store, "a").unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.lease, kv.version),
        (&b"v2"[..], 0, 3)
    );
    assert_eq!(store.lease_keys(3), Ok(vec![]), "a plain put detaches");
    store.check_invariants().unwrap();
}

#[test]
fn revoking_a_lease_deletes_its_keys_in_one_revision() {
    let mut store = KvStore::default();
    assert_eq!(
        store.apply(&Command::LeaseGrant { id: 5, ttl: 30 }),
        Output::LeaseGrant(concord_kv::LeaseGrantResponse {
            header: concord_kv::ResponseHeader { revision: 1 },
            id: 5,
            ttl: 30
        })
    );
    assert_eq!(
        store.apply(&Command::LeaseGrant { id: 5, ttl: 30 }),
        Output::Error(KvError::LeaseExists)
    );
    assert_eq!(
        store.apply(&Command::LeaseGrant { id: 0, ttl: 30 }),
        Output::Error(KvError::LeaseIdZero)
    );
    assert_eq!(
        store.apply(&Command::LeaseGrant {
            id: 6,
            ttl: concord_kv::MAX_LEASE_TTL + 1
        }),
        Output::Error(KvError::LeaseTtlTooLarge)
    );
    for key in ["x", "y", "z"] {
        store.apply(&Command::Put(PutRequest {
            lease: 5,
            ..PutRequest::new(key, "v")
        }));
    }
    put(&mut store, "z", "detached"); // rev 5
    assert_eq!(
        store.query(&Query::LeaseKeys { id: 5 }),
        Output::LeaseKeys(vec![b"x".to_vec(), b"y".to_vec()])
    );
    let revoked = store.apply(&Command::LeaseRevoke { id: 5 });
    assert_eq!(
        revoked,
        Output::LeaseRevoke(concord_kv::ResponseHeader { revision: 6 })
    );
    assert_eq!(get(&store, "x"), None);
    assert_eq!(get(&store, "y"), None);
    assert!(get(&store, "z").is_some());
    assert_eq!(
        store.apply(&Command::LeaseRevoke { id: 5 }),
        Output::Error(KvError::LeaseNotFound)
    );
    assert_eq!(
        KvError::LeaseNotFound.to_string(),
        "etcdserver: requested lease not found"
    );
    let attach_unknown = store.apply(&Command::Put(PutRequest {
        lease: 5,
        ..PutRequest::new("w", "v")
    }));
    assert_eq!(attach_unknown, Output::Error(KvError::LeaseNotFound));
    // A lease without keys revokes without a new revision.
    store.apply(&Command::LeaseGrant { id: 8, ttl: 30 });
    store.apply(&Command::LeaseRevoke { id: 8 });
    assert_eq!(store.revision(), 6);
    store.check_invariants().unwrap();
}

#[test]
fn events_after_a_revision_with_previous_values() {
    let mut store = KvStore::default();
    put(&mut store, "a", "1"); // 2
    put(&mut store, "b", "1"); // 3
    put(&mut store, "a", "2"); // 4
    store.apply(&Command::DeleteRange(DeleteRangeRequest::new("a", ""))); // 5
    let events = store.events(4, b"a", b"", true).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].kind, EventKind::Put);
    assert_eq!(events[0].prev_kv.as_ref().unwrap().value, b"1");
    assert_eq!(events[1].kind, EventKind::Delete);
    assert_eq!(events[1].kv, KeyValue::tombstone(b"a".to_vec(), 5));
    assert_eq!(events[1].prev_kv.as_ref().unwrap().value, b"2");
    let without_prev = store.events(2, b"a", b"c", false).unwrap();
    assert_eq!(without_prev.len(), 4);
    assert!(without_prev.iter().all(|event| event.prev_kv.is_none()));
    assert!(store.events(6, b"a", b"\0", true).unwrap().is_empty());
    store.apply(&Command::Compact(CompactRequest {
        revision: 3,
        physical: false,
    }));
    assert_eq!(
        store.events(3, b"a", b"\0", false),
        Err(KvError::Compacted {
            compact_revision: 3
        })
    );
    let events = store.events(4, b"a", b"", true).unwrap();
    assert_eq!(
        events[0].prev_kv.as_ref().unwrap().value,
        b"1",
        "a@2 is the version kept at the compaction"
    );
}

#[test]
fn read_only_transactions_are_served_as_queries() {
    let mut store = KvStore::default();
    put(&mut store, "a", "1");
    let read = TxnRequest {
        compare: vec![compare(
            "a",
            CompareResult::Equal,
            CompareTarget::Value(b"1".to_vec()),
        )],
        success: vec![RequestOp::Range(RangeRequest::key("a"))],
        failure: vec![],
    };
    let Output::Txn(response) = store.query(&Query::Txn(read)) else {
        panic!()
    };
    assert!(response.succeeded);
    assert_eq!(response.header.revision, 2);
    let write = TxnRequest {
        failure: vec![put_op("b", "1")],
        ..TxnRequest::default()
    };
    assert_eq!(
        store.query(&Query::Txn(write)),
        Output::Error(KvError::TxnHasWrites)
    );
}

#[test]
fn members_are_set_listed_and_removed() {
    let mut store = KvStore::default();
    let member = |id, name: &str| MemberAttrs {
        id,
        name: name.into(),
        peer_urls: vec![format!("http://10.0.0.{id}:2380")],
        client_urls: vec![format!("http://10.0.0.{id}:2379")],
        is_learner: false,
    };
    store.apply(&Command::SetMember(member(2, "two")));
    store.apply(&Command::SetMember(member(1, "one")));
    let mut learner = member(2, "two");
    learner.is_learner = true;
    let Output::Members(members) = store.apply(&Command::SetMember(learner.clone())) else {
        panic!()
    };
    assert_eq!(members, vec![member(1, "one"), learner]);
    assert_eq!(
        store.apply(&Command::RemoveMember { id: 9 }),
        Output::Error(KvError::MemberNotFound)
    );
    store.apply(&Command::RemoveMember { id: 2 });
    assert_eq!(
        store.query(&Query::Members),
        Output::Members(vec![member(1, "one")])
    );
    assert_eq!(store.revision(), 1, "members live outside the key space");
}

#[test]
fn snapshots_round_trip_and_garbage_is_refused() {
    let mut store = KvStore::default();
    store.apply(&Command::LeaseGrant { id: 1, ttl: 10 });
    store.apply(&Command::Put(PutRequest {
        lease: 1,
        ..PutRequest::new("a", "1")
    }));
    put(&mut store, "b", "2");
    put(&mut store, "b", "3");
    store.apply(&Command::DeleteRange(DeleteRangeRequest::new("b", "")));
    store.apply(&Command::Compact(CompactRequest {
        revision: 3,
        physical: true,
    }));
    store.apply(&Command::LeaseCheckpoint {
        id: 1,
        remaining_ttl: 4,
    });
    store.apply(&Command::SetMember(MemberAttrs {
        id: 3,
        ..MemberAttrs::default()
    }));
    let bytes = store.snapshot();
    let mut copy = KvStore::default();
    copy.restore(&bytes).unwrap();
    assert_eq!(copy, store);
    assert_eq!(copy.digest(), store.digest());
    assert_eq!(copy.lease_keys(1), Ok(vec![b"a".to_vec()]));
    put(&mut copy, "c", "x");
    assert_ne!(copy.digest(), store.digest());

    let mut target = KvStore::default();
    assert!(target.restore(b"").is_err());
    assert!(target.restore(b"garbage that is not a snapshot").is_err());
    assert!(target.restore(&bytes[..bytes.len() - 1]).is_err());
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(target.restore(&trailing).is_err());
    // Flip every byte after the magic in turn: never a panic; either refused or consistent.
    for position in 8..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut corrupt = bytes.clone();
            corrupt[position] ^= flip;
            let mut target = KvStore::default();
            if target.restore(&corrupt).is_ok() {
                target.check_invariants().unwrap();
            }
        }
    }
}

#[test]
fn error_texts_are_etcds() {
    let texts = [
        (KvError::EmptyKey, "etcdserver: key is not provided"),
        (KvError::KeyNotFound, "etcdserver: key not found"),
        (KvError::ValueProvided, "etcdserver: value is provided"),
        (KvError::LeaseProvided, "etcdserver: lease is provided"),
        (
            KvError::TooManyOps,
            "etcdserver: too many operations in txn request",
        ),
        (KvError::LeaseExists, "etcdserver: lease already exists"),
        (KvError::LeaseTtlTooLarge, "etcdserver: too large lease TTL"),
        (KvError::MemberNotFound, "etcdserver: member not found"),
    ];
    for (error, text) in texts {
        assert_eq!(error.to_string(), text);
    }
}

#[test]
fn large_key_spaces_stay_cheap() {
    let mut store = KvStore::default();
    let keys = 50_000;
    for i in 0..keys {
        store.apply(&Command::Put(PutRequest::new(format!("k/{i:06}"), "v")));
    }
    let page = range(
        &store,
        RangeRequest {
            limit: 10,
            ..RangeRequest::range("k/", prefix_end(b"k/"))
        },
    )
    .unwrap();
    assert_eq!((page.kvs.len(), page.count, page.more), (10, keys, true));
    // Watch from near the head: only the tail of the log is read. The puts made revisions
    // 2..=keys + 1.
    let tail = store.events(keys - 3, b"\0", b"\0", true).unwrap();
    assert_eq!(tail.len(), 5);
    store.apply(&Command::Compact(CompactRequest {
        revision: keys - 9,
        physical: true,
    }));
    assert_eq!(store.status().records, keys as u64);
    store.check_invariants().unwrap();
}

/// The leader's lessor decides expiry; the revoke it proposes deletes the keys everywhere.
#[test]
fn an_expired_lease_is_revoked_through_a_command() {
    use concord_core::time::SECOND;
    use concord_kv::{Lessor, LessorConfig};

    let mut store = KvStore::default();
    let mut lessor = Lessor::new(LessorConfig::default());
    lessor.promote(0);
    let ttl = lessor.clamp_ttl(1);
    let Output::LeaseGrant(granted) = store.apply(&Command::LeaseGrant { id: 9, ttl }) else {
        panic!()
    };
    lessor.grant(granted.id, granted.ttl, 0);
    store.apply(&Command::Put(PutRequest {
        lease: 9,
        ..PutRequest::new("session", "alive")
    }));
    assert!(lessor.expired(SECOND).is_empty());
    let expired = lessor.expired(ttl as u64 * SECOND);
    assert_eq!(expired, vec![9]);
    for id in expired {
        assert!(matches!(
            store.apply(&Command::LeaseRevoke { id }),
            Output::LeaseRevoke(_)
        ));
        lessor.revoke(id).unwrap();
    }
    assert_eq!(get(&store, "session"), None);
    assert!(store.leases().is_empty());
    // A follower rebuilding its lessor from the store sees the same table.
    let rebuilt = Lessor::restore(LessorConfig::default(), store.leases());
    assert_eq!(rebuilt.leases().count(), 0);
}

/// A space alarm (etcd's NOSPACE) caps the store: puts, transactions with a put and lease
/// grants are refused; reads, deletes, delete-only transactions and compactions go on; clearing
/// the alarm lifts it. Alarms survive a snapshot, and a store without alarms encodes as before.
#[test]
fn a_space_alarm_refuses_writes_that_add_data_until_cleared() {
    use concord_kv::Alarm;
    let alarm = |active| Command::Alarm {
        active,
        member: 7,
        alarm: Alarm::NoSpace,
    };
    let mut store = KvStore::new();
    put(&mut store, "a", "1");
    put(&mut store, "b", "2");
    let before_alarms = store.encode();
    assert!(store.size_bytes() > 0);

    assert_eq!(
        store.apply(&alarm(true)),
        Output::Alarms(vec![(7, Alarm::NoSpace)])
    );
    assert!(store.out_of_space());
    assert_eq!(
        store.query(&Query::Alarms),
        Output::Alarms(vec![(7, Alarm::NoSpace)])
    );
    assert_eq!(put(&mut store, "c", "3"), Output::Error(KvError::NoSpace));
    let with_put = TxnRequest {
        success: vec![RequestOp::Range(RangeRequest::key("a"))],
        failure: vec![RequestOp::Txn(TxnRequest {
            success: vec![put_op("c", "3")],
            ..Default::default()
        })],
        ..Default::default()
    };
    assert_eq!(txn(&mut store, with_put), Err(KvError::NoSpace));
    assert_eq!(
        store.apply(&Command::LeaseGrant { id: 5, ttl: 10 }),
        Output::Error(KvError::NoSpace)
    );
    assert_eq!(
        KvError::NoSpace.to_string(),
        "mvcc: database space exceeded"
    );
    // Deletes, delete-only transactions, compactions and reads go on.
    let delete_only = TxnRequest {
        success: vec![RequestOp::DeleteRange(DeleteRangeRequest::new("a", ""))],
        ..Default::default()
    };
    assert!(txn(&mut store, delete_only).is_ok());
    assert!(matches!(
        store.apply(&Command::DeleteRange(DeleteRangeRequest::new("b", ""))),
        Output::DeleteRange(_)
    ));
    let revision = store.revision();
    assert!(matches!(
        store.apply(&Command::Compact(CompactRequest {
            revision,
            physical: false,
        })),
        Output::Compact(_)
    ));
    assert_eq!(get(&store, "a"), None);

    // The alarm is part of the replicated state.
    let restored = KvStore::decode(&store.encode()).unwrap();
    assert_eq!(restored, store);
    assert!(restored.out_of_space());

    // Cleared, it lifts the cap; clearing it again changes nothing.
    assert_eq!(
        store.apply(&alarm(false)),
        Output::Alarms(vec![(7, Alarm::NoSpace)])
    );
    assert_eq!(store.apply(&alarm(false)), Output::Alarms(vec![]));
    assert!(!store.out_of_space());
    assert!(matches!(put(&mut store, "c", "3"), Output::Put(_)));

    // Without alarms, the encoding is what it was before alarms existed.
    let mut plain = KvStore::new();
    put(&mut plain, "a", "1");
    put(&mut plain, "b", "2");
    assert_eq!(plain.encode(), before_alarms);
}

/// A transaction's operations at any depth, in order: each nested transaction's where it
/// stands, `success` before `failure`.
#[test]
fn leaf_ops_walk_both_branches_at_any_depth_in_order() {
    let request = TxnRequest {
        success: vec![
            put_op("a", "1"),
            RequestOp::Txn(TxnRequest {
                success: vec![put_op("b", "2")],
                failure: vec![RequestOp::DeleteRange(DeleteRangeRequest::new("c", ""))],
                ..Default::default()
            }),
            RequestOp::Range(RangeRequest::key("d")),
        ],
        failure: vec![put_op("e", "5")],
        ..Default::default()
    };
    let keys: Vec<&[u8]> = request
        .leaf_ops()
        .map(|op| match op {
            RequestOp::Put(put) => put.key.as_slice(),
            RequestOp::DeleteRange(delete) => delete.key.as_slice(),
            RequestOp::Range(range) => range.key.as_slice(),
            RequestOp::Txn(_) => panic!("a transaction is not a leaf"),
        })
        .collect();
    assert_eq!(keys, [b"a", b"b", b"c", b"d", b"e"]);
    assert!(Command::Txn(request.clone()).adds_data());
    // Three puts of a one-byte key and a one-byte value.
    assert_eq!(Command::Txn(request).data_bytes(), 6);
}
