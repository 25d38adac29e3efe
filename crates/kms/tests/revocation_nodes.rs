//! A revocation made through one KMS node applies on another within a
//! second: the revoked bot's open WebSocket there gets a signed 499 unasked,
//! and its next request there is refused. Two nodes on one PostgreSQL.
//!
//! Needs PostgreSQL (`CUSTOS_TEST_POSTGRES_URL`, default
//! `postgres://127.0.0.1:5432/test`). Without one it says SKIPPED by name,
//! except under CI (`CI` set), where it fails.

#[path = "common/server.rs"]
mod server;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use kms_protocol::channel::verify_pushed_reset;
use kms_protocol::{begin_handshake, ClientInfo, Credential, Method, Request, Status};
use serde_json::json;
use server::{call, config_text, http_session, kms_info, post_message as post, with_body, Server};
use testkit::pg::TempDatabase;
use testkit::Idp;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_node_resets_the_bot_on_another_within_a_second() {
    // TempDatabase blocks on its own runtime: create and drop it off this one.
    let db = tokio::task::spawn_blocking(|| {
        TempDatabase::create("revocation_nodes", "a_revocation_on_one_node_resets_the_bot")
    })
    .await
    .unwrap();
    let Some(db) = db else { return };
    let idp = Idp::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_text(dir.path(), &idp.issuer, &format!("database_url = \"{}\"", db.url));
    let (cfg_a, cfg_b) = (cfg.clone(), cfg);
    let a = tokio::task::spawn_blocking(move || Server::start(&cfg_a)).await.unwrap();
    let b = tokio::task::spawn_blocking(move || Server::start(&cfg_b)).await.unwrap();
    let info = kms_info(&a.url).await;
    let token = |sub: &'static str| {
        let idp = &idp;
        async move { idp.token(&[("sub", sub), ("aud", "kms://kms.acme.example")]).await }
    };
    let admin_ci = ClientInfo { client_id: "console".into(), credential: Credential::bearer(token("admin").await) };
    let bot_ci = ClientInfo { client_id: "bot-1".into(), credential: Credential::bearer(token("pollbot").await) };

    // The admin allows the bot (on node B).
    let admin = http_session(&b.url, &info, &admin_ci).await;
    let set = |state: &str, version: u64| {
        with_body(
            Request::new(Method::Update, "/policy", Some(admin_ci.clone())),
            json!({"policy": {"services": {"pollbot": {"kind": "bot", "state": state}}}, "policyVersion": version}),
        )
    };
    let r = call(&b.url, &info, &admin, set("allowed", 0)).await;
    assert_eq!(r.status, Status::OK, "{:?}", r.reason);

    // The bot works over a WebSocket on node A.
    let (ws, _) =
        tokio_tungstenite::connect_async(format!("{}/kms/ws", a.url.replace("http://", "ws://"))).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    let mut next = async move || loop {
        let m = tokio::time::timeout(Duration::from_secs(5), rx.next()).await.expect("a frame within 5 s");
        if let Some(Ok(Message::Text(t))) = m {
            return t.to_string();
        }
    };
    let pending = begin_handshake(&info, bot_ci.clone()).unwrap();
    tx.send(Message::Text(pending.wrapped.clone().into())).await.unwrap();
    let bot = pending.finish(&info, &next().await).unwrap();
    let ping = Request::new(Method::Update, "/ping", Some(bot_ci.clone()));
    tx.send(Message::Text(bot.wrap(&ping).unwrap().into())).await.unwrap();
    assert_eq!(bot.unwrap(&info, &next().await, &ping.request_id).unwrap().status, Status::OK);

    // Revoked on node B: node A pushes a signed reset to the bot's socket within a second.
    let t = Instant::now();
    let r = call(&b.url, &info, &admin, set("revoked", 1)).await;
    assert_eq!(r.status, Status::OK, "{:?}", r.reason);
    let pushed = next().await;
    let elapsed = t.elapsed();
    assert_eq!(verify_pushed_reset(&info, &pushed, bot.uri()).unwrap(), "revoked by the org's policy");
    assert!(elapsed < Duration::from_secs(1), "reset pushed after {elapsed:?}");
    // And its requests on node A are refused, over HTTP too.
    let r = call(
        &a.url,
        &info,
        &http_session(&b.url, &info, &admin_ci).await,
        Request::new(Method::Update, "/ping", Some(admin_ci.clone())),
    )
    .await;
    assert_eq!(r.status, Status::OK, "the admin is unaffected");
    let pending = begin_handshake(&info, bot_ci.clone()).unwrap();
    let answer = post(&a.url, pending.wrapped.clone()).await;
    let e = pending.finish(&info, &answer).unwrap_err();
    assert!(e.to_string().contains("the org has revoked this service"), "{e}");
    tokio::task::spawn_blocking(move || drop((a, b, db))).await.unwrap();
}
