//! Interop with Cisco's node-kms 0.4.1 and node-jose 2.2.0, both directions.

use jose::jwe::{DecryptKey, EncryptKey};
use jose::jws::{SignKey, VerifyKey};
use jose::{
    ContentEnc, EcPrivateKey, HeaderParams, Jwe, JwePolicy, Jwk, Jws, JwsPolicy, OctKey, RsaPrivateKey, SigAlg,
};
use kms_protocol::channel::{HandshakeGrant, ServerKey};
use kms_protocol::message::{KeyObject, Operation, Realm};
use kms_protocol::{
    classify, date, open_request, seal_response, ClientInfo, Credential, Incoming, Kind, KmsUri, Response, Status,
};
use serde_json::{json, Value};
use testkit::{b64, unb64, Node};

const DOMAIN: &str = "kms.acme.example";
const REALM: Realm<'static> = Realm { kms_domain: DOMAIN, org_domain: "acme.example" };

fn server() -> ServerKey {
    let key = RsaPrivateKey::generate(2048, Some("static-1".into())).unwrap();
    ServerKey::new(key, DOMAIN).unwrap()
}

fn client_info() -> Value {
    json!({"clientId": "device-1", "credential": {"userId": "alice", "bearer": "token-abc"}})
}

fn grant() -> HandshakeGrant {
    HandshakeGrant {
        user_id: "alice@acme.example".into(),
        client_id: "device-1".into(),
        expires: date::now() + time::Duration::hours(1),
    }
}

/// node-kms handshakes with our server code; both ends derive the same key.
fn node_handshake(node: &mut Node, srv: &ServerKey, ecdhe_uri: &str) -> (u64, OctKey, KmsUri) {
    let server_jwk = serde_json::to_value(srv.public_key().to_jwk()).unwrap();
    let hs = node.call(
        json!({"op": "kms_client_handshake", "serverJwk": server_jwk, "clientInfo": client_info(), "uri": ecdhe_uri}),
    );
    assert_eq!(hs["sentPrivateD"], true, "node-kms sends its private d (the case we must tolerate)");
    let wrapped = hs["wrapped"].as_str().unwrap();

    let Incoming::Handshake(jwe) = classify(wrapped).unwrap() else { panic!("a handshake must classify as one") };
    let opened = srv.open_handshake(&jwe).unwrap();
    assert_eq!(opened.request.request_id, hs["requestId"].as_str().unwrap());
    // `d` was accepted and dropped: the opened request no longer holds the JWK.
    assert!(opened.request.body.jwk.is_none());
    let cred = &opened.request.client.as_ref().unwrap().credential;
    assert_eq!(cred.bearer.as_ref().unwrap().expose(), "token-abc");
    assert!(!format!("{opened:?}").contains("token-abc"), "bearer must not print");

    let session_id = uuid::Uuid::new_v4().to_string();
    let accepted = srv
        .accept_handshake(&opened, &grant(), |_| Ok(KmsUri::object(DOMAIN, Kind::Ecdhe, &session_id).unwrap()))
        .unwrap();
    let fin = node.call(json!({"op": "kms_client_finish", "ctx": hs["ctx"], "response": accepted.response}));
    assert_eq!(fin["body"]["status"], 201);
    assert_eq!(fin["body"]["key"]["userId"], "alice@acme.example");
    let uri = KmsUri::object(DOMAIN, Kind::Ecdhe, &session_id).unwrap();
    assert_eq!(fin["kid"], uri.to_string());
    assert_eq!(unb64(fin["sharedKey"].as_str().unwrap()), accepted.shared.expose(), "both sides derive the same key");
    (hs["ctx"].as_u64().unwrap(), accepted.shared, uri)
}

#[test]
fn node_kms_client_against_our_server_relative_ecdhe_uri() {
    let mut node = Node::start();
    let srv = server();
    let (ctx, shared, uri) = node_handshake(&mut node, &srv, "/ecdhe");

    // node-kms wraps a request under the shared key; we open it.
    let w = node.call(
        json!({"op": "kms_client_wrap", "ctx": ctx, "request": {"method": "create", "uri": "/keys", "count": 2}}),
    );
    let Incoming::Session { kid, jwe } = classify(w["wrapped"].as_str().unwrap()).unwrap() else {
        panic!("session message")
    };
    assert_eq!(kid, uri.to_string());
    let req = open_request(&shared, &uri, &jwe).unwrap();
    assert_eq!(req.request_id, w["requestId"].as_str().unwrap());
    assert_eq!(req.operation(REALM).unwrap(), Operation::CreateKeys { count: 2 });

    // We answer; node-kms unwraps and sees the same object.
    let mut resp = Response::new(Status::CREATED, req.request_id.clone());
    let k = OctKey::generate(32, Some("k1".into())).unwrap();
    let now = date::now();
    resp.keys = Some(vec![KeyObject {
        uri: KmsUri::object(DOMAIN, Kind::Keys, "k1").unwrap(),
        jwk: k.to_jwk(),
        user_id: "alice@acme.example".into(),
        client_id: "device-1".into(),
        create_date: now,
        expiration_date: now + time::Duration::minutes(10),
        resource_uri: None,
        bind_date: None,
    }]);
    let sealed = seal_response(&shared, &uri, &resp).unwrap();
    let body = node.call(json!({"op": "kms_client_unwrap", "ctx": ctx, "response": sealed}))["body"].clone();
    assert_eq!(body["status"], 201);
    assert_eq!(body["requestId"], req.request_id);
    assert_eq!(body["keys"][0]["uri"], "kms://kms.acme.example/keys/k1");
    assert_eq!(unb64(body["keys"][0]["jwk"]["k"].as_str().unwrap()), k.expose());
    assert_eq!(body["keys"][0]["createDate"], date::format(&now));
}

#[test]
fn node_kms_client_with_absolute_ecdhe_uri_and_reset() {
    let mut node = Node::start();
    let srv = server();
    let (ctx, _shared, _uri) = node_handshake(&mut node, &srv, "kms://kms.acme.example/ecdhe");

    // A signed reset is verified and read by node-kms.
    let reset = srv.reset(Some("req-9"), "ephemeral key expired").unwrap();
    let body = node.call(json!({"op": "kms_client_unwrap", "ctx": ctx, "response": reset}))["body"].clone();
    assert_eq!(body["status"], 499);
    assert_eq!(body["requestId"], "req-9");
    assert!(body["timestamp"].is_string());

    // A reset signed by another key is refused by node-kms.
    let other = server();
    let forged = other.reset(Some("req-9"), "forged").unwrap();
    let err = node.try_call(json!({"op": "kms_client_unwrap", "ctx": ctx, "response": forged})).unwrap_err();
    assert!(!err.is_empty());
}

#[test]
fn node_kms_request_to_another_kms_is_refused() {
    let mut node = Node::start();
    let srv = server();
    let server_jwk = serde_json::to_value(srv.public_key().to_jwk()).unwrap();
    let hs = node.call(json!({"op": "kms_client_handshake", "serverJwk": server_jwk, "clientInfo": client_info(), "uri": "kms://kms.evil.example/ecdhe"}));
    let Incoming::Handshake(jwe) = classify(hs["wrapped"].as_str().unwrap()).unwrap() else { panic!() };
    assert!(srv.open_handshake(&jwe).is_err());
    // Same request to a server with another key: decryption fails, no detail leaks.
    let hs = node.call(json!({"op": "kms_client_handshake", "serverJwk": server_jwk, "clientInfo": client_info()}));
    let Incoming::Handshake(jwe) = classify(hs["wrapped"].as_str().unwrap()).unwrap() else { panic!() };
    let other = ServerKey::new(RsaPrivateKey::generate(2048, Some("static-1".into())).unwrap(), DOMAIN).unwrap();
    assert_eq!(
        other.open_handshake(&jwe).unwrap_err(),
        kms_protocol::ProtocolError::Jose(jose::Error::DecryptionFailed)
    );
}

/// Our client against a server played by node-jose.
#[test]
fn our_client_against_node_jose_server() {
    let mut node = Node::start();
    let srv_priv = RsaPrivateKey::generate(2048, Some("static-2".into())).unwrap();
    let srv_jwk = serde_json::to_value(srv_priv.to_jwk()).unwrap();
    let kms = kms_protocol::KmsInfo { domain: DOMAIN.into(), key: srv_priv.public_key().clone() };
    let client = ClientInfo { client_id: "cli".into(), credential: Credential::bearer("tok") };
    let pending = kms_protocol::begin_handshake(&kms, client).unwrap();

    // node-jose decrypts our RSA-OAEP request with the server key.
    let dec = node.call(json!({"op": "jwe_decrypt", "jwk": srv_jwk, "compact": pending.wrapped}));
    assert_eq!(dec["header"]["alg"], "RSA-OAEP");
    assert_eq!(dec["header"]["kid"], "static-2");
    let req: Value = serde_json::from_slice(&unb64(dec["plaintext"].as_str().unwrap())).unwrap();
    assert_eq!(req["uri"], "kms://kms.acme.example/ecdhe");
    assert_eq!(req["method"], "create");
    assert!(req["jwk"].get("d").is_none(), "our client sends only the public key");

    // node-jose plays the KMS: its own EC key, ECDH-HKDF, a PS256 response.
    let srv_ec = node.generate("EC", json!("P-256"), "srv-eph");
    let derived = node.call(json!({"op": "ecdh_hkdf", "privateJwk": srv_ec["private"], "publicJwk": req["jwk"]}));
    let now = date::now();
    let payload = json!({
        "status": 201, "requestId": req["requestId"],
        "key": {"uri": "kms://kms.acme.example/ecdhe/s1", "jwk": srv_ec["public"], "userId": "alice@acme.example",
                "clientId": "cli", "createDate": date::format(&now), "expirationDate": date::format(&(now + time::Duration::hours(1)))}
    });
    let signed = node
        .call(json!({"op": "jws_sign", "jwk": srv_jwk, "alg": "PS256", "typ": "kms-ecdhe", "kid": "static-2",
                                  "payload": b64(payload.to_string().as_bytes())}));
    let session = pending.finish(&kms, signed["compact"].as_str().unwrap()).unwrap();
    assert_eq!(session.shared_key().expose(), unb64(derived["key"].as_str().unwrap()));
    assert_eq!(session.uri().to_string(), "kms://kms.acme.example/ecdhe/s1");

    // Our wrapped request decrypts in node-jose with the derived key…
    let mut shared_jwk = serde_json::to_value(session.shared_key().to_jwk()).unwrap();
    shared_jwk["alg"] = json!("A256GCM");
    let req = kms_protocol::Request::new(kms_protocol::Method::Update, "/ping", None);
    let wrapped = session.wrap(&req).unwrap();
    let dec = node.call(json!({"op": "jwe_decrypt", "jwk": shared_jwk, "compact": wrapped}));
    assert_eq!(dec["header"]["alg"], "dir");
    assert_eq!(dec["header"]["kid"], "kms://kms.acme.example/ecdhe/s1");
    let seen: Value = serde_json::from_slice(&unb64(dec["plaintext"].as_str().unwrap())).unwrap();
    assert_eq!(seen["requestId"], req.request_id);

    // …and node-jose's dir response unwraps here.
    let answer = json!({"status": 200, "requestId": req.request_id});
    let enc = node
        .call(json!({"op": "jwe_encrypt", "jwk": shared_jwk, "alg": "dir", "kid": "kms://kms.acme.example/ecdhe/s1",
                               "plaintext": b64(answer.to_string().as_bytes())}));
    let resp = session.unwrap(&kms, enc["compact"].as_str().unwrap(), &req.request_id).unwrap();
    assert_eq!(resp.status, Status::OK);
    // An answer to another request is refused.
    assert_eq!(
        session.unwrap(&kms, enc["compact"].as_str().unwrap(), "other").unwrap_err(),
        kms_protocol::ProtocolError::RequestIdMismatch
    );

    // A node-jose-signed reset in the right context is a Reset; without typ it is refused.
    let reset = json!({"status": 499, "requestId": req.request_id, "reason": "revoked", "timestamp": date::format(&date::now())});
    let signed = node.call(json!({"op": "jws_sign", "jwk": srv_jwk, "alg": "PS256", "typ": "kms-reset", "payload": b64(reset.to_string().as_bytes())}));
    assert_eq!(
        session.unwrap(&kms, signed["compact"].as_str().unwrap(), &req.request_id).unwrap_err(),
        kms_protocol::ProtocolError::Reset("revoked".into())
    );
    let untyped = node
        .call(json!({"op": "jws_sign", "jwk": srv_jwk, "alg": "PS256", "payload": b64(reset.to_string().as_bytes())}));
    assert!(matches!(
        session.unwrap(&kms, untyped["compact"].as_str().unwrap(), &req.request_id).unwrap_err(),
        kms_protocol::ProtocolError::WrongContext { .. }
    ));
}

#[test]
fn jws_both_directions_all_algorithms() {
    let mut node = Node::start();
    let rsa = RsaPrivateKey::generate(2048, Some("r".into())).unwrap();
    let ec = EcPrivateKey::generate(Some("e".into())).unwrap();
    let payload = br#"{"hello":"world"}"#;
    for (alg, sk, vk, jwk_priv, jwk_pub) in [
        (SigAlg::PS256, SignKey::Rsa(&rsa), VerifyKey::Rsa(rsa.public_key()), rsa.to_jwk(), rsa.public_key().to_jwk()),
        (SigAlg::RS256, SignKey::Rsa(&rsa), VerifyKey::Rsa(rsa.public_key()), rsa.to_jwk(), rsa.public_key().to_jwk()),
        (SigAlg::ES256, SignKey::Ec(&ec), VerifyKey::Ec(ec.public_key()), ec.to_jwk(), ec.public_key().to_jwk()),
    ] {
        let ours = jose::jws::sign(alg, sk, &HeaderParams::kid("x"), payload).unwrap();
        let v = node.call(json!({"op": "jws_verify", "jwk": jwk_pub, "compact": ours}));
        assert_eq!(v["header"]["alg"], alg.name());
        assert_eq!(unb64(v["payload"].as_str().unwrap()), payload);

        let theirs = node.call(json!({"op": "jws_sign", "jwk": jwk_priv, "alg": alg.name(), "payload": b64(payload)}));
        let jws =
            Jws::parse(theirs["compact"].as_str().unwrap(), &JwsPolicy { algs: &[alg], max_len: 1 << 20 }).unwrap();
        assert_eq!(jws.verify(vk).unwrap(), payload, "{alg:?} from node-jose");
    }
}

#[test]
fn jwe_both_directions() {
    let mut node = Node::start();
    let rsa = RsaPrivateKey::generate(2048, Some("r".into())).unwrap();
    let oct = OctKey::generate(32, Some("o".into())).unwrap();
    let mut oct_jwk = serde_json::to_value(oct.to_jwk()).unwrap();
    oct_jwk["alg"] = json!("A256GCM");
    let plain: Vec<u8> = (0..1500u32).map(|i| (i * 7) as u8).collect();

    // Ours → node-jose.
    let c =
        jose::jwe::encrypt(EncryptKey::RsaOaep(rsa.public_key()), ContentEnc::A256Gcm, &HeaderParams::kid("r"), &plain)
            .unwrap();
    let d = node.call(json!({"op": "jwe_decrypt", "jwk": rsa.to_jwk(), "compact": c}));
    assert_eq!(unb64(d["plaintext"].as_str().unwrap()), plain);
    let c = jose::jwe::encrypt(EncryptKey::Dir(&oct), ContentEnc::A256Gcm, &HeaderParams::kid("o"), &plain).unwrap();
    let d = node.call(json!({"op": "jwe_decrypt", "jwk": oct_jwk, "compact": c}));
    assert_eq!(unb64(d["plaintext"].as_str().unwrap()), plain);
    // node-jose refuses our JWE once tampered (its check agrees with ours).
    let mut t = c.clone().into_bytes();
    let last = t.len() - 2;
    t[last] = if t[last] == b'A' { b'B' } else { b'A' };
    assert!(node
        .try_call(json!({"op": "jwe_decrypt", "jwk": oct_jwk, "compact": String::from_utf8(t).unwrap()}))
        .is_err());

    // node-jose → ours.
    let e = node.call(
        json!({"op": "jwe_encrypt", "jwk": rsa.public_key().to_jwk(), "alg": "RSA-OAEP", "plaintext": b64(&plain)}),
    );
    let jwe = Jwe::parse(e["compact"].as_str().unwrap(), &JwePolicy::RSA_OAEP).unwrap();
    assert_eq!(&jwe.decrypt(DecryptKey::RsaOaep(&rsa)).unwrap()[..], &plain[..]);
    let e = node.call(json!({"op": "jwe_encrypt", "jwk": oct_jwk, "alg": "dir", "plaintext": b64(&plain)}));
    let jwe = Jwe::parse(e["compact"].as_str().unwrap(), &JwePolicy::DIR).unwrap();
    assert_eq!(&jwe.decrypt(DecryptKey::Dir(&oct)).unwrap()[..], &plain[..]);
}

#[test]
fn keys_and_pem_both_directions() {
    let mut node = Node::start();
    // node-jose keys (JWK and PEM) → ours.
    for (kty, arg) in [("RSA", json!(2048)), ("EC", json!("P-256"))] {
        let g = node.generate(kty, arg, "n1");
        let jwk: Jwk = serde_json::from_value(g["private"].clone()).unwrap();
        let pub_jwk: Jwk = serde_json::from_value(g["public"].clone()).unwrap();
        match kty {
            "RSA" => {
                let from_jwk = jwk.to_rsa_private().unwrap();
                let from_pem = RsaPrivateKey::from_pem(g["privatePem"].as_str().unwrap(), None).unwrap();
                assert_eq!(from_jwk.public_key(), from_pem.public_key());
                let p = jose::RsaPublicKey::from_pem(g["publicPem"].as_str().unwrap(), None).unwrap();
                assert_eq!(&p, from_jwk.public_key());
                assert_eq!(p.to_jwk().n, pub_jwk.n);
                // Ours → node-jose: our PEM imports there as the same key.
                let back = node.call(json!({"op": "from_pem", "pem": *from_jwk.to_pem()}));
                assert_eq!(back["jwk"]["n"], g["public"]["n"]);
                assert_eq!(back["hasPrivate"], true);
                let back = node.call(json!({"op": "from_pem", "pem": p.to_pem()}));
                assert_eq!(back["jwk"]["n"], g["public"]["n"]);
            }
            _ => {
                let from_jwk = jwk.to_ec_private().unwrap();
                let from_pem = EcPrivateKey::from_pem(g["privatePem"].as_str().unwrap(), None).unwrap();
                assert_eq!(from_jwk.public_key().sec1(), from_pem.public_key().sec1());
                let p = jose::EcPublicKey::from_pem(g["publicPem"].as_str().unwrap(), None).unwrap();
                assert_eq!(p.to_jwk().x, pub_jwk.x);
                let back = node.call(json!({"op": "from_pem", "pem": *from_jwk.to_pem()}));
                assert_eq!(back["jwk"]["x"], g["public"]["x"]);
                assert_eq!(back["jwk"]["d"], g["private"]["d"]);
                let back = node.call(json!({"op": "from_pem", "pem": p.to_pem()}));
                assert_eq!(back["jwk"]["y"], g["public"]["y"]);
            }
        }
    }
}

#[test]
fn ecdh_hkdf_matches_node_jose() {
    let mut node = Node::start();
    for _ in 0..5 {
        let a = EcPrivateKey::generate(None).unwrap();
        let b = node.generate("EC", json!("P-256"), "b");
        let b_pub: Jwk = serde_json::from_value(b["public"].clone()).unwrap();
        let ours = jose::ecdh_hkdf(&a, &b_pub.to_ec_public().unwrap(), None).unwrap();
        let theirs =
            node.call(json!({"op": "ecdh_hkdf", "privateJwk": b["private"], "publicJwk": a.public_key().to_jwk()}));
        assert_eq!(ours.expose(), unb64(theirs["key"].as_str().unwrap()));
    }
}
