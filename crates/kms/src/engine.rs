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
use crate::policy::{Loaded, Policies, UpdateError};
use crate::session::{SessionState, Tickets};
use crate::{from_ms, now_ms, to_ms};

mod federated;

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
    /// Each KEK wraps one period's keys; retention destroys whole periods.
    pub kek_period: Duration,
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
            kek_period: crate::keyring::DEFAULT_KEK_PERIOD,
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
    /// The org policy (services, disabled users and clients, compliance), cached briefly.
    policies: Arc<Policies>,
    /// Other static keys served during a rotation's overlap (the next key
    /// before it is promoted, the previous one after): handshakes encrypted
    /// to any of them are answered, signed by that same key.
    other_servers: Vec<ServerKey>,
    /// Federation with other orgs' KMSs (`None`: this KMS asks no peer).
    federation: Option<Arc<crate::federation::Federation>>,
    // Federated copies this node has written (one write per key and per user seen).
    fed_cached: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Why a credential gets no principal.
enum Refused {
    /// Not authenticated (401).
    Unauthenticated(AuthError),
    /// Authenticated, but asking for what it may not (403).
    Forbidden(&'static str),
    /// The org policy cannot be read (503).
    Unavailable,
}

impl From<AuthError> for Refused {
    fn from(e: AuthError) -> Self {
        Refused::Unauthenticated(e)
    }
}

impl Refused {
    fn status(&self) -> Status {
        match self {
            Refused::Unauthenticated(_) => Status::UNAUTHORIZED,
            Refused::Forbidden(_) => Status::FORBIDDEN,
            Refused::Unavailable => Status::UNAVAILABLE,
        }
    }

    fn reason(&self) -> &str {
        match self {
            Refused::Unauthenticated(e) => &e.0,
            Refused::Forbidden(r) => r,
            Refused::Unavailable => "the KMS cannot read the org policy; retry",
        }
    }
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
        keyring.set_period(cfg.kek_period);
        Self {
            store: store.clone(),
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
            policies: Arc::new(Policies::new(store.clone(), &cfg.org_domain)),
            other_servers: Vec::new(),
            federation: None,
            fed_cached: std::sync::Mutex::new(std::collections::HashSet::new()),
            cfg,
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
        let cmks = crate::masterkeys::MasterKeys::open(store.clone(), cmk).await?;
        let tickets = Arc::new(Tickets::new(store.clone(), cmks.clone(), cfg.session_lifetime));
        let keyring = Keyring::open(store.clone(), cmks, &cfg.org_domain).await?;
        Ok(Self::new(cfg, store, server, keyring, tickets, auth, limiter))
    }

    /// The CMKs (the active one, rotation, BYOK).
    pub fn master_keys(&self) -> &Arc<crate::masterkeys::MasterKeys> {
        self.keyring.master_keys()
    }

    /// Re-wraps under the active CMK whatever is still under another one: an
    /// interrupted rotation, or something a node wrapped under the previous
    /// CMK before it saw the new one (start-up and housekeeping call this).
    pub async fn finish_cmk_rotation(&self) -> Result<crate::masterkeys::Rewrapped, EngineError> {
        self.master_keys().rewrap_all(&self.keyring, &self.tickets, now_ms()).await
    }

    /// Also answers handshakes encrypted to these static keys (a rotation's
    /// overlap: the next key, or the previous one). Each must have a `kid`.
    pub fn with_other_static_keys(mut self, keys: Vec<jose::RsaPrivateKey>) -> Result<Self, EngineError> {
        for k in keys {
            self.other_servers.push(ServerKey::new(k, &self.cfg.kms_domain)?);
        }
        Ok(self)
    }

    /// Every static key served, the current one first.
    pub fn static_keys(&self) -> Vec<&ServerKey> {
        std::iter::once(&self.server).chain(self.other_servers.iter()).collect()
    }

    /// The static key a client pinned, by kid; the current one when unknown.
    fn server_for(&self, kid: Option<&str>) -> &ServerKey {
        kid.and_then(|k| self.other_servers.iter().find(|s| s.public_key().kid() == Some(k))).unwrap_or(&self.server)
    }

    /// Lets this KMS ask the peers its org policy lists, presenting its
    /// static key with this certificate (DER). Answering peers needs nothing
    /// beyond the policy.
    pub fn with_federation(mut self, cert_der: &[u8]) -> Self {
        self.federation = Some(Arc::new(crate::federation::Federation::new(cert_der)));
        self
    }

    /// Federation, when this KMS may ask peers.
    pub fn federation(&self) -> Option<&Arc<crate::federation::Federation>> {
        self.federation.as_ref()
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

    /// The org policy (for transports that push resets to cut-off principals).
    pub fn policies(&self) -> &Arc<Policies> {
        &self.policies
    }

    /// Whether `p` is an org admin: a bootstrap admin of the configuration or
    /// one the policy names. Never a service, compliance officer or bearer.
    fn is_admin(&self, policy: &Loaded, p: &Principal) -> bool {
        match p {
            // A service's own token is never an admin, whatever its subject.
            Principal::User { user_id, client_credentials: false } => {
                self.cfg.admins.iter().any(|a| a == user_id) || policy.policy.admins.iter().any(|a| a == user_id)
            }
            _ => false,
        }
    }

    /// The registry entry of a service principal (a certificate service, or a
    /// user id the policy lists as a service).
    fn service_of<'a>(&self, policy: &'a Loaded, p: &Principal) -> Option<&'a kms_protocol::policy::ServicePolicy> {
        match p {
            Principal::User { .. } | Principal::Service { .. } => policy.service(&p.id(&self.cfg.kms_domain)),
            _ => None,
        }
    }

    /// Why policy refuses `p` (on `client_id`) everything, if it does.
    fn cut_off_reason(&self, policy: &Loaded, p: &Principal, client_id: &str) -> Option<&'static str> {
        use kms_protocol::policy::ServiceState;
        let id = p.id(&self.cfg.kms_domain);
        match p {
            Principal::Anonymous { .. } => None,
            Principal::User { .. } | Principal::Compliance { .. } if policy.policy.disabled(&id, client_id) => {
                Some("the org has disabled this user or device")
            }
            Principal::Service { .. } => match policy.service(&id) {
                None => Some("this service is not allowed by the org's policy"),
                Some(s) if s.state == ServiceState::Revoked => Some("the org has revoked this service"),
                Some(_) => None,
            },
            Principal::User { client_credentials, .. } => match policy.service(&id) {
                Some(s) if s.state == ServiceState::Revoked => Some("the org has revoked this service"),
                // Default deny for services, whether they hold a certificate or a token.
                None if *client_credentials => Some("this service is not allowed by the org's policy"),
                _ => None,
            },
            Principal::Compliance { .. } => None,
            Principal::Peer { kms_domain, .. } if policy.policy.peer(kms_domain).is_none() => {
                Some("this org does not federate with that KMS (any more)")
            }
            Principal::Peer { .. } => None,
        }
    }

    /// Appends one entry the operation mapping does not make (session resets).
    async fn audit_entry(&self, entry: audit::NewEntry) -> bool {
        let Some(log) = &self.audit else { return true };
        match log.append(entry).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, "the audit log cannot be written");
                metrics::counter!("kms_audit_failures_total").increment(1);
                false
            }
        }
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
        let admin = match self.policies.current().await {
            Ok(policy) => self.is_admin(&policy, p),
            Err(_) => matches!(p, Principal::User { .. }) && self.cfg.admins.contains(&pid),
        };
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

    /// The session behind a session message and its URI (for transports that push resets).
    pub async fn session_of(&self, compact: &str) -> Option<(SessionState, KmsUri)> {
        let Ok(Incoming::Session { kid, .. }) = classify(compact) else { return None };
        let uri = KmsUri::parse(&kid, &self.cfg.kms_domain).ok()?;
        let (s, _) = self.tickets.open_any(uri.id()?, now_ms()).await.ok()?;
        Some((s, uri))
    }

    /// An unsolicited signed 499 for `session` (at `uri`), signed with the static key its client pinned.
    pub fn push_reset(&self, session: &SessionState, uri: &KmsUri, reason: &str) -> Option<String> {
        self.server_for(session.static_kid.as_deref()).push_reset(uri, reason).ok()
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
        self.reset_as(None, source, request_id, reason)
    }

    /// A reset signed with the static key the session's client pinned (`kid`), else the current one.
    fn reset_as(
        &self,
        kid: Option<&str>,
        source: Option<&str>,
        request_id: Option<&str>,
        reason: &str,
    ) -> Result<String, Throttled> {
        self.limiter.check(source)?;
        self.server_for(kid).reset(request_id, reason).map_err(|e| {
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
                        return self.reset_as(s.static_kid.as_deref(), source, rid.as_deref(), &problem.to_string());
                    }
                    Err(EngineError::Ticket(t)) => return self.reset(source, None, &t.to_string()),
                    Err(e) => {
                        tracing::error!(error = %e, "opening a session ticket failed");
                        return self.reset(source, None, "the KMS could not open the session");
                    }
                };
                let req = match open_request(&session.shared, &uri, &jwe) {
                    Ok(r) => r,
                    Err(_) => {
                        return self.reset_as(
                            session.static_kid.as_deref(),
                            source,
                            None,
                            "request could not be decrypted",
                        )
                    }
                };
                Ok(self.session_request(&session, &uri, &req).await)
            }
        }
    }

    async fn handshake(&self, jwe: &jose::Jwe) -> String {
        // The key the client encrypted to is the key it pinned: answer with that one.
        let server = self.server_for(jwe.header().kid.as_deref());
        let opened = match server.open_handshake(jwe) {
            Ok(o) => o,
            Err(_) => return server.reset(None, "request could not be decrypted").unwrap_or_default(),
        };
        let rid = opened.request.request_id.clone();
        let signed_error = |status: Status, reason: &str| {
            server.sign(SigningContext::Ecdhe, &err(status, &rid, reason)).unwrap_or_default()
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
            Err(e) => return signed_error(e.status(), e.reason()),
        };
        match self.policies.current().await {
            Ok(policy) => {
                if let Some(reason) = self.cut_off_reason(&policy, &principal, &client.client_id) {
                    return signed_error(Status::FORBIDDEN, reason);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the org policy failed");
                return signed_error(Status::UNAVAILABLE, "the KMS cannot read the org policy; retry");
            }
        }
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
        let accepted = server.accept_handshake(&opened, &grant, |shared| {
            let (ticket, _) =
                Tickets::seal_with(&ticket_key, shared, &pid, &client.client_id, expires, server.public_key().kid())
                    .map_err(|_| kms_protocol::ProtocolError::InvalidField {
                        field: "key",
                        reason: "ticket sealing failed",
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
    async fn authenticate(&self, cred: &Credential, binding: &str, request_id: &str) -> Result<Principal, Refused> {
        if let (Some(jwk), Some(peer)) = (&cred.jwk, cred.user_id.as_deref().and_then(|u| u.strip_prefix("kms://"))) {
            return self.authenticate_peer(peer, jwk, cred, binding, request_id).await;
        }
        if cred.jwk.is_some() {
            let Some(roots) = &self.service_roots else {
                return Err(AuthError(
                    "this KMS accepts no service (jwk) credentials: no trust roots are configured".into(),
                )
                .into());
            };
            let id = crate::service_auth::authenticate_service(roots, cred, binding, request_id, now_ms() / 1000)?;
            return Ok(Principal::Service { service_id: id });
        }
        let token = cred.bearer.as_ref().ok_or_else(|| AuthError("a bearer credential is required".into()))?;
        let token = token.expose();
        if let Some(p) = self.anonymous_principal(token).await {
            return Ok(p?);
        }
        let user = self.auth.authenticate(token).await?;
        let client_credentials = user.client_credentials;
        let Some(obo) = cred.on_behalf_of.as_deref().filter(|o| !o.is_empty()) else {
            return Ok(Principal::User { user_id: user.user_id, client_credentials });
        };
        if obo.eq_ignore_ascii_case(&user.user_id) {
            return Ok(Principal::User { user_id: user.user_id, client_credentials });
        }
        // Compliance: the officer's own token, someone else's authorizations; own org only.
        // Authenticated, but not allowed to act for someone else: 403, not 401.
        let subject = kms_protocol::policy::own_user(obo, &self.cfg.org_domain, "onBehalfOf")
            .map_err(|_| Refused::Forbidden("onBehalfOf must name a user of this KMS's own org"))?;
        let policy = self.policies.current().await.map_err(|_| Refused::Unavailable)?;
        if !policy.policy.compliance_officers.iter().any(|o| o == &user.user_id) {
            return Err(Refused::Forbidden("onBehalfOf is allowed only for the org's compliance officers"));
        }
        Ok(Principal::Compliance { officer: user.user_id, subject, case: None })
    }

    /// Another org's KMS: its static key, proven over this request, certified
    /// as the policy's trust for that peer says; it may ask only for its own users.
    async fn authenticate_peer(
        &self,
        domain: &str,
        jwk: &jose::Jwk,
        cred: &Credential,
        binding: &str,
        request_id: &str,
    ) -> Result<Principal, Refused> {
        use kms_protocol::pop::{verify_pop, PopRefusal, DEFAULT_MAX_SKEW_SECS};
        let domain = domain.to_ascii_lowercase();
        if cred.bearer.is_some() {
            return Err(AuthError("a credential has either a bearer or a jwk, not both".into()).into());
        }
        let proof = cred.proof.as_deref().ok_or_else(|| {
            AuthError(kms_protocol::ProtocolError::ProofOfPossession(PopRefusal::Missing).to_string())
        })?;
        let now = now_ms() / 1000;
        verify_pop(jwk, proof, binding, request_id, now, DEFAULT_MAX_SKEW_SECS)
            .map_err(|e| AuthError(e.to_string()))?;
        let policy = self.policies.current().await.map_err(|_| Refused::Unavailable)?;
        let Some(peer) = policy.policy.peer(&domain) else {
            return Err(Refused::Forbidden("this org does not federate with that KMS"));
        };
        crate::service_auth::verify_peer(&peer.trust, jwk, &domain, crate::service_auth::PeerRole::Client, now)?;
        let user = match cred.on_behalf_of.as_deref().filter(|o| !o.is_empty()) {
            None => None,
            Some(o) => Some(
                kms_protocol::policy::own_user(o, &peer.org_domain, "onBehalfOf")
                    .map_err(|_| Refused::Forbidden("a federated KMS may ask only for users of its own org"))?,
            ),
        };
        Ok(Principal::Peer { kms_domain: domain, org_domain: peer.org_domain.clone(), user })
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
        // Bearers signed before a static key rotation stay valid through the overlap.
        let signer = self.server_for(jws.header().kid.as_deref());
        let Ok(payload) = jws.verify(VerifyKey::Rsa(signer.public_key())) else { return bad() };
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
            Err(EngineError::KekDestroyed) => {
                let resp = err(Status::NOT_FOUND, &req.request_id, "the org's retention policy destroyed this key");
                seal_response(&session.shared, uri, &resp).unwrap_or_default()
            }
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
        let mut principal = match self.authenticate(&client.credential, &binding, rid).await {
            Ok(p) => p,
            Err(e) => return Ok(Sealed::Fresh(err(e.status(), rid, e.reason()))),
        };
        if principal.id(&self.cfg.kms_domain) != session.principal || client.client_id != session.client_id {
            return Ok(Sealed::Fresh(err(Status::UNAUTHORIZED, rid, "the credential does not match the session")));
        }
        // Org policy applies to every request of any kind, on every node within POLICY_CACHE.
        let policy = self.policies.current().await?;
        if let Some(reason) = self.cut_off_reason(&policy, &principal, &client.client_id) {
            self.tickets.revoke(session).await?;
            let kind = match principal {
                Principal::Service { .. } => audit::ActorKind::Service,
                Principal::Peer { .. } => audit::ActorKind::PeerKms,
                _ if policy.service(&session.principal).is_some() => audit::ActorKind::Service,
                _ => audit::ActorKind::User,
            };
            let entry =
                audit::NewEntry::new(&session.principal, kind, audit::Action::SessionReset, audit::Outcome::Denied)
                    .detail("reason", reason)
                    .detail("client", client.client_id.clone());
            if !self.audit_entry(entry).await {
                return Ok(Sealed::Fresh(err(Status::UNAVAILABLE, rid, "the KMS cannot write its audit log")));
            }
            return Ok(Sealed::Fresh(err(Status::FORBIDDEN, rid, reason)));
        }
        if let Principal::Compliance { case, .. } = &mut principal {
            *case = match req.body.case_id.as_deref() {
                None => None,
                Some(c) => match KmsUri::parse(c, &self.cfg.kms_domain)
                    .ok()
                    .or_else(|| KmsUri::object(&self.cfg.kms_domain, Kind::Cases, c).ok())
                    .filter(|u| u.is_object(Kind::Cases) && u.domain() == self.cfg.kms_domain)
                {
                    Some(u) => Some(u.to_string()),
                    None => {
                        return Ok(Sealed::Fresh(err(Status::BAD_REQUEST, rid, "caseId is not a case of this KMS")))
                    }
                },
            };
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
            | Operation::RetrievePolicy
            | Operation::ListCases
            | Operation::RetrieveCase { .. }
    )
}

/// Operations.
impl Engine {
    async fn execute(&self, session: &SessionState, uri: &KmsUri, p: &Principal, op: &Operation, rid: &str) -> Answer {
        let now = now_ms();
        let pid = p.id(&self.cfg.kms_domain);
        let policy = self.policies.current().await?;
        let user = match p {
            Principal::User { .. } | Principal::Service { .. } | Principal::Compliance { .. } => Some(pid.as_str()),
            Principal::Anonymous { .. } | Principal::Peer { .. } => None,
        };
        // Another org's KMS reads for its users, and does nothing else.
        if let Principal::Peer { .. } = p {
            if !matches!(op, Operation::Ping | Operation::DeleteEphemeralKey { .. }) {
                return Box::pin(self.serve_peer(&policy, p, op, now, rid)).await;
            }
        }
        if matches!(p, Principal::Compliance { .. })
            && !matches!(
                op,
                Operation::RetrieveKey { .. }
                    | Operation::RetrieveResourceKeys { .. }
                    | Operation::RetrieveResource { .. }
                    | Operation::RetrieveAuthorizations { .. }
                    | Operation::Ping
                    | Operation::DeleteEphemeralKey { .. }
            )
        {
            return Ok(err(
                Status::FORBIDDEN,
                rid,
                "an onBehalfOf request may only read keys, resources and authorizations",
            ));
        }
        // A service outside its spaces, or a compliance request outside its case, is refused whatever it asks.
        if let Some(res) = op_resource(op) {
            if let Some(s) = self.service_of(&policy, p) {
                if !s.spaces.covers(&res.to_string()) {
                    return Ok(err(Status::FORBIDDEN, rid, "the org does not allow this service in this space"));
                }
            }
            if let Some(reason) = self.case_refusal(&policy, p, &res.to_string(), None).await? {
                return Ok(err(Status::FORBIDDEN, rid, reason));
            }
        }
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
        // Another org's object: ask its KMS (federation), for this user.
        if let Some(domain) = self.foreign_domain(op) {
            // Boxed: the federation path's future is large, and the request path runs on small stacks.
            return Box::pin(self.federated(&policy, p, op, &domain, now, rid)).await;
        }
        // Admins are users; a service certificate never is one.
        let admin = self.is_admin(&policy, p);
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
            Operation::RetrieveKey { uri: key } => self.retrieve_key(session, &policy, p, key, now, rid).await,
            Operation::RetrievePolicy => {
                if !admin {
                    return Ok(err(Status::FORBIDDEN, rid, "only org admins may read the org policy"));
                }
                let mut resp = Response::new(Status::OK, rid);
                resp.policy = Some(policy.object());
                Ok(resp)
            }
            Operation::UpdatePolicy { policy: new, version } => {
                if !admin {
                    return Ok(err(Status::FORBIDDEN, rid, "only org admins may change the org policy"));
                }
                match self.policies.update((**new).clone(), *version, now).await {
                    Ok((loaded, old)) => {
                        let changes = crate::policy::changes(&old.policy, &loaded.policy);
                        if let Some(f) = &self.federation {
                            f.forget();
                        }
                        tracing::info!(
                            version = loaded.version,
                            by = pid.as_str(),
                            changes = changes.len(),
                            "org policy changed"
                        );
                        // Decisions cached before the change must not outlive it.
                        self.forget_authorizations().await;
                        let mut resp = Response::new(Status::OK, rid);
                        if !changes.is_empty() {
                            resp.reason = Some(changes.join("; "));
                        }
                        resp.policy = Some(loaded.object());
                        Ok(resp)
                    }
                    Err(UpdateError::Conflict(v)) => Ok(err(
                        Status::CONFLICT,
                        rid,
                        &format!("the policy changed since version {version} (now {v}); read it again and retry"),
                    )),
                    Err(UpdateError::Engine(e)) => Err(e),
                }
            }
            Operation::CreateCase { case } => self.create_case(&policy, p, case, now, rid).await,
            Operation::ListCases => {
                if !(admin || self.case_party(&policy, &pid)) {
                    return Ok(forbidden(rid));
                }
                let mut list = Vec::new();
                for d in self.store.list_documents(CASE_KIND).await? {
                    list.push(decode_case(&d.body)?);
                }
                let mut resp = Response::new(Status::OK, rid);
                resp.cases = Some(list);
                Ok(resp)
            }
            Operation::RetrieveCase { uri: c } => {
                if !(admin || self.case_party(&policy, &pid)) {
                    return Ok(forbidden(rid));
                }
                let Some((case, _)) = self.load_case(c).await? else { return Ok(not_found(rid)) };
                let mut resp = Response::new(Status::OK, rid);
                resp.case = Some(case);
                Ok(resp)
            }
            Operation::UpdateCase { uri: c, decision } => {
                self.decide_case(&policy, p, admin, c, *decision, now, rid).await
            }
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
                let res_uri = resource.to_string();
                let mut keys = Vec::with_capacity(recs.len());
                for r in &recs {
                    // Services and compliance cases see only the content their scope covers.
                    if self.release_refusal(&policy, p, &res_uri, r.bind_date).await?.is_some() {
                        continue;
                    }
                    keys.push(self.key_object(r, true).await?);
                }
                let mut resp = Response::new(Status::OK, rid);
                resp.keys = Some(keys);
                resp.rekey_after = self.rekey_after(&policy, rid_, &res_uri).await?.map(from_ms);
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
                resp.rekey_after = self.rekey_after(&policy, id, &res.to_string()).await?.map(from_ms);
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
            Operation::RetrievePublicKey => {
                if !admin {
                    return Ok(err(Status::FORBIDDEN, rid, "only org admins may manage the CMK (BYOK)"));
                }
                self.master_keys().admin_public_key(rid).await
            }
            Operation::CreateCmk { customer_master_key, alg, assigned_org_id, .. } => {
                if !admin {
                    return Ok(err(Status::FORBIDDEN, rid, "only org admins may create a CMK"));
                }
                if assigned_org_id.as_deref().is_some_and(|o| !o.eq_ignore_ascii_case(&self.cfg.org_domain)) {
                    return Ok(err(Status::FORBIDDEN, rid, "this KMS serves only its own org's CMK"));
                }
                let ctx = self.cmk_admin(&pid, now, rid);
                self.master_keys().admin_create(&ctx, customer_master_key.as_deref(), *alg).await
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
                    _ => return self.master_keys().admin_list(&self.cmk_admin(&pid, now, rid)).await,
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
                if target.is_object(Kind::Cmk) {
                    let Some(id) = self.own_id(target) else { return Ok(not_found(rid)) };
                    return self.master_keys().admin_update(&self.cmk_admin(&pid, now, rid), id, *state).await;
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

    /// What the CMK administration needs from the engine.
    fn cmk_admin<'a>(&'a self, by: &'a str, now: i64, rid: &'a str) -> crate::masterkeys::AdminCtx<'a> {
        crate::masterkeys::AdminCtx {
            keyring: &self.keyring,
            tickets: &self.tickets,
            kms_domain: &self.cfg.kms_domain,
            org_domain: &self.cfg.org_domain,
            by,
            now,
            rid,
        }
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

    async fn retrieve_key(
        &self,
        session: &SessionState,
        policy: &Loaded,
        p: &Principal,
        key: &KmsUri,
        now: i64,
        rid: &str,
    ) -> Answer {
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
            (None, Principal::Anonymous { .. } | Principal::Compliance { .. } | Principal::Peer { .. }) => false,
            (Some(res), _) => self.authorized(p, res, now).await?,
        };
        if !allowed {
            return Ok(forbidden(rid));
        }
        if let Some(res) = &rec.resource_id {
            let res_uri = self.uri(Kind::Resources, res).to_string();
            if let Some(reason) = self.release_refusal(policy, p, &res_uri, rec.bind_date).await? {
                return Ok(err(Status::FORBIDDEN, rid, reason));
            }
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
        // Keyed by policy version too: a policy change (scopes, org agents) never reuses older decisions.
        let version = self.policies.current().await?.version;
        let key = (resource_id.to_string(), format!("{}#{version}", self.principal_key(p)));
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
        match p {
            // The subject's authorizations apply, so the subject's decision is the one to cache.
            Principal::Compliance { subject, .. } => subject.clone(),
            _ => p.id(&self.cfg.kms_domain),
        }
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
            // Peers are served by `serve_peer`, which checks their org's authorizations itself.
            Principal::Peer { .. } => Ok(false),
            Principal::User { .. } | Principal::Service { .. } | Principal::Compliance { .. } => {
                let user_id = self.principal_key(p);
                // An org-wide agent reads every org resource in its scope, no member needed.
                let policy = self.policies.current().await?;
                if let Some(s) = self.service_of(&policy, p) {
                    let uri = self.uri(Kind::Resources, resource_id).to_string();
                    if s.org_agent() && s.spaces.covers(&uri) {
                        if let Some(view) = self.store.get_resource(resource_id).await? {
                            if self.org_owns(&view.resource.creator) {
                                return Ok(true);
                            }
                        }
                    }
                }
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

/// What one retention sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// KEKs destroyed (each one retention period of keys).
    pub keks_destroyed: u32,
    /// Content keys destroyed with them.
    pub keys_shredded: u64,
    /// Keys a legal hold kept (moved under a current KEK).
    pub keys_held: u64,
    /// Expired KEKs kept because a held key under them could not be moved.
    pub keks_kept: u32,
}

/// Retention: crypto-shredding by period, legal holds.
impl Engine {
    /// Destroys every KEK whose period ended more than the org's retention
    /// ago, with the keys under it, after moving the keys a legal hold covers
    /// under the current period's KEK. Each destruction is audited before it
    /// happens (no audit, no destruction). Nothing happens without a
    /// retention policy. `now` is a parameter so that tests can move time.
    pub async fn retention_sweep(&self, now: i64) -> Result<SweepReport, EngineError> {
        let mut report = SweepReport::default();
        let policy = self.policies.current().await?;
        let Some(retention) = &policy.policy.retention else { return Ok(report) };
        let cutoff = now - i64::from(retention.days) * 86_400_000;
        let period = self.keyring.period_ms();
        // What the holds cover: spaces named, spaces of the people named, keys they created.
        let mut held_resources = std::collections::HashSet::new();
        let mut held_users = std::collections::HashSet::new();
        for hold in policy.policy.legal_holds.values() {
            for s in &hold.spaces {
                if let Ok(u) = KmsUri::parse_absolute(s) {
                    if let Some(id) = self.own_id(&u) {
                        held_resources.insert(id.to_string());
                    } else if let Some(id) = u.id().filter(|_| u.is_object(Kind::Resources)) {
                        // Another org's space: the hold keeps this KMS's copies of its keys.
                        held_resources.insert(crate::federation::cached_id(u.domain(), id));
                    }
                }
            }
            for u in &hold.users {
                held_users.insert(u.clone());
                held_resources.extend(self.store.resources_of(u).await?);
            }
        }
        for kek in self.store.list_keks(Some(&self.cfg.org_domain)).await? {
            let start = crate::keyring::period_start(kek.create_date, period);
            if start + period > cutoff {
                continue;
            }
            let (mut after, mut doomed, mut held, mut stuck) = (String::new(), 0u64, 0u64, false);
            loop {
                let batch = self.store.keys_wrapped_by(&kek.id, &after, 500).await?;
                let Some(last) = batch.last() else { break };
                after = last.id.clone();
                for k in &batch {
                    let covered = k.resource_id.as_ref().is_some_and(|r| held_resources.contains(r))
                        || held_users.contains(&k.user_id);
                    if !covered {
                        doomed += 1;
                        continue;
                    }
                    match self.keyring.rewrap(k, now).await {
                        Ok(true) => held += 1,
                        Ok(false) => doomed += 1, // moved or gone meanwhile
                        Err(e) => {
                            tracing::error!(kek = %kek.id, error = %e, "a held key could not be moved; keeping its KEK");
                            stuck = true;
                        }
                    }
                }
            }
            if stuck {
                report.keks_kept += 1;
                continue;
            }
            let entry = audit::NewEntry::new(
                format!("kms://{}", self.cfg.kms_domain),
                audit::ActorKind::Kms,
                audit::Action::RetentionShred,
                audit::Outcome::Allowed,
            )
            .detail("kek", self.uri(Kind::Kek, &kek.id).to_string())
            .detail("keys", doomed as i64)
            .detail("held", held as i64)
            .detail("period_start", start)
            .detail("period_end", start + period)
            .detail("retention_days", i64::from(retention.days));
            if !self.audit_entry(entry).await {
                return Err(EngineError::Internal("the audit log cannot be written: nothing was shredded"));
            }
            let n = self.keyring.destroy(&kek.id).await?;
            tracing::info!(kek = %kek.id, keys = n, held, "retention: KEK and its keys destroyed");
            report.keks_destroyed += 1;
            report.keys_shredded += n;
            report.keys_held += held;
        }
        if report.keks_destroyed > 0 {
            // Cached key records must not outlive their KEK here (other nodes: within KEK_CACHE).
            self.bound_keys.write().await.clear();
        }
        Ok(report)
    }

    /// Runs [`Engine::retention_sweep`] every `every` (spawn it).
    pub async fn retention_loop(self: Arc<Self>, every: Duration) {
        loop {
            match self.retention_sweep(now_ms()).await {
                Ok(r) if r.keks_destroyed > 0 || r.keks_kept > 0 => tracing::info!(?r, "retention sweep"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "retention sweep failed"),
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// Document kind of compliance cases in the store.
const CASE_KIND: &str = "case";

fn decode_case(body: &str) -> Result<kms_protocol::policy::CaseObject, EngineError> {
    serde_json::from_str(body)
        .map_err(|e| EngineError::Policy(format!("a stored compliance case does not decode: {e}")))
}

/// The resource an operation acts on, when it names one.
fn op_resource(op: &Operation) -> Option<&KmsUri> {
    match op {
        Operation::BindKey { resource, .. }
        | Operation::RetrieveResourceKeys { resource, .. }
        | Operation::RetrieveResourceAccesses { resource, .. }
        | Operation::CreateAuthorizations { resource, .. }
        | Operation::RetrieveAuthorizations { resource, .. }
        | Operation::DeleteAuthorizationByAuthId { resource, .. }
        | Operation::DeleteAuthorizations { resource, .. } => Some(resource),
        Operation::RetrieveResource { uri } => Some(uri),
        _ => None,
    }
}

/// Org policy: service scopes, compliance cases, forced re-keying.
impl Engine {
    /// Whether a resource created by `creator` belongs to this org.
    fn org_owns(&self, creator: &str) -> bool {
        creator.rsplit_once('@').is_some_and(|(_, d)| d.eq_ignore_ascii_case(&self.cfg.org_domain))
    }

    /// Why a key of `resource` bound at `bind` may not go to `p`, if it may not.
    async fn release_refusal(
        &self,
        policy: &Loaded,
        p: &Principal,
        resource: &str,
        bind: Option<i64>,
    ) -> Result<Option<&'static str>, EngineError> {
        if let Some(s) = self.service_of(policy, p) {
            if !s.may_read(resource, bind.map(from_ms)) {
                return Ok(Some("outside the content the org allows this service to read"));
            }
        }
        self.case_refusal(policy, p, resource, bind).await
    }

    /// Why a compliance request may not reach `resource` (key bound at `bind`), if it may not.
    async fn case_refusal(
        &self,
        policy: &Loaded,
        p: &Principal,
        resource: &str,
        bind: Option<i64>,
    ) -> Result<Option<&'static str>, EngineError> {
        let Principal::Compliance { officer, case, .. } = p else { return Ok(None) };
        let Some(case_uri) = case else {
            return Ok(policy
                .policy
                .approval
                .is_some()
                .then_some("the org requires an approved compliance case: name it in caseId"));
        };
        let Ok(uri) = KmsUri::parse_absolute(case_uri) else { return Ok(Some("no such compliance case")) };
        let Some((c, _)) = self.load_case(&uri).await? else { return Ok(Some("no such compliance case")) };
        if &c.officer != officer {
            return Ok(Some("this compliance case was opened by another officer"));
        }
        if c.state != kms_protocol::policy::CaseState::Approved {
            return Ok(Some("this compliance case is not approved (or is closed)"));
        }
        if !c.covers(resource, bind.map(from_ms)) {
            return Ok(Some("outside what this compliance case covers"));
        }
        Ok(None)
    }

    /// When clients must stop using the resource's older keys: the latest
    /// revocation, disabling or content denial that touched someone who
    /// could read it (directly authorized, or an org agent in scope).
    async fn rekey_after(&self, policy: &Loaded, resource_id: &str, uri: &str) -> Result<Option<i64>, EngineError> {
        let pol = &policy.policy;
        let services = pol.services.iter().filter(|(_, s)| {
            s.revoked_at.is_some() || s.denials.iter().any(|d| d.space.as_deref().is_none_or(|x| x == uri))
        });
        let mut candidates: Vec<(&str, i64)> = Vec::new();
        for (id, s) in services {
            let mut t = s.revoked_at.map(|d| to_ms(&d)).unwrap_or(i64::MIN);
            for d in &s.denials {
                let open_ended = d.until.is_none_or(|u| d.since.is_none_or(|since| u > since));
                if d.space.as_deref().is_none_or(|x| x == uri) && open_ended {
                    t = t.max(d.since.map(|d| to_ms(&d)).unwrap_or(i64::MIN));
                }
            }
            if t == i64::MIN {
                continue;
            }
            if s.org_agent() && s.spaces.covers(uri) {
                candidates.push(("", t));
            } else {
                candidates.push((id.as_str(), t));
            }
        }
        for (u, since) in &pol.disabled_users {
            if let Some(t) = since.since {
                candidates.push((u.as_str(), to_ms(&t)));
            }
        }
        for (u, m) in &pol.disabled_clients {
            if let Some(t) = m.values().filter_map(|s| s.since).max() {
                candidates.push((u.as_str(), to_ms(&t)));
            }
        }
        if candidates.is_empty() {
            return Ok(None);
        }
        let auths = self.store.list_authorizations(resource_id, None).await?;
        let authorized = |id: &str| id.is_empty() || auths.iter().any(|a| a.auth_id.as_deref() == Some(id));
        Ok(candidates.into_iter().filter(|(id, _)| authorized(id)).map(|(_, t)| t).max())
    }

    /// Officers, approvers: who may see cases.
    fn case_party(&self, policy: &Loaded, pid: &str) -> bool {
        policy.policy.compliance_officers.iter().any(|o| o == pid)
            || policy.policy.approval.as_ref().is_some_and(|a| a.approvers.iter().any(|x| x == pid))
    }

    async fn load_case(&self, uri: &KmsUri) -> Result<Option<(kms_protocol::policy::CaseObject, i64)>, EngineError> {
        let Some(id) = self.own_id(uri).filter(|_| uri.is_object(Kind::Cases)) else { return Ok(None) };
        match self.store.get_document(CASE_KIND, id).await? {
            Some(d) => Ok(Some((decode_case(&d.body)?, d.version))),
            None => Ok(None),
        }
    }

    async fn create_case(
        &self,
        policy: &Loaded,
        p: &Principal,
        case: &kms_protocol::policy::CaseRequest,
        now: i64,
        rid: &str,
    ) -> Answer {
        use kms_protocol::policy::{CaseObject, CaseState};
        let Principal::User { user_id, .. } = p else { return Ok(forbidden(rid)) };
        if !policy.policy.compliance_officers.iter().any(|o| o == user_id) {
            return Ok(err(Status::FORBIDDEN, rid, "only compliance officers may open compliance cases"));
        }
        let required = policy.policy.approval.as_ref().map_or(0, |a| a.required);
        let id = uuid::Uuid::new_v4().to_string();
        let obj = CaseObject {
            uri: self.uri(Kind::Cases, &id),
            officer: user_id.clone(),
            spaces: case.spaces.clone(),
            from: case.from,
            until: case.until,
            reason: case.reason.clone(),
            state: if required == 0 { CaseState::Approved } else { CaseState::Pending },
            approvals: Vec::new(),
            required,
            create_date: from_ms(now),
        };
        let body = serde_json::to_string(&obj).map_err(|e| EngineError::Policy(e.to_string()))?;
        if !self.store.put_document(CASE_KIND, &id, 0, &body, now).await? {
            return Err(EngineError::Internal("case id collision"));
        }
        let mut resp = Response::new(Status::CREATED, rid);
        resp.case = Some(obj);
        Ok(resp)
    }

    #[allow(clippy::too_many_arguments)]
    async fn decide_case(
        &self,
        policy: &Loaded,
        p: &Principal,
        admin: bool,
        uri: &KmsUri,
        decision: kms_protocol::policy::CaseDecision,
        now: i64,
        rid: &str,
    ) -> Answer {
        use kms_protocol::policy::{CaseDecision, CaseState};
        let Principal::User { user_id, .. } = p else { return Ok(forbidden(rid)) };
        // Approvals race: re-read and compare-and-swap until one write wins.
        for _ in 0..8 {
            let Some((mut case, version)) = self.load_case(uri).await? else { return Ok(not_found(rid)) };
            match decision {
                CaseDecision::Approve | CaseDecision::Deny => {
                    let approver = policy.policy.approval.as_ref().is_some_and(|a| a.approvers.contains(user_id));
                    if !approver {
                        return Ok(err(Status::FORBIDDEN, rid, "only the org's designated approvers may decide cases"));
                    }
                    if &case.officer == user_id {
                        return Ok(err(Status::FORBIDDEN, rid, "an officer may not approve their own case"));
                    }
                    if case.state != CaseState::Pending && case.state != CaseState::Approved {
                        return Ok(err(Status::CONFLICT, rid, "this case is closed or denied"));
                    }
                    if decision == CaseDecision::Deny {
                        case.state = CaseState::Denied;
                    } else if !case.approvals.contains(user_id) {
                        case.approvals.push(user_id.clone());
                    }
                    if case.state == CaseState::Pending && case.approvals.len() as u32 >= case.required {
                        case.state = CaseState::Approved;
                    }
                }
                CaseDecision::Close => {
                    if !(admin || &case.officer == user_id) {
                        return Ok(err(Status::FORBIDDEN, rid, "only the case's officer or an org admin may close it"));
                    }
                    case.state = CaseState::Closed;
                }
            }
            let id = self.own_id(uri).unwrap_or_default().to_string();
            let body = serde_json::to_string(&case).map_err(|e| EngineError::Policy(e.to_string()))?;
            if self.store.put_document(CASE_KIND, &id, version, &body, now).await? {
                let mut resp = Response::new(Status::OK, rid);
                resp.case = Some(case);
                return Ok(resp);
            }
        }
        Ok(err(Status::CONFLICT, rid, "the case kept changing; retry"))
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
