//! What goes over the wire to Keystone: the login body, the URL, and reading its answers.

use http::StatusCode;
use serde_json::{json, Value};

use super::error::KeystoneError;
use super::options::{AuthOptions, Credential, Domain, Named};
use super::secret::Secret;

/// Keystone's v3 root for an `auth_url` as operators write it (`http://k:5000`,
/// `http://k:5000/v3/`, `http://k/identity/v2.0`).
pub(super) fn v3_url(auth_url: &str) -> String {
    let url = auth_url.trim().trim_end_matches('/');
    if url.ends_with("/v3") {
        url.to_owned()
    } else if let Some(root) = url.strip_suffix("/v2.0") {
        format!("{root}/v3")
    } else {
        format!("{url}/v3")
    }
}

pub(super) fn login_body(options: &AuthOptions) -> Value {
    let identity = match &options.credential {
        Credential::Password { user, password } => json!({
            "methods": ["password"],
            "password": {"user": with_secret(named(user), "password", password)},
        }),
        Credential::ApplicationCredential {
            id,
            name,
            user,
            secret,
        } => {
            let mut credential = json!({"secret": secret.expose()});
            if let Some(id) = id {
                credential["id"] = json!(id);
            } else {
                credential["name"] = json!(name);
                credential["user"] = user.as_ref().map(named).unwrap_or(Value::Null);
            }
            json!({"methods": ["application_credential"], "application_credential": credential})
        }
        Credential::Token(token) => json!({"methods": ["token"], "token": {"id": token.expose()}}),
    };
    let mut auth = json!({"identity": identity});
    let scoped = !matches!(options.credential, Credential::ApplicationCredential { .. });
    if let (true, Some(project)) = (scoped, &options.project) {
        auth["scope"] = json!({"project": named(project)});
    }
    json!({"auth": auth})
}

fn with_secret(mut object: Value, key: &str, secret: &Secret) -> Value {
    object[key] = json!(secret.expose());
    object
}

fn named(named: &Named) -> Value {
    match named {
        Named::Id(id) => json!({"id": id}),
        Named::Name { name, domain } => json!({"name": name, "domain": match domain {
            Domain::Id(id) => json!({"id": id}),
            Domain::Name(name) => json!({"name": name}),
        }}),
    }
}

pub(super) async fn send(
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, KeystoneError> {
    request.send().await.map_err(|err| unreachable(&err))
}

/// A request to Keystone that got no answer.
pub(super) fn unreachable(err: &reqwest::Error) -> KeystoneError {
    KeystoneError::Unreachable {
        url: err.url().map(|u| u.to_string()).unwrap_or_default(),
        reason: error_chain(err),
    }
}

pub(super) async fn body(response: reqwest::Response, url: &str) -> Result<Vec<u8>, KeystoneError> {
    response
        .bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|err| KeystoneError::Unreachable {
            url: url.to_owned(),
            reason: error_chain(&err),
        })
}

pub(super) fn unexpected(
    url: &str,
    status: StatusCode,
    reason: impl std::fmt::Display,
) -> KeystoneError {
    KeystoneError::Answer {
        url: url.to_owned(),
        status,
        message: format!("the answer could not be read: {reason}"),
    }
}

/// Keystone's `{"error": {"message": ...}}`, or the start of the body.
pub(super) fn message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.get("message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let line = text
                .trim()
                .lines()
                .next()
                .unwrap_or("no message")
                .to_owned();
            line.chars().take(120).collect()
        })
}

/// An error and its causes on one line.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_urls_are_made_v3() {
        for (given, v3) in [
            ("http://k:5000", "http://k:5000/v3"),
            ("http://k:5000/v3/", "http://k:5000/v3"),
            ("http://k/identity/v2.0", "http://k/identity/v3"),
        ] {
            assert_eq!(v3_url(given), v3);
        }
    }

    #[test]
    fn a_password_login_is_scoped_and_an_application_credential_is_not() {
        let options = AuthOptions::password(
            "http://k",
            Named::Name {
                name: "admin".into(),
                domain: Domain::Name("Default".into()),
            },
            "pw",
            Named::Id("p1".into()),
        );
        let body = login_body(&options);
        assert_eq!(
            body["auth"]["identity"]["password"]["user"],
            json!({"name": "admin", "domain": {"name": "Default"}, "password": "pw"})
        );
        assert_eq!(body["auth"]["scope"], json!({"project": {"id": "p1"}}));
        let mut options = AuthOptions::application_credential("http://k", "ac", "s");
        options.project = Some(Named::Id("p1".into()));
        let body = login_body(&options);
        assert_eq!(
            body["auth"]["identity"]["application_credential"],
            json!({"id": "ac", "secret": "s"})
        );
        assert!(body["auth"].get("scope").is_none());
    }
}
