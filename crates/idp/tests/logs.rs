//! Nothing secret reaches the log: every flow runs with a subscriber that
//! records everything, at every level, and the record is searched for every
//! password, secret, token and device code that went over the wire.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use reqwest::StatusCode;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_hold_no_secrets() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let idp = TestIdp::start().await;
    let mut secrets: Vec<String> = vec![ALICE_PASSWORD.into(), BOB_PASSWORD.into(), BOT_SECRET.into()];
    let wrong = "Wr0ng-but-secret-pw-4242";
    secrets.push(wrong.into());

    // Refused logins, including a password typed into the username field.
    idp.token(&[
        ("grant_type", "password"),
        ("client_id", CLI),
        ("username", ALICE),
        ("password", wrong),
        ("audience", KMS),
    ])
    .await
    .expect_error(400, "invalid_grant");
    idp.token(&[
        ("grant_type", "password"),
        ("client_id", CLI),
        ("username", wrong),
        ("password", wrong),
        ("audience", KMS),
    ])
    .await
    .expect_error(400, "invalid_grant");
    idp.token(&[
        ("grant_type", "password"),
        ("client_id", wrong),
        ("username", ALICE),
        ("password", ALICE_PASSWORD),
        ("audience", KMS),
    ])
    .await
    .expect_error(401, "invalid_client");
    idp.token(&[("grant_type", wrong), ("client_id", CLI)]).await.expect_error(400, "unsupported_grant_type");
    idp.token(&[("grant_type", "client_credentials"), ("client_id", BOT), ("client_secret", wrong), ("audience", KMS)])
        .await
        .expect_error(401, "invalid_client");

    // Successful grants.
    let login = idp.login(ALICE, ALICE_PASSWORD, KMS).await;
    let rt = login["refresh_token"].as_str().unwrap().to_owned();
    secrets.push(login["access_token"].as_str().unwrap().into());
    secrets.push(rt.clone());
    let r = idp
        .token(&[("grant_type", "refresh_token"), ("client_id", CLI), ("refresh_token", &rt), ("audience", CORE)])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    secrets.push(r.json["access_token"].as_str().unwrap().into());
    secrets.push(r.json["refresh_token"].as_str().unwrap().into());
    let r = idp
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", BOT),
            ("client_secret", BOT_SECRET),
            ("audience", KMS),
        ])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    secrets.push(r.json["access_token"].as_str().unwrap().into());

    // A device flow with a wrong password on the page, then an approval.
    let d = idp.post("/device_authorization", &[("client_id", CLI), ("audience", KMS)]).await;
    let device_code = d.json["device_code"].as_str().unwrap().to_owned();
    let user_code = d.json["user_code"].as_str().unwrap().to_owned();
    secrets.push(device_code.clone());
    for password in [wrong, BOB_PASSWORD] {
        let r = idp
            .http
            .post(idp.url("/device"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(&[
                ("user_code", &user_code),
                ("username", BOB),
                ("password", password),
                ("action", "approve"),
            ]))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success() == (password == BOB_PASSWORD));
    }
    let r = idp.token(&[("grant_type", DEVICE_GRANT), ("client_id", CLI), ("device_code", &device_code)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    secrets.push(r.json["access_token"].as_str().unwrap().into());

    idp.running.shutdown().await;
    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    if std::env::var_os("IDP_TEST_SHOW_LOG").is_some() {
        eprintln!("{log}");
    }
    // The capture works, and the log says what happened.
    assert!(log.contains("token issued"), "{log}");
    assert!(log.contains("token request refused"), "{log}");
    assert!(log.contains("wrong username or password"), "{log}");
    for secret in &secrets {
        // Whole values, and the signature part of tokens on its own.
        let needle = secret.rsplit('.').next().unwrap();
        assert!(!log.contains(needle), "a secret reached the log:\n{log}");
    }
}
