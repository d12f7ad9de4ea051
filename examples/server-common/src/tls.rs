//! HTTPS for an HTTP API: a rustls server configuration (ring provider, HTTP/1.1 only) from
//! a PEM certificate chain and key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Why the certificate and key cannot serve HTTPS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file cannot be read or holds no PEM certificate.
    #[error("cannot load a certificate chain from {path}")]
    Certificate {
        /// The certificate file.
        path: PathBuf,
        /// What went wrong reading it.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The key file cannot be read or holds no PEM private key.
    #[error("cannot load a private key from {path}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What went wrong reading it.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("the certificate and key cannot be used for TLS")]
    Rustls(#[source] rustls::Error),
}

/// A server configuration presenting the chain in `cert` (leaf first) with the key in `key`,
/// offering ALPN `http/1.1`.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certificate = |source| TlsError::Certificate {
        path: cert.to_owned(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(certificate)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(certificate)?;
    if chain.is_empty() {
        return Err(certificate(rustls::pki_types::pem::Error::NoItemsFound));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_owned(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(TlsError::Rustls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
