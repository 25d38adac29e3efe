//! # kms-identity: who is presenting this access token?
//!
//! The Custos KMS accepts OAuth 2.0 access tokens in the JWT profile of
//! RFC 9068 from the identity providers (IdPs) it is configured to trust, one
//! per organization. [`Verifier::verify`] turns a token into an [`Identity`]
//! whose `user_id` is `name@org-domain`, or says exactly which check failed.
//!
//! The checks, in order:
//!
//! - **Header.** `alg` is RS256, PS256 or ES256 (never HMAC, never `none`);
//!   `typ` is `at+jwt` or `application/at+jwt`, so ID tokens and other JWTs
//!   are refused; no `crit`. Embedded keys (`jwk`, `jku`, `x5u`, `x5c`) are
//!   ignored: keys come only from the issuer's configured or discovered JWKS.
//! - **Issuer.** `iss` is exactly one configured issuer.
//! - **Signature** with the issuer's key named by `kid`. Key sets are cached;
//!   an unknown `kid` triggers a refetch at most once per
//!   `jwks_min_refetch_secs`, so garbage cannot make us hammer the IdP.
//! - **Claims.** `exp` required and not passed, `nbf` and `iat` not in the
//!   future (all with `leeway_secs`); `aud` exactly this KMS's audience, alone;
//!   `sub` present.
//! - **User.** The configured claim, qualified with the issuer's org domain.
//!   A value that already has a domain must have the issuer's own: two issuers
//!   never share a namespace.
//!
//! Valid results are cached by the token's SHA-256 until its `exp`. Tokens
//! are never logged, stored in plain or quoted in errors.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use kms_identity::{IdentityConfig, IssuerConfig, Verifier};
//! let verifier = Verifier::new(IdentityConfig::new(
//!     "kms://kms.example.com",
//!     vec![IssuerConfig::new("https://login.example.com", "example.com")],
//! ))?;
//! let who = verifier.verify("eyJ...").await?;
//! println!("{}", who.user_id); // alice@example.com
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cache;
mod config;
mod error;
mod jwks;
mod token;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use config::{ConfigError, IdentityConfig, IssuerConfig};
pub use error::IdentityError;
pub use token::is_reserved as is_reserved_user_id;

use cache::TokenCache;
use jwks::{Http, IssuerKeys};

/// Who presented a valid access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `name@org-domain`: the configured user claim, qualified with the
    /// issuer's org domain (lowercase).
    pub user_id: String,
    /// The token's `iss`.
    pub issuer: String,
    /// The token's `sub`, as issued.
    pub subject: String,
    /// The token's `exp`, in seconds since the Unix epoch.
    pub expires_at: i64,
    /// The OAuth client the token was issued to (`client_id`, else `azp`).
    pub client_id: Option<String>,
    /// The granted scopes (`scope`, split on spaces; else an `scp` array).
    pub scope: Vec<String>,
    /// Issued with no resource owner (OAuth client credentials): a service
    /// acting as itself. Recognized by `gty: "client-credentials"` (Auth0's
    /// claim) or by `sub` equal to `client_id` (RFC 9068 §2.2's advice).
    pub client_credentials: bool,
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Verifications answered from the cache.
    pub cache_hits: u64,
    /// Verifications that had to check the token.
    pub cache_misses: u64,
    /// Tokens in the cache now (some may have expired but not been evicted).
    pub cache_entries: usize,
    /// Key set refreshes attempted, over all issuers.
    pub jwks_fetches: u64,
}

struct Issuer {
    config: IssuerConfig,
    keys: IssuerKeys,
}

struct Inner {
    audience: String,
    leeway_secs: u64,
    /// By exact `iss` value.
    issuers: HashMap<String, Issuer>,
    http: Http,
    cache: TokenCache,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Validates access tokens. Cheap to clone: clones share the key sets and
/// the cache.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("audience", &self.inner.audience)
            .field("issuers", &self.inner.issuers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Verifier {
    /// Checks the configuration and builds a verifier. Fetches nothing yet:
    /// key sets are fetched when the first token of an issuer arrives.
    ///
    /// Refused: an empty audience or issuer list, unparsable URLs, URLs that
    /// are not `https` (plain `http` only to loopback), an issuer listed twice,
    /// an org domain that is not a DNS name or is given to two issuers (their
    /// users' ids would collide), an empty `user_claim`.
    pub fn new(config: IdentityConfig) -> Result<Self, ConfigError> {
        if config.audience.trim().is_empty() {
            return Err(ConfigError::EmptyAudience);
        }
        if config.issuers.is_empty() {
            return Err(ConfigError::NoIssuers);
        }
        let min_refetch = Duration::from_secs(config.jwks_min_refetch_secs);
        let max_age = Duration::from_secs(config.jwks_max_age_secs);
        let mut issuers = HashMap::new();
        let mut org_domains = std::collections::HashSet::new();
        for mut issuer in config.issuers {
            config::parse_url(&issuer.issuer)?;
            let jwks_url = issuer.jwks_url.as_deref().map(config::parse_url).transpose()?;
            issuer.org_domain = config::normalize_org_domain(&issuer.org_domain)?;
            if issuer.user_claim.is_empty() {
                return Err(ConfigError::EmptyUserClaim { issuer: issuer.issuer });
            }
            if !org_domains.insert(issuer.org_domain.clone()) {
                return Err(ConfigError::SharedOrgDomain { org_domain: issuer.org_domain });
            }
            if issuers.contains_key(&issuer.issuer) {
                return Err(ConfigError::DuplicateIssuer { issuer: issuer.issuer });
            }
            let keys = IssuerKeys::new(issuer.issuer.clone(), jwks_url, min_refetch, max_age);
            issuers.insert(issuer.issuer.clone(), Issuer { config: issuer, keys });
        }
        let http = Http::new(Duration::from_millis(config.http_timeout_ms))
            .map_err(|e| ConfigError::HttpClient(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                audience: config.audience,
                leeway_secs: config.leeway_secs,
                issuers,
                http,
                cache: TokenCache::new(config.cache_capacity),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            }),
        })
    }

    /// Validates `token` (the bare JWT, without `Bearer `) and says who
    /// presented it. May fetch the issuer's key set; never fails for a token
    /// it accepted before, until that token's `exp`.
    pub async fn verify(&self, token: &str) -> Result<Identity, IdentityError> {
        let inner = &*self.inner;
        let hash = cache::hash(token);
        if let Some(identity) = inner.cache.get(&hash, unix_now()) {
            inner.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(identity);
        }
        inner.misses.fetch_add(1, Ordering::Relaxed);

        let unverified = token::inspect(token)?;
        let issuer = inner.issuers.get(&unverified.iss).ok_or(IdentityError::UnknownIssuer)?;
        let keys = issuer.keys.candidates(&inner.http, unverified.kid.as_deref(), unverified.alg).await?;
        let claims = token::verify_signature(token, unverified.alg, &keys, &issuer.config.issuer, inner.leeway_secs)?;
        let rules = token::IssuerRules {
            issuer: &issuer.config.issuer,
            org_domain: &issuer.config.org_domain,
            user_claim: &issuer.config.user_claim,
        };
        let now = unix_now();
        let identity = token::identity(&claims, &inner.audience, &rules, now, inner.leeway_secs)?;
        inner.cache.insert(hash, &identity, now);
        Ok(identity)
    }

    /// Counters for metrics.
    pub fn stats(&self) -> Stats {
        Stats {
            cache_hits: self.inner.hits.load(Ordering::Relaxed),
            cache_misses: self.inner.misses.load(Ordering::Relaxed),
            cache_entries: self.inner.cache.len(),
            jwks_fetches: self.inner.http.fetches.load(Ordering::Relaxed),
        }
    }
}
