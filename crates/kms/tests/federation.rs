//! KMS federation between two real KMS servers (each its own runtime, HTTP
//! listener, database and identity provider): org A (`acme.example`) and
//! org B (`globex.example`). B's users reach A's resources through B's KMS;
//! each side's policy, audit, compliance and retention apply to its own
//! people; impostors on either side are refused.

#[path = "common/server.rs"]
mod server;

use std::time::{Duration, Instant};

use audit::{Action, ActorKind, Query};
use base64::Engine as _;
use kms_protocol::{ClientInfo, Credential, KmsInfo, Method, Request, Response, Session, Status};
use serde_json::{json, Value};
use server::{call, http_session, kms_info, post_message, with_body, Server};
use testkit::Idp;

const A: &str = "kms.acme.example";
const B: &str = "kms.globex.example";

fn org_config(dir: &std::path::Path, issuer: &str, kms: &str, org: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
domain = "{kms}"
org_domain = "{org}"
data_dir = "{}"
admins = ["admin@{org}"]
[identity]
audience = "kms://{kms}"
[[identity.issuers]]
issuer = "{issuer}"
org_domain = "{org}"
"#,
        dir.display()
    )
}

/// The PEM certificate a KMS presents in `/kms/info`.
async fn cert_pem(url: &str) -> String {
    let v: Value = reqwest::get(format!("{url}/kms/info")).await.unwrap().json().await.unwrap();
    pem(v["key"]["x5c"][0].as_str().unwrap())
}

fn pem(b64: &str) -> String {
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
}

struct Org {
    idp: Idp,
    server: Option<Server>,
    url: String,
    info: KmsInfo,
    kms: &'static str,
    _dir: tempfile::TempDir,
}

impl Org {
    async fn start(kms: &'static str, org: &'static str) -> Org {
        let idp = tokio::task::spawn_blocking(Idp::start).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = org_config(dir.path(), &idp.issuer, kms, org);
        let server = tokio::task::spawn_blocking(move || Server::start(&cfg)).await.unwrap();
        let url = server.url.clone();
        let info = kms_info(&url).await;
        Org { idp, server: Some(server), url, info, kms, _dir: dir }
    }

    fn engine(&self) -> &std::sync::Arc<kms::Engine> {
        &self.server.as_ref().unwrap().engine
    }

    async fn user(&self, name: &str, on_behalf_of: Option<&str>) -> User {
        let token = self.idp.token(&[("sub", name), ("aud", &format!("kms://{}", self.kms))]).await;
        let mut credential = Credential::bearer(token);
        credential.on_behalf_of = on_behalf_of.map(str::to_string);
        let ci = ClientInfo { client_id: format!("{name}-laptop"), credential };
        let s = http_session(&self.url, &self.info, &ci).await;
        User { url: self.url.clone(), info: self.info.clone(), ci, s }
    }

    /// Changes the org policy as its admin (`admin@<org>`).
    async fn policy(&self, change: impl FnOnce(&mut Value)) {
        let admin = self.user("admin", None).await;
        let r = admin.req(Method::Retrieve, "/policy", json!({})).await;
        let p = r.policy.unwrap();
        let mut doc = serde_json::to_value(&p.policy).unwrap();
        change(&mut doc);
        let r = admin.req(Method::Update, "/policy", json!({"policy": doc, "policyVersion": p.version})).await;
        assert_eq!(r.status, Status::OK, "{:?}", r.reason);
    }

    async fn audit(&self, q: Query) -> Vec<audit::Entry> {
        self.engine().audit_log().unwrap().entries(&q).await.unwrap()
    }

    async fn stop(&mut self) {
        let s = self.server.take();
        tokio::task::spawn_blocking(move || drop(s)).await.unwrap();
    }
}

impl Drop for Org {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            // Stopping joins the server's own runtime: never on a runtime thread.
            std::thread::spawn(move || drop(s)).join().unwrap();
        }
    }
}

struct User {
    url: String,
    info: KmsInfo,
    ci: ClientInfo,
    s: Session,
}

impl User {
    async fn req(&self, method: Method, uri: &str, body: Value) -> Response {
        call(&self.url, &self.info, &self.s, with_body(Request::new(method, uri, Some(self.ci.clone())), body)).await
    }
}

fn peer_entry(org: &str, url: &str, trust: &str) -> Value {
    json!({"orgDomain": org, "url": url, "trust": trust, "state": "allowed"})
}

/// Both orgs up and federated with each other.
async fn federated_pair() -> (Org, Org) {
    let a = Org::start(A, "acme.example").await;
    let b = Org::start(B, "globex.example").await;
    let (ca, cb) = (cert_pem(&a.url).await, cert_pem(&b.url).await);
    let (ua, ub) = (a.url.clone(), b.url.clone());
    a.policy(|p| p["federation"] = json!({ B: peer_entry("globex.example", &ub, &cb) })).await;
    b.policy(|p| p["federation"] = json!({ A: peer_entry("acme.example", &ua, &ca) })).await;
    (a, b)
}

/// A resource of `owner` with `members` and one bound key: (resource URI, key URI, key material).
async fn space(owner: &User, members: &[&str]) -> (String, String, String) {
    let r = owner.req(Method::Create, "/keys", json!({"count": 1})).await;
    let k = &r.keys.unwrap()[0];
    let key_uri = k.uri.to_string();
    let material = k.jwk.k.as_ref().unwrap().expose().to_string();
    let r = owner.req(Method::Create, "/resources", json!({"authIds": members, "keyUris": [key_uri]})).await;
    assert_eq!(r.status, Status::CREATED, "{:?}", r.reason);
    (r.resource.unwrap().uri.to_string(), key_uri, material)
}

fn reason(r: &Response) -> String {
    format!("{} {}", r.status.0, r.reason.clone().unwrap_or_default())
}

/// Retries `f` until `ok` holds or `limit` passes; the time it took.
async fn within<F, Fut>(limit: Duration, mut f: F, ok: impl Fn(&Response) -> bool) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let t = Instant::now();
    loop {
        let r = f().await;
        if ok(&r) {
            return t.elapsed();
        }
        assert!(t.elapsed() < limit, "still {} after {limit:?}", reason(&r));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_b_user_reads_what_a_authorizes_until_either_side_says_no() {
    let (a, b) = federated_pair().await;
    let alice = a.user("alice", None).await;
    let (res, key, material) = space(&alice, &["dave@globex.example"]).await;
    let dave = b.user("dave", None).await;
    let erin = b.user("erin", None).await;

    // Dave asks his own KMS for A's key, its resource and its keys.
    let r = dave.req(Method::Retrieve, &key, json!({})).await;
    assert_eq!(r.status, Status::OK, "{}", reason(&r));
    assert_eq!(r.key.as_ref().unwrap().jwk.k.as_ref().unwrap().expose(), material, "the same key material");
    assert_eq!(r.key.unwrap().resource_uri.unwrap().to_string(), res);
    let r = dave.req(Method::Retrieve, &format!("{res}/keys"), json!({"count": 1})).await;
    assert_eq!(r.keys.unwrap().len(), 1);
    let r = dave.req(Method::Retrieve, &res, json!({})).await;
    assert_eq!(r.resource.unwrap().uri.to_string(), res);
    // He learns only his own org's authorizations there.
    let r = dave.req(Method::Retrieve, &format!("{res}/authorizations"), json!({})).await;
    let ids: Vec<_> = r.authorizations.unwrap().into_iter().filter_map(|a| a.auth_id).collect();
    assert_eq!(ids, ["dave@globex.example"]);

    // Erin (B, not authorized at A) is refused; so is anything but reading.
    let r = erin.req(Method::Retrieve, &key, json!({})).await;
    assert_eq!(r.status, Status::FORBIDDEN, "{}", reason(&r));
    // Authorized now, she is served at once, although B holds a second-old answer without her.
    assert_eq!(dave.req(Method::Retrieve, &key, json!({})).await.status, Status::OK);
    let r = alice
        .req(Method::Create, "/authorizations", json!({"resourceUri": res, "authIds": ["erin@globex.example"]}))
        .await;
    assert_eq!(r.status, Status::CREATED);
    let r = erin.req(Method::Retrieve, &key, json!({})).await;
    assert_eq!(r.status, Status::OK, "{}", reason(&r));
    let r = alice.req(Method::Delete, &format!("{res}/authorizations?authId=erin%40globex.example"), json!({})).await;
    assert_eq!(r.status, Status::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = dave
        .req(Method::Create, "/authorizations", json!({"resourceUri": res, "authIds": ["erin@globex.example"]}))
        .await;
    assert_eq!(r.status, Status::FORBIDDEN);
    assert!(reason(&r).contains("another organization's KMS"), "{}", reason(&r));
    let r = dave.req(Method::Create, "/keys", json!({"count": 1})).await;
    let own = r.keys.unwrap()[0].uri.to_string();
    let r = dave.req(Method::Update, &own, json!({"resourceUri": res})).await;
    assert_eq!(r.status, Status::FORBIDDEN, "B's keys are never bound to A's resources");

    // A's audit names KMS B and the user it asked for; B's names dave.
    let at_a = a.audit(Query { actions: vec![Action::KeyRelease], ..Query::default() }).await;
    let peer: Vec<_> = at_a.iter().filter(|e| e.actor == format!("kms://{B}")).collect();
    assert!(!peer.is_empty(), "A logged no release to B: {at_a:?}");
    assert!(peer.iter().all(|e| e.actor_kind == ActorKind::PeerKms));
    assert!(peer.iter().any(|e| e.on_behalf_of.as_deref() == Some("dave@globex.example") && e.keys.contains(&key)));
    let at_b = b.audit(Query { actions: vec![Action::KeyRelease], ..Query::default() }).await;
    assert!(at_b.iter().any(|e| e.actor == "dave@globex.example" && e.keys.contains(&key)), "{at_b:?}");
    // And A's members see the release to B in key-access transparency.
    let r = alice.req(Method::Retrieve, &format!("{res}/accesses"), json!({})).await;
    assert!(r.accesses.unwrap().iter().any(|x| x.actor == format!("kms://{B}")));

    // A de-authorizes dave: B's cached answer lasts at most a second.
    let q = "dave%40globex.example";
    let r = alice.req(Method::Delete, &format!("{res}/authorizations?authId={q}"), json!({})).await;
    assert_eq!(r.status, Status::OK, "{}", reason(&r));
    let took = within(
        Duration::from_secs(3),
        || dave.req(Method::Retrieve, &key, json!({})),
        |r| r.status == Status::FORBIDDEN,
    )
    .await;
    assert!(took <= Duration::from_millis(1500), "refused after {took:?}");

    // Authorized again, then B ends the federation: refused at once, with the reason.
    let r = alice
        .req(Method::Create, "/authorizations", json!({"resourceUri": res, "authIds": ["dave@globex.example"]}))
        .await;
    assert_eq!(r.status, Status::CREATED);
    within(Duration::from_secs(3), || dave.req(Method::Retrieve, &key, json!({})), |r| r.status == Status::OK).await;
    b.policy(|p| p["federation"][A]["state"] = json!("ended")).await;
    let took = within(
        Duration::from_secs(3),
        || dave.req(Method::Retrieve, &key, json!({})),
        |r| r.status == Status::FORBIDDEN && reason(r).contains("does not federate with"),
    )
    .await;
    assert!(took <= Duration::from_millis(1500), "refused after {took:?}");
    b.policy(|p| p["federation"][A]["state"] = json!("allowed")).await;
    within(Duration::from_secs(3), || dave.req(Method::Retrieve, &key, json!({})), |r| r.status == Status::OK).await;

    // A ends it: A refuses B, and B says so; A releases nothing more to B.
    let to_b = || async {
        let q = Query { actions: vec![Action::KeyRelease], actor: Some(format!("kms://{B}")), ..Query::default() };
        a.audit(q).await.len()
    };
    a.policy(|p| p["federation"][B]["state"] = json!("ended")).await;
    let took = within(
        Duration::from_secs(3),
        || dave.req(Method::Retrieve, &key, json!({})),
        |r| r.status == Status::FORBIDDEN && reason(r).contains("federate"),
    )
    .await;
    assert!(took <= Duration::from_millis(1500), "refused after {took:?}");
    let released = to_b().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(dave.req(Method::Retrieve, &key, json!({})).await.status, Status::FORBIDDEN);
    assert_eq!(to_b().await, released, "nothing released to B after the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_compliance_retention_and_holds_cover_b_copies() {
    let (a, b) = federated_pair().await;
    b.policy(|p| p["complianceOfficers"] = json!(["officer@globex.example"])).await;
    let alice = a.user("alice", None).await;
    let (res, key, material) = space(&alice, &["dave@globex.example"]).await;
    let dave = b.user("dave", None).await;
    assert_eq!(dave.req(Method::Retrieve, &key, json!({})).await.status, Status::OK);

    // A later removes dave; B's officer can still recover what dave could read (and only that).
    let r = alice.req(Method::Delete, &format!("{res}/authorizations?authId=dave%40globex.example"), json!({})).await;
    assert_eq!(r.status, Status::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(dave.req(Method::Retrieve, &key, json!({})).await.status, Status::FORBIDDEN);
    let for_dave = b.user("officer", Some("dave@globex.example")).await;
    let r = for_dave.req(Method::Retrieve, &key, json!({})).await;
    assert_eq!(r.status, Status::OK, "{}", reason(&r));
    assert_eq!(r.key.unwrap().jwk.k.as_ref().unwrap().expose(), material);
    let r = for_dave.req(Method::Retrieve, &format!("{res}/keys"), json!({})).await;
    assert_eq!(r.keys.as_ref().map(|k| k.len()), Some(1), "{}", reason(&r));
    let for_erin = b.user("officer", Some("erin@globex.example")).await;
    assert_eq!(for_erin.req(Method::Retrieve, &key, json!({})).await.status, Status::FORBIDDEN);
    let at_b = b.audit(Query { actions: vec![Action::KeyRelease], ..Query::default() }).await;
    assert!(at_b.iter().any(|e| e.actor_kind == ActorKind::Compliance
        && e.on_behalf_of.as_deref() == Some("dave@globex.example")
        && e.keys.contains(&key)));

    // B's retention shreds its copy, unless a B legal hold names the space.
    b.policy(|p| {
        p["retention"] = json!({"days": 1});
        p["legalHolds"] = json!({"case-7": {"spaces": [res]}});
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = kms::now_ms() + 3 * 86_400_000;
    let report = b.engine().retention_sweep(later).await.unwrap();
    assert!(report.keys_held >= 1, "{report:?}");
    assert_eq!(for_dave.req(Method::Retrieve, &key, json!({})).await.status, Status::OK, "held");
    b.policy(|p| p["legalHolds"] = json!({})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = b.engine().retention_sweep(later + 2 * 86_400_000).await.unwrap();
    assert!(report.keys_shredded >= 1, "{report:?}");
    let r = for_dave.req(Method::Retrieve, &key, json!({})).await;
    assert_ne!(r.status, Status::OK, "B's copy is gone: {}", reason(&r));
    // A's key itself is A's business: alice still has it.
    assert_eq!(alice.req(Method::Retrieve, &key, json!({})).await.status, Status::OK);
}

/// A KMS of our own making (domain `kms.peer.example`, org `peer.example`), with a self-signed certificate.
fn test_peer() -> (kms_protocol::ServerKey, String, String) {
    let key = jose::RsaPrivateKey::generate(2048, None).unwrap();
    let kid = key.public_key().thumbprint();
    let key = jose::RsaPrivateKey::from_pkcs8_der(&key.to_pkcs8_der(), Some(kid)).unwrap();
    let der = key.to_pkcs8_der();
    let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der.as_slice().into(), &rcgen::PKCS_RSA_SHA256).unwrap();
    let params = rcgen::CertificateParams::new(vec!["kms.peer.example".to_string()]).unwrap();
    let cert = params.self_signed(&kp).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.der());
    (kms_protocol::ServerKey::new(key, "kms.peer.example").unwrap(), b64, cert.pem())
}

async fn peer_session(
    me: &kms_protocol::ServerKey,
    chain: &str,
    a: &Org,
) -> Result<Session, kms_protocol::ProtocolError> {
    let pending = me.begin_peer_handshake(&a.info, vec![chain.to_string()]).unwrap();
    let answer = post_message(&a.url, pending.wrapped.clone()).await;
    pending.finish(&a.info, &answer)
}

async fn peer_call(me: &kms_protocol::ServerKey, chain: &str, a: &Org, s: &Session, uri: &str, user: &str) -> Response {
    let mut req = Request::new(Method::Retrieve, uri, None);
    me.attach_peer_proof(&mut req, s, vec![chain.to_string()], Some(user)).unwrap();
    let answer = post_message(&a.url, s.wrap(&req).unwrap()).await;
    s.unwrap(&a.info, &answer, &req.request_id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_real_peer_gets_answers_and_only_for_its_own_users() {
    let (mut a, b) = federated_pair().await;
    let alice = a.user("alice", None).await;
    let (res, key, _) = space(&alice, &["dave@globex.example"]).await;

    // A peer A does not list gets nothing, not even a session.
    let (peer, chain, peer_pem) = test_peer();
    let e = peer_session(&peer, &chain, &a).await.unwrap_err();
    assert!(e.to_string().contains("does not federate"), "{e}");
    a.policy(|p| p["federation"]["kms.peer.example"] = peer_entry("peer.example", "http://127.0.0.1:9", &peer_pem))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = peer_session(&peer, &chain, &a).await.unwrap();
    // No user of its org is authorized on the space: refused.
    let r = peer_call(&peer, &chain, &a, &s, &key, "x@peer.example").await;
    assert_eq!(r.status, Status::FORBIDDEN, "{}", reason(&r));
    // It cannot ask for someone of another org (A's own alice, or B's dave).
    for who in ["alice@acme.example", "dave@globex.example"] {
        let r = peer_call(&peer, &chain, &a, &s, &key, who).await;
        assert_eq!(r.status, Status::FORBIDDEN, "{who}: {}", reason(&r));
        assert!(reason(&r).contains("its own org"), "{}", reason(&r));
    }
    // Once one of its users is authorized, it gets the key and learns only its own org's authorizations.
    let r =
        alice.req(Method::Create, "/authorizations", json!({"resourceUri": res, "authIds": ["x@peer.example"]})).await;
    assert_eq!(r.status, Status::CREATED);
    let r = peer_call(&peer, &chain, &a, &s, &key, "x@peer.example").await;
    assert_eq!(r.status, Status::OK, "{}", reason(&r));
    let ids: Vec<_> = r.authorizations.unwrap().into_iter().filter_map(|a| a.auth_id).collect();
    assert_eq!(ids, ["x@peer.example"], "never alice's or dave's");
    let r = peer_call(&peer, &chain, &a, &s, &format!("{res}/authorizations"), "x@peer.example").await;
    assert_eq!(r.authorizations.unwrap().len(), 1);

    // Someone holding B's certificate but not B's private key is refused.
    let b_jwk: jose::Jwk = {
        let v: Value = reqwest::get(format!("{}/kms/info", b.url)).await.unwrap().json().await.unwrap();
        serde_json::from_value(v["key"].clone()).unwrap()
    };
    let other = jose::RsaPrivateKey::generate(2048, Some("x".into())).unwrap();
    let pending = kms_protocol::channel::begin_handshake_with(&a.info, |eph, rid| {
        let mut c = kms_protocol::pop::service_credential(
            jose::jws::SignKey::Rsa(&other),
            jose::SigAlg::PS256,
            b_jwk.x5c.clone().unwrap(),
            &kms_protocol::pop::handshake_binding(eph),
            rid,
            time::OffsetDateTime::now_utc().unix_timestamp(),
        )?;
        c.jwk = Some(b_jwk.clone());
        c.user_id = Some(format!("kms://{B}"));
        Ok(ClientInfo { client_id: format!("kms://{B}"), credential: c })
    })
    .unwrap();
    let answer = post_message(&a.url, pending.wrapped.clone()).await;
    let e = pending.finish(&a.info, &answer).unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
    // Our own key with B's name (and our certificate) is refused too: the certificate is not B's.
    let pending = kms_protocol::channel::begin_handshake_with(&a.info, |eph, rid| {
        let mut c = kms_protocol::pop::service_credential(
            jose::jws::SignKey::Rsa(&other),
            jose::SigAlg::PS256,
            vec![chain.clone()],
            &kms_protocol::pop::handshake_binding(eph),
            rid,
            time::OffsetDateTime::now_utc().unix_timestamp(),
        )?;
        c.user_id = Some(format!("kms://{B}"));
        Ok(ClientInfo { client_id: format!("kms://{B}"), credential: c })
    })
    .unwrap();
    let answer = post_message(&a.url, pending.wrapped.clone()).await;
    assert!(pending.finish(&a.info, &answer).is_err());

    // B refuses a server at A's address that cannot prove to be A.
    let dave = b.user("dave", None).await;
    assert_eq!(dave.req(Method::Retrieve, &key, json!({})).await.status, Status::OK);
    // 1. One that presents its own certificate (B's own server, posing as A).
    let (ca, b_url) = (cert_pem(&a.url).await, b.url.clone());
    b.policy(|p| p["federation"][A] = peer_entry("acme.example", &b_url, &ca)).await;
    within(
        Duration::from_secs(3),
        || dave.req(Method::Retrieve, &key, json!({})),
        |r| r.status.0 == 502 && reason(r).contains("did not prove"),
    )
    .await;
    // 2. One that presents A's real certificate but does not hold A's key.
    let impostor = impostor(&a.url, &b.url).await;
    b.policy(|p| p["federation"][A] = peer_entry("acme.example", &impostor, &ca)).await;
    within(
        Duration::from_secs(3),
        || dave.req(Method::Retrieve, &key, json!({})),
        |r| r.status.0 == 502 && reason(r).contains("did not prove"),
    )
    .await;

    // A down: a clear error naming A.
    let a_url = a.url.clone();
    b.policy(|p| p["federation"][A] = peer_entry("acme.example", &a_url, &ca)).await;
    within(Duration::from_secs(3), || dave.req(Method::Retrieve, &key, json!({})), |r| r.status == Status::OK).await;
    a.stop().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = dave.req(Method::Retrieve, &key, json!({})).await;
    assert_eq!(r.status, Status::UNAVAILABLE, "{}", reason(&r));
    assert!(reason(&r).contains(&format!("the KMS {A} cannot be reached")), "{}", reason(&r));
}

/// A server that serves A's real `/kms/info` but forwards messages to another KMS (`to`), which cannot decrypt them.
async fn impostor(a_url: &str, to: &str) -> String {
    use axum::routing::{get, post};
    let info: Value = reqwest::get(format!("{a_url}/kms/info")).await.unwrap().json().await.unwrap();
    let to = to.to_string();
    let app = axum::Router::new().route("/kms/info", get(move || async move { axum::Json(info) })).route(
        "/kms/messages",
        post(move |body: String| {
            let to = to.clone();
            async move { post_message(&to, body).await }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A server answering only the discovery document `doc`.
async fn discovery_server(doc: Value) -> String {
    use axum::routing::get;
    let app = axum::Router::new().route("/.well-known/custos-kms", get(move || async move { axum::Json(doc) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_an_address_is_found_through_its_domain() {
    let (a, b) = federated_pair().await;
    let alice = a.user("alice", None).await;
    let (_, key, _) = space(&alice, &["dave@globex.example"]).await;
    let dave = b.user("dave", None).await;
    // B's policy names A without an address: B looks at A's domain (here mapped to a loopback address).
    b.policy(|p| {
        p["federation"][A].as_object_mut().unwrap().remove("url");
    })
    .await;
    let fed = b.engine().federation().unwrap().clone();
    // 1. The KMS at the domain itself: its document gives no other address.
    let v: Value = reqwest::get(format!("{}/.well-known/custos-kms", a.url)).await.unwrap().json().await.unwrap();
    assert_eq!(v, json!({"uri": format!("kms://{A}"), "url": null}));
    fed.set_discovery_base(A, &a.url);
    within(Duration::from_secs(3), || dave.req(Method::Retrieve, &key, json!({})), |r| r.status == Status::OK).await;
    // 2. A web server at the domain pointing elsewhere: the KMS is reached where it says.
    let web = discovery_server(json!({"uri": format!("kms://{A}"), "url": a.url})).await;
    fed.set_discovery_base(A, &web);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = dave.req(Method::Retrieve, &key, json!({})).await;
    assert_eq!(r.status, Status::OK, "{}", reason(&r));
    // 3. A document describing another KMS is refused, and said so.
    let wrong = discovery_server(json!({"uri": "kms://kms.elsewhere.example", "url": a.url})).await;
    fed.set_discovery_base(A, &wrong);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = dave.req(Method::Retrieve, &key, json!({})).await;
    assert_eq!(r.status, Status::UNAVAILABLE, "{}", reason(&r));
    assert!(reason(&r).contains("describes another KMS"), "{}", reason(&r));
    // 4. Nothing there at all: a clear error naming the discovery address.
    fed.set_discovery_base(A, "http://127.0.0.1:9");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = dave.req(Method::Retrieve, &key, json!({})).await;
    assert!(reason(&r).contains("discovery at http://127.0.0.1:9/.well-known/custos-kms failed"), "{}", reason(&r));
}
