//! Test support: an IdP on an ephemeral loopback port with a throwaway data
//! directory, and small HTTP helpers.

#![allow(dead_code)]

use base64::Engine as _;
use kms_identity::{IdentityConfig, IssuerConfig, Verifier};
use reqwest::StatusCode;
use serde_json::Value;

pub const CORE: &str = "https://core.acme.test";
pub const KMS: &str = "kms://acme.test";
pub const CLI: &str = "custos-cli";
pub const ALICE: &str = "alice@acme.test";
pub const ALICE_PASSWORD: &str = "alice-Pa55word-zq81";
pub const BOB: &str = "bob@acme.test";
pub const BOB_PASSWORD: &str = "bob-Pa55word-xk42";
pub const BOT: &str = "pollbot";
pub const BOT_SECRET: &str = "pollbot-S3cret-vw93";
pub const BOT_SUBJECT: &str = "pollbot@acme.test";
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The configuration the tests use, plus `extra` top-level settings.
pub fn toml(data_dir: &std::path::Path, extra: &str) -> String {
    format!(
        r#"
{listen}
data_dir = {dir:?}
device_poll_interval_secs = 1
audiences = ["{CORE}", "{KMS}"]
public_clients = ["{CLI}", "other-cli"]
{extra}

[[users]]
id = "{ALICE}"
password = "{ALICE_PASSWORD}"
name = "Alice Example"

[[users]]
id = "{BOB}"
password = "{BOB_PASSWORD}"

[[clients]]
client_id = "{BOT}"
client_secret = "{BOT_SECRET}"
subject = "{BOT_SUBJECT}"
"#,
        dir = data_dir.display().to_string(),
        listen = if extra.contains("listen =") { "" } else { "listen = \"127.0.0.1:0\"" },
    )
}

pub struct TestIdp {
    pub running: idp::Running,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl TestIdp {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    pub async fn start_with(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let running = start_in(dir.path(), extra).await;
        Self { running, dir, http: reqwest::Client::new() }
    }

    pub fn issuer(&self) -> &str {
        &self.running.issuer
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.issuer)
    }

    /// POSTs a form; returns the status, the body as JSON (Null if not JSON) and the raw body.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Reply {
        let body = encode(form);
        let r = self
            .http
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        Reply::read(r).await
    }

    pub async fn token(&self, form: &[(&str, &str)]) -> Reply {
        self.post("/token", form).await
    }

    /// A password-grant token response for alice (asserting success).
    pub async fn login(&self, user: &str, password: &str, audience: &str) -> Value {
        let r = self
            .token(&[
                ("grant_type", "password"),
                ("client_id", CLI),
                ("username", user),
                ("password", password),
                ("audience", audience),
            ])
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json
    }

    /// A verifier for `audience` that trusts this IdP through discovery.
    pub fn verifier(&self, audience: &str) -> Verifier {
        Verifier::new(IdentityConfig::new(audience, vec![IssuerConfig::new(self.issuer(), "acme.test")])).unwrap()
    }
}

pub async fn start_in(dir: &std::path::Path, extra: &str) -> idp::Running {
    let cfg = idp::Config::from_toml(&toml(dir, extra)).unwrap();
    idp::start(cfg).await.unwrap()
}

pub fn encode(form: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Reply {
    pub async fn read(r: reqwest::Response) -> Self {
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self { status, headers, json, text }
    }

    /// Asserts an OAuth error with this status and code, and returns self.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Self {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(self.json["error"], code, "{}", self.text);
        assert!(self.json["error_description"].is_string(), "{}", self.text);
        assert!(self.headers.get("content-type").unwrap().to_str().unwrap().starts_with("application/json"));
        assert_eq!(self.headers.get("cache-control").unwrap(), "no-store");
        self
    }
}

/// The decoded JSON of a JWT's header (0) or claims (1).
pub fn jwt_part(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}
