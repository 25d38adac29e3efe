//! Both ends of the secure channel in Rust: handshake, messages, resets, refusals.

use jose::{OctKey, RsaPrivateKey};
use kms_protocol::channel::{read_reset, verify_pushed_reset, HandshakeGrant, ServerKey, SigningContext};
use kms_protocol::{
    begin_handshake, classify, date, open_request, seal_response, ClientInfo, Credential, Incoming, Kind, KmsInfo,
    KmsUri, Method, ProtocolError, Request, Response, Status,
};

const DOMAIN: &str = "kms.acme.example";

fn server() -> ServerKey {
    ServerKey::new(RsaPrivateKey::generate(2048, Some("static".into())).unwrap(), DOMAIN).unwrap()
}

fn client() -> ClientInfo {
    ClientInfo { client_id: "c1".into(), credential: Credential::bearer("secret-token-value") }
}

fn grant(hours: i64) -> HandshakeGrant {
    HandshakeGrant {
        user_id: "bob@acme.example".into(),
        client_id: "c1".into(),
        expires: date::now() + time::Duration::hours(hours),
    }
}

fn session_uri(id: &str) -> KmsUri {
    KmsUri::object(DOMAIN, Kind::Ecdhe, id).unwrap()
}

/// Handshake end to end; returns the client session and the server's key and URI.
fn handshake(srv: &ServerKey) -> (kms_protocol::Session, OctKey, KmsUri) {
    let kms = srv.info();
    let pending = begin_handshake(&kms, client()).unwrap();
    let Incoming::Handshake(jwe) = classify(&pending.wrapped).unwrap() else { panic!("handshake") };
    let opened = srv.open_handshake(&jwe).unwrap();
    let acc = srv.accept_handshake(&opened, &grant(1), |_| Ok(session_uri("s1"))).unwrap();
    let session = pending.finish(&kms, &acc.response).unwrap();
    (session, acc.shared, session_uri("s1"))
}

#[test]
fn full_round_trip() {
    let srv = server();
    let kms = srv.info();
    let (session, shared, uri) = handshake(&srv);
    assert_eq!(session.shared_key().expose(), shared.expose());
    assert_eq!(session.uri(), &uri);
    assert_eq!(session.info().user_id, "bob@acme.example");

    let mut req = Request::new(Method::Create, "/keys", Some(client()));
    req.body.count = Some(3);
    let wrapped = session.wrap(&req).unwrap();
    let Incoming::Session { kid, jwe } = classify(&wrapped).unwrap() else { panic!("session") };
    assert_eq!(kid, uri.to_string());
    let seen = open_request(&shared, &uri, &jwe).unwrap();
    assert_eq!(seen, req);

    let resp = Response::new(Status::CREATED, req.request_id.clone());
    let sealed = seal_response(&shared, &uri, &resp).unwrap();
    assert_eq!(session.unwrap(&kms, &sealed, &req.request_id).unwrap(), resp);
    // Debug output never shows the token or the key.
    let shown = format!("{session:?} {seen:?} {shared:?}");
    assert!(!shown.contains("secret-token-value"), "{shown}");
    assert!(!shown.contains(&jose::b64::encode(shared.expose())), "{shown}");
}

#[test]
fn resets_are_believed_only_when_genuine_fresh_and_matching() {
    let srv = server();
    let kms = srv.info();
    let (session, _, _) = handshake(&srv);

    let r = srv.reset(Some("rq-1"), "unknown ephemeral key").unwrap();
    assert_eq!(session.unwrap(&kms, &r, "rq-1").unwrap_err(), ProtocolError::Reset("unknown ephemeral key".into()));
    // For another request: ignored.
    assert_eq!(session.unwrap(&kms, &r, "rq-2").unwrap_err(), ProtocolError::StaleReset);
    // Signed by another key: refused.
    let forged = server().reset(Some("rq-1"), "x").unwrap();
    assert_eq!(session.unwrap(&kms, &forged, "rq-1").unwrap_err(), ProtocolError::Jose(jose::Error::BadSignature));
    // A 499 body signed in another context (e.g. an ECDHE response) is not a reset.
    let mut body = Response::error(Status::RESET, "rq-1", "x");
    body.timestamp = Some(date::now());
    let wrong_ctx = srv.sign(SigningContext::Ecdhe, &body).unwrap();
    assert!(matches!(session.unwrap(&kms, &wrong_ctx, "rq-1").unwrap_err(), ProtocolError::WrongContext { .. }));
    // Stale: a timestamp from an hour ago.
    body.timestamp = Some(date::now() - time::Duration::hours(1));
    let stale = srv.sign(SigningContext::Reset, &body).unwrap();
    assert_eq!(session.unwrap(&kms, &stale, "rq-1").unwrap_err(), ProtocolError::StaleReset);
    // No timestamp at all: stale.
    body.timestamp = None;
    let untimed = srv.sign(SigningContext::Reset, &body).unwrap();
    assert_eq!(session.unwrap(&kms, &untimed, "rq-1").unwrap_err(), ProtocolError::StaleReset);
    // Unsolicited pushes.
    let mine = session.uri().clone();
    assert_eq!(verify_pushed_reset(&kms, &srv.push_reset(&mine, "revoked").unwrap(), &mine).unwrap(), "revoked");
    // A reset anyone can provoke (unreadable input) names no session: ignored.
    assert_eq!(
        verify_pushed_reset(&kms, &srv.reset(None, "x").unwrap(), &mine).unwrap_err(),
        ProtocolError::StaleReset
    );
    // Another session's reset: ignored.
    let other = session_uri("someone-else");
    assert_eq!(
        verify_pushed_reset(&kms, &srv.push_reset(&other, "revoked").unwrap(), &mine).unwrap_err(),
        ProtocolError::StaleReset
    );
    assert_eq!(read_reset(&kms, &stale).unwrap_err(), ProtocolError::StaleReset);
}

#[test]
fn handshake_answered_by_reset() {
    let srv = server();
    let kms = srv.info();
    let pending = begin_handshake(&kms, client()).unwrap();
    let reset = srv.reset(Some(pending.request_id()), "could not decrypt").unwrap();
    assert_eq!(pending.finish(&kms, &reset).unwrap_err(), ProtocolError::Reset("could not decrypt".into()));
    let pending = begin_handshake(&kms, client()).unwrap();
    let reset = srv.reset(Some("other"), "could not decrypt").unwrap();
    assert_eq!(pending.finish(&kms, &reset).unwrap_err(), ProtocolError::StaleReset);
}

#[test]
fn handshake_refusals() {
    let srv = server();
    let kms = srv.info();

    // A response for another handshake.
    let p1 = begin_handshake(&kms, client()).unwrap();
    let p2 = begin_handshake(&kms, client()).unwrap();
    let Incoming::Handshake(jwe) = classify(&p2.wrapped).unwrap() else { panic!() };
    let acc = srv.accept_handshake(&srv.open_handshake(&jwe).unwrap(), &grant(1), |_| Ok(session_uri("s2"))).unwrap();
    assert_eq!(p1.finish(&kms, &acc.response).unwrap_err(), ProtocolError::RequestIdMismatch);

    // A response from an impostor KMS with its own key.
    let evil = server();
    let p = begin_handshake(&evil.info(), client()).unwrap();
    let Incoming::Handshake(jwe) = classify(&p.wrapped).unwrap() else { panic!() };
    let acc = evil.accept_handshake(&evil.open_handshake(&jwe).unwrap(), &grant(1), |_| Ok(session_uri("s3"))).unwrap();
    let p = begin_handshake(&kms, client()).unwrap();
    assert_eq!(p.finish(&kms, &acc.response).unwrap_err(), ProtocolError::Jose(jose::Error::BadSignature));

    // An already-expired grant.
    let p = begin_handshake(&kms, client()).unwrap();
    let Incoming::Handshake(jwe) = classify(&p.wrapped).unwrap() else { panic!() };
    let acc = srv.accept_handshake(&srv.open_handshake(&jwe).unwrap(), &grant(-1), |_| Ok(session_uri("s4"))).unwrap();
    assert_eq!(p.finish(&kms, &acc.response).unwrap_err(), ProtocolError::Expired);

    // A session URI that is not an ephemeral key of this KMS is refused by the server itself.
    let p = begin_handshake(&kms, client()).unwrap();
    let Incoming::Handshake(jwe) = classify(&p.wrapped).unwrap() else { panic!() };
    let opened = srv.open_handshake(&jwe).unwrap();
    let err = srv
        .accept_handshake(&opened, &grant(1), |_| Ok(KmsUri::object("kms.other.example", Kind::Ecdhe, "x").unwrap()));
    assert!(matches!(err.unwrap_err(), ProtocolError::InvalidField { .. }));

    // A handshake whose kid names another static key.
    let other = ServerKey::new(RsaPrivateKey::generate(2048, Some("other-kid".into())).unwrap(), DOMAIN).unwrap();
    let p = begin_handshake(&other.info(), client()).unwrap();
    let Incoming::Handshake(jwe) = classify(&p.wrapped).unwrap() else { panic!() };
    assert_eq!(srv.open_handshake(&jwe).unwrap_err(), ProtocolError::KidMismatch);
}

#[test]
fn static_key_opens_only_ecdhe_creation() {
    let srv = server();
    let kms = srv.info();
    // A well-formed RSA-OAEP request that asks for something else.
    let req = Request::new(Method::Create, "/keys", Some(client()));
    let c = jose::jwe::encrypt(
        jose::jwe::EncryptKey::RsaOaep(&kms.key),
        jose::ContentEnc::A256Gcm,
        &jose::HeaderParams::kid("static"),
        &req.to_json(),
    )
    .unwrap();
    let Incoming::Handshake(jwe) = classify(&c).unwrap() else { panic!() };
    assert!(matches!(srv.open_handshake(&jwe).unwrap_err(), ProtocolError::UnknownOperation { .. }));
    // create /ecdhe without a key.
    let req = Request::new(Method::Create, "/ecdhe", Some(client()));
    let c = jose::jwe::encrypt(
        jose::jwe::EncryptKey::RsaOaep(&kms.key),
        jose::ContentEnc::A256Gcm,
        &jose::HeaderParams::kid("static"),
        &req.to_json(),
    )
    .unwrap();
    let Incoming::Handshake(jwe) = classify(&c).unwrap() else { panic!() };
    assert_eq!(srv.open_handshake(&jwe).unwrap_err(), ProtocolError::MissingField("jwk"));
}

#[test]
fn session_message_refusals() {
    let srv = server();
    let kms = srv.info();
    let (session, shared, uri) = handshake(&srv);
    let req = Request::new(Method::Update, "/ping", Some(client()));
    let wrapped = session.wrap(&req).unwrap();
    let Incoming::Session { jwe, .. } = classify(&wrapped).unwrap() else { panic!() };

    // Another session's URI: kid mismatch; another key: decryption fails.
    assert_eq!(open_request(&shared, &session_uri("s9"), &jwe).unwrap_err(), ProtocolError::KidMismatch);
    let wrong = OctKey::generate(32, None).unwrap();
    assert_eq!(open_request(&wrong, &uri, &jwe).unwrap_err(), ProtocolError::Jose(jose::Error::DecryptionFailed));

    // A response sealed for another session.
    let resp = Response::new(Status::OK, req.request_id.clone());
    let other = seal_response(&shared, &session_uri("s9"), &resp).unwrap();
    assert_eq!(session.unwrap(&kms, &other, &req.request_id).unwrap_err(), ProtocolError::KidMismatch);

    // Not a JOSE object at all.
    assert!(matches!(classify("hello").unwrap_err(), ProtocolError::Jose(jose::Error::SegmentCount { .. })));
    // A JWE with alg dir but no kid.
    let nokid =
        jose::jwe::encrypt(jose::jwe::EncryptKey::Dir(&shared), jose::ContentEnc::A256Gcm, &Default::default(), b"{}")
            .unwrap();
    assert_eq!(classify(&nokid).unwrap_err(), ProtocolError::Jose(jose::Error::MissingHeader("kid")));
    // Oversize.
    let big = "a".repeat(kms_protocol::channel::MAX_MESSAGE_LEN + 1);
    assert!(matches!(classify(&big).unwrap_err(), ProtocolError::Jose(jose::Error::TooLarge { .. })));
}

#[test]
fn info_for_pinning() {
    let srv = server();
    let info: KmsInfo = srv.info();
    assert_eq!(info.domain, DOMAIN);
    assert_eq!(info.key.kid(), Some("static"));
    assert!(ServerKey::new(RsaPrivateKey::generate(2048, None).unwrap(), DOMAIN).is_err(), "static key needs a kid");
}
