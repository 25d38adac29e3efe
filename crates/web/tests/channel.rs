//! The browser's KMS channel, natively, against a real KMS end of the
//! channel (`kms_protocol::ServerKey`): a handshake, a request and its
//! answer, resets (answered, pushed, stale, forged), and the pinned key.
//! The wasm build checks the recorded part (`kms` in tests/scenarios.json).

use jose::RsaPrivateKey;
use kms_protocol::channel::{open_request, HandshakeGrant};
use kms_protocol::{Incoming, KmsUri, Response, ServerKey, Status};
use serde_json::Value;
use web::api::KmsChannel;

const DOMAIN: &str = "kms.acme.example";

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn server(kid: &str) -> ServerKey {
    ServerKey::new(RsaPrivateKey::generate(2048, Some(kid.into())).unwrap(), DOMAIN).unwrap()
}

fn pinned(s: &ServerKey) -> String {
    serde_json::to_string(&s.public_key().to_jwk()).unwrap()
}

/// Plays the KMS's part of a handshake; returns the answer and the shared key's session.
fn answer_handshake(kms: &ServerKey, wrapped: &str) -> (String, jose::OctKey, KmsUri) {
    let Incoming::Handshake(jwe) = kms_protocol::classify(wrapped).unwrap() else { panic!("not a handshake") };
    let opened = kms.open_handshake(&jwe).unwrap();
    assert_eq!(opened.request.client.as_ref().unwrap().client_id, "browser-1");
    let grant = HandshakeGrant {
        user_id: "alice@acme.example".into(),
        client_id: "browser-1".into(),
        expires: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
    };
    let uri = KmsUri::parse("/ecdhe/5b1f0c2a-0000-4000-8000-000000000001", DOMAIN).unwrap();
    let accepted = kms.accept_handshake(&opened, &grant, |_| Ok(uri.clone())).unwrap();
    (accepted.response, accepted.shared, uri)
}

#[test]
fn handshake_request_answer_and_resets() {
    let kms = server("static-1");
    let mut ch = KmsChannel::new(DOMAIN, &pinned(&kms)).unwrap();
    let wrapped = ch.begin_handshake("token-abc", "browser-1").unwrap();
    assert!(!wrapped.contains("token-abc"), "the token travels encrypted");
    let (answer, shared, uri) = answer_handshake(&kms, &wrapped);
    assert_eq!(ch.finish_handshake(&answer, now_ms()).unwrap(), uri.to_string());

    // A request under the session, answered by the KMS.
    let sent: Value = serde_json::from_str(&ch.wrap("retrieve", "/keys/1", "{}", "token-abc", now_ms()).unwrap()).unwrap();
    let request_id = sent["requestId"].as_str().unwrap().to_string();
    let Incoming::Session { jwe, .. } = kms_protocol::classify(sent["message"].as_str().unwrap()).unwrap() else {
        panic!("not a session message")
    };
    let req = open_request(&shared, &uri, &jwe).unwrap();
    assert_eq!(req.request_id, request_id);
    let client = req.client.as_ref().expect("each request carries the user's credential");
    assert_eq!(client.client_id, "browser-1");
    assert_eq!(client.credential.bearer.as_ref().map(|b| b.expose()), Some("token-abc"));
    let reply = kms_protocol::seal_response(&shared, &uri, &Response::new(Status::OK, request_id.clone())).unwrap();
    let got: Value = serde_json::from_str(&ch.unwrap(&reply, &request_id, now_ms()).unwrap()).unwrap();
    assert_eq!(got["status"], 200);
    // An answer to another request is refused.
    assert!(ch.unwrap(&reply, "another-id", now_ms()).is_err());

    // A reset signed by the KMS for this request drops the session.
    let reset = kms.reset(Some(&request_id), "session revoked").unwrap();
    let e = ch.unwrap(&reset, &request_id, now_ms()).unwrap_err();
    assert_eq!(e, "reset: session revoked");
    assert!(ch.session_uri().is_none());
    assert!(ch.wrap("ping", "/ping", "{}", "t", now_ms()).unwrap_err().contains("no KMS session"));
}

#[test]
fn pushed_resets_are_judged_by_the_pinned_key_and_the_clock_given() {
    let kms = server("static-1");
    let other = server("static-1");
    let mut ch = KmsChannel::new(DOMAIN, &pinned(&kms)).unwrap();
    let session = KmsUri::parse("/ecdhe/5b1f0c2a-0000-4000-8000-000000000002", DOMAIN).unwrap();
    let pushed = kms.push_reset(&session, "device disabled").unwrap();
    let s = session.to_string();
    assert_eq!(ch.pushed_reset(&pushed, &s, now_ms()).unwrap(), "device disabled");
    // Ten minutes later the same reset is stale (a replay), and so is one for another session.
    assert!(ch.pushed_reset(&pushed, &s, now_ms() + 10 * 60 * 1000).is_err());
    assert!(ch.pushed_reset(&pushed, "kms://kms.acme.example/ecdhe/other", now_ms()).is_err());
    // Signed by another key under the same kid: refused.
    let forged = other.push_reset(&session, "forged").unwrap();
    assert!(ch.pushed_reset(&forged, &s, now_ms()).is_err());
    // A handshake answered by another key: refused, no session.
    ch.begin_handshake("t", "browser-1").unwrap();
    // (The other key cannot open a handshake sealed to the pinned one: it answers its own.)
    let mut ch2 = KmsChannel::new(DOMAIN, &pinned(&other)).unwrap();
    let (answer, _, _) = answer_handshake(&other, &ch2.begin_handshake("t", "browser-1").unwrap());
    let e = ch.finish_handshake(&answer, now_ms()).unwrap_err();
    assert!(e.contains("signature"), "{e}");
    assert!(ch.session_uri().is_none());
}

#[test]
fn bad_pins_and_inputs_are_refused() {
    let kms = server("static-1");
    let e = KmsChannel::new(DOMAIN, "{").err().unwrap();
    assert!(e.contains("not a JWK"), "{e}");
    let no_kid = serde_json::to_string(&kms.public_key().clone().to_jwk()).unwrap().replace("\"kid\"", "\"x\"");
    assert!(KmsChannel::new(DOMAIN, &no_kid).is_err());
    let mut ch = KmsChannel::new(DOMAIN, &pinned(&kms)).unwrap();
    assert!(ch.finish_handshake("x.y.z", now_ms()).unwrap_err().contains("no handshake"));
    ch.begin_handshake("t", "browser-1").unwrap();
    assert!(ch.finish_handshake("not a jws", now_ms()).is_err());
}
