//! etcd's own command-line client (etcdctl 3.4, Debian's `etcd-client`) against a three-node
//! Concord DB: put, get (prefix, range, at a revision), del, txn, watch, leases with expiry,
//! member list, endpoint status and health, `check datascale`, reads with no leader, and
//! etcd's lock and election recipes, and the space quota's alarm.

mod db;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use db::{etcdctl, etcdctl_ok, etcdctl_with_input, eventually, DbCluster};
use serde_json::Value;

/// Runs etcdctl with `-w json` and decodes its answer.
fn json(endpoints: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-w", "json"]);
    let text = etcdctl_ok(endpoints, &all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("etcdctl {args:?}: {e}: {text}"))
}

/// Standard base64, as etcdctl's JSON shows keys and values.
fn b64(bytes: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The revision in a response header.
fn revision(answer: &Value) -> i64 {
    answer["header"]["revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("no header revision in {answer}"))
}

/// An etcdctl command that keeps running (`watch`, `lock`, `elect`), in the background, its
/// output lines collected as they come.
struct Background {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Background {
    fn start(endpoints: &str, args: &[&str]) -> Background {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", endpoints])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdctl is installed (Debian package etcd-client)");
        let stdout = child.stdout.take().expect("watch output");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Background { child, lines }
    }

    /// The lines so far.
    fn so_far(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Interrupts it as Ctrl-C would (a lock holder or candidate then gives up cleanly) and
    /// waits for it to exit.
    fn interrupt(&mut self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exited = eventually("etcdctl to exit", Duration::from_secs(20), || {
            self.child.try_wait().ok().flatten()
        });
        assert!(exited.success(), "etcdctl exited with {exited:?}");
    }

    /// Waits until at least `count` lines arrived and returns them all.
    fn lines(&self, count: usize) -> Vec<String> {
        eventually(
            &format!("{count} lines of etcdctl output"),
            Duration::from_secs(20),
            || {
                let lines = self.lines.lock().unwrap().clone();
                (lines.len() >= count).then_some(lines)
            },
        )
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn put_get_range_revisions_delete_txn_and_watch() {
    let cluster = DbCluster::start(3, &[]);
    let all = cluster.endpoints();
    // Talk to one follower too: writes are forwarded, reads use ReadIndex.
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let follower = &cluster.nodes[(leader % 3) as usize].client;

    // put / get, with revisions, versions and create/mod revisions.
    let first = json(follower, &["put", "a", "1"]);
    let r1 = revision(&first);
    assert!(r1 > 1, "an empty store is at revision 1: {first}");
    assert_eq!(revision(&json(&all, &["put", "b", "2"])), r1 + 1);
    assert_eq!(revision(&json(follower, &["put", "b", "3"])), r1 + 2);
    assert_eq!(revision(&json(&all, &["put", "c", "4"])), r1 + 3);
    assert_eq!(etcdctl_ok(&all, &["put", "d", "5"]).trim(), "OK");
    let got = json(follower, &["get", "b"]);
    assert_eq!(revision(&got), r1 + 4, "{got}");
    assert_eq!(got["count"], 1);
    let kv = &got["kvs"][0];
    assert_eq!(kv["key"], b64("b"));
    assert_eq!(kv["value"], b64("3"));
    assert_eq!(kv["create_revision"], r1 + 1);
    assert_eq!(kv["mod_revision"], r1 + 2);
    assert_eq!(kv["version"], 2);
    assert_eq!(
        etcdctl_ok(follower, &["get", "a"]),
        "a\n1\n",
        "plain output is key then value"
    );
    assert_eq!(etcdctl_ok(&all, &["get", "missing"]), "");

    // get --prefix, and the range [a, c).
    etcdctl_ok(&all, &["put", "dir/x", "10"]);
    etcdctl_ok(&all, &["put", "dir/y", "11"]);
    etcdctl_ok(&all, &["put", "dirt", "12"]);
    assert_eq!(
        etcdctl_ok(&all, &["get", "--prefix", "dir/"]),
        "dir/x\n10\ndir/y\n11\n"
    );
    // count is the whole range; with a limit, "more" says some were left out.
    let limited = json(&all, &["get", "--prefix", "dir", "--limit", "1"]);
    assert_eq!(limited["count"], 3, "{limited}");
    assert_eq!(limited["more"], true, "{limited}");
    assert_eq!(limited["kvs"].as_array().unwrap().len(), 1, "{limited}");
    assert_eq!(
        etcdctl_ok(&all, &["get", "a", "c", "--keys-only"]),
        "a\n\nb\n\n"
    );
    assert_eq!(
        etcdctl_ok(
            &all,
            &["get", "a", "z", "--limit", "2", "--print-value-only"]
        ),
        "1\n3\n"
    );
    assert_eq!(
        etcdctl_ok(
            &all,
            &[
                "get",
                "a",
                "d",
                "--order",
                "DESCEND",
                "--sort-by",
                "MODIFY",
                "--keys-only"
            ]
        ),
        "c\n\nb\n\na\n\n"
    );

    // get --rev: older values and older ranges.
    let rev = (r1 + 1).to_string();
    assert_eq!(
        etcdctl_ok(&all, &["get", "b", "--rev", &rev, "--print-value-only"]),
        "2\n"
    );
    let old = json(&all, &["get", "a", "z", "--rev", &rev]);
    assert_eq!(old["count"], 2, "a and b existed at revision {rev}: {old}");
    assert_eq!(old["kvs"][1]["mod_revision"], r1 + 1);
    let future = etcdctl(&all, &["get", "a", "--rev", "1000000"]);
    assert!(!future.status.success());
    assert!(
        String::from_utf8_lossy(&future.stderr).contains("future revision"),
        "{}",
        String::from_utf8_lossy(&future.stderr)
    );

    // del: counts, --prev-kv, and a delete of nothing.
    let deleted = json(follower, &["del", "dir/", "--prefix", "--prev-kv"]);
    assert_eq!(deleted["deleted"], 2, "{deleted}");
    let prev: Vec<&Value> = deleted["prev_kvs"].as_array().unwrap().iter().collect();
    assert_eq!(prev.len(), 2);
    assert_eq!(prev[0]["key"], b64("dir/x"));
    assert_eq!(prev[1]["value"], b64("11"));
    assert_eq!(etcdctl_ok(&all, &["del", "dirt"]).trim(), "1");
    assert_eq!(etcdctl_ok(&all, &["del", "nothing-here"]).trim(), "0");
    assert_eq!(
        etcdctl_ok(&all, &["del", "d", "--prev-kv"]),
        "1\nd\n5\n",
        "count, then the deleted key and its value"
    );
    assert_eq!(etcdctl_ok(&all, &["get", "--prefix", "d"]), "");

    // txn from standard input: compares, blank line, success ops, blank line, failure ops.
    let taken = etcdctl_with_input(
        follower,
        &["txn", "-w", "json"],
        Some("value(\"a\") = \"1\"\nversion(\"b\") = \"2\"\n\nput t then\nget a\n\nput t else\n\n"),
    );
    assert!(taken.status.success(), "{taken:?}");
    let taken: Value = serde_json::from_slice(&taken.stdout).unwrap();
    assert_eq!(taken["succeeded"], true, "{taken}");
    let responses = taken["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 2);
    assert_eq!(
        responses[1]["Response"]["ResponseRange"]["kvs"][0]["value"],
        b64("1")
    );
    assert_eq!(
        etcdctl_ok(&all, &["get", "t", "--print-value-only"]),
        "then\n"
    );
    let not_taken = etcdctl_with_input(
        &all,
        &["txn"],
        Some("mod(\"a\") > \"1000\"\n\nput t then\n\nput t else\nget t\n\n"),
    );
    assert!(not_taken.status.success(), "{not_taken:?}");
    assert_eq!(
        String::from_utf8_lossy(&not_taken.stdout),
        "FAILURE\n\nOK\n\nt\nelse\n"
    );
    assert_eq!(
        etcdctl_ok(&all, &["get", "t", "--print-value-only"]),
        "else\n"
    );
    let bad_txn = etcdctl_with_input(&all, &["txn"], Some("value(\"a\") ~ \"1\"\n\n\n\n"));
    assert!(!bad_txn.status.success(), "a malformed compare is refused");

    // watch: started at the next revision, so it sees every write below however long the
    // process takes to start.
    let now = revision(&json(&all, &["get", "a"]));
    let from = (now + 1).to_string();
    let watch = Background::start(
        follower,
        &["watch", "--prefix", "w/", "--rev", &from, "--prev-kv"],
    );
    etcdctl_ok(&all, &["put", "w/1", "one"]);
    etcdctl_ok(&all, &["put", "unwatched", "x"]);
    etcdctl_ok(&all, &["put", "w/1", "uno"]);
    etcdctl_ok(&all, &["del", "w/1"]);
    // With --prev-kv: PUT, key, value (a first put has no previous key-value); PUT, prev key,
    // prev value, key, value; DELETE, prev key, prev value, key, (no value).
    let lines = watch.lines(13);
    assert_eq!(
        lines[..13],
        [
            "PUT", "w/1", "one", "PUT", "w/1", "one", "w/1", "uno", "DELETE", "w/1", "uno", "w/1",
            ""
        ],
        "{lines:?}"
    );
    drop(watch);

    // watch --rev from history: every change of b since its creation.
    let history = Background::start(&all, &["watch", "b", "--rev", "1"]);
    assert_eq!(history.lines(6)[..6], ["PUT", "b", "2", "PUT", "b", "3"]);
}

#[test]
fn leases_expire_keep_alive_and_revoke() {
    let cluster = DbCluster::start(3, &[]);
    let all = cluster.endpoints();

    // A TTL below the minimum is raised to it (2 s).
    let granted = json(&all, &["lease", "grant", "1"]);
    assert_eq!(granted["TTL"], 2, "{granted}");
    let id = granted["ID"].as_i64().unwrap();
    assert!(id > 0);
    // etcdctl prints lease ids as 16 hex digits.
    let hex = format!("{id:016x}");

    etcdctl_ok(&all, &["put", "leased", "v", &format!("--lease={hex}")]);
    let kv = json(&all, &["get", "leased"]);
    assert_eq!(kv["kvs"][0]["lease"], id, "{kv}");
    // keep-alive --once renews it (its output names the lease and the TTL).
    let alive = etcdctl_ok(&all, &["lease", "keep-alive", "--once", &hex]);
    assert_eq!(alive.trim(), format!("lease {hex} keepalived with TTL(2)"));
    let ttl = json(&all, &["lease", "timetolive", "--keys", &hex]);
    assert_eq!(ttl["id"], id, "{ttl}");
    assert_eq!(ttl["granted-ttl"], 2, "{ttl}");
    assert!(ttl["ttl"].as_i64().unwrap() <= 2, "{ttl}");
    assert_eq!(ttl["keys"], serde_json::json!([b64("leased")]));
    assert!(etcdctl_ok(&all, &["lease", "list"]).contains(&hex));

    // Without keep-alives it expires and its key goes with it, on every node.
    eventually("the leased key expires", Duration::from_secs(20), || {
        etcdctl_ok(&all, &["get", "leased"])
            .is_empty()
            .then_some(())
    });
    for node in &cluster.nodes {
        assert_eq!(
            etcdctl_ok(&node.client, &["get", "leased", "--consistency=s"]),
            "",
            "node {}",
            node.id
        );
    }
    let expired = etcdctl_ok(&all, &["lease", "timetolive", &hex]);
    assert_eq!(expired.trim(), format!("lease {hex} already expired"));
    let renew = etcdctl(&all, &["lease", "keep-alive", "--once", &hex]);
    assert!(!renew.status.success());
    assert!(String::from_utf8_lossy(&renew.stderr).contains("requested lease not found"));

    // Revoking a lease deletes its keys at once.
    let long = json(&all, &["lease", "grant", "600"]);
    let long_hex = format!("{:016x}", long["ID"].as_i64().unwrap());
    etcdctl_ok(&all, &["put", "r/1", "x", &format!("--lease={long_hex}")]);
    etcdctl_ok(&all, &["put", "r/2", "y", &format!("--lease={long_hex}")]);
    etcdctl_ok(&all, &["put", "r/3", "kept"]);
    let before = revision(&json(&all, &["get", "r/1"]));
    assert_eq!(
        etcdctl_ok(&all, &["lease", "revoke", &long_hex]).trim(),
        format!("lease {long_hex} revoked")
    );
    let after = json(&all, &["get", "--prefix", "r/"]);
    assert_eq!(after["count"], 1, "{after}");
    assert_eq!(after["kvs"][0]["key"], b64("r/3"));
    assert_eq!(
        revision(&after),
        before + 1,
        "one revision deletes both keys"
    );
    let again = etcdctl(&all, &["lease", "revoke", &long_hex]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("requested lease not found"));
}

#[test]
fn member_list_endpoint_status_and_health() {
    let cluster = DbCluster::start(3, &[]);
    let all = cluster.endpoints();
    etcdctl_ok(&all, &["put", "k", "v"]);

    // member list: three members with their names and URLs (published right after start).
    let members = eventually("every member published", Duration::from_secs(20), || {
        let list = json(&all, &["member", "list"]);
        let members = list["members"].as_array().cloned().unwrap_or_default();
        members
            .iter()
            .all(|m| m["clientURLs"].as_array().is_some_and(|u| !u.is_empty()))
            .then_some(members)
    });
    assert_eq!(members.len(), 3, "{members:?}");
    for (member, node) in members.iter().zip(&cluster.nodes) {
        assert_eq!(member["ID"], node.id);
        assert_eq!(member["name"], format!("node{}", node.id));
        assert_eq!(
            member["peerURLs"],
            serde_json::json!([format!("http://{}", node.peer)])
        );
        assert_eq!(
            member["clientURLs"],
            serde_json::json!([format!("http://{}", node.client)])
        );
    }
    let table = etcdctl_ok(&all, &["member", "list"]);
    assert!(
        table.contains(&format!(
            "1, started, node1, http://{}, http://{}, false",
            cluster.nodes[0].peer, cluster.nodes[0].client
        )),
        "{table}"
    );

    // endpoint status: every node names the same leader and term, and the same Raft index
    // once the last commit reached everyone.
    let statuses = eventually(
        "a consistent endpoint status",
        Duration::from_secs(20),
        || {
            let statuses = json(&all, &["endpoint", "status"]);
            let rows = statuses.as_array()?.clone();
            let same = |field: &str| {
                rows.iter()
                    .all(|r| r["Status"][field] == rows[0]["Status"][field])
            };
            (rows.len() == 3 && same("leader") && same("raftTerm") && same("raftIndex"))
                .then_some(rows)
        },
    );
    let leader = statuses[0]["Status"]["leader"].as_u64().unwrap();
    assert!((1..=3).contains(&leader), "{statuses:?}");
    assert!(statuses[0]["Status"]["raftTerm"].as_u64().unwrap() >= 1);
    for row in &statuses {
        let status = &row["Status"];
        let endpoint = row["Endpoint"].as_str().unwrap();
        let node = cluster.nodes.iter().find(|n| n.client == endpoint).unwrap();
        assert_eq!(status["header"]["member_id"], node.id, "{row}");
        // Three configuration entries, the members' URLs and the put are in the log.
        assert!(status["raftIndex"].as_u64().unwrap() >= 4, "{row}");
        assert!(
            status["raftAppliedIndex"].as_u64() <= status["raftIndex"].as_u64(),
            "{row}"
        );
        assert_eq!(
            status["header"]["revision"], 2,
            "an empty store is at revision 1, and one put: {row}"
        );
        assert_eq!(status["version"], "3.4.0");
    }
    assert_eq!(
        cluster.leader(),
        Some(leader),
        "etcdctl and concord db status agree"
    );

    // endpoint health.
    let health = json(&all, &["endpoint", "health"]);
    let rows = health.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{health}");
    for row in rows {
        assert_eq!(row["health"], true, "{row}");
    }
}

#[test]
fn with_no_leader_linearizable_reads_fail_and_serializable_reads_answer() {
    let mut cluster = DbCluster::start(3, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let survivor = leader % 3 + 1;
    let other = survivor % 3 + 1;
    assert_ne!(other, leader);
    let at = cluster.nodes[(survivor - 1) as usize].client.clone();
    etcdctl_ok(&cluster.endpoints(), &["put", "k", "before"]);
    // A linearizable read at the survivor: it has applied the put.
    assert_eq!(
        etcdctl_ok(&at, &["get", "k", "--print-value-only"]),
        "before\n"
    );

    cluster.kill(leader);
    cluster.kill(other);

    // Linearizable reads fail with "no leader" once the survivor noticed the leader is gone
    // (a read in flight at that moment may time out instead).
    eventually(
        "a linearizable read fails with 'no leader'",
        Duration::from_secs(60),
        || {
            let output = etcdctl(&at, &["get", "k"]);
            assert!(
                !output.status.success(),
                "a read with no quorum answered: {}",
                String::from_utf8_lossy(&output.stdout)
            );
            String::from_utf8_lossy(&output.stderr)
                .contains("etcdserver: no leader")
                .then_some(())
        },
    );
    // Serializable reads are served from the survivor's own state.
    assert_eq!(
        etcdctl_ok(&at, &["get", "k", "--consistency=s", "--print-value-only"]),
        "before\n"
    );
    let write = etcdctl(&at, &["put", "k", "after"]);
    assert!(!write.status.success());
    assert!(
        String::from_utf8_lossy(&write.stderr).contains("no leader"),
        "{}",
        String::from_utf8_lossy(&write.stderr)
    );
    // Once a second node is back, there is a leader again and the value is unchanged.
    cluster.spawn(other);
    cluster.wait_for_leader(Duration::from_secs(30));
    eventually("reads work again", Duration::from_secs(30), || {
        let output = etcdctl(&at, &["get", "k", "--print-value-only"]);
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    });
    assert_eq!(
        etcdctl_ok(&at, &["get", "k", "--print-value-only"]),
        "before\n"
    );
}

/// etcdctl's own check: 10 000 puts, then the members' memory from their `/metrics`
/// (`process_resident_memory_bytes`), then the keys deleted.
#[test]
fn etcdctl_check_datascale_passes() {
    let cluster = DbCluster::start(3, &[]);
    let out = etcdctl_ok(&cluster.endpoints(), &["check", "datascale", "--load", "s"]);
    assert!(out.contains("PASS"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
}

/// etcdctl 3.4 makes its per-endpoint calls (`endpoint status`, `endpoint hashkv`, `defrag`,
/// `snapshot save`, and every `--cluster` form) with the endpoint's URL as the HTTP/2
/// `:authority`, which the server mends rather than refuses (`server/authority.rs`).
#[test]
fn per_endpoint_calls_with_url_endpoints_and_cluster_forms() {
    let cluster = DbCluster::start(3, &[]);
    let first = cluster.nodes[0].client.clone();
    // `--cluster` reaches the members whose client URLs are published (right after start).
    eventually("every member published", Duration::from_secs(20), || {
        let list = json(&first, &["member", "list"]);
        let members = list["members"].as_array().cloned().unwrap_or_default();
        (members.len() == 3
            && members
                .iter()
                .all(|m| m["clientURLs"].as_array().is_some_and(|u| !u.is_empty())))
        .then_some(())
    });
    let status = json(&first, &["endpoint", "status", "--cluster"]);
    let rows = status.as_array().expect("one row per member");
    assert_eq!(rows.len(), 3, "{status}");
    let leader = &rows[0]["Status"]["leader"];
    assert!(
        rows.iter().all(|r| &r["Status"]["leader"] == leader),
        "every member names the same leader: {status}"
    );
    let leading = rows
        .iter()
        .filter(|r| r["Status"]["leader"] == r["Status"]["header"]["member_id"])
        .count();
    assert_eq!(leading, 1, "{status}");
    let hashes = etcdctl_ok(&first, &["endpoint", "hashkv", "--cluster"]);
    assert_eq!(hashes.lines().count(), 3, "{hashes}");
    let urls = cluster.urls().join(",");
    // etcdctl prints some outcomes on standard output, some on standard error.
    let both = |args: &[&str], endpoints: &str| {
        let output = etcdctl(endpoints, args);
        assert!(output.status.success(), "etcdctl {args:?}");
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    let defrag = both(&["defrag"], &urls);
    assert_eq!(
        defrag.matches("Finished defragmenting").count(),
        3,
        "{defrag}"
    );
    let health = both(&["endpoint", "health", "--cluster"], &first);
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");
}

/// etcd's concurrency recipes, which etcdctl builds from leases, transactions and watches: a
/// lock has one holder at a time, the next waiter taking it when it is released; an election
/// has one leader, the next candidate taking over when the leader resigns, and observers see
/// each leader in turn.
#[test]
fn locks_and_elections() {
    let cluster = DbCluster::start(3, &[]);
    let all = cluster.endpoints();
    let urls = cluster.urls();
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");

    // The first holder keeps the lock until the release file exists.
    let wait_for_release = format!(
        "echo held-1; while [ ! -e {} ]; do sleep 0.05; done",
        release.display()
    );
    let first = Background::start(
        &urls[0],
        &["lock", "job", "--", "sh", "-c", &wait_for_release],
    );
    assert_eq!(first.lines(1), ["held-1"]);
    // A second client, through another member, waits.
    let second = Background::start(&urls[1], &["lock", "job", "--", "sh", "-c", "echo held-2"]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(second.so_far().is_empty(), "{:?}", second.so_far());
    // The first releases; the second gets the lock.
    std::fs::write(&release, b"").unwrap();
    assert_eq!(second.lines(1), ["held-2"]);
    eventually(
        "the lock's keys to be gone",
        Duration::from_secs(20),
        || {
            etcdctl_ok(&all, &["get", "--prefix", "job", "--keys-only"])
                .trim()
                .is_empty()
                .then_some(())
        },
    );

    // An election: the first candidate leads (etcdctl prints its key, then its proposal).
    let mut p1 = Background::start(&urls[0], &["elect", "pick", "p1"]);
    let led = p1.lines(2);
    assert!(led[0].starts_with("pick/"), "{led:?}");
    assert_eq!(led[1], "p1");
    let observer = Background::start(&urls[2], &["elect", "--listen", "pick"]);
    assert_eq!(observer.lines(2)[1], "p1");
    let p2 = Background::start(&urls[1], &["elect", "pick", "p2"]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(p2.so_far().is_empty(), "{:?}", p2.so_far());
    // The leader resigns; the second candidate leads, and the observer sees it.
    p1.interrupt();
    assert_eq!(p2.lines(2)[1], "p2");
    assert_eq!(observer.lines(4)[3], "p2");
}

/// etcd's space quota: once the key space passes `--quota-backend-bytes`, the member raises
/// the NOSPACE alarm and every member refuses writes that add data with etcd's "database space
/// exceeded", while reads and deletes go on; the alarm survives a restart; compacting and
/// `alarm disarm` (etcd's recovery procedure) make the cluster writable again.
#[test]
fn space_quota_raises_the_nospace_alarm_until_compacted_and_disarmed() {
    let mut cluster = DbCluster::start(3, &["--quota-backend-bytes", "60000"]);
    let all = cluster.endpoints();
    let urls = cluster.urls();
    let value = "x".repeat(3000);
    let mut refused = None;
    for i in 0..100 {
        let output = etcdctl(&all, &["put", &format!("k{i:03}"), &value]);
        if !output.status.success() {
            refused = Some(String::from_utf8_lossy(&output.stderr).into_owned());
            break;
        }
    }
    let refused = refused.expect("the quota refuses a write within 300 kB");
    assert!(
        refused.contains("etcdserver: mvcc: database space exceeded"),
        "{refused}"
    );
    eventually("the alarm to be listed", Duration::from_secs(20), || {
        etcdctl_ok(&all, &["alarm", "list"])
            .contains("alarm:NOSPACE")
            .then_some(())
    });
    // Every member refuses writes that add data; reads and deletes go on.
    for url in &urls {
        let put = etcdctl(url, &["put", "more", "data"]);
        assert!(!put.status.success());
        assert!(String::from_utf8_lossy(&put.stderr).contains("database space exceeded"));
        let status = json(url, &["endpoint", "status"]);
        let errors = &status[0]["Status"]["errors"];
        assert!(
            errors[0]
                .as_str()
                .unwrap_or_default()
                .contains("alarm:NOSPACE"),
            "{status}"
        );
    }
    let grant = etcdctl(&all, &["lease", "grant", "10"]);
    assert!(!grant.status.success());
    assert_eq!(
        etcdctl_ok(&all, &["get", "k000", "--print-value-only"]).trim(),
        value
    );
    let deleted: u32 = etcdctl_ok(&all, &["del", "k", "--prefix"])
        .trim()
        .parse()
        .unwrap();
    assert!(deleted > 10, "{deleted}");

    // The alarm is replicated state: a restarted member still has it.
    cluster.kill(3);
    cluster.spawn(3);
    eventually(
        "member 3 to list the alarm",
        Duration::from_secs(30),
        || {
            let output = etcdctl(&urls[2], &["alarm", "list"]);
            String::from_utf8_lossy(&output.stdout)
                .contains("alarm:NOSPACE")
                .then_some(())
        },
    );

    // Compact away the deleted history, disarm: writable again.
    let revision = revision(&json(&all, &["get", "k000"]));
    etcdctl_ok(&all, &["compact", &revision.to_string()]);
    etcdctl_ok(&all, &["defrag"]);
    // The store's size is sampled as it changes; give the members a moment to see it shrink.
    std::thread::sleep(Duration::from_millis(300));
    etcdctl_ok(&all, &["alarm", "disarm"]);
    assert_eq!(etcdctl_ok(&all, &["alarm", "list"]).trim(), "");
    eventually("a put to succeed again", Duration::from_secs(20), || {
        etcdctl(&all, &["put", "after", "disarm"])
            .status
            .success()
            .then_some(())
    });
    assert_eq!(
        etcdctl_ok(&all, &["get", "after", "--print-value-only"]).trim(),
        "disarm"
    );
}
