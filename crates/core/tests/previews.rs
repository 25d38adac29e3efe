//! Previews at the core: only the org's preview services store them, for
//! complete files of spaces they are in, sealed under the space's KMS;
//! members read them, others get nothing.

mod common;

use std::sync::Arc;

use common::{key, resource, sealed, start_with, Opts, User};
use reqwest::{Method, StatusCode};
use serde_json::json;
use testkit::Idp;

#[tokio::test]
async fn previews_are_stored_by_preview_services_and_read_by_members() {
    let core = start_with(
        Arc::new(Idp::start()),
        Opts { org: "preview_services = [\"previewer@acme.example\"]", ..Opts::default() },
    )
    .await;
    let alice = User::new(&core, "alice").await;
    let bob = User::new(&core, "bob").await;
    let previewer = User::new(&core, "previewer").await;
    let eve = User::new(&core, "eve").await;
    let (k, ku) = key();
    let (_, space) = alice.post("/v1/spaces", json!({"resource_uri": resource()})).await;
    let sid = space["id"].as_str().unwrap().to_string();
    alice.add(&sid, &bob.id).await;
    alice.add(&sid, &previewer.id).await;
    let (st, f) = alice
        .post(
            &format!("/v1/spaces/{sid}/files"),
            json!({"size": 4, "chunk_size": 4096, "meta": sealed(&k, &ku, "a.txt")}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{f}");
    let fid = f["id"].as_str().unwrap().to_string();
    let path = format!("/v1/files/{fid}/preview");
    let put = |who: &User, body: serde_json::Value| {
        let who = User { http: who.http.clone(), url: who.url.clone(), token: who.token.clone(), id: who.id.clone() };
        let path = path.clone();
        async move { who.req(Method::PUT, &path, Some(body)).await.0 }
    };

    // Not complete yet.
    assert_eq!(put(&previewer, sealed(&k, &ku, "excerpt")).await, StatusCode::CONFLICT);
    assert_eq!(alice.put_chunk(&fid, 0, vec![1, 2, 3, 4]).await.0, StatusCode::NO_CONTENT);
    assert_eq!(alice.post(&format!("/v1/files/{fid}/complete"), json!({})).await.0, StatusCode::OK);
    assert_eq!(bob.get(&path).await.0, StatusCode::NOT_FOUND, "none yet");
    // Refusals: a member who is not a preview service, a non-member, another KMS's key, too large, malformed.
    assert_eq!(put(&bob, sealed(&k, &ku, "excerpt")).await, StatusCode::FORBIDDEN);
    assert_eq!(put(&eve, sealed(&k, &ku, "excerpt")).await, StatusCode::NOT_FOUND);
    let other = json!({"ciphertext": sealed(&k, &ku, "x")["ciphertext"], "key_uri": "kms://kms.other.example/keys/k"});
    assert_eq!(put(&previewer, other).await, StatusCode::BAD_REQUEST);
    assert_eq!(put(&previewer, sealed(&k, &ku, &"x".repeat(300_000))).await, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(put(&previewer, json!({"ciphertext": "not a jwe", "key_uri": ku})).await, StatusCode::BAD_REQUEST);
    // Stored by the service, read by members (not by others), replaced by a newer one.
    assert_eq!(put(&previewer, sealed(&k, &ku, "excerpt one")).await, StatusCode::NO_CONTENT);
    let (st, p) = bob.get(&path).await;
    assert_eq!((st, p["creator"].as_str()), (StatusCode::OK, Some("previewer@acme.example")));
    assert_eq!(common::open(&k, p["ciphertext"].as_str().unwrap()), b"excerpt one");
    assert_eq!(eve.get(&path).await.0, StatusCode::NOT_FOUND);
    assert_eq!(put(&previewer, sealed(&k, &ku, "excerpt two")).await, StatusCode::NO_CONTENT);
    let (_, p) = alice.get(&path).await;
    assert_eq!(common::open(&k, p["ciphertext"].as_str().unwrap()), b"excerpt two");
}
