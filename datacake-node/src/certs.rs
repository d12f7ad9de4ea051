//! Certificates for a cluster, without OpenSSL: a cluster CA and the node certificates it
//! signs (feature `certs`).
//!
//! A [`ClusterCa`] is a self-signed CA (ECDSA P-256, common name `datacake <cluster> CA`,
//! valid for ten years). [`ClusterCa::issue_node`] signs a node certificate whose subject
//! alternative names hold the node's identity URI `datacake://<cluster>/<node-id>` (see
//! [`NodeIdentity`]) and the host names and IP addresses the node is reached at; the
//! certificate serves both ends of a mutual TLS connection (extended key usages serverAuth and
//! clientAuth) and is valid for a year.
//!
//! Every node of the cluster trusts the CA certificate (`cert_pem`), and holds its own
//! certificate and key; the CA key only signs, so keep it off the nodes.
//!
//! ```
//! use datacake_node::certs::ClusterCa;
//!
//! let ca = ClusterCa::generate("orders").unwrap();
//! let node = ca.issue_node(7, &["10.0.0.7".into(), "kv-7.example".into()]).unwrap();
//! assert!(node.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
//!
//! // The CA's files load back and keep signing for the same cluster.
//! let again = ClusterCa::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
//! assert_eq!(again.cluster(), "orders");
//! ```

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::identity::{check_cluster_id, IdentityError, NodeIdentity};
use crate::membership::NodeId;

/// How long a CA made by [`ClusterCa::generate`] is valid: ten years.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// How long a node certificate made by [`ClusterCa::issue_node`] is valid: one year.
pub const NODE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// How far before "now" a new certificate's validity starts, so that a node whose clock is a
/// little behind the issuer's already accepts it.
pub const BACKDATE: Duration = Duration::from_secs(60 * 60);

/// The common name of a cluster CA: `datacake <cluster> CA`.
const CA_NAME_PREFIX: &str = "datacake ";
const CA_NAME_SUFFIX: &str = " CA";

/// Why a certificate cannot be made, or a CA's files cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The cluster id cannot be named in a node identity.
    #[error(transparent)]
    ClusterId(#[from] IdentityError),
    /// A host is neither an IP address nor a DNS name (labels of 1-63 ASCII letters, digits
    /// and `-`, at most 253 bytes in all).
    #[error("`{host}` is neither an IP address nor a DNS name")]
    InvalidHost {
        /// The rejected host.
        host: String,
    },
    /// The validity period is empty (it ends before it starts) or lies before 1970.
    #[error("invalid validity period: {reason}")]
    Validity {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The CA certificate PEM holds no certificate that can be parsed.
    #[error("the CA certificate cannot be parsed: {reason}")]
    CertificatePem {
        /// What the parser said.
        reason: String,
    },
    /// The CA key PEM holds no ECDSA, Ed25519 or RSA private key rcgen can sign with.
    #[error("the CA key cannot be parsed")]
    KeyPem(#[source] rcgen::Error),
    /// The certificate is not a cluster CA: it is not a CA, or its common name is not
    /// `datacake <cluster> CA`.
    #[error("not a datacake cluster CA: {reason}")]
    NotAClusterCa {
        /// What is missing.
        reason: String,
    },
    /// The key does not belong to the CA certificate.
    #[error("the CA key does not match the CA certificate's public key")]
    KeyMismatch,
    /// rcgen failed to make or sign a certificate.
    #[error("cannot make the certificate")]
    Generate(#[source] rcgen::Error),
}

/// A cluster's certificate authority: its certificate and signing key.
///
/// `Debug` shows the cluster only, never the key.
pub struct ClusterCa {
    cluster: String,
    /// The certificate as it was generated or loaded (what nodes trust).
    cert_pem: String,
    key: KeyPair,
    /// What rcgen signs with: the CA's subject and key identifier. For a loaded CA it is
    /// re-made from the loaded certificate's fields (same name, same key), so what it signs
    /// chains to the loaded certificate.
    issuer: rcgen::Certificate,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// A node's certificate and private key, PEM-encoded.
///
/// `Debug` shows the certificate only, never the key.
#[derive(Clone)]
pub struct NodeCertificate {
    identity: NodeIdentity,
    cert_pem: String,
    key_pem: String,
}

impl fmt::Debug for NodeCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCertificate")
            .field("identity", &self.identity)
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl NodeCertificate {
    /// The identity the certificate names.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// The certificate, PEM-encoded.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key (PKCS#8), PEM-encoded: write it to a file only its owner can read.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

impl ClusterCa {
    /// A new CA for `cluster`: a fresh ECDSA P-256 key, valid from an hour ago for
    /// [`CA_VALIDITY`]; fails if the cluster id cannot be named in a node identity.
    pub fn generate(cluster: &str) -> Result<Self, CertError> {
        let now = SystemTime::now();
        Self::generate_valid(cluster, now - BACKDATE, now + CA_VALIDITY)
    }

    /// Like [`generate`](Self::generate), valid from `not_before` to `not_after`.
    pub fn generate_valid(
        cluster: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Self, CertError> {
        check_cluster_id(cluster)?;
        let mut params = CertificateParams::default();
        set_validity(&mut params, not_before, not_after)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            format!("{CA_NAME_PREFIX}{cluster}{CA_NAME_SUFFIX}"),
        );
        // Path length 0: the CA signs node certificates, not other CAs.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(CertError::Generate)?;
        let issuer = params.self_signed(&key).map_err(CertError::Generate)?;
        Ok(Self {
            cluster: cluster.to_owned(),
            cert_pem: issuer.pem(),
            key,
            issuer,
        })
    }

    /// The CA whose certificate and key are `cert_pem` and `key_pem` (as written from
    /// [`cert_pem`](Self::cert_pem) and [`key_pem`](Self::key_pem)). The cluster is read from
    /// the certificate's common name; the key must belong to the certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|e| {
            CertError::CertificatePem {
                reason: e.to_string(),
            }
        })?;
        if pem.label != "CERTIFICATE" {
            return Err(CertError::CertificatePem {
                reason: format!("expected a CERTIFICATE block, found {}", pem.label),
            });
        }
        let (_, cert) =
            X509Certificate::from_der(&pem.contents).map_err(|e| CertError::CertificatePem {
                reason: e.to_string(),
            })?;
        if !cert.is_ca() {
            return Err(CertError::NotAClusterCa {
                reason: "the certificate is not a CA".into(),
            });
        }
        let cluster = cluster_of(&cert)?;
        let key = KeyPair::from_pem(key_pem).map_err(CertError::KeyPem)?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CertError::KeyMismatch);
        }
        let params = CertificateParams::from_ca_cert_der(&pem.contents.clone().into())
            .map_err(CertError::Generate)?;
        let issuer = params.self_signed(&key).map_err(CertError::Generate)?;
        Ok(Self {
            cluster,
            cert_pem: cert_pem.to_owned(),
            key,
            issuer,
        })
    }

    /// The cluster this CA signs for.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The CA certificate, PEM-encoded: what every node trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (PKCS#8), PEM-encoded: write it to a file only its owner can
    /// read, and keep it off the nodes.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate for node `node_id`, valid from an hour ago for [`NODE_VALIDITY`], naming
    /// its identity URI and each of `hosts` (an IP address or a DNS name).
    pub fn issue_node(
        &self,
        node_id: NodeId,
        hosts: &[String],
    ) -> Result<NodeCertificate, CertError> {
        let now = SystemTime::now();
        self.issue_node_valid(node_id, hosts, now - BACKDATE, now + NODE_VALIDITY)
    }

    /// Like [`issue_node`](Self::issue_node), valid from `not_before` to `not_after` (e.g. an
    /// already expired certificate, for tests).
    pub fn issue_node_valid(
        &self,
        node_id: NodeId,
        hosts: &[String],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<NodeCertificate, CertError> {
        let identity = NodeIdentity::new(self.cluster.clone(), node_id)?;
        let mut params = CertificateParams::default();
        set_validity(&mut params, not_before, not_after)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            format!("datacake {} node {node_id}", self.cluster),
        );
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let uri = identity.to_uri().try_into().map_err(CertError::Generate)?;
        params.subject_alt_names.push(SanType::URI(uri));
        for host in hosts {
            params.subject_alt_names.push(host_name(host)?);
        }
        let key = KeyPair::generate().map_err(CertError::Generate)?;
        let cert = params
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(CertError::Generate)?;
        Ok(NodeCertificate {
            identity,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The cluster named by a CA certificate's common name `datacake <cluster> CA`.
fn cluster_of(cert: &X509Certificate<'_>) -> Result<String, CertError> {
    let not_ours = || CertError::NotAClusterCa {
        reason: format!(
            "its common name is not `{CA_NAME_PREFIX}<cluster>{CA_NAME_SUFFIX}` (subject: {})",
            cert.subject()
        ),
    };
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(not_ours)?;
    let cluster = name
        .strip_prefix(CA_NAME_PREFIX)
        .and_then(|rest| rest.strip_suffix(CA_NAME_SUFFIX))
        .ok_or_else(not_ours)?;
    check_cluster_id(cluster)?;
    Ok(cluster.to_owned())
}

/// The subject alternative name of `host`: an IP address, else a DNS name.
fn host_name(host: &str) -> Result<SanType, CertError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let invalid = || CertError::InvalidHost {
        host: host.to_owned(),
    };
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(invalid());
    }
    host.to_owned()
        .try_into()
        .map(SanType::DnsName)
        .map_err(|_| invalid())
}

/// 9999-12-31T23:59:59Z, the last second an X.509 date can name, since the Unix epoch.
const LAST_X509_SECOND: Duration = Duration::from_secs(253_402_300_799);

fn set_validity(
    params: &mut CertificateParams,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<(), CertError> {
    if not_after <= not_before {
        return Err(CertError::Validity {
            reason: "it ends before it starts",
        });
    }
    let since_epoch = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_err(|_| CertError::Validity {
                reason: "it starts before 1970",
            })
    };
    // X.509 dates end with the year 9999 (and adding more to a date would panic).
    if since_epoch(not_after)? > LAST_X509_SECOND {
        return Err(CertError::Validity {
            reason: "it ends after the year 9999",
        });
    }
    // rcgen takes `time::OffsetDateTime`; the epoch plus a std duration avoids naming `time`.
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + since_epoch(not_before)?;
    params.not_after = epoch + since_epoch(not_after)?;
    Ok(())
}

#[cfg(test)]
impl ClusterCa {
    /// Mutual TLS for node `node_id` of this CA's cluster: a fresh certificate (no host
    /// names), trusting this CA. A fixture of the crate's TLS tests.
    pub(crate) fn node_tls(&self, node_id: NodeId) -> datacake_rpc::TlsConfig {
        let cert = self.issue_node(node_id, &[]).unwrap();
        datacake_rpc::TlsConfig::mutual_from_pem(
            self.cert_pem().as_bytes(),
            cert.cert_pem().as_bytes(),
            cert.key_pem().as_bytes(),
        )
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use rustls::RootCertStore;
    use x509_parser::extensions::GeneralName;

    use super::*;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("a PEM certificate")
    }

    fn roots(ca: &ClusterCa) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(der(ca.cert_pem())).expect("a CA certificate");
        Arc::new(roots)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// Verifies `node` as a TLS client (clientAuth) and as the server `host` (serverAuth)
    /// against `ca`, at `now`.
    fn verify(
        ca: &ClusterCa,
        node: &NodeCertificate,
        host: &str,
        now: SystemTime,
    ) -> Result<(), rustls::Error> {
        let now = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap());
        let cert = der(node.cert_pem());
        WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
            .build()
            .unwrap()
            .verify_client_cert(&cert, &[], now)?;
        WebPkiServerVerifier::builder_with_provider(roots(ca), provider())
            .build()
            .unwrap()
            .verify_server_cert(
                &cert,
                &[],
                &ServerName::try_from(host.to_owned()).unwrap(),
                &[],
                now,
            )?;
        Ok(())
    }

    fn san_uris(pem: &str) -> (Vec<String>, Vec<String>, Vec<Vec<u8>>) {
        let cert = der(pem);
        let (_, parsed) = X509Certificate::from_der(&cert).unwrap();
        let san = parsed
            .subject_alternative_name()
            .unwrap()
            .expect("a SAN extension");
        let (mut uris, mut dns, mut ips) = (Vec::new(), Vec::new(), Vec::new());
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) => uris.push(uri.to_string()),
                GeneralName::DNSName(name) => dns.push(name.to_string()),
                GeneralName::IPAddress(ip) => ips.push(ip.to_vec()),
                other => panic!("unexpected name {other:?}"),
            }
        }
        (uris, dns, ips)
    }

    #[test]
    fn node_certificates_name_the_identity_and_chain_to_the_ca() {
        let ca = ClusterCa::generate("orders-prod.eu_1").unwrap();
        let hosts = [
            "10.0.0.7".to_owned(),
            "kv-7.example".to_owned(),
            "::1".to_owned(),
        ];
        let node = ca.issue_node(7, &hosts).unwrap();
        assert_eq!(node.identity().to_uri(), "datacake://orders-prod.eu_1/7");

        let (uris, dns, ips) = san_uris(node.cert_pem());
        let identity: NodeIdentity = uris[0].parse().unwrap();
        assert_eq!((uris.len(), &identity), (1, node.identity()));
        assert_eq!(dns, ["kv-7.example"]);
        assert_eq!(
            ips,
            [
                vec![10, 0, 0, 7],
                std::net::Ipv6Addr::LOCALHOST.octets().to_vec()
            ]
        );

        let der_cert = der(node.cert_pem());
        let (_, parsed) = X509Certificate::from_der(&der_cert).unwrap();
        let ca_der = der(ca.cert_pem());
        let (_, ca_parsed) = X509Certificate::from_der(&ca_der).unwrap();
        assert!(!parsed.is_ca() && ca_parsed.is_ca());
        assert_eq!(parsed.issuer(), ca_parsed.subject());
        assert_eq!(
            ca_parsed
                .subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "datacake orders-prod.eu_1 CA"
        );

        // Valid as a client and as a server for each DNS name and IP address.
        let now = SystemTime::now();
        for host in ["kv-7.example", "10.0.0.7", "::1"] {
            verify(&ca, &node, host, now).unwrap_or_else(|e| panic!("{host}: {e}"));
        }
        assert!(
            verify(&ca, &node, "kv-8.example", now).is_err(),
            "a name it lacks"
        );
        // The validity period: a year from about now.
        assert!(verify(&ca, &node, "kv-7.example", now + NODE_VALIDITY + BACKDATE).is_err());
    }

    #[test]
    fn another_ca_does_not_vouch_for_the_node() {
        use rustls::CertificateError::{BadSignature, UnknownIssuer};
        let ca = ClusterCa::generate("orders").unwrap();
        let node = ca.issue_node(1, &["localhost".into()]).unwrap();
        // Same name, other key: the name chains, the signature does not.
        let twin = ClusterCa::generate("orders").unwrap();
        let error = verify(&twin, &node, "localhost", SystemTime::now()).unwrap_err();
        assert!(
            matches!(error, rustls::Error::InvalidCertificate(BadSignature)),
            "{error:?}"
        );
        let other = ClusterCa::generate("billing").unwrap();
        let error = verify(&other, &node, "localhost", SystemTime::now()).unwrap_err();
        assert!(
            matches!(error, rustls::Error::InvalidCertificate(UnknownIssuer)),
            "{error:?}"
        );
    }

    #[test]
    fn expired_certificates_can_be_made_and_are_refused() {
        let ca = ClusterCa::generate("orders").unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(24 * 60 * 60);
        let expired = ca
            .issue_node_valid(3, &["localhost".into()], now - 2 * day, now - day)
            .unwrap();
        let error = verify(&ca, &expired, "localhost", now).unwrap_err();
        assert!(
            matches!(
                error,
                rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)
                    | rustls::Error::InvalidCertificate(
                        rustls::CertificateError::ExpiredContext { .. }
                    )
            ),
            "{error:?}"
        );
        verify(&ca, &expired, "localhost", now - day - day / 2).unwrap();
        assert!(matches!(
            ca.issue_node_valid(3, &[], now, now - day),
            Err(CertError::Validity { .. })
        ));
        // Past the year 9999: refused, not a panic (a `--days` of u32::MAX).
        let forever = now + Duration::from_secs(u64::from(u32::MAX) * 86_400);
        assert!(matches!(
            ca.issue_node_valid(3, &[], now, forever),
            Err(CertError::Validity { .. })
        ));
        let last = UNIX_EPOCH + LAST_X509_SECOND;
        ca.issue_node_valid(3, &[], now, last).unwrap();
    }

    #[test]
    fn a_loaded_ca_keeps_signing_for_its_certificate() {
        let ca = ClusterCa::generate("orders").unwrap();
        let loaded = ClusterCa::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(loaded.cluster(), "orders");
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        let node = loaded.issue_node(9, &["localhost".into()]).unwrap();
        // Verified against the original certificate, not the re-made issuer.
        verify(&ca, &node, "localhost", SystemTime::now()).unwrap();
        assert_eq!(node.identity().to_uri(), "datacake://orders/9");
    }

    #[test]
    fn ca_files_that_do_not_fit_are_refused() {
        let ca = ClusterCa::generate("orders").unwrap();
        let other = ClusterCa::generate("orders").unwrap();
        let node = ca.issue_node(1, &[]).unwrap();
        assert!(matches!(
            ClusterCa::from_pem(ca.cert_pem(), &other.key_pem()),
            Err(CertError::KeyMismatch)
        ));
        assert!(matches!(
            ClusterCa::from_pem(node.cert_pem(), node.key_pem()),
            Err(CertError::NotAClusterCa { .. })
        ));
        assert!(matches!(
            ClusterCa::from_pem("not a pem", &ca.key_pem()),
            Err(CertError::CertificatePem { .. })
        ));
        assert!(matches!(
            ClusterCa::from_pem(
                ca.cert_pem(),
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            ),
            Err(CertError::KeyPem(_))
        ));
        // A foreign CA (rcgen's default name) is not a cluster CA.
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let foreign = params.self_signed(&key).unwrap();
        assert!(matches!(
            ClusterCa::from_pem(&foreign.pem(), &key.serialize_pem()),
            Err(CertError::NotAClusterCa { .. })
        ));
    }

    #[test]
    fn bad_cluster_ids_and_hosts_are_refused() {
        for cluster in ["", "or ders", "a/b", "ü", &"a".repeat(65)] {
            assert!(
                matches!(
                    ClusterCa::generate(cluster),
                    Err(CertError::ClusterId(IdentityError::ClusterId { .. }))
                ),
                "{cluster:?}"
            );
        }
        let ca = ClusterCa::generate("orders").unwrap();
        for host in [
            "",
            "kv 7",
            "-kv",
            "kv..example",
            "kv_7.example",
            "ü.example",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(
                    ca.issue_node(1, &[host.to_owned()]),
                    Err(CertError::InvalidHost { .. })
                ),
                "{host:?}"
            );
        }
    }

    #[test]
    fn debug_output_hides_private_keys() {
        let ca = ClusterCa::generate("orders").unwrap();
        let node = ca.issue_node(1, &[]).unwrap();
        for text in [format!("{ca:?}"), format!("{node:?}")] {
            assert!(!text.contains("PRIVATE KEY"), "{text}");
        }
    }
}
