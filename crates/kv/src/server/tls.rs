//! TLS on the client port, as etcd's `--cert-file`, `--key-file`, `--trusted-ca-file` and
//! `--client-cert-auth` set it up: gRPC and `/metrics` over TLS, optionally only for clients
//! whose certificate the trusted CA signed. Members reach each other's client port too (lease
//! and membership requests go to the leader's), with the same CA and their own certificate.
//!
//! The handshake is done here rather than by tonic so that the server offers both HTTP/2 and
//! HTTP/1.1 (ALPN): gRPC clients negotiate the first, a metrics scraper may ask for the second.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use concord_runtime::TlsFiles;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Identity};

pub use tonic::transport::ClientTlsConfig;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Client connections after their TLS handshake.
pub(crate) type Incoming = ReceiverStream<std::io::Result<TlsStream<TcpStream>>>;

/// Accepted connections, after their TLS handshake, for tonic's `serve_with_incoming`. The
/// listener closes once the stream is dropped (the server stopped).
pub(crate) fn incoming(listener: TcpListener, files: &TlsFiles) -> anyhow::Result<Incoming> {
    let config = files.server_config(&[b"h2", b"http/1.1"])?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
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
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            // Each handshake on its own task: a slow client holds up no other.
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = sender.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => {
                        tracing::info!(%remote, %error, "client TLS handshake failed");
                    }
                    Err(_) => tracing::info!(%remote, "client TLS handshake timed out"),
                }
            });
        }
    });
    Ok(ReceiverStream::new(receiver))
}

/// A client's TLS settings for an etcd-API endpoint: the CA that signed the server's
/// certificate, and the client's own certificate and key when the server asks for one (the
/// files `etcdctl --cacert --cert --key` takes).
pub fn client_tls(
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> anyhow::Result<ClientTlsConfig> {
    let read =
        |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let mut config = ClientTlsConfig::new();
    if let Some(ca) = ca {
        config = config.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    match (cert, key) {
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        (None, None) => {}
        _ => anyhow::bail!("a client certificate needs its key, and a key its certificate"),
    }
    Ok(config)
}

/// How a member reaches the other members' client URLs: with its own certificate, trusting
/// the client CA.
pub(crate) fn member_client_tls(files: &TlsFiles) -> anyhow::Result<ClientTlsConfig> {
    let ca = files.trusted_ca.as_deref().context(
        "--cert-file needs --trusted-ca-file: members verify each other's client certificates \
         when they forward lease and membership requests to the leader",
    )?;
    client_tls(Some(ca), Some(&files.cert), Some(&files.key))
}
