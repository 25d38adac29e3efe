//! One issuer's signing keys: discovered, fetched, cached, refetched sparingly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::config::url_allowed;
use crate::IdentityError;

/// Largest discovery document or key set read.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Most keys kept from one key set.
const MAX_KEYS: usize = 64;

/// A public key from the issuer's JWKS, usable for exactly one kind of
/// algorithm.
pub(crate) struct VerifyKey {
    kid: Option<String>,
    /// The JWK's `alg`, if it named one of ours; a key naming another is dropped.
    alg: Option<Algorithm>,
    kind: KeyKind,
    pub(crate) key: DecodingKey,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    EcP256,
}

impl VerifyKey {
    fn fits(&self, kid: Option<&str>, alg: Algorithm) -> bool {
        let kind = match alg {
            Algorithm::ES256 => KeyKind::EcP256,
            _ => KeyKind::Rsa,
        };
        self.kind == kind && self.alg.is_none_or(|a| a == alg) && kid.is_none_or(|k| self.kid.as_deref() == Some(k))
    }

    fn from_jwk(jwk: &Jwk) -> Option<Self> {
        if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
            return None;
        }
        let alg = match &jwk.common.key_algorithm {
            None => None,
            Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
            Some(KeyAlgorithm::PS256) => Some(Algorithm::PS256),
            Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
            Some(_) => return None,
        };
        let kind = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => KeyKind::Rsa,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => KeyKind::EcP256,
            _ => return None,
        };
        let key = DecodingKey::from_jwk(jwk).ok()?;
        Some(Self { kid: jwk.common.key_id.clone(), alg, kind, key })
    }
}

/// What an HTTP fetch of issuer metadata can go wrong with. Logged, never
/// returned to token presenters (they get `IssuerUnreachable`).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("document larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("discovery document names another issuer")]
    IssuerMismatch,
    #[error("jwks_uri is not an https URL (or http to loopback)")]
    BadJwksUri,
}

#[derive(Default)]
struct State {
    keys: Arc<[Arc<VerifyKey>]>,
    /// When the current keys were fetched.
    fetched: Option<Instant>,
    /// When we last asked the IdP, successfully or not.
    attempted: Option<Instant>,
    last_failed: bool,
}

/// The key set of one issuer, shared by all verifications.
pub(crate) struct IssuerKeys {
    issuer: String,
    jwks_url: Option<Url>,
    min_refetch: Duration,
    max_age: Duration,
    state: RwLock<State>,
    /// Held while fetching, so concurrent misses cause one fetch, not many.
    fetching: tokio::sync::Mutex<()>,
}

impl IssuerKeys {
    pub(crate) fn new(issuer: String, jwks_url: Option<Url>, min_refetch: Duration, max_age: Duration) -> Self {
        Self { issuer, jwks_url, min_refetch, max_age, state: RwLock::default(), fetching: tokio::sync::Mutex::new(()) }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached keys that fit, and whether the cache is too old to trust
    /// without asking the IdP again.
    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> (Vec<Arc<VerifyKey>>, bool) {
        let st = self.read();
        let fits = st.keys.iter().filter(|k| k.fits(kid, alg)).cloned().collect();
        let stale = st.fetched.is_none_or(|t| t.elapsed() >= self.max_age);
        (fits, stale)
    }

    /// The keys that may have signed a token with this `kid` and `alg`
    /// (normally one; without a `kid`, every key of the right type).
    ///
    /// Fetches the key set on a miss, but at most once per `min_refetch`,
    /// successful or not: tokens with made-up kids, or an IdP that is down,
    /// cost the IdP one request per interval, whatever the load.
    pub(crate) async fn candidates(
        &self,
        http: &Http,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<Arc<VerifyKey>>, IdentityError> {
        let (found, stale) = self.lookup(kid, alg);
        if !found.is_empty() && !stale {
            return Ok(found);
        }
        let _fetching = self.fetching.lock().await;
        // Someone may have fetched while we waited.
        let (found, stale) = self.lookup(kid, alg);
        if !found.is_empty() && !stale {
            return Ok(found);
        }
        let (may_fetch, last_failed) = {
            let st = self.read();
            (st.attempted.is_none_or(|t| t.elapsed() >= self.min_refetch), st.last_failed)
        };
        if !may_fetch {
            return match (found.is_empty(), last_failed) {
                (false, _) => Ok(found),
                (true, true) => Err(IdentityError::IssuerUnreachable),
                (true, false) => Err(IdentityError::UnknownKey),
            };
        }
        match self.refresh(http).await {
            Ok(()) => {
                let (found, _) = self.lookup(kid, alg);
                if found.is_empty() {
                    Err(IdentityError::UnknownKey)
                } else {
                    Ok(found)
                }
            }
            // An IdP outage should not lock everyone out: keep using the keys we had.
            Err(()) if !found.is_empty() => Ok(found),
            Err(()) => Err(IdentityError::IssuerUnreachable),
        }
    }

    async fn refresh(&self, http: &Http) -> Result<(), ()> {
        self.write().attempted = Some(Instant::now());
        http.fetches.fetch_add(1, Ordering::Relaxed);
        let result = self.fetch(http).await;
        let mut st = self.write();
        match result {
            Ok(keys) => {
                tracing::debug!(issuer = %self.issuer, keys = keys.len(), "fetched issuer key set");
                st.keys = keys.into();
                st.fetched = Some(Instant::now());
                st.last_failed = false;
                Ok(())
            }
            Err(error) => {
                tracing::warn!(issuer = %self.issuer, %error, "cannot fetch issuer key set");
                st.last_failed = true;
                Err(())
            }
        }
    }

    async fn fetch(&self, http: &Http) -> Result<Vec<Arc<VerifyKey>>, FetchError> {
        let url = match &self.jwks_url {
            Some(url) => url.clone(),
            // Discovered again on every refresh, so a moved jwks_uri is followed.
            None => self.discover(http).await?,
        };
        #[derive(Deserialize)]
        struct KeySet {
            keys: Vec<serde_json::Value>,
        }
        let set: KeySet = http.get_json(url).await?;
        // Keys we cannot use (other types, encryption keys, odd members) are
        // skipped rather than failing the whole set.
        Ok(set
            .keys
            .into_iter()
            .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
            .filter_map(|jwk| VerifyKey::from_jwk(&jwk))
            .map(Arc::new)
            .take(MAX_KEYS)
            .collect())
    }

    /// OpenID Connect Discovery 1.0, section 4.
    async fn discover(&self, http: &Http) -> Result<Url, FetchError> {
        #[derive(Deserialize)]
        struct Metadata {
            issuer: String,
            jwks_uri: String,
        }
        let url = Url::parse(&format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/')))
            .expect("issuer was validated as a URL");
        let meta: Metadata = http.get_json(url).await?;
        // OIDC Discovery section 4.3: the document must be about this issuer.
        if meta.issuer != self.issuer {
            return Err(FetchError::IssuerMismatch);
        }
        match Url::parse(&meta.jwks_uri) {
            Ok(url) if url_allowed(&url) => Ok(url),
            _ => Err(FetchError::BadJwksUri),
        }
    }
}

/// The HTTP client for issuer metadata, shared by all issuers.
pub(crate) struct Http {
    client: reqwest::Client,
    /// Key set refreshes attempted (each is one discovery + one JWKS request
    /// at most).
    pub(crate) fetches: AtomicU64,
}

impl Http {
    pub(crate) fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            // A redirect could lead a key set fetch somewhere we did not vet.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("custos-kms-identity/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, fetches: AtomicU64::new(0) })
    }

    async fn get_json<T: DeserializeOwned>(&self, url: Url) -> Result<T, FetchError> {
        let mut response = self.client.get(url).header(reqwest::header::ACCEPT, "application/json").send().await?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(serde_json::from_slice(&body)?)
    }
}
