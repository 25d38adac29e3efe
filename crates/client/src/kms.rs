//! The client's side of the KMS: the pinned key, the secure channel (with
//! renewal on expiry and on a verified 499 reset), the transport (direct
//! HTTP or the core's relay), and a bounded key cache that a reset empties.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kms_protocol::channel::{begin_handshake, Session};
use kms_protocol::message::{
    ClientInfo, Credential, Method, Request, RequestBody, ResourceObject, Response,
};
use kms_protocol::uri::KmsUri;
use kms_protocol::{ProtocolError, Status};

use crate::error::{Error, Result};
pub use crate::engine::key::ContentKey;
pub use crate::engine::pin::KmsPin;
use crate::tokens::TokenSource;

/// Renew the channel when it has less than this left.
const SESSION_MARGIN: Duration = Duration::from_secs(60);
/// How long a content key stays cached: a key the KMS stops releasing (a
/// revoked service, a removed member) leaves this process within this time.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(15 * 60);
/// Default number of content keys kept in memory.
pub const DEFAULT_KEY_CACHE: usize = 4096;

/// How KMS messages travel.
#[derive(Debug, Clone)]
pub enum Route {
    /// `POST <url>/kms/messages` straight to the KMS.
    Direct {
        /// The KMS's base URL.
        url: String,
    },
    /// Through the core: `POST <core>/kms/<kms domain>/messages`. The core
    /// cannot read or forge the messages; it can only drop them.
    Relay {
        /// The core's base URL.
        core_url: String,
    },
}

/// One user's (or service's) connection to its KMS.
pub struct KmsClient {
    pin: KmsPin,
    route: Route,
    http: reqwest::Client,
    tokens: Arc<dyn TokenSource>,
    kms_audience: String,
    core_audience: String,
    client_id: String,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    keys: Mutex<lru::LruCache<String, (ContentKey, std::time::Instant)>>,
    on_behalf_of: Option<String>,
    case_id: Option<String>,
}

impl std::fmt::Debug for KmsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsClient")
            .field("domain", &self.pin.domain)
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

/// What a [`KmsClient`] needs.
pub struct KmsOptions {
    /// The pinned KMS.
    pub pin: KmsPin,
    /// How to reach it.
    pub route: Route,
    /// The KMS's token audience.
    pub kms_audience: String,
    /// The core's token audience (for the relay).
    pub core_audience: String,
    /// This device's client id.
    pub client_id: String,
    /// Content keys kept in memory.
    pub key_cache: usize,
}

impl KmsClient {
    /// A client; no handshake happens until the first request.
    pub fn new(opts: KmsOptions, tokens: Arc<dyn TokenSource>) -> Self {
        let cap = NonZeroUsize::new(opts.key_cache.max(1)).expect("at least one");
        Self {
            pin: opts.pin,
            route: opts.route,
            http: crate::http_client(),
            tokens,
            kms_audience: opts.kms_audience,
            core_audience: opts.core_audience,
            client_id: opts.client_id,
            session: tokio::sync::Mutex::new(None),
            keys: Mutex::new(lru::LruCache::new(cap)),
            on_behalf_of: None,
            case_id: None,
        }
    }

    /// Compliance: every request's credential names `on_behalf_of` (the user
    /// whose authorizations apply; the token still proves who asks: a
    /// compliance officer of the org), and every request carries `case_id`
    /// (the approved compliance case it serves, `kms://<d>/cases/<id>` or a
    /// bare id) when given. The KMS allows such requests to read only, and
    /// audits each release with officer, subject and case. Set before the
    /// first request (the channel is opened with this credential).
    pub fn with_compliance(mut self, on_behalf_of: Option<String>, case_id: Option<String>) -> Self {
        self.on_behalf_of = on_behalf_of.filter(|s| !s.is_empty());
        self.case_id = case_id.filter(|s| !s.is_empty());
        self
    }

    /// The user whose authorizations this client's requests use, when not its own.
    pub fn on_behalf_of(&self) -> Option<&str> {
        self.on_behalf_of.as_deref()
    }

    /// The compliance case its requests name, if any.
    pub fn case_id(&self) -> Option<&str> {
        self.case_id.as_deref()
    }

    /// The pinned KMS domain.
    pub fn domain(&self) -> &str {
        &self.pin.domain
    }

    /// Forgets the channel and every cached key (after a reset, a
    /// revocation, or on request).
    pub async fn reset(&self) {
        *self.session.lock().await = None;
        self.keys.lock().expect("not poisoned").clear();
    }

    /// How many content keys are cached.
    pub fn cached_keys(&self) -> usize {
        self.keys.lock().expect("not poisoned").len()
    }

    async fn credential(&self) -> Result<ClientInfo> {
        let token = self.tokens.token(&self.kms_audience).await?;
        let credential =
            Credential { on_behalf_of: self.on_behalf_of.clone(), ..Credential::bearer(token.to_string()) };
        Ok(ClientInfo { client_id: self.client_id.clone(), credential })
    }

    /// Sends one compact message; returns the compact answer.
    async fn transport(&self, compact: &str) -> Result<String> {
        let unreachable = |detail: String| Error::KmsUnreachable { domain: self.pin.domain.clone(), detail };
        let req = match &self.route {
            Route::Direct { url } => self.http.post(format!("{}/kms/messages", url.trim_end_matches('/'))),
            Route::Relay { core_url } => {
                let token = self.tokens.token(&self.core_audience).await?;
                self.http
                    .post(format!("{}/kms/{}/messages", core_url.trim_end_matches('/'), self.pin.domain))
                    .bearer_auth(token.as_str())
            }
        };
        let r = req
            .header("content-type", "application/jose")
            .body(compact.to_string())
            .send()
            .await
            .map_err(|e| unreachable(crate::why(&e)))?;
        let status = r.status();
        // KMS messages are small (the protocol caps them); a batch at most a few.
        let body = crate::read_capped(r, 4 * kms_protocol::channel::MAX_MESSAGE_LEN).await.map_err(|e| match e {
            Some(why) => unreachable(format!("the answer broke off ({why})")),
            None => Error::KmsKeyMismatch { domain: self.pin.domain.clone() },
        })?;
        if status.is_success() {
            return String::from_utf8(body.to_vec())
                .map_err(|_| Error::KmsKeyMismatch { domain: self.pin.domain.clone() });
        }
        // The relay's own errors are JSON; the KMS's transport errors are bare.
        let (code, message) = crate::core_api::error_fields(&body);
        match status.as_u16() {
            502..=504 => Err(unreachable(if message.is_empty() { format!("HTTP {status}") } else { message })),
            401 if matches!(self.route, Route::Relay { .. }) => {
                self.tokens.invalidate(&self.core_audience);
                Err(Error::Core { status: 401, code, message })
            }
            429 => Err(unreachable("the KMS is throttling requests (HTTP 429); try again shortly".into())),
            s => Err(Error::Core { status: s, code, message }),
        }
    }

    async fn session(&self) -> Result<Arc<Session>> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref() {
            if s.expires() - time::OffsetDateTime::now_utc() > SESSION_MARGIN {
                return Ok(s.clone());
            }
        }
        let info = self.pin.info();
        let pending = begin_handshake(&info, self.credential().await?).map_err(Error::Protocol)?;
        let answer = self.transport(&pending.wrapped).await?;
        let session = match pending.finish(&info, &answer) {
            Ok(s) => Arc::new(s),
            Err(e) => return Err(self.protocol_error(e)),
        };
        tracing::debug!(kms = %self.pin.domain, "KMS channel established");
        *slot = Some(session.clone());
        Ok(session)
    }

    fn protocol_error(&self, e: ProtocolError) -> Error {
        match e {
            // Signed by someone else, or not a JWS/JWE we can read under the pin.
            ProtocolError::Jose(jose::Error::BadSignature)
            | ProtocolError::Jose(jose::Error::DecryptionFailed)
            | ProtocolError::WrongContext { .. }
            | ProtocolError::KidMismatch => Error::KmsKeyMismatch { domain: self.pin.domain.clone() },
            ProtocolError::Status { status, reason } => status_error(status, reason),
            other => Error::Protocol(other),
        }
    }

    /// Sends a request; on an expired channel or a verified reset, drops the
    /// channel and the key cache and tries once more on a new channel.
    pub async fn call(&self, method: Method, uri: &str, body: RequestBody) -> Result<Response> {
        let mut renewed = false;
        let mut fresh_token = false;
        loop {
            let session = self.session().await?;
            let mut req = Request::new(method, uri, Some(self.credential().await?));
            req.body = body.clone();
            if req.body.case_id.is_none() {
                req.body.case_id = self.case_id.clone();
            }
            let wrapped = session.wrap(&req).map_err(|e| self.protocol_error(e))?;
            let answer = self.transport(&wrapped).await?;
            match session.unwrap(&self.pin.info(), &answer, &req.request_id) {
                Ok(resp) if resp.status.is_success() => return Ok(resp),
                Ok(resp) if resp.status == Status::UNAUTHORIZED && !fresh_token => {
                    // An expired or refused token: once more with a fresh one.
                    self.tokens.invalidate(&self.kms_audience);
                    fresh_token = true;
                }
                Ok(resp) => return Err(status_error(resp.status, resp.reason.unwrap_or_default())),
                Err(ProtocolError::Reset(_) | ProtocolError::Expired) if !renewed => {
                    tracing::debug!(kms = %self.pin.domain, "KMS reset the channel; renewing and dropping cached keys");
                    self.reset().await;
                    renewed = true;
                }
                Err(e) => return Err(self.protocol_error(e)),
            }
        }
    }

    /// Creates `count` unbound keys.
    pub async fn create_keys(&self, count: u32) -> Result<Vec<ContentKey>> {
        let resp = self.call(Method::Create, "/keys", RequestBody { count: Some(count), ..Default::default() }).await?;
        let keys =
            resp.keys.ok_or_else(|| Error::Kms { status: 500, reason: "the KMS answered without keys".into() })?;
        if keys.len() != count as usize {
            return Err(Error::Kms { status: 500, reason: "the KMS answered with the wrong number of keys".into() });
        }
        keys.iter().map(ContentKey::from_object).collect()
    }

    /// Creates a resource with `auth_ids` authorized and `keys` bound to it.
    pub async fn create_resource(&self, auth_ids: &[String], keys: &[KmsUri]) -> Result<ResourceObject> {
        let body = RequestBody {
            auth_ids: Some(auth_ids.to_vec()),
            key_uris: Some(keys.iter().map(|k| k.to_string()).collect()),
            ..Default::default()
        };
        let resp = self.call(Method::Create, "/resources", body).await?;
        resp.resource.ok_or_else(|| Error::Kms { status: 500, reason: "the KMS answered without the resource".into() })
    }

    /// Binds an unbound key of ours to `resource`.
    pub async fn bind(&self, key: &KmsUri, resource: &KmsUri) -> Result<ContentKey> {
        let body = RequestBody { resource_uri: Some(resource.to_string()), ..Default::default() };
        let resp = self.call(Method::Update, &key.to_string(), body).await?;
        let k =
            resp.key.ok_or_else(|| Error::Kms { status: 500, reason: "the KMS answered without the key".into() })?;
        let k = ContentKey::from_object(&k)?;
        if k.resource.as_ref() != Some(resource) {
            return Err(Error::Tampered("the KMS bound the key to another resource".into()));
        }
        self.keys.lock().expect("not poisoned").put(k.uri.to_string(), (k.clone(), std::time::Instant::now()));
        Ok(k)
    }

    /// A content key by URI (cached).
    pub async fn key(&self, uri: &str) -> Result<ContentKey> {
        // Another org's key too: our KMS fetches it from that org's KMS (federation).
        let uri = KmsUri::parse_absolute(uri).map_err(|e| Error::Tampered(format!("key URI: {e}")))?;
        {
            let mut cache = self.keys.lock().expect("not poisoned");
            match cache.get(&uri.to_string()) {
                Some((k, at)) if at.elapsed() < KEY_CACHE_TTL => return Ok(k.clone()),
                Some(_) => {
                    cache.pop(&uri.to_string());
                }
                None => {}
            }
        }
        let resp = self.call(Method::Retrieve, &uri.to_string(), RequestBody::default()).await?;
        let k =
            resp.key.ok_or_else(|| Error::Kms { status: 500, reason: "the KMS answered without the key".into() })?;
        let k = ContentKey::from_object(&k)?;
        if k.uri != uri {
            return Err(Error::Tampered("the KMS answered with another key than asked".into()));
        }
        self.keys.lock().expect("not poisoned").put(uri.to_string(), (k.clone(), std::time::Instant::now()));
        Ok(k)
    }

    /// The newest key bound to `resource` (not cached: rotation must be seen).
    pub async fn newest_key(&self, resource: &KmsUri) -> Result<ContentKey> {
        Ok(self.newest_key_and_hint(resource).await?.0)
    }

    /// The newest key bound to `resource`, and the KMS's `rekeyAfter` hint:
    /// when set and later than the key's bind date, someone who could read
    /// the space lost that right (a revoked service, a disabled device), so
    /// the next message must go under a fresh key.
    pub async fn newest_key_and_hint(&self, resource: &KmsUri) -> Result<(ContentKey, Option<time::OffsetDateTime>)> {
        let uri = format!("{resource}/keys");
        let resp = self.call(Method::Retrieve, &uri, RequestBody { count: Some(1), ..Default::default() }).await?;
        let hint = resp.rekey_after;
        let k = ContentKey::newest_of(&resp.keys.unwrap_or_default(), resource)?;
        self.keys.lock().expect("not poisoned").put(k.uri.to_string(), (k.clone(), std::time::Instant::now()));
        Ok((k, hint))
    }

    /// Authorizes `auth_ids` on `resource`.
    pub async fn authorize(&self, resource: &KmsUri, auth_ids: &[String]) -> Result<()> {
        let body = RequestBody {
            resource_uri: Some(resource.to_string()),
            auth_ids: Some(auth_ids.to_vec()),
            ..Default::default()
        };
        self.call(Method::Create, "/authorizations", body).await.map(drop)
    }

    /// Removes `auth_id`'s authorization on `resource`.
    pub async fn deauthorize(&self, resource: &KmsUri, auth_id: &str) -> Result<()> {
        let q = percent_encode(auth_id);
        self.call(Method::Delete, &format!("{resource}/authorizations?authId={q}"), RequestBody::default())
            .await
            .map(drop)
    }

    /// Who the KMS says we are: the `userId` of the ephemeral key, in the
    /// KMS's signed handshake answer (handshaking if needed). The core's word
    /// on this is never enough: it would decide whose name we seal.
    pub async fn user_id(&self) -> Result<String> {
        Ok(self.session().await?.info().user_id.clone())
    }

    /// The current channel's ephemeral key URI (handshaking if needed).
    pub async fn session_uri(&self) -> Result<KmsUri> {
        Ok(self.session().await?.uri().clone())
    }

    /// Whether `uri` belongs to our own org's KMS (else to a federated one).
    pub fn is_own(&self, uri: &KmsUri) -> bool {
        uri.domain() == self.pin.domain
    }

    /// Proves the channel and the credential.
    pub async fn ping(&self) -> Result<()> {
        self.call(Method::Update, "/ping", RequestBody::default()).await.map(drop)
    }
}

fn status_error(status: Status, reason: String) -> Error {
    match status.0 {
        401 => Error::Auth(format!("the KMS refused your token ({reason}); log in again")),
        403 | 404 => {
            Error::NotAuthorized { reason: if reason.is_empty() { format!("status {}", status.0) } else { reason } }
        }
        s => Error::Kms { status: s, reason },
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
