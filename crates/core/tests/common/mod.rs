//! Helpers shared by the core's integration tests: an in-process core trusting
//! a real IdP, users with core tokens, client-side sealing, WebSocket clients.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jose::jwe::EncryptKey;
use jose::{ContentEnc, HeaderParams, OctKey};
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::Idp;
use tokio_tungstenite::tungstenite::Message;

pub const AUD: &str = "https://core.acme.example";
pub const KMS: &str = "kms.acme.example";
pub const ORG: &str = "acme.example";
/// A second org, in tests that need one (see [`globex_tail`]).
pub const GLOBEX: &str = "globex.example";

/// A core running in this process.
pub struct Core {
    pub url: String,
    pub idp: Arc<Idp>,
    pub dir: tempfile::TempDir,
    pub core: Arc<custos_core::service::Core>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Core {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Config pieces: `top` goes before the first table (e.g. `database_url`,
/// `nats_url`), `org` into the `[[orgs]]` table (e.g. `kms_url`), `tail`
/// after it (e.g. `[limits]`).
#[derive(Default, Clone, Copy)]
pub struct Opts<'a> {
    pub top: &'a str,
    pub org: &'a str,
    pub tail: &'a str,
}

pub async fn start_with(idp: Arc<Idp>, o: Opts<'_>) -> Core {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{}\n\n[identity]\naudience = \"{AUD}\"\n[[identity.issuers]]\nissuer = \"{}\"\norg_domain = \"{ORG}\"\n\n\
         [[orgs]]\ndomain = \"{ORG}\"\nkms_uri = \"kms://{KMS}\"\n{}\n\n{}\n",
        dir.path().display(),
        o.top,
        idp.issuer,
        o.org,
        o.tail
    );
    let cfg = custos_core::config::Config::parse(&text, dir.path()).unwrap();
    let r = custos_core::server::start(cfg).await.unwrap();
    Core { url: format!("http://{}", r.addr), idp, dir, core: r.core, task: r.task }
}

/// The `tail` that adds a second org, globex (`globex.example`, KMS
/// `kms.globex.example`), whose users' tokens come from `issuer`; `more` follows.
pub fn globex_tail(issuer: &str, more: &str) -> String {
    format!(
        "[[orgs]]\ndomain = \"{GLOBEX}\"\nkms_uri = \"kms://kms.{GLOBEX}\"\n\n\
         [[identity.issuers]]\nissuer = \"{issuer}\"\norg_domain = \"{GLOBEX}\"\n\n{more}\n"
    )
}

/// A core with its own IdP; `tail` is appended after the org table.
pub async fn start_core(tail: &str) -> Core {
    start_with(Arc::new(Idp::start()), Opts { tail, ..Opts::default() }).await
}

pub struct User {
    pub http: reqwest::Client,
    pub url: String,
    pub token: String,
    pub id: String,
}

impl User {
    pub async fn new(core: &Core, name: &str) -> User {
        let token = core.idp.token(&[("sub", name), ("aud", AUD)]).await;
        User { http: reqwest::Client::new(), url: core.url.clone(), token, id: format!("{name}@{ORG}") }
    }
    /// A user of `org`, whose tokens come from `idp` (that org's issuer in the core's config).
    pub async fn of_org(core: &Core, idp: &Idp, name: &str, org: &str) -> User {
        let token = idp.token(&[("sub", name), ("aud", AUD)]).await;
        User { http: reqwest::Client::new(), url: core.url.clone(), token, id: format!("{name}@{org}") }
    }
    /// The same user (same token) talking to another node.
    pub fn on(&self, core: &Core) -> User {
        User { http: reqwest::Client::new(), url: core.url.clone(), token: self.token.clone(), id: self.id.clone() }
    }
    pub async fn req(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
    /// A request with a raw body (any bytes, no content type forced).
    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.req(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.req(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn put_chunk(&self, file: &str, index: i64, body: Vec<u8>) -> (StatusCode, Value) {
        self.raw(reqwest::Method::PUT, &format!("/v1/files/{file}/chunks/{index}"), body).await
    }
    /// Creates a space (no title); its id.
    pub async fn space(&self) -> String {
        let (st, s) = self.post("/v1/spaces", json!({"resource_uri": resource()})).await;
        assert_eq!(st, StatusCode::CREATED, "{s}");
        s["id"].as_str().unwrap().to_string()
    }
    pub async fn add(&self, space: &str, user: &str) {
        let (st, b) = self.post(&format!("/v1/spaces/{space}/members"), json!({"user_id": user})).await;
        assert_eq!(st, StatusCode::OK, "{b}");
    }
    /// Posts a message; the stored event.
    pub async fn say(&self, space: &str, key: &OctKey, key_uri: &str, text: &str) -> Value {
        let (st, e) = self
            .post(
                &format!("/v1/spaces/{space}/events"),
                json!({"kind": "message", "sealed": sealed(key, key_uri, text)}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{e}");
        e
    }
    /// All events of a space, oldest first.
    pub async fn events(&self, space: &str) -> Vec<Value> {
        let (st, b) = self.get(&format!("/v1/spaces/{space}/events?after=0&limit=500")).await;
        assert_eq!(st, StatusCode::OK, "{b}");
        b["events"].as_array().unwrap().clone()
    }
}

pub fn sealed(key: &OctKey, key_uri: &str, plain: &str) -> Value {
    json!({"ciphertext": seal(key, key_uri, plain.as_bytes()), "key_uri": key_uri})
}

pub fn seal(key: &OctKey, key_uri: &str, plain: &[u8]) -> String {
    jose::jwe::encrypt(EncryptKey::Dir(key), ContentEnc::A256Gcm, &HeaderParams::kid(key_uri), plain).unwrap()
}

/// Opens a compact JWE the test sealed.
pub fn open(key: &OctKey, compact: &str) -> Vec<u8> {
    let jwe = jose::Jwe::parse(compact, &jose::JwePolicy::DIR).unwrap();
    jwe.decrypt(jose::jwe::DecryptKey::Dir(key)).unwrap().to_vec()
}

pub fn key() -> (OctKey, String) {
    let id = uuid::Uuid::new_v4();
    (OctKey::generate(32, None).unwrap(), format!("kms://{KMS}/keys/{id}"))
}

pub fn resource() -> String {
    format!("kms://{KMS}/resources/{}", uuid::Uuid::new_v4())
}

// ---- WebSocket clients

pub type WsTx = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;
pub type WsRx = futures_util::stream::SplitStream<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
>;

pub struct Ws {
    pub tx: WsTx,
    pub rx: WsRx,
}

impl Ws {
    /// Connects to `core_url`'s `/v1/ws` without saying hello.
    pub async fn open(core_url: &str) -> Ws {
        let (ws, _) =
            tokio_tungstenite::connect_async(format!("{}/v1/ws", core_url.replace("http://", "ws://"))).await.unwrap();
        let (tx, rx) = ws.split();
        Ws { tx, rx }
    }

    /// Connects, says hello with `token` and `since`, and waits for `ready`.
    pub async fn connect(core_url: &str, token: &str, since: Value) -> Ws {
        let mut ws = Ws::open(core_url).await;
        ws.send(json!({"type": "hello", "token": token, "since": since})).await;
        let f = ws.next().await;
        assert_eq!(f["type"], "ready", "{f}");
        ws
    }

    pub async fn send(&mut self, v: Value) {
        self.tx.send(Message::Text(v.to_string().into())).await.unwrap();
    }

    /// The next text frame, within 5 s.
    pub async fn next(&mut self) -> Value {
        self.next_within(Duration::from_secs(5)).await.expect("a frame within the time limit")
    }

    pub async fn next_within(&mut self, d: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let m = tokio::time::timeout_at(deadline, self.rx.next()).await.ok()?;
            match m {
                Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
                Some(Ok(_)) => continue,
                other => panic!("the socket ended: {other:?}"),
            }
        }
    }

    /// The next `event` frame's event (skipping nothing else: other frames fail).
    pub async fn event(&mut self) -> Value {
        let f = self.next().await;
        assert_eq!(f["type"], "event", "{f}");
        f["event"].clone()
    }

    /// Asserts nothing arrives for `ms` milliseconds.
    pub async fn quiet(&mut self, ms: u64) {
        if let Some(f) = self.next_within(Duration::from_millis(ms)).await {
            panic!("expected silence, got {f}");
        }
    }
}
