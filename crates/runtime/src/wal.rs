//! A segmented write-ahead log of opaque records, with crash recovery.
//!
//! ```text
//! wal/00000000000000000001.log    segment 1
//! wal/00000000000000000002.log    segment 2 (the one appended to)
//!
//! segment = header (32 bytes) · record · record · ...
//! header  = magic "CNCDWAL\0" · version u32 · flags u32 · sequence u64 · reserved u32 · crc32c u32
//! record  = len u32 LE · crc32c u32 LE · payload;  crc over the len bytes and the payload
//! len     = bits 0–30: the payload's length · bit 31: the record continues in the next one
//! ```
//!
//! **Fragments.** A record longer than [`WalOptions::max_record_bytes`] — a snapshot of a large
//! store, as a base record or as a follower installs it — is written as several physical
//! records in a row, all but the last with bit 31 of their length set, always within one
//! segment; recovery joins them. A base written as it is encoded ([`Rewrite::write_streamed`])
//! is cut into fragments of 1 MiB, so that no more of it than that is held in memory. Format
//! version 2 has fragments; version 1 segments (written before them) are read, and never
//! appended to: a log that ends in one goes on in a new segment, so a build that reads only
//! version 1 refuses the new records instead of misreading them.
//!
//! **Recovery rules.** A crash can only damage the end of the log, so:
//!
//! * In the **last** segment, zeros from a record boundary to the end of the file are the log's
//!   clean end: space allocated ahead of the writes ([`WalOptions::preallocate_bytes`]).
//! * In the **last** segment, a record that is incomplete or has a bad checksum, with no valid
//!   record anywhere after it, is a *torn tail*, and so are fragments whose last one is missing:
//!   the file is truncated at the start of that record (its first fragment) and
//!   [`RecoveryReport::torn_tail`] says how many bytes were dropped. A last segment whose header
//!   is incomplete or zero (a crash while creating it) holds no records and is removed.
//! * A bad record **followed by a valid record**, or a bad record or header in an **earlier**
//!   segment, cannot come from a crash: recovery stops with [`WalError::Corrupt`], naming the
//!   segment and the byte offset. Nothing is truncated.
//! * Any failed write or fsync **poisons** the log: every later call returns
//!   [`WalError::Poisoned`]. The host stops the node; it never retries and continues, because
//!   after a failed fsync the kernel may have dropped the dirty pages.
//!
//! **Preallocation.** Records are written at their offsets into space allocated ahead of them,
//! a megabyte at a time, as zeros written and synced when the records first reach into it, so
//! that an `fdatasync` after a later append writes the data alone: not the file's new size,
//! and not the extent-map change that the first write into `fallocate`d (unwritten) space
//! makes (`cargo bench -p concord-runtime --bench wal_sync` measures preallocated against
//! growing segments). A segment is cut to its records' length when it is sealed.
//!
//! **Compaction.** [`Wal::rewrite`] seals the current segment (appends go on in a new one),
//! writes the given base records as a segment flagged *base* (a `.log.tmp` file, fsynced), and
//! renames it over the sealed segment, taking its number — one atomic step from the old log to
//! the new — then fsyncs the directory and deletes every older segment. Recovery starts at the
//! newest base segment and deletes anything older and any leftover `.tmp` file, so a crash at
//! any point leaves either the old log or the new one. The three steps are also separate
//! ([`Wal::begin_rewrite`], [`Rewrite::write`], [`Wal::finish_rewrite`]): the host writes the
//! base on a thread of its own while durable writes go on.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The first bytes of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"CNCDWAL\0";
/// The segment format version this code writes. It reads this one and version 1 (the same,
/// without fragments).
pub const FORMAT_VERSION: u32 = 2;
/// The format version before fragments.
const FORMAT_VERSION_UNFRAGMENTED: u32 = 1;
/// Length bit: the record continues in the next one (a fragment; format version 2).
const CONTINUES: u32 = 1 << 31;
/// Bytes in a segment header.
pub const SEGMENT_HEADER_BYTES: u64 = 32;
/// Bytes before each record's payload (length and checksum).
pub const RECORD_HEADER_BYTES: u64 = 8;
/// Header flag: the segment starts with the base records of a compaction.
const FLAG_BASE: u32 = 1;
/// Write the append buffer out (without syncing) once it holds this many bytes.
const BUFFER_FLUSH_BYTES: usize = 4 << 20;
/// The fragments of a base record written as it is encoded ([`Rewrite::write_streamed`]): all
/// that is held of it in memory at a time.
const STREAMED_FRAGMENT_BYTES: usize = 1 << 20;

/// Limits of a write-ahead log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Start a new segment once the current one would grow past this many bytes (a segment
    /// always takes at least one record, however large).
    pub max_segment_bytes: u64,
    /// The largest payload written as one physical record, and believed when reading a
    /// length; a longer one is split into fragments of this size (at most 2^31 − 1).
    pub max_record_bytes: u32,
    /// Allocate the current segment's space this many bytes at a time, ahead of the writes, as
    /// synced zeros (0: never; the file grows with each write, and each sync also writes its
    /// size). A larger chunk means fewer, longer pauses of the appends while it is written.
    pub preallocate_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            max_segment_bytes: 64 << 20,
            max_record_bytes: 1 << 30,
            preallocate_bytes: 1 << 20,
        }
    }
}

/// Why the log cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file operation failed. The log is poisoned from then on.
    #[error("write-ahead log I/O error while {context}: {source}")]
    Io {
        /// What the log was doing.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Damage that a crash cannot explain: the node must not start from this log.
    #[error(
        "write-ahead log segment {} is corrupt at byte offset {offset}: {reason}. This is not a \
         torn write from a crash (valid data follows it, or it is in an older segment), so the \
         node refuses to start rather than silently lose acknowledged writes. Move the data \
         directory aside (keep it for inspection) and let the node rejoin the cluster from its \
         peers with an empty data directory",
        segment.display()
    )]
    Corrupt {
        /// The damaged segment file.
        segment: PathBuf,
        /// Byte offset of the damaged record or header within it.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An empty record was appended: zeros mark the end of the log, so a record has content.
    #[error("an empty record cannot be appended")]
    EmptyRecord,
    /// An earlier write or fsync failed; the log refuses further use.
    #[error("the write-ahead log is poisoned by an earlier I/O failure and refuses further use")]
    Poisoned,
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> WalError {
    let context = context.into();
    move |source| WalError::Io { context, source }
}

/// A torn tail that recovery truncated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment that was truncated.
    pub segment: PathBuf,
    /// Where the torn record started (the file's new length).
    pub offset: u64,
    /// How many bytes were dropped.
    pub bytes_dropped: u64,
    /// Why the record was not read.
    pub reason: String,
}

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Live segments after recovery.
    pub segments: usize,
    /// Records recovered.
    pub records: usize,
    /// The torn tail truncated from the last segment, if any.
    pub torn_tail: Option<TornTail>,
    /// Files removed: leftovers of an interrupted compaction, segments superseded by a newer
    /// base segment, and a last segment whose header was torn.
    pub removed: Vec<PathBuf>,
}

/// One live segment.
#[derive(Clone, Debug)]
struct Segment {
    sequence: u64,
    /// Bytes in the file, plus what is still buffered for it when it is the current segment.
    bytes: u64,
}

/// An open write-ahead log (see the module docs).
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    options: WalOptions,
    /// Live segments in order; the last is appended to. Never empty.
    segments: Vec<Segment>,
    /// The last segment, opened for writing at the end of its records.
    file: File,
    /// The length of `file`: its records, then allocated space (zeros) when preallocating.
    file_len: u64,
    /// Records appended but not yet written to `file`.
    buffer: Vec<u8>,
    /// Records in the current segment (including buffered ones).
    records_in_segment: u64,
    poisoned: bool,
}

/// Where a crash may interrupt [`Wal::rewrite`]; tests stop a rewrite there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum RewriteStep {
    /// Part of the temporary base segment is written.
    TempPartial,
    /// The temporary base segment is complete and synced, not yet renamed.
    TempSynced,
    /// Renamed into place; no older segment deleted yet.
    Renamed,
    /// The oldest older segment is deleted, the others not yet.
    DeletedOne,
}

impl Wal {
    /// Opens (or creates) the log in `dir`, recovers it under the module's rules, and returns
    /// it with the records it holds, oldest first, and what recovery did.
    pub fn open(
        dir: &Path,
        options: WalOptions,
    ) -> Result<(Wal, Vec<Vec<u8>>, RecoveryReport), WalError> {
        fs::create_dir_all(dir).map_err(io_error(format!("creating {}", dir.display())))?;
        let mut report = RecoveryReport::default();
        let mut sequences = list_segments(dir, &mut report)?;
        let mut records = Vec::new();
        let mut loaded: Vec<(u64, Vec<u8>, SegmentHeader)> = Vec::new();
        // Read headers; find the newest base segment.
        let mut headers = Vec::with_capacity(sequences.len());
        for (position, &sequence) in sequences.iter().enumerate() {
            let path = segment_path(dir, sequence);
            let data = fs::read(&path).map_err(io_error(format!("reading {}", path.display())))?;
            let last = position + 1 == sequences.len();
            headers.push((sequence, parse_header(&data, sequence, &path, last), data));
        }
        let base = headers
            .iter()
            .rposition(|(_, header, _)| matches!(header, Ok(Some(h)) if h.flags & FLAG_BASE != 0))
            .unwrap_or(0);
        for (sequence, _, _) in headers.drain(..base) {
            let path = segment_path(dir, sequence);
            fs::remove_file(&path).map_err(io_error(format!("removing {}", path.display())))?;
            report.removed.push(path);
        }
        sequences.clear();
        let count = headers.len();
        for (position, (sequence, header, data)) in headers.into_iter().enumerate() {
            let path = segment_path(dir, sequence);
            match header? {
                Some(header) => loaded.push((sequence, data, header)),
                None => {
                    // A torn header on the last segment: it holds nothing.
                    debug_assert_eq!(position + 1, count);
                    fs::remove_file(&path)
                        .map_err(io_error(format!("removing {}", path.display())))?;
                    report.removed.push(path);
                }
            }
        }
        if !report.removed.is_empty() {
            sync_dir(dir)?;
        }
        for pair in loaded.windows(2) {
            if pair[1].0 != pair[0].0 + 1 {
                return Err(WalError::Corrupt {
                    segment: segment_path(dir, pair[1].0),
                    offset: 0,
                    reason: format!(
                        "segment {} is missing between segments {} and {}",
                        pair[0].0 + 1,
                        pair[0].0,
                        pair[1].0
                    ),
                });
            }
        }
        let mut segments = Vec::with_capacity(loaded.len());
        let mut records_in_segment = 0;
        let loaded_count = loaded.len();
        let mut last_version = FORMAT_VERSION;
        for (position, (sequence, data, header)) in loaded.into_iter().enumerate() {
            let path = segment_path(dir, sequence);
            let last = position + 1 == loaded_count;
            let scan = scan_records(&data, &path, last, options.max_record_bytes, header.version)?;
            last_version = header.version;
            let bytes = scan.end as u64;
            if let Some(torn) = scan.torn {
                truncate(&path, torn.offset)?;
                report.torn_tail = Some(torn);
            }
            records_in_segment = scan.records.len() as u64;
            records.extend(scan.records);
            segments.push(Segment { sequence, bytes });
        }
        if segments.is_empty() {
            let sequence = report
                .removed
                .iter()
                .filter_map(|path| parse_sequence(path))
                .max()
                .unwrap_or(1);
            create_segment(dir, sequence, 0, &[])?;
            sync_dir(dir)?;
            segments.push(Segment {
                sequence,
                bytes: SEGMENT_HEADER_BYTES,
            });
            records_in_segment = 0;
        }
        let current = segments.last().map(|s| s.sequence).unwrap_or(1);
        let path = segment_path(dir, current);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_error(format!("opening {}", path.display())))?;
        let file_len = file
            .metadata()
            .map_err(io_error(format!(
                "reading the length of {}",
                path.display()
            )))?
            .len();
        report.segments = segments.len();
        report.records = records.len();
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            options,
            segments,
            file,
            file_len,
            buffer: Vec::new(),
            records_in_segment,
            poisoned: false,
        };
        if last_version != FORMAT_VERSION {
            // Appends never go into a segment of an older format (module docs).
            wal.roll()?;
        }
        Ok((wal, records, report))
    }

    /// Appends one record. It is durable only after the next successful [`Wal::sync`].
    pub fn append(&mut self, payload: &[u8]) -> Result<(), WalError> {
        self.check_poisoned()?;
        if payload.is_empty() {
            return Err(WalError::EmptyRecord);
        }
        let fragment = fragment_bytes(self.options.max_record_bytes);
        let record_bytes = encoded_len(payload.len(), fragment);
        let current = self.current_bytes();
        if self.records_in_segment > 0 && current + record_bytes > self.options.max_segment_bytes {
            let result = self.roll();
            self.poison_on_error(result)?;
        }
        encode_record(&mut self.buffer, payload, fragment);
        self.records_in_segment += 1;
        if let Some(segment) = self.segments.last_mut() {
            segment.bytes += record_bytes;
        }
        if self.buffer.len() >= BUFFER_FLUSH_BYTES {
            let result = self.write_buffer();
            self.poison_on_error(result)?;
        }
        Ok(())
    }

    /// Makes every appended record durable (`fdatasync`). A failure poisons the log.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_poisoned()?;
        let result = self.write_buffer().and_then(|()| {
            self.file
                .sync_data()
                .map_err(io_error("syncing the current segment"))
        });
        self.poison_on_error(result)
    }

    /// Compaction: replaces the whole log by `base` (records that stand for everything written
    /// so far). A crash at any point leaves either the old log or the new one (module docs).
    /// [`Wal::begin_rewrite`], [`Rewrite::write`] and [`Wal::finish_rewrite`] do the same in
    /// three steps, so that appends can go on while the base is written elsewhere.
    pub fn rewrite(&mut self, base: &[Vec<u8>]) -> Result<(), WalError> {
        self.check_poisoned()?;
        let result = self.rewrite_inner(base, None);
        self.poison_on_error(result)
    }

    /// Starts a compaction: seals the current segment and starts the next one, so that what
    /// is appended from now on lands after the base. The returned [`Rewrite`] writes the base
    /// records (which must stand for everything appended before this call) — on another
    /// thread if the caller likes — and [`Wal::finish_rewrite`] then deletes what it replaced.
    /// One compaction at a time.
    pub fn begin_rewrite(&mut self) -> Result<Rewrite, WalError> {
        self.check_poisoned()?;
        let result = self.roll();
        self.poison_on_error(result)?;
        let sealed = self.segments[self.segments.len() - 2].sequence;
        let older = self.segments[..self.segments.len() - 2]
            .iter()
            .map(|s| s.sequence)
            .collect();
        Ok(Rewrite {
            dir: self.dir.clone(),
            sequence: sealed,
            older,
            max_record_bytes: self.options.max_record_bytes,
        })
    }

    /// Ends a compaction whose base is written: deletes the segments the base replaced. A
    /// failed [`Rewrite::write`] must not be finished; the node stops instead.
    pub fn finish_rewrite(&mut self, written: WrittenRewrite) -> Result<(), WalError> {
        self.check_poisoned()?;
        let result = self.finish_inner(written, None);
        self.poison_on_error(result)
    }

    fn finish_inner(
        &mut self,
        written: WrittenRewrite,
        stop: Option<RewriteStep>,
    ) -> Result<(), WalError> {
        for (position, old_sequence) in written.older.iter().enumerate() {
            let old_path = segment_path(&self.dir, *old_sequence);
            fs::remove_file(&old_path)
                .map_err(io_error(format!("removing {}", old_path.display())))?;
            if position == 0 && stop == Some(RewriteStep::DeletedOne) {
                return Ok(());
            }
        }
        sync_dir(&self.dir)?;
        self.segments.retain(|s| s.sequence > written.sequence);
        self.segments.insert(
            0,
            Segment {
                sequence: written.sequence,
                bytes: written.bytes,
            },
        );
        Ok(())
    }

    /// Total bytes in the live segments (including appended records not yet written).
    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Number of live segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn current_bytes(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.bytes)
    }

    fn check_poisoned(&self) -> Result<(), WalError> {
        if self.poisoned {
            Err(WalError::Poisoned)
        } else {
            Ok(())
        }
    }

    fn poison_on_error<T>(&mut self, result: Result<T, WalError>) -> Result<T, WalError> {
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    fn write_buffer(&mut self) -> Result<(), WalError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let end = self.current_bytes();
        let offset = end - self.buffer.len() as u64;
        self.file
            .write_all_at(&self.buffer, offset)
            .map_err(io_error("writing to the current segment"))?;
        self.buffer.clear();
        if end > self.file_len && self.options.preallocate_bytes > 0 {
            // Whole chunks past the end of the records; the size changes once per chunk.
            let chunk = self.options.preallocate_bytes;
            self.zero_fill(end, end.div_ceil(chunk) * chunk)?;
        }
        self.file_len = self.file_len.max(end);
        Ok(())
    }

    /// Writes zeros from `from` (the end of the records just written) to `target` bytes, then
    /// syncs the segment, data and size, so that later appends into that space change nothing
    /// but data.
    ///
    /// Written zeros, not `fallocate`: on ext4 (and XFS) allocated space starts *unwritten*,
    /// and the first write into each block of it changes the file's extent map, which the next
    /// `fdatasync` must then write too — an extra synchronous trip to the device on many
    /// group commits, and conversion work when the write completes. Into blocks already written, an
    /// `fdatasync` writes the data and flushes the cache, nothing else (PostgreSQL zero-fills
    /// its WAL segments for the same reason: `wal_init_zero`).
    fn zero_fill(&mut self, from: u64, target: u64) -> Result<(), WalError> {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let mut at = from;
        while at < target {
            let len = (target - at).min(ZEROS.len() as u64) as usize;
            self.file
                .write_all_at(&ZEROS[..len], at)
                .map_err(io_error("allocating space in the current segment"))?;
            at += len as u64;
        }
        self.file
            .sync_data()
            .map_err(io_error("syncing space allocated in the current segment"))?;
        self.file_len = target;
        Ok(())
    }

    /// Seals the current segment (written, cut to its records' length, and synced) and starts
    /// the next one.
    fn roll(&mut self) -> Result<(), WalError> {
        self.write_buffer()?;
        let end = self.current_bytes();
        if self.file_len > end {
            // Durably (a full fsync, for the size): once the next segment exists, zeros after
            // this one's records would read as corruption.
            self.file
                .set_len(end)
                .and_then(|()| self.file.sync_all())
                .map_err(io_error("cutting a full segment to its records"))?;
        } else {
            self.file
                .sync_data()
                .map_err(io_error("syncing a full segment"))?;
        }
        let sequence = self.segments.last().map_or(0, |s| s.sequence) + 1;
        let file = create_segment(&self.dir, sequence, 0, &[])?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.file_len = SEGMENT_HEADER_BYTES;
        self.segments.push(Segment {
            sequence,
            bytes: SEGMENT_HEADER_BYTES,
        });
        self.records_in_segment = 0;
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn rewrite_until(
        &mut self,
        base: &[Vec<u8>],
        stop: RewriteStep,
    ) -> Result<(), WalError> {
        self.rewrite_inner(base, Some(stop))
    }

    fn rewrite_inner(
        &mut self,
        base: &[Vec<u8>],
        stop: Option<RewriteStep>,
    ) -> Result<(), WalError> {
        let rewrite = self.begin_rewrite()?;
        match rewrite.write_inner(Base::Records(base), stop)? {
            Some(written) => self.finish_inner(written, stop),
            None => Ok(()),
        }
    }
}

/// A compaction under way (see [`Wal::begin_rewrite`]): the base records replace the sealed
/// segment `sequence` and every older one.
#[derive(Debug)]
pub struct Rewrite {
    dir: PathBuf,
    /// The newest segment the base replaces; the base segment takes its place and number.
    sequence: u64,
    /// The older segments, deleted once the base is in place.
    older: Vec<u64>,
    max_record_bytes: u32,
}

/// A base segment in place, its older segments still to delete ([`Wal::finish_rewrite`]).
#[derive(Debug)]
pub struct WrittenRewrite {
    sequence: u64,
    older: Vec<u64>,
    bytes: u64,
}

impl Rewrite {
    /// Writes the base segment as a temporary file, syncs it, and renames it over the sealed
    /// segment it replaces — one atomic step from the old log to the new one — then syncs the
    /// directory. Touches no segment the log still appends to, so it may run on another thread.
    pub fn write(self, base: &[Vec<u8>]) -> Result<WrittenRewrite, WalError> {
        Ok(self
            .write_inner(Base::Records(base), None)?
            .expect("a rewrite not stopped on purpose completes"))
    }

    /// [`Rewrite::write`] with one base record that `encode` writes into the writer it is
    /// given, as it goes: the record goes to the file in fragments of at most 1 MiB, so the
    /// whole of it is never in memory, however large the state it holds. An error from
    /// `encode` fails the rewrite, as a failed write does; a record of no bytes is
    /// [`WalError::EmptyRecord`].
    pub fn write_streamed(
        self,
        encode: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<WrittenRewrite, WalError> {
        Ok(self
            .write_inner(Base::Streamed(Box::new(encode)), None)?
            .expect("a rewrite not stopped on purpose completes"))
    }

    fn write_inner(
        self,
        base: Base<'_>,
        stop: Option<RewriteStep>,
    ) -> Result<Option<WrittenRewrite>, WalError> {
        let stop_at = |step: RewriteStep| stop == Some(step);
        let temp = temp_path(&self.dir, self.sequence);
        if let Base::Records(records) = &base {
            if records.iter().any(|record| record.is_empty()) {
                return Err(WalError::EmptyRecord);
            }
        }
        let fragment = fragment_bytes(self.max_record_bytes);
        let header = encode_header(self.sequence, FLAG_BASE);
        let mut file =
            File::create(&temp).map_err(io_error(format!("creating {}", temp.display())))?;
        let context = format!("writing {}", temp.display());
        let writing = || io_error(context.clone());
        if stop_at(RewriteStep::TempPartial) {
            let mut body = Vec::new();
            base.write_to(&mut body, fragment, &context)?;
            let mut partial = header.to_vec();
            partial.extend_from_slice(&body[..body.len() / 2]);
            file.write_all(&partial).map_err(writing())?;
            return Ok(None);
        }
        // Written as encoded, not gathered into one buffer first: a base record can be as
        // large as the store.
        let mut writer = io::BufWriter::with_capacity(1 << 20, &mut file);
        writer.write_all(&header).map_err(writing())?;
        let body_bytes = base.write_to(&mut writer, fragment, &context)?;
        writer.flush().map_err(writing())?;
        drop(writer);
        file.sync_all()
            .map_err(io_error(format!("syncing {}", temp.display())))?;
        if stop_at(RewriteStep::TempSynced) {
            return Ok(None);
        }
        let path = segment_path(&self.dir, self.sequence);
        fs::rename(&temp, &path).map_err(io_error(format!(
            "renaming {} to {}",
            temp.display(),
            path.display()
        )))?;
        sync_dir(&self.dir)?;
        if stop_at(RewriteStep::Renamed) {
            return Ok(None);
        }
        Ok(Some(WrittenRewrite {
            sequence: self.sequence,
            older: self.older,
            bytes: SEGMENT_HEADER_BYTES + body_bytes,
        }))
    }
}

/// Writes a record's bytes into the writer it is given ([`Rewrite::write_streamed`]).
type Encoder<'a> = Box<dyn FnOnce(&mut dyn Write) -> io::Result<()> + 'a>;

/// The base records of a rewrite: given, or encoded as they are written.
enum Base<'a> {
    Records(&'a [Vec<u8>]),
    Streamed(Encoder<'a>),
}

impl Base<'_> {
    /// Writes the records to `out`; returns the bytes written. A failed write is an I/O error
    /// while `context`; a streamed record that comes out empty is [`WalError::EmptyRecord`].
    fn write_to(
        self,
        out: &mut impl Write,
        fragment: usize,
        context: &str,
    ) -> Result<u64, WalError> {
        match self {
            Base::Records(records) => {
                let mut bytes = 0;
                for record in records {
                    write_record(out, record, fragment).map_err(io_error(context))?;
                    bytes += encoded_len(record.len(), fragment);
                }
                Ok(bytes)
            }
            Base::Streamed(encode) => {
                let fragment = fragment.min(STREAMED_FRAGMENT_BYTES);
                let mut fragments = FragmentWriter {
                    out,
                    fragment,
                    pending: Vec::with_capacity(fragment),
                    written: 0,
                };
                encode(&mut fragments).map_err(io_error(context))?;
                if fragments.pending.is_empty() {
                    return Err(WalError::EmptyRecord);
                }
                fragments.emit(false).map_err(io_error(context))?;
                Ok(fragments.written)
            }
        }
    }
}

/// One record written as it is produced, in fragments of `fragment` bytes: a full fragment
/// goes out (marked to continue) once more bytes come after it, the last one at the end.
struct FragmentWriter<'a, W: Write> {
    out: &'a mut W,
    fragment: usize,
    pending: Vec<u8>,
    /// Bytes written to `out` so far, record headers included.
    written: u64,
}

impl<W: Write> FragmentWriter<'_, W> {
    fn emit(&mut self, continues: bool) -> io::Result<()> {
        write_physical(self.out, &self.pending, continues)?;
        self.written += RECORD_HEADER_BYTES + self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }
}

impl<W: Write> Write for FragmentWriter<'_, W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let len = data.len();
        while !data.is_empty() {
            if self.pending.len() == self.fragment {
                self.emit(true)?;
            }
            let take = (self.fragment - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(len)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The path of segment `sequence` in `dir`.
pub fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence:020}.log"))
}

fn temp_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence:020}.log.tmp"))
}

fn parse_sequence(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Lists segment sequences in order, removing leftover temporary files.
fn list_segments(dir: &Path, report: &mut RecoveryReport) -> Result<Vec<u64>, WalError> {
    let mut sequences = Vec::new();
    let entries = fs::read_dir(dir).map_err(io_error(format!("listing {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_error(format!("listing {}", dir.display())))?;
        let path = entry.path();
        if path.to_str().is_some_and(|p| p.ends_with(".log.tmp")) {
            fs::remove_file(&path).map_err(io_error(format!("removing {}", path.display())))?;
            report.removed.push(path);
        } else if let Some(sequence) = parse_sequence(&path) {
            sequences.push(sequence);
        }
    }
    sequences.sort_unstable();
    Ok(sequences)
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(format!("syncing directory {}", dir.display())))
}

fn truncate(path: &Path, length: u64) -> Result<(), WalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(format!("opening {}", path.display())))?;
    file.set_len(length)
        .and_then(|()| file.sync_all())
        .map_err(io_error(format!("truncating {}", path.display())))
}

/// Creates segment `sequence` with `flags` and `body`, synced (the caller syncs the directory).
fn create_segment(dir: &Path, sequence: u64, flags: u32, body: &[u8]) -> Result<File, WalError> {
    let path = segment_path(dir, sequence);
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .map_err(io_error(format!("creating {}", path.display())))?;
    file.write_all(&encode_header(sequence, flags))
        .and_then(|()| file.write_all(body))
        .and_then(|()| file.sync_all())
        .map_err(io_error(format!("writing {}", path.display())))?;
    Ok(file)
}

#[derive(Clone, Copy, Debug)]
struct SegmentHeader {
    flags: u32,
    version: u32,
}

fn encode_header(sequence: u64, flags: u32) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&flags.to_le_bytes());
    header[16..24].copy_from_slice(&sequence.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Parses a segment header. `Ok(None)`: a torn header on the last segment (removable).
fn parse_header(
    data: &[u8],
    sequence: u64,
    path: &Path,
    last: bool,
) -> Result<Option<SegmentHeader>, WalError> {
    let corrupt = |reason: String| WalError::Corrupt {
        segment: path.to_path_buf(),
        offset: 0,
        reason,
    };
    let header_len = SEGMENT_HEADER_BYTES as usize;
    let torn = data.len() < header_len || data[..header_len].iter().all(|&b| b == 0);
    if torn {
        // A segment is created with its header synced before any record goes in; a torn header
        // is a crash during creation, possible only for the newest segment.
        let only_zeros = data.iter().all(|&b| b == 0);
        return if last && (only_zeros || data.len() < header_len) {
            Ok(None)
        } else {
            Err(corrupt("the segment header is missing or zeroed".into()))
        };
    }
    let header = &data[..header_len];
    let stored_crc = u32::from_le_bytes(header[28..32].try_into().unwrap_or_default());
    if crc32c::crc32c(&header[0..28]) != stored_crc {
        return Err(corrupt("segment header checksum mismatch".into()));
    }
    if header[0..8] != SEGMENT_MAGIC {
        return Err(corrupt(
            "not a Concord write-ahead log segment (bad magic)".into(),
        ));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().unwrap_or_default());
    if version != FORMAT_VERSION && version != FORMAT_VERSION_UNFRAGMENTED {
        return Err(corrupt(format!(
            "segment format version {version}, but this build reads only versions \
             {FORMAT_VERSION_UNFRAGMENTED} and {FORMAT_VERSION}"
        )));
    }
    let stored_sequence = u64::from_le_bytes(header[16..24].try_into().unwrap_or_default());
    if stored_sequence != sequence {
        return Err(corrupt(format!(
            "header names segment {stored_sequence}, but the file name says {sequence}"
        )));
    }
    let flags = u32::from_le_bytes(header[12..16].try_into().unwrap_or_default());
    Ok(Some(SegmentHeader { flags, version }))
}

/// The payload bytes of one physical record, by [`WalOptions::max_record_bytes`]: at least 1,
/// and short of the [`CONTINUES`] bit.
fn fragment_bytes(max_record_bytes: u32) -> usize {
    max_record_bytes.clamp(1, CONTINUES - 1) as usize
}

/// The bytes `payload_len` takes in a segment, split into fragments of `fragment` bytes.
fn encoded_len(payload_len: usize, fragment: usize) -> u64 {
    let pieces = payload_len.div_ceil(fragment).max(1) as u64;
    pieces * RECORD_HEADER_BYTES + payload_len as u64
}

fn encode_record(buffer: &mut Vec<u8>, payload: &[u8], fragment: usize) {
    buffer.reserve(encoded_len(payload.len(), fragment) as usize);
    write_record(buffer, payload, fragment).expect("writing to memory cannot fail");
}

/// Writes `payload` as one record, or as fragments of `fragment` bytes if it is longer.
fn write_record(out: &mut impl Write, payload: &[u8], fragment: usize) -> io::Result<()> {
    let mut pieces = payload.chunks(fragment).peekable();
    while let Some(piece) = pieces.next() {
        write_physical(out, piece, pieces.peek().is_some())?;
    }
    Ok(())
}

/// Writes one physical record: `piece` with its length (bit 31 set if `continues`) and
/// checksum.
fn write_physical(out: &mut impl Write, piece: &[u8], continues: bool) -> io::Result<()> {
    let more = if continues { CONTINUES } else { 0 };
    let len = (piece.len() as u32 | more).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), piece);
    out.write_all(&len)?;
    out.write_all(&crc.to_le_bytes())?;
    out.write_all(piece)
}

/// A physical record that checks out.
struct Physical {
    payload: std::ops::Range<usize>,
    /// The offset after it.
    next: usize,
    /// A fragment: the record goes on in the next one.
    continues: bool,
}

/// Checks the physical record at `offset` of a segment of format `version`, or says why it is
/// bad.
fn record_at(
    data: &[u8],
    offset: usize,
    max_record_bytes: u32,
    version: u32,
) -> Result<Physical, String> {
    let header = RECORD_HEADER_BYTES as usize;
    let remaining = data.len() - offset;
    if remaining < header {
        return Err(format!(
            "incomplete record header ({remaining} of {header} bytes)"
        ));
    }
    let len_bytes = &data[offset..offset + 4];
    let raw = u32::from_le_bytes(len_bytes.try_into().unwrap_or_default());
    let continues = raw & CONTINUES != 0 && version != FORMAT_VERSION_UNFRAGMENTED;
    let len = if continues { raw & !CONTINUES } else { raw };
    if len == 0 {
        return Err("zero-length record (zeroed or preallocated space)".into());
    }
    if len > max_record_bytes {
        return Err(format!(
            "record length {len} exceeds the limit of {max_record_bytes} bytes"
        ));
    }
    let start = offset + header;
    let end = start + len as usize;
    if end > data.len() {
        return Err(format!(
            "incomplete record ({len} bytes declared, {} present)",
            data.len() - start
        ));
    }
    let stored = u32::from_le_bytes(data[offset + 4..start].try_into().unwrap_or_default());
    let computed = crc32c::crc32c_append(crc32c::crc32c(len_bytes), &data[start..end]);
    if stored != computed {
        return Err(format!(
            "record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    Ok(Physical {
        payload: start..end,
        next: end,
        continues,
    })
}

struct Scan {
    records: Vec<Vec<u8>>,
    /// The offset after the last record read.
    end: usize,
    torn: Option<TornTail>,
}

/// Reads the records of one segment of format `version` (its header already checked) under
/// the recovery rules, joining fragments.
fn scan_records(
    data: &[u8],
    path: &Path,
    last: bool,
    max_record_bytes: u32,
    version: u32,
) -> Result<Scan, WalError> {
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES as usize;
    // The fragments read of a record not yet complete, and where its first one starts.
    let mut pending: Option<(usize, Vec<u8>)> = None;
    let torn = |at: usize, reason: String| TornTail {
        segment: path.to_path_buf(),
        offset: at as u64,
        bytes_dropped: (data.len() - at) as u64,
        reason,
    };
    let unfinished = "a record's fragments end before its last one";
    while offset < data.len() {
        match record_at(data, offset, max_record_bytes, version) {
            Ok(record) => {
                let piece = &data[record.payload];
                match (&mut pending, record.continues) {
                    (Some((_, joined)), true) => joined.extend_from_slice(piece),
                    (Some(_), false) => {
                        let (_, mut joined) = pending.take().expect("matched Some");
                        joined.extend_from_slice(piece);
                        records.push(joined);
                    }
                    (None, true) => pending = Some((offset, piece.to_vec())),
                    (None, false) => records.push(piece.to_vec()),
                }
                offset = record.next;
            }
            Err(reason) => {
                // The record the damage cuts short starts at its first fragment.
                let start = pending.as_ref().map_or(offset, |(start, _)| *start);
                // Only zeros after the last record: space allocated ahead of the writes.
                let data_end = data.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                if last && data_end <= offset {
                    return Ok(Scan {
                        records,
                        end: start,
                        torn: pending.map(|_| torn(start, unfinished.into())),
                    });
                }
                // A valid record cannot start in the zeros at the end: look before them.
                let valid_after = last
                    && (offset + 1..data_end)
                        .any(|later| record_at(data, later, max_record_bytes, version).is_ok());
                return match valid_after {
                    false if last => Ok(Scan {
                        records,
                        end: start,
                        torn: Some(torn(start, reason)),
                    }),
                    _ => Err(WalError::Corrupt {
                        segment: path.to_path_buf(),
                        offset: offset as u64,
                        reason: if last {
                            format!("{reason}; a valid record follows it")
                        } else {
                            format!("{reason}; a newer segment follows this one")
                        },
                    }),
                };
            }
        }
    }
    match pending {
        None => Ok(Scan {
            records,
            end: offset,
            torn: None,
        }),
        Some((start, _)) if last => Ok(Scan {
            records,
            end: start,
            torn: Some(torn(start, unfinished.into())),
        }),
        Some((start, _)) => Err(WalError::Corrupt {
            segment: path.to_path_buf(),
            offset: start as u64,
            reason: format!("{unfinished}; a newer segment follows this one"),
        }),
    }
}

#[cfg(test)]
mod tests;
