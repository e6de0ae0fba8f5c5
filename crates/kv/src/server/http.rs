//! The HTTP endpoints etcd serves beside gRPC, on the client port and, with
//! `--listen-metrics-urls`, on ports of their own: plain HTTP (where a metrics scraper or a
//! liveness probe needs no client certificate) or, for `https://` URLs, TLS with the client
//! port's certificate:
//!
//! * `GET /metrics`: Prometheus text ([`super::metrics`]).
//! * `GET /health`: `{"health":"true","reason":""}` with 200 when the member knows a leader and
//!   a linearizable read (ReadIndex) answers in time; `{"health":"false","reason":…}` with 503
//!   otherwise (`ALARM NOSPACE` while a member is out of space). `?serializable=true` skips
//!   the read: the member only needs a leader (etcd's probe for members that should pass even
//!   while the cluster is slow).
//! * `GET /version`: `{"etcdserver":…,"etcdcluster":…}`.
//!
//! With `--fault-injection` (for tests, never in production), the client port also serves
//! `GET /faults` (`{"id","members","isolated"}`) and `POST /faults` (`{"isolate":[ids]}`):
//! the member drops every frame to and from those peers, as if the network between them
//! failed, until told `{"isolate":[]}` ([`concord_runtime::faults`]; `concord db partition`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Query as Params;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::cluster::API_VERSION;
use super::{DbNode, Shared};
use crate::{Query, RangeRequest};

/// The longest a health check waits for its read.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// The HTTP endpoints of one node.
pub(crate) fn router(shared: &Arc<Shared>) -> Router {
    let metrics = Arc::clone(shared);
    let health = Arc::clone(shared);
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let shared = Arc::clone(&metrics);
                async move { super::metrics::render(&shared) }
            }),
        )
        .route(
            "/health",
            get(move |params: Params<HashMap<String, String>>| {
                let shared = Arc::clone(&health);
                async move { check_health(&shared, &params).await }
            }),
        )
        .route(
            "/version",
            get(|| async {
                Json(serde_json::json!({"etcdserver": API_VERSION, "etcdcluster": API_VERSION}))
            }),
        )
}

/// `GET` and `POST /faults` ([`concord_runtime::faults`]), for `--fault-injection`.
pub(crate) fn faults_router(shared: &Arc<Shared>) -> Router {
    let read = Arc::clone(shared);
    let write = Arc::clone(shared);
    Router::new().route(
        "/faults",
        get(move || {
            let shared = Arc::clone(&read);
            async move { faults(&shared, None).await }
        })
        .post(move |body: Bytes| {
            let shared = Arc::clone(&write);
            async move { faults(&shared, Some(&body)).await }
        }),
    )
}

/// Where this node stands, after applying `body` (a `POST`) if there is one; the members are
/// those of the Raft configuration it knows.
async fn faults(shared: &Shared, body: Option<&[u8]>) -> Response {
    let failed = |code: StatusCode, message: &str| {
        (code, Json(serde_json::json!({ "error": message }))).into_response()
    };
    let members = shared
        .handle
        .inspect(|node: &DbNode| node.membership().members())
        .await;
    let members = match members {
        Ok(members) => members,
        Err(error) => {
            let status = super::host_status(error);
            return failed(StatusCode::SERVICE_UNAVAILABLE, status.message());
        }
    };
    match body {
        None => Json(shared.handle.isolation(members)).into_response(),
        Some(body) => match shared.handle.apply_faults(members, body) {
            Ok(isolation) => Json(isolation).into_response(),
            Err(message) => failed(StatusCode::BAD_REQUEST, &message),
        },
    }
}

async fn check_health(
    shared: &Shared,
    params: &HashMap<String, String>,
) -> (StatusCode, Json<serde_json::Value>) {
    let unhealthy = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"health": "false", "reason": reason})),
        )
    };
    if shared.handle.with_status(|status| status.leader).is_none() {
        return unhealthy("RAFT NO LEADER".into());
    }
    // An alarm (a member out of space) makes the member unhealthy, as in etcd.
    if let Ok(Some((_, alarm))) = shared.with_store(|store| store.alarms().next()).await {
        let name = super::cluster::alarm_to_pb(alarm).as_str_name();
        return unhealthy(format!("ALARM {name}"));
    }
    if params.get("serializable").map(String::as_str) != Some("true") {
        let read = shared.read(Query::Range(RangeRequest::key("health")));
        match tokio::time::timeout(HEALTH_TIMEOUT, read).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(error))) => return unhealthy(format!("QGET ERROR: {error}")),
            Ok(Err(status)) => return unhealthy(format!("QGET ERROR: {}", status.message())),
            Err(_) => return unhealthy("QGET ERROR: timed out".into()),
        }
    }
    (
        StatusCode::OK,
        Json(serde_json::json!({"health": "true", "reason": ""})),
    )
}
