//! The anomalies the transactional check names, the isolation levels, and which anomaly rules
//! out which level.
//!
//! Cycle anomalies follow Adya ("Weak Consistency: A Generalized Theory and Optimistic
//! Implementations for Distributed Transactions", MIT 1999, §3–4): G0 (write cycle), G1c
//! (circular information flow), G-single (single anti-dependency cycle), G2-item (item
//! anti-dependency cycles). The `-process` and `-realtime` variants are Elle's (Kingsbury &
//! Alvaro 2020): the same cycles, which exist only once process or real-time order is added.
//! The levels each anomaly rules out follow Adya's definitions of PL-1 to PL-3, PL-SI and
//! PL-SS, Berenson et al. 1995 for lost update, and Elle's `consistency-model` table for the
//! rest; `docs/checkers.md` tabulates them with their sources.

use serde::Serialize;

use crate::txn::graph::{CycleClass, EdgeKind};

/// The name of an anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum AnomalyName {
    /// A cycle of write-write edges only (Adya's G0, dirty write).
    #[serde(rename = "G0")]
    G0,
    /// A read of a value written by a transaction that aborted (Adya's G1a).
    #[serde(rename = "G1a")]
    G1a,
    /// A read of a state a transaction later changed within itself (Adya's G1b).
    #[serde(rename = "G1b")]
    G1b,
    /// A cycle of write-write and write-read edges, with at least one write-read (Adya's G1c).
    #[serde(rename = "G1c")]
    G1c,
    /// A cycle with exactly one anti-dependency edge (Adya's G-single, read skew).
    #[serde(rename = "G-single")]
    GSingle,
    /// A cycle with two or more item anti-dependency edges (Adya's G2-item, write skew).
    #[serde(rename = "G2-item")]
    G2Item,
    /// A G0 cycle that needs process order.
    #[serde(rename = "G0-process")]
    G0Process,
    /// A G1c cycle that needs process order.
    #[serde(rename = "G1c-process")]
    G1cProcess,
    /// A G-single cycle that needs process order.
    #[serde(rename = "G-single-process")]
    GSingleProcess,
    /// A G2-item cycle that needs process order.
    #[serde(rename = "G2-item-process")]
    G2ItemProcess,
    /// A G0 cycle that needs real-time order.
    #[serde(rename = "G0-realtime")]
    G0Realtime,
    /// A G1c cycle that needs real-time order.
    #[serde(rename = "G1c-realtime")]
    G1cRealtime,
    /// A G-single cycle that needs real-time order.
    #[serde(rename = "G-single-realtime")]
    GSingleRealtime,
    /// A G2-item cycle that needs real-time order.
    #[serde(rename = "G2-item-realtime")]
    G2ItemRealtime,
    /// Two committed transactions read the same version of a key and both wrote it.
    #[serde(rename = "lost-update")]
    LostUpdate,
    /// Reads of a key that no single order of its versions explains.
    #[serde(rename = "incompatible-order")]
    IncompatibleOrder,
    /// A read that does not reflect the transaction's own earlier reads and writes.
    #[serde(rename = "internal")]
    Internal,
    /// A read of a value no transaction ever wrote.
    #[serde(rename = "garbage-read")]
    GarbageRead,
    /// A list read containing one element more than once.
    #[serde(rename = "duplicate-elements")]
    DuplicateElements,
}

impl AnomalyName {
    /// The name as reports print it (`G-single`, `lost-update`, ...).
    pub fn name(self) -> &'static str {
        match self {
            AnomalyName::G0 => "G0",
            AnomalyName::G1a => "G1a",
            AnomalyName::G1b => "G1b",
            AnomalyName::G1c => "G1c",
            AnomalyName::GSingle => "G-single",
            AnomalyName::G2Item => "G2-item",
            AnomalyName::G0Process => "G0-process",
            AnomalyName::G1cProcess => "G1c-process",
            AnomalyName::GSingleProcess => "G-single-process",
            AnomalyName::G2ItemProcess => "G2-item-process",
            AnomalyName::G0Realtime => "G0-realtime",
            AnomalyName::G1cRealtime => "G1c-realtime",
            AnomalyName::GSingleRealtime => "G-single-realtime",
            AnomalyName::G2ItemRealtime => "G2-item-realtime",
            AnomalyName::LostUpdate => "lost-update",
            AnomalyName::IncompatibleOrder => "incompatible-order",
            AnomalyName::Internal => "internal",
            AnomalyName::GarbageRead => "garbage-read",
            AnomalyName::DuplicateElements => "duplicate-elements",
        }
    }

    /// The weakest isolation levels this anomaly rules out; every stronger level is ruled out
    /// with them (see [`IsolationLevel::stronger`]).
    pub fn rules_out(self) -> &'static [IsolationLevel] {
        use IsolationLevel::*;
        match self {
            // No Adya history has them: a version order is total, every value read was written.
            AnomalyName::G0 | AnomalyName::GarbageRead | AnomalyName::DuplicateElements => {
                &[ReadUncommitted]
            }
            // Elle: incompatible orders imply an aborted (dirty) read.
            AnomalyName::G1a
            | AnomalyName::G1b
            | AnomalyName::G1c
            | AnomalyName::IncompatibleOrder => &[ReadCommitted],
            // Item anti-dependencies only, so a G-single is also a G2-item.
            AnomalyName::GSingle => &[SnapshotIsolation, RepeatableRead],
            AnomalyName::G2Item => &[RepeatableRead],
            // Berenson et al. 1995: P4 is prevented by repeatable read and snapshot isolation.
            AnomalyName::LostUpdate => &[RepeatableRead, SnapshotIsolation],
            // Cerone et al. 2015's INT axiom, which their SI and serializability assume.
            AnomalyName::Internal => &[SnapshotIsolation, Serializable],
            AnomalyName::G0Process
            | AnomalyName::G1cProcess
            | AnomalyName::GSingleProcess
            | AnomalyName::G2ItemProcess => &[StrongSessionSerializable],
            AnomalyName::G0Realtime
            | AnomalyName::G1cRealtime
            | AnomalyName::GSingleRealtime
            | AnomalyName::G2ItemRealtime => &[StrictSerializable],
        }
    }
}

/// An isolation level a history can rule out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IsolationLevel {
    /// Adya's PL-1: no G0.
    ReadUncommitted,
    /// Adya's PL-2: no G1 (G1a, G1b, G1c).
    ReadCommitted,
    /// Adya's PL-2.99: no G1, no G2-item.
    RepeatableRead,
    /// Adya's PL-SI: no G1, no G-single (nor G-SI).
    SnapshotIsolation,
    /// Adya's PL-3: no G1, no G2.
    Serializable,
    /// Serializable, and each process sees its own past (Daudjee & Salem 2004).
    StrongSessionSerializable,
    /// Adya's PL-SS: serializable in an order consistent with real time.
    StrictSerializable,
}

impl IsolationLevel {
    /// Every level, weakest first.
    pub const ALL: [IsolationLevel; 7] = [
        IsolationLevel::ReadUncommitted,
        IsolationLevel::ReadCommitted,
        IsolationLevel::RepeatableRead,
        IsolationLevel::SnapshotIsolation,
        IsolationLevel::Serializable,
        IsolationLevel::StrongSessionSerializable,
        IsolationLevel::StrictSerializable,
    ];

    /// The level's name (`snapshot-isolation`, ...).
    pub fn name(self) -> &'static str {
        match self {
            IsolationLevel::ReadUncommitted => "read-uncommitted",
            IsolationLevel::ReadCommitted => "read-committed",
            IsolationLevel::RepeatableRead => "repeatable-read",
            IsolationLevel::SnapshotIsolation => "snapshot-isolation",
            IsolationLevel::Serializable => "serializable",
            IsolationLevel::StrongSessionSerializable => "strong-session-serializable",
            IsolationLevel::StrictSerializable => "strict-serializable",
        }
    }

    /// The levels directly stronger than this one (a history that has one of them has this
    /// one), as in Elle's model hierarchy.
    pub fn stronger(self) -> &'static [IsolationLevel] {
        use IsolationLevel::*;
        match self {
            ReadUncommitted => &[ReadCommitted],
            ReadCommitted => &[RepeatableRead, SnapshotIsolation],
            RepeatableRead | SnapshotIsolation => &[Serializable],
            Serializable => &[StrongSessionSerializable],
            StrongSessionSerializable => &[StrictSerializable],
            StrictSerializable => &[],
        }
    }
}

/// Every level the anomalies rule out, weakest first.
pub fn ruled_out(anomalies: impl IntoIterator<Item = AnomalyName>) -> Vec<IsolationLevel> {
    let mut out = [false; IsolationLevel::ALL.len()];
    let mut stack: Vec<IsolationLevel> = anomalies
        .into_iter()
        .flat_map(|a| a.rules_out().iter().copied())
        .collect();
    while let Some(level) = stack.pop() {
        if !std::mem::replace(&mut out[level as usize], true) {
            stack.extend_from_slice(level.stronger());
        }
    }
    IsolationLevel::ALL
        .into_iter()
        .filter(|&level| out[level as usize])
        .collect()
}

const DATA_WW: &[EdgeKind] = &[EdgeKind::Ww];
const DATA_WR: &[EdgeKind] = &[EdgeKind::Ww, EdgeKind::Wr];
const DATA_ALL: &[EdgeKind] = &[EdgeKind::Ww, EdgeKind::Wr, EdgeKind::Rw];
const PROCESS_WW: &[EdgeKind] = &[EdgeKind::Ww, EdgeKind::Process];
const PROCESS_WR: &[EdgeKind] = &[EdgeKind::Ww, EdgeKind::Wr, EdgeKind::Process];
const PROCESS_ALL: &[EdgeKind] = &[EdgeKind::Ww, EdgeKind::Wr, EdgeKind::Rw, EdgeKind::Process];
const REALTIME_WW: &[EdgeKind] = &[EdgeKind::Ww, EdgeKind::Process, EdgeKind::Realtime];
const REALTIME_WR: &[EdgeKind] = &[
    EdgeKind::Ww,
    EdgeKind::Wr,
    EdgeKind::Process,
    EdgeKind::Realtime,
];
const REALTIME_ALL: &[EdgeKind] = &[
    EdgeKind::Ww,
    EdgeKind::Wr,
    EdgeKind::Rw,
    EdgeKind::Process,
    EdgeKind::Realtime,
];

const fn class(
    allowed: &'static [EdgeKind],
    required: &'static [EdgeKind],
    rw_exactly: Option<u8>,
    rw_at_least: u8,
) -> CycleClass {
    CycleClass {
        allowed,
        required,
        rw_exactly,
        rw_at_least,
    }
}

/// The cycle anomalies, in groups of three: the data-only class, then its process and
/// real-time variants. A variant is searched in a component only when the classes before it
/// in its group found nothing there.
pub const CYCLE_CLASSES: [[(AnomalyName, CycleClass); 3]; 4] = [
    [
        (AnomalyName::G0, class(DATA_WW, &[], Some(0), 0)),
        (
            AnomalyName::G0Process,
            class(PROCESS_WW, &[EdgeKind::Process], Some(0), 0),
        ),
        (
            AnomalyName::G0Realtime,
            class(REALTIME_WW, &[EdgeKind::Realtime], Some(0), 0),
        ),
    ],
    [
        (
            AnomalyName::G1c,
            class(DATA_WR, &[EdgeKind::Wr], Some(0), 0),
        ),
        (
            AnomalyName::G1cProcess,
            class(PROCESS_WR, &[EdgeKind::Process, EdgeKind::Wr], Some(0), 0),
        ),
        (
            AnomalyName::G1cRealtime,
            class(REALTIME_WR, &[EdgeKind::Realtime, EdgeKind::Wr], Some(0), 0),
        ),
    ],
    [
        (
            AnomalyName::GSingle,
            class(DATA_ALL, &[EdgeKind::Rw], Some(1), 1),
        ),
        (
            AnomalyName::GSingleProcess,
            class(PROCESS_ALL, &[EdgeKind::Process, EdgeKind::Rw], Some(1), 1),
        ),
        (
            AnomalyName::GSingleRealtime,
            class(
                REALTIME_ALL,
                &[EdgeKind::Realtime, EdgeKind::Rw],
                Some(1),
                1,
            ),
        ),
    ],
    [
        (
            AnomalyName::G2Item,
            class(DATA_ALL, &[EdgeKind::Rw], None, 2),
        ),
        (
            AnomalyName::G2ItemProcess,
            class(PROCESS_ALL, &[EdgeKind::Process, EdgeKind::Rw], None, 2),
        ),
        (
            AnomalyName::G2ItemRealtime,
            class(REALTIME_ALL, &[EdgeKind::Realtime, EdgeKind::Rw], None, 2),
        ),
    ],
];

#[cfg(test)]
mod tests {
    use super::*;
    use IsolationLevel::*;

    #[test]
    fn levels_ruled_out_close_upwards() {
        assert_eq!(ruled_out([AnomalyName::G0]), IsolationLevel::ALL);
        assert_eq!(
            ruled_out([AnomalyName::G2Item]),
            [
                RepeatableRead,
                Serializable,
                StrongSessionSerializable,
                StrictSerializable
            ]
        );
        assert_eq!(ruled_out([AnomalyName::G1cRealtime]), [StrictSerializable]);
        assert_eq!(ruled_out([]), []);
    }
}
