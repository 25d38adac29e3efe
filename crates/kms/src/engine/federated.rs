//! Federation in the engine, both sides (see `kms-protocol.md`, Federation).
//!
//! **Asking (this KMS is B).** One of our users asks us for a key, resource
//! or authorizations of another org's KMS (A). We ask A over a mutually
//! authenticated channel ([`crate::federation`]) for that user; A answers
//! with the object and the authorizations of our org's users on its
//! resource. We release only if our user is among them (or authorized on one
//! of our resources that A lists) and our own policy allows it (disabled
//! users and devices were refused before; service scopes and compliance
//! cases apply here). Before answering we keep a copy, wrapped under our
//! current KEK, of what we release and of who could read it: our retention
//! and legal holds apply to it, and our compliance officers can recover what
//! our users could read even when A later refuses or is down. Members never
//! get keys from that copy: their releases need A's answer (at most
//! [`crate::federation::ANSWER_CACHE`] old).
//!
//! **Answering (this KMS is A).** A peer KMS listed in our policy reads keys,
//! resources and authorizations of a resource on which at least one user of
//! its org is authorized, and learns only its own org's authorizations.
//! Every release is audited under the peer's name and the user it asked for.

use kms_protocol::message::{AuthorizationObject, KeyObject, Operation, RequestBody};
use kms_protocol::{Kind, KmsUri, Response, Status};
use kms_store::{AuthorizationRecord, KeyRecord, ResourceRecord};

use super::authz::Refusal;
use super::{err, forbidden, not_found, Answer, Engine};
use crate::auth::Principal;
use crate::crypto::SecretKey;
use crate::error::EngineError;
use crate::federation::cached_id;
use crate::policy::Loaded;
use crate::{from_ms, to_ms};

impl Engine {
    /// The domain of the other KMS an operation names, if it names one.
    pub(super) fn foreign_domain(&self, op: &Operation) -> Option<String> {
        let uris: Vec<&KmsUri> = match op {
            Operation::RetrieveKey { uri }
            | Operation::RetrieveResource { uri }
            | Operation::DeleteAuthorization { uri } => {
                vec![uri]
            }
            Operation::RetrieveResourceKeys { resource, .. }
            | Operation::RetrieveAuthorizations { resource, .. }
            | Operation::RetrieveResourceAccesses { resource, .. }
            | Operation::CreateAuthorizations { resource, .. }
            | Operation::DeleteAuthorizationByAuthId { resource, .. }
            | Operation::DeleteAuthorizations { resource, .. } => vec![resource],
            Operation::BindKey { key, resource } => vec![key, resource],
            Operation::CreateResource { key_uris, .. } => key_uris.iter().collect(),
            _ => Vec::new(),
        };
        uris.into_iter().find(|u| u.domain() != self.cfg.kms_domain).map(|u| u.domain().to_string())
    }

    /// Answers one of our principals about an object of the KMS `domain`.
    pub(super) async fn federated(
        &self,
        policy: &Loaded,
        p: &Principal,
        op: &Operation,
        domain: &str,
        now: i64,
        rid: &str,
    ) -> Answer {
        // The rule (`check_foreign`) let only reads by our users and officers, to listed peers, through.
        let (uri, body) = match op {
            Operation::RetrieveKey { uri } | Operation::RetrieveResource { uri } => {
                (uri.to_string(), RequestBody::default())
            }
            Operation::RetrieveResourceKeys { resource, bound_after, bound_before, count } => (
                format!("{resource}/keys"),
                RequestBody {
                    bound_after: *bound_after,
                    bound_before: *bound_before,
                    count: *count,
                    ..Default::default()
                },
            ),
            Operation::RetrieveAuthorizations { resource, .. } => {
                (format!("{resource}/authorizations"), RequestBody::default())
            }
            _ => return Ok(Refusal::ForeignWrite(domain.to_string()).response(rid)),
        };
        // Whose authorizations apply: a user (or a service with a token), or a compliance subject.
        let subject = match p {
            Principal::User { user_id, .. } => user_id.clone(),
            Principal::Compliance { subject, .. } => subject.clone(),
            _ => return Ok(Refusal::ForeignNotUser.response(rid)),
        };
        let Some(peer) = policy.policy.peer(domain) else {
            return Ok(Refusal::NotFederated(domain.to_string()).response(rid));
        };
        let Some(fed) = &self.federation else { return Ok(Refusal::FederationNotSetUp.response(rid)) };
        let compliance = matches!(p, Principal::Compliance { .. });
        let mut answer = Response::new(Status::INTERNAL_ERROR, rid);
        // A cached answer serves grants for up to a second; a refusal is
        // checked afresh (the user may have been authorized since).
        for fresh in [false, true] {
            answer = match fed.retrieve(&self.server, domain, peer, &uri, body.clone(), &subject, fresh).await {
                Ok(resp) => self.release_federated(policy, p, op, domain, &subject, &resp, now, rid).await?,
                Err(e) => {
                    tracing::warn!(peer = domain, error = %e, "federated request failed");
                    err(e.status(), rid, &e.to_string())
                }
            };
            if answer.status != Status::FORBIDDEN {
                break;
            }
        }
        // Compliance: what our users could read stays reachable from our copy.
        if compliance && !answer.status.is_success() {
            if let Some(r) = self.recover_federated_copy(policy, p, op, domain, &subject, now, rid).await? {
                return Ok(r);
            }
        }
        Ok(answer)
    }

    /// Checks a peer's answer for `subject` and our policy, keeps our copy, and answers.
    #[allow(clippy::too_many_arguments)]
    async fn release_federated(
        &self,
        policy: &Loaded,
        p: &Principal,
        op: &Operation,
        domain: &str,
        subject: &str,
        resp: &Response,
        now: i64,
        rid: &str,
    ) -> Answer {
        let bad = |what: &str| {
            tracing::warn!(peer = domain, problem = what, "a federated KMS answered inconsistently");
            Ok(err(Status(502), rid, &format!("the KMS {domain} answered inconsistently ({what})")))
        };
        let resource = match op {
            Operation::RetrieveKey { uri } => {
                let Some(k) = &resp.key else { return bad("no key") };
                if &k.uri != uri {
                    return bad("another key than asked");
                }
                match &k.resource_uri {
                    Some(r) if r.domain() == domain && r.is_object(Kind::Resources) => r.clone(),
                    _ => return bad("a key not bound to one of its resources"),
                }
            }
            Operation::RetrieveResource { uri } => uri.clone(),
            Operation::RetrieveResourceKeys { resource, .. } | Operation::RetrieveAuthorizations { resource, .. } => {
                resource.clone()
            }
            _ => return Ok(forbidden(rid)),
        };
        // Only our org's authorizations on that resource count (the peer should send no others).
        let ours: Vec<&AuthorizationObject> = resp
            .authorizations
            .iter()
            .flatten()
            .filter(|a| a.resource_uri == resource)
            .filter(|a| a.auth_id.as_deref().is_some_and(|id| self.speaks_for_own(id)))
            .collect();
        if !self.federated_access(p, subject, &ours, now).await? {
            return Ok(Refusal::NotListedByPeer(domain.to_string()).response(rid));
        }
        let res_str = resource.to_string();
        let keys: Vec<&KeyObject> = match op {
            Operation::RetrieveKey { .. } => resp.key.iter().collect(),
            Operation::RetrieveResourceKeys { .. } => resp.keys.iter().flatten().collect(),
            _ => Vec::new(),
        };
        let mut released = Vec::new();
        for k in keys {
            if k.resource_uri.as_ref() != Some(&resource) || k.uri.domain() != domain || !k.uri.is_object(Kind::Keys) {
                return bad("a key of another resource");
            }
            if let Some(refusal) = self.release_check(policy, p, &res_str, k.bind_date.map(|d| to_ms(&d))).await? {
                if matches!(op, Operation::RetrieveKey { .. }) {
                    return Ok(refusal.response(rid));
                }
                continue;
            }
            released.push(k);
        }
        // Our copy first: what we release must stay recoverable (and shreddable) here.
        if let Err(e) = self.keep_copy(domain, &resource, &ours, &released, now).await {
            return match e {
                EngineError::Store(_) | EngineError::Internal(_) => Err(e),
                _ => bad("a key that is not a 256-bit oct key"),
            };
        }
        let mut out = Response::new(Status::OK, rid);
        match op {
            Operation::RetrieveKey { .. } => out.key = released.first().map(|k| (*k).clone()),
            Operation::RetrieveResourceKeys { .. } => out.keys = Some(released.into_iter().cloned().collect()),
            Operation::RetrieveResource { .. } => {
                let Some(r) = &resp.resource else { return bad("no resource") };
                if r.uri != resource {
                    return bad("another resource than asked");
                }
                out.resource = Some(r.clone());
            }
            Operation::RetrieveAuthorizations { auth_id, .. } => {
                let filter = auth_id.as_ref().map(|a| a.to_string());
                out.authorizations = Some(
                    ours.iter().filter(|a| filter.is_none() || a.auth_id == filter).map(|a| (*a).clone()).collect(),
                );
            }
            _ => {}
        }
        out.rekey_after = resp.rekey_after;
        Ok(out)
    }

    /// Whether `auth_id` names someone this KMS speaks for: a user of our org, or one of our resources.
    fn speaks_for_own(&self, auth_id: &str) -> bool {
        match auth_id.rsplit_once('@') {
            Some((_, d)) if !auth_id.starts_with("kms://") => d.eq_ignore_ascii_case(&self.cfg.org_domain),
            _ => KmsUri::parse_absolute(auth_id).is_ok_and(|u| u.domain() == self.cfg.kms_domain),
        }
    }

    /// Writes (once) our copy of `keys` of the peer's `resource` and of our users authorized there.
    async fn keep_copy(
        &self,
        domain: &str,
        resource: &KmsUri,
        auths: &[&AuthorizationObject],
        keys: &[&KeyObject],
        now: i64,
    ) -> Result<(), EngineError> {
        let res_id = cached_id(domain, resource.id().unwrap_or_default());
        let (new_auths, new_keys): (Vec<&&AuthorizationObject>, Vec<&&KeyObject>) = {
            let seen = self.fed_cached.lock().expect("not poisoned");
            (
                auths
                    .iter()
                    .filter(|a| !seen.contains(&format!("a {res_id} {}", a.auth_id.as_deref().unwrap_or(""))))
                    .collect(),
                keys.iter().filter(|k| !seen.contains(&format!("k {}", k.uri))).collect(),
            )
        };
        if new_auths.is_empty() && new_keys.is_empty() {
            return Ok(());
        }
        let creator = format!("kms://{domain}");
        let mut key_recs = Vec::with_capacity(new_keys.len());
        for k in &new_keys {
            let oct = k.jwk.to_oct().map_err(|_| EngineError::Policy("not an oct key".into()))?;
            let secret = SecretKey::from_slice(oct.expose()).map_err(|_| EngineError::Policy("not 256 bits".into()))?;
            let id = cached_id(domain, k.uri.id().unwrap_or_default());
            let (wrapped, kek_id) = self.keyring.wrap(&id, &secret).await?;
            key_recs.push(KeyRecord {
                id,
                wrapped,
                kek_id,
                user_id: k.user_id.clone(),
                client_id: k.client_id.clone(),
                create_date: to_ms(&k.create_date),
                expiration_date: to_ms(&k.expiration_date),
                resource_id: Some(res_id.clone()),
                bind_date: Some(k.bind_date.map(|d| to_ms(&d)).unwrap_or(now)),
            });
        }
        let auth_recs: Vec<AuthorizationRecord> = new_auths
            .iter()
            .map(|a| AuthorizationRecord {
                id: cached_id(domain, a.uri.id().unwrap_or_default()),
                resource_id: res_id.clone(),
                auth_id: a.auth_id.clone(),
                role_uri: a.role_uri.clone(),
                creator: creator.clone(),
                create_date: to_ms(&a.create_date),
                expiration_date: None,
            })
            .collect();
        let res = ResourceRecord { id: res_id.clone(), creator, create_date: now, expiration_date: None, ttl: None };
        self.store.cache_federated(&res, &auth_recs, &key_recs).await?;
        let mut seen = self.fed_cached.lock().expect("not poisoned");
        if seen.len() > 200_000 {
            seen.clear();
        }
        for a in new_auths {
            seen.insert(format!("a {res_id} {}", a.auth_id.as_deref().unwrap_or("")));
        }
        for k in new_keys {
            seen.insert(format!("k {}", k.uri));
        }
        Ok(())
    }

    /// A compliance answer from our copy: keys our users could read (`subject` among them).
    #[allow(clippy::too_many_arguments)]
    async fn recover_federated_copy(
        &self,
        policy: &Loaded,
        p: &Principal,
        op: &Operation,
        domain: &str,
        subject: &str,
        now: i64,
        rid: &str,
    ) -> Result<Option<Response>, EngineError> {
        let recs = match op {
            Operation::RetrieveKey { uri } => {
                match self.store.get_key(&cached_id(domain, uri.id().unwrap_or_default())).await? {
                    Some(r) => vec![r],
                    None => return Ok(None),
                }
            }
            Operation::RetrieveResourceKeys { resource, bound_after, bound_before, count } => {
                let id = cached_id(domain, resource.id().unwrap_or_default());
                self.store
                    .list_resource_keys(&id, bound_after.map(|d| to_ms(&d)), bound_before.map(|d| to_ms(&d)), *count)
                    .await?
            }
            _ => return Ok(None),
        };
        let Some(res_id) = recs.first().and_then(|r| r.resource_id.clone()) else { return Ok(None) };
        if !self.store.has_authorization(&res_id, &[subject], now).await? {
            return Ok(None);
        }
        let Some((_, res)) = crate::federation::origin_of(&res_id) else { return Ok(None) };
        let res_uri = KmsUri::object(domain, Kind::Resources, res).map_err(|_| EngineError::Internal("cached id"))?;
        let mut keys = Vec::new();
        for r in &recs {
            if self.release_check(policy, p, &res_uri.to_string(), r.bind_date).await?.is_some() {
                continue;
            }
            let Some((_, kid)) = crate::federation::origin_of(&r.id) else { continue };
            let uri = KmsUri::object(domain, Kind::Keys, kid).map_err(|_| EngineError::Internal("cached id"))?;
            let secret = self.keyring.unwrap(r).await?;
            let jwk = jose::OctKey::new(secret.expose().to_vec(), Some(uri.to_string()))
                .map_err(|_| EngineError::Internal("32-byte key"))?
                .to_jwk();
            keys.push(KeyObject {
                uri,
                jwk,
                user_id: r.user_id.clone(),
                client_id: r.client_id.clone(),
                create_date: from_ms(r.create_date),
                expiration_date: from_ms(r.expiration_date),
                resource_uri: Some(res_uri.clone()),
                bind_date: r.bind_date.map(from_ms),
            });
        }
        let mut resp = Response::new(Status::OK, rid);
        match op {
            Operation::RetrieveKey { .. } => match keys.pop() {
                Some(k) => resp.key = Some(k),
                None => return Ok(None),
            },
            _ => resp.keys = Some(keys),
        }
        Ok(Some(resp))
    }

    /// Answers a peer KMS (the rule, `check_peer`, found `theirs`: its org's
    /// authorizations on the resource, and loaded the key asked for).
    pub(super) async fn serve_peer(
        &self,
        policy: &Loaded,
        op: &Operation,
        key: Option<KeyRecord>,
        theirs: &[AuthorizationRecord],
        rid: &str,
    ) -> Answer {
        let res_id = match op {
            Operation::RetrieveKey { .. } => match key.as_ref().and_then(|k| k.resource_id.clone()) {
                Some(r) => r,
                None => return Err(EngineError::Internal("peer key not loaded")),
            },
            Operation::RetrieveResource { uri: r }
            | Operation::RetrieveResourceKeys { resource: r, .. }
            | Operation::RetrieveAuthorizations { resource: r, .. } => match self.own_id(r) {
                Some(id) => id.to_string(),
                None => return Ok(not_found(rid)),
            },
            _ => return Ok(Refusal::PeerReadsOnly.response(rid)),
        };
        let res_uri = self.uri(Kind::Resources, &res_id);
        let mut resp = Response::new(Status::OK, rid);
        match op {
            Operation::RetrieveKey { .. } => {
                let rec = key.expect("checked above");
                resp.key = Some(self.key_object(&rec, true).await?);
            }
            Operation::RetrieveResourceKeys { bound_after, bound_before, count, .. } => {
                let recs = self
                    .store
                    .list_resource_keys(
                        &res_id,
                        bound_after.map(|d| to_ms(&d)),
                        bound_before.map(|d| to_ms(&d)),
                        *count,
                    )
                    .await?;
                let mut keys = Vec::with_capacity(recs.len());
                for r in &recs {
                    keys.push(self.key_object(r, true).await?);
                }
                resp.keys = Some(keys);
            }
            Operation::RetrieveResource { .. } => {
                let Some(view) = self.store.get_resource(&res_id).await? else { return Ok(not_found(rid)) };
                let mut obj = self.resource_object(&view);
                obj.authorization_uris = theirs.iter().map(|a| self.uri(Kind::Authorizations, &a.id)).collect();
                resp.resource = Some(obj);
            }
            _ => {}
        }
        let filter = match op {
            Operation::RetrieveAuthorizations { auth_id: Some(a), .. } => Some(a.to_string()),
            _ => None,
        };
        resp.authorizations = Some(
            theirs
                .iter()
                .filter(|a| filter.is_none() || a.auth_id == filter)
                .map(|a| self.authorization_object(a, None))
                .collect(),
        );
        resp.rekey_after = self.rekey_after(policy, &res_id, &res_uri.to_string()).await?.map(from_ms);
        Ok(resp)
    }
}
