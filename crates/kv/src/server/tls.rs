//! TLS on the client port, as etcd's `--cert-file`, `--key-file`, `--trusted-ca-file` and
//! `--client-cert-auth` set it up: gRPC and `/metrics` over TLS, optionally only for clients
//! whose certificate the trusted CA signed. Members reach each other's client port too (lease
//! and membership requests go to the leader's), with the same CA and their own certificate.
//!
//! The handshake is done by the server's own accept loop ([`super::incoming`]) rather than by
//! tonic, so that the server offers both HTTP/2 and HTTP/1.1 (ALPN): gRPC clients negotiate the
//! first, a metrics scraper may ask for the second.

use std::path::Path;

use anyhow::Context;
use concord_runtime::TlsFiles;
use tonic::transport::{Certificate, Endpoint, Identity};

pub use tokio_rustls::rustls::ClientConfig as LoadTlsConfig;
pub use tonic::transport::ClientTlsConfig;

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
    if let Some((cert, key)) = identity(cert, key)? {
        config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(config)
}

/// A client certificate and its key, both or neither.
fn identity<'a>(
    cert: Option<&'a Path>,
    key: Option<&'a Path>,
) -> anyhow::Result<Option<(&'a Path, &'a Path)>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        _ => anyhow::bail!("a client certificate needs its key, and a key its certificate"),
    }
}

/// The same settings for the load generator, which speaks HTTP/2 over rustls itself
/// ([`crate::loadgen`]). The CA is required: the servers' certificates are checked against it
/// alone.
pub fn load_tls(
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> anyhow::Result<std::sync::Arc<LoadTlsConfig>> {
    let ca = ca.context("https:// endpoints need --cacert, the CA that signed the servers")?;
    Ok(concord_runtime::tls::client_config(
        ca,
        identity(cert, key)?,
        &[b"h2"],
    )?)
}

/// `endpoint`, over TLS when `tls` is given (its URL then says `https://`).
pub fn with_tls(
    endpoint: Endpoint,
    tls: Option<&ClientTlsConfig>,
) -> Result<Endpoint, tonic::transport::Error> {
    match tls {
        Some(tls) => endpoint.tls_config(tls.clone()),
        None => Ok(endpoint),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use concord_runtime::tls::test_pki::TestCa;

    #[test]
    fn the_load_generator_needs_the_ca_and_a_whole_identity() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path(), "concord");
        let (cert, key) = ca.leaf("client");
        let error = |ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>| {
            load_tls(ca, cert, key)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default()
        };
        assert!(error(None, None, None).contains("need --cacert"));
        assert!(error(Some(&ca.ca_file()), Some(&cert), None).contains("needs its key"));
        let config = load_tls(Some(&ca.ca_file()), Some(&cert), Some(&key)).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(config.client_auth_cert_resolver.has_certs());
        let config = load_tls(Some(&ca.ca_file()), None, None).unwrap();
        assert!(!config.client_auth_cert_resolver.has_certs());
    }
}
