//! [`StateBytes`]: a state machine's serialized state, held as shared parts.
//!
//! A snapshot of a large state is taken while the node waits, then kept by the protocol, sent
//! to followers and written to disk by the runtime. Held as one buffer, taking it means copying
//! the whole state at least once on the node's step. A state machine that keeps its encoding up
//! to date as it changes (the key-value database does) hands out its parts instead: taking the
//! snapshot copies only the part still growing, and every holder shares the rest.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes made of shared, immutable parts, read as one sequence. Cloning shares them. Equality
/// compares the bytes, however they are split.
#[derive(Clone, Default)]
pub struct StateBytes {
    parts: Arc<[Bytes]>,
    len: usize,
}

impl StateBytes {
    /// The bytes of `parts` in order (empty parts are dropped).
    pub fn from_parts(parts: impl IntoIterator<Item = Bytes>) -> Self {
        let parts: Arc<[Bytes]> = parts.into_iter().filter(|part| !part.is_empty()).collect();
        let len = parts.iter().map(Bytes::len).sum();
        StateBytes { parts, len }
    }

    /// The number of bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The parts, in order; none is empty.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The bytes in `range` (clamped to the length): shared when they lie in one part, else
    /// copied.
    pub fn slice(&self, range: Range<usize>) -> Bytes {
        let end = range.end.min(self.len);
        let start = range.start.min(end);
        let mut part_start = 0;
        let mut copy: Option<Vec<u8>> = None;
        for part in self.parts.iter() {
            let part_end = part_start + part.len();
            if part_end > start && part_start < end {
                let from = start.saturating_sub(part_start);
                let to = end.min(part_end) - part_start;
                match &mut copy {
                    None if part_end >= end => return part.slice(from..to),
                    None => {
                        let mut bytes = Vec::with_capacity(end - start);
                        bytes.extend_from_slice(&part[from..to]);
                        copy = Some(bytes);
                    }
                    Some(bytes) => bytes.extend_from_slice(&part[from..to]),
                }
            }
            if part_end >= end {
                break;
            }
            part_start = part_end;
        }
        copy.map(Bytes::from).unwrap_or_default()
    }

    /// All the bytes in one buffer: shared if there is one part, else copied.
    pub fn contiguous(&self) -> Bytes {
        self.slice(0..self.len)
    }
}

impl From<Vec<u8>> for StateBytes {
    fn from(bytes: Vec<u8>) -> Self {
        StateBytes::from_parts([Bytes::from(bytes)])
    }
}

impl From<Bytes> for StateBytes {
    fn from(bytes: Bytes) -> Self {
        StateBytes::from_parts([bytes])
    }
}

impl PartialEq for StateBytes {
    fn eq(&self, other: &Self) -> bool {
        if self.len != other.len {
            return false;
        }
        let mut left = self.parts.iter().map(|part| &part[..]);
        let mut right = other.parts.iter().map(|part| &part[..]);
        let (mut a, mut b): (&[u8], &[u8]) = (&[], &[]);
        loop {
            if a.is_empty() {
                match left.next() {
                    Some(part) => a = part,
                    None => return b.is_empty() && right.next().is_none(),
                }
            }
            if b.is_empty() {
                match right.next() {
                    Some(part) => b = part,
                    None => return false,
                }
            }
            let n = a.len().min(b.len());
            if a[..n] != b[..n] {
                return false;
            }
            a = &a[n..];
            b = &b[n..];
        }
    }
}

impl Eq for StateBytes {}

impl std::fmt::Debug for StateBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StateBytes({} bytes in {} parts)",
            self.len,
            self.parts.len()
        )
    }
}

/// One byte string, as a `Vec<u8>` with `serde_bytes` is (the parts are joined).
impl Serialize for StateBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.contiguous())
    }
}

/// Reads a byte string (or a sequence of bytes) as one part.
impl<'de> Deserialize<'de> for StateBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(deserializer)?;
        Ok(StateBytes::from(bytes.into_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(bytes: &[u8], cuts: &[usize]) -> StateBytes {
        let mut parts = Vec::new();
        let mut from = 0;
        for &cut in cuts {
            parts.push(Bytes::copy_from_slice(&bytes[from..cut]));
            from = cut;
        }
        parts.push(Bytes::copy_from_slice(&bytes[from..]));
        StateBytes::from_parts(parts)
    }

    #[test]
    fn slices_and_equality_do_not_depend_on_where_the_parts_split() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let whole = StateBytes::from(bytes.clone());
        for cuts in [&[][..], &[1], &[10, 10, 500], &[999], &[0, 300, 301, 700]] {
            let parts = split(&bytes, cuts);
            assert_eq!(parts, whole, "{cuts:?}");
            assert_eq!(parts.len(), 1000);
            assert_eq!(&parts.contiguous()[..], &bytes[..]);
            for (start, end) in [
                (0, 1000),
                (0, 0),
                (5, 11),
                (299, 302),
                (650, 2000),
                (1200, 1300),
            ] {
                let expected = &bytes[start.min(1000)..end.min(1000)];
                assert_eq!(
                    &parts.slice(start..end)[..],
                    expected,
                    "{cuts:?} {start}..{end}"
                );
            }
        }
        let mut changed = bytes.clone();
        changed[700] ^= 1;
        assert_ne!(split(&changed, &[300, 900]), whole);
        assert_ne!(split(&bytes[..999], &[300]), whole);
    }

    #[test]
    fn a_slice_within_one_part_shares_it() {
        let parts = split(&[7u8; 100], &[40]);
        let inner = parts.slice(45..90);
        assert_eq!(inner.len(), 45);
        assert_eq!(inner.as_ptr(), parts.parts()[1][5..].as_ptr());
    }

    #[test]
    fn it_serializes_as_the_byte_string_of_its_bytes() {
        let bytes: Vec<u8> = (0..200u8).collect();
        let encoded = serde_json::to_string(&split(&bytes, &[50, 120])).unwrap();
        assert_eq!(
            encoded,
            serde_json::to_string(&serde_bytes::ByteBuf::from(bytes.clone())).unwrap()
        );
        let decoded: StateBytes = serde_json::from_str(&encoded).unwrap();
        assert_eq!(&decoded.contiguous()[..], &bytes[..]);
        assert_eq!(decoded.parts().len(), 1);
    }
}
