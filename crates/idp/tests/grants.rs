//! The token endpoint's refusals: credentials, clients, audiences, and
//! malformed requests. Nothing submitted comes back in a response.

mod common;

use common::*;
use reqwest::StatusCode;

fn password_form<'a>(client: &'a str, user: &'a str, password: &'a str, audience: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "password"),
        ("client_id", client),
        ("username", user),
        ("password", password),
        ("audience", audience),
    ]
}

#[tokio::test]
async fn password_grant_refusals_never_echo_the_password() {
    let idp = TestIdp::start().await;
    let wrong = "Wr0ng-password-zz19";
    let cases: [(&str, &str, &str, u16, &str); 8] = [
        (CLI, ALICE, wrong, 400, "invalid_grant"),
        (CLI, ALICE, BOB_PASSWORD, 400, "invalid_grant"),
        (CLI, ALICE, &ALICE_PASSWORD[..ALICE_PASSWORD.len() - 1], 400, "invalid_grant"),
        (CLI, "ALICE@acme.test", ALICE_PASSWORD, 400, "invalid_grant"),
        (CLI, "mallory@acme.test", wrong, 400, "invalid_grant"),
        (CLI, BOT_SUBJECT, BOT_SECRET, 400, "invalid_grant"),
        ("evil-cli", ALICE, ALICE_PASSWORD, 401, "invalid_client"),
        (BOT, ALICE, ALICE_PASSWORD, 400, "unauthorized_client"),
    ];
    for (client, user, password, status, code) in cases {
        let r = idp.token(&password_form(client, user, password, KMS)).await;
        r.expect_error(status, code);
        assert!(!r.text.contains(password), "{client} {user}: {}", r.text);
        assert!(r.json.get("access_token").is_none());
    }
    // Unknown user and wrong password look the same.
    let a = idp.token(&password_form(CLI, ALICE, wrong, KMS)).await;
    let b = idp.token(&password_form(CLI, "mallory@acme.test", wrong, KMS)).await;
    assert_eq!(a.text, b.text);
    // A password typed into the username field is not echoed either.
    let r = idp.token(&password_form(CLI, ALICE_PASSWORD, ALICE_PASSWORD, KMS)).await;
    r.expect_error(400, "invalid_grant");
    assert!(!r.text.contains(ALICE_PASSWORD));

    // Missing parameters.
    for missing in ["client_id", "username", "password"] {
        let form: Vec<_> =
            password_form(CLI, ALICE, ALICE_PASSWORD, KMS).into_iter().filter(|(k, _)| *k != missing).collect();
        idp.token(&form).await.expect_error(400, "invalid_request");
    }
    // Empty values count as missing.
    idp.token(&password_form(CLI, ALICE, "", KMS)).await.expect_error(400, "invalid_request");
    // A public client sending a secret, or Basic authentication, is refused.
    let mut with_secret = password_form(CLI, ALICE, ALICE_PASSWORD, KMS);
    with_secret.push(("client_secret", "x"));
    idp.token(&with_secret).await.expect_error(400, "invalid_request");
    let r = idp
        .http
        .post(idp.url("/token"))
        .basic_auth(CLI, Some(""))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&password_form(CLI, ALICE, ALICE_PASSWORD, KMS)))
        .send()
        .await
        .unwrap();
    Reply::read(r).await.expect_error(400, "invalid_request");

    // And the right password works.
    let r = idp.token(&password_form(CLI, ALICE, ALICE_PASSWORD, KMS)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["pragma"], "no-cache");
}

#[tokio::test]
async fn audience_rules() {
    let idp = TestIdp::start().await;
    let base = [("grant_type", "password"), ("client_id", CLI), ("username", ALICE), ("password", ALICE_PASSWORD)];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut f = base.to_vec();
        f.extend_from_slice(extra);
        f
    };
    // Not configured (also near misses), several, disagreeing, none without a default.
    for aud in ["https://evil.test", "kms://ACME.test", "kms://acme.test/", "https://core.acme.test kms://acme.test"] {
        let r = idp.token(&with(&[("audience", aud)])).await;
        r.expect_error(400, "invalid_target");
        assert!(!r.text.contains(ALICE_PASSWORD));
    }
    idp.token(&with(&[("resource", KMS), ("resource", CORE)])).await.expect_error(400, "invalid_target");
    idp.token(&with(&[("audience", KMS), ("resource", CORE)])).await.expect_error(400, "invalid_target");
    idp.token(&with(&[("audience", KMS), ("audience", CORE)])).await.expect_error(400, "invalid_request");
    idp.token(&with(&[])).await.expect_error(400, "invalid_request");
    // RFC 8707 resource alone, or agreeing with audience.
    for extra in [&[("resource", KMS)][..], &[("audience", KMS), ("resource", KMS)][..]] {
        let r = idp.token(&with(extra)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(jwt_part(r.json["access_token"].as_str().unwrap(), 1)["aud"], KMS);
    }
    // With a default audience, none named gives the default.
    let with_default = TestIdp::start_with(&format!("default_audience = \"{KMS}\"")).await;
    let r = with_default.token(&base).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(jwt_part(r.json["access_token"].as_str().unwrap(), 1)["aud"], KMS);
    // A malformed scope.
    idp.token(&with(&[("audience", KMS), ("scope", "a  b")])).await.expect_error(400, "invalid_scope");
}

#[tokio::test]
async fn malformed_requests() {
    let idp = TestIdp::start().await;
    // Unknown and missing grant types.
    for grant in ["implicit", "urn:ietf:params:oauth:grant-type:jwt-bearer", "PASSWORD"] {
        let r = idp.token(&[("grant_type", grant), ("client_id", CLI)]).await;
        r.expect_error(400, "unsupported_grant_type");
        assert!(!r.text.contains(grant), "not echoed: {}", r.text);
    }
    // The code flow is for web clients (tests/authcode.rs), not the CLI's client.
    idp.token(&[("grant_type", "authorization_code"), ("client_id", CLI)]).await.expect_error(400, "unauthorized_client");
    idp.token(&[("client_id", CLI)]).await.expect_error(400, "invalid_request");
    // A repeated parameter (RFC 6749 section 3.1).
    let mut form = password_form(CLI, ALICE, ALICE_PASSWORD, KMS);
    form.push(("password", "other"));
    idp.token(&form).await.expect_error(400, "invalid_request");
    // Not a form.
    let r = idp.http.post(idp.url("/token")).json(&serde_json::json!({"grant_type": "password"})).send().await.unwrap();
    Reply::read(r).await.expect_error(415, "invalid_request");
    let r = idp
        .http
        .post(idp.url("/token"))
        .body(encode(&password_form(CLI, ALICE, ALICE_PASSWORD, KMS)))
        .send()
        .await
        .unwrap();
    Reply::read(r).await.expect_error(415, "invalid_request");
    // With a charset parameter, it is a form.
    let r = idp
        .http
        .post(idp.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded; charset=UTF-8")
        .body(encode(&password_form(CLI, ALICE, ALICE_PASSWORD, KMS)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Oversize bodies, on every POST endpoint.
    let big =
        format!("{}&pad={}", encode(&password_form(CLI, ALICE, ALICE_PASSWORD, KMS)), "x".repeat(idp::MAX_BODY_BYTES));
    for path in ["/token", "/device_authorization"] {
        let r = idp
            .http
            .post(idp.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        Reply::read(r).await.expect_error(413, "invalid_request");
    }
    let r = idp
        .http
        .post(idp.url("/device"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Just under the limit is fine.
    let fits = format!("{}&pad=", encode(&password_form(CLI, ALICE, ALICE_PASSWORD, KMS)));
    let fits = format!("{fits}{}", "x".repeat(idp::MAX_BODY_BYTES - fits.len()));
    let r = idp
        .http
        .post(idp.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(fits)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Wrong methods.
    assert_eq!(idp.http.get(idp.url("/token")).send().await.unwrap().status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        idp.http.get(idp.url("/device_authorization")).send().await.unwrap().status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    // Malformed Basic headers.
    for header in ["Basic", "Basic !!!", "Basic Zm9v", "Digest abc"] {
        let r = idp
            .http
            .post(idp.url("/token"))
            .header("authorization", header)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(&[("grant_type", "client_credentials"), ("audience", KMS)]))
            .send()
            .await
            .unwrap();
        Reply::read(r).await.expect_error(401, "invalid_client");
    }
}

#[tokio::test]
async fn basic_credentials_are_form_urlencoded() {
    // RFC 6749 section 2.3.1: id and secret are form-urlencoded before base64.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = idp::Config::from_toml(&toml(dir.path(), "")).unwrap();
    cfg.clients.push(idp::ServiceClient::new("odd:bot", "p@ss word+%/", "oddbot@acme.test"));
    let running = idp::start(cfg).await.unwrap();
    let http = reqwest::Client::new();
    let send = |user: &'static str, secret: &'static str| {
        let http = http.clone();
        let url = format!("{}/token", running.issuer);
        async move {
            let r = http
                .post(url)
                .basic_auth(user, Some(secret))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(encode(&[("grant_type", "client_credentials"), ("audience", KMS)]))
                .send()
                .await
                .unwrap();
            r.status()
        }
    };
    assert_eq!(send("odd%3Abot", "p%40ss+word%2B%25%2F").await, StatusCode::OK);
    assert_eq!(send("odd%3Abot", "p@ss word+%/").await, StatusCode::UNAUTHORIZED, "not encoded");
}
