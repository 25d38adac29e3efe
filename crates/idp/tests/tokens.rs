//! Tokens as a real verifier sees them: our own `kms-identity`, configured
//! with only the issuer and an audience, finds the keys through discovery
//! and JWKS over loopback HTTP.

mod common;

use common::*;
use kms_identity::IdentityError;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn discovery_and_jwks_describe_the_provider() {
    let idp = TestIdp::start().await;
    assert!(idp.issuer().starts_with("http://127.0.0.1:"), "issuer from the bound address");
    assert_ne!(idp.running.addr.port(), 0);
    let d: Value =
        idp.http.get(idp.url("/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    assert_eq!(d["issuer"], idp.issuer());
    assert_eq!(d["jwks_uri"], idp.url("/jwks"));
    assert_eq!(d["token_endpoint"], idp.url("/token"));
    assert_eq!(d["device_authorization_endpoint"], idp.url("/device_authorization"));
    let grants: Vec<&str> =
        d["grant_types_supported"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for g in ["password", "client_credentials", "refresh_token", DEVICE_GRANT] {
        assert!(grants.contains(&g), "{g}");
    }
    assert!(d["token_endpoint_auth_methods_supported"].as_array().unwrap().contains(&"client_secret_basic".into()));

    let jwks: Value = idp.http.get(idp.url("/jwks")).send().await.unwrap().json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(k["kty"], "RSA");
    assert_eq!(k["alg"], "RS256");
    assert_eq!(k["use"], "sig");
    assert_eq!(k["kid"], idp.running.idp().kid());
    assert!(k.get("d").is_none() && k.get("p").is_none(), "public members only");
}

#[tokio::test]
async fn access_token_is_rfc9068_and_verifies_for_its_audience_only() {
    let idp = TestIdp::start().await;
    let t = idp.login(ALICE, ALICE_PASSWORD, KMS).await;
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 3600);
    let at = t["access_token"].as_str().unwrap();

    let header = jwt_part(at, 0);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], idp.running.idp().kid());
    let claims = jwt_part(at, 1);
    assert_eq!(claims["iss"], idp.issuer());
    assert_eq!(claims["sub"], ALICE);
    assert_eq!(claims["aud"], KMS, "a single string");
    assert_eq!(claims["client_id"], CLI);
    assert_eq!(claims["name"], "Alice Example");
    assert!(claims.get("gty").is_none(), "a person's token is not a service's");
    let (iat, nbf, exp) =
        (claims["iat"].as_i64().unwrap(), claims["nbf"].as_i64().unwrap(), claims["exp"].as_i64().unwrap());
    assert_eq!(nbf, iat);
    assert_eq!(exp - iat, 3600);
    assert!(claims["jti"].as_str().unwrap().len() >= 16);
    assert!(claims.get("scope").is_none(), "no scope requested");

    let kms = idp.verifier(KMS);
    let who = kms.verify(at).await.unwrap();
    assert_eq!(who.user_id, ALICE);
    assert_eq!(who.issuer, idp.issuer());
    assert_eq!(who.client_id.as_deref(), Some(CLI));
    assert_eq!(kms.stats().jwks_fetches, 1, "keys found through discovery");

    // The same token at the other audience's verifier.
    assert_eq!(idp.verifier(CORE).verify(at).await.unwrap_err(), IdentityError::WrongAudience);
    // A token for the core, at the KMS.
    let core_token = idp.login(ALICE, ALICE_PASSWORD, CORE).await;
    assert_eq!(
        kms.verify(core_token["access_token"].as_str().unwrap()).await.unwrap_err(),
        IdentityError::WrongAudience
    );
    // Two logins, two distinct tokens.
    assert_ne!(jwt_part(core_token["access_token"].as_str().unwrap(), 1)["jti"], claims["jti"]);
}

#[tokio::test]
async fn scope_is_carried_when_requested() {
    let idp = TestIdp::start().await;
    let r = idp
        .token(&[
            ("grant_type", "password"),
            ("client_id", CLI),
            ("username", BOB),
            ("password", BOB_PASSWORD),
            ("resource", CORE),
            ("scope", "spaces.read spaces.write"),
        ])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["scope"], "spaces.read spaces.write");
    let who = idp.verifier(CORE).verify(r.json["access_token"].as_str().unwrap()).await.unwrap();
    assert_eq!(who.scope, ["spaces.read", "spaces.write"]);
    assert!(jwt_part(r.json["access_token"].as_str().unwrap(), 1).get("name").is_none(), "bob has no name");
}

#[tokio::test]
async fn refresh_mints_tokens_for_every_audience_from_one_login() {
    let idp = TestIdp::start().await;
    let login = idp.login(ALICE, ALICE_PASSWORD, CORE).await;
    let rt = login["refresh_token"].as_str().unwrap();
    let rt_header = jwt_part(rt, 0);
    assert_eq!(rt_header["typ"], "rt+jwt");
    let rt_claims = jwt_part(rt, 1);
    assert_eq!(rt_claims["aud"], idp.issuer(), "addressed to the issuer itself");
    assert_eq!(rt_claims["exp"].as_i64().unwrap() - rt_claims["iat"].as_i64().unwrap(), 30 * 24 * 3600);

    let r = idp
        .token(&[("grant_type", "refresh_token"), ("client_id", CLI), ("refresh_token", rt), ("audience", KMS)])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let who = idp.verifier(KMS).verify(r.json["access_token"].as_str().unwrap()).await.unwrap();
    assert_eq!(who.user_id, ALICE);
    let renewed = r.json["refresh_token"].as_str().expect("a renewed refresh token");
    assert_ne!(renewed, rt);

    // The renewed one works too, for the other audience.
    let r = idp
        .token(&[("grant_type", "refresh_token"), ("client_id", CLI), ("refresh_token", renewed), ("audience", CORE)])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(idp.verifier(CORE).verify(r.json["access_token"].as_str().unwrap()).await.unwrap().user_id, ALICE);

    // Refusals: an audience not configured, another public client, a service
    // client, a tampered token, no audience (no default configured).
    idp.token(&[
        ("grant_type", "refresh_token"),
        ("client_id", CLI),
        ("refresh_token", rt),
        ("audience", "https://evil.test"),
    ])
    .await
    .expect_error(400, "invalid_target");
    idp.token(&[("grant_type", "refresh_token"), ("client_id", "other-cli"), ("refresh_token", rt), ("audience", KMS)])
        .await
        .expect_error(400, "invalid_grant");
    idp.token(&[("grant_type", "refresh_token"), ("client_id", BOT), ("refresh_token", rt), ("audience", KMS)])
        .await
        .expect_error(400, "unauthorized_client");
    let mut tampered = rt.to_owned();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    idp.token(&[("grant_type", "refresh_token"), ("client_id", CLI), ("refresh_token", &tampered), ("audience", KMS)])
        .await
        .expect_error(400, "invalid_grant");
    idp.token(&[("grant_type", "refresh_token"), ("client_id", CLI), ("refresh_token", rt)])
        .await
        .expect_error(400, "invalid_request");
}

#[tokio::test]
async fn refresh_scope_cannot_grow() {
    let idp = TestIdp::start().await;
    let form = [
        ("grant_type", "password"),
        ("client_id", CLI),
        ("username", ALICE),
        ("password", ALICE_PASSWORD),
        ("audience", CORE),
        ("scope", "a b"),
    ];
    let login = idp.token(&form).await;
    let rt = login.json["refresh_token"].as_str().unwrap();
    let refresh = |scope: &'static str| {
        let rt = rt.to_owned();
        let idp = &idp;
        async move {
            idp.token(&[
                ("grant_type", "refresh_token"),
                ("client_id", CLI),
                ("refresh_token", &rt),
                ("audience", KMS),
                ("scope", scope),
            ])
            .await
        }
    };
    let narrowed = refresh("b").await;
    assert_eq!(narrowed.status, StatusCode::OK, "{}", narrowed.text);
    assert_eq!(narrowed.json["scope"], "b");
    // The renewed refresh token keeps the original scope.
    assert_eq!(jwt_part(narrowed.json["refresh_token"].as_str().unwrap(), 1)["scope"], "a b");
    refresh("a c").await.expect_error(400, "invalid_scope");
}

#[tokio::test]
async fn refresh_token_is_never_an_access_token_and_vice_versa() {
    let idp = TestIdp::start().await;
    let login = idp.login(ALICE, ALICE_PASSWORD, KMS).await;
    let at = login["access_token"].as_str().unwrap();
    let rt = login["refresh_token"].as_str().unwrap();

    // At verifiers of either audience, and at one whose audience is the issuer itself.
    for aud in [KMS, CORE] {
        assert_eq!(idp.verifier(aud).verify(rt).await.unwrap_err(), IdentityError::WrongType, "{aud}");
    }
    assert_eq!(idp.verifier(idp.issuer()).verify(rt).await.unwrap_err(), IdentityError::WrongType);

    // An access token presented as a refresh token.
    let r = idp
        .token(&[("grant_type", "refresh_token"), ("client_id", CLI), ("refresh_token", at), ("audience", CORE)])
        .await;
    r.expect_error(400, "invalid_grant");
    assert!(!r.text.contains(at), "the token is not echoed");
    // Garbage, and an unsigned token claiming to be a refresh token.
    let claims = jwt_part(rt, 1);
    let b64 = |v: &Value| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, v.to_string());
    let forged = format!("{}.{}.", b64(&serde_json::json!({"alg": "none", "typ": "rt+jwt"})), b64(&claims));
    for bad in ["not-a-token", "a.b.c", forged.as_str()] {
        idp.token(&[("grant_type", "refresh_token"), ("client_id", CLI), ("refresh_token", bad), ("audience", CORE)])
            .await
            .expect_error(400, "invalid_grant");
    }
}

#[tokio::test]
async fn refresh_tokens_expire() {
    let idp = TestIdp::start_with("refresh_token_ttl_secs = 1").await;
    let rt = idp.login(ALICE, ALICE_PASSWORD, KMS).await["refresh_token"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    idp.token(&[("grant_type", "refresh_token"), ("client_id", CLI), ("refresh_token", &rt), ("audience", CORE)])
        .await
        .expect_error(400, "invalid_grant");
}

#[tokio::test]
async fn client_credentials_in_the_form_or_basic() {
    let idp = TestIdp::start().await;
    let kms = idp.verifier(KMS);

    let r = idp
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", BOT),
            ("client_secret", BOT_SECRET),
            ("audience", KMS),
        ])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.json.get("refresh_token").is_none(), "no refresh token for service clients");
    let who = kms.verify(r.json["access_token"].as_str().unwrap()).await.unwrap();
    assert_eq!(who.subject, BOT_SUBJECT);
    assert_eq!(who.user_id, BOT_SUBJECT);
    assert_eq!(who.client_id.as_deref(), Some(BOT));
    // Marked as a service's own token (`gty`), which the KMS default-denies unless listed.
    assert!(who.client_credentials);
    assert_eq!(jwt_part(r.json["access_token"].as_str().unwrap(), 1)["gty"], "client-credentials");

    let basic = idp
        .http
        .post(idp.url("/token"))
        .basic_auth(BOT, Some(BOT_SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[("grant_type", "client_credentials"), ("audience", KMS)]))
        .send()
        .await
        .unwrap();
    let basic = Reply::read(basic).await;
    assert_eq!(basic.status, StatusCode::OK, "{}", basic.text);
    assert_eq!(kms.verify(basic.json["access_token"].as_str().unwrap()).await.unwrap().subject, BOT_SUBJECT);

    // Wrong secret (form and Basic), unknown client, no secret, both methods.
    for secret in ["wrong", "", &BOT_SECRET[..BOT_SECRET.len() - 1]] {
        let r = idp
            .token(&[
                ("grant_type", "client_credentials"),
                ("client_id", BOT),
                ("client_secret", secret),
                ("audience", KMS),
            ])
            .await;
        r.expect_error(401, "invalid_client");
        assert!(r.headers.get("www-authenticate").is_some());
    }
    let r = idp
        .http
        .post(idp.url("/token"))
        .basic_auth(BOT, Some("wrong-secret-123"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[("grant_type", "client_credentials"), ("audience", KMS)]))
        .send()
        .await
        .unwrap();
    let r = Reply::read(r).await;
    r.expect_error(401, "invalid_client");
    assert!(!r.text.contains("wrong-secret-123"));
    idp.token(&[
        ("grant_type", "client_credentials"),
        ("client_id", "nobody"),
        ("client_secret", BOT_SECRET),
        ("audience", KMS),
    ])
    .await
    .expect_error(401, "invalid_client");
    idp.token(&[("grant_type", "client_credentials"), ("client_id", BOT), ("audience", KMS)])
        .await
        .expect_error(401, "invalid_client");
    idp.token(&[("grant_type", "client_credentials"), ("client_id", CLI), ("audience", KMS)])
        .await
        .expect_error(400, "unauthorized_client");
    let both = idp
        .http
        .post(idp.url("/token"))
        .basic_auth(BOT, Some(BOT_SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[("grant_type", "client_credentials"), ("client_secret", BOT_SECRET), ("audience", KMS)]))
        .send()
        .await
        .unwrap();
    Reply::read(both).await.expect_error(400, "invalid_request");
    // A bearer token is not client authentication.
    let bearer = idp
        .http
        .post(idp.url("/token"))
        .bearer_auth("abc")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[("grant_type", "client_credentials"), ("audience", KMS)]))
        .send()
        .await
        .unwrap();
    Reply::read(bearer).await.expect_error(401, "invalid_client");
    // A right secret for an audience not configured.
    idp.token(&[
        ("grant_type", "client_credentials"),
        ("client_id", BOT),
        ("client_secret", BOT_SECRET),
        ("audience", "kms://evil.test"),
    ])
    .await
    .expect_error(400, "invalid_target");
}

#[tokio::test]
async fn key_persists_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = start_in(dir.path(), "").await;
    let kid = first.idp().kid().to_owned();
    let addr = first.addr;
    let http = reqwest::Client::new();
    let form = encode(&[
        ("grant_type", "password"),
        ("client_id", CLI),
        ("username", ALICE),
        ("password", ALICE_PASSWORD),
        ("audience", KMS),
    ]);
    let login: Value = http
        .post(format!("{}/token", first.issuer))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    first.shutdown().await;

    let key_file = dir.path().join(idp::KEY_FILE);
    let pem = std::fs::read_to_string(&key_file).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // Same port, so the same derived issuer.
    let second = start_in(dir.path(), &format!("listen = \"{addr}\"")).await;
    assert_eq!(second.addr, addr);
    assert_eq!(second.idp().kid(), kid, "the key was reused");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), pem, "and not rewritten");
    let verifier = kms_identity::Verifier::new(kms_identity::IdentityConfig::new(
        KMS,
        vec![kms_identity::IssuerConfig::new(&second.issuer, "acme.test")],
    ))
    .unwrap();
    assert_eq!(verifier.verify(login["access_token"].as_str().unwrap()).await.unwrap().user_id, ALICE);
    // The refresh token from before the restart still works.
    let r = http
        .post(format!("{}/token", second.issuer))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[
            ("grant_type", "refresh_token"),
            ("client_id", CLI),
            ("refresh_token", login["refresh_token"].as_str().unwrap()),
            ("audience", KMS),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    second.shutdown().await;

    // Another data directory: another key, and the old token does not verify against it.
    let other_dir = tempfile::tempdir().unwrap();
    let third = start_in(other_dir.path(), &format!("listen = \"{addr}\"")).await;
    assert_ne!(third.idp().kid(), kid);
    let verifier = kms_identity::Verifier::new(kms_identity::IdentityConfig::new(
        KMS,
        vec![kms_identity::IssuerConfig::new(&third.issuer, "acme.test")],
    ))
    .unwrap();
    assert_eq!(verifier.verify(login["access_token"].as_str().unwrap()).await.unwrap_err(), IdentityError::UnknownKey);
}

#[tokio::test]
async fn a_corrupt_key_file_is_an_error_not_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(idp::KEY_FILE), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
        .unwrap();
    let cfg = idp::Config::from_toml(&toml(dir.path(), "")).unwrap();
    let err = idp::start(cfg).await.unwrap_err();
    assert!(matches!(err, idp::Error::Key(idp::KeyError::BadKey { .. })), "{err}");
}

#[tokio::test]
async fn stops_on_drop() {
    let idp = TestIdp::start().await;
    let url = idp.url("/jwks");
    assert!(idp.http.get(&url).send().await.unwrap().status().is_success());
    drop(idp.running);
    tokio::task::yield_now().await;
    let fresh = reqwest::Client::new();
    assert!(fresh.get(&url).send().await.is_err(), "nothing listens any more");
}
