//! [`AuthOptions`]: who to log in as, and where.

use super::secret::Secret;
use super::tls::TlsOptions;

/// A user or project: by id, or by name within a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// By id; ids are unique across domains.
    Id(String),
    /// By name, within a domain.
    Name {
        /// The name.
        name: String,
        /// Its domain.
        domain: Domain,
    },
}

/// A domain, by id or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Domain {
    /// By id (`default` is Keystone's own).
    Id(String),
    /// By name (`Default` is Keystone's own).
    Name(String),
}

/// How to prove who we are.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Credential {
    /// A user's password; the token is scoped to [`AuthOptions::project`]. Renewable.
    Password {
        /// The user.
        user: Named,
        /// The password.
        password: Secret,
    },
    /// An application credential (what operators give services today): by id, or by name with
    /// its user. Its scope is the one it was created with. Renewable.
    ApplicationCredential {
        /// The credential's id.
        id: Option<String>,
        /// The credential's name, with `user`.
        name: Option<String>,
        /// The credential's owner, needed with `name`.
        user: Option<Named>,
        /// The secret.
        secret: Secret,
    },
    /// A token someone else obtained. Used as given: it cannot be renewed.
    Token(Secret),
}

/// Which of a service's catalog endpoints to use (`--os-interface`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interface {
    /// The endpoint users reach (the default, as in the OpenStack clients).
    #[default]
    Public,
    /// The endpoint on the cloud's internal network.
    Internal,
    /// The admin endpoint.
    Admin,
}

impl Interface {
    /// The name Keystone's catalog uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Public => "public",
            Interface::Internal => "internal",
            Interface::Admin => "admin",
        }
    }

    /// Parses `public`, `internal` or `admin` (also with the `URL` suffix of old clients).
    pub fn parse(text: &str) -> Option<Self> {
        match text
            .trim()
            .trim_end_matches("URL")
            .to_ascii_lowercase()
            .as_str()
        {
            "public" => Some(Interface::Public),
            "internal" => Some(Interface::Internal),
            "admin" => Some(Interface::Admin),
            _ => None,
        }
    }
}

/// Who to log in as, where, and how to reach Keystone.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthOptions {
    /// Keystone's URL (`http://keystone:5000/v3`; `/v3` is added when missing).
    pub auth_url: String,
    /// The credential.
    pub credential: Credential,
    /// The project to scope a password login to.
    pub project: Option<Named>,
    /// The region whose endpoints to use, when the catalog has several.
    pub region: Option<String>,
    /// Which endpoint of a service to use.
    pub interface: Interface,
    /// How to verify Keystone's (and the endpoints') certificates.
    pub tls: TlsOptions,
}

impl AuthOptions {
    /// A password login of `user` scoped to `project`.
    pub fn password(
        auth_url: impl Into<String>,
        user: Named,
        password: impl Into<Secret>,
        project: Named,
    ) -> Self {
        AuthOptions {
            auth_url: auth_url.into(),
            credential: Credential::Password {
                user,
                password: password.into(),
            },
            project: Some(project),
            region: None,
            interface: Interface::default(),
            tls: TlsOptions::default(),
        }
    }

    /// A login with an application credential's id and secret.
    pub fn application_credential(
        auth_url: impl Into<String>,
        id: impl Into<String>,
        secret: impl Into<Secret>,
    ) -> Self {
        AuthOptions {
            auth_url: auth_url.into(),
            credential: Credential::ApplicationCredential {
                id: Some(id.into()),
                name: None,
                user: None,
                secret: secret.into(),
            },
            project: None,
            region: None,
            interface: Interface::default(),
            tls: TlsOptions::default(),
        }
    }

    /// Who logs in, for messages: `user admin in domain Default`, `application credential
    /// 1f2e...`, or `a given token`. Never a secret.
    pub fn who(&self) -> String {
        match &self.credential {
            Credential::Password { user, .. } => format!("user {}", describe(user)),
            Credential::ApplicationCredential { id: Some(id), .. } => {
                format!("application credential {id}")
            }
            Credential::ApplicationCredential { name, user, .. } => format!(
                "application credential {} of user {}",
                name.as_deref().unwrap_or("?"),
                user.as_ref().map(describe).unwrap_or_default()
            ),
            Credential::Token(_) => "a given token".into(),
        }
    }
}

fn describe(named: &Named) -> String {
    match named {
        Named::Id(id) => format!("with id {id}"),
        Named::Name {
            name,
            domain: Domain::Name(domain),
        } => format!("{name} in domain {domain}"),
        Named::Name {
            name,
            domain: Domain::Id(domain),
        } => format!("{name} in domain id {domain}"),
    }
}
