//! Recovery rules of the write-ahead log, one damaged state at a time.

use super::*;

fn record(i: usize) -> Vec<u8> {
    // Varying lengths, never empty.
    (0..(5 + i % 23)).map(|b| (i * 31 + b) as u8).collect()
}

fn records(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(record).collect()
}

/// Without preallocation: a segment file holds exactly its records, which the damage tests
/// below rely on. Preallocation has tests of its own at the end.
fn plain() -> WalOptions {
    WalOptions {
        preallocate_bytes: 0,
        ..WalOptions::default()
    }
}

fn small_segments() -> WalOptions {
    WalOptions {
        max_segment_bytes: 256,
        ..plain()
    }
}

/// Preallocating in chunks of 4 KiB.
fn preallocating() -> WalOptions {
    WalOptions {
        preallocate_bytes: 4096,
        ..WalOptions::default()
    }
}

/// Writes `records` to a fresh log in `dir` and syncs it.
fn write_log(dir: &Path, options: WalOptions, records: &[Vec<u8>]) {
    let (mut wal, recovered, _) = Wal::open(dir, options).unwrap();
    assert!(recovered.is_empty());
    for record in records {
        wal.append(record).unwrap();
    }
    wal.sync().unwrap();
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Byte offsets of the physical records (fragments each) in one segment file.
fn record_offsets(data: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES as usize;
    while offset < data.len() {
        offsets.push(offset);
        let raw = u32::from_le_bytes(data[offset..offset + 4].try_into().unwrap());
        let len = (raw & !CONTINUES) as usize;
        offset += RECORD_HEADER_BYTES as usize + len;
    }
    offsets
}

#[test]
fn records_survive_a_reopen_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), plain(), &records(10));
    let (mut wal, recovered, report) = Wal::open(dir.path(), plain()).unwrap();
    assert_eq!(recovered, records(10));
    assert_eq!(report.records, 10);
    assert_eq!(report.torn_tail, None);
    wal.append(&record(10)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, recovered, _) = Wal::open(dir.path(), plain()).unwrap();
    assert_eq!(recovered, records(11));
}

#[test]
fn truncation_at_every_byte_of_the_last_record_recovers_exactly_the_earlier_records() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), plain(), &records(5));
    let path = segment_path(dir.path(), 1);
    let full = fs::read(&path).unwrap();
    let last = *record_offsets(&full).last().unwrap();
    for cut in last..full.len() {
        fs::write(&path, &full[..cut]).unwrap();
        let (mut wal, recovered, report) =
            Wal::open(dir.path(), plain()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(recovered, records(4), "cut at {cut}");
        if cut > last {
            let torn = report.torn_tail.expect("a torn tail is reported");
            assert_eq!(torn.offset, last as u64);
            assert_eq!(torn.bytes_dropped, (cut - last) as u64);
        }
        assert_eq!(fs::metadata(&path).unwrap().len(), last as u64, "truncated");
        // The log is usable again: the next record lands where the torn one was.
        wal.append(&record(99)).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, recovered, _) = Wal::open(dir.path(), plain()).unwrap();
        let mut expected = records(4);
        expected.push(record(99));
        assert_eq!(recovered, expected, "cut at {cut}");
    }
}

#[test]
fn a_bit_flip_in_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), plain(), &records(5));
    let path = segment_path(dir.path(), 1);
    let full = fs::read(&path).unwrap();
    let last = *record_offsets(&full).last().unwrap();
    for byte in last..full.len() {
        let mut damaged = full.clone();
        damaged[byte] ^= 1 << (byte % 8);
        fs::write(&path, &damaged).unwrap();
        let (_, recovered, report) =
            Wal::open(dir.path(), plain()).unwrap_or_else(|e| panic!("flip at {byte}: {e}"));
        assert_eq!(recovered, records(4), "flip at {byte}");
        assert_eq!(report.torn_tail.unwrap().offset, last as u64);
    }
}

#[test]
fn a_bit_flip_in_any_earlier_record_is_corruption_naming_segment_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), plain(), &records(5));
    let path = segment_path(dir.path(), 1);
    let full = fs::read(&path).unwrap();
    let offsets = record_offsets(&full);
    let last = *offsets.last().unwrap();
    for byte in SEGMENT_HEADER_BYTES as usize..last {
        let record_offset = *offsets.iter().rev().find(|&&o| o <= byte).unwrap();
        let mut damaged = full.clone();
        damaged[byte] ^= 1 << (byte % 8);
        fs::write(&path, &damaged).unwrap();
        match Wal::open(dir.path(), plain()) {
            Err(WalError::Corrupt {
                segment, offset, ..
            }) => {
                assert_eq!(segment, path, "flip at {byte}");
                assert_eq!(offset, record_offset as u64, "flip at {byte}");
            }
            other => panic!("flip at {byte}: expected corruption, got {other:?}"),
        }
        // Nothing was truncated.
        assert_eq!(fs::read(&path).unwrap(), damaged);
    }
    let message = {
        let mut damaged = full.clone();
        damaged[offsets[1] + 9] ^= 0x10;
        fs::write(&path, &damaged).unwrap();
        Wal::open(dir.path(), plain()).unwrap_err().to_string()
    };
    assert!(message.contains("00000000000000000001.log"), "{message}");
    assert!(
        message.contains(&format!("offset {}", offsets[1])),
        "{message}"
    );
    assert!(
        message.contains("data directory"),
        "tells the operator what to do: {message}"
    );
}

#[test]
fn a_zero_filled_tail_is_the_clean_end() {
    // As preallocated space looks, or a crash after the file grew and before its data landed
    // (nothing there was ever synced, so nothing acknowledged is lost).
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), plain(), &records(3));
    let path = segment_path(dir.path(), 1);
    let mut data = fs::read(&path).unwrap();
    data.extend_from_slice(&[0u8; 4096]);
    fs::write(&path, &data).unwrap();
    let (mut wal, recovered, report) = Wal::open(dir.path(), plain()).unwrap();
    assert_eq!(recovered, records(3));
    assert_eq!(report.torn_tail, None);
    wal.append(&record(3)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, recovered, _) = Wal::open(dir.path(), plain()).unwrap();
    assert_eq!(recovered, records(4), "the next record overwrote the zeros");
}

#[test]
fn segments_roll_over_and_recover_in_order() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), small_segments(), &records(60));
    let (mut wal, recovered, report) = Wal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(recovered, records(60));
    assert!(report.segments > 3, "{report:?}");
    assert_eq!(wal.segment_count(), report.segments);
    let on_disk: u64 = segment_files(dir.path())
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(wal.total_bytes(), on_disk);
    for i in 60..80 {
        wal.append(&record(i)).unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    let (_, recovered, _) = Wal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(recovered, records(80));
}

#[test]
fn damage_in_an_older_segment_is_corruption_even_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), small_segments(), &records(40));
    let first = segment_path(dir.path(), 1);
    let data = fs::read(&first).unwrap();
    let last = *record_offsets(&data).last().unwrap();
    fs::write(&first, &data[..data.len() - 1]).unwrap();
    match Wal::open(dir.path(), small_segments()) {
        Err(WalError::Corrupt {
            segment, offset, ..
        }) => {
            assert_eq!(segment, first);
            assert_eq!(offset, last as u64);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_missing_middle_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), small_segments(), &records(40));
    fs::remove_file(segment_path(dir.path(), 2)).unwrap();
    let error = Wal::open(dir.path(), small_segments()).unwrap_err();
    assert!(
        error.to_string().contains("segment 2 is missing"),
        "{error}"
    );
}

#[test]
fn a_torn_header_of_the_newest_segment_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), small_segments(), &records(40));
    let count = segment_files(dir.path()).len() as u64;
    let torn = segment_path(dir.path(), count + 1);
    fs::write(&torn, &encode_header(count + 1, 0)[..10]).unwrap();
    let (_, recovered, report) = Wal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(recovered, records(40));
    assert_eq!(report.removed, vec![torn.clone()]);
    assert!(!torn.exists());
}

#[test]
fn a_damaged_header_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), plain(), &records(3));
    let path = segment_path(dir.path(), 1);
    let mut data = fs::read(&path).unwrap();
    data[3] ^= 0x01;
    fs::write(&path, &data).unwrap();
    let error = Wal::open(dir.path(), plain()).unwrap_err();
    assert!(
        matches!(error, WalError::Corrupt { offset: 0, .. }),
        "{error}"
    );
}

#[test]
fn rewrite_replaces_the_log_with_its_base() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), small_segments(), &records(40));
    let (mut wal, _, _) = Wal::open(dir.path(), small_segments()).unwrap();
    let base = vec![b"base-1".to_vec(), b"base-2".to_vec()];
    wal.rewrite(&base).unwrap();
    // The base segment, and the one appended to.
    assert_eq!(wal.segment_count(), 2);
    wal.append(&record(100)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, recovered, report) = Wal::open(dir.path(), small_segments()).unwrap();
    let mut expected = base.clone();
    expected.push(record(100));
    assert_eq!(recovered, expected);
    assert!(report.removed.is_empty());
    assert_eq!(segment_files(dir.path()).len(), 2);
}

#[test]
fn appends_go_on_while_the_base_is_written_and_land_after_it() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), small_segments(), &records(40));
    let (mut wal, _, _) = Wal::open(dir.path(), small_segments()).unwrap();
    let base = vec![b"base-1".to_vec(), vec![9; 300]];
    let rewrite = wal.begin_rewrite().unwrap();
    // Appends (enough to roll over several segments) and syncs while the base is written on
    // another thread.
    let writer = std::thread::spawn({
        let base = base.clone();
        move || rewrite.write(&base)
    });
    for i in 40..80 {
        wal.append(&record(i)).unwrap();
        wal.sync().unwrap();
    }
    let written = writer.join().unwrap().unwrap();
    // Before the old segments are deleted, a crash recovers the base and what followed it.
    {
        let copy = tempfile::tempdir().unwrap();
        for file in segment_files(dir.path()) {
            fs::copy(&file, copy.path().join(file.file_name().unwrap())).unwrap();
        }
        let (_, recovered, report) = Wal::open(copy.path(), small_segments()).unwrap();
        let mut expected = base.clone();
        expected.extend(records(80).split_off(40));
        assert_eq!(recovered, expected);
        assert!(!report.removed.is_empty(), "the replaced segments go");
    }
    wal.finish_rewrite(written).unwrap();
    wal.append(&record(100)).unwrap();
    wal.sync().unwrap();
    let segments = wal.segment_count();
    drop(wal);
    assert_eq!(segment_files(dir.path()).len(), segments);
    let (_, recovered, report) = Wal::open(dir.path(), small_segments()).unwrap();
    let mut expected = base;
    expected.extend(records(80).split_off(40));
    expected.push(record(100));
    assert_eq!(recovered, expected);
    assert!(report.removed.is_empty(), "{report:?}");
}

#[test]
fn a_crash_at_any_point_of_a_rewrite_leaves_the_old_log_or_the_new_one() {
    let base = vec![b"base-1".to_vec(), vec![7; 300], b"base-3".to_vec()];
    for step in [
        RewriteStep::TempPartial,
        RewriteStep::TempSynced,
        RewriteStep::Renamed,
        RewriteStep::DeletedOne,
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), small_segments(), &records(40));
        let (mut wal, _, _) = Wal::open(dir.path(), small_segments()).unwrap();
        wal.rewrite_until(&base, step).unwrap();
        drop(wal); // the crash
        let (mut wal, recovered, report) =
            Wal::open(dir.path(), small_segments()).unwrap_or_else(|e| panic!("{step:?}: {e}"));
        let new_log = step >= RewriteStep::Renamed;
        if new_log {
            assert_eq!(recovered, base, "{step:?}");
            // The base segment, and the (empty) one appended to.
            assert_eq!(wal.segment_count(), 2, "{step:?}");
        } else {
            assert_eq!(recovered, records(40), "{step:?}");
        }
        assert!(
            !report.removed.is_empty(),
            "{step:?}: leftovers are cleaned"
        );
        assert!(
            segment_files(dir.path())
                .iter()
                .all(|p| p.extension().unwrap() == "log"),
            "{step:?}: no temporary file is left"
        );
        // The log goes on from there.
        wal.append(&record(200)).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, again, _) = Wal::open(dir.path(), small_segments()).unwrap();
        let mut expected = if new_log { base.clone() } else { records(40) };
        expected.push(record(200));
        assert_eq!(again, expected, "{step:?}");
    }
}

#[test]
fn a_failed_write_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = dir.path().join("wal");
    let (mut wal, _, _) = Wal::open(&wal_dir, small_segments()).unwrap();
    wal.append(&record(0)).unwrap();
    wal.sync().unwrap();
    // The directory disappears: the next roll-over cannot create its segment.
    fs::remove_dir_all(&wal_dir).unwrap();
    let mut failed = None;
    for i in 1..100 {
        if let Err(error) = wal.append(&record(i)) {
            failed = Some(error);
            break;
        }
    }
    assert!(matches!(failed, Some(WalError::Io { .. })), "{failed:?}");
    assert!(matches!(wal.append(&record(1)), Err(WalError::Poisoned)));
    assert!(matches!(wal.sync(), Err(WalError::Poisoned)));
    assert!(matches!(wal.rewrite(&[]), Err(WalError::Poisoned)));
}

#[test]
fn empty_records_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _, _) = Wal::open(dir.path(), plain()).unwrap();
    assert!(matches!(wal.append(&[]), Err(WalError::EmptyRecord)));
    let rewrite = wal.begin_rewrite().unwrap();
    assert!(matches!(
        rewrite.write(&[vec![1], vec![]]),
        Err(WalError::EmptyRecord)
    ));
}

/// Physical records of at most 16 bytes.
fn small_records() -> WalOptions {
    WalOptions {
        max_record_bytes: 16,
        ..plain()
    }
}

/// `len` bytes, none zero.
fn long_record(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u8).wrapping_mul(7) ^ seed) | 1)
        .collect()
}

/// A record longer than `max_record_bytes` is written as fragments, all in one segment, and
/// read back whole; so is a base record of a rewrite.
#[test]
fn long_records_are_split_into_fragments_and_joined_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let written = vec![
        long_record(40, 0),
        record(1),
        long_record(16, 2),
        long_record(33, 3),
    ];
    write_log(dir.path(), small_records(), &written);
    let files = segment_files(dir.path());
    let data = fs::read(&files[0]).unwrap();
    // 40 bytes as 16 + 16 + 8, 6 as one, 16 as one, 33 as 16 + 16 + 1.
    assert_eq!(record_offsets(&data).len(), 8);
    assert_eq!(
        data.len() as u64,
        SEGMENT_HEADER_BYTES + 8 * RECORD_HEADER_BYTES + (40 + 6 + 16 + 33)
    );
    let (mut wal, recovered, report) = Wal::open(dir.path(), small_records()).unwrap();
    assert_eq!(recovered, written);
    assert!(report.torn_tail.is_none());

    let base = vec![long_record(50, 4), long_record(3, 5)];
    wal.rewrite(&base).unwrap();
    wal.append(&long_record(20, 6)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, recovered, _) = Wal::open(dir.path(), small_records()).unwrap();
    assert_eq!(recovered, [base, vec![long_record(20, 6)]].concat());
}

/// A base written as it is encoded (`Rewrite::write_streamed`) goes out in fragments, however
/// the encoder cuts its writes, and comes back as one record; the segment's length is the one
/// the log counts.
#[test]
fn a_streamed_base_is_written_in_fragments_and_read_back_whole() {
    for (len, pieces) in [(1, 1), (16, 1), (16, 16), (17, 3), (50, 7), (64, 5)] {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = Wal::open(dir.path(), small_records()).unwrap();
        wal.append(&record(1)).unwrap();
        let base = long_record(len, 9);
        let written = wal
            .begin_rewrite()
            .unwrap()
            .write_streamed(|out| {
                for piece in base.chunks(pieces) {
                    out.write_all(piece)?;
                }
                Ok(())
            })
            .unwrap();
        wal.finish_rewrite(written).unwrap();
        let files = segment_files(dir.path());
        let data = fs::read(&files[0]).unwrap();
        assert_eq!(record_offsets(&data).len(), len.div_ceil(16), "{len} bytes");
        wal.append(&record(2)).unwrap();
        wal.sync().unwrap();
        let counted = wal.total_bytes();
        drop(wal);
        let on_disk: u64 = segment_files(dir.path())
            .iter()
            .map(|file| fs::metadata(file).unwrap().len())
            .sum();
        assert_eq!(counted, on_disk, "{len} bytes in pieces of {pieces}");
        let (_, recovered, _) = Wal::open(dir.path(), small_records()).unwrap();
        assert_eq!(
            recovered,
            vec![base, record(2)],
            "{len} bytes in pieces of {pieces}"
        );
    }
}

/// A streamed base that comes out empty, or whose encoder fails, fails the rewrite and is
/// never put in place: the log still holds what it held.
#[test]
fn a_streamed_base_that_is_empty_or_fails_is_not_put_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _, _) = Wal::open(dir.path(), small_records()).unwrap();
    wal.append(&record(1)).unwrap();
    wal.sync().unwrap();
    let empty = wal.begin_rewrite().unwrap().write_streamed(|_| Ok(()));
    assert!(matches!(empty, Err(WalError::EmptyRecord)), "{empty:?}");
    drop(wal);
    let (mut wal, recovered, _) = Wal::open(dir.path(), small_records()).unwrap();
    assert_eq!(recovered, vec![record(1)]);
    let failed = wal.begin_rewrite().unwrap().write_streamed(|out| {
        out.write_all(&long_record(40, 3))?;
        Err(io::Error::other("the encoder gave up"))
    });
    match failed {
        Err(WalError::Io { source, .. }) => assert!(source.to_string().contains("gave up")),
        other => panic!("{other:?}"),
    }
    drop(wal);
    let (_, recovered, _) = Wal::open(dir.path(), small_records()).unwrap();
    assert_eq!(recovered, vec![record(1)]);
}

/// Cut anywhere inside a fragmented record at the end of the log, the whole record is a torn
/// tail: the file is truncated at its first fragment, and the records before it stand.
#[test]
fn a_fragmented_record_cut_short_is_a_torn_tail_from_its_first_fragment() {
    let before = vec![record(1), long_record(20, 1)];
    let last = long_record(45, 2);
    let probe = tempfile::tempdir().unwrap();
    write_log(
        probe.path(),
        small_records(),
        &[before.clone(), vec![last.clone()]].concat(),
    );
    let full = fs::read(&segment_files(probe.path())[0]).unwrap();
    let start = full.len() - encoded_len(last.len(), 16) as usize;
    // A log of one segment holding `bytes`.
    let log_of = |bytes: &[u8]| {
        let dir = tempfile::tempdir().unwrap();
        fs::write(segment_path(dir.path(), 1), bytes).unwrap();
        dir
    };
    for cut in [start + 3, start + 8, start + 24, start + 30, full.len() - 1] {
        let dir = log_of(&full[..cut]);
        let (_, recovered, report) = Wal::open(dir.path(), small_records()).unwrap();
        assert_eq!(recovered, before, "cut at {cut}");
        let torn = report.torn_tail.expect("a torn tail");
        assert_eq!(torn.offset, start as u64, "cut at {cut}");
        let path = segment_path(dir.path(), 1);
        assert_eq!(fs::read(path).unwrap().len(), start, "cut at {cut}");
    }
    // Whole fragments followed by zeros (allocated space): torn as well, not the clean end.
    let mut zeroed = full[..start + 2 * 24].to_vec();
    zeroed.resize(full.len() + 4096, 0);
    let dir = log_of(&zeroed);
    let (_, recovered, report) = Wal::open(dir.path(), small_records()).unwrap();
    assert_eq!(recovered, before);
    assert_eq!(report.torn_tail.expect("a torn tail").offset, start as u64);
}

/// Fragments whose last one is missing, in a segment a newer one follows, cannot come from a
/// crash.
#[test]
fn an_unfinished_fragmented_record_in_an_older_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _, _) = Wal::open(dir.path(), small_records()).unwrap();
    wal.append(&long_record(40, 1)).unwrap();
    wal.begin_rewrite().unwrap(); // seals segment 1; appends go on in segment 2
    wal.append(&record(2)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let first = segment_files(dir.path())[0].clone();
    let data = fs::read(&first).unwrap();
    fs::write(&first, &data[..data.len() - 8 - 8]).unwrap();
    match Wal::open(dir.path(), small_records()) {
        Err(WalError::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset, SEGMENT_HEADER_BYTES);
            assert!(
                reason.contains("fragments end before its last one"),
                "{reason}"
            );
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

/// A segment of format version 1 (before fragments) is read, and the log goes on in a new
/// segment of the current version; a version-1 record with the fragment bit set is damage.
#[test]
fn version_1_segments_are_read_and_never_appended_to() {
    let dir = tempfile::tempdir().unwrap();
    let mut segment = encode_header(1, 0).to_vec();
    segment[8..12].copy_from_slice(&FORMAT_VERSION_UNFRAGMENTED.to_le_bytes());
    let crc = crc32c::crc32c(&segment[0..28]);
    segment[28..32].copy_from_slice(&crc.to_le_bytes());
    encode_record(&mut segment, &record(1), 1 << 20);
    encode_record(&mut segment, &record(2), 1 << 20);
    let path = segment_path(dir.path(), 1);
    fs::write(&path, &segment).unwrap();

    let (mut wal, recovered, _) = Wal::open(dir.path(), small_records()).unwrap();
    assert_eq!(recovered, vec![record(1), record(2)]);
    assert_eq!(wal.segment_count(), 2);
    wal.append(&long_record(40, 3)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    assert_eq!(
        fs::read(&path).unwrap(),
        segment,
        "the version-1 segment is untouched"
    );
    let newer = fs::read(segment_path(dir.path(), 2)).unwrap();
    assert_eq!(newer[8..12], FORMAT_VERSION.to_le_bytes());
    let (_, recovered, _) = Wal::open(dir.path(), small_records()).unwrap();
    assert_eq!(recovered, vec![record(1), record(2), long_record(40, 3)]);

    // In version 1 the bit is part of the length: far over the limit.
    let other = tempfile::tempdir().unwrap();
    let mut fragmented = segment[..SEGMENT_HEADER_BYTES as usize].to_vec();
    encode_record(&mut fragmented, &long_record(20, 4), 16);
    encode_record(&mut fragmented, &record(5), 16);
    fs::write(segment_path(other.path(), 1), &fragmented).unwrap();
    match Wal::open(other.path(), small_records()) {
        Err(WalError::Corrupt { reason, .. }) => {
            assert!(reason.contains("exceeds the limit"), "{reason}")
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn preallocated_space_is_the_clean_end_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = segment_path(dir.path(), 1);
    let (mut wal, _, _) = Wal::open(dir.path(), preallocating()).unwrap();
    for i in 0..10 {
        wal.append(&record(i)).unwrap();
    }
    wal.sync().unwrap();
    let logical = wal.total_bytes();
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        4096,
        "one chunk allocated"
    );
    assert!(logical < 4096);
    drop(wal);
    let (mut wal, recovered, report) = Wal::open(dir.path(), preallocating()).unwrap();
    assert_eq!(recovered, records(10));
    assert_eq!(
        report.torn_tail, None,
        "zeros after the records are no torn tail"
    );
    assert_eq!(wal.total_bytes(), logical);
    assert_eq!(fs::metadata(&path).unwrap().len(), 4096, "nothing cut");
    // Appends land right after the records, and past the first chunk the next is allocated.
    let big: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8 + 1; 200]).collect();
    for record in &big {
        wal.append(record).unwrap();
    }
    wal.sync().unwrap();
    let length = fs::metadata(&path).unwrap().len();
    assert!(length > 4096 && length.is_multiple_of(4096), "{length}");
    drop(wal);
    let (_, recovered, report) = Wal::open(dir.path(), preallocating()).unwrap();
    let mut expected = records(10);
    expected.extend(big);
    assert_eq!(recovered, expected);
    assert_eq!(report.torn_tail, None);
}

#[test]
fn preallocated_space_is_written_zeros_not_a_hole() {
    // Space that is only allocated (`fallocate`: "unwritten" extents on ext4 and XFS) reads as
    // a hole to SEEK_HOLE; the first write into each block of it would change the extent map,
    // which every following `fdatasync` would then write too.
    let dir = tempfile::tempdir_in(".").unwrap();
    let path = segment_path(dir.path(), 1);
    let options = WalOptions {
        preallocate_bytes: 64 << 10,
        ..WalOptions::default()
    };
    let (mut wal, _, _) = Wal::open(dir.path(), options).unwrap();
    wal.append(&record(1)).unwrap();
    wal.sync().unwrap();
    let file = File::open(&path).unwrap();
    let length = file.metadata().unwrap().len();
    assert_eq!(length, 64 << 10, "one chunk allocated");
    let first_hole = rustix::fs::seek(&file, rustix::fs::SeekFrom::Hole(0)).unwrap();
    assert_eq!(first_hole, length, "no hole before the end of the file");
    let data = fs::read(&path).unwrap();
    assert!(data[plain_length(&data)..].iter().all(|&b| b == 0));
}

#[test]
fn a_torn_record_in_preallocated_space_is_cut_off_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = segment_path(dir.path(), 1);
    write_log(dir.path(), preallocating(), &records(5));
    let mut data = fs::read(&path).unwrap();
    let offsets = record_offsets(&data[..plain_length(&data)]);
    let last = *offsets.last().unwrap();
    // A crash mid-write: the last record's header landed, the end of its payload did not.
    let end = plain_length(&data);
    for byte in &mut data[end - 3..end] {
        *byte = 0;
    }
    fs::write(&path, &data).unwrap();
    let (mut wal, recovered, report) = Wal::open(dir.path(), preallocating()).unwrap();
    assert_eq!(recovered, records(4));
    let torn = report.torn_tail.expect("a torn tail");
    assert_eq!(torn.offset, last as u64);
    wal.append(&record(99)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, recovered, report) = Wal::open(dir.path(), preallocating()).unwrap();
    let mut expected = records(4);
    expected.push(record(99));
    assert_eq!(recovered, expected);
    assert_eq!(report.torn_tail, None);
}

#[test]
fn damage_before_the_last_record_is_corruption_with_preallocated_space_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = segment_path(dir.path(), 1);
    write_log(dir.path(), preallocating(), &records(5));
    let full = fs::read(&path).unwrap();
    let offsets = record_offsets(&full[..plain_length(&full)]);
    let mut damaged = full.clone();
    damaged[offsets[2] + 9] ^= 0x10;
    fs::write(&path, &damaged).unwrap();
    match Wal::open(dir.path(), preallocating()) {
        Err(WalError::Corrupt { offset, .. }) => assert_eq!(offset, offsets[2] as u64),
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(fs::read(&path).unwrap(), damaged, "nothing was cut");
}

#[test]
fn a_sealed_segment_is_cut_to_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        max_segment_bytes: 256,
        ..preallocating()
    };
    write_log(dir.path(), options.clone(), &records(60));
    let files = segment_files(dir.path());
    assert!(files.len() > 3, "{files:?}");
    for sealed in &files[..files.len() - 1] {
        let data = fs::read(sealed).unwrap();
        assert_eq!(
            plain_length(&data),
            data.len(),
            "{} is cut",
            sealed.display()
        );
    }
    let (wal, recovered, report) = Wal::open(dir.path(), options).unwrap();
    assert_eq!(recovered, records(60));
    assert_eq!(report.torn_tail, None);
    let sealed: u64 = files[..files.len() - 1]
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    let current = fs::read(files.last().unwrap()).unwrap();
    assert_eq!(wal.total_bytes(), sealed + plain_length(&current) as u64);
}

/// The length of a segment's header and records, before any zeros allocated after them.
fn plain_length(data: &[u8]) -> usize {
    let mut offset = SEGMENT_HEADER_BYTES as usize;
    while offset + RECORD_HEADER_BYTES as usize <= data.len() {
        let len = u32::from_le_bytes(data[offset..offset + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        offset += RECORD_HEADER_BYTES as usize + len;
    }
    offset.min(data.len())
}
