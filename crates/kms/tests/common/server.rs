//! A real KMS server (its own runtime, on a free port) configured from TOML.

use std::path::Path;
use std::sync::mpsc;

#[allow(dead_code)]
pub struct Server {
    pub url: String,
    pub engine: std::sync::Arc<kms::Engine>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[allow(dead_code)]
pub fn config_text(data_dir: &Path, issuer: &str, extra: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
domain = "kms.acme.example"
org_domain = "acme.example"
data_dir = "{}"
admins = ["admin@acme.example"]
{extra}
[identity]
audience = "kms://kms.acme.example"
[[identity.issuers]]
issuer = "{issuer}"
org_domain = "acme.example"
"#,
        data_dir.display()
    )
}

impl Server {
    pub fn start(config: &str) -> Server {
        // The CMK passphrase comes from the environment, as in production.
        std::env::set_var("CUSTOS_KMS_CMK_PASSPHRASE", "a test passphrase, long enough");
        let cfg = kms::config::Config::parse(config, Path::new("/")).expect("valid config");
        let (tx, rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let running = kms::server::start(&cfg, false).await.expect("server starts");
                tx.send((running.addr, running.engine.clone())).unwrap();
                let _ = stop_rx.await;
                running.task.abort();
            });
        });
        let (addr, engine) = rx.recv().expect("server reports its address");
        Server { url: format!("http://{addr}"), engine, stop: Some(stop_tx), thread: Some(thread) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `POST /kms/messages` with one compact message; the compact answer.
#[allow(dead_code)]
pub async fn post_message(url: &str, body: String) -> String {
    reqwest::Client::new()
        .post(format!("{url}/kms/messages"))
        .header("content-type", "application/jose")
        .body(body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `GET /kms/info` as a client pins it (the domain from its `uri`).
#[allow(dead_code)]
pub async fn kms_info(url: &str) -> kms_protocol::KmsInfo {
    let v: serde_json::Value = reqwest::get(format!("{url}/kms/info")).await.unwrap().json().await.unwrap();
    let jwk: jose::Jwk = serde_json::from_value(v["key"].clone()).unwrap();
    let domain = v["uri"].as_str().unwrap().trim_start_matches("kms://").to_string();
    kms_protocol::KmsInfo { domain, key: jwk.to_rsa_public().unwrap() }
}

/// A session over `POST /kms/messages`.
#[allow(dead_code)]
pub async fn http_session(
    url: &str,
    info: &kms_protocol::KmsInfo,
    ci: &kms_protocol::ClientInfo,
) -> kms_protocol::Session {
    let pending = kms_protocol::begin_handshake(info, ci.clone()).unwrap();
    let answer = post_message(url, pending.wrapped.clone()).await;
    pending.finish(info, &answer).unwrap()
}

/// One request in a session (a fresh requestId), over HTTP.
#[allow(dead_code)]
pub async fn call(
    url: &str,
    info: &kms_protocol::KmsInfo,
    s: &kms_protocol::Session,
    mut req: kms_protocol::Request,
) -> kms_protocol::Response {
    req.request_id = uuid::Uuid::new_v4().to_string();
    let answer = post_message(url, s.wrap(&req).unwrap()).await;
    s.unwrap(info, &answer, &req.request_id).unwrap()
}

/// `req` with the members of `body` (a JSON object) added.
#[allow(dead_code)]
pub fn with_body(req: kms_protocol::Request, body: serde_json::Value) -> kms_protocol::Request {
    let mut v = serde_json::to_value(&req).unwrap();
    v.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
    serde_json::from_value(v).unwrap()
}
