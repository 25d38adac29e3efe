//! `custos kms bench`: throughput and latency of the KMS, in-process and over
//! HTTP, next to `openssl speed rsa2048` measured in the same run.
//!
//! Tokens are real RFC 9068 JWTs from a small issuer this tool runs on
//! loopback, validated by the real verifier (cached per token, as in
//! production). In-process figures run the engine on one thread (one core);
//! HTTP figures run a whole server in this process with its own runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use jose::RsaPrivateKey;
use kms_protocol::{begin_handshake, ClientInfo, Credential, KmsInfo, Method, Request, Response, Session, Status};
use serde_json::{json, Value};

use kms::crypto::Cmk;
use kms::limit::RateLimiter;
use kms::server::IdentityAuth;
use kms::{Engine, EngineConfig};

use super::common::Issuer;

const DOMAIN: &str = "kms.bench.example";
const ORG: &str = "bench.example";

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// How long each measurement runs.
    pub seconds: f64,
    /// Concurrent clients for the durable-write and HTTP phases.
    pub clients: usize,
    /// Keys per create request.
    pub keys_per_request: u32,
    /// Database URL (default: a temporary SQLite file).
    pub database_url: Option<String>,
    /// Skip the HTTP phases.
    pub in_process_only: bool,
    /// For comparison only: run the engine without its audit log (production
    /// always audits every release and change before answering).
    pub no_audit: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            seconds: 3.0,
            clients: 16,
            keys_per_request: 10,
            database_url: None,
            in_process_only: false,
            no_audit: false,
        }
    }
}

/// Latency samples and a count over a wall-clock span.
struct Sample {
    ops: f64,
    secs: f64,
    lat: Vec<Duration>,
}

impl Sample {
    fn row(&self, name: &str, unit: &str) -> String {
        let mut l = self.lat.clone();
        l.sort();
        let pct =
            |p: f64| l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1))).copied().unwrap_or_default();
        format!(
            "{name:<54} {:>9.0} {unit:<6} p50 {:>8.2} ms  p99 {:>8.2} ms",
            self.ops / self.secs,
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3
        )
    }
}

fn client(user: &str, token: &str) -> ClientInfo {
    ClientInfo { client_id: format!("bench-{user}"), credential: Credential::bearer(token) }
}

fn request(info: &ClientInfo, method: Method, uri: &str, body: Value) -> Request {
    let mut v = serde_json::to_value(Request::new(method, uri, Some(info.clone()))).expect("serializes");
    if let (Value::Object(m), Value::Object(b)) = (&mut v, body) {
        m.extend(b);
    }
    serde_json::from_value(v).expect("valid request")
}

/// Something that carries compact messages to a KMS.
trait Carrier: Clone + Send + Sync + 'static {
    fn send(&self, msg: String) -> impl std::future::Future<Output = anyhow::Result<String>> + Send;
}

/// The engine on a thread of its own (one core), fed through a channel.
#[derive(Clone)]
struct InProcess(tokio::sync::mpsc::Sender<(String, tokio::sync::oneshot::Sender<String>)>);

impl InProcess {
    /// Starts an engine on a dedicated single-threaded runtime; returns the carrier and the KMS's info.
    fn start(opts: &BenchOptions, issuer_url: String, dir: std::path::PathBuf) -> anyhow::Result<(Self, KmsInfo)> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, tokio::sync::oneshot::Sender<String>)>(4096);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let opts = opts.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let e = match engine(&opts, &issuer_url, &dir).await {
                    Ok(e) => e,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(e.server_key().info()));
                while let Some((msg, reply)) = rx.recv().await {
                    let e = e.clone();
                    tokio::task::spawn_local(async move {
                        let _ = reply.send(e.handle(&msg, None).await.unwrap_or_default());
                    });
                }
            });
        });
        let info = ready_rx.recv()??;
        Ok((InProcess(tx), info))
    }
}

impl Carrier for InProcess {
    async fn send(&self, msg: String) -> anyhow::Result<String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.0.send((msg, tx)).await.map_err(|_| anyhow::anyhow!("engine stopped"))?;
        Ok(rx.await?)
    }
}

#[derive(Clone)]
struct Http {
    http: reqwest::Client,
    url: String,
}

impl Carrier for Http {
    async fn send(&self, msg: String) -> anyhow::Result<String> {
        let r = self
            .http
            .post(format!("{}/kms/messages", self.url))
            .header("content-type", "application/jose")
            .body(msg)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "HTTP {}", r.status());
        Ok(r.text().await?)
    }
}

struct Conn<C: Carrier> {
    carrier: C,
    kms: KmsInfo,
    info: ClientInfo,
    session: Session,
}

impl<C: Carrier> Conn<C> {
    async fn open(carrier: &C, kms: &KmsInfo, info: ClientInfo) -> anyhow::Result<Self> {
        let p = begin_handshake(kms, info.clone())?;
        let answer = carrier.send(p.wrapped.clone()).await?;
        let session = p.finish(kms, &answer)?;
        Ok(Self { carrier: carrier.clone(), kms: kms.clone(), info, session })
    }

    async fn call(&self, method: Method, uri: &str, body: Value) -> anyhow::Result<Response> {
        let req = request(&self.info, method, uri, body);
        let answer = self.carrier.send(self.session.wrap(&req)?).await?;
        let r = self.session.unwrap(&self.kms, &answer, &req.request_id)?;
        anyhow::ensure!(r.status.is_success(), "{} {uri}: {:?}", method.name(), r.reason);
        Ok(r)
    }
}

/// Runs `clients` loops of `op` for `secs`; counts `weight` per op that
/// did something (returned `true`).
async fn drive<F, Fut>(clients: usize, secs: f64, weight: f64, op: F) -> anyhow::Result<Sample>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<bool>> + Send,
{
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                if op(c, i).await? {
                    lat.push(t.elapsed());
                }
                i += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    Ok(Sample { ops: lat.len() as f64 * weight, secs: start.elapsed().as_secs_f64(), lat })
}

/// The four phases against one carrier; returns printable rows.
async fn phases<C: Carrier>(
    carrier: C,
    kms: KmsInfo,
    issuer: &Issuer,
    opts: &BenchOptions,
    clients: usize,
    label: &str,
) -> anyhow::Result<Vec<String>> {
    let mut rows = Vec::new();
    let info = client("alice", &issuer.token("alice"));
    // Handshakes (client work included; over HTTP the client shares the machine).
    let (c2, k2, i2) = (carrier.clone(), kms.clone(), info.clone());
    let s = drive(clients, opts.seconds, 1.0, move |_, _| {
        let (c, k, i) = (c2.clone(), k2.clone(), i2.clone());
        async move { Conn::open(&c, &k, i).await.map(|_| true) }
    })
    .await?;
    rows.push(s.row(&format!("handshakes ({label})"), "/s"));

    // A resource with keys to retrieve and a pool of unbound keys to bind.
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(Arc::new(Conn::open(&carrier, &kms, info.clone()).await?));
    }
    let res =
        conns[0].call(Method::Create, "/resources", json!({})).await?.resource.context("resource")?.uri.to_string();
    let keys = conns[0].call(Method::Create, "/keys", json!({"count": 100})).await?.keys.context("keys")?;
    let key_uris: Arc<Vec<String>> = Arc::new(keys.iter().map(|k| k.uri.to_string()).collect());
    conns[0].call(Method::Create, "/resources", json!({"keyUris": *key_uris})).await?;

    let (cs, ku) = (conns.clone(), key_uris.clone());
    let s = drive(clients, opts.seconds, 1.0, move |c, i| {
        let (conn, uri) = (cs[c].clone(), ku[(i as usize * 7 + c) % ku.len()].clone());
        async move { conn.call(Method::Retrieve, &uri, json!({})).await.map(|_| true) }
    })
    .await?;
    rows.push(s.row(&format!("retrieve key ({label})"), "/s"));

    let n = opts.keys_per_request;
    let cs = conns.clone();
    let pool: Arc<tokio::sync::Mutex<Vec<String>>> = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let pool2 = pool.clone();
    let s = drive(clients, opts.seconds, f64::from(n), move |c, _| {
        let (conn, pool) = (cs[c].clone(), pool2.clone());
        async move {
            let r = conn.call(Method::Create, "/keys", json!({"count": n})).await?;
            // Every client is alice: any of her sessions may bind these.
            pool.lock().await.extend(r.keys.unwrap_or_default().into_iter().map(|k| k.uri.to_string()));
            Ok(true)
        }
    })
    .await?;
    rows.push(s.row(&format!("create keys, {n}/request ({label})"), "keys/s"));

    // Binds of the keys just created, from one session, many in flight.
    let pool: Arc<Vec<String>> = Arc::new(std::mem::take(&mut *pool.lock().await));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (c0, r2) = (conns[0].clone(), res.clone());
    let s = drive(clients, opts.seconds, 1.0, move |_, _| {
        let (conn, pool, next, res) = (c0.clone(), pool.clone(), next.clone(), r2.clone());
        async move {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(uri) = pool.get(i) else {
                // The pool ran out: wait for the deadline, counting nothing.
                tokio::time::sleep(Duration::from_millis(1)).await;
                return Ok(false);
            };
            conn.call(Method::Update, uri, json!({"resourceUri": res})).await.map(|_| true)
        }
    })
    .await?;
    rows.push(s.row(&format!("bind ({label})"), "/s"));
    Ok(rows)
}

fn openssl_rsa2048() -> Option<f64> {
    let out = std::process::Command::new("openssl").args(["speed", "-seconds", "2", "rsa2048"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("rsa 2048 bits"))?;
    line.split_whitespace().nth(5)?.parse().ok()
}

async fn engine(opts: &BenchOptions, issuer_url: &str, dir: &std::path::Path) -> anyhow::Result<Arc<Engine>> {
    std::fs::create_dir_all(dir)?;
    let url = opts.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", dir.join("bench.db").display()));
    let store = kms_store::open(&url).await?;
    let cmk = Cmk::ephemeral()?;
    let verifier = kms_identity::Verifier::new(kms_identity::IdentityConfig::new(
        format!("kms://{DOMAIN}"),
        vec![kms_identity::IssuerConfig::new(issuer_url.to_string(), ORG)],
    ))?;
    let key = RsaPrivateKey::generate(2048, Some("bench-static".into()))?;
    // Audited as in production: every release and change is appended (group-committed) before the answer.
    let signer_key = RsaPrivateKey::from_pkcs8_der(&key.to_pkcs8_der(), key.kid().map(str::to_string))?;
    let signer = Arc::new(kms::audit::StaticKeySigner(kms_protocol::ServerKey::new(signer_key, DOMAIN)?));
    // As `kms serve` does: on SQLite, the audit log in a file of its own.
    let audit_url =
        if url.starts_with("sqlite:") { format!("sqlite://{}", dir.join("audit.db").display()) } else { url.clone() };
    let engine = Engine::open(
        EngineConfig::new(DOMAIN, ORG),
        store,
        key,
        cmk,
        Arc::new(IdentityAuth(verifier)),
        RateLimiter::unlimited(),
    )
    .await?;
    if opts.no_audit {
        return Ok(Arc::new(engine));
    }
    let log = Arc::new(audit::AuditLog::open(&audit_url, "bench", signer).await?);
    Ok(Arc::new(engine.with_audit(log)))
}

/// Runs the benchmark and prints the report.
pub fn run(opts: BenchOptions) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    println!("openssl speed rsa2048 ...");
    let rsa_before = openssl_rsa2048();
    // In-process: the engine alone on one thread (one core); clients on the other.
    let clients_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let rows_in = clients_rt.block_on(async {
        let issuer = Issuer::start(format!("kms://{DOMAIN}"), 3600).await?;
        let (carrier, kms) = InProcess::start(&opts, issuer.url.clone(), dir.join("inproc"))?;
        phases(carrier, kms, &issuer, &opts, opts.clients, "in-process, server on 1 core").await
    })?;
    drop(clients_rt);
    let rows_http = if opts.in_process_only {
        Vec::new()
    } else {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        rt.block_on(async {
            let issuer = Issuer::start(format!("kms://{DOMAIN}"), 3600).await?;
            let e = engine(&opts, &issuer.url, &dir.join("http")).await?;
            let kms = e.server_key().info();
            let info = Arc::new(json!({"uri": format!("kms://{DOMAIN}"), "key": kms.key.to_jwk()}));
            let discovery = Arc::new(serde_json::json!({}));
            let app = kms::http::router(kms::http::AppState { engine: e, info, discovery, metrics: None });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            tokio::spawn(async move {
                axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.ok()
            });
            let carrier = Http { http: reqwest::Client::new(), url: format!("http://{addr}") };
            phases(carrier, kms, &issuer, &opts, opts.clients, "HTTP, 2 cores shared").await
        })?
    };
    let rsa_after = openssl_rsa2048();
    println!();
    println!(
        "{} clients; audit log {}",
        opts.clients,
        if opts.no_audit {
            "OFF (--no-audit, for comparison only)"
        } else {
            "on (every release and change durably appended before the answer)"
        }
    );
    for r in rows_in.iter().chain(&rows_http) {
        println!("{r}");
    }
    println!();
    match (rsa_before, rsa_after) {
        (Some(a), Some(b)) => {
            let rsa = (a + b) / 2.0;
            println!("openssl speed rsa2048: {a:.0} and {b:.0} signs/s (mean {rsa:.0}); a handshake costs 2 RSA private operations,");
            println!(
                "so one core's ceiling is about {:.0} handshakes/s; the target is 0.8 x that = {:.0}/s.",
                rsa / 2.0,
                0.8 * rsa / 2.0
            );
        }
        _ => println!("openssl speed rsa2048: unavailable (is openssl installed?)"),
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("custos-kms-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

#[allow(dead_code)]
fn _status(_: Status) {}
