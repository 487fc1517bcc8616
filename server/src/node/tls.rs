//! Serving HTTPS (`--tls-cert`, `--tls-key`): the rustls acceptor the listener puts in front of
//! the same router (`listen.rs`).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The certificates in a PEM file, at least one; an error names the file as `what` and says what
/// it should hold.
pub(crate) fn certificates(
    path: &Path,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| format!("the {what} {} cannot be read: {err}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "the {what} {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// A TLS acceptor for the certificate chain and key in these PEM files; an error says which
/// file is wrong and how.
pub(crate) fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let chain = certificates(cert, "TLS certificate")?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|err| format!("the TLS key {} cannot be read: {err}", key.display()))?;
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| format!("TLS cannot be set up: {err}"))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|err| format!("the TLS certificate and key do not make a pair: {err}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
