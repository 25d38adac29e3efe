//! An engine over a temporary SQLite store, a fake token issuer, and a client
//! that speaks the protocol through `Engine::handle`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use kms::auth::{AuthError, AuthenticatedUser, Authenticator};
use kms::crypto::Cmk;
use kms::limit::RateLimiter;
use kms::{Engine, EngineConfig};
use kms_protocol::{
    begin_handshake, ClientInfo, Credential, KmsInfo, Method, ProtocolError, Request, Response, Session,
};
use serde_json::Value;

pub const DOMAIN: &str = "kms.acme.example";
pub const ORG: &str = "acme.example";

/// Tokens `tok-<name>` are users `<name>@acme.example`; `expired` is refused.
pub struct FakeAuth;

#[async_trait]
impl Authenticator for FakeAuth {
    async fn authenticate(&self, token: &str) -> Result<AuthenticatedUser, AuthError> {
        match token.strip_prefix("tok-") {
            Some("expired") => Err(AuthError("the token has expired".into())),
            Some(name) if !name.is_empty() => {
                // `svc-<name>`: a service's client-credentials token.
                let (name, client_credentials) = match name.strip_prefix("svc-") {
                    Some(n) => (n, true),
                    None => (name, false),
                };
                Ok(AuthenticatedUser {
                    user_id: format!("{name}@{ORG}"),
                    expires_at: i64::MAX / 2000,
                    client_credentials,
                })
            }
            _ => Err(AuthError("the token is not valid".into())),
        }
    }
}

pub struct Harness {
    pub engine: Arc<Engine>,
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn kms_store::Store>,
}

pub async fn harness_with(cfg: impl FnOnce(&mut EngineConfig)) -> Harness {
    harness_full(cfg, None).await
}

pub async fn harness_full(
    cfg: impl FnOnce(&mut EngineConfig),
    roots: Option<kms::service_auth::TrustRoots>,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("kms.db").display());
    let store = kms_store::open(&url).await.unwrap();
    let cmk = Cmk::ephemeral().unwrap();
    let key = jose::RsaPrivateKey::generate(2048, Some("static".into())).unwrap();
    let mut c = EngineConfig::new(DOMAIN, ORG);
    c.admins = vec![format!("admin@{ORG}")];
    cfg(&mut c);
    let mut engine =
        Engine::open(c, store.clone(), key, cmk, Arc::new(FakeAuth), RateLimiter::unlimited()).await.unwrap();
    if let Some(r) = roots {
        engine = engine.with_service_roots(r);
    }
    Harness { engine: Arc::new(engine), dir, store }
}

/// An engine that audits into `<dir>/audit.db` (checkpoints signed with its static key).
pub async fn harness_audited() -> (Harness, Arc<audit::AuditLog>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("kms.db").display());
    let store = kms_store::open(&url).await.unwrap();
    let cmk = Cmk::ephemeral().unwrap();
    let key = jose::RsaPrivateKey::generate(2048, Some("static".into())).unwrap();
    let signer_key = jose::RsaPrivateKey::from_pkcs8_der(&key.to_pkcs8_der(), Some("static".into())).unwrap();
    let signer = Arc::new(kms::audit::StaticKeySigner(kms_protocol::ServerKey::new(signer_key, DOMAIN).unwrap()));
    let audit_url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let log = Arc::new(audit::AuditLog::open(&audit_url, "test-node", signer).await.unwrap());
    let mut c = EngineConfig::new(DOMAIN, ORG);
    c.admins = vec![format!("admin@{ORG}")];
    let engine = Engine::open(c, store.clone(), key, cmk, Arc::new(FakeAuth), RateLimiter::unlimited())
        .await
        .unwrap()
        .with_audit(log.clone());
    (Harness { engine: Arc::new(engine), dir, store }, log)
}

pub async fn harness() -> Harness {
    harness_with(|_| {}).await
}

/// A protocol client talking to the engine in-process.
pub struct Client {
    pub engine: Arc<Engine>,
    pub kms: KmsInfo,
    pub info: ClientInfo,
    pub session: Session,
}

pub fn client_info(user: &str, client: &str) -> ClientInfo {
    ClientInfo { client_id: client.into(), credential: Credential::bearer(format!("tok-{user}")) }
}

impl Client {
    pub async fn connect(engine: &Arc<Engine>, user: &str) -> Client {
        Self::try_connect(engine, client_info(user, &format!("dev-{user}"))).await.unwrap()
    }

    pub async fn try_connect(engine: &Arc<Engine>, info: ClientInfo) -> Result<Client, ProtocolError> {
        let kms = engine.server_key().info();
        let pending = begin_handshake(&kms, info.clone())?;
        let answer = engine.handle(&pending.wrapped, None).await.unwrap();
        let session = pending.finish(&kms, &answer)?;
        Ok(Client { engine: engine.clone(), kms, info, session })
    }

    pub fn request(&self, method: Method, uri: &str, body: Value) -> Request {
        let mut v = serde_json::to_value(Request::new(method, uri, Some(self.info.clone()))).unwrap();
        if let (Value::Object(m), Value::Object(b)) = (&mut v, body) {
            m.extend(b);
        }
        serde_json::from_value(v).unwrap()
    }

    /// Sends a request; returns the response (any status).
    pub async fn send(&self, req: &Request) -> Result<Response, ProtocolError> {
        let wrapped = self.session.wrap(req)?;
        let answer = self.engine.handle(&wrapped, None).await.unwrap();
        self.session.unwrap(&self.kms, &answer, &req.request_id)
    }

    pub async fn call(&self, method: Method, uri: &str, body: Value) -> Response {
        self.send(&self.request(method, uri, body)).await.unwrap()
    }

    pub async fn ok(&self, method: Method, uri: &str, body: Value) -> Response {
        let r = self.call(method, uri, body).await;
        assert!(r.status.is_success(), "{method:?} {uri}: {:?} {:?}", r.status, r.reason);
        r
    }

    pub async fn create_keys(&self, n: u32) -> Vec<kms_protocol::KeyObject> {
        self.ok(Method::Create, "/keys", serde_json::json!({"count": n})).await.keys.unwrap()
    }

    pub async fn create_resource(
        &self,
        auth_ids: &[&str],
        key_uris: &[String],
    ) -> kms_protocol::message::ResourceObject {
        self.ok(Method::Create, "/resources", serde_json::json!({"authIds": auth_ids, "keyUris": key_uris}))
            .await
            .resource
            .unwrap()
    }
}

pub fn statuses(r: &Response) -> (u16, String) {
    (r.status.0, r.reason.clone().unwrap_or_default())
}

pub type Map = HashMap<String, String>;

/// Replaces the org policy directly (engine tests; the admin API is tested separately).
pub async fn set_policy(engine: &Engine, json: Value) {
    let policy: kms_protocol::policy::OrgPolicy = serde_json::from_value(json).unwrap();
    let policy = policy.canonicalize(DOMAIN, ORG).unwrap();
    let current = engine.policies().current().await.unwrap().version as u64;
    if engine.policies().update(policy, current, kms::now_ms()).await.is_err() {
        panic!("policy update failed");
    }
}

/// An engine ("node") over `store` whose CMK is `cmk` (with its backend, if
/// it has one), with `static_key` (several nodes share one) and the bootstrap admin.
pub async fn engine_with_cmk(
    store: Arc<dyn kms_store::Store>,
    cmk: Cmk,
    static_key: &jose::RsaPrivateKey,
) -> Arc<Engine> {
    let key = jose::RsaPrivateKey::from_pkcs8_der(&static_key.to_pkcs8_der(), Some("static".into())).unwrap();
    let mut c = EngineConfig::new(DOMAIN, ORG);
    c.admins = vec![format!("admin@{ORG}")];
    Arc::new(Engine::open(c, store, key, cmk, Arc::new(FakeAuth), RateLimiter::unlimited()).await.unwrap())
}
