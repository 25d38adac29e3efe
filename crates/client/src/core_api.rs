//! A thin client of the core's HTTP API (see the core's `/openapi.json`).
//! Everything it sends is ciphertext or routing metadata.
//!
//! Crate-private: what the core says is checked by the rest of the SDK
//! before anyone sees it. Its records are in [`crate::wire`].

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::tokens::TokenSource;
pub(crate) use crate::wire::CoreFile;
pub use crate::wire::{CoreComplianceSpace, CoreEvent, CoreMember, CoreSpace};

/// Largest JSON answer read from the core (pages of events are well under).
pub(crate) const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// The core's HTTP API with the caller's tokens.
#[derive(Clone)]
pub(crate) struct CoreApi {
    http: reqwest::Client,
    base: String,
    audience: String,
    tokens: Arc<dyn TokenSource>,
    /// Where [`CoreApi::events`], [`CoreApi::file`] and
    /// [`CoreApi::get_chunk`] read: `/v1` (members) or `/v1/compliance`.
    reads: &'static str,
}

/// The core's error body `{"error": code, "message": …}`; empty strings if not that shape.
pub(crate) fn error_fields(body: &[u8]) -> (String, String) {
    #[derive(Deserialize)]
    struct E {
        error: String,
        #[serde(default)]
        message: String,
    }
    serde_json::from_slice::<E>(body).map(|e| (e.error, e.message)).unwrap_or_default()
}

impl CoreApi {
    /// A client of the core at `base` (e.g. `http://127.0.0.1:7080`).
    pub fn new(base: &str, audience: &str, tokens: Arc<dyn TokenSource>) -> Self {
        Self {
            http: crate::http_client(),
            base: base.trim_end_matches('/').to_string(),
            audience: audience.to_string(),
            tokens,
            reads: "/v1",
        }
    }

    /// The same client reading as one of the org's compliance readers: its
    /// [`CoreApi::events`], [`CoreApi::file`] and [`CoreApi::get_chunk`] go
    /// to `/v1/compliance/…` (read only; spaces with a member of the
    /// reader's org). Writes are unaffected, and the core refuses them to
    /// non-members.
    pub fn for_compliance(&self) -> Self {
        Self { reads: "/v1/compliance", ..self.clone() }
    }

    /// The core's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A fresh token for the core.
    pub async fn token(&self) -> Result<zeroize::Zeroizing<String>> {
        self.tokens.token(&self.audience).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<bytes::Bytes> {
        self.send_capped(req, MAX_ANSWER).await
    }

    /// Sends; reads at most `cap` bytes of answer (a hostile core cannot make
    /// us buffer without bound). A 401 is retried once with a fresh token.
    async fn send_capped(&self, req: reqwest::RequestBuilder, cap: usize) -> Result<bytes::Bytes> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let this = req.try_clone().ok_or_else(|| Error::Invalid("a request body that cannot be retried".into()))?;
            let r =
                this.bearer_auth(token.as_str()).send().await.map_err(|e| Error::CoreUnreachable(crate::why(&e)))?;
            let status = r.status();
            let body = crate::read_capped(r, cap).await.map_err(|e| match e {
                Some(why) => Error::CoreUnreachable(format!("the answer broke off ({why})")),
                None => Error::Tampered(format!("the core's answer is larger than {cap} bytes")),
            })?;
            if status.is_success() {
                return Ok(body);
            }
            if status.as_u16() == 401 {
                self.tokens.invalidate(&self.audience);
                if attempt == 0 {
                    continue;
                }
                let (_, message) = error_fields(&body);
                return Err(Error::Auth(format!("the core refused the token ({message}); log in again")));
            }
            let (code, message) = error_fields(&body);
            return Err(Error::Core { status: status.as_u16(), code, message });
        }
        unreachable!("the loop returns")
    }

    async fn json<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let body = self.send(req).await?;
        serde_json::from_slice(&body).map_err(|e| Error::Core {
            status: 200,
            code: "bad_answer".into(),
            message: format!("the core's answer is not what its API describes ({e})"),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /v1/me`.
    pub async fn me(&self) -> Result<Value> {
        self.json(self.http.get(self.url("/v1/me"))).await
    }

    /// `POST /v1/spaces`.
    pub async fn create_space(&self, resource_uri: &str, title: &str, title_key: &str) -> Result<CoreSpace> {
        let body = json!({"resource_uri": resource_uri, "title": {"ciphertext": title, "key_uri": title_key}});
        self.json(self.http.post(self.url("/v1/spaces")).json(&body)).await
    }

    /// `GET /v1/spaces`: `(space, role, read_seq)`.
    pub async fn spaces(&self) -> Result<Vec<(CoreSpace, String, i64)>> {
        #[derive(Deserialize)]
        struct Summary {
            space: CoreSpace,
            role: String,
            #[serde(default)]
            read_seq: i64,
        }
        #[derive(Deserialize)]
        struct List {
            spaces: Vec<Summary>,
        }
        let l: List = self.json(self.http.get(self.url("/v1/spaces"))).await?;
        Ok(l.spaces.into_iter().map(|s| (s.space, s.role, s.read_seq)).collect())
    }

    /// `GET /v1/spaces/{id}`: the space, your role and its members.
    pub async fn space(&self, id: &str) -> Result<(CoreSpace, String, Vec<CoreMember>)> {
        #[derive(Deserialize)]
        struct One {
            space: CoreSpace,
            role: String,
            members: Vec<CoreMember>,
        }
        let o: One = self.json(self.http.get(self.url(&format!("/v1/spaces/{}", seg(id))))).await?;
        Ok((o.space, o.role, o.members))
    }

    /// `GET /v1/compliance/spaces/{id}`: a space, its members and former
    /// members, for one of the org's compliance readers.
    pub async fn compliance_space(&self, id: &str) -> Result<CoreComplianceSpace> {
        self.json(self.http.get(self.url(&format!("/v1/compliance/spaces/{}", seg(id))))).await
    }

    /// `POST /v1/spaces/{id}/members`.
    pub async fn add_member(&self, space: &str, user: &str, role: &str) -> Result<()> {
        let body = json!({"user_id": user, "role": role});
        self.send(self.http.post(self.url(&format!("/v1/spaces/{}/members", seg(space)))).json(&body)).await.map(drop)
    }

    /// `DELETE /v1/spaces/{id}/members/{user}`.
    pub async fn remove_member(&self, space: &str, user: &str) -> Result<()> {
        self.send(self.http.delete(self.url(&format!("/v1/spaces/{}/members/{}", seg(space), seg(user)))))
            .await
            .map(drop)
    }

    /// `POST /v1/spaces/{id}/events`.
    pub async fn post_event(&self, space: &str, body: &Value) -> Result<CoreEvent> {
        self.json(self.http.post(self.url(&format!("/v1/spaces/{}/events", seg(space)))).json(body)).await
    }

    /// `PUT /v1/files/{id}/preview`: a sealed preview (the org's preview services).
    pub async fn put_preview(&self, file: &str, ciphertext: &str, key_uri: &str) -> Result<()> {
        let url = self.url(&format!("/v1/files/{}/preview", seg(file)));
        let body = serde_json::json!({"ciphertext": ciphertext, "key_uri": key_uri});
        self.send_capped(self.http.put(url).json(&body), MAX_ANSWER).await.map(drop)
    }

    /// `GET /v1/files/{id}/preview`: (ciphertext, key URI, creator).
    pub async fn preview(&self, file: &str) -> Result<(String, String, String)> {
        let v: Value = self.json(self.http.get(self.url(&format!("/v1/files/{}/preview", seg(file))))).await?;
        let field = |k: &str| {
            v[k].as_str().map(str::to_string).ok_or_else(|| Error::Tampered(format!("the preview has no {k}")))
        };
        Ok((field("ciphertext")?, field("key_uri")?, field("creator")?))
    }

    /// `PUT /v1/spaces/{id}/events/{event}/index`: a message's blinded search tokens.
    pub async fn index_event(&self, space: &str, event: &str, key_uri: &str, tokens: &[String]) -> Result<()> {
        let url = self.url(&format!("/v1/spaces/{}/events/{}/index", seg(space), seg(event)));
        self.send(self.http.put(url).json(&serde_json::json!({"key_uri": key_uri, "tokens": tokens}))).await.map(drop)
    }

    /// `POST /v1/spaces/{id}/index`: several messages' tokens in one
    /// transaction, as `{event, key_uri, tokens}` items (at most 200).
    pub async fn index_events(&self, space: &str, items: &[Value]) -> Result<()> {
        let url = self.url(&format!("/v1/spaces/{}/index", seg(space)));
        self.send(self.http.post(url).json(&serde_json::json!({"items": items}))).await.map(drop)
    }

    /// `POST /v1/spaces/{id}/search`: candidate events for blinded queries (one per key version).
    pub async fn search(&self, space: &str, queries: &Value, limit: u32) -> Result<Vec<CoreEvent>> {
        #[derive(Deserialize)]
        struct Page {
            events: Vec<CoreEvent>,
        }
        let url = self.url(&format!("/v1/spaces/{}/search", seg(space)));
        let page: Page =
            self.json(self.http.post(url).json(&serde_json::json!({"queries": queries, "limit": limit}))).await?;
        Ok(page.events)
    }

    /// `GET /v1/spaces/{id}/search/keys`: the key versions a space's tokens are under.
    pub async fn search_keys(&self, space: &str) -> Result<Vec<String>> {
        let v: Value = self.json(self.http.get(self.url(&format!("/v1/spaces/{}/search/keys", seg(space))))).await?;
        Ok(v["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["key_uri"].as_str().map(str::to_string))
            .collect())
    }

    /// `PUT /v1/webhook`: where the core POSTs your spaces' events. The answer's
    /// `secret` (shown only now) verifies each request.
    pub async fn set_webhook(&self, url: &str) -> Result<Value> {
        self.json(self.http.put(self.url("/v1/webhook")).json(&serde_json::json!({ "url": url }))).await
    }

    /// `DELETE /v1/webhook`.
    pub async fn delete_webhook(&self) -> Result<()> {
        self.send(self.http.delete(self.url("/v1/webhook"))).await.map(drop)
    }

    /// `GET /v1/spaces/{id}/events` (or `/v1/compliance/…`, see [`CoreApi::for_compliance`]).
    pub async fn events(
        &self,
        space: &str,
        after: Option<i64>,
        before: Option<i64>,
        limit: Option<u32>,
    ) -> Result<Vec<CoreEvent>> {
        #[derive(Deserialize)]
        struct Page {
            events: Vec<CoreEvent>,
        }
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(a) = after {
            q.push(("after", a.to_string()));
        }
        if let Some(b) = before {
            q.push(("before", b.to_string()));
        }
        if let Some(l) = limit {
            q.push(("limit", l.to_string()));
        }
        let p: Page = self
            .json(self.http.get(self.url(&format!("{}/spaces/{}/events", self.reads, seg(space)))).query(&q))
            .await?;
        Ok(p.events)
    }

    /// `PUT /v1/spaces/{id}/read-marker`.
    pub async fn set_read_marker(&self, space: &str, seq: i64) -> Result<()> {
        self.send(self.http.put(self.url(&format!("/v1/spaces/{}/read-marker", seg(space)))).json(&json!({"seq": seq})))
            .await
            .map(drop)
    }

    /// `POST /v1/spaces/{id}/files`.
    pub async fn create_file(
        &self,
        space: &str,
        size: u64,
        chunk_size: u64,
        meta: &str,
        key_uri: &str,
    ) -> Result<CoreFile> {
        let body = json!({"size": size, "chunk_size": chunk_size, "meta": {"ciphertext": meta, "key_uri": key_uri}});
        self.json(self.http.post(self.url(&format!("/v1/spaces/{}/files", seg(space)))).json(&body)).await
    }

    /// `GET /v1/files/{id}` (or `/v1/compliance/…`).
    pub async fn file(&self, id: &str) -> Result<CoreFile> {
        self.json(self.http.get(self.url(&format!("{}/files/{}", self.reads, seg(id))))).await
    }

    /// `PUT /v1/files/{id}/chunks/{index}`.
    pub async fn put_chunk(&self, id: &str, index: u64, body: bytes::Bytes) -> Result<()> {
        self.send(self.http.put(self.url(&format!("/v1/files/{}/chunks/{index}", seg(id)))).body(body)).await.map(drop)
    }

    /// `GET /v1/files/{id}/chunks/{index}` (or `/v1/compliance/…`).
    pub async fn get_chunk(&self, id: &str, index: u64, max: usize) -> Result<bytes::Bytes> {
        let url = self.url(&format!("{}/files/{}/chunks/{index}", self.reads, seg(id)));
        self.send_capped(self.http.get(url), max.max(1024)).await
    }

    /// `POST /v1/files/{id}/complete`: the `file_ready` event.
    pub async fn complete_file(&self, id: &str) -> Result<CoreEvent> {
        self.json(self.http.post(self.url(&format!("/v1/files/{}/complete", seg(id))))).await
    }
}

/// One path segment, percent-encoded.
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
