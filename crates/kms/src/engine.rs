//! The KMS engine: compact message in, compact message out. No transport code.
//!
//! [`Engine::handle`] classifies a message (handshake or session), checks the
//! session ticket and the credential, runs the one operation the request
//! names, and seals the answer. Client mistakes become responses with a
//! status; only internal failures are logged, never with keys or tokens.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kms_protocol::channel::ServerKey;
use kms_protocol::message::Operation;
use kms_protocol::{classify, Incoming, Kind, KmsUri, Realm, Response, Status};
use kms_store::{KeyRecord, Store};
use tokio::sync::RwLock;

use crate::auth::{Authenticator, Principal};
use crate::error::EngineError;
use crate::keyring::Keyring;
use crate::limit::RateLimiter;
use crate::now_ms;
use crate::policy::{Loaded, Policies};
use crate::session::{SessionState, Tickets};

mod admin;
mod authz;
mod cases;
mod channel;
mod federated;
mod keys;
mod resources;
mod retention;

use authz::{Checked, Grant};
use resources::Removal;
pub use retention::SweepReport;

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
    authz: RwLock<HashMap<(String, String), (std::time::Instant, Grant)>>,
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

    /// Records `op`'s outcome (and how it was granted) in the audit log
    /// (fail closed: if the entry cannot be written, the answer becomes a 503
    /// and reveals nothing).
    async fn audited(
        &self,
        p: &Principal,
        op: &Operation,
        resp: Response,
        grant: Option<&Grant>,
        rid: &str,
    ) -> Response {
        let Some(log) = &self.audit else { return resp };
        let pid = p.id(&self.cfg.kms_domain);
        let admin = match self.policies.current().await {
            Ok(policy) => self.is_admin(&policy, p),
            Err(_) => matches!(p, Principal::User { .. }) && self.cfg.admins.contains(&pid),
        };
        let via = grant.map(Grant::via);
        let entries = crate::audit::entries_for(p, &pid, admin, op, &resp, via.as_deref());
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
}

/// Operations.
impl Engine {
    /// Decides `op` for `p` ([`Engine::check`], the one authorization rule),
    /// then runs it. Returns the answer and how it was granted (for the audit).
    async fn execute(
        &self,
        session: &SessionState,
        uri: &KmsUri,
        p: &Principal,
        op: &Operation,
        rid: &str,
    ) -> Result<(Response, Option<Grant>), EngineError> {
        let now = now_ms();
        let policy = self.policies.current().await?;
        let checked = match self.check(&policy, session, uri, p, op, now).await? {
            Ok(c) => c,
            Err(refusal) => return Ok((refusal.response(rid), None)),
        };
        let resp = self.run(session, &policy, p, op, &checked, now, rid).await?;
        Ok((resp, Some(checked.grant)))
    }

    /// Runs an operation [`Engine::check`] allowed.
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        session: &SessionState,
        policy: &Loaded,
        p: &Principal,
        op: &Operation,
        checked: &Checked,
        now: i64,
        rid: &str,
    ) -> Answer {
        let pid = p.id(&self.cfg.kms_domain);
        match &checked.grant {
            // Boxed: these futures are large, and the request path runs on small stacks.
            Grant::Peer(theirs) => {
                return Box::pin(self.serve_peer(policy, op, checked.key.clone(), theirs, rid)).await
            }
            Grant::Federated(domain) => return Box::pin(self.federated(policy, p, op, domain, now, rid)).await,
            _ => {}
        }
        match op {
            Operation::Ping => Ok(Response::new(Status::OK, rid)),
            Operation::DeleteEphemeralKey { .. } => {
                self.tickets.revoke(session).await?;
                Ok(Response::new(Status::NO_CONTENT, rid))
            }
            Operation::CreateKeys { count } => self.create_keys(session, &pid, *count, now, rid).await,
            Operation::BindKey { key, resource } => self.bind_key(&pid, key, resource, now, rid).await,
            Operation::RetrieveKey { .. } => self.retrieve_key(checked, rid).await,
            Operation::RetrieveResourceKeys { resource, bound_after, bound_before, count } => {
                self.resource_keys(policy, p, resource, (*bound_after, *bound_before, *count), rid).await
            }
            Operation::RetrieveResourceAccesses { resource, after, count } => {
                self.accesses(resource, *after, *count, rid).await
            }
            Operation::ExplainAccess { resource, auth_id } => {
                self.explain(policy, self.is_admin(policy, p), resource, auth_id, now, rid).await
            }
            Operation::CreateResource { auth_ids, key_uris, anonymous, ttl } => {
                self.create_resource(&pid, auth_ids, key_uris, *anonymous, *ttl, now, rid).await
            }
            Operation::RetrieveResource { uri: res } => self.retrieve_resource(policy, res, rid).await,
            Operation::CreateAuthorizations { resource, auth_ids, anonymous, role_uri } => {
                self.create_authorizations(&pid, resource, auth_ids, *anonymous, role_uri, now, rid).await
            }
            Operation::RetrieveAuthorizations { resource, auth_id } => {
                self.retrieve_authorizations(resource, auth_id.as_ref(), rid).await
            }
            Operation::DeleteAuthorization { .. } => {
                let a = checked.authorization.as_ref().ok_or(EngineError::Internal("authorization not loaded"))?;
                self.remove_authorizations(&a.resource_id, Removal::One(&a.id), now, rid).await
            }
            Operation::DeleteAuthorizationByAuthId { resource, auth_id } => {
                let id = self.own_id(resource).unwrap_or_default();
                self.remove_authorizations(id, Removal::AuthIds(std::slice::from_ref(auth_id)), now, rid).await
            }
            Operation::DeleteAuthorizations { resource, auth_ids } => {
                let id = self.own_id(resource).unwrap_or_default();
                self.remove_authorizations(id, Removal::AuthIds(auth_ids), now, rid).await
            }
            Operation::RetrievePolicy
            | Operation::UpdatePolicy { .. }
            | Operation::RetrievePublicKey
            | Operation::CreateCmk { .. }
            | Operation::ListMasterKeys { .. }
            | Operation::CreateKek { .. }
            | Operation::UpdateMasterKey { .. } => self.admin(policy, &pid, op, now, rid).await,
            Operation::CreateCase { case } => self.create_case(policy, p, case, now, rid).await,
            Operation::ListCases => self.list_cases(rid).await,
            Operation::RetrieveCase { uri: c } => self.retrieve_case(c, rid).await,
            Operation::UpdateCase { uri: c, decision } => self.decide_case(policy, p, c, *decision, now, rid).await,
            Operation::CreateEphemeralKey { .. } => unreachable!("refused by the authorization rule"),
            _ => Ok(err(Status::BAD_REQUEST, rid, "unsupported operation")),
        }
    }

    fn own_id<'a>(&self, uri: &'a KmsUri) -> Option<&'a str> {
        (uri.domain() == self.cfg.kms_domain).then(|| uri.id()).flatten()
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
