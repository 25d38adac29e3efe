//! Resources and their authorizations: creating them, reading them, and
//! removing people completely.

use std::collections::HashMap;

use kms_protocol::channel::SigningContext;
use kms_protocol::message::{AuthorizationObject, ResourceObject};
use kms_protocol::{AuthId, Kind, KmsUri, Response, Status};
use kms_store::{AuthorizationRecord, CreateResourceOutcome, ResourceRecord};

use super::{err, ms, not_found, Answer, Engine, WithRid};
use crate::auth::AnonClaims;
use crate::error::EngineError;
use crate::policy::Loaded;
use crate::{from_ms, to_ms};

/// Which authorizations a removal names.
pub(crate) enum Removal<'a> {
    /// One, by its id.
    One(&'a str),
    /// Those of these authIds.
    AuthIds(&'a [AuthId]),
}

/// Whether an authorization stands for a principal (a user, group or
/// service id) rather than for a resource's members or an anonymous bearer.
fn names_principal(a: &AuthorizationRecord) -> bool {
    a.auth_id.as_deref().is_some_and(|id| !id.starts_with(kms_protocol::uri::SCHEME))
}

impl Engine {
    /// `retrieve <resource>`: the resource, with the re-keying hint.
    pub(super) async fn retrieve_resource(&self, policy: &Loaded, res: &KmsUri, rid: &str) -> Answer {
        let Some(id) = self.own_id(res) else { return Ok(not_found(rid)) };
        let Some(view) = self.store.get_resource(id).await? else { return Ok(not_found(rid)) };
        let mut resp = Response::new(Status::OK, rid);
        resp.resource = Some(self.resource_object(&view));
        resp.rekey_after = self.rekey_after(policy, id, &res.to_string()).await?.map(from_ms);
        Ok(resp)
    }

    /// `retrieve <resource>/keys`: the bound keys the caller may read (a
    /// service's or a case's scope leaves some out), newest bind first when cut.
    pub(super) async fn resource_keys(
        &self,
        policy: &Loaded,
        p: &crate::auth::Principal,
        resource: &KmsUri,
        (bound_after, bound_before, count): (
            Option<kms_protocol::date::Date>,
            Option<kms_protocol::date::Date>,
            Option<u32>,
        ),
        rid: &str,
    ) -> Answer {
        let Some(id) = self.own_id(resource) else { return Ok(not_found(rid)) };
        let recs = self
            .store
            .list_resource_keys(id, bound_after.map(|d| to_ms(&d)), bound_before.map(|d| to_ms(&d)), count)
            .await?;
        let res_uri = resource.to_string();
        let mut keys = Vec::with_capacity(recs.len());
        for r in &recs {
            if self.release_check(policy, p, &res_uri, r.bind_date).await?.is_some() {
                continue;
            }
            keys.push(self.key_object(r, true).await?);
        }
        let mut resp = Response::new(Status::OK, rid);
        resp.keys = Some(keys);
        resp.rekey_after = self.rekey_after(policy, id, &res_uri).await?.map(from_ms);
        Ok(resp)
    }

    /// `create /authorizations`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn create_authorizations(
        &self,
        creator: &str,
        resource: &KmsUri,
        auth_ids: &[AuthId],
        anonymous: u32,
        role_uri: &Option<String>,
        now: i64,
        rid: &str,
    ) -> Answer {
        let Some(id) = self.own_id(resource) else { return Ok(not_found(rid)) };
        if let Some(r) = self.check_auth_ids(auth_ids, rid).await? {
            return Ok(r);
        }
        if let Some(role) = role_uri {
            if role.is_empty() || role.len() > 256 {
                return Ok(err(Status::BAD_REQUEST, rid, "roleUri must be 1 to 256 characters"));
            }
        }
        let expiry = self.resource_expiry(id).await?.flatten();
        let (recs, bearers) =
            match self.authorization_records(id, creator, auth_ids, role_uri.clone(), anonymous, expiry, now) {
                Ok(x) => x,
                Err(r) => return Ok(r.with_rid(rid)),
            };
        let created = self.store.create_authorizations(&recs).await?;
        let mut resp = Response::new(Status::CREATED, rid);
        resp.authorizations = Some(created.iter().map(|a| self.authorization_object(a, bearers.get(&a.id))).collect());
        Ok(resp)
    }

    /// `retrieve <resource>/authorizations[?authId=]`.
    pub(super) async fn retrieve_authorizations(
        &self,
        resource: &KmsUri,
        auth_id: Option<&AuthId>,
        rid: &str,
    ) -> Answer {
        let Some(id) = self.own_id(resource) else { return Ok(not_found(rid)) };
        let filter = auth_id.map(|a| a.to_string());
        let list = self.store.list_authorizations(id, filter.as_deref()).await?;
        let mut resp = Response::new(Status::OK, rid);
        resp.authorizations = Some(list.iter().map(|a| self.authorization_object(a, None)).collect());
        Ok(resp)
    }

    /// Deletes authorizations, then every authorization of the resource that
    /// no member accounts for any more ([`Engine::remove_orphans`]); answers
    /// with all that went.
    pub(super) async fn remove_authorizations(
        &self,
        resource_id: &str,
        what: Removal<'_>,
        now: i64,
        rid: &str,
    ) -> Answer {
        let mut deleted: Vec<AuthorizationRecord> = match what {
            Removal::One(aid) => self.store.delete_authorization(aid).await?.into_iter().collect(),
            Removal::AuthIds(ids) => {
                let ids: Vec<String> = ids.iter().map(|a| a.to_string()).collect();
                self.store.delete_authorizations(resource_id, &ids).await?
            }
        };
        self.forget_authorizations().await;
        if !deleted.is_empty() {
            deleted.extend(self.remove_orphans(resource_id, now).await?);
        }
        Ok(self.deleted(deleted, rid))
    }

    /// Removal is complete: an authorization that stands for no principal (a
    /// resource URI, meaning everyone authorized there, or an anonymous
    /// bearer) lives only as long as the one who created it holds an
    /// authorization of their own on the resource. When someone is removed,
    /// what they set up while a member goes with them, and so does what
    /// anyone set up who was only ever there through such an authorization.
    /// Authorizations of principals stay: the KMS cannot tell a colleague
    /// someone added from a second account of theirs (the SDK, which knows
    /// the member list, removes identities the list does not show).
    async fn remove_orphans(&self, resource_id: &str, now: i64) -> Result<Vec<AuthorizationRecord>, EngineError> {
        let mut removed = Vec::new();
        // Each round only deletes; the list is finite, so this ends. Bounded all the same.
        for _round in 0..16 {
            let auths = self.store.list_authorizations(resource_id, None).await?;
            let mut doomed = Vec::new();
            for a in auths.iter().filter(|a| !names_principal(a)) {
                if !self.store.has_authorization(resource_id, &[a.creator.as_str()], now).await? {
                    doomed.push(a.id.clone());
                }
            }
            if doomed.is_empty() {
                break;
            }
            for id in doomed {
                removed.extend(self.store.delete_authorization(&id).await?);
            }
            self.forget_authorizations().await;
        }
        if !removed.is_empty() {
            tracing::info!(resource = resource_id, removed = removed.len(), "removal took what the removed set up");
        }
        Ok(removed)
    }

    /// `retrieve <resource>/explain?authId=`: the rule applied to one principal, now, uncached.
    pub(super) async fn explain(
        &self,
        policy: &Loaded,
        admin: bool,
        resource: &KmsUri,
        auth_id: &AuthId,
        now: i64,
        rid: &str,
    ) -> Answer {
        let Some(id) = self.own_id(resource) else { return Ok(not_found(rid)) };
        let mut answer = kms_protocol::AccessExplanation {
            auth_id: auth_id.to_string(),
            authorized: false,
            via: None,
            reason: None,
        };
        match self.principal_for(auth_id) {
            None => {
                answer.reason =
                    Some("a resource is not a principal: ask about a user or a service authorized through it".into())
            }
            Some(principal) => {
                // What the org policy says about someone is for org admins; members learn only yes or no.
                let policy_refusal = self.cut_off(policy, &principal, "").or_else(|| {
                    self.service_of(policy, &principal)
                        .filter(|s| !s.spaces.covers(&resource.to_string()))
                        .map(|_| super::authz::Refusal::ServiceOutOfScope)
                });
                if let Some(r) = policy_refusal {
                    answer.reason = Some(if admin {
                        r.reason().into_owned()
                    } else {
                        "the org's policy does not let them read it (an org admin can see why)".into()
                    });
                } else {
                    match self.access_with(&principal, id, now, super::authz::Cache::Bypass).await? {
                        Some(g) => {
                            answer.authorized = true;
                            answer.via = Some(g.via());
                            if admin && self.service_of(policy, &principal).is_some() {
                                answer.reason =
                                    Some("a service reads only the content its time range and denials allow".into());
                            }
                        }
                        None => {
                            answer.reason = Some(
                                "no authorization on this resource, neither directly nor through a resource \
                                 authorized on it"
                                    .into(),
                            )
                        }
                    }
                }
            }
        }
        let mut resp = Response::new(Status::OK, rid);
        resp.access = Some(answer);
        Ok(resp)
    }

    /// `retrieve <resource>/accesses`: every release and refusal of the
    /// resource's keys, from the audit log, with how each was granted. Users
    /// are included: only the member list (at the core, which the client
    /// reads) tells a member reading for herself from anyone else, so the
    /// client leaves those out.
    pub(super) async fn accesses(
        &self,
        resource: &KmsUri,
        after: Option<u64>,
        count: Option<u32>,
        rid: &str,
    ) -> Answer {
        let Some(log) = &self.audit else {
            return Ok(err(Status::UNAVAILABLE, rid, "this KMS keeps no audit log"));
        };
        let limit = count.unwrap_or(100).min(1000);
        let actions = [audit::Action::KeyRelease, audit::Action::KeyDenied];
        let entries =
            match log.entries_by_actions(Some(&resource.to_string()), &actions, after.unwrap_or(0), limit).await {
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
                    via: match e.detail.get("via") {
                        Some(audit::DetailValue::Str(v)) => Some(v.clone()),
                        _ => None,
                    },
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

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn create_resource(
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
    pub(super) async fn check_auth_ids(&self, auth_ids: &[AuthId], rid: &str) -> Result<Option<Response>, EngineError> {
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
    pub(super) fn authorization_records(
        &self,
        resource_id: &str,
        creator: &str,
        auth_ids: &[AuthId],
        role_uri: Option<String>,
        anonymous: u32,
        resource_expiry: Option<i64>,
        now: i64,
    ) -> Result<(Vec<AuthorizationRecord>, HashMap<String, String>), Response> {
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

    pub(super) fn deleted(&self, deleted: Vec<AuthorizationRecord>, rid: &str) -> Response {
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
    pub(super) async fn resource_expiry(&self, id: &str) -> Result<Option<Option<i64>>, EngineError> {
        if let Some(e) = self.resource_expiry.read().await.get(id) {
            return Ok(Some(*e));
        }
        let Some(view) = self.store.get_resource(id).await? else { return Ok(None) };
        let e = view.resource.expiration_date;
        self.resource_expiry.write().await.insert(id.to_string(), e);
        Ok(Some(e))
    }

    /// Forgets cached positive decisions (after any authorization is deleted here).
    pub(super) async fn forget_authorizations(&self) {
        let mut c = self.authz.write().await;
        self.authz_generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        c.clear();
    }

    pub(super) fn resource_object(&self, v: &kms_store::ResourceView) -> ResourceObject {
        ResourceObject {
            uri: self.uri(Kind::Resources, &v.resource.id),
            key_uris: v.key_ids.iter().map(|k| self.uri(Kind::Keys, k)).collect(),
            authorization_uris: v.authorization_ids.iter().map(|a| self.uri(Kind::Authorizations, a)).collect(),
            ttl: v.resource.ttl.map(|t| t as u64),
            create_date: Some(from_ms(v.resource.create_date)),
            expiration_date: v.resource.expiration_date.map(from_ms),
        }
    }

    pub(super) fn authorization_object(&self, a: &AuthorizationRecord, bearer: Option<&String>) -> AuthorizationObject {
        AuthorizationObject {
            uri: self.uri(Kind::Authorizations, &a.id),
            auth_id: a.auth_id.clone(),
            resource_uri: self.uri(Kind::Resources, &a.resource_id),
            role_uri: a.role_uri.clone(),
            create_date: from_ms(a.create_date),
            bearer: bearer.map(|b| jose::SecretString::new(b.clone())),
        }
    }

    /// Whether a resource created by `creator` belongs to this org.
    pub(super) fn org_owns(&self, creator: &str) -> bool {
        creator.rsplit_once('@').is_some_and(|(_, d)| d.eq_ignore_ascii_case(&self.cfg.org_domain))
    }

    /// revocation, disabling or content denial that touched someone who
    /// could read it (directly authorized, or an org agent in scope).
    pub(super) async fn rekey_after(
        &self,
        policy: &Loaded,
        resource_id: &str,
        uri: &str,
    ) -> Result<Option<i64>, EngineError> {
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
}
