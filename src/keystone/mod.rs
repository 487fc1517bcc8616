//! Keystone v3 identities (feature `keystone`): log in as a user of a project or with an
//! application credential, keep the token fresh, find the image endpoint in the catalog, and
//! check a caller's token.
//!
//! [`AuthOptions`] says who to be, read with keystoneauth's option names from the environment
//! (`OS_USERNAME`, ... as an `openrc` sets them), from `clouds.yaml`, or from a configuration
//! file section (Glance's `admin_user`/`admin_password`/`admin_tenant_name`/`auth_url`, or a
//! `[keystone_authtoken]` section). [`Keystone`] holds the token: it logs in on first use,
//! renews the token before `expires_at`, and logs in again once when a service answers 401.
//!
//! ```no_run
//! use tower_image_cache::keystone::{AuthOptions, Interface, Keystone};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // As after `source admin-openrc`.
//! let options = AuthOptions::from_env()?;
//! let keystone = Keystone::new(options)?;
//! let glance = keystone.endpoint("image", Interface::Public, None).await?;
//! let request = http::Request::get(format!("{glance}/v2/images")).body(bytes::Bytes::new())?;
//! let images = keystone.send(request).await?;
//! println!("{}", images.status());
//! # Ok(()) }
//! ```

mod client;
mod clouds;
mod error;
mod options;
mod secret;
mod sources;
mod tls;
mod token;
mod wire;

pub use client::{Keystone, RequestError, SendError, Validation};
pub use error::KeystoneError;
pub use options::{AuthOptions, Credential, Domain, Interface, Named};
pub use secret::Secret;
pub use tls::TlsOptions;
pub use token::{Endpoint, Token};
