//! Search postings at the core: who may index a message (its sender, the
//! org's search indexers), what is refused, what a search returns, and
//! that the core keeps only the blinded tokens it was given.

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::{key, start_with, Opts, User, KMS};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use testkit::Idp;

fn tok(b: u8) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([b; 16])
}

#[tokio::test]
async fn indexing_is_for_the_sender_and_the_orgs_indexer_and_search_intersects() {
    let core = start_with(
        Arc::new(Idp::start()),
        Opts { org: "search_indexers = [\"indexer@acme.example\"]", ..Opts::default() },
    )
    .await;
    let alice = User::new(&core, "alice").await;
    let bob = User::new(&core, "bob").await;
    let indexer = User::new(&core, "indexer").await;
    let eve = User::new(&core, "eve").await;
    let (k, uri) = key();
    let space = alice.space().await;
    alice.add(&space, "bob@acme.example").await;
    alice.add(&space, "indexer@acme.example").await;
    let m1 = alice.say(&space, &k, &uri, "zanzibar alpha").await;
    let m2 = alice.say(&space, &k, &uri, "zanzibar beta").await;
    let (id1, id2) = (m1["id"].as_str().unwrap(), m2["id"].as_str().unwrap());
    let index = |who: &User, id: &str, body: Value| {
        let path = format!("/v1/spaces/{space}/events/{id}/index");
        let who = User { http: who.http.clone(), url: who.url.clone(), token: who.token.clone(), id: who.id.clone() };
        async move { who.req(Method::PUT, &path, Some(body)).await.0 }
    };

    assert_eq!(index(&alice, id1, json!({"key_uri": uri, "tokens": [tok(1), tok(2)]})).await, StatusCode::NO_CONTENT);
    assert_eq!(index(&alice, id2, json!({"key_uri": uri, "tokens": [tok(2)]})).await, StatusCode::NO_CONTENT);
    // Refusals: another member (not the sender), a non-member, bad tokens, another KMS's key, too many tokens.
    assert_eq!(index(&bob, id1, json!({"key_uri": uri, "tokens": [tok(9)]})).await, StatusCode::FORBIDDEN);
    assert_eq!(index(&eve, id1, json!({"key_uri": uri, "tokens": [tok(9)]})).await, StatusCode::NOT_FOUND);
    for bad in [
        json!({"key_uri": uri, "tokens": ["not base64!"]}),
        json!({"key_uri": uri, "tokens": [base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([1u8; 15])]}),
        json!({"key_uri": "kms://kms.other.example/keys/x", "tokens": [tok(1)]}),
        json!({"key_uri": format!("kms://{KMS}/resources/x"), "tokens": [tok(1)]}),
        json!({"key_uri": uri, "tokens": vec![tok(1); 2049]}),
        json!({"key_uri": uri, "tokens": [tok(1)], "extra": true}),
    ] {
        assert_eq!(index(&alice, id1, bad.clone()).await, StatusCode::BAD_REQUEST, "{bad}");
    }
    let member_event = alice.events(&space).await[1]["id"].as_str().unwrap().to_string();
    assert_eq!(
        index(&alice, &member_event, json!({"key_uri": uri, "tokens": [tok(1)]})).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        index(&alice, "no-such-event", json!({"key_uri": uri, "tokens": [tok(1)]})).await,
        StatusCode::NOT_FOUND
    );

    // Search: every token of a query, newest first; members only.
    let search = |who: &User, body: Value| {
        let path = format!("/v1/spaces/{space}/search");
        let who = User { http: who.http.clone(), url: who.url.clone(), token: who.token.clone(), id: who.id.clone() };
        async move { who.req(Method::POST, &path, Some(body)).await }
    };
    let ids = |v: &Value| -> Vec<String> {
        v["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
    };
    let (st, v) = search(&bob, json!({"queries": [{"key_uri": uri, "tokens": [tok(2)]}]})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(ids(&v), [id2, id1]);
    let (_, v) = search(&bob, json!({"queries": [{"key_uri": uri, "tokens": [tok(1), tok(2)]}]})).await;
    assert_eq!(ids(&v), [id1]);
    let (st, _) = search(&eve, json!({"queries": [{"key_uri": uri, "tokens": [tok(2)]}]})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    for bad in [json!({"queries": []}), json!({"queries": [{"key_uri": uri, "tokens": []}]}), json!({})] {
        assert_eq!(search(&bob, bad.clone()).await.0, StatusCode::BAD_REQUEST, "{bad}");
    }
    let (st, v) = bob.get(&format!("/v1/spaces/{space}/search/keys")).await;
    assert_eq!(
        (st, v["keys"][0]["key_uri"].as_str(), v["keys"][0]["events"].as_i64()),
        (StatusCode::OK, Some(uri.as_str()), Some(2))
    );

    // The org's indexer re-indexes alice's message under a newer key: replaced, not added.
    let (_, uri2) = key();
    assert_eq!(index(&indexer, id1, json!({"key_uri": uri2, "tokens": [tok(7)]})).await, StatusCode::NO_CONTENT);
    let (_, v) = search(&bob, json!({"queries": [{"key_uri": uri, "tokens": [tok(1)]}]})).await;
    assert!(ids(&v).is_empty());
    let (_, v) =
        search(&bob, json!({"queries": [{"key_uri": uri2, "tokens": [tok(7)]}, {"key_uri": uri, "tokens": [tok(2)]}]}))
            .await;
    assert_eq!(ids(&v), [id2, id1], "one query per key version, results merged");

    // What the core keeps: exactly the tokens it was given (blind), nothing derived from content.
    // (The database and its write-ahead log.)
    let mut bytes = Vec::new();
    for e in std::fs::read_dir(core.dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            bytes.extend(std::fs::read(&p).unwrap());
        }
    }
    assert!(bytes.windows(16).any(|w| w == [7u8; 16]), "the postings are in the database");
    assert!(!bytes.windows(8).any(|w| w == b"zanzibar"), "no plaintext");
}

#[tokio::test]
async fn a_batch_is_indexed_whole_or_not_at_all() {
    let core = start_with(
        Arc::new(Idp::start()),
        Opts { org: "search_indexers = [\"indexer@acme.example\"]", ..Opts::default() },
    )
    .await;
    let alice = User::new(&core, "alice").await;
    let bob = User::new(&core, "bob").await;
    let indexer = User::new(&core, "indexer").await;
    let eve = User::new(&core, "eve").await;
    let (k, uri) = key();
    let space = alice.space().await;
    alice.add(&space, "bob@acme.example").await;
    alice.add(&space, "indexer@acme.example").await;
    let a1 = alice.say(&space, &k, &uri, "one").await["id"].as_str().unwrap().to_string();
    let a2 = alice.say(&space, &k, &uri, "two").await["id"].as_str().unwrap().to_string();
    let b1 = bob.say(&space, &k, &uri, "three").await["id"].as_str().unwrap().to_string();
    let path = format!("/v1/spaces/{space}/index");
    let item = |id: &str, t: u8| json!({"event": id, "key_uri": uri, "tokens": [tok(t), tok(100)]});
    let found = |t: u8| {
        let (bob, path) = (&bob, format!("/v1/spaces/{space}/search"));
        let body = json!({"queries": [{"key_uri": uri, "tokens": [tok(t)]}]});
        async move {
            let (st, v) = bob.req(Method::POST, &path, Some(body)).await;
            assert_eq!(st, StatusCode::OK);
            v["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
        }
    };

    // Refused as a whole: bob's message among alice's (she is not its sender), an
    // unknown event, a bad token in the last item, too many items, none, unknown fields.
    let (st, v) = alice.req(Method::POST, &path, Some(json!({"items": [item(&a1, 1), item(&b1, 3)]}))).await;
    assert_eq!((st, v["error"].as_str()), (StatusCode::FORBIDDEN, Some("not_sender")));
    assert!(v["message"].as_str().unwrap().starts_with("items[1]: "), "{v}");
    let (st, v) =
        alice.req(Method::POST, &path, Some(json!({"items": [item(&a1, 1), item("no-such-event", 2)]}))).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let bad_token = json!({"event": a2, "key_uri": uri, "tokens": ["short"]});
    let (st, v) = alice.req(Method::POST, &path, Some(json!({"items": [item(&a1, 1), bad_token]}))).await;
    assert_eq!((st, v["error"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_token")));
    let many: Vec<Value> = (0..201).map(|_| item(&a1, 1)).collect();
    for bad in [json!({"items": many}), json!({"items": []}), json!({"items": [item(&a1, 1)], "extra": 1})] {
        assert_eq!(alice.req(Method::POST, &path, Some(bad)).await.0, StatusCode::BAD_REQUEST);
    }
    assert_eq!(eve.req(Method::POST, &path, Some(json!({"items": [item(&a1, 1)]}))).await.0, StatusCode::NOT_FOUND);
    assert!(found(1).await.is_empty(), "nothing of a refused batch is stored");

    // Accepted: alice's two messages at once; then the org's indexer re-indexes all three.
    let (st, v) = alice.req(Method::POST, &path, Some(json!({"items": [item(&a1, 1), item(&a2, 2)]}))).await;
    assert_eq!((st, v["indexed"].as_u64()), (StatusCode::OK, Some(2)));
    assert_eq!(found(1).await, std::slice::from_ref(&a1));
    assert_eq!(found(100).await, [a2.clone(), a1.clone()]);
    let (_, uri2) = key();
    let items: Vec<Value> =
        [&a1, &a2, &b1].iter().map(|id| json!({"event": id, "key_uri": uri2, "tokens": [tok(7)]})).collect();
    let (st, v) = indexer.req(Method::POST, &path, Some(json!({"items": items}))).await;
    assert_eq!((st, v["indexed"].as_u64()), (StatusCode::OK, Some(3)));
    assert!(found(100).await.is_empty(), "replaced under the newer key");
    let (_, v) = bob
        .req(
            Method::POST,
            &format!("/v1/spaces/{space}/search"),
            Some(json!({"queries": [{"key_uri": uri2, "tokens": [tok(7)]}]})),
        )
        .await;
    assert_eq!(v["events"].as_array().unwrap().len(), 3);
}
