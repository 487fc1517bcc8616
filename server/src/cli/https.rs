//! The tools' HTTP client: HTTPS certificates checked as [`TlsOptions`] say.

use std::time::Duration;

use tower_image_cache::keystone::TlsOptions;

/// An HTTP client builder (HTTP and HTTPS) that trusts the system's roots plus `tls.cafile`'s
/// CAs, or any certificate when `tls.insecure`; connections get 10 s to open.
pub(crate) fn client_builder(tls: &TlsOptions) -> Result<reqwest::ClientBuilder, String> {
    let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
    if let Some(cafile) = &tls.cafile {
        let pem = std::fs::read(cafile)
            .map_err(|err| format!("the CA file {} cannot be read: {err}", cafile.display()))?;
        match reqwest::Certificate::from_pem_bundle(&pem) {
            Ok(certs) if !certs.is_empty() => builder = builder.tls_certs_merge(certs),
            _ => {
                return Err(format!(
                    "the CA file {} holds no PEM certificate; give the CA's certificate \
                     (-----BEGIN CERTIFICATE-----)",
                    cafile.display()
                ))
            }
        }
    }
    if tls.insecure {
        tracing::warn!("certificate verification is off (insecure): use it only for tests");
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    Ok(builder)
}
