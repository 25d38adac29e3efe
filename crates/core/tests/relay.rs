//! The KMS relay with a real KMS: a client pins the KMS key from the KMS
//! itself, then handshakes, creates and retrieves keys THROUGH the core
//! (HTTP `POST /kms/<domain>/messages` and the WebSocket `kms` frame). The
//! core token authorizes the relay call; the KMS token travels inside the
//! encrypted KMS message. A core that tampers with or replays answers is
//! caught by the client; an unreachable or unknown KMS gets a clear error, fast.
//! The core relays only for the KMS's own org, within per-caller limits, so
//! that nobody can spend the org's budget at its KMS and lock the org out.

mod common;

#[path = "../../kms/tests/common/server.rs"]
mod kms_server;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use kms_protocol::{
    begin_handshake, ClientInfo, Credential, KeyObject, KmsInfo, Method, Request, Response, Session, Status,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::Idp;

struct World {
    kms: kms_server::Server,
    core: Core,
    /// Pinned from the KMS's own `/kms/info`, never from the core.
    info: KmsInfo,
    /// The issuer of globex, the core's other org (its KMS is not running).
    globex: Arc<Idp>,
    _kms_dir: tempfile::TempDir,
}

async fn world() -> World {
    let idp = Arc::new(Idp::start());
    let kms_dir = tempfile::tempdir().unwrap();
    let cfg = kms_server::config_text(kms_dir.path(), &idp.issuer, "");
    let kms = tokio::task::spawn_blocking(move || kms_server::Server::start(&cfg)).await.unwrap();
    let v: Value = reqwest::get(format!("{}/kms/info", kms.url)).await.unwrap().json().await.unwrap();
    assert_eq!(v["uri"], format!("kms://{KMS}"));
    let jwk: jose::Jwk = serde_json::from_value(v["key"].clone()).unwrap();
    let info = KmsInfo { domain: KMS.into(), key: jwk.to_rsa_public().unwrap() };
    let org = format!("kms_url = \"{}\"", kms.url);
    let globex = Arc::new(Idp::start());
    let tail = globex_tail(&globex.issuer, "");
    let core = start_with(idp, Opts { org: &org, tail: &tail, ..Opts::default() }).await;
    World { kms, core, info, globex, _kms_dir: kms_dir }
}

async fn kms_token(core: &Core, name: &str) -> String {
    core.idp.token(&[("sub", name), ("aud", &format!("kms://{KMS}"))]).await
}

/// One relayed message over HTTP: status, content type, body.
async fn relay(user: &User, domain: &str, body: &str) -> (StatusCode, String, String) {
    let r = user
        .http
        .post(format!("{}/kms/{domain}/messages", user.url))
        .bearer_auth(&user.token)
        .header("content-type", "application/jose")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let ctype = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (status, ctype, r.text().await.unwrap())
}

fn request(ci: &ClientInfo, method: Method, uri: &str) -> Request {
    Request::new(method, uri, Some(ci.clone()))
}

/// Flips one character in the middle of segment `seg` of a compact serialization.
fn tamper(compact: &str, seg: usize) -> String {
    let mut parts: Vec<String> = compact.split('.').map(str::to_string).collect();
    let s = &mut parts[seg];
    if s.is_empty() {
        s.push('A');
        return parts.join(".");
    }
    let i = s.len() / 2;
    let c = s.as_bytes()[i];
    let flipped = if c == b'A' { 'B' } else { 'A' };
    s.replace_range(i..=i, &flipped.to_string());
    parts.join(".")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_create_and_retrieve_keys_through_the_core() {
    let w = world().await;
    let alice = User::new(&w.core, "alice").await;
    let ktok = kms_token(&w.core, "alice").await;
    let ci = ClientInfo { client_id: "relay-test".into(), credential: Credential::bearer(ktok.clone()) };

    // Handshake through the relay, verified with the key pinned from the KMS.
    let pending = begin_handshake(&w.info, ci.clone()).unwrap();
    let (st, ctype, answer) = relay(&alice, KMS, &pending.wrapped).await;
    assert_eq!(st, StatusCode::OK, "{answer}");
    assert!(ctype.starts_with("application/jose"), "{ctype}");
    let session = pending.finish(&w.info, &answer).unwrap();

    // Create keys, then retrieve one.
    let mut create = request(&ci, Method::Create, "/keys");
    create.body.count = Some(3);
    let (st, _, answer) = relay(&alice, KMS, &session.wrap(&create).unwrap()).await;
    assert_eq!(st, StatusCode::OK);
    let created = session.unwrap(&w.info, &answer, &create.request_id).unwrap();
    assert_eq!(created.status, Status::CREATED, "{:?}", created.reason);
    let keys: Vec<KeyObject> = created.keys.unwrap();
    assert_eq!(keys.len(), 3);
    let get = request(&ci, Method::Retrieve, &keys[1].uri.to_string());
    let (st, _, answer) = relay(&alice, KMS, &session.wrap(&get).unwrap()).await;
    assert_eq!(st, StatusCode::OK);
    let got = session.unwrap(&w.info, &answer, &get.request_id).unwrap();
    assert_eq!(got.status, Status::OK, "{:?}", got.reason);
    let k = got.key.unwrap();
    assert_eq!(k.uri, keys[1].uri);
    assert_eq!(k.jwk.to_oct().unwrap().expose(), keys[1].jwk.to_oct().unwrap().expose(), "the same key material");
    // The relay never saw it: the answer is a `dir` JWE, nothing in it is the key.
    let kb64 = jose::b64::encode(k.jwk.to_oct().unwrap().expose());
    assert!(!answer.contains(&kb64));
    assert_eq!(answer.split('.').count(), 5);

    // A batch goes through the relay too.
    let ping1 = request(&ci, Method::Update, "/ping");
    let ping2 = request(&ci, Method::Update, "/ping");
    let r = alice
        .http
        .post(format!("{}/kms/{KMS}/messages", w.core.url))
        .bearer_auth(&alice.token)
        .json(&json!({"kmsMessages": [session.wrap(&ping1).unwrap(), session.wrap(&ping2).unwrap()]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let batch: Value = r.json().await.unwrap();
    let answers: Vec<&str> = batch["kmsMessages"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(answers.len(), 2);
    let ok = |a: &str, id: &str| session.unwrap(&w.info, a, id).map(|r| r.status);
    assert!(answers.iter().any(|a| ok(a, &ping1.request_id) == Ok(Status::OK)));
    assert!(answers.iter().any(|a| ok(a, &ping2.request_id) == Ok(Status::OK)));

    // ---- a core that tampers or replays is caught by the client.
    let get = request(&ci, Method::Retrieve, &keys[0].uri.to_string());
    let (_, _, answer) = relay(&alice, KMS, &session.wrap(&get).unwrap()).await;
    assert!(session.unwrap(&w.info, &answer, &get.request_id).is_ok());
    for seg in 0..5 {
        let bad = tamper(&answer, seg);
        assert_ne!(bad, answer);
        assert!(session.unwrap(&w.info, &bad, &get.request_id).is_err(), "a flipped byte in segment {seg} is detected");
    }
    // An earlier genuine answer, replayed for another request.
    let get0 = request(&ci, Method::Retrieve, &keys[0].uri.to_string());
    let replay = relay(&alice, KMS, &session.wrap(&get).unwrap()).await.2;
    assert!(session.unwrap(&w.info, &replay, &get0.request_id).is_err(), "a replayed answer is detected");
    // A tampered handshake answer, and a genuine one checked against a key the core could have handed out.
    let pending = begin_handshake(&w.info, ci.clone()).unwrap();
    let (_, _, answer) = relay(&alice, KMS, &pending.wrapped).await;
    assert!(pending.finish(&w.info, &tamper(&answer, 1)).is_err(), "a tampered handshake answer is detected");
    let pending = begin_handshake(&w.info, ci.clone()).unwrap();
    let (_, _, answer) = relay(&alice, KMS, &pending.wrapped).await;
    let impostor = jose::RsaPrivateKey::generate(2048, w.info.key.kid().map(str::to_string)).unwrap();
    let wrong = KmsInfo { domain: KMS.into(), key: impostor.public_key().clone() };
    assert!(pending.finish(&wrong, &answer).is_err(), "the answer verifies only with the KMS's own key");

    // ---- the two tokens are not interchangeable.
    // A KMS token does not authorize the relay...
    let kms_tok = User { token: ktok.clone(), ..alice.on(&w.core) };
    let pending = begin_handshake(&w.info, ci.clone()).unwrap();
    assert_eq!(relay(&kms_tok, KMS, &pending.wrapped).await.0, StatusCode::UNAUTHORIZED);
    // ...and the core token inside a KMS message does not satisfy the KMS.
    let core_ci = ClientInfo { client_id: "relay-test".into(), credential: Credential::bearer(alice.token.clone()) };
    let pending = begin_handshake(&w.info, core_ci).unwrap();
    let (st, _, answer) = relay(&alice, KMS, &pending.wrapped).await;
    assert_eq!(st, StatusCode::OK, "the relay passes it on; the KMS refuses it inside the protocol");
    match pending.finish(&w.info, &answer) {
        Err(kms_protocol::ProtocolError::Status { status, .. }) => {
            assert_eq!(status, Status::UNAUTHORIZED, "a core-audience token is no KMS credential")
        }
        other => panic!("the KMS must refuse a core-audience token: {other:?}"),
    }

    // The core relays without reading: a session message of another user's session is just bytes to it.
    let bob = User::new(&w.core, "bob").await;
    let get = request(&ci, Method::Retrieve, &keys[2].uri.to_string());
    let (st, _, answer) = relay(&bob, KMS, &session.wrap(&get).unwrap()).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        session.unwrap(&w.info, &answer, &get.request_id).unwrap().status,
        Status::OK,
        "only the session key matters, not who relayed it"
    );
    drop(w.kms);
}

/// One KMS frame over the core's WebSocket; the `kms` answer frame with that id.
async fn ws_relay(ws: &mut Ws, id: &str, domain: &str, message: &str) -> Value {
    ws.send(json!({"type": "kms", "id": id, "domain": domain, "message": message})).await;
    loop {
        let f = ws.next().await;
        if f["type"] == "kms" && f["id"] == id {
            return f;
        }
        assert_eq!(f["type"], "event", "unexpected frame {f}");
    }
}

fn ws_answer(session: &Session, info: &KmsInfo, f: &Value, req: &Request) -> Response {
    assert_eq!(f["status"], 200, "{f}");
    session.unwrap(info, f["message"].as_str().unwrap(), &req.request_id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_over_the_core_websocket() {
    let w = world().await;
    let alice = User::new(&w.core, "alice").await;
    let ci =
        ClientInfo { client_id: "relay-ws".into(), credential: Credential::bearer(kms_token(&w.core, "alice").await) };
    let mut ws = Ws::connect(&w.core.url, &alice.token, json!({})).await;

    let pending = begin_handshake(&w.info, ci.clone()).unwrap();
    let f = ws_relay(&mut ws, "h1", KMS, &pending.wrapped).await;
    assert_eq!(f["status"], 200, "{f}");
    let session = pending.finish(&w.info, f["message"].as_str().unwrap()).unwrap();

    let mut create = request(&ci, Method::Create, "/keys");
    create.body.count = Some(2);
    let f = ws_relay(&mut ws, "c1", KMS, &session.wrap(&create).unwrap()).await;
    let keys = ws_answer(&session, &w.info, &f, &create).keys.unwrap();
    let get = request(&ci, Method::Retrieve, &keys[0].uri.to_string());
    let f = ws_relay(&mut ws, "r1", KMS, &session.wrap(&get).unwrap()).await;
    let got = ws_answer(&session, &w.info, &f, &get);
    assert_eq!(got.key.unwrap().jwk.to_oct().unwrap().expose(), keys[0].jwk.to_oct().unwrap().expose());
    // Tampered on the way back: detected.
    let f = ws_relay(&mut ws, "r2", KMS, &session.wrap(&get).unwrap()).await;
    assert!(session.unwrap(&w.info, &tamper(f["message"].as_str().unwrap(), 3), &get.request_id).is_err());

    // Several in flight at once: each answer carries its id.
    let mut inflight = std::collections::HashMap::new();
    for i in 0..6 {
        let r = request(&ci, Method::Retrieve, &keys[i % 2].uri.to_string());
        ws.send(json!({"type": "kms", "id": format!("p{i}"), "domain": KMS, "message": session.wrap(&r).unwrap()}))
            .await;
        inflight.insert(format!("p{i}"), (r, keys[i % 2].uri.clone()));
    }
    while !inflight.is_empty() {
        let f = ws.next().await;
        assert_eq!(f["type"], "kms", "{f}");
        let (r, uri) = inflight.remove(f["id"].as_str().unwrap()).expect("an id we sent, once");
        let a = ws_answer(&session, &w.info, &f, &r);
        assert_eq!(a.status, Status::OK);
        assert_eq!(a.key.unwrap().uri, uri, "each answer matches its own request");
    }

    // An unknown KMS: a clear error, on the same socket.
    let f = ws_relay(&mut ws, "u1", "kms.nowhere.example", &session.wrap(&get).unwrap()).await;
    assert_eq!(f["status"], 404, "{f}");
    assert_eq!(f["error"], "not_found");
    // The socket still works.
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.next().await["type"], "pong");
    drop(w.kms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_unknown_and_unauthenticated() {
    // A KMS address where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let idp = Arc::new(Idp::start());
    let org = format!("kms_url = \"http://127.0.0.1:{port}\"");
    let core = start_with(idp.clone(), Opts { org: &org, ..Opts::default() }).await;
    let alice = User::new(&core, "alice").await;
    let body = "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d";

    let t = Instant::now();
    let (st, _, answer) = relay(&alice, KMS, body).await;
    let took = t.elapsed();
    eprintln!("relay to a closed port answered {st} in {took:?}");
    assert_eq!(st, StatusCode::BAD_GATEWAY, "{answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["error"], "kms_unreachable", "{v}");
    assert!(took < Duration::from_secs(3), "unreachable is reported fast: {took:?}");
    assert!(
        !answer.contains("127.0.0.1") && !answer.contains(&port.to_string()),
        "the KMS's address is not disclosed: {answer}"
    );

    // The same over the WebSocket.
    let mut ws = Ws::connect(&core.url, &alice.token, json!({})).await;
    let t = Instant::now();
    let f = ws_relay(&mut ws, "x", KMS, body).await;
    eprintln!("WebSocket relay to a closed port answered in {:?}", t.elapsed());
    assert_eq!(f["status"], 502, "{f}");
    assert_eq!(f["error"], "kms_unreachable");
    assert!(t.elapsed() < Duration::from_secs(3));

    // Unknown KMS domains (including ones that are not domains at all).
    for d in ["kms.other.example", "KMS.nowhere.example", "..%2F..%2Fetc", "127.0.0.1", "kms.acme.example.evil.example"]
    {
        let (st, _, answer) = relay(&alice, d, body).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{d}: {answer}");
    }
    // The relay wants a core token.
    let r = reqwest::Client::new()
        .post(format!("{}/kms/{KMS}/messages", core.url))
        .header("content-type", "application/jose")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = reqwest::Client::new()
        .post(format!("{}/kms/{KMS}/messages", core.url))
        .bearer_auth("garbage")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // An org without any KMS address (nor a link): 502 at once.
    let bare = start_with(idp.clone(), Opts::default()).await;
    let alice_bare = alice.on(&bare);
    let t = Instant::now();
    let (st, _, answer) = relay(&alice_bare, KMS, body).await;
    assert_eq!(st, StatusCode::BAD_GATEWAY, "{answer}");
    assert!(answer.contains("kms_unreachable"));
    assert!(t.elapsed() < Duration::from_secs(1));

    // A KMS that accepts the connection and then says nothing: 502 after the
    // core's timeout, not a hung client.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = hang.accept().await {
            conns.push(c);
        }
    });
    let org = format!("kms_url = \"http://127.0.0.1:{hang_port}\"");
    let slow = start_with(idp, Opts { org: &org, ..Opts::default() }).await;
    let t = Instant::now();
    let (st, _, answer) = relay(&alice.on(&slow), KMS, body).await;
    let took = t.elapsed();
    eprintln!("relay to a silent KMS answered {st} in {took:?}");
    assert_eq!(st, StatusCode::BAD_GATEWAY, "{answer}");
    assert!(answer.contains("kms_unreachable"));
    assert!(
        took >= custos_core::relay::KMS_TIMEOUT - Duration::from_millis(100)
            && took < custos_core::relay::KMS_TIMEOUT + Duration::from_secs(2),
        "{took:?}"
    );
    held.abort();
}

// ---- who may relay, and how much: nobody can lock an org out of its KMS.

/// A stand-in KMS that counts the requests reaching it and answers each with `stub`.
struct StubKms {
    url: String,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl StubKms {
    async fn start() -> StubKms {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let app = axum::Router::new().route(
            "/kms/messages",
            axum::routing::post(move || {
                h.fetch_add(1, Ordering::SeqCst);
                async { ([("content-type", "application/jose")], "stub") }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        StubKms { url, hits, task }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for StubKms {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A core whose acme KMS is `stub`, with globex as a second org; `limits` goes into the tail.
async fn stub_world(stub: &StubKms, globex: &Idp, limits: &str) -> Core {
    let org = format!("kms_url = \"{}\"", stub.url);
    let tail = globex_tail(&globex.issuer, limits);
    start_with(Arc::new(Idp::start()), Opts { org: &org, tail: &tail, ..Opts::default() }).await
}

/// A `kmsMessages` batch of `n` garbage messages over HTTP: status, `Retry-After`, body.
async fn relay_batch(user: &User, domain: &str, n: usize) -> (StatusCode, Option<String>, String) {
    let batch: Vec<String> = (0..n).map(|i| format!("garbage-{i}")).collect();
    relay_raw(user, domain, "application/json", json!({ "kmsMessages": batch }).to_string()).await
}

/// One relay request over HTTP: status, `Retry-After`, body.
async fn relay_raw(user: &User, domain: &str, ctype: &str, body: String) -> (StatusCode, Option<String>, String) {
    let r = user
        .http
        .post(format!("{}/kms/{domain}/messages", user.url))
        .bearer_auth(&user.token)
        .header("content-type", ctype)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (status, retry, r.text().await.unwrap())
}

fn error_code(body: &str) -> String {
    serde_json::from_str::<Value>(body).ok().and_then(|v| v["error"].as_str().map(str::to_string)).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_orgs_user_is_refused_and_nothing_reaches_the_kms() {
    let stub = StubKms::start().await;
    let globex = Idp::start();
    let core = stub_world(&stub, &globex, "").await;
    let mallory = User::of_org(&core, &globex, "mallory", GLOBEX).await;

    // One message, a batch, the KMS domain spelled in capitals: 403, with a clear reason.
    let (st, _, answer) = relay(&mallory, KMS, "garbage").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["error"], "kms_not_your_org", "{v}");
    let why = v["message"].as_str().unwrap();
    assert!(why.contains(KMS) && why.contains("your organization") && why.contains("federates"), "{why}");
    let (st, retry, answer) = relay_batch(&mallory, KMS, 10).await;
    assert_eq!((st, error_code(&answer).as_str(), retry), (StatusCode::FORBIDDEN, "kms_not_your_org", None));
    let (st, _, answer) = relay(&mallory, "KMS.Acme.Example", "garbage").await;
    assert_eq!((st, error_code(&answer).as_str()), (StatusCode::FORBIDDEN, "kms_not_your_org"));
    // Over the WebSocket too.
    let mut ws = Ws::connect(&core.url, &mallory.token, json!({})).await;
    let f = ws_relay(&mut ws, "m1", KMS, "garbage").await;
    assert_eq!(f["status"], 403, "{f}");
    assert_eq!(f["error"], "kms_not_your_org");
    assert!(f["reason"].as_str().unwrap().contains("federates"), "{f}");
    // Refusals cost nothing and change nothing: well past the relay's burst,
    // still 403 (never a 429 that would say she was counted), and the KMS saw none of it.
    for _ in 0..150 {
        assert_eq!(relay(&mallory, KMS, "garbage").await.0, StatusCode::FORBIDDEN);
    }
    assert_eq!(stub.hits(), 0, "nothing reached acme's KMS");
    // Her own org's KMS is hers to use (this one has no address: 502, not 403).
    let (st, _, answer) = relay(&mallory, &format!("kms.{GLOBEX}"), "garbage").await;
    assert_eq!((st, error_code(&answer).as_str()), (StatusCode::BAD_GATEWAY, "kms_unreachable"), "{answer}");

    // acme's own users get through, over HTTP and the WebSocket.
    let bob = User::new(&core, "bob").await;
    let (st, _, answer) = relay(&bob, KMS, "garbage").await;
    assert_eq!((st, answer.as_str()), (StatusCode::OK, "stub"));
    let mut ws = Ws::connect(&core.url, &bob.token, json!({})).await;
    let f = ws_relay(&mut ws, "b1", KMS, "garbage").await;
    assert_eq!((f["status"].as_u64(), f["message"].as_str()), (Some(200), Some("stub")), "{f}");
    assert_eq!(stub.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_has_a_relay_budget_and_refusals_cost_nothing() {
    let stub = StubKms::start().await;
    let globex = Idp::start();
    // 5 at once, then one every 20 s: nothing refills during the test.
    let core = stub_world(&stub, &globex, "[limits]\nrelay_burst = 5\nrelay_per_second = 0.05\n").await;
    let bob = User::new(&core, "bob").await;

    assert_eq!(relay_batch(&bob, KMS, 3).await.0, StatusCode::OK);
    assert_eq!(stub.hits(), 1);
    // 2 left: a batch of 3 is refused whole, with when to come back.
    let (st, retry, answer) = relay_batch(&bob, KMS, 3).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["error"], "relay_throttled", "{v}");
    assert!(v["message"].as_str().unwrap().contains("at most 5 at once"), "{v}");
    let retry: u64 = retry.expect("a Retry-After header").parse().unwrap();
    assert!((1..=20).contains(&retry), "one token comes back in 20 s: {retry}");
    assert_eq!(stub.hits(), 1, "a refused batch does not reach the KMS");
    // The refusal took nothing: the 2 left still pass, then nothing does.
    assert_eq!(relay_batch(&bob, KMS, 2).await.0, StatusCode::OK);
    assert_eq!(stub.hits(), 2);
    let (st, retry, answer) = relay_raw(&bob, KMS, "application/jose", "garbage".into()).await;
    assert_eq!((st, error_code(&answer).as_str()), (StatusCode::TOO_MANY_REQUESTS, "relay_throttled"));
    assert!(retry.is_some());
    // A batch larger than the burst could never pass: 413, not a 429 to retry forever.
    let (st, retry, answer) = relay_batch(&bob, KMS, 6).await;
    assert_eq!(
        (st, error_code(&answer).as_str(), retry),
        (StatusCode::PAYLOAD_TOO_LARGE, "relay_batch_too_large", None)
    );
    // The WebSocket draws on the same budget, and says when to retry.
    let mut ws = Ws::connect(&core.url, &bob.token, json!({})).await;
    let f = ws_relay(&mut ws, "b1", KMS, "garbage").await;
    assert_eq!((f["status"].as_u64(), f["error"].as_str()), (Some(429), Some("relay_throttled")), "{f}");
    assert!(f["retry_after"].as_u64().is_some_and(|s| (1..=20).contains(&s)), "{f}");
    assert_eq!(stub.hits(), 2, "nothing refused reached the KMS");

    // Another user of the org has a budget of their own.
    let alice = User::new(&core, "alice").await;
    assert_eq!(relay_batch(&alice, KMS, 5).await.0, StatusCode::OK);
    let mut ws = Ws::connect(&core.url, &alice.token, json!({})).await;
    assert_eq!(ws_relay(&mut ws, "a1", KMS, "garbage").await["status"], 429);
    assert_eq!(stub.hits(), 3);
}

/// What a flooder got back: batches sent, and each answer's status, error code and `Retry-After`.
#[derive(Default)]
struct Flood {
    sent: AtomicUsize,
    answers: std::sync::Mutex<Vec<(StatusCode, String, Option<String>)>>,
}

/// Posts batches of 50 garbage messages as fast as the core answers, until `stop`.
fn flood(user: User, stop: Arc<AtomicBool>) -> (Arc<Flood>, tokio::task::JoinHandle<()>) {
    let f = Arc::new(Flood::default());
    let out = f.clone();
    let task = tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            let (st, retry, body) = relay_batch(&user, KMS, 50).await;
            let code = if st.is_success() { String::new() } else { error_code(&body) };
            out.answers.lock().unwrap().push((st, code, retry));
            out.sent.fetch_add(1, Ordering::SeqCst);
        }
    });
    (f, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_another_org_and_from_an_own_user_does_not_lock_alice_out() {
    // A real KMS with its default per-source throttle (every relayed message
    // comes from the core's address) and the core's default relay limits.
    let w = world().await;
    let mallory = User::of_org(&w.core, &w.globex, "mallory", GLOBEX).await;
    let bob = User::new(&w.core, "bob").await;
    let alice = User::new(&w.core, "alice").await;
    let ci = ClientInfo {
        client_id: "relay-flood".into(),
        credential: Credential::bearer(kms_token(&w.core, "alice").await),
    };

    let stop = Arc::new(AtomicBool::new(false));
    let (from_globex, t1) = flood(mallory, stop.clone());
    let (from_bob, t2) = flood(bob, stop.clone());
    // Well past any budget: 1,000 garbage messages each (the KMS's per-source
    // burst is 200, the core's per-caller burst 150) before alice starts, and
    // the floods go on while she opens her session.
    let t = Instant::now();
    while from_globex.sent.load(Ordering::SeqCst) < 20 || from_bob.sent.load(Ordering::SeqCst) < 20 {
        assert!(t.elapsed() < Duration::from_secs(60), "the floods made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pending = begin_handshake(&w.info, ci.clone()).unwrap();
    let (st, _, answer) = relay(&alice, KMS, &pending.wrapped).await;
    assert_eq!(st, StatusCode::OK, "alice's handshake went through during the floods: {answer}");
    let session = pending.finish(&w.info, &answer).expect("alice's session is open");
    let mut create = request(&ci, Method::Create, "/keys");
    create.body.count = Some(1);
    let (st, _, answer) = relay(&alice, KMS, &session.wrap(&create).unwrap()).await;
    assert_eq!(st, StatusCode::OK, "{answer}");
    assert_eq!(session.unwrap(&w.info, &answer, &create.request_id).unwrap().status, Status::CREATED);
    stop.store(true, Ordering::SeqCst);
    t1.await.unwrap();
    t2.await.unwrap();
    let flood_secs = t.elapsed().as_secs_f64();

    // Another org's user never reached the KMS.
    let globex_answers = from_globex.answers.lock().unwrap();
    assert!(globex_answers.len() >= 20);
    for (st, code, _) in globex_answers.iter() {
        assert_eq!((*st, code.as_str()), (StatusCode::FORBIDDEN, "kms_not_your_org"));
    }
    // bob's first batches went through (he is one of the org's users); the
    // rest got the core's 429 with a Retry-After, not the KMS's.
    let bob_answers = from_bob.answers.lock().unwrap();
    let passed = bob_answers.iter().filter(|(st, ..)| *st == StatusCode::OK).count();
    let throttled = bob_answers
        .iter()
        .filter(|(st, code, retry)| {
            *st == StatusCode::TOO_MANY_REQUESTS && code == "relay_throttled" && retry.is_some()
        })
        .count();
    eprintln!(
        "bob: {} batches, {passed} relayed, {throttled} throttled by the core in {flood_secs:.1} s",
        bob_answers.len()
    );
    assert_eq!(passed + throttled, bob_answers.len(), "every answer to bob is a relay or the core's 429");
    assert!(passed >= 3, "bob's burst (150 messages) covers three batches of 50");
    assert!(
        (passed * 50) as f64 <= 150.0 + 20.0 * flood_secs,
        "bob got no more than his burst and rate: {passed} batches in {flood_secs:.1} s"
    );
    drop(w.kms);
}
