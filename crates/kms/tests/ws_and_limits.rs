//! The WebSocket transport (messages both ways, unsolicited resets for deleted
//! sessions) and the per-source limit on unauthenticated RSA work.

#[path = "common/server.rs"]
mod server;

use futures_util::{SinkExt, StreamExt};
use kms_protocol::channel::verify_pushed_reset;
use kms_protocol::{begin_handshake, ClientInfo, Credential, Method, Request, Status};
use server::{config_text, kms_info, Server};
use testkit::Idp;
use tokio_tungstenite::tungstenite::Message;

async fn next_text<S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin>(
    rx: &mut S,
) -> String {
    loop {
        let m = tokio::time::timeout(std::time::Duration::from_secs(5), rx.next())
            .await
            .expect("a frame within 5 s")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            return t.to_string();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_and_pushed_resets() {
    let idp = Idp::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_text(dir.path(), &idp.issuer, "");
    let kms = tokio::task::spawn_blocking(move || Server::start(&cfg)).await.unwrap();
    let info = kms_info(&kms.url).await;
    let tok = idp.token(&[("sub", "alice"), ("aud", "kms://kms.acme.example")]).await;
    let ci = ClientInfo { client_id: "ws-1".into(), credential: Credential::bearer(tok.clone()) };

    let (ws, _) =
        tokio_tungstenite::connect_async(format!("{}/kms/ws", kms.url.replace("http://", "ws://"))).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    let pending = begin_handshake(&info, ci.clone()).unwrap();
    tx.send(Message::Text(pending.wrapped.clone().into())).await.unwrap();
    let session = pending.finish(&info, &next_text(&mut rx).await).unwrap();

    let ping = Request::new(Method::Update, "/ping", Some(ci.clone()));
    tx.send(Message::Text(session.wrap(&ping).unwrap().into())).await.unwrap();
    assert_eq!(session.unwrap(&info, &next_text(&mut rx).await, &ping.request_id).unwrap().status, Status::OK);

    // Delete the session over HTTP: the socket that used it gets a signed reset, unasked.
    let del = Request::new(Method::Delete, session.uri().to_string(), Some(ci.clone()));
    let answer = reqwest::Client::new()
        .post(format!("{}/kms/messages", kms.url))
        .header("content-type", "application/jose")
        .body(session.wrap(&del).unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(session.unwrap(&info, &answer, &del.request_id).unwrap().status, Status::NO_CONTENT);
    let pushed = next_text(&mut rx).await;
    assert_eq!(verify_pushed_reset(&info, &pushed, session.uri()).unwrap(), "session deleted");

    // Oversize frames close the socket rather than reach the engine.
    let (ws, _) =
        tokio_tungstenite::connect_async(format!("{}/kms/ws", kms.url.replace("http://", "ws://"))).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    let _ = tx.send(Message::Text("a".repeat(400_000).into())).await;
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), rx.next()).await.expect("closed within 5 s");
    assert!(matches!(end, None | Some(Err(_)) | Some(Ok(Message::Close(_)))), "{end:?}");
    drop(kms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_rsa_work_is_rate_limited() {
    let idp = Idp::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_text(dir.path(), &idp.issuer, "[limits]\nhandshakes_per_second = 1\nhandshake_burst = 3\n");
    let kms = tokio::task::spawn_blocking(move || Server::start(&cfg)).await.unwrap();
    let http = reqwest::Client::new();
    let mut codes = Vec::new();
    for _ in 0..6 {
        // Garbage costs a signed reset: RSA work, so it counts.
        let r = http
            .post(format!("{}/kms/messages", kms.url))
            .header("content-type", "application/jose")
            .body("garbage")
            .send()
            .await
            .unwrap();
        codes.push(r.status().as_u16());
    }
    assert_eq!(&codes[..3], &[200, 200, 200], "{codes:?}");
    assert!(codes[3..].iter().all(|&c| c == 429), "{codes:?}");
    // /kms/info and health are never throttled.
    assert_eq!(http.get(format!("{}/kms/info", kms.url)).send().await.unwrap().status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = http
        .post(format!("{}/kms/messages", kms.url))
        .header("content-type", "application/jose")
        .body("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the bucket refills");
    drop(kms);
}
