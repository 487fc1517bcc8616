//! The Keystone client against a real Keystone 30 (from PyPI, under uWSGI): logins, renewal
//! before expiry, one re-login on a refused token, token checks and the catalog.

use std::time::{Duration, SystemTime};

use crate::common::openstack::{self, Keystone as RealKeystone, ADMIN_PASSWORD, DEMO_PASSWORD};
use tower_image_cache::keystone::{
    AuthOptions, Domain, Interface, Keystone, KeystoneError, Named, Validation,
};

fn user(name: &str) -> Named {
    Named::Name {
        name: name.into(),
        domain: Domain::Name("Default".into()),
    }
}

fn project(name: &str) -> Named {
    Named::Name {
        name: name.into(),
        domain: Domain::Id("default".into()),
    }
}

fn admin(url: &str) -> Keystone {
    Keystone::new(AuthOptions::password(
        url,
        user("admin"),
        ADMIN_PASSWORD,
        project("admin"),
    ))
    .unwrap()
}

/// Keystone's admin-only user list, called with whatever token `keystone` holds.
async fn list_users(keystone: &Keystone, url: &str) -> reqwest::StatusCode {
    let request = http::Request::get(format!("{url}/users"))
        .body(bytes::Bytes::new())
        .unwrap();
    keystone.send(request).await.unwrap().status()
}

async fn revoke(url: &str, token: &str) {
    let response = reqwest::Client::new()
        .delete(format!("{url}/auth/tokens"))
        .header("x-auth-token", token)
        .header("x-subject-token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

#[tokio::test]
async fn a_password_login_is_scoped_kept_and_finds_endpoints() {
    let Some(real) = RealKeystone::shared("a_password_login_is_scoped_kept_and_finds_endpoints")
    else {
        return;
    };
    let keystone = admin(&real.url);
    let token = keystone.token().await.unwrap();
    assert_eq!(token.user_name, "admin");
    assert_eq!(token.project_name.as_deref(), Some("admin"));
    assert!(token.has_role("admin"), "{:?}", token.roles);
    assert!(token.expires_at > SystemTime::now());
    // Kept, not fetched again.
    assert_eq!(keystone.token().await.unwrap().id, token.id);

    let identity = keystone
        .endpoint("identity", Interface::Public, Some("RegionOne"))
        .await
        .unwrap();
    assert_eq!(identity, real.url);
    // (A type no test registers: the cloud tests add image endpoints to this Keystone.)
    let err = keystone
        .endpoint("volumev3", Interface::Internal, None)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the Keystone catalog has no internal endpoint of type volumev3 (it has none of that \
         type); pass the URL with -H instead"
    );
    let err = keystone
        .endpoint("identity", Interface::Public, Some("Elsewhere"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("public {} in RegionOne", real.url)),
        "{err}"
    );
    assert_eq!(list_users(&keystone, &real.url).await, 200);
}

#[tokio::test]
async fn an_application_credential_logs_in() {
    let Some(real) = RealKeystone::shared("an_application_credential_logs_in") else {
        return;
    };
    let (id, secret) = real.admin_app_cred.clone();
    let keystone = Keystone::new(AuthOptions::application_credential(
        &real.url,
        &id,
        secret.as_str(),
    ))
    .unwrap();
    let token = keystone.token().await.unwrap();
    assert_eq!(token.user_name, "admin");
    assert_eq!(token.project_name.as_deref(), Some("admin"));
    assert_eq!(list_users(&keystone, &real.url).await, 200);

    let wrong = Keystone::new(AuthOptions::application_credential(
        &real.url, &id, "not-it",
    ))
    .unwrap();
    let err = wrong.token().await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "Keystone at {} refused the login of application credential {id}:",
            real.url
        )),
        "{err}"
    );
    assert!(!err.contains("not-it"), "{err}");
}

#[tokio::test]
async fn a_wrong_password_or_no_keystone_is_a_sentence() {
    let Some(real) = RealKeystone::shared("a_wrong_password_or_no_keystone_is_a_sentence") else {
        return;
    };
    let keystone = Keystone::new(AuthOptions::password(
        &real.url,
        user("admin"),
        "wrong-password",
        project("admin"),
    ))
    .unwrap();
    let err = keystone.token().await.unwrap_err();
    assert!(matches!(err, KeystoneError::LoginRefused { .. }), "{err:?}");
    assert!(!err.is_unavailable());
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "Keystone at {} refused the login of user admin in domain Default: The request \
             you have made requires authentication (401 Unauthorized).",
            real.url
        )),
        "{text}"
    );
    assert!(!text.contains("wrong-password"), "{text}");

    let nowhere = format!("http://127.0.0.1:{}/v3", openstack::free_port());
    let err = admin(&nowhere).token().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "Keystone at {nowhere}/auth/tokens cannot be reached:"
        )),
        "{text}"
    );
    assert!(text.contains("Connection refused"), "{text}");
}

#[tokio::test]
async fn a_refused_token_is_replaced_once_by_logging_in_again() {
    let Some(real) = RealKeystone::shared("a_refused_token_is_replaced_once_by_logging_in_again")
    else {
        return;
    };
    let keystone = admin(&real.url);
    let first = keystone.token().await.unwrap();
    revoke(&real.url, first.id.expose()).await;
    // Keystone answers 401 to the revoked token; the client logs in again and retries.
    assert_eq!(list_users(&keystone, &real.url).await, 200);
    let second = keystone.token().await.unwrap();
    assert_ne!(second.id, first.id);

    // A given token cannot be renewed: once revoked, it is refused at once.
    let given = openstack::log_in(&real.url, "admin", ADMIN_PASSWORD, "admin").await;
    let mut options = AuthOptions::password(&real.url, user("x"), "x", project("x"));
    options.credential = tower_image_cache::keystone::Credential::Token(given.as_str().into());
    let holder = Keystone::new(options).unwrap();
    assert!(!holder.renewable());
    assert_eq!(list_users(&holder, &real.url).await, 200);
    revoke(&real.url, &given).await;
    assert_eq!(list_users(&holder, &real.url).await, 401);
}

#[tokio::test]
async fn validation_tells_a_members_token_from_revoked_and_unknown_ones() {
    let Some(real) =
        RealKeystone::shared("validation_tells_a_members_token_from_revoked_and_unknown_ones")
    else {
        return;
    };
    let service = admin(&real.url);
    let demo = openstack::log_in(&real.url, "demo", DEMO_PASSWORD, "demo").await;
    let Validation::Valid(token) = service.validate(&demo).await.unwrap() else {
        panic!("the demo token is valid")
    };
    assert_eq!(token.user_name, "demo");
    assert_eq!(token.project_name.as_deref(), Some("demo"));
    assert!(token.has_role("member") && !token.has_role("admin"));
    assert!(token.catalog.is_empty(), "asked without the catalog");

    revoke(&real.url, &demo).await;
    assert!(matches!(
        service.validate(&demo).await.unwrap(),
        Validation::Invalid
    ));
    assert!(matches!(
        service.validate("gAAAAABnot-a-token").await.unwrap(),
        Validation::Invalid
    ));
}

#[tokio::test]
async fn a_token_is_renewed_before_it_expires() {
    let Some(real) = RealKeystone::shared("a_token_is_renewed_before_it_expires") else {
        return;
    };
    // The test Keystone issues tokens for 60 s.
    let keystone = admin(&real.url);
    let first = keystone.token().await.unwrap();
    let life = first.expires_at.duration_since(first.issued_at).unwrap();
    assert_eq!(life.as_secs(), 60);
    while !first.needs_renewal(SystemTime::now()) {
        assert_eq!(keystone.token().await.unwrap().id, first.id);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let second = keystone.token().await.unwrap();
    assert_ne!(
        second.id, first.id,
        "renewed in the last quarter of its life"
    );
    assert!(second.expires_at > first.expires_at);

    // Past the first token's expiry, the identity still works, and Keystone says the first
    // token is gone.
    let past = first
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(past + Duration::from_secs(2)).await;
    assert_eq!(list_users(&keystone, &real.url).await, 200);
    assert!(matches!(
        keystone.validate(first.id.expose()).await.unwrap(),
        Validation::Invalid
    ));
}
