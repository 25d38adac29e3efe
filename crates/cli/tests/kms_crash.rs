//! Durability: a load generator creates and binds keys with 32 requests in
//! flight while the KMS process is killed with SIGKILL, again and again.
//! After each restart every key the client saw acknowledged is retrievable,
//! with the same key material and binding. On SQLite and on PostgreSQL.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kms_protocol::{begin_handshake, ClientInfo, Credential, KmsInfo, Method, Request, Response, Session, Status};
use serde_json::{json, Value};
use testkit::Idp;

const WORKERS: usize = 32;
const ROUNDS: usize = 4;

#[derive(Clone, Debug)]
struct Acked {
    worker: usize,
    uri: String,
    k: String,
    resource: Option<String>,
}

struct Kms {
    child: Child,
    url: String,
}

impl Drop for Kms {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(config: &std::path::Path, port: u16) -> Kms {
    let child = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["kms", "serve", "--config"])
        .arg(config)
        .env("CUSTOS_KMS_CMK_PASSPHRASE", "crash test passphrase")
        .env("CUSTOS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("custos starts");
    let url = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    loop {
        if healthy(&format!("127.0.0.1:{port}")) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the KMS did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    Kms { child, url }
}

/// A bare HTTP/1.1 GET (no second runtime needed): the whole response, if any.
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    Some(buf)
}

fn healthy(addr: &str) -> bool {
    http_get(addr, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Client {
    http: reqwest::Client,
    url: String,
    kms: KmsInfo,
    info: ClientInfo,
    session: Session,
}

impl Client {
    async fn connect(http: &reqwest::Client, url: &str, token: &str, client_id: &str) -> Result<Client, String> {
        let info: Value = http
            .get(format!("{url}/kms/info"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let jwk: jose::Jwk = serde_json::from_value(info["key"].clone()).unwrap();
        let kms = KmsInfo {
            domain: info["uri"].as_str().unwrap().trim_start_matches("kms://").into(),
            key: jwk.to_rsa_public().unwrap(),
        };
        let ci = ClientInfo { client_id: client_id.into(), credential: Credential::bearer(token) };
        let pending = begin_handshake(&kms, ci.clone()).unwrap();
        let answer = post(http, url, pending.wrapped.clone()).await?;
        let session = pending.finish(&kms, &answer).map_err(|e| e.to_string())?;
        Ok(Client { http: http.clone(), url: url.into(), kms, info: ci, session })
    }

    async fn call(&self, method: Method, uri: &str, body: Value) -> Result<Response, String> {
        let mut v = serde_json::to_value(Request::new(method, uri, Some(self.info.clone()))).unwrap();
        v.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
        let req: Request = serde_json::from_value(v).unwrap();
        let answer = post(&self.http, &self.url, self.session.wrap(&req).unwrap()).await?;
        self.session.unwrap(&self.kms, &answer, &req.request_id).map_err(|e| e.to_string())
    }
}

async fn post(http: &reqwest::Client, url: &str, body: String) -> Result<String, String> {
    let r = http
        .post(format!("{url}/kms/messages"))
        .header("content-type", "application/jose")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("HTTP {}", r.status()));
    }
    r.text().await.map_err(|e| e.to_string())
}

/// One worker: a resource, then create-and-bind until the KMS dies.
async fn work(http: reqwest::Client, url: String, tok: String, worker: usize, acked: Arc<Mutex<Vec<Acked>>>) {
    let Ok(c) = Client::connect(&http, &url, &tok, &format!("w{worker}")).await else { return };
    let Ok(r) = c.call(Method::Create, "/resources", json!({})).await else { return };
    let Some(res) = r.resource.map(|r| r.uri.to_string()) else { return };
    loop {
        let Ok(r) = c.call(Method::Create, "/keys", json!({"count": 2})).await else { return };
        let Some(keys) = r.keys else { return };
        for k in &keys {
            acked.lock().unwrap().push(Acked {
                worker,
                uri: k.uri.to_string(),
                k: k.jwk.k.as_ref().unwrap().expose().to_string(),
                resource: None,
            });
        }
        for k in &keys {
            let uri = k.uri.to_string();
            let Ok(b) = c.call(Method::Update, &uri, json!({"resourceUri": res})).await else { return };
            if b.status != Status::OK {
                return;
            }
            let mut a = acked.lock().unwrap();
            if let Some(e) = a.iter_mut().rev().find(|e| e.uri == uri) {
                e.resource = Some(res.clone());
            }
        }
    }
}

async fn verify(http: &reqwest::Client, url: &str, tok: &str, acked: &[Acked]) {
    let mut clients = std::collections::HashMap::new();
    for a in acked {
        if let std::collections::hash_map::Entry::Vacant(e) = clients.entry(a.worker) {
            let c = Client::connect(http, url, tok, &format!("w{}", a.worker)).await.expect("reconnect after restart");
            e.insert(c);
        }
        let c = &clients[&a.worker];
        let r = c.call(Method::Retrieve, &a.uri, json!({})).await.expect("retrieve");
        assert_eq!(r.status, Status::OK, "acknowledged key {} lost: {:?}", a.uri, r.reason);
        let key = r.key.unwrap();
        assert_eq!(key.jwk.k.as_ref().unwrap().expose(), a.k, "key material changed for {}", a.uri);
        if let Some(res) = &a.resource {
            assert_eq!(
                key.resource_uri.map(|u| u.to_string()).as_deref(),
                Some(res.as_str()),
                "acknowledged binding lost for {}",
                a.uri
            );
        }
    }
}

fn crash_loop(database_url: Option<&str>) {
    let idp = Idp::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let db_line = database_url.map(|u| format!("database_url = \"{u}\"")).unwrap_or_default();
    let config = dir.path().join("kms.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndomain = \"kms.crash.example\"\norg_domain = \"crash.example\"\n{db_line}\n\
             [limits]\nhandshakes_per_second = 10000\nhandshake_burst = 10000\n\
             [identity]\naudience = \"kms://kms.crash.example\"\n[[identity.issuers]]\nissuer = \"{}\"\norg_domain = \"crash.example\"\n",
            idp.issuer
        ),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let tok = rt.block_on(idp.token(&[("sub", "alice"), ("aud", "kms://kms.crash.example"), ("expires_in", "3600")]));
    let acked = Arc::new(Mutex::new(Vec::<Acked>::new()));
    for round in 0..=ROUNDS {
        let mut kms = start(&config, port);
        let before = acked.lock().unwrap().clone();
        rt.block_on(verify(&http, &kms.url, &tok, &before));
        eprintln!("round {round}: {} acknowledged keys verified after restart", before.len());
        if round == ROUNDS {
            break;
        }
        let tasks: Vec<_> = (0..WORKERS)
            .map(|w| rt.spawn(work(http.clone(), kms.url.clone(), tok.clone(), w, acked.clone())))
            .collect();
        std::thread::sleep(Duration::from_millis(1200 + 150 * round as u64));
        if round == 1 {
            // The served process exports Prometheus metrics of what it is doing.
            let m = http_get(&format!("127.0.0.1:{port}"), "/metrics").unwrap_or_default();
            assert!(m.starts_with("HTTP/1.1 200") && m.contains("kms_messages_total"), "metrics: {m}");
        }
        // SIGKILL, mid-flight.
        kms.child.kill().unwrap();
        kms.child.wait().unwrap();
        for t in tasks {
            let _ = rt.block_on(t);
        }
    }
    let n = acked.lock().unwrap().len();
    assert!(n >= WORKERS * 2, "the load generator got too little done to mean anything ({n} keys)");
}

#[test]
fn sigkill_loses_no_acknowledged_key_sqlite() {
    crash_loop(None);
}

#[test]
fn sigkill_loses_no_acknowledged_key_postgres() {
    let Some(db) = testkit::pg::TempDatabase::create("crash", "sigkill_loses_no_acknowledged_key_postgres") else {
        return;
    };
    crash_loop(Some(&db.url));
}
