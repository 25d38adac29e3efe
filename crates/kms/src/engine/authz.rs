//! The KMS's authorization rule, whole, in one place.
//!
//! Every session request passes [`Engine::check`] before anything runs, and
//! nothing else in the engine decides who may do what: the operations only
//! execute what `check` granted. The rule, in the order it is applied:
//!
//! 1. **Cut off** ([`Engine::cut_off`], at the handshake and on every request):
//!    disabled users and devices, services the policy does not allow or has
//!    revoked, peer KMSs the org no longer federates with.
//! 2. **The session itself**: any session may ping and end itself, and only itself.
//! 3. **What each kind of principal may ask at all**: a peer KMS reads keys,
//!    resources and authorizations for the users of its org authorized there;
//!    a compliance officer acting `onBehalfOf` reads keys and resources; an
//!    anonymous bearer reads its resource's keys.
//! 4. **Scopes**: a service outside its spaces and a compliance request
//!    outside its approved case are refused whatever they ask.
//! 5. **Another org's object**: only this org's users and officers ask for it,
//!    only read, only from peers the policy lists; the owner's answer then
//!    decides ([`Engine::federated_access`]).
//! 6. **The object**: an unbound key belongs to its creator on the client that
//!    created it; a resource (and its bound keys and authorizations) to those
//!    authorized on it ([`Engine::access`]): directly, through a resource
//!    authorized on it (at most three levels, [`MAX_RESOURCES_VISITED`]
//!    resources), or as an org-wide service in scope; the admin API to org
//!    admins; cases to officers, approvers and admins.
//! 7. **Release** ([`Engine::release_check`], per key): a service reads only
//!    the content its time range allows, a compliance officer only what an
//!    approved case, checked against the approval rule in force now, covers.

use std::borrow::Cow;

use kms_protocol::message::{AuthorizationObject, Operation};
use kms_protocol::policy::{CaseDecision, CaseState, ServicePolicy, ServiceState};
use kms_protocol::{AuthId, Kind, KmsUri, OpClass, Response, Status};
use kms_store::{AuthorizationRecord, KeyRecord};

use super::{Engine, AUTHZ_CACHE, CACHE_CAP, MAX_RESOURCES_VISITED};
use crate::auth::Principal;
use crate::error::EngineError;
use crate::from_ms;
use crate::policy::Loaded;
use crate::session::SessionState;

/// How a request was allowed: recorded with every key release (`via`), and
/// what `…/explain` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Grant {
    /// Any session may ping and end itself.
    Session,
    /// Any authenticated user or allowed service of this org may create keys and resources.
    OrgPrincipal,
    /// The creator of an unbound key, on the client that created it.
    KeyCreator,
    /// The principal's own authorization on the resource.
    Member,
    /// Authorized on this resource (a URI) that is authorized on the one asked about.
    ThroughResource(String),
    /// An org-wide service (`orgAgent`) whose scope covers the resource.
    OrgAgent,
    /// The anonymous bearer of this resource.
    Anonymous,
    /// An org admin.
    Admin,
    /// A compliance officer or approver (cases).
    CaseParty,
    /// A peer KMS, for the users of its org authorized here (with their authorizations).
    Peer(Vec<AuthorizationRecord>),
    /// Another org's object: its KMS is asked, and its answer decides.
    Federated(String),
}

impl Grant {
    /// The `via` recorded in the audit log and shown by transparency and `explain`.
    pub(crate) fn via(&self) -> String {
        match self {
            Grant::Session => "session".into(),
            Grant::OrgPrincipal => "org".into(),
            Grant::KeyCreator => "creator".into(),
            Grant::Member => "member".into(),
            Grant::ThroughResource(r) => format!("resource {r}"),
            Grant::OrgAgent => "org_agent".into(),
            Grant::Anonymous => "anonymous".into(),
            Grant::Admin => "admin".into(),
            Grant::CaseParty => "case_party".into(),
            Grant::Peer(_) => "peer".into(),
            Grant::Federated(d) => format!("federated {d}"),
        }
    }
}

/// Why a request is refused: one variant per reason, each with its status
/// and words fixed here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The object does not exist here (or has expired).
    NotFound,
    /// Not authorized on the object.
    NotAuthorized,
    /// An unbound key that expired before it was bound.
    UnboundKeyExpired,
    /// `create /ecdhe` inside a session.
    HandshakeInSession,
    /// Deleting another session's ephemeral key.
    OtherSession,
    /// Disabled, revoked, not allowed, not federated (the reason).
    CutOff(&'static str),
    /// An `onBehalfOf` request that is not a read.
    ComplianceReadsOnly,
    /// An anonymous bearer asking for more than its keys.
    AnonymousReadsOnly,
    /// A peer KMS asking for more than reads.
    PeerReadsOnly,
    /// A peer KMS asking about a resource none of its users is authorized on.
    PeerHasNoUser,
    /// A service outside the spaces the org allows it.
    ServiceOutOfScope,
    /// A service asking for content outside its time range or denials.
    ServiceOutsideContent,
    /// A compliance request outside an approved case (the reason).
    Case(Cow<'static, str>),
    /// Writing to another org's resource.
    ForeignWrite(String),
    /// Someone other than this org's users or officers asking for another org's object.
    ForeignNotUser,
    /// Another org's object, from a KMS this org does not federate with.
    NotFederated(String),
    /// This KMS has no federation certificate.
    FederationNotSetUp,
    /// The other org's KMS lists no authorization for this user.
    NotListedByPeer(String),
    /// The org policy forbids anonymous authorizations.
    AnonymousForbidden,
    /// Linking a resource one is not authorized on.
    LinkNotAuthorized,
    /// The admin API, by someone who is not an org admin (what was asked).
    AdminOnly(&'static str),
    /// Opening a case without being a compliance officer.
    OfficersOnly,
    /// Deciding a case without being an approver.
    ApproversOnly,
    /// An officer approving their own case.
    OwnCase,
    /// Closing a case without being its officer or an admin.
    CloseOnly,
}

impl Refusal {
    /// The status the refusal is answered with.
    pub(crate) fn status(&self) -> Status {
        match self {
            Refusal::NotFound | Refusal::UnboundKeyExpired => Status::NOT_FOUND,
            Refusal::HandshakeInSession => Status::BAD_REQUEST,
            Refusal::FederationNotSetUp => Status::UNAVAILABLE,
            _ => Status::FORBIDDEN,
        }
    }

    /// The words the refusal is answered with (ids and URIs only, never secrets).
    pub(crate) fn reason(&self) -> Cow<'static, str> {
        match self {
            Refusal::NotFound => "no such object".into(),
            Refusal::NotAuthorized => "not authorized".into(),
            Refusal::UnboundKeyExpired => "the unbound key expired before it was bound".into(),
            Refusal::HandshakeInSession => "create /ecdhe must be encrypted to the static key".into(),
            Refusal::OtherSession => "a session may delete only its own ephemeral key".into(),
            Refusal::CutOff(r) => (*r).into(),
            Refusal::ComplianceReadsOnly => {
                "an onBehalfOf request may only read keys, resources and authorizations".into()
            }
            Refusal::AnonymousReadsOnly => "an anonymous authorization may only retrieve keys".into(),
            Refusal::PeerReadsOnly => "a federated KMS may only read keys, resources and authorizations".into(),
            Refusal::PeerHasNoUser => "no user of your org is authorized on this resource".into(),
            Refusal::ServiceOutOfScope => "the org does not allow this service in this space".into(),
            Refusal::ServiceOutsideContent => "outside the content the org allows this service to read".into(),
            Refusal::Case(r) => r.clone(),
            Refusal::ForeignWrite(d) => format!(
                "{d} is another organization's KMS: its resources are managed by its own members; \
                 this KMS only reads from it (federation)"
            )
            .into(),
            Refusal::ForeignNotUser => "only this org's users reach other organizations' KMSs".into(),
            Refusal::NotFederated(d) => format!("this org does not federate with {d}").into(),
            Refusal::FederationNotSetUp => "this KMS is not set up to ask other KMSs (no certificate)".into(),
            Refusal::NotListedByPeer(d) => {
                format!("not authorized: the KMS {d} lists no authorization for you on this resource").into()
            }
            Refusal::AnonymousForbidden => "org policy forbids anonymous authorizations".into(),
            Refusal::LinkNotAuthorized => {
                "an authId names a resource you are not authorized on: only its members may link it".into()
            }
            Refusal::AdminOnly(what) => format!("only org admins may {what}").into(),
            Refusal::OfficersOnly => "only compliance officers may open compliance cases".into(),
            Refusal::ApproversOnly => "only the org's designated approvers may decide cases".into(),
            Refusal::OwnCase => "an officer may not approve their own case".into(),
            Refusal::CloseOnly => "only the case's officer or an org admin may close it".into(),
        }
    }

    /// The answer to request `rid`.
    pub(crate) fn response(&self, rid: &str) -> Response {
        Response::error(self.status(), rid, self.reason().as_ref())
    }
}

/// What [`Engine::check`] granted, with the objects it loaded to decide
/// (so that the operation does not read them again).
#[derive(Debug)]
pub(crate) struct Checked {
    /// How the request was allowed.
    pub grant: Grant,
    /// The key the operation names (retrieve key).
    pub key: Option<KeyRecord>,
    /// The authorization the operation names (delete one authorization).
    pub authorization: Option<AuthorizationRecord>,
}

impl Checked {
    fn grant(grant: Grant) -> Self {
        Self { grant, key: None, authorization: None }
    }
}

type Decision = Result<Result<Checked, Refusal>, EngineError>;

/// Whether a decision may come from (and go to) the one-second decision cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cache {
    /// Reads: a grant at most [`AUTHZ_CACHE`] old will do.
    Use,
    /// Changes, links, explanations: the store's current state only.
    Bypass,
}

/// How many of `case`'s approvals count under the org's approval rule in
/// force now (approvers it names now, never the case's officer), and how
/// many it requires: the same count decides case transitions and releases.
pub(crate) fn approvals_in_force(
    rule: Option<&kms_protocol::policy::ApprovalPolicy>,
    case: &kms_protocol::policy::CaseObject,
) -> (usize, u32) {
    match rule {
        Some(rule) => {
            (case.approvals.iter().filter(|a| rule.approvers.contains(a) && **a != case.officer).count(), rule.required)
        }
        None => (case.approvals.len(), 0),
    }
}

fn refuse(r: Refusal) -> Decision {
    Ok(Err(r))
}

fn allow(g: Grant) -> Decision {
    Ok(Ok(Checked::grant(g)))
}

impl Engine {
    /// Whether `p` may run `op` in `session` (at `session_uri`) now, and how.
    pub(super) async fn check(
        &self,
        policy: &Loaded,
        session: &SessionState,
        session_uri: &KmsUri,
        p: &Principal,
        op: &Operation,
        now: i64,
    ) -> Decision {
        let class = op.class();
        match class {
            OpClass::Handshake => return refuse(Refusal::HandshakeInSession),
            OpClass::Session => {
                if let Operation::DeleteEphemeralKey { uri } = op {
                    if uri != session_uri {
                        return refuse(Refusal::OtherSession);
                    }
                }
                return allow(Grant::Session);
            }
            _ => {}
        }
        // What each kind of principal may ask at all.
        match p {
            Principal::Peer { .. } => return self.check_peer(p, op, now).await,
            Principal::Compliance { .. }
                if !matches!(class, OpClass::ReadKey | OpClass::ReadResourceKeys | OpClass::ReadResource) =>
            {
                return refuse(Refusal::ComplianceReadsOnly)
            }
            _ => {}
        }
        // A service outside its spaces, or a compliance request outside its case, is refused whatever it asks.
        if let Some(res) = op.resource() {
            let res = res.to_string();
            if self.service_of(policy, p).is_some_and(|s| !s.spaces.covers(&res)) {
                return refuse(Refusal::ServiceOutOfScope);
            }
            if let Some(r) = self.case_refusal(policy, p, &res, None).await? {
                return refuse(r);
            }
        }
        if matches!(p, Principal::Anonymous { .. })
            && !matches!(
                op,
                Operation::RetrieveKey { .. }
                    | Operation::RetrieveResourceKeys { .. }
                    | Operation::RetrieveResource { .. }
            )
        {
            return refuse(Refusal::AnonymousReadsOnly);
        }
        if let Some(domain) = self.foreign_domain(op) {
            return Ok(self.check_foreign(policy, p, op, domain));
        }
        let admin = self.is_admin(policy, p);
        match op {
            Operation::CreateKeys { .. } => allow(Grant::OrgPrincipal),
            Operation::CreateResource { anonymous, auth_ids, .. } => {
                if *anonymous > 0 && !self.cfg.allow_anonymous {
                    return refuse(Refusal::AnonymousForbidden);
                }
                if let Some(r) = self.check_links(p, auth_ids, now).await? {
                    return refuse(r);
                }
                allow(Grant::OrgPrincipal)
            }
            Operation::RetrieveKey { uri } => self.check_key(policy, session, p, uri, now).await,
            // The caller must be authorized on the resource and have created the key.
            Operation::BindKey { key, resource } => {
                let (Some(kid), Some(res)) = (self.own_id(key), self.own_id(resource)) else {
                    return refuse(Refusal::NotFound);
                };
                let checked = match self.check_resource(p, res, now, true).await? {
                    Ok(c) => c,
                    Err(r) => return refuse(r),
                };
                match self.key_record(kid).await? {
                    None => refuse(Refusal::NotFound),
                    Some(k) if k.user_id != p.id(&self.cfg.kms_domain) => refuse(Refusal::NotAuthorized),
                    Some(_) => Ok(Ok(checked)),
                }
            }
            Operation::CreateAuthorizations { resource, anonymous, auth_ids, .. } => {
                if *anonymous > 0 && !self.cfg.allow_anonymous {
                    return refuse(Refusal::AnonymousForbidden);
                }
                if let Some(r) = self.check_links(p, auth_ids, now).await? {
                    return refuse(r);
                }
                match self.own_id(resource) {
                    Some(id) => self.check_resource(p, id, now, true).await,
                    None => refuse(Refusal::NotFound),
                }
            }
            Operation::RetrieveResource { uri: resource }
            | Operation::RetrieveResourceKeys { resource, .. }
            | Operation::RetrieveAuthorizations { resource, .. }
            | Operation::DeleteAuthorizationByAuthId { resource, .. }
            | Operation::DeleteAuthorizations { resource, .. } => match self.own_id(resource) {
                Some(id) => self.check_resource(p, id, now, op.mutates()).await,
                None => refuse(Refusal::NotFound),
            },
            Operation::DeleteAuthorization { uri } => {
                let Some(aid) = self.own_id(uri) else { return refuse(Refusal::NotFound) };
                let Some(a) = self.store.get_authorization(aid).await? else { return refuse(Refusal::NotFound) };
                match self.check_resource(p, &a.resource_id, now, true).await? {
                    Ok(mut c) => {
                        c.authorization = Some(a);
                        Ok(Ok(c))
                    }
                    Err(r) => refuse(r),
                }
            }
            // Members (and admins) may see who else received their space's keys, and why someone may read it.
            Operation::RetrieveResourceAccesses { resource, .. } | Operation::ExplainAccess { resource, .. } => {
                let Some(id) = self.own_id(resource) else { return refuse(Refusal::NotFound) };
                if matches!(p, Principal::Anonymous { .. }) {
                    return refuse(Refusal::NotAuthorized);
                }
                if admin {
                    return allow(Grant::Admin);
                }
                self.check_resource(p, id, now, false).await
            }
            _ if class == OpClass::Admin => {
                if admin {
                    return allow(Grant::Admin);
                }
                refuse(Refusal::AdminOnly(match op {
                    Operation::RetrievePolicy => "read the org policy",
                    Operation::UpdatePolicy { .. } => "change the org policy",
                    Operation::RetrievePublicKey => "manage the CMK (BYOK)",
                    Operation::CreateCmk { .. } => "create a CMK",
                    _ => "manage the org's master keys",
                }))
            }
            Operation::CreateCase { .. } => match p {
                Principal::User { user_id, .. } if policy.policy.compliance_officers.contains(user_id) => {
                    allow(Grant::CaseParty)
                }
                _ => refuse(Refusal::OfficersOnly),
            },
            Operation::ListCases | Operation::RetrieveCase { .. } => {
                if admin {
                    allow(Grant::Admin)
                } else if self.case_party(policy, &p.id(&self.cfg.kms_domain)) {
                    allow(Grant::CaseParty)
                } else {
                    refuse(Refusal::NotAuthorized)
                }
            }
            Operation::UpdateCase { uri, decision } => {
                let Principal::User { user_id, .. } = p else { return refuse(Refusal::NotAuthorized) };
                let Some((case, _)) = self.load_case(uri).await? else { return refuse(Refusal::NotFound) };
                match decision {
                    CaseDecision::Approve | CaseDecision::Deny => {
                        if !policy.policy.approval.as_ref().is_some_and(|a| a.approvers.contains(user_id)) {
                            return refuse(Refusal::ApproversOnly);
                        }
                        if &case.officer == user_id {
                            return refuse(Refusal::OwnCase);
                        }
                        allow(Grant::CaseParty)
                    }
                    CaseDecision::Close if admin => allow(Grant::Admin),
                    CaseDecision::Close if &case.officer == user_id => allow(Grant::CaseParty),
                    CaseDecision::Close => refuse(Refusal::CloseOnly),
                }
            }
            // Session operations were decided above; an operation the rule
            // does not know is refused (fail closed).
            _ => refuse(Refusal::NotAuthorized),
        }
    }

    /// A resource of ours: those authorized on it. Changes (binding a key,
    /// authorizing, de-authorizing) are decided on the store's current state,
    /// never on a cached grant: a removal on another node must stop a write
    /// at once, not within the cache's second.
    async fn check_resource(&self, p: &Principal, resource_id: &str, now: i64, write: bool) -> Decision {
        let cache = if write { Cache::Bypass } else { Cache::Use };
        match self.access_with(p, resource_id, now, cache).await? {
            Some(g) => allow(g),
            None => refuse(Refusal::NotAuthorized),
        }
    }

    /// One key: unbound, its creator on its client; bound, those authorized
    /// on its resource, within what the policy lets them read.
    async fn check_key(
        &self,
        policy: &Loaded,
        session: &SessionState,
        p: &Principal,
        key: &KmsUri,
        now: i64,
    ) -> Decision {
        let Some(kid) = self.own_id(key) else { return refuse(Refusal::NotFound) };
        let Some(rec) = self.key_record(kid).await? else { return refuse(Refusal::NotFound) };
        let grant = match (&rec.resource_id, p) {
            (None, Principal::User { .. } | Principal::Service { .. }) => {
                if rec.expiration_date <= now {
                    return refuse(Refusal::UnboundKeyExpired);
                }
                if p.id(&self.cfg.kms_domain) != rec.user_id || session.client_id != rec.client_id {
                    return refuse(Refusal::NotAuthorized);
                }
                Grant::KeyCreator
            }
            (None, _) => return refuse(Refusal::NotAuthorized),
            (Some(res), _) => {
                let Some(g) = self.access(p, res, now).await? else { return refuse(Refusal::NotAuthorized) };
                let res_uri = self.uri(Kind::Resources, res).to_string();
                if let Some(r) = self.release_check(policy, p, &res_uri, rec.bind_date).await? {
                    return refuse(r);
                }
                g
            }
        };
        Ok(Ok(Checked { grant, key: Some(rec), authorization: None }))
    }

    /// Another org's KMS: reads only, of resources on which a user of its org is authorized.
    async fn check_peer(&self, p: &Principal, op: &Operation, now: i64) -> Decision {
        let Principal::Peer { kms_domain, org_domain, .. } = p else { return refuse(Refusal::NotAuthorized) };
        let mut key = None;
        let res_id = match op {
            Operation::RetrieveKey { uri } => {
                let Some(kid) = self.own_id(uri) else { return refuse(Refusal::NotFound) };
                let Some(rec) = self.store.get_key(kid).await? else { return refuse(Refusal::NotFound) };
                // Unbound keys belong to their creator alone.
                let Some(res) = rec.resource_id.clone() else { return refuse(Refusal::NotAuthorized) };
                key = Some(rec);
                res
            }
            Operation::RetrieveResource { uri: r }
            | Operation::RetrieveResourceKeys { resource: r, .. }
            | Operation::RetrieveAuthorizations { resource: r, .. } => match self.own_id(r) {
                Some(id) => id.to_string(),
                None => return refuse(Refusal::NotFound),
            },
            _ => return refuse(Refusal::PeerReadsOnly),
        };
        match self.resource_expiry(&res_id).await? {
            None => return refuse(Refusal::NotFound),
            Some(Some(e)) if e <= now => return refuse(Refusal::NotFound),
            _ => {}
        }
        let speaks_for = |id: &str| match id.rsplit_once('@') {
            Some((_, d)) if !id.starts_with("kms://") => d.eq_ignore_ascii_case(org_domain),
            _ => KmsUri::parse_absolute(id).is_ok_and(|u| u.domain() == kms_domain.as_str()),
        };
        let theirs: Vec<AuthorizationRecord> = self
            .store
            .list_authorizations(&res_id, None)
            .await?
            .into_iter()
            .filter(|a| a.auth_id.as_deref().is_some_and(speaks_for))
            .collect();
        if theirs.is_empty() {
            return refuse(Refusal::PeerHasNoUser);
        }
        Ok(Ok(Checked { grant: Grant::Peer(theirs), key, authorization: None }))
    }

    /// Another org's object: our users and officers read it through federation.
    fn check_foreign(
        &self,
        policy: &Loaded,
        p: &Principal,
        op: &Operation,
        domain: String,
    ) -> Result<Checked, Refusal> {
        if !matches!(
            op,
            Operation::RetrieveKey { .. }
                | Operation::RetrieveResource { .. }
                | Operation::RetrieveResourceKeys { .. }
                | Operation::RetrieveAuthorizations { .. }
        ) {
            return Err(Refusal::ForeignWrite(domain));
        }
        if !matches!(p, Principal::User { .. } | Principal::Compliance { .. }) {
            return Err(Refusal::ForeignNotUser);
        }
        if policy.policy.peer(&domain).is_none() {
            return Err(Refusal::NotFederated(domain));
        }
        if self.federation.is_none() {
            return Err(Refusal::FederationNotSetUp);
        }
        Ok(Checked::grant(Grant::Federated(domain)))
    }

    /// Whether the other org's answer (`ours`: the authorizations of our org
    /// on its resource) lets `p` read: `subject` listed, or authorized here on
    /// one of our resources it lists.
    pub(super) async fn federated_access(
        &self,
        p: &Principal,
        subject: &str,
        ours: &[&AuthorizationObject],
        now: i64,
    ) -> Result<bool, EngineError> {
        for a in ours {
            let id = a.auth_id.as_deref().unwrap_or_default();
            if id == subject {
                return Ok(true);
            }
            // One of our resources as authId: everyone authorized there here.
            if let Some(own) = KmsUri::parse_absolute(id).ok().filter(|u| u.is_object(Kind::Resources)) {
                if let Some(own_id) = self.own_id(&own) {
                    if self.access(p, own_id, now).await?.is_some() {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }

    /// Why policy refuses `p` (on `client_id`) everything, if it does.
    pub(super) fn cut_off(&self, policy: &Loaded, p: &Principal, client_id: &str) -> Option<Refusal> {
        let id = p.id(&self.cfg.kms_domain);
        let reason = match p {
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
        };
        reason.map(Refusal::CutOff)
    }

    /// Why a key of `resource` bound at `bind` may not go to `p`, if it may not.
    pub(super) async fn release_check(
        &self,
        policy: &Loaded,
        p: &Principal,
        resource: &str,
        bind: Option<i64>,
    ) -> Result<Option<Refusal>, EngineError> {
        if let Some(s) = self.service_of(policy, p) {
            if !s.may_read(resource, bind.map(from_ms)) {
                return Ok(Some(Refusal::ServiceOutsideContent));
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
    ) -> Result<Option<Refusal>, EngineError> {
        let Principal::Compliance { officer, case, .. } = p else { return Ok(None) };
        let refusal = |r: &'static str| Ok(Some(Refusal::Case(r.into())));
        let Some(case_uri) = case else {
            if policy.policy.approval.is_some() {
                return refusal("the org requires an approved compliance case: name it in caseId");
            }
            return Ok(None);
        };
        let Ok(uri) = KmsUri::parse_absolute(case_uri) else { return refusal("no such compliance case") };
        let Some((c, _)) = self.load_case(&uri).await? else { return refusal("no such compliance case") };
        if &c.officer != officer {
            return refusal("this compliance case was opened by another officer");
        }
        if c.state != CaseState::Approved {
            return refusal("this compliance case is not approved (or is closed)");
        }
        // The approval rule in force now decides, not the one the case was opened under:
        // only approvals by people who are approvers now count.
        let (valid, required) = approvals_in_force(policy.policy.approval.as_ref(), &c);
        if (valid as u32) < required {
            return Ok(Some(Refusal::Case(
                format!(
                    "this compliance case has {valid} approval(s) by current approvers; \
                     the org's rule now requires {required}"
                )
                .into(),
            )));
        }
        if !c.covers(resource, bind.map(from_ms)) {
            return refusal("outside what this compliance case covers");
        }
        Ok(None)
    }

    /// Whether `p` is an org admin: a bootstrap admin of the configuration or
    /// one the policy names. Never a service, compliance officer or bearer.
    pub(super) fn is_admin(&self, policy: &Loaded, p: &Principal) -> bool {
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
    pub(super) fn service_of<'a>(&self, policy: &'a Loaded, p: &Principal) -> Option<&'a ServicePolicy> {
        match p {
            Principal::User { .. } | Principal::Service { .. } => policy.service(&p.id(&self.cfg.kms_domain)),
            _ => None,
        }
    }

    /// Officers, approvers: who may see cases.
    pub(super) fn case_party(&self, policy: &Loaded, pid: &str) -> bool {
        policy.policy.compliance_officers.iter().any(|o| o == pid)
            || policy.policy.approval.as_ref().is_some_and(|a| a.approvers.iter().any(|x| x == pid))
    }

    /// How `p` may act on the resource, if it may: directly, through a
    /// resource authId (everyone authorized there), at most three levels
    /// deep, or as an org-wide service in scope. Positive answers are reused
    /// for at most [`AUTHZ_CACHE`].
    pub(super) async fn access(
        &self,
        p: &Principal,
        resource_id: &str,
        now: i64,
    ) -> Result<Option<Grant>, EngineError> {
        self.access_with(p, resource_id, now, Cache::Use).await
    }

    /// [`Engine::access`], reading (and filling) the decision cache or not:
    /// changes, links and explanations are decided on the store's current state.
    pub(super) async fn access_with(
        &self,
        p: &Principal,
        resource_id: &str,
        now: i64,
        cache: Cache,
    ) -> Result<Option<Grant>, EngineError> {
        match self.resource_expiry(resource_id).await? {
            None => return Ok(None),
            Some(Some(e)) if e <= now => return Ok(None),
            _ => {}
        }
        if cache == Cache::Bypass {
            return self.access_uncached(p, resource_id, now).await;
        }
        // Keyed by policy version too: a policy change (scopes, org agents) never reuses older decisions.
        let version = self.policies.current().await?.version;
        let key = (resource_id.to_string(), format!("{}#{version}", self.principal_key(p)));
        if let Some((t, g)) = self.authz.read().await.get(&key) {
            if t.elapsed() < AUTHZ_CACHE {
                return Ok(Some(g.clone()));
            }
        }
        let generation = self.authz_generation.load(std::sync::atomic::Ordering::Acquire);
        let started = std::time::Instant::now();
        let grant = self.access_uncached(p, resource_id, now).await?;
        if let Some(g) = &grant {
            let mut c = self.authz.write().await;
            // A deletion while we looked: the answer may already be stale; do not keep it.
            if self.authz_generation.load(std::sync::atomic::Ordering::Acquire) == generation {
                if c.len() >= CACHE_CAP {
                    c.clear();
                }
                c.insert(key, (started, g.clone()));
            }
        }
        Ok(grant)
    }

    fn principal_key(&self, p: &Principal) -> String {
        match p {
            // The subject's authorizations apply, so the subject's decision is the one to cache.
            Principal::Compliance { subject, .. } => subject.clone(),
            _ => p.id(&self.cfg.kms_domain),
        }
    }

    async fn access_uncached(&self, p: &Principal, resource_id: &str, now: i64) -> Result<Option<Grant>, EngineError> {
        let user_id = match p {
            Principal::Anonymous { authorization_id, resource_id: r } => {
                if r != resource_id {
                    return Ok(None);
                }
                let Some(a) = self.store.get_authorization(authorization_id).await? else { return Ok(None) };
                if a.expiration_date.is_none_or(|e| e <= now) {
                    return Ok(None);
                }
                // A link counts only while its creator holds an authorization of their own.
                let creator_member = self.store.has_authorization(resource_id, &[a.creator.as_str()], now).await?;
                return Ok(creator_member.then_some(Grant::Anonymous));
            }
            // Peers are decided by `check_peer`, with their org's authorizations.
            Principal::Peer { .. } => return Ok(None),
            Principal::User { .. } | Principal::Service { .. } | Principal::Compliance { .. } => self.principal_key(p),
        };
        // An org-wide agent reads every org resource in its scope, no member needed.
        let policy = self.policies.current().await?;
        if let Some(s) = self.service_of(&policy, p) {
            let uri = self.uri(Kind::Resources, resource_id).to_string();
            if s.org_agent() && s.spaces.covers(&uri) {
                if let Some(view) = self.store.get_resource(resource_id).await? {
                    if self.org_owns(&view.resource.creator) {
                        return Ok(Some(Grant::OrgAgent));
                    }
                }
            }
        }
        self.graph_access(&user_id, resource_id, now).await
    }

    /// The authorization graph from `resource_id`: `user_id`'s own
    /// authorization, or one on a resource authorized there (breadth first,
    /// at most three levels and [`MAX_RESOURCES_VISITED`] resources).
    async fn graph_access(&self, user_id: &str, resource_id: &str, now: i64) -> Result<Option<Grant>, EngineError> {
        let mut visited = 0usize;
        // Each frontier entry remembers the resource authorized on the one asked about that led there.
        let mut frontier: Vec<(String, Option<String>)> = vec![(resource_id.to_string(), None)];
        let mut seen = std::collections::HashSet::new();
        for _depth in 0..4 {
            let mut next = Vec::new();
            for (res, via) in frontier {
                if !seen.insert(res.clone()) {
                    continue;
                }
                // Bounded work per check, however the resource graph was built.
                visited += 1;
                if visited > MAX_RESOURCES_VISITED {
                    return Ok(None);
                }
                if self.store.has_authorization(&res, &[user_id], now).await? {
                    return Ok(Some(match via {
                        None => Grant::Member,
                        Some(v) => Grant::ThroughResource(v),
                    }));
                }
                for a in self.store.list_authorizations(&res, None).await? {
                    let Some(aid) = a.auth_id else { continue };
                    let Ok(u) = KmsUri::parse_absolute(&aid) else { continue };
                    if let (true, Some(id)) = (u.is_object(Kind::Resources), self.own_id(&u)) {
                        // A resource link counts only while its creator holds an
                        // authorization of their own here (the removal rule, at read
                        // time too: a link made in a race with a removal leads nowhere).
                        if !self.store.has_authorization(&res, &[a.creator.as_str()], now).await? {
                            continue;
                        }
                        if matches!(self.resource_expiry(id).await?, Some(e) if e.is_none_or(|e| e > now)) {
                            let first = via.clone().unwrap_or_else(|| u.to_string());
                            next.push((id.to_string(), Some(first)));
                        }
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        Ok(None)
    }

    /// Linking a resource of ours as an authId (its members become readers
    /// here) is for those authorized on it: nobody extends, or probes, what
    /// they cannot read. Unknown resources are left to the operation (404).
    async fn check_links(&self, p: &Principal, auth_ids: &[AuthId], now: i64) -> Result<Option<Refusal>, EngineError> {
        for a in auth_ids {
            let AuthId::Resource(r) = a else { continue };
            let Some(id) = self.own_id(r) else { continue };
            if self.resource_expiry(id).await?.is_none() {
                continue;
            }
            if self.access_with(p, id, now, Cache::Bypass).await?.is_none() {
                return Ok(Some(Refusal::LinkNotAuthorized));
            }
        }
        Ok(None)
    }

    /// The principal an authId stands for when the rule is asked about it
    /// (`explain`, and whether an authorization's creator still has access).
    pub(super) fn principal_for(&self, auth_id: &AuthId) -> Option<Principal> {
        match auth_id {
            AuthId::User(u) => Some(match u.strip_prefix("service:") {
                Some(s) => Principal::Service { service_id: s.to_string() },
                None => Principal::User { user_id: u.clone(), client_credentials: false },
            }),
            _ => None,
        }
    }
}
