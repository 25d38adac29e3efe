//! Webhooks at the core: registration and its refusals, signed deliveries in
//! order from the bot's addition, retries without loss when the endpoint
//! fails, and nothing after the bot's removal.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as Http};
use common::{key, start_core, User};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// (retry number, timestamp, signature, body) of one request.
type Request = (String, String, String, Vec<u8>);

#[derive(Clone, Default)]
struct Received {
    /// Every request, answered or not.
    all: Arc<Mutex<Vec<Request>>>,
    /// How many requests to fail first.
    fail_first: Arc<Mutex<usize>>,
}

async fn receiver(r: Received) -> String {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let r = r.clone();
            async move {
                let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                r.all.lock().unwrap().push((
                    h("x-custos-retry-num"),
                    h("x-custos-request-timestamp"),
                    h("x-custos-signature"),
                    body.to_vec(),
                ));
                let mut f = r.fail_first.lock().unwrap();
                if *f > 0 {
                    *f -= 1;
                    Http::INTERNAL_SERVER_ERROR
                } else {
                    Http::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hook")
}

/// Delivered (answered 200) events so far: the event JSON of each, in order.
fn delivered(r: &Received) -> Vec<Value> {
    let all = r.all.lock().unwrap();
    let mut out: Vec<Value> = Vec::new();
    for (_, _, _, body) in all.iter() {
        let v: Value = serde_json::from_slice(body).unwrap();
        // A retried event appears again; keep the last copy of each id.
        out.retain(|e| e["id"] != v["event"]["id"]);
        out.push(v["event"].clone());
    }
    out
}

async fn wait_for(r: &Received, n: usize) {
    let t = Instant::now();
    while delivered(r).len() < n || *r.fail_first.lock().unwrap() > 0 {
        assert!(t.elapsed() < Duration::from_secs(30), "only {:?}", delivered(r));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_deliveries_in_order_with_retries_and_none_after_removal() {
    let core = start_core("[webhooks]\nallow_http = true\n").await;
    let alice = User::new(&core, "alice").await;
    let bot = User::new(&core, "pollbot").await;
    let (k, uri) = key();
    let space = alice.space().await;
    alice.say(&space, &k, &uri, "before the bot").await;

    // Registration: refusals, then the secret (once).
    let (st, _) = bot.req(Method::PUT, "/v1/webhook", Some(json!({"url": "ftp://x/hook"}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = bot.req(Method::PUT, "/v1/webhook", Some(json!({"url": "http://x/", "extra": 1}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = bot.get("/v1/webhook").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let r = Received::default();
    *r.fail_first.lock().unwrap() = 2;
    let url = receiver(r.clone()).await;
    let (st, reg) = bot.req(Method::PUT, "/v1/webhook", Some(json!({"url": url}))).await;
    assert_eq!(st, StatusCode::OK, "{reg}");
    let secret = reg["secret"].as_str().unwrap().to_string();
    let (st, shown) = bot.get("/v1/webhook").await;
    assert_eq!((st, shown["url"].as_str()), (StatusCode::OK, Some(url.as_str())));
    assert!(shown.get("secret").is_none(), "the secret is shown once");
    let anon = reqwest::Client::new().put(format!("{}/v1/webhook", core.url)).json(&json!({"url": url})).send().await;
    assert_eq!(anon.unwrap().status(), StatusCode::UNAUTHORIZED);

    // Added, then two messages: delivered in order from its own addition, after two failures.
    alice.add(&space, "pollbot@acme.example").await;
    alice.say(&space, &k, &uri, "one").await;
    alice.say(&space, &k, &uri, "two").await;
    wait_for(&r, 3).await;
    let got = delivered(&r);
    let kinds: Vec<&str> = got.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["member_added", "message", "message"], "{got:?}");
    assert_eq!(got[0]["subject"], "pollbot@acme.example");
    let seqs: Vec<i64> = got.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "in order, none missing: {seqs:?}");
    assert!(got.iter().all(|e| e["ciphertext"].as_str().is_none_or(|c| !c.contains("one"))), "ciphertext only");
    // Every request is signed over its timestamp and body; the retried one says so.
    let all = r.all.lock().unwrap().clone();
    assert_eq!(all.len(), 5, "two failures, then three deliveries");
    assert_eq!(all[0].0, "0");
    assert!(all[1].0.parse::<u32>().unwrap() >= 1, "retry number {:?}", all[1].0);
    for (_, ts, sig, body) in &all {
        let expect = custos_core::webhooks::signature(secret.as_bytes(), ts.parse().unwrap(), body);
        assert_eq!(sig, &expect);
    }

    // Removed: nothing of the space reaches it any more.
    let (st, _) = alice.req(Method::DELETE, &format!("/v1/spaces/{space}/members/pollbot@acme.example"), None).await;
    assert_eq!(st, StatusCode::OK);
    alice.say(&space, &k, &uri, "after the bot").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let got = delivered(&r);
    assert_eq!(got.len(), 3, "{got:?}");
    // While a space it is still in goes on being delivered.
    let other = alice.space().await;
    alice.add(&other, "pollbot@acme.example").await;
    alice.say(&other, &k, &uri, "elsewhere").await;
    wait_for(&r, 5).await;
    let got = delivered(&r);
    assert_eq!(got[4]["space_id"].as_str(), Some(other.as_str()));

    // Unregistered: nothing more, and a second removal is a 404.
    let (st, _) = bot.req(Method::DELETE, "/v1/webhook", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = bot.req(Method::DELETE, "/v1/webhook", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn plain_http_endpoints_need_the_development_switch() {
    let core = start_core("").await;
    let bot = User::new(&core, "pollbot").await;
    let (st, b) = bot.req(Method::PUT, "/v1/webhook", Some(json!({"url": "http://127.0.0.1:9/hook"}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["message"].as_str().unwrap().contains("https://"), "{b}");
    let (st, _) = bot.req(Method::PUT, "/v1/webhook", Some(json!({"url": "https://bot.example/hook"}))).await;
    assert_eq!(st, StatusCode::OK);
}
