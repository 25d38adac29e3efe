//! The authorization code flow with PKCE, as a browser app uses it: the
//! sign-in page, the redirect back with a code, the code redeemed once for
//! a single-audience token (RFC 8707 `resource`), the refresh grant minting
//! the second audience's token, cross-origin reads for the app's origin only,
//! and every refusal.

mod common;

use common::*;
use reqwest::StatusCode;

const WEB: &str = "custos-web";
const APP: &str = "http://acme.localhost:8080";
const REDIRECT: &str = "http://acme.localhost:8080/";
// RFC 7636 appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn web_clients() -> String {
    format!("[[web_clients]]\nclient_id = \"{WEB}\"\nredirect_uris = [\"{REDIRECT}\"]\n")
}

async fn idp() -> TestIdp {
    let mut idp = TestIdp::start_with(&web_clients()).await;
    idp.http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    idp
}

fn authorize_query(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut q: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", WEB),
        ("redirect_uri", REDIRECT),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
        ("state", "st-123"),
        ("resource", CORE),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        q.retain(|(name, _)| name != k);
        if !v.is_empty() {
            q.push((k.to_string(), v.to_string()));
        }
    }
    q
}

async fn get_authorize(idp: &TestIdp, extra: &[(&str, &str)]) -> Reply {
    let q = authorize_query(extra);
    let pairs: Vec<(&str, &str)> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = idp.http.get(format!("{}?{}", idp.url("/authorize"), encode(&pairs))).send().await.unwrap();
    Reply::read(r).await
}

async fn sign_in(idp: &TestIdp, extra: &[(&str, &str)], user: &str, password: &str, action: &str) -> Reply {
    let mut q = authorize_query(extra);
    q.extend([("username".into(), user.into()), ("password".into(), password.into()), ("action".into(), action.into())]);
    let pairs: Vec<(&str, &str)> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    idp.post("/authorize", &pairs).await
}

fn location(r: &Reply) -> url::Url {
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    url::Url::parse(r.headers.get("location").unwrap().to_str().unwrap()).unwrap()
}

fn param(u: &url::Url, name: &str) -> Option<String> {
    u.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

async fn code_for(idp: &TestIdp) -> String {
    let r = sign_in(idp, &[], ALICE, ALICE_PASSWORD, "login").await;
    let back = location(&r);
    assert!(back.as_str().starts_with(REDIRECT));
    assert_eq!(param(&back, "state").as_deref(), Some("st-123"));
    assert_eq!(param(&back, "iss").as_deref(), Some(idp.issuer()), "RFC 9207");
    param(&back, "code").unwrap()
}

async fn redeem(idp: &TestIdp, code: &str, extra: &[(&str, &str)]) -> Reply {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("client_id", WEB),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    for (k, v) in extra {
        form.retain(|(name, _)| name != k);
        form.push((k, v));
    }
    idp.token(&form).await
}

#[tokio::test]
async fn sign_in_code_tokens_for_the_core_and_the_kms() {
    let idp = idp().await;
    let disc: serde_json::Value = idp.http.get(idp.url("/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    assert_eq!(disc["authorization_endpoint"], idp.url("/authorize"));
    assert_eq!(disc["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert!(disc["grant_types_supported"].as_array().unwrap().contains(&"authorization_code".into()));

    // The page: a form carrying the request, a CSP that lets it return to the app only.
    let page = get_authorize(&idp, &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.contains("name=\"code_challenge\" value=\"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM\""));
    assert!(page.text.contains("Sign in to continue to <strong>http://acme.localhost:8080</strong>"));
    let csp = page.headers.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("form-action 'self' http://acme.localhost:8080;"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"));

    let code = code_for(&idp).await;
    let core = redeem(&idp, &code, &[("resource", CORE)]).await;
    assert_eq!(core.status, StatusCode::OK, "{}", core.text);
    let claims = idp.verifier(CORE).verify(core.json["access_token"].as_str().unwrap()).await.unwrap();
    assert_eq!(claims.user_id, ALICE);
    assert_eq!(jwt_part(core.json["access_token"].as_str().unwrap(), 1)["aud"], CORE, "one audience");
    assert_eq!(core.headers.get("cache-control").unwrap(), "no-store");

    // The KMS's token from the refresh token, as the web client.
    let rt = core.json["refresh_token"].as_str().unwrap();
    let kms = idp.token(&[("grant_type", "refresh_token"), ("client_id", WEB), ("refresh_token", rt), ("resource", KMS)]).await;
    assert_eq!(kms.status, StatusCode::OK, "{}", kms.text);
    assert_eq!(jwt_part(kms.json["access_token"].as_str().unwrap(), 1)["aud"], KMS);
    assert_eq!(jwt_part(kms.json["access_token"].as_str().unwrap(), 1)["client_id"], WEB);

    // Once only.
    redeem(&idp, &code, &[("resource", CORE)]).await.expect_error(400, "invalid_grant");
}

#[tokio::test]
async fn the_code_is_bound_to_its_client_uri_and_verifier_and_burns_on_failure() {
    let idp = idp().await;
    let code = code_for(&idp).await;
    redeem(&idp, &code, &[("code_verifier", "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl")]).await.expect_error(400, "invalid_grant");
    // The right verifier now is too late: the failed attempt used the code up.
    redeem(&idp, &code, &[]).await.expect_error(400, "invalid_grant");

    let code = code_for(&idp).await;
    redeem(&idp, &code, &[("redirect_uri", "http://acme.localhost:8080/other")]).await.expect_error(400, "invalid_grant");
    let code = code_for(&idp).await;
    redeem(&idp, &code, &[("client_id", CLI)]).await.expect_error(400, "unauthorized_client");
    let code = code_for(&idp).await;
    redeem(&idp, &code, &[("code_verifier", "short")]).await.expect_error(400, "invalid_request");
    let code = code_for(&idp).await;
    let r = redeem(&idp, &code, &[("resource", "https://elsewhere.example")]).await;
    r.expect_error(400, "invalid_target");
    // A bad audience is refused before the code is spent.
    assert_eq!(redeem(&idp, &code, &[("resource", CORE)]).await.status, StatusCode::OK);
    assert!(!r.text.contains(VERIFIER) && !r.text.contains(&code), "errors quote nothing");

    // Web clients use this flow only; CLI clients cannot use it.
    idp.token(&[("grant_type", "password"), ("client_id", WEB), ("username", ALICE), ("password", ALICE_PASSWORD), ("audience", CORE)])
        .await
        .expect_error(400, "unauthorized_client");
}

#[tokio::test]
async fn requests_that_cannot_be_served_are_refused_on_the_page_or_sent_back() {
    let idp = idp().await;
    // No redirect to an address the app did not register, nor for an unknown app.
    for extra in [[("redirect_uri", "http://evil.localhost/")], [("client_id", "nobody")], [("client_id", "")]] {
        let r = get_authorize(&idp, &extra).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{extra:?}");
        assert!(r.headers.get("location").is_none());
        assert!(r.text.contains("role=\"alert\""));
        assert!(!r.text.contains("evil.localhost"), "the page does not echo the address");
    }
    // Errors the app can handle go back to it, with its state.
    for (extra, error) in [
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge", "not-a-sha256")], "invalid_request"),
        (vec![("response_type", "token")], "unsupported_response_type"),
        (vec![("resource", "https://elsewhere.example")], "invalid_target"),
        (vec![("scope", "a  b")], "invalid_scope"),
    ] {
        let back = location(&get_authorize(&idp, &extra).await);
        assert_eq!(param(&back, "error").as_deref(), Some(error), "{extra:?}");
        assert_eq!(param(&back, "state").as_deref(), Some("st-123"));
        assert!(param(&back, "code").is_none());
    }
    // A wrong password: the form again, the username kept, the password not.
    let r = sign_in(&idp, &[], ALICE, "wrong-password", "login").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text.contains("Wrong username or password.") && r.text.contains("value=\"alice@acme.test\""));
    assert!(!r.text.contains("wrong-password"));
    // Cancel: back to the app with access_denied.
    let back = location(&sign_in(&idp, &[], "", "", "cancel").await);
    assert_eq!(param(&back, "error").as_deref(), Some("access_denied"));
    // A tampered hidden field is checked again on submit.
    let r = sign_in(&idp, &[("redirect_uri", "http://evil.localhost/")], ALICE, ALICE_PASSWORD, "login").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn cross_origin_reads_for_the_apps_origin_only() {
    let idp = idp().await;
    for (origin, allowed) in [(APP, true), ("http://globex.localhost:8080", false), ("null", false)] {
        for path in ["/.well-known/openid-configuration", "/jwks"] {
            let r = idp.http.get(idp.url(path)).header("origin", origin).send().await.unwrap();
            assert_eq!(r.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_string()), allowed.then(|| origin.to_string()), "{origin} {path}");
        }
        let r = idp
            .http
            .post(idp.url("/token"))
            .header("origin", origin)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=nope")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers().get("access-control-allow-origin").is_some(), allowed, "{origin}");
    }
    let pre = idp.http.request(reqwest::Method::OPTIONS, idp.url("/token")).header("origin", APP).send().await.unwrap();
    assert_eq!(pre.status(), StatusCode::NO_CONTENT);
    assert_eq!(pre.headers().get("access-control-allow-origin").unwrap(), APP);
    // The sign-in page is never readable cross-origin.
    let r = idp.http.get(idp.url("/authorize")).header("origin", APP).send().await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[test]
fn web_client_configuration_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    for (clients, expect) in [
        ("[[web_clients]]\nclient_id = \"w\"\nredirect_uris = [\"http://app.example/\"]", "must be https"),
        ("[[web_clients]]\nclient_id = \"w\"\nredirect_uris = [\"https://app.example/#x\"]", "fragment"),
        ("[[web_clients]]\nclient_id = \"w\"\nredirect_uris = []", "at least one"),
        ("[[web_clients]]\nclient_id = \"custos-cli\"\nredirect_uris = [\"https://app.example/\"]", "custos-cli"),
    ] {
        let e = match idp::Config::from_toml(&toml(dir.path(), clients)) {
            Err(e) => e.to_string(),
            Ok(mut cfg) => {
                cfg.issuer = Some("http://127.0.0.1:9".into());
                idp::Idp::new(cfg).expect_err(clients).to_string()
            }
        };
        assert!(e.contains(expect), "{clients}: {e}");
    }
}
