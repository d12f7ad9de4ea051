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
        if expired {
            let first_of_2000 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(946_684_800);
            return self.issue_until(uri, first_of_2000);
        }
        self.issue_until(
            uri,
            std::time::SystemTime::now() + std::time::Duration::from_secs(3_600),
        )
    }

    /// A leaf for both ends naming `uri`, valid from a year before `not_after` until then.
    pub(crate) fn issue_until(&self, uri: &str, not_after: std::time::SystemTime) -> TlsConfig {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::URI(uri.try_into().unwrap()));
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        // rcgen takes `time::OffsetDateTime`: the epoch plus a std duration avoids naming it.
        let since_epoch = not_after.duration_since(std::time::UNIX_EPOCH).unwrap();
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        params.not_after = epoch + since_epoch;
        params.not_before =
            epoch + since_epoch.saturating_sub(std::time::Duration::from_secs(365 * 86_400));
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        TlsConfig::mutual_from_pem(
            self.cert.pem().as_bytes(),
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
        )
        .unwrap()
    }
}
