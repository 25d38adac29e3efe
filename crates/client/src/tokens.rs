//! Access tokens, one per audience (the core's, the KMS's): RFC 9068 tokens
//! are single-audience, so a session holds one of each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Renew a cached token this long before it expires.
const RENEW_MARGIN: Duration = Duration::from_secs(60);

/// Where a session gets its access tokens.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync {
    /// A valid access token for `audience`.
    async fn token(&self, audience: &str) -> Result<Zeroizing<String>>;
    /// The token for `audience` was refused: do not hand it out again.
    fn invalidate(&self, _audience: &str) {}
}

/// Fixed tokens by audience (tests, short scripts).
#[derive(Default)]
pub struct StaticTokens(HashMap<String, Zeroizing<String>>);

impl StaticTokens {
    /// Tokens for each `(audience, token)`.
    pub fn new<I: IntoIterator<Item = (String, String)>>(tokens: I) -> Self {
        Self(tokens.into_iter().map(|(a, t)| (a, Zeroizing::new(t))).collect())
    }
}

#[async_trait::async_trait]
impl TokenSource for StaticTokens {
    async fn token(&self, audience: &str) -> Result<Zeroizing<String>> {
        self.0.get(audience).cloned().ok_or_else(|| Error::Auth(format!("no token for audience {audience}")))
    }
}

/// Called with a new refresh token when the issuer rotates it, so the caller
/// can store it (the CLI's credentials file).
pub type RefreshHook = Arc<dyn Fn(&str) + Send + Sync>;

/// How an [`OidcTokens`] obtains tokens from the token endpoint.
enum Grant {
    /// A user's login: `refresh_token` grants with an `audience` parameter.
    Refresh { refresh_token: Mutex<Zeroizing<String>>, on_rotate: Option<RefreshHook> },
    /// A service: `client_credentials` grants.
    ClientCredentials { secret: Zeroizing<String> },
}

/// Tokens from an OAuth 2.0 token endpoint, cached until shortly before
/// they expire.
pub struct OidcTokens {
    http: reqwest::Client,
    token_endpoint: String,
    client_id: String,
    grant: Grant,
    cache: Mutex<HashMap<String, (Zeroizing<String>, Instant)>>,
    /// One refresh at a time: issuers that rotate refresh tokens treat a
    /// reused one as theft and revoke the whole login.
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl OidcTokens {
    /// A user's tokens, minted from a refresh token.
    pub fn from_refresh_token(
        token_endpoint: &str,
        client_id: &str,
        refresh_token: &str,
        on_rotate: Option<RefreshHook>,
    ) -> Self {
        Self::new(
            token_endpoint,
            client_id,
            Grant::Refresh { refresh_token: Mutex::new(Zeroizing::new(refresh_token.to_string())), on_rotate },
        )
    }

    /// A service's tokens (client credentials).
    pub fn from_client_credentials(token_endpoint: &str, client_id: &str, secret: &str) -> Self {
        Self::new(token_endpoint, client_id, Grant::ClientCredentials { secret: Zeroizing::new(secret.to_string()) })
    }

    fn new(token_endpoint: &str, client_id: &str, grant: Grant) -> Self {
        Self {
            http: crate::http_client(),
            token_endpoint: token_endpoint.to_string(),
            client_id: client_id.to_string(),
            grant,
            cache: Mutex::new(HashMap::new()),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    async fn fetch(&self, audience: &str) -> Result<(Zeroizing<String>, Instant)> {
        let mut form: Vec<(&str, String)> =
            vec![("client_id", self.client_id.clone()), ("audience", audience.to_string())];
        match &self.grant {
            Grant::Refresh { refresh_token, .. } => {
                form.push(("grant_type", "refresh_token".into()));
                form.push(("refresh_token", refresh_token.lock().expect("not poisoned").to_string()));
            }
            Grant::ClientCredentials { secret } => {
                form.push(("grant_type", "client_credentials".into()));
                form.push(("client_secret", secret.to_string()));
            }
        }
        let r = self
            .http
            .post(&self.token_endpoint)
            .form(&form)
            .send()
            .await
            .map_err(|e| Error::Auth(format!("the identity provider is unreachable ({})", crate::why(&e))))?;
        let status = r.status();
        let body = crate::read_capped(r, 1024 * 1024).await.map_err(|e| match e {
            Some(why) => Error::Auth(format!("the identity provider broke off ({why})")),
            None => Error::Auth("the identity provider's answer is too large".into()),
        })?;
        if !status.is_success() {
            let why = serde_json::from_slice::<OAuthError>(&body)
                .map(|e| format!("{}: {}", e.error, e.error_description.unwrap_or_default()))
                .unwrap_or_else(|_| format!("HTTP {status}"));
            return Err(Error::Auth(format!(
                "the identity provider refused a token for {audience} ({why}); log in again"
            )));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|_| Error::Auth("the identity provider's answer is not a token response".into()))?;
        if let (Grant::Refresh { refresh_token, on_rotate }, Some(new)) = (&self.grant, &answer.refresh_token) {
            *refresh_token.lock().expect("not poisoned") = Zeroizing::new(new.clone());
            if let Some(hook) = on_rotate {
                hook(new);
            }
        }
        // Within a day whatever the provider says (and no overflow).
        let life = Duration::from_secs(answer.expires_in.unwrap_or(300).min(86_400));
        Ok((Zeroizing::new(answer.access_token), Instant::now() + life))
    }
}

#[async_trait::async_trait]
impl TokenSource for OidcTokens {
    async fn token(&self, audience: &str) -> Result<Zeroizing<String>> {
        let cached = |c: &Mutex<HashMap<String, (Zeroizing<String>, Instant)>>| {
            c.lock()
                .expect("not poisoned")
                .get(audience)
                .filter(|(_, exp)| Instant::now() + RENEW_MARGIN < *exp)
                .map(|(t, _)| t.clone())
        };
        if let Some(t) = cached(&self.cache) {
            return Ok(t);
        }
        let _one_at_a_time = self.refreshing.lock().await;
        // Someone else may have refreshed while we waited.
        if let Some(t) = cached(&self.cache) {
            return Ok(t);
        }
        let (t, exp) = self.fetch(audience).await?;
        self.cache.lock().expect("not poisoned").insert(audience.to_string(), (t.clone(), exp));
        Ok(t)
    }

    fn invalidate(&self, audience: &str) {
        self.cache.lock().expect("not poisoned").remove(audience);
    }
}
