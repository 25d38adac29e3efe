//! Rotating the static key with an overlap: stage → both keys served (each
//! handshake answered by the key its client pinned, resets too) → promote →
//! the old key still served as previous → retire → only the new key. A CMK
//! rotation re-seals every static key file served. Real servers, restarted
//! between steps as an operator would.

#[path = "common/server.rs"]
mod server;

use kms_protocol::{begin_handshake, ClientInfo, Credential, KmsInfo, Method, ProtocolError, Request, Session, Status};
use serde_json::Value;
use server::{config_text, post_message as post, Server};
use testkit::Idp;

async fn info_json(url: &str) -> Value {
    reqwest::get(format!("{url}/kms/info")).await.unwrap().json().await.unwrap()
}

fn pin(v: &Value) -> KmsInfo {
    let jwk: jose::Jwk = serde_json::from_value(v.clone()).unwrap();
    KmsInfo { domain: "kms.acme.example".into(), key: jwk.to_rsa_public().unwrap() }
}

async fn connect(url: &str, info: &KmsInfo, ci: &ClientInfo) -> Result<Session, ProtocolError> {
    let pending = begin_handshake(info, ci.clone())?;
    let answer = post(url, pending.wrapped.clone()).await;
    pending.finish(info, &answer)
}

async fn ping(url: &str, info: &KmsInfo, s: &Session, ci: &ClientInfo) -> Result<Status, ProtocolError> {
    let req = Request::new(Method::Update, "/ping", Some(ci.clone()));
    let answer = post(url, s.wrap(&req).unwrap()).await;
    s.unwrap(info, &answer, &req.request_id).map(|r| r.status)
}

fn start(cfg: &str) -> Server {
    Server::start(cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_static_key_rotates_without_refusing_any_pinned_client() {
    let idp = Idp::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg_text = config_text(dir.path(), &idp.issuer, "");
    let cfg = kms::config::Config::parse(&cfg_text, std::path::Path::new("/")).unwrap();
    let tok = idp.token(&[("sub", "alice"), ("aud", "kms://kms.acme.example")]).await;
    let admin_tok = idp.token(&[("sub", "admin"), ("aud", "kms://kms.acme.example")]).await;
    let ci = ClientInfo { client_id: "dev".into(), credential: Credential::bearer(tok) };
    let admin = ClientInfo { client_id: "console".into(), credential: Credential::bearer(admin_tok) };

    // One key at first.
    let t = cfg_text.clone();
    let kms = tokio::task::spawn_blocking(move || start(&t)).await.unwrap();
    let v = info_json(&kms.url).await;
    assert_eq!(v["keys"].as_array().unwrap().len(), 1);
    let old = pin(&v["key"]);
    let old_session = connect(&kms.url, &old, &ci).await.unwrap();
    tokio::task::spawn_blocking(move || drop(kms)).await.unwrap();

    // Stage: both served from the next start.
    let c = cfg.clone();
    let staged = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let cmk = rt.block_on(kms::server::open_cmk_for_tool(&c)).unwrap();
        kms::static_keys::stage(&c, &cmk).unwrap()
    })
    .await
    .unwrap();
    let c = cfg.clone();
    let again = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let cmk = rt.block_on(kms::server::open_cmk_for_tool(&c)).unwrap();
        kms::static_keys::stage(&c, &cmk).err().unwrap().to_string()
    })
    .await
    .unwrap();
    assert!(again.contains("staged already"), "{again}");
    let t = cfg_text.clone();
    let kms = tokio::task::spawn_blocking(move || start(&t)).await.unwrap();
    let v = info_json(&kms.url).await;
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!((keys[0]["status"].as_str(), keys[1]["status"].as_str()), (Some("current"), Some("next")));
    assert_eq!(pin(&v["key"]).key, old.key, "the current key is unchanged");
    let new = pin(&keys[1]["key"]);
    assert_eq!(new.key.kid(), staged.key.kid());
    // A session from before the restart still works; clients pinned to either key connect.
    assert_eq!(ping(&kms.url, &old, &old_session, &ci).await.unwrap(), Status::OK);
    let on_new = connect(&kms.url, &new, &ci).await.unwrap();
    assert_eq!(ping(&kms.url, &new, &on_new, &ci).await.unwrap(), Status::OK);
    // The answer is signed by the pinned key only: the other pin does not accept it.
    let pending = begin_handshake(&new, ci.clone()).unwrap();
    let answer = post(&kms.url, pending.wrapped.clone()).await;
    assert!(pending.finish(&old, &answer).is_err(), "signed by the new key, not the old");
    // A session's resets are signed with its pinned key.
    let del = Request::new(Method::Delete, on_new.uri().to_string(), Some(ci.clone()));
    let answer = post(&kms.url, on_new.wrap(&del).unwrap()).await;
    assert_eq!(on_new.unwrap(&new, &answer, &del.request_id).unwrap().status, Status::NO_CONTENT);
    assert!(matches!(ping(&kms.url, &new, &on_new, &ci).await, Err(ProtocolError::Reset(_))));

    // A CMK rotation re-seals both static key files under the new CMK.
    let admin_session = connect(&kms.url, &old, &admin).await.unwrap();
    let req = Request::new(Method::Create, "/cmk", Some(admin.clone()));
    let answer = post(&kms.url, admin_session.wrap(&req).unwrap()).await;
    let r = admin_session.unwrap(&old, &answer, &req.request_id).unwrap();
    assert_eq!(r.status, Status::CREATED, "{:?}", r.reason);
    let new_cmk = r.master_keys.unwrap()[0].uri.to_string();
    for (path, _) in [kms::static_keys::slot_paths(&cfg, kms::static_keys::Slot::Next).unwrap()]
        .into_iter()
        .chain(std::iter::once((cfg.static_key.path.clone().unwrap(), cfg.static_key.cert_path.clone().unwrap())))
    {
        let bytes = std::fs::read(&path).unwrap();
        let (id, _) = kms::masterkeys::sealed_static_key_cmk(&bytes).expect("a sealed static key names its CMK");
        assert!(new_cmk.ends_with(id), "{} sealed under {id}, not {new_cmk}", path.display());
    }
    tokio::task::spawn_blocking(move || drop(kms)).await.unwrap();

    // Promote: the new key is current, the old one still served as previous.
    kms::static_keys::promote(&cfg).unwrap();
    assert!(kms::static_keys::promote(&cfg).is_err(), "nothing staged any more");
    let t = cfg_text.clone();
    let kms = tokio::task::spawn_blocking(move || start(&t)).await.unwrap();
    let v = info_json(&kms.url).await;
    assert_eq!(pin(&v["key"]).key, new.key);
    assert_eq!(v["keys"][1]["status"], "previous");
    for p in [&old, &new] {
        let s = connect(&kms.url, p, &ci).await.unwrap();
        assert_eq!(ping(&kms.url, p, &s, &ci).await.unwrap(), Status::OK);
    }
    tokio::task::spawn_blocking(move || drop(kms)).await.unwrap();

    // Retire: only the new key; a client still pinned to the old one is refused.
    kms::static_keys::retire(&cfg).unwrap();
    assert!(kms::static_keys::retire(&cfg).is_err());
    let t = cfg_text.clone();
    let kms = tokio::task::spawn_blocking(move || start(&t)).await.unwrap();
    let v = info_json(&kms.url).await;
    assert_eq!(v["keys"].as_array().unwrap().len(), 1);
    assert!(connect(&kms.url, &old, &ci).await.is_err());
    let s = connect(&kms.url, &new, &ci).await.unwrap();
    assert_eq!(ping(&kms.url, &new, &s, &ci).await.unwrap(), Status::OK);
    tokio::task::spawn_blocking(move || drop((kms, idp))).await.unwrap();
}
