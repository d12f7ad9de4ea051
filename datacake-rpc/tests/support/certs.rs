//! A throwaway certificate authority for the TLS tests (rcgen), shared by the test crates.

use datacake_rpc::TlsConfig;

/// A certificate authority for tests.
pub(crate) struct Ca {
    pub(crate) key: rcgen::KeyPair,
    pub(crate) cert: rcgen::Certificate,
}

impl Ca {
    pub(crate) fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Self { key, cert }
    }

    /// A leaf for both ends naming `uri`, valid now unless `expired`.
    pub(crate) fn issue(&self, uri: &str, expired: bool) -> TlsConfig {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::URI(uri.try_into().unwrap()));
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        TlsConfig::mutual_from_pem(
            self.cert.pem().as_bytes(),
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
        )
        .unwrap()
    }
}
