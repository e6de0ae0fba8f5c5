//! Bad input against a three-node Concord DB: oversized keys and values, malformed gRPC
//! messages, non-gRPC bytes on the client and peer ports, unknown members and requests to a
//! removed member each get a clear error, and the cluster keeps serving.

mod db;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf as _, BufMut as _, Bytes};
use concord_kv::pb::etcdserverpb as pb;
use db::{etcdctl, etcdctl_ok, etcdctl_with_input, eventually, DbCluster};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// A failed etcdctl run's standard error; panics if it succeeded.
fn etcdctl_err(endpoints: &str, args: &[&str], input: Option<&str>) -> String {
    let output = etcdctl_with_input(endpoints, args, input);
    assert!(
        !output.status.success(),
        "etcdctl {:?} should fail but printed {}",
        &args[..args.len().min(2)],
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Puts a fresh key through every node and reads it back from every node.
fn assert_serving(cluster: &DbCluster, tag: &str) {
    for node in cluster.nodes.iter().filter(|n| n.child.is_some()) {
        let key = format!("alive/{tag}/{}", node.id);
        assert_eq!(
            etcdctl_ok(&node.client, &["put", &key, "yes"]).trim(),
            "OK",
            "node {} takes writes after {tag}",
            node.id
        );
    }
    for node in cluster.nodes.iter().filter(|n| n.child.is_some()) {
        let count = etcdctl_ok(
            &node.client,
            &["get", "--prefix", &format!("alive/{tag}/"), "--keys-only"],
        )
        .lines()
        .filter(|l| !l.is_empty())
        .count();
        let live = cluster.nodes.iter().filter(|n| n.child.is_some()).count();
        assert_eq!(count, live, "node {} reads after {tag}", node.id);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

async fn channel(address: &str) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .expect("a URL")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .connect()
        .await
        .expect("connects to the node")
}

/// A gRPC codec that sends and receives raw bytes, to put arbitrary bytes in a message.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

#[derive(Clone, Copy, Debug, Default)]
struct RawEncoder;

#[derive(Clone, Copy, Debug, Default)]
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}

/// Sends `message` as the request of the unary method `path` and returns the error status.
async fn raw_call(channel: &Channel, path: &'static str, message: &[u8]) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("the channel is ready");
    let answer = grpc
        .unary(
            tonic::Request::new(Bytes::copy_from_slice(message)),
            PathAndQuery::from_static(path),
            RawCodec,
        )
        .await;
    match answer {
        Ok(response) => panic!(
            "{path} accepted {message:?} and answered {:?}",
            response.into_inner()
        ),
        Err(status) => status,
    }
}

fn assert_status(status: &Status, code: Code, text: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(text), "{status:?}");
}

#[test]
fn oversized_keys_and_values_are_refused_and_the_cluster_keeps_serving() {
    let cluster = DbCluster::start(3, &[]);
    let all = cluster.endpoints();
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let follower = cluster.nodes[(leader % 3) as usize].client.clone();

    // A key over --max-key-bytes (32 KiB), at the leader and at a follower.
    let key = "k".repeat(32 * 1024 + 1);
    for endpoint in [&all, &follower] {
        let error = etcdctl_err(endpoint, &["put", &key, "v"], None);
        assert!(
            error.contains("InvalidArgument")
                && error.contains("etcdserver: key is too large (32769 bytes; the limit is 32768)"),
            "{error}"
        );
        let error = etcdctl_err(endpoint, &["get", &key], None);
        assert!(error.contains("key is too large"), "{error}");
    }
    // A key of exactly the limit is fine.
    let largest = "k".repeat(32 * 1024);
    assert_eq!(etcdctl_ok(&all, &["put", &largest, "v"]).trim(), "OK");

    // Values over --max-request-bytes (1.5 MiB), given on standard input: just over, and as
    // large as etcdctl sends (its limit is 2 MiB for the whole message).
    for size in [1_572_864 + 1, 2_000_000] {
        let value = "v".repeat(size);
        for endpoint in [&all, &follower] {
            let error = etcdctl_err(endpoint, &["put", "big"], Some(&value));
            assert!(
                error.contains("InvalidArgument")
                    && error.contains("etcdserver: request is too large"),
                "{size} bytes: {error}"
            );
        }
    }
    // The same value inside a transaction.
    let rt = runtime();
    rt.block_on(async {
        let mut kv = pb::kv_client::KvClient::new(channel(&follower).await);
        let put = pb::PutRequest {
            key: b"big".to_vec(),
            value: vec![b'v'; 1_600_000],
            ..Default::default()
        };
        let txn = pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(put)),
            }],
            ..Default::default()
        };
        let status = kv.txn(txn).await.expect_err("an oversized txn is refused");
        assert_status(&status, Code::InvalidArgument, "request is too large");
    });
    assert_eq!(etcdctl_ok(&all, &["get", "big"]), "", "nothing was written");
    assert_serving(&cluster, "oversized");
}

#[test]
fn malformed_grpc_requests_get_clear_errors() {
    let cluster = DbCluster::start(3, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let rt = runtime();
    for node in [leader, leader % 3 + 1] {
        let address = cluster.nodes[(node - 1) as usize].client.clone();
        rt.block_on(async {
            let channel = channel(&address).await;
            // Bytes that are no protobuf message at all.
            let garbage = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x34];
            for path in [
                "/etcdserverpb.KV/Put",
                "/etcdserverpb.KV/Range",
                "/etcdserverpb.KV/Txn",
                "/etcdserverpb.KV/DeleteRange",
                "/etcdserverpb.Lease/LeaseGrant",
                "/etcdserverpb.Cluster/MemberRemove",
                "/etcdserverpb.Maintenance/Status",
            ] {
                let status = raw_call(&channel, path, &garbage).await;
                assert_status(&status, Code::Internal, "failed to decode Protobuf message");
            }
            // A field whose length runs past the end of the message.
            let truncated = [0x0a, 0x10, b'k'];
            let status = raw_call(&channel, "/etcdserverpb.KV/Put", &truncated).await;
            assert_status(&status, Code::Internal, "failed to decode Protobuf message");
            // A method that does not exist.
            let status = raw_call(&channel, "/etcdserverpb.KV/Frobnicate", &[]).await;
            assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

            // Well-formed messages with values etcd refuses.
            let mut kv = pb::kv_client::KvClient::new(channel.clone());
            let status = kv
                .put(pb::PutRequest::default())
                .await
                .expect_err("a put without a key");
            assert_status(
                &status,
                Code::InvalidArgument,
                "etcdserver: key is not provided",
            );
            let status = kv
                .range(pb::RangeRequest {
                    key: b"a".to_vec(),
                    sort_order: 99,
                    ..Default::default()
                })
                .await
                .expect_err("an unknown sort order");
            assert_status(
                &status,
                Code::InvalidArgument,
                "etcdserver: invalid sort option",
            );
            let status = kv
                .range(pb::RangeRequest {
                    key: b"a".to_vec(),
                    sort_target: -3,
                    ..Default::default()
                })
                .await
                .expect_err("an unknown sort target");
            assert_status(&status, Code::InvalidArgument, "invalid sort option");
            let status = kv
                .txn(pb::TxnRequest {
                    success: vec![pb::RequestOp { request: None }],
                    ..Default::default()
                })
                .await
                .expect_err("an empty transaction operation");
            assert_status(&status, Code::InvalidArgument, "operation is empty");
            let status = kv
                .txn(pb::TxnRequest {
                    compare: vec![pb::Compare {
                        result: 42,
                        key: b"a".to_vec(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .await
                .expect_err("an unknown compare result");
            assert_status(&status, Code::InvalidArgument, "invalid compare result");
            let status = kv
                .txn(pb::TxnRequest {
                    compare: vec![pb::Compare {
                        target: pb::compare::CompareTarget::Version as i32,
                        key: b"a".to_vec(),
                        target_union: Some(pb::compare::TargetUnion::Value(b"x".to_vec())),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .await
                .expect_err("a compare whose value does not match its target");
            assert_status(&status, Code::InvalidArgument, "does not match");
            let put = |key: &str| pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })),
            };
            let status = kv
                .txn(pb::TxnRequest {
                    success: vec![put("dup"), put("dup")],
                    ..Default::default()
                })
                .await
                .expect_err("a transaction writing one key twice");
            assert_status(&status, Code::InvalidArgument, "duplicate key");
            let status = kv
                .compact(pb::CompactionRequest {
                    revision: 1_000_000,
                    physical: false,
                })
                .await
                .expect_err("compacting a future revision");
            assert_status(&status, Code::OutOfRange, "future revision");

            let mut lease = pb::lease_client::LeaseClient::new(channel.clone());
            let status = lease
                .lease_grant(pb::LeaseGrantRequest {
                    ttl: i64::MAX,
                    id: 0,
                })
                .await
                .expect_err("a TTL beyond the maximum");
            assert_status(&status, Code::InvalidArgument, "too large");
            let status = lease
                .lease_revoke(pb::LeaseRevokeRequest { id: 12345 })
                .await
                .expect_err("an unknown lease");
            assert_status(&status, Code::NotFound, "requested lease not found");
            let status = kv
                .put(pb::PutRequest {
                    key: b"k".to_vec(),
                    lease: 12345,
                    ..Default::default()
                })
                .await
                .expect_err("a put with an unknown lease");
            assert_status(&status, Code::NotFound, "requested lease not found");
        });
    }
    assert_serving(&cluster, "malformed");
}

/// Connects to `address`, sends `bytes`, closes its sending side, and returns what comes back
/// before the node closes the connection (or a few seconds pass).
fn raw_tcp(address: &str, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The node may close the connection before reading everything: ignore write errors.
    let _ = stream.write_all(bytes);
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

/// The peer protocol version the nodes speak (`concord_runtime::PROTOCOL_VERSION`).
const PEER_VERSION: u32 = 3;

/// A peer handshake: magic, protocol version, cluster id and sender id.
fn hello(version: u32, cluster_id: u64, sender: u64) -> Vec<u8> {
    let mut hello = b"CNCDPEER".to_vec();
    hello.extend(version.to_le_bytes());
    hello.extend(cluster_id.to_le_bytes());
    hello.extend(sender.to_le_bytes());
    hello
}

#[test]
fn garbage_on_the_client_and_peer_ports_is_refused() {
    let cluster = DbCluster::start(3, &[]);
    let all = cluster.endpoints();
    let status: serde_json::Value =
        serde_json::from_str(&etcdctl_ok(&all, &["endpoint", "status", "-w", "json"])).unwrap();
    let cluster_id = status[0]["Status"]["header"]["cluster_id"]
        .as_u64()
        .expect("a cluster id");
    let noise: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();

    for node in &cluster.nodes {
        // The client port speaks HTTP/2 (gRPC) and HTTP/1.1: noise gets 400 Bad Request.
        let answer = raw_tcp(&node.client, &noise);
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        // An HTTP/2 preface followed by noise: the connection is closed.
        let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        preface.extend(&noise[..4096]);
        raw_tcp(&node.client, &preface);
        // An empty connection.
        raw_tcp(&node.client, b"");

        // The peer port: a bad magic, another protocol version, another cluster each get
        // their refusal code and a closed connection.
        assert_eq!(raw_tcp(&node.peer, &noise), [1], "bad magic");
        assert_eq!(
            raw_tcp(&node.peer, &hello(7, cluster_id, 1)),
            [2],
            "version"
        );
        assert_eq!(
            raw_tcp(&node.peer, &hello(PEER_VERSION, cluster_id ^ 1, 1)),
            [3],
            "other cluster"
        );
        // A handshake cut short.
        assert_eq!(raw_tcp(&node.peer, b"CNCDPE"), Vec::<u8>::new());
        // A valid handshake, then frames that decode to nothing: dropped.
        let mut frames = hello(PEER_VERSION, cluster_id, 99);
        for len in [1usize, 7, 100, 4000] {
            frames.extend(u32::try_from(len).unwrap().to_le_bytes());
            frames.extend(&noise[..len]);
        }
        frames.extend(0u32.to_le_bytes());
        // A frame longer than the limit: the connection is closed.
        frames.extend(u32::MAX.to_le_bytes());
        assert_eq!(raw_tcp(&node.peer, &frames), [0], "accepted, then closed");
    }
    // Every node is still running, and the cluster serves.
    let mut cluster = cluster;
    for node in &mut cluster.nodes {
        let child = node.child.as_mut().unwrap();
        assert!(child.try_wait().unwrap().is_none(), "node {} died", node.id);
    }
    assert_serving(&cluster, "garbage");
    let logs = cluster.logs();
    assert!(logs.contains("rejected a peer connection: not a Concord peer (bad magic)"));
    assert!(logs.contains("dropping an undecodable frame"));
}

#[test]
fn unknown_members_and_a_removed_member_get_clear_errors() {
    let cluster = DbCluster::start(3, &[]);
    let all = cluster.endpoints();
    etcdctl_ok(&all, &["put", "k", "v"]);

    // Unknown members, at the leader and (forwarded) at a follower.
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let removed = leader % 3 + 1;
    for node in &cluster.nodes {
        for args in [
            &["member", "remove", "63"][..],
            &["member", "promote", "63"],
            &["member", "update", "63", "--peer-urls=http://127.0.0.1:1"],
        ] {
            let error = etcdctl_err(&node.client, args, None);
            assert!(
                error.contains("NotFound") && error.contains("etcdserver: member not found"),
                "{args:?} at node {}: {error}",
                node.id
            );
        }
    }
    let error = etcdctl_err(
        &all,
        &[
            "member",
            "add",
            "again",
            "--peer-urls",
            &format!("http://{}", cluster.nodes[0].peer),
        ],
        None,
    );
    assert!(error.contains("Peer URLs already exists"), "{error}");
    let error = etcdctl_err(
        &all,
        &["member", "add", "bad", "--peer-urls", "nonsense"],
        None,
    );
    assert!(!error.is_empty());

    // Remove a follower; it learns it was removed and refuses every request.
    let gone = format!("{removed:x}");
    let answer = etcdctl_ok(&all, &["member", "remove", &gone]);
    assert!(answer.contains("removed from cluster"), "{answer}");
    let at = cluster.nodes[(removed - 1) as usize].client.clone();
    const REMOVED: &str = "etcdserver: the member has been permanently removed from the cluster";
    eventually(
        "the removed node refuses reads",
        Duration::from_secs(30),
        || {
            let output = etcdctl(&at, &["get", "k"]);
            String::from_utf8_lossy(&output.stderr)
                .contains(REMOVED)
                .then_some(())
        },
    );
    for args in [
        &["get", "k", "--consistency=s"][..],
        &["put", "k", "w"],
        &["del", "k"],
        &["lease", "grant", "10"],
    ] {
        let error = etcdctl_err(&at, args, None);
        assert!(
            error.contains("FailedPrecondition") && error.contains(REMOVED),
            "{args:?}: {error}"
        );
    }

    // The others serve, and list two members.
    let rest: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|n| n.id != removed)
        .map(|n| n.client.clone())
        .collect();
    let rest = rest.join(",");
    assert_eq!(etcdctl_ok(&rest, &["put", "k", "after"]).trim(), "OK");
    for endpoint in rest.split(',') {
        assert_eq!(
            etcdctl_ok(endpoint, &["get", "k", "--print-value-only"]),
            "after\n"
        );
        let members = etcdctl_ok(endpoint, &["member", "list"]);
        assert_eq!(members.lines().count(), 2, "{members}");
        assert!(!members.contains(&at), "{members}");
    }
    // Removing it again: it is no longer a member.
    let error = etcdctl_err(&rest, &["member", "remove", &gone], None);
    assert!(error.contains("member not found"), "{error}");
}
