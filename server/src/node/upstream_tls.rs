//! HTTPS to the upstream image API: rustls, the system's roots plus a private CA
//! (`upstream_cafile`), or no verification at all (`upstream_insecure`, an explicit opt-out).

use std::sync::Arc;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use tower_image_cache::keystone::TlsOptions;

/// A connector for `http://` and `https://` upstreams, verifying certificates as `tls` says.
/// An error is a sentence naming the CA file at fault.
pub(crate) fn connector(
    tls: &TlsOptions,
    connect_timeout: Option<std::time::Duration>,
) -> Result<HttpsConnector<HttpConnector>, String> {
    let provider = Arc::new(crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS to the upstream cannot be set up: {err}"))?
        .dangerous();
    let verifier: Arc<dyn ServerCertVerifier> = if tls.insecure {
        tracing::warn!(
            "certificates of the upstream are not verified (upstream_insecure): use it only for tests"
        );
        Arc::new(AcceptAnyCertificate(provider))
    } else {
        let extra = match &tls.cafile {
            Some(cafile) => super::tls::certificates(cafile, "upstream's CA file")?,
            None => Vec::new(),
        };
        Arc::new(
            rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider)
                .map_err(|err| format!("the system's CA certificates cannot be loaded: {err}"))?,
        )
    };
    let config = builder
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(connect_timeout);
    Ok(HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// `upstream_insecure`: any certificate is taken; the handshake's signatures are still checked,
/// so the connection is at least with the holder of the certificate's key.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
