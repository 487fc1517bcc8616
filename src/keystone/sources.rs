//! Reading [`AuthOptions`] with keystoneauth's option names: from the environment (`OS_*`), a
//! configuration file, or any lookup (a `clouds.yaml` entry, the command line).

use std::path::{Path, PathBuf};

use crate::config::ConfigError;

use super::error::KeystoneError;
use super::options::{AuthOptions, Credential, Domain, Interface, Named};
use super::tls::TlsOptions;

/// The domain a name belongs to when none is given: Keystone's own default domain.
const DEFAULT_DOMAIN_ID: &str = "default";

impl AuthOptions {
    /// Reads keystoneauth's options (`auth_url`, `auth_type`, `username`, `user_id`,
    /// `password`, `user_domain_name`, `user_domain_id`, `project_name`, `project_id`,
    /// `project_domain_name`, `project_domain_id`, `application_credential_id`,
    /// `application_credential_name`, `application_credential_secret`, `token`,
    /// `region_name`, `interface`, `cafile`, `insecure`) through `get`. `origin` names where
    /// they came from in errors ("the environment", a file).
    ///
    /// A user or project given by name without a domain is in the default domain (`default`).
    pub fn from_lookup(
        origin: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, KeystoneError> {
        let get = |key: &str| {
            get(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let bad = |reason: String| KeystoneError::Config {
            origin: origin.to_owned(),
            reason,
        };
        let auth_url = get("auth_url").ok_or_else(|| {
            bad(
                "no Keystone URL is set (auth_url; OS_AUTH_URL or --os-auth-url for the tools)"
                    .into(),
            )
        })?;
        let domain = |prefix: &str| {
            get(&format!("{prefix}_domain_id"))
                .map(Domain::Id)
                .or_else(|| get(&format!("{prefix}_domain_name")).map(Domain::Name))
                .or_else(|| get("default_domain_id").map(Domain::Id))
                .or_else(|| get("default_domain_name").map(Domain::Name))
                .unwrap_or_else(|| Domain::Id(DEFAULT_DOMAIN_ID.into()))
        };
        let user = get("user_id").map(Named::Id).or_else(|| {
            get("username").map(|name| Named::Name {
                name,
                domain: domain("user"),
            })
        });
        let project = get("project_id")
            .or_else(|| get("tenant_id"))
            .map(Named::Id)
            .or_else(|| {
                get("project_name")
                    .or_else(|| get("tenant_name"))
                    .map(|name| Named::Name {
                        name,
                        domain: domain("project"),
                    })
            });
        let auth_type = get("auth_type").map(|t| t.to_ascii_lowercase());
        let wants_app_cred = match auth_type.as_deref() {
            Some(
                "v3applicationcredential" | "applicationcredential" | "application_credential",
            ) => true,
            Some("password" | "v3password" | "token" | "v3token" | "admin_token") | None => {
                auth_type.is_none() && get("application_credential_secret").is_some()
            }
            Some(other) => {
                return Err(bad(format!(
                    "auth_type {other:?} is not supported: use password, v3applicationcredential \
                     or token"
                )))
            }
        };
        let wants_token =
            matches!(
                auth_type.as_deref(),
                Some("token" | "v3token" | "admin_token")
            ) || (auth_type.is_none() && get("password").is_none() && get("token").is_some());
        let credential =
            if wants_app_cred {
                let secret = get("application_credential_secret").ok_or_else(|| {
                bad("an application credential needs its secret (application_credential_secret; \
                     OS_APPLICATION_CREDENTIAL_SECRET)"
                    .into())
            })?;
                let id = get("application_credential_id");
                let name = get("application_credential_name");
                if id.is_none() && (name.is_none() || user.is_none()) {
                    return Err(bad("an application credential needs its id \
                     (application_credential_id), or its name and its user"
                        .into()));
                }
                Credential::ApplicationCredential {
                    id,
                    name,
                    user,
                    secret: secret.into(),
                }
            } else if wants_token {
                let token = get("token").ok_or_else(|| {
                    bad(
                        "auth_type token needs a token (token; OS_AUTH_TOKEN or --os-auth-token)"
                            .into(),
                    )
                })?;
                Credential::Token(token.into())
            } else {
                let user = user.ok_or_else(|| {
                    bad("no user is set (username or user_id; OS_USERNAME or --os-username)".into())
                })?;
                let password = get("password").ok_or_else(|| {
                    bad("no password is set (password; OS_PASSWORD or --os-password)".into())
                })?;
                Credential::Password {
                    user,
                    password: password.into(),
                }
            };
        let interface = match get("interface") {
            None => Interface::default(),
            Some(text) => Interface::parse(&text).ok_or_else(|| {
                bad(format!(
                    "interface {text:?} is not one of public, internal, admin"
                ))
            })?,
        };
        let insecure = match get("insecure").as_deref().map(str::to_ascii_lowercase) {
            None => false,
            Some(v) if ["true", "1", "yes", "on"].contains(&v.as_str()) => true,
            Some(v) if ["false", "0", "no", "off"].contains(&v.as_str()) => false,
            Some(v) => return Err(bad(format!("insecure {v:?} is not true or false"))),
        };
        Ok(AuthOptions {
            auth_url,
            credential,
            project,
            region: get("region_name"),
            interface,
            tls: TlsOptions {
                cafile: get("cafile").or_else(|| get("cacert")).map(PathBuf::from),
                insecure,
            },
        })
    }

    /// Reads the `OS_*` variables an `openrc` sets (`OS_AUTH_URL`, `OS_USERNAME`,
    /// `OS_PASSWORD`, `OS_PROJECT_NAME`, `OS_USER_DOMAIN_NAME`, `OS_PROJECT_DOMAIN_NAME`,
    /// `OS_APPLICATION_CREDENTIAL_ID`, `OS_APPLICATION_CREDENTIAL_SECRET`, `OS_AUTH_TOKEN`,
    /// `OS_REGION_NAME`, `OS_INTERFACE`, `OS_CACERT`, `OS_INSECURE`, ...).
    pub fn from_env() -> Result<Self, KeystoneError> {
        AuthOptions::from_lookup("the environment", |key| {
            let legacy = (key == "token").then_some("OS_TOKEN");
            std::env::var(env_name(key))
                .ok()
                .or_else(|| legacy.and_then(|name| std::env::var(name).ok()))
        })
    }

    /// The identity in Glance's configuration files, if one is set: Glance's
    /// `admin_user`/`admin_password`/`admin_tenant_name`/`auth_url` in `[DEFAULT]` (the cache
    /// tools' options, in the default domain), else keystoneauth's options in
    /// `[keystone_authtoken]` (the section glance-api.conf already has for its service user).
    pub fn from_files<P: AsRef<Path>>(
        files: impl IntoIterator<Item = P>,
    ) -> Result<Option<Self>, KeystoneError> {
        let texts = crate::config::read_files(files).map_err(config_error)?;
        let defaults = crate::config::read_section(&texts, "DEFAULT").map_err(config_error)?;
        let origin = |settings: &std::collections::HashMap<String, crate::config::Setting>,
                      section: &str| {
            let files: Vec<_> = settings
                .values()
                .map(|s| s.file.display().to_string())
                .collect();
            let mut files = files;
            files.sort();
            files.dedup();
            format!("[{section}] of {}", files.join(", "))
        };
        if defaults.contains_key("admin_user") {
            let get = |key: &str| {
                let legacy = match key {
                    "username" => "admin_user",
                    "password" => "admin_password",
                    "project_name" => "admin_tenant_name",
                    "auth_url" => "auth_url",
                    "auth_type" => return Some("password".to_owned()),
                    other => other,
                };
                defaults.get(legacy).map(|s| s.value.clone())
            };
            return AuthOptions::from_lookup(&origin(&defaults, "DEFAULT"), get).map(Some);
        }
        let section =
            crate::config::read_section(&texts, "keystone_authtoken").map_err(config_error)?;
        if !section.contains_key("auth_url") {
            return Ok(None);
        }
        AuthOptions::from_lookup(&origin(&section, "keystone_authtoken"), |key| {
            section.get(key).map(|s| s.value.clone())
        })
        .map(Some)
    }
}

/// `OS_` and the option in capitals: `project_name` → `OS_PROJECT_NAME`; `cafile` →
/// `OS_CACERT`, the clients' name for it.
fn env_name(key: &str) -> String {
    match key {
        "cafile" => "OS_CACERT".into(),
        "token" => "OS_AUTH_TOKEN".into(),
        other => format!("OS_{}", other.to_ascii_uppercase()),
    }
}

fn config_error(err: ConfigError) -> KeystoneError {
    KeystoneError::Config {
        origin: err
            .file()
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "the configuration".into()),
        reason: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<AuthOptions, KeystoneError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AuthOptions::from_lookup("test", |key| map.get(key).cloned())
    }

    #[test]
    fn a_password_login_by_name_defaults_to_the_default_domain() {
        let options = from(&[
            ("auth_url", "http://k:5000/v3"),
            ("username", "admin"),
            ("password", "pw"),
            ("project_name", "admin"),
            ("project_domain_name", "Default"),
        ])
        .unwrap();
        let Credential::Password { user, password } = &options.credential else {
            panic!("{:?}", options.credential)
        };
        assert_eq!(
            *user,
            Named::Name {
                name: "admin".into(),
                domain: Domain::Id("default".into())
            }
        );
        assert_eq!(password.expose(), "pw");
        assert_eq!(
            options.project,
            Some(Named::Name {
                name: "admin".into(),
                domain: Domain::Name("Default".into())
            })
        );
        assert!(!format!("{options:?}").contains("pw\""));
    }

    #[test]
    fn an_application_credential_is_chosen_by_its_secret() {
        let options = from(&[
            ("auth_url", "http://k:5000"),
            ("application_credential_id", "ac1"),
            ("application_credential_secret", "s"),
        ])
        .unwrap();
        assert!(matches!(
            options.credential,
            Credential::ApplicationCredential { id: Some(ref id), .. } if id == "ac1"
        ));
    }

    #[test]
    fn what_is_missing_is_named() {
        let err = from(&[("username", "u"), ("password", "p")]).unwrap_err();
        assert!(err.to_string().contains("OS_AUTH_URL"), "{err}");
        let err = from(&[("auth_url", "http://k"), ("username", "u")]).unwrap_err();
        assert!(err.to_string().contains("OS_PASSWORD"), "{err}");
        let err = from(&[
            ("auth_url", "http://k"),
            ("auth_type", "v3applicationcredential"),
            ("application_credential_secret", "s"),
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains("application_credential_id"),
            "{err}"
        );
        let err = from(&[("auth_url", "http://k"), ("auth_type", "saml2")]).unwrap_err();
        assert!(err.to_string().contains("saml2"), "{err}");
        let err = from(&[
            ("auth_url", "http://k"),
            ("token", "t"),
            ("interface", "private"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("private"), "{err}");
    }

    #[test]
    fn glance_cache_conf_admin_options_are_a_password_login() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("glance-cache.conf");
        std::fs::write(
            &file,
            "[DEFAULT]\nauth_url = http://k:5000/v3\nadmin_user = glance\n\
             admin_password = secret\nadmin_tenant_name = service\n",
        )
        .unwrap();
        let options = AuthOptions::from_files([&file]).unwrap().unwrap();
        assert_eq!(options.who(), "user glance in domain id default");
        assert_eq!(
            options.project,
            Some(Named::Name {
                name: "service".into(),
                domain: Domain::Id("default".into())
            })
        );
        let none = dir.path().join("none.conf");
        std::fs::write(&none, "[DEFAULT]\nimage_cache_dir = /x\n").unwrap();
        assert!(AuthOptions::from_files([&none]).unwrap().is_none());
    }

    #[test]
    fn keystone_authtoken_is_read_with_keystoneauth_names() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("glance-api.conf");
        std::fs::write(
            &file,
            "[keystone_authtoken]\nauth_url = http://k:5000\nauth_type = password\n\
             username = glance\npassword = secret\nproject_name = service\n\
             user_domain_name = Default\nproject_domain_name = Default\ninsecure = true\n",
        )
        .unwrap();
        let options = AuthOptions::from_files([&file]).unwrap().unwrap();
        assert_eq!(options.who(), "user glance in domain Default");
        assert!(options.tls.insecure);
    }
}
