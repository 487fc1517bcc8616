//! Who the tools are: the OpenStack clients' `--os-*` options and `OS_*` variables (so `source
//! admin-openrc` is enough), `--os-cloud` for `clouds.yaml`, or a plain token.

use std::path::PathBuf;

use tower_image_cache::keystone::{AuthOptions, Keystone, TlsOptions};

/// The OpenStack clients' identity and TLS options, each with its `OS_*` variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OsArgs {
    /// A cloud of clouds.yaml (./clouds.yaml, ~/.config/openstack/clouds.yaml,
    /// /etc/openstack/clouds.yaml).
    #[arg(long, env = "OS_CLOUD", value_name = "NAME")]
    pub os_cloud: Option<String>,
    /// Keystone's URL.
    #[arg(long, short = 'N', alias = "os_auth_url")]
    #[arg(env = "OS_AUTH_URL", value_name = "URL")]
    pub os_auth_url: Option<String>,
    /// password, v3applicationcredential or token (default: from the options given).
    #[arg(long, env = "OS_AUTH_TYPE", value_name = "TYPE")]
    pub os_auth_type: Option<String>,
    /// The user's name.
    #[arg(long, short = 'I', alias = "os_username")]
    #[arg(env = "OS_USERNAME", value_name = "NAME")]
    pub os_username: Option<String>,
    /// The user's id.
    #[arg(long, env = "OS_USER_ID", value_name = "ID")]
    pub os_user_id: Option<String>,
    /// The user's password.
    #[arg(long, short = 'K', alias = "os_password")]
    #[arg(env = "OS_PASSWORD", hide_env_values = true, value_name = "PASSWORD")]
    pub os_password: Option<String>,
    /// The project's name.
    #[arg(long, short = 'T', alias = "os_project_name")]
    #[arg(env = "OS_PROJECT_NAME", value_name = "NAME")]
    pub os_project_name: Option<String>,
    /// The project's id.
    #[arg(long, alias = "os_project_id")]
    #[arg(env = "OS_PROJECT_ID", value_name = "ID")]
    pub os_project_id: Option<String>,
    /// The user's domain, by name.
    #[arg(long, env = "OS_USER_DOMAIN_NAME", value_name = "NAME")]
    pub os_user_domain_name: Option<String>,
    /// The user's domain, by id.
    #[arg(long, env = "OS_USER_DOMAIN_ID", value_name = "ID")]
    pub os_user_domain_id: Option<String>,
    /// The project's domain, by name.
    #[arg(long, env = "OS_PROJECT_DOMAIN_NAME", value_name = "NAME")]
    pub os_project_domain_name: Option<String>,
    /// The project's domain, by id.
    #[arg(long, env = "OS_PROJECT_DOMAIN_ID", value_name = "ID")]
    pub os_project_domain_id: Option<String>,
    /// An application credential's id.
    #[arg(long, env = "OS_APPLICATION_CREDENTIAL_ID", value_name = "ID")]
    pub os_application_credential_id: Option<String>,
    /// An application credential's secret.
    #[arg(long)]
    #[arg(
        env = "OS_APPLICATION_CREDENTIAL_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub os_application_credential_secret: Option<String>,
    /// A token: used as given (with --os-auth-url, checked with Keystone and its catalog used).
    #[arg(long, short = 'A', aliases = ["os_auth_token", "auth-token", "auth_token"])]
    #[arg(env = "OS_AUTH_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub os_auth_token: Option<String>,
    /// The region whose image endpoint to use.
    #[arg(long, short = 'R', alias = "os_region_name")]
    #[arg(env = "OS_REGION_NAME", value_name = "REGION")]
    pub os_region_name: Option<String>,
    /// public, internal or admin: which image endpoint of the catalog to use.
    #[arg(long, env = "OS_INTERFACE", value_name = "INTERFACE")]
    pub os_interface: Option<String>,
    /// A PEM file of CA certificates to trust besides the system's.
    #[arg(long, env = "OS_CACERT", value_name = "FILE")]
    pub os_cacert: Option<PathBuf>,
    /// Do not verify HTTPS certificates (tests and emergencies only).
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// glance-cache-manage's `-S`: `keystone` (the default) or `noauth` (the token as given,
    /// or none, without Keystone).
    #[arg(
        short = 'S',
        long = "os_auth_strategy",
        value_name = "STRATEGY",
        hide = true
    )]
    pub os_auth_strategy: Option<String>,
}

/// How requests are authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No token at all.
    Anonymous,
    /// A token used as given, without Keystone.
    Token(String),
    /// A Keystone identity: a token kept fresh, one re-login on a 401.
    Keystone(Keystone),
}

impl OsArgs {
    /// The value of keystoneauth's option `key` from these arguments.
    fn get(&self, key: &str) -> Option<String> {
        let value = match key {
            "auth_url" => &self.os_auth_url,
            "auth_type" => &self.os_auth_type,
            "username" => &self.os_username,
            "user_id" => &self.os_user_id,
            "password" => &self.os_password,
            "project_name" => &self.os_project_name,
            "project_id" => &self.os_project_id,
            "user_domain_name" => &self.os_user_domain_name,
            "user_domain_id" => &self.os_user_domain_id,
            "project_domain_name" => &self.os_project_domain_name,
            "project_domain_id" => &self.os_project_domain_id,
            "application_credential_id" => &self.os_application_credential_id,
            "application_credential_secret" => &self.os_application_credential_secret,
            "token" => &self.os_auth_token,
            "region_name" => &self.os_region_name,
            "interface" => &self.os_interface,
            "cafile" => return self.os_cacert.as_ref().map(|p| p.display().to_string()),
            "insecure" => return self.insecure.then(|| "true".to_owned()),
            _ => return None,
        };
        value.clone()
    }

    /// The TLS options alone (for a tool that talks to a node without Keystone).
    pub fn tls(&self) -> TlsOptions {
        TlsOptions::new(self.os_cacert.clone(), self.insecure)
    }

    /// Who to be: a Keystone identity with `--os-cloud` or `--os-auth-url`; else the token as
    /// given; else nobody.
    pub fn auth(&self) -> Result<Auth, String> {
        let noauth = match self.os_auth_strategy.as_deref() {
            None | Some("keystone") => false,
            Some("noauth") => true,
            Some(other) => {
                return Err(format!(
                    "unknown auth strategy '{other}': give -S keystone or -S noauth"
                ))
            }
        };
        let options = if let (false, Some(cloud)) = (noauth, &self.os_cloud) {
            AuthOptions::from_cloud(cloud, |key| self.get(key))
        } else if !noauth && self.os_auth_url.is_some() {
            AuthOptions::from_lookup("the --os-* options and OS_* variables", |key| self.get(key))
        } else {
            return Ok(match &self.os_auth_token {
                Some(token) => Auth::Token(token.clone()),
                None => Auth::Anonymous,
            });
        };
        let keystone = options
            .and_then(Keystone::new)
            .map_err(|err| err.to_string())?;
        Ok(Auth::Keystone(keystone))
    }
}

impl Auth {
    /// The image API's endpoint from the Keystone catalog, when the identity has one.
    pub async fn image_endpoint(&self) -> Result<Option<String>, String> {
        let Auth::Keystone(keystone) = self else {
            return Ok(None);
        };
        let options = keystone.options();
        keystone
            .endpoint("image", options.interface, options.region.as_deref())
            .await
            .map(Some)
            .map_err(|err| err.to_string())
    }

    /// The TLS options the identity carries, else `fallback`.
    pub fn tls(&self, fallback: TlsOptions) -> TlsOptions {
        match self {
            Auth::Keystone(keystone) => keystone.options().tls.clone(),
            _ => fallback,
        }
    }
}
