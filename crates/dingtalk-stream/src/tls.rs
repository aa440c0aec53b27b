//! The client's TLS configuration: one set of trust roots for the gateway's `https://` and the
//! Stream socket's `wss://`.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::Error;

/// Parses every `CERTIFICATE` block of `pem`.
pub(crate) fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("extra root certificate: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Config(
            "extra root certificate: no CERTIFICATE block in the PEM".into(),
        ));
    }
    Ok(certs)
}

/// A rustls client configuration trusting the platform's roots (on Linux the system store, or
/// the files `SSL_CERT_FILE` / `SSL_CERT_DIR` name), plus `extra_roots`, with the `ring`
/// provider passed explicitly: no process-wide default provider is installed.
///
/// This is the same verifier reqwest uses (`rustls-platform-verifier`), so the gateway request
/// and the WebSocket trust the same certificates.
pub(crate) fn client_config(
    extra_roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
        extra_roots.iter().cloned(),
        provider.clone(),
    )
    .map_err(|e| Error::Config(format!("tls trust roots: {e}")))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("tls protocol versions: {e}")))?
        .dangerous()
        // Not "dangerous": the platform verifier checks chains and names like the default
        // WebPKI verifier, only with the platform's roots.
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
