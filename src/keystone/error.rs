//! [`KeystoneError`]: why a login, a token check or an endpoint lookup failed, as a sentence.

use std::fmt;

use http::StatusCode;

/// Why talking to Keystone failed. Each reads as a sentence naming what failed (the user, the
/// URL) and what to do; none contains a secret.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeystoneError {
    /// The options are incomplete or wrong.
    Config {
        /// Where the options came from.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// Keystone could not be reached.
    Unreachable {
        /// The URL called.
        url: String,
        /// The cause, down to the operating system's.
        reason: String,
    },
    /// Keystone refused the login (401): wrong password, unknown user, disabled credential.
    LoginRefused {
        /// Who tried to log in.
        who: String,
        /// Keystone's URL.
        auth_url: String,
        /// Keystone's message.
        message: String,
    },
    /// Keystone answered something other than success or a refusal.
    Answer {
        /// The URL called.
        url: String,
        /// The status.
        status: StatusCode,
        /// Keystone's message, or a summary of the body.
        message: String,
    },
    /// The catalog has no matching endpoint.
    NoEndpoint {
        /// The service type asked for (`image`).
        service_type: String,
        /// The interface asked for.
        interface: &'static str,
        /// The region asked for.
        region: Option<String>,
        /// What the catalog offers for that type.
        offered: Vec<String>,
    },
    /// The CA file given for TLS could not be used.
    Tls {
        /// What is wrong.
        reason: String,
    },
}

impl KeystoneError {
    /// Whether the cause is Keystone being unreachable or failing (as opposed to refusing the
    /// credential): a caller answers 503 for these, not 401.
    pub fn is_unavailable(&self) -> bool {
        match self {
            KeystoneError::Unreachable { .. } => true,
            KeystoneError::Answer { status, .. } => status.is_server_error(),
            _ => false,
        }
    }
}

impl fmt::Display for KeystoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeystoneError::Config { origin, reason } => {
                write!(
                    f,
                    "the Keystone options in {origin} cannot be used: {reason}"
                )
            }
            KeystoneError::Unreachable { url, reason } => write!(
                f,
                "Keystone at {url} cannot be reached: {reason}; check the auth URL and that \
                 Keystone is running"
            ),
            KeystoneError::LoginRefused {
                who,
                auth_url,
                message,
            } => write!(
                f,
                "Keystone at {auth_url} refused the login of {who}: {message} Check the \
                 credential (OS_USERNAME/OS_PASSWORD, or the application credential), the \
                 domains and the project"
            ),
            KeystoneError::Answer {
                url,
                status,
                message,
            } => write!(f, "Keystone at {url} answered {status}: {message}"),
            KeystoneError::NoEndpoint {
                service_type,
                interface,
                region,
                offered,
            } => {
                write!(
                    f,
                    "the Keystone catalog has no {interface} endpoint of type {service_type}"
                )?;
                if let Some(region) = region {
                    write!(f, " in region {region}")?;
                }
                if offered.is_empty() {
                    write!(
                        f,
                        " (it has none of that type); pass the URL with -H instead"
                    )
                } else {
                    write!(
                        f,
                        "; it offers: {} (choose with --os-interface/--os-region-name)",
                        offered.join(", ")
                    )
                }
            }
            KeystoneError::Tls { reason } => f.write_str(reason),
        }
    }
}

impl std::error::Error for KeystoneError {}
