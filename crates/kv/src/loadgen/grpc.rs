//! The load generator's gRPC client: unary calls written straight onto an HTTP/2 connection
//! (`h2`), one connection per [`Connection`], redialed after it fails.
//!
//! tonic's channel hands every request through a buffer task and hyper's dispatch task before
//! it reaches the connection, and sends a request's headers and its body in separate writes.
//! Here the calling task queues both frames itself, so the connection task writes them (and
//! those of every other call queued meanwhile) in one system call. The load generator shares
//! the machine with the servers it measures: what it spends, they lack.

use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{HeaderValue, CONTENT_TYPE, TE};
use http::{Method, Request, Uri};
use tokio::net::TcpStream;
use tonic::{Code, Status};

/// One HTTP/2 connection to one endpoint, shared by many calls at once.
pub(crate) struct Connection {
    host: String,
    port: u16,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    tls: Option<tokio_rustls::TlsConnector>,
    connect_timeout: Duration,
    /// The open connection's number (1 for the first dialed) and its sender.
    open: Mutex<Option<(u64, h2::client::SendRequest<Bytes>)>>,
    /// How many connections were dialed; held while dialing, so that calls waiting for a
    /// connection share one dial.
    dialing: tokio::sync::Mutex<u64>,
}

/// gRPC's `application/grpc` content type.
const GRPC: HeaderValue = HeaderValue::from_static("application/grpc");

impl Connection {
    /// A connection to `url` (`http://host:port`, or `https://` with `tls`), dialed at the
    /// first call.
    pub(crate) fn new(
        url: &str,
        tls: Option<&std::sync::Arc<tokio_rustls::rustls::ClientConfig>>,
        connect_timeout: Duration,
    ) -> anyhow::Result<Connection> {
        let uri: Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("bad endpoint '{url}': {e}"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("bad endpoint '{url}': give http:// or https://"))?;
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("bad endpoint '{url}': no host:port"))?;
        let tls = match (scheme.as_str(), tls) {
            ("http", _) => None,
            ("https", Some(config)) => Some(tokio_rustls::TlsConnector::from(config.clone())),
            ("https", None) => anyhow::bail!("'{url}' is https:// but no TLS settings are given"),
            (other, _) => anyhow::bail!("bad endpoint '{url}': unknown scheme '{other}'"),
        };
        let port = authority
            .port_u16()
            .unwrap_or(if tls.is_some() { 443 } else { 80 });
        Ok(Connection {
            host: authority.host().to_string(),
            port,
            scheme,
            authority,
            tls,
            connect_timeout,
            open: Mutex::new(None),
            dialing: tokio::sync::Mutex::new(0),
        })
    }

    /// The URI of the method at `path` (`/package.Service/Method`) on this endpoint.
    pub(crate) fn method(&self, path: &'static str) -> Uri {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .expect("a scheme, an authority and a path make a URI")
    }

    /// Calls the unary method at `method` (from [`Connection::method`]) with `request`, and
    /// decodes its answer. Transport failures come back as `Unavailable`, after which the next
    /// call dials anew.
    pub(crate) async fn unary<Q: prost::Message, A: prost::Message + Default>(
        &self,
        method: &Uri,
        request: &Q,
    ) -> Result<A, Status> {
        let (generation, sender) = self.sender().await?;
        match call(sender, method, request).await {
            Err(Failure::Transport(error)) => {
                self.forget(generation);
                Err(Status::unavailable(format!(
                    "{}: {error}",
                    self.authority.as_str()
                )))
            }
            Err(Failure::Status(status)) => Err(status),
            Ok(mut body) => decode(&mut body),
        }
    }

    /// The open connection's sender, dialing first if there is none.
    async fn sender(&self) -> Result<(u64, h2::client::SendRequest<Bytes>), Status> {
        if let Some(open) = self.current() {
            return Ok(open);
        }
        let mut dialed = self.dialing.lock().await;
        // Another call may have dialed while this one waited.
        if let Some(open) = self.current() {
            return Ok(open);
        }
        let sender = tokio::time::timeout(self.connect_timeout, self.dial())
            .await
            .unwrap_or_else(|_| Err(format!("no connection within {:?}", self.connect_timeout)))
            .map_err(|error| {
                Status::unavailable(format!(
                    "connecting to {}: {error}",
                    self.authority.as_str()
                ))
            })?;
        *dialed += 1;
        let open = (*dialed, sender);
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = Some(open.clone());
        Ok(open)
    }

    fn current(&self) -> Option<(u64, h2::client::SendRequest<Bytes>)> {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Drops the connection `generation` if it is still the open one.
    fn forget(&self, generation: u64) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open
            .as_ref()
            .is_some_and(|(current, _)| *current == generation)
        {
            *open = None;
        }
    }

    async fn dial(&self) -> Result<h2::client::SendRequest<Bytes>, String> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        match &self.tls {
            None => handshake(stream).await,
            Some(connector) => {
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| e.to_string())?;
                let stream = connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                handshake(stream).await
            }
        }
    }
}

/// The HTTP/2 handshake on `io`; the connection then runs on its own task until it fails or
/// every sender is dropped.
async fn handshake<T>(io: T) -> Result<h2::client::SendRequest<Bytes>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(2 << 20)
        .handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "a load generator connection ended");
        }
    });
    Ok(sender)
}

/// Why a call failed.
enum Failure {
    /// The connection failed: nothing more goes over it.
    Transport(h2::Error),
    /// The server answered with an error.
    Status(Status),
}

impl From<h2::Error> for Failure {
    fn from(error: h2::Error) -> Self {
        // A stream the server reset is its answer; the connection still serves.
        if error.is_reset() && !error.is_go_away() {
            Failure::Status(Status::unavailable(format!(
                "the server reset the request: {error}"
            )))
        } else {
            Failure::Transport(error)
        }
    }
}

/// Sends one unary request and returns the answer's message bytes (with their gRPC frame
/// header), once the trailers said it succeeded.
async fn call<Q: prost::Message>(
    sender: h2::client::SendRequest<Bytes>,
    method: &Uri,
    request: &Q,
) -> Result<Bytes, Failure> {
    let mut frame = BytesMut::with_capacity(5 + request.encoded_len());
    frame.put_u8(0); // not compressed
    frame.put_u32(u32::try_from(request.encoded_len()).unwrap_or(u32::MAX));
    request
        .encode(&mut frame)
        .expect("the buffer has room for the whole message");
    let mut head = Request::new(());
    *head.method_mut() = Method::POST;
    *head.uri_mut() = method.clone();
    head.headers_mut().insert(CONTENT_TYPE, GRPC);
    head.headers_mut()
        .insert(TE, HeaderValue::from_static("trailers"));
    let mut sender = sender.ready().await?;
    let (response, mut body) = sender.send_request(head, false)?;
    body.send_data(frame.freeze(), true)?;
    let (head, mut body) = response.await?.into_parts();
    if head.status != http::StatusCode::OK {
        return Err(Failure::Status(Status::new(
            Code::Unknown,
            format!("HTTP status {}", head.status),
        )));
    }
    // A failure may come as headers only, without a body or trailers.
    if let Some(status) = Status::from_header_map(&head.headers) {
        if status.code() != Code::Ok {
            return Err(Failure::Status(status));
        }
    }
    let mut message = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        message.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await?;
    let status = trailers
        .as_ref()
        .and_then(Status::from_header_map)
        .ok_or_else(|| Failure::Status(Status::internal("an answer without grpc-status")))?;
    if status.code() != Code::Ok {
        return Err(Failure::Status(status));
    }
    Ok(message.freeze())
}

/// The message in one gRPC frame.
fn decode<A: prost::Message + Default>(body: &mut Bytes) -> Result<A, Status> {
    if body.len() < 5 {
        return Err(Status::internal("an answer without a message"));
    }
    if body.get_u8() != 0 {
        return Err(Status::internal("a compressed answer (none was asked for)"));
    }
    let length = body.get_u32() as usize;
    if body.len() != length {
        return Err(Status::internal(format!(
            "an answer of {} bytes where its frame says {length}",
            body.len()
        )));
    }
    A::decode(body).map_err(|e| Status::internal(format!("a malformed answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::kv_server::{Kv, KvServer};
    use crate::pb::etcdserverpb::{
        CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
        PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
    };
    use std::net::SocketAddr;
    use tonic::{Request, Response};

    /// A KV service that answers a put with the length of its value as the revision, refuses
    /// an empty key as etcd does, and answers ranges with an error that needs percent-encoding.
    struct Mock;

    #[tonic::async_trait]
    impl Kv for Mock {
        async fn range(&self, _: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
            Err(Status::unavailable("etcdserver: no leader (50% of 2)"))
        }
        async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
            let request = request.into_inner();
            if request.key.is_empty() {
                return Err(Status::invalid_argument("etcdserver: key is not provided"));
            }
            Ok(Response::new(PutResponse {
                header: Some(ResponseHeader {
                    revision: request.value.len() as i64,
                    ..Default::default()
                }),
                prev_kv: None,
            }))
        }
        async fn delete_range(
            &self,
            _: Request<DeleteRangeRequest>,
        ) -> Result<Response<DeleteRangeResponse>, Status> {
            Err(Status::unimplemented("not in this mock"))
        }
        async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
            Err(Status::unimplemented("not in this mock"))
        }
        async fn compact(
            &self,
            _: Request<CompactionRequest>,
        ) -> Result<Response<CompactionResponse>, Status> {
            Err(Status::unimplemented("not in this mock"))
        }
    }

    /// Serves the mock on `address` (port 0: any) on a runtime of its own, so that dropping
    /// the runtime closes every connection the server had.
    fn serve(address: SocketAddr) -> (tokio::runtime::Runtime, SocketAddr) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind(address).unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = {
            let _context = runtime.enter();
            tokio::net::TcpListener::from_std(listener).unwrap()
        };
        let bound = listener.local_addr().unwrap();
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(KvServer::new(Mock))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (runtime, bound)
    }

    fn put(key: &str, value_len: usize) -> PutRequest {
        PutRequest {
            key: key.into(),
            value: vec![b'v'; value_len],
            ..Default::default()
        }
    }

    #[test]
    fn calls_decode_answers_and_errors_and_redial_after_the_server_went_away() {
        let client = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (server, address) = serve("127.0.0.1:0".parse().unwrap());
        let connection = std::sync::Arc::new(
            Connection::new(&format!("http://{address}"), None, Duration::from_secs(2)).unwrap(),
        );
        let put_method = connection.method("/etcdserverpb.KV/Put");
        let range_method = connection.method("/etcdserverpb.KV/Range");
        let call = |value_len: usize| {
            let (connection, method) = (connection.clone(), put_method.clone());
            async move {
                connection
                    .unary::<_, PutResponse>(&method, &put("k", value_len))
                    .await
            }
        };

        client.block_on(async {
            // Answers decode; calls share the connection, several at once.
            let mut calls = tokio::task::JoinSet::new();
            for n in 1..=8 {
                let call = call(n);
                calls.spawn(async move { (n, call.await) });
            }
            while let Some(joined) = calls.join_next().await {
                let (n, answer) = joined.unwrap();
                assert_eq!(answer.unwrap().header.unwrap().revision, n as i64);
            }
            // A gRPC error arrives with its code and its (percent-decoded) message.
            let refused = connection
                .unary::<_, PutResponse>(&put_method, &put("", 1))
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Code::InvalidArgument);
            assert_eq!(refused.message(), "etcdserver: key is not provided");
            let refused = connection
                .unary::<_, RangeResponse>(&range_method, &RangeRequest::default())
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Code::Unavailable);
            assert_eq!(refused.message(), "etcdserver: no leader (50% of 2)");
            // An error answer leaves the connection as it was.
            assert_eq!(connection.current().unwrap().0, 1);
        });

        // The server goes away: calls fail as unavailable, and none hangs.
        drop(server);
        client.block_on(async {
            let failed = call(1).await.unwrap_err();
            assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
            let failed = call(1).await.unwrap_err();
            assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
            assert!(failed.message().contains("connecting to"), "{failed:?}");
        });

        // Back on the same port: the next call dials a new connection and succeeds.
        let (_server, _) = serve(address);
        client.block_on(async {
            assert_eq!(call(3).await.unwrap().header.unwrap().revision, 3);
            assert_eq!(connection.current().unwrap().0, 2);
        });
    }

    #[test]
    fn bad_endpoints_are_refused_with_the_reason() {
        let error = |url: &str| {
            Connection::new(url, None, Duration::from_secs(1))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(
            error("http://").contains("bad endpoint"),
            "{}",
            error("http://")
        );
        assert!(error("ftp://127.0.0.1:1").contains("unknown scheme 'ftp'"));
        assert!(error("https://127.0.0.1:1").contains("no TLS settings"));
        assert!(error("127.0.0.1:2379").contains("bad endpoint"));
    }

    #[test]
    fn a_frame_that_disagrees_with_its_length_is_an_error() {
        let mut short = Bytes::from_static(&[0, 0, 0, 0, 9, 1, 2]);
        let status = decode::<PutResponse>(&mut short).unwrap_err();
        assert!(
            status.message().contains("where its frame says 9"),
            "{status:?}"
        );
        let mut compressed = Bytes::from_static(&[1, 0, 0, 0, 0]);
        assert!(decode::<PutResponse>(&mut compressed).is_err());
        let mut empty = Bytes::from_static(&[0, 0, 0, 0, 0]);
        assert_eq!(
            decode::<PutResponse>(&mut empty).unwrap(),
            PutResponse::default()
        );
    }
}
