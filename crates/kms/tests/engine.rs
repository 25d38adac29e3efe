//! The engine end to end over SQLite: every operation, the authorization
//! matrix, idempotency, resets, anonymous bearers, the key hierarchy.

mod common;

use common::{client_info, harness, harness_with, Client};
use kms_protocol::{Method, ProtocolError, Status};
use serde_json::json;

#[tokio::test]
async fn handshake_ping_and_session_binding() {
    let h = harness().await;
    let alice = Client::connect(&h.engine, "alice").await;
    assert_eq!(alice.session.info().user_id, "alice@acme.example");
    assert_eq!(alice.call(Method::Update, "/ping", json!({})).await.status, Status::OK);

    // A request on Alice's session with Bob's token is refused.
    let mut req = alice.request(Method::Update, "/ping", json!({}));
    req.client.as_mut().unwrap().credential = kms_protocol::Credential::bearer("tok-bob");
    assert_eq!(alice.send(&req).await.unwrap().status, Status::UNAUTHORIZED);
    // Tokens are checked on every request: an expired one is refused mid-session.
    let mut req = alice.request(Method::Update, "/ping", json!({}));
    req.client.as_mut().unwrap().credential = kms_protocol::Credential::bearer("tok-expired");
    let r = alice.send(&req).await.unwrap();
    assert_eq!(r.status, Status::UNAUTHORIZED);
    assert!(!r.reason.unwrap().contains("tok-"));
    // No credential at all.
    let mut req = alice.request(Method::Update, "/ping", json!({}));
    req.client = None;
    assert_eq!(alice.send(&req).await.unwrap().status, Status::UNAUTHORIZED);
}

#[tokio::test]
async fn handshake_refusals() {
    let h = harness().await;
    for bad in ["expired", ""] {
        let e = Client::try_connect(&h.engine, client_info(bad, "d")).await.err().unwrap();
        assert!(matches!(e, ProtocolError::Status { status: Status::UNAUTHORIZED, .. }), "{e:?}");
    }
    // Garbage and undecryptable input get a signed reset the client can verify.
    let kms = h.engine.server_key().info();
    for junk in ["", "not jose", "a.b.c.d.e", &"x".repeat(300_000)] {
        let answer = h.engine.handle(junk, None).await.unwrap();
        assert_eq!(kms_protocol::channel::read_reset(&kms, &answer).unwrap(), "message could not be read");
    }
}

#[tokio::test]
async fn keys_resources_and_the_authorization_matrix() {
    let h = harness().await;
    let alice = Client::connect(&h.engine, "alice").await;
    let bob = Client::connect(&h.engine, "bob").await;
    let carol = Client::connect(&h.engine, "carol").await;

    let keys = alice.create_keys(3).await;
    assert_eq!(keys.len(), 3);
    let k0 = keys[0].uri.to_string();
    assert!(k0.starts_with("kms://kms.acme.example/keys/"));
    assert_eq!(keys[0].jwk.kid.as_deref(), Some(k0.as_str()));
    assert_eq!(keys[0].user_id, "alice@acme.example");

    // Unbound: creator (same client) only.
    assert_eq!(alice.ok(Method::Retrieve, &k0, json!({})).await.key.unwrap().jwk, keys[0].jwk);
    assert_eq!(bob.call(Method::Retrieve, &k0, json!({})).await.status, Status::FORBIDDEN);
    let alice2 = Client::try_connect(&h.engine, client_info("alice", "other-device")).await.unwrap();
    assert_eq!(alice2.call(Method::Retrieve, &k0, json!({})).await.status, Status::FORBIDDEN);

    // Create a resource with Bob, binding k0.
    let res = alice.create_resource(&["bob"], std::slice::from_ref(&k0)).await;
    let r = res.uri.to_string();
    assert_eq!(res.key_uris.len(), 1);
    assert_eq!(res.authorization_uris.len(), 2, "creator and bob");

    // Bound key: authorized users only.
    let got = bob.ok(Method::Retrieve, &k0, json!({})).await.key.unwrap();
    assert_eq!(got.jwk, keys[0].jwk);
    assert_eq!(got.resource_uri.as_ref().unwrap().to_string(), r);
    assert_eq!(carol.call(Method::Retrieve, &k0, json!({})).await.status, Status::FORBIDDEN);
    assert_eq!(carol.call(Method::Retrieve, &r, json!({})).await.status, Status::FORBIDDEN);
    assert_eq!(bob.ok(Method::Retrieve, &r, json!({})).await.resource.unwrap().key_uris, res.key_uris);

    // Bind: only the key's creator, only once, retries succeed.
    let k1 = keys[1].uri.to_string();
    assert_eq!(bob.call(Method::Update, &k1, json!({"resourceUri": r})).await.status, Status::FORBIDDEN);
    let b = alice.ok(Method::Update, &k1, json!({"resourceUri": r})).await.key.unwrap();
    assert!(b.bind_date.is_some());
    assert_eq!(alice.call(Method::Update, &k1, json!({"resourceUri": r})).await.status, Status::OK, "retried bind");
    let other = alice.create_resource(&[], &[]).await.uri.to_string();
    assert_eq!(
        alice.call(Method::Update, &k1, json!({"resourceUri": other})).await.status,
        Status::CONFLICT,
        "never rebound"
    );
    // Carol cannot bind her key to a resource she is not authorized on.
    let ck = carol.create_keys(1).await[0].uri.to_string();
    assert_eq!(carol.call(Method::Update, &ck, json!({"resourceUri": r})).await.status, Status::FORBIDDEN);

    // Resource keys, newest bind first, with count.
    let all = bob.ok(Method::Retrieve, &format!("{r}/keys"), json!({})).await.keys.unwrap();
    assert_eq!(all.len(), 2);
    let one = bob.ok(Method::Retrieve, &format!("{r}/keys"), json!({"count": 1})).await.keys.unwrap();
    assert_eq!(one[0].uri.to_string(), k1, "newest bind first");

    // Authorization is viral: Bob adds Carol, Carol reads, Bob removes Carol.
    let created = bob.ok(Method::Create, "/authorizations", json!({"resourceUri": r, "userIds": ["carol"]})).await;
    assert_eq!(created.status, Status::CREATED);
    assert_eq!(created.authorizations.unwrap()[0].auth_id.as_deref(), Some("carol@acme.example"));
    assert_eq!(carol.call(Method::Retrieve, &k0, json!({})).await.status, Status::OK);
    let listed =
        carol.ok(Method::Retrieve, &format!("{r}/authorizations?authId=carol%40acme.example"), json!({})).await;
    assert_eq!(listed.authorizations.unwrap().len(), 1);
    let del = bob.ok(Method::Delete, &format!("{r}/authorizations?authId=carol"), json!({})).await;
    assert_eq!(del.authorizations.unwrap()[0].auth_id.as_deref(), Some("carol@acme.example"));
    assert_eq!(carol.call(Method::Retrieve, &k0, json!({})).await.status, Status::FORBIDDEN, "de-authorized");
    assert_eq!(
        bob.call(Method::Delete, &format!("{r}/authorizations?authId=carol"), json!({})).await.status,
        Status::NOT_FOUND
    );
    // Carol can no longer authorize anyone.
    assert_eq!(
        carol.call(Method::Create, "/authorizations", json!({"resourceUri": r, "authIds": ["carol"]})).await.status,
        Status::FORBIDDEN
    );

    // Delete by URI and in bulk.
    let a = bob
        .ok(Method::Create, "/authorizations", json!({"resourceUri": r, "authIds": ["dave", "erin"]}))
        .await
        .authorizations
        .unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(bob.ok(Method::Delete, &a[0].uri.to_string(), json!({})).await.status, Status::OK);
    let bulk = bob.ok(Method::Delete, "/authorizations", json!({"resourceUri": r, "authIds": ["erin", "zed"]})).await;
    assert_eq!(bulk.authorizations.unwrap().len(), 1);
    let remaining = alice.ok(Method::Retrieve, &format!("{r}/authorizations"), json!({})).await.authorizations.unwrap();
    let ids: Vec<_> = remaining.iter().filter_map(|a| a.auth_id.clone()).collect();
    assert_eq!(ids, vec!["alice@acme.example".to_string(), "bob@acme.example".to_string()]);

    // Unknown ids and foreign domains.
    assert_eq!(alice.call(Method::Retrieve, "/keys/nope", json!({})).await.status, Status::NOT_FOUND);
    assert_eq!(alice.call(Method::Retrieve, "/resources/nope", json!({})).await.status, Status::FORBIDDEN);
    // Another KMS's key: this org does not federate with it.
    let r = alice.call(Method::Retrieve, "kms://kms.other.example/keys/x", json!({})).await;
    assert_eq!(r.status, Status::FORBIDDEN);
    assert_eq!(r.reason.as_deref(), Some("this org does not federate with kms.other.example"));
    // Another KMS's collections are never ours to serve.
    assert_eq!(
        alice.call(Method::Create, "kms://kms.other.example/keys", json!({"count": 1})).await.status,
        Status::BAD_REQUEST
    );
}

#[tokio::test]
async fn resource_authids_and_all_or_nothing() {
    let h = harness().await;
    let alice = Client::connect(&h.engine, "alice").await;
    let bob = Client::connect(&h.engine, "bob").await;
    // Team resource with Bob; a space resource that authorizes "everyone on the team".
    let team = alice.create_resource(&["bob"], &[]).await.uri.to_string();
    let k = alice.create_keys(1).await[0].uri.to_string();
    let space = alice.create_resource(&[&team], std::slice::from_ref(&k)).await.uri.to_string();
    assert_eq!(bob.call(Method::Retrieve, &k, json!({})).await.status, Status::OK, "via the team resource");
    alice.ok(Method::Delete, &format!("{team}/authorizations?authId=bob"), json!({})).await;
    assert_eq!(bob.call(Method::Retrieve, &k, json!({})).await.status, Status::FORBIDDEN);
    // An unknown resource as authId.
    let r = alice.call(Method::Create, "/resources", json!({"authIds": ["/resources/missing"]})).await;
    assert_eq!(r.status, Status::NOT_FOUND);

    // All or nothing: one key already bound spoils the whole request.
    let fresh = alice.create_keys(1).await[0].uri.to_string();
    let r = alice.call(Method::Create, "/resources", json!({"authIds": ["bob"], "keyUris": [fresh, k]})).await;
    assert_eq!(r.status, Status::CONFLICT);
    // The fresh key was not bound: it can still go to another resource.
    let r2 = alice.create_resource(&[], std::slice::from_ref(&fresh)).await;
    assert_eq!(r2.key_uris[0].to_string(), fresh);
    let _ = space;
    // ttl out of range.
    assert_eq!(alice.call(Method::Create, "/resources", json!({"ttl": 0})).await.status, Status::BAD_REQUEST);
}

#[tokio::test]
async fn resources_with_ttl_expire() {
    let h = harness().await;
    let alice = Client::connect(&h.engine, "alice").await;
    let k = alice.create_keys(1).await[0].uri.to_string();
    let r = alice.ok(Method::Create, "/resources", json!({"keyUris": [k], "ttl": 1})).await.resource.unwrap();
    assert!(r.expiration_date.is_some());
    assert_eq!(alice.call(Method::Retrieve, &k, json!({})).await.status, Status::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(alice.call(Method::Retrieve, &k, json!({})).await.status, Status::FORBIDDEN);
}

#[tokio::test]
async fn repeated_request_ids_are_answered_once() {
    let h = harness().await;
    let alice = Client::connect(&h.engine, "alice").await;
    let req = alice.request(Method::Create, "/keys", json!({"count": 2}));
    let wrapped = alice.session.wrap(&req).unwrap();
    let a1 = h.engine.handle(&wrapped, None).await.unwrap();
    let a2 = h.engine.handle(&wrapped, None).await.unwrap();
    assert_eq!(a1, a2, "a replay gets the original response, byte for byte");
    let r1 = alice.session.unwrap(&alice.kms, &a1, &req.request_id).unwrap();
    let first: Vec<_> = r1.keys.unwrap().iter().map(|k| k.uri.to_string()).collect();
    // Only two keys exist: the replay created none.
    let res = alice.create_resource(&[], &first).await;
    assert_eq!(res.key_uris.len(), 2);
    // The same requestId re-encrypted (a client retry) is also answered from the log.
    let again = alice.send(&req).await.unwrap();
    assert_eq!(again.keys.unwrap().iter().map(|k| k.uri.to_string()).collect::<Vec<_>>(), first);
}

#[tokio::test]
async fn deleted_sessions_are_reset() {
    let h = harness().await;
    let alice = Client::connect(&h.engine, "alice").await;
    let uri = alice.session.uri().to_string();
    // Another session's key cannot be deleted.
    let bob = Client::connect(&h.engine, "bob").await;
    assert_eq!(bob.call(Method::Delete, &uri, json!({})).await.status, Status::FORBIDDEN);
    assert_eq!(alice.call(Method::Delete, &uri, json!({})).await.status, Status::NO_CONTENT);
    let e = alice.send(&alice.request(Method::Update, "/ping", json!({}))).await.unwrap_err();
    assert_eq!(e, ProtocolError::Reset("ephemeral key deleted".into()));
    // A fresh handshake works.
    let alice = Client::connect(&h.engine, "alice").await;
    assert_eq!(alice.call(Method::Update, "/ping", json!({})).await.status, Status::OK);
}

#[tokio::test]
async fn anonymous_bearers() {
    let h = harness().await;
    let alice = Client::connect(&h.engine, "alice").await;
    let k = alice.create_keys(1).await[0].uri.to_string();
    let created = alice.ok(Method::Create, "/resources", json!({"keyUris": [k], "anonymous": 1})).await;
    let r = created.resource.unwrap().uri.to_string();
    let anon = created.authorizations.unwrap().into_iter().find(|a| a.auth_id.is_none()).unwrap();
    let bearer = anon.bearer.clone().expect("returned at creation").expose().to_string();

    let guest = Client::try_connect(
        &h.engine,
        kms_protocol::ClientInfo {
            client_id: "guest".into(),
            credential: kms_protocol::Credential::bearer(bearer.clone()),
        },
    )
    .await
    .unwrap();
    assert_eq!(guest.call(Method::Retrieve, &k, json!({})).await.status, Status::OK);
    assert_eq!(guest.call(Method::Retrieve, &format!("{r}/keys"), json!({})).await.status, Status::OK);
    // No power to authorize, create or bind.
    assert_eq!(
        guest.call(Method::Create, "/authorizations", json!({"resourceUri": r, "authIds": ["mallory"]})).await.status,
        Status::FORBIDDEN
    );
    assert_eq!(guest.call(Method::Create, "/keys", json!({"count": 1})).await.status, Status::FORBIDDEN);
    // Never shown again.
    let listed = alice.ok(Method::Retrieve, &format!("{r}/authorizations"), json!({})).await.authorizations.unwrap();
    assert!(listed.iter().all(|a| a.bearer.is_none()));
    // Dies with its authorization.
    alice.ok(Method::Delete, &anon.uri.to_string(), json!({})).await;
    assert_eq!(guest.call(Method::Retrieve, &k, json!({})).await.status, Status::UNAUTHORIZED);
    // A tampered bearer is refused at the handshake.
    let mut t = bearer.into_bytes();
    let n = t.len() - 3;
    t[n] = if t[n] == b'A' { b'B' } else { b'A' };
    let e = Client::try_connect(
        &h.engine,
        kms_protocol::ClientInfo {
            client_id: "g".into(),
            credential: kms_protocol::Credential::bearer(String::from_utf8(t).unwrap()),
        },
    )
    .await;
    assert!(matches!(e.err().unwrap(), ProtocolError::Status { status: Status::UNAUTHORIZED, .. }));
}

#[tokio::test]
async fn anonymous_forbidden_by_policy() {
    let h = harness_with(|c| c.allow_anonymous = false).await;
    let alice = Client::connect(&h.engine, "alice").await;
    assert_eq!(alice.call(Method::Create, "/resources", json!({"anonymous": 1})).await.status, Status::FORBIDDEN);
}

#[tokio::test]
async fn key_hierarchy_admin_api() {
    let h = harness().await;
    let alice = Client::connect(&h.engine, "alice").await;
    let admin = Client::connect(&h.engine, "admin").await;
    assert_eq!(alice.call(Method::Retrieve, "/kek", json!({})).await.status, Status::FORBIDDEN);
    assert_eq!(alice.call(Method::Create, "/kek", json!({})).await.status, Status::FORBIDDEN);
    let old_key = alice.create_keys(1).await.remove(0);
    let before = admin.ok(Method::Retrieve, "/kek", json!({})).await.master_keys.unwrap();
    assert_eq!(before.len(), 1);
    let new = admin.ok(Method::Create, "/kek", json!({})).await.master_keys.unwrap().remove(0);
    let after = admin.ok(Method::Retrieve, "/kek", json!({})).await.master_keys.unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!(after.iter().filter(|k| k.usage_state == kms_protocol::message::KeyState::Active).count(), 1);
    // Keys under the old KEK still open; new keys use the new one.
    assert_eq!(alice.ok(Method::Retrieve, &old_key.uri.to_string(), json!({})).await.key.unwrap().jwk, old_key.jwk);
    let new_key = alice.create_keys(1).await.remove(0);
    // Revoking the old KEK shreds the old key, not the new one (within the 1 s cache).
    let old_kek = before[0].uri.to_string();
    admin.ok(Method::Update, &old_kek, json!({"keyState": "REVOKED"})).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(alice.call(Method::Retrieve, &old_key.uri.to_string(), json!({})).await.status, Status::FORBIDDEN);
    assert_eq!(alice.call(Method::Retrieve, &new_key.uri.to_string(), json!({})).await.status, Status::OK);
    let _ = new;
    // BYOK is not available, and says so.
    assert_eq!(admin.call(Method::Retrieve, "/publicKey", json!({})).await.status, Status(501));
}

#[tokio::test]
async fn nothing_secret_at_rest() {
    let h = harness().await;
    let alice = Client::connect(&h.engine, "alice").await;
    let keys = alice.create_keys(5).await;
    alice.create_resource(&["bob"], &[keys[0].uri.to_string()]).await;
    // Read the raw SQLite file(s): no key, token or shared key in clear.
    let mut raw = Vec::new();
    for e in std::fs::read_dir(h.dir.path()).unwrap() {
        raw.extend(std::fs::read(e.unwrap().path()).unwrap());
    }
    let hay = String::from_utf8_lossy(&raw);
    for k in &keys {
        let secret = k.jwk.k.as_ref().unwrap().expose();
        assert!(!hay.contains(secret), "a content key is in the database in clear");
        let bytes = jose::b64::decode(secret, jose::Part::Payload).unwrap();
        assert!(!raw.windows(32).any(|w| w == &bytes[..]), "raw key bytes in the database");
    }
    assert!(!hay.contains("tok-alice"));
    let shared = alice.session.shared_key().expose().to_vec();
    assert!(!raw.windows(32).any(|w| w == &shared[..]));
}
