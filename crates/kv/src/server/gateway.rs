//! etcd's JSON gateway on the client port (`POST /v3/...`, and `/v3beta/...` as etcd 3.4 also
//! serves): the gRPC API for clients without gRPC — `curl`, scripts, languages without a gRPC
//! library. Each method takes its request as JSON and answers JSON, as etcd's grpc-gateway
//! does: proto field names, 64-bit integers as strings, bytes as base64, zero values left out,
//! unknown fields ignored, an empty body as the empty request.
//!
//! A failed call answers `{"error":…,"message":…,"code":…}` with the gRPC code and the HTTP
//! status the gateway maps it to. Streaming methods (`watch`, `lease/keepalive`,
//! `maintenance/snapshot`) read one or more JSON requests from the body as they come, and
//! answer one `{"result":…}` line per response; a watch outlives the request body, until the
//! client hangs up.
//!
//! Every call goes through the same service code as its gRPC twin, so it forwards, fails and
//! answers the same way.

use std::future::Future;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Code, Request, Status};

use super::cluster::{ClusterService, MaintenanceService};
use super::kv::KvService;
use super::lease::LeaseService;
use super::Shared;
use crate::pb::etcdserverpb as pb;
use pb::cluster_server::Cluster as _;
use pb::kv_server::Kv as _;
use pb::lease_server::Lease as _;
use pb::maintenance_server::Maintenance as _;

/// The gateway's routes, under `/v3` and `/v3beta`.
pub(crate) fn router(shared: &Arc<Shared>) -> Router {
    // Room for the largest request in base64 with its JSON around it; the service checks the
    // request's own size (etcd's "request is too large") as for gRPC.
    let limit = shared.config.max_request_bytes * 2 + 64 * 1024;
    macro_rules! unary {
        ($service:ident, $method:ident) => {{
            let shared = Arc::clone(shared);
            unary(limit, move |request| {
                let service = $service(Arc::clone(&shared));
                async move { service.$method(request).await }
            })
        }};
    }
    let watch = Arc::clone(shared);
    let keep_alive = Arc::clone(shared);
    let snapshot = Arc::clone(shared);
    let methods = [
        ("/kv/range", unary!(KvService, range)),
        ("/kv/put", unary!(KvService, put)),
        ("/kv/deleterange", unary!(KvService, delete_range)),
        ("/kv/txn", unary!(KvService, txn)),
        ("/kv/compaction", unary!(KvService, compact)),
        ("/lease/grant", unary!(LeaseService, lease_grant)),
        ("/lease/revoke", unary!(LeaseService, lease_revoke)),
        ("/kv/lease/revoke", unary!(LeaseService, lease_revoke)),
        (
            "/lease/timetolive",
            unary!(LeaseService, lease_time_to_live),
        ),
        (
            "/kv/lease/timetolive",
            unary!(LeaseService, lease_time_to_live),
        ),
        ("/lease/leases", unary!(LeaseService, lease_leases)),
        ("/kv/lease/leases", unary!(LeaseService, lease_leases)),
        ("/cluster/member/add", unary!(ClusterService, member_add)),
        (
            "/cluster/member/remove",
            unary!(ClusterService, member_remove),
        ),
        (
            "/cluster/member/update",
            unary!(ClusterService, member_update),
        ),
        ("/cluster/member/list", unary!(ClusterService, member_list)),
        (
            "/cluster/member/promote",
            unary!(ClusterService, member_promote),
        ),
        ("/maintenance/alarm", unary!(MaintenanceService, alarm)),
        ("/maintenance/status", unary!(MaintenanceService, status)),
        (
            "/maintenance/defragment",
            unary!(MaintenanceService, defragment),
        ),
        ("/maintenance/hash", unary!(MaintenanceService, hash)),
        (
            "/maintenance/transfer-leadership",
            unary!(MaintenanceService, move_leader),
        ),
        (
            "/watch",
            streaming(move |body| {
                let shared = Arc::clone(&watch);
                async move {
                    // A watch outlives its request body: it ends when the client hangs up, or
                    // at a request that does not parse.
                    let requests = requests(body).chain(tokio_stream::pending());
                    super::watch::open(&shared, Box::pin(requests)).await
                }
            }),
        ),
        (
            "/lease/keepalive",
            streaming(move |body| {
                let service = LeaseService(Arc::clone(&keep_alive));
                async move { service.keep_alive(Box::pin(requests(body))).await }
            }),
        ),
        (
            "/maintenance/snapshot",
            streaming(move |body| {
                let service = MaintenanceService(Arc::clone(&snapshot));
                async move {
                    let request = parse::<pb::SnapshotRequest>(&read(body, limit).await?)?;
                    Ok(service.snapshot(Request::new(request)).await?.into_inner())
                }
            }),
        ),
    ];
    let mut router = Router::new();
    for prefix in ["/v3", "/v3beta"] {
        for (path, method) in &methods {
            router = router.route(&format!("{prefix}{path}"), method.clone());
        }
    }
    router
}

/// A route for a streaming method: `call` opens the stream from the request body; its
/// answers go out as JSON lines ([`results`]).
fn streaming<A, S, F, R>(call: F) -> MethodRouter
where
    A: Serialize + Send + 'static,
    S: Stream<Item = Result<A, Status>> + Send + 'static,
    F: Fn(Body) -> R + Clone + Send + Sync + 'static,
    R: Future<Output = Result<S, Status>> + Send,
{
    post(move |body: Body| async move {
        match call(body).await {
            Ok(responses) => results(responses),
            Err(status) => failure(&status),
        }
    })
}

/// A route for a unary method: the body parsed as its request, `call`'s answer as JSON.
fn unary<Q, A, F, R>(limit: usize, call: F) -> MethodRouter
where
    Q: DeserializeOwned + Send + 'static,
    A: Serialize,
    F: Fn(Request<Q>) -> R + Clone + Send + Sync + 'static,
    R: Future<Output = Result<tonic::Response<A>, Status>> + Send,
{
    post(move |body: Body| async move {
        let request = match read(body, limit).await.and_then(|body| parse::<Q>(&body)) {
            Ok(request) => request,
            Err(status) => return failure(&status),
        };
        match call(Request::new(request)).await {
            Ok(answer) => match serde_json::to_vec(answer.get_ref()) {
                Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
                Err(error) => failure(&Status::internal(error.to_string())),
            },
            Err(status) => failure(&status),
        }
    })
}

/// A request's body, refused past `limit` bytes with etcd's error.
async fn read(body: Body, limit: usize) -> Result<Bytes, Status> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| Status::invalid_argument("etcdserver: request is too large"))
}

/// A request from JSON; an empty body is the empty request (all fields zero).
fn parse<Q: DeserializeOwned>(body: &[u8]) -> Result<Q, Status> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|error| Status::invalid_argument(error.to_string()))
}

/// The JSON requests of a streaming call's body, each as soon as it has fully arrived. A
/// request that does not parse, or a body that ends inside one, is an error, and the last
/// item: the service answers the requests before it, then the error.
fn requests<Q: DeserializeOwned + Send + 'static>(
    body: Body,
) -> impl Stream<Item = Result<Q, Status>> + Send + 'static {
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut chunks = body.into_data_stream();
        let mut buffer: Vec<u8> = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let Ok(chunk) = chunk else { return };
            buffer.extend_from_slice(&chunk);
            let mut values = serde_json::Deserializer::from_slice(&buffer).into_iter::<Q>();
            let mut consumed = 0;
            loop {
                match values.next() {
                    Some(Ok(value)) => {
                        consumed = values.byte_offset();
                        if sender.send(Ok(value)).await.is_err() {
                            return;
                        }
                    }
                    // The rest has not arrived yet.
                    Some(Err(error)) if error.is_eof() => break,
                    Some(Err(error)) => {
                        let _ = sender
                            .send(Err(Status::invalid_argument(error.to_string())))
                            .await;
                        return;
                    }
                    None => {
                        consumed = buffer.len();
                        break;
                    }
                }
            }
            buffer.drain(..consumed);
        }
        if !buffer.iter().all(u8::is_ascii_whitespace) {
            let _ = sender
                .send(Err(Status::invalid_argument(
                    "the request body ends inside a JSON value",
                )))
                .await;
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// A streaming answer: one `{"result":…}` line per response, or `{"error":…}` for a failure,
/// which ends it.
fn results<A: Serialize + Send + 'static>(
    responses: impl Stream<Item = Result<A, Status>> + Send + 'static,
) -> Response {
    let until_failure = UntilFailure {
        inner: Box::pin(responses),
        failed: false,
    };
    let lines = until_failure.map(|item| {
        let line = match &item {
            Ok(answer) => serde_json::to_vec(&StreamItem::Result(answer)),
            Err(status) => serde_json::to_vec(&StreamItem::<A>::Error(StreamError::of(status))),
        };
        let mut bytes = line.unwrap_or_default();
        bytes.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(bytes))
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(lines),
    )
        .into_response()
}

/// A stream of results that ends right after its first failure.
struct UntilFailure<S> {
    inner: std::pin::Pin<Box<S>>,
    failed: bool,
}

impl<A, S: Stream<Item = Result<A, Status>>> Stream for UntilFailure<S> {
    type Item = Result<A, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.failed {
            return std::task::Poll::Ready(None);
        }
        let item = std::task::ready!(self.inner.as_mut().poll_next(context));
        self.failed = matches!(item, Some(Err(_)));
        std::task::Poll::Ready(item)
    }
}

/// One line of a streaming answer.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum StreamItem<'a, A> {
    Result(&'a A),
    Error(StreamError<'a>),
}

/// A failure inside a stream, as etcd's gateway writes it.
#[derive(Serialize)]
struct StreamError<'a> {
    grpc_code: i32,
    http_code: u16,
    message: &'a str,
    http_status: &'static str,
}

impl<'a> StreamError<'a> {
    fn of(status: &'a Status) -> Self {
        let http = http_status(status.code());
        StreamError {
            grpc_code: status.code() as i32,
            http_code: http.as_u16(),
            message: status.message(),
            http_status: http.canonical_reason().unwrap_or_default(),
        }
    }
}

/// A failed unary call, as etcd's gateway answers it.
#[derive(Serialize)]
struct Failure<'a> {
    error: &'a str,
    message: &'a str,
    code: i32,
}

fn failure(status: &Status) -> Response {
    let body = Failure {
        error: status.message(),
        message: status.message(),
        code: status.code() as i32,
    };
    (
        http_status(status.code()),
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&body).unwrap_or_default(),
    )
        .into_response()
}

/// The HTTP status etcd's gateway (grpc-gateway v1) gives each gRPC code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_etcd_gateways() {
        let answer = pb::RangeResponse {
            header: Some(pb::ResponseHeader {
                cluster_id: 14_841_639_068_965_178_418,
                member_id: 1,
                revision: 2,
                raft_term: 2,
            }),
            kvs: vec![crate::pb::mvccpb::KeyValue {
                key: b"foo".to_vec(),
                create_revision: 2,
                mod_revision: 2,
                version: 1,
                value: b"bar".to_vec(),
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        assert_eq!(
            serde_json::to_string(&answer).unwrap(),
            r#"{"header":{"cluster_id":"14841639068965178418","member_id":"1","revision":"2","raft_term":"2"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"}"#
        );
        // Requests take proto or camelCase names, strings or numbers for 64-bit integers,
        // enums by name, and ignore unknown fields.
        let txn: pb::TxnRequest = parse(
            br#"{"compare":[{"target":"CREATE","key":"Zm9v","createRevision":"2"}],
                 "success":[{"requestRange":{"key":"Zm9v","range_end":"AA=="}}],
                 "failure":[{"request_put":{"key":"Zm9v","value":"YmFy","lease":7}}],
                 "unknown":1}"#,
        )
        .unwrap();
        assert_eq!(txn.compare[0].key, b"foo");
        assert_eq!(txn.success.len(), 1);
        assert_eq!(txn.failure.len(), 1);
        assert_eq!(
            parse::<pb::RangeRequest>(b"  ").unwrap(),
            Default::default()
        );
        let bad = parse::<pb::RangeRequest>(b"garbage").unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert_eq!(http_status(bad.code()), StatusCode::BAD_REQUEST);
    }
}
