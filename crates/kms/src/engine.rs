//! The KMS engine: compact message in, compact message out. No transport code.
//!
//! [`Engine::handle`] classifies a message (handshake or session), checks the
//! session ticket and the credential, runs the one operation the request
//! names, and seals the answer. Client mistakes become responses with a
//! status; only internal failures are logged, never with keys or tokens.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jose::jws::VerifyKey;
use jose::{JwsPolicy, OctKey, SigAlg};
use kms_protocol::channel::{HandshakeGrant, ServerKey, SigningContext};
use kms_protocol::message::{
    AuthorizationObject, KeyObject, KeyState, MasterKeyObject, Operation, Realm, ResourceObject,
};
use kms_protocol::{
    classify, open_request, seal_response, AuthId, Credential, Incoming, Kind, KmsUri, Request, Response, Status,
    Target,
};
use kms_store::{
    AuthorizationRecord, BindOutcome, CreateResourceOutcome, KeyRecord, MasterKeyState, ResourceRecord, Store,
};
use tokio::sync::RwLock;

use crate::auth::{AnonClaims, AuthError, Authenticator, Principal};
use crate::crypto::SecretKey;
use crate::error::EngineError;
use crate::keyring::Keyring;
use crate::limit::RateLimiter;
use crate::session::{SessionState, Tickets};
use crate::{from_ms, now_ms, to_ms};

/// Policy and lifetimes.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This KMS's domain: URIs are `kms://<domain>/…`.
    pub kms_domain: String,
    /// The org its users belong to.
    pub org_domain: String,
    /// Ephemeral key (session) lifetime.
    pub session_lifetime: Duration,
    /// How long an unbound key may wait to be bound.
    pub unbound_key_lifetime: Duration,
    /// How long a bound key may be used to encrypt.
    pub bound_key_lifetime: Duration,
    /// Cap on an anonymous authorization's life.
    pub anonymous_lifetime: Duration,
    /// Whether anonymous authorizations may be created at all.
    pub allow_anonymous: bool,
    /// Longest resource ttl accepted.
    pub max_resource_ttl: Duration,
    /// Users who may use the administrative API.
    pub admins: Vec<String>,
}

impl EngineConfig {
    /// Defaults for `kms_domain` and `org_domain`.
    pub fn new(kms_domain: &str, org_domain: &str) -> Self {
        Self {
            kms_domain: kms_domain.to_ascii_lowercase(),
            org_domain: org_domain.to_ascii_lowercase(),
            session_lifetime: Duration::from_secs(3600),
            unbound_key_lifetime: Duration::from_secs(3600),
            bound_key_lifetime: Duration::from_secs(365 * 24 * 3600),
            anonymous_lifetime: Duration::from_secs(24 * 3600),
            allow_anonymous: true,
            max_resource_ttl: Duration::from_secs(10 * 365 * 24 * 3600),
            admins: Vec::new(),
        }
    }
}

/// A message refused before any expensive work: too many handshakes or resets from one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many unauthenticated requests from this source")]
pub struct Throttled;

/// The engine.
pub struct Engine {
    cfg: EngineConfig,
    store: Arc<dyn Store>,
    server: ServerKey,
    keyring: Keyring,
    tickets: Arc<Tickets>,
    auth: Arc<dyn Authenticator>,
    limiter: RateLimiter,
    // Resources never change their expiry; remember it to save a read per key retrieval.
    resource_expiry: RwLock<HashMap<String, Option<i64>>>,
    service_roots: Option<crate::service_auth::TrustRoots>,
    /// The audit log; `None` only in engine tests that do not audit.
    audit: Option<Arc<audit::AuditLog>>,
    // Bound keys never change (wrapped material, binding): cache their records.
    bound_keys: RwLock<HashMap<String, KeyRecord>>,
    // Positive authorization decisions, trusted for at most AUTHZ_CACHE; a
    // deletion on this node clears them at once, other nodes within AUTHZ_CACHE.
    authz: RwLock<HashMap<(String, String), std::time::Instant>>,
    // Bumped by every local deletion: a decision computed across a bump is not cached.
    authz_generation: std::sync::atomic::AtomicU64,
}

/// Most resources one authorization check may visit through resource authIds.
pub const MAX_RESOURCES_VISITED: usize = 64;
/// Longest client id accepted (it travels inside the session ticket).
pub const MAX_CLIENT_ID: usize = 256;

/// How long a positive authorization decision is reused.
pub const AUTHZ_CACHE: Duration = Duration::from_secs(1);
const CACHE_CAP: usize = 200_000;

/// Outcome of an operation: a response, and whether it may be logged for replay.
type Answer = Result<Response, EngineError>;

fn err(status: Status, rid: &str, reason: &str) -> Response {
    Response::error(status, rid, reason)
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

impl Engine {
    /// Builds an engine.
    pub fn new(
        cfg: EngineConfig,
        store: Arc<dyn Store>,
        server: ServerKey,
        keyring: Keyring,
        tickets: Arc<Tickets>,
        auth: Arc<dyn Authenticator>,
        limiter: RateLimiter,
    ) -> Self {
        Self {
            cfg,
            store,
            server,
            keyring,
            tickets,
            auth,
            limiter,
            resource_expiry: RwLock::new(HashMap::new()),
            service_roots: None,
            audit: None,
            bound_keys: RwLock::new(HashMap::new()),
            authz: RwLock::new(HashMap::new()),
            authz_generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Opens an engine over `store`: the org's keyring (first KEK created if
    /// needed) and the session tickets.
    pub async fn open(
        cfg: EngineConfig,
        store: Arc<dyn Store>,
        static_key: jose::RsaPrivateKey,
        cmk: crate::crypto::Cmk,
        auth: Arc<dyn Authenticator>,
        limiter: RateLimiter,
    ) -> Result<Self, EngineError> {
        let server = ServerKey::new(static_key, &cfg.kms_domain)?;
        let tickets = Arc::new(Tickets::new(store.clone(), &cmk, cfg.session_lifetime));
        let keyring = Keyring::open(store.clone(), cmk, &cfg.org_domain).await?;
        Ok(Self::new(cfg, store, server, keyring, tickets, auth, limiter))
    }

    /// Accepts service credentials whose x5c chains lead to these roots.
    pub fn with_service_roots(mut self, roots: crate::service_auth::TrustRoots) -> Self {
        self.service_roots = Some(roots);
        self
    }

    /// Writes every key release, denial and change to `log` before answering;
    /// a request whose entry cannot be written is refused.
    pub fn with_audit(mut self, log: Arc<audit::AuditLog>) -> Self {
        self.audit = Some(log);
        self
    }

    /// The audit log, if one is attached.
    pub fn audit_log(&self) -> Option<&Arc<audit::AuditLog>> {
        self.audit.as_ref()
    }

    /// Records `op`'s outcome in the audit log (fail closed: if the entry
    /// cannot be written, the answer becomes a 503 and reveals nothing).
    async fn audited(&self, p: &Principal, op: &Operation, resp: Response, rid: &str) -> Response {
        let Some(log) = &self.audit else { return resp };
        let pid = p.id(&self.cfg.kms_domain);
        let admin = matches!(p, Principal::User { .. }) && self.cfg.admins.contains(&pid);
        let entries = crate::audit::entries_for(p, &pid, admin, op, &resp);
        let written = futures_util::future::try_join_all(entries.into_iter().map(|e| log.append(e))).await;
        match written {
            Ok(_) => resp,
            Err(e) => {
                tracing::error!(error = %e, "the audit log cannot be written: refusing the request");
                metrics::counter!("kms_audit_failures_total").increment(1);
                err(Status::UNAVAILABLE, rid, "the KMS cannot write its audit log; nothing was released or changed")
            }
        }
    }

    /// Whether the store answers.
    pub async fn health(&self) -> Result<(), EngineError> {
        self.store.get_meta("health").await?;
        Ok(())
    }

    /// The session id and URI behind a session message (for transports that push resets).
    pub async fn session_of(&self, compact: &str) -> Option<(String, KmsUri)> {
        let Ok(Incoming::Session { kid, .. }) = classify(compact) else { return None };
        let uri = KmsUri::parse(&kid, &self.cfg.kms_domain).ok()?;
        let (s, _) = self.tickets.open_any(uri.id()?, now_ms()).await.ok()?;
        Some((s.id, uri))
    }

    /// The static key's public half.
    pub fn server_key(&self) -> &ServerKey {
        &self.server
    }

    /// The session tickets (for polling deletions).
    pub fn tickets(&self) -> &Arc<Tickets> {
        &self.tickets
    }

    /// The config in force.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    fn realm(&self) -> Realm<'_> {
        Realm { kms_domain: &self.cfg.kms_domain, org_domain: &self.cfg.org_domain }
    }

    fn uri(&self, kind: Kind, id: &str) -> KmsUri {
        KmsUri::object(&self.cfg.kms_domain, kind, id).expect("own ids are valid")
    }

    fn reset(&self, source: Option<&str>, request_id: Option<&str>, reason: &str) -> Result<String, Throttled> {
        self.limiter.check(source)?;
        self.server.reset(request_id, reason).map_err(|e| {
            tracing::error!(error = %e, "signing a reset failed");
            Throttled
        })
    }

    /// Handles one compact message from `source` (an address, for rate limits;
    /// `None` for trusted in-process callers). Always answers with a compact
    /// message unless the source is throttled.
    pub async fn handle(&self, compact: &str, source: Option<&str>) -> Result<String, Throttled> {
        match classify(compact) {
            Err(_) => self.reset(source, None, "message could not be read"),
            Ok(Incoming::Handshake(jwe)) => {
                self.limiter.check(source)?;
                Ok(self.handshake(&jwe).await)
            }
            Ok(Incoming::Session { kid, jwe }) => {
                let now = now_ms();
                let uri = match KmsUri::parse(&kid, &self.cfg.kms_domain) {
                    Ok(u) if u.is_object(Kind::Ecdhe) && u.domain() == self.cfg.kms_domain => u,
                    _ => return self.reset(source, None, "unknown ephemeral key"),
                };
                let session = match self.tickets.open_any(uri.id().unwrap_or_default(), now).await {
                    Ok((s, None)) => s,
                    Ok((s, Some(problem))) => {
                        // Expired or deleted: echo the requestId if the request still decrypts.
                        let rid = open_request(&s.shared, &uri, &jwe).ok().map(|r| r.request_id);
                        return self.reset(source, rid.as_deref(), &problem.to_string());
                    }
                    Err(EngineError::Ticket(t)) => return self.reset(source, None, &t.to_string()),
                    Err(e) => {
                        tracing::error!(error = %e, "opening a session ticket failed");
                        return self.reset(source, None, "the KMS could not open the session");
                    }
                };
                let req = match open_request(&session.shared, &uri, &jwe) {
                    Ok(r) => r,
                    Err(_) => return self.reset(source, None, "request could not be decrypted"),
                };
                Ok(self.session_request(&session, &uri, &req).await)
            }
        }
    }

    async fn handshake(&self, jwe: &jose::Jwe) -> String {
        let opened = match self.server.open_handshake(jwe) {
            Ok(o) => o,
            Err(_) => return self.server.reset(None, "request could not be decrypted").unwrap_or_default(),
        };
        let rid = opened.request.request_id.clone();
        let signed_error = |status: Status, reason: &str| {
            self.server.sign(SigningContext::Ecdhe, &err(status, &rid, reason)).unwrap_or_default()
        };
        let Some(client) = opened.request.client.as_ref() else {
            return signed_error(Status::UNAUTHORIZED, "a credential is required");
        };
        if client.client_id.len() > MAX_CLIENT_ID || client.client_id.chars().any(char::is_control) {
            return signed_error(Status::BAD_REQUEST, "clientId must be at most 256 printable characters");
        }
        let binding = kms_protocol::pop::handshake_binding(&opened.client_key);
        let principal = match self.authenticate(&client.credential, &binding, &rid).await {
            Ok(p) => p,
            Err(e) => return signed_error(Status::UNAUTHORIZED, &e.0),
        };
        let now = now_ms();
        let mut expires = now + ms(self.cfg.session_lifetime);
        if let Some(exp) = self.principal_expiry(&principal).await {
            expires = expires.min(exp);
        }
        let pid = principal.id(&self.cfg.kms_domain);
        let grant =
            HandshakeGrant { user_id: pid.clone(), client_id: client.client_id.clone(), expires: from_ms(expires) };
        let ticket_key = match self.tickets.current_key(now).await {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "loading the ticket key failed");
                return signed_error(Status::INTERNAL_ERROR, "the KMS could not create the session");
            }
        };
        // The ticket seals the shared key, so it is made inside the handshake; no database write.
        let accepted = self.server.accept_handshake(&opened, &grant, |shared| {
            let (ticket, _) =
                Tickets::seal_with(&ticket_key, shared, &pid, &client.client_id, expires).map_err(|_| {
                    kms_protocol::ProtocolError::InvalidField { field: "key", reason: "ticket sealing failed" }
                })?;
            KmsUri::object(&self.cfg.kms_domain, Kind::Ecdhe, &ticket)
                .map_err(|source| kms_protocol::ProtocolError::Uri { field: "key.uri", source })
        });
        match accepted {
            Ok(a) => a.response,
            Err(e) => {
                tracing::error!(error = %e, "accepting a handshake failed");
                signed_error(Status::INTERNAL_ERROR, "handshake failed")
            }
        }
    }

    /// Who sent a request: a bearer (ours or a trusted issuer's), or a service
    /// key with an x5c chain and a proof of possession bound to `binding`.
    async fn authenticate(&self, cred: &Credential, binding: &str, request_id: &str) -> Result<Principal, AuthError> {
        if cred.jwk.is_some() {
            let Some(roots) = &self.service_roots else {
                return Err(AuthError(
                    "this KMS accepts no service (jwk) credentials: no trust roots are configured".into(),
                ));
            };
            let id = crate::service_auth::authenticate_service(roots, cred, binding, request_id, now_ms() / 1000)?;
            return Ok(Principal::Service { service_id: id });
        }
        let token = cred.bearer.as_ref().ok_or_else(|| AuthError("a bearer credential is required".into()))?;
        let token = token.expose();
        if let Some(p) = self.anonymous_principal(token).await {
            return p;
        }
        let user = self.auth.authenticate(token).await?;
        if let Some(obo) = &cred.on_behalf_of {
            if !obo.is_empty() && !obo.eq_ignore_ascii_case(&user.user_id) {
                return Err(AuthError("onBehalfOf is not allowed for this identity".into()));
            }
        }
        Ok(Principal::User { user_id: user.user_id })
    }

    async fn principal_expiry(&self, _p: &Principal) -> Option<i64> {
        None
    }

    /// `Some` when `token` is one of our anonymous bearers (valid or not).
    async fn anonymous_principal(&self, token: &str) -> Option<Result<Principal, AuthError>> {
        const POLICY: JwsPolicy<'static> = JwsPolicy { algs: &[SigAlg::PS256], max_len: 8192 };
        let jws = jose::Jws::parse(token, &POLICY).ok()?;
        if jws.header().typ.as_deref() != Some(SigningContext::AnonAuth.typ()) {
            return None;
        }
        let bad = || Some(Err(AuthError("invalid anonymous bearer".into())));
        let Ok(payload) = jws.verify(VerifyKey::Rsa(self.server.public_key())) else { return bad() };
        let Ok(claims) = serde_json::from_slice::<AnonClaims>(payload) else { return bad() };
        let now = now_ms();
        if claims.iss != format!("kms://{}", self.cfg.kms_domain) || claims.exp * 1000 <= now {
            return bad();
        }
        let Ok(auth_uri) = KmsUri::parse_absolute(&claims.sub) else { return bad() };
        let Some(aid) = auth_uri.id().filter(|_| auth_uri.is_object(Kind::Authorizations)) else { return bad() };
        // The bearer dies with its authorization.
        match self.store.get_authorization(aid).await {
            Ok(Some(a)) if a.auth_id.is_none() && a.expiration_date.is_some_and(|e| e > now) => {
                Some(Ok(Principal::Anonymous { authorization_id: a.id, resource_id: a.resource_id }))
            }
            _ => bad(),
        }
    }

    async fn session_request(&self, session: &SessionState, uri: &KmsUri, req: &Request) -> String {
        let answer = self.session_request_inner(session, uri, req).await;
        match answer {
            Ok(Sealed::Fresh(resp)) => seal_response(&session.shared, uri, &resp).unwrap_or_default(),
            Ok(Sealed::Stored(s)) => s,
            Err(EngineError::KekRevoked) => {
                let resp =
                    err(Status::FORBIDDEN, &req.request_id, "the org has revoked the key encryption key of this key");
                seal_response(&session.shared, uri, &resp).unwrap_or_default()
            }
            Err(e) => {
                tracing::error!(error = %e, "request failed");
                let resp = err(Status::INTERNAL_ERROR, &req.request_id, "the KMS failed; retry");
                seal_response(&session.shared, uri, &resp).unwrap_or_default()
            }
        }
    }

    async fn session_request_inner(
        &self,
        session: &SessionState,
        uri: &KmsUri,
        req: &Request,
    ) -> Result<Sealed, EngineError> {
        let rid = req.request_id.as_str();
        let Some(client) = req.client.as_ref() else {
            return Ok(Sealed::Fresh(err(Status::UNAUTHORIZED, rid, "a credential is required")));
        };
        // Tokens are checked on every request, not only at the handshake.
        let binding = kms_protocol::pop::session_binding(uri);
        let principal = match self.authenticate(&client.credential, &binding, rid).await {
            Ok(p) => p,
            Err(e) => return Ok(Sealed::Fresh(err(Status::UNAUTHORIZED, rid, &e.0))),
        };
        if principal.id(&self.cfg.kms_domain) != session.principal || client.client_id != session.client_id {
            return Ok(Sealed::Fresh(err(Status::UNAUTHORIZED, rid, "the credential does not match the session")));
        }
        let op = match req.operation(self.realm()) {
            Ok(op) => op,
            Err(e) => return Ok(Sealed::Fresh(err(Status::BAD_REQUEST, rid, &e.to_string()))),
        };
        if !mutates(&op) {
            let resp = self.execute(session, uri, &principal, &op, rid).await?;
            return Ok(Sealed::Fresh(self.audited(&principal, &op, resp, rid).await));
        }
        // Mutations run once per (session, requestId); a repeat gets the first answer.
        match self.store.claim_request(&session.id, rid, session.expires).await? {
            Some(Some(stored)) => return Ok(Sealed::Stored(stored)),
            Some(None) => {
                return Ok(Sealed::Fresh(err(
                    Status::CONFLICT,
                    rid,
                    "this requestId is still being processed; retry later",
                )))
            }
            None => {}
        }
        let done = async {
            let resp = self.execute(session, uri, &principal, &op, rid).await?;
            let resp = self.audited(&principal, &op, resp, rid).await;
            let sealed = seal_response(&session.shared, uri, &resp)?;
            self.store.complete_request(&session.id, rid, &sealed).await?;
            Ok::<_, EngineError>(sealed)
        }
        .await;
        match done {
            Ok(sealed) => Ok(Sealed::Stored(sealed)),
            Err(e) => {
                // Nothing was answered: let a retry run again rather than wait forever.
                if let Err(re) = self.store.release_request(&session.id, rid).await {
                    tracing::error!(error = %re, "releasing a failed request's claim failed");
                }
                Err(e)
            }
        }
    }
}

// A response lives for one request; boxing it would buy nothing measurable.
#[allow(clippy::large_enum_variant)]
enum Sealed {
    Fresh(Response),
    Stored(String),
}

fn mutates(op: &Operation) -> bool {
    !matches!(
        op,
        Operation::RetrieveResource { .. }
            | Operation::RetrieveKey { .. }
            | Operation::RetrieveResourceKeys { .. }
            | Operation::RetrieveResourceAccesses { .. }
            | Operation::RetrieveAuthorizations { .. }
            | Operation::Ping
            | Operation::RetrievePublicKey
            | Operation::ListMasterKeys { .. }
    )
}

/// Operations.
impl Engine {
    async fn execute(&self, session: &SessionState, uri: &KmsUri, p: &Principal, op: &Operation, rid: &str) -> Answer {
        let now = now_ms();
        let pid = p.id(&self.cfg.kms_domain);
        let user = match p {
            Principal::User { .. } | Principal::Service { .. } => Some(pid.as_str()),
            Principal::Anonymous { .. } => None,
        };
        // Anonymous bearers may read keys of their resource, nothing else.
        let anonymous_ok = matches!(
            op,
            Operation::RetrieveKey { .. }
                | Operation::RetrieveResourceKeys { .. }
                | Operation::RetrieveResource { .. }
                | Operation::Ping
                | Operation::DeleteEphemeralKey { .. }
        );
        if user.is_none() && !anonymous_ok {
            return Ok(err(Status::FORBIDDEN, rid, "an anonymous authorization may only retrieve keys"));
        }
        // Admins are users; a service certificate never is one.
        let admin = matches!(p, Principal::User { .. }) && user.is_some_and(|u| self.cfg.admins.iter().any(|a| a == u));
        match op {
            Operation::Ping => Ok(Response::new(Status::OK, rid)),
            Operation::CreateEphemeralKey { .. } => {
                Ok(err(Status::BAD_REQUEST, rid, "create /ecdhe must be encrypted to the static key"))
            }
            Operation::DeleteEphemeralKey { uri: target } => {
                if target != uri {
                    return Ok(err(Status::FORBIDDEN, rid, "a session may delete only its own ephemeral key"));
                }
                self.tickets.revoke(session).await?;
                Ok(Response::new(Status::NO_CONTENT, rid))
            }
            Operation::CreateKeys { count } => {
                self.create_keys(session, user.unwrap_or_default(), *count, now, rid).await
            }
            Operation::BindKey { key, resource } => {
                self.bind_key(p, user.unwrap_or_default(), key, resource, now, rid).await
            }
            Operation::RetrieveKey { uri: key } => self.retrieve_key(session, p, key, now, rid).await,
            Operation::RetrieveResourceAccesses { resource, after, count } => {
                // Members (and admins) may see who else received their space's keys.
                let Some(rid_) = self.own_id(resource) else { return Ok(not_found(rid)) };
                if user.is_none() || !(admin || self.authorized(p, rid_, now).await?) {
                    return Ok(forbidden(rid));
                }
                let Some(log) = &self.audit else {
                    return Ok(err(Status::UNAVAILABLE, rid, "this KMS keeps no audit log"));
                };
                let limit = count.unwrap_or(100).min(1000);
                let entries = match log.key_access(&resource.to_string(), after.unwrap_or(0), limit).await {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::error!(error = %e, "reading the audit log failed");
                        return Ok(err(Status::UNAVAILABLE, rid, "the audit log cannot be read; retry"));
                    }
                };
                let mut resp = Response::new(Status::OK, rid);
                resp.accesses = Some(
                    entries
                        .into_iter()
                        .map(|e| kms_protocol::AccessObject {
                            seq: e.seq,
                            time: e.time,
                            actor: e.actor,
                            actor_kind: e.actor_kind.to_string(),
                            on_behalf_of: e.on_behalf_of,
                            case: e.case,
                            action: e.action.to_string(),
                            key_uris: e.keys,
                        })
                        .collect(),
                );
                Ok(resp)
            }
            Operation::RetrieveResourceKeys { resource, bound_after, bound_before, count } => {
                let Some(rid_) = self.own_id(resource) else { return Ok(not_found(rid)) };
                if !self.authorized(p, rid_, now).await? {
                    return Ok(forbidden(rid));
                }
                let recs = self
                    .store
                    .list_resource_keys(rid_, bound_after.map(|d| to_ms(&d)), bound_before.map(|d| to_ms(&d)), *count)
                    .await?;
                let mut keys = Vec::with_capacity(recs.len());
                for r in &recs {
                    keys.push(self.key_object(r, true).await?);
                }
                let mut resp = Response::new(Status::OK, rid);
                resp.keys = Some(keys);
                Ok(resp)
            }
            Operation::CreateResource { auth_ids, key_uris, anonymous, ttl } => {
                self.create_resource(user.unwrap_or_default(), auth_ids, key_uris, *anonymous, *ttl, now, rid).await
            }
            Operation::RetrieveResource { uri: res } => {
                let Some(id) = self.own_id(res) else { return Ok(not_found(rid)) };
                if !self.authorized(p, id, now).await? {
                    return Ok(forbidden(rid));
                }
                let Some(view) = self.store.get_resource(id).await? else { return Ok(not_found(rid)) };
                let mut resp = Response::new(Status::OK, rid);
                resp.resource = Some(self.resource_object(&view));
                Ok(resp)
            }
            Operation::CreateAuthorizations { resource, auth_ids, anonymous, role_uri } => {
                let Some(id) = self.own_id(resource) else { return Ok(not_found(rid)) };
                if !self.authorized(p, id, now).await? {
                    return Ok(forbidden(rid));
                }
                if let Some(r) = self.check_auth_ids(auth_ids, rid).await? {
                    return Ok(r);
                }
                if let Some(role) = role_uri {
                    if role.is_empty() || role.len() > 256 {
                        return Ok(err(Status::BAD_REQUEST, rid, "roleUri must be 1 to 256 characters"));
                    }
                }
                let expiry = self.resource_expiry(id).await?.flatten();
                let (recs, bearers) = match self.authorization_records(
                    id,
                    user.unwrap_or_default(),
                    auth_ids,
                    role_uri.clone(),
                    *anonymous,
                    expiry,
                    now,
                ) {
                    Ok(x) => x,
                    Err(r) => return Ok(r.with_rid(rid)),
                };
                let created = self.store.create_authorizations(&recs).await?;
                let mut resp = Response::new(Status::CREATED, rid);
                resp.authorizations =
                    Some(created.iter().map(|a| self.authorization_object(a, bearers.get(&a.id))).collect());
                Ok(resp)
            }
            Operation::RetrieveAuthorizations { resource, auth_id } => {
                let Some(id) = self.own_id(resource) else { return Ok(not_found(rid)) };
                if !self.authorized(p, id, now).await? {
                    return Ok(forbidden(rid));
                }
                let filter = auth_id.as_ref().map(|a| a.to_string());
                let list = self.store.list_authorizations(id, filter.as_deref()).await?;
                let mut resp = Response::new(Status::OK, rid);
                resp.authorizations = Some(list.iter().map(|a| self.authorization_object(a, None)).collect());
                Ok(resp)
            }
            Operation::DeleteAuthorization { uri: auth } => {
                let Some(aid) = self.own_id(auth) else { return Ok(not_found(rid)) };
                let Some(a) = self.store.get_authorization(aid).await? else { return Ok(not_found(rid)) };
                if !self.authorized(p, &a.resource_id, now).await? {
                    return Ok(forbidden(rid));
                }
                let deleted: Vec<_> = self.store.delete_authorization(aid).await?.into_iter().collect();
                self.forget_authorizations().await;
                Ok(self.deleted(deleted, rid))
            }
            Operation::DeleteAuthorizationByAuthId { resource, auth_id } => {
                let Some(id) = self.own_id(resource) else { return Ok(not_found(rid)) };
                if !self.authorized(p, id, now).await? {
                    return Ok(forbidden(rid));
                }
                let deleted = self.store.delete_authorizations(id, &[auth_id.to_string()]).await?;
                self.forget_authorizations().await;
                Ok(self.deleted(deleted, rid))
            }
            Operation::DeleteAuthorizations { resource, auth_ids } => {
                let Some(id) = self.own_id(resource) else { return Ok(not_found(rid)) };
                if !self.authorized(p, id, now).await? {
                    return Ok(forbidden(rid));
                }
                let ids: Vec<String> = auth_ids.iter().map(|a| a.to_string()).collect();
                let deleted = self.store.delete_authorizations(id, &ids).await?;
                self.forget_authorizations().await;
                Ok(self.deleted(deleted, rid))
            }
            Operation::RetrievePublicKey | Operation::CreateCmk { .. } => {
                Ok(err(Status(501), rid, "bring-your-own-key is not supported by this KMS yet"))
            }
            Operation::ListMasterKeys { kind, .. } => {
                if !admin {
                    return Ok(forbidden(rid));
                }
                let list = match kind {
                    Kind::Kek => self
                        .store
                        .list_keks(Some(&self.cfg.org_domain))
                        .await?
                        .into_iter()
                        .map(|k| MasterKeyObject {
                            uri: self.uri(Kind::Kek, &k.id),
                            assigned_org_id: Some(k.org),
                            usage_state: match k.state {
                                MasterKeyState::Active => KeyState::Active,
                                MasterKeyState::Inactive => KeyState::Deactivated,
                                MasterKeyState::Revoked => KeyState::Revoked,
                            },
                            create_date: from_ms(k.create_date),
                            update_date: Some(from_ms(k.update_date)),
                        })
                        .collect(),
                    _ => vec![MasterKeyObject {
                        uri: self.uri(Kind::Cmk, self.keyring.cmk_id()),
                        assigned_org_id: Some(self.cfg.org_domain.clone()),
                        usage_state: KeyState::Active,
                        create_date: from_ms(0),
                        update_date: None,
                    }],
                };
                let mut resp = Response::new(Status::OK, rid);
                resp.master_keys = Some(list);
                Ok(resp)
            }
            Operation::CreateKek { .. } => {
                if !admin {
                    return Ok(forbidden(rid));
                }
                let k = self.keyring.rotate(now).await?;
                tracing::info!(kek = %k.id, by = user.unwrap_or_default(), "new active KEK");
                let mut resp = Response::new(Status::CREATED, rid);
                resp.master_keys = Some(vec![MasterKeyObject {
                    uri: self.uri(Kind::Kek, &k.id),
                    assigned_org_id: Some(k.org),
                    usage_state: KeyState::Active,
                    create_date: from_ms(k.create_date),
                    update_date: Some(from_ms(k.update_date)),
                }]);
                Ok(resp)
            }
            Operation::UpdateMasterKey { uri: target, state } => {
                if !admin {
                    return Ok(forbidden(rid));
                }
                if !target.is_object(Kind::Kek) {
                    return Ok(err(
                        Status(501),
                        rid,
                        "the CMK is managed in the KMS configuration, not through the API",
                    ));
                }
                let new = match state {
                    KeyState::Active => MasterKeyState::Active,
                    KeyState::Deactivated | KeyState::Retired => MasterKeyState::Inactive,
                    KeyState::Revoked | KeyState::Disabled => MasterKeyState::Revoked,
                    _ => {
                        return Ok(err(
                            Status::BAD_REQUEST,
                            rid,
                            "a KEK may be set ACTIVE, DEACTIVATED, RETIRED, REVOKED or DISABLED",
                        ))
                    }
                };
                let Some(id) = self.own_id(target) else { return Ok(not_found(rid)) };
                // Only this KMS's org's KEKs, even in a database shared with other orgs.
                if self.store.get_kek(id).await?.is_none_or(|k| k.org != self.cfg.org_domain) {
                    return Ok(not_found(rid));
                }
                if !self.keyring.set_state(id, new, now).await? {
                    return Ok(not_found(rid));
                }
                tracing::info!(kek = %id, state = new.as_str(), by = user.unwrap_or_default(), "KEK state changed");
                Ok(Response::new(Status::OK, rid))
            }
            _ => Ok(err(Status::BAD_REQUEST, rid, "unsupported operation")),
        }
    }

    fn own_id<'a>(&self, uri: &'a KmsUri) -> Option<&'a str> {
        (uri.domain() == self.cfg.kms_domain).then(|| uri.id()).flatten()
    }

    async fn create_keys(&self, session: &SessionState, user: &str, count: u32, now: i64, rid: &str) -> Answer {
        let exp = now + ms(self.cfg.unbound_key_lifetime);
        let mut recs = Vec::with_capacity(count as usize);
        let mut secrets = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let id = uuid::Uuid::new_v4().to_string();
            let key = SecretKey::generate()?;
            let (wrapped, kek_id) = self.keyring.wrap(&id, &key).await?;
            recs.push(KeyRecord {
                id,
                wrapped,
                kek_id,
                user_id: user.to_string(),
                client_id: session.client_id.clone(),
                create_date: now,
                expiration_date: exp,
                resource_id: None,
                bind_date: None,
            });
            secrets.push(key);
        }
        // Durable before any response reveals them.
        self.store.insert_keys(&recs).await?;
        let keys = recs.iter().zip(&secrets).map(|(r, k)| self.key_object_with(r, k)).collect();
        let mut resp = Response::new(Status::CREATED, rid);
        resp.keys = Some(keys);
        Ok(resp)
    }

    async fn bind_key(
        &self,
        p: &Principal,
        user: &str,
        key: &KmsUri,
        resource: &KmsUri,
        now: i64,
        rid: &str,
    ) -> Answer {
        let (Some(kid), Some(res)) = (self.own_id(key), self.own_id(resource)) else { return Ok(not_found(rid)) };
        if !self.authorized(p, res, now).await? {
            return Ok(forbidden(rid));
        }
        match self.store.bind_key(kid, res, user, now, now + ms(self.cfg.bound_key_lifetime)).await? {
            BindOutcome::Bound(r) | BindOutcome::AlreadyBound(r) => {
                let mut resp = Response::new(Status::OK, rid);
                resp.key = Some(self.key_object(&r, true).await?);
                Ok(resp)
            }
            BindOutcome::BoundElsewhere => Ok(err(Status::CONFLICT, rid, "the key is bound to another resource")),
            BindOutcome::NotCreator => Ok(forbidden(rid)),
            BindOutcome::Expired => Ok(err(Status::CONFLICT, rid, "the key expired before it was bound")),
            BindOutcome::NotFound => Ok(not_found(rid)),
        }
    }

    async fn retrieve_key(&self, session: &SessionState, p: &Principal, key: &KmsUri, now: i64, rid: &str) -> Answer {
        let Some(kid) = self.own_id(key) else { return Ok(not_found(rid)) };
        let cached = self.bound_keys.read().await.get(kid).cloned();
        let rec = match cached {
            Some(r) => r,
            None => {
                let Some(rec) = self.store.get_key(kid).await? else { return Ok(not_found(rid)) };
                if rec.resource_id.is_some() {
                    let mut c = self.bound_keys.write().await;
                    if c.len() >= CACHE_CAP {
                        c.clear();
                    }
                    c.insert(kid.to_string(), rec.clone());
                }
                rec
            }
        };
        let allowed = match (&rec.resource_id, p) {
            // Unbound: its creator only, from the same client.
            (None, Principal::User { .. } | Principal::Service { .. }) => {
                if rec.expiration_date <= now {
                    return Ok(err(Status::NOT_FOUND, rid, "the unbound key expired before it was bound"));
                }
                p.id(&self.cfg.kms_domain) == rec.user_id && session.client_id == rec.client_id
            }
            (None, Principal::Anonymous { .. }) => false,
            (Some(res), _) => self.authorized(p, res, now).await?,
        };
        if !allowed {
            return Ok(forbidden(rid));
        }
        let mut resp = Response::new(Status::OK, rid);
        resp.key = Some(self.key_object(&rec, true).await?);
        Ok(resp)
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_resource(
        &self,
        user: &str,
        auth_ids: &[AuthId],
        key_uris: &[KmsUri],
        anonymous: u32,
        ttl: Option<u64>,
        now: i64,
        rid: &str,
    ) -> Answer {
        if let Some(t) = ttl {
            if t == 0 || t > self.cfg.max_resource_ttl.as_secs() {
                return Ok(err(
                    Status::BAD_REQUEST,
                    rid,
                    &format!("ttl must be 1 to {} seconds", self.cfg.max_resource_ttl.as_secs()),
                ));
            }
        }
        if let Some(r) = self.check_auth_ids(auth_ids, rid).await? {
            return Ok(r);
        }
        let mut key_ids = Vec::with_capacity(key_uris.len());
        for k in key_uris {
            match self.own_id(k) {
                Some(id) => key_ids.push(id.to_string()),
                None => return Ok(err(Status::BAD_REQUEST, rid, "keyUris must name keys of this KMS")),
            }
        }
        let id = uuid::Uuid::new_v4().to_string();
        let expiry = ttl.map(|t| now + t as i64 * 1000);
        let mut ids: Vec<AuthId> = vec![AuthId::User(user.to_string())];
        ids.extend(auth_ids.iter().filter(|a| !matches!(a, AuthId::User(u) if u == user)).cloned());
        let (auths, bearers) = match self.authorization_records(&id, user, &ids, None, anonymous, expiry, now) {
            Ok(x) => x,
            Err(r) => return Ok(r.with_rid(rid)),
        };
        let rec = ResourceRecord {
            id: id.clone(),
            creator: user.to_string(),
            create_date: now,
            expiration_date: expiry,
            ttl: ttl.map(|t| t as i64),
        };
        match self.store.create_resource(&rec, &auths, &key_ids, now + ms(self.cfg.bound_key_lifetime)).await? {
            CreateResourceOutcome::Created(view) => {
                self.resource_expiry.write().await.insert(id.clone(), expiry);
                let mut resp = Response::new(Status::CREATED, rid);
                resp.resource = Some(self.resource_object(&view));
                // Anonymous bearers are returned here, once, and never again.
                resp.authorizations =
                    Some(auths.iter().map(|a| self.authorization_object(a, bearers.get(&a.id))).collect());
                Ok(resp)
            }
            CreateResourceOutcome::KeyNotBindable(k) => Ok(err(
                Status::CONFLICT,
                rid,
                &format!(
                    "key {} cannot be bound (unknown, not yours, expired or already bound); nothing was created",
                    self.uri(Kind::Keys, &k)
                ),
            )),
            CreateResourceOutcome::Exists => Err(EngineError::Internal("resource id collision")),
        }
    }

    /// Own-domain resource authIds must exist; foreign ones are for federation.
    async fn check_auth_ids(&self, auth_ids: &[AuthId], rid: &str) -> Result<Option<Response>, EngineError> {
        for a in auth_ids {
            if let AuthId::Resource(r) = a {
                if let Some(id) = self.own_id(r) {
                    if self.resource_expiry(id).await?.is_none() {
                        return Ok(Some(err(Status::NOT_FOUND, rid, "an authId names an unknown resource")));
                    }
                }
            }
        }
        Ok(None)
    }

    #[allow(clippy::too_many_arguments, clippy::type_complexity, clippy::result_large_err)]
    fn authorization_records(
        &self,
        resource_id: &str,
        creator: &str,
        auth_ids: &[AuthId],
        role_uri: Option<String>,
        anonymous: u32,
        resource_expiry: Option<i64>,
        now: i64,
    ) -> Result<(Vec<AuthorizationRecord>, HashMap<String, String>), Response> {
        if anonymous > 0 && !self.cfg.allow_anonymous {
            return Err(err(Status::FORBIDDEN, "", "org policy forbids anonymous authorizations"));
        }
        let mut recs: Vec<AuthorizationRecord> = auth_ids
            .iter()
            .map(|a| AuthorizationRecord {
                id: uuid::Uuid::new_v4().to_string(),
                resource_id: resource_id.to_string(),
                auth_id: Some(a.to_string()),
                role_uri: role_uri.clone(),
                creator: creator.to_string(),
                create_date: now,
                expiration_date: None,
            })
            .collect();
        let mut bearers = HashMap::new();
        let mut exp = now + ms(self.cfg.anonymous_lifetime);
        if let Some(r) = resource_expiry {
            exp = exp.min(r);
        }
        for _ in 0..anonymous {
            let id = uuid::Uuid::new_v4().to_string();
            let claims = AnonClaims {
                iss: format!("kms://{}", self.cfg.kms_domain),
                sub: self.uri(Kind::Authorizations, &id).to_string(),
                resource: self.uri(Kind::Resources, resource_id).to_string(),
                iat: now / 1000,
                exp: exp / 1000,
            };
            let bearer = self
                .server
                .sign(SigningContext::AnonAuth, &claims)
                .map_err(|_| err(Status::INTERNAL_ERROR, "", "signing an anonymous bearer failed"))?;
            bearers.insert(id.clone(), bearer);
            recs.push(AuthorizationRecord {
                id,
                resource_id: resource_id.to_string(),
                auth_id: None,
                role_uri: role_uri.clone(),
                creator: creator.to_string(),
                create_date: now,
                expiration_date: Some(exp),
            });
        }
        Ok((recs, bearers))
    }

    fn deleted(&self, deleted: Vec<AuthorizationRecord>, rid: &str) -> Response {
        if deleted.is_empty() {
            return not_found(rid);
        }
        let mut resp = Response::new(Status::OK, rid);
        let objs: Vec<_> = deleted.iter().map(|a| self.authorization_object(a, None)).collect();
        resp.authorization = objs.first().cloned();
        resp.authorizations = Some(objs);
        resp
    }

    /// `Some(expiry)` if the resource exists (expiry `None` = never), `None` if unknown.
    async fn resource_expiry(&self, id: &str) -> Result<Option<Option<i64>>, EngineError> {
        if let Some(e) = self.resource_expiry.read().await.get(id) {
            return Ok(Some(*e));
        }
        let Some(view) = self.store.get_resource(id).await? else { return Ok(None) };
        let e = view.resource.expiration_date;
        self.resource_expiry.write().await.insert(id.to_string(), e);
        Ok(Some(e))
    }

    /// Whether `p` may act on the resource: directly, or through a resource
    /// authId (everyone authorized there), at most three levels deep.
    async fn authorized(&self, p: &Principal, resource_id: &str, now: i64) -> Result<bool, EngineError> {
        match self.resource_expiry(resource_id).await? {
            None => return Ok(false),
            Some(Some(e)) if e <= now => return Ok(false),
            _ => {}
        }
        let key = (resource_id.to_string(), self.principal_key(p));
        if self.authz.read().await.get(&key).is_some_and(|t| t.elapsed() < AUTHZ_CACHE) {
            return Ok(true);
        }
        let generation = self.authz_generation.load(std::sync::atomic::Ordering::Acquire);
        let started = std::time::Instant::now();
        let ok = self.authorized_uncached(p, resource_id, now).await?;
        if ok {
            let mut c = self.authz.write().await;
            // A deletion while we looked: the answer may already be stale; do not keep it.
            if self.authz_generation.load(std::sync::atomic::Ordering::Acquire) == generation {
                if c.len() >= CACHE_CAP {
                    c.clear();
                }
                c.insert(key, started);
            }
        }
        Ok(ok)
    }

    fn principal_key(&self, p: &Principal) -> String {
        p.id(&self.cfg.kms_domain)
    }

    /// Forgets cached positive decisions (after any authorization is deleted here).
    async fn forget_authorizations(&self) {
        let mut c = self.authz.write().await;
        self.authz_generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        c.clear();
    }

    async fn authorized_uncached(&self, p: &Principal, resource_id: &str, now: i64) -> Result<bool, EngineError> {
        match p {
            Principal::Anonymous { authorization_id, resource_id: r } => {
                if r != resource_id {
                    return Ok(false);
                }
                Ok(self
                    .store
                    .get_authorization(authorization_id)
                    .await?
                    .is_some_and(|a| a.expiration_date.is_some_and(|e| e > now)))
            }
            Principal::User { .. } | Principal::Service { .. } => {
                let user_id = p.id(&self.cfg.kms_domain);
                let mut visited = 0usize;
                let mut frontier = vec![resource_id.to_string()];
                let mut seen = std::collections::HashSet::new();
                for _depth in 0..4 {
                    let mut next = Vec::new();
                    for res in frontier {
                        if !seen.insert(res.clone()) {
                            continue;
                        }
                        // Bounded work per check, however the resource graph was built.
                        visited += 1;
                        if visited > MAX_RESOURCES_VISITED {
                            return Ok(false);
                        }
                        if self.store.has_authorization(&res, &[user_id.as_str()], now).await? {
                            return Ok(true);
                        }
                        for a in self.store.list_authorizations(&res, None).await? {
                            let Some(aid) = a.auth_id else { continue };
                            if let Ok(u) = KmsUri::parse_absolute(&aid) {
                                if let (true, Some(id)) = (u.is_object(Kind::Resources), self.own_id(&u)) {
                                    if matches!(self.resource_expiry(id).await?, Some(e) if e.is_none_or(|e| e > now)) {
                                        next.push(id.to_string());
                                    }
                                }
                            }
                        }
                    }
                    if next.is_empty() {
                        break;
                    }
                    frontier = next;
                }
                Ok(false)
            }
        }
    }

    fn key_object_with(&self, r: &KeyRecord, k: &SecretKey) -> KeyObject {
        let uri = self.uri(Kind::Keys, &r.id);
        let jwk = OctKey::new(k.expose().to_vec(), Some(uri.to_string())).expect("32-byte key").to_jwk();
        KeyObject {
            uri,
            jwk,
            user_id: r.user_id.clone(),
            client_id: r.client_id.clone(),
            create_date: from_ms(r.create_date),
            expiration_date: from_ms(r.expiration_date),
            resource_uri: r.resource_id.as_ref().map(|id| self.uri(Kind::Resources, id)),
            bind_date: r.bind_date.map(from_ms),
        }
    }

    async fn key_object(&self, r: &KeyRecord, _with_key: bool) -> Result<KeyObject, EngineError> {
        let k = self.keyring.unwrap(r).await?;
        Ok(self.key_object_with(r, &k))
    }

    fn resource_object(&self, v: &kms_store::ResourceView) -> ResourceObject {
        ResourceObject {
            uri: self.uri(Kind::Resources, &v.resource.id),
            key_uris: v.key_ids.iter().map(|k| self.uri(Kind::Keys, k)).collect(),
            authorization_uris: v.authorization_ids.iter().map(|a| self.uri(Kind::Authorizations, a)).collect(),
            ttl: v.resource.ttl.map(|t| t as u64),
            create_date: Some(from_ms(v.resource.create_date)),
            expiration_date: v.resource.expiration_date.map(from_ms),
        }
    }

    fn authorization_object(&self, a: &AuthorizationRecord, bearer: Option<&String>) -> AuthorizationObject {
        AuthorizationObject {
            uri: self.uri(Kind::Authorizations, &a.id),
            auth_id: a.auth_id.clone(),
            resource_uri: self.uri(Kind::Resources, &a.resource_id),
            role_uri: a.role_uri.clone(),
            create_date: from_ms(a.create_date),
            bearer: bearer.map(|b| jose::SecretString::new(b.clone())),
        }
    }
}

fn not_found(rid: &str) -> Response {
    err(Status::NOT_FOUND, rid, "no such object")
}

fn forbidden(rid: &str) -> Response {
    err(Status::FORBIDDEN, rid, "not authorized")
}

trait WithRid {
    fn with_rid(self, rid: &str) -> Response;
}

impl WithRid for Response {
    fn with_rid(mut self, rid: &str) -> Response {
        self.request_id = rid.to_string();
        self
    }
}

// Silence the unused-import lint for Target until federation uses it.
#[allow(dead_code)]
fn _target(_: &Target) {}
