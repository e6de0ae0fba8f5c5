//! A reader and writer of bbolt database files, the format etcd keeps its backend in and
//! streams as its snapshot (`etcdctl snapshot save`), so that Concord DB's backups are read by
//! `etcdctl snapshot status` and `etcdctl snapshot restore`, and etcd's are read by
//! `concord db restore`.
//!
//! Only what a snapshot needs: top-level buckets of byte keys and values (etcd has no nested
//! buckets). The writer lays a file out once, bottom-up, as one committed transaction; the
//! reader walks any valid file, checking every offset, so a damaged one is an error and never
//! a panic.
//!
//! The layout (bbolt's `page.go`, `meta` and `freelist`), every integer little-endian:
//!
//! * The file is pages of `page_size` bytes; page `n` starts at `n * page_size`. A page is a
//!   16-byte header (`id: u64`, `flags: u16`, `count: u16`, `overflow: u32`) then its body; a
//!   page whose body needs more room continues over `overflow` following pages.
//! * Pages 0 and 1 are meta pages (flag `0x04`): `magic: u32 = 0xED0CDAED`, `version: u32 = 2`,
//!   `page_size: u32`, `flags: u32`, the root bucket (`root: u64`, `sequence: u64`), the
//!   freelist's page `u64`, the high-water page id `u64` (pages in use), the transaction id
//!   `u64`, and an FNV-1a 64 checksum of the 56 bytes before it. The valid one with the higher
//!   transaction id is current.
//! * A freelist page (flag `0x10`) lists the free page ids (`count` of them; a count of
//!   `0xFFFF` means the first `u64` holds the real count).
//! * A B+tree page is a branch (flag `0x01`; elements `pos: u32, ksize: u32, pgid: u64`) or a
//!   leaf (flag `0x02`; elements `flags: u32, pos: u32, ksize: u32, vsize: u32`). `pos` is the
//!   offset of the element's key from the element itself; a leaf's value follows its key. A
//!   leaf element with flag `0x01` is a bucket: its value is the bucket's header (`root: u64`,
//!   `sequence: u64`), and a bucket whose root is 0 is inline, its page following the header
//!   inside the value.

use std::collections::{BTreeMap, BTreeSet};

/// The page size of the files this module writes (the usual OS page size, as bbolt's).
pub const PAGE_SIZE: usize = 4096;

const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const META_BYTES: usize = 64;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const META: u16 = 0x04;
const FREELIST: u16 = 0x10;
const BUCKET_LEAF: u32 = 0x01;
/// Deeper trees than this are refused (a valid file of any realistic size is far shallower).
const MAX_DEPTH: usize = 64;

/// A file's buckets: name → its keys and values, both in byte order.
pub type Buckets = BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>;

/// Why bytes are not a readable bbolt file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a readable bbolt database: {0}")]
pub struct BoltError(String);

fn fail<T>(message: impl Into<String>) -> Result<T, BoltError> {
    Err(BoltError(message.into()))
}

/// A bbolt file holding `buckets`, as one committed transaction (`txid` 1), with no free pages.
pub fn write(buckets: &Buckets) -> Vec<u8> {
    let mut file = Writer {
        bytes: vec![0; 3 * PAGE_SIZE],
        next_page: 3,
    };
    let mut root_entries = Vec::with_capacity(buckets.len());
    for (name, entries) in buckets {
        let leaves: Vec<(&[u8], &[u8], u32)> = entries
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice(), 0))
            .collect();
        let root = file.tree(&leaves);
        let mut header = Vec::with_capacity(16);
        header.extend_from_slice(&root.to_le_bytes());
        header.extend_from_slice(&0u64.to_le_bytes());
        root_entries.push((name.as_slice(), header));
    }
    let root_leaves: Vec<(&[u8], &[u8], u32)> = root_entries
        .iter()
        .map(|(name, header)| (*name, header.as_slice(), BUCKET_LEAF))
        .collect();
    let root = file.tree(&root_leaves);
    // An empty freelist at page 2.
    file.header(2, FREELIST, 0, 0);
    let high_water = file.next_page;
    for (page, txid) in [(0u64, 0u64), (1, 1)] {
        file.header(page, META, 0, 0);
        let at = page as usize * PAGE_SIZE + PAGE_HEADER;
        let mut meta = Vec::with_capacity(META_BYTES);
        meta.extend_from_slice(&MAGIC.to_le_bytes());
        meta.extend_from_slice(&VERSION.to_le_bytes());
        meta.extend_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
        meta.extend_from_slice(&0u32.to_le_bytes());
        meta.extend_from_slice(&root.to_le_bytes());
        meta.extend_from_slice(&0u64.to_le_bytes());
        meta.extend_from_slice(&2u64.to_le_bytes());
        meta.extend_from_slice(&high_water.to_le_bytes());
        meta.extend_from_slice(&txid.to_le_bytes());
        let checksum = concord_core::digest(&meta);
        meta.extend_from_slice(&checksum.to_le_bytes());
        file.bytes[at..at + META_BYTES].copy_from_slice(&meta);
    }
    file.bytes
}

struct Writer {
    bytes: Vec<u8>,
    next_page: u64,
}

impl Writer {
    fn header(&mut self, page: u64, flags: u16, count: u16, overflow: u32) {
        let at = page as usize * PAGE_SIZE;
        self.bytes[at..at + 8].copy_from_slice(&page.to_le_bytes());
        self.bytes[at + 8..at + 10].copy_from_slice(&flags.to_le_bytes());
        self.bytes[at + 10..at + 12].copy_from_slice(&count.to_le_bytes());
        self.bytes[at + 12..at + 16].copy_from_slice(&overflow.to_le_bytes());
    }

    /// Allocates the pages a body of `size` bytes (header included) needs; returns the first.
    fn allocate(&mut self, size: usize) -> (u64, u32) {
        let pages = size.div_ceil(PAGE_SIZE).max(1);
        let first = self.next_page;
        self.next_page += pages as u64;
        self.bytes.resize(self.next_page as usize * PAGE_SIZE, 0);
        (first, (pages - 1) as u32)
    }

    /// Writes a B+tree of `entries` (sorted by key, each with its leaf flags); returns the
    /// root page. An empty tree is one empty leaf.
    fn tree(&mut self, entries: &[(&[u8], &[u8], u32)]) -> u64 {
        let mut level: Vec<(Vec<u8>, u64)> = Vec::new();
        for group in pack(entries.iter().map(|(k, v, _)| k.len() + v.len())) {
            let page = self.leaf(&entries[group]);
            level.push(page);
        }
        if level.is_empty() {
            level.push(self.leaf(&[]));
        }
        while level.len() > 1 {
            let mut parents = Vec::new();
            for group in pack(level.iter().map(|(k, _)| k.len())) {
                let page = self.branch(&level[group]);
                parents.push(page);
            }
            level = parents;
        }
        level[0].1
    }

    fn leaf(&mut self, entries: &[(&[u8], &[u8], u32)]) -> (Vec<u8>, u64) {
        let size = PAGE_HEADER
            + entries.len() * ELEMENT
            + entries
                .iter()
                .map(|(k, v, _)| k.len() + v.len())
                .sum::<usize>();
        let (page, overflow) = self.allocate(size);
        self.header(page, LEAF, entries.len() as u16, overflow);
        let base = page as usize * PAGE_SIZE;
        let mut data = PAGE_HEADER + entries.len() * ELEMENT;
        for (i, (key, value, flags)) in entries.iter().enumerate() {
            let element = PAGE_HEADER + i * ELEMENT;
            let fields = [
                *flags,
                (data - element) as u32,
                key.len() as u32,
                value.len() as u32,
            ];
            for (j, field) in fields.iter().enumerate() {
                let at = base + element + 4 * j;
                self.bytes[at..at + 4].copy_from_slice(&field.to_le_bytes());
            }
            self.bytes[base + data..base + data + key.len()].copy_from_slice(key);
            data += key.len();
            self.bytes[base + data..base + data + value.len()].copy_from_slice(value);
            data += value.len();
        }
        let first = entries
            .first()
            .map_or_else(Vec::new, |(k, _, _)| k.to_vec());
        (first, page)
    }

    fn branch(&mut self, children: &[(Vec<u8>, u64)]) -> (Vec<u8>, u64) {
        let size = PAGE_HEADER
            + children.len() * ELEMENT
            + children.iter().map(|(k, _)| k.len()).sum::<usize>();
        let (page, overflow) = self.allocate(size);
        self.header(page, BRANCH, children.len() as u16, overflow);
        let base = page as usize * PAGE_SIZE;
        let mut data = PAGE_HEADER + children.len() * ELEMENT;
        for (i, (key, child)) in children.iter().enumerate() {
            let element = base + PAGE_HEADER + i * ELEMENT;
            self.bytes[element..element + 4]
                .copy_from_slice(&((base + data - element) as u32).to_le_bytes());
            self.bytes[element + 4..element + 8].copy_from_slice(&(key.len() as u32).to_le_bytes());
            self.bytes[element + 8..element + 16].copy_from_slice(&child.to_le_bytes());
            self.bytes[base + data..base + data + key.len()].copy_from_slice(key);
            data += key.len();
        }
        (children[0].0.clone(), page)
    }
}

/// Splits elements (given their key and value bytes) into runs that fill a page each; an
/// element larger than a page gets a run of its own (and overflow pages).
fn pack(sizes: impl Iterator<Item = usize>) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut used = PAGE_HEADER;
    let mut count = 0;
    for (i, size) in sizes.enumerate() {
        let needed = ELEMENT + size;
        if i > start && used + needed > PAGE_SIZE {
            runs.push(start..i);
            start = i;
            used = PAGE_HEADER;
        }
        used += needed;
        count = i + 1;
    }
    if count > start {
        runs.push(start..count);
    }
    runs
}

/// Reads every top-level bucket of a bbolt file (trailing bytes after its last page, such as
/// the SHA-256 etcd appends to a snapshot, are ignored). Nested buckets are skipped.
pub fn read(bytes: &[u8]) -> Result<Buckets, BoltError> {
    let meta = current_meta(bytes)?;
    let file = File {
        bytes,
        page_size: meta.page_size,
        high_water: meta.high_water,
    };
    if (meta.high_water as usize).saturating_mul(meta.page_size) > bytes.len() {
        return fail(format!(
            "{} pages of {} bytes do not fit in {} bytes (truncated?)",
            meta.high_water,
            meta.page_size,
            bytes.len()
        ));
    }
    let mut seen = BTreeSet::new();
    let mut top = Vec::new();
    file.walk(file.page(meta.root, &mut seen)?, 0, &mut seen, &mut top)?;
    let mut buckets = Buckets::new();
    for (name, value, flags) in top {
        if flags & BUCKET_LEAF == 0 {
            return fail("a key outside any bucket");
        }
        let mut entries = Vec::new();
        file.walk(file.bucket(&value, &mut seen)?, 0, &mut seen, &mut entries)?;
        let entries = entries
            .into_iter()
            .filter(|(_, _, flags)| flags & BUCKET_LEAF == 0)
            .map(|(k, v, _)| (k, v))
            .collect();
        if buckets.insert(name, entries).is_some() {
            return fail("a bucket listed twice");
        }
    }
    Ok(buckets)
}

struct Meta {
    page_size: usize,
    root: u64,
    high_water: u64,
    txid: u64,
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// The meta page at `offset`, if it is one and its checksum holds.
fn meta_at(bytes: &[u8], offset: usize) -> Option<Meta> {
    let body = bytes.get(offset + PAGE_HEADER..offset + PAGE_HEADER + META_BYTES)?;
    let valid = u16_at(bytes, offset + 8)? & META != 0
        && u32_at(body, 0)? == MAGIC
        && u32_at(body, 4)? == VERSION
        && u64_at(body, 56)? == concord_core::digest(&body[..56]);
    let page_size = u32_at(body, 8)? as usize;
    (valid && (1024..=1 << 16).contains(&page_size)).then(|| Meta {
        page_size,
        root: u64_at(body, 16).unwrap_or(0),
        high_water: u64_at(body, 40).unwrap_or(0),
        txid: u64_at(body, 48).unwrap_or(0),
    })
}

fn current_meta(bytes: &[u8]) -> Result<Meta, BoltError> {
    let first = meta_at(bytes, 0);
    let page_size = first.as_ref().map_or(PAGE_SIZE, |m| m.page_size);
    let second = meta_at(bytes, page_size);
    match (first, second) {
        (Some(a), Some(b)) => Ok(if b.txid > a.txid { b } else { a }),
        (Some(m), None) | (None, Some(m)) => Ok(m),
        (None, None) => fail("neither meta page is valid (not a bbolt file, or damaged)"),
    }
}

struct File<'a> {
    bytes: &'a [u8],
    page_size: usize,
    high_water: u64,
}

impl<'a> File<'a> {
    /// Page `id` with its overflow pages; each page is read once (`seen`), so a damaged file
    /// that links pages in a cycle is an error, not an endless walk.
    fn page(&self, id: u64, seen: &mut BTreeSet<u64>) -> Result<&'a [u8], BoltError> {
        if !seen.insert(id) {
            return fail(format!("page {id} is reached twice"));
        }
        if id < 2 || id >= self.high_water {
            return fail(format!(
                "page {id} is outside the file's pages 2..{}",
                self.high_water
            ));
        }
        let start = id as usize * self.page_size;
        let overflow = u32_at(self.bytes, start + 12).unwrap_or(0) as u64;
        if u64_at(self.bytes, start) != Some(id) {
            return fail(format!("page {id} carries another id"));
        }
        if id + overflow >= self.high_water {
            return fail(format!("page {id} overflows past the file's end"));
        }
        Ok(&self.bytes[start..start + (overflow as usize + 1) * self.page_size])
    }

    /// The root page of the bucket whose header is `value`: its own page, or the inline page
    /// after the header.
    fn bucket(&self, value: &'a [u8], seen: &mut BTreeSet<u64>) -> Result<&'a [u8], BoltError> {
        match u64_at(value, 0) {
            Some(0) if value.len() >= 16 + PAGE_HEADER => Ok(&value[16..]),
            Some(0) => fail("an inline bucket without its page"),
            Some(root) => self.page(root, seen),
            None => fail("a bucket value shorter than its header"),
        }
    }

    /// Appends the leaf elements under `page` to `out`, in order.
    fn walk(
        &self,
        page: &'a [u8],
        depth: usize,
        seen: &mut BTreeSet<u64>,
        out: &mut Vec<(Vec<u8>, Vec<u8>, u32)>,
    ) -> Result<(), BoltError> {
        if depth > MAX_DEPTH {
            return fail("the tree is too deep (a cycle?)");
        }
        let flags = u16_at(page, 8).unwrap_or(0);
        let count = usize::from(u16_at(page, 10).unwrap_or(0));
        let slice = |element: usize, pos: u32, len: u32| -> Result<&'a [u8], BoltError> {
            let start = element.checked_add(pos as usize);
            let end = start.and_then(|s| s.checked_add(len as usize));
            match (start, end) {
                (Some(start), Some(end)) if end <= page.len() => Ok(&page[start..end]),
                _ => fail("an element points outside its page"),
            }
        };
        if flags & LEAF != 0 {
            for i in 0..count {
                let element = PAGE_HEADER + i * ELEMENT;
                let (Some(flags), Some(pos), Some(ksize), Some(vsize)) = (
                    u32_at(page, element),
                    u32_at(page, element + 4),
                    u32_at(page, element + 8),
                    u32_at(page, element + 12),
                ) else {
                    return fail("a leaf's elements overrun its page");
                };
                let key = slice(element, pos, ksize)?;
                let value = slice(element, pos.saturating_add(ksize), vsize)?;
                if out
                    .last()
                    .is_some_and(|(last, _, _)| last.as_slice() >= key)
                {
                    return fail("keys out of order");
                }
                out.push((key.to_vec(), value.to_vec(), flags));
            }
            Ok(())
        } else if flags & BRANCH != 0 {
            for i in 0..count {
                let element = PAGE_HEADER + i * ELEMENT;
                let (Some(pos), Some(ksize), Some(child)) = (
                    u32_at(page, element),
                    u32_at(page, element + 4),
                    u64_at(page, element + 8),
                ) else {
                    return fail("a branch's elements overrun its page");
                };
                slice(element, pos, ksize)?;
                self.walk(self.page(child, seen)?, depth + 1, seen, out)?;
            }
            Ok(())
        } else {
            fail(format!("a tree page with flags {flags:#x}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Entries = Vec<(Vec<u8>, Vec<u8>)>;

    fn buckets(spec: &[(&str, Entries)]) -> Buckets {
        spec.iter()
            .map(|(name, entries)| {
                (
                    name.as_bytes().to_vec(),
                    entries.iter().cloned().collect::<BTreeMap<_, _>>(),
                )
            })
            .collect()
    }

    #[test]
    fn small_large_and_empty_buckets_round_trip() {
        let many: Entries = (0..5000u32)
            .map(|i| (i.to_be_bytes().to_vec(), vec![b'v'; (i % 300) as usize]))
            .collect();
        let huge = vec![(b"huge".to_vec(), vec![7u8; 3 * PAGE_SIZE + 5])];
        let original = buckets(&[
            ("empty", Vec::new()),
            ("huge", huge),
            ("key", many),
            ("meta", vec![(b"k".to_vec(), b"v".to_vec())]),
        ]);
        let bytes = write(&original);
        assert!(bytes.len().is_multiple_of(PAGE_SIZE));
        assert_eq!(read(&bytes).unwrap(), original);
        // A trailing checksum (etcd's snapshots end with one) is ignored.
        let mut with_tail = bytes.clone();
        with_tail.extend_from_slice(&[9; 32]);
        assert_eq!(read(&with_tail).unwrap(), original);
        assert!(read(&write(&Buckets::new())).unwrap().is_empty());
    }

    #[test]
    fn damaged_files_are_errors_never_panics() {
        let original = buckets(&[(
            "key",
            (0..400u32)
                .map(|i| (i.to_be_bytes().to_vec(), vec![1; 40]))
                .collect(),
        )]);
        let bytes = write(&original);
        assert!(
            read(&bytes[..bytes.len() - PAGE_SIZE]).is_err(),
            "truncated"
        );
        assert!(read(&[]).is_err());
        assert!(read(&[0; 3 * PAGE_SIZE]).is_err());
        // Every single-byte change anywhere either still reads or is an error.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..3000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut damaged = bytes.clone();
            let at = (state % damaged.len() as u64) as usize;
            damaged[at] ^= (state >> 32) as u8 | 1;
            let _ = read(&damaged);
        }
    }

    #[test]
    fn both_meta_pages_must_fail_for_the_file_to_be_refused() {
        let original = buckets(&[("a", vec![(b"x".to_vec(), b"y".to_vec())])]);
        let mut bytes = write(&original);
        bytes[PAGE_HEADER + 20] ^= 1; // meta 0's root: its checksum no longer holds
        assert_eq!(read(&bytes).unwrap(), original, "meta 1 serves");
        bytes[PAGE_SIZE + PAGE_HEADER + 20] ^= 1;
        assert!(read(&bytes).is_err());
    }

    /// A snapshot etcd 3.4.23 streamed (`etcdctl snapshot save`): ten puts, an overwrite, a
    /// delete, a lease with a key, a transaction, a compaction at 4 and a 10 000-byte value.
    const ETCD_SNAPSHOT: &[u8] = include_bytes!("../tests/data/etcd-3.4.23.snap");

    #[test]
    fn reads_a_snapshot_etcd_wrote() {
        let buckets = read(ETCD_SNAPSHOT).unwrap();
        let names: Vec<&str> = buckets
            .keys()
            .map(|n| std::str::from_utf8(n).unwrap())
            .collect();
        for name in ["key", "lease", "members", "meta"] {
            assert!(names.contains(&name), "{names:?}");
        }
        let keys = &buckets[b"key".as_slice()];
        // Revision keys: 8 bytes main, '_', 8 bytes sub, and a 't' for a tombstone.
        let (last, _) = keys.iter().next_back().unwrap();
        assert_eq!(u64::from_be_bytes(last[..8].try_into().unwrap()), 16);
        assert!(keys.keys().any(|k| k.len() == 18 && k[17] == b't'));
        assert!(keys.values().any(|v| v.len() > 10_000));
        assert_eq!(buckets[b"lease".as_slice()].len(), 1);
        // What etcd wrote, rewritten, reads back the same.
        assert_eq!(read(&write(&buckets)).unwrap(), buckets);
    }
}
