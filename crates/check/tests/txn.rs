//! Transactional anomalies, Elle-style: one hand-made minimal history for each named anomaly,
//! asserting the anomaly and the isolation levels it rules out; random serial executions
//! against a real store report nothing.

use concord_check::generate::{serial_txn_history, TxnBuilder};
use concord_check::history::History;
use concord_check::txn::anomaly::{AnomalyName, IsolationLevel};
use concord_check::txn::graph::EdgeKind;
use concord_check::txn::{check, Report, Verdict, Workload};
use concord_check::{check_txn, read_edn};
use serde_json::{json, Value as Json};

use IsolationLevel::*;

type Builder = TxnBuilder;

/// The report on a built history.
trait CheckBuilt {
    fn check(&self, workload: Workload) -> Report;
}

impl CheckBuilt for TxnBuilder {
    fn check(&self, workload: Workload) -> Report {
        check(&self.history, workload).unwrap()
    }
}

fn names(report: &Report) -> Vec<AnomalyName> {
    report.counts.keys().copied().collect()
}

/// The report names `anomaly` (and perhaps others, listed in `also`) and rules out `levels`.
fn assert_finds(
    report: &Report,
    anomaly: AnomalyName,
    also: &[AnomalyName],
    levels: &[IsolationLevel],
) {
    let text = serde_json::to_string_pretty(report).unwrap();
    assert_eq!(report.verdict, Verdict::Invalid, "{text}");
    assert!(
        names(report).contains(&anomaly),
        "{anomaly:?} missing: {text}"
    );
    for name in names(report) {
        assert!(
            name == anomaly || also.contains(&name),
            "unexpected {name:?}: {text}"
        );
    }
    assert_eq!(report.ruled_out, levels, "{text}");
}

const FROM_READ_COMMITTED: &[IsolationLevel] = &[
    ReadCommitted,
    RepeatableRead,
    SnapshotIsolation,
    Serializable,
    StrongSessionSerializable,
    StrictSerializable,
];

/// Two transactions run concurrently: both invoked, then both completed.
fn concurrently(builder: &mut Builder, a: Json, b: Json) {
    builder
        .invoke(0, a.clone())
        .invoke(1, b.clone())
        .ok(0, a)
        .ok(1, b);
}

#[test]
fn g0_two_transactions_append_to_two_keys_in_opposite_orders() {
    let mut h = Builder::default();
    concurrently(
        &mut h,
        json!([["append", "x", 1], ["append", "y", 1]]),
        json!([["append", "x", 2], ["append", "y", 2]]),
    );
    h.txn(2, json!([["r", "x", [1, 2]], ["r", "y", [2, 1]]]));
    let report = h.check(Workload::ListAppend);
    assert_finds(&report, AnomalyName::G0, &[], &IsolationLevel::ALL);
    let g0 = &report.anomalies[0];
    assert_eq!(g0.edge_kinds, [EdgeKind::Ww]);
    assert_eq!(g0.explanation, "T1 --ww x:1→2--> T2 --ww y:2→1--> T1");
}

#[test]
fn g1a_a_committed_read_sees_an_append_of_a_failed_transaction() {
    let mut h = Builder::default();
    h.invoke(0, json!([["append", "x", 1]]))
        .fail(0, json!([["append", "x", 1]]));
    h.txn(1, json!([["r", "x", [1]]]));
    let report = h.check(Workload::ListAppend);
    assert_finds(&report, AnomalyName::G1a, &[], FROM_READ_COMMITTED);
    assert!(report.anomalies[0].explanation.contains("T1, which failed"));
}

#[test]
fn g1b_a_read_sees_a_state_its_writer_changed_again() {
    let mut h = Builder::default();
    concurrently(
        &mut h,
        json!([["append", "x", 1], ["append", "x", 2]]),
        json!([["r", "x", [1]]]),
    );
    let report = h.check(Workload::ListAppend);
    // Reading T1's intermediate state also makes T2 miss T1's later append: a G-single.
    assert_finds(
        &report,
        AnomalyName::G1b,
        &[AnomalyName::GSingle],
        FROM_READ_COMMITTED,
    );
}

#[test]
fn g1c_two_transactions_read_each_others_appends() {
    let mut h = Builder::default();
    concurrently(
        &mut h,
        json!([["append", "x", 1], ["r", "y", [1]]]),
        json!([["append", "y", 1], ["r", "x", [1]]]),
    );
    let report = h.check(Workload::ListAppend);
    assert_finds(&report, AnomalyName::G1c, &[], FROM_READ_COMMITTED);
    assert_eq!(report.anomalies[0].edge_kinds, [EdgeKind::Wr]);
}

#[test]
fn g_single_read_skew_sees_half_of_a_transaction() {
    let mut h = Builder::default();
    concurrently(
        &mut h,
        json!([["r", "x", []], ["r", "y", [1]]]),
        json!([["append", "x", 1], ["append", "y", 1]]),
    );
    let report = h.check(Workload::ListAppend);
    assert_finds(
        &report,
        AnomalyName::GSingle,
        &[],
        &[
            RepeatableRead,
            SnapshotIsolation,
            Serializable,
            StrongSessionSerializable,
            StrictSerializable,
        ],
    );
    let cycle = &report.anomalies[0];
    assert_eq!(cycle.edge_kinds, [EdgeKind::Wr, EdgeKind::Rw]);
    assert_eq!(cycle.explanation, "T1 --rw x:init→1--> T2 --wr y:1--> T1");
}

#[test]
fn g2_item_write_skew_is_allowed_by_snapshot_isolation_only() {
    let mut h = Builder::default();
    concurrently(
        &mut h,
        json!([["r", "x", []], ["r", "y", []], ["append", "x", 1]]),
        json!([["r", "x", []], ["r", "y", []], ["append", "y", 1]]),
    );
    let report = h.check(Workload::ListAppend);
    assert_finds(
        &report,
        AnomalyName::G2Item,
        &[],
        &[
            RepeatableRead,
            Serializable,
            StrongSessionSerializable,
            StrictSerializable,
        ],
    );
    assert!(!report.ruled_out.contains(&SnapshotIsolation));
    assert_eq!(report.anomalies[0].edge_kinds, [EdgeKind::Rw]);
}

#[test]
fn lost_update_two_transactions_read_the_same_version_and_append() {
    let mut h = Builder::default();
    concurrently(
        &mut h,
        json!([["r", "x", []], ["append", "x", 1]]),
        json!([["r", "x", []], ["append", "x", 2]]),
    );
    h.txn(2, json!([["r", "x", [1, 2]]]));
    let report = h.check(Workload::ListAppend);
    assert_finds(
        &report,
        AnomalyName::LostUpdate,
        &[AnomalyName::GSingle],
        &[
            RepeatableRead,
            SnapshotIsolation,
            Serializable,
            StrongSessionSerializable,
            StrictSerializable,
        ],
    );
    let lost = report
        .anomalies
        .iter()
        .find(|a| a.name == AnomalyName::LostUpdate)
        .unwrap();
    assert_eq!(
        lost.explanation,
        "T1, T2 all read x at version init and then appended to it"
    );
}

#[test]
fn incompatible_order_two_reads_disagree_on_the_order_of_appends() {
    let mut h = Builder::default();
    concurrently(
        &mut h,
        json!([["append", "x", 1]]),
        json!([["append", "x", 2]]),
    );
    h.txn(2, json!([["r", "x", [1, 2]]]));
    h.txn(3, json!([["r", "x", [2, 1]]]));
    let report = h.check(Workload::ListAppend);
    assert_finds(
        &report,
        AnomalyName::IncompatibleOrder,
        &[],
        FROM_READ_COMMITTED,
    );
}

#[test]
fn internal_a_read_misses_the_transactions_own_append() {
    let mut h = Builder::default();
    h.txn(0, json!([["append", "x", 1], ["r", "x", []]]));
    let report = h.check(Workload::ListAppend);
    assert_finds(
        &report,
        AnomalyName::Internal,
        &[],
        &[
            SnapshotIsolation,
            Serializable,
            StrongSessionSerializable,
            StrictSerializable,
        ],
    );
}

#[test]
fn garbage_read_and_duplicate_elements_rule_out_every_level() {
    let mut h = Builder::default();
    h.txn(0, json!([["r", "x", [5]]]));
    let report = h.check(Workload::ListAppend);
    assert_finds(&report, AnomalyName::GarbageRead, &[], &IsolationLevel::ALL);

    let mut h = Builder::default();
    h.txn(0, json!([["append", "x", 1]]));
    h.txn(1, json!([["r", "x", [1, 1]]]));
    let report = h.check(Workload::ListAppend);
    assert_finds(
        &report,
        AnomalyName::DuplicateElements,
        &[],
        &IsolationLevel::ALL,
    );
}

#[test]
fn a_stale_read_by_the_same_process_is_a_process_cycle() {
    let mut h = Builder::default();
    h.txn(0, json!([["append", "x", 1]]));
    h.txn(0, json!([["r", "x", []]]));
    let report = h.check(Workload::ListAppend);
    assert_finds(
        &report,
        AnomalyName::GSingleProcess,
        &[],
        &[StrongSessionSerializable, StrictSerializable],
    );
    assert_eq!(
        report.anomalies[0].edge_kinds,
        [EdgeKind::Rw, EdgeKind::Process]
    );
}

#[test]
fn a_stale_read_by_another_process_is_a_realtime_cycle() {
    let mut h = Builder::default();
    h.txn(0, json!([["append", "x", 1]]));
    h.txn(1, json!([["r", "x", []]]));
    let report = h.check(Workload::ListAppend);
    assert_finds(
        &report,
        AnomalyName::GSingleRealtime,
        &[],
        &[StrictSerializable],
    );
    assert_eq!(
        report.anomalies[0].edge_kinds,
        [EdgeKind::Rw, EdgeKind::Realtime]
    );
}

#[test]
fn rw_register_finds_each_anomaly() {
    let cases: Vec<(AnomalyName, &[AnomalyName], Builder)> = vec![
        (AnomalyName::G1a, &[], {
            let mut h = Builder::default();
            h.invoke(0, json!([["w", "x", 1]]))
                .fail(0, json!([["w", "x", 1]]));
            h.txn(1, json!([["r", "x", 1]]));
            h
        }),
        (AnomalyName::G1b, &[], {
            let mut h = Builder::default();
            concurrently(
                &mut h,
                json!([["w", "x", 1], ["w", "x", 2]]),
                json!([["r", "x", 1]]),
            );
            h
        }),
        (AnomalyName::G1c, &[], {
            let mut h = Builder::default();
            concurrently(
                &mut h,
                json!([["w", "x", 1], ["r", "y", 1]]),
                json!([["w", "y", 1], ["r", "x", 1]]),
            );
            h
        }),
        (AnomalyName::GSingle, &[], {
            let mut h = Builder::default();
            concurrently(
                &mut h,
                json!([["r", "x", null], ["r", "y", 1]]),
                json!([["w", "x", 1], ["w", "y", 1]]),
            );
            h
        }),
        (AnomalyName::G2Item, &[], {
            let mut h = Builder::default();
            concurrently(
                &mut h,
                json!([["r", "x", null], ["r", "y", null], ["w", "x", 1]]),
                json!([["r", "x", null], ["r", "y", null], ["w", "y", 1]]),
            );
            h
        }),
        (AnomalyName::LostUpdate, &[AnomalyName::G2Item], {
            let mut h = Builder::default();
            concurrently(
                &mut h,
                json!([["r", "x", null], ["w", "x", 1]]),
                json!([["r", "x", null], ["w", "x", 2]]),
            );
            h
        }),
        (AnomalyName::G0, &[AnomalyName::G1c], {
            // Each reads the other's write of one key and overwrites it: x goes 1 then 2,
            // y goes 2 then 1.
            let mut h = Builder::default();
            concurrently(
                &mut h,
                json!([["r", "y", 2], ["w", "x", 1], ["w", "y", 1]]),
                json!([["r", "x", 1], ["w", "x", 2], ["w", "y", 2]]),
            );
            h
        }),
        (AnomalyName::Internal, &[], {
            let mut h = Builder::default();
            h.txn(0, json!([["w", "x", 1], ["r", "x", 2]]));
            h.txn(1, json!([["w", "x", 2]]));
            h
        }),
        (AnomalyName::GarbageRead, &[], {
            let mut h = Builder::default();
            h.txn(0, json!([["r", "x", 9]]));
            h
        }),
        (AnomalyName::IncompatibleOrder, &[AnomalyName::G1c], {
            let mut h = Builder::default();
            concurrently(
                &mut h,
                json!([["r", "x", 2], ["w", "x", 1]]),
                json!([["r", "x", 1], ["w", "x", 2]]),
            );
            h
        }),
    ];
    for (anomaly, also, history) in cases {
        let report = history.check(Workload::RwRegister);
        let text = serde_json::to_string_pretty(&report).unwrap();
        assert!(names(&report).contains(&anomaly), "{anomaly:?}: {text}");
        for name in names(&report) {
            assert!(
                name == anomaly || also.contains(&name),
                "{anomaly:?}: unexpected {name:?}: {text}"
            );
        }
    }
}

#[test]
fn edn_transactions_are_read_as_jepsen_writes_them() {
    let text = "{:process 0, :type :invoke, :f :txn, :value [[:append :x 1] [:r :y nil]]}\n\
                {:process 0, :type :ok, :f :txn, :value [[:append :x 1] [:r :y [2]]]}\n\
                {:process 1, :type :invoke, :f :txn, :value [[:append :y 2] [:r :x nil]]}\n\
                {:process 1, :type :ok, :f :txn, :value [[:append :y 2] [:r :x [1]]]}\n";
    let history = read_edn(text.as_bytes()).unwrap();
    let report = check_txn(&history, Workload::ListAppend).unwrap();
    assert_eq!(names(&report), [AnomalyName::G1c]);
}

/// A random serial execution against a real store ([`serial_txn_history`]).
fn serial_history(workload: Workload, seed: u64, txns: usize) -> History {
    serial_txn_history(workload, seed, txns)
}

#[test]
fn random_serial_executions_report_no_anomaly() {
    for workload in [Workload::ListAppend, Workload::RwRegister] {
        for seed in 0..40 {
            let history = serial_history(workload, seed, 300);
            let report = check(&history, workload).unwrap();
            assert_eq!(
                report.verdict,
                Verdict::Valid,
                "seed={seed} {workload:?}: {}",
                serde_json::to_string_pretty(&report).unwrap()
            );
            assert!(report.ruled_out.is_empty());
            assert!(report.edges.contains_key(&EdgeKind::Realtime));
        }
    }
}

#[test]
fn twenty_thousand_serial_transactions_are_checked_quickly() {
    let history = serial_history(Workload::ListAppend, 7, 20_000);
    let report = check(&history, Workload::ListAppend).unwrap();
    assert_eq!(report.verdict, Verdict::Valid);
    assert!(report.edges[&EdgeKind::Ww] > 1_000);
}

#[test]
fn duplicate_appends_and_malformed_transactions_are_errors() {
    let mut h = Builder::default();
    h.txn(0, json!([["append", "x", 1]]));
    h.txn(1, json!([["append", "x", 1]]));
    let error = check(&h.history, Workload::ListAppend).unwrap_err();
    assert!(
        error.to_string().contains("written to key x twice"),
        "{error}"
    );

    let mut h = Builder::default();
    h.txn(0, json!([["append", "x", 1]]));
    let error = check(&h.history, Workload::RwRegister).unwrap_err();
    assert_eq!(
        error.to_string(),
        "history event 1: micro-operation 1: unknown function 'append' for rw-register (w, r)"
    );
}
