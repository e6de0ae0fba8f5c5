//! TLS from PEM files, as etcd's flags name them: a certificate and its key, the CA that signs
//! the other side's certificates, and whether the other side must present one
//! (`--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth`, and their `--peer-…`
//! twins). rustls on the `ring` provider; TLS 1.2 and 1.3.
//!
//! [`PeerTls`] secures the peer transport (mutual TLS between members). Concord DB uses
//! [`TlsFiles::server_config`] and [`TlsFiles::client_config`] for its client port too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing, unreadable or holds nothing usable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The files do not make a usable configuration (a key that does not match its
    /// certificate, a needed CA not given, …).
    #[error("TLS settings: {0}")]
    Config(String),
}

/// One side's TLS files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// This side's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificates (PEM) the other side's certificates must chain to.
    pub trusted_ca: Option<PathBuf>,
    /// Whether connecting clients must present a certificate signed by `trusted_ca`.
    pub client_cert_auth: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| file_error(path, e))?;
    }
    Ok(Arc::new(roots))
}

impl TlsFiles {
    /// The CA file, required for what needs one.
    fn required_ca(&self, why: &str) -> Result<&Path, TlsError> {
        self.trusted_ca
            .as_deref()
            .ok_or_else(|| TlsError::Config(format!("{why} needs a trusted CA file")))
    }

    /// A server configuration: this side's certificate, and with `client_cert_auth` a client
    /// certificate required and checked against the trusted CA. `alpn` lists the application
    /// protocols offered, in order of preference.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = if self.client_cert_auth {
            let roots = roots(self.required_ca("client certificate authentication")?)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(certificates(&self.cert)?, private_key(&self.key)?)
            .map_err(|e| TlsError::Config(format!("{}: {e}", self.key.display())))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// A client configuration for connecting to the other members: it trusts the CA file's
    /// certificates only, and presents this side's certificate.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsError> {
        let ca = self.required_ca("verifying the other members' certificates")?;
        client_config(ca, Some((&self.cert, &self.key)), alpn)
    }
}

/// A client configuration that trusts the certificates in the `ca` file only and, with
/// `identity` (a certificate chain and its key), presents that certificate when the server
/// asks for one. `alpn` lists the application protocols offered, in order of preference.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(ca)?);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .map_err(|e| TlsError::Config(format!("{}: {e}", key.display())))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Mutual TLS for the peer transport: members present their peer certificate both when they
/// dial and when they accept, and verify the other's against the peer CA. A member is dialed
/// at an IP address, so its certificate must name that address (an IP subject alternative
/// name), as etcd's peer certificates do.
#[derive(Clone)]
pub struct PeerTls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    pub(crate) connector: tokio_rustls::TlsConnector,
}

impl PeerTls {
    /// From the peer TLS files (a trusted CA is required).
    pub fn new(files: &TlsFiles) -> Result<PeerTls, TlsError> {
        let server = files.server_config(&[])?;
        let client = files.client_config(&[])?;
        Ok(PeerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(server),
            connector: tokio_rustls::TlsConnector::from(client),
        })
    }
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").finish_non_exhaustive()
    }
}

/// Certificates for tests (feature `test-pki`): a CA, and certificates it signs for
/// `127.0.0.1` and `localhost`, usable by servers and clients alike, written as PEM files.
#[cfg(any(test, feature = "test-pki"))]
pub mod test_pki {
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::{Path, PathBuf};

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, SanType,
    };

    /// A certificate authority whose files live in one folder.
    #[derive(Debug)]
    pub struct TestCa {
        issuer: CertifiedIssuer<'static, KeyPair>,
        dir: PathBuf,
        name: String,
    }

    impl TestCa {
        /// A new CA named `name`; its certificate is written to `dir/<name>-ca.pem`.
        pub fn new(dir: &Path, name: &str) -> TestCa {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(DnType::CommonName, format!("{name} CA"));
            let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key"))
                .expect("a self-signed CA");
            let ca = TestCa {
                issuer,
                dir: dir.to_path_buf(),
                name: name.to_string(),
            };
            std::fs::write(ca.ca_file(), ca.issuer.pem()).expect("write the CA");
            ca
        }

        /// The CA certificate's file.
        pub fn ca_file(&self) -> PathBuf {
            self.dir.join(format!("{}-ca.pem", self.name))
        }

        /// A certificate and key signed by this CA, for `127.0.0.1` and `localhost`, for
        /// server and client use: written to `dir/<name>.pem` and `dir/<name>-key.pem`.
        pub fn leaf(&self, name: &str) -> (PathBuf, PathBuf) {
            let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
            params
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &self.issuer).expect("signed");
            let cert_file = self.dir.join(format!("{name}.pem"));
            let key_file = self.dir.join(format!("{name}-key.pem"));
            std::fs::write(&cert_file, cert.pem()).expect("write the certificate");
            std::fs::write(&key_file, key.serialize_pem()).expect("write the key");
            (cert_file, key_file)
        }
    }
}
