//! The connections of the client port and of the metrics listeners, as tonic's
//! `serve_with_incoming` takes them: accepted, with Nagle off, after their TLS handshake when
//! the port has TLS, each behind [`AuthorityFix`] and [`GatheredWrites`]. The listener closes
//! once the stream is dropped (the server stopped).

use std::future::Future;
use std::io;
use std::time::Duration;

use concord_runtime::TlsFiles;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use super::authority::AuthorityFix;
use super::gather::GatheredWrites;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepted connections.
type Incoming<S> = ReceiverStream<io::Result<AuthorityFix<GatheredWrites<S>>>>;

/// A port's connections: plain TCP, or TLS streams after their handshake.
pub(crate) enum Connections {
    Plain(Incoming<TcpStream>),
    Tls(Incoming<TlsStream<TcpStream>>),
}

impl Connections {
    /// Accepts on `listener`, over TLS with `tls`'s certificate when given. Bad TLS files are
    /// an error here, before anything is served.
    pub(crate) fn accept(listener: TcpListener, tls: Option<&TlsFiles>) -> anyhow::Result<Self> {
        Ok(match tls {
            Some(files) => Connections::Tls(self::tls(listener, files)?),
            None => Connections::Plain(accept(listener, |stream| async move { Ok(stream) })),
        })
    }

    /// Serves `routes` (gRPC and HTTP/1.1 alike) on these connections until the task is
    /// aborted.
    pub(crate) fn serve(self, routes: tonic::service::Routes) -> tokio::task::JoinHandle<()> {
        let builder = tonic::transport::Server::builder()
            .accept_http1(true)
            .add_routes(routes);
        tokio::spawn(async move {
            let served = match self {
                Connections::Plain(incoming) => builder.serve_with_incoming(incoming).await,
                Connections::Tls(incoming) => builder.serve_with_incoming(incoming).await,
            };
            if let Err(error) = served {
                tracing::error!(%error, "serving a client or metrics port failed");
            }
        })
    }
}

/// TLS connections, with the port's certificate and, with `client_cert_auth`, a client
/// certificate required.
fn tls(listener: TcpListener, files: &TlsFiles) -> anyhow::Result<Incoming<TlsStream<TcpStream>>> {
    let config = files.server_config(&[b"h2", b"http/1.1"])?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    Ok(accept(listener, move |stream| {
        let acceptor = acceptor.clone();
        async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                )),
            }
        }
    }))
}

/// Accepts connections on `listener` and hands on what `handshake` makes of each; each
/// handshake runs on its own task, so a slow client holds up no other.
fn accept<S, F, H>(listener: TcpListener, handshake: H) -> Incoming<S>
where
    S: Send + 'static,
    F: Future<Output = io::Result<S>> + Send + 'static,
    H: Fn(TcpStream) -> F + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = sender.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a client connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let handshake = handshake(stream);
            let sender = sender.clone();
            tokio::spawn(async move {
                match handshake.await {
                    Ok(stream) => {
                        let _ = sender
                            .send(Ok(AuthorityFix::new(GatheredWrites::new(stream))))
                            .await;
                    }
                    Err(error) => tracing::info!(%remote, %error, "client handshake failed"),
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}
