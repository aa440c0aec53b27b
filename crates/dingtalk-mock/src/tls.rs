//! TLS mode: a throwaway CA and a server certificate for `localhost`, `127.0.0.1` and `::1`,
//! or a certificate and key given as PEM; and the accept loop that serves https and wss.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use crate::{Error, Result};

/// How the mock gets its server certificate in TLS mode ([`MockConfig::tls`](crate::MockConfig::tls)).
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum MockTls {
    /// Generate a throwaway CA and, signed by it, a certificate for `localhost`, `127.0.0.1`
    /// and `::1`. Clients trust [`DingTalkMock::ca_pem`](crate::DingTalkMock::ca_pem).
    #[default]
    Generate,
    /// Serve this certificate chain (leaf first) and private key (PKCS#8, PKCS#1 or SEC1), all
    /// PEM. `ca_pem` is what [`DingTalkMock::ca_pem`](crate::DingTalkMock::ca_pem) hands out
    /// (the issuer clients should trust), when known.
    Pem {
        /// The certificate chain, leaf first.
        cert_chain_pem: String,
        /// The private key of the leaf.
        key_pem: String,
        /// The CA that signed the chain, for clients.
        ca_pem: Option<String>,
    },
}

impl std::fmt::Debug for MockTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MockTls::Generate => f.write_str("Generate"),
            MockTls::Pem { ca_pem, .. } => f
                .debug_struct("Pem")
                .field("key_pem", &"<redacted>")
                .field("ca_pem", &ca_pem.as_ref().map(|_| "<set>"))
                .finish_non_exhaustive(),
        }
    }
}

/// The server side of TLS mode, built once at start.
pub(crate) struct ServerTls {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) ca_pem: Option<String>,
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Tls(format!("{what}: {e}"))
}

/// A throwaway CA and a leaf for the loopback names, signed by it.
fn generate() -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String)> {
    let ca_key = KeyPair::generate().map_err(|e| tls_err("ca key", e))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err("ca", e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "dingtalk-mock throwaway CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| tls_err("ca", e))?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf_key = KeyPair::generate().map_err(|e| tls_err("server key", e))?;
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let mut leaf = CertificateParams::new(names).map_err(|e| tls_err("server cert", e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localhost");
    leaf.distinguished_name = dn;
    leaf.use_authority_key_identifier_extension = true;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .map_err(|e| tls_err("server cert", e))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    Ok((vec![leaf_cert.der().clone()], key, ca_cert.pem()))
}

pub(crate) fn server_tls(mode: &MockTls) -> Result<ServerTls> {
    let (chain, key, ca_pem) = match mode {
        MockTls::Generate => {
            let (chain, key, ca) = generate()?;
            (chain, key, Some(ca))
        }
        MockTls::Pem {
            cert_chain_pem,
            key_pem,
            ca_pem,
        } => {
            let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| tls_err("certificate chain", e))?;
            if chain.is_empty() {
                return Err(Error::Tls("no certificate in the chain".into()));
            }
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|e| tls_err("private key", e))?;
            (chain, key, ca_pem.clone())
        }
    };
    // The ring provider passed explicitly: a library installs no process-wide default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("protocol versions", e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls_err("certificate", e))?;
    // HTTP/1.1 only: WebSocket upgrades are HTTP/1.1, and so are the SDKs' HTTP clients.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerTls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        ca_pem,
    })
}
