//! The device flow (RFC 8628) end to end over HTTP: the device's requests,
//! the user's verification page, and the polls in between.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;

struct Started {
    device_code: String,
    user_code: String,
}

async fn start_flow(idp: &TestIdp, extra: &[(&str, &str)]) -> Started {
    let mut form = vec![("client_id", CLI)];
    form.extend_from_slice(extra);
    let r = idp.post("/device_authorization", &form).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers.get("cache-control").unwrap(), "no-store");
    let user_code = r.json["user_code"].as_str().unwrap().to_owned();
    Started { device_code: r.json["device_code"].as_str().unwrap().to_owned(), user_code }
}

async fn poll(idp: &TestIdp, device_code: &str) -> Reply {
    idp.token(&[("grant_type", DEVICE_GRANT), ("client_id", CLI), ("device_code", device_code)]).await
}

/// Submits the verification page.
async fn submit(idp: &TestIdp, form: &[(&str, &str)]) -> (StatusCode, String) {
    let r = idp
        .http
        .post(idp.url("/device"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(form))
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    (status, r.text().await.unwrap())
}

async fn decide(idp: &TestIdp, user_code: &str, user: &str, password: &str, action: &str) -> (StatusCode, String) {
    submit(idp, &[("user_code", user_code), ("username", user), ("password", password), ("action", action)]).await
}

#[tokio::test]
async fn device_authorization_response() {
    let idp = TestIdp::start_with(&format!("default_audience = \"{CORE}\"")).await;
    let r = idp.post("/device_authorization", &[("client_id", CLI)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let j = &r.json;
    let user_code = j["user_code"].as_str().unwrap();
    assert_eq!(user_code.len(), 9);
    assert_eq!(&user_code[4..5], "-");
    assert!(user_code.chars().filter(|c| *c != '-').all(|c| "BCDFGHJKLMNPQRSTVWXZ".contains(c)), "{user_code}");
    assert!(j["device_code"].as_str().unwrap().len() >= 43, "256 bits");
    assert_eq!(j["verification_uri"], idp.url("/device"));
    assert_eq!(j["verification_uri_complete"], format!("{}?user_code={user_code}", idp.url("/device")));
    assert_eq!(j["expires_in"], 600);
    assert_eq!(j["interval"], 1);

    // The page from verification_uri_complete has the code filled in and says what it is.
    let page = idp.http.get(j["verification_uri_complete"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains(&format!("value=\"{user_code}\"")), "{html}");
    assert!(html.contains("Development identity provider"));
    assert!(
        html.contains("name=\"password\"") && html.contains("value=\"approve\"") && html.contains("value=\"deny\"")
    );

    // Refusals: unlisted or missing client, service client, bad audience, no audience without a default.
    idp.post("/device_authorization", &[("client_id", "evil-cli")]).await.expect_error(401, "invalid_client");
    idp.post("/device_authorization", &[]).await.expect_error(400, "invalid_request");
    idp.post("/device_authorization", &[("client_id", BOT)]).await.expect_error(400, "unauthorized_client");
    idp.post("/device_authorization", &[("client_id", CLI), ("audience", "kms://evil.test")])
        .await
        .expect_error(400, "invalid_target");
    let no_default = TestIdp::start().await;
    no_default.post("/device_authorization", &[("client_id", CLI)]).await.expect_error(400, "invalid_request");
}

#[tokio::test]
async fn pending_slow_down_approve_token() {
    let idp = TestIdp::start().await;
    let flow = start_flow(&idp, &[("audience", KMS), ("scope", "kms.read")]).await;

    poll(&idp, &flow.device_code).await.expect_error(400, "authorization_pending");
    poll(&idp, &flow.device_code).await.expect_error(400, "slow_down");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    poll(&idp, &flow.device_code).await.expect_error(400, "authorization_pending");

    // The user approves, typing the code in lower case without the dash.
    let typed = flow.user_code.replace('-', "").to_lowercase();
    let (status, html) = decide(&idp, &typed, ALICE, ALICE_PASSWORD, "approve").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("approved") && html.contains(ALICE), "{html}");
    assert!(!html.contains(ALICE_PASSWORD));

    // Approved tokens are handed out without waiting for the interval.
    let r = poll(&idp, &flow.device_code).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["scope"], "kms.read");
    let at = r.json["access_token"].as_str().unwrap();
    let who = idp.verifier(KMS).verify(at).await.unwrap();
    assert_eq!(who.user_id, ALICE);
    assert_eq!(who.client_id.as_deref(), Some(CLI));
    assert_eq!(who.scope, ["kms.read"]);
    // With a refresh token for the other audience.
    let rt = r.json["refresh_token"].as_str().unwrap();
    let r2 = idp
        .token(&[("grant_type", "refresh_token"), ("client_id", CLI), ("refresh_token", rt), ("audience", CORE)])
        .await;
    assert_eq!(r2.status, StatusCode::OK, "{}", r2.text);
    assert_eq!(idp.verifier(CORE).verify(r2.json["access_token"].as_str().unwrap()).await.unwrap().user_id, ALICE);

    // The device code is redeemed once.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    poll(&idp, &flow.device_code).await.expect_error(400, "invalid_grant");
}

#[tokio::test]
async fn token_request_may_name_another_audience() {
    let idp = TestIdp::start().await;
    let flow = start_flow(&idp, &[("audience", KMS)]).await;
    decide(&idp, &flow.user_code, BOB, BOB_PASSWORD, "approve").await;
    // An audience not configured is refused without using up the approval.
    idp.token(&[
        ("grant_type", DEVICE_GRANT),
        ("client_id", CLI),
        ("device_code", &flow.device_code),
        ("audience", "x:y"),
    ])
    .await
    .expect_error(400, "invalid_target");
    let r = idp
        .token(&[
            ("grant_type", DEVICE_GRANT),
            ("client_id", CLI),
            ("device_code", &flow.device_code),
            ("audience", CORE),
        ])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(jwt_part(r.json["access_token"].as_str().unwrap(), 1)["aud"], CORE);
    assert_eq!(jwt_part(r.json["access_token"].as_str().unwrap(), 1)["sub"], BOB);
}

#[tokio::test]
async fn deny_gives_access_denied() {
    let idp = TestIdp::start().await;
    let flow = start_flow(&idp, &[("audience", KMS)]).await;
    let (status, html) = decide(&idp, &flow.user_code, BOB, BOB_PASSWORD, "deny").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Denied"), "{html}");
    poll(&idp, &flow.device_code).await.expect_error(400, "access_denied");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    poll(&idp, &flow.device_code).await.expect_error(400, "access_denied");
    // A denied code cannot be approved afterwards.
    let (status, html) = decide(&idp, &flow.user_code, BOB, BOB_PASSWORD, "approve").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("already been approved or denied"), "{html}");
    poll(&idp, &flow.device_code).await.expect_error(400, "access_denied");
}

#[tokio::test]
async fn expired_code_gives_expired_token() {
    let idp = TestIdp::start_with("device_code_ttl_secs = 1").await;
    let flow = start_flow(&idp, &[("audience", KMS)]).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    poll(&idp, &flow.device_code).await.expect_error(400, "expired_token");
    let (status, html) = decide(&idp, &flow.user_code, ALICE, ALICE_PASSWORD, "approve").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("expired"), "{html}");
    poll(&idp, &flow.device_code).await.expect_error(400, "expired_token");
}

#[tokio::test]
async fn wrong_password_on_the_page_approves_nothing() {
    let idp = TestIdp::start().await;
    let flow = start_flow(&idp, &[("audience", KMS)]).await;
    let wrong = "not-alices-password-77";
    for (user, password) in [(ALICE, wrong), ("mallory@acme.test", wrong), (ALICE, BOB_PASSWORD), (BOB, ALICE_PASSWORD)]
    {
        for action in ["approve", "deny"] {
            let (status, html) = decide(&idp, &flow.user_code, user, password, action).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
            assert!(html.contains("Wrong username or password"), "{html}");
            assert!(!html.contains(password), "the password is not written back");
            // The code and username are kept in the re-rendered form.
            assert!(html.contains(&flow.user_code) && html.contains(user), "{html}");
        }
    }
    // Missing fields and a missing action approve nothing either.
    let (status, _) = submit(&idp, &[("user_code", &flow.user_code), ("username", ALICE), ("action", "approve")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) =
        submit(&idp, &[("user_code", &flow.user_code), ("username", ALICE), ("password", ALICE_PASSWORD)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = submit(
        &idp,
        &[
            ("user_code", &flow.user_code),
            ("username", ALICE),
            ("password", ALICE_PASSWORD),
            ("action", "approve"),
            ("action", "deny"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a repeated action is not a decision");
    let json_body = idp
        .http
        .post(idp.url("/device"))
        .json(&serde_json::json!({"user_code": flow.user_code, "username": ALICE, "password": ALICE_PASSWORD, "action": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_body.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    poll(&idp, &flow.device_code).await.expect_error(400, "authorization_pending");
    // And the right password still works afterwards.
    let (status, _) = decide(&idp, &flow.user_code, ALICE, ALICE_PASSWORD, "approve").await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = poll(&idp, &flow.device_code).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn a_user_code_is_used_once() {
    let idp = TestIdp::start().await;
    let flow = start_flow(&idp, &[("audience", KMS)]).await;
    let (status, _) = decide(&idp, &flow.user_code, ALICE, ALICE_PASSWORD, "approve").await;
    assert_eq!(status, StatusCode::OK);
    // Bob cannot take the same code over, nor deny it, nor can Alice approve it again.
    for (user, password, action) in
        [(BOB, BOB_PASSWORD, "approve"), (BOB, BOB_PASSWORD, "deny"), (ALICE, ALICE_PASSWORD, "approve")]
    {
        let (status, html) = decide(&idp, &flow.user_code, user, password, action).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
        assert!(html.contains("already been approved or denied"), "{html}");
    }
    let r = poll(&idp, &flow.device_code).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(jwt_part(r.json["access_token"].as_str().unwrap(), 1)["sub"], ALICE, "the first decision stands");
    // Once redeemed, the code is gone.
    let (status, html) = decide(&idp, &flow.user_code, ALICE, ALICE_PASSWORD, "approve").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("not valid"), "{html}");
}

#[tokio::test]
async fn device_codes_are_bound_to_their_client_and_unguessable() {
    let idp = TestIdp::start().await;
    let flow = start_flow(&idp, &[("audience", KMS)]).await;
    decide(&idp, &flow.user_code, ALICE, ALICE_PASSWORD, "approve").await;
    // Another public client cannot redeem it, and trying does not consume it.
    idp.token(&[("grant_type", DEVICE_GRANT), ("client_id", "other-cli"), ("device_code", &flow.device_code)])
        .await
        .expect_error(400, "invalid_grant");
    idp.token(&[("grant_type", DEVICE_GRANT), ("client_id", "evil-cli"), ("device_code", &flow.device_code)])
        .await
        .expect_error(401, "invalid_client");
    // The user code is not the device code; an unknown code and none at all are refused.
    for bad in [flow.user_code.as_str(), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        poll(&idp, bad).await.expect_error(400, "invalid_grant");
    }
    idp.token(&[("grant_type", DEVICE_GRANT), ("client_id", CLI)]).await.expect_error(400, "invalid_request");
    let r = poll(&idp, &flow.device_code).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Unknown user codes on the page.
    for code in ["BCDF-GHJK", "AEIO-UAEI", "", "<b>"] {
        let (status, html) = decide(&idp, code, ALICE, ALICE_PASSWORD, "approve").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{code}: {html}");
        assert!(!html.contains("<b>"), "escaped");
    }
}

#[tokio::test]
async fn page_escapes_the_code_from_the_url() {
    let idp = TestIdp::start().await;
    let url = format!("{}?user_code=%22%3E%3Cscript%3Ealert(1)%3C/script%3E", idp.url("/device"));
    let r = idp.http.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("&lt;script&gt;"), "{html}");
    let plain: Value =
        serde_json::from_str(&idp.http.get(idp.url("/jwks")).send().await.unwrap().text().await.unwrap()).unwrap();
    assert!(plain["keys"].is_array());
}
