//! TLS for the store's connections: one rustls client configuration, built from the URL's
//! `sslmode`, `sslrootcert`, `sslcert` and `sslkey` when the store is configured and shared
//! by the pool and the `LISTEN` connection.
//!
//! Written here rather than taken from `tokio-postgres-rustls` (0.13, the one for rustls 0.23):
//! it takes a finished `ClientConfig`, so the per-`sslmode` verifiers below would be ours
//! anyway, and for channel binding it adds `ring`, `x509-cert` and `const-oid` as direct
//! dependencies of this generic engine. What remains is a `MakeTlsConnect` around
//! `tokio_rustls::TlsConnector`, a few lines, over the rustls the workspace already builds
//! (ring passed explicitly, no process-wide default provider).
//!
//! Trust: with `sslrootcert`, exactly that file's roots (as libpq); without it, the platform's
//! (on Linux the system store, or the files `SSL_CERT_FILE` / `SSL_CERT_DIR` name), as every
//! other TLS client of the workspace. libpq would read `~/.postgresql/root.crt` instead; a
//! service has no such home, and its operators already manage the platform store.
//!
//! No channel binding is offered (SCRAM authenticates without `-PLUS`): binding to the
//! server's certificate needs the hash of its signature algorithm, i.e. parsing it.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use super::config::{SslMode, TlsParams};
use crate::error::StoreError;
use crate::store::StoreResult;

/// The TLS connector of every connection of one store (cheap to clone). With
/// `sslmode=disable` it holds no configuration and the driver never asks it to connect.
#[derive(Clone)]
pub(crate) struct MakeRustls {
    config: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for MakeRustls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MakeRustls")
            .field("tls", &self.config.is_some())
            .finish()
    }
}

impl MakeRustls {
    /// Reads the files the parameters name and builds the client configuration.
    ///
    /// # Errors
    ///
    /// [`StoreError::Config`] naming the parameter whose file cannot be read or holds no
    /// usable certificate or key.
    pub(crate) fn new(params: &TlsParams) -> StoreResult<MakeRustls> {
        if params.mode == SslMode::Disable {
            return Ok(MakeRustls { config: None });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = verifier(params, &provider)?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::config("sslmode", format!("TLS protocol versions: {e}")))?
            .dangerous()
            // The verifier is chosen by `sslmode` (see `verifier`); only `prefer` and
            // `require` without `sslrootcert` skip the certificate check, as libpq does.
            .with_custom_certificate_verifier(verifier);
        let mut config = match (&params.cert, &params.key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(read_certs("sslcert", cert)?, read_key(key)?)
                .map_err(|e| StoreError::config("sslkey", format!("{}: {e}", key.display())))?,
            _ => builder.with_no_client_auth(),
        };
        // PostgreSQL 17 checks it when offered (and requires it for `sslnegotiation=direct`);
        // older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(MakeRustls {
            config: Some(Arc::new(config)),
        })
    }
}

/// libpq's checks per mode: `verify-full` the chain and the name; `verify-ca` the chain only;
/// `prefer` and `require` nothing, or the chain when `sslrootcert` is given.
fn verifier(
    params: &TlsParams,
    provider: &Arc<CryptoProvider>,
) -> StoreResult<Arc<dyn ServerCertVerifier>> {
    let checked: Arc<dyn ServerCertVerifier> = match &params.root_cert {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs("sslrootcert", path)? {
                roots.add(cert).map_err(|e| {
                    StoreError::config("sslrootcert", format!("{}: {e}", path.display()))
                })?;
            }
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| {
                    StoreError::config("sslrootcert", format!("{}: {e}", path.display()))
                })?
        }
        None if matches!(params.mode, SslMode::Prefer | SslMode::Require) => {
            return Ok(Arc::new(NoCertificateCheck(provider.clone())));
        }
        None => Arc::new(
            rustls_platform_verifier::Verifier::new(provider.clone()).map_err(|e| {
                StoreError::config("sslrootcert", format!("the platform's trust roots: {e}"))
            })?,
        ),
    };
    Ok(match params.mode {
        SslMode::VerifyFull => checked,
        _ => Arc::new(AnyName(checked)),
    })
}

/// Every `CERTIFICATE` of a PEM file; none is an error.
fn read_certs(parameter: &str, path: &Path) -> StoreResult<Vec<CertificateDer<'static>>> {
    let pem = read(parameter, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::config(parameter, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(StoreError::config(
            parameter,
            format!("{}: no PEM certificate in it", path.display()),
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> StoreResult<PrivateKeyDer<'static>> {
    let pem = read("sslkey", path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| StoreError::config("sslkey", format!("{}: {e}", path.display())))
}

fn read(parameter: &str, path: &Path) -> StoreResult<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| StoreError::config(parameter, format!("cannot read {}: {e}", path.display())))
}

/// `verify-ca`: the inner verifier's verdict, except that a certificate for another name
/// passes. rustls' WebPKI verifier (which the platform verifier uses on Linux) checks the
/// chain before the name, so a name error means the chain was good.
#[derive(Debug)]
struct AnyName(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without `sslrootcert`: encryption without knowing who the server
/// is (libpq's meaning). The handshake signature is still checked, so the server holds the
/// key of the certificate it sent.
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// === impl MakeRustls ===

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = std::convert::Infallible;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, Self::Error> {
        // The driver asks for every host, Unix sockets too (with an empty name), before it
        // knows whether TLS is used: a bad name is an error only when connecting with it.
        Ok(RustlsConnect {
            config: self.config.clone(),
            name: ServerName::try_from(domain.to_owned()).ok(),
            domain: domain.to_owned(),
        })
    }
}

/// One connection's TLS handshake, to the host it names.
#[derive(Debug)]
pub(crate) struct RustlsConnect {
    config: Option<Arc<ClientConfig>>,
    name: Option<ServerName<'static>>,
    domain: String,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let config = self
                .config
                .ok_or_else(|| io::Error::other("TLS is off (sslmode=disable)"))?;
            let name = self.name.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{:?} is not a host name or address TLS can check",
                        self.domain
                    ),
                )
            })?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream(tls))
        })
    }
}

/// A connection over TLS.
#[derive(Debug)]
pub(crate) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}
