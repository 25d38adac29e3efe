//! The secure channel's server side in the engine: handshakes, credentials,
//! and the life of one session request (ticket, credential, cut-offs,
//! replay log, audit), up to the operation it names.

use jose::jws::VerifyKey;
use jose::{JwsPolicy, SigAlg};
use kms_protocol::channel::{HandshakeGrant, SigningContext};
use kms_protocol::{
    classify, open_session_request, seal_response, Credential, Incoming, Kind, KmsUri, Request, Response, Status,
};

use super::{err, ms, Engine, Throttled, MAX_CLIENT_ID};
use crate::auth::{AnonClaims, AuthError, Principal};
use crate::error::EngineError;
use crate::session::{SessionState, Tickets};
use crate::{from_ms, now_ms};

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

impl Engine {
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
                        let rid = match open_session_request(&s.shared, &uri, &jwe) {
                            Ok(Ok(r)) => Some(r.request_id),
                            Ok(Err(u)) => u.request_id,
                            Err(_) => None,
                        };
                        return self.reset_as(s.static_kid.as_deref(), source, rid.as_deref(), &problem.to_string());
                    }
                    Err(EngineError::Ticket(t)) => return self.reset(source, None, &t.to_string()),
                    Err(e) => {
                        tracing::error!(error = %e, "opening a session ticket failed");
                        return self.reset(source, None, "the KMS could not open the session");
                    }
                };
                let req = match open_session_request(&session.shared, &uri, &jwe) {
                    Ok(Ok(r)) => r,
                    // It decrypted, so it is the session holder's: an ordinary
                    // answer with its requestId (when it has one), not a reset.
                    Ok(Err(unreadable)) => {
                        let rid = unreadable.request_id.unwrap_or_default();
                        // A fixed reason: serde's words may quote what was sent.
                        let resp = err(
                            Status::BAD_REQUEST,
                            &rid,
                            "not a KMS request: unknown method, or a member missing or of the wrong type",
                        );
                        return Ok(seal_response(&session.shared, &uri, &resp).unwrap_or_default());
                    }
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
                if let Some(refusal) = self.cut_off(&policy, &principal, &client.client_id) {
                    return signed_error(refusal.status(), &refusal.reason());
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
        // A service or a KMS is never a compliance subject (their ids share no namespace with users).
        if kms_identity::is_reserved_user_id(&subject) {
            return Err(Refused::Forbidden("onBehalfOf must name a user of this KMS's own org"));
        }
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
        if let Some(refusal) = self.cut_off(&policy, &principal, &client.client_id) {
            let reason = refusal.reason();
            self.tickets.revoke(session).await?;
            let kind = match principal {
                Principal::Service { .. } => audit::ActorKind::Service,
                Principal::Peer { .. } => audit::ActorKind::PeerKms,
                _ if policy.service(&session.principal).is_some() => audit::ActorKind::Service,
                _ => audit::ActorKind::User,
            };
            let entry =
                audit::NewEntry::new(&session.principal, kind, audit::Action::SessionReset, audit::Outcome::Denied)
                    .detail("reason", reason.to_string())
                    .detail("client", client.client_id.clone());
            if !self.audit_entry(entry).await {
                return Ok(Sealed::Fresh(err(Status::UNAVAILABLE, rid, "the KMS cannot write its audit log")));
            }
            return Ok(Sealed::Fresh(refusal.response(rid)));
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
        if !op.mutates() {
            let (resp, grant) = self.execute(session, uri, &principal, &op, rid).await?;
            return Ok(Sealed::Fresh(self.audited(&principal, &op, resp, grant.as_ref(), rid).await));
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
            let (resp, grant) = self.execute(session, uri, &principal, &op, rid).await?;
            let resp = self.audited(&principal, &op, resp, grant.as_ref(), rid).await;
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
