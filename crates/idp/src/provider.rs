//! The engine: grants, device authorizations and the verification page's
//! decisions, as plain functions over parsed requests. No HTTP here.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::authcode::{valid_challenge, AuthRequest, CodeStore, SignedIn};
use crate::config::{Config, ConfigError, ResolvedClient, ResolvedUser, WebClient};
use crate::device::{Approval, CodeProblem, DeviceStore};
use crate::keys::SigningKey;
use crate::oauth::{valid_scope, ErrorCode, Form, OAuthError};
use crate::secret::{ct_eq_str, Secret};
use crate::token::{self, Grant};
use crate::Error;

/// Grant type names.
pub(crate) mod grant_type {
    pub const PASSWORD: &str = "password";
    pub const CLIENT_CREDENTIALS: &str = "client_credentials";
    pub const REFRESH_TOKEN: &str = "refresh_token";
    pub const DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
    pub const AUTHORIZATION_CODE: &str = "authorization_code";
}

/// The development identity provider. Cheap to clone (clones share state).
#[derive(Clone)]
pub struct Idp {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: String,
    key: SigningKey,
    users: HashMap<String, ResolvedUser>,
    clients: HashMap<String, ResolvedClient>,
    public_clients: HashSet<String>,
    web_clients: HashMap<String, WebClient>,
    /// The web clients' origins (from their redirect URIs), derived once.
    web_origins: HashSet<String>,
    codes: Mutex<CodeStore>,
    audiences: Vec<String>,
    default_audience: Option<String>,
    access_ttl_secs: u64,
    refresh_ttl_secs: u64,
    device_ttl_secs: u64,
    interval_secs: u64,
    devices: Mutex<DeviceStore>,
}

impl std::fmt::Debug for Idp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idp").field("issuer", &self.inner.issuer).field("kid", &self.kid()).finish_non_exhaustive()
    }
}

/// A successful token response (RFC 6749 section 5.1). `Debug` hides the tokens.
#[derive(Clone, Serialize)]
pub struct TokenResponse {
    /// The access token (an RFC 9068 JWT).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// A refresh token (password, device code and refresh grants).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The granted scope, if one was requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// A device authorization response (RFC 8628 section 3.2). `Debug` hides the device code.
#[derive(Clone, Serialize)]
pub struct DeviceAuthorization {
    /// The device's secret code, for polling.
    pub device_code: String,
    /// The code the user types, `XXXX-XXXX`.
    pub user_code: String,
    /// The verification page.
    pub verification_uri: String,
    /// The verification page with the user code filled in.
    pub verification_uri_complete: String,
    /// Seconds until both codes expire.
    pub expires_in: u64,
    /// Seconds to wait between polls.
    pub interval: u64,
}

impl std::fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAuthorization").field("user_code", &self.user_code).finish_non_exhaustive()
    }
}

/// Client credentials from an `Authorization: Basic` header.
pub(crate) struct BasicAuth {
    pub client_id: String,
    pub secret: Secret,
}

/// Why a sign-in at `/authorize` cannot go on.
#[derive(Debug)]
pub(crate) enum AuthorizeError {
    /// Shown on the page: no redirect is safe (unknown client or redirect URI).
    Page(&'static str),
    /// Sent back to the app (RFC 6749 section 4.1.2.1).
    Redirect { redirect_uri: String, error: ErrorCode, description: &'static str, state: Option<String> },
    /// The sign-in form again, with this message.
    Credentials(&'static str),
}

/// Why the verification page refuses a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PageError {
    /// A field is missing or repeated.
    Incomplete,
    /// The user code is unknown, expired or already used.
    Code(CodeProblem),
    /// Username or password is wrong.
    Credentials,
}

impl Idp {
    /// Checks `config`, reads the secrets, and loads the signing key from
    /// `data_dir` (generating it on first start). Does not listen: see
    /// [`Idp::router`], [`crate::start`] and [`crate::serve`].
    ///
    /// Needs `issuer` set unless the listen port is fixed (`start` derives it
    /// after binding port 0).
    pub fn new(config: Config) -> Result<Self, Error> {
        if config.issuer.is_none() && config.listen.port() == 0 {
            return Err(ConfigError::IssuerUnknown.into());
        }
        let issuer = config.issuer_for(config.listen);
        let mut checked = config.clone();
        checked.issuer = Some(issuer.clone());
        let resolved = checked.resolve()?;
        let (key, generated) = SigningKey::load_or_generate(&config.data_dir)?;
        if generated {
            tracing::info!(kid = key.kid(), dir = %config.data_dir.display(), "generated the IdP signing key");
        }
        Ok(Self {
            inner: Arc::new(Inner {
                issuer,
                key,
                users: resolved.users.into_iter().map(|u| (u.id.clone(), u)).collect(),
                clients: resolved.clients.into_iter().map(|c| (c.client_id.clone(), c)).collect(),
                public_clients: config.public_clients.iter().cloned().collect(),
                web_clients: config.web_clients.iter().map(|w| (w.client_id.clone(), w.clone())).collect(),
                web_origins: config.web_clients.iter().flat_map(WebClient::origins).collect(),
                codes: Mutex::new(CodeStore::default()),
                audiences: config.audiences.clone(),
                default_audience: config.default_audience.clone(),
                access_ttl_secs: config.access_token_ttl_secs,
                refresh_ttl_secs: config.refresh_token_ttl_secs,
                device_ttl_secs: config.device_code_ttl_secs,
                interval_secs: config.device_poll_interval_secs,
                devices: Mutex::new(DeviceStore::new(
                    Duration::from_secs(config.device_code_ttl_secs),
                    Duration::from_secs(config.device_poll_interval_secs),
                )),
            }),
        })
    }

    /// The issuer URL (the `iss` of every token).
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The signing key's id (its RFC 7638 thumbprint).
    pub fn kid(&self) -> &str {
        self.inner.key.kid()
    }

    /// `{issuer}{path}`.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.issuer)
    }

    /// The OpenID Provider / OAuth 2.0 authorization server metadata.
    ///
    /// The authorization endpoint serves the code flow with PKCE (`S256`)
    /// for `web_clients`. No ID tokens are issued;
    /// `subject_types_supported` and `id_token_signing_alg_values_supported`
    /// are there because OpenID discovery clients require them.
    pub fn discovery(&self) -> Value {
        json!({
            "issuer": self.inner.issuer,
            "jwks_uri": self.url("/jwks"),
            "token_endpoint": self.url("/token"),
            "device_authorization_endpoint": self.url("/device_authorization"),
            "authorization_endpoint": self.url("/authorize"),
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": true,
            "grant_types_supported": [
                grant_type::AUTHORIZATION_CODE,
                grant_type::PASSWORD,
                grant_type::CLIENT_CREDENTIALS,
                grant_type::REFRESH_TOKEN,
                grant_type::DEVICE_CODE,
            ],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
            "custos_audiences": self.inner.audiences,
            "custos_development_only": true,
        })
    }

    /// The JSON Web Key Set: the one RSA public key.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.inner.key.public_jwk()] })
    }

    fn devices(&self) -> MutexGuard<'_, DeviceStore> {
        self.inner.devices.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token endpoint.
    pub(crate) fn token(&self, form: &Form, basic: Option<BasicAuth>) -> Result<TokenResponse, OAuthError> {
        let grant_type = form.require("grant_type")?;
        let result = match grant_type {
            grant_type::PASSWORD => self.password_grant(form, basic.as_ref()),
            grant_type::CLIENT_CREDENTIALS => self.client_credentials_grant(form, basic.as_ref()),
            grant_type::REFRESH_TOKEN => self.refresh_grant(form, basic.as_ref()),
            grant_type::DEVICE_CODE => self.device_code_grant(form, basic.as_ref()),
            grant_type::AUTHORIZATION_CODE => self.code_grant(form, basic.as_ref()),
            _ => {
                tracing::info!(error = "unsupported_grant_type", "token request refused");
                return Err(OAuthError::new(ErrorCode::UnsupportedGrantType, "supported grant types: authorization_code, password, client_credentials, refresh_token, urn:ietf:params:oauth:grant-type:device_code"));
            }
        };
        match &result {
            Ok(_) => {}
            // Polling outcomes are routine, not refusals worth a log line each.
            Err(e) if matches!(e.code, ErrorCode::AuthorizationPending | ErrorCode::SlowDown) => {
                tracing::debug!(grant_type, error = %e.code, "device code poll");
            }
            // Neither the submitted username nor the client id is logged: a
            // password typed into the wrong field must not reach the log.
            Err(e) => tracing::info!(grant_type, error = %e.code, reason = %e.description, "token request refused"),
        }
        result
    }

    /// A public client, named by `client_id` in the form.
    fn public_client<'f>(&self, form: &'f Form, basic: Option<&BasicAuth>) -> Result<&'f str, OAuthError> {
        let client_id = self.secretless_client(form, basic)?;
        if self.inner.web_clients.contains_key(client_id) {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "web clients sign users in with the authorization code flow",
            ));
        }
        Ok(client_id)
    }

    /// A web client, named by `client_id` in the form.
    fn web_client<'f>(&self, form: &'f Form, basic: Option<&BasicAuth>) -> Result<&'f str, OAuthError> {
        let client_id = self.secretless_client(form, basic)?;
        if !self.inner.web_clients.contains_key(client_id) {
            return Err(OAuthError::new(ErrorCode::UnauthorizedClient, "the code flow is for web clients"));
        }
        Ok(client_id)
    }

    /// A client without a secret (public or web), named by `client_id` in the form.
    fn secretless_client<'f>(&self, form: &'f Form, basic: Option<&BasicAuth>) -> Result<&'f str, OAuthError> {
        if basic.is_some() {
            return Err(OAuthError::invalid_request(
                "this grant is for public clients: send client_id in the form, without an Authorization header",
            ));
        }
        if form.get("client_secret")?.is_some() {
            return Err(OAuthError::invalid_request("this grant is for public clients, which have no secret"));
        }
        let client_id = form.require("client_id")?;
        if self.inner.public_clients.contains(client_id) || self.inner.web_clients.contains_key(client_id) {
            Ok(client_id)
        } else if self.inner.clients.contains_key(client_id) {
            Err(OAuthError::new(ErrorCode::UnauthorizedClient, "service clients may only use client_credentials"))
        } else {
            Err(OAuthError::new(ErrorCode::InvalidClient, "unknown client_id"))
        }
    }

    /// The audience named by `audience` or `resource` (RFC 8707), if any;
    /// it must be one of `audiences`.
    fn requested_audience(&self, form: &Form) -> Result<Option<String>, OAuthError> {
        let audience = form.get("audience")?;
        let mut resources = form.all("resource");
        let resource = resources.next();
        if resources.next().is_some() {
            return Err(OAuthError::new(ErrorCode::InvalidTarget, "a token is issued for exactly one audience"));
        }
        let requested = match (audience, resource) {
            (Some(a), Some(r)) if a != r => {
                return Err(OAuthError::new(ErrorCode::InvalidTarget, "audience and resource name different audiences"))
            }
            (a, r) => a.or(r),
        };
        match requested {
            None => Ok(None),
            Some(req) => match self.inner.audiences.iter().find(|a| a.as_str() == req) {
                Some(a) => Ok(Some(a.clone())),
                None => Err(OAuthError::new(ErrorCode::InvalidTarget, "this IdP issues no tokens for that audience")),
            },
        }
    }

    /// The audience of the token to issue: the requested one, else `default_audience`.
    fn audience(&self, form: &Form) -> Result<String, OAuthError> {
        match self.requested_audience(form)? {
            Some(a) => Ok(a),
            None => self.inner.default_audience.clone().ok_or_else(|| {
                OAuthError::invalid_request("parameter audience is required (this IdP has no default audience)")
            }),
        }
    }

    fn scope(form: &Form) -> Result<Option<String>, OAuthError> {
        match form.get("scope")? {
            None => Ok(None),
            Some(s) if valid_scope(s) => Ok(Some(s.to_owned())),
            Some(_) => Err(OAuthError::new(ErrorCode::InvalidScope, "scope is malformed")),
        }
    }

    /// The user with these credentials, in time independent of which part is wrong.
    fn authenticate_user(&self, username: &str, password: &str) -> Option<&ResolvedUser> {
        match self.inner.users.get(username) {
            Some(user) if user.password.matches(password) => Some(user),
            Some(_) => None,
            None => {
                // Same work as a known user with a wrong password.
                let _ = ct_eq_str("unknown user placeholder", password);
                None
            }
        }
    }

    fn issue(
        &self,
        audience: &str,
        grant: &Grant,
        with_refresh: bool,
        grant_type: &str,
    ) -> Result<TokenResponse, OAuthError> {
        let now = token::now_secs();
        let inner = &*self.inner;
        let failed = |e: crate::keys::KeyError| {
            tracing::error!(error = %e, "signing a token failed");
            OAuthError::new(ErrorCode::TemporarilyUnavailable, "signing failed")
        };
        let service = grant_type == grant_type::CLIENT_CREDENTIALS;
        let access_token =
            token::access_token(&inner.key, &inner.issuer, audience, grant, inner.access_ttl_secs, now, service)
                .map_err(failed)?;
        let refresh_token = if with_refresh {
            Some(token::refresh_token(&inner.key, &inner.issuer, grant, inner.refresh_ttl_secs, now).map_err(failed)?)
        } else {
            None
        };
        tracing::info!(grant_type, sub = %grant.subject, client_id = %grant.client_id, aud = audience, "token issued");
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: inner.access_ttl_secs,
            refresh_token,
            scope: grant.scope.clone(),
        })
    }

    fn password_grant(&self, form: &Form, basic: Option<&BasicAuth>) -> Result<TokenResponse, OAuthError> {
        let client_id = self.public_client(form, basic)?;
        let audience = self.audience(form)?;
        let scope = Self::scope(form)?;
        let username = form.require("username")?;
        let password = form.require("password")?;
        let user = self
            .authenticate_user(username, password)
            .ok_or_else(|| OAuthError::new(ErrorCode::InvalidGrant, "invalid username or password"))?;
        let grant = Grant { subject: user.id.clone(), client_id: client_id.to_owned(), scope, name: user.name.clone() };
        self.issue(&audience, &grant, true, grant_type::PASSWORD)
    }

    fn client_credentials_grant(&self, form: &Form, basic: Option<&BasicAuth>) -> Result<TokenResponse, OAuthError> {
        let form_id = form.get("client_id")?;
        let form_secret = form.get("client_secret")?;
        let (client_id, secret) = match (basic, form_secret) {
            (Some(_), Some(_)) => {
                return Err(OAuthError::invalid_request("use one client authentication method, not both"));
            }
            (Some(b), None) => {
                if form_id.is_some_and(|id| id != b.client_id) {
                    return Err(OAuthError::invalid_request("client_id differs from the Authorization header's"));
                }
                (b.client_id.as_str(), b.secret.expose())
            }
            (None, Some(secret)) => {
                let id = form_id.ok_or_else(|| OAuthError::invalid_request("parameter client_id is required"))?;
                (id, secret)
            }
            (None, None) => {
                if form_id.is_some_and(|id| self.inner.public_clients.contains(id)) {
                    return Err(OAuthError::new(
                        ErrorCode::UnauthorizedClient,
                        "public clients may not use client_credentials",
                    ));
                }
                return Err(OAuthError::new(ErrorCode::InvalidClient, "client authentication is required"));
            }
        };
        let client = match self.inner.clients.get(client_id) {
            Some(c) if c.secret.matches(secret) => c,
            Some(_) => return Err(OAuthError::new(ErrorCode::InvalidClient, "client authentication failed")),
            None => {
                let _ = ct_eq_str("unknown client placeholder", secret);
                return Err(OAuthError::new(ErrorCode::InvalidClient, "client authentication failed"));
            }
        };
        let audience = self.audience(form)?;
        let scope = Self::scope(form)?;
        let grant = Grant { subject: client.subject.clone(), client_id: client.client_id.clone(), scope, name: None };
        self.issue(&audience, &grant, false, grant_type::CLIENT_CREDENTIALS)
    }

    fn refresh_grant(&self, form: &Form, basic: Option<&BasicAuth>) -> Result<TokenResponse, OAuthError> {
        // Public and web clients alike: a web app mints its KMS token this way.
        let client_id = self.secretless_client(form, basic)?;
        let presented = form.require("refresh_token")?;
        let invalid = || OAuthError::new(ErrorCode::InvalidGrant, "the refresh token is invalid or expired");
        let original = token::check_refresh_token(&self.inner.key, &self.inner.issuer, presented, token::now_secs())
            .ok_or_else(invalid)?;
        if original.client_id != client_id {
            return Err(OAuthError::new(ErrorCode::InvalidGrant, "the refresh token was issued to another client"));
        }
        // A user removed from the configuration can no longer refresh.
        let user = self.inner.users.get(&original.subject).ok_or_else(invalid)?;
        let audience = self.audience(form)?;
        let scope = match Self::scope(form)? {
            None => original.scope.clone(),
            Some(requested) => {
                // RFC 6749 section 6: no scope beyond the original grant.
                let granted: HashSet<&str> = original.scope.as_deref().unwrap_or("").split(' ').collect();
                if !requested.split(' ').all(|s| granted.contains(s)) {
                    return Err(OAuthError::new(ErrorCode::InvalidScope, "scope exceeds the original grant"));
                }
                Some(requested)
            }
        };
        // The new refresh token keeps the original scope, whatever this access token's.
        let access =
            Grant { subject: user.id.clone(), client_id: client_id.to_owned(), scope, name: user.name.clone() };
        let mut response = self.issue(&audience, &access, false, grant_type::REFRESH_TOKEN)?;
        let renewed = Grant { scope: original.scope, ..access };
        let now = token::now_secs();
        response.refresh_token = Some(
            token::refresh_token(&self.inner.key, &self.inner.issuer, &renewed, self.inner.refresh_ttl_secs, now)
                .map_err(|_| OAuthError::new(ErrorCode::TemporarilyUnavailable, "signing failed"))?,
        );
        Ok(response)
    }

    fn device_code_grant(&self, form: &Form, basic: Option<&BasicAuth>) -> Result<TokenResponse, OAuthError> {
        let client_id = self.public_client(form, basic)?;
        let device_code = form.require("device_code")?;
        // Checked before redeeming, so that a bad audience does not use up the approval.
        let requested = self.requested_audience(form)?;
        let redeemed = self.devices().poll(device_code, client_id, Instant::now())?;
        let audience = requested.unwrap_or(redeemed.audience);
        let grant = Grant {
            subject: redeemed.approval.subject,
            client_id: client_id.to_owned(),
            scope: redeemed.scope,
            name: redeemed.approval.name,
        };
        self.issue(&audience, &grant, true, grant_type::DEVICE_CODE)
    }

    fn codes(&self) -> MutexGuard<'_, CodeStore> {
        self.inner.codes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `authorization_code`: a code from `/authorize` and its PKCE verifier.
    fn code_grant(&self, form: &Form, basic: Option<&BasicAuth>) -> Result<TokenResponse, OAuthError> {
        let client_id = self.web_client(form, basic)?;
        let code = form.require("code")?;
        let redirect_uri = form.require("redirect_uri")?;
        let verifier = form.require("code_verifier")?;
        let scope_asked = Self::scope(form)?;
        // Checked before redeeming, so that a bad audience does not use up the code.
        let requested = self.requested_audience(form)?;
        let r = self.codes().redeem(code, client_id, redirect_uri, verifier, Instant::now())?;
        // A user removed from the configuration since signing in gets nothing.
        let user = self
            .inner
            .users
            .get(&r.user.subject)
            .ok_or_else(|| OAuthError::new(ErrorCode::InvalidGrant, "the user no longer exists"))?;
        let audience = match requested.or(r.request.resource) {
            Some(a) => a,
            None => self.inner.default_audience.clone().ok_or_else(|| {
                OAuthError::invalid_request("parameter resource is required (this IdP has no default audience)")
            })?,
        };
        if scope_asked.is_some() && scope_asked != r.request.scope {
            return Err(OAuthError::new(ErrorCode::InvalidScope, "scope differs from the one signed in for"));
        }
        let grant =
            Grant { subject: user.id.clone(), client_id: client_id.to_owned(), scope: r.request.scope, name: user.name.clone() };
        self.issue(&audience, &grant, true, grant_type::AUTHORIZATION_CODE)
    }

    /// Checks the parameters of an authorization request (the query of
    /// `GET /authorize`, or the hidden fields of the sign-in form).
    pub(crate) fn authorize_request(&self, q: &Form) -> Result<AuthRequest, AuthorizeError> {
        // Without a known client and one of its exact redirect URIs nothing
        // may be redirected anywhere: those errors are shown on the page.
        let client_id = q.get("client_id").ok().flatten().ok_or(AuthorizeError::Page("the request names no client_id"))?;
        let client = self.inner.web_clients.get(client_id).ok_or(AuthorizeError::Page("this app is not registered here"))?;
        let redirect_uri = q
            .get("redirect_uri")
            .ok()
            .flatten()
            .filter(|u| client.redirect_uris.iter().any(|r| r == u))
            .ok_or(AuthorizeError::Page("this app asked to return to an address it did not register"))?;
        let state = q.get("state").ok().flatten().map(str::to_owned);
        let back = |code: ErrorCode, why: &'static str| AuthorizeError::Redirect {
            redirect_uri: redirect_uri.to_owned(),
            error: code,
            description: why,
            state: state.clone(),
        };
        if state.as_ref().is_some_and(|s| s.len() > 512) {
            return Err(back(ErrorCode::InvalidRequest, "state is longer than 512 characters"));
        }
        match q.get("response_type") {
            Ok(Some("code")) => {}
            _ => return Err(back(ErrorCode::UnsupportedResponseType, "response_type must be code")),
        }
        let code_challenge = match (q.get("code_challenge"), q.get("code_challenge_method")) {
            (Ok(Some(c)), Ok(Some("S256"))) if valid_challenge(c) => c.to_owned(),
            (Ok(Some(_)), Ok(Some("S256"))) => {
                return Err(back(ErrorCode::InvalidRequest, "code_challenge must be a base64url SHA-256"))
            }
            _ => return Err(back(ErrorCode::InvalidRequest, "PKCE is required: code_challenge with method S256")),
        };
        let scope = Self::scope(q).map_err(|_| back(ErrorCode::InvalidScope, "scope is malformed"))?;
        let resource = self.requested_audience(q).map_err(|_| back(ErrorCode::InvalidTarget, "unknown or repeated resource"))?;
        Ok(AuthRequest {
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            code_challenge,
            state,
            scope,
            resource,
        })
    }

    /// The sign-in form's submission: where to send the browser (the app's
    /// redirect URI with a code, or with `access_denied`).
    pub(crate) fn authorize_submit(&self, form: &Form) -> Result<String, AuthorizeError> {
        let request = self.authorize_request(form)?;
        if let Ok(Some("cancel")) = form.get("action") {
            tracing::info!(client_id = %request.client_id, "sign-in cancelled");
            return Ok(self.redirect(&request.redirect_uri, &[("error", "access_denied")], request.state.as_deref()));
        }
        let field = |name| form.get(name).ok().flatten();
        let (Some(username), Some(password)) = (field("username"), field("password")) else {
            return Err(AuthorizeError::Credentials("Enter your username and password."));
        };
        let Some(user) = self.authenticate_user(username, password) else {
            tracing::info!("sign-in refused: wrong username or password");
            return Err(AuthorizeError::Credentials("Wrong username or password."));
        };
        let signed_in = SignedIn { subject: user.id.clone() };
        tracing::info!(sub = %user.id, client_id = %request.client_id, "signed in");
        let (redirect_uri, state) = (request.redirect_uri.clone(), request.state.clone());
        let code = self.codes().issue(request, signed_in, Instant::now());
        Ok(self.redirect(&redirect_uri, &[("code", &code)], state.as_deref()))
    }

    /// `redirect_uri` with `params`, `state` and `iss` (RFC 9207) in its query.
    pub(crate) fn redirect(&self, redirect_uri: &str, params: &[(&str, &str)], state: Option<&str>) -> String {
        let mut url = url::Url::parse(redirect_uri).expect("registered redirect URIs parse");
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            if let Some(s) = state {
                q.append_pair("state", s);
            }
            q.append_pair("iss", &self.inner.issuer);
        }
        url.to_string()
    }

    /// The origins of every web client: those the token endpoint, discovery
    /// and the key set answer cross-origin.
    pub(crate) fn allows_origin(&self, origin: &str) -> bool {
        self.inner.web_origins.contains(origin)
    }

    /// The device authorization endpoint.
    pub(crate) fn device_authorization(
        &self,
        form: &Form,
        basic: Option<BasicAuth>,
    ) -> Result<DeviceAuthorization, OAuthError> {
        let result = (|| -> Result<DeviceAuthorization, OAuthError> {
            let client_id = self.public_client(form, basic.as_ref())?;
            let scope = Self::scope(form)?;
            // Resolved now (named or default), so that the client learns of a
            // problem before the user approves; the token request may still
            // name another of the audiences.
            let audience = self.audience(form)?;
            let issued = self.devices().start(client_id, audience, scope, Instant::now())?;
            tracing::info!(client_id, "device authorization started");
            let verification_uri = self.url("/device");
            Ok(DeviceAuthorization {
                device_code: issued.device_code,
                verification_uri_complete: format!("{verification_uri}?user_code={}", issued.user_code),
                user_code: issued.user_code,
                verification_uri,
                expires_in: self.inner.device_ttl_secs,
                interval: self.inner.interval_secs,
            })
        })();
        if let Err(e) = &result {
            tracing::info!(error = %e.code, reason = %e.description, "device authorization refused");
        }
        result
    }

    /// The verification page's submission: approve or deny, with the user's credentials.
    pub(crate) fn device_decide(&self, form: &Form, approve: bool) -> Result<String, PageError> {
        let field = |name| form.get(name).ok().flatten().ok_or(PageError::Incomplete);
        let user_code = field("user_code")?;
        let username = field("username")?;
        let password = field("password")?;
        let now = Instant::now();
        // Check the code before the password: no credential checking through stale codes.
        self.devices().check(user_code, now).map_err(PageError::Code)?;
        let Some(user) = self.authenticate_user(username, password) else {
            tracing::info!("device verification refused: wrong username or password");
            return Err(PageError::Credentials);
        };
        let approval = approve.then(|| Approval { subject: user.id.clone(), name: user.name.clone() });
        self.devices().decide(user_code, approval, now).map_err(PageError::Code)?;
        tracing::info!(sub = %user.id, approved = approve, "device authorization decided");
        Ok(user.id.clone())
    }
}
