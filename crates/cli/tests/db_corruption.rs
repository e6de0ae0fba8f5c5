//! A damaged write-ahead log of a stopped node: a torn tail (truncated, or a bad checksum in the
//! last record) is cut off and the node catches up from its peers; a bad record in the middle
//! stops the node with an error naming the segment and the offset.
//!
//! Segment layout (`crates/runtime/src/wal.rs`): a 32-byte header, then records of
//! `len u32 LE · crc32c u32 LE · payload`.
// Real processes on a real clock: waiting for them needs wall-clock deadlines.
#![allow(clippy::disallowed_methods)]

mod db;

use std::path::{Path, PathBuf};
use std::time::Duration;

use db::{etcdctl, etcdctl_ok, wait_until, DbCluster};

const SEGMENT_HEADER: usize = 32;
const RECORD_HEADER: usize = 8;

/// The newest segment of node `id`'s WAL.
fn last_segment(cluster: &DbCluster, id: u64) -> PathBuf {
    let dir = cluster.data_dir(id).join("wal");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the WAL directory")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    segments.pop().expect("a segment")
}

/// Byte offsets and payload lengths of every record of a segment, which may end in space
/// allocated ahead of the writes (zeros).
fn records(path: &Path) -> Vec<(usize, usize)> {
    let data = std::fs::read(path).expect("the segment");
    let mut offset = SEGMENT_HEADER;
    let mut records = Vec::new();
    while offset + RECORD_HEADER <= data.len() {
        let len = u32::from_le_bytes(data[offset..offset + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        assert!(
            offset + RECORD_HEADER + len <= data.len(),
            "an intact segment"
        );
        records.push((offset, len));
        offset += RECORD_HEADER + len;
    }
    assert!(
        data[offset..].iter().all(|&b| b == 0),
        "an intact segment: only zeros after the records"
    );
    records
}

/// Where the records of a segment end.
fn records_end(path: &Path) -> u64 {
    records(path)
        .last()
        .map_or(SEGMENT_HEADER, |&(offset, len)| {
            offset + RECORD_HEADER + len
        }) as u64
}

fn flip_bit(path: &Path, offset: usize) {
    let mut data = std::fs::read(path).expect("the segment");
    data[offset] ^= 0x10;
    std::fs::write(path, data).expect("write the segment");
}

fn put_keys(endpoints: &str, range: std::ops::Range<usize>) {
    for i in range {
        let key = format!("key{i:04}");
        let value = format!("value{i}");
        assert_eq!(etcdctl_ok(endpoints, &["put", &key, &value]).trim(), "OK");
    }
}

/// How many `key…` keys node `id` holds in its local state (a serializable read).
fn local_count(cluster: &DbCluster, id: u64) -> Option<u64> {
    let node = &cluster.nodes[(id - 1) as usize];
    let output = etcdctl(
        &node.client,
        &[
            "get",
            "key",
            "--prefix",
            "--keys-only",
            "--consistency=s",
            "-w",
            "json",
        ],
    );
    if !output.status.success() {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    Some(json["count"].as_u64().unwrap_or(0))
}

/// Waits until node `id` holds `count` keys, and checks the last one's value locally.
fn wait_caught_up(cluster: &DbCluster, id: u64, count: usize) {
    wait_until(
        Duration::from_secs(30),
        || local_count(cluster, id) == Some(count as u64),
        || {
            format!(
                "node {id} holds {:?} of {count} keys\n{:#?}\n{}",
                local_count(cluster, id),
                (1..=3).map(|id| cluster.status(id)).collect::<Vec<_>>(),
                cluster.logs()
            )
        },
    );
    let node = &cluster.nodes[(id - 1) as usize];
    let last = format!("key{:04}", count - 1);
    let value = etcdctl_ok(
        &node.client,
        &["get", &last, "--print-value-only", "--consistency=s"],
    );
    assert_eq!(value.trim(), format!("value{}", count - 1));
}

fn a_follower(cluster: &DbCluster) -> u64 {
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    (1..=3).find(|&id| id != leader).expect("a follower")
}

#[test]
fn a_damaged_wal_is_truncated_at_a_torn_tail_and_refused_when_corrupt_in_the_middle() {
    let mut cluster = DbCluster::start(3, &[]);
    let endpoints = cluster.endpoints();
    put_keys(&endpoints, 0..60);

    // (a) A truncated last segment: the torn record is cut off, and the node catches up.
    let node = a_follower(&cluster);
    wait_caught_up(&cluster, node, 60);
    cluster.stop(node);
    let segment = last_segment(&cluster, node);
    // The last record loses its last 3 bytes, and the allocated space after it goes too.
    let length = records_end(&segment);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open the segment");
    file.set_len(length - 3).expect("truncate");
    drop(file);
    put_keys(&cluster.running_endpoints(), 60..80);
    let before = cluster.log(node).len();
    cluster.spawn(node);
    wait_caught_up(&cluster, node, 80);
    let log = cluster.log(node)[before..].to_string();
    assert!(
        log.contains("truncated a torn write-ahead log tail"),
        "node {node} does not report the truncation:\n{log}"
    );
    assert!(
        log.contains(&segment.display().to_string()),
        "the report names the segment:\n{log}"
    );

    // (c) A bad checksum in the very last record (killed, no graceful shutdown): a torn tail.
    let node = a_follower(&cluster);
    wait_caught_up(&cluster, node, 80);
    cluster.kill(node);
    let segment = last_segment(&cluster, node);
    let &(offset, len) = records(&segment).last().expect("a record");
    flip_bit(&segment, offset + RECORD_HEADER + len / 2);
    put_keys(&cluster.running_endpoints(), 80..100);
    let before = cluster.log(node).len();
    cluster.spawn(node);
    wait_caught_up(&cluster, node, 100);
    let log = cluster.log(node)[before..].to_string();
    assert!(
        log.contains("truncated a torn write-ahead log tail") && log.contains("checksum"),
        "node {node} does not report the torn last record:\n{log}"
    );
    assert!(
        log.contains(&format!("offset={offset}")) || log.contains(&format!("offset: {offset}")),
        "the report names offset {offset}:\n{log}"
    );

    // (b) A bad record in the middle: the node refuses to start, naming the file and offset.
    let node = a_follower(&cluster);
    wait_caught_up(&cluster, node, 100);
    cluster.stop(node);
    let segment = last_segment(&cluster, node);
    let all = records(&segment);
    assert!(all.len() > 10, "enough records: {}", all.len());
    let (offset, len) = all[all.len() / 2];
    flip_bit(&segment, offset + RECORD_HEADER + len / 2);
    let before = cluster.log(node).len();
    cluster.spawn(node);
    let status = cluster.wait_exit(node, Duration::from_secs(30));
    let log = cluster.log(node)[before..].to_string();
    let status = status.unwrap_or_else(|| panic!("node {node} still runs:\n{log}"));
    assert!(
        !status.success(),
        "node {node} exited with {status}:\n{log}"
    );
    assert!(
        log.contains(&format!(
            "write-ahead log segment {} is corrupt at byte offset {offset}",
            segment.display()
        )),
        "the error names the segment and offset {offset}:\n{log}"
    );
    assert!(
        !log.contains("serving"),
        "node {node} must not serve:\n{log}"
    );
    let client = &cluster.nodes[(node - 1) as usize].client;
    assert!(
        std::net::TcpStream::connect(client).is_err(),
        "nothing listens at {client}"
    );
    // The segment is left as it was, for inspection.
    assert_eq!(records_len(&segment), all.len());
    // The other two still serve.
    put_keys(&cluster.running_endpoints(), 100..101);
}

/// Records in a segment, counted by their declared lengths (checksums not checked).
fn records_len(path: &Path) -> usize {
    records(path).len()
}
