//! [`TlsOptions`]: how an HTTPS peer's certificate is checked, for Keystone, the image API and
//! the management API.

use std::path::PathBuf;
use std::time::Duration;

use super::error::KeystoneError;

/// How to verify the certificates of HTTPS peers: the system's roots by default, plus a private
/// CA's (`--os-cacert`, `cafile`), or not at all (`--insecure`, an explicit opt-out).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TlsOptions {
    /// A PEM file of CA certificates trusted in addition to the system's.
    pub cafile: Option<PathBuf>,
    /// Accept any certificate. Only for tests and emergencies: anyone on the path can then read
    /// and change the traffic, tokens included.
    pub insecure: bool,
}

impl TlsOptions {
    /// The options as a tool's flags or a configuration file give them: a CA file (if any)
    /// trusted beside the system's roots, and `insecure`.
    pub fn new(cafile: Option<PathBuf>, insecure: bool) -> Self {
        TlsOptions { cafile, insecure }
    }

    /// Trusts the CAs in `cafile` as well as the system's.
    pub fn with_cafile(cafile: impl Into<PathBuf>) -> Self {
        TlsOptions {
            cafile: Some(cafile.into()),
            insecure: false,
        }
    }

    /// An HTTP client (HTTP and HTTPS) that verifies certificates as these options say.
    pub(crate) fn client_builder(&self) -> Result<reqwest::ClientBuilder, KeystoneError> {
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        if let Some(cafile) = &self.cafile {
            let pem = std::fs::read(cafile).map_err(|err| KeystoneError::Tls {
                reason: format!("the CA file {} cannot be read: {err}", cafile.display()),
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|certs| !certs.is_empty())
                .ok_or_else(|| KeystoneError::Tls {
                    reason: format!(
                        "the CA file {} holds no PEM certificate; give the CA's certificate \
                         (-----BEGIN CERTIFICATE-----)",
                        cafile.display()
                    ),
                })?;
            builder = builder.tls_certs_merge(certs);
        }
        if self.insecure {
            tracing::warn!("certificate verification is off (insecure): use it only for tests");
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        Ok(builder)
    }
}
