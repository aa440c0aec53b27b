//! The sender's TLS configuration: the platform's trust roots plus the builder's extra ones,
//! with rustls' `ring` provider passed explicitly (no process-wide default provider is
//! installed), as `dingtalk-stream` does.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::error::Error;

/// Every `CERTIFICATE` block of each PEM bundle; a bundle without one is an error.
pub(crate) fn certs_from_pems(pems: &[Vec<u8>]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let mut roots = Vec::new();
    for pem in pems {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("CA certificates: {e}")))?;
        if certs.is_empty() {
            return Err(Error::Config(
                "CA certificates: no PEM certificate found".into(),
            ));
        }
        roots.extend(certs);
    }
    Ok(roots)
}

/// A rustls client configuration trusting the platform's roots (on Linux the system store, or
/// the files `SSL_CERT_FILE` / `SSL_CERT_DIR` name) plus `extra_roots`, offering h2 and
/// http/1.1.
pub(crate) fn client_config(
    extra_roots: Vec<CertificateDer<'static>>,
) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())
            .map_err(|e| Error::Config(format!("tls trust roots: {e}")))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("tls protocol versions: {e}")))?
        .dangerous()
        // Not "dangerous": the platform verifier checks chains and names like the default
        // WebPKI verifier, only with the platform's roots.
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        let err = certs_from_pems(&[b"not a pem".to_vec()]).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        assert!(certs_from_pems(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_config_builds_without_a_process_default_provider() {
        let config = client_config(Vec::new()).unwrap();
        assert_eq!(config.alpn_protocols.len(), 2);
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
    }
}
