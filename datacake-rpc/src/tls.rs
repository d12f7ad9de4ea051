//! Mutual TLS for servers and channels (rustls): both ends prove themselves with a
//! certificate signed by one cluster CA, and handlers see the caller's verified identity.
//!
//! Trust is the CA, not a host name: nodes are reached by socket address, so a server's
//! certificate is checked for a chain to the CA, its validity period and its key usage, and
//! the names in it are read as an identity ([`PeerIdentity`]) rather than matched against a
//! DNS name. [`TlsConfig::require_peer_uri_prefix`] narrows the trust to certificates naming
//! a URI under a prefix (e.g. one cluster's `datacake://orders/`), checked on both ends right
//! after the handshake; [`TlsConfig::require_peer_uri`] to one exact URI, for a channel to one
//! known node.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::net::Io;

/// The ALPN protocol both ends require: HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// TLS settings shared by a node's [`Server`](crate::Server) and its
/// [`Channel`](crate::Channel)s: the cluster CA, this end's certificate chain and key, and
/// optionally the URI prefix a peer's certificate must name.
///
/// ```
/// # fn pem() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
/// #     let ca_key = rcgen::KeyPair::generate().unwrap();
/// #     let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
/// #     ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
/// #     let ca_cert = ca.self_signed(&ca_key).unwrap();
/// #     let key = rcgen::KeyPair::generate().unwrap();
/// #     let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
/// #     leaf.subject_alt_names.push(rcgen::SanType::URI("datacake://orders/1".try_into().unwrap()));
/// #     leaf.extended_key_usages = vec![
/// #         rcgen::ExtendedKeyUsagePurpose::ServerAuth,
/// #         rcgen::ExtendedKeyUsagePurpose::ClientAuth,
/// #     ];
/// #     let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
/// #     (ca_cert.pem().into_bytes(), cert.pem().into_bytes(), key.serialize_pem().into_bytes())
/// # }
/// use datacake_rpc::TlsConfig;
///
/// let (ca_pem, cert_pem, key_pem) = pem();
/// let tls = TlsConfig::mutual_from_pem(&ca_pem, &cert_pem, &key_pem)
///     .unwrap()
///     .require_peer_uri_prefix("datacake://orders/");
/// let server = datacake_rpc::Server::builder().tls(tls.clone());
/// let channel = datacake_rpc::Channel::builder().tls(tls);
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    /// The names of this end's own certificate.
    identity: Arc<PeerIdentity>,
    peer_uri_prefix: Option<Arc<str>>,
    peer_uri: Option<Arc<str>>,
}

/// Why TLS settings could not be built, or a peer was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {what} from {path}")]
    Read {
        /// What the file should hold (`"ca certificate"`, `"certificate chain"`, `"private key"`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// PEM text could not be parsed, or holds nothing of the kind expected.
    #[error("no valid {what} in the PEM input")]
    Pem {
        /// What was looked for.
        what: &'static str,
        /// The parser's reason, if it gave one.
        #[source]
        source: Option<rustls::pki_types::pem::Error>,
    },
    /// rustls refused the certificates or the key (e.g. a key that does not match the
    /// certificate, or a CA certificate it cannot use).
    #[error("rustls refused the tls settings")]
    Rustls(#[source] rustls::Error),
    /// The client-certificate verifier could not be built from the CA certificates.
    #[error("cannot build the peer verifier from the ca certificates")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// The handshake with a peer failed (unknown CA, expired certificate, no certificate, no
    /// `h2` protocol, ...).
    #[error("tls handshake with {peer} failed")]
    Handshake {
        /// The peer's address.
        peer: SocketAddr,
        /// rustls' reason, as an I/O error.
        #[source]
        source: io::Error,
    },
    /// The peer's certificate is valid but does not name what
    /// [`TlsConfig::require_peer_uri_prefix`] requires.
    #[error(
        "the certificate of {peer} names no uri starting with `{required}` (it names {names:?})"
    )]
    PeerNotAllowed {
        /// The peer's address.
        peer: SocketAddr,
        /// The required prefix.
        required: String,
        /// The URIs the certificate names.
        names: Vec<String>,
    },
    /// The peer's certificate is valid but does not name the URI
    /// [`TlsConfig::require_peer_uri`] requires.
    #[error("the certificate of {peer} does not name `{required}` (it names {names:?})")]
    PeerNotNamed {
        /// The peer's address.
        peer: SocketAddr,
        /// The required URI.
        required: String,
        /// The URIs the certificate names.
        names: Vec<String>,
    },
    /// The peer did not agree to speak HTTP/2 (ALPN `h2`).
    #[error("{peer} did not negotiate http/2 (alpn h2)")]
    NoHttp2 {
        /// The peer's address.
        peer: SocketAddr,
    },
}

impl TlsConfig {
    /// Mutual TLS from DER values: `ca` are the cluster CA certificates both ends trust,
    /// `chain` this end's certificate (first) and its intermediates, `key` its private key.
    pub fn mutual(
        ca: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let identity = chain
            .first()
            .map(|c| Arc::new(PeerIdentity::from_certificate(c.clone())))
            .ok_or(TlsError::Pem {
                what: "certificate chain",
                source: None,
            })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in ca {
            roots.add(cert).map_err(TlsError::Rustls)?;
        }
        let roots = Arc::new(roots);

        let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(TlsError::Verifier)?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_client_cert_verifier(clients)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(TlsError::Rustls)?;
        server.alpn_protocols = vec![ALPN_H2.to_vec()];
        // No session resumption, on either end: a resumed session skips the certificate
        // checks, so a certificate that expired (or a CA no longer trusted) would keep
        // connecting for as long as its session ticket lasts. Every connection is checked.
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;

        let servers = Arc::new(ClusterServerVerifier {
            roots,
            algorithms: provider.signature_verification_algorithms,
        });
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .dangerous()
            .with_custom_certificate_verifier(servers)
            .with_client_auth_cert(chain, key)
            .map_err(TlsError::Rustls)?;
        client.alpn_protocols = vec![ALPN_H2.to_vec()];
        client.resumption = rustls::client::Resumption::disabled();

        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
            identity,
            peer_uri_prefix: None,
            peer_uri: None,
        })
    }

    /// Mutual TLS from PEM text: the CA certificate(s), this end's certificate chain, and its
    /// private key (PKCS#8, PKCS#1 or SEC1).
    pub fn mutual_from_pem(ca: &[u8], chain: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        let ca = certificates(ca, "ca certificate")?;
        let chain = certificates(chain, "certificate chain")?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Pem {
            what: "private key",
            source: Some(e),
        })?;
        Self::mutual(ca, chain, key)
    }

    /// Mutual TLS from PEM files (see [`mutual_from_pem`](Self::mutual_from_pem)).
    pub fn mutual_from_files(
        ca: impl AsRef<Path>,
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.to_owned(),
                source,
            })
        };
        Self::mutual_from_pem(
            &read("ca certificate", ca.as_ref())?,
            &read("certificate chain", chain.as_ref())?,
            &read("private key", key.as_ref())?,
        )
    }

    /// Accepts only peers whose certificate names a URI starting with `prefix` (for
    /// example one cluster's `datacake://orders/`), on both ends: a server closes such a
    /// connection right after the handshake, a channel fails its calls with
    /// [`Connection`](crate::ErrorCode::Connection).
    ///
    /// ```no_run
    /// # fn tls() -> datacake_rpc::TlsConfig { unimplemented!() }
    /// let tls = tls().require_peer_uri_prefix("datacake://orders/");
    /// ```
    #[must_use]
    pub fn require_peer_uri_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.peer_uri_prefix = Some(prefix.into().into());
        self
    }

    /// Accepts only a peer whose certificate names exactly `uri` (for example
    /// `datacake://orders/7`): for a channel meant to reach one known node, so that whoever
    /// answers at the address it was given must be that node. Checked like
    /// [`require_peer_uri_prefix`](Self::require_peer_uri_prefix) (and with it, if both are
    /// set); a channel whose server names something else fails its calls with
    /// [`Connection`](crate::ErrorCode::Connection).
    ///
    /// ```no_run
    /// # fn tls() -> datacake_rpc::TlsConfig { unimplemented!() }
    /// let to_node_7 = tls().require_peer_uri("datacake://orders/7");
    /// ```
    #[must_use]
    pub fn require_peer_uri(mut self, uri: impl Into<String>) -> Self {
        self.peer_uri = Some(uri.into().into());
        self
    }

    /// The names this end's own certificate carries (what its peers will see).
    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    /// Runs the server side of the handshake on `io` and checks the client.
    pub(crate) async fn accept<I: Io>(
        &self,
        io: I,
        peer: SocketAddr,
    ) -> Result<(tokio_rustls::server::TlsStream<I>, Arc<PeerIdentity>), TlsError> {
        let stream = tokio_rustls::TlsAcceptor::from(self.server.clone())
            .accept(io)
            .await
            .map_err(|source| TlsError::Handshake { peer, source })?;
        let (_, session) = stream.get_ref();
        let identity = self.check(peer, session.alpn_protocol(), session.peer_certificates())?;
        Ok((stream, identity))
    }

    /// Runs the client side of the handshake on `io` and checks the server.
    pub(crate) async fn connect<I: Io>(
        &self,
        io: I,
        peer: SocketAddr,
    ) -> Result<(tokio_rustls::client::TlsStream<I>, Arc<PeerIdentity>), TlsError> {
        // The name is not checked (see the module docs); rustls needs one to send.
        let name = ServerName::IpAddress(peer.ip().into());
        let stream = tokio_rustls::TlsConnector::from(self.client.clone())
            .connect(name, io)
            .await
            .map_err(|source| TlsError::Handshake { peer, source })?;
        let (_, session) = stream.get_ref();
        let identity = self.check(peer, session.alpn_protocol(), session.peer_certificates())?;
        Ok((stream, identity))
    }

    /// What both ends check once rustls has verified the chain: HTTP/2 was agreed and the
    /// certificate names what is required.
    fn check(
        &self,
        peer: SocketAddr,
        alpn: Option<&[u8]>,
        certificates: Option<&[CertificateDer<'static>]>,
    ) -> Result<Arc<PeerIdentity>, TlsError> {
        if alpn != Some(ALPN_H2) {
            return Err(TlsError::NoHttp2 { peer });
        }
        // rustls has verified a chain, so there is an end-entity certificate.
        let certificate =
            certificates
                .and_then(|c| c.first())
                .ok_or_else(|| TlsError::Handshake {
                    peer,
                    source: io::Error::new(io::ErrorKind::InvalidData, "no peer certificate"),
                })?;
        let identity = PeerIdentity::from_certificate(certificate.clone());
        if let Some(prefix) = &self.peer_uri_prefix {
            if !identity.uris().iter().any(|u| u.starts_with(&**prefix)) {
                return Err(TlsError::PeerNotAllowed {
                    peer,
                    required: prefix.to_string(),
                    names: identity.uris().to_vec(),
                });
            }
        }
        if let Some(uri) = &self.peer_uri {
            if !identity.uris().iter().any(|u| u == &**uri) {
                return Err(TlsError::PeerNotNamed {
                    peer,
                    required: uri.to_string(),
                    names: identity.uris().to_vec(),
                });
            }
        }
        Ok(Arc::new(identity))
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("identity", &self.identity)
            .field("peer_uri_prefix", &self.peer_uri_prefix)
            .field("peer_uri", &self.peer_uri)
            .finish_non_exhaustive()
    }
}

fn certificates(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            source: Some(e),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Pem { what, source: None });
    }
    Ok(certificates)
}

/// The verified certificate of the peer on a TLS connection, and the names it carries.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    certificate: CertificateDer<'static>,
    uris: Vec<String>,
    dns_names: Vec<String>,
    not_after: Option<SystemTime>,
}

impl PeerIdentity {
    /// Reads the subject alternative names of a certificate rustls has verified. A name the
    /// parser cannot read is left out: it then simply matches nothing.
    fn from_certificate(certificate: CertificateDer<'static>) -> Self {
        let mut uris = Vec::new();
        let mut dns_names = Vec::new();
        let mut not_after = None;
        if let Ok((_, parsed)) = x509_parser::parse_x509_certificate(&certificate) {
            let seconds = parsed.validity().not_after.timestamp();
            not_after = u64::try_from(seconds)
                .ok()
                .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)));
            if let Ok(Some(names)) = parsed.subject_alternative_name() {
                for name in &names.value.general_names {
                    match name {
                        x509_parser::extensions::GeneralName::URI(uri) => {
                            uris.push((*uri).to_owned())
                        }
                        x509_parser::extensions::GeneralName::DNSName(dns) => {
                            dns_names.push((*dns).to_owned())
                        }
                        _ => {}
                    }
                }
            }
        }
        Self {
            certificate,
            uris,
            dns_names,
            not_after,
        }
    }

    /// When the certificate stops being valid (`None` if that cannot be read). A connection
    /// ends there: the server closes it (GOAWAY, calls in flight finish) and a
    /// [`Channel`](crate::Channel) opens a new one, whose handshake checks the certificate
    /// again.
    pub fn not_after(&self) -> Option<SystemTime> {
        self.not_after
    }

    /// How long from now until [`not_after`](Self::not_after), as a deadline on tokio's clock.
    pub(crate) fn expires_at(&self) -> Option<tokio::time::Instant> {
        let left = self
            .not_after?
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::Instant::now().checked_add(left)
    }

    /// The URIs among the certificate's subject alternative names (a node's identity, e.g.
    /// `datacake://orders/7`).
    pub fn uris(&self) -> &[String] {
        &self.uris
    }

    /// The DNS names among the certificate's subject alternative names.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// The certificate itself (DER), for checks of one's own.
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }
}

impl fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerIdentity")
            .field("uris", &self.uris)
            .field("dns_names", &self.dns_names)
            .finish_non_exhaustive()
    }
}

/// Checks a server's certificate chain against the cluster CA (validity period and key usage
/// included), but not a host name: nodes are reached by address, and who a node is comes
/// from the names [`PeerIdentity`] reads.
#[derive(Debug)]
struct ClusterServerVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ClusterServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
