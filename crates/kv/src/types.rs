//! The data model shared by requests, responses and the store: revisions, key-values, lease
//! identifiers and etcd's key-range conventions.

use serde::{Deserialize, Serialize};

/// A main revision of the store, as etcd's `int64` revision. A store that was never written is
/// at revision 1, and the first write makes it 2, as in etcd. Each write transaction adds
/// exactly one.
pub type Revision = i64;

/// A lease identifier, as etcd's `int64` lease ID. 0 means "no lease".
pub type LeaseId = i64;

/// "No lease": the lease of a key that is not attached to one.
pub const NO_LEASE: LeaseId = 0;

/// The position of one write inside the store's history: the write transaction's main
/// revision and the write's index inside that transaction (etcd's `revision{main, sub}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SubRevision {
    /// The main revision of the transaction that made the write.
    pub main: Revision,
    /// The write's index inside that transaction, from 0.
    pub sub: i64,
}

/// A key and its value with etcd's metadata (`mvccpb.KeyValue`).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The revision of the last creation of the key (0 in a tombstone).
    pub create_revision: Revision,
    /// The revision of the last modification of the key (the deletion's, in a tombstone).
    pub mod_revision: Revision,
    /// How many times the key was written since it was created (1 after creation; 0 in a
    /// tombstone). A delete resets it.
    pub version: i64,
    /// The value (empty in a tombstone).
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// The lease the key is attached to, or [`NO_LEASE`].
    pub lease: LeaseId,
}

impl KeyValue {
    /// The tombstone etcd reports for a deletion: only the key and the deletion's revision.
    pub fn tombstone(key: Vec<u8>, revision: Revision) -> Self {
        Self {
            key,
            mod_revision: revision,
            ..Self::default()
        }
    }
}

/// The header every response carries. The API layer adds the cluster ID, member ID and Raft
/// term; the store knows the revision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResponseHeader {
    /// The store's revision when the response was made: for a write, the revision it created
    /// (or the unchanged revision when it wrote nothing); for a read, the revision it read at
    /// inside a transaction, else the current revision.
    pub revision: Revision,
}

/// The set of keys a `key`/`range_end` pair names, by etcd's conventions:
///
/// * `range_end` empty: the single key `key`;
/// * `range_end` = `[0]`: every key `>= key` (and with `key` = `[0]` too: every key);
/// * otherwise the half-open interval `[key, range_end)`, empty when `key >= range_end`. A
///   prefix `p` is the range `[p, p+1)`, computed by the client ([`prefix_end`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRange<'a> {
    /// One key.
    Single(&'a [u8]),
    /// Every key from the first, inclusive, to the second, exclusive (`None`: no upper bound).
    Interval(&'a [u8], Option<&'a [u8]>),
}

impl<'a> KeyRange<'a> {
    /// Interprets a request's `key` and `range_end`.
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(key),
            [0] => KeyRange::Interval(key, None),
            end => KeyRange::Interval(key, Some(end)),
        }
    }

    /// Whether `candidate` is in the range.
    pub fn contains(&self, candidate: &[u8]) -> bool {
        match *self {
            KeyRange::Single(key) => candidate == key,
            KeyRange::Interval(start, end) => {
                candidate >= start && end.is_none_or(|end| candidate < end)
            }
        }
    }

    /// Whether the range names no key at all (an interval whose end is not after its start).
    pub fn is_empty(&self) -> bool {
        match *self {
            KeyRange::Single(_) => false,
            KeyRange::Interval(start, Some(end)) => start >= end,
            KeyRange::Interval(_, None) => false,
        }
    }

    /// Whether the two ranges share a key.
    pub fn intersects(&self, other: &KeyRange<'_>) -> bool {
        if self.is_empty() || other.is_empty() {
            return false;
        }
        match (*self, *other) {
            (KeyRange::Single(key), range) | (range, KeyRange::Single(key)) => range.contains(key),
            (KeyRange::Interval(a_start, a_end), KeyRange::Interval(b_start, b_end)) => {
                // [a, a_end) and [b, b_end) intersect iff each starts before the other ends.
                a_end.is_none_or(|end| b_start < end) && b_end.is_none_or(|end| a_start < end)
            }
        }
    }
}

/// The `range_end` that names every key starting with `prefix` (etcd's `GetPrefixRangeEnd`):
/// the prefix with its last byte below `0xff` incremented and what follows it dropped, or
/// `[0]` (every key) when the prefix is empty or all `0xff`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_conventions() {
        assert!(KeyRange::new(b"a", b"").contains(b"a"));
        assert!(!KeyRange::new(b"a", b"").contains(b"ab"));
        assert!(KeyRange::new(b"a", b"\0").contains(b"zzz"));
        assert!(!KeyRange::new(b"b", b"\0").contains(b"a"));
        assert!(KeyRange::new(b"\0", b"\0").contains(b"\0"));
        assert!(KeyRange::new(b"a", b"c").contains(b"b"));
        assert!(!KeyRange::new(b"a", b"c").contains(b"c"));
        assert!(KeyRange::new(b"c", b"a").is_empty());
        assert!(KeyRange::new(b"a", b"a").is_empty());
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"foo"), b"fop".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn intersections() {
        let single = KeyRange::new(b"b", b"");
        assert!(single.intersects(&KeyRange::new(b"a", b"c")));
        assert!(!single.intersects(&KeyRange::new(b"c", b"d")));
        assert!(KeyRange::new(b"a", b"c").intersects(&KeyRange::new(b"b", b"\0")));
        assert!(!KeyRange::new(b"a", b"b").intersects(&KeyRange::new(b"b", b"c")));
        assert!(!KeyRange::new(b"c", b"a").intersects(&KeyRange::new(b"a", b"\0")));
    }
}
