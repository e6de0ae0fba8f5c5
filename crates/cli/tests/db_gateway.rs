//! etcd's JSON gateway (`POST /v3/...`) on a three-node Concord DB, driven by curl as its
//! users drive it: keys and values in base64, 64-bit integers as strings, errors with the
//! gRPC code and the HTTP status etcd gives them, and streams (watch, lease keep-alive) as one
//! `{"result":…}` line per response.
// Real processes on a real clock: waiting for them needs wall-clock deadlines.
#![allow(clippy::disallowed_methods)]

mod db;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use db::{eventually, DbCluster};
use serde_json::Value;

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// `POST url` with `body` (curl, which `.ci/run` installs; `@path` sends a file's contents):
/// the status code and the answer.
fn post(url: &str, body: &str) -> (u16, Value) {
    let output = Command::new("curl")
        .args([
            "--silent",
            "--max-time",
            "20",
            "--write-out",
            "\n%{http_code}",
        ])
        .args(["-X", "POST", "--data-binary", body, url])
        .output()
        .expect("curl runs (.ci/run installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (answer, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let answer = serde_json::from_str(answer)
        .unwrap_or_else(|e| panic!("POST {url} {body}: not JSON ({e}): {answer}"));
    (code.trim().parse().unwrap_or(0), answer)
}

/// `post`, expecting 200.
fn ok(url: &str, body: &str) -> Value {
    let (code, answer) = post(url, body);
    assert_eq!(code, 200, "POST {url} {body}: {answer}");
    answer
}

/// A revision, count or ID as the gateway writes 64-bit integers: a decimal string.
fn int(value: &Value) -> i64 {
    value
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("not a 64-bit integer string: {value}"))
}

#[test]
fn kv_txn_leases_members_and_errors_over_json() {
    let cluster = DbCluster::start(3, &[]);
    let urls = cluster.urls();
    let (one, two) = (&urls[0], &urls[1]);

    // A put through one member, read back through another (the follower forwards the write).
    let put = ok(
        &format!("{two}/v3/kv/put"),
        &format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            b64("greeting"),
            b64("hello")
        ),
    );
    let written = int(&put["header"]["revision"]);
    let range = ok(
        &format!("{one}/v3/kv/range"),
        &format!(r#"{{"key":"{}"}}"#, b64("greeting")),
    );
    assert_eq!(int(&range["count"]), 1, "{range}");
    let kv = &range["kvs"][0];
    assert_eq!(kv["key"], b64("greeting"));
    assert_eq!(kv["value"], b64("hello"));
    assert_eq!(int(&kv["mod_revision"]), written);
    assert_eq!(int(&kv["version"]), 1);
    // etcd's own spelling of the answer: proto names, zero fields left out.
    assert!(kv.get("lease").is_none(), "{kv}");
    assert!(range.get("more").is_none(), "{range}");
    // The old revision of an overwritten key, and the v3beta prefix etcd 3.4 also serves.
    ok(
        &format!("{one}/v3/kv/put"),
        &format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            b64("greeting"),
            b64("bye")
        ),
    );
    let old = ok(
        &format!("{one}/v3beta/kv/range"),
        &format!(r#"{{"key":"{}","revision":"{written}"}}"#, b64("greeting")),
    );
    assert_eq!(old["kvs"][0]["value"], b64("hello"), "{old}");

    // A transaction, written the way etcd's documentation writes it (camelCase, enum names).
    let txn = ok(
        &format!("{one}/v3/kv/txn"),
        &format!(
            r#"{{"compare":[{{"target":"VALUE","result":"EQUAL","key":"{k}","value":"{v}"}}],
                 "success":[{{"requestPut":{{"key":"{k}","value":"{w}"}}}}],
                 "failure":[{{"requestRange":{{"key":"{k}"}}}}]}}"#,
            k = b64("greeting"),
            v = b64("bye"),
            w = b64("again")
        ),
    );
    assert_eq!(txn["succeeded"], true, "{txn}");
    assert!(txn["responses"][0]["response_put"].is_object(), "{txn}");
    let deleted = ok(
        &format!("{two}/v3/kv/deleterange"),
        &format!(r#"{{"key":"{}","prev_kv":true}}"#, b64("greeting")),
    );
    assert_eq!(int(&deleted["deleted"]), 1);
    assert_eq!(deleted["prev_kvs"][0]["value"], b64("again"), "{deleted}");

    // Leases: grant through a follower, attach a key, time to live with its keys, revoke.
    let lease = ok(&format!("{two}/v3/lease/grant"), r#"{"TTL":60}"#);
    let id = int(&lease["ID"]);
    assert_eq!(int(&lease["TTL"]), 60);
    ok(
        &format!("{one}/v3/kv/put"),
        &format!(
            r#"{{"key":"{}","value":"{}","lease":"{id}"}}"#,
            b64("leased"),
            b64("x")
        ),
    );
    let ttl = ok(
        &format!("{one}/v3/kv/lease/timetolive"),
        &format!(r#"{{"ID":"{id}","keys":true}}"#),
    );
    assert_eq!(int(&ttl["grantedTTL"]), 60, "{ttl}");
    assert_eq!(ttl["keys"][0], b64("leased"), "{ttl}");
    let leases = ok(&format!("{one}/v3/lease/leases"), "{}");
    assert_eq!(int(&leases["leases"][0]["ID"]), id, "{leases}");
    ok(
        &format!("{two}/v3/lease/revoke"),
        &format!(r#"{{"ID":"{id}"}}"#),
    );
    let gone = ok(
        &format!("{one}/v3/kv/range"),
        &format!(r#"{{"key":"{}"}}"#, b64("leased")),
    );
    assert!(gone.get("kvs").is_none(), "{gone}");

    // Members and status.
    let members = ok(&format!("{one}/v3/cluster/member/list"), "");
    assert_eq!(
        members["members"].as_array().map(Vec::len),
        Some(3),
        "{members}"
    );
    assert!(members["members"][0]["clientURLs"].is_array(), "{members}");
    let status = ok(&format!("{two}/v3/maintenance/status"), "{}");
    assert!(int(&status["raftIndex"]) > 0, "{status}");
    assert!(status["leader"].is_string(), "{status}");

    // Errors: etcd's message, the gRPC code, the gateway's HTTP status.
    let (code, answer) = post(&format!("{one}/v3/kv/put"), r#"{"key":"","value":"eA=="}"#);
    assert_eq!((code, answer["code"].as_i64()), (400, Some(3)), "{answer}");
    assert_eq!(answer["error"], "etcdserver: key is not provided");
    let (code, answer) = post(
        &format!("{one}/v3/kv/compaction"),
        r#"{"revision":"999999"}"#,
    );
    assert_eq!((code, answer["code"].as_i64()), (400, Some(11)), "{answer}");
    let (code, answer) = post(&format!("{one}/v3/lease/revoke"), r#"{"ID":"12345"}"#);
    assert_eq!((code, answer["code"].as_i64()), (404, Some(5)), "{answer}");
    assert_eq!(answer["message"], "etcdserver: requested lease not found");
    let (code, answer) = post(&format!("{one}/v3/kv/range"), "garbage");
    assert_eq!((code, answer["code"].as_i64()), (400, Some(3)), "{answer}");
    let (code, answer) = post(&format!("{one}/v3/kv/range"), r#"{"key":12}"#);
    assert_eq!(code, 400, "{answer}");
    // Too large, whether the request (1.6 MB, past the 1.5 MiB default) or its body (4 MB).
    for size in [1_600_000, 4_000_000] {
        let file = tempfile::NamedTempFile::new().unwrap();
        let body = format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            b64("big"),
            b64(&"x".repeat(size))
        );
        std::fs::write(file.path(), body).unwrap();
        let (code, answer) = post(
            &format!("{one}/v3/kv/put"),
            &format!("@{}", file.path().display()),
        );
        assert_eq!(
            (code, answer["code"].as_i64()),
            (400, Some(3)),
            "{size}: {answer}"
        );
        assert_eq!(answer["error"], "etcdserver: request is too large");
    }
    // The member still serves.
    ok(
        &format!("{one}/v3/kv/range"),
        &format!(r#"{{"key":"{}"}}"#, b64("a")),
    );
}

#[test]
fn watch_and_keep_alive_stream_json_lines() {
    let cluster = DbCluster::start(3, &[]);
    let urls = cluster.urls();

    // A watch outlives its request body: curl sends the request and keeps reading.
    let mut watch = Command::new("curl")
        .args([
            "--silent",
            "--no-buffer",
            "--max-time",
            "60",
            "-X",
            "POST",
            "-d",
        ])
        .arg(format!(r#"{{"create_request":{{"key":"{}"}}}}"#, b64("w")))
        .arg(format!("{}/v3/watch", urls[0]))
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl runs");
    let (sender, lines) = std::sync::mpsc::channel::<String>();
    let stdout = watch.stdout.take().expect("curl's output");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let next = || -> Value {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a watch line in time");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    let created = next();
    assert_eq!(created["result"]["created"], true, "{created}");
    // A write through another member arrives as an event.
    let put = ok(
        &format!("{}/v3/kv/put", urls[1]),
        &format!(r#"{{"key":"{}","value":"{}"}}"#, b64("w"), b64("1")),
    );
    let event = next();
    let kv = &event["result"]["events"][0]["kv"];
    assert_eq!(kv["value"], b64("1"), "{event}");
    assert_eq!(kv["mod_revision"], put["header"]["revision"], "{event}");
    ok(
        &format!("{}/v3/kv/deleterange", urls[2]),
        &format!(r#"{{"key":"{}"}}"#, b64("w")),
    );
    let deletion = next();
    assert_eq!(
        deletion["result"]["events"][0]["type"], "DELETE",
        "{deletion}"
    );
    let _ = watch.kill();
    let _ = watch.wait();

    // A request that does not parse ends the stream with an error line, after the answers to
    // the requests before it.
    let output = Command::new("curl")
        .args(["--silent", "--max-time", "20", "-X", "POST", "-d"])
        .arg(format!(
            r#"{{"create_request":{{"key":"{}"}}}} nonsense"#,
            b64("w")
        ))
        .arg(format!("{}/v3/watch", urls[1]))
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "the stream ended by itself: {output:?}"
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["result"]["created"], true, "{lines:?}");
    assert_eq!(lines[1]["error"]["grpc_code"], 3, "{lines:?}");
    assert_eq!(lines[1]["error"]["http_code"], 400, "{lines:?}");

    // Keep-alive: one request, one answer with the lease's TTL; an unknown lease gets TTL 0
    // (left out), as from etcd.
    let lease = ok(&format!("{}/v3/lease/grant", urls[1]), r#"{"TTL":30}"#);
    let id = int(&lease["ID"]);
    let output = Command::new("curl")
        .args(["--silent", "--max-time", "20", "-X", "POST", "-d"])
        .arg(format!(r#"{{"ID":"{id}"}}"#))
        .arg(format!("{}/v3/lease/keepalive", urls[0]))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let answer: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(int(&answer["result"]["ID"]), id, "{answer}");
    assert_eq!(int(&answer["result"]["TTL"]), 30, "{answer}");
    eventually(
        "a keep-alive of an unknown lease",
        Duration::from_secs(5),
        || {
            let output = Command::new("curl")
                .args([
                    "--silent",
                    "--max-time",
                    "20",
                    "-X",
                    "POST",
                    "-d",
                    r#"{"ID":"77"}"#,
                ])
                .arg(format!("{}/v3/lease/keepalive", urls[2]))
                .output()
                .ok()?;
            let answer: Value = serde_json::from_slice(&output.stdout).ok()?;
            (answer["result"]["ID"] == "77" && answer["result"].get("TTL").is_none()).then_some(())
        },
    );
}
