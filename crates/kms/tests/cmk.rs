//! The CMK in a backend: rotation under load across two nodes (file backend,
//! and PKCS#11 in a softhsm2 token this test creates), bring-your-own-key
//! wrapped by an independent RSA-OAEP implementation, refusals, a deployment
//! of the original layout (a single `cmk.json`) starting unchanged, and a
//! rotation interrupted halfway.
//!
//! softhsm2 must be installed (`scripts/test` installs it): without it the
//! PKCS#11 test fails, it never skips.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cmk::{CmkBackend, FileBackend, MasterKey, SoftwareKey};
use common::{engine_with_cmk, Client, DOMAIN, ORG};
use kms::crypto::{Cmk, SecretKey};
use kms::masterkeys::{CmkState, Registry, REGISTRY};
use kms::Engine;
use kms_protocol::message::{KeyState, MasterKeyObject};
use kms_protocol::{Method, ProtocolError, Request, Response, Status};
use kms_store::{AuthorizationRecord, KekRecord, KeyRecord, MasterKeyState, ResourceRecord, Store};
use serde_json::json;

const PASS: &[u8] = b"a CMK passphrase for tests";
/// The passphrase `kms::server::start` reads (the same value as tests/common/server.rs).
const SERVER_PASS: &str = "a test passphrase, long enough";

fn file_backend(dir: &Path) -> Arc<dyn CmkBackend> {
    Arc::new(FileBackend::open(dir, PASS).unwrap().with_kdf_iterations(100_000).unwrap())
}

async fn sqlite(dir: &Path) -> Arc<dyn Store> {
    kms_store::open(&format!("sqlite://{}", dir.join("kms.db").display())).await.unwrap()
}

fn static_key() -> jose::RsaPrivateKey {
    jose::RsaPrivateKey::generate(2048, Some("static".into())).unwrap()
}

/// A node as `custos kms serve` makes one: its starting CMK chosen by the server's own logic.
async fn node(store: &Arc<dyn Store>, backend: Arc<dyn CmkBackend>, key: &jose::RsaPrivateKey) -> Arc<Engine> {
    let opened = kms::server::OpenedBackend { backend, adopted: None };
    let (cmk, _) = kms::server::starting_cmk(&**store, &opened, ORG).await.unwrap();
    engine_with_cmk(store.clone(), cmk, key).await
}

fn k_of(r: &Response) -> String {
    r.key.as_ref().and_then(|k| k.jwk.k.as_ref()).map(|k| k.expose().to_string()).unwrap_or_default()
}

/// Sends `client`'s request (its own session) to another node.
async fn send_via(engine: &Engine, client: &Client, req: &Request) -> Result<Response, ProtocolError> {
    let wrapped = client.session.wrap(req)?;
    let answer = engine.handle(&wrapped, None).await.unwrap();
    client.session.unwrap(&client.kms, &answer, &req.request_id)
}

async fn cmks(admin: &Client) -> Vec<MasterKeyObject> {
    admin.ok(Method::Retrieve, "/cmk", json!({})).await.master_keys.unwrap()
}

fn state_of(list: &[MasterKeyObject], uri: &str) -> KeyState {
    list.iter().find(|o| o.uri.to_string() == uri).map(|o| o.usage_state).unwrap_or_else(|| panic!("{uri} not listed"))
}

fn active_uri(list: &[MasterKeyObject]) -> String {
    let active: Vec<_> = list.iter().filter(|o| o.usage_state == KeyState::Active).collect();
    assert_eq!(active.len(), 1, "{list:?}");
    active[0].uri.to_string()
}

fn id_of(uri: &str) -> &str {
    uri.rsplit('/').next().unwrap()
}

async fn registry(store: &dyn Store) -> (Vec<u8>, Registry) {
    let raw = store.get_meta(REGISTRY).await.unwrap().unwrap();
    let reg = serde_json::from_slice(&raw).unwrap();
    (raw, reg)
}

/// Every KEK of the org is wrapped under `cmk_id`, and so is every ticket key.
async fn everything_under(store: &dyn Store, cmk_id: &str) {
    let keks = store.list_keks(Some(ORG)).await.unwrap();
    assert!(!keks.is_empty());
    for k in &keks {
        assert_eq!(k.cmk_id, cmk_id, "KEK {} is under another CMK", k.id);
    }
    let epoch = kms::now_ms() / kms::session::EPOCH.as_millis() as i64;
    if let Some(v) = store.get_meta(&format!("ticket-key:{epoch:020}")).await.unwrap() {
        let (owner, _) = kms::masterkeys::split_envelope(&v).expect("a ticket key names its CMK");
        assert_eq!(owner, cmk_id, "the ticket key of epoch {epoch}");
    }
}

// ---------------------------------------------------------------- load

#[derive(Debug, Clone)]
struct Seen {
    user: String,
    uri: String,
    k: String,
}

struct Load {
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `workers` clients, spread over `nodes`, each creating two keys, a
    /// resource with the first, binding the second to it, and reading both
    /// back (and an older one of its own), on a fresh session every 8 rounds.
    fn start(nodes: &[Arc<Engine>], workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..workers)
            .map(|w| {
                let engine = nodes[w % nodes.len()].clone();
                let (stop, failures, seen) = (stop.clone(), failures.clone(), seen.clone());
                tokio::spawn(async move {
                    let user = format!("w{w}");
                    let mine: Mutex<Vec<Seen>> = Mutex::new(Vec::new());
                    let fail = |what: String| failures.lock().unwrap().push(format!("{user}: {what}"));
                    let mut round = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let c = Client::connect(&engine, &user).await;
                        for _ in 0..8 {
                            round += 1;
                            let c = &c;
                            let call = move |m: Method, uri: String, body: serde_json::Value| {
                                let req = c.request(m, &uri, body);
                                async move { c.send(&req).await }
                            };
                            let ok = |r: Result<Response, ProtocolError>, what: &str| match r {
                                Ok(r) if r.status.is_success() => Some(r),
                                Ok(r) => {
                                    fail(format!("{what}: {:?} {:?}", r.status, r.reason));
                                    None
                                }
                                Err(e) => {
                                    fail(format!("{what}: {e}"));
                                    None
                                }
                            };
                            let Some(r) = ok(call(Method::Create, "/keys".into(), json!({"count": 2})).await, "create")
                            else {
                                continue;
                            };
                            let keys = r.keys.unwrap_or_default();
                            if keys.len() != 2 {
                                fail("create returned no keys".into());
                                continue;
                            }
                            let (k0, k1) = (keys[0].uri.to_string(), keys[1].uri.to_string());
                            let body = json!({"authIds": [], "keyUris": [k0]});
                            let Some(res) = ok(call(Method::Create, "/resources".into(), body).await, "resource")
                            else {
                                continue;
                            };
                            let res = res.resource.map(|r| r.uri.to_string()).unwrap_or_default();
                            if ok(call(Method::Update, k1.clone(), json!({"resourceUri": res})).await, "bind").is_none()
                            {
                                continue;
                            }
                            for (uri, key) in [(&k0, &keys[0]), (&k1, &keys[1])] {
                                let want = key.jwk.k.as_ref().map(|k| k.expose().to_string()).unwrap_or_default();
                                if let Some(r) = ok(call(Method::Retrieve, uri.clone(), json!({})).await, "retrieve") {
                                    if k_of(&r) != want {
                                        fail(format!("{uri} changed"));
                                    }
                                }
                                mine.lock().unwrap().push(Seen { user: user.clone(), uri: uri.clone(), k: want });
                            }
                            // An older key of its own, wrapped under an older KEK/CMK perhaps.
                            let old = {
                                let m = mine.lock().unwrap();
                                m.get(round * 7 % m.len()).cloned()
                            };
                            if let Some(old) = old {
                                if let Some(r) = ok(call(Method::Retrieve, old.uri.clone(), json!({})).await, "older") {
                                    if k_of(&r) != old.k {
                                        fail(format!("{} changed", old.uri));
                                    }
                                }
                            }
                        }
                    }
                    seen.lock().unwrap().extend(mine.into_inner().unwrap());
                })
            })
            .collect();
        Load { stop, failures, seen, tasks }
    }

    fn count(&self) -> usize {
        self.failures.lock().unwrap().len()
    }

    async fn finish(self) -> Vec<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("a load worker panicked");
        }
        let failures = self.failures.lock().unwrap().clone();
        assert!(
            failures.is_empty(),
            "{} failed requests, first: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        Arc::try_unwrap(self.seen).unwrap().into_inner().unwrap()
    }
}

/// Every key seen reads back with the same bytes through `engine`.
async fn all_readable(engine: &Arc<Engine>, seen: &[Seen]) {
    let mut clients = std::collections::HashMap::new();
    for s in seen {
        if !clients.contains_key(&s.user) {
            clients.insert(s.user.clone(), Client::connect(engine, &s.user).await);
        }
        let r = clients[&s.user].call(Method::Retrieve, &s.uri, json!({})).await;
        assert_eq!(r.status, Status::OK, "{}: {:?}", s.uri, r.reason);
        assert_eq!(k_of(&r), s.k, "{} changed", s.uri);
    }
}

/// How a rotation brings its new CMK.
#[derive(Debug, Clone, Copy)]
enum NewCmk {
    Generated,
    /// BYOK: a random key wrapped with RSA-OAEP (SHA-1) by the `rsa` crate.
    Imported,
}

/// The customer's side of BYOK: wraps `key` to the KMS's `/publicKey` (PEM)
/// with the `rsa` crate (RustCrypto), independent of the KMS's aws-lc-rs.
async fn byok_blob(admin: &Client, key: &[u8; 32], sha256: bool) -> String {
    use rsa::pkcs8::DecodePublicKey;
    let r = admin.ok(Method::Retrieve, "/publicKey", json!({})).await;
    let pem = r.public_key.expect("publicKey");
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let pk = rsa::RsaPublicKey::from_public_key_pem(&pem).unwrap();
    let mut rng = rand_core::OsRng;
    let ct = if sha256 {
        pk.encrypt(&mut rng, rsa::Oaep::new::<sha2::Sha256>(), key).unwrap()
    } else {
        pk.encrypt(&mut rng, rsa::Oaep::new::<sha1::Sha1>(), key).unwrap()
    };
    jose::b64::encode(ct)
}

fn random32() -> [u8; 32] {
    let mut k = [0u8; 32];
    aws_lc_rs::rand::fill(&mut k).unwrap();
    k
}

/// Two nodes over one store; eight clients busy on them while the CMK rotates
/// twice (the second time from the other node), then the old CMKs are
/// deleted. Zero failed requests; every key reads back unchanged, also on a
/// new node whose backend no longer holds the old CMKs, and so do sessions
/// made before the rotations.
async fn rotation_under_load(
    store: Arc<dyn Store>,
    backend: impl Fn() -> Arc<dyn CmkBackend>,
    rotations: [NewCmk; 2],
) -> Vec<String> {
    let key = static_key();
    let nodes = [node(&store, backend(), &key).await, node(&store, backend(), &key).await];
    let admins = [Client::connect(&nodes[0], "admin").await, Client::connect(&nodes[1], "admin").await];
    let before = Client::connect(&nodes[0], "w0").await; // a session from before any rotation
    let first = active_uri(&cmks(&admins[0]).await);

    let load = Load::start(&nodes, 8);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut uris = vec![first];
    let mut imported = None;
    for (i, how) in rotations.into_iter().enumerate() {
        let admin = &admins[i % 2];
        let body = match how {
            NewCmk::Generated => json!({}),
            NewCmk::Imported => {
                let k = random32();
                imported = Some(k);
                json!({"customerMasterKey": byok_blob(admin, &k, false).await})
            }
        };
        let r = admin.ok(Method::Create, "/cmk", body).await;
        assert_eq!(r.status, Status::CREATED);
        let created = r.master_keys.unwrap().remove(0);
        assert_eq!(created.usage_state, KeyState::Active);
        uris.push(created.uri.to_string());
        everything_under(&*store, id_of(uris.last().unwrap())).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let list = cmks(&admins[0]).await;
    assert_eq!(list.len(), 3, "{list:?}");
    assert_eq!(active_uri(&list), uris[2]);
    assert_eq!(state_of(&list, &uris[0]), KeyState::Deactivated);
    assert_eq!(state_of(&list, &uris[1]), KeyState::Deactivated);
    if let Some(k) = imported {
        // The active CMK is exactly the customer's key: it opens the KEKs.
        let mine = SoftwareKey::from_bytes(id_of(&uris[2]), &k).unwrap();
        for kek in store.list_keks(Some(ORG)).await.unwrap() {
            mine.unwrap(&format!("kek:{}", kek.id), &kek.wrapped).expect("the imported CMK wraps every KEK");
        }
    }
    assert_eq!(load.count(), 0, "failures during the rotations: {:?}", load.failures.lock().unwrap());

    // The old CMKs go (under load), and the backend no longer has them.
    for old in &uris[..2] {
        let r = admins[0].call(Method::Update, old, json!({"keyState": "DELETED"})).await;
        assert_eq!(r.status, Status::OK, "{:?}", r.reason);
    }
    let list = cmks(&admins[1]).await;
    assert_eq!(state_of(&list, &uris[0]), KeyState::Deleted);
    assert_eq!(state_of(&list, &uris[1]), KeyState::Deleted);
    assert_eq!(active_uri(&list), uris[2]);
    let held: Vec<String> = backend().list().unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(held, [id_of(&uris[2])], "the old CMKs are destroyed in the backend");
    // Deleting again is a harmless repeat.
    assert_eq!(admins[1].call(Method::Update, &uris[0], json!({"keyState": "DELETED"})).await.status, Status::OK);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let seen = load.finish().await;
    assert!(seen.len() >= 100, "the load made only {} keys", seen.len());
    eprintln!("rotation under load: {} keys created and read back by 8 clients on 2 nodes, 0 failures", seen.len());

    // A new node whose backend holds only the new CMK reads everything, and
    // accepts a session made before the rotations (its ticket key was re-wrapped).
    let fresh = node(&store, backend(), &key).await;
    all_readable(&fresh, &seen).await;
    all_readable(&nodes[1], &seen).await;
    let ping = before.request(Method::Update, "/ping", json!({}));
    assert_eq!(send_via(&fresh, &before, &ping).await.unwrap().status, Status::OK);
    let c = Client::connect(&fresh, "w3").await;
    assert_eq!(c.create_keys(3).await.len(), 3);
    uris
}

// ---------------------------------------------------------------- (a) file backend

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_file_backend() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path()).await;
    let cmk_dir = dir.path().join("cmk");
    let uris = rotation_under_load(store, || file_backend(&cmk_dir), [NewCmk::Generated, NewCmk::Generated]).await;
    // Only the active CMK's file is left.
    let files: Vec<String> = std::fs::read_dir(&cmk_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cmk.json"))
        .collect();
    assert_eq!(files, [format!("{}.cmk.json", id_of(&uris[2]))]);
}

// ---------------------------------------------------------------- (b) refusals

#[tokio::test]
async fn refusals() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path()).await;
    let engine = node(&store, file_backend(&dir.path().join("cmk")), &static_key()).await;
    let admin = Client::connect(&engine, "admin").await;
    let alice = Client::connect(&engine, "alice").await;
    let active = active_uri(&cmks(&admin).await);

    // Org admins only.
    for (m, uri, body) in [
        (Method::Retrieve, "/cmk".to_string(), json!({})),
        (Method::Create, "/cmk".to_string(), json!({})),
        (Method::Retrieve, "/publicKey".to_string(), json!({})),
        (Method::Update, active.clone(), json!({"keyState": "DELETED"})),
    ] {
        assert_eq!(alice.call(m, &uri, body).await.status, Status::FORBIDDEN, "{m:?} {uri}");
    }
    // Not the active one.
    let r = admin.call(Method::Update, &active, json!({"keyState": "DELETED"})).await;
    assert_eq!(r.status, Status::CONFLICT);
    assert!(r.reason.unwrap().contains("active CMK"));
    assert_eq!(admin.call(Method::Update, &active, json!({"keyState": "DEACTIVATED"})).await.status, Status::CONFLICT);
    // Bad BYOK blobs: not base64, not a wrapped key, a wrapped key of the wrong size, unknown algorithm.
    for blob in ["not base64 !!", "AAAA", &jose::b64::encode([7u8; 384])] {
        let r = admin.call(Method::Create, "/cmk", json!({"customerMasterKey": blob})).await;
        assert_eq!(r.status, Status::BAD_REQUEST, "{blob}: {:?}", r.reason);
    }
    let short = {
        use rsa::pkcs8::DecodePublicKey;
        let pem = admin.ok(Method::Retrieve, "/publicKey", json!({})).await.public_key.unwrap();
        let pk = rsa::RsaPublicKey::from_public_key_pem(&pem).unwrap();
        jose::b64::encode(pk.encrypt(&mut rand_core::OsRng, rsa::Oaep::new::<sha1::Sha1>(), &[1u8; 16]).unwrap())
    };
    let r = admin.call(Method::Create, "/cmk", json!({"customerMasterKey": short})).await;
    assert_eq!(r.status, Status::BAD_REQUEST, "a 16-byte key");
    let r = admin
        .call(Method::Create, "/cmk", json!({"customerMasterKey": "AAAA", "customerMasterKeyAlg": "RSA1_5"}))
        .await;
    assert_eq!(r.status, Status::BAD_REQUEST);
    // Unknown CMK; states a CMK cannot take; another org.
    let unknown = format!("kms://{DOMAIN}/cmk/0190aaaa-0000-7000-8000-000000000000");
    assert_eq!(admin.call(Method::Update, &unknown, json!({"keyState": "DELETED"})).await.status, Status::NOT_FOUND);
    assert_eq!(admin.call(Method::Update, &unknown, json!({"keyState": "ACTIVE"})).await.status, Status::NOT_FOUND);
    assert_eq!(admin.call(Method::Update, &active, json!({"keyState": "REVOKED"})).await.status, Status::BAD_REQUEST);
    let r = admin.call(Method::Create, "/cmk", json!({"assignedOrgId": "globex.example"})).await;
    assert_eq!(r.status, Status::FORBIDDEN);
    // Nothing changed.
    let list = cmks(&admin).await;
    assert_eq!(list.len(), 1);
    assert_eq!(active_uri(&list), active);

    // A deleted CMK stays deleted; a deactivated one can come back (rotation back to it).
    let second = admin.ok(Method::Create, "/cmk", json!({})).await.master_keys.unwrap().remove(0).uri.to_string();
    admin.ok(Method::Update, &active, json!({"keyState": "RETIRED"})).await;
    assert_eq!(state_of(&cmks(&admin).await, &active), KeyState::Retired);
    admin.ok(Method::Update, &active, json!({"keyState": "ACTIVE"})).await;
    everything_under(&*store, id_of(&active)).await;
    tokio::time::sleep(kms::masterkeys::SETTLE).await;
    admin.ok(Method::Update, &second, json!({"keyState": "DELETED"})).await;
    assert_eq!(admin.call(Method::Update, &second, json!({"keyState": "ACTIVE"})).await.status, Status::CONFLICT);
    assert_eq!(admin.call(Method::Update, &second, json!({"keyState": "RETIRED"})).await.status, Status::CONFLICT);

    // Without a backend (an in-memory CMK), rotation and BYOK are not available, and say so.
    let h = common::harness().await;
    let admin = Client::connect(&h.engine, "admin").await;
    assert_eq!(admin.call(Method::Retrieve, "/publicKey", json!({})).await.status, Status(501));
    assert_eq!(admin.call(Method::Create, "/cmk", json!({})).await.status, Status(501));
    assert_eq!(cmks(&admin).await.len(), 1);
}

// ---------------------------------------------------------------- (c) BYOK

#[tokio::test]
async fn bring_your_own_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path()).await;
    let engine = node(&store, file_backend(&dir.path().join("cmk")), &static_key()).await;
    let admin = Client::connect(&engine, "admin").await;
    let alice = Client::connect(&engine, "alice").await;
    let before = alice.create_keys(3).await;
    let res = alice.create_resource(&["bob"], &[before[0].uri.to_string()]).await;
    let old = active_uri(&cmks(&admin).await);

    // The public key is stable; SHA-1 (JOSE RSA-OAEP, the default) and SHA-256 both import.
    let p1 = admin.ok(Method::Retrieve, "/publicKey", json!({})).await.public_key;
    assert_eq!(p1, admin.ok(Method::Retrieve, "/publicKey", json!({})).await.public_key);
    let mut imported = Vec::new();
    for sha256 in [false, true] {
        let mine = random32();
        let blob = byok_blob(&admin, &mine, sha256).await;
        let alg = if sha256 { "RSA-OAEP-256" } else { "RSA-OAEP" };
        let r = admin.ok(Method::Create, "/cmk", json!({"customerMasterKey": blob, "customerMasterKeyAlg": alg})).await;
        let uri = r.master_keys.unwrap().remove(0).uri.to_string();
        everything_under(&*store, id_of(&uri)).await;
        let key = SoftwareKey::from_bytes(id_of(&uri), &mine).unwrap();
        for kek in store.list_keks(Some(ORG)).await.unwrap() {
            key.unwrap(&format!("kek:{}", kek.id), &kek.wrapped).expect("the customer's key wraps the KEKs");
        }
        imported.push(uri);
    }
    let list = cmks(&admin).await;
    assert_eq!(active_uri(&list), imported[1]);
    assert_eq!(state_of(&list, &old), KeyState::Deactivated);
    // All keys readable, before and after; the generated CMK and the first import go.
    for k in &before {
        assert_eq!(alice.ok(Method::Retrieve, &k.uri.to_string(), json!({})).await.key.unwrap().jwk, k.jwk);
    }
    let bob = Client::connect(&engine, "bob").await;
    let uri = format!("{}/keys", res.uri);
    assert_eq!(bob.ok(Method::Retrieve, &uri, json!({})).await.keys.unwrap()[0].jwk, before[0].jwk);
    for gone in [&old, &imported[0]] {
        admin.ok(Method::Update, gone, json!({"keyState": "DELETED"})).await;
    }
    let fresh = node(&store, file_backend(&dir.path().join("cmk")), &static_key()).await;
    let alice2 = Client::connect(&fresh, "alice").await;
    for k in &before {
        assert_eq!(alice2.ok(Method::Retrieve, &k.uri.to_string(), json!({})).await.key.unwrap().jwk, k.jwk);
    }
    assert_eq!(alice2.create_keys(2).await.len(), 2);
}

// ---------------------------------------------------------------- (d) PKCS#11

const TOKEN: &str = "custos-kms-cmk-test";
const SO_PIN: &str = "so-pin-123456";
const PIN: &str = "user-pin-123456";
const PIN_ENV: &str = "CUSTOS_KMS_TEST_HSM_PIN";

/// A softhsm2 token in a directory under Cargo's temporary directory, made
/// once per process (the module reads SOFTHSM2_CONF when it loads): left
/// behind by this run, removed by the next.
fn softhsm_token() -> &'static PathBuf {
    static TOKEN_DIR: OnceLock<PathBuf> = OnceLock::new();
    TOKEN_DIR.get_or_init(|| {
        let util = std::process::Command::new("softhsm2-util").arg("--version").output();
        let (Ok(util), Some(_)) = (util, cmk::default_module_path()) else {
            panic!(
                "softhsm2 is not installed (softhsm2-util and libsofthsm2.so are required by the PKCS#11 test): \
                 install it with `apt-get install -y softhsm2`; scripts/test installs it"
            );
        };
        assert!(util.status.success(), "softhsm2-util --version failed");
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(pid) = name.strip_prefix("kms-cmk-softhsm-") else { continue };
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = root.join(format!("kms-cmk-softhsm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.join("tokens").display()
            ),
        )
        .unwrap();
        std::env::set_var("SOFTHSM2_CONF", &conf);
        std::env::set_var(PIN_ENV, PIN);
        let out = std::process::Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", TOKEN, "--so-pin", SO_PIN, "--pin", PIN])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        assert!(out.status.success(), "softhsm2-util --init-token: {}", String::from_utf8_lossy(&out.stderr));
        dir
    })
}

fn kms_config(data_dir: &Path, cmk: &str) -> kms::config::Config {
    let text = format!(
        r#"
listen = "127.0.0.1:0"
domain = "{DOMAIN}"
org_domain = "{ORG}"
data_dir = "{}"
admins = ["admin@{ORG}"]
[cmk]
{cmk}
[identity]
audience = "kms://{DOMAIN}"
[[identity.issuers]]
issuer = "https://idp.acme.example"
org_domain = "{ORG}"
"#,
        data_dir.display()
    );
    kms::config::Config::parse(&text, Path::new("/")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_pkcs11_softhsm() {
    softhsm_token();
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path()).await;
    // Through the configuration, as `custos kms serve` opens it.
    let cfg = kms_config(
        dir.path(),
        &format!("backend = \"pkcs11\"\ntoken_label = \"{TOKEN}\"\npin_env = \"{PIN_ENV}\"\nlabel_prefix = \"load-\""),
    );
    let backend = move || kms::server::open_cmk_backend(&cfg).unwrap().backend;
    assert_eq!(backend().kind(), "pkcs11");
    // The second rotation imports a customer's key straight into the token (C_UnwrapKey).
    let uris = rotation_under_load(store, &backend, [NewCmk::Generated, NewCmk::Imported]).await;
    let other = kms_config(
        dir.path(),
        &format!("backend = \"pkcs11\"\ntoken_label = \"{TOKEN}\"\npin_env = \"{PIN_ENV}\"\nlabel_prefix = \"other-\""),
    );
    assert!(
        kms::server::open_cmk_backend(&other).unwrap().backend.list().unwrap().is_empty(),
        "prefixes keep KMSs apart"
    );
    assert_eq!(backend().list().unwrap().len(), 1);
    let no_token = kms_config(
        dir.path(),
        &format!("backend = \"pkcs11\"\ntoken_label = \"no-such-token\"\npin_env = \"{PIN_ENV}\""),
    );
    assert!(kms::server::open_cmk_backend(&no_token).is_err());
    assert_eq!(uris.len(), 3);
}

// ---------------------------------------------------------------- (e) an existing deployment

/// The original layout: `data/cmk.json` (made by `Cmk::open_or_create`, the
/// code path `custos kms serve` used), the static key sealed as a bare blob,
/// KEKs and a ticket key wrapped as bare blobs, no CMK registry.
async fn original_deployment(data: &Path) -> (Cmk, jose::RsaPrivateKey, Vec<(String, [u8; 32])>) {
    std::fs::create_dir_all(data).unwrap();
    let (cmk, created) = Cmk::open_or_create(&data.join("cmk.json"), SERVER_PASS.as_bytes()).unwrap();
    assert!(created && cmk.backend().is_none());
    let key = static_key();
    std::fs::write(data.join("static-key.sealed"), cmk.wrap("static-key", &key.to_pkcs8_der()).unwrap()).unwrap();
    let store = sqlite(data).await;
    let now = kms::now_ms();
    let kek = SecretKey::generate().unwrap();
    store
        .insert_kek(&KekRecord {
            id: "kek-1".into(),
            org: ORG.into(),
            wrapped: cmk.wrap("kek:kek-1", kek.expose()).unwrap(),
            cmk_id: cmk.id().into(),
            state: MasterKeyState::Active,
            create_date: now,
            update_date: now,
        })
        .await
        .unwrap();
    let mut keys = Vec::new();
    let mut recs = Vec::new();
    for i in 0..4 {
        let id = format!("key-{i}");
        let k = random32();
        let content = SecretKey::from_slice(&k).unwrap();
        recs.push(KeyRecord {
            id: id.clone(),
            wrapped: kek.wrap_key(&format!("key:{id}"), &content).unwrap(),
            kek_id: "kek-1".into(),
            user_id: format!("alice@{ORG}"),
            client_id: "dev-alice".into(),
            create_date: now,
            expiration_date: now + 3_600_000,
            resource_id: None,
            bind_date: None,
        });
        keys.push((id, k));
    }
    store.insert_keys(&recs).await.unwrap();
    let res = ResourceRecord {
        id: "res-1".into(),
        creator: format!("alice@{ORG}"),
        create_date: now,
        expiration_date: None,
        ttl: None,
    };
    let auth = AuthorizationRecord {
        id: "auth-1".into(),
        resource_id: "res-1".into(),
        auth_id: Some(format!("alice@{ORG}")),
        role_uri: None,
        creator: format!("alice@{ORG}"),
        create_date: now,
        expiration_date: None,
    };
    let ids: Vec<String> = keys.iter().map(|(id, _)| id.clone()).collect();
    store.create_resource(&res, &[auth], &ids, now + 86_400_000).await.unwrap();
    let epoch = now / kms::session::EPOCH.as_millis() as i64;
    let name = format!("ticket-key:{epoch:020}");
    store.put_meta_if_absent(&name, &cmk.wrap(&name, &random32()).unwrap()).await.unwrap();
    (cmk, key, keys)
}

/// What `custos kms audit-export` does to read the static key.
fn static_key_as_the_cli_reads_it(cfg: &kms::config::Config) -> jose::RsaPrivateKey {
    let (cmk, _) = Cmk::open_or_create(cfg.cmk.path.as_deref().unwrap(), SERVER_PASS.as_bytes()).unwrap();
    kms::server::load_or_create_static_key(cfg, &cmk).unwrap().key
}

async fn keys_read(engine: &Arc<Engine>, keys: &[(String, [u8; 32])]) {
    let alice = Client::connect(engine, "alice").await;
    for (id, k) in keys {
        let r = alice.ok(Method::Retrieve, &format!("kms://{DOMAIN}/keys/{id}"), json!({})).await;
        assert_eq!(k_of(&r), jose::b64::encode(k), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_deployment_starts_unchanged() {
    std::env::set_var("CUSTOS_KMS_CMK_PASSPHRASE", SERVER_PASS);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (legacy, key, keys) = original_deployment(&data).await;
    let cfg = kms_config(&data, "");
    assert_eq!(cfg.cmk.path.as_deref(), Some(data.join("cmk.json").as_path()), "the cmk.json is found by default");

    // `custos kms serve` starts: cmk.json is adopted, the static key opens, nothing is lost.
    let running = kms::server::start(&cfg, false).await.unwrap();
    assert_eq!(running.engine.server_key().public_key().thumbprint(), key.public_key().thumbprint());
    assert!(data.join("cmk.json").is_file(), "kept until its CMK is deleted");
    assert!(data.join("cmk").join(format!("{}.cmk.json", legacy.id())).is_file());
    assert_eq!(kms::masterkeys::stored_active(&*sqlite(&data).await).await.unwrap().as_deref(), Some(legacy.id()));
    running.task.abort();
    assert_eq!(static_key_as_the_cli_reads_it(&cfg).public_key(), key.public_key());

    // A node over the same data reads the old keys (a bare-blob ticket key serves its handshake).
    let opened = kms::server::open_cmk_backend(&cfg).unwrap();
    let store = sqlite(&data).await;
    let (cmk, created) = kms::server::starting_cmk(&*store, &opened, ORG).await.unwrap();
    assert!(!created);
    assert_eq!(cmk.id(), legacy.id());
    let engine = engine_with_cmk(store.clone(), cmk, &key).await;
    engine.master_keys().set_legacy_file(data.join("cmk.json"), legacy.id().to_string());
    let sealed = data.join("static-key.sealed");
    engine.master_keys().set_static_key_file(sealed.clone(), key.to_pkcs8_der()).await.unwrap();
    keys_read(&engine, &keys).await;

    // Rotate; the static key is re-sealed under the new CMK; the original CMK and its cmk.json go.
    let admin = Client::connect(&engine, "admin").await;
    let new = admin.ok(Method::Create, "/cmk", json!({})).await.master_keys.unwrap().remove(0).uri.to_string();
    let bytes = std::fs::read(&sealed).unwrap();
    assert_eq!(kms::masterkeys::sealed_static_key_cmk(&bytes).unwrap().0, id_of(&new));
    assert_eq!(static_key_as_the_cli_reads_it(&cfg).public_key(), key.public_key());
    let old = format!("kms://{DOMAIN}/cmk/{}", legacy.id());
    admin.ok(Method::Update, &old, json!({"keyState": "DELETED"})).await;
    assert!(!data.join("cmk.json").exists(), "the adopted cmk.json is shredded with its CMK");
    assert!(!data.join("cmk").join(format!("{}.cmk.json", legacy.id())).exists());
    keys_read(&engine, &keys).await;

    // And it starts again, from the CMK directory alone; the CLI finds it too.
    let cfg = kms_config(&data, "");
    assert_eq!(cfg.cmk.path.as_deref(), Some(data.join("cmk").as_path()));
    let running = kms::server::start(&cfg, false).await.unwrap();
    assert_eq!(running.engine.server_key().public_key().thumbprint(), key.public_key().thumbprint());
    running.task.abort();
    assert_eq!(static_key_as_the_cli_reads_it(&cfg).public_key(), key.public_key());
    let fresh = node(&sqlite(&data).await, opened_file(&cfg), &key).await;
    keys_read(&fresh, &keys).await;
}

fn opened_file(cfg: &kms::config::Config) -> Arc<dyn CmkBackend> {
    kms::server::open_cmk_backend(cfg).unwrap().backend
}

// ---------------------------------------------------------------- (f) crash safety

#[tokio::test]
async fn a_rotation_interrupted_halfway() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path()).await;
    let cmk_dir = dir.path().join("cmk");
    let key = static_key();
    let engine = node(&store, file_backend(&cmk_dir), &key).await;
    let admin = Client::connect(&engine, "admin").await;
    let alice = Client::connect(&engine, "alice").await;
    let mut keys = Vec::new();
    for _ in 0..6 {
        keys.extend(alice.create_keys(3).await);
        admin.ok(Method::Create, "/kek", json!({})).await;
    }
    let old = active_uri(&cmks(&admin).await);
    let old_id = id_of(&old).to_string();

    // A rotation that crashed midway: the new CMK is in the backend and active
    // in the registry, half the KEKs are re-wrapped under it, the rest (and the
    // ticket keys) are not.
    let backend = file_backend(&cmk_dir);
    let new = backend.generate().unwrap();
    let (raw, mut reg) = registry(&*store).await;
    reg.keys.get_mut(&old_id).unwrap().state = CmkState::Deactivated;
    let entry = kms::masterkeys::CmkEntry { state: CmkState::Active, created: 1, updated: 1, origin: None };
    reg.keys.insert(new.id().to_string(), entry);
    reg.active = new.id().to_string();
    assert!(store.swap_meta(REGISTRY, &raw, &serde_json::to_vec(&reg).unwrap()).await.unwrap());
    let prev = backend.open(&old_id).unwrap();
    let keks = store.list_keks(Some(ORG)).await.unwrap();
    assert_eq!(keks.len(), 7);
    for k in keks.iter().step_by(2) {
        let aad = format!("kek:{}", k.id);
        let wrapped = new.wrap(&aad, &prev.unwrap(&aad, &k.wrapped).unwrap()).unwrap();
        assert!(store.rewrap_kek(&k.id, &old_id, &wrapped, new.id()).await.unwrap());
    }
    assert!(!store.rewrap_kek(&keks[0].id, &old_id, &[1], new.id()).await.unwrap(), "compare on cmk_id");

    // Every key still opens: on a node started now, and on the old one once its caches expire.
    let check = |engine: Arc<Engine>| {
        let keys = keys.clone();
        async move {
            let alice = Client::connect(&engine, "alice").await;
            for k in &keys {
                assert_eq!(alice.ok(Method::Retrieve, &k.uri.to_string(), json!({})).await.key.unwrap().jwk, k.jwk);
            }
            assert_eq!(alice.create_keys(1).await.len(), 1);
        }
    };
    check(node(&store, file_backend(&cmk_dir), &key).await).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    check(engine.clone()).await;

    // The old CMK still wraps KEKs and a ticket key: it cannot be deleted.
    let r = admin.call(Method::Update, &old, json!({"keyState": "DELETED"})).await;
    assert_eq!(r.status, Status::CONFLICT);
    let reason = r.reason.unwrap();
    assert!(reason.contains("still wraps 3 KEK(s)") && reason.contains("ticket key"), "{reason}");
    assert!(backend.list().unwrap().iter().any(|i| i.id == old_id), "nothing was destroyed");

    // The next rotation completes, and then both earlier CMKs can go.
    let newest = admin.ok(Method::Create, "/cmk", json!({})).await.master_keys.unwrap().remove(0).uri.to_string();
    everything_under(&*store, id_of(&newest)).await;
    let interrupted = format!("kms://{DOMAIN}/cmk/{}", new.id());
    for gone in [&old, &interrupted] {
        admin.ok(Method::Update, gone, json!({"keyState": "DELETED"})).await;
    }
    assert_eq!(backend.list().unwrap().len(), 1);
    check(node(&store, file_backend(&cmk_dir), &key).await).await;
    check(engine).await;
}
