//! Browsers: the orgs' web origins, and no other, may call the core from a
//! page (CORS) and open its WebSocket (which CORS does not cover).

mod common;

use std::sync::Arc;

use common::*;
use testkit::Idp;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::StatusCode as WsStatus;

const APP: &str = "http://acme.localhost:8080";

async fn core() -> Core {
    start_with(Arc::new(Idp::start()), Opts { org: "web_origins = [\"http://acme.localhost:8080/\"]", ..Opts::default() })
        .await
}

#[tokio::test]
async fn preflight_and_answers_name_only_the_orgs_origins() {
    let core = core().await;
    let http = reqwest::Client::new();
    let pre = http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/spaces", core.url))
        .header("origin", APP)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type")
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success(), "{}", pre.status());
    let h = pre.headers();
    assert_eq!(h.get("access-control-allow-origin").unwrap(), APP, "the configured origin, canonical (no slash)");
    let allowed = h.get("access-control-allow-headers").unwrap().to_str().unwrap().to_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"), "{allowed}");
    assert!(h.get("access-control-allow-credentials").is_none(), "tokens are headers, not cookies");

    for (origin, allowed) in [(APP, true), ("http://globex.localhost:8080", false), ("http://acme.localhost:8081", false)] {
        let r = http.get(format!("{}/healthz", core.url)).header("origin", origin).send().await.unwrap();
        assert_eq!(r.headers().get("access-control-allow-origin").is_some(), allowed, "{origin}");
    }
}

#[tokio::test]
async fn the_websocket_refuses_pages_of_other_origins() {
    let core = core().await;
    let url = format!("{}/v1/ws", core.url.replace("http://", "ws://"));
    let with_origin = |origin: &str| {
        let mut req = url.clone().into_client_request().unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        req
    };
    match tokio_tungstenite::connect_async(with_origin("http://evil.localhost")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), WsStatus::FORBIDDEN),
        other => panic!("expected 403, got {:?}", other.map(|(_, r)| r.status())),
    }
    let (_, r) = tokio_tungstenite::connect_async(with_origin(APP)).await.unwrap();
    assert_eq!(r.status(), WsStatus::SWITCHING_PROTOCOLS);
    // Native clients send no Origin, and are not affected.
    let (_, r) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    assert_eq!(r.status(), WsStatus::SWITCHING_PROTOCOLS);
}

#[test]
fn web_origins_must_be_origins() {
    let dir = tempfile::tempdir().unwrap();
    for (bad, why) in [
        ("http://chat.example", "must be https"),
        ("https://chat.example/app", "no path"),
        ("ftp://chat.example", "http or https"),
        ("https://user:pw@chat.example", "without credentials"),
    ] {
        let text = format!(
            "[identity]\naudience = \"{AUD}\"\n[[identity.issuers]]\nissuer = \"https://idp.example\"\norg_domain = \"{ORG}\"\n\n\
             [[orgs]]\ndomain = \"{ORG}\"\nkms_uri = \"kms://{KMS}\"\nweb_origins = [\"{bad}\"]\n"
        );
        let e = custos_core::config::Config::parse(&text, dir.path()).unwrap_err().to_string();
        assert!(e.contains(why) && e.contains("web_origins"), "{bad}: {e}");
    }
}
