//! The core over HTTP and WebSocket, with tokens from a real IdP: spaces,
//! roles, ciphertext events, history and sync, files, read markers, live
//! delivery with resume, the KMS relay, OpenAPI, and refusals.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

mod common;

use common::{key, resource, sealed, start_core, User, KMS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spaces_members_events_and_refusals() {
    let core = start_core("").await;
    let alice = User::new(&core, "alice").await;
    let bob = User::new(&core, "bob").await;
    let carol = User::new(&core, "carol").await;
    let (k, ku) = key();

    let (st, space) =
        alice.post("/v1/spaces", json!({"resource_uri": resource(), "title": sealed(&k, &ku, "Project X")})).await;
    assert_eq!(st, StatusCode::CREATED, "{space}");
    let sid = space["id"].as_str().unwrap().to_string();
    assert_eq!(space["creator"], "alice@acme.example");

    // Not a member: the space does not exist for you.
    assert_eq!(bob.get(&format!("/v1/spaces/{sid}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        bob.post(&format!("/v1/spaces/{sid}/events"), json!({"kind": "message", "sealed": sealed(&k, &ku, "hi")}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // Add Bob (moderator Alice); Bob (member) cannot add Carol.
    assert_eq!(
        alice.post(&format!("/v1/spaces/{sid}/members"), json!({"user_id": "bob@acme.example"})).await.0,
        StatusCode::OK
    );
    assert_eq!(
        bob.post(&format!("/v1/spaces/{sid}/members"), json!({"user_id": "carol@acme.example"})).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        alice.post(&format!("/v1/spaces/{sid}/members"), json!({"user_id": "dave@evil.example"})).await.0,
        StatusCode::BAD_REQUEST
    );

    // Messages, a reply, an edit, a reaction, a deletion.
    let path = format!("/v1/spaces/{sid}/events");
    async fn ev(u: &User, path: &str, body: Value) -> (StatusCode, Value) {
        u.post(path, body).await
    }
    let (st, m1) =
        ev(&bob, &path, json!({"kind": "message", "client_event_id": "c1", "sealed": sealed(&k, &ku, "hello")})).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(m1["sender"], "bob@acme.example", "the sender comes from the token");
    let m1id = m1["id"].as_str().unwrap().to_string();
    // A retried post is not stored twice.
    let (st, again) =
        ev(&bob, &path, json!({"kind": "message", "client_event_id": "c1", "sealed": sealed(&k, &ku, "hello")})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(again["seq"], m1["seq"]);
    let (st, reply) =
        ev(&alice, &path, json!({"kind": "message", "parent": m1id, "sealed": sealed(&k, &ku, "hi bob")})).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(reply["parent"], m1id);
    assert_eq!(
        ev(&alice, &path, json!({"kind": "edit", "target": m1id, "sealed": sealed(&k, &ku, "x")})).await.0,
        StatusCode::FORBIDDEN,
        "only the sender edits"
    );
    assert_eq!(
        ev(&bob, &path, json!({"kind": "edit", "target": m1id, "sealed": sealed(&k, &ku, "hello!")})).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        ev(&alice, &path, json!({"kind": "reaction", "target": m1id, "sealed": sealed(&k, &ku, "+1")})).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        ev(&alice, &path, json!({"kind": "delete", "target": m1id})).await.0,
        StatusCode::CREATED,
        "moderators delete"
    );

    // Refusals: nothing stored.
    let (_, before) = alice.get(&format!("/v1/spaces/{sid}/events?after=0&limit=500")).await;
    let n_before = before["events"].as_array().unwrap().len();
    let (k2, _) = key();
    let cases = [
        json!({"kind": "message", "sealed": {"ciphertext": "not-a-jwe", "key_uri": ku}}),
        json!({"kind": "message", "sealed": {"ciphertext": sealed(&k, &ku, "x")["ciphertext"], "key_uri": format!("kms://{KMS}/keys/other")}}),
        json!({"kind": "message", "sealed": sealed(&k2, "kms://kms.evil.example/keys/x", "x")}),
        json!({"kind": "message"}),
        json!({"kind": "message", "sender": "alice@acme.example", "sealed": sealed(&k, &ku, "spoof")}),
        json!({"kind": "member_added", "sealed": sealed(&k, &ku, "x")}),
        json!({"kind": "edit", "target": "00000000-0000-0000-0000-000000000000", "sealed": sealed(&k, &ku, "x")}),
        json!({"kind": "delete", "target": m1id, "sealed": sealed(&k, &ku, "x")}),
        json!({"kind": "message", "sealed": sealed(&k, &ku, &"x".repeat(70_000))}),
        json!({"kind": "message", "parent": "../etc", "sealed": sealed(&k, &ku, "x")}),
    ];
    for (i, c) in cases.iter().enumerate() {
        let (st, body) = ev(&bob, &path, c.clone()).await;
        assert!(st.is_client_error(), "case {i}: {st} {body}");
        assert!(body["error"].is_string(), "case {i}: a clear error: {body}");
        assert!(!body.to_string().contains("spoof"), "errors never echo content");
    }
    let (_, after) = alice.get(&format!("/v1/spaces/{sid}/events?after=0&limit=500")).await;
    assert_eq!(after["events"].as_array().unwrap().len(), n_before, "refused posts stored nothing");
    // Unknown ids and no token.
    assert_eq!(alice.get("/v1/spaces/00000000-0000-0000-0000-000000000000").await.0, StatusCode::NOT_FOUND);
    assert_eq!(reqwest::get(format!("{}/v1/spaces", core.url)).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    // A token for another audience (e.g. a KMS's) is refused.
    let kms_token = core.idp.token(&[("sub", "alice"), ("aud", "kms://kms.acme.example")]).await;
    let r = reqwest::Client::new().get(format!("{}/v1/spaces", core.url)).bearer_auth(kms_token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // History pages (newest first) and sync (oldest first).
    let (_, page) = alice.get(&format!("/v1/spaces/{sid}/events?before=1000&limit=2")).await;
    let seqs: Vec<i64> = page["events"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs.len(), 2);
    assert!(seqs[0] > seqs[1]);
    let (_, sync) = alice.get(&format!("/v1/spaces/{sid}/events?after={}", seqs[1])).await;
    assert_eq!(sync["events"][0]["seq"].as_i64().unwrap(), seqs[1] + 1);

    // Read markers move forward only, and not past the end.
    assert_eq!(
        bob.req(reqwest::Method::PUT, &format!("/v1/spaces/{sid}/read-marker"), Some(json!({"seq": 3}))).await.1["seq"],
        3
    );
    assert_eq!(
        bob.req(reqwest::Method::PUT, &format!("/v1/spaces/{sid}/read-marker"), Some(json!({"seq": 2}))).await.1["seq"],
        3
    );
    assert_eq!(
        bob.req(reqwest::Method::PUT, &format!("/v1/spaces/{sid}/read-marker"), Some(json!({"seq": 9999}))).await.0,
        StatusCode::BAD_REQUEST
    );

    // Listing, and leaving.
    let (_, list) = bob.get("/v1/spaces").await;
    assert_eq!(list["spaces"].as_array().unwrap().len(), 1);
    assert_eq!(
        bob.req(reqwest::Method::DELETE, &format!("/v1/spaces/{sid}/members/bob@acme.example"), None).await.0,
        StatusCode::OK
    );
    assert_eq!(bob.get(&format!("/v1/spaces/{sid}")).await.0, StatusCode::NOT_FOUND);
    let _ = carol;

    // OpenAPI.
    let doc: Value = reqwest::get(format!("{}/openapi.json", core.url)).await.unwrap().json().await.unwrap();
    assert!(doc["paths"]["/v1/spaces/{id}/events"].is_object());
    assert!(doc["paths"]["/kms/{domain}/messages"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_chunked_resumable() {
    let core = start_core("[limits]\nmax_chunk_bytes = 4096\nmax_file_bytes = 100000\n").await;
    let alice = User::new(&core, "alice").await;
    let bob = User::new(&core, "bob").await;
    let (k, ku) = key();
    let (_, space) = alice.post("/v1/spaces", json!({"resource_uri": resource()})).await;
    let sid = space["id"].as_str().unwrap().to_string();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 13 % 251) as u8).collect();

    assert_eq!(
        alice
            .post(
                &format!("/v1/spaces/{sid}/files"),
                json!({"size": 200_000, "chunk_size": 4096, "meta": sealed(&k, &ku, "a.txt")})
            )
            .await
            .0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        alice
            .post(
                &format!("/v1/spaces/{sid}/files"),
                json!({"size": 10, "chunk_size": 8192, "meta": sealed(&k, &ku, "a.txt")})
            )
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let (st, f) = alice
        .post(
            &format!("/v1/spaces/{sid}/files"),
            json!({"size": data.len(), "chunk_size": 4096, "meta": sealed(&k, &ku, "report.pdf")}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{f}");
    let fid = f["id"].as_str().unwrap().to_string();
    let put = |i: usize, body: Vec<u8>| {
        let (http, url, tok, fid) = (alice.http.clone(), core.url.clone(), alice.token.clone(), fid.clone());
        async move {
            http.put(format!("{url}/v1/files/{fid}/chunks/{i}"))
                .bearer_auth(tok)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(put(0, data[..4096].to_vec()).await, StatusCode::NO_CONTENT);
    assert_eq!(put(2, data[8192..].to_vec()).await, StatusCode::NO_CONTENT);
    assert_eq!(put(1, data[4096..8000].to_vec()).await, StatusCode::BAD_REQUEST, "wrong size");
    assert_eq!(put(3, vec![0; 10]).await, StatusCode::BAD_REQUEST, "no such chunk");
    // Not complete yet: resume tells what is missing.
    assert_eq!(alice.post(&format!("/v1/files/{fid}/complete"), json!({})).await.0, StatusCode::CONFLICT);
    let (_, c) = alice.get(&format!("/v1/files/{fid}/chunks")).await;
    assert_eq!(c["stored"], json!([0, 2]));
    assert_eq!(put(1, data[4096..8192].to_vec()).await, StatusCode::NO_CONTENT);
    let (st, ready) = alice.post(&format!("/v1/files/{fid}/complete"), json!({})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(ready["kind"], "file_ready");
    // Download; a non-member cannot.
    let mut got = Vec::new();
    for i in 0..3 {
        let r = alice
            .http
            .get(format!("{}/v1/files/{fid}/chunks/{i}", core.url))
            .bearer_auth(&alice.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        got.extend(r.bytes().await.unwrap());
    }
    assert_eq!(got, data);
    let r = bob.http.get(format!("{}/v1/files/{fid}/chunks/0", core.url)).bearer_auth(&bob.token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

async fn next_frame(
    rx: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), rx.next())
            .await
            .expect("a frame within 5 s")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_delivery_resume_join_and_removal() {
    let core = start_core("").await;
    let alice = User::new(&core, "alice").await;
    let bob = User::new(&core, "bob").await;
    let (k, ku) = key();
    let (_, space) = alice.post("/v1/spaces", json!({"resource_uri": resource()})).await;
    let sid = space["id"].as_str().unwrap().to_string();

    // Bob connects before he is a member; joining starts delivery.
    let ws_url = format!("{}/v1/ws", core.url.replace("http://", "ws://"));
    let (ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::Text(json!({"type": "hello", "token": bob.token}).to_string().into())).await.unwrap();
    assert_eq!(next_frame(&mut rx).await["type"], "ready");
    alice.post(&format!("/v1/spaces/{sid}/members"), json!({"user_id": "bob@acme.example"})).await;
    let f = next_frame(&mut rx).await;
    assert_eq!(f["event"]["kind"], "member_added");
    assert_eq!(f["event"]["subject"], "bob@acme.example");
    for i in 0..5 {
        alice
            .post(
                &format!("/v1/spaces/{sid}/events"),
                json!({"kind": "message", "sealed": sealed(&k, &ku, &format!("m{i}"))}),
            )
            .await;
    }
    let mut last = 0;
    for _ in 0..5 {
        let f = next_frame(&mut rx).await;
        assert_eq!(f["event"]["kind"], "message");
        let seq = f["event"]["seq"].as_i64().unwrap();
        assert!(seq > last, "in order");
        last = seq;
    }
    drop((tx, rx));

    // Offline: three more. Resume from `last` delivers exactly those.
    for i in 0..3 {
        alice
            .post(
                &format!("/v1/spaces/{sid}/events"),
                json!({"kind": "message", "sealed": sealed(&k, &ku, &format!("n{i}"))}),
            )
            .await;
    }
    let (ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::Text(
        json!({"type": "hello", "token": bob.token, "since": {sid.clone(): last}}).to_string().into(),
    ))
    .await
    .unwrap();
    assert_eq!(next_frame(&mut rx).await["type"], "ready");
    for i in 1..=3 {
        assert_eq!(next_frame(&mut rx).await["event"]["seq"].as_i64().unwrap(), last + i);
    }
    // Removed: the removal is the last thing Bob's socket gets from the space.
    alice.req(reqwest::Method::DELETE, &format!("/v1/spaces/{sid}/members/bob@acme.example"), None).await;
    let f = next_frame(&mut rx).await;
    assert_eq!(f["event"]["kind"], "member_removed");
    alice
        .post(&format!("/v1/spaces/{sid}/events"), json!({"kind": "message", "sealed": sealed(&k, &ku, "secret plan")}))
        .await;
    let quiet = tokio::time::timeout(Duration::from_millis(500), rx.next()).await;
    assert!(quiet.is_err(), "a removed member receives nothing more: {quiet:?}");
    let _ = tx.send(Message::Close(None)).await;

    // A bad hello is refused with a reason.
    let (ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::Text(json!({"type": "hello", "token": "garbage"}).to_string().into())).await.unwrap();
    assert_eq!(next_frame(&mut rx).await["type"], "error");
}
